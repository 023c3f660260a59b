"""Pruning masks against numpy references, straight-through gradients, the regulariser, swapping in a BERT."""
import math

import numpy as np
import mindspore as ms
import pytest
from mindspore import Parameter, Tensor, nn, ops

from conftest import BATCH, SEQ
from src.prune.apply import (apply_masking, baked_parameters, checkpoint_masks, mask_score_parameters,
                             masked_layers, regularization_term, set_threshold, stored_threshold)
from src.prune.masks import MaskedDense, MaskRefresh, MaskRegularization, compute_masks
from src.prune.settings import PruningConfig
from src.checkpoint import named_parameters
from src.tinybert_model import BertForSequenceClassification

SHAPES = ((7, 5), (13, 29), (1, 3))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _top_fraction_reference(values, fraction):
    """Paper: sort descending, keep the first int(fraction * n); stable sort = earlier position wins ties."""
    flat = values.ravel()
    kept = int(np.floor(np.float32(fraction) * np.float32(flat.size)))
    mask = np.zeros(flat.size, np.float32)
    mask[np.argsort(-flat, kind="stable")[:kept]] = 1.0
    return mask.reshape(values.shape)


def _threshold_reference(scores, tau):
    mask = (_sigmoid(scores.astype(np.float64)) > tau).astype(np.float32)
    min_kept = int(0.005 * scores.size) + 1
    if mask.sum() < min_kept:
        kth_smallest = np.sort(scores.ravel())[max(scores.size - min_kept, 1) - 1]
        mask = (scores > kth_smallest).astype(np.float32)
    return mask


def _l0_eval_reference(log_alpha):
    return np.clip(_sigmoid(log_alpha.astype(np.float64)) * 1.2 - 0.1, 0.0, 1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_top_fraction_masks_match_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    scores = rng.normal(size=shape).astype(np.float32)
    for fraction in (1.0, 0.7, 0.35, 0.1, 0.03):
        got = compute_masks("topK", {"s": scores}, fraction)["s"]
        np.testing.assert_array_equal(got, _top_fraction_reference(scores, fraction))
        got = compute_masks("magnitude", {"w": np.abs(scores)}, fraction)["w"]
        np.testing.assert_array_equal(got, _top_fraction_reference(np.abs(scores), fraction))
    # ties (constant scores, as after a constant init) go to the earlier positions
    tied = compute_masks("topK", {"s": np.zeros(shape, np.float32)}, 0.5)["s"]
    np.testing.assert_array_equal(tied, _top_fraction_reference(np.zeros(shape, np.float32), 0.5))


@pytest.mark.parametrize("shape", SHAPES + ((50, 41),))
def test_threshold_and_l0_masks_match_numpy(shape):
    rng = np.random.default_rng(7 + sum(shape))
    scores = rng.normal(scale=2.0, size=shape).astype(np.float32)
    for tau in (0.0, 0.3, 0.5, 0.9, 0.999):  # 0.999: too few pass, the 0.5% floor applies
        got = compute_masks("sigmoied_threshold", {"s": scores}, tau)["s"]
        np.testing.assert_array_equal(got, _threshold_reference(scores, tau))
    assert compute_masks("sigmoied_threshold", {"s": scores}, 0.999)["s"].sum() == int(0.005 * scores.size) + 1
    got = compute_masks("l0", {"s": scores}, 0.0)["s"]
    np.testing.assert_allclose(got, _l0_eval_reference(scores), atol=1e-6)
    if scores.size > 100:  # closed gates, open gates and gates in between
        assert (got == 0).any() and (got == 1).any() and ((got > 0) & (got < 1)).any()


def test_l0_training_gates_follow_the_hard_concrete_distribution():
    """P(gate > 0) = sigmoid(log_alpha - beta log(-gamma/zeta)) (Louizos et al. 2018, Eq. 12): the l0 penalty."""
    ms.set_seed(5)
    settings = PruningConfig(pruning_method="l0", mask_init="constant", mask_scale=0.5,
                             initial_threshold=1.0, final_threshold=1.0)
    threshold = Parameter(Tensor([1.0], ms.float32), name="pruning_threshold", requires_grad=False)
    layer = MaskedDense(nn.Dense(300, 200), settings, threshold)
    mask_of = _MaskOf(layer)
    mask_of.set_train(True)
    first, second = mask_of().asnumpy(), mask_of().asnumpy()
    assert not np.array_equal(first, second)
    assert first.min() >= 0.0 and first.max() <= 1.0
    expected_open = _sigmoid(0.5 - 2.0 / 3.0 * math.log(0.1 / 1.1))
    assert abs((first > 0).mean() - expected_open) < 0.01  # 60000 gates: standard error 0.0015
    penalty = MaskRegularization([layer], "l0")()
    np.testing.assert_allclose(penalty.asnumpy(), expected_open, rtol=1e-5)
    mask_of.set_train(False)
    np.testing.assert_array_equal(mask_of().asnumpy(), mask_of().asnumpy())


class _MaskOf(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self):
        return self.layer.mask()


class _SquaredOutput(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self, x):
        return (self.layer(x) ** 2).sum()


class _Gradients(nn.Cell):
    """Gradients inside a Cell, as a training step takes them (a Parameter set between calls is read anew)."""

    def __init__(self, net, params):
        super().__init__()
        self.net = net
        self.params = ms.ParameterTuple(params)
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, x):
        return self.grad(self.net, self.params)(x)


def _masked_layer(method, shape=(11, 6), seed=0, **overrides):
    rng = np.random.default_rng(seed)
    settings = PruningConfig(pruning_method=method, **overrides)
    threshold = Parameter(Tensor([settings.initial_threshold], ms.float32), name="pruning_threshold",
                          requires_grad=False)
    dense = nn.Dense(shape[1], shape[0])
    dense.weight.set_data(Tensor(rng.normal(size=shape).astype(np.float32)))
    dense.bias.set_data(Tensor(rng.normal(size=shape[0]).astype(np.float32)))
    layer = MaskedDense(dense, settings, threshold)
    if settings.has_scores:
        layer.mask_scores.set_data(Tensor(rng.normal(size=shape).astype(np.float32)))
    return layer, threshold, rng.normal(size=(5, 3, shape[1])).astype(np.float32)


@pytest.mark.parametrize("method,threshold", [("topK", 0.4), ("sigmoied_threshold", 0.6), ("magnitude", 0.3)])
def test_straight_through_gradients_match_numpy(method, threshold):
    layer, threshold_param, x = _masked_layer(method, initial_threshold=threshold,
                                              final_threshold=threshold)
    weight, bias = layer.weight.asnumpy(), layer.bias.asnumpy()
    params = [layer.weight] + ([layer.mask_scores] if method != "magnitude" else [])
    grads = [g.asnumpy() for g in _Gradients(_SquaredOutput(layer), params)(Tensor(x))]
    if method == "magnitude":
        mask = _top_fraction_reference(np.abs(weight), threshold)
    elif method == "topK":
        mask = _top_fraction_reference(layer.mask_scores.asnumpy(), threshold)
    else:
        mask = _threshold_reference(layer.mask_scores.asnumpy(), threshold)
    assert 0 < mask.sum() < mask.size
    out = x @ (weight * mask).T + bias  # (5, 3, out)
    grad_effective = np.einsum("bto,bti->oi", 2.0 * out, x)  # dL/dW_eff
    np.testing.assert_allclose(grads[0], grad_effective * mask, rtol=1e-4, atol=1e-4)
    if method != "magnitude":
        np.testing.assert_allclose(grads[1], grad_effective * weight, rtol=1e-4, atol=1e-4)
        assert np.abs(grads[1][mask == 0]).sum() > 0  # pruned weights' scores still learn


def test_l0_gradient_through_the_deterministic_gate():
    layer, _, x = _masked_layer("l0", initial_threshold=1.0, final_threshold=1.0)
    net = _SquaredOutput(layer)
    net.set_train(False)
    log_alpha, weight, bias = layer.mask_scores.asnumpy(), layer.weight.asnumpy(), layer.bias.asnumpy()
    grads = _Gradients(net, [layer.mask_scores])(Tensor(x))[0].asnumpy()
    gate = _l0_eval_reference(log_alpha)
    out = x @ (weight * gate).T + bias
    d_gate = np.einsum("bto,bti->oi", 2.0 * out, x) * weight
    s = _sigmoid(log_alpha)
    inside = (s * 1.2 - 0.1 > 0) & (s * 1.2 - 0.1 < 1)
    np.testing.assert_allclose(grads, d_gate * 1.2 * s * (1 - s) * inside, rtol=1e-4, atol=1e-5)


def test_threshold_is_read_at_each_step_without_a_new_layer():
    layer, threshold, x = _masked_layer("topK", shape=(10, 10), initial_threshold=0.9, final_threshold=0.1)
    step = _Gradients(_SquaredOutput(layer), [layer.weight])
    kept = []
    for value in (0.9, 0.5, 0.25):
        threshold.set_data(Tensor([value], ms.float32))
        kept.append(int((step(Tensor(x))[0].asnumpy() != 0).sum()))  # dL/dW is nonzero where kept
    assert kept == [90, 50, 25]


@pytest.mark.parametrize("method", ["topK", "magnitude"])
def test_a_cached_mask_is_read_in_training_until_refreshed(method):
    """After `cache_mask`, training forward passes use the mask MaskRefresh stored (the same
    gradients as the live mask's), evaluation computes it; the Parameter is not the layer's."""
    layer, threshold, x = _masked_layer(method, shape=(10, 10), initial_threshold=0.5, final_threshold=0.5)
    live = [g.asnumpy() for g in _Gradients(_SquaredOutput(layer), [layer.weight])(Tensor(x))]
    layer.cache_mask()
    assert not any("mask_cache" in name for name in named_parameters(layer))
    refresh, step = MaskRefresh([layer]), _Gradients(_SquaredOutput(layer), [layer.weight])
    step.set_train(True)
    refresh()
    np.testing.assert_array_equal(step(Tensor(x))[0].asnumpy(), live[0])
    threshold.set_data(Tensor([0.2], ms.float32))
    assert int((step(Tensor(x))[0].asnumpy() != 0).sum()) == 50  # dL/dW is nonzero where kept: the old mask
    assert int(_MaskOf(layer)().asnumpy().sum()) == 20
    refresh()
    assert int((step(Tensor(x))[0].asnumpy() != 0).sum()) == 20
    with pytest.raises(ValueError, match="only magnitude and topK masks are cached, not l0"):
        _masked_layer("l0")[0].cache_mask()


def test_regularisation_value_and_gradient():
    layers = [_masked_layer("sigmoied_threshold", shape=shape, seed=i, initial_threshold=0.0,
                            final_threshold=0.1, regularization="l1")[0]
              for i, shape in enumerate(((4, 3), (5, 7)))]
    for number, layer in enumerate(layers):
        layer.update_parameters_name(f"layer{number}.")  # unique names, as inside a model
    term = MaskRegularization(layers, "l1")
    scores = [layer.mask_scores.asnumpy() for layer in layers]
    expected = np.mean([_sigmoid(s).sum() / s.size for s in scores])
    np.testing.assert_allclose(term().asnumpy(), expected, rtol=1e-5)
    grads = ops.GradOperation(get_by_list=True)(term, ms.ParameterTuple([l.mask_scores for l in layers]))()
    for grad, s in zip(grads, scores):
        np.testing.assert_allclose(grad.asnumpy(), _sigmoid(s) * (1 - _sigmoid(s)) / s.size / 2, rtol=1e-4)
    with pytest.raises(ValueError, match="must be l1 or l0"):
        MaskRegularization(layers, "none")


def test_score_initialisation():
    threshold = Parameter(Tensor([1.0], ms.float32), name="t", requires_grad=False)
    constant = MaskedDense(nn.Dense(40, 6), PruningConfig(pruning_method="l0", mask_init="constant",
                                                          mask_scale=2.197), threshold)
    assert (constant.mask_scores.asnumpy() == np.float32(2.197)).all()
    uniform = MaskedDense(nn.Dense(400, 50), PruningConfig(mask_init="uniform", mask_scale=0.3), threshold)
    kaiming = MaskedDense(nn.Dense(400, 50), PruningConfig(mask_init="kaiming"), threshold)
    for layer, bound in ((uniform, 0.3), (kaiming, 1 / math.sqrt(400))):  # kaiming: fan_in = in_channels
        scores = layer.mask_scores.asnumpy()
        assert scores.shape == (50, 400) and np.abs(scores).max() <= bound and np.abs(scores).max() > 0.95 * bound
    assert not hasattr(MaskedDense(nn.Dense(4, 3), PruningConfig(pruning_method="magnitude"), threshold),
                       "mask_scores")


def test_settings_errors():
    with pytest.raises(ValueError, match="pruning_method 'movement' is not one of"):
        PruningConfig(pruning_method="movement")
    with pytest.raises(ValueError, match=r"final_threshold 0.0 must be in \(0, 1\] for topK"):
        PruningConfig(final_threshold=0.0)
    with pytest.raises(ValueError, match=r"initial_threshold 1.0 must be in \[0, 1\) for sigmoied_threshold"):
        PruningConfig(pruning_method="sigmoied_threshold")
    with pytest.raises(ValueError, match="regularization must be none for magnitude"):
        PruningConfig(pruning_method="magnitude", regularization="l1")
    with pytest.raises(ValueError, match="mask_init 'xavier'"):
        PruningConfig(mask_init="xavier")
    with pytest.raises(ValueError, match="pruning_method 'movement' is not one of"):
        compute_masks("movement", {"s": np.zeros((2, 3), np.float32)}, 0.5)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (BATCH, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[:4, 5:] = 0
    types = np.zeros_like(ids)
    types[:, 4:] = 1
    return Tensor(ids), Tensor(mask), Tensor(types)


def _logits(model, inputs):
    model.set_train(False)
    return model(*inputs)[0].asnumpy()


def _load(model, arrays):
    for name, param in named_parameters(model).items():
        param.set_data(Tensor(arrays[name]))
    return model


def test_masking_a_bert_keeps_names_and_equals_zeroed_weights(student_config):
    config = student_config.for_inference()
    model = BertForSequenceClassification(config, num_labels=3)
    inputs = _inputs()
    names_before = set(named_parameters(model))
    plain = _load(BertForSequenceClassification(config, num_labels=3),
                  {name: p.asnumpy() for name, p in named_parameters(model).items()})
    dense_logits = _logits(plain, inputs)
    settings = PruningConfig(pruning_method="topK", mask_init="uniform", mask_scale=1.0)
    threshold = apply_masking(model, settings)
    layers = masked_layers(model)
    assert len(layers) == 6 * config.num_hidden_layers
    params = named_parameters(model)
    scores = {name for name in params if name.endswith(".mask_scores")}
    assert set(params) - names_before - scores == {"bert.bert_encoder.layers.0.attention.attention.query_layer"
                                                   ".pruning_threshold"}
    assert len(scores) == len(layers) and len(mask_score_parameters(model)) == len(layers)
    # Parameter names are the full paths (the optimizer and graph need them unique)
    assert {p.name for p in model.get_parameters()} == set(params)
    np.testing.assert_allclose(_logits(model, inputs), dense_logits, atol=1e-5)  # threshold 1: nothing pruned
    set_threshold(model, 0.3)
    assert threshold.asnumpy().tolist() == [np.float32(0.3)]
    masked_logits = _logits(model, inputs)
    assert np.abs(masked_logits - dense_logits).max() > 1e-4  # 70% pruned (weights of std 0.02: small logits)
    arrays = {name: p.asnumpy() for name, p in named_parameters(model).items()}
    assert stored_threshold(arrays) == pytest.approx(0.3)
    masks = checkpoint_masks(arrays, "topK", 0.3)
    assert len(masks) == len(layers)
    for name, mask in masks.items():  # the stored scores give the masks a numpy reference gives
        np.testing.assert_array_equal(mask, _top_fraction_reference(arrays[name[:-len("weight")] + "mask_scores"], 0.3))
    baked = baked_parameters(model)
    assert set(baked) == names_before
    for name, value in baked.items():
        np.testing.assert_array_equal(value.asnumpy(), arrays[name] * masks[name] if name in masks else arrays[name])
    np.testing.assert_allclose(_logits(_load(plain, {n: v.asnumpy() for n, v in baked.items()}), inputs),
                               masked_logits, atol=1e-5)


def test_masking_errors(student_config):
    model = BertForSequenceClassification(student_config, num_labels=2)
    with pytest.raises(ValueError, match="not masked"):
        set_threshold(model, 0.5)
    with pytest.raises(ValueError, match="has no mask_scores"):
        checkpoint_masks({n: p.asnumpy() for n, p in named_parameters(model).items()}, "topK", 0.5)
    with pytest.raises(ValueError, match="nothing to bake"):
        baked_parameters(model)
    apply_masking(model, PruningConfig(pruning_method="magnitude"))
    assert mask_score_parameters(model) == []
    with pytest.raises(ValueError, match="already masked"):
        apply_masking(model, PruningConfig())
    with pytest.raises(ValueError, match="not Dense"):
        apply_masking(nn.Dense(3, 4), PruningConfig())
    run = BertForSequenceClassification(student_config, num_labels=2)
    run(*_inputs())
    with pytest.raises(ValueError, match="before its first call"):
        apply_masking(run, PruningConfig())
    with pytest.raises(ValueError, match="must be l1 or l0"):
        regularization_term(model, "l2")
    with pytest.raises(ValueError, match="magnitude pruning has no scores"):
        regularization_term(model, "l1")
