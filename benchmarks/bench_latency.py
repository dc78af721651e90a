"""L1: latency tables and estimators on this machine (CPU, 1 thread, batch 1 by default).

Per space: build the layer table (timed), time ``--archs`` subnets end to end (spread over the MACs range),
split them by arch into a fitting half and a held-out half, fit the table, learned and MACs estimators
on the fitting half, and report RMSPE, share within +-10 % and Kendall tau on the held-out half. The
held-out subnets are timed a second time: the same metrics between the two timings are the noise
ceiling of this machine (no estimator can agree with a timing better than a second timing does).

Search time per latency budget: evolution with once-for-all's settings and the shipped predictor (as in P5),
under latency budgets of the table estimator next to MAC budgets of the same subnets' range, in one run.

    PYTHONPATH=. python benchmarks/bench_latency.py --spaces tiny,ofa_mbv3 --archs 300
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.bench_search import OFA_SETTINGS, _shipped_predictor
from benchmarks.common import median, print_table
from ofa.archdata import spread_archs
from ofa.latency import build_latency_table, time_subnets
from ofa.latency_models import ESTIMATORS, fit_estimator, latency_metrics
from ofa.latency_timing import device_fingerprint
from ofa.search import search_budgets
from ofa.space import load_space

CLASSES = {"tiny": 10, "cifar": 10, "ofa_mbv3": 1000, "attentivenas": 1000}


def bench_space(name: str, num_archs: int, seed: int = 0, threads: int = 1) -> dict[str, float]:
    """Build, time, fit and validate for one space; returns the measured figures."""
    space, num_classes = load_space(name), CLASSES.get(name, 10)
    fingerprint = device_fingerprint(threads=threads)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        table = build_latency_table(space, num_classes, fingerprint, Path(folder) / "table.json", progress=True)
        results["table_seconds"] = time.perf_counter() - started
        results["table_layers"] = len(table.entries)
    archs = spread_archs(space, num_archs, num_classes, seed)
    random.Random(seed).shuffle(archs)
    fit_archs, held_out = archs[: num_archs // 2], archs[num_archs // 2 :]
    started = time.perf_counter()
    timings = time_subnets(space, archs, num_classes, fingerprint, progress=True)
    results["measure_seconds_per_subnet"] = (time.perf_counter() - started) / len(archs)
    latencies = np.array([timing.best_ms for timing in timings])
    fit_latencies, held_latencies = latencies[: len(fit_archs)], latencies[len(fit_archs) :]
    again = np.array([timing.best_ms for timing in time_subnets(space, held_out, num_classes, fingerprint)])
    results["fastest_ms"], results["slowest_ms"] = float(latencies.min()), float(latencies.max())
    results["held_out"] = len(held_out)
    for key, value in latency_metrics(held_latencies, again).items():
        results[f"repeat {key}"] = value
    estimators = {}
    for kind in ESTIMATORS:
        started = time.perf_counter()
        estimators[kind] = fit_estimator(kind, space, num_classes, fingerprint, fit_archs, fit_latencies, table)
        results[f"{kind} fit_seconds"] = time.perf_counter() - started
        for key, value in latency_metrics(held_latencies, estimators[kind].predict(held_out)).items():
            results[f"{kind} {key}"] = value
    results.update(search_seconds(space, num_classes, estimators["table"], latencies))
    return results


def search_seconds(space, num_classes: int, estimator, latencies: np.ndarray) -> dict[str, float]:
    """Seconds per budget of OFA-settings evolution under 3 latency budgets (quartiles of the timed subnets)
    and under MAC budgets at the same quantiles of their MACs, side by side."""
    from ofa.flops import count_macs_many

    objective = _shipped_predictor(space, num_classes).predict
    quantiles = (0.25, 0.5, 0.75)
    latency_budgets = [float(np.quantile(latencies, q)) for q in quantiles]
    cloud = [space.sample(random.Random(seed)) for seed in range(200)]
    mac_budgets = [float(np.quantile(count_macs_many(space, cloud, num_classes) / 1e6, q)) for q in quantiles]
    seconds: dict[str, list[float]] = {"latency": [], "macs": []}
    for index in range(len(quantiles)):
        for name, budgets, latency in (
            ("latency", latency_budgets, estimator),
            ("macs", mac_budgets, None),
        ):
            started = time.perf_counter()
            search_budgets(space, objective, [budgets[index]], OFA_SETTINGS, num_classes, latency=latency)
            seconds[name].append(time.perf_counter() - started)
    return {
        "search latency seconds_per_budget": median(seconds["latency"]),
        "search macs seconds_per_budget": median(seconds["macs"]),
    }


def print_results(name: str, results: dict[str, float]) -> None:
    """The estimator table of one space."""
    print(
        f"\n{name}: {results['table_layers']:.0f} layers timed in {results['table_seconds']:.0f} s; "
        f"{results['held_out']:.0f} held-out subnets, {results['fastest_ms']:.2f}-{results['slowest_ms']:.2f} ms; "
        f"{results['measure_seconds_per_subnet']:.2f} s per subnet timed"
    )
    rows = [
        (label, 100 * results[f"{key} rmspe"], 100 * results[f"{key} within_10"], results[f"{key} kendall_tau"])
        for key, label in (
            ("table", "table sum + line"),
            ("learned", "learned (LightGBM, log ms)"),
            ("macs", "MACs line"),
            ("repeat", "second timing (noise ceiling)"),
        )
    ]
    print_table(("estimator", "RMSPE %", "within 10 %", "Kendall tau"), rows)
    print(
        f"OFA-settings evolution per budget: latency {results['search latency seconds_per_budget']:.2f} s, "
        f"MACs {results['search macs seconds_per_budget']:.2f} s"
    )


def main(spaces: Sequence[str] = ("tiny", "ofa_mbv3"), num_archs: int = 300) -> dict[str, float]:
    """L1 for each space; keys are prefixed with the space name."""
    print(f"device: {device_fingerprint().describe()}")
    results: dict[str, float] = {}
    for name in spaces:
        space_results = bench_space(name, num_archs)
        print_results(name, space_results)
        results.update({f"{name} {key}": value for key, value in space_results.items()})
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default="tiny,ofa_mbv3")
    parser.add_argument("--archs", type=int, default=300)
    arguments = parser.parse_args()
    main(arguments.spaces.split(","), arguments.archs)
