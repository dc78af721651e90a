"""Errors shared by the library and the command line (no heavy imports, so the CLI starts fast)."""

from __future__ import annotations

__all__ = ["TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""
