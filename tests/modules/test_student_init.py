"""Student initialised from teacher layers: the right layers, copied exactly."""
import numpy as np
import pytest

from src.student_init import copy_teacher_layers, teacher_layer_choice
from src.tinybert_model import BertModel


def test_layer_choice():
    assert teacher_layer_choice(2, 6, []) == [3, 6]
    assert teacher_layer_choice(4, 12, []) == [3, 6, 9, 12]
    assert teacher_layer_choice(2, 6, [1, 4]) == [1, 4]
    with pytest.raises(ValueError, match="must name 2 teacher layers"):
        teacher_layer_choice(2, 6, [1, 7])


def test_copies_chosen_layers(teacher_config):
    teacher = BertModel(teacher_config)
    student = BertModel(teacher_config.replace(num_hidden_layers=2))
    assert copy_teacher_layers(student, teacher, [1, 3]) == [1, 3]
    t = {n: p.asnumpy() for n, p in teacher.parameters_and_names()}
    s = {n: p.asnumpy() for n, p in student.parameters_and_names()}
    prefix = "bert_encoder.layers."
    np.testing.assert_array_equal(s[prefix + "0.intermediate.weight"], t[prefix + "0.intermediate.weight"])
    np.testing.assert_array_equal(s[prefix + "1.output.dense.bias"], t[prefix + "2.output.dense.bias"])
    np.testing.assert_array_equal(s["bert_embedding_lookup.embedding_table"], t["bert_embedding_lookup.embedding_table"])
    np.testing.assert_array_equal(s["dense.weight"], t["dense.weight"])


def test_width_mismatch_is_an_error(student_config, teacher_config):
    with pytest.raises(ValueError, match="hidden_size 32 vs 48"):
        copy_teacher_layers(BertModel(student_config), BertModel(teacher_config))
