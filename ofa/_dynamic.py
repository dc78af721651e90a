"""Dynamic (sliceable) layers of the supernet: the elastic ops of once-for-all (Cai et al., ICLR 2020).

Width and expand ratio are first-k channel slices of the largest weight; a smaller kernel is the centre
crop of the largest kernel; BN slices its affine parameters and running statistics. Every layer keeps
the parameter names of its static counterpart (``weight``, ``bias``, ``running_mean``...), so a static
model's state dict is the supernet's sliced to the static shapes (see :func:`slice_to_shape`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DynamicBatchNorm2d",
    "DynamicConv2d",
    "DynamicLinear",
    "DynamicSqueezeExcite",
    "activation_layer",
    "slice_to_shape",
]


def activation_layer(name: str) -> nn.Module:
    """The activation module for a space's activation name."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "h_swish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}; allowed: relu, swish, h_swish")


def slice_to_shape(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """First-k slice on channel dims (0, 1) and centre crop on kernel dims (2, 3)."""
    if tensor.dim() != len(shape):
        raise ValueError(f"cannot slice a {tuple(tensor.shape)} tensor to {tuple(shape)}")
    index = []
    for dim, (have, want) in enumerate(zip(tensor.shape, shape)):
        if want > have:
            raise ValueError(f"cannot slice a {tuple(tensor.shape)} tensor to the larger {tuple(shape)}")
        start = (have - want) // 2 if dim >= 2 else 0
        index.append(slice(start, start + want))
    return tensor[tuple(index)]


class DynamicConv2d(nn.Module):
    """Conv2d whose output channels and kernel size are chosen per call; input channels follow the input.

    Args:
        max_in_channels: input channels of the largest subnet.
        max_out_channels: output channels of the largest subnet (equal to input for depthwise).
        max_kernel_size: largest (odd) kernel; smaller kernels are its centre crop.
        stride: stride of the conv.
        depthwise: one group per channel.
        bias: whether the conv has a bias.
    """

    def __init__(
        self,
        max_in_channels: int,
        max_out_channels: int,
        max_kernel_size: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = depthwise
        in_per_group = 1 if depthwise else max_in_channels
        shape = (max_out_channels, in_per_group, max_kernel_size, max_kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(max_out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_channels: int | None = None, kernel_size: int | None = None) -> torch.Tensor:
        in_channels = x.size(1)
        out_channels = in_channels if self.depthwise else (out_channels or self.weight.size(0))
        kernel_size = kernel_size or self.weight.size(2)
        in_per_group = 1 if self.depthwise else in_channels
        weight = slice_to_shape(self.weight, torch.Size((out_channels, in_per_group, kernel_size, kernel_size)))
        bias = self.bias[:out_channels] if self.bias is not None else None
        groups = in_channels if self.depthwise else 1
        return F.conv2d(x, weight, bias, self.stride, kernel_size // 2, 1, groups)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the first ``x.size(1)`` channels (sliced affine and running statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.size(1)
        if channels == self.num_features:
            return super().forward(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:channels],
            self.running_var[:channels],
            self.weight[:channels],
            self.bias[:channels],
            use_batch_stats,
            momentum,
            self.eps,
        )


class DynamicLinear(nn.Module):
    """Linear layer whose input features follow the input (first-k slice); outputs fixed."""

    def __init__(self, max_in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, max_in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.size(1)], self.bias)


class DynamicSqueezeExcite(nn.Module):
    """SE with sliced channels: pool -> 1x1 conv to ``se_channels(mid)`` -> ReLU -> 1x1 conv -> h-sigmoid."""

    def __init__(self, max_channels: int, max_squeeze_channels: int) -> None:
        super().__init__()
        self.conv_reduce = DynamicConv2d(max_channels, max_squeeze_channels, bias=True)
        self.conv_expand = DynamicConv2d(max_squeeze_channels, max_channels, bias=True)

    def forward(self, x: torch.Tensor, squeeze_channels: int) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = F.relu(self.conv_reduce(scale, squeeze_channels), inplace=True)
        scale = F.hardsigmoid(self.conv_expand(scale, x.size(1)), inplace=True)
        return x * scale
