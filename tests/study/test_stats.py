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


def test_seed_interval_is_a_t_interval_over_seeds():
    from study.stats import seed_interval

    assert seed_interval([]) is None
    assert seed_interval([40.0]) == {"mean": 40.0, "low": 40.0, "high": 40.0, "seeds": 1}  # zero width: says nothing
    # 20, 40, 60: mean 40, sd 20, se 20 / sqrt(3) = 11.547; t(0.975, 2) = 4.3027: half-width 49.68
    spread = seed_interval([20.0, 40.0, 60.0])
    assert spread["mean"] == 40.0 and spread["low"] == pytest.approx(40 - 49.68, abs=0.01)
    assert spread["high"] == pytest.approx(40 + 49.68, abs=0.01)


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


# --- the interval compare reports, P(A > B), Holm, power, expected best of n


def test_seed_level_interval_hand_computed():
    """d = 2, 4, 6 points over 3 seeds, shared test variance 1 point²: mean 4, s² = 4, se² = 4/3 + 1 = 2.333,
    se = 1.5275; t(0.975, 2) = 4.3027, half-width 6.572; t = 4 / 1.5275 = 2.619, two-sided p(2 df) = 0.120."""
    from study.stats import seed_level_interval

    result = seed_level_interval(np.array([0.02, 0.04, 0.06]), 0.0, 1e-4)
    assert result["mean"] == pytest.approx(0.04)
    assert result["se"] == pytest.approx(0.015275, abs=1e-6)
    assert (result["low"], result["high"]) == pytest.approx((0.04 - 0.06572, 0.04 + 0.06572), abs=1e-5)
    assert result["p"] == pytest.approx(0.120, abs=0.001) and result["df"] == 2


def test_test_noise_shared_by_seeds():
    """Seeds that are copies of each other share all their test noise; independent seeds share none of it."""
    from study.stats import test_noise

    rng = np.random.default_rng(0)
    one = rng.integers(-1, 2, size=2000).astype(float)
    variance, shared = test_noise(np.stack([one, one, one]), 2000)
    assert variance == pytest.approx(one.var(ddof=1) / 2000) and shared == pytest.approx(variance)
    variance, shared = test_noise(rng.integers(-1, 2, size=(3, 20000)).astype(float), 20000)
    assert shared < 0.05 * variance


def test_one_seed_counts_test_noise_only():
    """A right on all 400 examples, B on 300: d = 0.25 exactly; the interval is 0.25 ± 1.96·sd(D)/sqrt(400) with
    sd(D)² = 0.25·0.75·400/399 (D = 1 on 100 examples, 0 on 300): se = 0.02168. Training variance: not counted."""
    from study.stats import paired_difference

    labels = np.zeros(400, dtype=int)
    b = np.zeros((1, 400), dtype=int)
    b[:, :100] = 1
    accuracy = paired_difference(labels, np.zeros((1, 400), dtype=int), b, 2, 500, 0)["accuracy"]
    assert accuracy["diff"] == pytest.approx(0.25) and accuracy["se"] == pytest.approx(0.02168, abs=1e-5)
    assert accuracy["low"] == pytest.approx(0.25 - 1.96 * 0.02168, abs=1e-4)
    assert accuracy["training_variance_counted"] is False and accuracy["seeds"] == 1
    assert accuracy["seeds_for_1_point"] is None and accuracy["sd_per_seed"] is None


def test_a_seedless_floor_is_paired_with_every_seed_of_the_arm():
    from study.stats import paired_difference

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 300)
    arm = np.where(rng.random((3, 300)) < 0.8, labels, 1 - labels)
    floor = np.where(rng.random((1, 300)) < 0.7, labels, 1 - labels)
    result = paired_difference(labels, arm, floor, 2, 300, 0)
    assert result == paired_difference(labels, arm, np.tile(floor, (3, 1)), 2, 300, 0)
    assert result["accuracy"]["per_seed"] == pytest.approx(list((arm == labels).mean(1) - (floor == labels).mean()))
    with pytest.raises(ValueError, match="3 and 2 seeds cannot be paired"):
        paired_difference(labels, arm, arm[:2], 2, 100, 0)


def test_macro_f1_test_noise_from_the_bootstrap_matches_the_analytic_one_for_accuracy():
    """On a balanced binary task macro-F1 moves almost as accuracy does: the paired bootstrap's shared test noise
    for macro-F1 lands near the analytic one for accuracy (a check of the bootstrap path)."""
    from study.stats import paired_difference

    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 500)
    difficulty = rng.random(1000)
    a = np.where(rng.random((3, 1000)) < 0.6 + 0.3 * difficulty, labels, 1 - labels)
    b = np.where(rng.random((3, 1000)) < 0.9 - 0.3 * difficulty, labels, 1 - labels)
    result = paired_difference(labels, a, b, 2, 2000, 0)
    assert result["macro_f1"]["shared_test_sd"] == pytest.approx(result["accuracy"]["shared_test_sd"], rel=0.2)
    assert result["macro_f1"]["test_sd_per_seed"] == pytest.approx(result["accuracy"]["test_sd_per_seed"], rel=0.1)


def test_probability_of_beating_with_its_exact_interval():
    """2 wins of 3 paired seeds: 2/3, Clopper-Pearson [0.0943, 0.9916] (Beta(2, 2) at 2.5%, Beta(3, 1) at 97.5%);
    3 of 3: [0.2924, 1] (0.025^(1/3) = 0.2924); a tie counts one half."""
    from study.stats import probability_of_beating

    two = probability_of_beating([0.01, 0.02, -0.01])
    assert two["estimate"] == pytest.approx(2 / 3) and two["seeds"] == 3
    assert (two["low"], two["high"]) == pytest.approx((0.0943, 0.9916), abs=1e-4)
    three = probability_of_beating([0.01, 0.02, 0.03])
    assert (three["estimate"], three["high"]) == (1.0, 1.0) and three["low"] == pytest.approx(0.025 ** (1 / 3))
    assert probability_of_beating([0.0, 0.01])["estimate"] == 0.75


def test_holm_on_a_constructed_family():
    """p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06;
    0.04 x 1 = 0.04, raised to 0.06 (never below the step before). At 0.05 all four pass unadjusted, two after."""
    from study.stats import holm

    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02]  # a family of one: no correction


def test_seeds_to_detect_hand_computed():
    """Paired t test, two-sided α = 0.05, 80% power. Effect 1 point, per-seed SD 1 point (effect size 1): the
    normal approximation n = (1.96 + 0.8416)² / 1² + 1.96² / 2 = 7.85 + 1.92 = 9.77 gives 10 (tables: 10, power
    0.80); SD 2 points (effect size 0.5): 31.4 + 1.92 = 33.3, so 34. Shared test noise with SE 0.4 point: even
    infinitely many seeds leave se = 0.4, and 1 / 0.4 = 2.5 < 1.96 + 0.84 = 2.80: no number of seeds."""
    from study.stats import seeds_to_detect

    assert seeds_to_detect(0.01) == 10
    assert seeds_to_detect(0.02) == 34
    assert seeds_to_detect(0.01, 0.004 ** 2) is None
    assert seeds_to_detect(None) is None  # one seed: no SD
    assert seeds_to_detect(0.0) == 2


def test_expected_max_hand_computed():
    """Scores 0.7, 0.9, 0.8: n = 1, the mean 0.8; n = 2, pairs {0.7, 0.8} {0.7, 0.9} {0.8, 0.9}, best 0.8, 0.9,
    0.9: 2.6 / 3; n = 3, the best 0.9. With a tie (1, 1, 2), n = 2: (1 + 2 + 2) / 3."""
    from study.stats import expected_max

    scores = [0.7, 0.9, 0.8]
    assert [expected_max(scores, n) for n in (1, 2, 3)] == pytest.approx([0.8, 2.6 / 3, 0.9])
    assert expected_max([1, 1, 2], 2) == pytest.approx(5 / 3)
    for n in (0, 4):
        with pytest.raises(ValueError, match="1 <= n <= 3"):
            expected_max(scores, n)
