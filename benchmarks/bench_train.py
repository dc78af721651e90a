"""P3 and P4: what a training step costs beyond the plain work of its subnets.

P3, the sandwich efficiency (BigNAS, Yu et al., ECCV 2020): one supernet sandwich step over four fixed
subnets (max, two sampled, min; in-place distillation; gradient clipping and the SGD step included) against
the summed forward + backward time of the same four subnets as extracted static models
(:meth:`~ofa.supernet.Supernet.extract`), same batch. Goal: ratio <= 1.15. The step is also split into
its supernet forward + backward and its clip + optimizer step, to show where the rest goes.

P4, the attentive overhead (AttentiveNAS, Wang et al., CVPR 2021): a whole training step (choose the two
middle subnets, then the sandwich step) with BestUp-3 scored by the minibatch loss, and with BestUp-3
scored by a fitted LightGBM predictor, each against the same step with uniformly sampled subnets. Goal:
predictor ratio <= 1.05 (the loss scorer runs six extra no-grad forwards and has no goal). Each sampler
trains other subnets, whose sizes differ from step to step, so the step ratio carries that noise too; the
choosing alone is therefore also timed, and ``uniform step + extra choosing time`` gives a steadier ratio.

Tiny space, batch 64 at 32 px, 10 classes, one torch thread; every candidate timed in interleaved rounds in
one run, median of the calling thread's CPU time (the wall-clock ratio is printed beside it).

Run: ``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=268435456 python -m benchmarks.bench_train``
(see ``bench_elastic`` for why the allocator settings steady the numbers).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import interleaved_times, median, print_table
from ofa.bn import resize_to
from ofa.distributed import DistributedContext
from ofa.flops import count_macs, count_macs_many
from ofa.sampling import AttentiveSampler, FlopsTargetSampler, UniformSampler, build_flops_table
from ofa.space import Arch, SearchSpace, load_space
from ofa.static import StaticNet
from ofa.supernet import Supernet
from ofa.train import StepSettings, build_optimizer, loss_scorer, sandwich_step, soft_cross_entropy
from ofa.train_config import OptimSection
from predictors.models import create_predictor

__all__ = ["main", "measure_attentive_overhead", "measure_sandwich_efficiency", "summary_rows"]

NUM_CLASSES = 10
BATCH = 64
SINGLE = DistributedContext(rank=0, world_size=1, device=torch.device("cpu"))
SETTINGS = StepSettings(label_smoothing=0.1, dropout=0.0, grad_clip_value=1.0, bf16=False)
CLOCKS = (time.thread_time, time.perf_counter)


def _batch(space: SearchSpace, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = max(space.resolution)
    images = torch.randn(BATCH, space.input_channels, size, size, generator=generator)
    return images, torch.randint(0, NUM_CLASSES, (BATCH,), generator=generator)


def _medians(times: dict[str, list[list[float]]]) -> dict[str, tuple[float, float]]:
    """name -> (median thread CPU seconds, median wall seconds)."""
    return {name: (median(per_clock[0]), median(per_clock[1])) for name, per_clock in times.items()}


def _static_forward_backward(
    models: Sequence[StaticNet], archs: Sequence[Arch], images: torch.Tensor, labels: torch.Tensor
) -> Callable[[], object]:
    """The four static models' forward + backward with the sandwich's losses (labels, then distillation)."""

    def run() -> None:
        teacher = None
        for model, arch in zip(models, archs):
            model.zero_grad(set_to_none=True)
            logits = model(resize_to(images, arch.resolution))
            if teacher is None:
                loss = F.cross_entropy(logits, labels, label_smoothing=SETTINGS.label_smoothing)
                teacher = F.softmax(logits.detach(), dim=1)
            else:
                loss = soft_cross_entropy(logits, teacher)
            loss.backward()

    return run


def _supernet_forward_backward(
    supernet: Supernet, archs: Sequence[Arch], images: torch.Tensor, labels: torch.Tensor
) -> Callable[[], object]:
    """The sandwich step's forward + backward part alone (no clipping, no optimizer step)."""

    def run() -> None:
        supernet.zero_grad(set_to_none=True)
        teacher = None
        for arch in archs:
            supernet.set_active(arch)
            logits = supernet(resize_to(images, arch.resolution))
            if teacher is None:
                loss = F.cross_entropy(logits, labels, label_smoothing=SETTINGS.label_smoothing)
                teacher = F.softmax(logits.detach(), dim=1)
            else:
                loss = soft_cross_entropy(logits, teacher)
            loss.backward()

    return run


def measure_sandwich_efficiency(repeats: int, seed: int = 0) -> dict[str, float]:
    """P3: sandwich step / summed static forward + backward of the same four subnets, and the split."""
    space = load_space("tiny")
    torch.manual_seed(seed)
    supernet = Supernet(space, NUM_CLASSES)
    rng = random.Random(seed)
    archs = [space.max_arch(), space.sample(rng), space.sample(rng), space.min_arch()]
    models = [supernet.extract(arch).train() for arch in archs]
    images, labels = _batch(space, seed)
    optimizer = build_optimizer(supernet, OptimSection(lr=1e-4))  # tiny steps: the weights stay typical

    def clip_and_step() -> None:
        nn.utils.clip_grad_value_(supernet.parameters(), SETTINGS.grad_clip_value)
        optimizer.step()

    candidates = {
        "sandwich step": lambda: sandwich_step(supernet, images, labels, archs, optimizer, SETTINGS, SINGLE),
        "static fwd+bwd": _static_forward_backward(models, archs, images, labels),
        "supernet fwd+bwd": _supernet_forward_backward(supernet, archs, images, labels),
        "clip + SGD step": clip_and_step,
    }
    medians = _medians(interleaved_times(candidates, repeats, warmup=2, clocks=CLOCKS))
    step, static = medians["sandwich step"], medians["static fwd+bwd"]
    forward_backward, update = medians["supernet fwd+bwd"], medians["clip + SGD step"]
    return {
        "p3_sandwich_ms": step[0] * 1e3,
        "p3_static_ms": static[0] * 1e3,
        "p3_ratio": step[0] / static[0],
        "p3_wall_ratio": step[1] / static[1],
        "p3_supernet_fwd_bwd_ms": forward_backward[0] * 1e3,
        "p3_fwd_bwd_ratio": forward_backward[0] / static[0],
        "p3_update_ms": update[0] * 1e3,
        "p3_mmacs": sum(count_macs(space, arch, NUM_CLASSES) for arch in archs) / 1e6,
        "p3_repeats": float(repeats),
    }


def _fitted_predictor(space: SearchSpace, seed: int) -> Callable[[Sequence[Arch]], np.ndarray]:
    """LightGBM (the default predictor) fitted on 64 archs with a MACs-like synthetic accuracy."""
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(64)]
    noise = np.random.default_rng(seed).normal(0.0, 0.02, len(archs))
    targets = np.log(count_macs_many(space, archs, NUM_CLASSES)) + noise
    return create_predictor("lightgbm", space, seed=seed, num_classes=NUM_CLASSES).fit(archs, targets).predict


def measure_attentive_overhead(repeats: int, seed: int = 0) -> dict[str, float]:
    """P4: BestUp-3 step (loss scorer; predictor scorer) / uniform step, and the choosing alone."""
    space = load_space("tiny")
    torch.manual_seed(seed)
    supernet = Supernet(space, NUM_CLASSES)
    images, labels = _batch(space, seed)
    optimizer = build_optimizer(supernet, OptimSection(lr=1e-4))
    uniform = UniformSampler(space)
    flops = FlopsTargetSampler(space, build_flops_table(space, NUM_CLASSES, seed=seed), NUM_CLASSES)
    attentive = AttentiveSampler(flops, 3, "best")
    predict = _fitted_predictor(space, seed)
    max_arch, min_arch = space.max_arch(), space.min_arch()
    rngs = {name: random.Random(seed) for name in ("uniform", "bestup loss", "bestup predictor")}
    trained_mmacs: dict[str, list[float]] = {name: [] for name in rngs}

    def choose(name: str) -> list[Arch]:
        rng = rngs[name]
        if name == "uniform":
            return [uniform.sample(rng) for _ in range(2)]
        scorer = loss_scorer(supernet, images, labels, SETTINGS.label_smoothing, SINGLE) if "loss" in name else predict
        return [attentive.sample(rng, scorer) for _ in range(2)]

    def step(name: str) -> Callable[[], object]:
        def run() -> None:
            sampled = choose(name)
            trained_mmacs[name].append(float(count_macs_many(space, sampled, NUM_CLASSES).sum()) / 1e6)
            sandwich_step(supernet, images, labels, [max_arch, *sampled, min_arch], optimizer, SETTINGS, SINGLE)

        return run

    steps = _medians(interleaved_times({name: step(name) for name in rngs}, repeats, warmup=2, clocks=CLOCKS))
    choosing = _medians(
        interleaved_times({name: lambda name=name: choose(name) for name in rngs}, repeats, clocks=CLOCKS)
    )
    base = steps["uniform"]
    results = {"p4_repeats": float(repeats)}
    for name, key in (("uniform", "uniform"), ("bestup loss", "loss"), ("bestup predictor", "predictor")):
        results[f"p4_{key}_step_ms"] = steps[name][0] * 1e3
        results[f"p4_{key}_choose_ms"] = choosing[name][0] * 1e3
        results[f"p4_{key}_mean_sampled_mmacs"] = float(np.mean(trained_mmacs[name]))
        if key != "uniform":
            results[f"p4_{key}_ratio"] = steps[name][0] / base[0]
            results[f"p4_{key}_wall_ratio"] = steps[name][1] / base[1]
            results[f"p4_{key}_choose_ratio"] = (base[0] + choosing[name][0] - choosing["uniform"][0]) / base[0]
    return results


def summary_rows(results: dict[str, float]) -> list[tuple[str, str, float, str, bool]]:
    """(id, what, value, goal, met) of P3 and P4 for the suite's summary table."""
    sandwich, predictor = results["p3_ratio"], results["p4_predictor_ratio"]
    choose = results["p4_predictor_choose_ratio"]  # steadier: free of the trained archs' size differences
    return [
        ("P3", "sandwich step / static fwd+bwd of the same 4 subnets", sandwich, "<= 1.15", sandwich <= 1.15),
        ("P4", "BestUp-3 step, predictor scorer / uniform step", predictor, "<= 1.05", predictor <= 1.05),
        ("P4", "  same, uniform step + choosing time / uniform step", choose, "<= 1.05", choose <= 1.05),
        ("P4", "BestUp-3 step, loss scorer / uniform step", results["p4_loss_ratio"], "(no goal)", True),
    ]


def main(quick: bool = False, seed: int = 0) -> dict[str, float]:
    """Measure P3 and P4 with one torch thread, print two tables, return the numbers."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = measure_sandwich_efficiency(8 if quick else 25, seed)
        results.update(measure_attentive_overhead(8 if quick else 30, seed))
    finally:
        torch.set_num_threads(previous_threads)
    print(
        f"P3 sandwich efficiency (tiny, batch {BATCH}, 4 subnets of {results['p3_mmacs']:.2f} MMACs in all; "
        f"ms = median thread CPU time over {int(results['p3_repeats'])} interleaved repeats, torch {torch.__version__})"
    )
    print_table(
        ("measure", "ms", "ratio to static"),
        [
            ("static models fwd+bwd (4 subnets)", results["p3_static_ms"], 1.0),
            ("sandwich step", results["p3_sandwich_ms"], results["p3_ratio"]),
            ("  of which supernet fwd+bwd", results["p3_supernet_fwd_bwd_ms"], results["p3_fwd_bwd_ratio"]),
            ("  of which clip + SGD step", results["p3_update_ms"], results["p3_update_ms"] / results["p3_static_ms"]),
        ],
    )
    print(f"wall-clock ratio sandwich / static: {results['p3_wall_ratio']:.3f}")
    print(
        f"\nP4 attentive overhead (BestUp-3, 2 sampled subnets per step; median of {int(results['p4_repeats'])} "
        "interleaved steps; choose = picking the 2 subnets alone)"
    )
    rows = []
    for name, key in (("uniform", "uniform"), ("BestUp-3, loss", "loss"), ("BestUp-3, predictor", "predictor")):
        ratio = results.get(f"p4_{key}_ratio", 1.0)
        wall = results.get(f"p4_{key}_wall_ratio", 1.0)
        rows.append(
            (
                name,
                results[f"p4_{key}_step_ms"],
                results[f"p4_{key}_choose_ms"],
                ratio,
                wall,
                results.get(f"p4_{key}_choose_ratio", 1.0),
                results[f"p4_{key}_mean_sampled_mmacs"],
            )
        )
    print_table(
        ("sampler", "step ms", "choose ms", "step ratio", "wall ratio", "uniform + choose ratio", "sampled MMACs"),
        rows,
    )
    return results


if __name__ == "__main__":
    main()
