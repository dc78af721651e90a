"""Dynamic (sliceable) layers of the supernet: the elastic ops of once-for-all (Cai et al., ICLR 2020).

Width and expand ratio are first-k channel slices of the largest weight; a smaller kernel is the centre
crop of the largest kernel, or (``kernel_transform``) once-for-all's kernel transformation: the centre crop
of the next larger transformed kernel times a learned matrix shared by all channels, chained from the
largest kernel down; BN slices its affine parameters and running statistics. Every layer keeps
the parameter names of its static counterpart (``weight``, ``bias``, ``running_mean``...), so a static
model's state dict is the supernet's sliced to the static shapes (see :func:`slice_to_shape`).
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LAYOUT_WARNING",
    "DynamicBatchNorm2d",
    "DynamicConv2d",
    "DynamicLinear",
    "DynamicSqueezeExcite",
    "GradientSwitch",
    "activation_layer",
    "share_gradient_switch",
    "slice_to_shape",
    "transform_name",
]

# torch's one-time note when a gradient is accumulated in place into a tensor laid out unlike its
# variable; with direct gradients that is every sliced weight, by design (a slice of the full gradient)
LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


def activation_layer(name: str) -> nn.Module:
    """The activation module for a space's activation name."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "h_swish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}; allowed: relu, swish, h_swish")


def _slice_index(have: torch.Size, shape: torch.Size) -> tuple[slice, ...]:
    """The index that slices a ``have``-shaped tensor to ``shape`` (see :func:`slice_to_shape`)."""
    if len(have) != len(shape):
        raise ValueError(f"cannot slice a {tuple(have)} tensor to {tuple(shape)}")
    index = []
    for dim, (size, want) in enumerate(zip(have, shape)):
        if want > size:
            raise ValueError(f"cannot slice a {tuple(have)} tensor to the larger {tuple(shape)}")
        start = (size - want) // 2 if dim >= 2 else 0
        index.append(slice(start, start + want))
    return tuple(index)


def slice_to_shape(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """First-k slice on channel dims (0, 1) and centre crop on kernel dims (2, 3)."""
    return tensor[_slice_index(tensor.shape, shape)]


def _cached_views(
    cache: dict,
    key: Hashable,
    tensors: tuple[torch.Tensor | None, ...],
    indices: tuple[Any, ...],
    leaves: bool = False,
) -> tuple[torch.Tensor | None, ...]:
    """``tensor[index]`` of each tensor (the tensor itself for a None tensor or index), kept in ``cache``.

    The views of ``key`` are reused as long as every tensor keeps its storage: a view aliases the live
    storage, so in-place updates (optimizer steps, ``load_state_dict``, BN statistics) are seen, while a
    reassigned or moved tensor has a new storage (the old one stays alive in the cache, so its address cannot
    be reused) and gets fresh views. Taking the views is then one dict look-up instead of several slicing ops.

    Without ``leaves`` (autograd off) the views are plain tensors outside autograd. With ``leaves`` (direct
    gradients) the view of a parameter that requires a gradient is a leaf that requires one too, and its
    ``.grad`` is the same slice of the parameter's ``.grad``: the backward pass accumulates each slice's
    gradient in place into the parameter's, with no slicing op and no full-size zero-padded gradient per
    slice. A missing parameter gradient is created here (zeros, in the buffer it last had), as it must exist
    before the backward pass.
    """
    stamp = tuple(None if t is None else (t.data_ptr(), leaves and t.requires_grad) for t in tensors)
    entry = cache.get(key)
    if entry is None or entry[0] != stamp:
        # views of detached aliases: outside autograd (or autograd leaves), whatever mode they were made in
        views = tuple(
            t if t is None or i is None else t.detach()[i].requires_grad_(leaves and t.requires_grad)
            for t, i in zip(tensors, indices)
        )
        entry = cache[key] = (stamp, views, [None] * len(tensors))
    if leaves:
        _bind_gradients(tensors, indices, entry[1], entry[2])
    return entry[1]


def _bind_gradients(
    tensors: tuple[torch.Tensor | None, ...], indices: tuple[Any, ...], views: tuple, bound: list
) -> None:
    """Make each leaf view's ``.grad`` the slice of its parameter's ``.grad`` (``bound``: the gradient each
    view's ``.grad`` is a slice of now)."""
    for position, (tensor, index, view) in enumerate(zip(tensors, indices, views)):
        if view is tensor or not view.requires_grad:
            continue
        gradient = tensor.grad
        if gradient is None:  # reset to None since the last pass: reuse the bound buffer, so no view rebinds
            gradient = bound[position]  # (rebinding every view every step costs P1 1.108 instead of 1.067)
            gradient = torch.zeros_like(tensor) if gradient is None else gradient.zero_()
            tensor.grad = gradient
        if bound[position] is not gradient:
            view.grad = gradient[index]
            bound[position] = gradient


class _ViewCache:
    """Mixin for the sliced layers: the slices of their parameters and buffers for one choice (``key``).

    With autograd off the views are cached (:func:`_cached_views`). With autograd on they are plain slices
    taken anew at every call, or, while the layer's ``gradient_switch`` is on (see
    :meth:`ofa.supernet.Supernet.direct_gradients`), cached leaf views whose gradients are slices of the
    parameters' gradients (:func:`_cached_views` with ``leaves``). Copies and pickles start with empty caches.
    """

    def _init_views(self) -> None:
        self._views: dict[Hashable, tuple] = {}  # choice -> (storage stamp, views); autograd off
        self._leaves: dict[Hashable, tuple] = {}  # choice -> (stamp, leaf views, bound gradients)
        self.gradient_switch = GradientSwitch()

    def _sliced(
        self, key: Hashable, tensors: tuple[torch.Tensor | None, ...], indices: tuple[Any, ...]
    ) -> tuple[torch.Tensor | None, ...]:
        if not torch.is_grad_enabled():
            return _cached_views(self._views, key, tensors, indices)
        if self.gradient_switch.enabled:
            return _cached_views(self._leaves, key, tensors, indices, leaves=True)
        return tuple(t if t is None or i is None else t[i] for t, i in zip(tensors, indices))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_views"] = {}
        state["_leaves"] = {}
        return state


class GradientSwitch:
    """Whether the sliced layers sharing this switch use direct gradients (one flag for a whole supernet)."""

    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = False


def share_gradient_switch(model: nn.Module) -> GradientSwitch:
    """Give every sliced layer of ``model`` one new switch (off) and return it."""
    switch = GradientSwitch()
    for module in model.modules():
        if isinstance(module, _ViewCache):
            module.gradient_switch = switch
    return switch


class DynamicConv2d(_ViewCache, nn.Module):
    """Conv2d whose output channels and kernel size are chosen per call; input channels follow the input.

    The slice of each (input, output, kernel) choice is worked out once (a per-layer table of Python
    slices); the sliced views come from :class:`_ViewCache` (cached with autograd off or with direct
    gradients, taken anew at every call otherwise).

    Args:
        max_in_channels: input channels of the largest subnet.
        max_out_channels: output channels of the largest subnet (equal to input for depthwise).
        max_kernel_size: largest (odd) kernel; smaller kernels are its centre crop.
        stride: stride of the conv.
        depthwise: one group per channel.
        bias: whether the conv has a bias.
        transformed_kernels: smaller kernels made by transformation matrices instead of a plain centre crop
            (parameters ``transform_<k>to<j>``, (j*j, j*j), identity at first, one per consecutive pair).
    """

    def __init__(
        self,
        max_in_channels: int,
        max_out_channels: int,
        max_kernel_size: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
        transformed_kernels: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = depthwise
        in_per_group = 1 if depthwise else max_in_channels
        shape = (max_out_channels, in_per_group, max_kernel_size, max_kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(max_out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.kernel_chain = _kernel_chain(max_kernel_size, transformed_kernels)
        for larger, smaller in self.kernel_chain:
            self.register_parameter(transform_name(larger, smaller), nn.Parameter(torch.eye(smaller * smaller)))
        # (in, out, kernel) -> (weight index or None for all, bias slice or None, padding, groups)
        self._slices: dict[tuple, tuple] = {}
        self._init_views()  # keyed by (in, out, kernel)

    def _slice_plan(self, in_channels: int, out_channels: int | None, kernel_size: int | None) -> tuple:
        out_channels = in_channels if self.depthwise else (out_channels or self.weight.size(0))
        kernel_size = kernel_size or self.weight.size(2)
        in_per_group = 1 if self.depthwise else in_channels
        shape = torch.Size((out_channels, in_per_group, kernel_size, kernel_size))
        full = shape == self.weight.shape
        index = None if full else _slice_index(self.weight.shape, shape)
        bias = None if self.bias is None or out_channels == self.bias.size(0) else slice(0, out_channels)
        return index, bias, kernel_size // 2, in_channels if self.depthwise else 1

    def kernel_weight(self, kernel_size: int, out_channels: int | None = None) -> torch.Tensor:
        """The weight of ``kernel_size`` (first ``out_channels`` filters): the centre crop of the largest kernel,
        or with transformation matrices the chained transformed crops (what extraction folds into a static
        conv)."""
        weight = self.weight if out_channels is None else self.weight[:out_channels]
        for larger, smaller in self.kernel_chain:
            if kernel_size > smaller:
                break
            start = (larger - smaller) // 2
            crop = weight[:, :, start : start + smaller, start : start + smaller]
            matrix = getattr(self, transform_name(larger, smaller))
            weight = F.linear(crop.reshape(-1, smaller * smaller), matrix).view(crop.shape)
        return slice_to_shape(weight, torch.Size((*weight.shape[:2], kernel_size, kernel_size)))

    def forward(self, x: torch.Tensor, out_channels: int | None = None, kernel_size: int | None = None) -> torch.Tensor:
        key = (x.size(1), out_channels, kernel_size)
        plan = self._slices.get(key)
        if plan is None:
            plan = self._slices[key] = self._slice_plan(*key)
        index, bias_index, padding, groups = plan
        weight, bias = self.weight, self.bias
        if self.kernel_chain and kernel_size is not None and kernel_size < weight.size(2):
            weight = self.kernel_weight(kernel_size, x.size(1) if self.depthwise else out_channels)
            bias = bias if bias_index is None else bias[bias_index]
        elif index is not None or bias_index is not None:
            weight, bias = self._sliced(key, (weight, bias), (index, bias_index))
        return F.conv2d(x, weight, bias, self.stride, padding, 1, groups)


def transform_name(larger: int, smaller: int) -> str:
    """The parameter name of the matrix that makes kernel ``smaller`` from kernel ``larger``."""
    return f"transform_{larger}to{smaller}"


def _kernel_chain(max_kernel_size: int, transformed_kernels: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Consecutive (larger, smaller) kernel pairs from ``max_kernel_size`` down through ``transformed_kernels``."""
    sizes = sorted({max_kernel_size, *transformed_kernels}, reverse=True)
    if sizes[0] != max_kernel_size:
        raise ValueError(f"transformed kernels {transformed_kernels} exceed the largest kernel {max_kernel_size}")
    return tuple(pairwise(sizes))


class DynamicBatchNorm2d(_ViewCache, nn.BatchNorm2d):
    """BatchNorm2d over the first ``x.size(1)`` channels (sliced affine and running statistics)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self._init_views()  # keyed by channels

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
        index = slice(0, channels)
        running_mean, running_var, weight, bias = self._sliced(
            channels, (self.running_mean, self.running_var, self.weight, self.bias), (index,) * 4
        )
        return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats, momentum, self.eps)


class DynamicLinear(_ViewCache, nn.Module):
    """Linear layer whose input features follow the input (first-k slice); outputs fixed."""

    def __init__(self, max_in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, max_in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.01)
        self._init_views()  # keyed by in features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x.size(1)
        if features == self.weight.size(1):
            return F.linear(x, self.weight, self.bias)
        (weight,) = self._sliced(features, (self.weight,), ((slice(None), slice(0, features)),))
        return F.linear(x, weight, self.bias)


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
