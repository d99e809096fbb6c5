"""Statistics of the study: intervals at the seed level that hold their coverage, the probability that one recipe
beats another on a seed, Holm's correction, the seeds a difference needs, time to target, and the expected best
validation score of n trials. The committed hierarchical bootstrap stays as the reference that under-covers."""

from __future__ import annotations

import math

import numpy as np


def macro_f1_batch(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of each row of ``predictions`` [rows, n] against the matching row of ``labels``.

    Vectorised over rows (bootstrap replicates), so thousands of replicates take milliseconds.
    """
    rows = predictions.shape[0]
    f1 = np.zeros((rows, n_classes))
    for cls in range(n_classes):
        predicted, actual = predictions == cls, labels == cls
        true_positive = (predicted & actual).sum(axis=1)
        denominator = predicted.sum(axis=1) + actual.sum(axis=1)
        f1[:, cls] = np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)
    return f1.mean(axis=1)


def _score(metric: str, labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    if metric == "accuracy":
        return (predictions == labels).mean(axis=1)
    return macro_f1_batch(labels, predictions, n_classes)


def first_reaching(scores: list[float], target: float) -> int | None:
    """Index of the first score at or above ``target``; None if none is."""
    return next((index for index, score in enumerate(scores) if score >= target), None)


def steps_to_target(steps: list[int], scores: list[float], target: float) -> int | None:
    """The first evaluated step whose score reaches ``target``; None if it never does."""
    index = first_reaching(scores, target)
    return None if index is None else steps[index]


def hierarchical_bootstrap(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray, n_classes: int,
                           samples: int, seed: int, confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Difference A - B in accuracy and macro-F1, with an interval that counts training variance too.

    The reference that motivated :func:`paired_difference`, kept for its test: a percentile interval over a few
    resampled seeds has no small-sample widening (over 3 seeds it is about the range of the 3 seed means), and
    under a null it contains 0 in about 80% of studies at 3 seeds with a per-seed spread of 5 points
    (tests/study/test_coverage.py). compare no longer uses it.

    ``predictions_a`` and ``predictions_b`` are [seeds, examples] arrays of class ids on the same
    test examples; row s of A and row s of B were trained with seed s. Each replicate draws the
    seeds with replacement (training variance: a seed is one draw of initialisation, masks and data
    order), then the test examples with replacement (the same ones for every drawn seed and both
    arms), and averages A - B over the drawn seeds. With one seed this is the paired bootstrap
    over examples alone. Returns {"accuracy": {...}, "macro_f1": {...}} with diff, low, high.

    An arm with no seed (a deterministic floor) is one row, [1, examples]: its single prediction set
    is paired with every seed of the other arm, so only that arm's seeds vary between replicates,
    exactly as if the floor had predicted the same on every seed.
    """
    return _hierarchical(labels, predictions_a, predictions_b, n_classes, samples, seed, confidence, "diff")


def _hierarchical(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray | None, n_classes: int,
                  samples: int, seed: int, confidence: float, point_name: str) -> dict[str, dict[str, float]]:
    """A's score minus B's (B None: A's score alone) per seed, resampled as :func:`hierarchical_bootstrap` says."""
    arms = [predictions_a] if predictions_b is None else [predictions_a, predictions_b]
    rows = {p.shape[0] for p in arms} - {1}
    if len(rows) > 1:
        raise ValueError(f"arms with {predictions_a.shape[0]} and {predictions_b.shape[0]} seeds cannot be paired; "
                         "give both the same seeds, or one of them a single row (no seed)")
    seeds = rows.pop() if rows else 1
    arms = [np.broadcast_to(p, (seeds, p.shape[1])) for p in arms]
    rng = np.random.default_rng(seed)
    n = arms[0].shape[1]
    seed_draws = rng.integers(0, seeds, size=(samples, seeds))
    example_draws = rng.integers(0, n, size=(samples, n))
    resampled_labels = labels[example_draws]
    tail = (1 - confidence) / 2 * 100
    signs = [1.0, -1.0][:len(arms)]
    result = {}
    for metric in ("accuracy", "macro_f1"):
        point = sum(sign * np.array([_score(metric, labels[None], row[None], n_classes)[0] for row in arm])
                    for sign, arm in zip(signs, arms, strict=True))
        per_seed = sum(sign * np.stack([_score(metric, resampled_labels, row[example_draws], n_classes) for row in arm])
                       for sign, arm in zip(signs, arms, strict=True))  # [seeds, samples]
        replicates = np.take_along_axis(per_seed, seed_draws.T, axis=0).mean(axis=0)
        result[metric] = {point_name: float(point.mean()), "low": float(np.percentile(replicates, tail)),
                          "high": float(np.percentile(replicates, 100 - tail))}
    return result


def seed_mean(values: list[float]) -> float:
    """The exactly rounded mean over seeds (math.fsum): the same for the same values in any order, so seeds never break
    a tie by rounding."""
    return math.fsum(values) / len(values)


def spread(values: list[float]) -> float | None:
    """Standard deviation over seeds; None for one seed (no spread is shown where there is none)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


# --- intervals at the seed level: the ones compare reports


def test_noise(samples: np.ndarray, divisor: float) -> tuple[np.ndarray, np.ndarray]:
    """Test-sampling variance of one seed's value, and the part of it that every seed shares.

    ``samples`` is [..., seeds, K]: either per-example values whose mean is the seed's value (K test examples,
    ``divisor`` K: the variance of a mean over examples) or bootstrap replicates of the seed's value (``divisor``
    1). Returns, over the leading axes, (variance: the mean over seeds of each seed's variance; shared: the mean
    over pairs of distinct seeds of their covariance, at least 0; with one seed, the variance). Every seed is scored
    on the same test examples, so the shared part does not average away over seeds; the rest does, and the spread
    between seeds already holds it.
    """
    seeds = samples.shape[-2]
    each = samples.var(axis=-1, ddof=1).sum(axis=-1)
    variance = each / seeds / divisor
    if seeds == 1:
        return variance, variance
    total = samples.sum(axis=-2).var(axis=-1, ddof=1)
    return variance, np.maximum((total - each) / (seeds * (seeds - 1)), 0.0) / divisor


def seed_level_interval(per_seed: np.ndarray, test_variance: np.ndarray, shared_test_variance: np.ndarray,
                        confidence: float = 0.95) -> dict[str, np.ndarray]:
    """The mean over seeds of ``per_seed`` [..., seeds] with a t interval and a two-sided p-value against 0.

    se² = s²/S + shared, where s² is the sample variance between the S seeds (training variance, plus the test
    noise that differs from seed to seed) and ``shared_test_variance`` the test noise every seed shares
    (:func:`test_noise`); the interval is mean ± t(S - 1)·se. Taking S - 1 degrees of freedom for the whole of se
    is conservative when the shared part is large; a Satterthwaite df under-covers at 3 seeds in the coverage
    simulation (92.4%), so it is not used. One seed (S = 1): no spread between seeds is seen, se² is
    ``test_variance`` alone and the interval is normal: it counts test-set noise only, not training variance.
    p is 0 when se is 0 and the mean is not (e.g. one arm right on every example on every seed), 1 when both are.
    """
    from scipy import stats

    per_seed = np.asarray(per_seed, dtype=float)
    seeds = per_seed.shape[-1]
    mean = per_seed.mean(axis=-1)
    if seeds == 1:
        variance, df = np.asarray(test_variance, dtype=float), np.inf
    else:
        variance, df = per_seed.var(axis=-1, ddof=1) / seeds + shared_test_variance, seeds - 1
    se = np.sqrt(variance)
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, 2 * stats.t.sf(np.abs(mean) / se, df), np.where(mean == 0, 1.0, 0.0))
    return {"mean": mean, "se": se, "low": mean - half, "high": mean + half, "p": p, "df": df}


def accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95) -> dict:
    """Accuracy of A minus B, mean over seeds, with :func:`seed_level_interval`; vectorised over leading axes.

    ``correct_a`` and ``correct_b`` are [..., seeds, examples] (one of them may have 1 seed: a floor, paired with
    every seed of the other): whether each seed's model got each test example right, the same examples for both.
    Per seed d_s is the mean over examples of (right_A - right_B); the test noise is analytic: the variance of
    that mean over examples and its covariance between seeds (:func:`test_noise`), nothing resampled.
    """
    difference = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    variance, shared = test_noise(difference, difference.shape[-1])
    per_seed = difference.mean(axis=-1)
    return {**seed_level_interval(per_seed, variance, shared, confidence), "per_seed": per_seed,
            "test_variance": variance, "shared_test_variance": shared}


def _paired_rows(predictions_a: np.ndarray, predictions_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = {predictions_a.shape[0], predictions_b.shape[0]} - {1}
    if len(rows) > 1:
        raise ValueError(f"arms with {predictions_a.shape[0]} and {predictions_b.shape[0]} seeds cannot be paired; "
                         "give both the same seeds, or one of them a single row (no seed)")
    seeds = rows.pop() if rows else 1
    return (np.broadcast_to(predictions_a, (seeds, predictions_a.shape[1])),
            np.broadcast_to(predictions_b, (seeds, predictions_b.shape[1])))


def _macro_f1_replicates(labels: np.ndarray, predictions: np.ndarray, n_classes: int, samples: int,
                         seed: int) -> np.ndarray:
    """Macro-F1 of each seed's predictions [seeds, examples] on ``samples`` paired-bootstrap draws of the test
    examples: [seeds, samples]. The draws depend on (seed, samples, examples) alone, so every arm and seed gets
    the same ones and differences stay paired."""
    draws = np.random.default_rng(seed).integers(0, labels.size, size=(samples, labels.size))
    return np.stack([macro_f1_batch(labels[draws], row[draws], n_classes) for row in predictions])


def _row(parts: dict, point_name: str, difference: bool, confidence: float) -> dict:
    """One metric's result as plain numbers (compare.json). The interval is cut to the values the metric can take
    (a score in [0, 1], a difference in [-1, 1]): the true value lies there, so coverage is unchanged."""
    per_seed = [float(value) for value in np.atleast_1d(parts["per_seed"])]
    seeds = len(per_seed)
    bottom = -1.0 if difference else 0.0
    row = {point_name: float(parts["mean"]), "low": float(np.clip(parts["low"], bottom, 1.0)),
           "high": float(np.clip(parts["high"], bottom, 1.0)),
           "se": float(parts["se"]), "p": float(parts["p"]), "seeds": seeds, "training_variance_counted": seeds > 1,
           "per_seed": per_seed, "sd_per_seed": spread(per_seed),
           "test_sd_per_seed": float(np.sqrt(parts["test_variance"])),
           "shared_test_sd": float(np.sqrt(parts["shared_test_variance"])) if seeds > 1 else None}
    if difference:
        row["p_a_beats_b"] = probability_of_beating(per_seed, confidence)
        row["seeds_for_1_point"] = (seeds_to_detect(row["sd_per_seed"], float(parts["shared_test_variance"]))
                                    if seeds > 1 else None)
    return row


def paired_difference(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray, n_classes: int,
                      samples: int, seed: int, confidence: float = 0.95) -> dict[str, dict]:
    """Difference A - B in accuracy and macro-F1 at the seed level, with an interval that holds its coverage.

    ``predictions_a`` and ``predictions_b`` are [seeds, examples] class ids on the same test examples, row s of
    both trained with seed s; an arm with no seed (a floor) is one row, paired with every seed of the other.
    Per seed d_s = score_A - score_B; the interval is :func:`seed_level_interval`: d̄ ± t(S - 1)·se with
    se² = s_d²/S + the test noise all seeds share. What varies: seeds are draws of training (initialisation,
    masks, data order: whatever a seed changes), the test examples draws from the task. Test noise is analytic
    for accuracy (:func:`accuracy_difference`); for macro-F1, not a mean over examples, it comes from ``samples``
    paired-bootstrap draws of the test examples (the same draws for every seed and both arms), nothing else
    resampled. One seed: test noise only (``training_variance_counted`` false). Tested for coverage under a null
    in tests/study/test_coverage.py.

    Returns {"accuracy": {...}, "macro_f1": {...}}, each with diff, low, high, se, p (two-sided, before any
    correction for many comparisons), seeds, per_seed, sd_per_seed, p_a_beats_b (:func:`probability_of_beating`)
    and seeds_for_1_point (:func:`seeds_to_detect`).
    """
    a, b = _paired_rows(predictions_a, predictions_b)
    accuracy = accuracy_difference(a == labels, b == labels, confidence)
    replicates = (_macro_f1_replicates(labels, a, n_classes, samples, seed)
                  - _macro_f1_replicates(labels, b, n_classes, samples, seed))
    per_seed = (macro_f1_batch(np.broadcast_to(labels, a.shape), a, n_classes)
                - macro_f1_batch(np.broadcast_to(labels, b.shape), b, n_classes))
    variance, shared = test_noise(replicates, 1)
    macro_f1 = {**seed_level_interval(per_seed, variance, shared, confidence), "per_seed": per_seed,
                "test_variance": variance, "shared_test_variance": shared}
    return {"accuracy": _row(accuracy, "diff", True, confidence), "macro_f1": _row(macro_f1, "diff", True, confidence)}


def score_interval(labels: np.ndarray, predictions: np.ndarray, n_classes: int, samples: int, seed: int,
                   confidence: float = 0.95) -> dict[str, dict]:
    """One arm's accuracy and macro-F1, mean over its seeds (``predictions`` [seeds, examples]), with the
    interval of :func:`paired_difference` (the arm alone: seeds, plus the test noise they share; one row: test
    noise only). Returns {"accuracy": {...}, "macro_f1": {...}} with mean, low, high, se, seeds, per_seed."""
    correct = (predictions == labels).astype(float)
    variance, shared = test_noise(correct, correct.shape[-1])
    accuracy = {**seed_level_interval(correct.mean(axis=-1), variance, shared, confidence),
                "per_seed": correct.mean(axis=-1), "test_variance": variance, "shared_test_variance": shared}
    replicates = _macro_f1_replicates(labels, predictions, n_classes, samples, seed)
    variance, shared = test_noise(replicates, 1)
    per_seed = macro_f1_batch(np.broadcast_to(labels, predictions.shape), predictions, n_classes)
    macro_f1 = {**seed_level_interval(per_seed, variance, shared, confidence), "per_seed": per_seed,
                "test_variance": variance, "shared_test_variance": shared}
    return {"accuracy": _row(accuracy, "mean", False, confidence),
            "macro_f1": _row(macro_f1, "mean", False, confidence)}


def seed_interval(values: list[float], confidence: float = 0.95) -> dict[str, float] | None:
    """Mean of per-seed values (no test noise: e.g. steps to a target) with a t interval over seeds; None when
    there are no values. One value, or values that all agree: the interval has zero width, and says nothing."""
    from scipy import stats

    if not values:
        return None
    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    half = 0.0 if data.size < 2 else float(stats.t.ppf(0.5 + confidence / 2, data.size - 1)
                                          * data.std(ddof=1) / math.sqrt(data.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": int(data.size)}


# --- P(A > B), many comparisons, power, the expected best of n trials


def probability_of_beating(per_seed_differences: list[float], confidence: float = 0.95) -> dict[str, float]:
    """P(A > B): the probability that A scores higher than B on a random seed (Bouthillier et al. 2021), on this
    test set. Estimated from paired seeds (seed s of A against seed s of B; a floor against every seed), as the
    share of seeds with A - B > 0, a tie counting one half; the interval is Clopper-Pearson's exact binomial one
    over the S seeds (independent draws of training), so it holds its coverage at any S, and is wide at few."""
    from scipy import stats

    differences = np.asarray(per_seed_differences, dtype=float)
    seeds = differences.size
    wins = float((differences > 0).sum() + 0.5 * (differences == 0).sum())
    tail = (1 - confidence) / 2
    low = 0.0 if wins == 0 else float(stats.beta.ppf(tail, wins, seeds - wins + 1))
    high = 1.0 if wins == seeds else float(stats.beta.ppf(1 - tail, wins + 1, seeds - wins))
    return {"estimate": wins / seeds, "low": low, "high": high, "seeds": seeds}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest p times (m - k + 1), made
    non-decreasing in that order and capped at 1. A comparison is shown at level α when its adjusted p < α; the
    chance of any false claim in the family stays under α."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (p.size - rank) * p[index]))
        adjusted[index] = running
    return [float(value) for value in adjusted]


DETECTABLE = 0.01  # the difference the power line sizes the study for: 1 point of accuracy or macro-F1
POWER = 0.8


def seeds_to_detect(sd_per_seed: float | None, shared_test_variance: float = 0.0, effect: float = DETECTABLE,
                    power: float = POWER, alpha: float = 0.05, max_seeds: int = 1000) -> int | None:
    """The fewest seeds S at which the two-sided t test of :func:`seed_level_interval` (level ``alpha``) detects a
    difference of ``effect`` with probability ``power``, if the per-seed SD of the differences is ``sd_per_seed``
    and the test noise shared by every seed ``shared_test_variance``: se(S)² = sd²/S + shared, power from the
    noncentral t with S - 1 degrees of freedom, S = 2, 3, ... None: unknown (one seed: no SD) or not within
    ``max_seeds`` (the shared test noise alone is too large: a bigger test set is needed, not more seeds)."""
    from scipy import stats

    if sd_per_seed is None:
        return None
    seeds = np.arange(2, max_seeds + 1)
    se = np.sqrt(sd_per_seed ** 2 / seeds + shared_test_variance)
    if se[0] == 0:
        return 2
    df = seeds - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = effect / se
    achieved = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    reached = np.flatnonzero(achieved >= power)
    return int(seeds[reached[0]]) if reached.size else None


def expected_max(scores: list[float], n: int) -> float:
    """Expected best of ``n`` trials drawn without replacement from the N trials run (``scores``): the unbiased
    estimator behind Dodge et al. 2019's expected validation performance (Tang et al. 2020's correction). With
    the scores sorted v(1) <= ... <= v(N), the best of n is v(i) with probability C(i-1, n-1) / C(N, n)."""
    values = sorted(float(score) for score in scores)
    if not 1 <= n <= len(values):
        raise ValueError(f"n = {n}: the expected best needs 1 <= n <= {len(values)} (the trials run)")
    total = math.comb(len(values), n)
    return math.fsum(math.comb(i - 1, n - 1) * value for i, value in enumerate(values, start=1)) / total
