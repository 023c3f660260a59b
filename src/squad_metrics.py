"""SQuAD v1.1 scoring: the answer span chosen from start/end logits over all windows
(`windows.best_answer_spans`), then exact match and F1 as the official evaluation script defines
them (Rajpurkar et al. 2016).

Scores are fractions in [0, 1], as the project's other metrics; the official script prints them
multiplied by 100.
"""
import collections
import json
import re
import string

import numpy as np

from src.windows import best_answer_spans

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text):
    """The official normalisation: lower-case, drop punctuation, drop the articles a/an/the, and
    collapse whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction, references):
    """1.0 if the normalised prediction equals one of the normalised references, else 0.0."""
    return float(any(normalize_answer(prediction) == normalize_answer(ref) for ref in references))


def _token_f1(prediction, reference):
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1(prediction, references):
    """Bag-of-tokens F1 between the normalised prediction and the best-matching reference (0.0 when
    they share no token, an empty prediction included, as in the v1.1 script)."""
    return max(_token_f1(prediction, ref) for ref in references)


def squad_scores(predictions, examples):
    """Mean exact match and F1 over every example; an example without a prediction scores 0.

    Args:
        predictions (dict[str, str]): question id -> predicted answer text.
        examples (list[dict]): each with `id` and `answers` (one reference text or several).
    Returns:
        dict: exact_match and f1 (fractions in [0, 1]), count (examples scored).
    Raises:
        ValueError: no examples, or an example without reference answers.
    """
    if not examples:
        raise ValueError("no examples to score")
    exact, overlap = 0.0, 0.0
    for example in examples:
        if not example["answers"]:
            raise ValueError(f"question {example['id']} has no reference answer")
        if example["id"] in predictions:
            exact += exact_match(predictions[example["id"]], example["answers"])
            overlap += f1(predictions[example["id"]], example["answers"])
    return {"exact_match": exact / len(examples), "f1": overlap / len(examples), "count": len(examples)}


def predict_answers(start_logits, end_logits, example_ids, examples, example_index, token_offsets,
                    n_best_size=20, max_answer_length=30):
    """The answer text of every question: the best span over all of its windows.

    Args:
        start_logits, end_logits (array (N, T)): the model's logits for N records, any order.
        example_ids (array (N,) int): the records' `example_id` column (rows of the features file).
        examples (list[dict]): `id` and `context` of each question (STEM.examples.json).
        example_index (array (F,) int): the question of each record (features file).
        token_offsets (array (F, T, 2) int): character offsets of each record's tokens in its
            context, -1 outside it (features file).
        n_best_size (int): see `windows.best_span`. Default: 20.
        max_answer_length (int): see `windows.best_span`. Default: 30.
    Returns:
        dict[str, str]: question id -> answer text, "" where no window has a valid span.
    """
    example_ids = np.asarray(example_ids).reshape(-1)
    best = best_answer_spans(start_logits, end_logits, token_offsets[example_ids], example_index[example_ids],
                             n_best_size, max_answer_length)
    return {example["id"]: example["context"][best[i][1]:best[i][2]] if i in best else ""
            for i, example in enumerate(examples)}


def squad_evaluate(start_logits, end_logits, example_ids, features_file, examples_file, n_best_size=20,
                   max_answer_length=30):
    """Exact match and F1 of QA outputs on records from `squad_to_records`.

    Args:
        start_logits, end_logits (array (N, T)): the model's logits for N records, any order;
            T may be under the records' seq_length (batches cut to their longest example and
            padded to a common T), the positions left out being padding.
        example_ids (array (N,) int): the records' `example_id` column.
        features_file (str | Path): the STEM.features.npz written beside the records.
        examples_file (str | Path): the STEM.examples.json written beside them.
        n_best_size (int): see `windows.best_span`. Default: 20.
        max_answer_length (int): see `windows.best_span`. Default: 30.
    Returns:
        dict: exact_match, f1 (fractions), count; and predictions {question id: answer text}.
    Raises:
        ValueError: shapes that disagree, or records of the file missing from the predictions.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    example_ids = np.asarray(example_ids).reshape(-1)
    with np.load(features_file) as features:
        example_index, token_offsets = features["example_index"], features["token_offsets"]
    with open(examples_file, encoding="utf-8") as f:
        examples = json.load(f)
    if start_logits.shape != end_logits.shape or start_logits.ndim != 2 or len(example_ids) != len(start_logits) \
            or start_logits.shape[1] > token_offsets.shape[1]:
        raise ValueError(f"need start and end logits (N, T <= {token_offsets.shape[1]}) and example_ids (N,), got "
                         f"{start_logits.shape}, {end_logits.shape} and {example_ids.shape}")
    missing = np.setdiff1d(np.arange(len(example_index)), example_ids)
    if missing.size:
        raise ValueError(f"predictions cover {len(example_index) - missing.size} of the {len(example_index)} records "
                         f"of {features_file}: evaluate every record (keep the last partial batch)")
    predictions = predict_answers(start_logits, end_logits, example_ids, examples, example_index,
                                  token_offsets[:, :start_logits.shape[1]], n_best_size, max_answer_length)
    return {**squad_scores(predictions, examples), "predictions": predictions}
