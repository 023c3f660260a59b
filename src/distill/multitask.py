"""Multi-task distillation (TextBrewer's MultiTaskDistiller): one student encoder, one head per task.

Each task has its own teacher, records and metric (src/multitask_data.py reads the rows). A step
takes one task's batch; its loss is that task's single-task td2 loss (soft targets of that task's
teacher at the temperature, plus the gold-label term), through that task's head, in a graph of its
own: the task index reaches the graph as a constant, so N tasks compile N step graphs, each running
the shared encoder and one head (`MultiTaskDistillationLoss`).

The optimizer holds every head. A head whose task is not in the step gets a zero gradient, so
Adam's moments still move it (and weight decay applies), as in a PyTorch loop whose zero_grad()
leaves zero tensors rather than None.

Evaluation runs every task's dev set through its head with the single-task Evaluator and keeps the
checkpoint with the best mean of the tasks' metrics.
"""
import json

import numpy as np
import mindspore as ms
from mindspore import nn

from src.callbacks import SHORT_METRIC, Evaluator
from src.checkpoint import (ARCHITECTURE, LABEL_NAMES, MULTITASK_HEADS_PREFIX, NUM_LABELS, TASK, TASKS,
                            assign_parameters, named_parameters, save_checkpoint)
from src.dropout import StatelessDropout
from src.tinybert_model import BertModel, _dense


class ClassificationHead(nn.Cell):
    """Dropout and a linear layer over the pooled output: the head of BertForSequenceClassification,
    with its parameter names (`dense_1`), so one head with the encoder is a single-task checkpoint."""

    def __init__(self, config, num_labels):
        super().__init__()
        self.dropout = StatelessDropout(p=config.hidden_dropout_prob)
        self.dense_1 = _dense(config, config.hidden_size, num_labels)

    def construct(self, pooled_output):
        return self.dense_1(self.dropout(pooled_output)).astype(ms.float32)


class BertForMultiTaskClassification(nn.Cell):
    """One BertModel and a classification (or regression: 1 output) head per task.

    Args:
        config (BertConfig): the encoder.
        num_labels (list[int]): each task's outputs, in task order.
    Inputs as BertModel. Returns a tuple of every head's logits, (B, num_labels[i]) float32 each, in
    task order (what export writes as one output per head). Parameters: `bert.*`, then
    `heads.<i>.dense_1.*`.
    """

    def __init__(self, config, num_labels):
        super().__init__()
        self.bert = BertModel(config)
        self.heads = nn.CellList([ClassificationHead(config, n) for n in num_labels])
        self.num_labels = list(num_labels)

    def task_model(self, index):
        """Task `index` as a sentence classifier sharing this model's parameters (`TaskModel`)."""
        return TaskModel(self.bert, self.heads[index])

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, pooled_output, _, _ = self.bert(input_ids, attention_mask, token_type_ids)
        return tuple(head(pooled_output) for head in self.heads)


class TaskModel(nn.Cell):
    """One task's view of the multi-task student: the shared encoder and that task's head, with the
    interface of a task model (`bert`, `head`, `task`), so DistillationLoss, the Evaluator and
    LogitsOnly take it as they take BertForSequenceClassification."""

    task = "sequence_classification"

    def __init__(self, bert, head):
        super().__init__(auto_prefix=False)
        self.bert, self.classifier = bert, head

    def head(self, sequence_output, pooled_output):
        """Logits (B, num_labels) of this task."""
        return self.classifier(pooled_output)

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, pooled_output, hidden_states, attention_scores = self.bert(
            input_ids, attention_mask, token_type_ids)
        return self.head(sequence_output, pooled_output), hidden_states, attention_scores


class MultiTaskDistillationLoss(nn.Cell):
    """The loss of a batch of one task: that task's DistillationLoss (td2's prediction and label terms).

    Args:
        losses (list[DistillationLoss]): one per task, each built on that task's `TaskModel`.
    Inputs: the DistillationLoss inputs, then the task index last (a Python int, a graph constant).
    Returns what DistillationLoss returns: (total loss, components).
    """

    def __init__(self, losses):
        super().__init__()
        self.losses = nn.CellList(losses)

    def construct(self, teacher_outputs, schedule, input_ids, attention_mask, token_type_ids, *columns):
        task = columns[-1]
        return self.losses[task](teacher_outputs, schedule, input_ids, attention_mask, token_type_ids, *columns[:-1])


class MultiTaskTeacher:
    """Teacher source of a multi-task batch: the source (live teacher or cache) of the batch's task,
    given the batch without its trailing task index."""

    def __init__(self, sources):
        self.sources = list(sources)

    def __call__(self, *batch):
        return self.sources[batch[-1]](*batch[:-1])


def multitask_metadata(rows):
    """The `tasks` metadata entry: [{name, num_labels, label_names, metric}] in head order (JSON)."""
    return {TASKS: json.dumps([{"name": row.name, "num_labels": row.num_labels, "label_names": list(row.labels),
                                "metric": row.metric} for row in rows])}


class MultiTaskEvaluator:
    """Every task's dev set through its head (the single-task Evaluator each), the mean of the tasks'
    metrics, and the best checkpoint by that mean.

    Args:
        task_configs (list[Config]): each task's config (`multitask_data.task_config`).
        names (list[str]): the task names.
        phase (str): phase name for metrics.jsonl.
        models (list[TaskModel]): each task's view of the student.
        best_path (Path): where the best checkpoint goes.
    Results are flat: {"mean": m, "<task>/<metric>": value, ...}, the mean first (what reports
    read as the run's metric).
    """

    metric = "mean"

    def __init__(self, task_configs, names, phase, models, best_path, logger, metrics):
        self.evaluators = [Evaluator(task_cfg, phase, model, None, logger, metrics)
                           for task_cfg, model in zip(task_configs, models)]
        self.names, self.phase, self.best_path, self.best = list(names), phase, best_path, None
        self.logger, self.metrics = logger, metrics

    def evaluate(self):
        """(results, {task: examples}): the mean of each task's chosen metric, then every task's metrics."""
        per_task, counts = {}, {}
        for name, evaluator in zip(self.names, self.evaluators):
            per_task[name], counts[name] = evaluator.evaluate()
        mean = float(np.mean([per_task[name][evaluator.metric] for name, evaluator in zip(self.names, self.evaluators)]))
        results = {"mean": mean}
        for name, values in per_task.items():
            results.update({f"{name}/{metric}": float(value) for metric, value in values.items()})
        return results, counts

    def log_line(self, results, counts):
        parts = [f"mean = {results['mean']:.6f}"]
        for name, count in counts.items():
            values = ", ".join(f"{SHORT_METRIC.get(key.split('/', 1)[1], key.split('/', 1)[1])} = {value:.6f}"
                               for key, value in results.items() if key.startswith(name + "/"))
            parts.append(f"{name}: {values} on {count} examples")
        return "; ".join(parts)

    def _chosen(self, results):
        return ", ".join(f"{name} {SHORT_METRIC.get(e.metric, e.metric)} {results[f'{name}/{e.metric}']:.6f}"
                         for name, e in zip(self.names, self.evaluators))

    def evaluate_and_keep_best(self, weights, step, metadata, eligible=True):
        """Evaluate every task; keep the checkpoint if its mean is the best so far."""
        results, counts = self.evaluate()
        self.logger.info("eval: step %d, %s", step, self.log_line(results, counts))
        self.metrics.write({"phase": self.phase, "step": step, "eval": results, "examples": counts})
        value = results["mean"]
        if eligible and (self.best is None or value > self.best):
            self.best = value
            save_checkpoint(self.best_path, weights, {**metadata, "step": step, "mean": value})
            self.logger.info("The best mean is %.6f (%s) (step %d), saved to %s", value, self._chosen(results), step,
                             self.best_path)
        return value


def single_head(tensors, metadata, head):
    """One head of a multi-task checkpoint as a sentence classifier's checkpoint: the encoder, task
    `head`'s classifier as `dense_1.*`, and that task's metadata (labels, name).

    tensors, metadata: a checkpoint's (`checkpoint.split_metadata`); head: a task name.
    Returns (tensors, metadata). Raises ValueError when the checkpoint is not a multi-task one or has
    no task of that name (the message lists its tasks).
    """
    if TASKS not in metadata:
        raise ValueError(f"export.head: {head!r} names a task head, but this checkpoint is not a multi-task "
                         "student: leave export.head empty")
    tasks = json.loads(metadata[TASKS])
    names = [task["name"] for task in tasks]
    if head not in names:
        raise ValueError(f"export.head: {head!r} is not a task of this checkpoint: one of {', '.join(names)}, or "
                         "empty for every head")
    index = names.index(head)
    prefix = f"{MULTITASK_HEADS_PREFIX}{index}."
    kept = {name: value for name, value in tensors.items() if not name.startswith(MULTITASK_HEADS_PREFIX)}
    kept.update({name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)})
    described = {key: value for key, value in metadata.items() if key != TASKS}
    described.update({ARCHITECTURE: "BertForSequenceClassification", TASK: head,
                      NUM_LABELS: tasks[index]["num_labels"], LABEL_NAMES: json.dumps(tasks[index]["label_names"])})
    return kept, described


def head_names(metadata):
    """The task names of a multi-task checkpoint's heads, in order; () for any other checkpoint."""
    return tuple(task["name"] for task in json.loads(metadata[TASKS])) if TASKS in metadata else ()


def all_heads(config, tensors, source):
    """A multi-task student built from checkpoint tensors, for export: every head's logits as outputs."""
    widths = []
    while f"{MULTITASK_HEADS_PREFIX}{len(widths)}.dense_1.weight" in tensors:
        widths.append(tensors[f"{MULTITASK_HEADS_PREFIX}{len(widths)}.dense_1.weight"].shape[0])
    model = BertForMultiTaskClassification(config, widths)
    assign_parameters(named_parameters(model), tensors, f"student checkpoint {source}")
    model.set_train(False)
    return model
