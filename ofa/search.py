"""Search for subnets under MAC budgets: evolution, random search, and the front over several budgets.

The evolutionary search follows once-for-all (Cai et al., ICLR 2020): a population of archs within the
budget, the top share kept as parents (or the first non-dominated fronts of cost and score), children
made by mutation and by crossover, an accuracy predictor as the fast objective. What keeps it fast and
safe: archs are handled as rows of choice indices (``ofa._genome``) so a generation is drawn, counted
(exact MACs from tables built with ``ofa.flops``) and checked in a few numpy calls; the objective is
called once per generation, on the new archs only; objective values are cached per arch and no arch is
evaluated twice; a child over the budget is redrawn a bounded number of times, in batches, and then
shrunk deterministically into the budget, so no loop can run forever. Random search draws uniformly
within the budget and returns the same result type, to compare both at equal numbers of evaluations.

Strategies that need torch plug in as :class:`BudgetStrategy` objects on the same scorer and result type:
:class:`ofa.search_rl.Reinforce` (an RL controller) and :class:`ofa.search_dnas.DnasSearch` (differentiable).

Costs are MMACs (10^6 multiply-accumulates, see ``ofa.flops``), or, given a latency estimator
(``ofa.latency_models``), estimated milliseconds on the estimator's device; scores are "higher is
better". Budget parsing lives in ``ofa.budget`` and fronts in ``ofa.pareto``; both are re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ofa._genome import Genome, genome_of
from ofa.budget import (
    BUDGET_FORMS,
    MACS_PER_MMAC,
    TOLERANCE,
    check_budget,
    check_latency_budget,
    parse_budget,
    parse_budgets,
    smallest_mmacs,
)
from ofa.flops import DEFAULT_NUM_CLASSES, count_macs_many
from ofa.pareto import hypervolume, nondominated_ranks, pareto_front
from ofa.space import Arch, SearchSpace

if TYPE_CHECKING:
    from ofa.latency_models import LatencyEstimator

__all__ = [
    "BUDGET_FORMS",
    "BudgetStrategy",
    "EncodedObjective",
    "MultiBudgetResult",
    "Objective",
    "Scorer",
    "SearchCost",
    "SearchResult",
    "SearchSettings",
    "capped_settings",
    "checked_result",
    "combined_front",
    "evolutionary_search",
    "hypervolume",
    "pareto_front",
    "parse_budget",
    "parse_budgets",
    "random_search",
    "result_of_keys",
    "search_budgets",
    "smallest_mmacs",
]


@runtime_checkable
class EncodedObjective(Protocol):
    """A predictor the search can also score from its own arrays, without making arch objects: the
    predictors' encoding (``predictors.encoding.encode``, derived costs) is computed from the genome rows."""

    space: SearchSpace
    num_classes: int

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Scores of archs (higher is better)."""
        ...

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Scores of encoded archs."""
        ...


Objective = Callable[[Sequence[Arch]], np.ndarray] | EncodedObjective
"""Scores a batch of archs (higher is better): a callable, or a fitted accuracy predictor (scored from the
search's arrays when it is of the searched space and class count)."""

BUILT_IN_STRATEGIES = ("evolution", "random")
STRATEGIES = (*BUILT_IN_STRATEGIES, "rl", "dnas")  # rl: ofa.search_rl.Reinforce, dnas: ofa.search_dnas.DnasSearch
PARENT_SELECTIONS = ("top", "front")
RANDOM_DRAWS_PER_EVALUATION = 100


# ----------------------------------------------------------------------------------------------------
# settings and results
# ----------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_fraction(name: str, value: Any, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"SearchSettings.{name} must be a number in {interval}, got {value!r}")


@dataclass(frozen=True)
class SearchSettings:
    """Evolutionary search settings (once-for-all used 100, 500, 0.25, 0.1, 0.5, 0.5).

    Attributes:
        population: archs per generation.
        generations: generations after the initial population.
        parent_ratio: share of the population kept as parents.
        mutation_prob: chance to resample each choice (width, depth, kernel, expand) of a mutated child.
        resolution_mutation_prob: chance to resample the resolution of a mutated child.
        mutation_ratio: share of the children made by mutation; the rest by crossover.
        max_repair_tries: redraws of a child that breaks the budget or repeats an evaluated arch before it
            is shrunk deterministically into the budget.
        parent_selection: ``top`` (best scores) or ``front`` (successive non-dominated fronts of cost
            and score, ties by score).
        seed: seed of the search's ``numpy.random.Generator`` (budget ``i`` of :func:`search_budgets` uses
            ``seed + i``).
    """

    population: int = 100
    generations: int = 30
    parent_ratio: float = 0.25
    mutation_prob: float = 0.1
    resolution_mutation_prob: float = 0.5
    mutation_ratio: float = 0.5
    max_repair_tries: int = 10
    parent_selection: str = "top"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("SearchSettings.population", self.population, 2, 1_000_000)
        _check_int("SearchSettings.generations", self.generations, 0, 1_000_000)
        _check_fraction("parent_ratio", self.parent_ratio, low_open=True, high_open=True)
        _check_fraction("mutation_prob", self.mutation_prob)
        _check_fraction("resolution_mutation_prob", self.resolution_mutation_prob)
        _check_fraction("mutation_ratio", self.mutation_ratio)
        _check_int("SearchSettings.max_repair_tries", self.max_repair_tries, 0, 1000)
        if self.parent_selection not in PARENT_SELECTIONS:
            raise ValueError(
                f"SearchSettings.parent_selection must be one of {', '.join(PARENT_SELECTIONS)}, "
                f"got {self.parent_selection!r}"
            )
        _check_int("SearchSettings.seed", self.seed, 0, 2**63 - 1)

    @property
    def num_parents(self) -> int:
        """Parents kept per generation (at least one, at most population - 1)."""
        return min(self.population - 1, max(1, round(self.parent_ratio * self.population)))


def _point(arch: Arch, cost: float, score: float, unit: str) -> dict[str, Any]:
    return {"arch": arch.to_dict(), unit: float(cost), "score": float(score)}


@dataclass(frozen=True, eq=False)
class SearchResult:
    """The outcome of one search under one budget.

    Attributes:
        strategy: ``evolution``, ``random``, ``rl`` or ``dnas``.
        budget: the budget in MMACs (or ms for a latency search).
        best_arch: the highest-scoring arch within the budget (ties: the cheaper, then the first found).
        best_cost: its MMACs (or estimated ms).
        best_score: its objective value.
        archs: every distinct arch this search scored, in the order found (all within the budget).
        costs: their MMACs (or estimated ms).
        scores: their objective values.
        num_evaluations: ``len(archs)``: distinct archs scored by this search.
        history: best score after the initial population and after each generation (fewer entries when a
            generation found no new arch within the budget and the search stopped); random search: after
            every 100 evaluations and at the end; dnas: the expected cost after every step.
        wall_time: seconds.
        seed: the seed used.
        unit: what costs are: ``mmacs`` or ``latency_ms``.
    """

    strategy: str
    budget: float
    best_arch: Arch
    best_cost: float
    best_score: float
    archs: tuple[Arch, ...]
    costs: np.ndarray
    scores: np.ndarray
    num_evaluations: int
    history: tuple[float, ...]
    wall_time: float
    seed: int
    unit: str = "mmacs"
    memory_mib: float | None = None  # dnas: the most activation memory one step's backward pass kept

    def front(self) -> np.ndarray:
        """Indices of the non-dominated evaluated archs, by increasing cost."""
        return pareto_front(self.costs, self.scores)

    def top(self, count: int) -> np.ndarray:
        """Indices of the ``count`` best-scoring archs (ties: cheaper first)."""
        return np.lexsort((self.costs, -self.scores))[:count]

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """JSON-ready summary: best arch, the ``top`` best archs, the front of the evaluated archs."""
        return {
            "strategy": self.strategy,
            f"budget_{self.unit}": self.budget,
            "best": _point(self.best_arch, self.best_cost, self.best_score, self.unit),
            "num_evaluations": self.num_evaluations,
            "history": [float(value) for value in self.history],
            "wall_time": self.wall_time,
            **({} if self.memory_mib is None else {"memory_mib": self.memory_mib}),
            "seed": self.seed,
            "top": [_point(self.archs[i], self.costs[i], self.scores[i], self.unit) for i in self.top(top)],
            "front": [_point(self.archs[i], self.costs[i], self.scores[i], self.unit) for i in self.front()],
        }


@dataclass(frozen=True, eq=False)
class MultiBudgetResult:
    """Searches under several budgets and the non-dominated front of everything they evaluated.

    Attributes:
        budgets: MMACs (or ms), in the given order.
        results: one :class:`SearchResult` per budget (``results[i].best_arch`` is the answer for budget i).
        front_archs: the non-dominated archs over the whole range, by increasing cost.
        front_costs: their MMACs (or estimated ms).
        front_scores: their objective values.
        num_evaluations: distinct archs sent to the objective over all budgets.
        wall_time: seconds.
        unit: what budgets and costs are: ``mmacs`` or ``latency_ms``.
    """

    budgets: tuple[float, ...]
    results: tuple[SearchResult, ...]
    front_archs: tuple[Arch, ...]
    front_costs: np.ndarray
    front_scores: np.ndarray
    num_evaluations: int
    wall_time: float
    unit: str = "mmacs"

    def hypervolume(self, reference_cost: float, reference_score: float) -> float:
        """Hypervolume of the front against a reference point (see :func:`ofa.pareto.hypervolume`)."""
        return hypervolume(self.front_costs, self.front_scores, reference_cost, reference_score)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """JSON-ready summary: per budget the search summary, and the front over the range."""
        return {
            f"budgets_{self.unit}": list(self.budgets),
            "num_evaluations": self.num_evaluations,
            "wall_time": self.wall_time,
            "results": [result.to_dict(top) for result in self.results],
            "front": [
                _point(arch, cost, score, self.unit)
                for arch, cost, score in zip(self.front_archs, self.front_costs, self.front_scores)
            ],
        }


def combined_front(results: Sequence[SearchResult]) -> tuple[tuple[Arch, ...], np.ndarray, np.ndarray]:
    """The non-dominated archs of all archs evaluated by ``results`` (archs, MMACs, scores; by cost)."""
    seen: dict[Arch, tuple[float, float]] = {}
    for result in results:
        for arch, cost, score in zip(result.archs, result.costs, result.scores):
            seen.setdefault(arch, (float(cost), float(score)))
    archs = list(seen)
    costs = np.array([seen[arch][0] for arch in archs], dtype=np.float64)
    scores = np.array([seen[arch][1] for arch in archs], dtype=np.float64)
    front = pareto_front(costs, scores)
    return tuple(archs[i] for i in front), costs[front], scores[front]


# ----------------------------------------------------------------------------------------------------
# cached objective
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchCost:
    """What budgets limit: ``of_rows`` (genome rows, vectorised) and ``of_archs`` (an independent per-arch
    count that checks the reported archs) in ``unit``, exactly equal for MACs and to 1e-9 for latency."""

    unit: str
    of_rows: Callable[[np.ndarray], np.ndarray]
    of_archs: Callable[[list[Arch]], np.ndarray]
    exact: bool


def _cost(genome: Genome, latency: LatencyEstimator | None) -> SearchCost:
    if latency is None:
        space, num_classes = genome.space, genome.num_classes
        return SearchCost(
            "mmacs", genome.mmacs, lambda archs: count_macs_many(space, archs, num_classes) / MACS_PER_MMAC, True
        )
    return SearchCost("latency_ms", latency.row_cost(genome), latency.predict, False)


class Scorer:
    """Archs, objective values and costs per genome row, computed in batches and cached: what every strategy
    of one :func:`search_budgets` call shares (``genome``, ``cost``, ``latency``, ``score``)."""

    def __init__(
        self, space: SearchSpace, objective: Objective, num_classes: int, latency: LatencyEstimator | None = None
    ) -> None:
        self.genome = genome_of(space, num_classes)
        self.cost = _cost(self.genome, latency)
        self.latency = latency
        self.encoded: Callable[[np.ndarray], np.ndarray] | None = None
        if isinstance(objective, EncodedObjective):
            if objective.space == space and objective.num_classes == num_classes:
                self.encoded = objective.predict_encoded
            objective = objective.predict
        self.objective = objective
        self.archs: dict[bytes, Arch] = {}
        self.scores: dict[bytes, float] = {}
        self.costs: dict[bytes, float] = {}

    def score(self, keys: list[bytes], rows: np.ndarray, costs: np.ndarray) -> np.ndarray:
        """Objective values of distinct rows (their ``costs``); one objective call for those not seen before."""
        missing = [i for i, key in enumerate(keys) if key not in self.scores]
        if missing:
            archs = self.genome.decode(rows[missing])
            scored = (
                self.objective(archs) if self.encoded is None else self.encoded(self.genome.features(rows[missing]))
            )
            values = np.asarray(scored, dtype=np.float64).reshape(-1)
            if values.size != len(archs):
                raise ValueError(f"the objective returned {values.size} scores for {len(archs)} archs")
            if not np.isfinite(values).all():
                raise ValueError("the objective returned NaN or infinite scores")
            for i, arch, value, cost in zip(missing, archs, values.tolist(), costs[missing].tolist()):
                self.archs[keys[i]] = arch
                self.scores[keys[i]] = value
                self.costs[keys[i]] = cost
        return np.array([self.scores[key] for key in keys], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# drawing archs within the budget
# ----------------------------------------------------------------------------------------------------


def _draw(
    genome: Genome,
    cost: Callable[[np.ndarray], np.ndarray],
    budget: float,
    make: Callable[[np.ndarray, int], np.ndarray],
    slots: int,
    taken: set[bytes],
    max_tries: int,
) -> tuple[np.ndarray, list[bytes], np.ndarray]:
    """Up to ``slots`` new distinct rows within the budget, not in ``taken`` (which they join), their
    keys and their costs (``cost`` of rows).

    ``make(slot_of_each_candidate, attempt)`` draws one candidate row per entry. Every slot gets one
    candidate; the slots left empty (over the budget or a repeat) get 3 redraws in one batch, and those
    still empty their other ``max_tries - 3`` redraws in one more batch, each slot keeping its first
    candidate that fits and is new. A slot still empty then is filled by shrinking its last redraw into
    the budget (``Genome.shrink``), unless that only repeats a taken arch. Three batches, whatever the
    budget: no open-ended loop.
    """
    accepted_rows, accepted_keys, accepted_costs = [], [], []
    pending = np.arange(slots)
    last = np.empty((0, genome.columns), dtype=np.int64)
    for attempt, copies in ((0, 1), (1, min(3, max_tries)), (2, max_tries - 3)):
        if copies <= 0 or pending.size == 0:
            break
        owners = np.repeat(pending, copies)  # candidates grouped by slot, in draw order
        candidates = make(owners, attempt)
        costs = cost(candidates)
        feasible = np.flatnonzero(costs <= budget + TOLERANCE)
        owner_list = owners.tolist()
        filled: dict[int, int] = {}
        for i, key in zip(feasible.tolist(), genome.keys(candidates[feasible])):
            slot = owner_list[i]
            if slot not in filled and key not in taken:
                taken.add(key)
                accepted_keys.append(key)
                filled[slot] = i
        chosen = list(filled.values())
        accepted_rows.append(candidates[chosen])
        accepted_costs.append(costs[chosen])
        empty = np.ones(pending.size, dtype=bool)
        empty[[i // copies for i in chosen]] = False  # candidate i belongs to pending slot i // copies
        last = candidates.reshape(pending.size, copies, genome.columns)[empty, -1]
        pending = pending[empty]
    if pending.size:
        repaired = genome.shrink(last, budget, cost=cost)
        # the smallest subnet ends every repair path; under a latency estimate it may still be over the budget
        repaired = repaired[cost(repaired) <= budget + TOLERANCE]
        keep = np.zeros(len(repaired), dtype=bool)
        for i, key in enumerate(genome.keys(repaired)):
            if key not in taken:
                taken.add(key)
                accepted_keys.append(key)
                keep[i] = True
        accepted_rows.append(repaired[keep])
        accepted_costs.append(cost(repaired[keep]))
    return np.concatenate(accepted_rows), accepted_keys, np.concatenate(accepted_costs)


def _select_parents(scores: np.ndarray, costs: np.ndarray, count: int, selection: str) -> np.ndarray:
    """Indices of the parents: best scores, or successive non-dominated fronts (ties by score, then cost)."""
    if selection == "front":
        order = np.lexsort((costs, -scores, nondominated_ranks(costs, scores)))
    else:
        order = np.lexsort((costs, -scores))
    return order[:count]


def _other_parents(count: int, parents: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pairs of distinct parent indices (the same one when there is a single parent)."""
    first = rng.integers(0, parents, count)
    if parents < 2:
        return first, first
    return first, (first + rng.integers(1, parents, count)) % parents


def result_of_keys(
    strategy: str, scorer: Scorer, budget: float, keys: list[bytes], history: list[float], start: float, seed: int
) -> SearchResult:
    """The result of the archs a strategy scored (``keys``, all within the budget) and its best score after
    each step (``history``), timed from ``start`` (``time.perf_counter``).

    Raises:
        ValueError: no key (the strategy found no subnet within the budget).
    """
    if not keys:
        raise ValueError(
            f"{strategy} search found no subnet within the budget of {budget:.6g} {scorer.cost.unit}; raise the budget"
        )
    archs = [scorer.archs[key] for key in keys]
    costs = np.array([scorer.costs[key] for key in keys], dtype=np.float64)
    scores = np.array([scorer.scores[key] for key in keys], dtype=np.float64)
    return checked_result(strategy, scorer.cost, budget, archs, costs, scores, tuple(history), start, seed)


def checked_result(
    strategy: str,
    cost: SearchCost,
    budget: float,
    archs: list[Arch],
    costs: np.ndarray,
    scores: np.ndarray,
    history: tuple[float, ...],
    start: float,
    seed: int,
    memory_mib: float | None = None,
) -> SearchResult:
    """The result of scored archs within the budget, after checking the costs of the best and of the front
    with the independent per-arch count."""
    best = int(np.lexsort((costs, -scores))[0])
    # safety net: the cost tables must agree with an independent count on the archs that are reported
    checked = np.unique(np.concatenate(([best], pareto_front(costs, scores))))
    counted = cost.of_archs([archs[i] for i in checked])
    agree = np.array_equal if cost.exact else lambda a, b: np.allclose(a, b, rtol=1e-9, atol=0.0)
    if not agree(counted, costs[checked]):
        raise RuntimeError(f"internal {cost.unit} tables disagree with the per-arch count; please report this bug")
    return SearchResult(
        strategy=strategy,
        budget=budget,
        best_arch=archs[best],
        best_cost=float(costs[best]),
        best_score=float(scores[best]),
        archs=tuple(archs),
        costs=costs,
        scores=scores,
        num_evaluations=len(archs),
        history=history,
        wall_time=time.perf_counter() - start,
        seed=seed,
        unit=cost.unit,
        memory_mib=memory_mib,
    )


def _evolve(scorer: Scorer, budget: float, settings: SearchSettings) -> SearchResult:
    start = time.perf_counter()
    genome, rng = scorer.genome, np.random.default_rng(settings.seed)
    mutation_prob, resolution_prob = settings.mutation_prob, settings.resolution_mutation_prob
    taken: set[bytes] = set()

    def sample(owners: np.ndarray, _attempt: int) -> np.ndarray:
        return genome.sample(owners.size, rng)

    draw_settings = (taken, settings.max_repair_tries)
    rows, keys, costs = _draw(genome, scorer.cost.of_rows, budget, sample, settings.population, *draw_settings)
    evaluated = list(keys)
    scores = scorer.score(keys, rows, costs)
    if not keys:
        return result_of_keys("evolution", scorer, budget, keys, [], start, settings.seed)  # refuses: nothing found
    history = [float(scores.max())]
    for _ in range(settings.generations):
        chosen = _select_parents(scores, costs, settings.num_parents, settings.parent_selection)
        parents = rows[chosen]
        n_children = settings.population - chosen.size
        n_mutation = round(n_children * settings.mutation_ratio)

        def child(
            owners: np.ndarray, attempt: int, parents: np.ndarray = parents, n_mutation: int = n_mutation
        ) -> np.ndarray:
            # one crossover and one mutation for the whole batch: a mutation slot crosses a parent with itself
            mutated = owners < n_mutation
            first, second = _other_parents(owners.size, len(parents), rng)
            second = np.where(mutated, first, second)
            crossed = genome.crossover(parents[first], parents[second], rng)
            # a redrawn crossover is also mutated: crossing near-identical parents repeats them
            which = mutated | (attempt > 0)
            return genome.mutate(crossed, rng, mutation_prob, resolution_prob, which)

        child_rows, child_keys, child_costs = _draw(
            genome, scorer.cost.of_rows, budget, child, n_children, *draw_settings
        )
        if not child_keys:  # the parents' feasible neighbourhood is exhausted: nothing can change any more
            break
        evaluated.extend(child_keys)
        rows = np.concatenate([parents, child_rows])
        keys = [keys[i] for i in chosen.tolist()] + child_keys
        scores = np.concatenate([scores[chosen], scorer.score(child_keys, child_rows, child_costs)])
        costs = np.concatenate([costs[chosen], child_costs])
        history.append(max(history[-1], float(scores.max())))
    return result_of_keys("evolution", scorer, budget, evaluated, history, start, settings.seed)


def _random(scorer: Scorer, budget: float, num_evaluations: int, seed: int, max_draws: int) -> SearchResult:
    """Rejection sampling within the budget, at most ``max_draws`` draws; shrunk draws fill what is left."""
    start = time.perf_counter()
    genome, rng = scorer.genome, np.random.default_rng(seed)
    taken: set[bytes] = set()
    accepted_rows, keys = [], []
    over = np.empty((0, genome.columns), dtype=np.int64)  # the latest draws over the budget, for repair

    def accept_new(rows: np.ndarray) -> None:
        """Keep the rows not seen before, up to ``num_evaluations`` in all."""
        keep = np.zeros(len(rows), dtype=bool)
        for i, key in enumerate(genome.keys(rows)):
            if len(keys) < num_evaluations and key not in taken:
                taken.add(key)
                keys.append(key)
                keep[i] = True
        accepted_rows.append(rows[keep])

    draws = 0
    while len(keys) < num_evaluations and draws < max_draws:
        batch = min(max_draws - draws, max(256, 2 * (num_evaluations - len(keys))))
        candidates = genome.sample(batch, rng)
        draws += batch
        fits = scorer.cost.of_rows(candidates) <= budget + TOLERANCE
        over = np.concatenate([over, candidates[~fits]])[-4 * num_evaluations :]
        accept_new(candidates[fits])
    if len(keys) < num_evaluations and len(over):
        shrunk = genome.shrink(over, budget, cost=scorer.cost.of_rows)
        accept_new(shrunk[scorer.cost.of_rows(shrunk) <= budget + TOLERANCE])
    rows = np.concatenate(accepted_rows)
    scores = scorer.score(keys, rows, scorer.cost.of_rows(rows))
    running = np.maximum.accumulate(scores)
    marks = [*range(99, len(scores) - 1, 100), len(scores) - 1]
    return result_of_keys("random", scorer, budget, keys, running[marks].tolist(), start, seed)


# ----------------------------------------------------------------------------------------------------
# public searches
# ----------------------------------------------------------------------------------------------------


def _checked_inputs(
    space: SearchSpace,
    objective: Objective,
    budgets: Sequence[float | str],
    num_classes: int,
    latency: LatencyEstimator | None = None,
) -> list[float]:
    """The budgets in MMACs (ms with ``latency``), after checking every input (nothing runs before this)."""
    if not isinstance(space, SearchSpace):
        raise ValueError(f"space: expected a SearchSpace (see ofa.space.load_space), got {type(space).__name__}")
    if not callable(objective) and not isinstance(objective, EncodedObjective):
        raise ValueError(
            f"objective must be callable (archs -> scores) or a fitted predictor, got {type(objective).__name__}"
        )
    _check_int("num_classes", num_classes, 1, 10**9)
    if latency is None:
        return [check_budget(space, budget, num_classes) for budget in budgets]
    if latency.space.to_dict() != space.to_dict() or latency.num_classes != num_classes:
        raise ValueError(
            f"the latency estimator is for space {latency.space.name!r} with {latency.num_classes} classes, "
            f"not {space.name!r} with {num_classes}"
        )
    return [check_latency_budget(latency, budget) for budget in budgets]


def _settings(settings: SearchSettings | None) -> SearchSettings:
    if settings is None:
        return SearchSettings()
    if not isinstance(settings, SearchSettings):
        raise ValueError(f"settings: expected SearchSettings or None, got {type(settings).__name__}")
    return settings


def evolutionary_search(
    space: SearchSpace,
    objective: Objective,
    budget_mmacs: float | str,
    settings: SearchSettings | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    latency: LatencyEstimator | None = None,
) -> SearchResult:
    """The best arch within ``budget_mmacs`` found by evolution (see the module docstring).

    Args:
        space: the search space.
        objective: archs -> scores (higher is better), called once per generation on the new archs.
        budget_mmacs: the MAC budget in MMACs (or a string such as ``"5M"``); with ``latency``, a latency
            budget in ms (or a string such as ``"5ms"``).
        settings: population, generations, ...; default :class:`SearchSettings`.
        num_classes: classifier outputs counted in the MACs.
        latency: a latency estimator (``ofa.latency_models``): the budget limits its estimate instead.

    Raises:
        ValueError: for a malformed budget, or one below the smallest subnet's MMACs (or fastest latency).
    """
    settings = _settings(settings)
    (budget,) = _checked_inputs(space, objective, [budget_mmacs], num_classes, latency)
    return _evolve(Scorer(space, objective, num_classes, latency), budget, settings)


def random_search(
    space: SearchSpace,
    objective: Objective,
    budget_mmacs: float | str,
    num_evaluations: int,
    seed: int = 0,
    num_classes: int = DEFAULT_NUM_CLASSES,
    max_draws: int | None = None,
) -> SearchResult:
    """The best of ``num_evaluations`` distinct archs drawn uniformly within the budget (one objective call).

    Archs are drawn like ``space.sample`` (every choice uniform; a ``numpy`` generator seeded with
    ``seed``) and those over the budget rejected, for at most ``max_draws`` draws (default
    ``RANDOM_DRAWS_PER_EVALUATION`` x ``num_evaluations``); if that leaves slots empty, draws over the
    budget are shrunk into it. In a space with fewer feasible archs than asked, fewer are evaluated.
    """
    _check_int("num_evaluations", num_evaluations, 1, 10**9)
    _check_int("seed", seed, 0, 2**63 - 1)
    max_draws = RANDOM_DRAWS_PER_EVALUATION * num_evaluations if max_draws is None else max_draws
    _check_int("max_draws", max_draws, 1, 10**12)
    (budget,) = _checked_inputs(space, objective, [budget_mmacs], num_classes)
    return _random(Scorer(space, objective, num_classes), budget, num_evaluations, seed, max_draws)


@runtime_checkable
class BudgetStrategy(Protocol):
    """A search strategy besides the built-in ones, run once per budget on the scorer all budgets share:
    :class:`ofa.search_rl.Reinforce` (``rl``) and :class:`ofa.search_dnas.DnasSearch` (``dnas``), which need
    torch (this module does not)."""

    name: str
    counts_evaluations: bool  # whether it scores ``evaluations`` distinct archs per budget (rl) or not (dnas)

    def check(self, latency: LatencyEstimator | None) -> None:
        """Refuse (``ValueError``) a cost it cannot search under, before any budget is searched."""
        ...

    def search(self, scorer: Scorer, budget: float, evaluations: int, seed: int) -> SearchResult:
        """The archs it found within ``budget`` (:func:`result_of_keys` or :func:`checked_result`)."""
        ...


def capped_settings(
    settings: SearchSettings, strategy: str, max_queries: int | None
) -> tuple[SearchSettings, int | None]:
    """The settings and the queries per budget of random and rl under a cap of ``max_queries`` per budget."""
    if max_queries is None:
        return settings, None
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
        raise ValueError(f"max_queries must be an integer >= 1, got {max_queries!r}")
    if strategy == "dnas":
        raise ValueError(f"max_queries {max_queries}: dnas makes no predictor queries (it searches the supernet)")
    if strategy != "evolution":
        return settings, max_queries
    generations = max_queries // settings.population - 1
    if generations < 0:
        raise ValueError(
            f"max_queries {max_queries} is below one population ({settings.population}): lower the population"
        )
    return dataclasses.replace(settings, generations=min(settings.generations, generations)), None


def _checked_strategy(
    strategy: str | BudgetStrategy,
    settings: SearchSettings,
    evaluations_per_budget: int | None,
    latency: LatencyEstimator | None,
) -> int:
    """The distinct archs per budget of random and rl, after checking the strategy's own inputs."""
    if isinstance(strategy, BudgetStrategy):
        strategy.check(latency)
        counted = strategy.counts_evaluations
    elif strategy in STRATEGIES and strategy not in BUILT_IN_STRATEGIES:
        owner = "ofa.search_rl.Reinforce()" if strategy == "rl" else "ofa.search_dnas.DnasSearch(supernet, batches)"
        raise ValueError(f"strategy {strategy!r} runs in torch: pass strategy={owner} (ofa search takes the name)")
    elif strategy not in BUILT_IN_STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    else:
        counted = strategy == "random"
    if not counted and evaluations_per_budget is not None:
        raise ValueError(
            f"evaluations_per_budget applies to strategies 'random' and 'rl', not {_strategy_name(strategy)!r}"
        )
    if evaluations_per_budget is None:
        evaluations_per_budget = settings.population * (settings.generations + 1)
    _check_int("evaluations_per_budget", evaluations_per_budget, 1, 10**9)
    return evaluations_per_budget


def _strategy_name(strategy: str | BudgetStrategy) -> str:
    """``evolution``, ``random``, ``rl`` or ``dnas``."""
    return strategy if isinstance(strategy, str) else strategy.name


def search_budgets(
    space: SearchSpace,
    objective: Objective,
    budgets: Sequence[float | str],
    settings: SearchSettings | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    strategy: str | BudgetStrategy = "evolution",
    evaluations_per_budget: int | None = None,
    latency: LatencyEstimator | None = None,
) -> MultiBudgetResult:
    """One search per budget (objective values shared between them) and the front over the whole range.

    Every budget is checked before any search runs. Budget ``i`` uses seed ``settings.seed + i``.

    Args:
        space: the search space.
        objective: archs -> scores (higher is better).
        budgets: MMACs (or strings such as ``"5M"``).
        settings: evolution settings; random search uses only ``seed``.
        num_classes: classifier outputs counted in the MACs.
        strategy: ``evolution``, ``random``, or a :class:`BudgetStrategy` object: ``ofa.search_rl.Reinforce()``
            (an LSTM controller, ``rl``) or ``ofa.search_dnas.DnasSearch(supernet, batches)`` (differentiable
            search over the supernet, ``dnas``; its scores are log-probabilities under the final architecture
            logits, and the objective is not queried).
        evaluations_per_budget: random and rl only: distinct archs scored per budget (default population x
            (generations + 1), the most evolution can evaluate).
        latency: a latency estimator: budgets are then latencies in ms (``"5ms"``) of its estimate.
    """
    settings = _settings(settings)
    evaluations_per_budget = _checked_strategy(strategy, settings, evaluations_per_budget, latency)
    if isinstance(budgets, str) or not budgets:
        raise ValueError(f"budgets: expected a non-empty list of budgets, each {BUDGET_FORMS}; got {budgets!r}")
    start = time.perf_counter()
    checked = _checked_inputs(space, objective, budgets, num_classes, latency)
    scorer = Scorer(space, objective, num_classes, latency)
    results = []
    for index, budget in enumerate(checked):
        seed = settings.seed + index
        if strategy == "evolution":
            results.append(_evolve(scorer, budget, dataclasses.replace(settings, seed=seed)))
        elif isinstance(strategy, BudgetStrategy):
            results.append(strategy.search(scorer, budget, evaluations_per_budget, seed))
        else:
            draws = RANDOM_DRAWS_PER_EVALUATION * evaluations_per_budget
            results.append(_random(scorer, budget, evaluations_per_budget, seed, draws))
    archs, costs, scores = combined_front(results)
    return MultiBudgetResult(
        budgets=tuple(checked),
        results=tuple(results),
        front_archs=archs,
        front_costs=costs,
        front_scores=scores,
        num_evaluations=len(scorer.scores),
        wall_time=time.perf_counter() - start,
        unit=scorer.cost.unit,
    )
