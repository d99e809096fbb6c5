"""The joint loss of supervised pretraining, the ways of weighing its two terms, and lambda(t).

``pretrain_sup.weighting`` chooses how L_mlm and L_supervised are combined; lambda(t) (the schedule)
multiplies the supervised term in every mode:

- ``fixed``: L_mlm + lambda * L_supervised.
- ``normalized``: each loss divided by the log of its number of outcomes (ln V for the vocabulary,
  ln C for the classes), so that lambda = 1 puts them on an equal footing; multiplied back by ln V so
  that L_mlm keeps its plain scale: L_mlm + lambda * (ln V / ln C) * L_supervised
  (:func:`normalized_lambda`). The constant factor ln V changes no direction, only the size that
  gradient clipping and the learning rate see, which stay those of ``fixed``.
- ``uncertainty``: learned weights (Kendall, Gal & Cipolla 2018, eq. 10 for classification losses),
  exp(-s_mlm) L_mlm + s_mlm / 2 + lambda * (exp(-s_sup) L_supervised + s_sup / 2), s = log sigma^2
  (:func:`uncertainty_loss`). lambda scales the whole supervised term, so it does not move the learned
  s_sup (the optimum of s_sup, ln(2 L_supervised), is the same for every lambda > 0): the effective
  weights are exp(-s_mlm) and lambda * exp(-s_sup).
- ``gradcos``: on the shared encoder the masked-LM gradient counts only as far as it agrees with the
  supervised one (Du et al. 2018, the weighted variant): g = lambda * g_sup + max(0, cos) * g_mlm
  (:func:`gradcos_gate`, :func:`gradcos_gradient`); the heads get their own full gradients. lambda is
  the weight of the supervised gradient, as in ``fixed``.

With lambda(t) = 0 every mode is exactly L_mlm (the tapt control): no supervised term, no learned or
gated weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# exponential_decay closes 99% of the gap between lambda and lambda_min by the last step.
EXPONENTIAL_FLOOR = 0.01


def joint_loss(mlm_loss: torch.Tensor, cls_loss: torch.Tensor, lam: float) -> torch.Tensor:
    """L = L_mlm + lambda * L_supervised."""
    return mlm_loss + lam * cls_loss


def normalized_lambda(lam: float, vocab_size: int, num_labels: int) -> float:
    """The weight of L_supervised beside L_mlm when each is divided by ln(outcomes): lambda * ln V / ln C.

    A uniform guess scores ln V on L_mlm and ln C on L_supervised, so after the division both start
    near 1 and lambda = 1 weighs them equally (BERT's 30522 tokens, 2 classes: 14.9).
    """
    if vocab_size < 2 or num_labels < 2:
        raise ValueError(f"normalized weighting needs at least 2 tokens and 2 classes, got {vocab_size} and "
                         f"{num_labels}")
    return lam * math.log(vocab_size) / math.log(num_labels)


def uncertainty_loss(mlm_loss: torch.Tensor, cls_loss: torch.Tensor, lam: float,
                     log_variance: torch.Tensor) -> torch.Tensor:
    """Kendall et al. 2018: exp(-s_mlm) L_mlm + s_mlm/2 + lambda (exp(-s_sup) L_sup + s_sup/2).

    ``log_variance`` holds [s_mlm, s_sup]. For a fixed loss L the term exp(-s) L + s/2 is smallest at
    s = ln(2L), where the weight exp(-s) is 1 / (2L): a loss that stays large is weighed down.
    """
    s_mlm, s_sup = log_variance[0], log_variance[1]
    return (torch.exp(-s_mlm) * mlm_loss + 0.5 * s_mlm
            + lam * (torch.exp(-s_sup) * cls_loss + 0.5 * s_sup))


def uncertainty_weights(lam: float, log_variance: torch.Tensor) -> tuple[float, float]:
    """The effective weights (of L_mlm, of L_supervised) that :func:`uncertainty_loss` applies."""
    s_mlm, s_sup = (float(value) for value in log_variance.detach())
    return math.exp(-s_mlm), lam * math.exp(-s_sup)


class UncertaintyWeights(nn.Module):
    """The learned log-variances [s_mlm, s_sup] of :func:`uncertainty_loss`, starting at 0 (weights 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_variance = nn.Parameter(torch.zeros(2))


def gradient_agreement(first: list[torch.Tensor | None], second: list[torch.Tensor | None]
                       ) -> tuple[float, float, float]:
    """(||first||, ||second||, cos(first, second)) of two gradients given per parameter.

    None stands for a zero gradient (a parameter the loss does not reach). The cosine is 0 when
    either gradient is zero. Sums in float64, so the result does not depend on the parameter order.
    """
    dot = first_sq = second_sq = 0.0
    for a, b in zip(first, second, strict=True):
        if a is not None:
            first_sq += float(a.double().pow(2).sum())
        if b is not None:
            second_sq += float(b.double().pow(2).sum())
        if a is not None and b is not None:
            dot += float((a.double() * b.double()).sum())
    first_norm, second_norm = math.sqrt(first_sq), math.sqrt(second_sq)
    cosine = dot / (first_norm * second_norm) if first_norm > 0 and second_norm > 0 else 0.0
    return first_norm, second_norm, cosine


def gradcos_gate(cosine: float, supervised_norm: float) -> float:
    """The weight of the masked-LM gradient on the shared encoder: max(0, cos(g_mlm, g_sup)).

    A step without a supervised gradient (no labeled row, or lambda(t) = 0) has nothing to disagree
    with: the masked-LM gradient is kept whole (1).
    """
    if supervised_norm == 0.0:
        return 1.0
    return max(0.0, cosine)


def gradcos_gradient(mlm_grads: list[torch.Tensor], sup_grads: list[torch.Tensor], lam: float
                     ) -> list[torch.Tensor]:
    """lambda * g_sup + max(0, cos(g_mlm, g_sup)) * g_mlm, per parameter of the shared encoder."""
    _, sup_norm, cosine = gradient_agreement(mlm_grads, sup_grads)
    gate = gradcos_gate(cosine, sup_norm)
    return [lam * sup + gate * mlm for mlm, sup in zip(mlm_grads, sup_grads, strict=True)]


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
