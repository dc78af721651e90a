"""The static MobileNetV3-like model an arch builds into: what extraction returns and export ships.

A searched network is plain data (a :class:`~ofa.layout.NetworkLayout`) fed to one model class with plain
``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` layers: no slicing, no dynamic code. Block structure follows
MobileNetV3 (Howard et al., ICCV 2019): 1x1 expand -> kxk depthwise -> SE -> 1x1 project, with the
shortcut the layout names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ofa._dynamic import activation_layer
from ofa.layout import BlockLayout, HeadLayout, NetworkLayout, StemLayout

__all__ = ["Head", "InvertedResidual", "Shortcut", "SqueezeExcite", "StaticNet", "Stem"]


class Stem(nn.Module):
    """Conv + BN + activation."""

    def __init__(self, layout: StemLayout) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            layout.in_channels,
            layout.out_channels,
            layout.kernel_size,
            layout.stride,
            layout.kernel_size // 2,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(layout.out_channels)
        self.act = activation_layer(layout.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Pool -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> hard-sigmoid -> multiply."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.conv_expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = F.hardsigmoid(self.conv_expand(F.relu(self.conv_reduce(scale), inplace=True)), inplace=True)
        return x * scale


class Shortcut(nn.Module):
    """Projected shortcut: average pool when strided, then a 1x1 conv (no BN) when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True, count_include_pad=False)
        if self.conv is not None:
            x = self.conv(x)
        return x


class InvertedResidual(nn.Module):
    """MobileNetV3 inverted residual block with optional SE and the shortcut its layout names."""

    def __init__(self, layout: BlockLayout) -> None:
        super().__init__()
        mid = layout.mid_channels
        self.shortcut_kind = layout.shortcut
        # expand
        self.conv_pw = nn.Conv2d(layout.in_channels, mid, 1, bias=False) if layout.has_expand else None
        self.bn1 = nn.BatchNorm2d(mid) if layout.has_expand else None
        self.act1 = activation_layer(layout.activation)
        # depthwise
        kernel = layout.kernel_size
        self.conv_dw = nn.Conv2d(mid, mid, kernel, layout.stride, kernel // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = activation_layer(layout.activation)
        # squeeze-excite
        self.se = SqueezeExcite(mid, layout.se_channels) if layout.se_channels else None
        # project
        self.conv_pwl = nn.Conv2d(mid, layout.out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(layout.out_channels)
        self.shortcut = (
            Shortcut(layout.in_channels, layout.out_channels, layout.stride) if layout.shortcut == "projected" else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.conv_pw is not None:
            out = self.act1(self.bn1(self.conv_pw(out)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv_pwl(out))
        if self.shortcut_kind == "identity":
            out = out + x
        elif self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class Head(nn.Module):
    """1x1 conv + BN + act -> global pool -> 1x1 conv (+bias) + act -> dropout -> linear classifier."""

    def __init__(self, layout: HeadLayout, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(layout.in_channels, layout.mid_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(layout.mid_channels)
        self.act1 = activation_layer(layout.activation)
        self.conv_final = nn.Conv2d(layout.mid_channels, layout.out_channels, 1, bias=layout.bias)
        self.act2 = activation_layer(layout.activation)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(layout.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn(self.conv(x)))
        x = x.mean((2, 3), keepdim=True)
        x = self.act2(self.conv_final(x))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


class StaticNet(nn.Module):
    """A plain network built from a layout; ``resolution`` is the input side it was chosen for."""

    def __init__(self, layout: NetworkLayout, dropout: float = 0.0) -> None:
        super().__init__()
        self.resolution = layout.resolution
        self.stem = Stem(layout.stem)
        num_stages = max((block.stage for block in layout.blocks), default=-1) + 1
        stages: list[list[nn.Module]] = [[] for _ in range(num_stages)]
        for block in layout.blocks:
            stages[block.stage].append(InvertedResidual(block))
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.head = Head(layout.head, layout.num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, stem, H/2, W/2)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)  # (B, classes)
