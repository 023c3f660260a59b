"""Atomic saving, strict loading with the missing names listed, zoo renaming, rotation."""
import os
import stat

import numpy as np
import pytest

from src.checkpoint import (assign_parameters, canonical_name, load_checkpoint, model_metadata, named_parameters,
                            recorded_config, rotate_checkpoints, save_checkpoint, split_metadata,
                            step_checkpoints)
from src.tinybert_model import BertForSequenceClassification, BertModel


def test_round_trip_with_metadata(tmp_path, student_config):
    model = BertForSequenceClassification(student_config, 2)
    path = tmp_path / "a" / "model.ckpt"
    save_checkpoint(path, named_parameters(model), {"step": 7, "phase": "td2"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.ckpt"]  # no temporary left
    tensors, metadata = split_metadata(load_checkpoint(path))
    assert metadata == {"step": 7, "phase": "td2"}
    other = BertForSequenceClassification(student_config, 2)
    assign_parameters(named_parameters(other), tensors, "ckpt")
    for (name, a), (_, b) in zip(model.parameters_and_names(), other.parameters_and_names()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=name)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_a_checkpoint_is_an_ordinary_file_of_the_umasks_mode(tmp_path, student_config, umask):
    """MindSpore writes 0400; a second save over the first (a rerun, a copy) must work and keep the mode."""
    path = tmp_path / "model.ckpt"
    previous = os.umask(umask)
    try:
        for step in (1, 2):
            save_checkpoint(path, named_parameters(BertModel(student_config)), {"step": step})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert split_metadata(load_checkpoint(path))[1] == {"step": 2}


def test_the_recorded_model_config_is_read_back(tmp_path, student_config):
    model = BertForSequenceClassification(student_config, 3)
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, named_parameters(model), model_metadata(model, 3, ["a", "b", "c"], "mnli", 64))
    metadata = split_metadata(load_checkpoint(path))[1]
    assert recorded_config(metadata).to_dict() == student_config.to_dict()
    assert recorded_config({"step": 7}) is None


def test_missing_parameters_are_listed(tmp_path, student_config):
    model = BertModel(student_config)
    weights = named_parameters(model, "bert.")
    del weights["bert.bert_encoder.layers.1.output.dense.weight"]
    save_checkpoint(tmp_path / "m.ckpt", weights)
    tensors, _ = split_metadata(load_checkpoint(tmp_path / "m.ckpt"))
    with pytest.raises(ValueError, match=r"teacher ckpt lacks parameters the model needs: "
                                         r"bert.bert_encoder.layers.1.output.dense.weight"):
        assign_parameters(named_parameters(BertModel(student_config), "bert."), tensors, "teacher ckpt")


def test_shape_mismatch_is_an_error(tmp_path, student_config, teacher_config):
    save_checkpoint(tmp_path / "t.ckpt", named_parameters(BertModel(teacher_config), "bert."))
    tensors, _ = split_metadata(load_checkpoint(tmp_path / "t.ckpt"))
    with pytest.raises(ValueError, match="does not match the model config"):
        assign_parameters(named_parameters(BertModel(student_config), "bert."), tensors, "ckpt")


def test_missing_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("name", ["model.safetensors", "model.onnx", "weights.txt"])
def test_a_file_of_another_format_is_named(tmp_path, name):
    (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{name} is not a MindSpore checkpoint \\(.ckpt\\): pass a .ckpt"):
        load_checkpoint(tmp_path / name)


@pytest.mark.parametrize("zoo_name, ours", [
    ("bert.tinybert_encoder.layers.0.intermediate.weight", "bert.bert_encoder.layers.0.intermediate.weight"),
    ("tinybert_embedding_lookup.embedding_table", "bert.bert_embedding_lookup.embedding_table"),
    ("teacher.bert_encoder.layers.3.output.dense.bias", "bert.bert_encoder.layers.3.output.dense.bias"),
    ("bert.bert.bert_encoder.layers.0.output.dense.bias", "bert.bert_encoder.layers.0.output.dense.bias"),
    ("bert_embedding_lookup.embedding_table", "bert.bert_embedding_lookup.embedding_table"),
    ("dense.weight", "bert.dense.weight"),
    ("dense_1.weight", "dense_1.weight"),
    ("fit_dense.weight", "fit_dense.weight"),
])
def test_zoo_names_are_canonicalised(zoo_name, ours):
    assert canonical_name(zoo_name) == ours


def test_rotation_keeps_newest(tmp_path):
    for step in (5, 10, 15, 100):
        (tmp_path / f"student_step_{step}.ckpt").write_text("x")
    (tmp_path / "student_best.ckpt").write_text("x")
    (tmp_path / "student_step_17.tmp.ckpt").write_text("an older version's temporary name")
    (tmp_path / ".student_step_20.partial.ckpt").write_text("a save killed half-way")
    rotate_checkpoints(tmp_path, "student", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".student_step_20.partial.ckpt", "student_best.ckpt", "student_step_100.ckpt", "student_step_15.ckpt",
        "student_step_17.tmp.ckpt"]
    assert [step for step, _ in step_checkpoints(tmp_path)] == [15, 100]
