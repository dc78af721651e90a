"""Distributed data parallel training under ``torchrun`` (gloo on CPU, nccl on GPU).

Gradients are all-reduced by hand after the whole sandwich step (one reduction per optimizer step),
and attentive scores are all-reduced before a choice, so every rank trains the same subnets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedContext", "init_distributed"]


@dataclass(frozen=True)
class DistributedContext:
    """Rank, world size and device of this process."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints."""
        return self.rank == 0

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``tensor`` over ranks (in place)."""
        if self.enabled:
            dist.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def all_reduce_gradients(self, model: nn.Module) -> None:
        """Average every parameter's gradient over ranks, in one reduction.

        A gradient missing on a rank counts as zero; a parameter without a gradient on every rank keeps
        none (as in a single process, so the optimizer skips it rather than decaying it).
        """
        if not self.enabled:
            return
        parameters = [p for p in model.parameters() if p.requires_grad]
        if not parameters:
            return
        reference = parameters[0]
        pieces = [
            torch.zeros(p.numel(), dtype=reference.dtype, device=reference.device)
            if p.grad is None
            else p.grad.reshape(-1).to(reference.dtype)
            for p in parameters
        ]
        has_gradient = torch.tensor(
            [p.grad is not None for p in parameters], dtype=reference.dtype, device=reference.device
        )
        flat = torch.cat([*pieces, has_gradient])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        reached = (flat[-len(parameters) :] > 0).tolist()
        for index, parameter in enumerate(parameters):
            count = parameter.numel()
            if reached[index]:
                gradient = flat[offset : offset + count].view_as(parameter).to(parameter.dtype)
                if parameter.grad is None:
                    parameter.grad = gradient.clone()
                else:
                    parameter.grad.copy_(gradient)
            offset += count

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if self.enabled:
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, src=0)


def init_distributed(device_name: str) -> DistributedContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if device_name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but no GPU is available; use auto or cpu")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, device)
