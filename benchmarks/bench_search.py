"""P5 and P6: speed and quality of the evolutionary search under MAC budgets.

P5 (speed). Once-for-all's search settings (population 100, 500 generations, 25% parents, mutation
probability 0.1) on the ``ofa_mbv3`` space (1000 classes), with the shipped default accuracy predictor
(``predictors.registry.DEFAULT_PREDICTOR``, fitted on 400 random archs with a synthetic target) as the
objective, once per budget: seconds per budget and archs scored per second (goal: under 2 s per budget).
Also one budget query with the default settings on the tiny space (goal < 1 s). Wall and CPU seconds are
both reported (the machine may be shared).

P6 (quality). On the tiny space with a cheap known objective, the front over 7 budgets found by
evolution and by random search at the same number of evaluations, as a share of the hypervolume of the
best front among 100,000 uniformly random archs (reference point: the largest subnet's MMACs, the
smallest subnet's score).

Run: ``python -m benchmarks.bench_search``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.common import median, print_table
from ofa.flops import count_macs_many
from ofa.pareto import hypervolume, pareto_front
from ofa.search import (
    SearchSettings,
    combined_front,
    evolutionary_search,
    random_search,
    search_budgets,
    smallest_mmacs,
)
from ofa.search_rl import Reinforce
from ofa.space import Arch, SearchSpace, load_space
from predictors.encoding import encode
from predictors.models import Predictor, create_predictor
from predictors.registry import DEFAULT_PREDICTOR

__all__ = ["OFA_SETTINGS", "main", "measure_quality", "measure_speed"]

OFA_SETTINGS = SearchSettings(population=100, generations=500, parent_ratio=0.25, mutation_prob=0.1)
P5_BUDGETS = (200.0, 300.0, 400.0)  # MMACs; ofa_mbv3 at 1000 classes spans 41.5..566.2
KERNEL5_GAIN = (0.04, 0.02, -0.01, -0.03)


def _synthetic_target(space: SearchSpace, archs: Sequence[Arch], num_classes: int, seed: int) -> np.ndarray:
    """Accuracy-like target: saturating in MACs, kernel and expand effects that differ by stage, noise."""
    macs = count_macs_many(space, archs, num_classes) / 1e6
    scale = float(np.median(macs))
    features = encode(space, archs, derived=False)
    stage_terms = np.sin(np.arange(features.shape[1]) * 1.7) * 0.02
    noise = np.random.default_rng(seed).normal(0.0, 0.1, len(archs))
    return 80.0 - 12.0 * np.exp(-macs / scale) + features @ stage_terms + noise


def _shipped_predictor(space: SearchSpace, num_classes: int, seed: int = 0) -> Predictor:
    """The default predictor of the toolkit, fitted on 400 random archs of ``space``."""
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(400)]
    predictor = create_predictor(DEFAULT_PREDICTOR, space, seed=seed, num_classes=num_classes)
    predictor.fit(archs, _synthetic_target(space, archs, num_classes, seed))
    return predictor


class _TimedObjective:
    """A predictor (scored from archs or from the search's encoding, as the toolkit's search does) that records
    the seconds spent inside it."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor, self.seconds = predictor, 0.0
        self.space, self.num_classes = predictor.space, predictor.num_classes

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """The predictor's scores of archs, timed."""
        start = time.perf_counter()
        scores = self.predictor.predict(archs)
        self.seconds += time.perf_counter() - start
        return scores

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """The predictor's scores of encoded archs, timed."""
        start = time.perf_counter()
        scores = self.predictor.predict_encoded(encoded)
        self.seconds += time.perf_counter() - start
        return scores


def _timed_search(
    space: SearchSpace, objective: _TimedObjective, budget: float, settings: SearchSettings, num_classes: int
) -> dict[str, float]:
    objective.seconds = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    result = evolutionary_search(space, objective, budget, settings, num_classes)
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "objective": objective.seconds,
        "evaluations": float(result.num_evaluations),
        "best_mmacs": result.best_cost,
    }


def measure_speed(repeats: int = 2) -> dict[str, float]:
    """P5: seconds per budget and archs per second with OFA's settings on ofa_mbv3 and the shipped predictor,
    and a default query on tiny."""
    space = load_space("ofa_mbv3")
    objective = _TimedObjective(_shipped_predictor(space, 1000))
    runs = [
        _timed_search(space, objective, budget, OFA_SETTINGS, 1000) for _ in range(repeats) for budget in P5_BUDGETS
    ]
    tiny = load_space("tiny")
    tiny_objective = _TimedObjective(_shipped_predictor(tiny, 10))
    queries = [_timed_search(tiny, tiny_objective, 2.0, SearchSettings(seed=seed), 10) for seed in range(5)]
    wall = median([run["wall"] for run in runs])
    evaluations = median([run["evaluations"] for run in runs])
    return {
        "p5_seconds_per_budget": wall,
        "p5_cpu_seconds_per_budget": median([run["cpu"] for run in runs]),
        "p5_objective_seconds_per_budget": median([run["objective"] for run in runs]),
        "p5_max_seconds_per_budget": max(run["wall"] for run in runs),
        "p5_evaluations_per_budget": evaluations,
        "p5_archs_per_second": evaluations / wall,
        "p5_tiny_query_seconds": median([query["wall"] for query in queries]),
        "p5_tiny_query_evaluations": median([query["evaluations"] for query in queries]),
    }


def synthetic_accuracy(archs: Sequence[Arch]) -> np.ndarray:
    """A cheap known objective on the tiny space (also the search tests' ground truth): saturating in
    capacity, diminishing with depth, and not monotone (5x5 kernels and expand 6 in the last stage cost
    MACs but lower the score)."""
    scores = []
    for arch in archs:
        capacity = 0.6 * math.log(arch.resolution / 16) + sum(0.15 * math.log(w / 8) for w in arch.width)
        for stage, (kernels, expands) in enumerate(zip(arch.kernel_size, arch.expand_ratio)):
            for block, (kernel, expand) in enumerate(zip(kernels, expands)):
                gain = 0.25 * 0.6**block * (1 + 0.3 * math.log(expand))
                gain += KERNEL5_GAIN[stage] if kernel == 5 else 0.0
                gain -= 0.05 if stage == 3 and expand == 6 else 0.0
                capacity += gain
        scores.append(1 - math.exp(-capacity))
    return np.array(scores)


def _reference_front(enumerated: int) -> tuple[SearchSpace, tuple[float, float], float, list[float]]:
    """The tiny space, the hypervolume reference point (largest subnet's MMACs, smallest subnet's score), the
    hypervolume of the best front among ``enumerated`` random archs, and 7 budgets spread over the range."""
    space = load_space("tiny")
    rng = random.Random(123)
    archs = [space.sample(rng) for _ in range(enumerated)]
    costs, scores = count_macs_many(space, archs, 10) / 1e6, synthetic_accuracy(archs)
    largest = float(count_macs_many(space, [space.max_arch()], 10)[0]) / 1e6
    point = (largest, float(synthetic_accuracy([space.min_arch()])[0]))
    front = pareto_front(costs, scores)
    best_known = hypervolume(costs[front], scores[front], *point)
    return space, point, best_known, [float(b) for b in np.geomspace(1.5 * smallest_mmacs(space), largest, 7)]


def measure_quality(enumerated: int = 100_000) -> dict[str, float]:
    """P6: hypervolume of the front over 7 budgets / the best front among ``enumerated`` random archs."""
    space, point, best_known, budgets = _reference_front(enumerated)
    numbers: dict[str, float] = {"p6_enumerated_archs": float(enumerated)}
    for label, settings in (("small", SearchSettings(population=30, generations=10)), ("default", SearchSettings())):
        start = time.perf_counter()
        evolution = search_budgets(space, synthetic_accuracy, budgets, settings)
        seconds = time.perf_counter() - start
        randoms = [
            random_search(space, synthetic_accuracy, budget, result.num_evaluations, seed=index)
            for index, (budget, result) in enumerate(zip(budgets, evolution.results))
        ]
        _, random_costs, random_scores = combined_front(randoms)
        numbers[f"p6_{label}_evolution_ratio"] = evolution.hypervolume(*point) / best_known
        numbers[f"p6_{label}_random_ratio"] = hypervolume(random_costs, random_scores, *point) / best_known
        numbers[f"p6_{label}_evolution_evaluations"] = float(evolution.num_evaluations)
        numbers[f"p6_{label}_random_evaluations"] = float(sum(result.num_evaluations for result in randoms))
        numbers[f"p6_{label}_seconds"] = seconds
    return numbers


def compare_strategies(seeds: Sequence[int] = range(5), enumerated: int = 100_000) -> dict[str, list[float]]:
    """P6b: evolution, random and rl (LSTM controller) at the same objective queries per budget (evolution's
    small settings: 30 x 11), one search over the 7 budgets per seed; hypervolume ratio per seed."""
    space, point, best_known, budgets = _reference_front(enumerated)
    ratios: dict[str, list[float]] = {"evolution": [], "random": [], "rl": [], "rl_seconds": []}
    for seed in seeds:
        settings = SearchSettings(population=30, generations=10, seed=100 * seed)
        queries = settings.population * (settings.generations + 1)
        for strategy in ("evolution", "random", "rl"):
            start = time.perf_counter()
            per_budget = None if strategy == "evolution" else queries
            chosen = Reinforce() if strategy == "rl" else strategy
            result = search_budgets(space, synthetic_accuracy, budgets, settings, 10, chosen, per_budget)
            ratios[strategy].append(result.hypervolume(*point) / best_known)
            if strategy == "rl":
                ratios["rl_seconds"].append(time.perf_counter() - start)
    return ratios


def main() -> dict[str, float]:
    """Measure P5 and P6, print two tables, return the numbers."""
    speed = measure_speed()
    print("P5: search with OFA's settings (population 100, 500 generations, 25% parents, mutation 0.1)")
    rows: list[list[object]] = [
        [
            f"ofa_mbv3, {DEFAULT_PREDICTOR} (shipped default), per budget (median)",
            speed["p5_seconds_per_budget"],
            speed["p5_cpu_seconds_per_budget"],
            speed["p5_objective_seconds_per_budget"],
            speed["p5_evaluations_per_budget"],
            speed["p5_archs_per_second"],
        ],
        [
            f"tiny, {DEFAULT_PREDICTOR}, default settings, one query",
            speed["p5_tiny_query_seconds"],
            "",
            "",
            speed["p5_tiny_query_evaluations"],
            "",
        ],
    ]
    print_table(["case", "wall s", "cpu s", "objective s", "evaluations", "archs / s"], rows)
    quality = measure_quality()
    print("\nP6: hypervolume / best front of 100,000 random tiny archs (7 budgets)")
    quality_rows = []
    for label in ("small", "default"):
        quality_rows.append(
            [
                f"evolution ({label} settings)",
                quality[f"p6_{label}_evolution_ratio"],
                quality[f"p6_{label}_evolution_evaluations"],
                quality[f"p6_{label}_seconds"],
            ]
        )
        quality_rows.append(
            [
                f"random search (same evaluations as {label})",
                quality[f"p6_{label}_random_ratio"],
                quality[f"p6_{label}_random_evaluations"],
                "",
            ]
        )
    print_table(["strategy", "hypervolume ratio", "evaluations", "seconds"], quality_rows)
    strategies = compare_strategies()
    print("\nP6b: strategies at 330 objective queries per budget (7 budgets), hypervolume ratio, 5 seeds")
    print_table(
        ["strategy", "mean", "std", "min", "max"],
        [
            [name, float(np.mean(values)), float(np.std(values)), min(values), max(values)]
            for name, values in strategies.items()
        ],
    )
    return {**speed, **quality, **{f"p6b_{name}_mean": float(np.mean(v)) for name, v in strategies.items()}}


if __name__ == "__main__":
    main()
