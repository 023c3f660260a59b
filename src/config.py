"""Configuration: default_config.yaml, then a task yaml, then --section.key=value, checked once.

Every value must have the type of its default, every key must exist in the defaults, and a few keys
take only listed values; each violation is a one-line ValueError naming the key.
"""
import copy
from pathlib import Path

import yaml

from src.checkpoint import load_checkpoint, recorded_config, split_metadata
from src.cli import require_file
from src.tinybert_model import BertConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "default_config.yaml"
TASK_CONFIGS = ROOT / "src" / "task_configs"

CHOICES = {
    "device_target": ("CPU", "GPU", "Ascend"),
    "compute_type": ("auto", "float32", "float16"),
    "data.format": ("mindrecord", "tfrecord"),
    "student.init": ("auto", "random", "checkpoint", "teacher_layers"),
    "export.file_format": ("MINDIR", "ONNX", "AIR"),
}


def _registry_choices():
    """Keys whose allowed values are the names in a registry: read from the registries themselves."""
    from src.distill.matches import PRESETS
    from src.distill.schedules import TEMPERATURE_SCHEDULES, WEIGHT_SCHEDULES
    from src.phases import CHAINS, PHASES
    from src.tasks import TASK_TYPES
    return {"task.type": tuple(TASK_TYPES),
            "task.metric": tuple(dict.fromkeys(m for task in TASK_TYPES.values() for m in task.metrics)),
            "phase": tuple(p for p in PHASES if p != "gd") + tuple(CHAINS),
            "distill.preset": tuple(PRESETS),
            "distill.kd_weight_schedule": tuple(WEIGHT_SCHEDULES),
            "distill.hard_label_weight_schedule": tuple(WEIGHT_SCHEDULES),
            "distill.temperature_schedule": tuple(TEMPERATURE_SCHEDULES)}


def _check_losses(distill):
    """Loss names are checked against their kind's registry now, not inside graph compilation."""
    from src.distill.matches import parse_matches
    from src.losses import get_loss
    for key, kind in (("attention_loss", "feature"), ("hidden_loss", "feature"),
                      ("prediction_loss", "prediction"), ("label_loss", "label")):
        get_loss(kind, distill[key], f"distill.{key}")
    parse_matches(distill["intermediate_matches"])


def _check_task(task):
    from src.tasks import TASK_TYPES
    metrics = TASK_TYPES[task["type"]].metrics
    if task["metric"] not in metrics:
        raise ValueError(f"task.metric: {task['metric']!r} is not a metric of {task['type']}: one of {', '.join(metrics)}")


def pruning_settings(pruning):
    """The `pruning` section as a checked PruningConfig (alpha_ce/alpha_distil stay with the loss)."""
    from src.prune.settings import PruningConfig
    values = {k: v for k, v in pruning.to_dict().items() if k not in ("alpha_ce", "alpha_distil")}
    try:
        return PruningConfig(**values)
    except ValueError as error:
        raise ValueError(f"pruning: {error}") from None


ENSEMBLE_KEYS = ("model", "checkpoint", "weight")


def _check_data(data):
    """A setting that would be silently ignored is an error: only TFRecord files read a schema json."""
    if data["schema_file"] and data["format"] != "tfrecord":
        raise ValueError(f"data.schema_file is set ({data['schema_file']}) but data.format is {data['format']}: "
                         "a schema json describes TFRecord files only; leave data.schema_file empty, or set "
                         "data.format=tfrecord")


def _check_ensemble(rows):
    if not isinstance(rows, list):
        raise ValueError(f"teacher.ensemble: expected a list of {{model, checkpoint, weight}} rows, got {rows!r}")
    for i, row in enumerate(rows):
        key = f"teacher.ensemble[{i}]"
        if not isinstance(row, dict) or set(row) - set(ENSEMBLE_KEYS) or not {"model", "checkpoint"} <= set(row):
            raise ValueError(f"{key}: expected {{model: PRESET_OR_CONFIG_JSON, checkpoint: PATH, weight: 1.0}}, "
                             f"got {row!r}")
        weight = row.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ValueError(f"{key}.weight: expected a positive number, got {weight!r}")


def teacher_specs(cfg):
    """[(BertConfig, checkpoint, weight)] of the teachers: teacher.ensemble's rows, or the one teacher."""
    presets = cfg.model_presets.to_dict()
    rows = cfg.teacher.ensemble or [{"model": cfg.teacher.model, "checkpoint": cfg.teacher.checkpoint}]
    specs = []
    for i, row in enumerate(rows):
        key = f"teacher.ensemble[{i}].model" if cfg.teacher.ensemble else "teacher.model"
        config = resolve_model(row["model"], presets, key)
        if config.max_position_embeddings < cfg.seq_length:
            raise ValueError(f"seq_length {cfg.seq_length} exceeds {key}'s max_position_embeddings "
                             f"{config.max_position_embeddings}")
        specs.append((config.replace(compute_type=cfg.compute_type), row["checkpoint"], float(row.get("weight", 1.0))))
    return specs
POSITIVE = ("seq_length", "epochs", "batch_size", "micro_batches", "learning_rate", "eps", "clip_norm",
            "temperature", "num_labels", "init_value", "factor", "window", "save_steps", "max_num", "log_steps")
NON_NEGATIVE = ("end_learning_rate", "weight_decay", "warmup_ratio", "max_steps", "every_steps", "alpha_ce",
                "alpha_distil", "final_lambda",
                "attention_weight", "hidden_weight", "hard_label_weight", "power", "kd_weight",
                "temperature_beta", "temperature_gamma")
ZERO_MEANS_ANY = ("export.batch_size",)
# Keys whose value may also have another type than the default's: key -> the types allowed.
EITHER_TYPE = {"distill.layer_mapping": (list, str), "data.buckets": (list, int)}
# Sections whose entries users may add to (new model shapes).
OPEN_SECTIONS = ("model_presets",)


class Config:
    """Read-only attribute view of a nested dict: cfg.gd.learning_rate."""

    def __init__(self, values):
        for key, value in values.items():
            object.__setattr__(self, key, Config(value) if isinstance(value, dict) else value)

    def __setattr__(self, key, value):
        raise AttributeError("Config is read-only; pass overrides to load_config")

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in vars(self).items()}

    def __repr__(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _coerce(key, value, default):
    """Value converted to the default's type, or a ValueError naming the key."""
    if key in EITHER_TYPE and isinstance(value, EITHER_TYPE[key]) and not isinstance(value, bool):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kinds = " or ".join(kind.__name__ for kind in EITHER_TYPE.get(key, (type(default),)))
        raise ValueError(f"{key}: expected {kinds} like {default!r}, got {value!r}")
    return value


def _merge(base, updates, prefix=""):
    """Deep-merge `updates` into `base` (a copy), checking keys and types against `base`."""
    merged = copy.deepcopy(base)
    for key, value in updates.items():
        name = prefix + key
        if key not in merged:
            if prefix.rstrip(".") in OPEN_SECTIONS or prefix.split(".")[0] in OPEN_SECTIONS:
                merged[key] = value
                continue
            known = ", ".join(sorted(merged))
            raise ValueError(f"unknown config key {name!r}; known keys here: {known}")
        if isinstance(merged[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{name}: expected a mapping of keys, got {value!r}")
            merged[key] = _merge(merged[key], value, name + ".")
        else:
            merged[key] = _coerce(name, value, merged[key])
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one
    silently, so `log_steps: 10` followed later by `log_steps: 25` would hide the first setting."""


def _construct_unique_mapping(loader, node, deep=False):
    first_line = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            continue
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise ValueError(f"key {key!r} is given twice, on lines {first_line[key]} and {line}: keep one")
        first_line[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _read_yaml(path):
    path = Path(path)
    require_file(path, "config file")
    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.load(f, Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"config file {path} is not valid YAML: {error}") from None
        except ValueError as error:
            raise ValueError(f"config file {path}: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys")
    return values


def parse_overrides(argv):
    """['--a.b=1', '--config_path=x.yaml'] -> (config_path or None, {'a': {'b': 1}})."""
    config_path, overrides = None, {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"argument {arg!r} must look like --section.key=value")
        key, raw = arg[2:].split("=", 1)
        if key == "config_path":
            config_path = raw
            continue
        value = yaml.safe_load(raw) if raw else ""
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_path, overrides


def _validate(values, prefix="", choices=None):
    choices = choices or {**CHOICES, **_registry_choices()}
    for key, value in values.items():
        name = prefix + key
        if isinstance(value, dict):
            if key not in OPEN_SECTIONS:
                _validate(value, name + ".", choices)
            continue
        if name in choices and value not in choices[name]:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices[name])}")
        if key in POSITIVE and value <= 0 and not (name in ZERO_MEANS_ANY and value == 0):
            raise ValueError(f"{name}: must be positive, got {value!r}")
        if key in NON_NEGATIVE and value < 0:
            raise ValueError(f"{name}: must not be negative, got {value!r}")
    if values.get("warmup_ratio", 0) > 1:
        raise ValueError(f"{prefix}warmup_ratio: must be between 0 and 1")
    if "micro_batches" in values and values["batch_size"] % values["micro_batches"]:
        raise ValueError(f"{prefix}micro_batches: {values['micro_batches']} does not divide {prefix}batch_size "
                         f"{values['batch_size']}: use a divisor of it (each micro-batch holds batch_size / "
                         "micro_batches examples)")


def _apply_task(task, explicit):
    """A GLUE task name fixes num_labels and metric, unless the user set them explicitly."""
    if not task["name"] or task["type"] != "sequence_classification":
        return  # GLUE names only; NER and QA name their data freely
    from src.glue_to_records import TASKS  # the converters own the task table
    if task["name"] not in TASKS:
        raise ValueError(f"task.name: unknown task {task['name']!r}; choose one of {', '.join(sorted(TASKS))} "
                         "or leave it empty and set task.num_labels and task.metric")
    spec = TASKS[task["name"]]
    derived = {"num_labels": len(spec.labels) if spec.labels else 1, "metric": spec.metric}
    for key, value in derived.items():
        if key not in explicit:
            task[key] = value


def load_config(argv=(), defaults_path=DEFAULT_CONFIG):
    """Defaults <- task yaml (--config_path) <- command-line overrides, validated, read-only."""
    config_path, overrides = parse_overrides(argv)
    task_values = _read_yaml(config_path) if config_path else {}
    values = _merge(_merge(_read_yaml(defaults_path), task_values), overrides)
    _apply_task(values["task"], explicit={**task_values.get("task", {}), **overrides.get("task", {})})
    _validate(values)
    _check_losses(values["distill"])
    _check_data(values["data"])
    _check_ensemble(values["teacher"]["ensemble"])
    from src.multitask_data import task_rows  # it reads configs: imported here, not at the top
    task_rows(values["multitask"])
    _check_task(values["task"])
    pruning_settings(Config(values["pruning"]))
    if values["compute_type"] == "auto":
        values["compute_type"] = "float32" if values["device_target"] == "CPU" else "float16"
    return Config(values)


def resolve_model(name, presets, key):
    """BertConfig from a preset name, a config.json path, or a .ckpt this project wrote (the model its
    metadata records: e.g. a structurally pruned model, whose shape no preset has); `key` names the
    setting for errors. Raises ValueError for anything else."""
    if name in presets:
        return BertConfig.from_dict(presets[name])
    if Path(name).is_file() and name.endswith(".ckpt"):
        recorded = recorded_config(split_metadata(load_checkpoint(name, keep_masks=True))[1])  # the metadata only
        if recorded is None:
            raise ValueError(f"{key}: {name} records no model config: give a preset or a config.json instead")
        return recorded
    if Path(name).is_file():
        return BertConfig.from_json_file(name)
    raise ValueError(f"{key}: {name!r} is neither a preset ({', '.join(presets)}), an existing config.json file, "
                     "nor a checkpoint recording its model")


def default_presets():
    return _read_yaml(DEFAULT_CONFIG)["model_presets"]


def bert_config(cfg, role):
    """BertConfig of 'teacher' or 'student': a preset name or a config.json path, with compute type."""
    config = resolve_model(getattr(cfg, role).model, cfg.model_presets.to_dict(), f"{role}.model")
    if config.max_position_embeddings < cfg.seq_length:
        raise ValueError(f"seq_length {cfg.seq_length} exceeds {role}.model's max_position_embeddings "
                         f"{config.max_position_embeddings}")
    return config.replace(compute_type=cfg.compute_type)


def config_changes(cfg, defaults_path=DEFAULT_CONFIG):
    """YAML of the resolved values that differ from the defaults (what this run chose)."""
    def diff(values, defaults):
        changed = {}
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(defaults.get(key), dict):
                nested = diff(value, defaults[key])
                if nested:
                    changed[key] = nested
            elif defaults.get(key, object()) != value:
                changed[key] = value
        return changed
    return yaml.safe_dump(diff(cfg.to_dict(), _read_yaml(defaults_path)), sort_keys=False) or "{}\n"


def save_config(cfg, path):
    """The resolved config beside the checkpoints, so a run can be repeated exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(repr(cfg), encoding="utf-8")
    tmp.replace(path)
