"""Exactness of the elastic supernet: an active arch and its extracted static model compute the same thing."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from ofa._dynamic import slice_to_shape
from ofa.space import SearchSpace, load_space
from ofa.static import StaticNet
from ofa.supernet import Supernet
from tests.conftest import BIG_SPACES, archs_per_space, randomise_bn, seeded_archs

# Big spaces run at a small input in the exactness test to stay fast; resolution is given by the input.
TEST_INPUT_SIZE = {"tiny": None, "cifar": None, "attentivenas": 40, "ofa_mbv3": 40}


@torch.no_grad()
def check_exactness(space: SearchSpace, num_archs: int) -> None:
    """The supernet with each of ``num_archs`` seeded archs active computes what the extracted model does."""
    torch.manual_seed(0)
    supernet = Supernet(space, num_classes=5)
    randomise_bn(supernet, seed=1)
    supernet.eval()
    worst = 0.0
    for arch in seeded_archs(space, num_archs, seed=2):
        size = TEST_INPUT_SIZE[space.name] or arch.resolution
        x = torch.randn(2, space.input_channels, size, size)
        supernet.set_active(arch)
        static = supernet.extract(arch).eval()
        assert isinstance(static, StaticNet)
        assert not any("Dynamic" in type(module).__name__ for module in static.modules())
        worst = max(worst, (supernet(x) - static(x)).abs().max().item())
    assert worst <= 1e-5


def test_active_arch_matches_extracted_model(space: SearchSpace) -> None:
    check_exactness(space, archs_per_space(space, 30))


@pytest.mark.slow  # 30 archs per big space: about 20 s
@pytest.mark.parametrize("name", BIG_SPACES)
def test_active_arch_matches_extracted_model_on_many_big_archs(name: str) -> None:
    check_exactness(load_space(name), 30)


def test_extract_does_not_change_active_arch() -> None:
    space = load_space("tiny")
    supernet = Supernet(space, num_classes=3)
    arch = space.sample(random.Random(4))
    supernet.set_active(arch)
    supernet.extract(space.min_arch())
    assert supernet.active_arch == arch


def test_set_active_validates() -> None:
    supernet = Supernet(load_space("tiny"), num_classes=3)
    other = load_space("attentivenas").min_arch()
    with pytest.raises(ValueError, match="another space"):
        supernet.set_active(other)


def _active_masks(supernet: Supernet, static: StaticNet) -> dict[str, torch.Tensor]:
    shapes = {name: tensor.shape for name, tensor in static.named_parameters()}
    masks = {}
    for name, parameter in supernet.named_parameters():
        mask = torch.zeros_like(parameter, dtype=torch.bool)
        if name in shapes:
            slice_to_shape(mask, shapes[name]).fill_(True)
        masks[name] = mask
    return masks


@pytest.mark.parametrize("seed", range(4))
def test_gradients_reach_only_active_slices(seed: int) -> None:
    space = load_space("tiny")
    torch.manual_seed(seed)
    supernet = Supernet(space, num_classes=4).train()
    randomise_bn(supernet, seed)
    arch = space.sample(random.Random(seed)) if seed else space.min_arch()
    supernet.set_active(arch)
    x = torch.randn(4, 3, arch.resolution, arch.resolution)
    loss = nn.functional.cross_entropy(supernet(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    masks = _active_masks(supernet, supernet.extract(arch))
    touched = 0
    for name, parameter in supernet.named_parameters():
        grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        assert torch.count_nonzero(grad[~masks[name]]) == 0, f"{name} has gradient outside the active slice"
        if masks[name].any():
            touched += 1
            assert torch.count_nonzero(grad[masks[name]]) > 0, f"{name} has no gradient in the active slice"
    assert touched > 0


def test_train_mode_updates_only_active_bn_statistics() -> None:
    space = load_space("tiny")
    supernet = Supernet(space, num_classes=3).train()
    arch = space.min_arch()
    before = {name: buffer.clone() for name, buffer in supernet.named_buffers() if "running_mean" in name}
    supernet.set_active(arch)
    supernet(torch.randn(4, 3, arch.resolution, arch.resolution))
    static_names = {name for name, _ in supernet.extract(arch).named_buffers()}
    for name, buffer in supernet.named_buffers():
        if "running_mean" not in name:
            continue
        width = dict(supernet.extract(arch).named_buffers())[name].numel() if name in static_names else 0
        assert torch.equal(buffer[width:], before[name][width:]), name
        if width:
            assert not torch.equal(buffer[:width], before[name][:width]), name


def test_zero_init_last_bn_makes_blocks_start_as_shortcuts() -> None:
    space = load_space("tiny")
    supernet = Supernet(space, num_classes=3)
    supernet.zero_init_last_bn()
    assert all(float(blocks[0].bn3.weight.detach().abs().sum()) == 0.0 for blocks in supernet.stages)
