"""Search by reinforcement learning: an ENAS-style LSTM controller trained with REINFORCE.

The controller (Pham et al., ICML 2018) makes one decision per genome column (resolution, widths, depths,
then kernel size and expand ratio of every block slot): an LSTM cell of ``HIDDEN`` units, one output head
per decision with logits ``1.5 * tanh``, the chosen choice's embedding fed back as the next input. It is
trained with REINFORCE, an exponential-moving-average baseline (0.99), an entropy bonus (1e-4) and Adam
(1e-3), one update per ``BATCH`` samples.

Reward: the objective (predicted accuracy) plus TuNAS's absolute cost term ``beta * |cost / budget - 1|``
(Bender et al., CVPR 2020; ``beta`` = -0.1). Rejection (no reward over the budget) gives the controller no
signal in the many draws a tight budget rejects; the absolute term steers it to the budget's boundary, where
the most accurate subnets within the budget lie. Only archs within the budget are candidates for the
answer; every distinct arch scored counts as one objective query.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from ofa._genome import Genome
from ofa.budget import TOLERANCE
from ofa.search import Scorer, SearchResult, result_of_keys

if TYPE_CHECKING:
    from ofa.latency_models import LatencyEstimator

__all__ = ["BATCH", "BETA", "Controller", "Reinforce", "reinforce_rows"]

HIDDEN = 64
LOGIT_SCALE = 1.5
BASELINE_DECAY = 0.99
ENTROPY_WEIGHT = 1e-4
LEARNING_RATE = 1e-3
BATCH = 20  # samples per controller update
BETA = -0.1  # TuNAS absolute cost reward
INIT_RANGE = 0.1  # uniform initialisation of every controller weight (ENAS)
MAX_SAMPLES_PER_EVALUATION = 20  # samples drawn per distinct arch asked before the search stops


class Controller(nn.Module):
    """An LSTM that samples one choice per decision, each conditioned on the ones before."""

    def __init__(self, sizes: list[int], generator: torch.Generator) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(HIDDEN, HIDDEN)
        self.start = nn.Parameter(torch.zeros(1, HIDDEN))
        self.embeddings = nn.ModuleList(nn.Embedding(size, HIDDEN) for size in sizes)
        self.heads = nn.ModuleList(nn.Linear(HIDDEN, size) for size in sizes)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-INIT_RANGE, INIT_RANGE, generator=generator)

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` rows of choice indices, their log-probabilities and entropies (summed over decisions)."""
        hidden = cell = torch.zeros(count, HIDDEN)
        inputs = self.start.expand(count, HIDDEN)
        choices, log_prob, entropy = [], torch.zeros(count), torch.zeros(count)
        for embedding, head in zip(self.embeddings, self.heads):
            hidden, cell = self.cell(inputs, (hidden, cell))
            log_probs = torch.log_softmax(LOGIT_SCALE * torch.tanh(head(hidden)), dim=1)
            choice = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
            log_prob = log_prob + log_probs.gather(1, choice.unsqueeze(1)).squeeze(1)
            entropy = entropy - (log_probs.exp() * log_probs).sum(dim=1)
            choices.append(choice)
            inputs = embedding(choice)
        return torch.stack(choices, dim=1), log_prob, entropy


def reinforce_rows(
    genome: Genome,
    score: Callable[[list[bytes], np.ndarray, np.ndarray], np.ndarray],
    budget: float,
    num_evaluations: int,
    seed: int,
    cost_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[bytes], list[float]]:
    """Train a controller on ``score`` (rows, keys -> scores; cached by the caller) under ``budget`` until
    ``num_evaluations`` distinct archs are scored (or ``MAX_SAMPLES_PER_EVALUATION`` times as many samples).
    ``cost_of`` (rows -> costs in the budget's unit) defaults to the genome's MMACs.

    Returns:
        The keys of the distinct archs scored within the budget (in order of discovery) and the best score
        within the budget after each controller update (from the first one that found an arch within it).
    """
    generator = torch.Generator().manual_seed(seed)
    controller = Controller([int(size) for size in genome.sizes], generator)
    optimizer = torch.optim.Adam(controller.parameters(), lr=LEARNING_RATE)
    baseline, seen, within, history = None, set(), [], []
    best = -np.inf
    for _ in range(0, MAX_SAMPLES_PER_EVALUATION * num_evaluations, BATCH):
        if len(seen) >= num_evaluations:
            break
        rows, log_prob, entropy = controller.sample(BATCH, generator)
        rows = genome.canonical(rows.numpy().astype(np.int64))
        keys = genome.keys(rows)
        keep = _within_cap(keys, seen, num_evaluations - len(seen))
        rows, keys, log_prob, entropy = rows[:keep], keys[:keep], log_prob[:keep], entropy[:keep]
        costs = cost_of(rows) if cost_of is not None else genome.mmacs(rows)
        scores = score(keys, rows, costs)
        rewards = torch.as_tensor(scores + BETA * np.abs(costs / budget - 1.0), dtype=torch.float32)
        for key, cost, value in zip(keys, costs.tolist(), scores.tolist()):
            if key not in seen:
                seen.add(key)
                if cost <= budget + TOLERANCE:
                    within.append(key)
                    best = max(best, value)
        mean = float(rewards.mean())
        baseline = mean if baseline is None else BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * mean
        loss = -((rewards - baseline) * log_prob).mean() - ENTROPY_WEIGHT * entropy.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if within:
            history.append(float(best))
    return within, history


def _within_cap(keys: list[bytes], seen: set[bytes], remaining: int) -> int:
    """How many leading samples of a batch bring at most ``remaining`` archs not seen before."""
    fresh: set[bytes] = set()
    for index, key in enumerate(keys):
        if key not in seen and key not in fresh:
            if len(fresh) == remaining:
                return index
            fresh.add(key)
    return len(keys)


@dataclass(frozen=True)
class Reinforce:
    """Strategy ``rl`` of :func:`ofa.search.search_budgets`: a controller trained per budget
    (:func:`reinforce_rows`); a draw shrunk into the budget when it found none."""

    name: ClassVar[str] = "rl"
    counts_evaluations: ClassVar[bool] = True

    def check(self, latency: LatencyEstimator | None) -> None:
        """Any cost will do: the controller only reads the costs of its draws."""

    def search(self, scorer: Scorer, budget: float, evaluations: int, seed: int) -> SearchResult:
        """The ``evaluations`` distinct archs the controller scored within ``budget``."""
        start = time.perf_counter()
        cost = scorer.cost.of_rows
        keys, history = reinforce_rows(scorer.genome, scorer.score, budget, evaluations, seed, cost)
        if not keys:
            rows = scorer.genome.shrink(scorer.genome.sample(1, np.random.default_rng(seed)), budget, cost=cost)
            rows = rows[cost(rows) <= budget + TOLERANCE]
            keys = scorer.genome.keys(rows)
            history = scorer.score(keys, rows, cost(rows)).tolist()
        return result_of_keys(self.name, scorer, budget, keys, history, start, seed)
