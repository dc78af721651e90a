"""Rank and error metrics of accuracy predictors, correct with ties.

The set follows the predictor benchmark of White et al. (NeurIPS 2021, "How powerful are performance
predictors in neural architecture search?"): Kendall tau-b, Spearman rho, Pearson r, RMSE, MAE and
precision@k. ``true`` holds the measured values and ``predicted`` the predictions; higher is better
(orient losses by negating them). A correlation with a constant input is undefined; it is reported as
0.0 (no ranking information) so that a constant predictor scores as no better than chance.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

__all__ = ["kendall_tau", "mae", "pearson", "precision_at_k", "rmse", "spearman"]

_PAIRS_PER_BLOCK = 1 << 21  # pair-matrix cells computed at once by kendall_tau (bounds memory)


def _pair(true: ArrayLike, predicted: ArrayLike, minimum: int = 1) -> tuple[np.ndarray, np.ndarray]:
    first = np.asarray(true, dtype=np.float64).ravel()
    second = np.asarray(predicted, dtype=np.float64).ravel()
    if first.shape != second.shape:
        raise ValueError(f"true and predicted differ in length: {first.size} vs {second.size}")
    if first.size < minimum:
        raise ValueError(f"need at least {minimum} values, got {first.size}")
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        raise ValueError("true and predicted must be finite (no NaN or inf)")
    return first, second


def kendall_tau(true: ArrayLike, predicted: ArrayLike) -> float:
    """Kendall tau-b: (concordant - discordant) / sqrt(pairs untied in true * pairs untied in predicted)."""
    first, second = _pair(true, predicted, minimum=2)
    score = untied_first = untied_second = 0
    block = max(1, _PAIRS_PER_BLOCK // first.size)
    for start in range(0, first.size, block):
        sign_first = np.sign(first[start : start + block, None] - first[None, :])
        sign_second = np.sign(second[start : start + block, None] - second[None, :])
        score += int(np.sum(sign_first * sign_second))
        untied_first += int(np.count_nonzero(sign_first))
        untied_second += int(np.count_nonzero(sign_second))
    if untied_first == 0 or untied_second == 0:
        return 0.0
    return float(score / np.sqrt(float(untied_first) * float(untied_second)))


def pearson(true: ArrayLike, predicted: ArrayLike) -> float:
    """Pearson correlation coefficient."""
    first, second = _pair(true, predicted, minimum=2)
    first = first - first.mean()
    second = second - second.mean()
    scale = np.sqrt(np.dot(first, first) * np.dot(second, second))
    if scale == 0:
        return 0.0
    return float(np.clip(np.dot(first, second) / scale, -1.0, 1.0))


def spearman(true: ArrayLike, predicted: ArrayLike) -> float:
    """Spearman rho: the Pearson correlation of the ranks (ties get their average rank)."""
    first, second = _pair(true, predicted, minimum=2)
    return pearson(rankdata(first), rankdata(second))


def rmse(true: ArrayLike, predicted: ArrayLike) -> float:
    """Root mean squared error."""
    first, second = _pair(true, predicted)
    return float(np.sqrt(np.mean((first - second) ** 2)))


def mae(true: ArrayLike, predicted: ArrayLike) -> float:
    """Mean absolute error."""
    first, second = _pair(true, predicted)
    return float(np.mean(np.abs(first - second)))


def precision_at_k(true: ArrayLike, predicted: ArrayLike, k: int) -> float:
    """Share of the true top-k among the predicted top-k (higher values = better archs).

    Ties are handled without arbitrary tie-breaking: every arch tied with the k-th best true value counts
    as a true top-k arch, and when predictions tie at the k-th place, the result is the expected overlap
    over a random choice among the tied archs.

    Raises:
        ValueError: ``k`` outside 1..len(true).
    """
    first, second = _pair(true, predicted)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= first.size:
        raise ValueError(f"k must be an integer in 1..{first.size} (the number of values), got {k!r}")
    true_top = first >= np.sort(first)[-k]
    threshold = np.sort(second)[-k]
    above = second > threshold
    tied = second == threshold
    remaining = k - int(above.sum())
    overlap = np.count_nonzero(above & true_top) + remaining * np.count_nonzero(tied & true_top) / tied.sum()
    return float(overlap / k)
