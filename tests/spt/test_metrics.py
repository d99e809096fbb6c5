"""Metrics on constructed data with known answers."""

import numpy as np
import pytest

from spt.metrics import (
    classification_report,
    expected_calibration_error,
    masked_token_accuracy,
)


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_model():
    # Two bins' worth: confidence 0.75 and right 3 times out of 4 -> calibrated.
    probabilities = np.array([[0.75, 0.25]] * 4)
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.0)
    # Confidence 0.9, right half the time -> gap 0.4.
    probabilities = np.array([[0.9, 0.1]] * 4)
    assert expected_calibration_error(probabilities, np.array([0, 0, 1, 1]), bins=10) == pytest.approx(0.4)


def test_ece_weights_bins_by_size():
    probabilities = np.array([[0.95, 0.05]] * 3 + [[0.55, 0.45]])
    labels = np.array([0, 0, 0, 1])  # bin 0.9-1.0: acc 1, conf .95 ; bin 0.5-0.6: acc 0, conf .55
    expected = 0.75 * 0.05 + 0.25 * 0.55
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(expected)


def test_classification_report():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    report = classification_report(labels, logits, ["neg", "pos"], bins=10)
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["confusion_matrix"] == [[2, 0], [1, 1]]
    assert report["per_class"]["pos"]["recall"] == pytest.approx(0.5)
    assert report["per_class"]["neg"]["precision"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_masked_token_accuracy_ignores_unmasked_and_padding():
    labels = np.array([[-100, 5, -100, 7], [9, -100, -100, -100]])
    predictions = np.array([[-100, 5, -100, 1], [9, -100, -100, -100]])
    assert masked_token_accuracy(predictions, labels) == pytest.approx(2 / 3)
