"""Arch data sets measured inside a supernet (``ofa.archdata``) and the ``ofa evaluate`` command.

CSV validation (missing columns, NaN or empty cells, archs of another space) is tested on the reader in
``test_predictors_bench.py``; here: the FLOPs spread, distinct archs, resuming, repeated measurements.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import ofa.archdata
from ofa.archdata import archs_from_csv, measure_to_csv, spread_archs
from ofa.evaluate import evaluate_arch
from ofa.flops import count_macs_many
from ofa.runfolder import source_record_path
from ofa.space import SearchSpace, load_space
from ofa.supernet import Supernet
from predictors.bench import repeated_measurements
from predictors.dataset import read_arch_csv

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def supernet(tiny: SearchSpace) -> Supernet:
    torch.manual_seed(0)
    return Supernet(tiny, NUM_CLASSES, dropout=0.0).eval()


@pytest.fixture(scope="module")
def batches() -> dict[str, list]:
    """Random images: one calibration batch, two val batches (20 images), one test batch."""
    generator = torch.Generator().manual_seed(0)

    def images(count: int) -> torch.Tensor:
        return torch.randn(count, 3, 32, 32, generator=generator)

    def labels(count: int) -> torch.Tensor:
        return torch.randint(0, NUM_CLASSES, (count,), generator=generator)

    return {
        "calibration": [images(16)],
        "val": [(images(10), labels(10)), (images(10), labels(10))],
        "test": [(images(10), labels(10))],
    }


def _unit_macs(space: SearchSpace, archs: list) -> np.ndarray:
    """MMACs of archs scaled to [0, 1] between the smallest and the largest subnet."""
    low, high = count_macs_many(space, [space.min_arch(), space.max_arch()], NUM_CLASSES)
    return (count_macs_many(space, archs, NUM_CLASSES) - low) / (high - low)


# ----------------------------------------------------------------------------------------------------
# which archs
# ----------------------------------------------------------------------------------------------------


def test_spread_covers_the_flops_range_better_than_uniform_sampling(tiny):
    count = 100
    spread = spread_archs(tiny, count, NUM_CLASSES, seed=0)
    rng = random.Random(0)
    uniform = [tiny.sample(rng) for _ in range(count)]
    assert len(spread) == count and len(set(spread)) == count  # distinct
    assert spread[:2] == [tiny.min_arch(), tiny.max_arch()]  # both ends measured
    spread_units, uniform_units = _unit_macs(tiny, spread), _unit_macs(tiny, uniform)
    spread_bins = np.histogram(spread_units, bins=10, range=(0, 1))[0]
    uniform_bins = np.histogram(uniform_units, bins=10, range=(0, 1))[0]
    # more of the range covered, and no bin holds a crowd
    assert np.count_nonzero(spread_bins) >= 8 > np.count_nonzero(uniform_bins)
    assert spread_bins.max() <= 0.2 * count < uniform_bins.max()
    # the quantiles reach further out: the upper half of the range is not left to a few archs
    spread_quantiles, uniform_quantiles = np.quantile(spread_units, [0.5, 0.9]), np.quantile(uniform_units, [0.5, 0.9])
    assert (spread_quantiles > uniform_quantiles + 0.15).all()


def test_spread_is_seeded_and_checks_its_count(tiny):
    assert spread_archs(tiny, 30, NUM_CLASSES, seed=3) == spread_archs(tiny, 30, NUM_CLASSES, seed=3)
    assert spread_archs(tiny, 30, NUM_CLASSES, seed=3) != spread_archs(tiny, 30, NUM_CLASSES, seed=4)
    assert spread_archs(tiny, 1, NUM_CLASSES, seed=0) == [tiny.min_arch()]
    with pytest.raises(ValueError, match="must be >= 1"):
        spread_archs(tiny, 0, NUM_CLASSES, seed=0)


# ----------------------------------------------------------------------------------------------------
# measuring into a CSV
# ----------------------------------------------------------------------------------------------------


def _measure(path, supernet, archs, batches, seed=0):
    return measure_to_csv(path, supernet, archs, batches["calibration"], batches["val"], batches["test"], seed)


def test_csv_resumes_without_measuring_again(tiny, supernet, batches, tmp_path, monkeypatch):
    archs = spread_archs(tiny, 6, NUM_CLASSES, seed=0)
    complete = _measure(tmp_path / "complete.csv", supernet, archs, batches)
    assert [record.arch for record in complete] == archs

    calls = []

    def interrupted(*arguments, **keywords):
        calls.append(arguments[1])
        if len(calls) == 4:  # 3 archs done (one BN calibration each, then val and test), the 4th under way
            raise KeyboardInterrupt
        return evaluate_arch(*arguments, **keywords)

    monkeypatch.setattr(ofa.archdata, "evaluate_arch", interrupted)
    path = tmp_path / "resumed.csv"
    with pytest.raises(KeyboardInterrupt):
        _measure(path, supernet, archs, batches)
    assert [record.arch for record in read_arch_csv(path, tiny)] == archs[:3]  # what finished is kept

    calls.clear()
    resumed = _measure(path, supernet, archs, batches)
    assert calls == archs[3:]  # only the missing archs, each calibrated once
    assert resumed == complete  # the same result as one uninterrupted run
    calls.clear()
    assert _measure(path, supernet, archs, batches) == complete and calls == []  # nothing left to do


def test_rows_measured_on_other_weights_are_moved_aside_and_measured_again(tiny, supernet, batches, tmp_path):
    archs = spread_archs(tiny, 3, NUM_CLASSES, seed=0)
    path = tmp_path / "archs.csv"
    arguments = (supernet, archs, batches["calibration"], batches["val"], batches["test"], 0)
    first = measure_to_csv(path, *arguments, source={"checkpoint_sha256": "aaa"})
    assert measure_to_csv(path, *arguments, source={"checkpoint_sha256": "aaa"}) == first  # same weights: reused
    with torch.no_grad():
        for parameter in supernet.parameters():
            parameter.mul_(0.5)  # "more training": other weights, another digest
    second = measure_to_csv(path, *arguments, source={"checkpoint_sha256": "bbb"})
    assert [record.arch for record in second] == archs  # measured again, not appended to the stale rows
    assert [record.val_loss for record in second] != [record.val_loss for record in first]
    assert read_arch_csv(tmp_path / "archs.stale-1.csv", tiny) == first  # the stale rows are kept aside
    assert json.loads(source_record_path(path).read_text()) == {"checkpoint_sha256": "bbb"}


def test_another_seed_is_a_repeated_measurement(tiny, supernet, batches, tmp_path):
    archs = spread_archs(tiny, 4, NUM_CLASSES, seed=0)
    path = tmp_path / "archs.csv"
    _measure(path, supernet, archs, batches, seed=0)
    assert archs_from_csv(path, tiny) == archs
    other = [images.flip(0) for images in batches["calibration"]]
    records = measure_to_csv(path, supernet, archs_from_csv(path, tiny), other, batches["val"], batches["test"], 1)
    assert [record.seed for record in records] == [0] * 4 + [1] * 4
    first, second = repeated_measurements(records, "val_loss")
    assert first.size == second.size == 4
    assert archs_from_csv(path, tiny) == archs  # still distinct, in file order


def test_archs_from_csv_checks_the_space(tiny, supernet, batches, tmp_path):
    path = tmp_path / "archs.csv"
    _measure(path, supernet, spread_archs(tiny, 2, NUM_CLASSES, seed=0), batches)
    with pytest.raises(ValueError, match="column space is 'tiny'"):
        archs_from_csv(path, load_space("attentivenas"))
    (tmp_path / "empty.csv").write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="no rows"):
        archs_from_csv(tmp_path / "empty.csv", tiny)
