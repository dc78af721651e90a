"""Latency estimators fitted on subnets timed end to end, usable as search budgets, and their validation.

Three estimators, each fitted on the same timed subnets (``ofa latency measure``) of one device:

- ``table``: the sum of the subnet's layer entries in a latency table (:mod:`ofa.latency`), corrected by
  a line ``slope * sum + intercept`` that absorbs what the layer-by-layer timing misses (calls between
  layers, cache effects);
- ``learned``: a predictor of the zoo (:mod:`predictors.models`, LightGBM by default) fitted on the log
  latency of the timed subnets (it sees the arch encoding, MACs and parameters);
- ``macs``: the baseline, a line in MACs.

Lines are fitted by least squares on relative errors (weights ``1 / latency``): what a budget cares
about is the error relative to the latency. An estimator file is self-contained JSON (the table is
embedded) with the device fingerprint it was fitted for.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ofa._genome import AdditiveTables, Genome
from ofa.atomic import atomic_write_text
from ofa.cost_axis import DEFAULT_LEARNED_PREDICTOR, ESTIMATORS
from ofa.flops import count_macs_many
from ofa.latency_table import DeviceFingerprint, LatencyTable, table_from_dict
from ofa.space import Arch, SearchSpace, read_yaml_or_json, space_fingerprint
from predictors.metrics import kendall_tau
from predictors.models import create_predictor, predictor_from_envelope

if TYPE_CHECKING:
    from predictors.models import Predictor

__all__ = [
    "ESTIMATORS",
    "ESTIMATOR_FORMAT",
    "LatencyEstimator",
    "fit_estimator",
    "latency_metrics",
    "load_estimator",
]

ESTIMATOR_FORMAT = "ofa-latency-estimator"
ESTIMATOR_VERSION = 1
FASTEST_PROBES = 512  # random archs (besides the smallest) probed for the fastest estimated latency


def fit_line(features: np.ndarray, latencies: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of ``latency ~ slope * feature + intercept`` minimising relative errors."""
    weights = 1.0 / latencies
    design = np.column_stack([features, np.ones_like(features)]) * weights[:, None]
    (slope, intercept), *_ = np.linalg.lstsq(design, latencies * weights, rcond=None)
    return float(slope), float(intercept)


def latency_metrics(true: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """RMSPE, share within +-10 %, Kendall tau and count of predicted vs measured latencies."""

    true_array, predicted_array = np.asarray(true, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    relative = (predicted_array - true_array) / true_array
    return {
        "rmspe": float(np.sqrt(np.mean(relative**2))),
        "within_10": float(np.mean(np.abs(relative) <= 0.10)),
        "kendall_tau": kendall_tau(true_array, predicted_array),
        "count": float(true_array.size),
    }


@dataclass
class LatencyEstimator:
    """A fitted latency estimator (see the module docstring) for one space, classifier size and device.

    Attributes:
        kind: ``table``, ``learned`` or ``macs``.
        space: the search space.
        num_classes: classifier size.
        fingerprint: the device the latencies were timed on.
        fitted_on: number of timed subnets it was fitted on.
        slope, intercept: the line of ``table`` and ``macs``.
        table: the latency table (``table`` only).
        predictor: the fitted zoo predictor of log latency (``learned`` only).
    """

    kind: str
    space: SearchSpace
    num_classes: int
    fingerprint: DeviceFingerprint
    fitted_on: int
    slope: float = 1.0
    intercept: float = 0.0
    table: LatencyTable | None = None
    predictor: Predictor | None = None
    _table_sums: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # genome -> tables

    @functools.cached_property
    def fastest_ms(self) -> float:
        """The lowest estimate among the smallest subnet and ``FASTEST_PROBES`` seeded random archs (ms):
        the lowest latency budget a search can meet (computed once per estimator)."""
        rng = random.Random(0)
        archs = [self.space.min_arch(), *(self.space.sample(rng) for _ in range(FASTEST_PROBES))]
        return float(self.predict(archs).min())

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Estimated latency of each arch in milliseconds."""
        if self.kind == "learned":
            return np.exp(-np.asarray(self.predictor.predict(list(archs)), dtype=np.float64))
        return self.slope * self._feature(archs) + self.intercept

    def _feature(self, archs: Sequence[Arch]) -> np.ndarray:
        if self.kind == "table":
            assert self.table is not None
            return self.table.layer_sum(archs)
        return count_macs_many(self.space, list(archs), self.num_classes).astype(np.float64)

    def row_cost(self, genome: Genome) -> Callable[[np.ndarray], np.ndarray]:
        """Estimated latency (ms) of genome rows, vectorised through look-up tables where possible."""
        form = self.additive_form(genome)
        if form is None:
            return lambda rows: self.predict(genome.decode(rows))
        tables, slope, intercept = form
        return lambda rows: slope * genome.cost(rows, tables) + intercept

    def additive_form(self, genome: Genome) -> tuple[AdditiveTables, float, float] | None:
        """``(tables, slope, intercept)`` with latency = slope x the additive cost of ``tables`` + intercept, for
        the table and MACs estimators (the search's costs and the differentiable search's cost term); None for
        the learned one. A table's sums over ``genome`` are built once per space and class count."""
        if self.kind == "table":
            assert self.table is not None
            key = (genome.space, genome.num_classes)
            if key not in self._table_sums:
                self._table_sums[key] = self.table.genome_tables(genome)
            return self._table_sums[key], self.slope, self.intercept
        if self.kind == "macs":
            return genome.mac_tables, self.slope, self.intercept
        return None

    def describe(self) -> str:
        """One line: kind, device and fit size."""
        return f"{self.kind} latency estimator for {self.fingerprint.describe()} (fitted on {self.fitted_on} subnets)"

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of the estimator file."""
        data: dict[str, Any] = {
            "format": ESTIMATOR_FORMAT,
            "version": ESTIMATOR_VERSION,
            "kind": self.kind,
            "space": self.space.name,
            "space_fingerprint": space_fingerprint(self.space),
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint.to_dict(),
            "fitted_on": self.fitted_on,
        }
        if self.kind in ("table", "macs"):
            data["line"] = {"slope": self.slope, "intercept": self.intercept}
        if self.table is not None:
            data["table"] = self.table.to_dict()
        if self.predictor is not None:
            data["predictor"] = self.predictor.envelope()
        return data

    def save(self, path: str | Path) -> None:
        """Write the estimator atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict()) + "\n")


def _check_latencies(archs: Sequence[Arch], latencies: Sequence[float]) -> np.ndarray:
    values = np.asarray(latencies, dtype=np.float64).ravel()
    if values.size != len(archs):
        raise ValueError(f"got {len(archs)} archs but {values.size} latencies")
    if len(set(archs)) < 3:
        raise ValueError(f"need at least 3 distinct timed subnets to fit a latency estimator, got {len(set(archs))}")
    if not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError("latencies must be positive finite numbers (no NaN, inf, zero or negative timings)")
    return values


def fit_estimator(
    kind: str,
    space: SearchSpace,
    num_classes: int,
    fingerprint: DeviceFingerprint,
    archs: Sequence[Arch],
    latencies: Sequence[float],
    table: LatencyTable | None = None,
    predictor: str = DEFAULT_LEARNED_PREDICTOR,
    seed: int = 0,
) -> LatencyEstimator:
    """Fit an estimator of ``kind`` on timed subnets (``latencies`` in ms, measured on ``fingerprint``).

    Raises:
        ValueError: an unknown kind, a table missing for ``table`` or timed on another device, classes
            that differ from the table's, or unusable timings.
    """
    if kind not in ESTIMATORS:
        raise ValueError(f"unknown latency estimator {kind!r}; allowed: {', '.join(ESTIMATORS)}")
    values = _check_latencies(archs, latencies)
    estimator = LatencyEstimator(kind, space, num_classes, fingerprint, len(values))
    if kind == "table":
        if table is None:
            raise ValueError("the table estimator needs a latency table (ofa latency build)")
        if table.fingerprint != fingerprint:
            raise ValueError(
                f"the latency table was timed on {table.fingerprint.describe()} but the subnets on "
                f"{fingerprint.describe()}; timings of different devices or settings are never mixed"
            )
        if table.num_classes != num_classes:
            raise ValueError(f"the latency table has {table.num_classes} classes, the subnets {num_classes}")
        estimator.table = table
    if kind == "learned":
        estimator.predictor = create_predictor(predictor, space, seed, num_classes).fit(list(archs), -np.log(values))
    else:
        estimator.slope, estimator.intercept = fit_line(estimator._feature(archs), values)
    return estimator


def load_estimator(
    path: str | Path, space: SearchSpace, fingerprint: DeviceFingerprint | None = None
) -> LatencyEstimator:
    """Read an estimator file for ``space``; with ``fingerprint``, refuse one fitted for another device.

    Raises:
        ValueError: a missing, truncated or malformed file, another space or device, or a non-finite line.
    """
    path = Path(path)
    data = read_yaml_or_json(path, "latency estimator")
    if not isinstance(data, dict) or data.get("format") != ESTIMATOR_FORMAT:
        raise ValueError(f"{path} is not a latency estimator (format {ESTIMATOR_FORMAT!r} expected)")
    if data.get("version") != ESTIMATOR_VERSION:
        raise ValueError(
            f"latency estimator {path} has version {data.get('version')!r}; this reads {ESTIMATOR_VERSION}"
        )
    if data.get("space") != space.name or data.get("space_fingerprint") != space_fingerprint(space):
        raise ValueError(
            f"latency estimator {path} was fitted for space {data.get('space')!r}, not this {space.name!r}"
        )
    kind, num_classes, fitted_on = data.get("kind"), data.get("num_classes"), data.get("fitted_on")
    if kind not in ESTIMATORS:
        raise ValueError(f"latency estimator {path}: unknown kind {kind!r}; allowed: {', '.join(ESTIMATORS)}")
    for name, value in (("num_classes", num_classes), ("fitted_on", fitted_on)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"latency estimator {path}: {name} must be an integer >= 1, got {value!r}")
    device = DeviceFingerprint.from_dict(data.get("fingerprint"), str(path))
    if fingerprint is not None and device != fingerprint:
        raise ValueError(
            f"latency estimator {path} is for {device.describe()}, not {fingerprint.describe()}; "
            f"fit one for this device and setting"
        )
    estimator = LatencyEstimator(kind, space, num_classes, device, fitted_on)
    if kind in ("table", "macs"):
        line = data.get("line")
        numbers = [line.get(key) for key in ("slope", "intercept")] if isinstance(line, dict) else []
        if len(numbers) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
            raise ValueError(f"latency estimator {path}: line must hold finite slope and intercept")
        estimator.slope, estimator.intercept = float(numbers[0]), float(numbers[1])
    if kind == "table":
        estimator.table = table_from_dict(data.get("table"), space, f"{path} (embedded table)")
        if estimator.table.fingerprint != device:
            raise ValueError(f"latency estimator {path}: its table was timed on another device")
    if kind == "learned":
        estimator.predictor = predictor_from_envelope(data.get("predictor"), space, f"{path} (embedded predictor)")
    return estimator
