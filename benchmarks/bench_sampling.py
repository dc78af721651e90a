"""Training-recipe benchmark on real images: uniform vs BestUp-3 (loss) vs BestUp-3 (predictor, guided) vs
WorstUp-3, BestUp-3 (loss) distilled with AlphaNet's alpha-divergence instead of KL, and once-for-all's
progressive shrinking.

AttentiveNAS (Wang et al., CVPR 2021) claims that training the best (or worst) of k candidates at a sampled
FLOPs target improves the supernet's accuracy-vs-MACs front over uniform sampling. This trains one supernet
per (variant, seed) from the real-data recipe (``configs/train/cifar10.yaml``, scaled down to fit the
machine: see ``SCALE``), every variant at the same compute (subnet forward-backward passes: the sandwich
variants take the same steps; progressive shrinking, with 1 to 4 subnets per step, the epochs whose passes
come closest, see ``ofa.compare.at_equal_compute``), measures the SAME archs (spread over
the FLOPs range, drawn once) inside every supernet with BN recalibrated, and reports per variant, as mean ±
std over seeds: the hypervolume of the measured (MMACs, val accuracy) front, the best val accuracy within 4
budgets (and that arch's test accuracy), the largest and smallest subnet's accuracy, and the training wall
time (guide refits included) with its ratio to uniform.

Every (variant, seed) run is a resumable run folder under ``OUT``; several processes may work on one
``OUT`` at once (each claims a run with an exclusive claim file), so ``--jobs 2`` or a second invocation
uses a second core. A second part measures how alike the k candidates of one FLOPs target are: the mean
MMAC spread (max - min) of k = 3 candidates with 25 equal-count bins (before) and the bin width (after).

    python -m benchmarks.bench_sampling --data data/cifar10-dev [--out runs/bench_sampling] [--jobs 2]

The data is the CIFAR-10 development set (``tar -xzf cifar10-dev.tar.gz -C data``); ``make bench
DEV_DATA=data/cifar10-dev`` runs this section too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from ofa.compare import VARIANTS as COMPARE_VARIANTS

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "train" / "cifar10.yaml"
VARIANTS: dict[str, tuple[str, ...]] = {  # `ofa compare`'s variants, WorstUp-3 beside them
    "uniform": COMPARE_VARIANTS["uniform"],
    "bestup_loss": COMPARE_VARIANTS["bestup_loss"],
    "bestup_predictor": (
        *COMPARE_VARIANTS["bestup_predictor"],
        "guide.calibration_batches=5",  # 1,000 calibration images and 1,000 val images per guide measurement
        "guide.val_images=1000",
    ),
    "worstup_loss": ("sampler.name=worstup", "sampler.scorer=loss", "guide.enabled=false"),
    "bestup_alpha": COMPARE_VARIANTS["bestup_alpha"],  # AlphaNet's adaptive alpha-divergence instead of KL
    "progressive": COMPARE_VARIANTS["progressive"],  # once-for-all's progressive shrinking, equal passes
}
# The recipe scaled to ~8 minutes of one core per run: 6 epochs of 60 steps (23,040 images, about 2.3 passes
# over the 10,000 training images); the guide fits after 2 epochs and refits every 2 on 20 fresh archs, each
# measured on half the calibration and val images (measuring at the run's full precision cost 36 % extra).
SCALE = (
    "epochs=6",
    "max_steps_per_epoch=60",
    "guide.warmup_epochs=2",
    "guide.refit_every=2",
    "guide.num_archs=20",
)
NUM_ARCHS = 30  # archs measured in every supernet (the same ones)
ARCH_SEED = 0  # draws them, whatever the training seed
CHANCE = 0.1  # the hypervolume's accuracy reference point: chance on 10 classes


@dataclass(frozen=True)
class Task:
    """One supernet to train and measure."""

    variant: str
    seed: int

    @property
    def name(self) -> str:
        """The run folder's name."""
        return f"{self.variant}-s{self.seed}"


def task_overrides(task: Task, data: Path, out: Path) -> tuple[str, ...]:
    """The recipe's overrides for one task."""
    return (
        *SCALE,
        *VARIANTS[task.variant],
        f"seed={task.seed}",
        f"name={task.name}",
        f"out_dir={out}",
        f"data.root={data}",
    )


def _claim(path: Path) -> bool:
    """Create ``path`` exclusively (holding this pid); a claim of a dead process is taken over."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            holder = int(path.read_text().strip() or 0)
            os.kill(holder, 0)
            return False
        except (ValueError, ProcessLookupError):
            path.unlink(missing_ok=True)
            return _claim(path)
        except PermissionError:
            return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def run_task(task: Task, data: Path, out: Path) -> Path | None:
    """Train (or resume) and measure one task unless another process holds it; returns its result file."""
    from ofa.archdata import measure_to_csv, spread_archs
    from ofa.compare import at_equal_compute, subnet_passes
    from ofa.pipeline import train_or_continue
    from ofa.runs import load_run
    from ofa.train_config import load_train_config

    result_path = out / task.name / "result.json"
    if result_path.is_file():
        return result_path
    (out / task.name).mkdir(parents=True, exist_ok=True)
    claim = out / task.name / ".claim"
    if not _claim(claim):
        return None
    try:
        config = at_equal_compute(load_train_config(RECIPE, task_overrides(task, data, out)))
        train_or_continue(config, progress=False, prefix=f"[{task.name}] ")
        run = load_run(config.run_dir, "latest")
        archs = spread_archs(run.space, NUM_ARCHS, run.num_classes, ARCH_SEED)
        started = time.perf_counter()
        records = measure_to_csv(
            config.run_dir / "bench_archs.csv",
            run.supernet,
            archs,
            run.calibration_images,
            run.val_loader,
            run.test_loader,
            config.calibration.seed,
        )
        by_arch = {record.arch: record for record in records}
        rows = [by_arch[arch] for arch in archs]
        result = {
            "variant": task.variant,
            "seed": task.seed,
            "train_seconds": _train_seconds(config.run_dir),
            "subnet_passes": subnet_passes(config, config.max_steps_per_epoch),
            "measure_seconds": time.perf_counter() - started,
            "mmacs": [row.mmacs for row in rows],
            "val_acc": [row.val_acc for row in rows],
            "test_acc": [row.test_acc for row in rows],
            "val_loss": [row.val_loss for row in rows],
        }
        from ofa.atomic import atomic_write_text

        atomic_write_text(result_path, json.dumps(result))
        print(f"[{task.name}] done: train {result['train_seconds']:.0f} s", flush=True)
        return result_path
    finally:
        claim.unlink(missing_ok=True)


def _epoch_seconds(run_dir: Path) -> list[float]:
    """Wall seconds of each epoch of a run (guide refits and the epoch's evaluation included)."""
    import csv

    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [float(row["epoch_seconds"]) for row in csv.DictReader(handle)]


def _train_seconds(run_dir: Path) -> float:
    """Training wall time of a run: the sum of its epochs' seconds."""
    return float(sum(_epoch_seconds(run_dir)))


def guide_overhead(epoch_seconds: Sequence[float], refit_epochs: Sequence[int]) -> float:
    """Extra wall time of the guide's refits over the rest of one run, a ratio measured inside that run.

    A refit epoch's excess over the median of the run's other epochs is the refit's cost; measured in one
    run, it is not confounded by other processes slowing whole runs (wall-time ratios between runs are).
    """
    refits = set(refit_epochs)
    others = [seconds for epoch, seconds in enumerate(epoch_seconds) if epoch not in refits]
    typical = float(np.median(others))
    excess = sum(max(0.0, epoch_seconds[epoch] - typical) for epoch in refits if epoch < len(epoch_seconds))
    return excess / float(sum(epoch_seconds) - excess)


# ---------------------------------------------------------------------------------------------------
# summary


def _best_within(mmacs: np.ndarray, val: np.ndarray, test: np.ndarray, budget: float) -> tuple[float, float]:
    inside = np.flatnonzero(mmacs <= budget + 1e-9)
    best = inside[int(np.argmax(val[inside]))]
    return float(val[best]), float(test[best])


def summarise(results: Sequence[dict], budgets: Sequence[float]) -> dict[str, dict[str, list[float]]]:
    """Per variant, per measure, the values over seeds (accuracies in %)."""
    from ofa.pareto import hypervolume

    low = min(min(result["mmacs"]) for result in results)
    high = max(max(result["mmacs"]) for result in results)
    area = (high - low) * (1 - CHANCE)
    table: dict[str, dict[str, list[float]]] = {}
    uniform_seconds = {r["seed"]: r["train_seconds"] for r in results if r["variant"] == "uniform"}
    for result in results:
        mmacs, val, test = (np.array(result[key], dtype=np.float64) for key in ("mmacs", "val_acc", "test_acc"))
        measures = table.setdefault(result["variant"], {})

        def add(key: str, value: float, measures: dict = measures) -> None:
            measures.setdefault(key, []).append(value)

        add("hypervolume", hypervolume(mmacs, val, high, CHANCE) / area)
        for budget in budgets:
            val_at, test_at = _best_within(mmacs, val, test, budget)
            add(f"val @{budget:g}M", 100 * val_at)
            add(f"test @{budget:g}M", 100 * test_at)
        add("largest val", 100 * float(val[int(np.argmax(mmacs))]))
        add("smallest val", 100 * float(val[int(np.argmin(mmacs))]))
        add("mean val", 100 * float(val.mean()))
        if "subnet_passes" in result:
            add("subnet passes", result["subnet_passes"])
        add("train s", result["train_seconds"])
        if result["seed"] in uniform_seconds:
            add("time / uniform", result["train_seconds"] / uniform_seconds[result["seed"]])
        if result.get("guide_overhead") is not None:
            add("guide overhead", result["guide_overhead"])
    return table


def format_summary(table: dict[str, dict[str, list[float]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``mean ± std (n)`` cells, one row per variant."""
    variants = [name for name in VARIANTS if name in table]
    measures = list(dict.fromkeys(measure for name in variants for measure in table[name]))
    rows = []
    for name in variants:
        cells = [name]
        for measure in measures:
            values = np.array(table[name].get(measure, []), dtype=np.float64)
            if values.size == 0:
                cells.append("")
                continue
            digits = 3 if measure in ("hypervolume", "time / uniform", "guide overhead") else 1
            digits = 0 if measure == "subnet passes" else digits
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.{digits}f} ± {std:.{digits}f}")
        rows.append(cells)
    return ["variant (mean ± std over seeds)", *measures], rows


# ---------------------------------------------------------------------------------------------------
# candidate spread


def candidate_spread(space_name: str, num_classes: int, draws: int = 300, k: int = 3) -> dict[str, float]:
    """Mean MMAC spread (max - min) of k candidates at one target: 25 equal-count bins vs the bin width."""
    from ofa.flops import count_macs, count_macs_many
    from ofa.sampling import (
        AttentiveSampler,
        FlopsTable,
        FlopsTargetSampler,
        build_flops_table,
        default_flops_bin_mmacs,
        space_fingerprint,
    )
    from ofa.space import load_space

    space = load_space(space_name)
    rng = random.Random(0)
    mmacs = count_macs_many(space, [space.sample(rng) for _ in range(20000)], num_classes) / 1e6
    low = count_macs(space, space.min_arch(), num_classes) / 1e6
    high = count_macs(space, space.max_arch(), num_classes) / 1e6
    counts, edges = np.histogram(mmacs, bins=25, range=(low, high))
    before = FlopsTable(space_fingerprint(space), num_classes, 20000, 0, tuple(edges), tuple(map(int, counts)))
    after = build_flops_table(space, num_classes)
    spreads = {}
    for label, table in (("before", before), ("after", after)):
        sampler = AttentiveSampler(FlopsTargetSampler(space, table, num_classes), k, "best")
        draw_rng = random.Random(1)
        values = []
        for _ in range(draws):
            candidates = sampler.candidates(draw_rng)
            costs = [count_macs(space, arch, num_classes) / 1e6 for arch in candidates]
            values.append(max(costs) - min(costs))
        spreads[label] = float(np.mean(values))
        spreads[f"{label} bin"] = float(table.edges[1] - table.edges[0])
    spreads["bins after"] = len(after.counts)
    spreads["width"] = default_flops_bin_mmacs(space, num_classes)
    return spreads


def print_candidate_spread() -> dict[str, float]:
    """The spread table for the paper space, the tiny space and the cifar space."""
    rows, results = [], {}
    for space_name, num_classes in (("attentivenas", 1000), ("tiny", 10), ("cifar", 10)):
        spread = candidate_spread(space_name, num_classes, draws=150 if space_name == "attentivenas" else 300)
        rows.append(
            (
                space_name,
                spread["before bin"],
                spread["before"],
                spread["after bin"],
                int(spread["bins after"]),
                spread["after"],
            )
        )
        results.update({f"spread {space_name} {key}": value for key, value in spread.items()})
    print("\nMean MMAC spread (max - min) of the k = 3 candidates of one FLOPs target")
    print_table(("space", "25 bins: width", "spread", "width now", "bins", "spread now"), rows)
    return results


# ---------------------------------------------------------------------------------------------------
# main


def _refit_epochs() -> list[int]:
    """The epochs (0-based) whose start refits the guide under ``SCALE``."""
    settings = dict(item.split("=") for item in SCALE)
    warmup, every, epochs = (int(settings[key]) for key in ("guide.warmup_epochs", "guide.refit_every", "epochs"))
    return list(range(warmup, epochs, every)) if every else [warmup]


def _budgets() -> list[float]:
    from ofa.pipeline import default_budgets
    from ofa.space import load_space

    return default_budgets(load_space("cifar"), 10, 4)


def main(
    data: str | Path,
    out: str | Path = "runs/bench_sampling",
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[str] = tuple(VARIANTS),
    jobs: int = 1,
) -> dict[str, float]:
    """Run every (variant, seed) not yet done (``jobs`` processes), then print and write the summary."""
    data, out = Path(data).resolve(), Path(out)
    if not (data / "train").is_dir():
        raise ValueError(f"--data {data}: expected the CIFAR-10 development set there (train/, val/, test/)")
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    out.mkdir(parents=True, exist_ok=True)
    tasks = [Task(variant, seed) for seed in seeds for variant in variants]
    started = time.perf_counter()
    helpers = [_spawn_helper(data, out, seeds, variants) for _ in range(max(0, jobs - 1))]
    for task in tasks:
        run_task(task, data, out)
    for helper in helpers:
        helper.wait()
    missing = [task.name for task in tasks if not (out / task.name / "result.json").is_file()]
    if missing:
        raise RuntimeError(f"runs not finished (another process may still hold them): {', '.join(missing)}")
    results = [json.loads((out / task.name / "result.json").read_text()) for task in tasks]
    for result, task in zip(results, tasks):
        if task.variant == "bestup_predictor":
            result["guide_overhead"] = guide_overhead(_epoch_seconds(out / task.name), _refit_epochs())
    budgets = _budgets()
    table = summarise(results, budgets)
    header, rows = format_summary(table)
    print(f"\nSampling variants on the CIFAR-10 dev set ({len(seeds)} seeds; same steps; {NUM_ARCHS} shared archs)")
    print_table(header, rows)
    print(f"({time.perf_counter() - started:.0f} s in this invocation)")
    _write(out, header, rows)
    summary = {
        f"{variant} {measure}": float(np.mean(values))
        for variant, by in table.items()
        for measure, values in by.items()
    }
    summary.update(print_candidate_spread())
    return summary


def _spawn_helper(data: Path, out: Path, seeds: Sequence[int], variants: Sequence[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "benchmarks.bench_sampling", "--data", str(data), "--out", str(out)]
    command += ["--seeds", ",".join(map(str, seeds)), "--variants", ",".join(variants), "--worker"]
    return subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent)


def _write(out: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from ofa.atomic import atomic_write_text

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    atomic_write_text(out / "sampling.md", "\n".join(lines) + "\n")


def cli(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sampling", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("OFA_DEV_DATA"), help="the CIFAR-10 dev set folder")
    parser.add_argument("--out", default="runs/bench_sampling")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=1, help="processes (one core each)")
    parser.add_argument("--worker", action="store_true", help="run claimed tasks only, no summary")
    parser.add_argument("--spread-only", action="store_true", help="only the candidate-spread table (no data)")
    args = parser.parse_args(argv)
    if args.spread_only:
        print_candidate_spread()
        return 0
    if not args.data:
        parser.error("give --data PATH (or set OFA_DEV_DATA) to the extracted cifar10-dev folder")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    variants = args.variants.split(",")
    if args.worker:
        for task in [Task(variant, seed) for seed in seeds for variant in variants]:
            run_task(task, Path(args.data).resolve(), Path(args.out))
        return 0
    main(args.data, args.out, seeds, variants, args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
