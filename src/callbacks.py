"""What the training loop hands its results to: logging, step checkpoints, evaluation.

Each has one job and is given its paths:
  TrainingLog       the grep-able `epoch: E, step: S, outputs are (...)` line and a metrics.jsonl record
  StepCheckpoints   step checkpoints with the optimizer and loss-scale state, rotated
  Evaluator         the whole dev set, metrics, `The best acc is ...`, the best checkpoint kept
`metrics.jsonl` (in OUTPUT_DIR) gets one JSON record per logged step and per evaluation, with the
phase, so plots and reports read one file for a whole run.
"""
import json
import time
from pathlib import Path

import numpy as np

from src.checkpoint import STATE_PREFIX, STEP_CHECKPOINT, rotate_checkpoints, save_checkpoint
from src.dataset import create_dataset
from src.tasks import TASK_TYPES, check_record_labels, evaluate, example_count
from src.tinybert_model import LogitsOnly

SHORT_METRIC = {"accuracy": "acc"}


class MetricsFile:
    """Appends JSON records to OUTPUT_DIR/metrics.jsonl (rank 0 only; others pass path None)."""

    def __init__(self, path):
        self.path = Path(path) if path else None

    def write(self, record):
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


class TrainingLog:
    """Logs every `log_steps` steps (and the last): loss, overflow, loss scale, lr, ms/step, and
    each loss component and schedule value in metrics.jsonl. ms/step divides the time since the
    previous line by the steps actually run since then."""

    def __init__(self, phase, component_names, log_steps, total_steps, logger, metrics):
        self.phase, self.component_names = phase, component_names
        self.log_steps, self.total_steps = log_steps, total_steps
        self.logger, self.metrics = logger, metrics
        self.tick, self.last_step = time.time(), None

    def start(self, step):
        self.tick, self.last_step = time.time(), step

    def step_done(self, epoch, step, loss, components, overflow, scale, lr, schedule, extra=None):
        if step % self.log_steps and step != self.total_steps:
            return
        ms_per_step = (time.time() - self.tick) * 1000 / max(step - self.last_step, 1)
        self.tick, self.last_step = time.time(), step
        self.logger.info("epoch: %d, step: %d, outputs are (%.6f, %s, %.1f), lr %.3g, %.0f ms/step",
                         epoch, step, loss, overflow, scale, lr, ms_per_step)
        record = {"phase": self.phase, "step": step, "epoch": epoch, "loss": loss, "overflow": overflow,
                  "loss_scale": scale, "lr": lr, "ms_per_step": round(ms_per_step, 1),
                  "kd_weight": schedule[0], "hard_label_weight": schedule[1], "temperature": schedule[2],
                  "regu_lambda": schedule[3]}
        record.update({name: float(value) for name, value in zip(self.component_names, components)})
        record.update(extra or {})
        self.metrics.write(record)


class StepCheckpoints:
    """Every `save_steps` steps: weights, optimizer and loss-scale state, the newest `keep` kept."""

    def __init__(self, directory, model_name, save_steps, keep):
        self.directory, self.model_name = Path(directory), model_name
        self.save_steps, self.keep = save_steps, keep

    def step_done(self, step, weights, train_state, metadata):
        if step % self.save_steps:
            return
        path = self.directory / STEP_CHECKPOINT.format(model=self.model_name, step=step)
        save_checkpoint(path, {**weights, **train_state}, {**metadata, "step": step})
        rotate_checkpoints(self.directory, self.model_name, self.keep)


def train_state(train_cell):
    """Optimizer moments, step counter and loss scale: what a resumed run needs besides weights."""
    weights = {id(p) for p in train_cell.weights}
    state = {STATE_PREFIX + p.name: p for p in train_cell.optimizer.get_parameters() if id(p) not in weights}
    state[STATE_PREFIX + "loss_scale"] = train_cell.loss_scale
    return state


class Evaluator:
    """Runs the task model over every dev example and keeps the best checkpoint. The examples are
    read shortest first (no metric depends on their order), so each batch is padded to little.

    Raises ValueError when a dev label is outside the task's labels, and FloatingPointError when
    the logits are not finite (a diverged model is never scored, nor saved as the best).
    """

    def __init__(self, cfg, phase, model, best_path, logger, metrics):
        self.network = LogitsOnly(model)
        self.task_type = cfg.task.type
        self.label_columns = TASK_TYPES[self.task_type].label_columns
        self.with_ids = self.task_type != "sequence_classification"
        self.dataset = create_dataset(cfg.data.eval_path, cfg.data.format, cfg.eval.batch_size, cfg.seq_length,
                                      with_labels=True, shuffle=False, drop_remainder=False,
                                      schema_file=cfg.data.schema_file, seed=cfg.seed, padding=cfg.data.padding,
                                      buckets=cfg.data.buckets, with_example_ids=self.with_ids,
                                      label_columns=self.label_columns, by_length=True)
        check_record_labels(self.task_type, cfg.data.eval_path, cfg.data.format, cfg.task.num_labels,
                            "the dev records", cfg.seq_length, cfg.data.schema_file)
        self.phase, self.metric = phase, cfg.task.metric
        self.eval_path = cfg.data.eval_path
        self.best_path, self.best = best_path, None
        self.logger, self.metrics = logger, metrics

    def evaluate(self):
        """({metric: value} over every dev example, the chosen metric first then its companions, the number
        of examples: questions or sentences, not their windows)."""
        self.network.set_train(False)
        logits, labels, example_ids = [], [], []
        for batch in self.dataset.create_tuple_iterator(num_epochs=1):
            logits.append(self.network(*batch[:3]).asnumpy())
            columns = [c.asnumpy() for c in batch[3:3 + len(self.label_columns)]]
            labels.append(columns[0] if len(columns) == 1 else np.stack(columns, axis=1))
            if self.with_ids:
                example_ids.append(batch[-1].asnumpy())
        if not all(np.isfinite(x).all() for x in logits):
            raise FloatingPointError("the model's dev-set logits are NaN or infinite: training diverged; "
                                     "lower the learning rate")
        results = evaluate(self.task_type, self.metric, logits, labels, example_ids, self.eval_path)
        return results, example_count(self.task_type, labels, self.eval_path)

    @staticmethod
    def log_line(results, count):
        return ", ".join(f"{SHORT_METRIC.get(k, k)} = {v:.6f}" for k, v in results.items()) + f" on {count} examples"

    def evaluate_and_keep_best(self, weights, step, metadata, eligible=True):
        """Evaluate; keep the checkpoint if it is the best so far and `eligible` (pruning: at its
        final threshold)."""
        results, count = self.evaluate()
        value, name = results[self.metric], SHORT_METRIC.get(self.metric, self.metric)
        self.logger.info("eval: step %d, %s", step, self.log_line(results, count))
        self.metrics.write({"phase": self.phase, "step": step, "eval": results, "examples": count})
        if eligible and (self.best is None or value > self.best):
            self.best = value
            save_checkpoint(self.best_path, weights, {**metadata, "step": step, self.metric: float(value)})
            also = f" (exact match {results['exact_match']:.6f})" if "exact_match" in results and \
                self.metric != "exact_match" else ""
            self.logger.info("The best %s is %.6f%s (step %d), saved to %s", name, value, also, step, self.best_path)
        return value


def parameter_table(named_models):
    """Lines of a table: per top-level module of each model, trainable and total parameters
    (as TextBrewer's display_parameters)."""
    lines = [f"{'module':<48}{'trainable':>14}{'total':>14}"]
    for model_name, model in named_models:
        groups = {}
        for name, param in model.parameters_and_names():
            top = f"{model_name}.{name.split('.')[0]}" if "." in name else model_name
            size = int(np.prod(param.shape))
            trainable, total = groups.get(top, (0, 0))
            groups[top] = (trainable + size * bool(param.requires_grad), total + size)
        for top, (trainable, total) in groups.items():
            lines.append(f"{top:<48}{trainable:>14,}{total:>14,}")
        if len(groups) > 1:
            lines.append(f"{model_name + ' (all)':<48}{sum(t for t, _ in groups.values()):>14,}"
                         f"{sum(t for _, t in groups.values()):>14,}")
    return lines
