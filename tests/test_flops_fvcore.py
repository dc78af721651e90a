"""The analytic counter against an independent count: fvcore's conv + linear MACs of the extracted model."""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from ofa.flops import count_macs, count_params
from ofa.space import SearchSpace, load_arch, load_space
from ofa.supernet import Supernet
from tests.conftest import BIG_SPACES, ROOT, archs_per_space, seeded_archs

NUM_CLASSES = 10


def fvcore_conv_linear(model: torch.nn.Module, resolution: int, channels: int) -> int:
    """fvcore's count of conv and linear ops (one per MAC) at batch 1."""
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, channels, resolution, resolution))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_operator = analysis.by_operator()
    unexpected = set(by_operator) - {"conv", "linear", "batch_norm", "adaptive_avg_pool2d", "mean", "mul", "add"}
    assert not unexpected, f"fvcore counted ops the convention does not cover: {unexpected}"
    return by_operator.get("conv", 0) + by_operator.get("linear", 0)


def check_against_fvcore(space: SearchSpace, num_archs: int) -> None:
    """The analytic MACs and params of ``num_archs`` seeded archs equal fvcore's count of the extracted model."""
    supernet = Supernet(space, num_classes=NUM_CLASSES)
    for arch in seeded_archs(space, num_archs, seed=5):
        model = supernet.extract(arch)
        assert count_macs(space, arch, NUM_CLASSES) == fvcore_conv_linear(model, arch.resolution, 3), arch.short()
        assert count_params(space, arch, NUM_CLASSES) == sum(p.numel() for p in model.parameters()), arch.short()


def test_count_macs_and_params_match_fvcore(space: SearchSpace) -> None:
    check_against_fvcore(space, archs_per_space(space, 30))


@pytest.mark.slow  # 30 ImageNet-sized archs per big space: about 40 s
@pytest.mark.parametrize("name", BIG_SPACES)
def test_count_macs_and_params_match_fvcore_on_many_big_archs(name: str) -> None:
    check_against_fvcore(load_space(name), 30)


@pytest.mark.parametrize(
    ("name", "mmacs"),
    [("a0", 203.4), ("a1", 279.2), ("a2", 316.7), ("a3", 356.5), ("a4", 443.5), ("a5", 490.5), ("a6", 709.0)],
)
def test_attentivenas_published_models(name: str, mmacs: float) -> None:
    space = load_space("attentivenas")
    arch = load_arch(ROOT / "configs" / "archs" / f"attentivenas_{name}.yaml", space)
    assert count_macs(space, arch, 1000) / 1e6 == pytest.approx(mmacs, abs=0.05)
