"""Search under MAC budgets: budget parsing, settings, feasibility, reproducibility, fronts and quality."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.bench_search import synthetic_accuracy
from ofa._genome import Genome
from ofa.flops import count_macs_many
from ofa.pareto import hypervolume, nondominated_ranks, pareto_front
from ofa.search import (
    SearchSettings,
    combined_front,
    evolutionary_search,
    parse_budget,
    parse_budgets,
    random_search,
    search_budgets,
    smallest_mmacs,
)
from ofa.space import Arch, SearchSpace, load_space

TINY = load_space("tiny")
TINY_MIN = smallest_mmacs(TINY)  # 0.118624 MMACs at 10 classes
TINY_MAX = float(count_macs_many(TINY, [TINY.max_arch()], 10)[0]) / 1e6
SMALL = SearchSettings(population=12, generations=3, seed=0)


def exact_mmacs(space: SearchSpace, archs: tuple[Arch, ...] | list[Arch]) -> np.ndarray:
    return count_macs_many(space, list(archs), 10) / 1e6


# ----------------------------------------------------------------------------------------------------
# budgets and settings
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mmacs"),
    [("5M", 5.0), ("5.5M", 5.5), ("120M", 120.0), ("1.2G", 1200.0), ("800K", 0.8), ("5", 5.0), (" 2m ", 2.0), (3, 3.0)],
)
def test_parse_budget_accepts_suffixes(text: str, mmacs: float) -> None:
    assert parse_budget(text) == pytest.approx(mmacs)


@pytest.mark.parametrize("text", ["abc", "-5M", "-1", "0", "0M", "", "  ", "5X", "M", "5MM", "nan", "inf", "1e999"])
def test_parse_budget_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r"K, M or G") as error:
        parse_budget(text)
    assert repr(text) in str(error.value)


def test_parse_budget_accepts_numpy_scalars() -> None:
    assert parse_budget(np.float64(2.5)) == 2.5
    assert parse_budget(np.int64(3)) == 3.0
    for bad in (True, None, [2.0], np.float64("nan"), np.int64(-1)):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


def test_parse_budgets_lists() -> None:
    assert parse_budgets("2M,4M,8M") == [2.0, 4.0, 8.0]
    assert parse_budgets("800K, 1.2G") == [0.8, 1200.0]
    for bad in ("", "2M,,4M", "2M,abc"):
        with pytest.raises(ValueError, match="budget"):
            parse_budgets(bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("population", 1),
        ("population", 2.5),
        ("population", True),
        ("generations", -1),
        ("parent_ratio", 0.0),
        ("parent_ratio", 1.0),
        ("mutation_prob", -0.1),
        ("mutation_prob", float("nan")),
        ("resolution_mutation_prob", 1.5),
        ("mutation_ratio", 2),
        ("max_repair_tries", -1),
        ("max_repair_tries", 10_000),
        ("parent_selection", "best"),
        ("seed", -1),
    ],
)
def test_settings_reject_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SearchSettings(**{field: value})


def test_budget_below_smallest_subnet_fails_at_once() -> None:
    calls = []

    def objective(archs: list[Arch]) -> np.ndarray:
        calls.append(len(archs))
        return synthetic_accuracy(archs)

    for run in (
        lambda: evolutionary_search(TINY, objective, 0.1, SMALL),
        lambda: random_search(TINY, objective, "100K", 10),
        lambda: search_budgets(TINY, objective, [2.0, 0.05], SMALL),
    ):
        with pytest.raises(ValueError, match=r"0\.118624") as error:
            run()
        assert "smallest subnet" in str(error.value)
    assert calls == []  # refused before any search ran


def test_budget_equal_to_smallest_subnet_gives_it() -> None:
    result = evolutionary_search(TINY, synthetic_accuracy, TINY_MIN, SMALL)
    assert result.best_arch == TINY.min_arch()
    assert result.num_evaluations == 1
    assert result.best_cost == pytest.approx(TINY_MIN)


def test_bad_inputs_are_refused() -> None:
    cases = [
        ("callable", lambda: evolutionary_search(TINY, "accuracy", 1.0)),
        ("SearchSettings", lambda: evolutionary_search(TINY, synthetic_accuracy, 1.0, {"population": 3})),
        ("SearchSpace", lambda: evolutionary_search("tiny", synthetic_accuracy, 1.0)),
        ("num_classes", lambda: evolutionary_search(TINY, synthetic_accuracy, 1.0, SMALL, num_classes=0)),
        ("strategy", lambda: search_budgets(TINY, synthetic_accuracy, [1.0], strategy="grid")),
        ("evaluations_per_budget", lambda: search_budgets(TINY, synthetic_accuracy, [1.0], evaluations_per_budget=5)),
        ("budgets", lambda: search_budgets(TINY, synthetic_accuracy, [])),
        ("num_evaluations", lambda: random_search(TINY, synthetic_accuracy, 1.0, 0)),
        ("2 scores for", lambda: evolutionary_search(TINY, lambda archs: np.zeros(2), 1.0, SMALL)),
        ("NaN", lambda: evolutionary_search(TINY, lambda archs: np.full(len(archs), np.nan), 1.0, SMALL)),
    ]
    for message, run in cases:
        with pytest.raises(ValueError, match=message):
            run()


def test_random_strategy_over_budgets() -> None:
    result = search_budgets(TINY, synthetic_accuracy, [0.5, 2.0], SMALL, strategy="random", evaluations_per_budget=40)
    assert [r.strategy for r in result.results] == ["random", "random"]
    assert [r.num_evaluations for r in result.results] == [40, 40]
    assert all(r.best_cost <= b for r, b in zip(result.results, result.budgets))


# ----------------------------------------------------------------------------------------------------
# every returned arch fits its budget
# ----------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    fraction=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=10_000),
    selection=st.sampled_from(["top", "front"]),
    tries=st.integers(min_value=0, max_value=3),
)
def test_every_arch_fits_its_budget(fraction: float, seed: int, selection: str, tries: int) -> None:
    budget = TINY_MIN + fraction * (TINY_MAX - TINY_MIN)
    config = SearchSettings(population=12, generations=3, seed=seed, max_repair_tries=tries, parent_selection=selection)
    for result in (
        evolutionary_search(TINY, synthetic_accuracy, budget, config),
        random_search(TINY, synthetic_accuracy, budget, 30, seed=seed),
    ):
        counted = exact_mmacs(TINY, result.archs)
        assert (counted <= budget + 1e-9).all()
        np.testing.assert_array_equal(counted, result.costs)
        assert len(set(result.archs)) == len(result.archs) == result.num_evaluations
        assert result.best_cost <= budget + 1e-9
        assert result.best_score == result.scores.max()
        for arch in result.archs:
            TINY.validate(arch)


def test_multi_budget_answers_fit_and_front_is_nondominated() -> None:
    budgets = [0.3, 1.0, "2M"]
    result = search_budgets(TINY, synthetic_accuracy, budgets, SMALL)
    assert result.budgets == (0.3, 1.0, 2.0)
    for budget, per_budget in zip(result.budgets, result.results):
        assert per_budget.best_cost <= budget
        assert exact_mmacs(TINY, [per_budget.best_arch])[0] == per_budget.best_cost
    costs, scores = result.front_costs, result.front_scores
    assert (np.diff(costs) > 0).all() and (np.diff(scores) > 0).all()
    everything = [arch for per_budget in result.results for arch in per_budget.archs]
    all_scores = synthetic_accuracy(everything)
    all_costs = exact_mmacs(TINY, everything)
    for cost, score in zip(costs, scores):  # nothing evaluated dominates a front point
        assert not ((all_costs <= cost) & (all_scores >= score) & ((all_costs < cost) | (all_scores > score))).any()
    assert result.num_evaluations == len(set(everything))
    json.dumps(result.to_dict())


# ----------------------------------------------------------------------------------------------------
# reproducibility
# ----------------------------------------------------------------------------------------------------


def test_same_seed_same_result_and_front() -> None:
    config = SearchSettings(population=20, generations=5, seed=7)
    first = search_budgets(TINY, synthetic_accuracy, [0.5, 1.5, 3.0], config)
    second = search_budgets(TINY, synthetic_accuracy, [0.5, 1.5, 3.0], config)
    assert first.front_archs == second.front_archs
    np.testing.assert_array_equal(first.front_scores, second.front_scores)
    for one, two in zip(first.results, second.results):
        assert one.archs == two.archs and one.history == two.history and one.best_arch == two.best_arch
    other = search_budgets(TINY, synthetic_accuracy, [0.5, 1.5, 3.0], SearchSettings(population=20, generations=5))
    assert other.results[1].archs != first.results[1].archs
    random_first = random_search(TINY, synthetic_accuracy, 1.0, 50, seed=3)
    assert random_first.archs == random_search(TINY, synthetic_accuracy, 1.0, 50, seed=3).archs


def test_result_records_history_and_counts() -> None:
    calls = []

    def objective(archs: list[Arch]) -> np.ndarray:
        calls.append(len(archs))
        return synthetic_accuracy(archs)

    result = evolutionary_search(TINY, objective, 2.0, SearchSettings(population=20, generations=6))
    assert len(result.history) == 7 and list(result.history) == sorted(result.history)
    assert result.history[-1] == result.best_score
    assert sum(calls) == result.num_evaluations  # each arch scored once
    assert len(calls) == 7  # one objective call per generation (and one for the initial population)
    summary = result.to_dict(top=3)
    assert len(summary["top"]) == 3 and summary["best"]["arch"] == result.best_arch.to_dict()
    json.dumps(summary)


# ----------------------------------------------------------------------------------------------------
# the vectorised encoding is exact
# ----------------------------------------------------------------------------------------------------


def test_genome_matches_space_and_flops(space: SearchSpace) -> None:
    genome = Genome(space, 1000)
    rng = random.Random(0)
    archs = [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(300)]
    rows = genome.encode(archs)
    assert genome.decode(rows) == archs
    np.testing.assert_array_equal(genome.macs(rows), count_macs_many(space, archs, 1000))
    generator = np.random.default_rng(0)
    for children in (
        genome.sample(300, generator),
        genome.mutate(rows, generator, 0.5, 0.5),
        genome.crossover(rows, rows[::-1], generator),
    ):
        child_archs = genome.decode(children)
        for arch in child_archs:
            space.validate(arch)
        np.testing.assert_array_equal(genome.encode(child_archs), children)
        np.testing.assert_array_equal(genome.macs(children), count_macs_many(space, child_archs, 1000))
    budget = float(np.median(genome.mmacs(rows)))
    shrunk = genome.shrink(rows, budget)
    assert (genome.mmacs(shrunk) <= budget + 1e-9).all()
    fitting = genome.mmacs(rows) <= budget
    np.testing.assert_array_equal(shrunk[fitting], rows[fitting])


def test_genome_operators_follow_space_operators() -> None:
    genome = Genome(TINY, 10)
    generator, rng = np.random.default_rng(1), random.Random(1)
    parent = TINY.sample(rng)
    other = TINY.sample(rng)
    rows = genome.encode([parent] * 4000)
    assert genome.decode(genome.mutate(rows[:5], generator, 0.0, 0.0)) == [parent] * 5
    mutated = genome.decode(genome.mutate(rows, generator, 0.3, 0.5))
    reference = [TINY.mutate(parent, rng, 0.3, 0.5) for _ in range(4000)]
    for field in ("resolution", "depth", "width"):
        ours = np.mean([getattr(arch, field) == getattr(parent, field) for arch in mutated])
        theirs = np.mean([getattr(arch, field) == getattr(parent, field) for arch in reference])
        assert ours == pytest.approx(theirs, abs=0.04), field
    crossed = genome.decode(genome.crossover(rows, genome.encode([other] * 4000), generator))
    for arch in crossed:
        assert arch.resolution in (parent.resolution, other.resolution)
        for s, depth in enumerate(arch.depth):
            assert depth in (parent.depth[s], other.depth[s])
            for block in range(depth):
                donors = [p.kernel_size[s][block] for p in (parent, other) if block < p.depth[s]]
                assert arch.kernel_size[s][block] in donors


# ----------------------------------------------------------------------------------------------------
# Pareto front and hypervolume
# ----------------------------------------------------------------------------------------------------


def test_pareto_front_small_example() -> None:
    costs = [1.0, 2.0, 2.0, 3.0, 0.5, 1.0]
    scores = [1.0, 2.0, 1.5, 1.8, 0.2, 1.0]
    np.testing.assert_array_equal(pareto_front(costs, scores), [4, 0, 1])  # index 5 repeats index 0
    np.testing.assert_array_equal(nondominated_ranks(costs, scores), [0, 0, 1, 1, 0, 1])
    assert pareto_front([], []).size == 0
    with pytest.raises(ValueError, match="same length"):
        pareto_front([1.0], [1.0, 2.0])


def test_hypervolume_small_example() -> None:
    # front (1, 1), (2, 2) against reference (4, 0): 3*1 + 2*1
    assert hypervolume([1, 2, 3], [1, 2, 1.5], 4, 0) == pytest.approx(5.0)
    assert hypervolume([5, 1], [3, -1], 4, 0) == 0.0  # outside the reference box
    assert hypervolume([], [], 4, 0) == 0.0


def _grid_hypervolume(costs: list[float], scores: list[float], ref_cost: float, ref_score: float) -> float:
    xs = sorted({min(c, ref_cost) for c in costs} | {ref_cost})
    ys = sorted({max(s, ref_score) for s in scores} | {ref_score})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(itertools.pairwise(xs), itertools.pairwise(ys)):
        if any(c <= x0 and s >= y1 for c, s in zip(costs, scores)):
            area += (x1 - x0) * (y1 - y0)
    return area


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=0, max_size=12))
def test_hypervolume_equals_union_of_rectangles(points: list[tuple[int, int]]) -> None:
    costs = [float(c) for c, _ in points]
    scores = [float(s) for _, s in points]
    assert hypervolume(costs, scores, 15.0, 3.0) == pytest.approx(_grid_hypervolume(costs, scores, 15.0, 3.0))


# ----------------------------------------------------------------------------------------------------
# quality: evolution against a large random enumeration and against random search
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_front() -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The front of 100,000 uniformly random tiny archs, and the reference point (largest MMACs, the
    smallest subnet's score)."""
    rng = random.Random(123)
    archs = [TINY.sample(rng) for _ in range(100_000)]
    costs, scores = exact_mmacs(TINY, archs), synthetic_accuracy(archs)
    front = pareto_front(costs, scores)
    return costs[front], scores[front], (TINY_MAX, float(synthetic_accuracy([TINY.min_arch()])[0]))


@pytest.mark.parametrize("selection", ["top", "front"])
def test_evolution_front_reaches_enumerated_front(reference_front: tuple, selection: str) -> None:
    ref_costs, ref_scores, point = reference_front
    best_known = hypervolume(ref_costs, ref_scores, *point)
    budgets = [float(b) for b in np.geomspace(1.5 * TINY_MIN, TINY_MAX, 7)]
    config = SearchSettings(population=30, generations=10, parent_selection=selection, seed=0)
    evolution = search_budgets(TINY, synthetic_accuracy, budgets, config)
    randoms = [
        random_search(TINY, synthetic_accuracy, budget, result.num_evaluations, seed=index)
        for index, (budget, result) in enumerate(zip(budgets, evolution.results))
    ]
    _, random_costs, random_scores = combined_front(randoms)
    evolution_ratio = evolution.hypervolume(*point) / best_known
    random_ratio = hypervolume(random_costs, random_scores, *point) / best_known
    random_evaluations = sum(result.num_evaluations for result in randoms)
    print(
        f"\n[{selection}] hypervolume / best known (100,000 random archs): evolution {evolution_ratio:.4f} "
        f"({evolution.num_evaluations} evaluations), random search {random_ratio:.4f} ({random_evaluations})"
    )
    assert evolution.num_evaluations <= 100_000 / 20  # far fewer evaluations
    assert evolution_ratio >= 0.99
    assert evolution_ratio >= random_ratio - 1e-3


@pytest.mark.parametrize("model", ["lightgbm", "ridge", "macs"])
def test_a_predictor_scored_from_rows_gives_the_same_search_as_its_predict(model: str) -> None:
    from predictors.models import create_predictor

    space = load_space("tiny")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(60)]
    predictor = create_predictor(model, space, seed=0, num_classes=10).fit(archs, synthetic_accuracy(archs))
    settings = SearchSettings(population=30, generations=8, seed=1)
    from_rows = evolutionary_search(space, predictor, 3.0, settings, 10)
    from_archs = evolutionary_search(space, predictor.predict, 3.0, settings, 10)
    assert from_rows.archs == from_archs.archs
    assert np.allclose(from_rows.scores, from_archs.scores, rtol=1e-12, atol=0.0)
    other_classes = evolutionary_search(space, predictor, 3.0, settings, 100)  # its own encoding: through predict
    assert other_classes.archs == evolutionary_search(space, predictor.predict, 3.0, settings, 100).archs
