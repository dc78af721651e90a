"""Channel sorting (once-for-all): reorder each block's middle channels by importance before a narrower
expand ratio starts training, so the narrow subnets take the most important channels.

Importance is the L1 norm of a middle channel's weights in the projection (point-linear) conv. Channels are
sorted only within the width tiers already trained (the middle widths of ``trained_expand_ratios`` at every
input width of the block): a trained subnet keeps its set of channels, merely permuted, and the same
permutation is applied to everything that touches them (expand conv outputs and BN, depthwise conv and BN with
running statistics, SE input and output, projection inputs), so every trained subnet computes the same
function. SE hidden units are left in place. Blocks without an expand conv (ratio 1) have no channels of
their own to sort.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ofa.layout import mid_channels
from ofa.supernet import DynamicInvertedResidual, Supernet

__all__ = ["sort_channels", "sorting_permutation"]


def sorting_permutation(importance: torch.Tensor, tiers: Sequence[int]) -> torch.Tensor:
    """Indices that order ``importance`` descending within each tier ``[previous tier, tier)``; the last tier
    must be ``len(importance)``."""
    if not tiers or tiers[-1] != importance.numel() or list(tiers) != sorted(set(tiers)):
        raise ValueError(f"tiers must rise to the channel count {importance.numel()}, got {list(tiers)}")
    pieces, start = [], 0
    for end in tiers:
        order = torch.argsort(importance[start:end], descending=True, stable=True)
        pieces.append(order + start)
        start = end
    return torch.cat(pieces)


@torch.no_grad()
def _permute_block(block: DynamicInvertedResidual, order: torch.Tensor) -> None:
    """Apply the middle-channel permutation ``order`` to every weight and statistic of ``block``."""
    block.conv_pw.weight.copy_(block.conv_pw.weight[order])
    block.conv_dw.weight.copy_(block.conv_dw.weight[order])
    for norm in (block.bn1, block.bn2):
        for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
            tensor.copy_(tensor[order])
    if block.se is not None:
        block.se.conv_reduce.weight.copy_(block.se.conv_reduce.weight[:, order])
        block.se.conv_expand.weight.copy_(block.se.conv_expand.weight[order])
        block.se.conv_expand.bias.copy_(block.se.conv_expand.bias[order])
    block.conv_pwl.weight.copy_(block.conv_pwl.weight[:, order])


def sort_channels(supernet: Supernet, trained_expand_ratios: Sequence[float] | None = None) -> int:
    """Sort every block's middle channels by importance within the tiers of ``trained_expand_ratios`` (each
    stage's ratios that are among them; None: all of them). Returns how many blocks changed order."""
    changed = 0
    in_choices = supernet.space.stem.width
    for stage, blocks in zip(supernet.space.stages, supernet.stages):
        ratios = [e for e in stage.expand_ratio if trained_expand_ratios is None or e in trained_expand_ratios]
        for index, block in enumerate(blocks):
            inputs = in_choices if index == 0 else stage.width
            if block.conv_pw is None or not ratios:
                continue
            mid = block.conv_pwl.weight.size(1)
            tiers = sorted({mid_channels(c, e) for c in inputs for e in ratios if e != 1} | {mid})
            importance = block.conv_pwl.weight.detach().abs().sum(dim=(0, 2, 3))
            order = sorting_permutation(importance, tiers)
            if not torch.equal(order, torch.arange(mid)):
                _permute_block(block, order)
                changed += 1
        in_choices = stage.width
    return changed
