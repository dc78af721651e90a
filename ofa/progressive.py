"""Progressive shrinking (once-for-all, Cai et al., ICLR 2020) as a training schedule.

Training runs in phases. The first trains the full network alone, on the labels; it becomes the frozen
distillation teacher of every later phase. Each later phase opens more choices of some elastic dimensions
(kernel size, depth, expand ratio; the stage and head widths and the input resolution of this project's
spaces open with the expand ratio and the kernel size) and trains ``subnets`` uniformly drawn subnets of
the choices open so far per step, each on the labels plus the teacher's predictions. Every phase starts from
the previous one's weights with a fresh optimizer and its own warm-up and cosine learning-rate schedule; at the
start of a phase that opens expand ratios the middle channels are sorted by importance
(:mod:`ofa.channel_sort`).

``epochs``, ``warmup`` and ``lr_scale`` are relative: the phases share the run's ``epochs`` in the ratio of
their ``epochs`` weights, and a phase's peak rate is ``lr_scale`` times ``optim.lr``. The defaults are
once-for-all's ImageNet schedule: full network 180 epochs at the full rate, then kernel 120 (+5 warm-up)
at 0.37x, depth 25 then 120 (+5) at 0.031x / 0.092x, expand 25 then 120 (+5) at 0.031x / 0.092x, with
1, 1, 2, 2, 4, 4 subnets per step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ofa.config import check_int
from ofa.space import SearchSpace

__all__ = [
    "DEFAULT_PHASES",
    "DIMENSIONS",
    "Phase",
    "Schedule",
    "build_schedule",
    "elastic_dimensions",
    "equal_compute_epochs",
    "phase_epochs",
]

DIMENSIONS = ("kernel", "depth", "expand", "width", "resolution")


@dataclass(frozen=True)
class Phase:
    """One phase: which dimensions it opens, to how many of their largest choices (0: all), for how long
    (relative ``epochs`` and ``warmup``), at what peak rate (``lr_scale`` x ``optim.lr``), with how many
    subnets per step."""

    name: str
    open: tuple[str, ...] = ()
    choices: int = 0
    epochs: float = 1.0
    warmup: float = 0.0
    lr_scale: float = 1.0
    subnets: int = 1

    def __post_init__(self) -> None:
        unknown = [name for name in self.open if name not in DIMENSIONS]
        if unknown:
            raise ValueError(f"phase {self.name!r}: unknown dimension(s) {unknown}; allowed: {', '.join(DIMENSIONS)}")
        check_int(self.choices, f"phase {self.name!r}: choices (0: all)", 0)
        for key in ("epochs", "lr_scale"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"phase {self.name!r}: {key} must be a positive number, got {value}")
        if not (math.isfinite(self.warmup) and 0 <= self.warmup < self.epochs):
            raise ValueError(f"phase {self.name!r}: warmup must be in [0, epochs = {self.epochs}), got {self.warmup}")
        check_int(self.subnets, f"phase {self.name!r}: subnets", 1)


DEFAULT_PHASES = (
    Phase("full", (), 0, 180.0, 5.0, 1.0, 1),
    Phase("kernel", ("kernel", "resolution"), 0, 120.0, 5.0, 0.37, 1),
    Phase("depth-1", ("depth",), 2, 25.0, 0.0, 0.031, 2),
    Phase("depth-2", ("depth",), 0, 120.0, 5.0, 0.092, 2),
    Phase("expand-1", ("expand", "width"), 2, 25.0, 0.0, 0.031, 4),
    Phase("expand-2", ("expand", "width"), 0, 120.0, 5.0, 0.092, 4),
)


def _choices_of(space: SearchSpace) -> dict[str, list[tuple]]:
    """Per dimension, the choice tuples of every place it is decided (stages, stem and head widths)."""
    return {
        "kernel": [stage.kernel_size for stage in space.stages],
        "depth": [stage.depth for stage in space.stages],
        "expand": [stage.expand_ratio for stage in space.stages],
        "width": list(space.width_choices),
        "resolution": [space.resolution],
    }


def elastic_dimensions(space: SearchSpace) -> tuple[str, ...]:
    """The dimensions with more than one choice somewhere in ``space``."""
    return tuple(name for name, places in _choices_of(space).items() if any(len(c) > 1 for c in places))


def _largest(choices: tuple, count: int) -> tuple:
    """The ``count`` largest of ``choices`` (0: all), in their original order."""
    if count == 0 or count >= len(choices):
        return choices
    kept = set(sorted(choices)[-count:])
    return tuple(choice for choice in choices if choice in kept)


def _restrict(space: SearchSpace, opened: dict[str, int]) -> SearchSpace:
    """``space`` with each dimension cut to its largest ``opened[dim]`` choices (0: all; absent: the largest)."""

    def keep(dimension: str, choices: tuple) -> tuple:
        return _largest(choices, opened[dimension]) if dimension in opened else (max(choices),)

    stages = tuple(
        dataclasses.replace(
            stage,
            width=keep("width", stage.width),
            depth=keep("depth", stage.depth),
            kernel_size=keep("kernel", stage.kernel_size),
            expand_ratio=keep("expand", stage.expand_ratio),
        )
        for stage in space.stages
    )
    return dataclasses.replace(
        space,
        resolution=keep("resolution", space.resolution),
        stem=dataclasses.replace(space.stem, width=keep("width", space.stem.width)),
        stages=stages,
        head=dataclasses.replace(space.head, width=keep("width", space.head.width)),
    )


@dataclass(frozen=True)
class Schedule:
    """The phases of one run, their integer epochs and the sub-space each phase samples from."""

    phases: tuple[Phase, ...]
    epochs: tuple[int, ...]
    spaces: tuple[SearchSpace, ...]

    @property
    def starts(self) -> tuple[int, ...]:
        """The first (0-based) epoch of each phase."""
        return tuple(sum(self.epochs[:index]) for index in range(len(self.epochs)))

    def phase_at(self, epoch: int) -> int:
        """The phase that trains (0-based) ``epoch``."""
        return max(index for index, start in enumerate(self.starts) if start <= epoch)

    def warmup_epochs(self, index: int) -> float:
        """Phase ``index``'s warm-up in epochs: its ``warmup`` weight scaled like its ``epochs``."""
        phase = self.phases[index]
        return self.epochs[index] * phase.warmup / phase.epochs

    def expand_before(self, index: int) -> tuple[float, ...] | None:
        """The expand ratios trained before phase ``index`` if it opens expand ratios (else None): the channels
        are sorted within their widths when it starts."""
        if "expand" not in self.phases[index].open or index == 0:
            return None
        return tuple(sorted({e for stage in self.spaces[index - 1].stages for e in stage.expand_ratio}))

    def passes(self, steps_per_epoch: int) -> int:
        """Subnet forward-backward passes of the whole schedule."""
        return sum(epochs * phase.subnets for epochs, phase in zip(self.epochs, self.phases)) * steps_per_epoch


def phase_epochs(weights: Sequence[float], total: int) -> tuple[int, ...]:
    """Split ``total`` epochs in the ratio of ``weights``, every phase at least one (largest remainders)."""
    if total < len(weights):
        raise ValueError(f"epochs ({total}) must be >= the number of progressive phases ({len(weights)})")
    shares = [total * weight / sum(weights) for weight in weights]
    counts = [max(1, math.floor(share)) for share in shares]
    while sum(counts) < total:  # the largest shortfall first
        counts[max(range(len(counts)), key=lambda index: shares[index] - counts[index])] += 1
    while sum(counts) > total:  # raised to one: take back from the largest excess that can spare one
        spare = [index for index in range(len(counts)) if counts[index] > 1]
        counts[max(spare, key=lambda index: counts[index] - shares[index])] -= 1
    return tuple(counts)


def _default_phases(space: SearchSpace) -> tuple[Phase, ...]:
    """Once-for-all's phases, keeping only the dimensions ``space`` makes elastic (phases left empty dropped)."""
    elastic = set(elastic_dimensions(space))
    phases = [DEFAULT_PHASES[0]]
    for phase in DEFAULT_PHASES[1:]:
        opened = tuple(name for name in phase.open if name in elastic)
        if opened:
            phases.append(dataclasses.replace(phase, open=opened))
    return tuple(phases)


def _check_phases(space: SearchSpace, phases: Sequence[Phase]) -> None:
    """The first phase opens nothing (the full network, the teacher) and every opened dimension is elastic in
    ``space``."""
    if not phases or phases[0].open:
        opened = ", ".join(phases[0].open) if phases else "(no phases)"
        raise ValueError(
            f"progressive.phases: the first phase must open nothing (it trains the full network, the teacher), "
            f"got {opened}"
        )
    elastic = elastic_dimensions(space)
    for phase in phases:
        for name in phase.open:
            if name not in elastic:
                raise ValueError(
                    f"progressive.phases: phase {phase.name!r} opens {name}, which space {space.name!r} does not make "
                    f"elastic (elastic: {', '.join(elastic) or 'none'})"
                )


def _check_all_open(space: SearchSpace, last: SearchSpace) -> None:
    """The last phase's sub-space ``last`` must hold every choice of ``space``."""
    full, final = _choices_of(space), _choices_of(last)
    closed = [name for name in elastic_dimensions(space) if final[name] != full[name]]
    if closed:
        raise ValueError(
            f"progressive.phases never open all choices of {', '.join(closed)}, which space {space.name!r} makes "
            "elastic; add a phase opening them with choices 0 (all)"
        )


def build_schedule(space: SearchSpace, phases: Sequence[Phase] | None, total_epochs: int) -> Schedule:
    """The checked schedule of ``phases`` (None: once-for-all's, for the dimensions ``space`` makes elastic)."""
    phases = _default_phases(space) if phases is None else tuple(phases)
    _check_phases(space, phases)
    opened: dict[str, int] = {}
    spaces = []
    for phase in phases:
        opened.update({name: phase.choices for name in phase.open})
        spaces.append(_restrict(space, opened))
    _check_all_open(space, spaces[-1])
    return Schedule(phases, phase_epochs([phase.epochs for phase in phases], total_epochs), tuple(spaces))


def equal_compute_epochs(
    space: SearchSpace, phases: Sequence[Phase] | None, sandwich_epochs: int, sandwich_subnets: int
) -> int:
    """The progressive run's epochs whose subnet forward-backward passes come closest to a sandwich run's
    (``sandwich_epochs`` x ``sandwich_subnets`` per step, at the same steps per epoch; ties: fewer epochs)."""
    phases = build_schedule(space, phases, len(_default_phases(space) if phases is None else phases)).phases
    weights, subnets = [phase.epochs for phase in phases], [phase.subnets for phase in phases]
    target = sandwich_epochs * sandwich_subnets

    def gap(epochs: int) -> int:
        return abs(sum(count * each for count, each in zip(phase_epochs(weights, epochs), subnets)) - target)

    return min(range(len(phases), max(len(phases), target) + 1), key=gap)  # min keeps the first of ties
