"""The whole benchmark suite: ``python -m benchmarks`` (or ``make bench``): P0-P6, the predictor table, L1 (latency).

Every section prints its own table, then one summary table of ratios against the goals follows. All timings
are measured on this machine, side by side in one run. ``--only P1,P3`` runs a subset; ``--quick`` uses
fewer repeats (noisier numbers, for a smoke check). ``--dev-data PATH`` (or ``OFA_DEV_DATA``; ``make bench
DEV_DATA=PATH``) adds the real-data sections: the sampling benchmark (S1, about 90 minutes on 2 cores) and the
predictor table on the CIFAR-10 development set's measured archs shipped in ``benchmarks/data/``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.common import print_table

Row = tuple[str, str, float, str, bool | None]  # id, what, value, goal, met (None: no goal, reported only)


@dataclass(frozen=True)
class Section:
    """One benchmark: how to run it and how to read its ratios against the goals."""

    key: str
    title: str
    run: Callable[[bool, str | None], dict[str, float]]  # (quick, dev data folder or None)
    summarise: Callable[[dict[str, float]], list[Row]]
    needs_dev_data: bool = False


def _p0(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_startup import main

    return main(repeats=3 if quick else 7)


def _p0_rows(results: dict[str, float]) -> list[Row]:
    rows: list[Row] = []
    for command in ("ofa --help", "ofa flops"):
        seconds = results[f"{command} seconds"]
        rows.append(("P0", f"start-up of {command} (s, wall)", seconds, "< 0.5 s", seconds < 0.5))
    return rows


def _p1(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_elastic import main

    return main(budget_seconds=1.0 if quick else 4.0)


def _p1_rows(results: dict[str, float]) -> list[Row]:
    """Every measured case, training steps included."""
    from benchmarks.bench_elastic import elastic_cases

    rows = []
    for case, *_ in elastic_cases():
        ratio = results[f"{case} ratio"]
        rows.append(("P1", f"elastic overhead, {case} (supernet / static)", ratio, "<= 1.10", ratio <= 1.10))
    return rows


def _p2(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_counter import main

    return main(single_archs=500 if quick else 2000, many_archs=20_000 if quick else 100_000, repeats=3)


def _p2_rows(results: dict[str, float]) -> list[Row]:
    rows = []
    for space in ("tiny", "attentivenas"):
        ratio = results[f"{space} single_vs_fvcore"]
        rows.append(("P2", f"count_macs / fvcore archs per s, {space}", ratio, ">= 10,000", ratio >= 10_000))
        rate = results[f"{space} many_archs_per_s"]
        rows.append(("P2", f"count_macs_many archs per s, {space}", rate, ">= 100,000", rate >= 100_000))
    return rows


def _p3p4(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_train import main

    return main(quick=quick)


def _p3p4_rows(results: dict[str, float]) -> list[Row]:
    from benchmarks.bench_train import summary_rows

    return summary_rows(results)


def _p5p6(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_search import main

    return main()


def _p5p6_rows(results: dict[str, float]) -> list[Row]:
    query = results["p5_tiny_query_seconds"]
    seconds = results["p5_seconds_per_budget"]
    rows: list[Row] = [
        ("P5", "one budget query, tiny, default settings (s)", query, "< 1 s", query < 1.0),
        ("P5", "OFA-settings search on ofa_mbv3, shipped predictor (s per budget)", seconds, "< 2 s", seconds < 2.0),
        ("P5", "archs scored per second in that search", results["p5_archs_per_second"], "-", None),
    ]
    evolution, random_search = results["p6_default_evolution_ratio"], results["p6_default_random_ratio"]
    rows.append(("P6", "evolution hypervolume / best known front", evolution, ">= 0.99", evolution >= 0.99))
    rows.append(("P6", "random search / best known", random_search, "<= evolution", random_search <= evolution))
    return rows


def _predictors(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_predictors import main

    return main(quick=quick)


def _predictor_rows(results: dict[str, float]) -> list[Row]:
    from benchmarks.bench_predictors import summary_rows

    return summary_rows(results)


def _sampling(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_sampling import main

    return main(dev_data, jobs=2)


def _sampling_rows(results: dict[str, float]) -> list[Row]:
    from benchmarks.bench_sampling import VARIANTS

    uniform = results["uniform hypervolume"]
    rows: list[Row] = []
    for variant in VARIANTS:
        if variant == "uniform" or f"{variant} hypervolume" not in results:
            continue
        ratio = results[f"{variant} hypervolume"] / uniform
        rows.append(("S1", f"front hypervolume {variant} / uniform (mean over seeds)", ratio, "report", True))
    guided = results.get("bestup_predictor time / uniform")
    if guided is not None:
        rows.append(("S1", "guided training wall time / uniform", guided, "<= 1.25", guided <= 1.25))
    spread = results["spread attentivenas after"] / results["spread attentivenas before"]
    rows.append(("S1", "attentivenas candidate MMAC spread, bin width / 25 bins", spread, "< 1", spread < 1))
    return rows


def _latency(quick: bool, dev_data: str | None) -> dict[str, float]:
    from benchmarks.bench_latency import main

    return main(("tiny",) if quick else ("tiny", "ofa_mbv3"), num_archs=120 if quick else 300)


def _latency_rows(results: dict[str, float]) -> list[Row]:
    rows: list[Row] = []
    for space in ("tiny", "ofa_mbv3"):
        if f"{space} table_seconds" not in results:
            continue
        layers = results[f"{space} table_layers"]
        rows.append(
            ("L1", f"{space}: layer table build, s ({layers:.0f} layers)", results[f"{space} table_seconds"], "-", None)
        )
        for kind in ("table", "learned", "macs"):
            within, tau = results[f"{space} {kind} within_10"], results[f"{space} {kind} kendall_tau"]
            estimator = kind != "macs"
            rows.append(
                ("L1", f"{space}: {kind}, share within 10 %", within, ">= 0.90" if estimator else "-",
                 within >= 0.9 if estimator else None)
            )  # fmt: skip
            rows.append(
                ("L1", f"{space}: {kind}, Kendall tau", tau, ">= 0.90" if estimator else "-",
                 tau >= 0.9 if estimator else None)
            )  # fmt: skip
        better = (
            all(
                results[f"{space} table {key}"] > results[f"{space} macs {key}"] for key in ("within_10", "kendall_tau")
            )
            and results[f"{space} table rmspe"] < results[f"{space} macs rmspe"]
        )
        rows.append(("L1", f"{space}: table better than MACs on every metric", float(better), "1", better))
        ceiling = results[f"{space} repeat kendall_tau"]
        rows.append(("L1", f"{space}: second timing vs first, Kendall tau (noise ceiling)", ceiling, "-", None))
        ratio = (
            results[f"{space} search latency seconds_per_budget"] / results[f"{space} search macs seconds_per_budget"]
        )
        rows.append(("L1", f"{space}: search s per budget, latency / MACs", ratio, "-", None))
    return rows


SECTIONS = (
    Section("P0", "command-line start-up", _p0, _p0_rows),
    Section("P1", "elastic overhead", _p1, _p1_rows),
    Section("P2", "counter speed", _p2, _p2_rows),
    Section("P3", "sandwich efficiency and attentive overhead (P3, P4)", _p3p4, _p3p4_rows),
    Section("P5", "query / search speed and search quality (P5, P6)", _p5p6, _p5p6_rows),
    Section("predictors", "predictor table", _predictors, _predictor_rows),
    Section("L1", "latency tables and estimators on this machine", _latency, _latency_rows),
    Section("S1", "sampling variants on the CIFAR-10 development set", _sampling, _sampling_rows, True),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, then print the summary of ratios."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    keys = [section.key for section in SECTIONS]
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(keys)}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats: a smoke check, noisier numbers")
    parser.add_argument("--dev-data", default=os.environ.get("OFA_DEV_DATA") or None, help="CIFAR-10 dev set folder")
    args = parser.parse_args(argv)
    chosen = keys if not args.only else args.only.split(",")
    unknown = [key for key in chosen if key not in keys]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(keys)}")
    summary: list[Row] = []
    for section in SECTIONS:
        if section.key not in chosen:
            continue
        print(f"\n=== {section.title} ===", flush=True)
        if section.needs_dev_data and not args.dev_data:
            print("skipped: give --dev-data PATH (make bench DEV_DATA=PATH), the extracted cifar10-dev folder")
            continue
        started = time.perf_counter()
        results = section.run(args.quick, args.dev_data)
        print(f"({time.perf_counter() - started:.0f} s)")
        summary.extend(section.summarise(results))
    print("\n=== summary: ratios against the goals ===")
    verdicts = {True: "yes", False: "NO", None: "-"}
    print_table(("id", "measure", "value", "goal", "met"), [(*row[:4], verdicts[row[4]]) for row in summary])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
