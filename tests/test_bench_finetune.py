"""The fine-tuning benchmark's arch choice and argument parsing (its training is the benchmark itself)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.bench_finetune import _run_dirs, chosen_archs
from ofa.flops import count_macs, count_params
from ofa.space import load_space
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
