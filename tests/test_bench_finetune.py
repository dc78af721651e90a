"""The fine-tuning benchmark's arch choice and argument parsing (its training is the benchmark itself)."""

from __future__ import annotations

import pytest

from benchmarks.bench_finetune import ARCH_DATA, BUDGETS, _run_dirs, chosen_archs
from ofa.space import load_space
from predictors.dataset import read_arch_csv


def test_each_budget_gets_the_best_val_arch_that_fits() -> None:
    space = load_space("cifar")
    records = read_arch_csv(ARCH_DATA, space)
    chosen = chosen_archs(BUDGETS)
    for budget, arch in chosen.items():
        fitting = [record for record in records if record.mmacs <= budget]
        best = max(record.val_acc for record in fitting)
        picked = [record for record in fitting if record.arch.to_dict() == arch]
        assert picked and picked[0].val_acc == best
    assert len({str(arch) for arch in chosen.values()}) == len(BUDGETS)  # four different archs


def test_a_budget_below_every_measured_arch_is_refused() -> None:
    with pytest.raises(ValueError, match="no measured arch"):
        chosen_archs([0.1])


@pytest.mark.parametrize("value", ["runs/cifar10", "x=runs/cifar10", "0"])
def test_runs_must_be_seed_equals_folder(value: str) -> None:
    with pytest.raises(ValueError, match="SEED=RUN_DIR"):
        _run_dirs([value])
