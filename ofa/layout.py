"""The concrete layer shapes an arch builds into: one description shared by the static model and the counter.

Pure Python, no torch. ``network_layout(space, arch)`` lists the stem, every active block (channels,
kernel, stride, SE width, shortcut kind, spatial sizes) and the head, following the MobileNetV3 block
(Howard et al., ICCV 2019) as used by once-for-all and AttentiveNAS.
"""

from __future__ import annotations

from dataclasses import dataclass

from ofa.space import Arch, SearchSpace, make_divisible

__all__ = [
    "BlockLayout",
    "HeadLayout",
    "NetworkLayout",
    "StemLayout",
    "mid_channels",
    "network_layout",
    "se_channels",
    "shortcut_kind",
    "strided_size",
]


def strided_size(size: int, stride: int) -> int:
    """Spatial size after a layer with padding ``k // 2``: ``(size + 1) // 2`` for stride 2."""
    return (size + 1) // 2 if stride == 2 else size


def mid_channels(in_channels: int, expand_ratio: float) -> int:
    """Hidden channels of an inverted residual: the input itself for ratio 1, else divisible by 8."""
    if expand_ratio == 1:
        return in_channels
    return make_divisible(round(in_channels * expand_ratio), 8)


def se_channels(mid: int) -> int:
    """Squeeze channels of the SE module: ``make_divisible(mid // 4, 8)``."""
    return make_divisible(mid // 4, 8)


def shortcut_kind(policy: str, in_channels: int, out_channels: int, stride: int) -> str:
    """``identity``, ``none`` or ``projected`` (avg-pool when strided, then 1x1 conv when widths differ)."""
    if stride == 1 and in_channels == out_channels:
        return "identity"
    return "projected" if policy == "projected" else "none"


@dataclass(frozen=True)
class StemLayout:
    """Stem conv + BN + activation."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    activation: str
    input_size: int
    output_size: int


@dataclass(frozen=True)
class BlockLayout:
    """One inverted-residual block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ shortcut)."""

    stage: int
    index: int
    in_channels: int
    mid_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    se_channels: int  # 0 when the block has no SE
    activation: str
    shortcut: str  # identity | none | projected
    input_size: int
    output_size: int
    has_expand: bool  # the 1x1 expand conv exists (expand ratio other than 1)

    @property
    def shortcut_pool(self) -> bool:
        """Whether the projected shortcut average-pools (strided block)."""
        return self.shortcut == "projected" and self.stride > 1

    @property
    def shortcut_conv(self) -> bool:
        """Whether the projected shortcut has a 1x1 conv (widths differ)."""
        return self.shortcut == "projected" and self.in_channels != self.out_channels


@dataclass(frozen=True)
class HeadLayout:
    """1x1 conv + BN + act -> global pool -> 1x1 conv (+bias) + act -> dropout -> linear."""

    in_channels: int
    mid_channels: int
    out_channels: int
    bias: bool
    activation: str
    input_size: int


@dataclass(frozen=True)
class NetworkLayout:
    """Everything needed to build or count one subnet."""

    resolution: int
    stem: StemLayout
    blocks: tuple[BlockLayout, ...]
    head: HeadLayout
    num_classes: int


def network_layout(space: SearchSpace, arch: Arch, num_classes: int) -> NetworkLayout:
    """Layer shapes of ``arch`` (validated against ``space``) with a classifier of ``num_classes``."""
    space.validate(arch)
    size = arch.resolution
    stem_out = strided_size(size, space.stem.stride)
    stem = StemLayout(
        in_channels=space.input_channels,
        out_channels=arch.width[0],
        kernel_size=space.stem.kernel_size,
        stride=space.stem.stride,
        activation=space.stem.activation,
        input_size=size,
        output_size=stem_out,
    )
    size = stem_out
    channels = arch.width[0]
    blocks = []
    for stage_index, stage in enumerate(space.stages):
        out_channels = arch.width[stage_index + 1]
        for block_index in range(arch.depth[stage_index]):
            stride = stage.stride if block_index == 0 else 1
            expand = arch.expand_ratio[stage_index][block_index]
            mid = mid_channels(channels, expand)
            output_size = strided_size(size, stride)
            blocks.append(
                BlockLayout(
                    stage=stage_index,
                    index=block_index,
                    in_channels=channels,
                    mid_channels=mid,
                    out_channels=out_channels,
                    kernel_size=arch.kernel_size[stage_index][block_index],
                    stride=stride,
                    se_channels=se_channels(mid) if stage.se else 0,
                    activation=stage.activation,
                    shortcut=shortcut_kind(space.shortcut, channels, out_channels, stride),
                    input_size=size,
                    output_size=output_size,
                    has_expand=expand != 1,
                )
            )
            channels, size = out_channels, output_size
    head = HeadLayout(
        in_channels=channels,
        mid_channels=make_divisible(round(channels * space.head.expand_ratio), 8),
        out_channels=arch.width[-1],
        bias=space.head.bias,
        activation=space.head.activation,
        input_size=size,
    )
    return NetworkLayout(arch.resolution, stem, tuple(blocks), head, num_classes)
