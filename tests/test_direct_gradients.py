"""Direct gradients (``Supernet.direct_gradients``): the same gradients and weights as plain slicing."""

from __future__ import annotations

import copy
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ofa.space import Arch, SearchSpace, load_space
from ofa.supernet import Supernet

INPUT_SIZE = {"tiny": None, "ofa_mbv3": 40}  # the big space at a small input to stay fast


def _step_archs(space: SearchSpace, steps: int, seed: int) -> list[list[Arch]]:
    """Per step: a sampled and the smallest subnet (sliced weights first), the largest, another sampled one."""
    rng = random.Random(seed)
    return [[space.sample(rng), space.min_arch(), space.max_arch(), space.sample(rng)] for _ in range(steps)]


def _train(
    supernet: Supernet, steps: list[list[Arch]], direct: bool, set_to_none: bool = True
) -> list[dict[str, torch.Tensor | None]]:
    """SGD steps (momentum, weight decay), each summing the listed subnets' gradients; the gradients of
    every step."""
    generator = torch.Generator().manual_seed(5)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    supernet.train()
    gradients = []
    for archs in steps:
        optimizer.zero_grad(set_to_none=set_to_none)
        with supernet.direct_gradients() if direct else torch.enable_grad():
            for arch in archs:
                size = INPUT_SIZE[supernet.space.name] or arch.resolution
                inputs = torch.randn(4, 3, size, size, generator=generator, dtype=next(supernet.parameters()).dtype)
                supernet.set_active(arch)
                F.cross_entropy(supernet(inputs), torch.arange(4) % supernet.num_classes).backward()
        gradients.append(
            {name: p.grad if p.grad is None else p.grad.clone() for name, p in supernet.named_parameters()}
        )
        optimizer.step()
    return gradients


def _twins(space_name: str) -> tuple[Supernet, Supernet]:
    torch.manual_seed(0)
    plain = Supernet(load_space(space_name), num_classes=5)
    direct = copy.deepcopy(plain)
    return plain, direct


def _assert_same(plain: Supernet, direct: Supernet, plain_grads: list, direct_grads: list) -> None:
    for step, (expected, got) in enumerate(zip(plain_grads, direct_grads, strict=True)):
        for name, gradient in expected.items():
            if gradient is None:
                assert got[name] is None, f"step {step}: {name} has a gradient only with direct gradients"
            else:
                assert torch.equal(gradient, got[name]), f"step {step}: {name} differs"
    for (name, expected), got in zip(plain.state_dict().items(), direct.state_dict().values(), strict=True):
        assert torch.equal(expected, got), f"{name} differs after training"


@pytest.mark.parametrize(("space_name", "set_to_none"), [("tiny", True), ("tiny", False), ("ofa_mbv3", True)])
def test_direct_gradients_equal_plain_slicing(space_name: str, set_to_none: bool) -> None:
    plain, direct = _twins(space_name)
    steps = _step_archs(plain.space, steps=3, seed=1)
    plain_grads = _train(plain, steps, direct=False, set_to_none=set_to_none)
    direct_grads = _train(direct, steps, direct=True, set_to_none=set_to_none)
    assert any(g is not None and g.abs().sum() > 0 for g in direct_grads[-1].values())
    _assert_same(plain, direct, plain_grads, direct_grads)


def test_frozen_weights_get_no_gradient_and_a_dtype_change_is_followed() -> None:
    plain, direct = _twins("tiny")
    for model in (plain, direct):
        model.stem.requires_grad_(False)
    steps = _step_archs(plain.space, steps=2, seed=2)
    plain_grads = _train(plain, steps[:1], direct=False)
    direct_grads = _train(direct, steps[:1], direct=True)
    assert direct_grads[0]["stem.conv.weight"] is None
    plain.double()  # new storages: the cached views of the float weights must not be used
    direct.double()
    plain_grads += _train(plain, steps[1:], direct=False)
    direct_grads += _train(direct, steps[1:], direct=True)
    assert direct_grads[1]["stages.0.0.conv_dw.weight"].dtype == torch.float64
    _assert_same(plain, direct, plain_grads, direct_grads)


def test_direct_gradients_are_scoped_to_one_supernet() -> None:
    supernet = Supernet(load_space("tiny"), num_classes=5)
    twin = copy.deepcopy(supernet)
    with pytest.raises(RuntimeError, match="inside"), supernet.direct_gradients():
        assert supernet.stem.conv.gradient_switch.enabled
        assert not twin.stem.conv.gradient_switch.enabled  # a copy has its own switch
        raise RuntimeError("inside")
    assert not supernet.stem.conv.gradient_switch.enabled
    supernet.set_active(supernet.space.min_arch())
    supernet(torch.randn(2, 3, 16, 16)).sum()  # plain slicing: no gradient exists before a backward pass
    assert all(parameter.grad is None for parameter in supernet.parameters())


def test_direct_gradients_print_no_layout_warning() -> None:
    """torch notes once per process that a gradient is laid out unlike its variable (by design here)."""
    script = (
        "import torch\n"
        "from ofa.space import load_space\n"
        "from ofa.supernet import Supernet\n"
        "supernet = Supernet(load_space('tiny'), num_classes=5)\n"
        "supernet.set_active(supernet.space.min_arch())\n"
        "with supernet.direct_gradients():\n"
        "    supernet(torch.randn(2, 3, 16, 16)).sum().backward()\n"
        "assert supernet.head.classifier.weight.grad[:, 64:].abs().sum() == 0\n"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
