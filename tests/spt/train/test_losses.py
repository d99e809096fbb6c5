"""The joint loss, its weighting modes on constructed losses and gradients with known answers, and the
lambda(t) schedules at known steps."""

import math
from itertools import pairwise

import pytest
import torch

from spt.train.losses import (
    gradcos_gate,
    gradcos_gradient,
    gradient_agreement,
    joint_loss,
    lambda_at,
    normalized_lambda,
    uncertainty_loss,
    uncertainty_weights,
)


def test_joint_loss_is_mlm_plus_weighted_supervised():
    assert joint_loss(torch.tensor(2.0), torch.tensor(3.0), 0.5).item() == pytest.approx(3.5)
    assert joint_loss(torch.tensor(2.0), torch.tensor(3.0), 0.0).item() == pytest.approx(2.0)


@pytest.mark.parametrize("schedule, step, expected", [
    ("constant", 0, 2.0), ("constant", 100, 2.0),
    ("linear_decay", 0, 2.0), ("linear_decay", 50, 1.25), ("linear_decay", 100, 0.5),
    ("cosine_decay", 0, 2.0), ("cosine_decay", 50, 1.25), ("cosine_decay", 100, 0.5),
    ("cosine_decay", 25, 0.5 + 1.5 * 0.5 * (1 + math.cos(math.pi / 4))),
    ("exponential_decay", 0, 2.0), ("exponential_decay", 50, 0.5 + 1.5 * 0.1),
    ("exponential_decay", 100, 0.5 + 1.5 * 0.01),
])
def test_schedules(schedule, step, expected):
    assert lambda_at(step, 100, 2.0, 0.5, schedule) == pytest.approx(expected)


def test_decays_are_monotone_and_clamped():
    for schedule in ("linear_decay", "cosine_decay", "exponential_decay"):
        values = [lambda_at(step, 40, 1.0, 0.0, schedule) for step in range(0, 50)]
        assert all(a >= b for a, b in pairwise(values))
        assert values[-1] == values[40]  # past the end it stays at the final value


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown lambda schedule"):
        lambda_at(1, 10, 1.0, 0.0, "step")


def test_normalized_puts_both_losses_on_the_scale_of_a_uniform_guess():
    assert normalized_lambda(1.0, 30522, 2) == pytest.approx(math.log(30522) / math.log(2))  # 14.9: the probe's 15
    assert normalized_lambda(0.5, 1000, 10) == pytest.approx(0.5 * 3.0)
    # a uniform guess scores ln V and ln C: at lambda = 1 both terms weigh the same
    mlm, cls = torch.tensor(math.log(1000)), torch.tensor(math.log(10))
    assert (normalized_lambda(1.0, 1000, 10) * cls).item() == pytest.approx(mlm.item())
    assert normalized_lambda(0.0, 1000, 10) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        normalized_lambda(1.0, 1000, 1)


def test_uncertainty_at_zero_log_variance_is_the_fixed_loss_plus_nothing():
    mlm, cls = torch.tensor(7.0), torch.tensor(0.7)
    assert uncertainty_loss(mlm, cls, 2.0, torch.zeros(2)).item() == pytest.approx(7.0 + 2.0 * 0.7)
    s = torch.tensor([1.0, -0.5])
    expected = math.exp(-1.0) * 7.0 + 0.5 + 2.0 * (math.exp(0.5) * 0.7 - 0.25)
    assert uncertainty_loss(mlm, cls, 2.0, s).item() == pytest.approx(expected)
    assert uncertainty_weights(2.0, s) == pytest.approx((math.exp(-1.0), 2.0 * math.exp(0.5)))


def test_uncertainty_weighs_each_loss_by_one_over_twice_itself_at_the_optimum():
    """The gradient in s vanishes at s = ln(2 L), whatever lambda: the learned weight is 1 / (2 L)."""
    mlm, cls = torch.tensor(7.0), torch.tensor(0.7)
    for lam in (0.5, 1.0, 3.0):
        s = torch.tensor([math.log(14.0), math.log(1.4)], requires_grad=True)
        uncertainty_loss(mlm, cls, lam, s).backward()
        assert s.grad.abs().max().item() < 1e-6
        assert uncertainty_weights(lam, s) == pytest.approx((1 / 14.0, lam / 1.4))
    s = torch.zeros(2, requires_grad=True)
    uncertainty_loss(mlm, cls, 1.0, s).backward()
    assert s.grad.tolist() == pytest.approx([-6.5, -0.2])  # both weights go down from 1: both losses exceed 1/2


def test_gradient_agreement_on_known_vectors():
    a, b = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])], [torch.tensor([0.0, 2.0]), torch.tensor([0.0])]
    assert gradient_agreement(a, b) == pytest.approx((5.0, 2.0, 0.0))
    assert gradient_agreement(a, a) == pytest.approx((5.0, 5.0, 1.0))
    assert gradient_agreement(a, [-x for x in a]) == pytest.approx((5.0, 5.0, -1.0))
    # None: a parameter the loss does not reach (zero gradient)
    assert gradient_agreement([torch.tensor([1.0]), None], [torch.tensor([1.0]), torch.tensor([1.0])]) == \
        pytest.approx((1.0, math.sqrt(2), 1 / math.sqrt(2)))
    assert gradient_agreement([torch.zeros(2)], [torch.ones(2)])[2] == 0.0


def test_gradcos_drops_an_opposing_mlm_gradient_and_keeps_an_aligned_one():
    supervised = [torch.tensor([1.0, 0.0]), torch.tensor([2.0])]
    aligned = [2 * x for x in supervised]
    opposing = [-3 * x for x in supervised]
    kept = gradcos_gradient(aligned, supervised, 0.5)
    assert len(kept) == 2 and all(torch.allclose(k, 0.5 * s + m) for k, s, m in zip(kept, supervised, aligned,
                                                                                       strict=True))
    dropped = gradcos_gradient(opposing, supervised, 0.5)
    assert len(dropped) == 2 and all(torch.allclose(d, 0.5 * s) for d, s in zip(dropped, supervised, strict=True))
    # partly aligned: cos = 0.6, so 60% of the masked-LM gradient is kept
    partial = gradcos_gradient([torch.tensor([3.0, 4.0])], [torch.tensor([1.0, 0.0])], 1.0)
    assert torch.allclose(partial[0], torch.tensor([1.0 + 0.6 * 3.0, 0.6 * 4.0]))


def test_gradcos_keeps_the_mlm_gradient_when_there_is_no_supervised_one():
    assert gradcos_gate(-0.3, 0.0) == 1.0 and gradcos_gate(-0.3, 1.0) == 0.0 and gradcos_gate(0.25, 1.0) == 0.25
