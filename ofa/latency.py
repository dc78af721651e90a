"""Latency tables for the user's own device: every distinct layer of a space timed once, and whole subnets.

A subnet is a stem, a list of inverted-residual blocks and a head (:mod:`ofa.layout`); a block's shape is
fixed by the resolution, its input and output widths, kernel size, expand ratio and position. The table
times every distinct stem, block and head configuration the space can produce at every resolution (the
"lookup table" of once-for-all, built here for whatever machine runs it). A subnet's table latency is the
sum of its layers' entries; what the sum misses (the calls between layers, caches) is corrected by a
line fitted on subnets timed end to end (:mod:`ofa.latency_models`).

Files are versioned JSON, written atomically, and carry the :class:`~ofa.latency_timing.DeviceFingerprint`
and the space fingerprint: a table of another space, device, backend, thread count or batch is refused,
never mixed. A build saves its progress to ``FILE.partial`` every few seconds, so an interrupted build
resumes where it stopped (only with the same fingerprint and timing settings).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from ofa._genome import AdditiveTables, Genome, genome_of
from ofa.atomic import atomic_write_text
from ofa.latency_timing import DeviceFingerprint, Runner, Timing, TimingSettings, make_runner, time_many
from ofa.layout import BlockLayout, HeadLayout, NetworkLayout, StemLayout, network_layout
from ofa.space import Arch, SearchSpace, read_yaml_or_json, space_fingerprint
from ofa.static import Head, InvertedResidual, StaticNet, Stem

__all__ = [
    "TABLE_FORMAT",
    "TABLE_VERSION",
    "LatencyTable",
    "build_latency_table",
    "distinct_layers",
    "layer_key",
    "load_latency_table",
    "time_subnets",
]

TABLE_FORMAT = "ofa-latency-table"
PARTIAL_FORMAT = "ofa-latency-table-partial"
TABLE_VERSION = 1
Layer = StemLayout | BlockLayout | HeadLayout


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


def _layer_module(layer: Layer, num_classes: int) -> tuple[nn.Module, tuple[int, int, int]]:
    """The static module of a layer and its input shape (channels, height, width)."""
    size = layer.input_size
    if isinstance(layer, StemLayout):
        return Stem(layer), (layer.in_channels, size, size)
    if isinstance(layer, BlockLayout):
        return InvertedResidual(layer), (layer.in_channels, size, size)
    return Head(layer, num_classes, 0.0), (layer.in_channels, size, size)


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


def _finite_numbers(value: Any, length: int | None = None) -> bool:
    ok = isinstance(value, list) and (length is None or len(value) == length)
    return ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)


def _timing_entry(value: Any, where: str, key: str) -> Timing:
    if not _finite_numbers(value, 3) or min(value[:2]) <= 0 or value[2] < 0 or value[0] > value[1]:
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


def _resume(partial: Path, table: LatencyTable, keys: Sequence[str]) -> tuple[int, list[list[float]] | None]:
    """Passes done and samples per layer of an interrupted build of the same table, else (0, None).

    Raises:
        ValueError: the partial build was timed on another device or with other settings.
    """
    if not partial.is_file():
        return 0, None
    data = read_yaml_or_json(partial, "partial latency table")
    if not isinstance(data, dict) or data.get("format") != PARTIAL_FORMAT:
        raise ValueError(f"{partial} is not a partial latency table; delete it to start over")
    header = {**table.header(), "format": PARTIAL_FORMAT}
    stored = {key: data.get(key) for key in header}
    if stored != header:
        previous = data.get("fingerprint")
        raise ValueError(
            f"{partial} holds an interrupted build for another space, classes, device or timing "
            f"(fingerprint {previous}); delete it to start over with {table.fingerprint.describe()}"
        )
    passes, samples = data.get("passes_done"), data.get("samples")
    if (
        isinstance(passes, bool)
        or not isinstance(passes, int)
        or not 0 <= passes < table.timing.passes
        or not isinstance(samples, dict)
        or sorted(samples) != sorted(keys)
        or not all(_finite_numbers(values) and min(values, default=1) > 0 for values in samples.values())
    ):
        raise ValueError(f"{partial} is damaged (passes_done or samples); delete it to start over")
    return passes, [samples[key] for key in keys]


def build_latency_table(
    space: SearchSpace,
    num_classes: int,
    fingerprint: DeviceFingerprint,
    out: str | Path,
    timing: TimingSettings | None = None,
    progress: bool = False,
) -> LatencyTable:
    """Time every distinct layer of ``space`` and write the table to ``out``.

    Progress is saved to ``out.partial`` after every pass over the layers, and a build finding a partial
    file of the same table resumes from it.

    Raises:
        ValueError: a partial build of another space, device or setting is in the way.
    """

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    table = LatencyTable(space, num_classes, fingerprint, timing or TimingSettings(), {})
    layers = distinct_layers(space, num_classes)
    keys = sorted(layers)
    first_pass, previous = _resume(partial, table, keys)
    bar = tqdm(
        total=len(keys) * table.timing.passes,
        initial=len(keys) * first_pass,
        desc="latency table",
        disable=not progress,
    )

    kept: dict[str, Runner] = {}  # onnxruntime: the exported session is kept between passes

    def factory(key: str) -> Callable[[], Runner]:
        def make() -> Runner:
            bar.update()
            if key in kept:
                return kept[key]
            module, shape = _layer_module(layers[key], num_classes)
            runner = make_runner(module, shape, fingerprint)
            if fingerprint.backend == "onnxruntime":
                kept[key] = runner
            return runner

        return make

    def save_pass(done: int, samples: list[list[float]]) -> None:
        if done < table.timing.passes:
            state = {**table.header(), "format": PARTIAL_FORMAT, "passes_done": done}
            atomic_write_text(partial, json.dumps({**state, "samples": dict(zip(keys, samples))}) + "\n")

    with bar:
        timings = time_many([factory(key) for key in keys], table.timing, save_pass, first_pass, previous)
    finished = dataclasses.replace(table, entries=dict(zip(keys, timings)))
    finished.save(out)
    partial.unlink(missing_ok=True)
    return finished


def time_subnets(
    space: SearchSpace,
    archs: Sequence[Arch],
    num_classes: int,
    fingerprint: DeviceFingerprint,
    timing: TimingSettings | None = None,
    progress: bool = False,
) -> list[Timing]:
    """End-to-end latency of each arch's static model (random weights; BN folded), in round-robin passes."""

    settings = timing or TimingSettings()
    bar = tqdm(total=len(archs) * settings.passes, desc="time subnets", disable=not progress, leave=False)

    def factory(arch: Arch) -> Callable[[], Runner]:
        def make() -> Runner:
            bar.update()
            layout: NetworkLayout = network_layout(space, arch, num_classes)
            shape = (space.input_channels, arch.resolution, arch.resolution)
            return make_runner(StaticNet(layout), shape, fingerprint)

        return make

    with bar:
        return time_many([factory(arch) for arch in archs], settings)
