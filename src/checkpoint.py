"""Saving and loading checkpoints: atomic writes, rotation, strict loading, one renaming table.

Parameters are stored under their names relative to the model that owns them
(`bert.bert_encoder.layers.0...`, `dense_1.weight`, `fit_dense.weight`), never under the names
they get inside a distillation cell, so one checkpoint loads into every place that needs it.
"""
import os
import re
from pathlib import Path

import mindspore as ms

# Checkpoints from other MindSpore BERT code, renamed to ours. Applied in order, first match wins
# for each rule; the zoo's TinyBERT students use `tinybert_` where its BERT uses `bert_`.
NAME_RULES = (
    (re.compile(r"^(bert\.)?tinybert_"), r"bert.bert_"),     # zoo TinyBERT student
    (re.compile(r"^teacher\."), "bert."),                   # zoo distillation cell, teacher side
    (re.compile(r"^bert\.bert\.bert_"), "bert.bert_"),       # zoo BertCLS wrapped once more
    (re.compile(r"^(bert_embedding|bert_encoder|dense\.)"), r"bert.\1"),  # bare BertModel
)

STATE_PREFIX = "state."  # optimizer and loss-scale state kept for resuming, not model weights


def canonical_name(name):
    for pattern, replacement in NAME_RULES:
        name = pattern.sub(replacement, name)
    return name


def named_parameters(cell, prefix=""):
    """{name relative to `cell`, prefixed: Parameter}."""
    return {prefix + name: param for name, param in cell.parameters_and_names()}


def save_checkpoint(path, parameters, metadata=None):
    """Write {name: Parameter or Tensor} to `path` atomically: a temporary file, then a rename.

    metadata: dict of str/int/float (step, phase, metric...) stored beside the tensors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.ckpt")  # mindspore appends .ckpt to any other name
    entries = [{"name": name, "data": value} for name, value in parameters.items()]
    ms.save_checkpoint(entries, str(tmp), append_dict=dict(metadata or {}))
    os.replace(tmp, path)


def load_checkpoint(path):
    """{canonical name: Parameter} plus metadata entries, with a clear error for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: check the path you passed")
    raw = ms.load_checkpoint(str(path))
    return {canonical_name(name): value for name, value in raw.items()}


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
    left = []
    for name, param in targets.items():
        if name in source:
            param.set_data(ms.Tensor(source[name].asnumpy(), param.dtype))
        else:
            left.append(name)
    return left


def rotate_checkpoints(directory, pattern, keep):
    """Delete all but the `keep` highest-step files matching `pattern` (with a {step} field)."""
    regex = re.compile("^" + re.escape(pattern).replace(r"\{step\}", r"(\d+)") + "$")
    found = sorted((int(m.group(1)), p) for p in Path(directory).glob("*")
                   if (m := regex.match(p.name)))
    for _, stale in found[:-keep] if keep > 0 else []:
        stale.unlink()
