"""The elastic supernet: one set of weights for every arch of a search space.

Elastic depth (first d blocks of a stage), width and expand ratio (first-k channel slices), kernel size
(centre crop of the largest kernel), sliced SE and BN, and the resolution of the input, as in
once-for-all (Cai et al., ICLR 2020), BigNAS and AttentiveNAS (Wang et al., CVPR 2021).
``set_active(arch)`` is the one place that changes which subnet runs; ``extract(arch)`` returns the
equivalent :class:`~ofa.static.StaticNet` with the sliced weights and BN statistics copied in.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from ofa._dynamic import (
    LAYOUT_WARNING,
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    DynamicSqueezeExcite,
    activation_layer,
    share_gradient_switch,
    slice_to_shape,
)
from ofa.layout import mid_channels, network_layout, se_channels, shortcut_kind
from ofa.space import Arch, SearchSpace, make_divisible
from ofa.static import StaticNet

__all__ = ["DynamicInvertedResidual", "Supernet"]


class DynamicStem(nn.Module):
    """Stem conv + BN + activation with elastic output width."""

    def __init__(self, in_channels: int, max_width: int, kernel_size: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv = DynamicConv2d(in_channels, max_width, kernel_size, stride)
        self.bn = DynamicBatchNorm2d(max_width)
        self.act = activation_layer(activation)
        self.active_width = max_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, self.active_width)))


class DynamicShortcut(nn.Module):
    """Projected shortcut with elastic widths: average pool when strided, 1x1 conv when widths differ."""

    def __init__(self, max_in_channels: int, max_out_channels: int, stride: int, has_conv: bool) -> None:
        super().__init__()
        self.stride = stride
        self.conv = DynamicConv2d(max_in_channels, max_out_channels) if has_conv else None

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True, count_include_pad=False)
        if x.size(1) != out_channels:
            x = self.conv(x, out_channels)
        return x


class DynamicInvertedResidual(nn.Module):
    """Inverted residual with elastic kernel, expand ratio and width; input width follows the input.

    Args:
        in_choices: possible input widths.
        out_choices: possible output widths.
        kernel_choices: possible kernel sizes.
        expand_choices: possible expand ratios.
        stride: stride of the depthwise conv.
        se: whether the block has squeeze-excite.
        activation: activation name.
        shortcut_policy: ``projected`` or ``identity`` (the space's shortcut policy).
        kernel_transform: smaller kernels by transformation matrices (once-for-all) instead of a centre crop.
    """

    def __init__(
        self,
        in_choices: tuple[int, ...],
        out_choices: tuple[int, ...],
        kernel_choices: tuple[int, ...],
        expand_choices: tuple[float, ...],
        stride: int,
        se: bool,
        activation: str,
        shortcut_policy: str,
        kernel_transform: bool = False,
    ) -> None:
        super().__init__()
        max_in, max_out = max(in_choices), max(out_choices)
        max_mid = max(mid_channels(c, e) for c in in_choices for e in expand_choices)
        self.stride = stride
        self.shortcut_policy = shortcut_policy
        # expand
        has_expand = any(e != 1 for e in expand_choices)
        self.conv_pw = DynamicConv2d(max_in, max_mid) if has_expand else None
        self.bn1 = DynamicBatchNorm2d(max_mid) if has_expand else None
        self.act1 = activation_layer(activation)
        # depthwise
        transformed = kernel_choices if kernel_transform else ()
        self.conv_dw = DynamicConv2d(
            max_mid, max_mid, max(kernel_choices), stride, depthwise=True, transformed_kernels=transformed
        )
        self.bn2 = DynamicBatchNorm2d(max_mid)
        self.act2 = activation_layer(activation)
        # squeeze-excite
        self.se = DynamicSqueezeExcite(max_mid, se_channels(max_mid)) if se else None
        # project
        self.conv_pwl = DynamicConv2d(max_mid, max_out)
        self.bn3 = DynamicBatchNorm2d(max_out)
        kinds = {shortcut_kind(shortcut_policy, c, o, stride) for c in in_choices for o in out_choices}
        has_conv = any(c != o for c in in_choices for o in out_choices)
        self.shortcut = DynamicShortcut(max_in, max_out, stride, has_conv) if "projected" in kinds else None
        # active choices, set by Supernet.set_active
        self.active_out_channels = max_out
        self.active_kernel_size = max(kernel_choices)
        self.active_expand_ratio = max(expand_choices)
        self.drop_path_rate = 0.0  # set by Supernet.set_drop_path (largest subnet in training only)
        # (in, out, expand) -> (mid channels, SE channels, shortcut kind), worked out once per choice
        self._shapes: dict[tuple, tuple[int, int, str]] = {}

    def _shape_plan(self, in_channels: int, out_channels: int, expand_ratio: float) -> tuple[int, int, str]:
        mid = mid_channels(in_channels, expand_ratio)
        kind = shortcut_kind(self.shortcut_policy, in_channels, out_channels, self.stride)
        return mid, se_channels(mid), kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_channels, expand_ratio = self.active_out_channels, self.active_expand_ratio
        key = (x.size(1), out_channels, expand_ratio)
        shapes = self._shapes.get(key)
        if shapes is None:
            shapes = self._shapes[key] = self._shape_plan(*key)
        mid, squeeze, kind = shapes
        out = x
        if expand_ratio != 1:
            out = self.act1(self.bn1(self.conv_pw(out, mid)))
        out = self.act2(self.bn2(self.conv_dw(out, kernel_size=self.active_kernel_size)))
        if self.se is not None:
            out = self.se(out, squeeze)
        out = self.bn3(self.conv_pwl(out, out_channels))
        if kind != "none" and self.training and self.drop_path_rate > 0:
            out = drop_path(out, self.drop_path_rate)
        if kind == "identity":
            out = out + x
        elif kind == "projected":
            out = out + self.shortcut(x, out_channels)
        return out


def drop_path(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Zero each sample's residual branch with probability ``rate``, scale the kept ones by 1 / (1 - rate).

    Stochastic depth (Huang et al., 2016), called drop-connect in EfficientNet and AttentiveNAS.
    """
    keep = 1.0 - rate
    mask = torch.empty((x.size(0),) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class DynamicHead(nn.Module):
    """1x1 conv + BN + act -> pool -> 1x1 conv (+bias) + act -> dropout -> linear, all width-elastic."""

    def __init__(
        self,
        max_in_channels: int,
        expand_ratio: float,
        max_width: int,
        bias: bool,
        activation: str,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.expand_ratio = expand_ratio
        max_mid = make_divisible(round(max_in_channels * expand_ratio), 8)
        self.conv = DynamicConv2d(max_in_channels, max_mid)
        self.bn = DynamicBatchNorm2d(max_mid)
        self.act1 = activation_layer(activation)
        self.conv_final = DynamicConv2d(max_mid, max_width, bias=bias)
        self.act2 = activation_layer(activation)
        self.dropout = nn.Dropout(dropout)
        self.classifier = DynamicLinear(max_width, num_classes)
        self.active_width = max_width
        self._mid: dict[int, int] = {}  # input channels -> mid channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_channels = x.size(1)
        mid = self._mid.get(in_channels)
        if mid is None:
            mid = self._mid[in_channels] = make_divisible(round(in_channels * self.expand_ratio), 8)
        x = self.act1(self.bn(self.conv(x, mid)))
        x = x.mean((2, 3), keepdim=True)
        x = self.act2(self.conv_final(x, self.active_width))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


class Supernet(nn.Module):
    """Weight-sharing supernet of a search space.

    Args:
        space: the search space.
        num_classes: classifier outputs.
        dropout: dropout before the classifier (training only).
    """

    def __init__(self, space: SearchSpace, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.space = space
        self.num_classes = num_classes
        self.dropout = dropout
        self.stem = DynamicStem(
            space.input_channels,
            max(space.stem.width),
            space.stem.kernel_size,
            space.stem.stride,
            space.stem.activation,
        )
        stages = []
        in_choices = space.stem.width
        for stage in space.stages:
            blocks = []
            for index in range(max(stage.depth)):
                blocks.append(
                    DynamicInvertedResidual(
                        in_choices=in_choices if index == 0 else stage.width,
                        out_choices=stage.width,
                        kernel_choices=stage.kernel_size,
                        expand_choices=stage.expand_ratio,
                        stride=stage.stride if index == 0 else 1,
                        se=stage.se,
                        activation=stage.activation,
                        shortcut_policy=space.shortcut,
                        kernel_transform=space.kernel_transform,
                    )
                )
            stages.append(nn.ModuleList(blocks))
            in_choices = stage.width
        self.stages = nn.ModuleList(stages)
        head = space.head
        self.head = DynamicHead(
            max(in_choices), head.expand_ratio, max(head.width), head.bias, head.activation, num_classes, dropout
        )
        self.active_depth = tuple(max(stage.depth) for stage in space.stages)
        self.active_arch = self.set_active(space.max_arch())
        self.gradient_switch = share_gradient_switch(self)

    def set_active(self, arch: Arch) -> Arch:
        """Make ``arch`` the subnet that ``forward`` runs (validated against the space); returns it."""
        self.space.validate(arch)
        self.stem.active_width = arch.width[0]
        for stage_index, blocks in enumerate(self.stages):
            for block_index in range(arch.depth[stage_index]):
                block = blocks[block_index]
                block.active_out_channels = arch.width[stage_index + 1]
                block.active_kernel_size = arch.kernel_size[stage_index][block_index]
                block.active_expand_ratio = arch.expand_ratio[stage_index][block_index]
        self.head.active_width = arch.width[-1]
        self.active_depth = arch.depth
        self.active_arch = arch
        return arch

    def set_dropout(self, rate: float) -> None:
        """Dropout before the classifier (the sandwich rule uses it for the largest subnet only)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {rate}")
        self.head.dropout.p = rate

    def set_drop_path(self, rate: float) -> None:
        """Drop-path on the residual branches: block ``i`` of ``n`` drops with ``rate * i / n`` (AttentiveNAS).

        The sandwich rule uses it for the largest subnet only; 0 turns it off.
        """
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {rate}")
        blocks = [block for stage in self.stages for block in stage]
        for index, block in enumerate(blocks):
            block.drop_path_rate = rate * index / len(blocks)

    @contextlib.contextmanager
    def direct_gradients(self) -> Iterator[None]:
        """Training passes that write each sliced weight's gradient straight into its slice of the full
        parameter's ``.grad`` (what the trainer's steps use; the gradients are the same as plain slicing's).

        Inside, a forward pass with autograd on uses cached leaf views of the sliced weights whose ``.grad``
        are slices of the parameters' ``.grad``: no slicing ops per pass and no full-size zero-padded gradient
        per slice in the backward pass. The parameters' gradients are therefore created (as zeros, in their
        previous buffer) by the forward pass, so: reset gradients only before a forward pass, never between a
        forward pass and its backward pass (the gradient would land in the old buffer), and follow each
        forward pass with autograd on by its backward pass (or the parameters it sliced keep zero gradients).
        """
        previous, self.gradient_switch.enabled = self.gradient_switch.enabled, True
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=LAYOUT_WARNING)
                yield
        finally:
            self.gradient_switch.enabled = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, stem, H/2, W/2)
        for blocks, depth in zip(self.stages, self.active_depth):
            for block in islice(blocks, depth):
                x = block(x)
        return self.head(x)  # (B, classes)

    def extract(self, arch: Arch) -> StaticNet:
        """A static model of ``arch`` with the supernet's sliced weights and BN statistics copied in (kernel
        transformations folded into the depthwise weights)."""
        layout = network_layout(self.space, arch, self.num_classes)
        model = StaticNet(layout, self.dropout)
        source = self.state_dict()
        if self.space.kernel_transform:
            with torch.no_grad():
                for stage_index, blocks in enumerate(self.stages):
                    for block_index in range(arch.depth[stage_index]):
                        kernel = arch.kernel_size[stage_index][block_index]
                        name = f"stages.{stage_index}.{block_index}.conv_dw.weight"
                        source[name] = blocks[block_index].conv_dw.kernel_weight(kernel)
        target = model.state_dict()
        sliced = {name: slice_to_shape(source[name], tensor.shape).clone() for name, tensor in target.items()}
        model.load_state_dict(sliced, strict=True)
        model.train(self.training)
        return model.to(next(self.parameters()).device)

    def zero_init_last_bn(self) -> None:
        """Zero the last BN's scale in every block, so each block starts as its shortcut (BigNAS)."""
        for blocks in self.stages:
            for block in blocks:
                nn.init.zeros_(block.bn3.weight)
