"""The phase table: one entry per phase saying what it builds, reads, trains and starts from.

  gd       general distillation: bare student encoder vs the pretrained teacher, intermediate matches
  td1      task distillation phase 1: student classifier vs the task teacher, intermediate matches
  td2      task distillation phase 2: prediction (soft targets) and label terms; evaluates
  prune    pruning with distillation: a masked student (src/prune/), soft targets, gold labels and
           explicit matches, the cubic threshold schedule; evaluates at the final threshold
  teacher  supervised fine-tuning of the teacher on the task; evaluates
  multitask  td2's prediction and label terms for several tasks at once: one student encoder, a head
           and a teacher per `multitask.tasks` row (src/distill/multitask.py); evaluates every task
  eval     a student checkpoint on the dev set
`--phase=td` runs the chain td1 -> td2; each phase of a chain starts from its predecessor's final
checkpoint. A new phase (pruning, say) is one more entry and, if it builds something new, one more
branch in `build_models`.
"""
import dataclasses
import json

from src.checkpoint import (ENCODER_PREFIX, HEAD_PREFIXES, LABEL_NAMES, MULTITASK_HEADS_PREFIX, PRUNING_METHOD,
                            assign_parameters, load_checkpoint, model_metadata, named_parameters, recorded_config,
                            split_metadata)
from src.config import bert_config, pruning_settings, resolve_model, teacher_specs
from src.distill.multitask import (BertForMultiTaskClassification, MultiTaskDistillationLoss, MultiTaskTeacher,
                                   multitask_metadata)
from src.distill.matches import resolve_matches
from src.distill.teacher import LiveTeacher, TeacherEnsemble, freeze, no_teacher
from src.prune.apply import (apply_masking, cache_masks, mask_score_parameters, regularization_term,
                             restore_mask_scores)
from src.student_init import copy_teacher_layers
from src.tinybert_for_gd_td import DistillationLoss, make_projections
from src.multitask_data import task_config, task_rows
from src.tasks import build_task_model, label_names_from_records
from src.tinybert_model import BertModel


@dataclasses.dataclass(frozen=True)
class Phase:
    """One row of the phase table.

    name: output folder and log name; optimizer: config block of its training settings ("" = no
    training); trains: "student" or "teacher" ("" = nothing); head: the trained model has a task
    head (False: the bare encoder of general distillation); labels: reads label_ids; terms: loss
    terms of `DistillationLoss`; teacher: loads a frozen teacher; evaluates: runs the dev set and
    keeps the best checkpoint; tasks: trains one head per `multitask.tasks` row.
    """
    name: str
    optimizer: str
    trains: str
    head: bool
    labels: bool
    terms: tuple
    teacher: bool
    evaluates: bool
    preset: bool = True
    prunes: bool = False
    tasks: bool = False


PHASES = {phase.name: phase for phase in (
    Phase("gd", "gd", "student", head=False, labels=False, terms=("matches",), teacher=True, evaluates=False),
    Phase("td1", "td1", "student", head=True, labels=False, terms=("matches",), teacher=True, evaluates=False),
    Phase("td2", "td2", "student", head=True, labels=True, terms=("prediction", "label"), teacher=True,
          evaluates=True),
    Phase("teacher", "teacher_finetune", "teacher", head=True, labels=True, terms=("label",), teacher=False,
          evaluates=True),
    Phase("prune", "prune", "student", head=True, labels=True, terms=("prediction", "label", "matches"),
          teacher=True, evaluates=True, preset=False, prunes=True),
    Phase("multitask", "multitask_train", "student", head=True, labels=True, terms=("prediction", "label"),
          teacher=True, evaluates=True, tasks=True),
    Phase("eval", "", "", head=True, labels=True, terms=(), teacher=False, evaluates=True),
)}
CHAINS = {"td": ("td1", "td2")}


def phases_of(name):
    """The phases `--phase=name` runs, in order."""
    return CHAINS.get(name, (name,))


class Models:
    """What one phase built.

    trained: the model trained or evaluated; name: what its checkpoint files are called after
    ("student" or "teacher"); prefix: checkpoint name prefix of its parameters; loss: the
    DistillationLoss (None for eval); teachers: the frozen teacher models, if the phase has them;
    teacher_source: what the step gets the teachers' outputs from; projections: {name: Dense}
    saved with the student; matches: the intermediate matches; metadata: what the checkpoints
    record about the model; pruning: a `Pruning` in the prune phase; tasks: the `Task`s of a
    multi-task student.
    """

    def __init__(self, trained, name, prefix, metadata, loss=None, teachers=(), teacher_source=None,
                 projections=None, matches=(), pruning=None, tasks=()):
        self.trained, self.name, self.prefix, self.metadata = trained, name, prefix, metadata
        self.pruning, self.tasks = pruning, list(tasks)
        self.loss, self.teachers, self.teacher_source = loss, list(teachers), teacher_source
        self.projections, self.matches = projections or {}, matches

    def weights(self):
        saved = named_parameters(self.trained, self.prefix)
        for name, projection in self.projections.items():
            saved.update(named_parameters(projection, f"{name}."))
        return saved


def _load_into(cell, path, what, prefix="", allow_missing=(), label_names=(), loaded=None, keep_masks=False):
    """Load `path` (or its already `loaded` content) into `cell`; with label_names, a checkpoint that
    records its labels in another order (a classifier fine-tuned elsewhere) is an error, not a
    silently permuted model. A masked checkpoint is baked on load unless keep_masks (`load_checkpoint`).
    Returns (tensors, metadata, names left as initialised)."""
    tensors, metadata = split_metadata(loaded or load_checkpoint(path, what, keep_masks))
    stored = json.loads(metadata.get(LABEL_NAMES) or "[]")
    if label_names and stored and [str(x) for x in stored] != list(label_names):
        raise ValueError(f"{what} {path} orders its labels {stored} but the task's order is {list(label_names)}: "
                         "import it with `python -m src.hf_convert import --task TASK`, which reorders the "
                         "classifier to the task's order")
    left = assign_parameters(named_parameters(cell, prefix), tensors, f"{what} {path}", allow_missing)
    return tensors, metadata, left


def _require(value, key, what):
    if not value:
        raise ValueError(f"{key} is empty: give the path of {what} (--{key}=PATH)")


def _init_student(cfg, student, prefix, checkpoint, teacher, logger, chained, keep_masks=False):
    """Random, from a checkpoint (GD or phase-1 output), or from chosen teacher layers; returns the
    checkpoint's (tensors, metadata) (projections are restored from them, pruning continues from its
    mask scores: read with keep_masks) or ({}, {}). A chained phase always starts from its
    predecessor's checkpoint."""
    init_mode = "checkpoint" if chained else cfg.student.init
    if init_mode == "auto":
        init_mode = "checkpoint" if checkpoint else "random"
    if init_mode == "checkpoint":
        _require(checkpoint, "student.checkpoint", "the student's initial weights")
        tensors, metadata, left = _load_into(student, checkpoint, "student checkpoint", prefix,
                                             allow_missing=HEAD_PREFIXES + (MULTITASK_HEADS_PREFIX,),
                                             keep_masks=keep_masks)
        logger.info("student initialised from %s%s", checkpoint,
                    f" (left as initialised: {', '.join(left)})" if left else "")
        return tensors, metadata
    if init_mode == "teacher_layers":
        encoder = student.bert if hasattr(student, "bert") else student
        chosen = copy_teacher_layers(encoder, teacher.bert if hasattr(teacher, "bert") else teacher,
                                     cfg.student.teacher_layers)
        logger.info("student initialised from teacher layers %s", chosen)
        return {}, {}
    logger.info("student initialised at random")
    return {}, {}


def _evaluated_student(cfg, s_config, checkpoint, what):
    """(inference config, loaded tensors) of the student an eval phase loads: the model its checkpoint
    records, else student.model (`s_config`)."""
    _require(checkpoint, "student.checkpoint", what)
    loaded = load_checkpoint(checkpoint)
    stored = recorded_config(split_metadata(loaded)[1])
    return (stored.replace(compute_type=cfg.compute_type) if stored else s_config).for_inference(), loaded


def task_label_names(cfg):
    """Label names of the configured task: the GLUE task's, those written beside NER records, or
    class indices."""
    from src.glue_to_records import TASKS  # the converters own the task table
    spec = TASKS.get(cfg.task.name)
    if spec is not None and spec.labels:
        return [str(label) for label in spec.labels]
    from_records = label_names_from_records(cfg.task.type, cfg.data.train_path)
    if from_records:
        return list(from_records)
    if cfg.task.type == "question_answering" or cfg.task.num_labels == 1:
        return []
    return [str(i) for i in range(cfg.task.num_labels)]


def build_models(cfg, phase, logger, student_checkpoint=""):
    """The models and loss of `phase`, with checkpoints loaded and shapes checked.

    student_checkpoint: initial student weights when the phase runs in a chain (overrides
    student.checkpoint). Raises ValueError / FileNotFoundError for missing or mismatched inputs.
    """
    if phase.tasks or (not phase.trains and cfg.multitask.tasks):
        return _build_multitask(cfg, phase, logger, student_checkpoint)
    num_labels = cfg.task.num_labels
    regression = num_labels == 1 and cfg.task.type == "sequence_classification"
    labels = task_label_names(cfg)
    from_records = label_names_from_records(cfg.task.type, cfg.data.train_path)
    if from_records and len(from_records) != num_labels:
        raise ValueError(f"task.num_labels is {num_labels} but the training records' label list has "
                         f"{len(from_records)} labels ({', '.join(from_records)}): set --task.num_labels="
                         f"{len(from_records)}")
    if phase.trains == "teacher":
        teacher = build_task_model(cfg.task.type, bert_config(cfg, "teacher"), num_labels)
        if cfg.teacher.checkpoint:
            _load_into(teacher, cfg.teacher.checkpoint, "teacher checkpoint", allow_missing=HEAD_PREFIXES,
                       label_names=labels)
        metadata = model_metadata(teacher, num_labels, labels, cfg.task.name, cfg.seq_length)
        loss = DistillationLoss(teacher, phase.terms, cfg.distill, regression=regression)
        return Models(teacher, "teacher", "", metadata, loss=loss, teacher_source=no_teacher)

    s_config = bert_config(cfg, "student")
    checkpoint = student_checkpoint or cfg.student.checkpoint
    if not phase.trains:
        s_config, loaded = _evaluated_student(cfg, s_config, checkpoint, "the student to evaluate")
        student = build_task_model(cfg.task.type, s_config, num_labels)
        _load_into(student, checkpoint, "student checkpoint", label_names=labels, loaded=loaded)
        return Models(student, "student", "", model_metadata(student, num_labels, labels, cfg.task.name,
                                                               cfg.seq_length))

    specs = teacher_specs(cfg)
    if cfg.teacher.ensemble and not phase.head:
        raise ValueError("teacher.ensemble is for task phases (several task-fine-tuned teachers); general "
                         "distillation takes one pretrained teacher: teacher.model and teacher.checkpoint")
    teachers = []
    for i, (t_config, path, _) in enumerate(specs):
        what = f"teacher.ensemble[{i}]" if cfg.teacher.ensemble else "teacher"
        _require(path, f"{what}.checkpoint" if cfg.teacher.ensemble else "teacher.checkpoint",
                 "the task-fine-tuned teacher" if phase.head else "the pretrained teacher")
        if phase.head:
            teacher = freeze(build_task_model(cfg.task.type, t_config.for_inference(), num_labels))
            _load_into(teacher, path, f"{what} checkpoint",
                       allow_missing=() if "prediction" in phase.terms else HEAD_PREFIXES, label_names=labels)
        else:
            teacher = freeze(BertModel(t_config.for_inference()))
            _load_into(teacher, path, f"{what} checkpoint", ENCODER_PREFIX)
        teachers.append(teacher)
    teacher = teachers[0]
    student, prefix = (build_task_model(cfg.task.type, s_config, num_labels), "") if phase.head \
        else (BertModel(s_config), ENCODER_PREFIX)
    tensors, stored = _init_student(cfg, student, prefix, checkpoint, teacher, logger, bool(student_checkpoint),
                                    keep_masks=phase.prunes)
    t_configs = [spec[0] for spec in specs]
    wants_matches = "matches" in phase.terms and (phase.preset or cfg.distill.intermediate_matches)
    matches = resolve_matches(cfg.distill, s_config, t_configs) if wants_matches else ()
    pruning = _mask_student(cfg, student, checkpoint, tensors, stored, logger) if phase.prunes else None
    projections = make_projections(matches, s_config, t_configs[0])
    for name, projection in projections.items():
        # GD's fit_dense carries into task phase 1 (the zoo discards it and starts from scratch)
        if f"{name}.weight" in tensors:
            assign_parameters(named_parameters(projection, f"{name}."), tensors, f"{name} in {checkpoint}")
            logger.info("projection %s restored from %s", name, checkpoint)
    loss = DistillationLoss(student, phase.terms, cfg.distill, matches, projections, regression,
                            pruning.regularizer if pruning else None)
    with_logits = "prediction" in phase.terms
    source = LiveTeacher(teacher, matches, with_logits) if len(teachers) == 1 else \
        TeacherEnsemble(teachers, [spec[2] for spec in specs], matches, with_logits)
    metadata = model_metadata(student, num_labels if phase.head else 0, labels if phase.head else [],
                              cfg.task.name if phase.head else "", cfg.seq_length)
    if pruning:
        metadata[PRUNING_METHOD] = pruning.settings.pruning_method
    return Models(student, "student", prefix, metadata, loss=loss, teachers=teachers, teacher_source=source,
                  projections=projections, matches=matches, pruning=pruning)


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a multi-task student: its checked row (`multitask_data.TaskRow`), the run's config
    as a single-task run of it sees it, and its single-task Models (its view of the student, its
    loss, teacher and teacher source)."""
    row: object
    config: object
    models: Models


def _build_multitask(cfg, phase, logger, student_checkpoint):
    """The multi-task student (a head per `multitask.tasks` row) and, when training, each task's
    teacher (its own config and checkpoint, labels checked) and loss; eval loads a multi-task checkpoint."""
    rows = task_rows(cfg.multitask)
    if not rows:
        raise ValueError("multitask.tasks is empty: give one row per task, {name, train_path, eval_path, "
                         "teacher_checkpoint}")
    if cfg.teacher.ensemble and phase.trains:
        raise ValueError("teacher.ensemble is not used by a multi-task run: each task has its own teacher "
                         "(multitask.tasks[i].teacher_checkpoint and teacher_model); remove teacher.ensemble")
    s_config = bert_config(cfg, "student")
    checkpoint = student_checkpoint or cfg.student.checkpoint
    loaded = None
    if not phase.trains:
        s_config, loaded = _evaluated_student(cfg, s_config, checkpoint, "the multi-task student to evaluate")
    student = BertForMultiTaskClassification(s_config, [row.num_labels for row in rows])
    metadata = {**model_metadata(student, 0, (), "multitask", cfg.seq_length), **multitask_metadata(rows)}
    if not phase.trains:
        _load_into(student, checkpoint, "student checkpoint", loaded=loaded)
        return Models(student, "student", "", metadata, tasks=[
            Task(row, task_config(cfg, row), Models(student.task_model(i), "student", "", {}))
            for i, row in enumerate(rows)])
    tasks = []
    for i, row in enumerate(rows):
        key = f"multitask.tasks[{i}]"
        for path_key, what in (("train_path", "training records"), ("teacher_checkpoint", "fine-tuned teacher")):
            if not getattr(row, path_key):
                raise ValueError(f"{key}.{path_key} is empty: give task {row.name}'s {what}")
        t_config = resolve_model(row.teacher_model or cfg.teacher.model, cfg.model_presets.to_dict(),
                                 f"{key}.teacher_model").replace(compute_type=cfg.compute_type)
        if t_config.max_position_embeddings < cfg.seq_length:
            raise ValueError(f"seq_length {cfg.seq_length} exceeds {key}.teacher_model's max_position_embeddings "
                             f"{t_config.max_position_embeddings}")
        teacher = freeze(build_task_model("sequence_classification", t_config.for_inference(), row.num_labels))
        _load_into(teacher, row.teacher_checkpoint, f"{key}.teacher_checkpoint", label_names=row.labels)
        model = student.task_model(i)
        loss = DistillationLoss(model, phase.terms, cfg.distill, regression=row.num_labels == 1)
        tasks.append(Task(row, task_config(cfg, row), Models(model, "student", "", {}, loss=loss, teachers=[teacher],
                                                             teacher_source=LiveTeacher(teacher, with_logits=True))))
    teachers = [task.models.teachers[0] for task in tasks]
    _init_student(cfg, student, "", checkpoint, teachers[0], logger, bool(student_checkpoint))
    loss = MultiTaskDistillationLoss([task.models.loss for task in tasks])
    source = MultiTaskTeacher([task.models.teacher_source for task in tasks])
    logger.info("tasks: %s", "; ".join(f"{row.name} ({row.num_labels} labels, {row.metric}, teacher "
                                       f"{row.teacher_checkpoint})" for row in rows))
    return Models(student, "student", "", metadata, loss=loss, teachers=teachers, teacher_source=source, tasks=tasks)


@dataclasses.dataclass
class Pruning:
    """A masked student's pruning state: settings (PruningConfig), the shared threshold Parameter,
    the mask scores (their own learning rate), the regularisation Cell or None, and the Cell that
    recomputes cached masks before each step (`cache_masks`: magnitude and topK) or None."""
    settings: object
    threshold: object
    scores: list
    regularizer: object
    refresh: object


def _mask_student(cfg, student, checkpoint, tensors, stored, logger):
    """Mask the encoder's dense layers of the (dense, loaded) student, before any Cell is built on it;
    a masked checkpoint's (`tensors`, `stored` metadata) scores are restored: pruning continues from them."""
    _require(checkpoint, "student.checkpoint", "the fine-tuned model to prune")
    settings = pruning_settings(cfg.pruning)
    threshold = apply_masking(student, settings)
    if restore_mask_scores(student, tensors, stored, checkpoint):
        logger.info("mask scores restored from %s: pruning continues from its masks", checkpoint)
    regularizer = regularization_term(student, settings.regularization) if settings.regularization != "none" \
        else None
    logger.info("pruning %s: threshold %g -> %g, regularization %s", settings.pruning_method,
                settings.initial_threshold, settings.final_threshold, settings.regularization)
    return Pruning(settings, threshold, mask_score_parameters(student), regularizer, cache_masks(student))
