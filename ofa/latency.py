"""Latency tables for the user's own device: every distinct layer of a space timed once, and whole subnets.

A subnet is a stem, a list of inverted-residual blocks and a head (:mod:`ofa.layout`); a block's shape is
fixed by the resolution, its input and output widths, kernel size, expand ratio and position. The table
times every distinct stem, block and head configuration the space can produce at every resolution (the
"lookup table" of once-for-all, built here for whatever machine runs it). A subnet's table latency is the
sum of its layers' entries; what the sum misses (the calls between layers, caches) is corrected by a
line fitted on subnets timed end to end (:mod:`ofa.latency_models`).

Files are versioned JSON, written atomically, and carry the :class:`~ofa.latency_table.DeviceFingerprint`
and the space fingerprint: a table of another space, device, backend, thread count or batch is refused,
never mixed. A build saves its progress to ``FILE.partial`` every few seconds, so an interrupted build
resumes where it stopped (only with the same fingerprint and timing settings). The table itself and its file
format live in :mod:`ofa.latency_table` (no torch).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn
from tqdm import tqdm

from ofa.atomic import atomic_write_text
from ofa.latency_table import (
    DeviceFingerprint,
    LatencyTable,
    Layer,
    Timing,
    TimingSettings,
    distinct_layers,
    finite_numbers,
)
from ofa.latency_timing import Runner, make_runner, time_many
from ofa.layout import BlockLayout, NetworkLayout, StemLayout, network_layout
from ofa.space import Arch, SearchSpace, read_yaml_or_json
from ofa.static import Head, InvertedResidual, StaticNet, Stem

__all__ = ["build_latency_table", "time_subnets"]

PARTIAL_FORMAT = "ofa-latency-table-partial"


def _layer_module(layer: Layer, num_classes: int) -> tuple[nn.Module, tuple[int, int, int]]:
    """The static module of a layer and its input shape (channels, height, width)."""
    size = layer.input_size
    if isinstance(layer, StemLayout):
        return Stem(layer), (layer.in_channels, size, size)
    if isinstance(layer, BlockLayout):
        return InvertedResidual(layer), (layer.in_channels, size, size)
    return Head(layer, num_classes, 0.0), (layer.in_channels, size, size)


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
        or not all(finite_numbers(values) and min(values, default=1) > 0 for values in samples.values())
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
