"""The project's one resize: antialiased when downsampling, plain bilinear when upsampling, shared by export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ofa.bn import resize_to
from ofa.export import export_subnet, load_subnet, preprocess
from ofa.space import SearchSpace
from ofa.supernet import Supernet

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


def checkerboard(size: int) -> torch.Tensor:
    """A 1 x 1 x size x size checkerboard of 0/1 pixels."""
    index = torch.arange(size)
    return ((index[:, None] + index[None, :]) % 2).float()[None, None]


def plain_bilinear(images: torch.Tensor, resolution: int) -> torch.Tensor:
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


# 32 -> 16 is not used here: a plain bilinear 2x downsample averages 2 x 2 blocks, which gives 0.5 on a
# checkerboard too; non-integer factors show the aliasing
@pytest.mark.parametrize("resolution", [12, 10])
def test_downsampling_a_checkerboard_gives_uniform_grey(resolution: int) -> None:
    images = checkerboard(32)
    resized = resize_to(images, resolution)
    assert resized.shape == (1, 1, resolution, resolution)
    assert (resized - 0.5).abs().max() < 0.02
    assert (plain_bilinear(images, resolution) - 0.5).abs().max() > 0.2  # what the old resize gave


def test_downsampling_by_four_sees_every_pixel() -> None:
    dots = torch.zeros(1, 1, 32, 32)
    dots[..., ::4, ::4] = 1.0  # one lit pixel in every 4 x 4 block
    resized = resize_to(dots, 8)
    assert resized.min() > 0.02 and resized.max() < 0.1  # every output pixel sees a dot, none is a whole dot
    assert plain_bilinear(dots, 8).max() == 0  # plain bilinear reads 2 of 4 rows and columns and misses them all


def test_upsampling_is_plain_bilinear() -> None:
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(resize_to(images, 16), plain_bilinear(images, 16))


def test_same_size_returns_the_input_itself() -> None:
    images = torch.rand(2, 3, 16, 16)
    assert resize_to(images, 16) is images


@torch.no_grad()
def test_export_preprocess_uses_the_same_resize(tiny: SearchSpace, tmp_path: Path) -> None:
    arch = tiny.min_arch()
    assert arch.resolution == 16
    supernet = Supernet(tiny, num_classes=4).eval()
    folder = export_subnet(
        supernet.extract(arch), tiny, arch, tmp_path / "export", num_classes=4, mean=MEAN, std=STD, metadata={}
    )
    model = load_subnet(folder)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(preprocess(model, images), (resize_to(images, 16) - mean) / std, rtol=0, atol=0)
    assert not torch.allclose(preprocess(model, images), (plain_bilinear(images, 16) - mean) / std)
