"""The training run: data, supernet, sampler, epochs, evaluation, run directory, checkpoints, resume.

A run directory holds ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch), ``archs.jsonl``
(the subnets trained at every step), TensorBoard events under ``tensorboard/``, and
``checkpoints/latest.pt`` and ``checkpoints/best.pt``, written atomically.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ofa.channel_sort import sort_channels
from ofa.checkpoint import load_checkpoint, save_checkpoint_pair
from ofa.config import config_from_dict, config_to_dict
from ofa.data import DataBundle, build_datasets, calibration_images
from ofa.distributed import DistributedContext, init_distributed
from ofa.evaluate import Evaluation, evaluate_arch
from ofa.guide import PredictorGuide
from ofa.progressive import Schedule, build_schedule
from ofa.runfolder import RUN_FORMAT, RunFolder, write_run_space
from ofa.runlock import run_lock
from ofa.sampling import (
    AttentiveSampler,
    FlopsTargetSampler,
    UniformSampler,
    default_flops_bin_mmacs,
    load_or_build_flops_table,
)
from ofa.space import Arch, SearchSpace, load_space
from ofa.supernet import Supernet
from ofa.train import (
    StepSettings,
    TrainingDivergedError,
    build_optimizer,
    build_scheduler,
    loss_scorer,
    progressive_step,
    python_rng_state,
    sandwich_step,
    set_python_rng_state,
)
from ofa.train_config import OptimSection, TrainConfig
from predictors.models import load_predictor

__all__ = ["METRIC_COLUMNS", "TrainResult", "build_data", "train", "write_run_description"]

METRIC_COLUMNS = (
    "epoch",
    "loss_max",
    "loss_sampled",
    "loss_min",
    "val_acc_max",
    "val_acc_min",
    "val_loss_max",
    "val_loss_min",
    "lr",
    "images_per_s",
    "epoch_seconds",
    "sampler",
    "distinct_archs",
)


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    epochs: int
    val_acc_max: float
    val_acc_min: float
    seconds: float
    trained_archs: list[list[Arch]] = field(default_factory=list)  # the sampled archs of every step run
    supernet: Supernet | None = field(default=None, repr=False)  # the trained weights (every rank has them)


def build_data(config: TrainConfig, space: SearchSpace) -> DataBundle:
    """The data sets of a config, produced at the space's largest resolution unless set."""
    size = max(space.resolution) if config.data.image_size is None else config.data.image_size
    return build_datasets(dataclasses.replace(config.data, image_size=size), seed=config.seed)


def _check_resume_space(state: dict, space: SearchSpace, path: Path) -> None:
    if state["space"] != space.to_dict():
        trained = state["space"].get("name")
        which = f"another definition of space {space.name!r}" if trained == space.name else f"space {trained!r}"
        raise ValueError(
            f"cannot resume {path}: it was trained on {which}, the config asks for space {space.name!r}; "
            "resume with the run's own config or start a new run (another name)"
        )


RESUMABLE_CHANGES = ("epochs", "out_dir", "cpu_threads", "device", "data.root", "data.workers", "data.eval_batch_size")


def _flat(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume_config(state: dict, config: TrainConfig, path: Path) -> None:
    """``--resume`` continues the same run: only ``RESUMABLE_CHANGES`` may differ from the checkpoint's
    config (a longer ``epochs``, where the data lies, threads and device); anything else is one line listing
    every difference."""
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"cannot resume {path}: it holds no training config (not written by ofa train)")
    saved = _flat(config_to_dict(config_from_dict(TrainConfig, state["config"])))  # keys added since: defaults
    wanted = _flat(config_to_dict(config))
    changed = [key for key in sorted(saved.keys() | wanted.keys()) if saved.get(key) != wanted.get(key)]
    refused = [key for key in changed if key not in RESUMABLE_CHANGES]
    if refused:
        diff = ", ".join(f"{key} {saved.get(key)!r} -> {wanted.get(key)!r}" for key in refused)
        raise ValueError(
            f"cannot resume {path} with another config ({diff}); only {', '.join(RESUMABLE_CHANGES)} may change: "
            "start a new run (another name) instead"
        )
    if config.progressive.enabled and config.epochs != saved["epochs"]:
        raise ValueError(
            f"cannot resume {path} with epochs {config.epochs}: progressive phases split the run's epochs "
            f"({saved['epochs']}), so they cannot change; start a new run (another name) instead"
        )
    if config.epochs < state["epoch"]:
        raise ValueError(
            f"cannot resume {path}: it has trained {state['epoch']} epochs, the config asks {config.epochs}"
        )


def _check_resume_classes(state: dict, num_classes: int, path: Path) -> None:
    if state["num_classes"] != num_classes:
        raise ValueError(f"cannot resume {path}: it has {state['num_classes']} classes, the data has {num_classes}")


class _ArchSource:
    """Chooses the sampled subnets of each step according to the config and the training phase."""

    def __init__(self, config: TrainConfig, space: SearchSpace, num_classes: int, cache_dir: Path) -> None:
        section = config.sampler
        self.config = config
        self.uniform = UniformSampler(space)
        self.flops: FlopsTargetSampler | None = None
        self.attentive: AttentiveSampler | None = None
        if section.name != "uniform":
            width = section.flops_bin_mmacs or default_flops_bin_mmacs(space, num_classes)
            table_path = cache_dir / f"flops_table_{space.name}_{num_classes}c_{section.flops_samples}_{width:.6g}.json"
            table = load_or_build_flops_table(table_path, space, num_classes, section.flops_samples, width, seed=0)
            self.flops = FlopsTargetSampler(space, table, num_classes, section.max_tries)
        if section.name in ("bestup", "worstup"):
            pick = "best" if section.name == "bestup" else "worst"
            self.attentive = AttentiveSampler(self.flops, section.num_candidates, pick)

    def sample(
        self,
        rng: random.Random,
        count: int,
        batch_scorer: Callable[[], Callable[[Sequence[Arch]], np.ndarray]],
        predictor_scorer: Callable[[Sequence[Arch]], np.ndarray] | None,
        warming_up: bool,
    ) -> list[Arch]:
        """``count`` sampled archs for one step."""
        if warming_up or self.config.sampler.name == "uniform":
            return [self.uniform.sample(rng) for _ in range(count)]
        if self.attentive is None:
            return [self.flops.sample(rng) for _ in range(count)]
        if self.config.sampler.scorer == "predictor":
            if predictor_scorer is None:
                raise ValueError("sampler.scorer is 'predictor' but no predictor is available")
            return [self.attentive.sample(rng, predictor_scorer) for _ in range(count)]
        scorer = batch_scorer()
        return [self.attentive.sample(rng, scorer) for _ in range(count)]


def _write_metrics(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_logs(folder: RunFolder, epochs_done: int) -> None:
    """Drop the ``metrics.csv`` rows and ``archs.jsonl`` lines of epochs after the checkpoint.

    A run killed after logging an epoch but before saving its checkpoint repeats that epoch on resume,
    and a fresh run (``epochs_done`` 0) must not continue the logs of an attempt that saved nothing.
    """
    metrics = folder.metrics
    if metrics.is_file():
        with metrics.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if _row_epoch(row) <= epochs_done]
        with metrics.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    archs = folder.trained_archs
    if archs.is_file():
        kept = [line for line in archs.read_text().splitlines() if _complete_line_epoch(line) <= epochs_done]
        archs.write_text("".join(line + "\n" for line in kept))


def _row_epoch(row: dict) -> float:
    """The epoch of one ``metrics.csv`` row; a row cut short by a crash counts as after every epoch."""
    try:
        return int(row["epoch"]) if row.get(METRIC_COLUMNS[-1]) not in (None, "") else float("inf")
    except (ValueError, TypeError):
        return float("inf")


def _complete_line_epoch(line: str) -> float:
    """The epoch of one ``archs.jsonl`` line; a line cut short by a crash counts as after every epoch."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def train(config: TrainConfig, resume: bool = False, progress: bool | None = None) -> TrainResult:
    """Train a supernet as ``config`` says; with ``resume`` continue the run in ``config.run_dir`` exactly.

    Every input is checked before the first step: bad values raise ``ValueError``. A NaN or infinite loss
    (or weights) raises :class:`~ofa.train.TrainingDivergedError`; the last good checkpoint is kept. The
    run folder is locked while training (rank 0 under torchrun): a second writer gets a one-line error.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return _train(config, resume, progress)
    with run_lock(config.run_dir, "ofa train", create=True):
        return _train(config, resume, progress)


@dataclass
class _Training:
    """Everything one run trains with, built by :func:`_prepare` before the first step."""

    config: TrainConfig
    context: DistributedContext
    space: SearchSpace
    folder: RunFolder
    data: DataBundle
    supernet: Supernet
    rng: random.Random
    archs_source: _ArchSource | None  # None under progressive shrinking (uniform within each phase's space)
    guide: PredictorGuide | None
    predictor_scorer: Callable[[Sequence[Arch]], np.ndarray] | None
    sampler: DistributedSampler
    loader: DataLoader
    loader_generator: torch.Generator  # worker seeds; reseeded every epoch for exact resume
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    calibration: list[torch.Tensor]
    val_loader: DataLoader
    guide_val_loader: DataLoader
    settings: StepSettings
    start_epoch: int = 0
    best_accuracy: float = -1.0
    resumed_metrics: dict | None = None  # the last epoch's metrics of a resumed checkpoint
    schedule: Schedule | None = None  # progressive shrinking's phases (None: the sandwich rule)
    phase: int = 0  # the phase the optimizer and scheduler belong to
    teacher: Supernet | None = None  # progressive shrinking: the frozen full network of the first phase

    @functools.cached_property
    def ends(self) -> tuple[Arch, Arch]:
        """The largest and smallest subnets (the sandwich's first and last slots)."""
        return self.space.max_arch(), self.space.min_arch()


def _train(config: TrainConfig, resume: bool, progress: bool | None) -> TrainResult:
    """Setup, then per epoch: train, evaluate the largest and smallest subnets, log, checkpoint."""
    started = time.perf_counter()
    training = _prepare(config, resume)
    context, folder = training.context, training.folder
    show = context.is_main and (sys.stderr.isatty() if progress is None else progress)
    writer = SummaryWriter(str(folder.tensorboard)) if context.is_main else None
    trained: list[list[Arch]] = []
    resumed = training.resumed_metrics or {}  # nothing left to train after a resume: its last figures
    final = (resumed.get("val_acc_max", 0.0), resumed.get("val_acc_min", 0.0))
    epoch, epoch_archs = training.start_epoch, []
    try:
        for epoch in range(training.start_epoch, config.epochs):
            epoch_started = time.perf_counter()
            epoch_archs = []
            warming_up, sums = _train_epoch(training, epoch, epoch_archs, show)
            _check_finite_weights(training.supernet)
            row, last = _evaluate_epoch(training, epoch, sums, epoch_archs, epoch_started, warming_up)
            trained.extend(epoch_archs)
            final = (last["max"].accuracy, last["min"].accuracy)
            improved = final[0] > training.best_accuracy
            training.best_accuracy = max(training.best_accuracy, final[0])
            if context.is_main:
                _log_epoch(folder, row, epoch_archs, epoch, writer, show)
                _save_checkpoints(training, epoch, row, improved)
    except TrainingDivergedError as error:
        kept = (
            f"the last good checkpoint is {folder.latest} (epoch {epoch})" if epoch > 0 else "no checkpoint was written"
        )
        step = len(epoch_archs)  # steps done in this epoch; all of them when the weights check failed
        where = f"epoch {epoch + 1}" + (f", step {step + 1}" if step < training.steps_per_epoch else "")
        raise TrainingDivergedError(f"training diverged in {where}: {error}; {kept}") from None
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    return TrainResult(folder.root, config.epochs, *final, seconds, trained, training.supernet)


def _prepare(config: TrainConfig, resume: bool) -> _Training:
    """Check the config (and the checkpoint to resume), write the run's header files, build the training."""
    context = init_distributed(config.device)
    space = load_space(config.model.space)
    progressive = config.progressive
    schedule = build_schedule(space, progressive.phases, config.epochs) if progressive.enabled else None
    folder = RunFolder(config.run_dir)
    state = _resume_state(config, space, folder) if resume else None
    if not resume and folder.latest.exists():
        raise ValueError(f"run directory {folder.root} already has a checkpoint: resume it or choose another name")
    data = build_data(config, space)
    if state is not None:
        _check_resume_classes(state, data.num_classes, folder.latest)
    guide = PredictorGuide(config, space, folder.root) if config.guide.enabled else None
    predictor_scorer = _static_predictor_scorer(config, space)
    cache = Path(config.out_dir) / ".cache"
    archs_source = None if schedule is not None else _ArchSource(config, space, data.num_classes, cache)
    if context.is_main:
        _write_run_header(folder, config, space, data.num_classes, state["epoch"] if state is not None else 0)
    if config.cpu_threads and context.device.type == "cpu":
        torch.set_num_threads(config.cpu_threads)
    torch.manual_seed(config.seed)
    supernet = Supernet(space, data.num_classes, config.model.dropout).to(context.device)
    if config.model.zero_init_last_bn:
        supernet.zero_init_last_bn()
    context.broadcast_parameters(supernet)
    sampler, loader, loader_generator, steps_per_epoch = _train_loader(config, context, data)
    optim, phase_epochs = _phase_optim(config, schedule, 0)
    optimizer = build_optimizer(supernet, optim)
    section = config.calibration
    val_loader = DataLoader(data.val, config.data.eval_batch_size, shuffle=False, num_workers=config.data.workers)
    training = _Training(
        config=config,
        context=context,
        space=space,
        folder=folder,
        data=data,
        supernet=supernet,
        rng=random.Random(config.seed),
        archs_source=archs_source,
        guide=guide,
        predictor_scorer=predictor_scorer,
        sampler=sampler,
        loader=loader,
        loader_generator=loader_generator,
        steps_per_epoch=steps_per_epoch,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, optim, steps_per_epoch, phase_epochs),
        calibration=calibration_images(
            data.train, section.batches_for(data.name), section.batch_size, section.seed, section.augment
        ),
        val_loader=val_loader,
        guide_val_loader=_guide_val_loader(config, data, val_loader),
        settings=_step_settings(config),
        schedule=schedule,
    )
    if state is not None:
        _restore(training, state)
    return training


def _phase_optim(config: TrainConfig, schedule: Schedule | None, index: int) -> tuple[OptimSection, int]:
    """The optimizer settings and epochs of phase ``index``: the whole run's without a schedule, else the
    rates scaled by the phase's ``lr_scale``, its warm-up and its epochs."""
    if schedule is None:
        return config.optim, config.epochs
    scale = schedule.phases[index].lr_scale
    optim = dataclasses.replace(
        config.optim,
        lr=config.optim.lr * scale,
        min_lr=config.optim.min_lr * scale,
        warmup_epochs=schedule.warmup_epochs(index),
    )
    return optim, schedule.epochs[index]


def _start_phase_optimizer(training: _Training, index: int) -> None:
    """A fresh optimizer and learning-rate schedule for phase ``index`` (once-for-all restarts both)."""
    optim, epochs = _phase_optim(training.config, training.schedule, index)
    training.optimizer = build_optimizer(training.supernet, optim)
    training.scheduler = build_scheduler(training.optimizer, optim, training.steps_per_epoch, epochs)
    training.phase = index


def _frozen_teacher(supernet: Supernet) -> Supernet:
    """A frozen copy of ``supernet``'s full network: the progressive phases' distillation teacher."""
    teacher = copy.deepcopy(supernet)
    teacher.set_active(teacher.space.max_arch())
    teacher.set_dropout(0.0)
    teacher.set_drop_path(0.0)
    teacher.requires_grad_(False)
    return teacher


def _enter_phase(training: _Training, epoch: int) -> None:
    """At the first epoch of a progressive phase: freeze the teacher after the full-network phase, sort the
    middle channels before a phase that opens expand ratios, restart the optimizer."""
    index = training.schedule.phase_at(epoch)
    if index == training.phase:
        return
    if training.teacher is None:
        training.teacher = _frozen_teacher(training.supernet)
    trained_ratios = training.schedule.expand_before(index)
    if trained_ratios is not None:
        sort_channels(training.supernet, trained_ratios)
    _start_phase_optimizer(training, index)


def _step_settings(config: TrainConfig) -> StepSettings:
    """The sandwich step's settings of a config."""
    model, optim = config.model, config.optim
    return StepSettings(
        optim.label_smoothing,
        model.dropout,
        optim.grad_clip_value,
        config.bf16,
        model.drop_path,
        optim.distill_label_weight,
        config.kd,
    )


def _resume_state(config: TrainConfig, space: SearchSpace, folder: RunFolder) -> dict:
    """The checkpoint ``--resume`` continues, checked against the space and the config."""
    state = load_checkpoint(folder.latest)
    if "provenance" in state:
        raise ValueError(
            f"cannot resume {folder.root}: it is an imported supernet (see {folder.provenance.name}) with no "
            "training state; train a new run (another name) instead"
        )
    _check_resume_space(state, space, folder.latest)
    check_resume_config(state, config, folder.latest)
    return state


def write_run_description(folder: RunFolder, config: TrainConfig, space: SearchSpace, classes: int) -> None:
    """``config.yaml`` (the resolved config) and ``space.json`` (space and class count) of a run folder."""
    folder.root.mkdir(parents=True, exist_ok=True)
    folder.config.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    write_run_space(folder.root, space, classes)


def _write_run_header(folder: RunFolder, config: TrainConfig, space: SearchSpace, classes: int, done: int) -> None:
    """The resolved config and the space, and the logs cut back to the ``done`` epochs of the checkpoint."""
    write_run_description(folder, config, space, classes)
    _truncate_logs(folder, done)


def _train_loader(
    config: TrainConfig, context: DistributedContext, data: DataBundle
) -> tuple[DistributedSampler, DataLoader, torch.Generator, int]:
    """The training batches of this rank, their generator and the steps per epoch."""
    sampler = DistributedSampler(
        data.train, context.world_size, context.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    per_rank_batch = max(1, config.data.batch_size // context.world_size)
    generator = torch.Generator()
    loader = DataLoader(
        data.train,
        per_rank_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=config.data.workers,
        generator=generator,
    )
    steps = len(loader) if config.max_steps_per_epoch is None else min(len(loader), config.max_steps_per_epoch)
    if steps < 1:
        raise ValueError(f"the training set ({len(data.train)} images) is smaller than one batch ({per_rank_batch})")
    return sampler, loader, generator, steps


def _restore(training: _Training, state: dict) -> None:
    """Continue exactly where the checkpoint stopped: weights, optimizer, schedule, random streams, guide."""
    training.supernet.load_state_dict(state["model"])
    if training.schedule is not None:
        if state["phase"] != training.phase:  # _prepare built phase 0's
            _start_phase_optimizer(training, state["phase"])
        if state["teacher"] is not None:
            training.teacher = _frozen_teacher(training.supernet)
            training.teacher.load_state_dict(state["teacher"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    set_python_rng_state(training.rng, state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    training.start_epoch, training.best_accuracy = state["epoch"], state["best_accuracy"]
    training.resumed_metrics = state["metrics"]
    if training.guide is not None:
        training.guide.load_state(state.get("guide"))


def _train_epoch(training: _Training, epoch: int, epoch_archs: list[list[Arch]], show: bool) -> tuple[bool, np.ndarray]:
    """One epoch of sandwich steps; appends each step's sampled archs to ``epoch_archs``.

    Returns whether the sampler was still warming up (uniform until the guide's first fit) and the summed
    loss of every sandwich slot.
    """
    config, supernet, guide = training.config, training.supernet, training.guide
    if training.schedule is not None:
        _enter_phase(training, epoch)
    if guide is not None:
        guide.maybe_refit(epoch, supernet, training.calibration, training.guide_val_loader)
    warming_up = guide is not None and not guide.ready
    scorer = guide.scorer if guide is not None and guide.ready else training.predictor_scorer
    training.sampler.set_epoch(epoch)
    training.data.train.set_epoch(epoch)
    training.loader_generator.manual_seed(config.seed * 1_000_003 + epoch)
    sums = np.zeros(_subnets_per_step(training))
    bar = tqdm(total=training.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show, leave=False)
    for images, labels in itertools.islice(training.loader, training.steps_per_epoch):
        images, labels = images.to(training.context.device), labels.to(training.context.device)
        sampled, losses = _step(training, images, labels, scorer, warming_up)
        training.scheduler.step()
        sums += losses
        epoch_archs.append(sampled)
        bar.update(1)
        bar.set_postfix(loss_max=f"{losses[0]:.3f}", loss_min=f"{losses[-1]:.3f}")
    bar.close()
    return warming_up, sums


def _subnets_per_step(training: _Training) -> int:
    """Subnets trained per step: the sandwich's ``num_subnets`` or the progressive phase's ``subnets``."""
    if training.schedule is None:
        return training.config.sampler.num_subnets
    return training.schedule.phases[training.phase].subnets


def _step(
    training: _Training,
    images: torch.Tensor,
    labels: torch.Tensor,
    scorer: Callable[[Sequence[Arch]], np.ndarray] | None,
    warming_up: bool,
) -> tuple[list[Arch], list[float]]:
    """One optimizer step: the sampled archs it trained (the sandwich's max and min left out) and every loss."""
    config, supernet, context = training.config, training.supernet, training.context
    if training.schedule is not None:
        space = training.schedule.spaces[training.phase]
        archs = [space.sample(training.rng) for _ in range(_subnets_per_step(training))]
        kd_ratio = config.progressive.kd_ratio
        step = (supernet, training.teacher, images, labels, archs, training.optimizer, training.settings, context)
        return archs, progressive_step(*step, kd_ratio)

    def batch_scorer() -> Callable:
        return loss_scorer(supernet, images, labels, config.optim.label_smoothing, context)

    count = config.sampler.num_subnets - 2
    sampled = training.archs_source.sample(training.rng, count, batch_scorer, scorer, warming_up)
    archs = [training.ends[0], *sampled, training.ends[1]]
    return sampled, sandwich_step(supernet, images, labels, archs, training.optimizer, training.settings, context)


def _evaluate_epoch(
    training: _Training,
    epoch: int,
    sums: np.ndarray,
    epoch_archs: list[list[Arch]],
    epoch_started: float,
    warming_up: bool,
) -> tuple[dict, dict[str, Evaluation]]:
    """The epoch's ``metrics.csv`` row (mean losses, val accuracy of the largest and smallest subnets) and
    the two evaluations themselves (``max``, ``min``)."""
    config, supernet = training.config, training.supernet
    train_seconds = time.perf_counter() - epoch_started
    ends = dict(zip(("max", "min"), training.ends))
    last = {key: evaluate_arch(supernet, arch, training.calibration, training.val_loader) for key, arch in ends.items()}
    supernet.train()
    means = sums / max(1, len(epoch_archs))
    sandwich = training.schedule is None
    sampled = means[1:-1] if sandwich else means  # progressive: every subnet of the step is sampled
    row = {
        "epoch": epoch + 1,
        "loss_max": round(float(means[0]), 5) if sandwich else "",
        "loss_sampled": round(float(sampled.mean()), 5) if sampled.size else "",
        "loss_min": round(float(means[-1]), 5) if sandwich else "",
        "val_acc_max": round(last["max"].accuracy, 5),
        "val_acc_min": round(last["min"].accuracy, 5),
        "val_loss_max": round(last["max"].loss, 5),
        "val_loss_min": round(last["min"].loss, 5),
        "lr": round(training.scheduler.get_last_lr()[0], 6),
        "images_per_s": round(len(epoch_archs) * config.data.batch_size / train_seconds, 1),
        "epoch_seconds": round(time.perf_counter() - epoch_started, 2),
        "sampler": _sampler_label(training, warming_up),
        "distinct_archs": len({arch for archs in epoch_archs for arch in archs}),
    }
    return row, last


def _sampler_label(training: _Training, warming_up: bool) -> str:
    """What chose the epoch's subnets, for ``metrics.csv``."""
    if training.schedule is not None:
        return f"progressive:{training.schedule.phases[training.phase].name}"
    return "uniform-warmup" if warming_up else training.config.sampler.name


def _save_checkpoints(training: _Training, epoch: int, row: dict, improved: bool) -> None:
    """``latest.pt`` every epoch, ``best.pt`` when the largest subnet improved (see
    :func:`ofa.checkpoint.save_checkpoint_pair`)."""
    config, guide = training.config, training.guide
    checkpoint = {
        "format": RUN_FORMAT,
        "epoch": epoch + 1,
        "config": config_to_dict(config),
        "space": training.space.to_dict(),
        "num_classes": training.data.num_classes,
        "normalization": {"mean": list(training.data.mean), "std": list(training.data.std)},
        "model": training.supernet.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "sampler_rng": python_rng_state(training.rng),
        "torch_rng": torch.get_rng_state(),
        "best_accuracy": training.best_accuracy,
        "guide": guide.state() if guide is not None else None,
        "metrics": row,
        "phase": training.phase,
        "teacher": training.teacher.state_dict() if training.teacher is not None else None,
    }
    save_checkpoint_pair(checkpoint, training.folder.best, training.folder.latest, improved)


def _check_finite_weights(supernet: Supernet) -> None:
    """Weights made NaN or infinite by a step (finite loss, overflowing gradients) are never saved."""
    for name, parameter in supernet.named_parameters():
        if not torch.isfinite(parameter).all():
            raise TrainingDivergedError(f"parameter {name} holds NaN or infinite values")


def _guide_val_loader(config: TrainConfig, data: DataBundle, val_loader: DataLoader) -> DataLoader:
    """The val batches the guide measures on: a fixed seeded subset of ``guide.val_images`` images, or all."""
    count = config.guide.val_images
    if count is None or count >= len(data.val):
        return val_loader
    generator = torch.Generator().manual_seed(config.calibration.seed)
    indices = sorted(torch.randperm(len(data.val), generator=generator)[:count].tolist())
    subset = torch.utils.data.Subset(data.val, indices)
    return DataLoader(subset, config.data.eval_batch_size, shuffle=False, num_workers=config.data.workers)


def _static_predictor_scorer(config: TrainConfig, space: SearchSpace) -> Callable | None:
    """The scorer of a fitted predictor file named in the config (checked before training starts)."""
    attentive = config.sampler.name in ("bestup", "worstup")
    if not attentive or config.sampler.scorer != "predictor" or config.guide.enabled:
        return None
    if config.sampler.predictor is None:
        raise ValueError(
            "sampler.scorer is 'predictor': set sampler.predictor to a fitted predictor file or enable guide"
        )

    predictor = load_predictor(Path(config.sampler.predictor), space)
    return predictor.predict


def _log_epoch(
    folder: RunFolder, row: dict, epoch_archs: list[list[Arch]], epoch: int, writer: SummaryWriter | None, show: bool
) -> None:
    _write_metrics(folder.metrics, row)
    with folder.trained_archs.open("a") as handle:
        for step, archs in enumerate(epoch_archs):
            handle.write(json.dumps({"epoch": epoch + 1, "step": step, "archs": [a.to_dict() for a in archs]}) + "\n")
    if writer is not None:
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch":
                writer.add_scalar(key, value, epoch + 1)
        writer.flush()
    losses = (
        f"loss max {row['loss_max']:.3f} min {row['loss_min']:.3f}"
        if row["loss_max"] != ""
        else f"loss {row['loss_sampled']:.3f} ({row['sampler']})"
    )
    message = (
        f"epoch {row['epoch']:>3}  {losses}  "
        f"val acc max {row['val_acc_max']:.4f} min {row['val_acc_min']:.4f}  lr {row['lr']:.4f}  "
        f"{row['images_per_s']:.0f} img/s  {row['epoch_seconds']:.1f}s"
    )
    print(message, file=sys.stderr if show else sys.stdout, flush=True)
