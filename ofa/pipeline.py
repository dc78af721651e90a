"""The main job, end to end: train once (predictor-guided BestUp), measure archs, fit, search, export, report.

Every stage keeps its result in the run directory and is skipped or resumed when it is already there, so
running ``ofa run`` again after an interruption continues where it stopped and loses nothing:

1. train the supernet (``checkpoints/``, ``metrics.csv``; resumed from ``latest.pt`` if unfinished);
2. evaluate archs spread over the FLOPs range inside the supernet (``archs.csv``, resumable);
3. fit the final predictor on them (``predictor/final.json``; a held-out quarter scores it first);
4. search the Pareto subnets for the budgets (``search/pareto.*``);
5. export each chosen subnet (``export/<budget>/``) and check the exported model reproduces its test accuracy;
   with ``finetune_epochs``, also fine-tune each one (distilled from the largest subnet) into
   ``export/<budget>-finetuned/`` (resumable; a finished one with the same settings is kept);
6. with latency budgets: time this machine (``latency/``: layer table, timed subnets, table estimator;
   kept and reused on the same device), search them (``search/pareto-latency.*``) and export each chosen
   subnet into ``export/<budget>ms/``;
7. write ``report/`` (``report.md`` and plots) and return the summary table.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ofa.archdata import spread_archs
from ofa.budget import check_budget, smallest_mmacs
from ofa.checkpoint import load_checkpoint
from ofa.config import config_from_dict, load_yaml
from ofa.deploy import search_run
from ofa.evaluate import evaluate_model
from ofa.export import is_export, load_subnet, preprocess, read_export_info
from ofa.finetune import FinetuneSettings, finetune_subnet
from ofa.flops import count_macs_many
from ofa.latency import build_latency_table
from ofa.latency_data import measure_to_csv
from ofa.latency_models import fit_estimator, latency_metrics
from ofa.latency_table import load_latency_table
from ofa.latency_timing import device_fingerprint
from ofa.query import ChosenSubnet, save_run_predictor
from ofa.report import write_report
from ofa.runfolder import RunFolder
from ofa.runlock import run_lock
from ofa.runs import load_run
from ofa.search import SearchSettings
from ofa.space import SearchSpace, load_space
from ofa.train_config import DEFAULT_RUN_CONFIG, TrainConfig, load_train_config
from ofa.trainer import build_data, train
from predictors.metrics import kendall_tau
from predictors.models import create_predictor

if TYPE_CHECKING:
    from ofa.latency_models import LatencyEstimator
    from ofa.runs import LoadedRun
    from predictors.dataset import ArchRecord
    from predictors.models import Predictor

__all__ = [
    "PipelineResult",
    "PipelineSettings",
    "check_same_config",
    "default_budgets",
    "run_pipeline",
    "train_or_continue",
]


@dataclass(frozen=True)
class PipelineSettings:
    """What ``ofa run`` does beyond the training config.

    Attributes:
        num_archs: archs evaluated inside the trained supernet for the final predictor.
        budgets: MMACs budgets; empty: ``num_budgets`` spread geometrically over the space.
        num_budgets: how many budgets to spread when none are given.
        population: evolution population per budget.
        generations: evolution generations per budget.
        finalists: candidates per budget evaluated for real on val.
        holdout: share of the measured archs held out to score the predictor before the final fit.
        onnx: also export ONNX models (checked against onnxruntime).
        seed: seed of arch sampling, the hold-out split, the search and fine-tuning.
        finetune_epochs: fine-tune every exported subnet this many epochs (0: no fine-tuning).
        latency_budgets: latency budgets (``"5ms"``) on this machine (CPU, 1 thread, batch 1); empty: none.
        latency_archs: subnets timed end to end to fit the latency table's correction.
    """

    num_archs: int = 200
    budgets: tuple[float, ...] = ()
    num_budgets: int = 4
    population: int = 100
    generations: int = 30
    finalists: int = 3
    holdout: float = 0.25
    onnx: bool = False
    seed: int = 0
    finetune_epochs: int = 0
    latency_budgets: tuple[float, ...] = ()
    latency_archs: int = 60

    def __post_init__(self) -> None:
        if not all(isinstance(b, float) and math.isfinite(b) and b > 0 for b in self.latency_budgets):
            raise ValueError(f"latency_budgets must be positive finite ms, got {self.latency_budgets!r}")
        if self.latency_archs < 10:
            raise ValueError(f"latency_archs must be >= 10 to fit a latency correction, got {self.latency_archs}")
        if self.num_archs < 16:
            raise ValueError(f"num_archs must be >= 16 to fit and score a predictor, got {self.num_archs}")
        if not 1 <= self.num_budgets <= 10:
            raise ValueError(f"num_budgets must be in 1..10, got {self.num_budgets}")
        if not 0.05 <= self.holdout <= 0.5:
            raise ValueError(f"holdout must be in [0.05, 0.5], got {self.holdout}")
        epochs = self.finetune_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"finetune_epochs must be an integer >= 0, got {self.finetune_epochs!r}")
        if self.population < 4 or self.generations < 0 or self.finalists < 1:
            raise ValueError("population must be >= 4, generations >= 0 and finalists >= 1")


@dataclass
class PipelineResult:
    """The summary of one ``ofa run``."""

    run_dir: Path
    rows: list[dict] = field(default_factory=list)
    predictor_kendall_tau: float = float("nan")
    predictor_holdout_size: int = 0
    val_acc_max: float = float("nan")
    val_acc_min: float = float("nan")
    stage_seconds: dict[str, float] = field(default_factory=dict)
    latency_rows: list[dict] = field(default_factory=list)
    latency_device: str = ""
    latency_fit: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Wall time of all stages."""
        return sum(self.stage_seconds.values())


def default_budgets(space: SearchSpace, num_classes: int, count: int) -> list[float]:
    """``count`` budgets (MMACs, two significant digits) spread geometrically from just above the smallest
    subnet to just below the largest, so each budget leaves the search real choices."""
    low = smallest_mmacs(space, num_classes)
    high = count_macs_many(space, [space.max_arch()], num_classes)[0] / 1e6
    values = [math.sqrt(low * high)] if count == 1 else np.geomspace(low * 1.6, high * 0.8, count).tolist()
    return [float(f"{value:.2g}") for value in values]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_or_continue(config: TrainConfig, progress: bool, prefix: str = "") -> tuple[float, float]:
    """Train, resume an unfinished run, or keep a finished one; returns the final max/min val accuracy.

    An existing run directory must hold a run of the same config (see :func:`check_same_config`).
    """

    check_same_config(config)
    latest = RunFolder(config.run_dir).latest
    if latest.is_file():
        state = load_checkpoint(latest)
        if state["epoch"] >= config.epochs:
            _say(f"{prefix}training: {config.run_dir} is already trained ({state['epoch']} epochs), kept")
            return state["metrics"]["val_acc_max"], state["metrics"]["val_acc_min"]
        _say(f"{prefix}training: resuming {config.run_dir} after epoch {state['epoch']}")
        result = train(config, resume=True, progress=progress)
    else:
        _say(f"{prefix}training the supernet ({config.epochs} epochs) into {config.run_dir}")
        result = train(config, progress=progress)
    return result.val_acc_max, result.val_acc_min


def check_same_config(config: TrainConfig) -> None:
    """An existing run directory must have been made by the same training config (nothing is overwritten)."""
    path = RunFolder(config.run_dir).config
    if not path.is_file():
        return
    previous = config_from_dict(TrainConfig, load_yaml(path))
    if previous != config:
        raise ValueError(
            f"{config.run_dir} holds a run with another training config ({path}): "
            "choose another --name, or delete that folder to start over"
        )


def run_pipeline(
    config_path: str | Path = DEFAULT_RUN_CONFIG,
    overrides: Sequence[str] = (),
    settings: PipelineSettings = PipelineSettings(),
    progress: bool | None = None,
) -> PipelineResult:
    """Run (or continue) the whole train-once deploy-many job; see the module docstring for the stages."""
    config = load_train_config(config_path, tuple(overrides))
    build_data(config, load_space(config.model.space)).require_test()  # the report needs test accuracy
    show = sys.stderr.isatty() if progress is None else progress
    result = PipelineResult(config.run_dir)
    budgets = _budgets(config, settings)  # bad budgets fail before the long stages, not after them
    with run_lock(config.run_dir, "ofa run", create=True):
        return _run_stages(config, settings, budgets, result, show)


def _run_stages(
    config: TrainConfig, settings: PipelineSettings, budgets: list[float], result: PipelineResult, show: bool
) -> PipelineResult:
    """The pipeline's six stages on the locked run folder."""
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.stage_seconds[stage] = now - clock
        clock = now

    result.val_acc_max, result.val_acc_min = train_or_continue(config, show, "[1/6] ")
    lap("train")

    run = load_run(config.run_dir, "latest")  # the final weights (see ofa.runs.load_run)
    records = _measure_spread(run, settings, show)
    lap("evaluate")

    _say("[3/6] fitting the accuracy predictor (a held-out quarter scores it first)")
    predictor, holdout = _fit_predictor(run, records, config.guide.model, settings)
    result.predictor_kendall_tau = holdout["kendall_tau"]
    result.predictor_holdout_size = len(holdout["measured"])
    lap("predictor")

    _say(f"[4/6] searching Pareto subnets for budgets {', '.join(f'{b:g}M' for b in budgets)}")
    search_settings = SearchSettings(
        population=settings.population, generations=settings.generations, seed=settings.seed
    )
    chosen, _ = search_run(run, budgets, predictor, search_settings, settings.finalists, progress=show)
    lap("search")

    _say("[5/6] exporting the chosen subnets and reloading them with ofa.load_subnet")
    exports = _export_all(run, chosen, settings.onnx)
    lap("export")

    result.rows = [
        {**subnet.to_dict(), "export": str(path), "export_test_acc": accuracy}
        for subnet, (path, accuracy) in zip(chosen, exports)
    ]
    if settings.latency_budgets:
        _latency_stage(run, predictor, search_settings, settings, result, show)
        lap("latency")
    if settings.finetune_epochs:
        _say(f"[5/6] fine-tuning the exported subnets for {settings.finetune_epochs} epochs (distilled)")
        for row, subnet in zip(result.rows, chosen):
            row["finetuned_test_acc"] = _finetune_export(run, subnet, settings, show)
        lap("finetune")
    _say("[6/6] writing the report")
    write_report(run.run_dir, result, holdout, config)
    lap("report")
    RunFolder(run.run_dir).summary.write_text(
        json.dumps(
            {"rows": result.rows, "latency_rows": result.latency_rows, "stage_seconds": result.stage_seconds},
            indent=1,
        )
    )
    return result


def _latency_stage(
    run: LoadedRun,
    predictor: Predictor,
    search_settings: SearchSettings,
    settings: PipelineSettings,
    result: PipelineResult,
    show: bool,
) -> None:
    """Latency budgets: this machine's latency estimator, the latency search and the exports of its subnets."""
    estimator, fit = _machine_estimator(run, settings, show)
    result.latency_device, result.latency_fit = estimator.fingerprint.describe(), fit
    budgets = ", ".join(f"{budget:g}ms" for budget in settings.latency_budgets)
    _say(f"[5/6] latency: searching Pareto subnets for latency budgets {budgets} on {result.latency_device}")
    chosen, _ = search_run(
        run, settings.latency_budgets, predictor, search_settings, settings.finalists, progress=show, latency=estimator
    )
    exports = _export_all(run, chosen, settings.onnx)
    result.latency_rows = [
        {**subnet.to_dict(), "export": str(path), "export_test_acc": accuracy}
        for subnet, (path, accuracy) in zip(chosen, exports)
    ]


def _machine_estimator(run: LoadedRun, settings: PipelineSettings, show: bool) -> tuple[LatencyEstimator, dict]:
    """The table estimator of this machine (CPU, 1 thread, batch 1) in ``RUN/latency/``: the table and the
    timed subnets found there are reused when they were timed on this device; another device's are refused."""

    fingerprint = device_fingerprint()
    run_folder = RunFolder(run.run_dir)
    folder, table_path, timed_path = run_folder.latency_folder, run_folder.latency_table, run_folder.latency_timed
    try:
        if table_path.is_file():
            _say(f"[5/6] latency: reusing {table_path}")
            table = load_latency_table(table_path, run.space, fingerprint)
        else:
            _say(f"[5/6] latency: timing every layer of space {run.space.name} on {fingerprint.describe()}")
            folder.mkdir(parents=True, exist_ok=True)
            table = build_latency_table(run.space, run.num_classes, fingerprint, table_path, progress=show)
        records = measure_to_csv(
            run.space, settings.latency_archs, run.num_classes, settings.seed, fingerprint, timed_path, progress=show
        )
    except ValueError as error:
        raise ValueError(f"{error} (delete {folder} to time this machine anew)") from None
    archs, latencies = [record.arch for record in records], [record.latency_ms for record in records]
    estimator = fit_estimator("table", run.space, run.num_classes, fingerprint, archs, latencies, table)
    estimator.save(run_folder.latency_estimator)
    return estimator, latency_metrics(latencies, estimator.predict(archs))


def _measure_spread(run: LoadedRun, settings: PipelineSettings, show: bool) -> list[ArchRecord]:
    """Stage 2: ``settings.num_archs`` archs spread over the FLOPs range measured into ``RUN/archs.csv``
    (rows made on these weights are reused); returns the rows of the run's own calibration seed."""
    _say(f"[2/6] evaluating {settings.num_archs} archs spread over the FLOPs range (BN recalibrated each)")
    archs = spread_archs(run.space, settings.num_archs, run.num_classes, settings.seed)
    return run.measure_into(RunFolder(run.run_dir).arch_data, archs, progress=show)


def _budgets(config: TrainConfig, settings: PipelineSettings) -> list[float]:
    """The checked budgets (MMACs): the given ones, or ``num_budgets`` spread over the config's space."""
    space = load_space(config.model.space)
    num_classes = build_data(config, space).num_classes
    if settings.budgets:
        return [check_budget(space, budget, num_classes) for budget in settings.budgets]
    return default_budgets(space, num_classes, settings.num_budgets)


def _fit_predictor(
    run: LoadedRun, records: list[ArchRecord], model: str, settings: PipelineSettings
) -> tuple[Predictor, dict[str, object]]:
    """Score a predictor fitted on 1 - ``holdout`` of the records on the rest, then fit the final one on all."""
    order = list(range(len(records)))
    random.Random(settings.seed).shuffle(order)
    cut = round(len(order) * settings.holdout)
    held, fit = order[:cut], order[cut:]
    archs = [record.arch for record in records]
    accuracies = np.array([record.val_acc for record in records])
    scored = create_predictor(model, run.space, seed=settings.seed, num_classes=run.num_classes)
    scored.fit([archs[i] for i in fit], accuracies[fit])
    predicted = scored.predict([archs[i] for i in held])
    holdout = {
        "measured": accuracies[held].tolist(),
        "predicted": predicted.tolist(),
        "mmacs": [records[i].mmacs for i in held],
        "kendall_tau": kendall_tau(accuracies[held], predicted),
        "model": model,
        "train_size": len(fit),
    }
    final = create_predictor(model, run.space, seed=settings.seed, num_classes=run.num_classes)
    final.fit(archs, accuracies)
    save_run_predictor(run.run_dir, final)
    return final, holdout


def _finetune_export(run: LoadedRun, subnet: ChosenSubnet, settings: PipelineSettings, show: bool) -> float | None:
    """Fine-tune one chosen subnet into ``RUN/export/<budget>M-finetuned``; returns its test accuracy.

    A finished fine-tune of the same arch, epochs and seed is kept; an unfinished one is continued.
    """

    out = RunFolder(run.run_dir).export(subnet.budget, finetuned=True)
    finetune = FinetuneSettings(epochs=settings.finetune_epochs, distill=True, seed=settings.seed)
    if is_export(out):
        info = read_export_info(out)
        metadata = info.get("metadata") or {}
        wanted = {"training": "finetune", "epochs": finetune.epochs, "distill": 1, "seed": finetune.seed}
        if info["arch"] == subnet.arch.to_dict() and all(metadata.get(k) == v for k, v in wanted.items()):
            return metadata.get("test_acc")
    if out.exists() and not is_export(out):
        shutil.rmtree(out)  # a half-written folder of an interrupted earlier export
    result = finetune_subnet(run, subnet.arch, finetune, out, force=True, onnx=settings.onnx, progress=show)
    return result.test_acc


def _export_all(run: LoadedRun, chosen: list[ChosenSubnet], onnx: bool) -> list[tuple[Path, float]]:
    """Export every chosen subnet into ``RUN/export/<budget>M`` and measure the reloaded model's test accuracy."""
    exports = []
    for subnet in chosen:
        out = RunFolder(run.run_dir).export(subnet.budget, unit=subnet.unit)
        model = run.calibrated_subnet(subnet.arch)
        metadata = {
            "val_acc": subnet.val_acc,
            "test_acc": subnet.test_acc,
            "predicted_acc": subnet.predicted_acc,
            f"budget_{subnet.unit}": subnet.budget,
            "run": str(run.run_dir),
        }
        if subnet.latency_ms is not None:
            metadata["latency_ms"] = subnet.latency_ms
        if out.exists() and not is_export(out):
            shutil.rmtree(out)  # a half-written folder of an interrupted earlier export
        run.export(model, subnet.arch, out, metadata, force=True, onnx=onnx)
        loaded = load_subnet(out)
        # the user's path: images in [0, 1] (the test split with its normalisation undone) -> preprocess
        mean = torch.tensor(run.data.mean).view(1, -1, 1, 1)
        std = torch.tensor(run.data.std).view(1, -1, 1, 1)
        batches = ((preprocess(loaded, images * std + mean), labels) for images, labels in run.test_loader)
        accuracy = evaluate_model(loaded, batches, subnet.arch.resolution).accuracy
        exports.append((out, accuracy))
    return exports
