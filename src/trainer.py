"""One training loop for every phase of the phase table (src/phases.py).

The order of a run is visible in `run_phase`: context, models and data (every input checked before
anything is written), the step cell, resume, then the loop (teacher, step, log, checkpoint,
evaluate), then the final checkpoint.
"""
import os
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore.communication import get_group_size, get_rank, init
from mindspore.ops.communication import all_reduce

from src.callbacks import Evaluator, MetricsFile, StepCheckpoints, TrainingLog, parameter_table, train_state
from src.checkpoint import (BAKED_CHECKPOINT, BEST_CHECKPOINT, FINAL_CHECKPOINT, PRUNING_METHOD, assign_parameters,
                            load_checkpoint, remove_partial_files, save_checkpoint, split_metadata, step_checkpoints)
from src.cli import require_device
from src.config import bert_config, config_changes, save_config, teacher_specs
from src.dataset import (create_dataset, has_teacher_inputs, largest_token_id, record_files,
                         teacher_and_student_batches)
from src.distill.schedules import schedule_values
from src.distill.multitask import MultiTaskEvaluator, MultiTaskTeacher
from src.distill.teacher import CachedTeacher, cache_key, combine_logits, load_or_build_cache
from src.dropout import number_dropout_sites
from src.logger import get_logger
from src.multitask_data import interleaved_batches
from src.optimizer import build_optimizer
from src.phases import PHASES, build_models
from src.prune.apply import baked_parameters, set_threshold
from src.prune.schedule import schedule_for
from src.records_writer import ID_COLUMNS, TEACHER_ID_COLUMNS
from src.tasks import TASK_TYPES, check_record_labels
from src.tinybert_for_gd_td import BertTrainWithLossScaleCell, TrainingStep, make_scale_update_cell

_PROCESS = {"communication": False, "config_logged": False}


def init_context(cfg):
    """Device, mode, seeds and, for distributed runs, the communication group. Returns (rank, size)."""
    require_device(cfg.device_target)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=cfg.device_target)
    if not cfg.distribute or not os.getenv("MS_ROLE"):
        # msrun (which sets MS_ROLE) picks each worker's device; a rank-table launch passes --device_id
        ms.set_device(cfg.device_target, cfg.device_id)
    rank, group_size = 0, 1
    if cfg.distribute:
        if not _PROCESS["communication"]:  # td runs two phases in one process; init() only once
            init()
            _PROCESS["communication"] = True
        rank, group_size = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=group_size)
    ms.set_seed(cfg.seed)  # the data order's seed goes to create_dataset
    return rank, group_size


def _resume(train_cell, models, phase_dir, logger):
    """Restore the newest readable step checkpoint in phase_dir; returns its step (0 if none).

    An unreadable newest checkpoint (cut off by a crash) is reported and the one before it used.
    """
    for step, path in reversed(step_checkpoints(phase_dir, models.name)):
        try:
            tensors, metadata = split_metadata(load_checkpoint(path, keep_masks=True))
            assign_parameters(models.weights(), tensors, f"checkpoint {path}")
            assign_parameters(train_state(train_cell), tensors, f"optimizer state in {path}")
        except (RuntimeError, ValueError, OSError) as error:
            logger.info("resume: %s is unreadable (%s); trying the previous one", path, str(error).splitlines()[0])
            continue
        logger.info("resumed from %s at step %d", path, step)
        return step
    logger.info("resume: no complete step checkpoint in %s, starting from step 0", phase_dir)
    return 0


# The converter option of each model's vocabulary in records with teacher columns.
_VOCAB_OPTIONS = {"student": "--vocab_file", "teacher": "--teacher_vocab_file"}


def _check_vocab(cfg, checks):
    """Raises ValueError when a record holds a token id a vocabulary lacks: each check (records path,
    id column, vocab_size, whose: "model", or "student"/"teacher" for records with teacher columns)
    reads the column in full before the phase writes anything, so a bad id is not found hours into a run."""
    for path, column, vocab_size, whose in checks:
        largest = largest_token_id(path, cfg.data.format, cfg.data.schema_file, column)
        if largest >= vocab_size:
            where, option = (f" in {column}", f" ({_VOCAB_OPTIONS[whose]})") if whose in _VOCAB_OPTIONS else ("", "")
            raise ValueError(f"{path} holds token id {largest}{where} but the {whose}'s vocab_size is {vocab_size}: "
                             f"convert the data with the {whose}'s vocab.txt{option}, or fix the {whose} config")


def _teacher_inputs(cfg, phase, models):
    """Whether the training records carry the teacher's own tokenization (glue_to_records
    --teacher_vocab_file), which the teacher is then fed instead of the student's columns.

    Raises:
        ValueError: such records where the two models' token positions would have to correspond
            (intermediate matches, per-token or span predictions), where the teacher is the model
            trained, or in a multi-task run.
    """
    rows = [task.row for task in models.tasks] or [cfg.data]
    carrying = [row.train_path for row in rows
                if has_teacher_inputs(row.train_path, cfg.data.format, cfg.data.schema_file)]
    if not carrying:
        return False
    path = carrying[0]
    if models.tasks:
        raise ValueError(f"{path} carries teacher columns (converted with --teacher_vocab_file), which multi-task "
                         "distillation does not read: convert each task's records with one vocabulary for both models")
    if not models.teachers:
        raise ValueError(f"{path} carries teacher columns (converted with --teacher_vocab_file), but phase "
                         f"{phase.name} trains on input_ids, the student's tokens: fine-tune the teacher on records "
                         "converted with --vocab_file set to the teacher's vocab.txt")
    if models.matches:
        described = ", ".join(sorted({match.feature for match in models.matches}))
        raise ValueError(f"intermediate matches ({described}) need the teacher and student to see the same token "
                         f"positions; {path} carries teacher columns (a teacher vocabulary, glue_to_records "
                         "--teacher_vocab_file), which allow only prediction-level distillation: use --phase=td2 "
                         "without distill.intermediate_matches, or convert the data with one vocabulary for both "
                         "models")
    if cfg.task.type != "sequence_classification":
        raise ValueError(f"{path} carries teacher columns (a teacher vocabulary), but {cfg.task.type} compares the "
                         "two models' predictions position by position, and their token positions differ: convert "
                         "the data with one vocabulary for both models")
    return True


def _vocab_checks(cfg, phase, models, evaluates, teacher_inputs):
    """The (records path, id column, vocab_size, whose) rows `_check_vocab` reads: the training
    records (and dev records when the phase evaluates) of every task against the vocabularies of the
    models that read them."""
    teacher_vocab = min([t.bert.config.vocab_size for t in models.teachers] if models.tasks else
                        [spec[0].vocab_size for spec in teacher_specs(cfg)])
    rows = [task.row for task in models.tasks] or [cfg.data]
    paths = [row.train_path for row in rows] + ([row.eval_path for row in rows] if evaluates else [])
    if teacher_inputs:  # each model reads its own columns (the dev set: the student's alone)
        return [(path, ID_COLUMNS[0], bert_config(cfg, "student").vocab_size, "student") for path in paths] + \
            [(cfg.data.train_path, TEACHER_ID_COLUMNS[0], teacher_vocab, "teacher")]
    # Teacher and student read the same token ids: both vocabularies must hold them.
    vocab_size = min([teacher_vocab] + ([] if phase.trains == "teacher" else [bert_config(cfg, "student").vocab_size]))
    return [(path, ID_COLUMNS[0], vocab_size, "model") for path in paths]


def _uses_cache(cfg, models):
    """Whether the teacher's logits come from the cache: asked for (distill.teacher_cache) and the
    phase needs nothing else from the teacher (no intermediate matches). A multi-task run: as its
    first task."""
    if models.tasks:
        return _uses_cache(models.tasks[0].config, models.tasks[0].models)
    return bool(cfg.distill.teacher_cache and models.teachers and not models.matches)


def _teacher_source(cfg, models, phase, logger, teacher_inputs=False):
    """The live teacher(s), or their logits from the cache (one file per teacher, built on first
    use) when `_uses_cache`, computed on the teacher's own columns when the records carry them
    (`teacher_inputs`). A multi-task student: each task's, by the batch's task."""
    if models.tasks:
        return MultiTaskTeacher([_teacher_source(task.config, task.models, phase, logger) for task in models.tasks])
    if not _uses_cache(cfg, models):
        if cfg.distill.teacher_cache and models.matches:
            logger.warning("distill.teacher_cache is not used in this phase: its intermediate matches need the "
                           "live teacher's hidden states and attention maps, which the cache does not hold")
        return models.teacher_source
    files = record_files(cfg.data.train_path, cfg.data.format)
    logits = []
    for teacher, (_, checkpoint, _) in zip(models.teachers, teacher_specs(cfg)):
        batches = create_dataset(cfg.data.train_path, cfg.data.format, cfg.eval.batch_size, cfg.seq_length,
                                 with_labels=phase.labels, shuffle=False, drop_remainder=False,
                                 schema_file=cfg.data.schema_file, seed=cfg.seed, padding=cfg.data.padding,
                                 buckets=cfg.data.buckets, with_example_ids=True,
                                 label_columns=TASK_TYPES[cfg.task.type].label_columns,
                                 with_teacher_inputs=teacher_inputs, by_length=True)
        teacher_batches = (teacher_and_student_batches(batch, teacher_inputs)[0]
                           for batch in batches.create_tuple_iterator(num_epochs=1))
        key = cache_key(checkpoint, files, teacher.bert.config.to_dict())
        logits.append(load_or_build_cache(Path(cfg.output_dir) / "teacher_cache", key, teacher_batches, teacher,
                                          logger, batches.get_dataset_size()))
    return CachedTeacher(combine_logits(logits, [spec[2] for spec in teacher_specs(cfg)]))


def run_phase(cfg, name, student_checkpoint=""):
    """Train (or evaluate) one phase of the table as the config says; returns its best metric or
    last loss. student_checkpoint: the student's initial weights when run in a chain."""
    phase = PHASES[name]
    rank, group_size = init_context(cfg)
    logger = get_logger(rank)
    if not _PROCESS["config_logged"]:
        logger.info("config (what differs from default_config.yaml; the whole of it is written to "
                    "OUTPUT_DIR/PHASE/config.yaml):\n%s", config_changes(cfg))
        _PROCESS["config_logged"] = True
    logger.info("phase %s, rank %d of %d", name, rank, group_size)
    phase_dir = Path(cfg.output_dir) / name
    metrics = MetricsFile(Path(cfg.output_dir) / "metrics.jsonl" if rank == 0 else None)
    models = build_models(cfg, phase, logger, student_checkpoint)
    number_dropout_sites(models.trained)  # masks by place in the model, whatever else the process built
    best_path = phase_dir / BEST_CHECKPOINT.format(model=models.name)
    evaluator = None
    if phase.evaluates and rank == 0:
        evaluator = MultiTaskEvaluator([task.config for task in models.tasks], [task.row.name for task in models.tasks],
                                       name, [task.models.trained for task in models.tasks], best_path, logger,
                                       metrics) if models.tasks else \
            Evaluator(cfg, name, models.trained, best_path, logger, metrics)
    if not phase.optimizer:
        results, count = evaluator.evaluate()
        logger.info("eval: %s", evaluator.log_line(results, count))
        metrics.write({"phase": name, "checkpoint": str(student_checkpoint or cfg.student.checkpoint),
                       "eval": results, "examples": count})
        return results[evaluator.metric]

    block = getattr(cfg, phase.optimizer)
    label_columns = TASK_TYPES[cfg.task.type].label_columns
    teacher_inputs = _teacher_inputs(cfg, phase, models)
    cached = _uses_cache(cfg, models)
    # A multi-task batch ends with its task's index (src/multitask_data.py); its labels are checked as read.
    dataset = interleaved_batches(cfg, [task.row for task in models.tasks], block.batch_size, group_size, rank,
                                  cached) if models.tasks else \
        create_dataset(cfg.data.train_path, cfg.data.format, block.batch_size, cfg.seq_length,
                       with_labels=phase.labels, shuffle=cfg.data.shuffle, num_shards=group_size, shard_id=rank,
                       drop_remainder=True, schema_file=cfg.data.schema_file, seed=cfg.seed,
                       padding=cfg.data.padding, buckets=cfg.data.buckets, with_example_ids=cached,
                       label_columns=label_columns, with_teacher_inputs=teacher_inputs)
    if phase.labels and not models.tasks:
        check_record_labels(cfg.task.type, cfg.data.train_path, cfg.data.format, cfg.task.num_labels,
                            "the training records", cfg.seq_length, cfg.data.schema_file)
    _check_vocab(cfg, _vocab_checks(cfg, phase, models, evaluator is not None, teacher_inputs))
    # Every input is checked: from here on files are written (the teacher cache, then the phase folder).
    teacher = _teacher_source(cfg, models, phase, logger, teacher_inputs)
    steps_per_epoch = dataset.get_dataset_size()
    total_steps = steps_per_epoch * block.epochs
    if block.max_steps:
        total_steps = min(total_steps, block.max_steps)
    params = models.loss.trainable_params()
    pruning = models.pruning
    optimizer = build_optimizer(params, block, total_steps, *(
        (pruning.scores, pruning.settings.mask_scores_learning_rate) if pruning else ()))
    train_cell = BertTrainWithLossScaleCell(models.loss, optimizer, make_scale_update_cell(cfg.loss_scale),
                                            block.clip_norm)
    train_step = TrainingStep(train_cell, block.micro_batches, cfg.seed, rank, pruning.refresh if pruning else None)
    train_step.set_train(True)
    if rank == 0:
        save_config(cfg, phase_dir / "config.yaml")
        remove_partial_files(phase_dir)
    start_step = step = _resume(train_cell, models, phase_dir, logger) if cfg.checkpoint.resume else 0
    for pair in models.matches:
        logger.info("match: %s", pair.describe())
    logger.info("parameters:\n%s", "\n".join(parameter_table(
        [(models.name, models.trained)] + list(models.projections.items()))))
    span = f"{block.epochs} epoch{'s' if block.epochs > 1 else ''} of {steps_per_epoch} steps"
    if total_steps < block.epochs * steps_per_epoch:
        span = f"max_steps; {span} would be {block.epochs * steps_per_epoch}"
    slices = f" in {block.micro_batches} micro-batches" if block.micro_batches > 1 else ""
    logger.info("training %s: %d steps (%s), batch %d per device%s, %d trainable parameters%s",
                name, total_steps, span, block.batch_size, slices,
                sum(int(np.prod(p.shape)) for p in params), ", teacher logits from the cache" if cached else "")

    component_names = [f"match_{i}" for i in range(len(models.matches))] + ["prediction", "label", "regularization"]
    log = TrainingLog(name, component_names, cfg.log_steps, total_steps, logger, metrics)
    saver = StepCheckpoints(phase_dir, models.name, cfg.checkpoint.save_steps, cfg.checkpoint.max_num)
    loss_value = None
    # One iterator for all epochs: a fresh iterator per epoch would replay the same shuffled order.
    batches = dataset.create_tuple_iterator(num_epochs=block.epochs)
    log.start(step)
    for epoch in range(block.epochs):
        for index, batch in enumerate(batches):  # each pass over `batches` is one epoch
            if epoch * steps_per_epoch + index < step:
                continue  # done before the resumed checkpoint; read anyway to keep the data order
            if step >= total_steps:
                break
            regu_lambda = _prune_step(models, step, total_steps, block) if pruning else 0.0
            schedule = schedule_values(cfg.distill, step, total_steps, phase.terms,
                                       cfg.pruning if pruning else None, regu_lambda)
            teacher_batch, batch = teacher_and_student_batches(batch, teacher_inputs)
            # step keys the dropout masks (with seed and rank): a resumed run draws the same
            loss_value, components, overflow, scale = train_step(step, teacher, ms.Tensor(schedule, ms.float32),
                                                                 teacher_batch, batch)
            step += 1
            if not np.isfinite(loss_value):
                raise FloatingPointError(f"the loss became {loss_value} at step {step}: training diverged; "
                                         "lower the learning rate")
            lr = train_cell.optimizer.get_lr()  # a tuple, one per parameter, when groups have their own rate
            log.step_done(epoch + 1, step, loss_value, components, overflow, scale,
                          float((lr[0] if isinstance(lr, tuple) else lr).asnumpy()), schedule,
                          {"threshold": float(pruning.threshold.asnumpy()[0])} if pruning else
                          {"task": models.tasks[batch[-1]].row.name} if models.tasks else None)
            if rank == 0:
                saver.step_done(step, models.weights(), train_state(train_cell), models.metadata)
            if evaluator and cfg.eval.every_steps and step % cfg.eval.every_steps == 0:
                evaluator.evaluate_and_keep_best(models.weights(), step, models.metadata, _pruned_enough(models))
                train_step.set_train(True)
        if evaluator and not cfg.eval.every_steps and (epoch + 1) * steps_per_epoch > start_step:
            evaluator.evaluate_and_keep_best(models.weights(), step, models.metadata, _pruned_enough(models))
            train_step.set_train(True)
        if step >= total_steps:
            break
    if evaluator and cfg.eval.every_steps and step % cfg.eval.every_steps:  # the steps after the last evaluation
        evaluator.evaluate_and_keep_best(models.weights(), step, models.metadata, _pruned_enough(models))
    if rank == 0:
        final = phase_dir / FINAL_CHECKPOINT.format(model=models.name)
        save_checkpoint(final, models.weights(), {**models.metadata, "step": step, "phase": name})
        logger.info("phase %s done at step %d, final checkpoint %s", name, step, final)
        if pruning:
            baked = phase_dir / BAKED_CHECKPOINT.format(model=models.name)
            metadata = {k: v for k, v in models.metadata.items() if k != PRUNING_METHOD}
            save_checkpoint(baked, baked_parameters(models.trained), {**metadata, "step": step, "phase": name})
            logger.info("pruned weights set to zero once and for all (bertarize): %s, a plain %s", baked,
                        type(models.trained).__name__)
    # Logged on every rank: data-parallel ranks must agree (compare the per-rank logs).
    l1_norm = sum(float(np.abs(p.asnumpy()).sum(dtype=np.float64)) for p in models.weights().values())
    logger.info("phase %s: %s weights L1 norm %.17g on rank %d", name, models.name, l1_norm, rank)
    if group_size > 1:
        all_reduce(ms.Tensor(0, ms.int32))  # barrier: td2 reads td1's final checkpoint on every rank
    return evaluator.best if evaluator else loss_value


def _prune_step(models, step, total_steps, block):
    """Set the masks' threshold for optimizer step `step` + 1 (the paper counts from 1) from the
    cubic schedule; returns the regularisation weight in force."""
    settings = models.pruning.settings
    threshold, regu_lambda = schedule_for(settings, step + 1, total_steps, int(block.warmup_ratio * total_steps))
    set_threshold(models.trained, threshold)
    return regu_lambda


def _pruned_enough(models):
    """Whether an evaluation may be kept as the best: always, except while pruning has not reached
    its final threshold (a barely pruned model would win every comparison)."""
    if models.pruning is None:
        return True
    current = float(models.pruning.threshold.asnumpy()[0])
    return abs(current - models.pruning.settings.final_threshold) < 1e-6  # a float32 Parameter


def final_checkpoint(cfg, name):
    """Path of the final checkpoint phase `name` writes (what the next phase of a chain starts from)."""
    model = "teacher" if PHASES[name].trains == "teacher" else "student"
    return Path(cfg.output_dir) / name / FINAL_CHECKPOINT.format(model=model)
