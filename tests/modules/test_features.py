"""Named features (src/distill/features.py) against numpy: relation logits (MiniLM, MiniLMv2), masked
attention probabilities, [CLS], and which encoder tensor each feature of layer l is read from."""
import math

import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

from src.distill.features import FEATURES, RELATIONS, feature_from, feature_source, relation_logits, \
    relation_projection
from src.tinybert_model import BertModel

LENGTHS = (7, 4, 2)


def _mask(lengths=LENGTHS, seq=7):
    mask = np.zeros((len(lengths), seq), np.int32)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return mask


def _mask_bias(mask):
    return ms.Tensor((1.0 - mask[:, None, None, :]) * -10000.0, ms.float32)


def _numpy_relation(projected, heads):
    """MiniLMv2 Eq. 4-6: per relation head a, the slice Q_a (T, d_r) of the projection; Q_a Q_a^T / sqrt(d_r)."""
    batch, seq, width = projected.shape
    d_r = width // heads
    out = np.zeros((batch, heads, seq, seq))
    for b in range(batch):
        for a in range(heads):
            q = projected[b, :, a * d_r:(a + 1) * d_r]
            out[b, a] = q @ q.T / math.sqrt(d_r)
    return out


def test_each_feature_reads_the_tensor_of_its_layer():
    """hidden_states[0] is the embedding output, so layer l's attention reads scores[l - 1] and its
    relations read the layer's input hidden_states[l - 1]."""
    assert set(FEATURES) == {"hidden", "cls", "attention", "attention_probs", "query_relation", "key_relation",
                             "value_relation"}
    for layer in (1, 3):
        assert feature_source("hidden", layer) == ("hidden", layer)
        assert feature_source("cls", layer) == ("hidden", layer)
        assert feature_source("attention", layer) == ("scores", layer - 1)
        assert feature_source("attention_probs", layer) == ("scores", layer - 1)
        for relation in ("query_relation", "key_relation", "value_relation"):
            assert feature_source(relation, layer) == ("hidden", layer - 1)
    assert feature_source("hidden", 0) == ("hidden", 0)


@pytest.mark.parametrize("heads", [1, 3, 4])
def test_relation_logits_match_numpy(heads):
    projected = np.random.default_rng(0).normal(size=(3, 7, 12))
    got = relation_logits(ms.Tensor(projected, ms.float32), heads).asnumpy()
    assert got.shape == (3, heads, 7, 7)
    np.testing.assert_allclose(got, _numpy_relation(projected, heads), rtol=1e-5, atol=1e-5)


def test_relation_feature_projects_with_the_given_dense_then_splits_into_heads():
    rng = np.random.default_rng(1)
    source, weight, bias = rng.normal(size=(3, 7, 11)), rng.normal(size=(12, 11)) * 0.5, rng.normal(size=12)
    dense = nn.Dense(11, 12)
    dense.weight.set_data(ms.Tensor(weight, ms.float32))
    dense.bias.set_data(ms.Tensor(bias, ms.float32))
    for relation in RELATIONS:
        got = feature_from(relation, ms.Tensor(source, ms.float32), _mask_bias(_mask()), dense, heads=4).asnumpy()
        np.testing.assert_allclose(got, _numpy_relation(source @ weight.T + bias, 4), rtol=1e-4, atol=1e-4)


def test_attention_probs_are_a_softmax_over_real_keys():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(3, 5, 7, 7)) * 3
    got = feature_from("attention_probs", ms.Tensor(scores, ms.float32), _mask_bias(_mask())).asnumpy()
    assert got.shape == scores.shape
    for row, length in enumerate(LENGTHS):
        real = scores[row, :, :, :length]
        expected = np.exp(real - real.max(-1, keepdims=True))
        expected /= expected.sum(-1, keepdims=True)
        np.testing.assert_allclose(got[row, :, :, :length], expected, rtol=1e-5, atol=1e-7)
        assert np.all(got[row, :, :, length:] < 1e-30)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_cls_is_position_zero_and_hidden_and_attention_pass_through():
    source = np.random.default_rng(3).normal(size=(3, 7, 11))
    bias = _mask_bias(_mask())
    np.testing.assert_array_equal(feature_from("cls", ms.Tensor(source, ms.float32), bias).asnumpy(),
                                  source[:, 0].astype(np.float32))
    for feature in ("hidden", "attention"):
        tensor = ms.Tensor(source, ms.float32)
        assert feature_from(feature, tensor, bias) is tensor


@pytest.fixture
def pynative():
    """One forward pass of a tiny model: PyNative runs it in ~2 s, a GRAPH_MODE compile takes ~7 s here."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def test_features_of_a_real_encoder_layer_match_numpy_from_its_weights(student_config, pynative):
    """Layer l's `attention` is Q K^T / sqrt(d) of its input hidden_states[l - 1] (before the mask), and
    its relations use that layer's own query/key/value Dense: checked for every layer of a tiny BERT."""
    config = student_config.replace(initializer_range=0.3).for_inference()
    model = BertModel(config)
    rng = np.random.default_rng(4)
    mask = _mask()
    ids = ms.Tensor(rng.integers(1, config.vocab_size, size=mask.shape) * mask, ms.int32)
    _, _, hidden_states, attention_scores = model(ids, ms.Tensor(mask), ms.Tensor(np.zeros_like(mask)))
    heads, head_size = config.num_attention_heads, config.hidden_size // config.num_attention_heads

    def dense_np(cell, x):
        return x @ cell.weight.asnumpy().T + cell.bias.asnumpy()

    for layer in range(1, config.num_hidden_layers + 1):
        attention = model.bert_encoder.layers[layer - 1].attention.attention
        layer_input = hidden_states[layer - 1].asnumpy()  # the embeddings feed layer 1
        query, key = dense_np(attention.query_layer, layer_input), dense_np(attention.key_layer, layer_input)
        expected = np.stack([np.stack([query[b, :, a * head_size:(a + 1) * head_size]
                                       @ key[b, :, a * head_size:(a + 1) * head_size].T for a in range(heads)])
                             for b in range(len(LENGTHS))]) / math.sqrt(head_size)
        kind, index = feature_source("attention", layer)
        np.testing.assert_allclose(attention_scores[index].asnumpy(), expected, rtol=1e-4, atol=1e-5)
        assert kind == "scores" and feature_source("value_relation", layer) == ("hidden", layer - 1)

        for relation, dense in (("query_relation", attention.query_layer), ("key_relation", attention.key_layer),
                                ("value_relation", attention.value_layer)):
            projection = relation_projection(model, relation, layer)
            assert projection is dense
            got = feature_from(relation, ms.Tensor(layer_input, ms.float32), _mask_bias(mask), projection,
                               heads=2).asnumpy()
            np.testing.assert_allclose(got, _numpy_relation(dense_np(dense, layer_input), 2), rtol=1e-4, atol=1e-4)
