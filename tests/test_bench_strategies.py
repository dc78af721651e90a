"""The strategy benchmark's measurement cache (its searches and measurements are the benchmark itself)."""

from __future__ import annotations

import random
from pathlib import Path

from benchmarks.bench_strategies import Measurements
from ofa.space import load_space


class CountingRun:
    """Stands for a loaded run: each evaluation returns a new accuracy and is counted."""

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, arch: object, split: str = "val") -> object:
        self.calls += 1
        return type("Evaluation", (), {"accuracy": 0.1 * self.calls})()


def test_an_arch_is_measured_once_and_kept_across_invocations(tmp_path: Path) -> None:
    space = load_space("tiny")
    first, second = (space.sample(random.Random(seed)) for seed in (0, 1))
    run = CountingRun()
    measured = Measurements(run, tmp_path / "measured.jsonl")
    assert measured.val(first) == measured.val(first) == 0.1
    assert measured.val(second) == 0.2 and run.calls == 2 and measured.made == 2
    with (tmp_path / "measured.jsonl").open("a") as handle:
        handle.write('{"arch": {"resolution"')  # a line cut short by a kill
    again = Measurements(CountingRun(), tmp_path / "measured.jsonl")
    assert again.values == {first: 0.1, second: 0.2}
    assert again.val(second) == 0.2 and again.made == 0
    third = space.sample(random.Random(2))
    assert again.val(third) == 0.1 and again.made == 1  # appended after the torn line was dropped
    assert Measurements(CountingRun(), tmp_path / "measured.jsonl").values == {first: 0.1, second: 0.2, third: 0.1}
