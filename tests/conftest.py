"""Shared fixtures: the shipped spaces, seeded archs, randomised BN and one briefly trained run."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ofa.archdata import measure_to_csv, spread_archs
from ofa.config import config_from_dict
from ofa.runs import load_run
from ofa.space import Arch, SearchSpace, load_space
from ofa.train_config import TrainConfig
from ofa.trainer import train

ROOT = Path(__file__).resolve().parent.parent
SPACE_NAMES = sorted(path.stem for path in (ROOT / "configs" / "spaces").glob("*.yaml"))
TRAINED_RUN_ARCHS = 12  # archs measured into the trained run's archs.csv
BIG_SPACES = ("attentivenas", "ofa_mbv3")  # ImageNet-sized: slow per arch, so few archs in the default run


def archs_per_space(space: SearchSpace, count: int) -> int:
    """``count`` random archs for a small space, 2 for a big one (its slow tests take ``count``)."""
    return 2 if space.name in BIG_SPACES else count


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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of the tiny space on digits: 10 training steps, then 12 archs measured into archs.csv."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs")
    config = config_from_dict(
        TrainConfig,
        {
            "name": "tiny",
            "epochs": 1,
            "out_dir": str(out),
            "device": "cpu",
            "max_steps_per_epoch": 10,
            "data": {"name": "digits", "batch_size": 64, "eval_batch_size": 512},
            "model": {"space": "tiny"},
            "optim": {"lr": 0.2, "warmup_epochs": 0.0},
            "sampler": {"name": "uniform", "num_subnets": 2},
            "calibration": {"num_batches": 1, "batch_size": 64, "seed": 0},
        },
    )
    result = train(config, progress=False)
    run = load_run(result.run_dir)
    archs = spread_archs(run.space, TRAINED_RUN_ARCHS, run.num_classes, seed=0)
    measure_to_csv(
        result.run_dir / "archs.csv", run.supernet, archs, run.calibration_images, run.val_loader, run.test_loader, 0
    )
    return result.run_dir
