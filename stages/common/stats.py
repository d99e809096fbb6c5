"""Statistics of the study: hierarchical bootstrap intervals and steps to reach a target score."""

from __future__ import annotations

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
    rows = {predictions_a.shape[0], predictions_b.shape[0]} - {1}
    if len(rows) > 1:
        raise ValueError(f"arms with {predictions_a.shape[0]} and {predictions_b.shape[0]} seeds cannot be paired; "
                         "give both the same seeds, or one of them a single row (no seed)")
    seeds = rows.pop() if rows else 1
    predictions_a, predictions_b = (np.broadcast_to(p, (seeds, p.shape[1])) for p in (predictions_a, predictions_b))
    rng = np.random.default_rng(seed)
    n = predictions_a.shape[1]
    seed_draws = rng.integers(0, seeds, size=(samples, seeds))
    example_draws = rng.integers(0, n, size=(samples, n))
    resampled_labels = labels[example_draws]
    tail = (1 - confidence) / 2 * 100
    result = {}
    for metric in ("accuracy", "macro_f1"):
        point = np.array([_score(metric, labels[None], a[None], n_classes)[0] - _score(metric, labels[None], b[None],
                                                                                     n_classes)[0]
                          for a, b in zip(predictions_a, predictions_b)])
        per_seed = np.stack([_score(metric, resampled_labels, a[example_draws], n_classes)
                             - _score(metric, resampled_labels, b[example_draws], n_classes)
                             for a, b in zip(predictions_a, predictions_b)])  # [seeds, samples]
        replicates = np.take_along_axis(per_seed, seed_draws.T, axis=0).mean(axis=0)
        result[metric] = {"diff": float(point.mean()), "low": float(np.percentile(replicates, tail)),
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
