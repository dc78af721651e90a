"""Checkpoints written atomically (temp file + fsync + rename) and loaded with ``weights_only=True``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "load_checkpoint"]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so a crash at any point leaves the previous file intact.

    The state goes to a hidden temp file beside ``path`` (fsynced), which then replaces ``path``. Temp
    files left by a writer that was killed before the rename are removed first; readers only ever open
    ``path`` itself.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        stale.unlink(missing_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing or corrupt file is a ``ValueError`` naming the path."""
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged files
        raise ValueError(f"checkpoint {path} is corrupt or not a checkpoint: {error}") from None
    if not isinstance(state, dict) or "model" not in state or "space" not in state:
        raise ValueError(f"checkpoint {path} is not a supernet checkpoint of this toolkit")
    return state
