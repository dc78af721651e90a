"""P2: speed of the analytic MAC counter against fvcore on the same archs.

The analytic counter (``ofa.flops``) follows the once-for-all / AttentiveNAS convention (MACs of conv and
linear layers at batch 1). Measured in one run on seeded random archs: archs per second of
``count_macs`` (one arch per call, in a loop), of ``count_macs_many`` (one call for many archs, the same
tabulated plan) and of fvcore's ``FlopCountAnalysis`` of the static model at batch 1, with and without building
the static model (``StaticNet(network_layout(...))``) first. Goals: single >= 10,000x fvcore;
many >= 100,000 archs/s.

Run: ``python -m benchmarks.bench_counter``.
"""

from __future__ import annotations

import random
import time

import torch
from fvcore.nn import FlopCountAnalysis

from benchmarks.common import interleaved_times, median, print_table, time_call
from ofa.flops import count_macs, count_macs_many
from ofa.layout import network_layout
from ofa.space import Arch, SearchSpace, load_space
from ofa.static import StaticNet

__all__ = ["fvcore_macs", "main", "measure_space"]

NUM_CLASSES = 1000


def fvcore_macs(model: torch.nn.Module, resolution: int, channels: int) -> int:
    """fvcore's conv + linear count (one per MAC) of ``model`` at batch 1."""
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, channels, resolution, resolution))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_operator = analysis.by_operator()
    return by_operator.get("conv", 0) + by_operator.get("linear", 0)


def _build(space: SearchSpace, arch: Arch) -> StaticNet:
    return StaticNet(network_layout(space, arch, NUM_CLASSES))


def measure_space(
    space: SearchSpace, single_archs: int, many_archs: int, fvcore_archs: int, repeats: int, seed: int = 0
) -> dict[str, float]:
    """Archs per second of every counter on seeded random archs of ``space``, and the ratios."""
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(max(single_archs, fvcore_archs))]
    many = [space.sample(rng) for _ in range(many_archs)]
    fvcore_set = archs[:fvcore_archs]
    models = [_build(space, arch) for arch in fvcore_set]
    channels = space.input_channels

    # the first count of a space also prepares its per-space tables: a one-off cost, reported apart
    first_call_seconds = time_call(lambda: count_macs(space, archs[0], NUM_CLASSES), time.thread_time)

    # exactness first: the counters agree with each other and with fvcore
    expected = [count_macs(space, arch, NUM_CLASSES) for arch in fvcore_set]
    if list(count_macs_many(space, fvcore_set, NUM_CLASSES)) != expected:
        raise RuntimeError(f"count_macs_many disagrees with count_macs on space {space.name}")
    counted = [fvcore_macs(model, arch.resolution, channels) for model, arch in zip(models, fvcore_set)]
    if counted != expected:
        raise RuntimeError(f"fvcore disagrees with count_macs on space {space.name}")

    def single() -> None:
        for arch in archs[:single_archs]:
            count_macs(space, arch, NUM_CLASSES)

    def fvcore_with_build() -> None:
        for arch in fvcore_set:
            fvcore_macs(_build(space, arch), arch.resolution, channels)

    def fvcore_only() -> None:
        for model, arch in zip(models, fvcore_set):
            fvcore_macs(model, arch.resolution, channels)

    clocks = (time.thread_time,)  # CPU time of this thread: the counters and fvcore run on it alone
    single_seconds = median(interleaved_times({"single": single}, repeats, clocks=clocks)["single"][0])
    many_times = interleaved_times(
        {"many": lambda: count_macs_many(space, many, NUM_CLASSES)}, repeats, warmup=1, clocks=clocks
    )
    many_seconds = median(many_times["many"][0])
    fvcore_times = interleaved_times({"build": fvcore_with_build, "only": fvcore_only}, 1, warmup=1, clocks=clocks)
    medians = {
        "single": single_seconds,
        "fvcore_build": fvcore_times["build"][0][0],
        "fvcore": fvcore_times["only"][0][0],
    }
    rates = {
        "single_archs_per_s": single_archs / medians["single"],
        "many_archs_per_s": many_archs / many_seconds,
        "fvcore_build_archs_per_s": fvcore_archs / medians["fvcore_build"],
        "fvcore_archs_per_s": fvcore_archs / medians["fvcore"],
    }
    rates["single_vs_fvcore_build"] = rates["single_archs_per_s"] / rates["fvcore_build_archs_per_s"]
    rates["single_vs_fvcore"] = rates["single_archs_per_s"] / rates["fvcore_archs_per_s"]
    rates["many_vs_fvcore_build"] = rates["many_archs_per_s"] / rates["fvcore_build_archs_per_s"]
    rates["many_vs_single"] = rates["many_archs_per_s"] / rates["single_archs_per_s"]
    rates["first_call_ms"] = first_call_seconds * 1e3
    return rates


def main(
    single_archs: int = 2000, many_archs: int = 100_000, fvcore_archs: int = 10, repeats: int = 5, seed: int = 0
) -> dict[str, float]:
    """Measure the tiny and AttentiveNAS spaces, print a table, return ``{"<space> <field>": value}``."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results: dict[str, float] = {}
    rows = []
    try:
        for name in ("tiny", "attentivenas"):
            rates = measure_space(load_space(name), single_archs, many_archs, fvcore_archs, repeats, seed)
            results.update({f"{name} {key}": value for key, value in rates.items()})
            rows.append(
                (
                    name,
                    rates["single_archs_per_s"],
                    rates["many_archs_per_s"],
                    rates["fvcore_build_archs_per_s"],
                    rates["fvcore_archs_per_s"],
                    rates["single_vs_fvcore_build"],
                    rates["single_vs_fvcore"],
                    rates["many_vs_fvcore_build"],
                    rates["first_call_ms"],
                )
            )
    finally:
        torch.set_num_threads(previous_threads)
    print(
        f"P2 counter speed in archs per second of thread CPU time (count_macs: {single_archs} archs in a loop, "
        f"median of {repeats}; count_macs_many: {many_archs} archs in one call, median of {repeats}; "
        f"fvcore: {fvcore_archs} archs at batch 1, 1 torch thread)"
    )
    print_table(
        (
            "space",
            "count_macs",
            "count_macs_many",
            "fvcore+build",
            "fvcore",
            "single/fvcore+build",
            "single/fvcore",
            "many/fvcore+build",
            "first call ms",
        ),
        rows,
    )
    return results


if __name__ == "__main__":
    main()
