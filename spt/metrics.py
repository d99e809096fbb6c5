"""Classification and masked-LM metrics as small pure functions."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

IGNORE_INDEX = -100


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE: the |accuracy - confidence| gap averaged over equal-width confidence bins, weighted by size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; confidence is always > 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (used for validation during training)."""
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0))}


def classification_report(labels: np.ndarray, logits: np.ndarray, label_names: list[str], bins: int
                          ) -> dict:
    """Everything evaluate reports: accuracy, macro-F1, ECE, per-class P/R/F1, confusion matrix."""
    predictions = logits.argmax(axis=1)
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids,
                                                                     zero_division=0)
    return {
        **classification_scores(labels, predictions),
        "ece": expected_calibration_error(softmax(logits), labels, bins),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(label_names)},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),
    }


def masked_token_accuracy(predictions: np.ndarray, mlm_labels: np.ndarray) -> float:
    """Share of masked positions (``mlm_labels != -100``) whose predicted token is right."""
    masked = mlm_labels != IGNORE_INDEX
    return float((predictions[masked] == mlm_labels[masked]).mean()) if masked.any() else 0.0
