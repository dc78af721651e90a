"""Pareto fronts and 2-D hypervolume for cost/score trade-offs (lower cost and higher score are better).

The accuracy-vs-MACs front of once-for-all (Cai et al., ICLR 2020) and AttentiveNAS (Wang et al.,
CVPR 2021) is the set of non-dominated subnets; its quality is measured by the hypervolume indicator
(Zitzler & Thiele, 1998): the area dominated by the front and bounded by a reference point. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hypervolume", "nondominated_ranks", "pareto_front"]


def _as_pair(costs: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, ...]:
    cost_array = np.asarray(costs, dtype=np.float64).reshape(-1)
    score_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if cost_array.shape != score_array.shape:
        raise ValueError(f"costs and scores must have the same length, got {cost_array.size} and {score_array.size}")
    if not (np.isfinite(cost_array).all() and np.isfinite(score_array).all()):
        raise ValueError("costs and scores must be finite numbers (found NaN or infinity)")
    return cost_array, score_array


def pareto_front(costs: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, ordered by increasing cost.

    A point is dominated when another one costs no more and scores no less, being strictly better in
    one of the two. Of several identical points only the first (lowest index) is kept.

    Args:
        costs: cost of each point (lower is better), e.g. MMACs.
        scores: score of each point (higher is better), e.g. predicted accuracy.

    Returns:
        int64 indices into ``costs``/``scores``; costs strictly and scores strictly increase along them.
    """
    cost_array, score_array = _as_pair(costs, scores)
    if cost_array.size == 0:
        return np.empty(0, dtype=np.int64)
    # cost ascending, then score descending, then index ascending
    order = np.lexsort((np.arange(cost_array.size), -score_array, cost_array))
    sorted_scores = score_array[order]
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], sorted_scores[:-1])))
    return order[sorted_scores > best_before].astype(np.int64)


def nondominated_ranks(costs: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Front number of every point: 0 for the Pareto front, 1 for the front of the rest, and so on.

    Identical points get successive ranks, so each rank holds distinct points.
    """
    cost_array, score_array = _as_pair(costs, scores)
    ranks = np.full(cost_array.size, -1, dtype=np.int64)
    remaining = np.arange(cost_array.size)
    rank = 0
    while remaining.size:
        front = remaining[pareto_front(cost_array[remaining], score_array[remaining])]
        ranks[front] = rank
        remaining = remaining[ranks[remaining] < 0]
        rank += 1
    return ranks


def hypervolume(
    costs: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    reference_cost: float,
    reference_score: float,
) -> float:
    """Exact area dominated by the points and bounded by the reference point.

    The area is the union of the rectangles ``[cost, reference_cost] x [reference_score, score]``;
    points costing more than ``reference_cost`` or scoring less than ``reference_score`` add nothing.

    Args:
        costs: cost of each point (lower is better).
        scores: score of each point (higher is better).
        reference_cost: the worst cost considered (e.g. the largest subnet's MMACs).
        reference_score: the worst score considered (e.g. the smallest subnet's score).
    """
    if not (np.isfinite(reference_cost) and np.isfinite(reference_score)):
        raise ValueError(f"reference point must be finite, got ({reference_cost}, {reference_score})")
    cost_array, score_array = _as_pair(costs, scores)
    inside = (cost_array < reference_cost) & (score_array > reference_score)
    cost_array, score_array = cost_array[inside], score_array[inside]
    if cost_array.size == 0:
        return 0.0
    front = pareto_front(cost_array, score_array)
    front_costs, front_scores = cost_array[front], score_array[front]
    heights = np.diff(np.concatenate(([reference_score], front_scores)))
    return float(np.sum((reference_cost - front_costs) * heights))
