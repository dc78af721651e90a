"""FLOPs-target tables binned by a width in MMACs, their default width, cache and effect on BestUp candidates."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from ofa.flops import count_macs, count_macs_many
from ofa.sampling import (
    AttentiveSampler,
    FlopsTable,
    FlopsTargetSampler,
    build_flops_table,
    default_flops_bin_mmacs,
    load_or_build_flops_table,
    space_fingerprint,
)
from ofa.space import SearchSpace, load_space
from ofa.train_config import load_train_config

NUM_CLASSES = 10


def mmacs_range(space: SearchSpace, num_classes: int) -> tuple[float, float]:
    """MMACs of the smallest and the largest subnet."""
    low = count_macs(space, space.min_arch(), num_classes) / 1e6
    high = count_macs(space, space.max_arch(), num_classes) / 1e6
    return low, high


@pytest.mark.parametrize("width", [0.3, 0.5, 1.0, 4.0])
def test_edges_are_spaced_by_the_width_and_cover_the_range(tiny: SearchSpace, width: float) -> None:
    table = build_flops_table(tiny, NUM_CLASSES, num_samples=300, bin_mmacs=width)
    low, high = mmacs_range(tiny, NUM_CLASSES)
    edges = np.asarray(table.edges)
    np.testing.assert_allclose(np.diff(edges), width, rtol=1e-6)
    assert edges[0] == pytest.approx(low, rel=1e-12)
    assert edges[-1] >= high and edges[-2] < high  # the last edge is the first one at or past the max subnet
    assert len(table.counts) == math.ceil((high - low) / width)
    assert sum(table.counts) == table.num_samples == 300


def test_default_width_on_a_paper_space_is_25_mmacs() -> None:
    assert default_flops_bin_mmacs(load_space("attentivenas"), 1000) == 25.0


@pytest.mark.parametrize("name", ["tiny", "cifar"])
def test_default_width_on_a_small_space_cuts_the_range_into_70_bins(name: str) -> None:
    space = load_space(name)
    low, high = mmacs_range(space, NUM_CLASSES)
    assert high - low < 500  # a small space: not the reference width
    assert default_flops_bin_mmacs(space, NUM_CLASSES) == pytest.approx((high - low) / 70, rel=1e-12)


def test_table_without_a_width_uses_the_default(tiny: SearchSpace) -> None:
    table = build_flops_table(tiny, NUM_CLASSES, num_samples=500)
    width = default_flops_bin_mmacs(tiny, NUM_CLASSES)
    np.testing.assert_allclose(np.diff(table.edges), width, rtol=1e-6)
    assert len(table.counts) == 70 and sum(table.counts) == 500


@pytest.mark.parametrize("width", [0.0, -1.0, math.nan, math.inf])
def test_invalid_width_is_refused(tiny: SearchSpace, width: float) -> None:
    with pytest.raises(ValueError, match="bin width"):
        build_flops_table(tiny, NUM_CLASSES, num_samples=10, bin_mmacs=width)


def test_negative_width_in_the_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="flops_bin_mmacs"):
        load_train_config(None, ("sampler.flops_bin_mmacs=-1",))


def test_cached_table_is_rebuilt_when_the_width_changes_and_reused_when_not(tiny: SearchSpace, tmp_path: Path) -> None:
    path = tmp_path / "flops.json"
    first = load_or_build_flops_table(path, tiny, NUM_CLASSES, num_samples=200, bin_mmacs=0.5)
    second = load_or_build_flops_table(path, tiny, NUM_CLASSES, num_samples=200, bin_mmacs=0.25)
    assert second.edges != first.edges
    np.testing.assert_allclose(np.diff(second.edges), 0.25, rtol=1e-6)
    assert json.loads(path.read_text())["edges"] == list(second.edges)  # the cache now holds the new width
    # the same settings reuse the file: a marked cache comes back as written
    data = json.loads(path.read_text())
    data["counts"] = [1] * len(data["counts"])
    path.write_text(json.dumps(data))
    again = load_or_build_flops_table(path, tiny, NUM_CLASSES, num_samples=200, bin_mmacs=0.25)
    assert again.edges == second.edges and set(again.counts) == {1}


def candidate_spreads(space: SearchSpace, table: FlopsTable, draws: int) -> np.ndarray:
    """MMACs spread (max - min) of the k = 3 BestUp candidates of ``draws`` seeded draws."""
    sampler = AttentiveSampler(FlopsTargetSampler(space, table, NUM_CLASSES), 3, "best")
    spreads = []
    for seed in range(draws):
        mmacs = count_macs_many(space, sampler.candidates(random.Random(seed)), NUM_CLASSES) / 1e6
        spreads.append(float(mmacs.max() - mmacs.min()))
    return np.asarray(spreads)


def test_candidates_of_one_target_lie_within_one_bin_width(tiny: SearchSpace) -> None:
    num_samples = 1000
    table = build_flops_table(tiny, NUM_CLASSES, num_samples=num_samples)
    width = table.edges[1] - table.edges[0]
    # the old table: 25 equal bins from the sampled min to the sampled max
    rng = random.Random(0)
    sampled = count_macs_many(tiny, [tiny.sample(rng) for _ in range(num_samples)], NUM_CLASSES) / 1e6
    counts, edges = np.histogram(sampled, bins=25)
    old = FlopsTable(
        space_fingerprint(tiny), NUM_CLASSES, num_samples, 0, tuple(map(float, edges)), tuple(map(int, counts))
    )
    spreads = candidate_spreads(tiny, table, 60)
    old_spreads = candidate_spreads(tiny, old, 60)
    assert np.mean(spreads <= width * (1 + 1e-9)) >= 0.9 and spreads.mean() < 0.7 * width
    assert np.mean(old_spreads <= width * (1 + 1e-9)) <= 0.8
    assert old_spreads.mean() > 1.4 * spreads.mean()
