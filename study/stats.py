"""Statistics of the study: hierarchical bootstrap intervals and steps to reach a target score."""

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


def score_interval(labels: np.ndarray, predictions: np.ndarray, n_classes: int, samples: int, seed: int,
                   confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """One arm's accuracy and macro-F1 (mean over its seeds) with the same hierarchical interval: seeds, then
    test examples. ``predictions`` is [seeds, examples]. Returns {"accuracy": {...}, "macro_f1": {...}} with
    mean, low, high."""
    return _hierarchical(labels, predictions, None, n_classes, samples, seed, confidence, "mean")


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


def seed_interval(values: list[float], samples: int, seed: int, confidence: float = 0.95) -> dict[str, float] | None:
    """Mean of per-seed values with a bootstrap interval over seeds; None when there are no values.

    With one value the interval is that value: one seed shows no spread, and none is invented.
    """
    if not values:
        return None
    data = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, data.size, size=(samples, data.size))
    means = data[draws].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return {"mean": float(data.mean()), "low": float(np.percentile(means, tail)),
            "high": float(np.percentile(means, 100 - tail)), "seeds": int(data.size)}


def seed_mean(values: list[float]) -> float:
    """The exactly rounded mean over seeds (math.fsum): the same for the same values in any order, so seeds never break
    a tie by rounding."""
    return math.fsum(values) / len(values)


def spread(values: list[float]) -> float | None:
    """Standard deviation over seeds; None for one seed (no spread is shown where there is none)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None
