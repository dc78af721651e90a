"""Checkpoints written atomically (temp file + fsync + rename) and loaded with ``weights_only=True``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ofa.atomic import atomic_write, remove_stale_temp_files
from ofa.runfolder import RUN_FORMAT

__all__ = ["atomic_save", "load_checkpoint", "load_tensors", "save_checkpoint_pair"]


def atomic_save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so a crash at any point leaves the previous file intact.

    The state goes to a hidden temp file beside ``path`` (fsynced), which then replaces ``path``. Temp
    files left by a writer that was killed before the rename are removed first; readers only ever open
    ``path`` itself.
    """
    remove_stale_temp_files(path)
    atomic_write(path, lambda handle: torch.save(state, handle))


def save_checkpoint_pair(checkpoint: dict[str, Any], best: Path, latest: Path, improved: bool) -> None:
    """Write an epoch's checkpoint as ``latest`` and, when it ``improved``, first as ``best``.

    Best goes first, so a kill at any instant leaves a loadable pair that agrees on the best epoch: either
    both old, or best new and latest old (resuming trains the epoch again, exactly), or both new.
    """
    if improved:
        atomic_save(checkpoint, best)
    atomic_save(checkpoint, latest)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_tensors(path: Path, advice: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of ``path``: tensors and plain containers only. A file that holds
    pickled objects, or that is damaged, is a one-line ``ValueError`` naming the path; ``advice`` ends the
    message for pickled objects (what the user can do)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "can still be loaded" in str(error):  # pickled objects; torch's advice (weights_only=False) runs them
            raise ValueError(
                f"checkpoint {path} holds Python objects besides tensors and plain data; refused (loading it "
                f"could run code): {advice}"
            ) from None
        reason = str(error).rpartition("WeightsUnpickler error:")[2] or str(error)
        raise ValueError(f"checkpoint {path} is corrupt or not a checkpoint: {_first_line(reason)}") from None
    except Exception as error:  # torch raises many kinds for damaged files
        raise ValueError(f"checkpoint {path} is corrupt or not a checkpoint: {_first_line(error)}") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing or corrupt file, or one of a newer format, is a ``ValueError``
    naming the path."""
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    state = load_tensors(path, "it was not written by this toolkit", map_location)
    if not isinstance(state, dict) or "model" not in state or "space" not in state:
        raise ValueError(f"checkpoint {path} is not a supernet checkpoint of this toolkit")
    written = state.get("format", RUN_FORMAT)
    if not isinstance(written, int) or written > RUN_FORMAT:
        raise ValueError(
            f"checkpoint {path} has format {written!r}; this version reads format {RUN_FORMAT} and older: "
            "upgrade the toolkit"
        )
    return state
