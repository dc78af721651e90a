"""The training run: run directory, exact resume, atomic checkpoints, divergence (tiny space, digits, few steps)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import ofa.atomic
import ofa.checkpoint
import ofa.trainer
from ofa.checkpoint import atomic_save, load_checkpoint, save_checkpoint_pair
from ofa.cli import main as cli_main
from ofa.config import config_to_dict
from ofa.space import Arch
from ofa.train import TrainingDivergedError
from ofa.train_config import TrainConfig, load_train_config
from ofa.trainer import METRIC_COLUMNS, TrainResult, _check_finite_weights, train

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "train" / "digits.yaml"
STEPS = 3
QUICK = (
    "epochs=2",
    f"max_steps_per_epoch={STEPS}",
    "data.batch_size=16",
    "data.eval_batch_size=270",
    "sampler.flops_samples=400",
    "sampler.flops_bin_mmacs=0.6",
    "calibration.num_batches=1",
    "calibration.batch_size=32",
)
TIMING_COLUMNS = ("images_per_s", "epoch_seconds")


def quick_config(out_dir: Path, *overrides: str) -> TrainConfig:
    """The digits config cut down to a few small steps per epoch, writing under ``out_dir``."""
    return load_train_config(CONFIG, (f"out_dir={out_dir}", *QUICK, *overrides))


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of ``metrics.csv``."""
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_archs(run_dir: Path) -> list[dict]:
    """The lines of ``archs.jsonl``."""
    return [json.loads(line) for line in (run_dir / "archs.jsonl").read_text().splitlines()]


def temp_files(run_dir: Path) -> list[Path]:
    """Files in the checkpoint folder besides the two checkpoints."""
    return [path for path in (run_dir / "checkpoints").iterdir() if path.name not in ("latest.pt", "best.pt")]


def assert_same_state(first: dict, second: dict, where: str = "state") -> None:
    """Two checkpoint (sub)states are equal, tensors bit for bit."""
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and torch.equal(first, second), where
    elif isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), where
        for key in first:
            assert_same_state(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, (list, tuple)):
        assert isinstance(second, (list, tuple)) and len(first) == len(second), where
        for index, (one, other) in enumerate(zip(first, second)):
            assert_same_state(one, other, f"{where}[{index}]")
    else:
        assert first == second, f"{where}: {first!r} != {second!r}"


def assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    """Same weights, optimizer, schedule and RNG states, metrics (but timings) and trained archs."""
    for name in ("latest.pt", "best.pt"):
        state = load_checkpoint(run_dir / "checkpoints" / name)
        reference = load_checkpoint(reference_dir / "checkpoints" / name)
        for key in ("epoch", "model", "optimizer", "scheduler", "sampler_rng", "torch_rng", "best_accuracy"):
            assert_same_state(state[key], reference[key], f"{name}:{key}")
        assert set(state["model"]) == set(reference["model"]) and state["model"]
    rows, reference_rows = read_metrics(run_dir), read_metrics(reference_dir)
    assert len(rows) == len(reference_rows)
    for row, reference_row in zip(rows, reference_rows):
        for column in TIMING_COLUMNS:
            row.pop(column), reference_row.pop(column)
        assert row == reference_row
    assert read_archs(run_dir) == read_archs(reference_dir)
    assert not temp_files(run_dir)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A 2-epoch run without interruption: the reference."""
    return train(quick_config(tmp_path_factory.mktemp("straight")), progress=False)


class Interrupt(BaseException):
    """Stands for a kill (Ctrl-C, SIGTERM) in the middle of a run."""


def counting(function: Callable, on_call: int, action: Callable[[tuple], tuple]) -> Callable:
    """``function`` whose ``on_call``-th call (1-based) has its arguments passed through ``action`` first."""
    calls = [0]

    def wrapper(*args: object) -> object:
        calls[0] += 1
        if calls[0] == on_call:
            args = action(args)
        return function(*args)

    return wrapper


# ---------------------------------------------------------------------------------------------------
# the run directory


def test_run_directory_holds_config_metrics_archs_events_checkpoints(straight: TrainResult) -> None:
    run_dir = straight.run_dir
    config = quick_config(run_dir.parent)
    assert load_train_config(run_dir / "config.yaml") == config
    assert json.loads((run_dir / "space.json").read_text())["num_classes"] == 10
    rows = read_metrics(run_dir)
    assert (run_dir / "metrics.csv").read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        assert row["sampler"] == "bestup"
        assert all(math.isfinite(float(row[key])) for key in ("loss_max", "loss_sampled", "loss_min", "val_loss_max"))
        assert 1 <= int(row["distinct_archs"]) <= 2 * STEPS
    lines = read_archs(run_dir)
    assert [(line["epoch"], line["step"]) for line in lines] == [(e, s) for e in (1, 2) for s in range(STEPS)]
    assert [[Arch.from_dict(a) for a in line["archs"]] for line in lines] == straight.trained_archs
    assert all(len(archs) == 2 for archs in straight.trained_archs)  # n = 4: max, 2 sampled, min
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert latest["epoch"] == 2 and latest["config"] == config_to_dict(config)
    assert_same_state(latest["model"], straight.supernet.state_dict())
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_accuracy"] == pytest.approx(max(float(row["val_acc_max"]) for row in rows), abs=1e-5)
    assert straight.val_acc_max == pytest.approx(float(rows[-1]["val_acc_max"]), abs=1e-5)
    assert not temp_files(run_dir)


def test_fresh_run_refuses_a_directory_with_a_checkpoint(straight: TrainResult) -> None:
    before = (straight.run_dir / "checkpoints" / "latest.pt").read_bytes()
    with pytest.raises(ValueError, match="already has a checkpoint: resume it"):
        train(quick_config(straight.run_dir.parent), progress=False)
    assert (straight.run_dir / "checkpoints" / "latest.pt").read_bytes() == before
    assert len(read_metrics(straight.run_dir)) == 2


def test_fresh_run_drops_logs_of_an_attempt_without_checkpoint(tmp_path: Path) -> None:
    config = quick_config(tmp_path, "epochs=1", "max_steps_per_epoch=1")
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "metrics.csv").write_text(",".join(METRIC_COLUMNS) + "\n1" + ",0" * 12 + "\n")
    (config.run_dir / "archs.jsonl").write_text('{"epoch": 1, "step": 0, "archs": []}\n{"epoch": 1, "st')
    train(config, progress=False)
    assert len(read_metrics(config.run_dir)) == 1 and read_metrics(config.run_dir)[0]["loss_max"] != "0"
    assert len(read_archs(config.run_dir)) == 1 and read_archs(config.run_dir)[0]["archs"]


# ---------------------------------------------------------------------------------------------------
# exact resume


def test_resume_after_a_kill_in_epoch_two_is_exact(
    tmp_path: Path, straight: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = quick_config(tmp_path)

    def kill(args: tuple) -> tuple:
        raise Interrupt

    monkeypatch.setattr(ofa.trainer, "sandwich_step", counting(ofa.trainer.sandwich_step, STEPS + 1, kill))
    with pytest.raises(Interrupt):
        train(config, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(config.run_dir / "checkpoints" / "latest.pt")["epoch"] == 1
    assert len(read_metrics(config.run_dir)) == 1 and len(read_archs(config.run_dir)) == STEPS

    resumed = train(config, resume=True, progress=False)

    assert_same_run(config.run_dir, straight.run_dir)
    assert resumed.trained_archs == straight.trained_archs[STEPS:]  # only epoch 2 was trained again
    assert_same_state(resumed.supernet.state_dict(), straight.supernet.state_dict())
    assert resumed.val_acc_max == straight.val_acc_max


@pytest.mark.slow  # 4-5 s: two trainings; the kill at every write step is tested fast on save_checkpoint_pair
def test_kill_while_writing_a_checkpoint_keeps_the_last_and_resumes_exactly(
    tmp_path: Path, straight: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = quick_config(tmp_path)
    real_save = torch.save

    def save_then_die_in_epoch_two(state: dict, handle: object) -> None:
        if state["epoch"] == 2:  # half the file is on disk when the process dies
            real_save(state, handle)
            handle.truncate(handle.tell() // 2)
            raise Interrupt
        real_save(state, handle)

    monkeypatch.setattr(torch, "save", save_then_die_in_epoch_two)
    with pytest.raises(Interrupt):
        train(config, progress=False)
    monkeypatch.undo()
    # epoch 2 was logged, then died while its checkpoint was written: the epoch-1 checkpoint is intact
    state = load_checkpoint(config.run_dir / "checkpoints" / "latest.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert not temp_files(config.run_dir)
    assert len(read_metrics(config.run_dir)) == 2 and len(read_archs(config.run_dir)) == 2 * STEPS

    resumed = train(config, resume=True, progress=False)

    assert_same_run(config.run_dir, straight.run_dir)  # the logs of the lost epoch were replaced, not doubled
    assert resumed.trained_archs == straight.trained_archs[STEPS:]


@pytest.mark.slow  # 4-5 s: two trainings; the kill at every write step is tested fast on save_checkpoint_pair
def test_kill_between_the_best_and_latest_writes_leaves_a_consistent_pair(
    tmp_path: Path, straight: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = quick_config(tmp_path)
    real_save = torch.save
    saves: list[int] = []

    def die_after_the_first_save_of_epoch_two(state: dict, handle: object) -> None:
        if state["epoch"] == 2 and saves.count(2) == 1:
            raise Interrupt
        saves.append(state["epoch"])
        real_save(state, handle)

    monkeypatch.setattr(torch, "save", die_after_the_first_save_of_epoch_two)
    with pytest.raises(Interrupt):
        train(config, progress=False)
    monkeypatch.undo()
    checkpoints = config.run_dir / "checkpoints"
    best, latest = load_checkpoint(checkpoints / "best.pt"), load_checkpoint(checkpoints / "latest.pt")
    assert saves == [1, 1, 2]  # epoch 1: best and latest; epoch 2 improved: best written, then the kill
    assert (best["epoch"], latest["epoch"]) == (2, 1)  # both load; latest is never ahead of best
    assert not temp_files(config.run_dir)
    train(config, resume=True, progress=False)
    assert_same_run(config.run_dir, straight.run_dir)


def test_resume_of_a_finished_run_trains_nothing(straight: TrainResult, tmp_path: Path) -> None:
    copy_dir = tmp_path / straight.run_dir.name
    shutil.copytree(straight.run_dir, copy_dir)
    result = train(quick_config(tmp_path), resume=True, progress=False)
    assert result.trained_archs == []
    assert result.val_acc_max == pytest.approx(straight.val_acc_max, abs=1e-5)
    assert_same_run(copy_dir, straight.run_dir)


# ---------------------------------------------------------------------------------------------------
# atomic checkpoints


def _small_state(value: float) -> dict:
    return {"epoch": int(value), "model": {"weight": torch.full((3, 3), value)}, "space": {"name": "tiny"}}


def _raising(error: BaseException) -> Callable:
    def fail(*args: object) -> None:
        raise error

    return fail


def _partial_torch_save(error: BaseException) -> Callable:
    def broken(state: object, handle: object) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise error

    return broken


@pytest.mark.parametrize(
    ("target", "replacement"),
    [
        ("save", _partial_torch_save(OSError("No space left on device"))),
        ("save", _partial_torch_save(KeyboardInterrupt())),
        ("replace", _raising(OSError("rename failed"))),
        ("fsync", _raising(OSError("I/O error"))),
    ],
    ids=["save-disk-full", "save-interrupted", "replace-fails", "fsync-fails"],
)
def test_interrupted_checkpoint_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, replacement: Callable
) -> None:
    path = tmp_path / "checkpoints" / "latest.pt"
    atomic_save(_small_state(1.0), path)
    before = path.read_bytes()
    module = torch if target == "save" else ofa.atomic.os
    monkeypatch.setattr(module, target, replacement)
    with pytest.raises((OSError, KeyboardInterrupt)):
        atomic_save(_small_state(2.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["model"]["weight"], torch.full((3, 3), 1.0))
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


PAIR_WRITE_STEPS = 8  # per file: torch.save into the temp file, its fsync, the rename, the folder's fsync


@pytest.mark.parametrize("improved", [True, False], ids=["improved", "not-improved"])
@pytest.mark.parametrize("kill_at", range(PAIR_WRITE_STEPS + 1))
def test_a_kill_at_any_step_of_the_pair_write_leaves_a_consistent_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_at: int, improved: bool
) -> None:
    """Epoch 1 is best and latest; epoch 2 is written and the process dies at step ``kill_at`` of the I/O."""
    best, latest = tmp_path / "best.pt", tmp_path / "latest.pt"
    save_checkpoint_pair({**_small_state(1.0), "best_accuracy": 0.5}, best, latest, improved=True)
    steps: list[str] = []

    def counted(name: str, real: Callable) -> Callable:
        def step(*args: object) -> object:
            if len(steps) == kill_at:
                raise Interrupt
            steps.append(name)
            return real(*args)

        return step

    monkeypatch.setattr(torch, "save", counted("save", torch.save))
    monkeypatch.setattr(ofa.atomic.os, "fsync", counted("fsync", ofa.atomic.os.fsync))
    monkeypatch.setattr(ofa.atomic.os, "replace", counted("replace", ofa.atomic.os.replace))
    second = {**_small_state(2.0), "best_accuracy": 0.6 if improved else 0.5}
    finished = kill_at >= (PAIR_WRITE_STEPS if improved else PAIR_WRITE_STEPS // 2)
    with contextlib.nullcontext() if finished else pytest.raises(Interrupt):
        save_checkpoint_pair(second, best, latest, improved)
    monkeypatch.undo()
    pair = (load_checkpoint(best)["epoch"], load_checkpoint(latest)["epoch"])  # both load, whatever the step
    assert pair in ([(1, 1), (2, 1), (2, 2)] if improved else [(1, 1), (1, 2)])
    if pair[1] == 2:  # latest is the new epoch: it agrees with best on the best accuracy
        assert load_checkpoint(latest)["best_accuracy"] == load_checkpoint(best)["best_accuracy"]
    if finished:  # every step was reached: the kill points above covered each of them
        assert steps == ["save", "fsync", "replace", "fsync"] * (2 if improved else 1)
        assert pair == ((2, 2) if improved else (1, 2))


def test_temp_file_of_a_killed_writer_is_ignored_then_removed(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    atomic_save(_small_state(1.0), path)
    stale = tmp_path / ".latest.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".best.pt.k1ll3d.tmp"
    other.write_bytes(b"another file's temp")
    assert load_checkpoint(path)["epoch"] == 1
    atomic_save(_small_state(2.0), path)
    assert load_checkpoint(path)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "latest.pt"]


def test_damaged_or_foreign_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    atomic_save(_small_state(1.0), path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match=f"checkpoint {path} is corrupt"):
        load_checkpoint(path)
    torch.save({"epoch": 1}, path)
    with pytest.raises(ValueError, match="not a supernet checkpoint"):
        load_checkpoint(path)
    torch.save({"model": {}, "space": {}, "payload": Interrupt()}, path)  # arbitrary pickled object
    with pytest.raises(ValueError, match="holds Python objects besides tensors and plain data; refused") as caught:
        load_checkpoint(path)
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------------------
# divergence


def _poison(args: tuple) -> tuple:
    supernet, images, *rest = args
    images = images.clone()
    images[0, 0, 0, 0] = float("nan")
    return (supernet, images, *rest)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = quick_config(tmp_path, "max_steps_per_epoch=2")
    latest = config.run_dir / "checkpoints" / "latest.pt"
    saved: list[bytes] = []
    real_save = ofa.checkpoint.atomic_save

    def recording_save(state: dict, path: Path) -> None:
        real_save(state, path)
        if path == latest:
            saved.append(path.read_bytes())

    monkeypatch.setattr(ofa.checkpoint, "atomic_save", recording_save)
    monkeypatch.setattr(ofa.trainer, "sandwich_step", counting(ofa.trainer.sandwich_step, 3, _poison))
    with pytest.raises(TrainingDivergedError) as caught:
        train(config, progress=False)
    message = str(caught.value)
    assert "epoch 2, step 1" in message and "largest subnet is nan" in message
    assert f"last good checkpoint is {latest} (epoch 1)" in message
    assert len(saved) == 1 and latest.read_bytes() == saved[0]  # untouched since epoch 1
    state = load_checkpoint(latest)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert len(read_metrics(config.run_dir)) == 1 and not temp_files(config.run_dir)


def test_non_finite_weights_are_never_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = quick_config(tmp_path, "max_steps_per_epoch=1")
    real_step = ofa.trainer.sandwich_step
    calls = [0]

    def step_that_overflows(supernet: torch.nn.Module, *args: object) -> list[float]:
        losses = real_step(supernet, *args)
        calls[0] += 1
        if calls[0] == 2:  # the loss was finite, the update was not
            with torch.no_grad():
                supernet.head.classifier.weight[0, 0] = float("inf")
        return losses

    monkeypatch.setattr(ofa.trainer, "sandwich_step", step_that_overflows)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2: parameter head\.classifier\.weight holds NaN"):
        train(config, progress=False)
    state = load_checkpoint(config.run_dir / "checkpoints" / "latest.pt")
    assert state["epoch"] == 1 and torch.isfinite(state["model"]["head.classifier.weight"]).all()
    assert len(read_metrics(config.run_dir)) == 1


def test_check_finite_weights_names_the_parameter() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    _check_finite_weights(model)
    with torch.no_grad():
        model[0].bias[1] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"parameter 0\.bias"):
        _check_finite_weights(model)


def test_cli_reports_divergence_in_one_line_with_exit_code_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ofa.trainer, "sandwich_step", counting(ofa.trainer.sandwich_step, 1, _poison))
    overrides = [f"out_dir={tmp_path}", *QUICK, "epochs=1", "max_steps_per_epoch=1"]
    code = cli_main(["train", str(CONFIG), *(item for override in overrides for item in ("--set", override))])
    error = capsys.readouterr().err.strip()
    assert code == 1
    assert error.count("\n") == 0 and "Traceback" not in error
    assert error.startswith("ofa train: failed: training diverged in epoch 1, step 1: the loss of the largest")
    assert error.endswith("no checkpoint was written")
    assert not (tmp_path / "digits" / "checkpoints" / "latest.pt").exists()
