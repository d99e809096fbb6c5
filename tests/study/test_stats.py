"""The study's statistics on constructed data with known answers."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from study.stats import _score, macro_f1_batch, steps_to_target


# The reference the hierarchical bootstrap is checked against: resampling test examples only.
def paired_bootstrap(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray, n_classes: int,
                     samples: int, seed: int, confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Difference A - B in accuracy and macro-F1 with a paired bootstrap interval.

    ``predictions_a`` and ``predictions_b`` are [seeds, examples] arrays of class ids on the same
    test examples. Each replicate resamples test examples (the same ones for A and B, and for every
    seed) and averages the per-seed difference over seeds: the interval is pooled over seeds and
    paired by example. Returns {"accuracy": {...}, "macro_f1": {...}} with diff, low, high.
    """
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    replicate = rng.integers(0, n, size=(samples, n))
    resampled_labels = labels[replicate]
    result = {}
    for metric in ("accuracy", "macro_f1"):
        point, draws = [], []
        for preds_a, preds_b in zip(predictions_a, predictions_b, strict=True):
            point.append(_score(metric, labels[None], preds_a[None], n_classes)[0]
                         - _score(metric, labels[None], preds_b[None], n_classes)[0])
            draws.append(_score(metric, resampled_labels, preds_a[replicate], n_classes)
                         - _score(metric, resampled_labels, preds_b[replicate], n_classes))
        pooled = np.mean(draws, axis=0)
        tail = (1 - confidence) / 2 * 100
        result[metric] = {"diff": float(np.mean(point)), "low": float(np.percentile(pooled, tail)),
                          "high": float(np.percentile(pooled, 100 - tail))}
    return result


def test_macro_f1_batch_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(5, 200))
    predictions = rng.integers(0, 3, size=(5, 200))
    expected = [f1_score(truth, guess, average="macro") for truth, guess in zip(labels, predictions, strict=True)]
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


def test_hierarchical_bootstrap_known_answer():
    """A always right, B always wrong, on every seed: the difference is exactly +1, with no spread."""
    from study.stats import hierarchical_bootstrap

    labels = np.array([0, 1] * 50)
    a = np.tile(labels, (3, 1))
    b = 1 - a
    result = hierarchical_bootstrap(labels, a, b, 2, 500, seed=0)
    assert result["accuracy"] == {"diff": 1.0, "low": 1.0, "high": 1.0}
    assert result["macro_f1"]["diff"] == 1.0


def test_hierarchical_bootstrap_counts_the_spread_between_seeds():
    """Seeds that disagree (A - B = +0.2, 0 and -0.2 on three seeds) widen the interval far beyond what
    resampling test examples alone gives; the mean difference is still 0."""
    from study.stats import hierarchical_bootstrap

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    b = np.where(rng.random((3, 2000)) < 0.7, labels, 1 - labels)  # B: 70% right on every seed
    a = b.copy()
    for seed_index, gain in enumerate((0.2, 0.0, -0.2)):  # flip a share of examples to right / wrong
        flip = rng.random(2000) < abs(gain)
        a[seed_index, flip] = labels[flip] if gain > 0 else 1 - labels[flip]
    hierarchical = hierarchical_bootstrap(labels, a, b, 2, 2000, seed=0)["accuracy"]
    examples_only = paired_bootstrap(labels, a, b, 2, 2000, seed=0)["accuracy"]
    assert abs(hierarchical["diff"] - examples_only["diff"]) < 1e-12
    assert hierarchical["low"] < -0.05 and hierarchical["high"] > 0.05  # about the spread of three seed means
    assert (hierarchical["high"] - hierarchical["low"]) > 4 * (examples_only["high"] - examples_only["low"])


def test_hierarchical_bootstrap_with_one_seed_is_the_paired_bootstrap_over_examples():
    from study.stats import hierarchical_bootstrap

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 500)
    a = np.where(rng.random((1, 500)) < 0.8, labels, (labels + 1) % 3)
    b = np.where(rng.random((1, 500)) < 0.7, labels, (labels + 2) % 3)
    one = hierarchical_bootstrap(labels, a, b, 3, 4000, seed=3)
    plain = paired_bootstrap(labels, a, b, 3, 4000, seed=3)
    for metric in ("accuracy", "macro_f1"):
        assert one[metric]["diff"] == pytest.approx(plain[metric]["diff"])
        assert one[metric]["low"] == pytest.approx(plain[metric]["low"], abs=0.01)
        assert one[metric]["high"] == pytest.approx(plain[metric]["high"], abs=0.01)


def test_seed_interval():
    from study.stats import seed_interval

    assert seed_interval([], 100, 0) is None
    assert seed_interval([40.0], 100, 0) == {"mean": 40.0, "low": 40.0, "high": 40.0, "seeds": 1}
    spread = seed_interval([20.0, 40.0, 60.0], 2000, 0)
    assert spread["mean"] == 40.0 and 20.0 <= spread["low"] < 40.0 < spread["high"] <= 60.0


def test_a_seedless_arm_is_paired_with_every_seed():
    """A floor (one prediction set, no seed) against an arm with two seeds: one seed all right, one all wrong;
    the floor all right. Per seed the difference is 0 and -1 whatever examples are drawn, so the mean is -0.5
    and a replicate draws two seeds: 0, -0.5 or -1 (chances 1/4, 1/2, 1/4). The 95% interval is [-1, 0]:
    the arm's seed variance counts, the floor adds none."""
    from study.stats import hierarchical_bootstrap

    labels = np.array([0, 1] * 100)
    arm = np.stack([labels, 1 - labels])
    floor = labels[None]  # [1, examples]
    result = hierarchical_bootstrap(labels, arm, floor, 2, 2000, seed=0)
    assert result["accuracy"] == {"diff": -0.5, "low": -1.0, "high": 0.0}
    # the same as a floor that predicted the same on every seed, and the same with the arms swapped (negated)
    assert hierarchical_bootstrap(labels, arm, np.tile(floor, (2, 1)), 2, 2000, seed=0) == result
    swapped = hierarchical_bootstrap(labels, floor, arm, 2, 2000, seed=0)["accuracy"]
    assert swapped == {"diff": 0.5, "low": 0.0, "high": 1.0}
    with pytest.raises(ValueError, match="3 and 2 seeds cannot be paired"):
        hierarchical_bootstrap(labels, np.tile(labels, (3, 1)), arm, 2, 100, seed=0)
