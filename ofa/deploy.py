"""Deploy many: Pareto-optimal subnets of a trained run for FLOPs budgets, budget queries, export.

The accuracy predictor of the run guides an evolutionary search per budget (fast path); the best
``finalists`` candidates per budget are then really evaluated inside the supernet (BN recalibrated) on
val, the one with the best val accuracy is chosen and its test accuracy reported. Results are written
to ``RUN/search/pareto.json``, ``pareto.csv`` and ``pareto.png``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa.budget import check_budget, parse_budget
from ofa.flops import count_macs, count_params
from ofa.pareto import pareto_front
from ofa.search import SearchSettings, evolutionary_search, search_budgets
from ofa.space import Arch, SearchSpace, load_arch
from predictors.dataset import atomic_write_text, read_arch_csv
from predictors.models import Predictor, create_predictor, load_predictor

__all__ = [
    "ChosenSubnet",
    "export_from_run",
    "find_predictor",
    "query_run",
    "read_run_space",
    "search_run",
]

PARETO_COLUMNS = ("budget_mmacs", "arch", "mmacs", "params", "predicted_acc", "val_acc", "test_acc")


@dataclass(frozen=True)
class ChosenSubnet:
    """The answer for one budget."""

    budget: float
    arch: Arch
    mmacs: float
    params: int
    predicted_acc: float
    val_acc: float | None = None
    test_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "budget_mmacs": self.budget,
            "arch": self.arch.to_dict(),
            "arch_short": self.arch.short(),
            "mmacs": self.mmacs,
            "params": self.params,
            "predicted_acc": self.predicted_acc,
            "val_acc": self.val_acc,
            "test_acc": self.test_acc,
        }


def read_run_space(run_dir: Path) -> tuple[SearchSpace, int]:
    """The space and class count of a run (from ``RUN/space.json``, written when training starts)."""
    path = run_dir / "space.json"
    if not run_dir.is_dir():
        raise ValueError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a training run ({path.name} is missing): train it first")
    data = json.loads(path.read_text())
    return SearchSpace.from_dict(data["space"], source=str(path)), int(data["num_classes"])


def find_predictor(run_dir: Path, space: SearchSpace, path: Path | None = None, model: str = "lightgbm") -> Predictor:
    """The predictor to search with: ``path``; else ``RUN/predictor/final.json``; else fitted on ``RUN/archs.csv``.

    A predictor fitted here is saved as ``RUN/predictor/final.json`` for the next query.
    """
    if path is not None:
        return load_predictor(path, space)
    final = run_dir / "predictor" / "final.json"
    if final.is_file():
        return load_predictor(final, space)
    data = run_dir / "archs.csv"
    if not data.is_file():
        raise ValueError(
            f"{run_dir} has no accuracy predictor ({final}) and no arch data ({data}): "
            f"run `ofa evaluate {run_dir}` first, or pass --predictor FILE"
        )
    records = read_arch_csv(data, space)
    predictor = create_predictor(model, space)
    predictor.fit([record.arch for record in records], np.array([record.val_acc for record in records]))
    predictor.save(final)
    return predictor


def _measured(run_dir: Path, space: SearchSpace) -> dict[Arch, tuple[float, float]]:
    """Val and test accuracy of every arch measured so far (arch data and earlier searches)."""
    known: dict[Arch, tuple[float, float]] = {}
    data = run_dir / "archs.csv"
    if data.is_file():
        for record in read_arch_csv(data, space):
            known[record.arch] = (record.val_acc, record.test_acc)
    return known


def search_run(
    run: Any,
    budgets: list[float],
    predictor: Predictor,
    settings: SearchSettings,
    finalists: int = 3,
    progress: bool = False,
) -> tuple[list[ChosenSubnet], dict[str, Any]]:
    """Search every budget with the predictor, evaluate the finalists in the supernet, write the results.

    Args:
        run: a :class:`ofa.runs.LoadedRun`.
        budgets: MMACs.
        predictor: the fitted accuracy predictor (the search objective).
        settings: evolution settings.
        finalists: candidates per budget evaluated for real on val.
        progress: show a progress bar.
    """
    from tqdm import tqdm

    if finalists < 1:
        raise ValueError(f"finalists must be >= 1, got {finalists}")
    space, num_classes = run.space, run.num_classes
    result = search_budgets(space, predictor.predict, budgets, settings, num_classes)
    known = _measured(run.run_dir, space)
    chosen = []
    bar = tqdm(total=len(budgets) * finalists, desc="evaluate finalists", disable=not progress, leave=False)
    for budget, search in zip(result.budgets, result.results):
        candidates = []
        for index in search.top(finalists):
            arch = search.archs[index]
            if arch not in known:
                known[arch] = (run.evaluate(arch, "val").accuracy, None)
            bar.update(1)
            candidates.append((known[arch][0], -search.costs[index], int(index)))
        val_acc, _, index = max(candidates)
        arch = search.archs[index]
        test_acc = known[arch][1] if known[arch][1] is not None else run.evaluate(arch, "test").accuracy
        chosen.append(
            ChosenSubnet(
                budget=budget,
                arch=arch,
                mmacs=float(search.costs[index]),
                params=count_params(space, arch, num_classes),
                predicted_acc=float(search.scores[index]),
                val_acc=val_acc,
                test_acc=test_acc,
            )
        )
    bar.close()
    summary = {
        "space": space.name,
        "num_classes": num_classes,
        "settings": {key: getattr(settings, key) for key in settings.__dataclass_fields__},
        "finalists_per_budget": finalists,
        "chosen": [subnet.to_dict() for subnet in chosen],
        "search": result.to_dict(top=finalists),
    }
    folder = run.run_dir / "search"
    atomic_write_text(folder / "pareto.json", json.dumps(summary, indent=1))
    atomic_write_text(folder / "pareto.csv", _pareto_csv(chosen))
    _plot(folder / "pareto.png", chosen, result, _measured(run.run_dir, space), space, num_classes)
    return chosen, summary


def _pareto_csv(chosen: list[ChosenSubnet]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PARETO_COLUMNS)
    for subnet in chosen:
        writer.writerow(
            [
                subnet.budget,
                subnet.arch.to_json(),
                round(subnet.mmacs, 4),
                subnet.params,
                round(subnet.predicted_acc, 5),
                "" if subnet.val_acc is None else round(subnet.val_acc, 5),
                "" if subnet.test_acc is None else round(subnet.test_acc, 5),
            ]
        )
    return buffer.getvalue()


def _plot(
    path: Path,
    chosen: list[ChosenSubnet],
    result: Any,
    measured: dict[Arch, tuple[float, float]],
    space: SearchSpace,
    num_classes: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    if measured:
        space_archs = list(measured)
        # the cloud: archs measured in the supernet (spread over the FLOPs range)
        costs = [count_macs(space, arch, num_classes) / 1e6 for arch in space_archs]
        accuracies = [measured[arch][0] for arch in space_archs]
        axis.scatter(costs, accuracies, s=8, color="0.7", label="measured archs (val)")
        front = pareto_front(np.array(costs), np.array(accuracies))
        axis.plot(np.array(costs)[front], np.array(accuracies)[front], color="0.4", lw=1, label="measured front")
    axis.plot(result.front_costs, result.front_scores, color="tab:blue", lw=1, label="predicted front (search)")
    axis.scatter(
        [s.mmacs for s in chosen], [s.val_acc for s in chosen], color="tab:red", zorder=3, label="chosen (val)"
    )
    for subnet in chosen:
        axis.axvline(subnet.budget, color="tab:red", lw=0.5, ls=":")
    axis.set_xlabel("MMACs")
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def query_run(run_dir: Path, budget: str | float, predictor_path: Path | None = None) -> ChosenSubnet:
    """The best arch within one budget: from the run's saved search when one chose for a budget <= it and
    the quick predictor-guided search finds nothing better predicted, else the quick search's answer."""
    space, num_classes = read_run_space(run_dir)
    budget_mmacs = check_budget(space, parse_budget(budget), num_classes)
    predictor = find_predictor(run_dir, space, predictor_path)
    result = evolutionary_search(space, predictor.predict, budget_mmacs, SearchSettings(), num_classes)
    measured = _measured(run_dir, space)
    saved = _saved_choices(run_dir, space)
    candidates = [arch for arch in saved if count_macs(space, arch, num_classes) / 1e6 <= budget_mmacs]
    best_arch, best_predicted = result.best_arch, result.best_score
    if candidates:
        predicted = predictor.predict(candidates)
        index = int(np.argmax(predicted))
        if predicted[index] >= best_predicted:
            best_arch, best_predicted = candidates[index], float(predicted[index])
    val_acc, test_acc = saved.get(best_arch) or measured.get(best_arch) or (None, None)
    return ChosenSubnet(
        budget=budget_mmacs,
        arch=best_arch,
        mmacs=count_macs(space, best_arch, num_classes) / 1e6,
        params=count_params(space, best_arch, num_classes),
        predicted_acc=float(best_predicted),
        val_acc=val_acc,
        test_acc=test_acc,
    )


def _saved_choices(run_dir: Path, space: SearchSpace) -> dict[Arch, tuple[float | None, float | None]]:
    path = run_dir / "search" / "pareto.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {space.arch_from_dict(item["arch"]): (item["val_acc"], item["test_acc"]) for item in data["chosen"]}


def export_from_run(
    run_dir: str | Path,
    arch_file: str | None,
    budget: str | None,
    out_dir: Path,
    force: bool = False,
    onnx: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Export the arch of ``arch_file``, or the best arch within ``budget``, as a standalone subnet."""
    from ofa.export import export_subnet, read_export_info
    from ofa.runs import load_run

    run_dir = Path(run_dir)
    space, num_classes = read_run_space(run_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ValueError(f"export target {out_dir} exists and is not empty: pass --force to replace it")
    predicted = None
    if arch_file is not None:
        arch = load_arch(arch_file, space)
    else:
        answer = query_run(run_dir, budget)
        arch, predicted = answer.arch, answer.predicted_acc
    run = load_run(run_dir)
    val = run.evaluate(arch, "val")
    test = run.evaluate(arch, "test")  # leaves the supernet calibrated for this arch
    model = run.supernet.extract(arch).eval()
    metadata = {"val_acc": val.accuracy, "test_acc": test.accuracy, "predicted_acc": predicted, "run": str(run_dir)}
    out = export_subnet(
        model,
        space,
        arch,
        out_dir,
        num_classes=num_classes,
        mean=run.data.mean,
        std=run.data.std,
        metadata=metadata,
        force=force,
        onnx=onnx,
    )
    return out, read_export_info(out)
