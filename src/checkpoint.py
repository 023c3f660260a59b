"""The checkpoint layout, in one place: file names, name prefixes, metadata, atomic writes, loading.

Parameters are stored under their names relative to the model that owns them
(`bert.bert_encoder.layers.0...`, `dense_1.weight`, `fit_dense.weight`), never under the names
they get inside a distillation cell, so one checkpoint loads into every place that needs it.
Checkpoints carry their model: `model_config` (the BertConfig as JSON), `num_labels`,
`label_names` (JSON list), `task`, `seq_length`, so evaluation, export and Hugging Face export need
only the file.
"""
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import mindspore as ms
from safetensors import SafetensorError
from safetensors.numpy import save_file

from src.cli import require_file
from src.logger import get_logger

# Checkpoints from other MindSpore BERT code, renamed to ours. Applied in order, first match wins
# for each rule; the zoo's TinyBERT students use `tinybert_` where its BERT uses `bert_`.
NAME_RULES = (
    (re.compile(r"^(bert\.)?tinybert_"), r"bert.bert_"),     # zoo TinyBERT student
    (re.compile(r"^teacher\."), "bert."),                   # zoo distillation cell, teacher side
    (re.compile(r"^bert\.bert\.bert_"), "bert.bert_"),       # zoo BertCLS wrapped once more
    (re.compile(r"^(bert_embedding|bert_encoder|dense\.)"), r"bert.\1"),  # bare BertModel
)

# Name prefixes. The zoo's BERT names its encoder `bert.` inside a classifier and its head `dense_1.`.
ENCODER_PREFIX = "bert."
HEAD_PREFIX = "dense_1."  # sentence and token classifiers
HEAD_PREFIXES = (HEAD_PREFIX, "dense1.")  # ... and the QA span head (the zoo's BertSquad name)
SHARED_PROJECTION_PREFIX = "fit_dense."  # TinyBERT's W_h: trained in GD, kept for task phase 1
MULTITASK_HEADS_PREFIX = "heads."  # multi-task student: heads.<i>.dense_1.*, task i of the `tasks` metadata
STATE_PREFIX = "state."  # optimizer and loss-scale state kept for resuming, not model weights

# File names inside OUTPUT_DIR/PHASE; the teacher phase writes teacher_*.ckpt instead of student_*.
STEP_CHECKPOINT = "{model}_step_{step}.ckpt"
FINAL_CHECKPOINT = "{model}_final.ckpt"
BEST_CHECKPOINT = "{model}_best.ckpt"
BAKED_CHECKPOINT = "{model}_final_baked.ckpt"  # prune phase: the plain model, pruned weights set to 0
PARTIAL_SUFFIX = ".partial"  # hidden temporary files: ".NAME.partial.ckpt", never a step checkpoint

# Metadata keys stored beside the tensors.
MODEL_CONFIG, NUM_LABELS, LABEL_NAMES, TASK, SEQ_LENGTH = "model_config", "num_labels", "label_names", "task", \
    "seq_length"
ARCHITECTURE = "architecture"  # the model class (Hugging Face's name), e.g. BertForTokenClassification
TASKS = "tasks"  # multi-task student: JSON [{name, num_labels, label_names, metric}], one per head in order
PRUNING_METHOD = "pruning_method"  # a masked checkpoint (prune phase): the method its mask_scores belong to


def canonical_name(name):
    for pattern, replacement in NAME_RULES:
        name = pattern.sub(replacement, name)
    return name


def named_parameters(cell, prefix=""):
    """{name relative to `cell`, prefixed: Parameter}."""
    return {prefix + name: param for name, param in cell.parameters_and_names()}


def model_metadata(model, num_labels=0, label_names=(), task="", seq_length=0):
    """The metadata that lets a checkpoint rebuild its model (see `load_model`); model: the
    BertModel or task model the checkpoint holds."""
    config = model.bert.config if hasattr(model, "bert") else model.config
    return {MODEL_CONFIG: json.dumps(config.to_dict()), NUM_LABELS: int(num_labels),
            LABEL_NAMES: json.dumps(list(label_names)), TASK: task, SEQ_LENGTH: int(seq_length),
            ARCHITECTURE: type(model).__name__}


def _partial_files(directory, stem="*"):
    return list(Path(directory).glob(f".{stem}{PARTIAL_SUFFIX}*"))


def remove_partial_files(directory):
    """Delete temporary files a killed or failed save left in `directory` (ours and MindSpore's)."""
    for leftover in _partial_files(directory) if Path(directory).is_dir() else []:
        leftover.unlink()


class _WithoutSaveFailureLine(logging.Filter):
    """Drops the CRITICAL line MindSpore's `save_checkpoint` logs before it re-raises a write error:
    the error reaches the user once, as the entry point's one `error:` line that names the file."""

    def filter(self, record):
        return not str(record.msg).startswith("Failed to save the checkpoint file")


def write_safetensors(tensors, path, metadata, shown_path=None):
    """safetensors' save_file with the file mode of an ordinary output (safetensors writes 0600).

    Args:
        tensors (dict of str: np.ndarray): contiguous arrays to store.
        path (str or Path): the file written (a caller's temporary name, renamed when complete).
        metadata (dict of str: str): the file's metadata.
        shown_path (str or Path, default path): the name an error gives (the final one, not the temporary).
    Raises:
        OSError: safetensors' I/O failures (a full disk, no permission), with their errno.
    """
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        code = re.search(r"os error (\d+)", str(err))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(shown_path or path)) from None
    os.chmod(path, plain_file_mode())


def plain_file_mode():
    """The mode open() gives a new file: 0o666 less the process's umask (reading the umask means setting
    it: set back at once). For files a library writes owner-only (MindSpore 0400, safetensors 0600) that
    are ordinary outputs a user copies over, shares with the group or deletes without a prompt."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def save_checkpoint(path, parameters, metadata=None):
    """Write {name: Parameter or Tensor} to `path` atomically: a hidden temporary file, then a rename.

    metadata: dict of str/int/float (step, phase, metric, `model_metadata(...)`) stored beside the tensors.
    Raises FloatingPointError, writing nothing, when a weight is not finite (a diverged run must not
    leave a model that looks usable); on any write error (disk full) the temporary file is removed.
    """
    path = Path(path)
    broken = [name for name, value in parameters.items()
              if not name.startswith(STATE_PREFIX) and not np.isfinite(value.asnumpy()).all()]
    if broken:
        raise FloatingPointError(f"weights became NaN or infinite ({', '.join(broken[:3])}); {path} not "
                                 "written: lower the learning rate or enable loss scaling")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{PARTIAL_SUFFIX}.ckpt")  # mindspore appends .ckpt to any other name
    entries = [{"name": name, "data": value} for name, value in parameters.items()]
    # MindSpore's logger has no public accessor; the filter is attached only for this write.
    ms_logger, quiet = ms.log._get_logger(), _WithoutSaveFailureLine()  # pylint: disable=protected-access
    ms_logger.addFilter(quiet)
    try:
        ms.save_checkpoint(entries, str(tmp), append_dict=dict(metadata or {}))
        os.chmod(tmp, plain_file_mode())  # MindSpore leaves its checkpoints read-only to their owner
        os.replace(tmp, path)
    except BaseException as err:
        for leftover in _partial_files(path.parent, path.stem):
            leftover.unlink()
        if isinstance(err, OSError) and err.filename is None:  # MindSpore's writer does not say where
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        ms_logger.removeFilter(quiet)


def step_checkpoints(directory, model="student"):
    """[(step, path)] of the complete step checkpoints in `directory`, oldest first."""
    regex = re.compile("^" + re.escape(STEP_CHECKPOINT.format(model=model, step="{step}"))
                       .replace(r"\{step\}", r"(\d+)") + "$")
    return sorted((int(m.group(1)), p) for p in Path(directory).glob("*") if (m := regex.match(p.name)))


def load_checkpoint(path, what="checkpoint", keep_masks=False):
    """{canonical name: Parameter} plus metadata entries, with a clear error for a missing file; `what`
    names the setting the path came from in that error (e.g. "teacher.ensemble[1] checkpoint").

    A masked checkpoint (the prune phase's, recording PRUNING_METHOD) holds every weight as it was
    before masking beside its mask_scores and threshold: loaded as it is into a plain model it would
    be the unpruned model. So it is baked here (`src.prune.apply.baked_checkpoint`: pruned weights set
    to zero, scores, threshold and optimizer state dropped), unless `keep_masks` (counting, baking,
    resuming or continuing pruning). Raises ValueError as `checkpoint_pruning` for a masked checkpoint
    that cannot be baked."""
    path = Path(path)
    require_file(path, what, "check the path you passed")
    if path.suffix != ".ckpt":  # MindSpore reads only .ckpt files, and says so in its own terms
        raise ValueError(f"{path} is not a MindSpore checkpoint (.ckpt): pass a .ckpt a run or export wrote, or "
                         "convert a Hugging Face model with `python -m src.hf_convert import`")
    loaded = {canonical_name(name): value for name, value in ms.load_checkpoint(str(path)).items()}
    if PRUNING_METHOD in loaded and not keep_masks:
        from src.prune.apply import baked_checkpoint  # noqa: PLC0415 -- src.prune builds on this module
        get_logger().info("%s is a masked checkpoint (%s): loaded with its pruned weights set to zero", path,
                          loaded[PRUNING_METHOD])
        loaded = baked_checkpoint(loaded)
    return loaded


def split_metadata(loaded):
    """Separate scalar metadata (step, phase...) from tensors."""
    tensors, metadata = {}, {}
    for name, value in loaded.items():
        if isinstance(value, ms.Parameter) and value.ndim > 0 or name.startswith(STATE_PREFIX):
            tensors[name] = value
        elif isinstance(value, ms.Parameter):
            metadata[name] = value.asnumpy().item()
        else:
            metadata[name] = value
    return tensors, metadata


def assign_parameters(targets, source, what, allow_missing=()):
    """Copy source tensors into target Parameters by name; missing or mis-shaped names are an error.

    targets: {name: Parameter}; source: {name: Tensor}; what: words for the error message.
    allow_missing: name prefixes that may be absent (e.g. a classifier head not yet trained).
    Returns the target names that were left as initialised.
    """
    missing = [n for n in targets if n not in source and not n.startswith(tuple(allow_missing))]
    if missing:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ValueError(f"{what} lacks parameters the model needs: {shown}")
    mismatched = [f"{n} {tuple(source[n].shape)} vs model {tuple(p.shape)}"
                  for n, p in targets.items() if n in source and tuple(source[n].shape) != tuple(p.shape)]
    if mismatched:
        raise ValueError(f"{what} does not match the model config: {'; '.join(mismatched[:4])}")
    broken = [n for n in targets if n in source and not np.isfinite(source[n].asnumpy()).all()]
    if broken:
        raise ValueError(f"{what} holds NaN or infinite values in {', '.join(broken[:3])}: it comes from a "
                         "diverged run; use an earlier checkpoint")
    left = []
    for name, param in targets.items():
        if name in source:
            param.set_data(ms.Tensor(source[name].asnumpy(), param.dtype))
        else:
            left.append(name)
    return left


def rotate_checkpoints(directory, model, keep):
    """Delete all but the `keep` highest-step checkpoints of `model` in `directory`."""
    for _, stale in step_checkpoints(directory, model)[:-keep] if keep > 0 else []:
        stale.unlink()


def recorded_config(metadata):
    """The BertConfig a checkpoint's metadata records under `model_config`, or None when the checkpoint
    was written without it (then the caller needs the model config from elsewhere)."""
    from src.tinybert_model import BertConfig
    return BertConfig.from_dict(json.loads(metadata[MODEL_CONFIG])) if MODEL_CONFIG in metadata else None


def load_model(path, for_inference=True, dynamic_shapes=False):
    """(model, metadata) rebuilt from a checkpoint that carries its model config.

    dynamic_shapes: the model will be compiled for unknown input sizes (`BertConfig.for_dynamic_shapes`).

    The model class is the recorded `architecture` (a sentence or token classifier, a QA model, a
    multi-task classifier with its `tasks`, or a bare BertModel from general distillation).
    Raises ValueError for a checkpoint written without `model_config`
    (before checkpoints carried their model): pass the model config explicitly then.
    """
    from src.tinybert_model import BertModel
    from src.tasks import TASK_TYPES, build_task_model
    tensors, metadata = split_metadata(load_checkpoint(path))
    config = recorded_config(metadata)
    if config is None:
        raise ValueError(f"checkpoint {path} does not record its model config: give the model "
                         "(--student.model=PRESET_OR_CONFIG_JSON)")
    config = config.for_inference() if for_inference else config
    config = config.for_dynamic_shapes() if dynamic_shapes else config
    task_types = {task.model.__name__: name for name, task in TASK_TYPES.items()}
    architecture = metadata.get(ARCHITECTURE) or ("BertForSequenceClassification"
                                                  if HEAD_PREFIX + "weight" in tensors else "BertModel")
    if architecture == "BertForMultiTaskClassification":
        from src.distill.multitask import BertForMultiTaskClassification
        model = BertForMultiTaskClassification(config, [task["num_labels"] for task in json.loads(metadata[TASKS])])
        assign_parameters(named_parameters(model), tensors, f"checkpoint {path}")
    elif architecture in task_types:
        head = next((tensors[p + "weight"] for p in HEAD_PREFIXES if p + "weight" in tensors), None)
        model = build_task_model(task_types[architecture], config, head.shape[0] if head is not None else 2)
        assign_parameters(named_parameters(model), tensors, f"checkpoint {path}")
    else:
        model = BertModel(config)
        assign_parameters(named_parameters(model, ENCODER_PREFIX), tensors, f"checkpoint {path}")
    model.set_train(False)
    return model, metadata
