"""One writer per run folder: a second process gets one line naming the holder; a dead holder frees it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ofa.runfolder import RunFolder
from ofa.runlock import RunLockedError, run_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from ofa.runlock import run_lock
    with run_lock(sys.argv[1], "ofa train"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _holder(run_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_frees_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = _holder(run_dir)
    expected = rf"run {run_dir} is being written by pid {holder.pid} \(ofa train\)"
    try:
        with pytest.raises(RunLockedError, match=expected), run_lock(run_dir, "ofa evaluate"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run_dir, "ofa evaluate"):  # the operating system released the dead holder's lock
        assert RunFolder(run_dir).lock.read_text().endswith("(ofa evaluate)")


def test_the_lock_is_reentrant_within_one_process(tmp_path: Path) -> None:
    with run_lock(tmp_path, "ofa run"):
        with run_lock(tmp_path, "ofa train"):
            pass
        assert RunFolder(tmp_path).lock.read_text().endswith("(ofa run)")


def test_a_missing_run_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run directory not found"), run_lock(tmp_path / "missing", "ofa evaluate"):
        pass
    assert not (tmp_path / "missing").exists()
