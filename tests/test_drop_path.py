"""Drop-path on the residual branches: per-block rates, training-only, largest subnet only in a sandwich step."""

from __future__ import annotations

import random

import pytest
import torch

from ofa.distributed import DistributedContext
from ofa.space import SearchSpace
from ofa.supernet import DynamicInvertedResidual, Supernet, drop_path
from ofa.train import StepSettings, frozen_bn_statistics, loss_scorer, sandwich_step
from ofa.train_config import ModelSection

NUM_CLASSES = 10
SINGLE = DistributedContext(rank=0, world_size=1, device=torch.device("cpu"))


def all_blocks(supernet: Supernet) -> list[DynamicInvertedResidual]:
    return [block for stage in supernet.stages for block in stage]


def make_batch(size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, 3, 32, 32, generator=generator), torch.randint(0, NUM_CLASSES, (size,), generator=generator)


@pytest.fixture()
def supernet(tiny: SearchSpace) -> Supernet:
    torch.manual_seed(0)
    return Supernet(tiny, NUM_CLASSES)  # BN scales not zeroed: every residual branch adds something


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5])
def test_block_rates_grow_linearly_with_depth(supernet: Supernet, rate: float) -> None:
    supernet.set_drop_path(rate)
    blocks = all_blocks(supernet)
    assert len(blocks) == 10  # tiny: 2 + 3 + 3 + 2 blocks
    assert [block.drop_path_rate for block in blocks] == pytest.approx([rate * index / 10 for index in range(10)])


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rate_outside_zero_to_one_is_refused(supernet: Supernet, rate: float) -> None:
    with pytest.raises(ValueError, match="drop_path"):
        supernet.set_drop_path(rate)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_config_refuses_a_rate_outside_zero_to_one(rate: float) -> None:
    with pytest.raises(ValueError, match="drop_path must be in"):
        ModelSection(drop_path=rate)


@torch.no_grad()
def test_drop_path_is_random_in_training_and_off_in_eval(supernet: Supernet, tiny: SearchSpace) -> None:
    images, _ = make_batch()
    supernet.set_active(tiny.max_arch())
    supernet.set_drop_path(0.5)
    supernet.train()
    outputs = []
    with frozen_bn_statistics(supernet):
        for seed in (1, 2):
            torch.manual_seed(seed)
            outputs.append(supernet(images))
    assert not torch.allclose(outputs[0], outputs[1])
    supernet.eval()
    torch.manual_seed(1)
    first = supernet(images)
    torch.manual_seed(2)
    assert torch.equal(first, supernet(images))
    supernet.set_drop_path(0.0)
    assert torch.equal(first, supernet(images))


@torch.no_grad()
@pytest.mark.parametrize(("stride", "in_channels", "out_channels", "dropped"), [(1, 8, 8, True), (2, 8, 16, False)])
def test_only_blocks_with_a_residual_drop(stride: int, in_channels: int, out_channels: int, dropped: bool) -> None:
    torch.manual_seed(0)
    block = DynamicInvertedResidual((in_channels,), (out_channels,), (3,), (4,), stride, False, "relu", "identity")
    block.train()
    images = torch.rand(16, in_channels, 8, 8)
    reference = block(images)  # rate 0; batch statistics make training mode deterministic otherwise
    block.drop_path_rate = 0.9
    torch.manual_seed(1)
    assert torch.equal(block(images), reference) == (not dropped)


def test_drop_path_keeps_about_half_the_samples_scaled_by_two() -> None:
    torch.manual_seed(0)
    out = drop_path(torch.ones(4000, 3, 2, 2), 0.5)
    per_sample = out.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # a whole sample is kept or dropped
    kept = per_sample[:, 0]
    assert set(kept.unique().tolist()) == {0.0, 2.0}
    assert abs(float((kept == 2.0).float().mean()) - 0.5) < 0.05


class NoStep:
    """An optimizer that leaves the weights alone (a real one's first use imports torch._dynamo: seconds)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def record_rates(supernet: Supernet) -> list[float]:
    """The last block's drop-path rate at each forward of the supernet."""
    rates: list[float] = []
    last = all_blocks(supernet)[-1]
    supernet.register_forward_pre_hook(lambda module, inputs: rates.append(last.drop_path_rate))
    return rates


def test_sandwich_step_drops_paths_on_the_largest_subnet_only(supernet: Supernet, tiny: SearchSpace) -> None:
    rates = record_rates(supernet)
    supernet.train()
    images, labels = make_batch()
    settings = StepSettings(label_smoothing=0.1, dropout=0.0, grad_clip_value=0.0, bf16=False, drop_path=0.3)
    archs = [tiny.max_arch(), tiny.sample(random.Random(0)), tiny.min_arch()]
    sandwich_step(supernet, images, labels, archs, NoStep(), settings, SINGLE)
    assert rates == pytest.approx([0.3 * 9 / 10, 0.0, 0.0])
    assert all(block.drop_path_rate == 0.0 for block in all_blocks(supernet))


def test_loss_scorer_turns_drop_path_off(supernet: Supernet, tiny: SearchSpace) -> None:
    rates = record_rates(supernet)
    supernet.train()
    supernet.set_drop_path(0.4)
    images, labels = make_batch()
    scorer = loss_scorer(supernet, images, labels, 0.1, SINGLE)
    archs = [tiny.max_arch(), tiny.min_arch()]
    torch.manual_seed(1)
    first = scorer(archs)
    torch.manual_seed(2)
    assert (first == scorer(archs)).all()  # no random branches dropped
    assert rates == [0.0] * 4
