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
``count_macs_many``/``count_params_many`` count many archs at once with numpy, block position by block
position, after converting and validating all archs as arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain, product, repeat
from operator import attrgetter

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
    "count_macs",
    "count_macs_many",
    "count_params",
    "count_params_many",
    "layout_macs",
    "layout_params",
]

DEFAULT_CLASSES = 1000


# ----------------------------------------------------------------------------------------------------
# per-layer terms (shared by the layout count and the per-space plan)
# ----------------------------------------------------------------------------------------------------


def _stem_macs(stem: StemLayout) -> int:
    return stem.in_channels * stem.out_channels * stem.kernel_size**2 * stem.output_size**2


def _stem_params(stem: StemLayout) -> int:
    return stem.in_channels * stem.out_channels * stem.kernel_size**2 + 2 * stem.out_channels


def _block_macs(block: BlockLayout) -> int:
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


def _block_params(block: BlockLayout) -> int:
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
    total = _stem_macs(layout.stem) + sum(_block_macs(block) for block in layout.blocks)
    return total + _head_macs(layout.head) + layout.head.out_channels * layout.num_classes


def layout_params(layout: NetworkLayout) -> int:
    """Trainable parameters of a network layout (conv and linear weights, biases, BN affine)."""
    total = _stem_params(layout.stem) + sum(_block_params(block) for block in layout.blocks)
    return total + _head_params(layout.head) + layout.head.out_channels * layout.num_classes + layout.num_classes


# ----------------------------------------------------------------------------------------------------
# single arch: a per-space plan of tabulated terms
# ----------------------------------------------------------------------------------------------------

# Tables of one resolution: stem {width: term}, per stage {(in width, out width): (first, rest)} with
# first/rest {(kernel, expand): term of the stage's first / of a later block}, head {(in, out width): term}.
_Tables = tuple[dict, tuple[dict, ...], dict]


class _Plan:
    """Tabulated MAC and parameter terms of one space, keyed by resolution (params: same for all)."""

    __slots__ = ("_stage_tuples", "depths", "macs", "num_stages", "params", "per_stage", "space")

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._stage_tuples: tuple[_StageTuples | None, _StageTuples | None] | None = None
        self.num_stages = len(space.stages)
        self.per_stage = space.granularity == "per_stage"
        self.depths = tuple(frozenset(stage.depth) for stage in space.stages)
        self.macs: dict[int, _Tables] = {}
        for resolution in space.resolution:
            self.macs[resolution] = _tables(space, resolution, _stem_macs, _block_macs, _head_macs)
        params = _tables(space, space.resolution[0], _stem_params, _block_params, _head_params)
        self.params: dict[int, _Tables] = dict.fromkeys(space.resolution, params)

    def stage_tuples(self) -> tuple[_StageTuples | None, _StageTuples | None]:
        """Numbered stage tuples of kernel size and expand ratio (None for a field with too many), built once."""
        if self._stage_tuples is None:
            self._stage_tuples = tuple(
                _StageTuples(self.space, field) if _StageTuples.fits(self.space, field) else None
                for field in ("kernel_size", "expand_ratio")
            )
        return self._stage_tuples


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


def count_macs(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_CLASSES) -> int:
    """Multiply-accumulates of ``arch`` at batch 1 (validated against ``space``)."""
    _check_classes(num_classes)
    plan = _plan(space)
    total = _tabulated_count(plan, plan.macs, arch)
    if total is None:  # not a valid arch of the space: the layout path validates and raises
        return layout_macs(network_layout(space, arch, num_classes))
    return total + arch.width[-1] * num_classes


def count_params(space: SearchSpace, arch: Arch, num_classes: int = DEFAULT_CLASSES) -> int:
    """Trainable parameters of the static model ``arch`` builds into."""
    _check_classes(num_classes)
    plan = _plan(space)
    total = _tabulated_count(plan, plan.params, arch)
    if total is None:
        return layout_params(network_layout(space, arch, num_classes))
    return total + arch.width[-1] * num_classes + num_classes


# ----------------------------------------------------------------------------------------------------
# vectorised counting
# ----------------------------------------------------------------------------------------------------


def _make_divisible(values: np.ndarray) -> np.ndarray:
    rounded = np.maximum(8, (values + 4) // 8 * 8)
    return np.where(rounded < 0.9 * values, rounded + 8, rounded)


def _strided(sizes: np.ndarray, stride: int) -> np.ndarray:
    return (sizes + 1) // 2 if stride == 2 else sizes


_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _as_arrays_one_by_one(space: SearchSpace, archs: Sequence[Arch]) -> _Arrays:
    """Validate and convert arch by arch: raises the first invalid arch's ``ValueError``."""
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


def _numbers(values: object, shape: tuple[int, ...]) -> np.ndarray | None:
    """``values`` as a float64 array of ``shape``, or None when ragged or not made of numbers."""
    array = np.asarray(values)
    if array.shape != shape or array.dtype.kind not in "biuf":
        return None
    return array.astype(np.float64, copy=False)


def _in(values: np.ndarray, choices: tuple) -> np.ndarray:
    return np.isin(values, np.asarray(choices, dtype=np.float64))


# Spaces whose per-block choices make more distinct stage tuples than this convert arch by arch.
_MAX_STAGE_TUPLES = 50_000


class _StageTuples:
    """Every valid per-stage tuple of one per-block field (kernel size or expand ratio), numbered.

    ``number`` maps a stage tuple to its row; ``allowed[s, row]`` says whether stage ``s`` allows it;
    ``lengths[row]`` is its depth and ``values[row]`` the tuple padded with 0 to the largest depth.
    """

    def __init__(self, space: SearchSpace, field: str) -> None:
        per_stage = space.granularity == "per_stage"
        stage_sets = []
        for stage in space.stages:
            choices = getattr(stage, field)
            if per_stage:
                tuples = [(choice,) * depth for depth in stage.depth for choice in choices]
            else:
                tuples = [combo for depth in stage.depth for combo in product(choices, repeat=depth)]
            stage_sets.append(set(tuples))
        self.number = {stage_tuple: row for row, stage_tuple in enumerate(set().union(*stage_sets))}
        max_depth = max(max(stage.depth) for stage in space.stages)
        self.allowed = np.zeros((len(space.stages), len(self.number)), dtype=bool)
        self.lengths = np.zeros(len(self.number), dtype=np.int64)
        self.values = np.zeros((len(self.number), max_depth), dtype=np.float64)
        for stage_tuple, row in self.number.items():
            self.lengths[row] = len(stage_tuple)
            self.values[row, : len(stage_tuple)] = stage_tuple
            for stage_index, tuples in enumerate(stage_sets):
                self.allowed[stage_index, row] = stage_tuple in tuples

    @staticmethod
    def fits(space: SearchSpace, field: str) -> bool:
        """Whether the space's stage tuples of ``field`` are few enough to number."""
        if space.granularity == "per_stage":
            return True
        total = sum(len(getattr(stage, field)) ** depth for stage in space.stages for depth in stage.depth)
        return total <= _MAX_STAGE_TUPLES

    def convert(self, stages_of: list, depth: np.ndarray) -> np.ndarray | None:
        """(N, S, D) values of the archs' stage tuples, or None when any tuple breaks a rule of the space."""
        count, n_stages = depth.shape
        if set(map(len, stages_of)) != {n_stages}:
            return None
        rows = np.fromiter(
            map(self.number.get, chain.from_iterable(stages_of), repeat(-1)), dtype=np.int64, count=count * n_stages
        ).reshape(count, n_stages)
        if (rows < 0).any() or not self.allowed[np.arange(n_stages), rows].all():
            return None
        if not np.array_equal(self.lengths[rows], depth):
            return None
        return self.values[rows]


def _as_arrays_at_once(space: SearchSpace, archs: Sequence[Arch]) -> _Arrays | None:
    """Convert and validate all archs with a few numpy operations, or None when some arch is invalid."""
    kernel_tuples, expand_tuples = _plan(space).stage_tuples()
    if kernel_tuples is None or expand_tuples is None or not all(map(isinstance, archs, repeat(Arch))):
        return None
    count, n_stages = len(archs), len(space.stages)
    resolution = _numbers(list(map(attrgetter("resolution"), archs)), (count,))
    width = _numbers(list(map(attrgetter("width"), archs)), (count, n_stages + 2))
    depth = _numbers(list(map(attrgetter("depth"), archs)), (count, n_stages))
    if resolution is None or width is None or depth is None or not _in(resolution, space.resolution).all():
        return None
    if not all(_in(width[:, index], choices).all() for index, choices in enumerate(space.width_choices)):
        return None
    if not all(_in(depth[:, index], stage.depth).all() for index, stage in enumerate(space.stages)):
        return None
    kernel = kernel_tuples.convert(list(map(attrgetter("kernel_size"), archs)), depth)
    expand = expand_tuples.convert(list(map(attrgetter("expand_ratio"), archs)), depth)
    if kernel is None or expand is None:
        return None
    as_int = np.int64
    return resolution.astype(as_int), width.astype(as_int), depth.astype(as_int), kernel.astype(as_int), expand


def _as_arrays(space: SearchSpace, archs: Sequence[Arch]) -> _Arrays:
    """Resolution (N,), width (N, S+2), depth (N, S), kernel and expand (N, S, D) padded with 0."""
    if len(archs) > 0:
        try:
            arrays = _as_arrays_at_once(space, archs)
        except (TypeError, ValueError, AttributeError, OverflowError):
            arrays = None
        if arrays is not None:
            return arrays
    return _as_arrays_one_by_one(space, archs)  # raises the first invalid arch's error


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
    _check_classes(num_classes)
    return _count_many(space, archs, num_classes)[0]


def count_params_many(space: SearchSpace, archs: Sequence[Arch], num_classes: int = DEFAULT_CLASSES) -> np.ndarray:
    """Parameters of many archs at once (int64 array, same order)."""
    _check_classes(num_classes)
    return _count_many(space, archs, num_classes)[1]
