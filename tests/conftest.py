"""Shared fixtures: the shipped spaces, seeded archs and randomised BN."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ofa.space import Arch, SearchSpace, load_space

ROOT = Path(__file__).resolve().parent.parent
SPACE_NAMES = sorted(path.stem for path in (ROOT / "configs" / "spaces").glob("*.yaml"))


def seeded_archs(space: SearchSpace, count: int, seed: int = 0) -> list[Arch]:
    """Min, max and ``count`` random archs of ``space``."""
    rng = random.Random(seed)
    return [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(count)]


def randomise_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters, so stale or missing buffers would show."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
            module.num_batches_tracked.fill_(7)


def write_images(folder: Path, classes: dict[str, int], size: int = 12) -> None:
    """Random RGB PNGs in ``folder/<class>/``, ``count`` per class (widths size .. size + count - 1)."""
    rng = np.random.default_rng(len(str(folder)))
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (size, size + index, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.png")


@pytest.fixture(scope="session")
def tiny() -> SearchSpace:
    """The CPU search space (a frozen value, shared by every test)."""
    return load_space("tiny")


@pytest.fixture(params=SPACE_NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    """Every shipped search space."""
    return load_space(request.param)


@pytest.fixture(autouse=True)
def _single_thread_torch() -> None:
    torch.set_num_threads(1)
