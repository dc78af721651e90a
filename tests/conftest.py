"""Shared fixtures: the shipped spaces and seeded archs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from ofa.space import Arch, SearchSpace, load_space

ROOT = Path(__file__).resolve().parent.parent
SPACE_NAMES = sorted(path.stem for path in (ROOT / "configs" / "spaces").glob("*.yaml"))


def seeded_archs(space: SearchSpace, count: int, seed: int = 0) -> list[Arch]:
    """Min, max and ``count`` random archs of ``space``."""
    rng = random.Random(seed)
    return [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(count)]


@pytest.fixture(params=SPACE_NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    """Every shipped search space."""
    return load_space(request.param)


@pytest.fixture(autouse=True)
def _single_thread_torch() -> None:
    torch.set_num_threads(1)
