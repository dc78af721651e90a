"""AlphaNet's adaptive α-divergence: its limits, its gradient surrogate, its robustness, and its use in training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ofa.bn import resize_to
from ofa.distill import adaptive_alpha_divergence, alpha_divergence
from ofa.space import SearchSpace
from ofa.supernet import Supernet
from ofa.train import frozen_bn_statistics, sandwich_step
from ofa.train_config import KdSection
from tests.test_train import NO_CLIP, NUM_CLASSES, SINGLE, make_batch, middle_arch


def _pair(seed: int, spread: float = 1.0, classes: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Student logits (requiring grad) and teacher log-probabilities of a batch of 5."""
    generator = torch.Generator().manual_seed(seed)
    teacher = F.log_softmax(spread * torch.randn(5, classes, generator=generator, dtype=torch.float64), dim=1)
    student = (spread * torch.randn(5, classes, generator=generator, dtype=torch.float64)).requires_grad_()
    return student, teacher


def _direct(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """D_α(p || q) per sample by its definition, 1/(α(α-1)) Σ q [(p/q)^α - 1], in float64 with autograd."""
    q = F.softmax(student_logits, dim=1)
    p = teacher_log_probs.exp()
    return (q * ((p / q) ** alpha - 1)).sum(dim=1) / (alpha * (alpha - 1))


def test_alpha_one_is_kl_and_nearby_alphas_approach_it() -> None:
    student, teacher = _pair(0)
    log_q = F.log_softmax(student, dim=1)
    kl = (teacher.exp() * (teacher - log_q)).sum(dim=1)
    torch.testing.assert_close(alpha_divergence(log_q, teacher, 1.0), kl)
    for alpha in (1 - 1e-4, 1 + 1e-4):
        torch.testing.assert_close(alpha_divergence(log_q, teacher, alpha), kl, rtol=1e-3, atol=1e-6)
    reverse = (log_q.exp() * (log_q - teacher)).sum(dim=1)  # α → 0: KL(q || p)
    torch.testing.assert_close(alpha_divergence(log_q, teacher, 1e-4), reverse, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("alpha", [-1.0, -0.5, 0.5, 1.0])
def test_surrogate_gradient_equals_autograd_where_nothing_is_clipped(alpha: float) -> None:
    student, teacher = _pair(1, spread=0.3)  # close distributions: every (p/q)^α well below the clip of 5
    weights = (teacher.exp() / F.softmax(student, dim=1)) ** alpha
    assert float(weights.detach().max()) < 5
    loss = adaptive_alpha_divergence(student, teacher, alpha, alpha, iw_clip=5.0)
    (ours,) = torch.autograd.grad(loss, student)
    reference = _direct(student, teacher, alpha) if alpha != 1.0 else None
    if reference is None:  # α = 1: KL(p || q), the gradient of the cross-entropy to p
        reference = -(teacher.exp() * F.log_softmax(student, dim=1)).sum(dim=1)
    (expected,) = torch.autograd.grad(reference.mean(), student)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-4, atol=1e-7)


def test_value_is_the_larger_true_divergence_per_sample() -> None:
    student, teacher = _pair(2, spread=2.0)
    low = _direct(student, teacher, -1.0)
    high = (teacher.exp() * (teacher - F.log_softmax(student, dim=1))).sum(dim=1)
    chosen = torch.maximum(low, high)
    assert bool((low > high).any()) and bool((high > low).any())  # both sides are chosen in this batch
    loss = adaptive_alpha_divergence(student, teacher)
    assert float(loss.detach()) == pytest.approx(float(chosen.detach().mean()), rel=1e-5)


def test_large_importance_weights_are_clipped() -> None:
    """Where (p/q)^α exceeds the clip, the surrogate's gradient is smaller than the divergence's."""
    student, teacher = _pair(3, spread=4.0)
    (clipped,) = torch.autograd.grad(adaptive_alpha_divergence(student, teacher, 1.0, 1.0, iw_clip=5.0), student)
    (free,) = torch.autograd.grad(adaptive_alpha_divergence(student, teacher, 1.0, 1.0, iw_clip=1e12), student)
    assert float((clipped - free).abs().max()) > 1e-3


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
def test_extreme_logits_give_finite_values_and_gradients(scale: float) -> None:
    student = torch.tensor([[scale, -scale, 0.0], [-scale, scale, 0.0]], requires_grad=True)
    teacher = F.log_softmax(torch.tensor([[-scale, scale, 0.0], [-scale, scale, 0.0]]), dim=1)
    loss = adaptive_alpha_divergence(student, teacher)
    (gradient,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(loss) and bool(torch.isfinite(gradient).all())


def test_sandwich_step_with_alpha_divergence_logs_the_divergence(tiny: SearchSpace) -> None:
    torch.manual_seed(1)
    supernet = Supernet(tiny, NUM_CLASSES)
    archs = [tiny.max_arch(), middle_arch(tiny), tiny.min_arch()]
    images, labels = make_batch(seed=1)
    expected = []
    with torch.no_grad(), frozen_bn_statistics(supernet):
        supernet.set_active(archs[0])
        teacher = F.log_softmax(supernet(images), dim=1)
        for arch in archs[1:]:
            supernet.set_active(arch)
            expected.append(float(adaptive_alpha_divergence(supernet(resize_to(images, arch.resolution)), teacher)))
    settings = dataclasses.replace(NO_CLIP, kd=KdSection(loss="alpha"))
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.01)
    losses = sandwich_step(supernet, images, labels, archs, optimizer, settings, SINGLE)
    assert losses[1:] == pytest.approx(expected, rel=1e-5)
    kl = sandwich_step(Supernet(tiny, NUM_CLASSES), images, labels, archs, optimizer, NO_CLIP, SINGLE)
    assert losses[1:] != pytest.approx(kl[1:], rel=1e-3)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loss": "js"}, "kd.loss: 'js' is not one of kl, alpha"),
        ({"alpha_min": 1.0, "alpha_max": -1.0}, "kd.alpha_min"),
        ({"iw_clip": 0.0}, "kd.iw_clip must be > 0"),
        ({"alpha_max": float("nan")}, "kd.alpha_max must be a finite number"),
    ],
)
def test_kd_section_refuses_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KdSection(**values)
