"""Channel sorting: every trained subnet computes the same function after the reorder; importance is sorted."""

from __future__ import annotations

import random

import pytest
import torch

from ofa.channel_sort import sort_channels, sorting_permutation
from ofa.space import SearchSpace, load_space
from ofa.supernet import Supernet
from tests.conftest import randomise_bn


def _randomised(space: SearchSpace) -> Supernet:
    """A supernet with non-trivial BN statistics and biases (zeros would hide a bias left unpermuted)."""
    torch.manual_seed(0)
    supernet = Supernet(space, 10).eval()
    randomise_bn(supernet, seed=1)
    with torch.no_grad():
        for name, parameter in supernet.named_parameters():
            if name.endswith("bias") and ".bn" not in name:
                parameter.normal_(0, 0.5)
    return supernet


def _outputs(supernet: Supernet, archs: list, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    results = []
    with torch.no_grad():
        for arch in archs:
            supernet.set_active(arch)
            results.append(supernet(torch.randn(2, 3, arch.resolution, arch.resolution, generator=generator)))
    return results


@pytest.mark.parametrize("name", ["tiny", "ofa_mbv3"])
def test_sorting_keeps_every_subnet_function(name: str) -> None:
    space = load_space(name)
    supernet = _randomised(space)
    rng = random.Random(0)
    archs = [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(6 if name == "tiny" else 2)]
    before = _outputs(supernet, archs, seed=2)
    weights = {key: value.clone() for key, value in supernet.state_dict().items()}
    assert sort_channels(supernet) > 0
    changed = [key for key, value in supernet.state_dict().items() if not torch.equal(value, weights[key])]
    assert any("conv_pw" in key for key in changed) and any("bn2.running_mean" in key for key in changed)
    for old, new in zip(before, _outputs(supernet, archs, seed=2)):
        scale = old.abs().max()
        assert (old - new).abs().max() <= 1e-5 * scale


def test_sorting_only_the_largest_ratio_orders_by_importance_and_keeps_the_largest_expand() -> None:
    space: SearchSpace = load_space("ofa_mbv3")
    supernet = _randomised(space)
    widest = [space.max_arch()]
    before = _outputs(supernet, widest, seed=3)
    sort_channels(supernet, trained_expand_ratios=[6])
    block = supernet.stages[2][0]
    importance = block.conv_pwl.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])  # one tier: fully sorted, most important first
    after = _outputs(supernet, widest, seed=3)
    assert (before[0] - after[0]).abs().max() <= 1e-5 * before[0].abs().max()


def test_sorting_permutation_sorts_within_tiers_only() -> None:
    importance = torch.tensor([1.0, 3.0, 2.0, 0.5, 9.0, 4.0])
    assert sorting_permutation(importance, [2, 6]).tolist() == [1, 0, 4, 5, 2, 3]
    with pytest.raises(ValueError, match="tiers must rise to the channel count 6"):
        sorting_permutation(importance, [2, 5])
