"""Per-layer MAC and parameter terms of a network layout: the project's one formula for "FLOPs".

Convention (once-for-all, AttentiveNAS): FLOPs = multiply-accumulates of every Conv2d
(``c_in * c_out * k * k * H_out * W_out / groups``) and Linear (``in * out``) at batch 1, SE convs and
shortcut projections included; BN, activations, pooling, additions, biases and the input resize
excluded. Parameters are the trainable tensors of the extracted static model (BN running statistics
are buffers, not parameters). ``ofa.flops`` counts archs with tables built from these terms.
"""

from __future__ import annotations

from ofa.layout import BlockLayout, HeadLayout, NetworkLayout, StemLayout

__all__ = ["block_macs", "block_params", "layout_macs", "layout_params"]


def _stem_macs(stem: StemLayout) -> int:
    return stem.in_channels * stem.out_channels * stem.kernel_size**2 * stem.output_size**2


def _stem_params(stem: StemLayout) -> int:
    return stem.in_channels * stem.out_channels * stem.kernel_size**2 + 2 * stem.out_channels


def block_macs(block: BlockLayout) -> int:
    """MACs of one inverted-residual block of a layout."""
    area_in, area_out = block.input_size**2, block.output_size**2
    total = 0
    if block.has_expand:
        total += block.in_channels * block.mid_channels * area_in
    total += block.mid_channels * block.kernel_size**2 * area_out
    total += 2 * block.mid_channels * block.se_channels
    total += block.mid_channels * block.out_channels * area_out
    if block.shortcut_conv:
        total += block.in_channels * block.out_channels * area_out
    return total


def block_params(block: BlockLayout) -> int:
    """Trainable parameters of one inverted-residual block of a layout."""
    mid, se = block.mid_channels, block.se_channels
    total = 0
    if block.has_expand:
        total += block.in_channels * mid + 2 * mid
    total += mid * block.kernel_size**2 + 2 * mid
    if se:
        total += 2 * mid * se + se + mid
    total += mid * block.out_channels + 2 * block.out_channels
    if block.shortcut_conv:
        total += block.in_channels * block.out_channels
    return total


def _head_macs(head: HeadLayout) -> int:
    """MACs of the head without the classifier."""
    return head.in_channels * head.mid_channels * head.input_size**2 + head.mid_channels * head.out_channels


def _head_params(head: HeadLayout) -> int:
    """Parameters of the head without the classifier."""
    total = head.in_channels * head.mid_channels + 2 * head.mid_channels
    return total + head.mid_channels * head.out_channels + (head.out_channels if head.bias else 0)


def layout_macs(layout: NetworkLayout) -> int:
    """MACs of a network layout."""
    total = _stem_macs(layout.stem) + sum(block_macs(block) for block in layout.blocks)
    return total + _head_macs(layout.head) + layout.head.out_channels * layout.num_classes


def layout_params(layout: NetworkLayout) -> int:
    """Trainable parameters of a network layout (conv and linear weights, biases, BN affine)."""
    total = _stem_params(layout.stem) + sum(block_params(block) for block in layout.blocks)
    return total + _head_params(layout.head) + layout.head.out_channels * layout.num_classes + layout.num_classes
