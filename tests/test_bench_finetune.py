"""The fine-tuning benchmark's arch choice and argument parsing (its training is the benchmark itself)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

import benchmarks.bench_finetune
import ofa.export
import ofa.pipeline
from benchmarks.bench_finetune import (
    RECIPE,
    Job,
    _run_dirs,
    chosen_archs,
    helper_command_of,
    run_job,
    train_supernet,
    variants,
)
from ofa.export import EXPORT_FORMAT, EXPORT_VERSION
from ofa.finetune import FINETUNE_LR_FACTOR
from ofa.flops import count_macs, count_params
from ofa.space import load_space
from ofa.train_config import load_train_config
from predictors.dataset import ArchRecord, write_arch_csv


@pytest.fixture
def arch_data(tmp_path: Path) -> tuple[Path, list[ArchRecord]]:
    """Twenty random cifar archs with made-up val accuracies, written as an arch CSV."""
    space = load_space("cifar")
    rng = random.Random(0)
    records = []
    for _ in range(20):
        arch = space.sample(rng)
        records.append(
            ArchRecord(
                space="cifar",
                arch=arch,
                mmacs=count_macs(space, arch) / 1e6,
                params=count_params(space, arch),
                resolution=arch.resolution,
                val_acc=rng.random(),
                test_acc=None,
                val_loss=None,
                seed=0,
            )
        )
    path = tmp_path / "archs.csv"
    write_arch_csv(path, records)
    return path, records


def test_each_budget_gets_the_best_val_arch_that_fits(arch_data: tuple[Path, list[ArchRecord]]) -> None:
    path, records = arch_data
    costs = sorted(record.mmacs for record in records)
    budgets = [costs[2], costs[10], costs[-1]]
    chosen = chosen_archs(budgets, path)
    assert sorted(chosen) == budgets
    for budget, arch in chosen.items():
        fitting = [record for record in records if record.mmacs <= budget]
        best = max(fitting, key=lambda record: record.val_acc)
        assert best.arch.to_dict() == arch
    assert chosen[costs[-1]] == max(records, key=lambda record: record.val_acc).arch.to_dict()


def test_a_budget_below_every_measured_arch_is_refused(arch_data: tuple[Path, list[ArchRecord]]) -> None:
    path, records = arch_data
    below = min(record.mmacs for record in records) * 0.99
    with pytest.raises(ValueError, match="no measured arch"):
        chosen_archs([below], path)


@pytest.mark.parametrize("value", ["runs/cifar10", "x=runs/cifar10", "0"])
def test_runs_must_be_seed_equals_folder(value: str) -> None:
    with pytest.raises(ValueError, match="SEED=RUN_DIR"):
        _run_dirs([value])


@pytest.mark.parametrize("epochs", [None, 32])
def test_supernet_epochs_come_from_the_recipe_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epochs: int | None
) -> None:
    trained = []
    monkeypatch.setattr(ofa.pipeline, "train_or_continue", lambda config, **_: trained.append(config))
    run_dir = train_supernet(3, tmp_path / "data", tmp_path / "out", epochs)
    (config,) = trained
    recipe = load_train_config(RECIPE)
    assert config.epochs == (recipe.epochs if epochs is None else epochs)
    assert config.seed == 3 and run_dir == tmp_path / "out" / "supernet-s3"


@pytest.mark.parametrize(("epochs", "distill", "scratch"), [(None, True, True), (64, False, False)])
def test_a_helper_process_gets_every_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epochs: int | None, distill: bool, scratch: bool
) -> None:
    settings = (tmp_path / "data", tmp_path / "out", [0, 1], {1: tmp_path / "run1"}, 3, distill, epochs, scratch)
    command = helper_command_of(*settings)
    assert command[1:3] == ["-m", "benchmarks.bench_finetune"]
    received = []
    monkeypatch.setattr(benchmarks.bench_finetune, "main", lambda *arguments: received.append(arguments))
    benchmarks.bench_finetune.cli(command[3:])
    ((data, out, seeds, run_dirs, finetune_epochs, kd, jobs, worker, got_epochs, got_scratch),) = received
    assert (Path(data), Path(out), seeds, run_dirs, finetune_epochs) == settings[:5]
    assert (kd, got_epochs, got_scratch, jobs, worker) == (distill, epochs, scratch, 1, True)


def test_a_finished_job_is_reused_only_if_made_with_the_jobs_settings(tmp_path: Path) -> None:
    """An export left by an older default lr or other epochs is refused, not reported under this job's name."""
    run_dir, out = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    shutil.copy(RECIPE, run_dir / "config.yaml")
    recipe_lr = load_train_config(RECIPE).optim.lr
    job = Job(0, 3.0, variants(distill=True, finetune_epochs=4)[0])
    target = job.folder(out)
    target.mkdir(parents=True)

    def write(lr: float, epochs: int = 4) -> None:
        metadata = {"epochs": epochs, "distill": 1, "seed": 0, "lr": lr}
        info = dict.fromkeys(ofa.export._REQUIRED_KEYS) | {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION}
        (target / "arch.json").write_text(json.dumps(info | {"metadata": metadata}))

    write(recipe_lr * FINETUNE_LR_FACTOR)
    assert run_job(job, run_dir, {}, out, 4, distill=True)
    for lr, epochs in ((recipe_lr * FINETUNE_LR_FACTOR / 3, 4), (recipe_lr * FINETUNE_LR_FACTOR, 16)):
        write(lr, epochs)
        with pytest.raises(ValueError, match=r"was made with .*move it away"):
            run_job(job, run_dir, {}, out, 4, distill=True)
    longer = Job(0, 3.0, variants(distill=True, finetune_epochs=16)[0])
    assert longer.folder(out) != target  # 4 and 16 epochs keep separate results
