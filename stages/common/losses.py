"""The joint loss of supervised pretraining and the schedules of its weight lambda(t)."""

from __future__ import annotations

import math

import torch

# exponential_decay closes 99% of the gap between lambda and lambda_min by the last step.
EXPONENTIAL_FLOOR = 0.01


def joint_loss(mlm_loss: torch.Tensor, cls_loss: torch.Tensor, lam: float) -> torch.Tensor:
    """L = L_mlm + lambda * L_supervised."""
    return mlm_loss + lam * cls_loss


def lambda_at(step: int, total_steps: int, lam: float, lam_min: float, schedule: str) -> float:
    """lambda(t) at optimizer step ``step`` of ``total_steps``.

    constant: lam throughout. The decays start at ``lam`` (step 0) and go towards ``lam_min``:
    linear_decay and cosine_decay reach it at the last step; exponential_decay is
    lam_min + (lam - lam_min) * 0.01 ** (t / T), a geometric approach that ends 1% of the gap away.
    """
    if schedule == "constant" or total_steps <= 0:
        return lam
    progress = min(max(step / total_steps, 0.0), 1.0)
    gap = lam - lam_min
    if schedule == "linear_decay":
        return lam_min + gap * (1.0 - progress)
    if schedule == "cosine_decay":
        return lam_min + gap * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "exponential_decay":
        return lam_min + gap * EXPONENTIAL_FLOOR**progress
    raise ValueError(f"unknown lambda schedule {schedule!r}")
