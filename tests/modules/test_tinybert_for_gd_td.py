"""Layer mapping, the distillation cells against numpy, and the loss-scaled training step."""
import types

import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

from conftest import BATCH, SEQ
from src.tinybert_for_gd_td import (BertTrainWithLossScaleCell, IntermediateDistillationLoss,
                                    PredictionDistillationLoss, freeze, layer_mapping, make_fit_dense,
                                    make_scale_update_cell)
from src.tinybert_model import BertForSequenceClassification, BertModel

DISTILL = types.SimpleNamespace(layer_mapping="uniform", attention_loss="attention_mse", hidden_loss="hidden_mse",
                                attention_weight=1.0, hidden_weight=1.0, prediction_loss="soft_cross_entropy",
                                temperature=2.0, hard_label_weight=0.5)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (BATCH, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[::2, 5:] = 0
    segments = np.zeros_like(ids)
    labels = rng.integers(0, 3, BATCH).astype(np.int32)
    return [ms.Tensor(x) for x in (ids, mask, segments, labels)]


def test_uniform_mapping_is_the_papers():
    assert layer_mapping(4, 12) == [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]
    assert layer_mapping(2, 4) == [(0, 0), (1, 2), (2, 4)]


def test_explicit_mapping_and_errors():
    assert layer_mapping(2, 5, [[0, 0], [1, 2], [2, 5]]) == [(0, 0), (1, 2), (2, 5)]
    with pytest.raises(ValueError, match="multiple of the student's 4"):
        layer_mapping(4, 6)
    with pytest.raises(ValueError, match=r"pair \[3, 1\]"):
        layer_mapping(2, 4, [[3, 1]])
    with pytest.raises(ValueError, match="'uniformm' is neither 'uniform' nor a list"):
        layer_mapping(2, 4, "uniformm")


def _intermediate_cell(student_config, teacher_config):
    student = BertModel(student_config.for_inference())
    teacher = freeze(BertModel(teacher_config.for_inference()))
    fit_dense = make_fit_dense(student_config, teacher_config)
    return IntermediateDistillationLoss(student, teacher, fit_dense, DISTILL), student, teacher, fit_dense


def test_intermediate_loss_equals_numpy_composition(student_config, teacher_config):
    cell, student, teacher, fit_dense = _intermediate_cell(student_config, teacher_config)
    ids, mask, segments, _ = _batch()
    got = cell(cell.teacher_outputs(ids, mask, segments), ids, mask, segments).asnumpy()
    _, _, s_hidden, s_scores = [x for x in student(ids, mask, segments)]
    _, _, t_hidden, t_scores = [x for x in teacher(ids, mask, segments)]
    m = mask.asnumpy().astype(np.float64)
    pairs = (m[:, :, None] * m[:, None, :])[:, None]
    w, b = fit_dense.weight.asnumpy(), fit_dense.bias.asnumpy()
    expected = 0.0
    for s, t in [(1, 2), (2, 4)]:
        diff = s_scores[s - 1].asnumpy() - t_scores[t - 1].asnumpy()
        expected += (diff ** 2 * pairs).sum() / (pairs.sum() * 4)
    for s, t in [(0, 0), (1, 2), (2, 4)]:
        diff = s_hidden[s].asnumpy() @ w.T + b - t_hidden[t].asnumpy()
        expected += (diff ** 2 * m[..., None]).sum() / (m.sum() * 48)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_prediction_loss_equals_numpy(student_config, teacher_config):
    student = BertForSequenceClassification(student_config.for_inference(), 3)
    teacher = freeze(BertForSequenceClassification(teacher_config.for_inference(), 3))
    cell = PredictionDistillationLoss(student, teacher, DISTILL)
    ids, mask, segments, labels = _batch()
    got = cell(cell.teacher_outputs(ids, mask, segments), ids, mask, segments, labels).asnumpy()
    s = student(ids, mask, segments)[0].asnumpy().astype(np.float64)
    t = teacher(ids, mask, segments)[0].asnumpy().astype(np.float64)

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    soft = -(np.exp(log_softmax(t / 2.0)) * log_softmax(s / 2.0)).sum(-1).mean()
    hard = -log_softmax(s)[np.arange(BATCH), labels.asnumpy()].mean()
    np.testing.assert_allclose(got, soft + 0.5 * hard, rtol=1e-4)


def _train_cell(student_config, teacher_config, init_scale):
    cell, student, teacher, fit_dense = _intermediate_cell(student_config, teacher_config)
    optimizer = nn.AdamWeightDecay(cell.trainable_params(), learning_rate=1e-3)
    scale = types.SimpleNamespace(enabled=True, init_value=init_scale, factor=2, window=1000)
    train = BertTrainWithLossScaleCell(cell, optimizer, make_scale_update_cell(scale), clip_norm=1.0)
    train.set_train(True)
    return train, student, teacher, fit_dense


def _targets(train, *batch):
    return train.network.teacher_outputs(*batch)


def _snapshot(cell):
    return {name: p.asnumpy().copy() for name, p in cell.parameters_and_names()}


def test_step_trains_student_and_projection_not_teacher(student_config, teacher_config):
    train, student, teacher, fit_dense = _train_cell(student_config, teacher_config, 2.0 ** 16)
    names = {p.name for p in train.weights}
    assert not any(name.startswith("teacher.") for name in names)
    assert any(name.startswith("fit_dense.") for name in names)
    before_s, before_t, before_f = _snapshot(student), _snapshot(teacher), _snapshot(fit_dense)
    ids, mask, segments, _ = _batch()
    loss, overflow, scale = train(_targets(train, ids, mask, segments), ids, mask, segments)
    assert not overflow and scale.asnumpy() == 2.0 ** 16 and np.isfinite(loss.asnumpy())
    changed = [n for n, v in _snapshot(student).items() if not np.array_equal(v, before_s[n])]
    assert len(changed) >= len(before_s) - 2  # all but possibly unused position/type rows' params moved
    assert all(not np.array_equal(v, before_f[n]) for n, v in _snapshot(fit_dense).items())
    assert all(np.array_equal(v, before_t[n]) for n, v in _snapshot(teacher).items())


def test_loss_falls_over_steps(student_config, teacher_config):
    train, *_ = _train_cell(student_config, teacher_config, 2.0 ** 16)
    ids, mask, segments, _ = _batch()
    targets = _targets(train, ids, mask, segments)
    losses = [float(train(targets, ids, mask, segments)[0].asnumpy()) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]


def test_overflow_skips_step_and_lowers_scale(student_config, teacher_config):
    """An infinite target (as float16 overflow produces) must not touch the weights."""
    train, student, _, _ = _train_cell(student_config, teacher_config, 2.0 ** 16)
    before = _snapshot(student)
    ids, mask, segments, _ = _batch()
    hidden, scores = _targets(train, ids, mask, segments)
    hidden = (hidden[0] * float("inf"),) + hidden[1:]
    _, overflow, scale = train(ms.mutable((hidden, scores)), ids, mask, segments)
    assert bool(overflow.asnumpy())
    assert scale.asnumpy() == 2.0 ** 16  # the scale this step used
    assert train.loss_scale.asnumpy() == 2.0 ** 15  # lowered for the next one
    assert all(np.array_equal(v, before[n]) for n, v in _snapshot(student).items())
    assert train.optimizer.global_step.asnumpy().item() == 0


def test_teacher_outputs_equal_the_whole_teacher(teacher_config):
    """The layer-by-layer teacher run gives what one forward pass gives, and leaves the weights alone."""
    from src.tinybert_for_gd_td import TeacherOutputs
    teacher = freeze(BertForSequenceClassification(teacher_config.for_inference(), 3))
    before = _snapshot(teacher)
    ids, mask, segments, _ = _batch()
    hidden, scores = TeacherOutputs(teacher.bert, [0, 2, 4], [2, 4])(ids, mask, segments)
    logits = TeacherOutputs(teacher)(ids, mask, segments)
    ref_logits, ref_hidden, ref_scores = teacher(ids, mask, segments)
    for got, layer in zip(hidden, [0, 2, 4]):
        np.testing.assert_allclose(got.asnumpy(), ref_hidden[layer].asnumpy(), atol=1e-5)
    for got, layer in zip(scores, [2, 4]):
        np.testing.assert_allclose(got.asnumpy(), ref_scores[layer - 1].asnumpy(), atol=1e-5)
    np.testing.assert_allclose(logits.asnumpy(), ref_logits.asnumpy(), atol=1e-5)
    assert all(np.array_equal(v, before[n]) for n, v in _snapshot(teacher).items())
