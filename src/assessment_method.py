"""GLUE metrics as plain numpy functions of (predictions, labels), and entity-level NER scores.

Evaluation gathers every prediction of the dev set first and scores once, so F1, MCC and the
correlations are exact over the whole set rather than averaged over batches. Where a metric is
undefined (no positive example, a constant prediction) it is 0.0, the score of a model that
has learnt nothing, so "keep the best" comparisons never meet a NaN.
"""
import numpy as np

from src.conll_to_records import IGNORE_INDEX
from src.windows import words_from_windows


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


def _chunk_boundaries(previous, tag):
    """(does a chunk end before `tag`, does one start at `tag`), conlleval's rules for IOB tags.

    A chunk starts at B-, and at an I- that follows O or a tag of another type (conlleval and
    seqeval's default mode read such an I- as the start of a new entity, as IOB1 writes it).
    """
    prev_prefix, prev_type = (previous[0], previous[2:]) if previous != "O" else ("O", "")
    prefix, entity_type = (tag[0], tag[2:]) if tag != "O" else ("O", "")
    ends = prev_prefix != "O" and (prefix in ("O", "B") or entity_type != prev_type)
    starts = prefix == "B" or (prefix == "I" and (prev_prefix == "O" or entity_type != prev_type))
    return ends, starts


def entity_spans(tags):
    """The entities of one sentence's IOB tags as (type, first, last) word indices, conlleval's way.

    Args:
        tags (list[str]): `O`, `B-TYPE` or `I-TYPE` per word (IOB2; IOB1 reads the same).
    Returns:
        list[tuple[str, int, int]]: in order; `last` is inclusive.
    Raises:
        ValueError: a tag that is none of O, B-TYPE, I-TYPE.
    """
    spans, start, previous = [], None, "O"
    for index, tag in enumerate(list(tags) + ["O"]):
        if tag != "O" and (len(tag) < 3 or tag[0] not in "BI" or tag[1] != "-"):
            raise ValueError(f"tag {tag!r} at word {index} is not an IOB tag (O, B-TYPE or I-TYPE)")
        ends, starts = _chunk_boundaries(previous, tag)
        if ends:
            spans.append((previous[2:], start, index - 1))
        if starts:
            start = index
        previous = tag
    return spans


def entity_scores(gold_sentences, predicted_sentences):
    """Entity-level precision, recall and F1 over a corpus, as conlleval and seqeval compute them.

    An entity counts as found only when its type and both ends match a gold entity exactly
    (Tjong Kim Sang & De Meulder 2003, CoNLL-2003 shared task); the scores are micro-averaged over
    every entity of every sentence, and 0.0 where undefined.

    Args:
        gold_sentences (list[list[str]]): gold IOB tags, one list per sentence.
        predicted_sentences (list[list[str]]): predicted tags, the same lengths.
    Returns:
        dict: precision, recall, f1 (floats in [0, 1]), and per_type {type: {precision, recall,
        f1, support}}, support being the number of gold entities.
    Raises:
        ValueError: different sentence counts or lengths, or a tag that is not IOB.
    """
    if len(gold_sentences) != len(predicted_sentences):
        raise ValueError(f"{len(gold_sentences)} gold sentences but {len(predicted_sentences)} predicted ones")
    counts = {}  # type -> [correct, predicted, gold]
    for index, (gold, predicted) in enumerate(zip(gold_sentences, predicted_sentences)):
        if len(gold) != len(predicted):
            raise ValueError(f"sentence {index} has {len(gold)} gold tags but {len(predicted)} predicted ones")
        gold_spans, predicted_spans = set(entity_spans(gold)), set(entity_spans(predicted))
        for spans, column in ((gold_spans & predicted_spans, 0), (predicted_spans, 1), (gold_spans, 2)):
            for entity_type, _, _ in spans:
                counts.setdefault(entity_type, [0, 0, 0])[column] += 1

    def scores(correct, predicted, gold):
        precision, recall = _divide(correct, predicted), _divide(correct, gold)
        return {"precision": precision, "recall": recall,
                "f1": _divide(2 * precision * recall, precision + recall)}

    total = np.sum(list(counts.values()), axis=0) if counts else np.zeros(3, int)
    result = scores(*total)
    result["per_type"] = {entity_type: {**scores(*c), "support": c[2]} for entity_type, c in sorted(counts.items())}
    return result


def ner_scores(logits, label_ids, example_ids, features_file):
    """Entity-level scores of token-classification outputs on records from `conll_to_records`.

    Each record's predictions are read at its words' first pieces (where `label_ids` is not
    IGNORE_INDEX), put back in their sentence, and the whole sentence is scored against the gold
    tags of the source file: words a truncating conversion dropped count as predicted `O`.

    Args:
        logits (array (N, T, num_labels)): the model's scores for N records, any order.
        label_ids (array (N, T) int): the records' `label_ids` column.
        example_ids (array (N,) int): the records' `example_id` column.
        features_file (str | Path): the STEM.features.npz written beside the records.
    Returns:
        dict: as `entity_scores`.
    Raises:
        ValueError: shapes that disagree, or records of the file missing from the predictions
            (evaluate every record: no dropped last batch).
    """
    logits, label_ids = np.asarray(logits), np.asarray(label_ids)
    example_ids = np.asarray(example_ids).reshape(-1)
    with np.load(features_file) as features:
        labels, gold = features["labels"].tolist(), features["gold_label_ids"]
        starts, sentence_index, first_word = features["sentence_starts"], features["sentence_index"], \
            features["first_word"]
    if logits.ndim != 3 or logits.shape[:2] != label_ids.shape or len(example_ids) != len(logits) \
            or logits.shape[-1] != len(labels):
        raise ValueError(f"need logits (N, T, {len(labels)}), label_ids (N, T) and example_ids (N,), got "
                         f"{logits.shape}, {label_ids.shape} and {example_ids.shape}")
    missing = np.setdiff1d(np.arange(len(first_word)), example_ids)
    if missing.size:
        raise ValueError(f"predictions cover {len(first_word) - missing.size} of the {len(first_word)} records of "
                         f"{features_file}: evaluate every record (keep the last partial batch)")
    predicted = words_from_windows(logits.argmax(-1), label_ids != IGNORE_INDEX, example_ids, sentence_index,
                                   first_word, starts, labels.index("O") if "O" in labels else -1)
    names = np.array(labels + ["O"])  # index -1 (no O in the label list) reads as O
    gold_tags, predicted_tags = names[gold].tolist(), names[predicted].tolist()
    return entity_scores([gold_tags[a:b] for a, b in zip(starts[:-1], starts[1:])],
                         [predicted_tags[a:b] for a, b in zip(starts[:-1], starts[1:])])
