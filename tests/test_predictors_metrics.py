"""Predictor metrics agree with scipy (ties included) and handle edge cases."""

import numpy as np
import pytest
from scipy import stats

from predictors.metrics import kendall_tau, mae, pearson, precision_at_k, rmse, spearman


def _data(seed, size, levels):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, levels, size).astype(float)  # few levels: many ties
    predicted = true + rng.integers(0, levels, size) * rng.random()
    predicted[: size // 4] = predicted[0]  # a block of tied predictions
    return true, predicted


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("size", "levels"), [(7, 3), (60, 5), (400, 20), (3000, 50)])
def test_correlations_agree_with_scipy_with_ties(seed, size, levels):
    true, predicted = _data(seed, size, levels)
    assert kendall_tau(true, predicted) == pytest.approx(stats.kendalltau(true, predicted).statistic, abs=1e-12)
    assert spearman(true, predicted) == pytest.approx(stats.spearmanr(true, predicted).statistic, abs=1e-12)
    assert pearson(true, predicted) == pytest.approx(stats.pearsonr(true, predicted).statistic, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_correlations_agree_with_scipy_on_continuous_data(seed):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=150)
    predicted = true + rng.normal(size=150)
    assert kendall_tau(true, predicted) == pytest.approx(stats.kendalltau(true, predicted).statistic, abs=1e-12)
    assert spearman(true, predicted) == pytest.approx(stats.spearmanr(true, predicted).statistic, abs=1e-12)
    assert pearson(true, predicted) == pytest.approx(stats.pearsonr(true, predicted).statistic, abs=1e-12)


def test_errors():
    true = np.array([0.5, 0.7, 0.9, 1.0])
    predicted = np.array([0.6, 0.5, 0.9, 1.3])
    assert rmse(true, predicted) == pytest.approx(np.sqrt(np.mean([0.01, 0.04, 0.0, 0.09])))
    assert mae(true, predicted) == pytest.approx(np.mean([0.1, 0.2, 0.0, 0.3]))
    assert rmse(true, true) == 0.0 and mae(true, true) == 0.0


def test_perfect_reversed_and_constant_rankings():
    values = np.arange(10.0)
    assert kendall_tau(values, values) == pytest.approx(1.0)
    assert kendall_tau(values, -values) == pytest.approx(-1.0)
    assert spearman(values, 2 * values + 1) == pytest.approx(1.0)
    for metric in (kendall_tau, spearman, pearson):
        assert metric(values, np.ones(10)) == 0.0  # undefined: no ranking information


def test_precision_at_k():
    true = np.arange(10.0)
    assert precision_at_k(true, true, 3) == 1.0
    assert precision_at_k(true, -true, 3) == 0.0
    assert precision_at_k(true, true + np.r_[0, 0, 0, 0, 0, 0, 0, 0, 0, -100], 3) == pytest.approx(2 / 3)
    assert precision_at_k(true, true, 10) == 1.0
    # predictions tied at the k-th place: expected overlap over the tied archs (4 tied, 2 true top-3 among them)
    predicted = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2.0])
    assert precision_at_k(true, predicted, 3) == pytest.approx((1 + 2 * 2 / 3) / 3)
    # true values tied at the k-th place all count as true top-k
    true_tied = np.array([0, 0, 0, 5, 5, 5, 5, 9.0])
    assert precision_at_k(true_tied, np.array([0, 0, 0, 4, 1, 1, 1, 9.0]), 2) == 1.0
    # a constant prediction scores the share of true top-k archs
    assert precision_at_k(true, np.zeros(10), 5) == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        spearman([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        pearson([1.0], [1.0])
    for k in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            precision_at_k(np.arange(10), np.arange(10), k)
