"""Config layering (defaults <- task yaml <- command line) and its one-line errors."""
import json

import numpy as np
import pytest
from mindspore import Tensor

from src.checkpoint import MODEL_CONFIG, save_checkpoint
from src.config import TASK_CONFIGS, bert_config, load_config, parse_overrides


def test_defaults_load_and_resolve_compute_type():
    cfg = load_config([])
    assert cfg.gd.learning_rate == 5.0e-5 and cfg.loss_scale.enabled is True
    assert cfg.compute_type == "float32"  # auto on CPU
    assert load_config(["--device_target=GPU"]).compute_type == "float16"


def test_nested_override_and_yaml_typed_values():
    cfg = load_config(["--gd.learning_rate=1e-4", "--loss_scale.enabled=false", "--seq_length=64",
                       "--distill.layer_mapping=[[0,0],[1,6]]", "--data.buckets=[32,48]"])
    assert cfg.gd.learning_rate == 1e-4 and cfg.loss_scale.enabled is False and cfg.seq_length == 64
    assert cfg.distill.layer_mapping == [[0, 0], [1, 6]] and cfg.data.buckets == [32, 48]
    assert load_config(["--data.buckets=6"]).data.buckets == 6


def test_task_yaml_then_command_line():
    cfg = load_config([f"--config_path={TASK_CONFIGS / 'sst2.yaml'}", "--td2.epochs=5"])
    assert cfg.task.name == "sst2" and cfg.task.num_labels == 2 and cfg.seq_length == 64
    assert cfg.td1.epochs == 20 and cfg.td2.epochs == 5
    assert cfg.td1.batch_size == 32  # untouched defaults survive the merge


@pytest.mark.parametrize("name", ["sst2", "mnli", "qnli", "mrpc", "stsb", "cola"])
def test_every_task_yaml_loads(name):
    cfg = load_config([f"--config_path={TASK_CONFIGS / (name + '.yaml')}"])
    assert cfg.task.name == name


def test_task_name_sets_labels_and_metric_unless_given():
    assert load_config(["--task.name=mnli"]).task.num_labels == 3
    assert load_config(["--task.name=stsb"]).task.num_labels == 1
    assert load_config(["--task.name=cola"]).task.metric == "mcc"
    assert load_config(["--task.name=cola", "--task.metric=accuracy"]).task.metric == "accuracy"


@pytest.mark.parametrize("argv, message", [
    (["--gd.learnin_rate=1"], "unknown config key 'gd.learnin_rate'"),
    (["--gd.epochs=two"], "gd.epochs: expected int like 3, got 'two'"),
    (["--data.buckets=true"], "data.buckets: expected list or int like 4, got True"),
    (["--loss_scale.enabled=maybe"], "loss_scale.enabled: expected bool"),
    (["--device_target=TPU"], "device_target: 'TPU' is not one of CPU, GPU, Ascend"),
    (["--td1.batch_size=0"], "td1.batch_size: must be positive"),
    (["--gd.warmup_ratio=2.0"], "warmup_ratio: must be between 0 and 1"),
    (["--td2.micro_batches=0"], "td2.micro_batches: must be positive"),
    (["--td1.micro_batches=5"], "td1.micro_batches: 5 does not divide td1.batch_size 32: use a divisor of it"),
    (["--task.name=imdb"], "task.name: unknown task 'imdb'"),
    (["gd.epochs=3"], "must look like --section.key=value"),
    (["--config_path=/nonexistent.yaml"], "config file /nonexistent.yaml does not exist"),
    (["--data.schema_file=s.json"], "but data.format is mindrecord: a schema json describes TFRecord files only"),
])
def test_bad_values_name_the_key(argv, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(argv)


def test_model_from_preset_or_json(tmp_path):
    cfg = load_config(["--student.model=tinybert_4_384"])
    assert bert_config(cfg, "student").hidden_size == 384
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, '
                    '"intermediate_size": 128, "vocab_size": 100, "architectures": ["BertModel"]}')
    assert bert_config(load_config([f"--teacher.model={path}"]), "teacher").num_hidden_layers == 2
    with pytest.raises(ValueError, match="teacher.model: 'bert_huge' is neither a preset"):
        bert_config(load_config(["--teacher.model=bert_huge"]), "teacher")
    with pytest.raises(ValueError, match="seq_length 1024 exceeds"):
        bert_config(load_config(["--seq_length=1024"]), "student")


def test_model_from_a_checkpoint_that_records_it(tmp_path):
    """A structurally pruned model has a shape no preset has: student.model may name its checkpoint."""
    recorded = {"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 96, "pruned_heads": {"1": [0, 2]}}
    weight = {"w": Tensor(np.ones((2, 2), np.float32))}
    save_checkpoint(tmp_path / "compact.ckpt", weight, {MODEL_CONFIG: json.dumps(recorded)})
    config = bert_config(load_config([f"--student.model={tmp_path / 'compact.ckpt'}"]), "student")
    assert (config.intermediate_size, config.num_heads_in_layer(0), config.num_heads_in_layer(1)) == (96, 4, 2)
    save_checkpoint(tmp_path / "bare.ckpt", weight)
    with pytest.raises(ValueError, match="student.model: .*bare.ckpt records no model config: give a preset"):
        bert_config(load_config([f"--student.model={tmp_path / 'bare.ckpt'}"]), "student")


def test_config_is_read_only():
    cfg = load_config([])
    with pytest.raises(AttributeError):
        cfg.seed = 3


def test_parse_overrides_builds_nested_dict():
    assert parse_overrides(["--a.b.c=1", "--config_path=x"]) == ("x", {"a": {"b": {"c": 1}}})


def test_a_key_given_twice_in_a_yaml_is_refused(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("td2:\n  epochs: 3\n  learning_rate: 1.0e-4\n  epochs: 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"config file {path}: key 'epochs' is given twice, on lines 2 and 4"):
        load_config([f"--config_path={path}"])
    path.write_text("td1:\n  epochs: 3\ntd2:\n  epochs: 5\n", encoding="utf-8")  # one key per mapping: fine
    assert load_config([f"--config_path={path}"]).td2.epochs == 5
