"""Convert BERT weights between Hugging Face directories and our MindSpore checkpoints.

Import brings a pretrained (or fine-tuned) Hugging Face BERT in as a teacher; export hands a
distilled student back to the Hugging Face ecosystem. Both directions read the one `NAME_TABLE`.

Usage:
  python -m src.hf_convert import --hf_dir DIR --output_dir OUT [--task mnli [--label_map A=a,B=b]]
  python -m src.hf_convert export --checkpoint CKPT [--config PRESET|CONFIG_JSON|RUN/td2/config.yaml] --vocab_file VOCAB \
      --output_dir OUT [--num_labels N] [--architecture BertForTokenClassification]
"""
import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import mindspore as ms
from safetensors import SafetensorError
from safetensors.numpy import load_file

from src.atomic_files import atomic_directory
from src.checkpoint import LABEL_NAMES, MODEL_CONFIG, STATE_PREFIX, TASK, assign_parameters, load_checkpoint, \
    named_parameters, recorded_config, save_checkpoint, split_metadata, write_safetensors
from src.cli import read_json, require_file, run_cli
from src.config import bert_config, default_presets, load_config, resolve_model
from src.logger import get_logger
from src.tokenization import TOKENIZER_CONFIG, read_tokenizer_config, resolve_casing
from src.tinybert_model import MLM_HEAD_PREFIX, BertConfig, BertForMaskedLM, BertForQuestionAnswering, \
    BertForSequenceClassification, BertForTokenClassification, BertModel

# One row per tensor: (Hugging Face name without its `bert.` prefix, our name). "{n}" is the layer
# number. Import reads the rows left to right, export right to left.
NAME_TABLE = (
    ("embeddings.word_embeddings.weight", "bert.bert_embedding_lookup.embedding_table"),
    ("embeddings.position_embeddings.weight",
     "bert.bert_embedding_postprocessor.full_position_embedding.embedding_table"),
    ("embeddings.token_type_embeddings.weight",
     "bert.bert_embedding_postprocessor.token_type_embedding.embedding_table"),
    ("embeddings.LayerNorm.weight", "bert.bert_embedding_postprocessor.layernorm.gamma"),
    ("embeddings.LayerNorm.bias", "bert.bert_embedding_postprocessor.layernorm.beta"),
    ("encoder.layer.{n}.attention.self.query.weight",
     "bert.bert_encoder.layers.{n}.attention.attention.query_layer.weight"),
    ("encoder.layer.{n}.attention.self.query.bias",
     "bert.bert_encoder.layers.{n}.attention.attention.query_layer.bias"),
    ("encoder.layer.{n}.attention.self.key.weight",
     "bert.bert_encoder.layers.{n}.attention.attention.key_layer.weight"),
    ("encoder.layer.{n}.attention.self.key.bias",
     "bert.bert_encoder.layers.{n}.attention.attention.key_layer.bias"),
    ("encoder.layer.{n}.attention.self.value.weight",
     "bert.bert_encoder.layers.{n}.attention.attention.value_layer.weight"),
    ("encoder.layer.{n}.attention.self.value.bias",
     "bert.bert_encoder.layers.{n}.attention.attention.value_layer.bias"),
    ("encoder.layer.{n}.attention.output.dense.weight", "bert.bert_encoder.layers.{n}.attention.output.dense.weight"),
    ("encoder.layer.{n}.attention.output.dense.bias", "bert.bert_encoder.layers.{n}.attention.output.dense.bias"),
    ("encoder.layer.{n}.attention.output.LayerNorm.weight",
     "bert.bert_encoder.layers.{n}.attention.output.layernorm.gamma"),
    ("encoder.layer.{n}.attention.output.LayerNorm.bias",
     "bert.bert_encoder.layers.{n}.attention.output.layernorm.beta"),
    ("encoder.layer.{n}.intermediate.dense.weight", "bert.bert_encoder.layers.{n}.intermediate.weight"),
    ("encoder.layer.{n}.intermediate.dense.bias", "bert.bert_encoder.layers.{n}.intermediate.bias"),
    ("encoder.layer.{n}.output.dense.weight", "bert.bert_encoder.layers.{n}.output.dense.weight"),
    ("encoder.layer.{n}.output.dense.bias", "bert.bert_encoder.layers.{n}.output.dense.bias"),
    ("encoder.layer.{n}.output.LayerNorm.weight", "bert.bert_encoder.layers.{n}.output.layernorm.gamma"),
    ("encoder.layer.{n}.output.LayerNorm.bias", "bert.bert_encoder.layers.{n}.output.layernorm.beta"),
    ("pooler.dense.weight", "bert.dense.weight"),
    ("pooler.dense.bias", "bert.dense.bias"),
    ("classifier.weight", "dense_1.weight"),
    ("classifier.bias", "dense_1.bias"),
    ("qa_outputs.weight", "dense1.weight"),
    ("qa_outputs.bias", "dense1.bias"),
    ("cls.predictions.transform.dense.weight", "cls1.dense.weight"),
    ("cls.predictions.transform.dense.bias", "cls1.dense.bias"),
    ("cls.predictions.transform.LayerNorm.weight", "cls1.layernorm.gamma"),
    ("cls.predictions.transform.LayerNorm.bias", "cls1.layernorm.beta"),
    ("cls.predictions.bias", "cls1.output_bias"),
)
HF, OURS = 0, 1
_PATTERNS = tuple(tuple(re.compile(re.escape(name).replace(r"\{n\}", r"(?P<n>\d+)")) for name in row)
                  for row in NAME_TABLE)

POOLER, CLASSIFIER, QA_HEAD = "bert.dense.", "dense_1.", "dense1."
# HF architecture with a task head -> (our model of it, built from config and num_labels; our name prefix of
# its head). Sequence and token classifiers share the head's names: config.json or the checkpoint's
# `architecture` entry tells them apart.
HEAD_MODELS = {
    "BertForSequenceClassification": (BertForSequenceClassification, CLASSIFIER),
    "BertForTokenClassification": (BertForTokenClassification, CLASSIFIER),
    "BertForQuestionAnswering": (lambda config, _: BertForQuestionAnswering(config), QA_HEAD),
}
NO_POOLER = ("BertForTokenClassification", "BertForQuestionAnswering")  # HF builds these without a pooler
LABELLED = ("BertForSequenceClassification", "BertForTokenClassification")  # heads whose outputs have label names
# Position and token-type id buffers some HF versions saved with the weights: not parameters.
HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
HF_HEADS = "cls."  # masked-LM and next-sentence heads: distillation does not use them
# Kept only on an encoder without a task head, and only whole: data augmentation predicts words with it.
MLM_HEAD_NAMES = tuple(row[1] for row in NAME_TABLE if row[1].startswith(MLM_HEAD_PREFIX))
HF_MLM_DECODER = "cls.predictions.decoder.weight"  # BERT ties it to the word embeddings; some files repeat it
# Architectures whose weights are a BERT encoder plus, at most, a sequence classifier or MLM/NSP heads.
HF_ARCHITECTURES = ("BertModel", "BertForSequenceClassification", "BertForPreTraining", "BertForMaskedLM",
                    "BertForNextSentencePrediction", "BertForTokenClassification", "BertForQuestionAnswering")
SKIPPED_ON_EXPORT = ("fit_dense.", STATE_PREFIX, MLM_HEAD_PREFIX)  # projection, optimizer state, masked-LM head
HF_ACTIVATIONS = {"gelu_tanh": "gelu_new"}  # our hidden_act -> HF's; the others share names
# What a converted directory holds: only a directory with nothing else in it may be replaced.
OUTPUT_FILES = {"model.ckpt", "config.json", "vocab.txt", "model.safetensors", "tokenizer_config.json", "README.md"}


def rename(name, source, target):
    """The other side's name for `name` (source, target: HF or OURS), or None if the table lacks it."""
    for row, patterns in zip(NAME_TABLE, _PATTERNS):
        match = patterns[source].fullmatch(name)
        if match:
            return row[target].format(**match.groupdict())
    return None


def _shown(names):
    names = sorted(names)
    return ", ".join(names[:8]) + (f" ... ({len(names)} in all)" if len(names) > 8 else "")


def _read_hf_config(path):
    """Our BertConfig from a HF config.json, refusing variants our model would compute differently."""
    with open(path, encoding="utf-8") as f:
        values = json.load(f)
    if values.get("model_type", "bert") != "bert":
        raise ValueError(f"{path}: model_type {values['model_type']!r} is not supported, only 'bert'")
    unsupported = [a for a in values.get("architectures") or () if a not in HF_ARCHITECTURES]
    if unsupported:
        raise ValueError(f"{path}: architecture {unsupported[0]} is not supported, only {', '.join(HF_ARCHITECTURES)}")
    if values.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: position_embedding_type {values['position_embedding_type']!r} is not "
                         "supported, only 'absolute'")
    for flag in ("is_decoder", "add_cross_attention"):
        if values.get(flag):
            raise ValueError(f"{path}: {flag} = true is not supported: only encoder-only BERT converts")
    try:
        return BertConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _read_hf_weights(hf_dir):
    """{HF name: float32 or integer array} from model.safetensors, else pytorch_model.bin."""
    safetensors_path, pickle_path = hf_dir / "model.safetensors", hf_dir / "pytorch_model.bin"
    if safetensors_path.is_file():
        try:
            weights = load_file(str(safetensors_path))
        except SafetensorError as exc:
            raise ValueError(f"{safetensors_path} is not a readable safetensors file ({exc}): download or "
                             "export it again") from exc
    elif pickle_path.is_file():
        try:
            import torch  # only needed for this older format, so not a hard dependency
        except ImportError as exc:
            raise ValueError(f"{pickle_path} is a PyTorch file and torch is not installed: install torch, "
                             "or convert it to model.safetensors") from exc
        state = torch.load(pickle_path, map_location="cpu", weights_only=True)
        weights = {name: tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
                   for name, tensor in state.items()}
    else:
        raise FileNotFoundError(f"{hf_dir} has no model.safetensors or pytorch_model.bin")
    return {name: value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
            for name, value in weights.items()}


def _hf_to_ours(weights, source):
    """Rename HF weights to ours. Returns ({our name: array}, number of MLM/NSP head tensors ignored).

    The masked-LM head is kept when it is whole and no task head sits beside it."""
    renamed, unknown, heads, decoder = {}, [], 0, None
    for name, value in weights.items():
        name = name[len("bert."):] if name.startswith("bert.") else name
        # Checkpoints converted from the original TensorFlow BERT name LayerNorm parameters gamma/beta.
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        decoder = value if name == HF_MLM_DECODER else decoder
        if name.startswith(HF_HEADS) and rename(name, HF, OURS) is None:
            heads += 1
        elif name not in HF_BUFFERS:
            ours = rename(name, HF, OURS)
            if ours is None:
                unknown.append(name)
            else:
                renamed[ours] = value
    if unknown:
        raise ValueError(f"{source} has weights this converter does not understand: {_shown(unknown)}")
    mlm = [name for name in MLM_HEAD_NAMES if name in renamed]
    if len(mlm) < len(MLM_HEAD_NAMES) or any(head + "weight" in renamed for _, head in HEAD_MODELS.values()):
        heads += len(mlm)
        for name in mlm:
            del renamed[name]
    elif decoder is not None and not np.array_equal(decoder, renamed[NAME_TABLE[0][OURS]]):
        raise ValueError(f"{source}: its masked-LM decoder ({HF_MLM_DECODER}) is not the word embedding table; "
                         "only BERT's tied decoder converts: drop the cls.* tensors to import the encoder alone")
    return renamed, heads


def _head_architecture(weights, declared, source):
    """The HF architecture of weights with our names: the one whose head they hold, `declared`
    (from config.json or the checkpoint) choosing between heads of the same names; BertModel when
    they hold no head. Raises ValueError when `declared` is a head model whose head is absent."""
    held = [name for name, (_, head) in HEAD_MODELS.items() if head + "weight" in weights]
    if declared in HEAD_MODELS and declared not in held:
        raise ValueError(f"{source} is declared a {declared} but holds "
                         f"{f'the head of a {held[0]}' if held else 'no task head'}: declare the model its head "
                         f"belongs to")
    return declared if declared in held else held[0] if held else "BertModel"


def _load_into_model(config, weights, architecture, source, optional, hf_source):
    """Our model of `architecture` (an HEAD_MODELS key, or BertModel for the bare encoder) holding
    `weights`, checked name by name and shape by shape.

    optional: name prefixes that may be absent and keep their random initialisation.
    hf_source: whether errors should name tensors as the HF files do, not as we do.
    Returns ({our name: Parameter}, names left as initialised).
    """
    if architecture in HEAD_MODELS:
        build, head = HEAD_MODELS[architecture]
        params = named_parameters(build(config, weights[head + "weight"].shape[0]))
    elif architecture == "BertForMaskedLM":
        params = named_parameters(BertForMaskedLM(config))
    else:
        params = named_parameters(BertModel(config), "bert.")
    as_source = (lambda name: rename(name, OURS, HF)) if hf_source else (lambda name: name)
    unexpected = [as_source(name) for name in weights if name not in params]
    if unexpected:
        raise ValueError(f"{source} has weights that a {config.num_hidden_layers}-layer model of its config "
                         f"lacks: {_shown(unexpected)}")
    missing = [as_source(name) for name in params if name not in weights and not name.startswith(optional)]
    if missing:
        raise ValueError(f"{source} lacks weights the model needs: {_shown(missing)}")
    left = assign_parameters(params, {name: ms.Tensor(value) for name, value in weights.items()}, str(source),
                             allow_missing=optional)
    return params, left


GENERIC_LABEL = re.compile(r"LABEL_\d+")  # transformers' names for the outputs of a model given none


def hf_label_names(values, num_labels):
    """The label of each output from a HF config.json's id2label, in output order; [] when the model
    has no names of its own (none, or transformers' LABEL_i defaults)."""
    id2label = values.get("id2label") or {}
    try:
        by_index = {int(index): str(name) for index, name in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError(f"id2label {id2label!r} should map output numbers to label names") from None
    if sorted(by_index) != list(range(num_labels)) or all(GENERIC_LABEL.fullmatch(n) for n in by_index.values()):
        return []
    return [by_index[i] for i in range(num_labels)]


def align_labels(weights, label_names, task, source, label_map=None):
    """Reorder the classifier rows so that output i is the GLUE `task`'s class i.

    Distillation compares teacher and student logits output by output, and evaluation compares the
    argmax with the class ids `glue_to_records` wrote, so a classifier must follow the task's label
    order (TASKS[task].labels), whatever order it was fine-tuned with.

    Args:
        weights (dict[str, np.ndarray]): our names; holds dense_1.weight (num_labels, hidden) and dense_1.bias.
        label_names (list[str]): the model's label of each output; [] when unknown (kept in order).
        task (str): a key of glue_to_records.TASKS.
        source (str or Path): the model, for messages.
        label_map (dict[str, str], default None): model label -> task label, for names that differ.
    Returns:
        tuple (dict, list[str]): the reordered weights and the label names now in output order.
    Raises:
        ValueError: unknown task, another number of outputs, or names that are not the task's labels.
    """
    from src.glue_to_records import TASKS  # noqa: PLC0415 -- the converters own the task table
    if task not in TASKS:
        raise ValueError(f"--task {task!r} is not a GLUE task ({', '.join(TASKS)})")
    task_labels = list(TASKS[task].labels or [])
    rows = weights[CLASSIFIER + "weight"].shape[0]
    if rows != TASKS[task].num_labels:
        raise ValueError(f"{source} has {rows} outputs but task {task} has {TASKS[task].num_labels}: "
                         "is it a model fine-tuned on this task?")
    if not task_labels or not label_names:
        if task_labels:
            get_logger().info("%s names no labels: its outputs are taken as %s's (%s)", source, task,
                              ", ".join(task_labels))
        return weights, task_labels
    mapping = {key.strip().lower(): value.strip().lower() for key, value in (label_map or {}).items()}
    named = [mapping.get(name.strip().lower(), name.strip().lower()) for name in label_names]
    if sorted(named) != sorted(label.lower() for label in task_labels):
        raise ValueError(f"{source} labels its outputs {', '.join(label_names)}, which are not the labels of task "
                         f"{task} ({', '.join(task_labels)}): pass --label_map MODEL_LABEL=TASK_LABEL,... "
                         "to say which is which")
    order = [named.index(label.lower()) for label in task_labels]
    aligned = dict(weights)
    for name in (CLASSIFIER + "weight", CLASSIFIER + "bias"):
        aligned[name] = weights[name][order]
    if order != list(range(rows)):
        get_logger().info("reordered the outputs of %s from (%s) to task %s's order (%s)", source,
                          ", ".join(label_names), task, ", ".join(task_labels))
    return aligned, task_labels


def _imported_tokenizer_settings(hf_dir):
    """The tokenizer_config.json to keep beside the imported vocabulary: the model's own, with
    do_lower_case judged from the vocabulary where it has none."""
    settings = {"tokenizer_class": "BertTokenizer", **read_tokenizer_config(hf_dir / "vocab.txt")}
    vocab = (hf_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    try:
        settings["do_lower_case"] = resolve_casing(hf_dir / "vocab.txt", vocab)[0]
    except ValueError as err:  # the model's own files disagree: keep its setting, the converters will stop
        get_logger().warning("WARNING: %s", err)
    return settings


def import_hf(hf_dir, output_dir, task=None, label_map=None):
    """Hugging Face BERT directory -> output_dir/{model.ckpt, config.json, vocab.txt, tokenizer_config.json}.

    The checkpoint records its model config and label names (`model_config`, `label_names`), and
    tokenizer_config.json keeps the model's casing beside its vocabulary for the converters.

    Args:
        hf_dir (str or Path): holds config.json, model.safetensors or pytorch_model.bin, vocab.txt and
            optionally tokenizer_config.json.
        output_dir (str or Path): created, or replaced if it holds only a converted model.
        task (str, default None): a GLUE task: a sequence classifier's outputs are reordered to its
            label order (see `align_labels`).
        label_map (dict[str, str], default None): model label -> task label, for names that differ.
    Returns:
        dict: {"config": BertConfig, "num_labels": int or None, "num_tensors": int}.
    """
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"Hugging Face directory {hf_dir} does not exist")
    for needed in ("config.json", "vocab.txt"):
        if not (hf_dir / needed).is_file():
            raise FileNotFoundError(f"{hf_dir} has no {needed}")
    config = _read_hf_config(hf_dir / "config.json")
    weights, heads = _hf_to_ours(_read_hf_weights(hf_dir), hf_dir)
    logger = get_logger()
    if heads:
        logger.info("ignored %d masked-LM/next-sentence head tensors (cls.*) of %s", heads, hf_dir)
    hf_values = read_json(hf_dir / "config.json")
    declared = hf_values.get("architectures") or [None]
    architecture = _head_architecture(weights, declared[0], hf_dir)
    if architecture == "BertModel" and MLM_HEAD_NAMES[0] in weights:
        architecture = "BertForMaskedLM"
        logger.info("kept the masked-LM head (cls.predictions) of %s", hf_dir)
    num_labels = weights[HEAD_MODELS[architecture][1] + "weight"].shape[0] if architecture in HEAD_MODELS else None
    label_names = hf_label_names(hf_values, num_labels) if architecture in LABELLED else []
    if task and architecture != "BertForSequenceClassification":
        raise ValueError(f"--task reorders a sequence classifier's outputs, and {hf_dir} is a {architecture}: "
                         "leave --task out")
    if task:
        weights, label_names = align_labels(weights, label_names, task, hf_dir, label_map)
    params, left = _load_into_model(config, weights, architecture, hf_dir, optional=(POOLER,), hf_source=True)
    if left:
        logger.info("%s has no pooler: the pooler keeps its random initialisation", hf_dir)
    metadata = {MODEL_CONFIG: json.dumps(config.to_dict()), LABEL_NAMES: json.dumps(label_names), TASK: task or ""}
    with atomic_directory(output_dir, OUTPUT_FILES, "a converted model") as tmp:
        save_checkpoint(tmp / "model.ckpt", params,
                        {**metadata, "num_labels": num_labels, "architecture": architecture} if num_labels else metadata)
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(hf_dir / "vocab.txt", tmp / "vocab.txt")
        (tmp / TOKENIZER_CONFIG).write_text(json.dumps(_imported_tokenizer_settings(hf_dir), indent=2) + "\n",
                                            encoding="utf-8")
    return {"config": config, "num_labels": num_labels, "num_tensors": len(params)}


# What makes two configs different models: a --config that disagrees with the checkpoint on these is refused.
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _export_config(config_arg, metadata, checkpoint):
    """(BertConfig, label names or []) of the model in `checkpoint`.

    config_arg: a preset name, our config.json, a run's OUTPUT_DIR/PHASE/config.yaml (its student, or
    its teacher for the teacher phase; its task's labels), or None for the config the checkpoint records.
    """
    names = json.loads(metadata.get(LABEL_NAMES, "[]"))
    if config_arg is None:
        config = recorded_config(metadata)
        if config is None:
            raise ValueError(f"{checkpoint} does not record its model config: pass --config (the student's preset "
                             "name, its config.json, or the run's OUTPUT_DIR/PHASE/config.yaml)")
        return config, names
    config_arg = str(config_arg)
    if config_arg.endswith((".yaml", ".yml")):
        cfg = load_config([f"--config_path={config_arg}"])
        role = "teacher" if cfg.phase == "teacher" else "student"
        if not names and cfg.task.name:
            from src.glue_to_records import TASKS  # noqa: PLC0415 -- the converters own the task table
            names = list(TASKS[cfg.task.name].labels or [])
        config = bert_config(cfg, role).replace(compute_type="float32")
    else:
        try:
            config = resolve_model(config_arg, default_presets(), "--config")
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_arg} is not valid JSON ({err.msg} at line {err.lineno}): --config takes a "
                             "preset name, our config.json (as hf_convert import writes it) or a run's config.yaml") \
                from None
    recorded = recorded_config(metadata)
    differ = [f"{key} {getattr(config, key)} against {getattr(recorded, key)}" for key in SHAPE_KEYS
              if recorded is not None and getattr(config, key) != getattr(recorded, key)]
    if differ:
        raise ValueError(f"--config {config_arg} is not the model {checkpoint} records ({', '.join(differ)}): "
                         "leave --config out, the checkpoint says what model it holds")
    return config, names


def _hf_config(config, num_labels, architecture, label_names=()):
    values = {k: v for k, v in config.to_dict().items() if k != "compute_type"}
    values.update(model_type="bert", position_embedding_type="absolute", architectures=[architecture],
                  hidden_act=HF_ACTIVATIONS.get(config.hidden_act, config.hidden_act))
    if num_labels and architecture != "BertForQuestionAnswering":
        names = list(label_names) if len(label_names) == num_labels else [f"LABEL_{i}" for i in range(num_labels)]
        values.update(id2label={str(i): name for i, name in enumerate(names)},
                      label2id={name: i for i, name in enumerate(names)})
    return values


def export_hf(checkpoint, config_json, vocab_file, output_dir, num_labels=None, architecture=None, labels=None):
    """Our checkpoint -> a Hugging Face directory that transformers' BertModel (no head in the
    checkpoint) or the model of its head (BertForSequenceClassification, BertForTokenClassification,
    BertForQuestionAnswering) loads with no missing or unexpected weights.

    Args:
        checkpoint (str or Path): our .ckpt; fit_dense.* and state.* entries are skipped. Its
            `label_names` become id2label.
        config_json (str or Path or None): our BertConfig as JSON, a model_presets name (tinybert_4_312...),
            or the run's OUTPUT_DIR/PHASE/config.yaml; None: the `model_config` the checkpoint records.
        vocab_file (str or Path): the vocabulary the model was trained with.
        output_dir (str or Path): created, or replaced if it holds only a converted model.
        num_labels (int, default None): if given, the checkpoint's classifier must have this many outputs.
        architecture (str, default None): a HEAD_MODELS key; None takes the checkpoint's `architecture`
            entry, else the head's names (a `dense_1` classifier is BertForSequenceClassification).
        labels (list[str], default None): names for the classifier's outputs, in output order, written as
            id2label/label2id and in the model card instead of the names the checkpoint records (GLUE's
            own are often `0`, `1`).
    Returns:
        dict: {"architecture": str, "num_labels": int or None, "num_tensors": int}.
    Raises:
        ValueError: a checkpoint that is not the model `config_json` describes, a vocabulary larger than
            its embeddings, a classifier of other than num_labels outputs, labels that are not one distinct
            name per output.
    """
    tensors, metadata = split_metadata(load_checkpoint(checkpoint))
    config, label_names = _export_config(config_json, metadata, checkpoint)
    require_file(vocab_file, "vocab file", "pass the vocab.txt the model was trained with")
    vocab = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    if len(vocab) > config.vocab_size:
        raise ValueError(f"{vocab_file} has {len(vocab)} tokens but the model only {config.vocab_size} "
                         "embeddings: is it the vocabulary this model was trained with?")
    weights = {name: value.asnumpy() for name, value in tensors.items() if not name.startswith(SKIPPED_ON_EXPORT)}
    architecture = _head_architecture(weights, architecture or metadata.get("architecture"), checkpoint)
    found_labels = weights[HEAD_MODELS[architecture][1] + "weight"].shape[0] if architecture in HEAD_MODELS else None
    if num_labels is not None and num_labels != found_labels:
        raise ValueError(f"--num_labels {num_labels} but {checkpoint} has "
                         f"{f'a {found_labels}-label classifier' if found_labels else 'no classifier'}")
    if labels is not None:
        if not found_labels or architecture == "BertForQuestionAnswering":
            raise ValueError(f"--labels names a classifier's outputs, and {checkpoint} has no classifier")
        if len(labels) != found_labels or len(set(labels)) != len(labels) or not all(labels):
            raise ValueError(f"--labels {','.join(labels)}: give {found_labels} distinct names, one per output of "
                             f"{checkpoint}'s classifier, in output order")
        label_names = list(labels)
    params, _ = _load_into_model(config, weights, architecture, checkpoint, optional=(), hf_source=False)
    # HF keeps the encoder under `bert.` only when a head sits beside it.
    prefix = "bert." if found_labels else ""
    hf_weights = {}
    for name, param in params.items():
        if architecture in NO_POOLER and name.startswith(POOLER):
            continue
        hf_name = rename(name, OURS, HF)
        hf_weights[hf_name if hf_name.startswith(("classifier.", "qa_outputs.")) else prefix + hf_name] = \
            np.ascontiguousarray(param.asnumpy(), dtype=np.float32)
    hf_config = _hf_config(config, found_labels, architecture, label_names)
    do_lower_case, casing_source = resolve_casing(vocab_file, vocab)
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case,
                        "model_max_length": config.max_position_embeddings}
    get_logger().info("tokenizer do_lower_case = %s, %s", do_lower_case, casing_source)
    with atomic_directory(output_dir, OUTPUT_FILES, "a converted model") as tmp:
        write_safetensors(hf_weights, tmp / "model.safetensors", {"format": "pt"}, Path(output_dir) / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(vocab_file, tmp / "vocab.txt")
        from src.report import model_card  # noqa: PLC0415 -- the report reads the run's records
        names = [hf_config["id2label"][str(i)] for i in range(found_labels)] if "id2label" in hf_config else []
        (tmp / "README.md").write_text(model_card(checkpoint, hf_config["architectures"][0], names, config),
                                       encoding="utf-8")
    return {"architecture": hf_config["architectures"][0], "num_labels": found_labels,
            "num_tensors": len(hf_weights)}


def _parse_label_map(text):
    """'A=0,B=1' -> {'A': '0', 'B': '1'}; None -> None."""
    if text is None:
        return None
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 or not all(part.strip() for part in pair) for pair in pairs):
        raise ValueError(f"--label_map {text!r} should look like MODEL_LABEL=TASK_LABEL,MODEL_LABEL=TASK_LABEL")
    return {model.strip(): task.strip() for model, task in pairs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_ours = commands.add_parser("import", help="Hugging Face BERT directory -> our checkpoint")
    to_ours.add_argument("--hf_dir", required=True, help="holds config.json, model.safetensors, vocab.txt")
    to_ours.add_argument("--output_dir", required=True,
                         help="receives model.ckpt, config.json, vocab.txt, tokenizer_config.json")
    to_ours.add_argument("--task", default=None, help="a GLUE task: reorder a classifier's outputs to its label order")
    to_ours.add_argument("--label_map", default=None,
                         help="with --task, for label names that differ: MODEL_LABEL=TASK_LABEL,... (e.g. NEGATIVE=0,POSITIVE=1)")
    to_hf = commands.add_parser("export", help="our checkpoint -> Hugging Face BERT directory")
    to_hf.add_argument("--checkpoint", required=True)
    to_hf.add_argument("--config", default=None,
                       help="our BertConfig as JSON, a preset name of default_config.yaml, or the run's "
                            "OUTPUT_DIR/PHASE/config.yaml (default: the model config the checkpoint records)")
    to_hf.add_argument("--vocab_file", required=True)
    to_hf.add_argument("--output_dir", required=True)
    to_hf.add_argument("--num_labels", type=int, default=None, help="check the classifier has this many outputs")
    to_hf.add_argument("--architecture", choices=list(HEAD_MODELS), default=None,
                       help="the Hugging Face model to write (default: the checkpoint's, else from its head)")
    to_hf.add_argument("--labels", default=None,
                       help="names of the classifier's outputs, comma-separated, in output order (default: the "
                            "names the checkpoint records, e.g. SST-2's 0,1)")
    args = parser.parse_args(argv)
    if args.command == "import":
        result = import_hf(args.hf_dir, args.output_dir, args.task, _parse_label_map(args.label_map))
        print(f"imported {result['num_tensors']} tensors from {args.hf_dir} into {args.output_dir}"
              f" (num_labels {result['num_labels']})")
    else:
        result = export_hf(args.checkpoint, args.config, args.vocab_file, args.output_dir, args.num_labels,
                           args.architecture, args.labels.split(",") if args.labels else None)
        print(f"exported {result['num_tensors']} tensors from {args.checkpoint} into {args.output_dir}"
              f" as {result['architecture']}")


if __name__ == "__main__":
    run_cli(main)
