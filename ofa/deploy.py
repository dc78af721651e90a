"""Deploy many: Pareto-optimal subnets of a trained run for FLOPs or latency budgets, queries, export.

The accuracy predictor of the run guides an evolutionary search per budget (fast path, once-for-all,
Cai et al., ICLR 2020); the best ``finalists`` candidates per budget are then really evaluated inside the
supernet (BN recalibrated) on val, the one with the best val accuracy is chosen and its test accuracy
reported. Results are written to ``RUN/search/pareto.json``, ``pareto.csv`` and ``pareto.png``; the same
run, predictor, budgets and settings give byte-identical ``pareto.json`` and ``pareto.csv``. Latency budgets
(a latency estimator of :mod:`ofa.latency_models`) write ``pareto-latency.*`` beside them
(:mod:`ofa.cost_axis`).

Queries and budget checks need neither torch nor the supernet: they read ``RUN/space.json`` and the
run's fitted predictor (``RUN/predictor/final.json``, refitted only when ``RUN/archs.csv`` is newer).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm import tqdm

from ofa._genome import genome_of
from ofa.atomic import atomic_write_text, file_sha256
from ofa.budget import TOLERANCE as BUDGET_TOLERANCE
from ofa.cost_axis import CostAxis, latency_axis, mac_axis
from ofa.flops import DEFAULT_NUM_CLASSES, count_macs_many, count_params
from ofa.pareto import pareto_front
from ofa.runfolder import CHECKPOINT_NAMES, RunFolder, read_source_record, source_record_path
from ofa.search import MultiBudgetResult, SearchSettings, evolutionary_search, search_budgets
from ofa.space import Arch, SearchSpace, load_arch
from ofa.train_config import TrainConfig, load_train_config
from predictors.dataset import read_arch_csv
from predictors.models import create_predictor, load_predictor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ofa.evaluate import Evaluation
    from ofa.latency_models import LatencyEstimator
    from ofa.search_dnas import DnasSearch
    from predictors.models import Predictor

__all__ = [
    "PARETO_COLUMNS",
    "ChosenSubnet",
    "MeasurableRun",
    "capped_settings",
    "dnas_search_for_run",
    "export_from_run",
    "find_latency_estimator",
    "find_predictor",
    "pareto_figure",
    "query_run",
    "read_run_space",
    "save_run_predictor",
    "search_run",
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
RESULT_FILE_MODE = 0o644


@dataclass(frozen=True)
class ChosenSubnet:
    """The answer for one budget (in MMACs, or in ms when ``latency_ms`` is set)."""

    budget: float
    arch: Arch
    mmacs: float
    params: int
    predicted_acc: float
    val_acc: float | None = None
    test_acc: float | None = None
    latency_ms: float | None = None

    @property
    def unit(self) -> str:
        """``mmacs`` or ``latency_ms``: what the budget limits."""
        return "mmacs" if self.latency_ms is None else "latency_ms"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        data = {
            f"budget_{self.unit}": self.budget,
            "arch": self.arch.to_dict(),
            "arch_short": self.arch.short(),
            "mmacs": self.mmacs,
            "params": self.params,
            "predicted_acc": self.predicted_acc,
            "val_acc": self.val_acc,
            "test_acc": self.test_acc,
        }
        if self.latency_ms is not None:
            data["latency_ms"] = self.latency_ms
        return data


# ----------------------------------------------------------------------------------------------------
# the run directory: space, predictor, measured archs
# ----------------------------------------------------------------------------------------------------


def read_run_space(run_dir: str | Path) -> tuple[SearchSpace, int]:
    """The space and class count of a run.

    Read from ``RUN/space.json`` (written when training starts); a run without it (trained by an older
    version) has them read from its checkpoint once, and ``space.json`` is written for the next call.

    Raises:
        ValueError: a missing folder, or one that holds neither ``space.json`` nor a checkpoint.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    path = folder.space
    if not run_dir.is_dir():
        raise ValueError(f"run directory not found: {run_dir}")
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return SearchSpace.from_dict(data["space"], source=str(path)), int(data["num_classes"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is malformed ({type(error).__name__}: {error}); delete it to reread it") from None
    checkpoints = [folder.checkpoint(name) for name in CHECKPOINT_NAMES]
    existing = [checkpoint for checkpoint in checkpoints if checkpoint.is_file()]
    if not existing:
        raise ValueError(f"{run_dir} is not a training run (no {path.name} and no checkpoint): train it first")
    from ofa.checkpoint import load_checkpoint  # torch: only for runs without space.json

    state = load_checkpoint(existing[0])
    space = SearchSpace.from_dict(state["space"], source=f"checkpoint {existing[0]}")
    num_classes = int(state["num_classes"])
    with contextlib.suppress(OSError):  # a read-only run directory still answers, only slower
        _write_result(path, json.dumps({"space": state["space"], "num_classes": num_classes}, indent=1) + "\n")
    return space, num_classes


def _write_result(path: Path, text: str) -> None:
    """Write a result file atomically, readable like the rest of the run (the temp file is private)."""
    atomic_write_text(path, text)
    path.chmod(RESULT_FILE_MODE)


def find_predictor(
    run_dir: str | Path,
    space: SearchSpace,
    path: str | Path | None = None,
    model: str = "lightgbm",
    num_classes: int = DEFAULT_NUM_CLASSES,
) -> Predictor:
    """The predictor to search with: ``path``; else ``RUN/predictor/final.json`` if it was fitted on the current
    ``RUN/archs.csv`` (its digest is recorded beside it); else one fitted on ``RUN/archs.csv`` and saved as
    ``RUN/predictor/final.json`` for the next call.

    Raises:
        ValueError: a predictor file of another space, or a run without predictor and without arch data.
    """

    run_dir = Path(run_dir)
    if path is not None:
        return load_predictor(path, space)
    folder = RunFolder(run_dir)
    final, data = folder.final_predictor, folder.arch_data
    fitted_on = {"arch_data_sha256": file_sha256(data)} if data.is_file() else None
    if final.is_file() and (fitted_on is None or read_source_record(final) == fitted_on):
        return load_predictor(final, space)
    if not data.is_file():
        raise ValueError(
            f"{run_dir} has no accuracy predictor ({final}) and no arch data ({data}): "
            f"run `ofa evaluate {run_dir}` first, or pass --predictor FILE"
        )
    records = read_arch_csv(data, space)
    if len(records) < 2:
        raise ValueError(f"{data} holds {len(records)} measured arch(s); a predictor needs at least 2")
    predictor = create_predictor(model, space, num_classes=num_classes)
    predictor.fit([record.arch for record in records], np.array([record.val_acc for record in records]))
    save_run_predictor(run_dir, predictor)
    return predictor


def save_run_predictor(run_dir: str | Path, predictor: Predictor) -> None:
    """Save ``predictor`` as the run's ``RUN/predictor/final.json``, fitted on the current ``RUN/archs.csv``
    (whose digest is recorded beside it, so :func:`find_predictor` reuses it until the arch data changes)."""
    folder = RunFolder(Path(run_dir))
    predictor.save(folder.final_predictor)
    folder.final_predictor.chmod(RESULT_FILE_MODE)
    fitted_on = {"arch_data_sha256": file_sha256(folder.arch_data)} if folder.arch_data.is_file() else {}
    atomic_write_text(source_record_path(folder.final_predictor), json.dumps(fitted_on) + "\n")


def _calibration_seed(run_dir: Path) -> int:
    """The BN-calibration seed of the run's config (``run.evaluate`` measures with it); 0 without a config."""
    path = RunFolder(run_dir).config
    return load_train_config(path).calibration.seed if path.is_file() else 0


def _measured(
    run_dir: Path, space: SearchSpace, source: Mapping[str, object] | None = None
) -> dict[Arch, tuple[float, float]]:
    """Val and test accuracy of every arch in ``RUN/archs.csv`` measured with the run's calibration seed
    (what ``run.evaluate`` would measure; repeated measurements with other seeds are left out).

    Given the run's current ``source`` (:attr:`ofa.runs.LoadedRun.measurement_source`), rows measured on other
    weights or calibration (another recorded source, or none) are stale: none is returned, with a note.
    """
    data = RunFolder(run_dir).arch_data
    if not data.is_file():
        return {}
    if source is not None and read_source_record(data) != dict(source):
        print(
            f"{data}: measured on other weights or calibration than the run's; not reused "
            f"(`ofa evaluate {run_dir}` measures again)",
            file=sys.stderr,
        )
        return {}
    seed = _calibration_seed(run_dir)
    known: dict[Arch, tuple[float, float]] = {}
    for record in read_arch_csv(data, space):
        if record.seed == seed:
            known.setdefault(record.arch, (record.val_acc, record.test_acc))
    return known


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
    dnas = dnas_search_for_run(run) if strategy == "dnas" else None
    arguments = (settings, run.num_classes, strategy, per_budget, latency, dnas)
    result = search_budgets(run.space, predictor, budgets, *arguments)
    measured = _measured(run.run_dir, run.space, run.measurement_source)
    chosen, made = _choose_measured(run, result, predictor, finalists, progress, axis, dict(measured))
    summary = {
        "space": run.space.name,
        "objective": axis.unit,
        **({} if latency is None else {"device": latency.fingerprint.to_dict(), "estimator": latency.kind}),
        "strategy": strategy,
        "predictor_queries": result.num_evaluations,
        "supernet_measurements": made,
        "measurement_source": dict(run.measurement_source),  # a query reuses the accuracies only if it matches
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
    _write_result(folder.search_result(axis.file_stem, "json"), json.dumps(summary, indent=1) + "\n")
    _write_result(folder.search_result(axis.file_stem, "csv"), _pareto_csv(chosen, axis))
    if plot_predictor is not None:
        cloud = _random_cloud(run.space, run.num_classes, plot_predictor, axis)
        figure = pareto_figure(chosen, result, cloud, measured, axis, run.space.name)
        folder.search_folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder.search_result(axis.file_stem, "png"), dpi=120)


DNAS_BATCH = 64  # images per differentiable-search step


def dnas_search_for_run(run: MeasurableRun) -> DnasSearch:
    """The supernet and the run's val images in batches of ``DNAS_BATCH`` (where the finalists are judged)."""
    import torch  # torch-using code is imported where it is used: ofa query never loads torch

    from ofa.search_dnas import DnasSearch

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


def capped_settings(
    settings: SearchSettings, strategy: str, max_queries: int | None
) -> tuple[SearchSettings, int | None]:
    """The settings and the queries per budget of random and rl under a cap of ``max_queries`` per budget."""
    if max_queries is None:
        return settings, None
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
        raise ValueError(f"max_queries must be an integer >= 1, got {max_queries!r}")
    if strategy == "dnas":
        raise ValueError(f"max_queries {max_queries}: dnas makes no predictor queries (it searches the supernet)")
    if strategy != "evolution":
        return settings, max_queries
    generations = max_queries // settings.population - 1
    if generations < 0:
        raise ValueError(
            f"max_queries {max_queries} is below one population ({settings.population}): lower the population"
        )
    return replace(settings, generations=min(settings.generations, generations)), None


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # figures only: 0.3 s of imports
    from matplotlib.figure import Figure

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


def find_latency_estimator(run_dir: str | Path, space: SearchSpace, path: str | Path | None) -> LatencyEstimator:
    """The latency estimator for budgets: ``path``, else the run's own (``RUN/latency/estimator.json``).

    Raises:
        ValueError: no estimator, or one of another space.
    """
    from ofa.latency_models import load_estimator  # torch: only for latency budgets

    own = RunFolder(Path(run_dir)).latency_estimator
    if path is None and not own.is_file():
        raise ValueError(
            f"latency budgets need a latency estimator: pass --latency-model FILE (ofa latency fit) or "
            f"let `ofa run --latency` build one ({own} does not exist)"
        )
    return load_estimator(own if path is None else path, space)


def query_run(
    run_dir: str | Path,
    budget: str | float,
    predictor_path: str | Path | None = None,
    settings: SearchSettings | None = None,
    latency: LatencyEstimator | None = None,
) -> ChosenSubnet:
    """The best arch within one budget, by the predictor.

    A quick predictor-guided evolutionary search (``settings``, default :class:`SearchSettings`) answers,
    unless the run's saved search (of the same cost) chose an arch within the budget that the predictor
    scores at least as high. Val and test accuracy are reported when the arch was measured on the run's final
    weights and calibration (a saved search or ``RUN/archs.csv`` of older weights is not trusted). The budget
    is checked before the predictor is loaded. With ``latency``, the budget is a latency (``"5ms"``) of
    the estimator.

    Raises:
        ValueError: a missing run, a malformed budget or one below the smallest (fastest) subnet, or a
            predictor or estimator of another space.
    """
    run_dir = Path(run_dir)
    space, num_classes = read_run_space(run_dir)
    axis = mac_axis(space, num_classes) if latency is None else latency_axis(latency)
    budget_value = axis.check(budget)
    predictor = find_predictor(run_dir, space, predictor_path, num_classes=num_classes)
    result = evolutionary_search(space, predictor, budget_value, settings, num_classes, latency)
    source = _latest_source(run_dir)
    saved, saved_accuracies = _saved_choices(run_dir, space, axis, source)
    best_arch, best_predicted = result.best_arch, result.best_score
    if saved:
        fitting = [arch for arch, cost in zip(saved, axis.of_archs(saved)) if cost <= budget_value]
        if fitting:
            predicted = np.asarray(predictor.predict(fitting), dtype=np.float64)
            index = int(np.argmax(predicted))
            if predicted[index] >= best_predicted:
                best_arch, best_predicted = fitting[index], float(predicted[index])
    measured = saved_accuracies.get(best_arch) or _measured(run_dir, space, source).get(best_arch)
    val_acc, test_acc = measured or (None, None)
    return ChosenSubnet(
        budget=budget_value,
        arch=best_arch,
        mmacs=float(count_macs_many(space, [best_arch], num_classes)[0]) / 1e6,
        params=count_params(space, best_arch, num_classes),
        predicted_acc=float(best_predicted),
        val_acc=val_acc,
        test_acc=test_acc,
        latency_ms=None if latency is None else float(axis.of_archs([best_arch])[0]),
    )


def _latest_source(run_dir: Path) -> dict[str, object]:
    """The measurement source of the run's final weights (``latest``; what ``ofa search`` and ``ofa evaluate``
    measure by default), read without loading the weights."""
    folder = RunFolder(run_dir)
    latest = folder.checkpoint("latest")
    config = load_train_config(folder.config) if folder.config.is_file() else TrainConfig()
    return config.measurement_source(latest if latest.is_file() else None)


def _saved_choices(
    run_dir: Path, space: SearchSpace, axis: CostAxis, source: Mapping[str, object]
) -> tuple[list[Arch], dict[Arch, tuple[float | None, float | None]]]:
    """The chosen archs of the run's saved search of this cost (``RUN/search/STEM.json``), and their accuracies
    when they were measured on the run's current weights and calibration (``source``); stale ones are left out
    with a note."""
    path = RunFolder(run_dir).search_result(axis.file_stem, "json")
    if not path.is_file():
        return [], {}
    try:
        data = json.loads(path.read_text())
        chosen = [(space.arch_from_dict(item["arch"]), (item["val_acc"], item["test_acc"])) for item in data["chosen"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path} is malformed or of another space ({type(error).__name__}: {error}); "
            "run `ofa search` again or delete it"
        ) from None
    archs = [arch for arch, _ in chosen]
    if data.get("measurement_source") != dict(source):
        print(
            f"{path}: measured on other weights or calibration than the run's; accuracies not reused", file=sys.stderr
        )
        return archs, {}
    return archs, dict(chosen)


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
    from ofa.evaluate import evaluate_model  # torch: exporting loads the supernet, querying does not
    from ofa.export import check_export_target, read_export_info
    from ofa.runs import load_run

    if (arch_file is None) == (budget is None):
        raise ValueError("export needs exactly one of an arch file (--arch) and a budget (--flops or --latency)")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    space, num_classes = read_run_space(run_dir)
    check_export_target(out_dir, force)
    arch, predicted = _arch_to_export(run_dir, space, num_classes, arch_file, budget, predictor_path, latency_path)
    run = load_run(run_dir)
    model = run.calibrated_subnet(arch)  # BN calibrated once; the exported model itself is what is measured
    val = evaluate_model(model, run.val_loader, arch.resolution)
    test = evaluate_model(model, run.test_loader, arch.resolution)
    metadata = {"val_acc": val.accuracy, "test_acc": test.accuracy, "predicted_acc": predicted, "run": str(run_dir)}
    out = run.export(model, arch, out_dir, metadata, force=force, onnx=onnx)
    return out, read_export_info(out)
