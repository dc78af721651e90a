"""Differentiable search over a trained supernet's weights (GDAS-style Gumbel-softmax with a cost penalty).

Every genome column (resolution, widths, depths, kernel size and expand ratio of every block slot) gets a
vector of architecture logits. Each step draws one subnet with the Gumbel-softmax (Dong and Yang, CVPR
2019): the forward pass runs that hard choice in the supernet, and every tensor a choice decides (the input
for the resolution, the stem and head outputs for their widths, a block's output for its kernel size and
expand ratio, a stage's output for its depth and width) is multiplied by ``1 + p - stop_gradient(p)``, ``p``
the relaxed probability of the choice taken: 1 in value, so the subnet computes exactly what it computes
alone, and the gradient of the minibatch loss reaches the logits.

The cost term is the exact expected MAC count under the softmax of the logits (the per-block MAC tables of
:class:`~ofa._genome.Genome` weighted by the independent choice probabilities and the probability that a
block is active), or under a latency budget the expected latency of a table or MACs estimator (the same
sum over its per-block tables, then its line), as TuNAS's absolute term ``|E[cost] / budget - 1|``
(Bender et al., CVPR 2020: it pulls towards the budget from both sides, where the most accurate subnets
within it lie), weighted by a coefficient the search tunes to hit the budget: multiplied by
``exp(rate x (|E[cost] / budget - 1| - 0.05))`` after every step. The supernet's weights stay frozen; BN
uses batch statistics without updating its running ones (as the minibatch-loss scorer does). The answer is
the most probable subnet, shrunk into the budget if needed; the candidates are it and the distinct subnets
drawn in the last quarter of the steps, ranked by their log-probability under the final logits.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ofa._genome import MACS_PER_MMAC, AdditiveTables, Genome
from ofa.bn import resize_to
from ofa.config import check_int
from ofa.search import Scorer, SearchResult, checked_result
from ofa.space import Arch
from ofa.supernet import Supernet
from ofa.train import frozen_bn_statistics

if TYPE_CHECKING:
    from ofa.latency_models import LatencyEstimator

BUDGET_SLACK = 0.05  # the cost coefficient grows while E[MACs] misses the budget by more than 5 %, else shrinks

__all__ = ["AdditiveCost", "DnasSearch", "DnasSettings", "expected_cost", "gated_logits", "mac_cost", "relaxed_search"]


@dataclass(frozen=True)
class DnasSettings:
    """Steps (one minibatch each), Adam's rate on the logits, the Gumbel temperature (linear from ``start``
    to ``end``), the cost coefficient's start and adaptation rate."""

    steps: int = 150
    learning_rate: float = 0.05
    temperature_start: float = 5.0
    temperature_end: float = 0.5
    cost_weight: float = 1.0
    cost_rate: float = 0.1

    def __post_init__(self) -> None:
        check_int(self.steps, "DnasSettings.steps", 1)
        for name in ("learning_rate", "temperature_start", "temperature_end", "cost_weight", "cost_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"DnasSettings.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class DnasSearch:
    """What the differentiable strategy needs besides the budgets: the supernet, labelled batches (the
    search's data; the deploy commands use the val split, where the finalists are judged) and settings."""

    supernet: Supernet
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    settings: DnasSettings = DnasSettings()

    name: ClassVar[str] = "dnas"
    counts_evaluations: ClassVar[bool] = False

    def check(self, latency: LatencyEstimator | None) -> None:
        """Refuse a cost without a differentiable expectation (the learned latency estimator)."""
        if latency is not None and latency.kind == "learned":
            raise ValueError(
                "strategy 'dnas' needs a differentiable cost: the learned latency estimator is not; fit a table or "
                "macs estimator (ofa latency fit --estimator table) or use evolution"
            )

    def search(self, scorer: Scorer, budget: float, evaluations: int, seed: int) -> SearchResult:
        """Strategy ``dnas`` of :func:`ofa.search.search_budgets` (``evaluations`` unused): the candidates ranked
        by their log-probability under the final architecture logits (the scores), each shrunk into the budget;
        the objective is not queried."""
        start = time.perf_counter()
        genome, cost, latency = scorer.genome, scorer.cost.of_rows, scorer.latency
        form = mac_cost(genome) if latency is None else AdditiveCost(*latency.additive_form(genome))
        outcome = relaxed_search(genome, self, budget, seed, form)
        rows = genome.shrink(outcome.rows, budget, cost=cost)
        first = np.sort(np.unique(rows, axis=0, return_index=True)[1])  # rows shrunk alike: the most probable one
        rows, scores = rows[first], outcome.log_probs[first]
        history, memory = tuple(outcome.expected_costs), outcome.activation_mib
        archs = genome.decode(rows)
        return checked_result(self.name, scorer.cost, budget, archs, cost(rows), scores, history, start, seed, memory)


@dataclass(frozen=True)
class DnasOutcome:
    """Candidate rows (most probable first), their log-probabilities, the expected cost after each step,
    wall seconds and the most memory one step's backward pass kept (MiB: the activations autograd saved, the
    supernet's weights excluded)."""

    rows: np.ndarray
    log_probs: np.ndarray
    expected_costs: list[float]
    seconds: float
    activation_mib: float


@dataclass(frozen=True)
class AdditiveCost:
    """A cost that is ``scale x`` (a sum over the stem + head and each active block, ``tables``) ``+ offset``:
    the MACs (in MMACs), or a table or MACs latency estimate (in ms)."""

    tables: AdditiveTables
    scale: float
    offset: float = 0.0


def mac_cost(genome: Genome) -> AdditiveCost:
    """The MMACs of the genome's rows as an :class:`AdditiveCost`."""
    return AdditiveCost(genome.mac_tables, 1.0 / MACS_PER_MMAC)


class _TorchTables:
    """An additive cost's tables as torch tensors: the stem + head table and one 5-D table per block position."""

    def __init__(self, genome: Genome, cost: AdditiveCost) -> None:
        tables, space = cost.tables, genome.space
        self.scale, self.offset = cost.scale, cost.offset
        self.base = torch.as_tensor(tables.base, dtype=torch.float64)
        stages, indices, kernels, expands = (values.tolist() for values in genome.block_positions)
        self.positions = list(zip(stages, kernels, expands))  # per block position: stage, kernel and expand columns
        self.deeper = [  # per block position: which depth choices of its stage make it active
            torch.as_tensor(genome.depth_values[stage][: int(genome.sizes[genome.depth_columns[stage]])] > block).to(
                torch.float64
            )
            for stage, block in zip(stages, indices)
        ]
        self.blocks = []
        for stage, offset in zip(stages, tables.offsets.tolist()):
            shape = (
                len(space.resolution),
                len(space.width_choices[stage]),
                len(space.stages[stage].width),
                len(space.stages[stage].kernel_size),
                len(space.stages[stage].expand_ratio),
            )
            block = tables.flat[offset : offset + int(np.prod(shape))].reshape(shape)
            self.blocks.append(torch.as_tensor(block, dtype=torch.float64))


def expected_cost(genome: Genome, tables: _TorchTables, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
    """The exact expected cost of a subnet whose genome columns are drawn independently with ``probabilities``
    (one vector per column)."""
    width, depth = genome.width_columns, genome.depth_columns
    resolution = probabilities[0]
    total = torch.einsum(
        "r,s,l,h,rslh->",
        resolution,
        probabilities[width[0]],
        probabilities[width[-2]],
        probabilities[width[-1]],
        tables.base,
    )
    for (stage, kernel, expand), deeper, table in zip(tables.positions, tables.deeper, tables.blocks):
        active = (probabilities[depth[stage]] * deeper).sum()
        term = torch.einsum(
            "r,i,o,k,e,rioke->",
            resolution,
            probabilities[width[stage]],
            probabilities[width[stage + 1]],
            probabilities[kernel],
            probabilities[expand],
            table,
        )
        total = total + active * term
    return tables.scale * total + tables.offset


def gated_logits(
    supernet: Supernet, genome: Genome, arch: Arch, gates: Sequence[torch.Tensor], images: torch.Tensor
) -> torch.Tensor:
    """``supernet``'s logits for ``arch`` with every tensor a genome column decides multiplied by that column's
    gate (see the module docstring); gates of 1 give exactly the subnet's own output."""
    supernet.set_active(arch)
    per_block = genome.slots > 1
    x = resize_to(images, arch.resolution) * gates[0]
    x = supernet.stem(x) * gates[genome.width_columns[0]]
    for stage, (blocks, depth) in enumerate(zip(supernet.stages, arch.depth)):
        for index, block in enumerate(islice(blocks, depth)):
            x = block(x)
            if per_block:
                x = x * gates[genome.kernel_columns[stage, index]] * gates[genome.expand_columns[stage, index]]
        x = x * gates[genome.depth_columns[stage]] * gates[genome.width_columns[stage + 1]]
        if not per_block:
            x = x * gates[genome.kernel_columns[stage, 0]] * gates[genome.expand_columns[stage, 0]]
    return supernet.head(x) * gates[genome.width_columns[-1]]


def _gates(probabilities: Sequence[torch.Tensor], row: np.ndarray) -> list[torch.Tensor]:
    """Per column, ``1 + p - stop_gradient(p)`` of the choice ``row`` took."""
    return [1 + p[int(index)] - p[int(index)].detach() for p, index in zip(probabilities, row)]


def relaxed_search(
    genome: Genome, search: DnasSearch, budget: float, seed: int, cost: AdditiveCost | None = None
) -> DnasOutcome:
    """Optimise the architecture logits for ``search.settings.steps`` minibatches under ``budget``, in the unit
    of ``cost`` (default: MMACs)."""
    settings, supernet = search.settings, search.supernet
    generator = torch.Generator().manual_seed(seed)
    logits = [torch.zeros(int(size), dtype=torch.float64, requires_grad=True) for size in genome.sizes]
    optimizer = torch.optim.Adam(logits, lr=settings.learning_rate)
    tables, weight = _TorchTables(genome, mac_cost(genome) if cost is None else cost), settings.cost_weight
    history, drawn, started = [], {}, time.perf_counter()
    saved = _SavedActivations(supernet)
    was_training = supernet.training
    requires = [parameter.requires_grad for parameter in supernet.parameters()]
    supernet.requires_grad_(False)
    supernet.train()
    supernet.set_dropout(0.0)
    supernet.set_drop_path(0.0)
    try:
        for step in range(settings.steps):
            images, labels = search.batches[step % len(search.batches)]
            fraction = step / max(1, settings.steps - 1)
            temperature = settings.temperature_start + fraction * (
                settings.temperature_end - settings.temperature_start
            )
            relaxed = [_gumbel_softmax(vector, temperature, generator) for vector in logits]
            row = genome.canonical(np.array([[int(p.argmax()) for p in relaxed]], dtype=np.int64))
            arch = genome.decode(row)[0]
            with frozen_bn_statistics(supernet), saved.step():
                output = gated_logits(supernet, genome, arch, _gates(relaxed, row[0]), images)
                expected = expected_cost(genome, tables, [torch.softmax(vector, 0) for vector in logits])
            miss = torch.abs(expected / budget - 1)
            loss = F.cross_entropy(output.float(), labels).double() + weight * miss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            weight *= math.exp(settings.cost_rate * (miss.item() - BUDGET_SLACK))
            history.append(expected.item())
            if step >= settings.steps * 3 // 4:
                drawn[row.tobytes()] = row[0]
    finally:
        supernet.train(was_training)
        for parameter, flag in zip(supernet.parameters(), requires):
            parameter.requires_grad_(flag)
    seconds = time.perf_counter() - started
    return _outcome(genome, logits, list(drawn.values()), history, seconds, saved.peak_bytes / 2**20)


class _SavedActivations:
    """The bytes of the tensors autograd saves for one step's backward pass (each storage once, the supernet's
    weights left out), and their peak over steps."""

    def __init__(self, supernet: Supernet) -> None:
        self.weights = {parameter.untyped_storage().data_ptr() for parameter in supernet.parameters()}
        self.weights |= {buffer.untyped_storage().data_ptr() for buffer in supernet.buffers()}
        self.storages: dict[int, int] = {}
        self.peak_bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.weights:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Count what the forward pass inside saves."""
        self.storages = {}
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield
        self.peak_bytes = max(self.peak_bytes, sum(self.storages.values()))


def _gumbel_softmax(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp_(1e-12, 1 - 1e-12)
    return torch.softmax((logits - torch.log(-torch.log(uniform))) / temperature, dim=0)


def _outcome(
    genome: Genome,
    logits: list[torch.Tensor],
    drawn: list[np.ndarray],
    history: list[float],
    seconds: float,
    activation_mib: float,
) -> DnasOutcome:
    """The most probable row first, then the distinct rows drawn late, by log-probability under the logits."""
    with torch.no_grad():
        log_probs = [torch.log_softmax(vector, 0).numpy() for vector in logits]
    best = genome.canonical(np.array([[int(np.argmax(values)) for values in log_probs]], dtype=np.int64))
    rows = np.unique(np.vstack([best, *drawn]) if drawn else best, axis=0)
    active = genome.active_columns(rows)
    scores = np.array(
        [sum(log_probs[c][index] for c, index in enumerate(row) if used[c]) for row, used in zip(rows, active)]
    )
    order = np.argsort(-scores, kind="stable")
    return DnasOutcome(rows[order], scores[order], history, seconds, activation_mib)
