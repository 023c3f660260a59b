"""GLUE metrics as plain numpy functions of (predictions, labels).

Evaluation gathers every prediction of the dev set first and scores once, so F1, MCC and the
correlations are exact over the whole set rather than averaged over batches. Where a metric is
undefined (no positive example, a constant prediction) it is 0.0, the score of a model that
has learnt nothing, so "keep the best" comparisons never meet a NaN.
"""
import numpy as np


def _as_arrays(predictions, labels):
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise ValueError(f"need as many predictions as labels, and some: got {predictions.size} and {labels.size}")
    return predictions, labels


def _divide(numerator, denominator):
    return float(numerator / denominator) if denominator else 0.0


def accuracy(predictions, labels):
    """Fraction of predictions equal to their label."""
    predictions, labels = _as_arrays(predictions, labels)
    return float(np.mean(predictions == labels))


def _f1_of_class(predictions, labels, positive):
    """F1 = 2 TP / (2 TP + FP + FN) for one class taken as positive."""
    true_positive = np.sum((predictions == positive) & (labels == positive))
    false_positive = np.sum((predictions == positive) & (labels != positive))
    false_negative = np.sum((predictions != positive) & (labels == positive))
    return _divide(2 * true_positive, 2 * true_positive + false_positive + false_negative)


def f1(predictions, labels):
    """Binary F1 with class 1 as the positive class (MRPC, QQP)."""
    return _f1_of_class(*_as_arrays(predictions, labels), positive=1)


def macro_f1(predictions, labels):
    """Unweighted mean of per-class F1 over every class seen in labels or predictions."""
    predictions, labels = _as_arrays(predictions, labels)
    classes = np.union1d(predictions, labels)
    return float(np.mean([_f1_of_class(predictions, labels, c) for c in classes]))


def mcc(predictions, labels):
    """Matthews correlation coefficient (CoLA), multi-class form from the confusion matrix."""
    predictions, labels = _as_arrays(predictions, labels)
    classes, indices = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    label_index, prediction_index = indices[:labels.size], indices[labels.size:]
    confusion = np.zeros((classes.size, classes.size))
    np.add.at(confusion, (label_index, prediction_index), 1)
    true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
    correct, total = np.trace(confusion), confusion.sum()
    covariance = correct * total - true_counts @ predicted_counts
    scale = np.sqrt((total ** 2 - true_counts @ true_counts) * (total ** 2 - predicted_counts @ predicted_counts))
    return _divide(covariance, scale)


def pearson(predictions, labels):
    """Pearson correlation (STS-B)."""
    predictions, labels = _as_arrays(predictions, labels)
    predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    centred_p, centred_l = predictions - predictions.mean(), labels - labels.mean()
    return _divide(centred_p @ centred_l, np.sqrt((centred_p @ centred_p) * (centred_l @ centred_l)))


def _ranks(values):
    """1-based ranks, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def spearman(predictions, labels):
    """Spearman rank correlation: Pearson over ranks, ties averaged."""
    predictions, labels = _as_arrays(predictions, labels)
    return pearson(_ranks(predictions), _ranks(labels))


METRICS = {"accuracy": accuracy, "f1": f1, "macro_f1": macro_f1, "mcc": mcc, "pearson": pearson,
           "spearman": spearman}
REGRESSION_METRICS = ("pearson", "spearman")


def compute_metric(name, logits, labels):
    """Scores model outputs: argmax over classes, or the single column of a regression head.

    Args:
        name (str): a key of `METRICS`.
        logits (array): (N, num_labels) scores, or (N,) / (N, 1) for regression.
        labels (array): (N,) gold labels.
    """
    if name not in METRICS:
        raise ValueError(f"metric {name!r} is not one of {', '.join(METRICS)}")
    logits = np.asarray(logits)
    regression_head = logits.ndim == 1 or logits.shape[-1] == 1
    if (name in REGRESSION_METRICS) != regression_head:
        raise ValueError(f"metric {name!r} needs {'one output' if name in REGRESSION_METRICS else 'a score per class'}"
                         f" per example, got logits of shape {logits.shape}: check num_labels and the metric")
    predictions = logits.reshape(-1) if regression_head else logits.argmax(-1)
    return METRICS[name](predictions, labels)
