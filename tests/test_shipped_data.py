"""The measured arch data the benchmarks read by default is in the repository and readable."""

from __future__ import annotations

import pytest

from benchmarks.bench_finetune import ARCH_DATA
from benchmarks.bench_predictors import DEFAULT_DATA, DEFAULT_REPEAT, DIGITS_DATA, DIGITS_REPEAT
from ofa.space import load_space
from predictors.dataset import read_arch_csv


@pytest.mark.parametrize(
    ("path", "space", "rows"),
    [
        (ARCH_DATA, "cifar", 400),
        (DEFAULT_DATA, "cifar", 400),
        (DEFAULT_REPEAT, "cifar", 200),
        (DIGITS_DATA, "tiny", 600),
        (DIGITS_REPEAT, "tiny", 600),
    ],
)
def test_default_arch_data_is_shipped(path, space: str, rows: int) -> None:
    records = read_arch_csv(path, load_space(space))
    assert len(records) == rows
    assert len({record.arch for record in records}) == rows  # distinct archs, one measurement each
