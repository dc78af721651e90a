"""One writer per run folder: a second process gets one line naming the holder; a dead holder frees it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ofa.cli import main
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


def test_a_folder_made_for_a_writer_that_wrote_nothing_is_removed_again(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="bad input"), run_lock(tmp_path / "new", "ofa train", create=True):
        raise RuntimeError("bad input")
    assert not (tmp_path / "new").exists()
    with run_lock(tmp_path / "kept", "ofa train", create=True):
        (tmp_path / "kept" / "config.yaml").write_text("seed: 0\n")
    assert sorted(path.name for path in (tmp_path / "kept").iterdir()) == [".lock", "config.yaml"]


@pytest.mark.parametrize("command", ["export", "search"])
def test_export_and_search_refuse_a_run_being_written(
    command: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    arguments = {"export": ["--flops", "3M", "--out", str(tmp_path / "out")], "search": ["--budgets", "3M"]}
    holder = _holder(run_dir)  # another process: the lock is per process
    try:
        code = main([command, str(run_dir), *arguments[command]])
    finally:
        holder.kill()
        holder.wait()
    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.count("\n") == 1, stderr
    assert f"is being written by pid {holder.pid} (ofa train)" in stderr
    assert not (tmp_path / "out").exists() and not (run_dir / "search").exists()
