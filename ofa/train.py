"""Supernet training: the sandwich rule with in-place distillation and attentive subnet sampling.

Each step trains the largest subnet on the labels (label smoothing, dropout, drop-path), then ``n - 2`` sampled
subnets and the smallest subnet on the largest one's detached predictions (BigNAS, Yu et al., ECCV
2020; KL, or AlphaNet's α-divergence with ``kd.loss: alpha``), optionally mixed with the label loss
(``distill_label_weight``); the sampled subnets come from a
uniform, FLOPs-target or AttentiveNAS BestUp/WorstUp sampler (Wang et al., CVPR 2021). Gradients of all
subnets are accumulated into one optimizer step.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ofa.bn import resize_to
from ofa.distill import adaptive_alpha_divergence
from ofa.distributed import DistributedContext
from ofa.errors import TrainingDivergedError
from ofa.space import Arch
from ofa.supernet import Supernet
from ofa.train_config import KdSection, OptimSection

__all__ = [
    "TrainingDivergedError",
    "build_optimizer",
    "build_scheduler",
    "frozen_bn_statistics",
    "loss_scorer",
    "progressive_step",
    "sandwich_step",
    "soft_cross_entropy",
]


def soft_cross_entropy(logits: torch.Tensor, target_probabilities: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (in-place distillation, temperature 1)."""
    return -(target_probabilities * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """Forward in train mode (batch statistics) without touching BN running statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for module in norms:
        module.momentum = 0.0
    try:
        yield
    finally:
        for module, (momentum, tracked) in zip(norms, saved):
            module.momentum = momentum
            module.num_batches_tracked.copy_(tracked)


def loss_scorer(
    supernet: Supernet,
    images: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
    context: DistributedContext,
) -> Callable[[Sequence[Arch]], np.ndarray]:
    """A scorer that ranks candidates by minus their minibatch loss (no-grad forward, averaged over ranks)."""

    def score(archs: Sequence[Arch]) -> np.ndarray:
        losses = torch.zeros(len(archs), device=images.device)
        supernet.set_dropout(0.0)
        supernet.set_drop_path(0.0)
        with torch.no_grad(), frozen_bn_statistics(supernet):
            for index, arch in enumerate(archs):
                supernet.set_active(arch)
                logits = supernet(resize_to(images, arch.resolution))
                losses[index] = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        context.all_reduce_mean(losses)
        return -losses.cpu().numpy().astype(np.float64)

    return score


def build_optimizer(model: nn.Module, settings: OptimSection) -> torch.optim.SGD:
    """SGD (nesterov) with no weight decay on BN parameters and biases (all 1-D tensors)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov)


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: OptimSection, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to ``min_lr``, stepped every iteration."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, round(settings.warmup_epochs * steps_per_epoch))
    floor = settings.min_lr / settings.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class StepSettings:
    """What one sandwich step needs besides the model and the batch."""

    label_smoothing: float
    dropout: float
    grad_clip_value: float
    bf16: bool
    drop_path: float = 0.0
    distill_label_weight: float = 0.0  # the distilled subnets' loss: (1 - w) * distillation + w * labels
    kd: KdSection = field(default_factory=KdSection)  # distillation loss: KL or AlphaNet's alpha-divergence


def _slot_name(slot: int, count: int) -> str:
    if slot == 0:
        return "largest"
    return "smallest" if slot == count - 1 else f"sampled #{slot}"


def sandwich_step(
    supernet: Supernet,
    images: torch.Tensor,
    labels: torch.Tensor,
    archs: Sequence[Arch],
    optimizer: torch.optim.Optimizer,
    settings: StepSettings,
    context: DistributedContext,
) -> list[float]:
    """One optimizer step over ``archs`` = [max, sampled..., min]; returns the loss of each slot.

    The first arch learns from the labels, the others from its detached predictions; every subnet sees
    the batch resized to its own resolution. The returned losses are averaged over ranks.

    Raises:
        TrainingDivergedError: a loss is NaN or infinite (on any rank); the weights are left untouched.
    """
    if len(archs) < 2:
        raise ValueError(f"a sandwich step needs at least the max and min subnets, got {len(archs)} archs")
    optimizer.zero_grad(set_to_none=True)
    with supernet.direct_gradients():
        autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=settings.bf16)
        losses = []
        # largest subnet: labels, dropout, drop-path
        supernet.set_active(archs[0])
        supernet.set_dropout(settings.dropout)
        supernet.set_drop_path(settings.drop_path)
        with autocast:
            logits = supernet(resize_to(images, archs[0].resolution))
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)
        loss.backward()
        losses.append(loss.detach())
        # KL takes the teacher's probabilities; the alpha-divergence its log-probabilities (finite where p underflows)
        teacher = (F.log_softmax if settings.kd.loss == "alpha" else F.softmax)(logits.detach().float(), dim=1)
        # sampled and smallest subnets: in-place distillation
        supernet.set_dropout(0.0)
        supernet.set_drop_path(0.0)
        for arch in archs[1:]:
            supernet.set_active(arch)
            with autocast:
                logits = supernet(resize_to(images, arch.resolution)).float()
                loss = _distillation_loss(settings.kd, logits, teacher)
                if settings.distill_label_weight > 0:
                    labelled = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
                    loss = (1 - settings.distill_label_weight) * loss + settings.distill_label_weight * labelled
            loss.backward()
            losses.append(loss.detach())
    names = [f"the {_slot_name(slot, len(archs))} subnet" for slot in range(len(archs))]
    return _apply_step(supernet, losses, names, optimizer, settings, context)


def _apply_step(
    supernet: Supernet,
    losses: list[torch.Tensor],
    names: Sequence[str],
    optimizer: torch.optim.Optimizer,
    settings: StepSettings,
    context: DistributedContext,
) -> list[float]:
    """Average the losses and gradients over ranks, stop on a non-finite loss (named by ``names``) before
    the weights change, clip, step; returns the averaged losses."""
    # every rank sees the same losses, so all of them stop together when one diverges
    values = context.all_reduce_mean(torch.stack(losses)).tolist()
    for name, value in zip(names, values):
        if not math.isfinite(value):
            raise TrainingDivergedError(f"the loss of {name} is {value}")
    context.all_reduce_gradients(supernet)
    if settings.grad_clip_value > 0:
        nn.utils.clip_grad_value_(supernet.parameters(), settings.grad_clip_value)
    optimizer.step()
    return values


def progressive_step(
    supernet: Supernet,
    teacher: Supernet | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    archs: Sequence[Arch],
    optimizer: torch.optim.Optimizer,
    settings: StepSettings,
    context: DistributedContext,
    kd_ratio: float,
) -> list[float]:
    """One progressive-shrinking step (once-for-all): each of ``archs`` learns from the labels plus ``kd_ratio``
    times the distillation loss against the frozen ``teacher`` (None: labels only, the full-network phase);
    dropout on every subnet, drop-path only without a teacher. The batch is resized and the teacher run once per
    resolution of the step. Gradients accumulate into one optimizer step.

    Raises:
        TrainingDivergedError: a loss is NaN or infinite (on any rank); the weights are left untouched.
    """
    optimizer.zero_grad(set_to_none=True)
    with supernet.direct_gradients():
        autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=settings.bf16)
        supernet.set_dropout(settings.dropout)
        supernet.set_drop_path(settings.drop_path if teacher is None else 0.0)
        losses = []
        distilled = teacher is not None and kd_ratio > 0
        resized: dict[int, torch.Tensor] = {}  # per resolution: the batch, and the teacher's targets for it
        targets: dict[int, torch.Tensor] = {}
        for arch in archs:
            if arch.resolution not in resized:
                resized[arch.resolution] = resize_to(images, arch.resolution)
                if distilled:
                    targets[arch.resolution] = _teacher_targets(teacher, resized[arch.resolution], settings)
            supernet.set_active(arch)
            with autocast:
                logits = supernet(resized[arch.resolution]).float()
                loss = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
                if distilled:
                    loss = loss + kd_ratio * _distillation_loss(settings.kd, logits, targets[arch.resolution])
            loss.backward()
            losses.append(loss.detach())
    names = [f"sampled subnet #{slot + 1}" for slot in range(len(archs))]
    return _apply_step(supernet, losses, names, optimizer, settings, context)


def _teacher_targets(teacher: Supernet, images: torch.Tensor, settings: StepSettings) -> torch.Tensor:
    """The frozen teacher's predictions for ``images``: train-mode BN (batch statistics, running statistics
    untouched), no dropout; probabilities for KL, log-probabilities for the alpha-divergence."""
    with torch.no_grad(), frozen_bn_statistics(teacher):
        logits = teacher(images).float()
    return (F.log_softmax if settings.kd.loss == "alpha" else F.softmax)(logits, dim=1)


def _distillation_loss(kd: KdSection, logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The distilled subnet's loss against the largest subnet's detached predictions (KL: probabilities;
    alpha-divergence: log-probabilities)."""
    if kd.loss == "alpha":
        return adaptive_alpha_divergence(logits, teacher, kd.alpha_min, kd.alpha_max, kd.iw_clip)
    return soft_cross_entropy(logits, teacher)


def python_rng_state(rng: random.Random) -> list:
    """``rng``'s state as plain lists (loadable with ``weights_only=True``)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_python_rng_state(rng: random.Random, state: Sequence) -> None:
    """Restore a state made by :func:`python_rng_state`."""
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))
