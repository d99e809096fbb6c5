"""The study's statistics on constructed data with known answers."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from stages.common.stats import macro_f1_batch, paired_bootstrap, steps_to_target


def test_macro_f1_batch_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(5, 200))
    predictions = rng.integers(0, 3, size=(5, 200))
    expected = [f1_score(truth, guess, average="macro") for truth, guess in zip(labels, predictions)]
    assert macro_f1_batch(labels, predictions, 3) == pytest.approx(expected)


def test_identical_predictions_give_a_zero_interval():
    labels = np.array([0, 1] * 50)
    predictions = np.array([[0, 0] * 50, [1, 1] * 50])
    result = paired_bootstrap(labels, predictions, predictions.copy(), 2, samples=500, seed=0)
    assert result["accuracy"] == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_known_difference_and_its_interval():
    # A is right on all 400 examples, B on 300 (the same 300 for both seeds): diff = 0.25 exactly.
    labels = np.zeros(400, dtype=int)
    a = np.zeros((2, 400), dtype=int)
    b = np.zeros((2, 400), dtype=int)
    b[:, :100] = 1
    result = paired_bootstrap(labels, a, b, 2, samples=2000, seed=1)
    accuracy = result["accuracy"]
    assert accuracy["diff"] == pytest.approx(0.25)
    # the bootstrap sd of a proportion of 0.25 over 400 paired examples is sqrt(.25*.75/400) = 0.0217
    assert accuracy["low"] == pytest.approx(0.25 - 1.96 * 0.0217, abs=0.01)
    assert accuracy["high"] == pytest.approx(0.25 + 1.96 * 0.0217, abs=0.01)


def test_pairing_narrows_the_interval():
    # A and B disagree on only 10 of 1000 examples: paired, the interval is tight around 0.01.
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=1000)
    b = np.where(rng.random(1000) < 0.8, labels, 1 - labels)[None]
    a = b.copy()
    wrong = np.flatnonzero(b[0] != labels)[:10]
    a[0, wrong] = labels[wrong]
    accuracy = paired_bootstrap(labels, a, b, 2, samples=2000, seed=0)["accuracy"]
    assert accuracy["diff"] == pytest.approx(0.01)
    assert 0 < accuracy["low"] < 0.01 < accuracy["high"] < 0.02


def test_steps_to_target_on_synthetic_curves():
    steps = [50, 100, 150, 200]
    assert steps_to_target(steps, [0.5, 0.7, 0.8, 0.79], target=0.7) == 100
    assert steps_to_target(steps, [0.5, 0.6, 0.65, 0.69], target=0.7) is None
    assert steps_to_target(steps, [0.9, 0.6, 0.65, 0.69], target=0.7) == 50
