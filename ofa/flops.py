"""Analytic MAC and parameter counts: the single source of truth for "FLOPs" in this project.

Convention (once-for-all, AttentiveNAS): FLOPs = multiply-accumulates of every Conv2d
(``c_in * c_out * k * k * H_out * W_out / groups``) and Linear (``in * out``) at batch 1, SE convs and
shortcut projections included; BN, activations, pooling, additions, biases and the input resize
excluded. Parameters are the trainable tensors of the extracted static model (BN running statistics
are buffers, not parameters).

``layout_macs``/``layout_params`` count a :class:`~ofa.layout.NetworkLayout` layer by layer.
``count_macs``/``count_params`` count one arch from a per-space plan: every block's cost depends only
on the resolution, its input and output widths, its position (first of its stage or not), its kernel
size and its expand ratio, so the plan tabulates those terms once per space (with the same per-block
formulas as the layout count) and an arch costs a few dictionary look-ups. Whatever the fast path cannot
vouch for goes through ``network_layout``, which validates and raises the usual ``ValueError``.
``count_macs_many``/``count_params_many`` count many archs with the same plan: one formula per layer in the
whole project (the search's MAC tables in ``ofa._genome`` are built from ``layout_macs`` too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ofa.layout import (
    BlockLayout,
    HeadLayout,
    NetworkLayout,
    StemLayout,
    mid_channels,
    network_layout,
    se_channels,
    shortcut_kind,
    strided_size,
)
from ofa.space import Arch, SearchSpace, make_divisible

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "block_macs",
    "block_params",
    "count_macs",
    "count_macs_many",
    "count_params",
    "count_params_many",
    "layout_macs",
    "layout_params",
]

DEFAULT_NUM_CLASSES = 10  # the library's one default (the data sets' and the runs'); paper figures pass 1000


# ----------------------------------------------------------------------------------------------------
# per-layer terms (shared by the layout count and the per-space plan)
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# single arch: a per-space plan of tabulated terms
# ----------------------------------------------------------------------------------------------------

# Tables of one resolution: stem {width: term}, per stage {(in width, out width): (first, rest)} with
# first/rest {(kernel, expand): term of the stage's first / of a later block}, head {(in, out width): term}.
_Tables = tuple[dict, tuple[dict, ...], dict]


class _Plan:
    """Tabulated MAC and parameter terms of one space, keyed by resolution (params: same for all)."""

    __slots__ = ("depths", "macs", "num_stages", "params", "per_stage", "space")

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.num_stages = len(space.stages)
        self.per_stage = space.granularity == "per_stage"
        self.depths = tuple(frozenset(stage.depth) for stage in space.stages)
        self.macs: dict[int, _Tables] = {}
        for resolution in space.resolution:
            self.macs[resolution] = _tables(space, resolution, _stem_macs, block_macs, _head_macs)
        params = _tables(space, space.resolution[0], _stem_params, block_params, _head_params)
        self.params: dict[int, _Tables] = dict.fromkeys(space.resolution, params)


def _block(
    space: SearchSpace, stage_index: int, first: bool, channels: int, width: int, kernel: int, expand: float, size: int
) -> BlockLayout:
    """One block's layout with the shapes ``network_layout`` gives it (``index`` only tells first from later)."""
    stage = space.stages[stage_index]
    stride = stage.stride if first else 1
    mid = mid_channels(channels, expand)
    return BlockLayout(
        stage=stage_index,
        index=0 if first else 1,
        in_channels=channels,
        mid_channels=mid,
        out_channels=width,
        kernel_size=kernel,
        stride=stride,
        se_channels=se_channels(mid) if stage.se else 0,
        activation=stage.activation,
        shortcut=shortcut_kind(space.shortcut, channels, width, stride),
        input_size=size,
        output_size=strided_size(size, stride),
        has_expand=expand != 1,
    )


def _tables(
    space: SearchSpace,
    resolution: int,
    stem_term: Callable[[StemLayout], int],
    block_term: Callable[[BlockLayout], int],
    head_term: Callable[[HeadLayout], int],
) -> _Tables:
    size = strided_size(resolution, space.stem.stride)
    stem = {
        width: stem_term(
            StemLayout(
                space.input_channels,
                width,
                space.stem.kernel_size,
                space.stem.stride,
                space.stem.activation,
                resolution,
                size,
            )
        )
        for width in space.stem.width
    }
    stages = []
    in_choices = space.stem.width
    for index, stage in enumerate(space.stages):
        pairs = [(kernel, expand) for kernel in stage.kernel_size for expand in stage.expand_ratio]
        out_size = strided_size(size, stage.stride)
        rest = {
            width: {(k, e): block_term(_block(space, index, False, width, width, k, e, out_size)) for k, e in pairs}
            for width in stage.width
        }
        stages.append(
            {
                (channels, width): (
                    {(k, e): block_term(_block(space, index, True, channels, width, k, e, size)) for k, e in pairs},
                    rest[width],
                )
                for channels in in_choices
                for width in stage.width
            }
        )
        in_choices, size = stage.width, out_size
    head = {}
    for channels in in_choices:
        head_mid = make_divisible(round(channels * space.head.expand_ratio), 8)
        for width in space.head.width:
            layout = HeadLayout(channels, head_mid, width, space.head.bias, space.head.activation, size)
            head[channels, width] = head_term(layout)
    return stem, tuple(stages), head


# Plans are derived, immutable data of a (frozen) space: a small bounded cache keyed by identity, holding
# the space itself so that its id cannot be reused while cached. Nothing observable depends on it.
_PLAN_CACHE: dict[int, tuple[SearchSpace, _Plan]] = {}
_PLAN_CACHE_SIZE = 16


def _plan(space: SearchSpace) -> _Plan:
    entry = _PLAN_CACHE.get(id(space))
    if entry is not None and entry[0] is space:
        return entry[1]
    plan = _Plan(space)
    if len(_PLAN_CACHE) >= _PLAN_CACHE_SIZE:
        _PLAN_CACHE.clear()
    _PLAN_CACHE[id(space)] = (space, plan)
    return plan


def _tabulated_count(plan: _Plan, tables: dict[int, _Tables], arch: Arch) -> int | None:
    """Stem + blocks + head (no classifier) of a valid arch, or None when anything looks off."""
    if not isinstance(arch, Arch):
        return None
    width, depth, kernels, expands = arch.width, arch.depth, arch.kernel_size, arch.expand_ratio
    count, per_stage = plan.num_stages, plan.per_stage
    if len(width) != count + 2 or len(depth) != count or len(kernels) != count or len(expands) != count:
        return None
    try:
        stem, stages, head = tables[arch.resolution]
        total = stem[width[0]] + head[width[count], width[count + 1]]
        for stage, depths, channels, out, blocks, stage_kernels, stage_expands in zip(
            stages, plan.depths, width, width[1:], depth, kernels, expands
        ):
            if type(blocks) is not int or blocks not in depths:
                return None
            if len(stage_kernels) != blocks or len(stage_expands) != blocks:
                return None
            first, rest = stage[channels, out]
            if per_stage:  # one kernel and expand ratio for all blocks of the stage
                pair = stage_kernels[0], stage_expands[0]
                if stage_kernels.count(pair[0]) != blocks or stage_expands.count(pair[1]) != blocks:
                    return None
                total += first[pair] + (blocks - 1) * rest[pair]
            else:
                pairs = zip(stage_kernels, stage_expands)
                total += first[next(pairs)] + sum(map(rest.__getitem__, pairs))
    except (KeyError, TypeError, AttributeError):
        return None
    return total


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")


def count_macs(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_NUM_CLASSES) -> int:
    """Multiply-accumulates of ``arch`` at batch 1 (validated against ``space``)."""
    _check_classes(num_classes)
    plan = _plan(space)
    total = _tabulated_count(plan, plan.macs, arch)
    if total is None:  # not a valid arch of the space: the layout path validates and raises
        return layout_macs(network_layout(space, arch, num_classes))
    return total + arch.width[-1] * num_classes


def count_params(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_NUM_CLASSES) -> int:
    """Trainable parameters of the static model ``arch`` builds into."""
    _check_classes(num_classes)
    plan = _plan(space)
    total = _tabulated_count(plan, plan.params, arch)
    if total is None:
        return layout_params(network_layout(space, arch, num_classes))
    return total + arch.width[-1] * num_classes + num_classes


# ----------------------------------------------------------------------------------------------------
# many archs: the same plan, arch by arch (no second formula; about 3x slower than a numpy path was, >100k/s)
# ----------------------------------------------------------------------------------------------------


def _count_each(space: SearchSpace, archs: Sequence[Arch], num_classes: int, params: bool) -> np.ndarray:
    """The plan's count of every arch; an arch the plan cannot vouch for goes through the single-arch path,
    which validates it (and raises)."""
    _check_classes(num_classes)
    plan = _plan(space)
    tables, single = (plan.params, count_params) if params else (plan.macs, count_macs)
    counts = np.empty(len(archs), dtype=np.int64)
    for row, arch in enumerate(archs):
        total = _tabulated_count(plan, tables, arch)
        if total is None:
            counts[row] = single(space, arch, num_classes)
        else:
            counts[row] = total + arch.width[-1] * num_classes + (num_classes if params else 0)
    return counts


def count_macs_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int = DEFAULT_NUM_CLASSES) -> np.ndarray:
    """MACs of many archs (int64 array, same order); the first invalid arch raises its ``ValueError``."""
    return _count_each(space, archs, num_classes, params=False)


def count_params_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int = DEFAULT_NUM_CLASSES) -> np.ndarray:
    """Parameters of many archs (int64 array, same order)."""
    return _count_each(space, archs, num_classes, params=True)
