"""P1: the cost of elasticity, supernet-with-an-arch-active time / extracted-static-model time.

Once-for-all (Cai et al., ICLR 2020) runs every subnet inside one weight-sharing supernet by slicing;
this measures what the slicing costs against the plain :class:`~ofa.static.StaticNet` of the same arch:
same input, same run, interleaved repeats, median (thread CPU time with one torch thread; the wall-clock
ratio is printed beside it). Eval-mode forward under ``torch.no_grad`` on the
tiny space (batch 64 at the arch's resolution) and on AttentiveNAS (resolution 192, batch 8), and a
train-mode forward + backward on the tiny space. Goal: ratio <= 1.10.

Run: ``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=268435456 python -m benchmarks.bench_elastic``.
Without the two glibc settings, large activation buffers are handed back to the system after every call
and the page faults of fetching them again add up to +-20% to either model's time (and about 1.7x to
both on the tiny max arch); the ops the two models run are the same either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import interleaved_times, median, print_table, time_call
from ofa.space import Arch, SearchSpace, load_arch, load_space
from ofa.static import StaticNet
from ofa.supernet import Supernet

__all__ = ["elastic_cases", "main", "measure_case"]

ARCHS_DIR = Path(__file__).resolve().parent.parent / "configs" / "archs"


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters (as after training)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


def _step(model: nn.Module, inputs: torch.Tensor, train: bool) -> Callable[[], object]:
    if not train:

        def forward() -> object:
            with torch.no_grad():
                return model(inputs)

        return forward

    def forward_backward() -> object:
        model.zero_grad(set_to_none=True)
        # the supernet as the trainer's steps run it (gradients written straight into the weights' slices)
        with model.direct_gradients() if isinstance(model, Supernet) else contextlib.nullcontext():
            loss = model(inputs).square().mean()
            loss.backward()
        return loss

    return forward_backward


def measure_case(
    supernet: Supernet, arch: Arch, batch: int, train: bool, budget_seconds: float, seed: int = 0
) -> dict[str, float]:
    """Supernet (``arch`` active) against its extracted static model: median ms per call and ratios.

    Each call is timed by the calling thread's CPU time (the primary numbers; with one torch thread that
    is all the work) and by the wall clock (``wall_ratio``); the number of interleaved repeats fills about
    ``budget_seconds`` (between 15 and 1000).
    """
    supernet.set_active(arch)
    supernet.train(train)
    static: StaticNet = supernet.extract(arch)
    static.train(train)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, supernet.space.input_channels, arch.resolution, arch.resolution, generator=generator)
    if not train:
        with torch.no_grad():
            difference = (supernet(inputs) - static(inputs)).abs().max().item()
        if difference > 1e-4:
            raise RuntimeError(f"supernet and extracted model disagree by {difference:.3g} on {arch.short()}")
    candidates = {"supernet": _step(supernet, inputs, train), "static": _step(static, inputs, train)}
    estimate = time_call(candidates["supernet"]) + time_call(candidates["static"])
    repeats = int(min(1000, max(15, budget_seconds / max(estimate, 1e-6))))
    times = interleaved_times(candidates, repeats, clocks=(time.thread_time, time.perf_counter))
    cpu = {name: median(per_clock[0]) for name, per_clock in times.items()}
    wall = {name: median(per_clock[1]) for name, per_clock in times.items()}
    return {
        "supernet_ms": cpu["supernet"] * 1e3,
        "static_ms": cpu["static"] * 1e3,
        "overhead_ms": (cpu["supernet"] - cpu["static"]) * 1e3,
        "ratio": cpu["supernet"] / cpu["static"],
        "wall_ratio": wall["supernet"] / wall["static"],
        "repeats": float(repeats),
    }


def elastic_cases(seed: int = 0) -> list[tuple[str, SearchSpace, Arch, int, bool]]:
    """(name, space, arch, batch, train) of every measured case."""
    rng = random.Random(seed)
    tiny = load_space("tiny")
    attentive = load_space("attentivenas")
    tiny_random = tiny.sample(rng)
    attentive_random = dataclasses.replace(attentive.sample(rng), resolution=192)
    a0 = load_arch(ARCHS_DIR / "attentivenas_a0.yaml", attentive)  # the space's min arch, at 192 px
    cases = []
    for train in (False, True):
        mode = "train" if train else "eval"
        cases += [
            (f"tiny max {mode}", tiny, tiny.max_arch(), 64, train),
            (f"tiny min {mode}", tiny, tiny.min_arch(), 64, train),
            (f"tiny random {mode}", tiny, tiny_random, 64, train),
        ]
    cases += [
        ("attentivenas A0 (min) eval", attentive, a0, 8, False),
        ("attentivenas random eval", attentive, attentive_random, 8, False),
    ]
    return cases


def main(budget_seconds: float = 4.0, seed: int = 0) -> dict[str, float]:
    """Measure every case with one torch thread, print a table, return ``{"<case> <field>": value}``."""
    torch.manual_seed(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    supernets: dict[str, Supernet] = {}
    results: dict[str, float] = {}
    rows = []
    try:
        for name, space, arch, batch, train in elastic_cases(seed):
            if space.name not in supernets:
                supernets[space.name] = Supernet(space, num_classes=10 if space.name == "tiny" else 1000)
                _randomise_bn(supernets[space.name], seed)
            measured = measure_case(supernets[space.name], arch, batch, train, budget_seconds, seed)
            results.update({f"{name} {key}": value for key, value in measured.items()})
            fields = ("supernet_ms", "static_ms", "overhead_ms", "ratio", "wall_ratio")
            rows.append((name, arch.resolution, batch, int(measured["repeats"]), *(measured[f] for f in fields)))
    finally:
        torch.set_num_threads(previous_threads)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        print("note: MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ unset: allocator page faults add noise")
    print(
        f"P1 elastic overhead (torch {torch.__version__}, 1 thread; ms = median thread CPU time per call over "
        "interleaved repeats; wall ratio = the same by wall clock)"
    )
    headers = ("case", "res", "batch", "repeats", "supernet ms", "static ms", "overhead ms", "ratio", "wall ratio")
    print_table(headers, rows)
    return results


if __name__ == "__main__":
    main()
