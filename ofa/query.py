"""The light side of a trained run: its space, its accuracy predictor, its measured archs, and queries.

Nothing here loads torch or the supernet (``ofa query`` and budget checks start fast): they read
``RUN/space.json``, the run's fitted predictor (``RUN/predictor/final.json``, refitted when ``RUN/archs.csv``
changed) and the measurements of ``RUN/archs.csv`` and ``RUN/search/`` that were made on the run's current
weights. Searching with real evaluation and exporting are in :mod:`ofa.deploy`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ofa.atomic import file_sha256
from ofa.cost_axis import CostAxis, latency_axis, mac_axis
from ofa.flops import DEFAULT_NUM_CLASSES, count_macs, count_params
from ofa.latency_models import LatencyEstimator, load_estimator
from ofa.runfolder import (
    RESULT_FILE_MODE,
    RunFolder,
    read_run_space,
    read_source_record,
    source_record_path,
    write_result,
)
from ofa.search import SearchSettings, evolutionary_search
from ofa.space import Arch, SearchSpace
from ofa.train_config import TrainConfig, load_train_config
from predictors.dataset import read_arch_csv
from predictors.models import create_predictor, load_predictor

if TYPE_CHECKING:
    from predictors.models import Predictor

__all__ = [
    "ChosenSubnet",
    "find_latency_estimator",
    "find_predictor",
    "measured_archs",
    "query_run",
    "save_run_predictor",
]


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
    write_result(source_record_path(folder.final_predictor), json.dumps(fitted_on) + "\n")


def _calibration_seed(run_dir: Path) -> int:
    """The BN-calibration seed of the run's config (``run.evaluate`` measures with it); 0 without a config."""
    path = RunFolder(run_dir).config
    return load_train_config(path).calibration.seed if path.is_file() else 0


def _is_current(path: Path, recorded: object, source: Mapping[str, object], remedy: str) -> bool:
    """Whether the measurements of ``path`` were made on the run's current weights and calibration (``source``,
    see :meth:`ofa.train_config.TrainConfig.measurement_source`); a note on stderr when not."""
    if recorded == dict(source):
        return True
    print(f"{path}: measured on other weights or calibration than the run's; {remedy}", file=sys.stderr)
    return False


def measured_archs(run_dir: Path, space: SearchSpace, source: Mapping[str, object]) -> dict[Arch, tuple[float, float]]:
    """Val and test accuracy of every arch in ``RUN/archs.csv`` measured with the run's calibration seed
    (what ``run.evaluate`` would measure; repeated measurements with other seeds are left out).

    Rows measured on other weights or calibration than the run's current ``source`` (another recorded source,
    or none) are stale: none is returned, with a note.
    """
    data = RunFolder(run_dir).arch_data
    if not data.is_file():
        return {}
    if not _is_current(data, read_source_record(data), source, f"not reused (`ofa evaluate {run_dir}` measures again)"):
        return {}
    seed = _calibration_seed(run_dir)
    known: dict[Arch, tuple[float, float]] = {}
    for record in read_arch_csv(data, space):
        if record.seed == seed:
            known.setdefault(record.arch, (record.val_acc, record.test_acc))
    return known


def find_latency_estimator(run_dir: str | Path, space: SearchSpace, path: str | Path | None) -> LatencyEstimator:
    """The latency estimator for budgets: ``path``, else the run's own (``RUN/latency/estimator.json``).

    Raises:
        ValueError: no estimator, or one of another space.
    """
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
    measured = saved_accuracies.get(best_arch) or measured_archs(run_dir, space, source).get(best_arch)
    val_acc, test_acc = measured or (None, None)
    return ChosenSubnet(
        budget=budget_value,
        arch=best_arch,
        mmacs=count_macs(space, best_arch, num_classes) / 1e6,
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
    if not _is_current(path, data.get("measurement_source"), source, "accuracies not reused"):
        return archs, {}
    return archs, dict(chosen)
