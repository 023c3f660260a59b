"""The distillation loss Cell against numpy compositions, the teacher sources, and the loss-scaled step."""
import types

import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

from conftest import BATCH, SEQ
from src.distill.matches import Match, resolve_matches
from src.distill.teacher import CachedTeacher, LiveTeacher, freeze
from src.dropout import number_dropout_sites, set_dropout_step
from src.prune.apply import apply_masking, cache_masks
from src.prune.settings import PruningConfig
from src.tinybert_for_gd_td import (BertTrainWithLossScaleCell, DistillationLoss, TrainingStep, make_projections,
                                    make_scale_update_cell)
from src.tinybert_model import BertForSequenceClassification, BertModel

DISTILL = types.SimpleNamespace(
    preset="tinybert", intermediate_matches=[], layer_mapping="uniform", attention_loss="attention_mse",
    hidden_loss="hidden_mse", attention_weight=1.0, hidden_weight=1.0, prediction_loss="soft_cross_entropy",
    label_loss="cross_entropy", temperature_schedule="constant", temperature_beta=1.0, temperature_gamma=2.0,
    temperature_squared=False)
SCHEDULE = ms.Tensor([1.0, 0.5, 2.0, 0.0], ms.float32)  # kd weight, hard-label weight, temperature, regu_lambda


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (BATCH, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[::2, 5:] = 0
    segments = np.zeros_like(ids)
    segments[:, 4:] = 1
    labels = rng.integers(0, 3, BATCH).astype(np.int32)
    return [ms.Tensor(x) for x in (ids, mask, segments, labels)]


def _log_softmax(x, axis=-1):
    x = x - x.max(axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis, keepdims=True))


def _intermediate_cell(student_config, teacher_config, distill=DISTILL, pruning_method=None):
    student = BertModel(student_config.for_inference())
    if pruning_method:  # half of each dense matrix kept, scores drawn at random
        apply_masking(student, PruningConfig(pruning_method=pruning_method, mask_init="uniform", mask_scale=1.0,
                                             initial_threshold=0.5, final_threshold=0.5))
    teacher = freeze(BertModel(teacher_config.for_inference()))
    matches = resolve_matches(distill, student_config, teacher_config)
    projections = make_projections(matches, student_config, teacher_config)
    cell = DistillationLoss(student, ("matches",), distill, matches, projections)
    return cell, LiveTeacher(teacher, matches), student, teacher, projections


def test_tinybert_preset_equals_numpy_composition(student_config, teacher_config):
    cell, source, student, teacher, projections = _intermediate_cell(student_config, teacher_config)
    ids, mask, segments, _ = _batch()
    total, components = cell(source(ids, mask, segments), SCHEDULE, ids, mask, segments)
    _, _, s_hidden, s_scores = student(ids, mask, segments)
    _, _, t_hidden, t_scores = teacher(ids, mask, segments)
    m = mask.asnumpy().astype(np.float64)
    pairs = (m[:, :, None] * m[:, None, :])[:, None]
    w, b = projections["fit_dense"].weight.asnumpy(), projections["fit_dense"].bias.asnumpy()
    expected = []
    for s, t in [(0, 0), (1, 2), (2, 4)]:  # uniform: 2 student layers, 4 teacher layers
        diff = s_hidden[s].asnumpy() @ w.T + b - t_hidden[t].asnumpy()
        expected.append((diff ** 2 * m[..., None]).sum() / (m.sum() * 48))
    for s, t in [(1, 2), (2, 4)]:
        diff = s_scores[s - 1].asnumpy() - t_scores[t - 1].asnumpy()
        expected.append((diff ** 2 * pairs).sum() / (pairs.sum() * 4))
    np.testing.assert_allclose(components.asnumpy(), expected + [0.0, 0.0, 0.0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(total.asnumpy(), sum(expected), rtol=1e-4)


def test_value_relation_match_equals_numpy(student_config, teacher_config):
    """MiniLM's value relation, computed from each layer's value projection, on both sides."""
    distill = types.SimpleNamespace(**{**vars(DISTILL), "intermediate_matches": [
        {"layer_S": 2, "layer_T": 3, "feature": "value_relation", "loss": "relation_kl", "weight": 2.0,
         "relation_heads": 2}]})
    cell, source, student, teacher, _ = _intermediate_cell(student_config, teacher_config, distill)
    # Random weights give near-uniform relations and a KL near 1e-3, where float32 cancellation is
    # the whole difference; larger value weights make the relations peaked and the KL well above it.
    for model, layer in ((student, 2), (teacher, 3)):
        value = model.bert_encoder.layers[layer - 1].attention.attention.value_layer.weight
        value.set_data(value * 4.0)
    ids, mask, segments, _ = _batch(1)
    total, _ = cell(source(ids, mask, segments), SCHEDULE, ids, mask, segments)
    m = mask.asnumpy().astype(np.float64)

    def relation(model, layer, hidden):
        dense = model.bert_encoder.layers[layer - 1].attention.attention.value_layer
        v = hidden[layer - 1].asnumpy() @ dense.weight.asnumpy().T + dense.bias.asnumpy()  # (B, T, H)
        v = v.reshape(BATCH, SEQ, 2, -1).transpose(0, 2, 1, 3)
        logits = v @ v.transpose(0, 1, 3, 2) / np.sqrt(v.shape[-1])
        return _log_softmax(logits + (1 - m)[:, None, None, :] * -10000.0)

    s_log = relation(student, 2, student(ids, mask, segments)[2])
    t_log = relation(teacher, 3, teacher(ids, mask, segments)[2])
    kl = (np.exp(t_log) * (t_log - s_log)).sum(-1)  # (B, r, T)
    expected = 2.0 * (kl * m[:, None, :]).sum() / (m.sum() * 2)
    assert expected > 1e-2
    np.testing.assert_allclose(total.asnumpy(), expected, rtol=1e-4)


def test_prediction_and_label_terms_equal_numpy(student_config, teacher_config):
    student = BertForSequenceClassification(student_config.for_inference(), 3)
    teacher = freeze(BertForSequenceClassification(teacher_config.for_inference(), 3))
    cell = DistillationLoss(student, ("prediction", "label"), DISTILL)
    source = LiveTeacher(teacher, with_logits=True)
    ids, mask, segments, labels = _batch()
    total, components = cell(source(ids, mask, segments), SCHEDULE, ids, mask, segments, labels)
    s = student(ids, mask, segments)[0].asnumpy().astype(np.float64)
    t = teacher(ids, mask, segments)[0].asnumpy().astype(np.float64)
    soft = -(np.exp(_log_softmax(t / 2.0)) * _log_softmax(s / 2.0)).sum(-1).mean()
    hard = -_log_softmax(s)[np.arange(BATCH), labels.asnumpy()].mean()
    np.testing.assert_allclose(components.asnumpy(), [soft, 0.5 * hard, 0.0], rtol=1e-4)
    np.testing.assert_allclose(total.asnumpy(), soft + 0.5 * hard, rtol=1e-4)


def test_cached_logits_give_the_live_teachers_loss(student_config, teacher_config):
    student = BertForSequenceClassification(student_config.for_inference(), 3)
    teacher = freeze(BertForSequenceClassification(teacher_config.for_inference(), 3))
    cell = DistillationLoss(student, ("prediction", "label"), DISTILL)
    ids, mask, segments, labels = _batch()
    live = LiveTeacher(teacher, with_logits=True)
    logits = live(ids, mask, segments)[-1].asnumpy()
    order = np.random.default_rng(3).permutation(BATCH)  # the cache is indexed by example id
    cache = np.zeros_like(logits)
    cache[order] = logits
    cached = CachedTeacher(cache)(ids, mask, segments, labels, ms.Tensor(order.astype(np.int64)))
    np.testing.assert_array_equal(cached[0].asnumpy(), logits)
    a = cell(live(ids, mask, segments), SCHEDULE, ids, mask, segments, labels)[0].asnumpy()
    b = cell(cached, SCHEDULE, ids, mask, segments, labels)[0].asnumpy()
    assert a == b


def test_live_teacher_equals_the_whole_teacher(teacher_config):
    """The layer-by-layer teacher gives what one forward pass gives, and leaves the weights alone."""
    teacher = freeze(BertForSequenceClassification(teacher_config.for_inference(), 3))
    before = {n: p.asnumpy().copy() for n, p in teacher.parameters_and_names()}
    matches = (Match((0,), (0,), "hidden", "hidden_mse"), Match((1,), (2,), "attention", "attention_mse"),
               Match((1,), (4,), "attention_probs", "attention_mse"), Match((1,), (3,), "cls", "pkd"))
    ids, mask, segments, _ = _batch()
    h0, s2, p4, c3, logits = LiveTeacher(teacher, matches, with_logits=True)(ids, mask, segments)
    ref_logits, ref_hidden, ref_scores = teacher(ids, mask, segments)
    m = mask.asnumpy()
    probs = np.exp(_log_softmax(ref_scores[3].asnumpy() + (1 - m)[:, None, None, :] * -10000.0))
    for got, want in ((h0, ref_hidden[0].asnumpy()), (s2, ref_scores[1].asnumpy()), (p4, probs),
                      (c3, ref_hidden[3].asnumpy()[:, 0]), (logits, ref_logits.asnumpy())):
        np.testing.assert_allclose(got.asnumpy(), want, atol=1e-5)
    assert all(np.array_equal(p.asnumpy(), before[n]) for n, p in teacher.parameters_and_names())


def _train_cell(student_config, teacher_config, init_scale):
    cell, source, student, teacher, projections = _intermediate_cell(student_config, teacher_config)
    optimizer = nn.AdamWeightDecay(cell.trainable_params(), learning_rate=1e-3)
    scale = types.SimpleNamespace(enabled=True, init_value=init_scale, factor=2, window=1000)
    train = BertTrainWithLossScaleCell(cell, optimizer, make_scale_update_cell(scale), clip_norm=1.0)
    train.set_train(True)
    return train, source, student, teacher, projections["fit_dense"]


def _snapshot(cell):
    return {name: p.asnumpy().copy() for name, p in cell.parameters_and_names()}


def test_step_trains_student_and_projection_not_teacher(student_config, teacher_config):
    train, source, student, teacher, fit_dense = _train_cell(student_config, teacher_config, 2.0 ** 16)
    before_s, before_t, before_f = _snapshot(student), _snapshot(teacher), _snapshot(fit_dense)
    ids, mask, segments, _ = _batch()
    loss, _, overflow, scale = train(source(ids, mask, segments), SCHEDULE, ids, mask, segments)
    assert not overflow and scale.asnumpy() == 2.0 ** 16 and np.isfinite(loss.asnumpy())
    changed = [n for n, v in _snapshot(student).items() if not np.array_equal(v, before_s[n])]
    assert len(changed) >= len(before_s) - 2  # all but possibly the pooler, which no loss reaches
    assert all(not np.array_equal(v, before_f[n]) for n, v in _snapshot(fit_dense).items())
    assert all(np.array_equal(v, before_t[n]) for n, v in _snapshot(teacher).items())


def test_loss_falls_over_steps(student_config, teacher_config):
    train, source, *_ = _train_cell(student_config, teacher_config, 2.0 ** 16)
    ids, mask, segments, _ = _batch()
    targets = source(ids, mask, segments)
    losses = [float(train(targets, SCHEDULE, ids, mask, segments)[0].asnumpy()) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]


def test_overflow_skips_step_and_lowers_scale(student_config, teacher_config):
    """An infinite target (as float16 overflow produces) must not touch the weights."""
    train, source, student, _, _ = _train_cell(student_config, teacher_config, 2.0 ** 16)
    before = _snapshot(student)
    ids, mask, segments, _ = _batch()
    targets = list(source(ids, mask, segments))
    targets[0] = targets[0] * float("inf")
    _, _, overflow, scale = train(ms.mutable(tuple(targets)), SCHEDULE, ids, mask, segments)
    assert bool(overflow.asnumpy())
    assert scale.asnumpy() == 2.0 ** 16  # the scale this step used
    assert train.loss_scale.asnumpy() == 2.0 ** 15  # lowered for the next one
    assert all(np.array_equal(v, before[n]) for n, v in _snapshot(student).items())
    assert train.optimizer.global_step.asnumpy().item() == 0


def test_gd_and_task_students_share_one_cell(student_config, teacher_config):
    """A classifier student in task phase 1 gets the same intermediate loss as its bare encoder."""
    cell, source, student, _, projections = _intermediate_cell(student_config, teacher_config)
    classifier = BertForSequenceClassification(student_config.for_inference(), 3)
    for (_, a), (_, b) in zip(classifier.bert.parameters_and_names(), student.parameters_and_names()):
        a.set_data(b.data)
    task_cell = DistillationLoss(classifier, ("matches",), DISTILL, source.matches, projections)
    ids, mask, segments, labels = _batch()
    targets = source(ids, mask, segments)
    a = cell(targets, SCHEDULE, ids, mask, segments)[0].asnumpy()
    b = task_cell(targets, SCHEDULE, ids, mask, segments, labels)[0].asnumpy()
    assert a == pytest.approx(b, rel=1e-6)


def test_ensemble_soft_target_is_the_weighted_mean_of_logits():
    from src.distill.teacher import combine_logits
    rng = np.random.default_rng(4)
    logits = [rng.normal(size=(5, 3)) for _ in range(3)]
    weights = [1.0, 2.0, 0.5]
    expected = (logits[0] * 1.0 + logits[1] * 2.0 + logits[2] * 0.5) / 3.5
    np.testing.assert_allclose(combine_logits(logits, weights), expected, rtol=1e-6)
    # softmax of the mean logits: the normalised weighted geometric mean of the distributions
    probs = [np.exp(_log_softmax(x)) for x in logits]
    geometric = np.prod([p ** (w / 3.5) for p, w in zip(probs, weights)], axis=0)
    np.testing.assert_allclose(np.exp(_log_softmax(combine_logits(logits, weights).astype(np.float64))),
                               geometric / geometric.sum(-1, keepdims=True), rtol=1e-5)


def test_ensemble_takes_each_match_from_its_teacher(student_config, teacher_config):
    from src.distill.teacher import TeacherEnsemble
    teachers = [freeze(BertForSequenceClassification(teacher_config.for_inference(), 3)) for _ in range(2)]
    matches = (Match((1,), (2,), "hidden", "hidden_mse", teacher=1), Match((0,), (0,), "hidden", "hidden_mse"))
    ids, mask, segments, _ = _batch()
    from_1, from_0, logits = TeacherEnsemble(teachers, [1.0, 3.0], matches, with_logits=True)(ids, mask, segments)
    outputs = [teacher(ids, mask, segments) for teacher in teachers]
    np.testing.assert_allclose(from_1.asnumpy(), outputs[1][1][2].asnumpy(), atol=1e-5)
    np.testing.assert_allclose(from_0.asnumpy(), outputs[0][1][0].asnumpy(), atol=1e-5)
    np.testing.assert_allclose(logits.asnumpy(), (outputs[0][0].asnumpy() + 3 * outputs[1][0].asnumpy()) / 4,
                               atol=1e-5)


@pytest.mark.parametrize("pruning_method", [None, "magnitude", "topK"])
def test_micro_batches_give_the_whole_batch_step(student_config, teacher_config, pruning_method):
    """A batch cut into 3 micro-batches (gradients summed, one update on their mean) trains the student
    as the whole batch does, step for step, when every slice has as many real tokens (no padding).
    Plain SGD without clipping, so the updates are the gradients themselves, scale included. A masked
    student sliced reads masks cached once a step (`cache_masks`); the whole batch computes them."""
    cells = []
    for _ in range(2):
        loss, source, student, _, _ = _intermediate_cell(student_config, teacher_config,
                                                         pruning_method=pruning_method)
        scale = types.SimpleNamespace(enabled=True, init_value=2.0 ** 16, factor=2, window=1000)
        cells.append((BertTrainWithLossScaleCell(loss, nn.SGD(loss.trainable_params(), learning_rate=0.5),
                                                 make_scale_update_cell(scale), clip_norm=1e9), student))
    (whole, student), (sliced, student_b) = cells
    for a, b in zip(whole.weights, sliced.weights):
        b.set_data(a.data.copy())
    initial = _snapshot(student)
    refresh = cache_masks(student_b)
    assert (refresh is None) == (pruning_method is None)
    steps = TrainingStep(whole), TrainingStep(sliced, micro_batches=3, before_step=refresh)
    for train_step in steps:
        train_step.set_train(True)
    rng = np.random.default_rng(3)
    for step in range(3):
        ids = ms.Tensor(rng.integers(1, 99, (12, SEQ)).astype(np.int32))
        inputs = (ids, ms.Tensor(np.ones((12, SEQ), np.int32)), ms.Tensor(np.zeros((12, SEQ), np.int32)))
        (loss_a, parts_a, overflow_a, _), (loss_b, parts_b, overflow_b, _) = (
            train_step(step, source, SCHEDULE, inputs, inputs) for train_step in steps)
        assert not overflow_a and not overflow_b
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
        np.testing.assert_allclose(parts_b, parts_a, rtol=1e-5, atol=1e-7)
    trained = {name: value for name, value in _snapshot(student).items() if not name.endswith("pruning_threshold")}
    assert sum(not np.array_equal(v, initial[n]) for n, v in trained.items()) >= len(trained) - 2
    for (name, a), b in zip(trained.items(), student_b.trainable_params()):
        np.testing.assert_allclose(b.asnumpy(), a, rtol=1e-4, atol=1e-6, err_msg=name)


def test_two_graph_step_matches_the_one_graph_step_and_compiles_the_update_once(student_config, teacher_config):
    """TrainingStep runs the forward and backward pass and the update as two graphs: the weights after
    each step are those of the train cell's single graph, and a new input length compiles a new
    gradient graph but not a new update graph."""
    (one_graph, source, student, _, _), (two_graph_cell, _, student_b, _, _) = (
        _train_cell(student_config, teacher_config, 2.0 ** 16) for _ in range(2))
    for a, b in zip(one_graph.weights, two_graph_cell.weights):
        b.set_data(a.data.copy())
    number_dropout_sites(student), number_dropout_sites(student_b)  # the same dropout masks in both
    two_graph = TrainingStep(two_graph_cell)
    two_graph.set_train(True)
    rng = np.random.default_rng(5)
    for step, length in enumerate((SEQ, SEQ - 4, SEQ)):
        ids = ms.Tensor(rng.integers(1, 99, (BATCH, length)).astype(np.int32))
        inputs = (ids, ms.Tensor(np.ones((BATCH, length), np.int32)), ms.Tensor(np.zeros((BATCH, length), np.int32)))
        set_dropout_step(0, step, 0)
        loss_a = float(one_graph(source(*inputs), SCHEDULE, *inputs)[0].asnumpy())
        loss_b, _, overflow, scale = two_graph(step, source, SCHEDULE, inputs, inputs)
        assert not overflow and scale == 2.0 ** 16
        assert loss_b == pytest.approx(loss_a, rel=1e-6)
    for (name, a), b in zip(_snapshot(student).items(), student_b.trainable_params()):
        np.testing.assert_allclose(b.asnumpy(), a, rtol=1e-6, atol=1e-7, err_msg=name)
    assert len(two_graph.gradients.compile_cache) == 2 and len(two_graph.update.compile_cache) == 1
