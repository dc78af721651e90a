"""The RL controller: it learns what the objective rewards, respects the budget and is reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from ofa._genome import Genome
from ofa.search import search_budgets
from ofa.search_rl import Reinforce, reinforce_rows
from ofa.space import load_space


def _objective_on_first_choice(log: list[np.ndarray]):
    """Scores 1 for the smallest resolution, 0 otherwise; records the rows it is asked about."""

    def score(keys: list[bytes], rows: np.ndarray, costs: np.ndarray) -> np.ndarray:
        log.append(rows[:, 0].copy())
        return (rows[:, 0] == 0).astype(float)

    return score


@pytest.mark.slow
def test_controller_learns_the_rewarded_choice() -> None:
    genome = Genome(load_space("tiny"), 10)
    log: list[np.ndarray] = []
    budget = float(genome.mmacs(genome.encode([genome.space.max_arch()]))[0])
    reinforce_rows(genome, _objective_on_first_choice(log), budget, 2000, seed=0)
    resolutions = np.concatenate(log)
    first, last = (resolutions[:200] == 0).mean(), (resolutions[-200:] == 0).mean()
    assert first < 0.35 and last > first + 0.3, (first, last)  # 1 / 5 by chance at the start


def test_rl_search_is_reproducible_and_within_budget() -> None:
    space = load_space("tiny")
    objective = lambda archs: [float(sum(arch.depth)) for arch in archs]  # noqa: E731
    results = [
        search_budgets(space, objective, [2.0], strategy=Reinforce(), evaluations_per_budget=60) for _ in range(2)
    ]
    with pytest.raises(ValueError, match=r"strategy 'rl' runs in torch: pass strategy=ofa\.search_rl\.Reinforce\(\)"):
        search_budgets(space, objective, [2.0], strategy="rl")
    first, second = (result.results[0] for result in results)
    assert first.archs == second.archs and first.strategy == "rl"
    assert first.best_cost <= 2.0 + 1e-9 and all(cost <= 2.0 + 1e-9 for cost in first.costs)
    assert results[0].num_evaluations >= 60  # distinct archs scored, over the budget included
