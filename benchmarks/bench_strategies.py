"""P6c: search strategies on a trained supernet, judged by measured accuracy.

P6 and P6b compare the strategies on a cheap known objective. Here the objective is what a user searches
with: the toolkit's default predictor, fitted on archs measured inside a trained supernet. Every predictor
strategy (evolution, random, rl) searches the same 4 budgets with the same cap of predictor queries per
budget, and the differentiable search (dnas) searches them inside the supernet on the val split (no predictor
queries; its cap column is "-"); the 3 best archs per budget (best predicted; dnas: most probable) are then
measured in the supernet (BN recalibrated, val split; an arch measured once is not measured again).
Reported per (cap, strategy), mean ± std over seeds: the hypervolume of the measured finalists' (MMACs, val
accuracy) front, normalised as in S1, the best measured val accuracy within each budget, the predictor
queries and the search's seconds per budget.

    python -m benchmarks.bench_strategies --run runs/bench_sampling/uniform-s0 [--out runs/bench_strategies]

The run is any trained run folder (the sampling benchmark's runs are on the CIFAR-10 dev set). Results are
kept in ``OUT`` and a repeated command continues them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import print_table

STRATEGIES = ("evolution", "random", "rl")  # at every cap; dnas once (it makes no predictor queries)
FINALISTS = 3
POPULATION = 50  # evolution's population: a cap of 200 queries is 3 generations after the first
CHANCE = 0.1  # the hypervolume's accuracy reference: chance on 10 classes
FIT_ARCHS = 100  # archs measured to fit the predictor
FIT_SEED = 1000  # draws them (apart from the strategies' seeds)


class Measurements:
    """Val accuracy of archs in the supernet, each measured once, kept in a JSON-lines file."""

    def __init__(self, run: object, path: Path) -> None:
        from ofa.space import Arch

        self.run, self.path, self.values = run, path, {}
        kept = []
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: dropped below, so later lines start clean
            self.values[Arch.from_dict(row["arch"])] = float(row["val_acc"])
            kept.append(line + "\n")
        if path.is_file():
            from ofa.atomic import atomic_write_text

            atomic_write_text(path, "".join(kept))
        self.made = 0

    def val(self, arch: object) -> float:
        """The measured val accuracy of ``arch``."""
        if arch not in self.values:
            self.values[arch] = self.run.evaluate(arch, "val").accuracy
            self.made += 1
            with self.path.open("a") as handle:
                handle.write(json.dumps({"arch": arch.to_dict(), "val_acc": self.values[arch]}) + "\n")
        return self.values[arch]


def _predictor(run: object, out: Path) -> object:
    """The default predictor fitted on ``FIT_ARCHS`` spread archs measured in the run (val accuracy)."""
    from ofa.archdata import measure_to_csv, spread_archs
    from predictors.models import DEFAULT_PREDICTOR, create_predictor

    archs = spread_archs(run.space, FIT_ARCHS, run.num_classes, FIT_SEED)
    records = measure_to_csv(
        out / "fit_archs.csv",
        run.supernet,
        archs,
        run.calibration_images,
        run.val_loader,
        None,
        run.config.calibration.seed,
    )
    predictor = create_predictor(DEFAULT_PREDICTOR, run.space, seed=0, num_classes=run.num_classes)
    return predictor.fit([record.arch for record in records], [record.val_acc for record in records])


def _one(run: object, predictor: object, budgets: Sequence[float], strategy: str, cap: int | None, seed: int, measured):
    """One search of every budget and its measured finalists: (hypervolume inputs, best val per budget, s)."""
    from ofa.deploy import strategy_for_run
    from ofa.search import SearchSettings, capped_settings, search_budgets

    settings, per_budget = capped_settings(SearchSettings(population=POPULATION, seed=seed), strategy, cap)
    chosen = strategy_for_run(run, strategy)
    started = time.perf_counter()
    result = search_budgets(run.space, predictor, budgets, settings, run.num_classes, chosen, per_budget)
    seconds = time.perf_counter() - started
    costs, values, best = [], [], []
    for search in result.results:
        finalists = [search.archs[index] for index in search.top(FINALISTS).tolist()]
        accuracies = [measured.val(arch) for arch in finalists]
        costs += [float(search.costs[index]) for index in search.top(FINALISTS).tolist()]
        values += accuracies
        best.append(max(accuracies))
    memory = [search.memory_mib for search in result.results if search.memory_mib is not None]
    return np.array(costs), np.array(values), best, seconds, result.num_evaluations, max(memory, default=None)


def main(
    run_dir: str | Path,
    out: str | Path = "runs/bench_strategies",
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    caps: Sequence[int] = (200, 800),
) -> dict[str, float]:
    """Fit the predictor, search with every (cap, strategy, seed), measure, print and write the summary."""
    from ofa.flops import count_macs_many
    from ofa.pareto import hypervolume
    from ofa.pipeline import default_budgets
    from ofa.runs import load_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = load_run(Path(run_dir), "latest")
    predictor = _predictor(run, out)
    budgets = default_budgets(run.space, run.num_classes, 4)
    extremes = count_macs_many(run.space, [run.space.min_arch(), run.space.max_arch()], run.num_classes) / 1e6
    area = (extremes[1] - extremes[0]) * (1 - CHANCE)
    measured = Measurements(run, out / "measured.jsonl")
    table: dict[tuple[int, str], dict[str, list[float]]] = {}
    for cap, strategy in [(cap, strategy) for cap in caps for strategy in STRATEGIES] + [(None, "dnas")]:
        cell = table.setdefault((cap, strategy), {})
        for seed in seeds:
            costs, values, best, seconds, queries, memory = _one(run, predictor, budgets, strategy, cap, seed, measured)
            cell.setdefault("hypervolume", []).append(hypervolume(costs, values, extremes[1], CHANCE) / area)
            for budget, value in zip(budgets, best):
                cell.setdefault(f"val @{budget:.2g}M", []).append(100 * value)
            cell.setdefault("queries / budget", []).append(queries / len(budgets))
            cell.setdefault("search s / budget", []).append(seconds / len(budgets))
            cell.setdefault("activations MiB", []).append(np.nan if memory is None else memory)
    header = ["cap / budget", "strategy", *next(iter(table.values()))]
    rows = [
        ["-" if cap is None else str(cap), strategy, *(_cell(name, values) for name, values in cell.items())]
        for (cap, strategy), cell in table.items()
    ]
    print(
        f"\nP6c: strategies on {run_dir} (default predictor fitted on {FIT_ARCHS} measured archs; finalists measured)"
    )
    print(f"mean ± std over {len(seeds)} seeds; {len(measured.values)} distinct archs measured")
    print_table(header, rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]
    from ofa.atomic import atomic_write_text

    atomic_write_text(out / "strategies.md", "\n".join(lines) + "\n")
    return {
        f"{cap} {strategy} {name}": float(np.mean(values))  # NaN: not measured (memory of predictor strategies)
        for (cap, strategy), cell in table.items()
        for name, values in cell.items()
    }


def _cell(name: str, values: Sequence[float]) -> str:
    if np.isnan(values).all():
        return ""
    digits = 3 if name == "hypervolume" else 0 if name == "queries / budget" else 1 if "val" in name else 2
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return f"{array.mean():.{digits}f} ± {std:.{digits}f}"


def cli(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder")
    parser.add_argument("--out", default="runs/bench_strategies")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--caps", default="200,800", help="predictor queries per budget")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    caps = [int(cap) for cap in args.caps.split(",")]
    main(args.run, args.out, seeds, caps)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
