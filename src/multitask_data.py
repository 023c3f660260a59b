"""The tasks of multi-task distillation: their config rows, and their batches interleaved.

One student encoder learns several sentence tasks at once, each from its own teacher (TextBrewer's
MultiTaskDistiller). `multitask.tasks` lists the tasks as rows:

    {name: sst2, train_path: ..., eval_path: ..., teacher_checkpoint: ..., teacher_model: ...,
     num_labels: 2, metric: accuracy, ratio: 1}

A GLUE task name (src/glue_to_records.TASKS) sets num_labels, metric and the label names; any other
name needs num_labels (1 = regression). teacher_model defaults to teacher.model.

Training draws each step's batch from one task. The shares follow TextBrewer's `tau`: task i gets
a share proportional to n_i ** tau, n_i its batches per epoch (tau 1: proportional to the sizes,
tau 0: equal), or to the rows' `ratio` when every row gives one. An epoch is sum(n_i) steps; within
it each task gets its share of the steps rounded by largest remainder, in an order shuffled from
(seed, epoch) alone. So the proportions are exact, not only expected, and the order of any step is
known without running the ones before it: a resumed run draws the same tasks. With the default
shares an epoch passes once over every task's training data, as a single-task epoch does.
"""
import dataclasses
import math

import numpy as np

from src.config import Config
from src.dataset import create_dataset
from src.tasks import TASK_TYPES, check_record_labels

ROW_KEYS = ("name", "train_path", "eval_path", "teacher_model", "teacher_checkpoint", "num_labels", "metric", "ratio")
REGRESSION_METRICS = ("pearson", "spearman")


@dataclasses.dataclass(frozen=True)
class TaskRow:
    """One checked row of `multitask.tasks`; labels: label names in class-id order (() for regression)."""
    name: str
    train_path: str
    eval_path: str
    teacher_model: str
    teacher_checkpoint: str
    num_labels: int
    metric: str
    labels: tuple
    ratio: float | None


def _positive(value, key, whole=False):
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise ValueError(f"{key}: expected a positive {'whole ' if whole else ''}number, got {value!r}")
    return value


def task_rows(multitask):
    """The checked rows of the `multitask` config section (a dict or Config), in order.

    Raises:
        ValueError: one line naming the row and key: not a list of mappings, an unknown key, a
            missing name or eval_path, a name used twice, a non-GLUE name without num_labels, a
            metric that is not a sentence-task metric or does not fit the label count, a ratio
            that is not positive or given on some rows only, a negative tau.
    """
    from src.glue_to_records import TASKS  # the converters own the GLUE task table
    section = multitask.to_dict() if isinstance(multitask, Config) else multitask
    rows, tau = section["tasks"], section["tau"]
    if tau < 0:
        raise ValueError(f"multitask.tau: must not be negative, got {tau!r} (1 = shares proportional to the "
                         "task sizes, 0 = equal shares)")
    if not isinstance(rows, list):
        raise ValueError(f"multitask.tasks: expected a list of {{name, train_path, eval_path, teacher_checkpoint}} "
                         f"rows, got {rows!r}")
    metrics = TASK_TYPES["sequence_classification"].metrics
    checked, seen = [], {}
    for i, row in enumerate(rows):
        key = f"multitask.tasks[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{key}: expected a mapping like {{name: sst2, train_path: ..., eval_path: ..., "
                             f"teacher_checkpoint: ...}}, got {row!r}")
        unknown = sorted(set(row) - set(ROW_KEYS))
        if unknown:
            raise ValueError(f"{key}: unknown key {unknown[0]!r}; a row takes {', '.join(ROW_KEYS)}")
        name = row.get("name")
        if not name or not isinstance(name, str):
            raise ValueError(f"{key}.name: give the task a name (a GLUE task name sets num_labels and metric)")
        if name in seen:
            raise ValueError(f"{key}.name: {name!r} is already the name of multitask.tasks[{seen[name]}]: each task "
                             "needs its own name (it names the head and the metrics)")
        seen[name] = i
        for path_key in ("eval_path", "train_path", "teacher_checkpoint", "teacher_model"):
            if not isinstance(row.get(path_key, ""), str):
                raise ValueError(f"{key}.{path_key}: expected a path, got {row[path_key]!r}")
        if not row.get("eval_path"):
            raise ValueError(f"{key}.eval_path is empty: give task {name}'s dev records (every task is evaluated)")
        spec = TASKS.get(name)
        if "num_labels" in row:
            num_labels = _positive(row["num_labels"], f"{key}.num_labels", whole=True)
        elif spec is not None:
            num_labels = spec.num_labels
        else:
            raise ValueError(f"{key}.num_labels: {name!r} is not a GLUE task ({', '.join(sorted(TASKS))}): give "
                             "num_labels (1 = regression)")
        metric = row.get("metric") or (spec.metric if spec is not None else
                                       "pearson" if num_labels == 1 else "accuracy")
        if metric not in metrics:
            raise ValueError(f"{key}.metric: {metric!r} is not one of {', '.join(metrics)}")
        if (metric in REGRESSION_METRICS) != (num_labels == 1):
            raise ValueError(f"{key}.metric: {metric} does not fit {num_labels} label(s): pearson and spearman are "
                             "for regression (num_labels 1), the others for classes")
        labels = tuple(spec.labels) if spec is not None and spec.labels and len(spec.labels) == num_labels else \
            (() if num_labels == 1 else tuple(str(c) for c in range(num_labels)))
        ratio = _positive(row["ratio"], f"{key}.ratio") if "ratio" in row else None
        checked.append(TaskRow(name, row.get("train_path", ""), row["eval_path"], row.get("teacher_model", ""),
                               row.get("teacher_checkpoint", ""), num_labels, metric, labels,
                               None if ratio is None else float(ratio)))
    with_ratio = [row.ratio is not None for row in checked]
    if any(with_ratio) and not all(with_ratio):
        raise ValueError(f"multitask.tasks[{with_ratio.index(False)}].ratio: give a ratio on every row or on none "
                         "(none: shares from the task sizes and multitask.tau)")
    return checked


def task_config(cfg, row):
    """The run's config as a single-task run of `row` sees it: task, data paths and teacher replaced,
    so the single-task pieces (datasets, Evaluator, teacher loading and cache) serve each task."""
    values = cfg.to_dict()
    values["task"] = {**values["task"], "type": "sequence_classification", "name": row.name,
                      "num_labels": row.num_labels, "metric": row.metric}
    values["data"] = {**values["data"], "train_path": row.train_path, "eval_path": row.eval_path}
    values["teacher"] = {**values["teacher"], "model": row.teacher_model or values["teacher"]["model"],
                         "checkpoint": row.teacher_checkpoint, "ensemble": []}
    return Config(values)


def task_shares(batches_per_epoch, tau=1.0, ratios=None):
    """Each task's share of the training steps, summing to 1.

    Args:
        batches_per_epoch (list[int]): n_i, each task's training batches per epoch.
        tau (float): TextBrewer's MultiTaskDistiller exponent: shares proportional to n_i ** tau.
        ratios (list[float] | None): explicit shares (any positive scale), used instead when given.
    Returns:
        np.ndarray (num_tasks,) float64.
    """
    weights = np.asarray(ratios if ratios is not None else np.power(np.asarray(batches_per_epoch, np.float64), tau),
                         np.float64)
    return weights / weights.sum()


class TaskSampler:
    """Which task each training step takes its batch from: a pure function of (seed, step).

    Args:
        shares (array (num_tasks,)): each task's share of the steps (`task_shares`).
        steps_per_epoch (int): steps of one sampler epoch.
        seed (int): the run's seed.
    Each epoch holds task i exactly `quotas[i]` times (shares x steps_per_epoch rounded by largest
    remainder, so they sum to steps_per_epoch), in an order shuffled by a generator seeded with
    (seed, epoch).
    """

    def __init__(self, shares, steps_per_epoch, seed):
        exact = np.asarray(shares, np.float64) * steps_per_epoch
        quotas = np.floor(exact).astype(np.int64)
        remainder_order = np.argsort(-(exact - quotas), kind="stable")
        quotas[remainder_order[:steps_per_epoch - int(quotas.sum())]] += 1
        self.quotas, self.steps_per_epoch, self.seed = quotas, steps_per_epoch, seed
        self._epochs = {}

    def epoch_order(self, epoch):
        """(steps_per_epoch,) int64: the task of each step of `epoch` (0-based)."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            self._epochs[epoch] = rng.permutation(np.repeat(np.arange(len(self.quotas)), self.quotas))
        return self._epochs[epoch]

    def task_at(self, step):
        """The task of global step `step` (0-based)."""
        return int(self.epoch_order(step // self.steps_per_epoch)[step % self.steps_per_epoch])


class InterleavedBatches:
    """The tasks' training batches in the sampler's order, with the dataset interface the training
    loop uses (`get_dataset_size`, `create_tuple_iterator`).

    A batch is its task's columns (input_ids, attention_mask, token_type_ids, label_ids[,
    example_id]) followed by the task's index as a Python int: passed to a graph, an int is a
    constant, so each task's training step compiles once and runs that task's head alone. Each
    task's records are read through their own dataset (shuffled every pass, sharded by rank), and a
    task whose batches run out starts its next pass; the label ids are checked against the task's
    label count as they are read.
    """

    def __init__(self, datasets, rows, sampler):
        self.datasets, self.rows, self.sampler = datasets, rows, sampler

    def get_dataset_size(self):
        return self.sampler.steps_per_epoch

    def create_tuple_iterator(self, num_epochs):
        """An iterable whose every pass is one sampler epoch of (*columns, task) tuples."""
        steps = num_epochs * self.sampler.steps_per_epoch
        draws = np.bincount([self.sampler.task_at(step) for step in range(steps)], minlength=len(self.rows))
        streams = [self._stream(task, dataset, math.ceil(count / dataset.get_dataset_size()))
                   for task, (dataset, count) in enumerate(zip(self.datasets, draws))]
        return _Epochs(streams, self.sampler, num_epochs)

    def _stream(self, task, dataset, passes):
        iterator = dataset.create_tuple_iterator(num_epochs=max(passes, 1))
        for _ in range(passes):
            for batch in iterator:  # each pass over the iterator is one pass over the task's records
                yield (*batch, task)


class _Epochs:
    def __init__(self, streams, sampler, num_epochs):
        self.streams, self.sampler, self.num_epochs, self.epoch = streams, sampler, num_epochs, 0

    def __iter__(self):
        order = self.sampler.epoch_order(self.epoch)
        self.epoch += 1
        for task in order:
            yield next(self.streams[task])


def interleaved_batches(cfg, rows, batch_size, num_shards, shard_id, with_example_ids):
    """InterleavedBatches of the rows' training records, shares from `multitask.tau` or the rows' ratios.

    Raises FileNotFoundError / ValueError for missing or mismatched records (as create_dataset), or
    a task with fewer training rows than one batch.
    """
    datasets = []
    for row in rows:
        dataset = create_dataset(row.train_path, cfg.data.format, batch_size, cfg.seq_length, with_labels=True,
                                 shuffle=cfg.data.shuffle, num_shards=num_shards, shard_id=shard_id,
                                 drop_remainder=True, schema_file=cfg.data.schema_file, seed=cfg.seed,
                                 padding=cfg.data.padding, buckets=cfg.data.buckets,
                                 with_example_ids=with_example_ids)
        check_record_labels("sequence_classification", row.train_path, cfg.data.format, row.num_labels,
                            f"the training records of task {row.name}", cfg.seq_length, cfg.data.schema_file)
        if dataset.get_dataset_size() == 0:
            raise ValueError(f"task {row.name}: {row.train_path} holds fewer rows than one batch ({batch_size} per "
                             "device): lower the batch size or give more training rows")
        datasets.append(dataset)
    sizes = [dataset.get_dataset_size() for dataset in datasets]
    ratios = [row.ratio for row in rows] if rows[0].ratio is not None else None
    shares = task_shares(sizes, cfg.multitask.tau, ratios)
    return InterleavedBatches(datasets, rows, TaskSampler(shares, sum(sizes), cfg.seed))
