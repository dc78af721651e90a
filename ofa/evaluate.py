"""Accuracy of an arch inside the supernet (BN recalibrated first) and of any model on a loader."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ofa.bn import recalibrate_bn, resize_to
from ofa.space import Arch
from ofa.supernet import Supernet

__all__ = ["Evaluation", "evaluate_arch", "evaluate_model"]


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy (0..1) and mean cross-entropy over a data set."""

    accuracy: float
    loss: float
    count: int


@torch.no_grad()
def evaluate_model(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], resolution: int
) -> Evaluation:
    """Accuracy and loss of ``model`` in eval mode, every batch resized to ``resolution``."""
    model.eval()
    device = next(model.parameters()).device
    correct, total_loss, count = 0, 0.0, 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        logits = model(resize_to(images, resolution))
        total_loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += labels.numel()
    if count == 0:
        raise ValueError("cannot evaluate on an empty data set")
    return Evaluation(correct / count, total_loss / count, count)


def evaluate_arch(
    supernet: Supernet,
    arch: Arch,
    calibration_images: Sequence[torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> Evaluation:
    """Activate ``arch``, recalibrate its BN on the calibration images, evaluate it on ``batches``."""
    supernet.set_active(arch)
    recalibrate_bn(supernet, calibration_images, arch.resolution)
    return evaluate_model(supernet, batches, arch.resolution)
