"""Atomic file writes: a fsynced temp file beside the target, then ``os.replace``.

A crash or a kill at any point leaves either the previous file or the new one, never a partial file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "check_file_target",
    "check_folder_target",
    "file_sha256",
    "publish_folder",
    "remove_stale_temp_files",
]


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_folder_target(path: str | Path, option: str) -> Path:
    """``path`` as an output folder: refused (one line) when a file is there, checked before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; expected a folder (existing or new)")
    return path


def check_file_target(path: str | Path, option: str) -> Path:
    """``path`` as an output file: refused (one line) when a folder is there, checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; expected a file path")
    return path


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temp_files(path: Path) -> None:
    """Remove temp files a writer of ``path`` left when it was killed before its rename."""
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a hidden temp file beside ``path``, fsync it, then let it replace ``path``."""
    path = Path(path)
    check_file_target(path, "output")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


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


def publish_folder(staging: Path, target: Path) -> None:
    """Rename the complete folder ``staging`` to ``target`` (a sibling); an old ``target`` is moved aside
    first and removed only once the new one is in place, so a crash leaves the old or the new folder."""
    _fsync_directory(staging)
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        os.replace(staging, target)  # POSIX: a directory may replace an empty directory
    else:
        backup = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        os.replace(target, backup)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    _fsync_directory(target.parent)
