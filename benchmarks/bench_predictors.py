"""P7: accuracy predictors on real arch data, learning curves of the whole zoo against the default.

Arch data comes from a trained supernet: ``ofa evaluate RUN --num-archs 600 --out DATA.csv`` (archs spread
over the FLOPs range, each BN-recalibrated and evaluated on val and test). Every registered predictor is
fitted on 25..400 archs (5 seeds, nested samples) and scored on one fixed held-out set (the remaining
archs, 200 by default) for each target: ``val_acc`` and ``val_loss`` (negated: lower loss ranks higher).
Goal for the default predictor: a higher Kendall tau than the MACs-only ranking from 50 training archs
on, and within 0.02 of the best predictor of the zoo at every size. The noise ceiling is the Kendall tau
between two measurements of the same archs (``--repeat``: the same archs measured with another
BN-calibration seed, ``ofa evaluate RUN --archs-from DATA.csv --calibration-seed 1 --out REPEAT.csv``);
no predictor can be expected to rank one measurement better than the other measurement does.

Run: ``python -m benchmarks.bench_predictors DATA.csv [--repeat REPEAT.csv]`` or with a run directory
instead of the CSV (its archs are then measured first into ``RUN/archs.csv``; resumable). Without
arguments it reads the shipped real-data measurements ``benchmarks/data/cifar10_dev_archs_seed{0,1}.csv``
(400 archs of a supernet trained on the CIFAR-10 development set with ``configs/train/cifar10.yaml``;
``benchmarks/data/README.md`` says how they were made); ``--digits`` reads the digits ones
(``digits_tiny_archs_seed{0,1}.csv``, 600 archs, where accuracies saturate). Without shipped data: the
``archs.csv`` of the ``ofa run`` directory (``runs/digits-run``), else synthetic records (and says so).
Training sizes that do not fit the data (archs minus the test set) are left out of the default list.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from ofa.space import SearchSpace, load_space
from predictors.bench import (
    BenchmarkRow,
    format_table,
    noise_summary,
    run_benchmark,
    synthetic_records,
    write_results_csv,
)
from predictors.dataset import TARGETS, ArchRecord, read_arch_csvs
from predictors.models import DEFAULT_PREDICTOR, PREDICTORS

__all__ = [
    "DEFAULT_DATA",
    "GoalRow",
    "goal_rows",
    "load_records",
    "main",
    "predictor_rows",
    "summary_rows",
]

DATA_FOLDER = Path(__file__).resolve().parent / "data"  # how these were measured: data/README.md
DEFAULT_DATA = DATA_FOLDER / "cifar10_dev_archs_seed0.csv"  # 400 archs of a CIFAR-10 dev supernet
DEFAULT_REPEAT = DATA_FOLDER / "cifar10_dev_archs_seed1.csv"  # the same archs, BN-calibration seed 1
DIGITS_DATA = DATA_FOLDER / "digits_tiny_archs_seed0.csv"  # 600 archs of a trained digits supernet
DIGITS_REPEAT = DATA_FOLDER / "digits_tiny_archs_seed1.csv"
PIPELINE_DATA = Path("runs/digits-run/archs.csv")  # written by `ofa run`
DEFAULT_TRAIN_SIZES = (25, 50, 100, 200, 400)
DEFAULT_SEEDS = tuple(range(10))
QUICK_SEEDS = (0, 1, 2)
DEFAULT_TEST_SIZE = 200
BASELINE = "macs"
MARGIN = 0.02  # Kendall tau the default may trail the best predictor by
BEAT_BASELINE_FROM = 50  # training archs from which the default must beat the MACs ranking


def _measure_run(run_dir: Path, num_archs: int, seed: int) -> Path:
    """Measure ``num_archs`` spread archs of a trained run into ``RUN/archs.csv`` (continues a partial file)."""
    from ofa.archdata import measure_to_csv, spread_archs
    from ofa.runs import load_run

    run = load_run(run_dir)
    out = run.run_dir / "archs.csv"
    archs = spread_archs(run.space, num_archs, run.num_classes, seed)
    measure_to_csv(
        out,
        run.supernet,
        archs,
        run.calibration_images,
        run.val_loader,
        run.test_loader,
        run.config.calibration.seed,
        progress=sys.stderr.isatty(),
    )
    return out


def load_records(
    sources: Sequence[str | Path], num_archs: int = 600, seed: int = 0
) -> tuple[SearchSpace, list[ArchRecord]]:
    """The space and the records of arch CSVs; a run directory among ``sources`` is measured first.

    Raises:
        ValueError: no sources, a missing or invalid file, or files of different spaces.
    """
    if not sources:
        raise ValueError("give at least one arch CSV or run directory")
    paths = [
        _measure_run(Path(source), num_archs, seed) if Path(source).is_dir() else Path(source) for source in sources
    ]
    return read_arch_csvs(paths)


def predictor_rows(
    records: Sequence[ArchRecord],
    space: SearchSpace,
    target: str = "val_acc",
    predictors: Sequence[str] | None = None,
    train_sizes: Sequence[int] = DEFAULT_TRAIN_SIZES,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    test_size: int = DEFAULT_TEST_SIZE,
    split_seed: int = 0,
) -> list[BenchmarkRow]:
    """One benchmark row per predictor x training size x seed on a fixed held-out set (all predictors by default)."""
    return run_benchmark(
        records,
        space,
        predictors=list(PREDICTORS) if predictors is None else list(predictors),
        train_sizes=train_sizes,
        seeds=seeds,
        test_size=test_size,
        target=target,
        split_seed=split_seed,
        progress=False,
    )


@dataclass(frozen=True)
class GoalRow:
    """The default predictor against the MACs ranking and the best of the zoo at one training size."""

    train_size: int
    default_tau: float
    baseline_tau: float
    best_predictor: str
    best_tau: float

    @property
    def beats_baseline(self) -> bool:
        """Higher mean Kendall tau than the MACs ranking."""
        return self.default_tau > self.baseline_tau

    @property
    def within_margin(self) -> bool:
        """At most ``MARGIN`` below the best predictor's mean Kendall tau."""
        return self.default_tau >= self.best_tau - MARGIN

    @property
    def meets_goal(self) -> bool:
        """Within the margin, and above the baseline from ``BEAT_BASELINE_FROM`` training archs on."""
        return self.within_margin and (self.train_size < BEAT_BASELINE_FROM or self.beats_baseline)


def _mean_tau(rows: Sequence[BenchmarkRow], name: str, size: int) -> float:
    values = [row.kendall_tau for row in rows if row.predictor == name and row.train_size == size]
    return float(np.mean(values)) if values else math.nan


def goal_rows(
    rows: Sequence[BenchmarkRow], default: str = DEFAULT_PREDICTOR, baseline: str = BASELINE
) -> list[GoalRow]:
    """Per training size: mean Kendall tau of the default, of the baseline, and of the best predictor."""
    names = list(dict.fromkeys(row.predictor for row in rows))
    result = []
    for size in sorted({row.train_size for row in rows}):
        means = {name: _mean_tau(rows, name, size) for name in names}
        best = max((name for name in names if not math.isnan(means[name])), key=means.__getitem__)
        result.append(GoalRow(size, means.get(default, math.nan), means.get(baseline, math.nan), best, means[best]))
    return result


def _default_sources(digits: bool = False) -> tuple[list[str], list[str]]:
    """Data and repeat files found on this machine (both empty: none, use synthetic data)."""
    data, repeat = (DIGITS_DATA, DIGITS_REPEAT) if digits else (DEFAULT_DATA, DEFAULT_REPEAT)
    if data.is_file():
        return [str(data)], [str(repeat)] if repeat.is_file() else []
    if PIPELINE_DATA.is_file():
        return [str(PIPELINE_DATA)], []
    return [], []


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_predictors", description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="*", help="arch CSV(s) or a run directory (default: see the module doc)")
    parser.add_argument("--repeat", nargs="*", default=[], help="second measurements of the same archs (noise only)")
    parser.add_argument("--targets", default="val_acc,val_loss", help="comma-separated, of " + ", ".join(TARGETS))
    parser.add_argument("--predictors", default=",".join(PREDICTORS), help="comma-separated (default: all)")
    parser.add_argument("--train-sizes", help=f"comma-separated (default {DEFAULT_TRAIN_SIZES}, those that fit)")
    parser.add_argument("--digits", action="store_true", help="the shipped digits data instead of CIFAR-10 dev")
    parser.add_argument("--seeds", help=f"comma-separated (default {len(DEFAULT_SEEDS)} seeds, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 seeds: a smoke check")
    parser.add_argument("--test-size", type=int, default=DEFAULT_TEST_SIZE)
    parser.add_argument("--num-archs", type=int, default=600, help="archs measured when a source is a run directory")
    parser.add_argument("--out", type=Path, help="folder for the per-seed results (results_<target>.csv)")
    return parser


def main(argv: Sequence[str] = (), quick: bool = False) -> dict[str, float]:
    """Print the benchmark table, the goal check and the noise ceiling per target; returns headline numbers.

    ``argv`` are command-line arguments (none: the default data set, both targets, every predictor);
    ``quick`` (or ``--quick``) uses 3 seeds instead of 10.
    """
    args = _parser().parse_args(list(argv))
    seeds = _int_list(args.seeds) if args.seeds else list(QUICK_SEEDS if quick or args.quick else DEFAULT_SEEDS)
    sources, repeat = (args.sources, args.repeat) if args.sources else _default_sources(args.digits)
    if sources:
        space, records = load_records(sources, args.num_archs)
    else:
        space = load_space("tiny")
        records = synthetic_records(space, 600, seed=0, noise=0.003, nonlinear=True)
        sources = ["synthetic records (no arch data found: run `ofa evaluate RUN --out DATA.csv`)"]
    repeats = load_records(repeat)[1] if repeat else []
    if args.train_sizes:
        train_sizes = _int_list(args.train_sizes)
    else:
        pool = len({record.arch for record in records}) - args.test_size
        train_sizes = [size for size in DEFAULT_TRAIN_SIZES if size <= pool]
    headline: dict[str, float] = {}
    for target in [part.strip() for part in args.targets.split(",") if part.strip()]:
        started = time.perf_counter()
        rows = predictor_rows(
            records,
            space,
            target,
            [name.strip() for name in args.predictors.split(",") if name.strip()],
            train_sizes,
            seeds,
            args.test_size,
        )
        seconds = time.perf_counter() - started
        label = " + ".join(map(str, sources))
        print(f"\n## target {target}: {label} ({len(records)} rows, space {space.name}), {seconds:.0f} s")
        print(format_table(rows))
        goals = goal_rows(rows)
        print(f"\ngoal: {DEFAULT_PREDICTOR} > {BASELINE} from n={BEAT_BASELINE_FROM}, within {MARGIN} of the best")
        print_table(
            ["n", DEFAULT_PREDICTOR, BASELINE, "best", "best tau", "gap", "goal"],
            [
                [
                    goal.train_size,
                    round(goal.default_tau, 3),
                    round(goal.baseline_tau, 3),
                    goal.best_predictor,
                    round(goal.best_tau, 3),
                    round(goal.best_tau - goal.default_tau, 3),
                    "met" if goal.meets_goal else "MISSED",
                ]
                for goal in goals
            ],
        )
        noise = noise_summary(records, target, repeats)
        if "repeat_tau" in noise:
            print(
                f"noise ceiling ({target}, two measurements of {noise['repeat_archs']:.0f} archs): "
                f"Kendall tau {noise['repeat_tau']:.3f}"
            )
        if "val_test_acc_tau" in noise:
            count = sum(record.test_acc is not None for record in records)
            print(f"val_acc vs test_acc (Kendall tau over {count} rows with both): {noise['val_test_acc_tau']:.3f}")
        if args.out is not None:
            write_results_csv(rows, args.out / f"results_{target}.csv")
        for goal in goals:
            headline[f"{target}_tau_default_n{goal.train_size}"] = goal.default_tau
            headline[f"{target}_gap_to_best_n{goal.train_size}"] = goal.best_tau - goal.default_tau
            headline[f"{target}_tau_baseline_n{goal.train_size}"] = goal.baseline_tau
        headline[f"{target}_goal_met"] = float(all(goal.meets_goal for goal in goals))
        headline.update({f"{target}_{key}": value for key, value in noise.items()})
    return headline


def summary_rows(results: dict[str, float]) -> list[tuple[str, str, float, str, bool]]:
    """(id, measure, value, goal, met) rows of ``main``'s results for the summary of ``python -m benchmarks``."""
    rows = []
    for target in TARGETS:
        sizes = sorted(int(key.rsplit("_n", 1)[1]) for key in results if key.startswith(f"{target}_tau_default_n"))
        if not sizes:
            continue
        later = [size for size in sizes if size >= BEAT_BASELINE_FROM] or sizes
        lead = min(results[f"{target}_tau_default_n{n}"] - results[f"{target}_tau_baseline_n{n}"] for n in later)
        rows.append(
            ("P7", f"{target}: {DEFAULT_PREDICTOR} tau - {BASELINE} tau, worst n >= {later[0]}", lead, "> 0", lead > 0)
        )
        gap = max(results[f"{target}_gap_to_best_n{n}"] for n in sizes)
        rows.append(
            ("P7", f"{target}: best tau - {DEFAULT_PREDICTOR} tau, worst n", gap, f"<= {MARGIN}", gap <= MARGIN)
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
