"""Deploy many: Pareto-optimal subnets of a trained run for FLOPs or latency budgets, and their export.

The accuracy predictor of the run guides an evolutionary search per budget (fast path, once-for-all,
Cai et al., ICLR 2020); the best ``finalists`` candidates per budget are then really evaluated inside the
supernet (BN recalibrated) on val, the one with the best val accuracy is chosen and its test accuracy
reported. Results are written to ``RUN/search/pareto.json``, ``pareto.csv`` and ``pareto.png``; the same
run, predictor, budgets and settings give byte-identical ``pareto.json`` and ``pareto.csv``. Latency budgets
(a latency estimator of :mod:`ofa.latency_models`) write ``pareto-latency.*`` beside them
(:mod:`ofa.cost_axis`).

This side loads torch, the supernet and matplotlib; queries and budget checks, which need none of them, are
in :mod:`ofa.query`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from ofa._genome import genome_of
from ofa.budget import TOLERANCE as BUDGET_TOLERANCE
from ofa.cost_axis import CostAxis, latency_axis, mac_axis
from ofa.evaluate import Evaluation, evaluate_model
from ofa.export import check_export_target, read_export_info
from ofa.flops import count_macs_many, count_params
from ofa.pareto import pareto_front
from ofa.query import (
    ChosenSubnet,
    find_latency_estimator,
    measured_archs,
    query_run,
)
from ofa.runfolder import RunFolder, write_result
from ofa.runs import load_run, run_space
from ofa.search import BudgetStrategy, MultiBudgetResult, SearchSettings, capped_settings, search_budgets
from ofa.search_dnas import DnasSearch
from ofa.search_rl import Reinforce
from ofa.space import Arch, SearchSpace, load_arch

if TYPE_CHECKING:
    from ofa.latency_models import LatencyEstimator
    from predictors.models import Predictor

__all__ = [
    "LATENCY_PARETO_COLUMNS",
    "PARETO_COLUMNS",
    "MeasurableRun",
    "export_from_run",
    "pareto_figure",
    "search_run",
    "strategy_for_run",
]

PARETO_COLUMNS = ("budget_mmacs", "arch", "mmacs", "params", "predicted_acc", "val_acc", "test_acc")
LATENCY_PARETO_COLUMNS = (
    "budget_latency_ms",
    "arch",
    "mmacs",
    "latency_ms",
    "params",
    "predicted_acc",
    "val_acc",
    "test_acc",
)
CLOUD_SIZE = 400  # random archs scored by the predictor for the plot's cloud
CLOUD_SEED = 0


# ----------------------------------------------------------------------------------------------------
# the run directory: space, predictor, measured archs
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# search
# ----------------------------------------------------------------------------------------------------


class MeasurableRun(Protocol):
    """What search needs from a run: where it lives, its space and classes, and a measurement of an arch
    inside the supernet (BN recalibrated) on ``val`` or ``test`` (strategy ``dnas`` also reads its ``supernet``
    and ``val_loader``, as :class:`ofa.runs.LoadedRun` has them)."""

    run_dir: Path
    space: SearchSpace

    @property
    def num_classes(self) -> int:
        """Classifier outputs."""
        ...

    @property
    def measurement_source(self) -> Mapping[str, object]:
        """What a measurement depends on besides the arch and calibration seed (weights digest, calibration)."""
        ...

    def evaluate(self, arch: Arch, split: str = "val") -> Evaluation:
        """Accuracy and loss of ``arch`` on ``split``."""
        ...


def search_run(
    run: MeasurableRun,
    budgets: Sequence[float | str],
    predictor: Predictor,
    settings: SearchSettings | None = None,
    finalists: int = 3,
    progress: bool = False,
    plot: bool = True,
    strategy: str = "evolution",
    max_queries: int | None = None,
    latency: LatencyEstimator | None = None,
) -> tuple[list[ChosenSubnet], dict[str, Any]]:
    """Search every budget with the predictor, evaluate the finalists in the supernet, write the results.

    Every input is checked before anything is evaluated. Archs already measured in ``RUN/archs.csv`` (with the
    run's calibration seed, on its current weights) are not measured again and compete with the finalists: each
    budget gets the best val accuracy measured within it (ties: cheaper, then better predicted), never worse as
    it grows.

    Args:
        run: a :class:`ofa.runs.LoadedRun`, or anything :class:`MeasurableRun` describes.
        budgets: MMACs (or strings such as ``"5M"``).
        predictor: the fitted accuracy predictor (the search objective).
        settings: evolution settings (default :class:`SearchSettings`).
        finalists, progress, plot: candidates per budget evaluated on val; a progress bar; draw ``pareto.png``.
        strategy: ``evolution``, ``random``, ``rl`` (as many archs per budget as evolution scores) or ``dnas``
            (in the supernet on the val split, see :mod:`ofa.search_dnas`; finalists: its most probable subnets).
        max_queries: at most this many predictor queries per budget (evolution: fewer generations).
        latency: a latency estimator: budgets are latencies (ms) of its estimate, written to ``pareto-latency.*``.

    Returns the chosen subnet per budget (in the given order) and the content of ``pareto.json``.

    Raises:
        ValueError: a malformed budget, one below the smallest (fastest) subnet, or bad settings.
    """
    if isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 1:
        raise ValueError(f"finalists must be an integer >= 1, got {finalists!r}")
    settings, per_budget = capped_settings(SearchSettings() if settings is None else settings, strategy, max_queries)
    axis = mac_axis(run.space, run.num_classes) if latency is None else latency_axis(latency)
    arguments = (settings, run.num_classes, strategy_for_run(run, strategy), per_budget, latency)
    result = search_budgets(run.space, predictor, budgets, *arguments)
    measured = measured_archs(run.run_dir, run.space, source := dict(run.measurement_source))  # hashes the weights
    chosen, made = _choose_measured(run, result, predictor, finalists, progress, axis, dict(measured))
    summary = {
        "space": run.space.name,
        "objective": axis.unit,
        **({} if latency is None else {"device": latency.fingerprint.to_dict(), "estimator": latency.kind}),
        "strategy": strategy,
        "predictor_queries": result.num_evaluations,
        "supernet_measurements": made,
        "measurement_source": source,  # a query reuses the accuracies only if it matches
        "num_classes": run.num_classes,
        "settings": {field.name: getattr(settings, field.name) for field in fields(settings)},
        "finalists_per_budget": finalists,
        "chosen": [subnet.to_dict() for subnet in chosen],
        "search": _without_wall_time(result.to_dict(top=finalists)),
    }
    _write_search(run, chosen, summary, result, predictor if plot else None, axis, measured)
    return chosen, summary


def _write_search(
    run: MeasurableRun,
    chosen: list[ChosenSubnet],
    summary: dict[str, Any],
    result: MultiBudgetResult,
    plot_predictor: Predictor | None,
    axis: CostAxis,
    measured: dict[Arch, tuple[float, float]],
) -> None:
    """``STEM.json``, ``STEM.csv`` and, given the predictor for its cloud of random archs, ``STEM.png``
    (stem ``pareto`` or ``pareto-latency``)."""
    folder = RunFolder(run.run_dir)
    write_result(folder.search_result(axis.file_stem, "json"), json.dumps(summary, indent=1) + "\n")
    write_result(folder.search_result(axis.file_stem, "csv"), _pareto_csv(chosen, axis))
    if plot_predictor is not None:
        cloud = _random_cloud(run.space, run.num_classes, plot_predictor, axis)
        figure = pareto_figure(chosen, result, cloud, measured, axis, run.space.name)
        folder.search_folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder.search_result(axis.file_stem, "png"), dpi=120)


DNAS_BATCH = 64  # images per differentiable-search step


def strategy_for_run(run: MeasurableRun, name: str) -> str | BudgetStrategy:
    """The search strategy ``name`` for a run: ``rl`` and ``dnas`` as their objects (dnas searches the run's
    supernet on its val batches); the others as names (an unknown one is refused by ``search_budgets``)."""
    if name == "rl":
        return Reinforce()
    if name == "dnas":
        return _dnas_search_for_run(run)
    return name


def _dnas_search_for_run(run: MeasurableRun) -> DnasSearch:
    """The supernet and the run's val images in batches of ``DNAS_BATCH`` (where the finalists are judged)."""

    if not hasattr(run, "supernet") or not hasattr(run, "val_loader"):
        raise ValueError(
            f"strategy 'dnas' searches inside the supernet: {type(run).__name__} holds no supernet and val batches"
        )
    images, labels = zip(*run.val_loader)
    images, labels = torch.cat(images), torch.cat(labels)
    batches = [
        (images[start : start + DNAS_BATCH], labels[start : start + DNAS_BATCH])
        for start in range(0, len(labels) - DNAS_BATCH + 1, DNAS_BATCH)
    ] or [(images, labels)]
    return DnasSearch(run.supernet, batches)


def _choose_measured(
    run: MeasurableRun,
    result: MultiBudgetResult,
    predictor: Predictor,
    finalists: int,
    progress: bool,
    axis: CostAxis,
    known: dict[Arch, tuple[float, float | None]],
) -> tuple[list[ChosenSubnet], int]:
    """Per budget (in the given order): the best val accuracy among its finalists, measured now, and every
    arch already measured within it (``known``: arch -> val, test accuracy; the finalists measured are added);
    its test accuracy measured once. Returns the choices and how many supernet measurements they took."""
    space, num_classes, made = run.space, run.num_classes, 0
    picks: dict[int, ChosenSubnet] = {}
    bar = tqdm(total=len(result.budgets) * finalists, desc="evaluate finalists", disable=not progress, leave=False)
    # smallest budget first: an arch measured for a smaller budget is a candidate for every larger one
    for position in sorted(range(len(result.budgets)), key=lambda i: result.budgets[i]):
        budget, search = result.budgets[position], result.results[position]
        for index in search.top(finalists).tolist():
            arch = search.archs[index]
            if arch not in known:
                known[arch] = (run.evaluate(arch, "val").accuracy, None)
                made += 1
            bar.update(1)
        pool = list(known)
        costs = axis.of_archs(pool)
        pool = [arch for arch, cost in zip(pool, costs) if cost <= budget + BUDGET_TOLERANCE]
        costs = costs[costs <= budget + BUDGET_TOLERANCE]
        predicted = predictor.predict(pool)
        best = max(range(len(pool)), key=lambda i: (known[pool[i]][0], -costs[i], predicted[i]))
        arch, (val_acc, test_acc) = pool[best], known[pool[best]]
        if test_acc is None:
            test_acc = run.evaluate(arch, "test").accuracy
            made += 1
            known[arch] = (val_acc, test_acc)
        picks[position] = ChosenSubnet(
            budget=budget,
            arch=arch,
            mmacs=float(count_macs_many(space, [arch], num_classes)[0]) / 1e6,
            params=count_params(space, arch, num_classes),
            predicted_acc=float(predicted[best]),
            val_acc=float(val_acc),
            test_acc=float(test_acc),
            latency_ms=None if axis.latency is None else float(costs[best]),
        )
    bar.close()
    return [picks[position] for position in range(len(result.budgets))], made


def _without_wall_time(data: Any) -> Any:
    """``data`` without its ``wall_time`` entries (timings differ between identical searches)."""
    if isinstance(data, dict):
        return {key: _without_wall_time(value) for key, value in data.items() if key != "wall_time"}
    if isinstance(data, list):
        return [_without_wall_time(value) for value in data]
    return data


def _pareto_csv(chosen: Sequence[ChosenSubnet], axis: CostAxis) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PARETO_COLUMNS if axis.latency is None else LATENCY_PARETO_COLUMNS)
    for subnet in chosen:
        latency = [] if subnet.latency_ms is None else [round(subnet.latency_ms, 6)]
        writer.writerow(
            [
                subnet.budget,
                subnet.arch.to_json(),
                round(subnet.mmacs, 6),
                *latency,
                subnet.params,
                round(subnet.predicted_acc, 6),
                "" if subnet.val_acc is None else round(subnet.val_acc, 6),
                "" if subnet.test_acc is None else round(subnet.test_acc, 6),
            ]
        )
    return buffer.getvalue()


def _random_cloud(
    space: SearchSpace, num_classes: int, predictor: Predictor, axis: CostAxis
) -> tuple[np.ndarray, np.ndarray]:
    """Costs and predicted accuracy of ``CLOUD_SIZE`` archs drawn uniformly from the space (fixed seed)."""
    genome = genome_of(space, num_classes)
    archs = genome.decode(genome.sample(CLOUD_SIZE, np.random.default_rng(CLOUD_SEED)))
    return axis.of_archs(archs), np.asarray(predictor.predict(archs), dtype=np.float64)


def pareto_figure(
    chosen: Sequence[ChosenSubnet],
    result: MultiBudgetResult,
    cloud: tuple[np.ndarray, np.ndarray],
    measured: dict[Arch, tuple[float, float]],
    cost_axis: CostAxis,
    space_name: str,
) -> Figure:
    """Accuracy vs cost (MMACs or latency): a cloud of random archs (predicted), the measured archs and
    their front (val), the predicted front of the search, the chosen subnets (val) and the budgets."""

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    axis.scatter(cloud[0], cloud[1], s=5, color="0.85", label=f"random archs (predicted, {len(cloud[0])})")
    if measured:
        archs = list(measured)
        costs = cost_axis.of_archs(archs)
        accuracies = np.array([measured[arch][0] for arch in archs])
        axis.scatter(costs, accuracies, s=8, color="0.55", label="measured archs (val)")
        front = pareto_front(costs, accuracies)
        axis.plot(costs[front], accuracies[front], color="0.4", lw=1, label="measured front (val)")
    if result.results[0].strategy != "dnas":  # dnas scores are log-probabilities, not predicted accuracies
        axis.plot(result.front_costs, result.front_scores, color="tab:blue", lw=1, label="predicted front (search)")
    axis.scatter(
        [subnet.mmacs if subnet.latency_ms is None else subnet.latency_ms for subnet in chosen],
        [subnet.val_acc for subnet in chosen],
        color="tab:red",
        zorder=3,
        label="chosen (val)",
    )
    for subnet in chosen:
        axis.axvline(subnet.budget, color="tab:red", lw=0.5, ls=":")
    axis.set_xlabel(cost_axis.label, fontsize=8 if cost_axis.latency is not None else None)
    axis.set_ylabel("accuracy")
    axis.set_title(f"space {space_name}: {len(chosen)} budgets")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------------------------------
# query and export
# ----------------------------------------------------------------------------------------------------


def _arch_to_export(
    run_dir: Path,
    space: SearchSpace,
    num_classes: int,
    arch_file: str | Path | None,
    budget: str | float | None,
    predictor_path: str | Path | None,
    latency_path: str | Path | None,
) -> tuple[Arch, float | None]:
    """The arch of ``arch_file`` (no prediction), or the query's answer within ``budget`` and its predicted
    accuracy; the budget is checked before the checkpoint, the checkpoint before the query."""
    if arch_file is not None:
        try:
            return load_arch(arch_file, space), None
        except ValueError as error:
            named = str(arch_file) in str(error)
            raise ValueError(str(error) if named else f"arch file {arch_file}: {error}") from None
    latency = find_latency_estimator(run_dir, space, latency_path or None) if latency_path is not None else None
    (mac_axis(space, num_classes) if latency is None else latency_axis(latency)).check(budget)
    RunFolder(run_dir).existing_checkpoint("latest")  # before the query: its notes are about these weights
    answer = query_run(run_dir, budget, predictor_path, latency=latency)
    return answer.arch, answer.predicted_acc


def export_from_run(
    run_dir: str | Path,
    arch_file: str | Path | None,
    budget: str | float | None,
    out_dir: str | Path,
    force: bool = False,
    onnx: bool = False,
    predictor_path: str | Path | None = None,
    latency_path: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Export the arch of ``arch_file``, or the best arch within ``budget``, as a standalone subnet.

    With ``latency_path`` (a latency estimator file, or ``""`` for the run's own), ``budget`` is a latency.

    The subnet's BN statistics are recalibrated as for evaluation (once), and the extracted model's val and
    test accuracy (equal to the supernet's, see the exactness tests) are recorded in the export's metadata.
    Everything is checked before the run is loaded.

    Raises:
        ValueError: neither or both of ``arch_file`` and ``budget``, a missing run or checkpoint, an arch
            of another space, a bad budget, or a target that exists (without ``force``) or is not an export.
    """

    if (arch_file is None) == (budget is None):
        raise ValueError("export needs exactly one of an arch file (--arch) and a budget (--flops or --latency)")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    space, num_classes = run_space(run_dir)
    check_export_target(out_dir, force)
    arch, predicted = _arch_to_export(run_dir, space, num_classes, arch_file, budget, predictor_path, latency_path)
    run = load_run(run_dir)
    model = run.calibrated_subnet(arch)  # BN calibrated once; the exported model itself is what is measured
    val = evaluate_model(model, run.val_loader, arch.resolution)
    test = evaluate_model(model, run.test_loader, arch.resolution)
    metadata = {"val_acc": val.accuracy, "test_acc": test.accuracy, "predicted_acc": predicted, "run": str(run_dir)}
    out = run.export(model, arch, out_dir, metadata, force=force, onnx=onnx)
    return out, read_export_info(out)
