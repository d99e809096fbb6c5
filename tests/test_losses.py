"""The joint loss and the lambda(t) schedules, at known steps."""

import math

import pytest
import torch

from stages.common.losses import joint_loss, lambda_at


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
        assert all(a >= b for a, b in zip(values, values[1:]))
        assert values[-1] == values[40]  # past the end it stays at the final value


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown lambda schedule"):
        lambda_at(1, 10, 1.0, 0.0, "step")
