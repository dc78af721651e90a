"""Architecture samplers for sandwich training.

* ``uniform``: every choice uniformly at random.
* ``flops``: a FLOPs target drawn from the FLOPs histogram of uniform samples (the table is made by the
  tool from the space and the counter and cached as JSON), then an arch in that bin.
* ``bestup`` / ``worstup`` (AttentiveNAS, Wang et al., CVPR 2021): at a FLOPs target draw k candidates,
  score them with a pluggable scorer (minibatch loss or an accuracy predictor) and train the best (or
  worst) one.

Every sampler takes an explicit ``random.Random``; candidate drawing is bounded (no endless rejection).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ofa.atomic import atomic_write_text
from ofa.flops import count_macs, count_macs_many
from ofa.space import Arch, SearchSpace, space_fingerprint

__all__ = [
    "SAMPLERS",
    "SCORERS",
    "ArchScorer",
    "AttentiveSampler",
    "FlopsTable",
    "FlopsTargetSampler",
    "UniformSampler",
    "build_flops_table",
    "default_flops_bin_mmacs",
    "load_or_build_flops_table",
]

SAMPLERS = ("uniform", "flops", "bestup", "worstup")
REFERENCE_BIN_MMACS = 25.0  # AttentiveNAS's FLOPs-target bin width on its ImageNet space
REFERENCE_NUM_BINS = 70  # about how many such bins its space spans (203..1939 MMACs)
PAPER_SCALE_RANGE_MMACS = 500.0  # spaces spanning at least this many MMACs use the reference width
SCORERS = ("loss", "predictor")


class ArchScorer(Protocol):
    """Scores candidate archs: higher means better (lower loss, higher predicted accuracy)."""

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray: ...


@dataclass(frozen=True)
class FlopsTable:
    """Histogram of the MMACs of uniformly sampled archs (``edges`` has one more entry than ``counts``)."""

    space_fingerprint: str
    num_classes: int
    num_samples: int
    seed: int
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {
            "space_fingerprint": self.space_fingerprint,
            "num_classes": self.num_classes,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "edges": list(self.edges),
            "counts": list(self.counts),
        }


def default_flops_bin_mmacs(space: SearchSpace, num_classes: int) -> float:
    """The FLOPs-target bin width (MMACs) used when the config leaves it unset.

    The reference width, 25 MMACs, on spaces spanning at least 500 MMACs (the paper spaces); on smaller
    spaces the width that cuts the range into about as many bins as the reference has on its own space
    (``(max - min) / 70``), so the k candidates of one target are about as alike as the reference's.
    """
    low = count_macs(space, space.min_arch(), num_classes) / 1e6
    high = count_macs(space, space.max_arch(), num_classes) / 1e6
    if high - low >= PAPER_SCALE_RANGE_MMACS:
        return REFERENCE_BIN_MMACS
    return max(high - low, 1e-6) / REFERENCE_NUM_BINS


def build_flops_table(
    space: SearchSpace, num_classes: int, num_samples: int = 20000, bin_mmacs: float | None = None, seed: int = 0
) -> FlopsTable:
    """Histogram the MMACs of ``num_samples`` uniform archs into bins ``bin_mmacs`` wide from the min subnet up.

    ``bin_mmacs`` None takes :func:`default_flops_bin_mmacs`. The last bin ends at or above the max subnet.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if bin_mmacs is None:
        bin_mmacs = default_flops_bin_mmacs(space, num_classes)
    if not (math.isfinite(bin_mmacs) and bin_mmacs > 0):
        raise ValueError(f"the FLOPs bin width must be a positive number of MMACs, got {bin_mmacs}")
    rng = random.Random(seed)
    mmacs = count_macs_many(space, [space.sample(rng) for _ in range(num_samples)], num_classes) / 1e6
    low = count_macs(space, space.min_arch(), num_classes) / 1e6
    high = count_macs(space, space.max_arch(), num_classes) / 1e6
    num_bins = max(1, math.ceil((high - low) / bin_mmacs - 1e-9))
    if num_bins > 100_000:
        raise ValueError(f"a FLOPs bin width of {bin_mmacs} MMACs cuts {low:.3f}..{high:.3f} MMACs into too many bins")
    edges = low + bin_mmacs * np.arange(num_bins + 1)
    edges[-1] = max(edges[-1], high)
    counts, _ = np.histogram(mmacs, bins=edges)
    return FlopsTable(
        space_fingerprint(space), num_classes, num_samples, seed, tuple(map(float, edges)), tuple(map(int, counts))
    )


def load_or_build_flops_table(
    path: Path,
    space: SearchSpace,
    num_classes: int,
    num_samples: int = 20000,
    bin_mmacs: float | None = None,
    seed: int = 0,
) -> FlopsTable:
    """Reuse the JSON table at ``path`` when it was made for the same space and settings, else build and save it."""
    built = None
    if bin_mmacs is None:
        bin_mmacs = default_flops_bin_mmacs(space, num_classes)
    wanted = (space_fingerprint(space), num_classes, num_samples, seed)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            table = FlopsTable(
                data["space_fingerprint"],
                data["num_classes"],
                data["num_samples"],
                data["seed"],
                tuple(data["edges"]),
                tuple(data["counts"]),
            )
            width = table.edges[1] - table.edges[0] if len(table.edges) > 1 else -1.0
            same = (table.space_fingerprint, table.num_classes, table.num_samples, table.seed) == wanted
            if same and math.isclose(width, bin_mmacs, rel_tol=1e-9):
                built = table
        except (KeyError, TypeError, ValueError, IndexError):
            pass  # a stale or damaged cache is rebuilt
    if built is None:
        built = build_flops_table(space, num_classes, num_samples, bin_mmacs, seed)
        atomic_write_text(path, json.dumps(built.to_dict()))
    return built


class UniformSampler:
    """Every choice uniformly at random."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def sample(self, rng: random.Random) -> Arch:
        """One arch."""
        return self.space.sample(rng)


class FlopsTargetSampler:
    """Draw a FLOPs bin from the table's histogram, then an arch inside it (bounded tries, closest kept).

    Args:
        space: the search space.
        table: the FLOPs histogram.
        num_classes: classifier outputs used for counting.
        max_tries: uniform draws per request before the closest one so far is returned.
    """

    def __init__(self, space: SearchSpace, table: FlopsTable, num_classes: int, max_tries: int = 200) -> None:
        if table.space_fingerprint != space_fingerprint(space):
            raise ValueError("the FLOPs table was made for another space")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.space = space
        self.table = table
        self.num_classes = num_classes
        self.max_tries = max_tries
        counts = np.asarray(table.counts, dtype=np.float64)
        self._weights = list(counts / counts.sum())

    def draw_target(self, rng: random.Random) -> tuple[float, float]:
        """A (low, high) MMACs bin drawn with the histogram's probabilities."""
        (index,) = rng.choices(range(len(self._weights)), weights=self._weights)
        return self.table.edges[index], self.table.edges[index + 1]

    def sample_in(self, low: float, high: float, rng: random.Random) -> Arch:
        """An arch with MMACs in [low, high], or the closest of ``max_tries`` uniform draws."""
        best, best_distance = None, float("inf")
        for _ in range(self.max_tries):
            arch = self.space.sample(rng)
            mmacs = count_macs(self.space, arch, self.num_classes) / 1e6
            distance = max(low - mmacs, mmacs - high, 0.0)
            if distance < best_distance:
                best, best_distance = arch, distance
            if distance == 0.0:
                break
        return best

    def sample(self, rng: random.Random) -> Arch:
        """One arch at a FLOPs target."""
        low, high = self.draw_target(rng)
        return self.sample_in(low, high, rng)


class AttentiveSampler:
    """BestUp-k / WorstUp-k: k candidates at one FLOPs target, the best (or worst) by the scorer is trained.

    Args:
        flops_sampler: draws the target and the candidates.
        num_candidates: k >= 1.
        pick: ``best`` or ``worst``.
    """

    def __init__(self, flops_sampler: FlopsTargetSampler, num_candidates: int, pick: str) -> None:
        if num_candidates < 1:
            raise ValueError(f"the number of candidates k must be >= 1, got {num_candidates}")
        if pick not in ("best", "worst"):
            raise ValueError(f"pick must be 'best' or 'worst', got {pick!r}")
        self.flops_sampler = flops_sampler
        self.num_candidates = num_candidates
        self.pick = pick

    def candidates(self, rng: random.Random) -> list[Arch]:
        """k candidates at one FLOPs target."""
        low, high = self.flops_sampler.draw_target(rng)
        return [self.flops_sampler.sample_in(low, high, rng) for _ in range(self.num_candidates)]

    def choose(self, candidates: Sequence[Arch], scores: np.ndarray) -> Arch:
        """The candidate with the highest (``best``) or lowest (``worst``) score; ties go to the first."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(candidates),):
            raise ValueError(f"expected {len(candidates)} scores, got shape {scores.shape}")
        index = int(np.argmax(scores)) if self.pick == "best" else int(np.argmin(scores))
        return candidates[index]

    def sample(self, rng: random.Random, scorer: Callable[[Sequence[Arch]], np.ndarray]) -> Arch:
        """Draw candidates, score them, keep one."""
        candidates = self.candidates(rng)
        if len(candidates) == 1:
            return candidates[0]
        return self.choose(candidates, scorer(candidates))
