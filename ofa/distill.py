"""AlphaNet's α-divergence, the alternative to KL for in-place distillation (``kd.loss: alpha``).

AlphaNet (Wang et al., ICML 2021) replaces KL(p || q) (p the teacher, q the student) with the adaptive
α-divergence: per sample the larger of D_α(p || q) at ``alpha_min`` and ``alpha_max``, where

    D_α(p || q) = 1 / (α (α - 1)) · Σ q [(p / q)^α - 1]      (α → 1: KL(p || q); α → 0: KL(q || p)).

It is minimised through a gradient surrogate, -Σ q ρ ∇log q with ρ = clip((p / q)^α, 0, iw_clip) / α,
whose gradient equals that of D_α wherever the importance weight (p / q)^α is not clipped (the constant
1 / (α (α - 1)) drops out: Σ q ∇log q = ∇Σ q = 0). Every quantity is computed in fp32 from log-probabilities;
the returned loss has the value of the true divergence and the gradient of the surrogate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["KL_LIMIT", "adaptive_alpha_divergence", "alpha_divergence"]

KL_LIMIT = 1e-6  # |α - 1| (or |α|) below this: the KL limit of D_α
MAX_LOG_SUM = 80.0  # log Σ p^α q^(1-α) is capped here: the divergence stays finite in fp32 (e^80 ≈ 5.5e34)


def alpha_divergence(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """D_α(p || q) per sample (shape (batch,)), from log-probabilities; finite for any input."""
    if abs(alpha - 1.0) < KL_LIMIT:
        return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=1)
    if abs(alpha) < KL_LIMIT:
        return (student_log_probs.exp() * (student_log_probs - teacher_log_probs)).sum(dim=1)
    log_sum = torch.logsumexp(alpha * teacher_log_probs + (1.0 - alpha) * student_log_probs, dim=1)
    return torch.expm1(log_sum.clamp(max=MAX_LOG_SUM)) / (alpha * (alpha - 1.0))


def _surrogate(
    student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, alpha: torch.Tensor, iw_clip: float
) -> torch.Tensor:
    """Per sample -Σ q ρ log q with q and ρ detached: its gradient is the clipped gradient of D_α."""
    log_ratio = (teacher_log_probs - student_log_probs).detach()
    exponent = alpha.unsqueeze(1) * log_ratio
    weight = exponent.clamp(max=math.log(iw_clip)).exp()  # clip(w^α, 0, iw_clip) without overflow
    rho = torch.where(
        (alpha.abs() < KL_LIMIT).unsqueeze(1),
        log_ratio,  # α → 0: the gradient of KL(q || p) has ρ = log(p / q)
        weight / torch.where(alpha.abs() < KL_LIMIT, torch.ones_like(alpha), alpha).unsqueeze(1),
    )
    q = student_log_probs.exp().detach()
    return -(q * rho * student_log_probs).sum(dim=1)


def adaptive_alpha_divergence(
    logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    alpha_min: float = -1.0,
    alpha_max: float = 1.0,
    iw_clip: float = 5.0,
) -> torch.Tensor:
    """AlphaNet's loss, batch mean: per sample the larger of D at ``alpha_min`` and ``alpha_max``.

    The value is the true divergence (what is logged); the gradient is the clipped surrogate's.
    """
    student = F.log_softmax(logits.float(), dim=1)
    teacher = teacher_log_probs.float().detach()
    low, high = alpha_divergence(student, teacher, alpha_min), alpha_divergence(student, teacher, alpha_max)
    divergence = torch.maximum(low, high)
    alpha = torch.where(high >= low, torch.full_like(low, alpha_max), torch.full_like(low, alpha_min)).detach()
    surrogate = _surrogate(student, teacher, alpha, iw_clip)
    return (surrogate - surrogate.detach() + divergence.detach()).mean()
