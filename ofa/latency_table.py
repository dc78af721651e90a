"""Latency records without torch: what a timing was made on, how, its result, and the latency table file.

:class:`DeviceFingerprint` says what a latency was measured on (device, runtime, threads, batch);
:class:`TimingSettings` how; :class:`Timing` the result for one module. :class:`LatencyTable` holds one
entry per distinct stem, block and head of a space (keyed by :func:`layer_key`) and reads and writes the
versioned table file. Timing itself (torch, onnxruntime) lives in :mod:`ofa.latency_timing` and table
building in :mod:`ofa.latency`; latency budgets and estimators need only this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa._genome import AdditiveTables, Genome, genome_of
from ofa.atomic import atomic_write_text
from ofa.layout import BlockLayout, HeadLayout, StemLayout, network_layout
from ofa.space import Arch, SearchSpace, read_yaml_or_json, space_fingerprint

__all__ = [
    "TABLE_FORMAT",
    "TABLE_VERSION",
    "DeviceFingerprint",
    "LatencyTable",
    "Timing",
    "TimingSettings",
    "distinct_layers",
    "finite_numbers",
    "layer_key",
    "load_latency_table",
    "table_from_dict",
]

TABLE_FORMAT = "ofa-latency-table"
TABLE_VERSION = 1
Layer = StemLayout | BlockLayout | HeadLayout


@dataclass(frozen=True)
class DeviceFingerprint:
    """What a latency was measured on; timings with different fingerprints are never mixed."""

    device: str
    device_name: str
    backend: str
    backend_version: str
    torch_version: str
    threads: int
    batch: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> DeviceFingerprint:
        """The fingerprint stored in a file (``where`` names it in errors)."""
        fields = {name: kind for name, kind in cls.__annotations__.items()}
        if not isinstance(data, dict) or sorted(data) != sorted(fields):
            raise ValueError(f"{where}: the device fingerprint must have exactly the keys {', '.join(fields)}")
        for name in ("threads", "batch"):
            if isinstance(data[name], bool) or not isinstance(data[name], int) or data[name] < 1:
                raise ValueError(f"{where}: fingerprint {name} must be an integer >= 1, got {data[name]!r}")
        for name in ("device", "device_name", "backend", "backend_version", "torch_version"):
            if not isinstance(data[name], str):
                raise ValueError(f"{where}: fingerprint {name} must be a string, got {data[name]!r}")
        return cls(**data)

    def describe(self) -> str:
        """One line for tables and reports, e.g. ``cpu (Xeon ...), torch 2.14.1, 1 thread, batch 1``."""
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        runtime = f"torch {self.torch_version}"
        if self.backend != "torch":
            runtime = f"{self.backend} {self.backend_version} ({runtime})"
        return f"{self.device} ({self.device_name}), {runtime}, {threads}, batch {self.batch}"


@dataclass(frozen=True)
class TimingSettings:
    """How modules are timed: ``passes`` rounds over all of them; in each, ``warmup`` calls of a module, then
    ``repeats`` samples of at least ``min_sample_ms`` each (back-to-back calls averaged)."""

    warmup: int = 3
    repeats: int = 3
    passes: int = 8
    min_sample_ms: float = 1.0

    def __post_init__(self) -> None:
        for name in ("warmup", "repeats", "passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"timing {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.min_sample_ms, (int, float)) and math.isfinite(self.min_sample_ms)):
            raise ValueError(f"timing min_sample_ms must be a finite number, got {self.min_sample_ms!r}")
        if self.min_sample_ms < 0:
            raise ValueError(f"timing min_sample_ms must be >= 0, got {self.min_sample_ms!r}")


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call of one module over all its samples: the fastest sample (the latency used for
    budgets: contention from other processes only ever adds time), the median and the interquartile range."""

    best_ms: float
    median_ms: float
    spread_ms: float

    def to_list(self) -> list[float]:
        """``[best_ms, median_ms, spread_ms]`` (the form table files store)."""
        return [self.best_ms, self.median_ms, self.spread_ms]


def layer_key(layer: Layer, num_classes: int) -> str:
    """The table key of a layer: its kind and every field that shapes its computation."""
    if isinstance(layer, StemLayout):
        return (
            f"stem in={layer.in_channels} out={layer.out_channels} k={layer.kernel_size} s={layer.stride} "
            f"act={layer.activation} size={layer.input_size}"
        )
    if isinstance(layer, BlockLayout):
        return (
            f"block in={layer.in_channels} mid={layer.mid_channels} out={layer.out_channels} "
            f"expand={int(layer.has_expand)} k={layer.kernel_size} s={layer.stride} se={layer.se_channels} "
            f"act={layer.activation} shortcut={layer.shortcut} size={layer.input_size}"
        )
    return (
        f"head in={layer.in_channels} mid={layer.mid_channels} out={layer.out_channels} bias={int(layer.bias)} "
        f"act={layer.activation} size={layer.input_size} classes={num_classes}"
    )


def _tables(
    genome: Genome,
    stem_head: Callable[[StemLayout, HeadLayout], float],
    block: Callable[[BlockLayout], float],
) -> AdditiveTables:
    return genome.additive_tables(
        lambda layout: stem_head(layout.stem, layout.head), lambda _layout, layer: block(layer), np.float64
    )


def distinct_layers(space: SearchSpace, num_classes: int) -> dict[str, Layer]:
    """Every distinct stem, block and head configuration of the space at every resolution, by key."""
    layers: dict[str, Layer] = {}

    def record(*parts: Layer) -> float:
        for part in parts:
            layers.setdefault(layer_key(part, num_classes), part)
        return 0.0

    _tables(genome_of(space, num_classes), record, record)
    return layers


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer latencies (ms) of one space on one device.

    Attributes:
        space: the search space.
        num_classes: classifier size the head entries were timed with.
        fingerprint: what the entries were timed on.
        timing: how they were timed.
        entries: median and spread per layer key.
    """

    space: SearchSpace
    num_classes: int
    fingerprint: DeviceFingerprint
    timing: TimingSettings
    entries: dict[str, Timing]

    def genome_tables(self, genome: Genome) -> AdditiveTables:
        """Look-up tables summing this table's entries over genome rows (``Genome.cost``)."""
        return _tables(
            genome,
            lambda stem, head: self._entry(stem) + self._entry(head),
            self._entry,
        )

    def _entry(self, layer: Layer) -> float:
        key = layer_key(layer, self.num_classes)
        if key not in self.entries:
            raise ValueError(f"the latency table of space {self.space.name!r} has no entry for {key!r}")
        return self.entries[key].best_ms

    def layer_sum(self, archs: Sequence[Arch]) -> np.ndarray:
        """The sum of the table entries of each arch's layers (ms, uncorrected)."""
        sums = []
        for arch in archs:
            layout = network_layout(self.space, arch, self.num_classes)
            parts: list[Layer] = [layout.stem, *layout.blocks, layout.head]
            sums.append(sum(self._entry(part) for part in parts))
        return np.array(sums, dtype=np.float64)

    def header(self) -> dict[str, Any]:
        """What identifies the table: format, space, classes, device fingerprint and timing settings."""
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "space": self.space.name,
            "space_fingerprint": space_fingerprint(self.space),
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint.to_dict(),
            "timing": dataclasses.asdict(self.timing),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of the table file; an entry is ``[best_ms, median_ms, spread_ms]``."""
        entries = {key: value.to_list() for key, value in sorted(self.entries.items())}
        return {**self.header(), "entries": entries}

    def save(self, path: str | Path) -> None:
        """Write the table atomically (temp file + rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=0) + "\n")


def finite_numbers(value: Any, length: int | None = None) -> bool:
    ok = isinstance(value, list) and (length is None or len(value) == length)
    return ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)


def _timing_entry(value: Any, where: str, key: str) -> Timing:
    if not finite_numbers(value, 3) or min(value[:2]) <= 0 or value[2] < 0 or value[0] > value[1]:
        raise ValueError(
            f"{where}: entry {key!r} is {value!r}; expected [best_ms > 0, median_ms >= best_ms, spread_ms >= 0], "
            f"finite numbers"
        )
    return Timing(float(value[0]), float(value[1]), float(value[2]))


def table_from_dict(data: Any, space: SearchSpace, where: str) -> LatencyTable:
    """A table from its JSON content, checked against ``space`` (``where`` names the file in errors)."""
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise ValueError(f"{where} is not a latency table (format {TABLE_FORMAT!r} expected)")
    if data.get("version") != TABLE_VERSION:
        raise ValueError(f"{where} has table version {data.get('version')!r}; this reads version {TABLE_VERSION}")
    if data.get("space") != space.name:
        raise ValueError(f"{where} was built for space {data.get('space')!r}, not {space.name!r}")
    if data.get("space_fingerprint") != space_fingerprint(space):
        raise ValueError(f"{where} was built for another definition of space {space.name!r}; rebuild it")
    num_classes = data.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{where}: num_classes must be an integer >= 1, got {num_classes!r}")
    fingerprint = DeviceFingerprint.from_dict(data.get("fingerprint"), where)
    timing_data = data.get("timing")
    names = sorted(field.name for field in dataclasses.fields(TimingSettings))
    if not isinstance(timing_data, dict) or sorted(timing_data) != names:
        raise ValueError(f"{where}: timing must have the keys {', '.join(names)}")
    try:
        timing = TimingSettings(**timing_data)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    raw = data.get("entries")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: entries must be a mapping from layer key to [best_ms, median_ms, spread_ms]")
    entries = {key: _timing_entry(value, where, key) for key, value in raw.items()}
    return LatencyTable(space, num_classes, fingerprint, timing, entries)


def load_latency_table(
    path: str | Path, space: SearchSpace, fingerprint: DeviceFingerprint | None = None, complete: bool = True
) -> LatencyTable:
    """Read a table file for ``space``; with ``fingerprint``, refuse a table timed on anything else.

    Raises:
        ValueError: a missing, truncated or malformed file, NaN/negative timings, another space, another
            fingerprint, or (``complete``) a table lacking layers of the space.
    """
    path = Path(path)
    table = table_from_dict(read_yaml_or_json(path, "latency table"), space, str(path))
    if fingerprint is not None and table.fingerprint != fingerprint:
        raise ValueError(
            f"latency table {path} was timed on {table.fingerprint.describe()}, not on {fingerprint.describe()}; "
            f"timings of different devices or settings are never mixed: build a table for this one"
        )
    if complete:
        missing = sorted(set(distinct_layers(space, table.num_classes)) - set(table.entries))
        if missing:
            raise ValueError(
                f"latency table {path} lacks {len(missing)} layer(s) of space {space.name!r}: {missing[0]}"
            )
    return table
