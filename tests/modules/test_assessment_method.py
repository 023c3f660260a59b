"""Metrics against values worked out by hand, numpy, and scipy where it is installed."""
import math

import numpy as np
import pytest

from src.assessment_method import (METRICS, accuracy, compute_metric, f1, macro_f1, mcc, pearson,
                                   spearman)

# Binary case: TP = 3 (rows 0, 2, 6), FN = 1 (row 1), FP = 1 (row 4), TN = 3.
LABELS = [1, 1, 1, 0, 0, 0, 1, 0]
PREDICTIONS = [1, 0, 1, 0, 1, 0, 1, 0]


def test_binary_metrics_by_hand():
    assert accuracy(PREDICTIONS, LABELS) == 6 / 8
    assert f1(PREDICTIONS, LABELS) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert mcc(PREDICTIONS, LABELS) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))


def test_f1_uses_precision_and_recall_of_class_one():
    # TP = 1, FP = 3, FN = 0: precision 1/4, recall 1, F1 = 2PR/(P+R) = 0.4. Formulas that mix up
    # FP and FN, or score class 0, give other values here (class 0 alone: F1 = 0).
    labels, predictions = [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]
    precision, recall = 1 / 4, 1 / 1
    assert f1(predictions, labels) == pytest.approx(2 * precision * recall / (precision + recall))
    assert f1(predictions, labels) == pytest.approx(0.4)


def test_macro_f1_and_multiclass_mcc_by_hand():
    labels, predictions = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 2]
    # Per class: F1(0) = 2*2/(4+1+0) = 0.8, F1(1) = 0, F1(2) = 2*1/(2+1+1) = 0.5.
    assert macro_f1(predictions, labels) == pytest.approx((0.8 + 0 + 0.5) / 3)
    # Confusion trace c = 3, total s = 6, true counts t = (2, 2, 2), predicted counts p = (3, 1, 2).
    assert mcc(predictions, labels) == pytest.approx((3 * 6 - 12) / math.sqrt((36 - 12) * (36 - 14)))


def test_all_one_class():
    ones = np.ones(6, dtype=int)
    assert accuracy(ones, ones) == 1.0
    assert f1(ones, ones) == 1.0
    assert mcc(ones, ones) == 0.0  # undefined: no variation in either
    assert f1(np.zeros(6), np.zeros(6)) == 0.0  # no positive class at all
    assert macro_f1(np.zeros(6), np.zeros(6)) == 1.0
    assert mcc(np.zeros(6), [0, 0, 1, 0, 1, 0]) == 0.0
    assert pearson(np.full(5, 2.0), [1, 2, 3, 4, 5]) == 0.0
    assert spearman(np.full(5, 2.0), [1, 2, 3, 4, 5]) == 0.0


def test_correlations_against_numpy_and_hand_ranks():
    predictions = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.5])
    labels = np.array([2.0, 1.0, 3.0, 3.0, 4.0, 6.0, 5.0, 1.0])
    assert pearson(predictions, labels) == pytest.approx(np.corrcoef(predictions, labels)[0, 1])
    prediction_ranks = [2, 3.5, 3.5, 5, 7, 7, 7, 1]  # ties share the mean of their ranks
    label_ranks = [3, 1.5, 4.5, 4.5, 6, 8, 7, 1.5]
    assert spearman(predictions, labels) == pytest.approx(np.corrcoef(prediction_ranks, label_ranks)[0, 1])
    assert pearson([1, 2, 3], [-2, -4, -6]) == pytest.approx(-1.0)


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is optional: install it to cross-check correlations")
    rng = np.random.default_rng(0)
    predictions = rng.normal(size=200)
    labels = np.round(predictions + rng.normal(size=200), 1)  # rounding makes ties
    assert pearson(predictions, labels) == pytest.approx(stats.pearsonr(predictions, labels)[0])
    assert spearman(predictions, labels) == pytest.approx(stats.spearmanr(predictions, labels)[0])


def test_compute_metric_turns_logits_into_predictions():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.4], [5.0, 0.0]])
    assert compute_metric("accuracy", logits, [1, 0, 0, 0]) == 0.75
    scores = np.array([[0.5], [1.5], [2.5]])
    assert compute_metric("pearson", scores, [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert compute_metric("spearman", scores.reshape(-1), [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_compute_metric_errors():
    with pytest.raises(ValueError, match="metric 'auc' is not one of accuracy, f1"):
        compute_metric("auc", np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match=r"'pearson' needs one output per example, got logits of shape \(2, 3\)"):
        compute_metric("pearson", np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match="need as many predictions as labels"):
        accuracy([1, 0], [1])


def test_metrics_table():
    assert set(METRICS) == {"accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman"}
