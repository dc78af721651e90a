"""One writer per run folder: an advisory lock file ``RUN/.lock`` held while a command writes the run.

A second writer (another ``ofa train`` of the same name, an ``ofa evaluate`` or ``ofa search`` into a
run being trained) gets one line naming the holder instead of interleaving its writes. The operating
system releases the lock when the holder dies, so a killed run never stays locked. Within one process
the lock is re-entrant (the pipeline trains, then measures and searches the same run).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ofa.runfolder import RunFolder

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt
else:
    import fcntl

__all__ = ["RunLockedError", "run_lock"]


class RunLockedError(ValueError):
    """Another process is writing the run folder."""


def _try_lock(descriptor: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str, create: bool = False) -> Iterator[None]:
    """Hold the write lock of ``run_dir`` for the ``with`` block (``create``: make the folder if needed, and
    remove it again if the block wrote nothing into it).

    Raises:
        RunLockedError: another process holds it; the message names that process and its command.
        ValueError: ``run_dir`` does not exist and ``create`` is false.
    """
    run_dir = Path(run_dir)
    created = create and not run_dir.exists()
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    elif not run_dir.is_dir():
        raise ValueError(f"run directory not found: {run_dir}")
    path = RunFolder(run_dir).lock
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(descriptor):
            holder = path.read_text(errors="replace").strip() or "another process"
            if holder.startswith(f"pid {os.getpid()} "):
                yield  # this process already holds it (re-entrant use)
                return
            raise RunLockedError(f"run {run_dir} is being written by {holder}; wait for it or use another run")
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} ({command})".encode())
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)
            if created and [entry.name for entry in run_dir.iterdir()] == [path.name]:
                path.unlink()  # a run folder this call made and nothing was written into (e.g. bad input)
                run_dir.rmdir()
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
