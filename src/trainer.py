"""One training loop for every phase: general distillation, task phases 1 and 2, teacher fine-tuning.

The order of a run is visible in `run_phase`: context, models, data, optimizer, resume, then the
loop (step, log, checkpoint, evaluate), then the final checkpoint.
"""
import os
import time
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore.communication import get_group_size, get_rank, init
from mindspore.ops.communication import all_reduce

from src.assessment_method import compute_metric
from src.checkpoint import (STATE_PREFIX, assign_parameters, load_checkpoint, named_parameters,
                            rotate_checkpoints, save_checkpoint, split_metadata)
from src.config import bert_config, save_config
from src.dataset import create_dataset
from src.logger import get_logger
from src.optimizer import build_optimizer
from src.student_init import copy_teacher_layers
from src.tinybert_for_gd_td import (BertTrainWithLossScaleCell, IntermediateDistillationLoss,
                                    PredictionDistillationLoss, SupervisedLoss, freeze, make_fit_dense,
                                    make_scale_update_cell)
from src.tinybert_model import BertForSequenceClassification, BertModel, LogitsOnly

# File names inside output_dir/PHASE; the teacher phase writes teacher_*.ckpt instead of student_*.
STEP_CHECKPOINT = "{model}_step_{step}.ckpt"
FINAL_CHECKPOINT = "{model}_final.ckpt"
BEST_CHECKPOINT = "{model}_best.ckpt"
SHORT_METRIC = {"accuracy": "acc"}
_COMMUNICATION = {"ready": False}


def init_context(cfg):
    """Device, mode, seeds and, for distributed runs, the communication group. Returns (rank, size)."""
    ms.set_context(mode=ms.GRAPH_MODE, device_target=cfg.device_target)
    if not cfg.distribute or not os.getenv("MS_ROLE"):
        # msrun (which sets MS_ROLE) picks each worker's device; a rank-table launch passes --device_id
        ms.set_device(cfg.device_target, cfg.device_id)
    rank, group_size = 0, 1
    if cfg.distribute:
        if not _COMMUNICATION["ready"]:  # td runs two phases in one process; init() only once
            init()
            _COMMUNICATION["ready"] = True
        rank, group_size = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=group_size)
    ms.set_seed(cfg.seed)  # the data order's seed goes to create_dataset
    return rank, group_size


class Models:
    """The networks of one phase, and how to save what it trains.

    student: what is trained (BertModel in GD, else BertForSequenceClassification);
    fit_dense: projection for intermediate losses, or None; loss: the Cell whose output is minimised
    (it holds the frozen teacher, if any); prefix: checkpoint name prefix of the student's params;
    name: what the checkpoint files are called after ("teacher" when fine-tuning the teacher).
    """

    def __init__(self, student, fit_dense, loss, prefix="", name="student"):
        self.student, self.fit_dense, self.loss = student, fit_dense, loss
        self.prefix, self.name = prefix, name

    def path(self, directory, pattern, step="{step}"):
        return Path(directory) / pattern.format(model=self.name, step=step)

    def weights(self):
        saved = named_parameters(self.student, self.prefix)
        if self.fit_dense is not None:
            saved.update(named_parameters(self.fit_dense, "fit_dense."))
        return saved


def _load_into(cell, path, what, prefix="", allow_missing=()):
    tensors, _ = split_metadata(load_checkpoint(path))
    left = assign_parameters(named_parameters(cell, prefix), tensors, f"{what} {path}", allow_missing)
    return tensors, left


def _init_student(cfg, student, prefix, logger, teacher=None):
    """Random, from a checkpoint (GD or phase-1 output), or from chosen teacher layers."""
    init_mode = cfg.student.init
    if init_mode == "auto":
        init_mode = "checkpoint" if cfg.student.checkpoint else "random"
    if init_mode == "checkpoint":
        if not cfg.student.checkpoint:
            raise ValueError("student.init=checkpoint needs student.checkpoint=PATH")
        tensors, left = _load_into(student, cfg.student.checkpoint, "student checkpoint", prefix,
                                   allow_missing=("dense_1.",))
        logger.info("student initialised from %s%s", cfg.student.checkpoint,
                    f" (left as initialised: {', '.join(left)})" if left else "")
        return tensors
    if init_mode == "teacher_layers":
        encoder = student if isinstance(student, BertModel) else student.bert
        chosen = copy_teacher_layers(encoder, teacher, cfg.student.teacher_layers)
        logger.info("student initialised from teacher layers %s", chosen)
        return {}
    logger.info("student initialised at random")
    return {}


def build_models(cfg, phase, logger):
    """Student, teacher and loss for `phase`, with checkpoints loaded and shapes checked."""
    t_config = bert_config(cfg, "teacher").for_inference()
    s_config = bert_config(cfg, "student")
    num_labels = cfg.task.num_labels
    regression = num_labels == 1
    if phase == "gd":
        teacher = freeze(BertModel(t_config))
        _require(cfg.teacher.checkpoint, "teacher.checkpoint", "the pretrained teacher")
        _load_into(teacher, cfg.teacher.checkpoint, "teacher checkpoint", "bert.")
        student = BertModel(s_config)
        fit_dense = make_fit_dense(s_config, t_config)
        tensors = _init_student(cfg, student, "bert.", logger, teacher)
        _restore_fit_dense(fit_dense, tensors)
        loss = IntermediateDistillationLoss(student, teacher, fit_dense, cfg.distill)
        return Models(student, fit_dense, loss, prefix="bert.")
    if phase == "teacher":
        teacher = BertForSequenceClassification(bert_config(cfg, "teacher"), num_labels)
        if cfg.teacher.checkpoint:
            _load_into(teacher, cfg.teacher.checkpoint, "teacher checkpoint", allow_missing=("dense_1.",))
        return Models(teacher, None, SupervisedLoss(teacher, regression), name="teacher")
    student = BertForSequenceClassification(s_config, num_labels)
    if phase == "eval":
        _require(cfg.student.checkpoint, "student.checkpoint", "the student to evaluate")
        _load_into(student, cfg.student.checkpoint, "student checkpoint")
        return Models(student, None, None)
    teacher = freeze(BertForSequenceClassification(t_config, num_labels))
    _require(cfg.teacher.checkpoint, "teacher.checkpoint", "the task-fine-tuned teacher")
    _load_into(teacher, cfg.teacher.checkpoint, "teacher checkpoint",
               allow_missing=("dense_1.",) if phase == "td1" else ())
    tensors = _init_student(cfg, student, "", logger, teacher.bert)
    if phase == "td1":
        fit_dense = make_fit_dense(s_config, t_config)
        _restore_fit_dense(fit_dense, tensors)
        loss = IntermediateDistillationLoss(student.bert, teacher.bert, fit_dense, cfg.distill)
        return Models(student, fit_dense, loss)
    return Models(student, None, PredictionDistillationLoss(student, teacher, cfg.distill, regression))


def _require(value, key, what):
    if not value:
        raise ValueError(f"{key} is empty: give the path of {what} (--{key}=PATH)")


def _restore_fit_dense(fit_dense, tensors):
    """Keep GD's projection for task phase 1 (the zoo discards it and starts phase 1 from scratch)."""
    if any(name.startswith("fit_dense.") for name in tensors):
        assign_parameters(named_parameters(fit_dense, "fit_dense."), tensors, "fit_dense in student checkpoint")


class Evaluator:
    """Runs the classifier over the whole dev set and keeps the best checkpoint."""

    def __init__(self, cfg, classifier, best_path, logger):
        self.network = LogitsOnly(classifier)
        self.dataset = create_dataset(cfg.data.eval_path, cfg.data.format, cfg.eval.batch_size, cfg.seq_length,
                                      with_labels=True, shuffle=False, drop_remainder=False,
                                      schema_file=cfg.data.schema_file, seed=cfg.seed)
        self.metric = cfg.task.metric
        self.best_path = best_path
        self.best = None
        self.logger = logger

    def evaluate(self):
        """{metric: value} over every dev example: the chosen metric first, then its usual companions."""
        self.network.set_train(False)
        logits, labels = [], []
        for input_ids, input_mask, segment_ids, label_ids in self.dataset.create_tuple_iterator(num_epochs=1):
            logits.append(self.network(input_ids, input_mask, segment_ids).asnumpy())
            labels.append(label_ids.asnumpy())
        logits, labels = np.concatenate(logits), np.concatenate(labels)
        if logits.shape[-1] == 1:
            companions = ("pearson", "spearman")
        else:
            companions = ("accuracy", "f1", "mcc") if logits.shape[-1] == 2 else ("accuracy", "macro_f1")
        names = [self.metric] + [m for m in companions if m != self.metric]
        return {name: compute_metric(name, logits, labels) for name in names}, len(labels)

    def log_line(self, results, count):
        return ", ".join(f"{SHORT_METRIC.get(k, k)} = {v:.6f}" for k, v in results.items()) + f" on {count} examples"

    def evaluate_and_keep_best(self, weights, step):
        results, count = self.evaluate()
        value, name = results[self.metric], SHORT_METRIC.get(self.metric, self.metric)
        self.logger.info("eval: step %d, %s", step, self.log_line(results, count))
        if self.best is None or value > self.best:
            self.best = value
            save_checkpoint(self.best_path, weights, {"step": step, self.metric: float(value)})
            self.logger.info("The best %s is %.6f (step %d), saved to %s", name, value, step, self.best_path)
        return value


def _resume(train_cell, models, phase_dir, logger):
    """Restore the newest step checkpoint in phase_dir; returns the step it was taken at (0 if none)."""
    pattern = models.path(phase_dir, STEP_CHECKPOINT, "*")
    steps = sorted(int(p.stem.rsplit("_", 1)[1]) for p in pattern.parent.glob(pattern.name))
    if not steps:
        logger.info("resume: no step checkpoint in %s, starting from step 0", phase_dir)
        return 0
    path = models.path(phase_dir, STEP_CHECKPOINT, steps[-1])
    tensors, metadata = split_metadata(load_checkpoint(path))
    assign_parameters(models.weights(), tensors, f"checkpoint {path}")
    assign_parameters(_train_state(train_cell), tensors, f"optimizer state in {path}")
    logger.info("resumed from %s at step %d", path, metadata["step"])
    return int(metadata["step"])


def _train_state(train_cell):
    """Optimizer moments, step counter and loss scale: what a resumed run needs besides weights."""
    weights = {id(p) for p in train_cell.weights}
    state = {STATE_PREFIX + p.name: p for p in train_cell.optimizer.get_parameters() if id(p) not in weights}
    state[STATE_PREFIX + "loss_scale"] = train_cell.loss_scale
    return state


def _check_vocab(input_ids, vocab_size):
    largest = int(input_ids.max())
    if largest >= vocab_size:
        raise ValueError(f"the records hold token id {largest} but the model's vocab_size is {vocab_size}: "
                         "convert the data with the model's vocab.txt, or fix the model config")


def run_phase(cfg, phase):
    """Train (gd, td1, td2, teacher) or evaluate (eval) as the config says; returns the last metric or loss."""
    rank, group_size = init_context(cfg)
    logger = get_logger(rank)
    phase_dir = Path(cfg.output_dir) / phase
    logger.info("phase %s, rank %d of %d, config:\n%s", phase, rank, group_size, cfg)
    if rank == 0:
        save_config(cfg, phase_dir / "config.yaml")
    models = build_models(cfg, phase, logger)
    evaluates = phase in ("td2", "teacher", "eval") and rank == 0
    evaluator = Evaluator(cfg, models.student, models.path(phase_dir, BEST_CHECKPOINT), logger) if evaluates else None
    if phase == "eval":
        results, count = evaluator.evaluate()
        logger.info("eval: %s", evaluator.log_line(results, count))
        return results[cfg.task.metric]

    phase_cfg = getattr(cfg, "teacher_finetune" if phase == "teacher" else phase)
    dataset = create_dataset(cfg.data.train_path, cfg.data.format, phase_cfg.batch_size, cfg.seq_length,
                             with_labels=phase != "gd", shuffle=cfg.data.shuffle, num_shards=group_size,
                             shard_id=rank, drop_remainder=True, schema_file=cfg.data.schema_file, seed=cfg.seed)
    steps_per_epoch = dataset.get_dataset_size()
    total_steps = steps_per_epoch * phase_cfg.epochs
    if phase_cfg.max_steps:
        total_steps = min(total_steps, phase_cfg.max_steps)
    params = models.loss.trainable_params()
    train_cell = BertTrainWithLossScaleCell(models.loss, build_optimizer(params, phase_cfg, total_steps),
                                            make_scale_update_cell(cfg.loss_scale), phase_cfg.clip_norm)
    teacher_outputs = getattr(models.loss, "teacher_outputs", None)
    train_cell.set_train(True)
    start_step = step = _resume(train_cell, models, phase_dir, logger) if cfg.checkpoint.resume else 0
    # Teacher and student read the same token ids: both vocabularies must hold them.
    vocab_size = min(bert_config(cfg, role).vocab_size for role in (("teacher",) if phase == "teacher"
                                                                    else ("teacher", "student")))
    logger.info("training %s: %d steps (%d epochs of %d steps), batch %d per device, %d trainable parameters",
                phase, total_steps, phase_cfg.epochs, steps_per_epoch, phase_cfg.batch_size,
                sum(int(np.prod(p.shape)) for p in params))

    loss_value, tick = None, time.time()
    # One iterator for all epochs: a fresh iterator per epoch would replay the same shuffled order.
    batches = dataset.create_tuple_iterator(num_epochs=phase_cfg.epochs)
    for epoch in range(phase_cfg.epochs):
        for index, batch in enumerate(batches):  # each pass over `batches` is one epoch
            if epoch * steps_per_epoch + index < step:
                continue  # done before the resumed checkpoint; read anyway to keep the data order
            if step >= total_steps:
                break
            _check_vocab(batch[0].asnumpy(), vocab_size)
            if teacher_outputs is not None:
                batch = [teacher_outputs(*batch[:3]), *batch]
            loss, overflow, scale = train_cell(*batch)
            step += 1
            loss_value = float(loss.asnumpy())
            if not np.isfinite(loss_value) and not overflow:
                raise FloatingPointError(f"loss became {loss_value} at step {step}: lower the learning rate")
            if step % cfg.log_steps == 0 or step == total_steps:
                elapsed = (time.time() - tick) / cfg.log_steps
                logger.info("epoch: %d, step: %d, outputs are (%.6f, %s, %.1f), lr %.3g, %.0f ms/step",
                            epoch + 1, step, loss_value, bool(overflow), float(scale),
                            float(train_cell.optimizer.get_lr().asnumpy()), elapsed * 1000)
                tick = time.time()
            if rank == 0 and step % cfg.checkpoint.save_steps == 0:
                _save_step(models, train_cell, phase_dir, step, cfg.checkpoint.max_num)
            if evaluator and cfg.eval.every_steps and step % cfg.eval.every_steps == 0:
                evaluator.evaluate_and_keep_best(models.weights(), step)
                train_cell.set_train(True)
        if evaluator and not cfg.eval.every_steps and (epoch + 1) * steps_per_epoch > start_step:
            evaluator.evaluate_and_keep_best(models.weights(), step)
            train_cell.set_train(True)
        if step >= total_steps:
            break
    if rank == 0:
        final = models.path(phase_dir, FINAL_CHECKPOINT)
        save_checkpoint(final, models.weights(), {"step": step, "phase": phase})
        logger.info("phase %s done at step %d, final checkpoint %s", phase, step, final)
    # Logged on every rank: data-parallel ranks must agree (compare the per-rank logs).
    l1_norm = sum(float(np.abs(p.asnumpy()).sum(dtype=np.float64)) for p in models.weights().values())
    logger.info("phase %s: student weights L1 norm %.17g on rank %d", phase, l1_norm, rank)
    if group_size > 1:
        all_reduce(ms.Tensor(0, ms.int32))  # barrier: td2 reads td1's final checkpoint on every rank
    return evaluator.best if evaluator else loss_value


def _save_step(models, train_cell, phase_dir, step, keep):
    weights = models.weights()
    weights.update(_train_state(train_cell))
    save_checkpoint(models.path(phase_dir, STEP_CHECKPOINT, step), weights, {"step": step})
    rotate_checkpoints(phase_dir, models.path(phase_dir, STEP_CHECKPOINT).name, keep)
