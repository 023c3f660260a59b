"""The task table: for each task shape, its model, label columns, label check and evaluation.

  sequence_classification  GLUE-style sentences and pairs: one label (or a regression value) per
                           example; accuracy, F1, MCC, Pearson, Spearman (src/assessment_method.py)
  token_classification     NER: a label per word, on its first word-piece (-100 elsewhere);
                           entity-level precision / recall / F1 as conlleval computes them
  question_answering       extractive QA (SQuAD): start and end positions of the answer in a
                           window; exact match and F1 over the best span of all windows
Token classification and QA records come from src/conll_to_records.py and src/squad_to_records.py,
which write the mapping back to the source text beside the records; evaluation reads it from there.
"""
import dataclasses
from pathlib import Path

import numpy as np

from src.assessment_method import compute_metric, ner_scores
from src.conll_to_records import features_path, labels_path, read_labels_file
from src.dataset import label_values
from src.squad_metrics import squad_evaluate
from src.squad_to_records import END_COLUMN, START_COLUMN, examples_path
from src.tinybert_model import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class TaskType:
    """model: the model class; label_columns: what its records hold as labels; metrics: the metric
    names its evaluation reports (the first picks the best checkpoint by default)."""
    name: str
    model: type
    label_columns: tuple
    metrics: tuple


TASK_TYPES = {task.name: task for task in (
    TaskType("sequence_classification", BertForSequenceClassification, ("label_ids",),
             ("accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman")),
    TaskType("token_classification", BertForTokenClassification, ("label_ids",), ("f1", "precision", "recall")),
    TaskType("question_answering", BertForQuestionAnswering, (START_COLUMN, END_COLUMN), ("f1", "exact_match")),
)}


def build_task_model(task_type, config, num_labels):
    """The task model of `task_type` (QA has its two span outputs whatever num_labels says)."""
    model = TASK_TYPES[task_type].model
    return model(config) if task_type == "question_answering" else model(config, num_labels)


def label_names_from_records(task_type, train_path):
    """NER label names written beside the records by conll_to_records, or None."""
    if task_type != "token_classification" or not Path(train_path).is_file():
        return None
    path = labels_path(train_path)
    return read_labels_file(path) if path.is_file() else None


def check_labels(task_type, labels, num_labels, where, seq_length=None):
    """Raises ValueError naming `where` when a label is outside the task's labels.

    labels: (B,) class ids or regression values; (B, T) token labels, -100 ignored; for QA
    (B, 2) start and end positions in 0..seq_length-1.
    """
    if task_type == "question_answering":
        positions = np.asarray(labels).reshape(-1)
        bad = positions[(positions < 0) | (positions >= seq_length)]
        if bad.size:
            raise ValueError(f"{where} hold answer position {int(bad[0])} outside 0..{seq_length - 1}: "
                             "convert the data again with this seq_length")
        return
    if num_labels == 1:
        return
    labels = np.asarray(labels)
    bad = labels[(labels != IGNORE) & ((labels < 0) | (labels >= num_labels))]
    if bad.size:
        raise ValueError(f"{where} hold label {int(bad[0])} but the task has {num_labels} labels (0.."
                         f"{num_labels - 1}): set task.num_labels / task.name to match, or convert the data again")


def check_record_labels(task_type, path, data_format, num_labels, where, seq_length, schema_file=""):
    """check_labels over every record of `path` at once, before a run writes anything: a bad label
    anywhere in the data fails the run at its start, not after hours (and not after its config.yaml
    and checkpoints of the phase were rewritten). Raises ValueError as check_labels does."""
    values = label_values(path, data_format, TASK_TYPES[task_type].label_columns, schema_file)
    check_labels(task_type, values, num_labels, where, seq_length)


def _pad_to(arrays, axis, value):
    """Concatenate batches cut to different lengths along `axis` (dynamic padding) by padding them."""
    width = max(a.shape[axis] for a in arrays)
    padded = []
    for a in arrays:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, width - a.shape[axis])
        padded.append(np.pad(a, pad, constant_values=value))
    return np.concatenate(padded)


def example_count(task_type, labels, eval_path):
    """Examples a dev pass over every record of `eval_path` scored: sentence classification, its records
    (label rows: `labels` is a list of per-batch arrays); NER and QA, whose records are windows of longer
    examples (a sentence, a question over several windows), the sentences or questions they come from,
    read from the mapping file beside the records (`features_path`)."""
    if task_type == "sequence_classification":
        return sum(len(batch) for batch in labels)
    owner = "sentence_index" if task_type == "token_classification" else "example_index"
    with np.load(features_path(eval_path)) as features:
        return int(np.unique(features[owner]).size)


def evaluate(task_type, metric, logits, labels, example_ids, eval_path):
    """{metric: value, companions...} of a whole dev pass, the chosen metric first.

    logits: list of per-batch head outputs ((B, C), (B, T, C) or (B, 2, T)); labels: list of
    per-batch label arrays (for QA, of (start, end) pairs); example_ids: list of per-batch ids
    (token classification and QA); eval_path: the dev records file (their mapping files beside it).
    """
    if task_type == "sequence_classification":
        logits, labels = np.concatenate(logits), np.concatenate(labels)
        if logits.shape[-1] == 1:
            companions = ("pearson", "spearman")
        else:
            companions = ("accuracy", "f1", "mcc") if logits.shape[-1] == 2 else ("accuracy", "macro_f1")
        names = [metric] + [m for m in companions if m != metric]
        return {name: compute_metric(name, logits, labels) for name in names}
    example_ids = np.concatenate(example_ids)
    if task_type == "token_classification":
        scores = ner_scores(_pad_to(logits, 1, 0.0), _pad_to(labels, 1, IGNORE), example_ids, features_path(eval_path))
        names = ("f1", "precision", "recall")
    else:
        spans = _pad_to(logits, 2, -10000.0)
        scores = squad_evaluate(spans[:, 0], spans[:, 1], example_ids, features_path(eval_path),
                                examples_path(eval_path))
        names = ("f1", "exact_match")
    return {name: float(scores[name]) for name in [metric] + [n for n in names if n != metric]}
