"""BatchNorm recalibration of one subnet from a cached, seeded set of training batches.

Shared BN statistics of a supernet fit no single subnet, so every subnet's running statistics are
re-estimated before it is evaluated (once-for-all, Cai et al., ICLR 2020): reset, then a cumulative
average over the same calibration batches, so evaluating one arch twice gives the same accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["recalibrate_bn", "resize_to"]


def resize_to(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """The batch resized (bilinear) to ``resolution`` x ``resolution``; unchanged when it already is.

    The one resize of the project: training, BN calibration, evaluation and the exported models'
    preprocessing all call it. Downsampling is antialiased (a plain bilinear downsample by more than 2x skips
    pixels and aliases: 32 -> 8 px reads 4 of every 16, 32 -> 12 px weighs pixels unevenly); upsampling is
    plain bilinear.
    """
    if images.shape[-2:] == (resolution, resolution):
        return images
    downsampling = resolution < images.shape[-2] or resolution < images.shape[-1]
    return F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=downsampling
    )


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[torch.Tensor], resolution: int) -> None:
    """Re-estimate every BN's running statistics of ``model`` (its active subnet) from ``batches``.

    The model is left in eval mode. Batches are image tensors (N, C, H, W), resized to ``resolution``.
    """
    if not batches:
        raise ValueError("BN recalibration needs at least one calibration batch")
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    momenta = [module.momentum for module in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative moving average over the calibration batches
    device = next(model.parameters()).device
    model.train()
    try:
        for images in batches:
            model(resize_to(images.to(device), resolution))
    finally:
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
        model.eval()
