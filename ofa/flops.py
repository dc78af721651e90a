"""Analytic MAC and parameter counts: the single source of truth for "FLOPs" in this project.

Convention (once-for-all, AttentiveNAS): FLOPs = multiply-accumulates of every Conv2d
(``c_in * c_out * k * k * H_out * W_out / groups``) and Linear (``in * out``) at batch 1, SE convs and
shortcut projections included; BN, activations, pooling, additions, biases and the input resize
excluded. Parameters are the trainable tensors of the extracted static model (BN running statistics
are buffers, not parameters).

``count_macs``/``count_params`` count one arch; ``count_macs_many``/``count_params_many`` count many
archs at once with numpy, block position by block position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ofa.layout import NetworkLayout, network_layout
from ofa.space import Arch, SearchSpace

__all__ = [
    "count_macs",
    "count_macs_many",
    "count_params",
    "count_params_many",
    "layout_macs",
    "layout_params",
]

DEFAULT_CLASSES = 1000


def layout_macs(layout: NetworkLayout) -> int:
    """MACs of a network layout."""
    stem = layout.stem
    total = stem.in_channels * stem.out_channels * stem.kernel_size**2 * stem.output_size**2
    for block in layout.blocks:
        area_in, area_out = block.input_size**2, block.output_size**2
        if block.has_expand:
            total += block.in_channels * block.mid_channels * area_in
        total += block.mid_channels * block.kernel_size**2 * area_out
        total += 2 * block.mid_channels * block.se_channels
        total += block.mid_channels * block.out_channels * area_out
        if block.shortcut_conv:
            total += block.in_channels * block.out_channels * area_out
    head = layout.head
    total += head.in_channels * head.mid_channels * head.input_size**2
    total += head.mid_channels * head.out_channels + head.out_channels * layout.num_classes
    return total


def layout_params(layout: NetworkLayout) -> int:
    """Trainable parameters of a network layout (conv and linear weights, biases, BN affine)."""
    stem = layout.stem
    total = stem.in_channels * stem.out_channels * stem.kernel_size**2 + 2 * stem.out_channels
    for block in layout.blocks:
        mid, se = block.mid_channels, block.se_channels
        if block.has_expand:
            total += block.in_channels * mid + 2 * mid
        total += mid * block.kernel_size**2 + 2 * mid
        if se:
            total += 2 * mid * se + se + mid
        total += mid * block.out_channels + 2 * block.out_channels
        if block.shortcut_conv:
            total += block.in_channels * block.out_channels
    head = layout.head
    total += head.in_channels * head.mid_channels + 2 * head.mid_channels
    total += head.mid_channels * head.out_channels + (head.out_channels if head.bias else 0)
    total += head.out_channels * layout.num_classes + layout.num_classes
    return total


def count_macs(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_CLASSES) -> int:
    """Multiply-accumulates of ``arch`` at batch 1 (validated against ``space``)."""
    return layout_macs(network_layout(space, arch, num_classes))


def count_params(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_CLASSES) -> int:
    """Trainable parameters of the static model ``arch`` builds into."""
    return layout_params(network_layout(space, arch, num_classes))


# ----------------------------------------------------------------------------------------------------
# vectorised counting
# ----------------------------------------------------------------------------------------------------


def _make_divisible(values: np.ndarray) -> np.ndarray:
    rounded = np.maximum(8, (values + 4) // 8 * 8)
    return np.where(rounded < 0.9 * values, rounded + 8, rounded)


def _strided(sizes: np.ndarray, stride: int) -> np.ndarray:
    return (sizes + 1) // 2 if stride == 2 else sizes


def _as_arrays(space: SearchSpace, archs: Sequence[Arch]) -> tuple[np.ndarray, ...]:
    """Resolution (N,), width (N, S+2), depth (N, S), kernel and expand (N, S, D) padded with 0."""
    n_stages = len(space.stages)
    max_depth = max(max(stage.depth) for stage in space.stages)
    count = len(archs)
    resolution = np.empty(count, dtype=np.int64)
    width = np.empty((count, n_stages + 2), dtype=np.int64)
    depth = np.empty((count, n_stages), dtype=np.int64)
    kernel = np.zeros((count, n_stages, max_depth), dtype=np.int64)
    expand = np.zeros((count, n_stages, max_depth), dtype=np.float64)
    for row, arch in enumerate(archs):
        space.validate(arch)
        resolution[row] = arch.resolution
        width[row] = arch.width
        depth[row] = arch.depth
        for stage_index, (kernels, expands) in enumerate(zip(arch.kernel_size, arch.expand_ratio)):
            kernel[row, stage_index, : len(kernels)] = kernels
            expand[row, stage_index, : len(expands)] = expands
    return resolution, width, depth, kernel, expand


def _count_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    resolution, width, depth, kernel, expand = _as_arrays(space, archs)
    stem_size = _strided(resolution, space.stem.stride)
    stem_k2 = space.stem.kernel_size**2
    macs = space.input_channels * width[:, 0] * stem_k2 * stem_size**2
    params = space.input_channels * width[:, 0] * stem_k2 + 2 * width[:, 0]
    channels, size = width[:, 0].copy(), stem_size
    for stage_index, stage in enumerate(space.stages):
        out = width[:, stage_index + 1]
        for block_index in range(max(stage.depth)):
            active = depth[:, stage_index] > block_index
            stride = stage.stride if block_index == 0 else 1
            ratio = expand[:, stage_index, block_index]
            k2 = kernel[:, stage_index, block_index] ** 2
            has_expand = ratio != 1
            mid = np.where(has_expand, _make_divisible(np.round(channels * ratio).astype(np.int64)), channels)
            se = _make_divisible(mid // 4) if stage.se else np.zeros_like(mid)
            out_size = _strided(size, stride)
            area_in, area_out = size**2, out_size**2
            projected = (channels != out) & (space.shortcut == "projected")
            block_macs = (
                has_expand * channels * mid * area_in
                + mid * k2 * area_out
                + 2 * mid * se
                + mid * out * area_out
                + projected * channels * out * area_out
            )
            block_params = (
                has_expand * (channels * mid + 2 * mid)
                + mid * k2
                + 2 * mid
                + (2 * mid * se + se + mid) * (se > 0)
                + mid * out
                + 2 * out
                + projected * channels * out
            )
            macs = macs + np.where(active, block_macs, 0)
            params = params + np.where(active, block_params, 0)
            channels = np.where(active, out, channels)
            size = np.where(active, out_size, size)
    head_mid = _make_divisible(np.round(channels * space.head.expand_ratio).astype(np.int64))
    head_out = width[:, -1]
    macs = macs + channels * head_mid * size**2 + head_mid * head_out + head_out * num_classes
    params = params + channels * head_mid + 2 * head_mid + head_mid * head_out + head_out * space.head.bias
    params = params + head_out * num_classes + num_classes
    return macs.astype(np.int64), params.astype(np.int64)


def count_macs_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int = DEFAULT_CLASSES) -> np.ndarray:
    """MACs of many archs at once (int64 array, same order)."""
    return _count_many(space, archs, num_classes)[0]


def count_params_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int = DEFAULT_CLASSES) -> np.ndarray:
    """Parameters of many archs at once (int64 array, same order)."""
    return _count_many(space, archs, num_classes)[1]
