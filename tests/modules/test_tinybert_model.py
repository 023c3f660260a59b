"""Model shapes, the mask's effect, and float16 compute."""
import numpy as np
import mindspore as ms
import pytest

from conftest import BATCH, SEQ
from src.tinybert_model import BertConfig, BertForSequenceClassification, BertModel, LogitsOnly, inference_function


def _inputs(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (len(lengths), SEQ)).astype(np.int32)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    types = np.zeros_like(ids)
    types[:, SEQ // 2:] = 1
    return ids, types, mask


def test_outputs_and_shapes(student_config):
    model = BertModel(student_config.for_inference())
    model.set_train(False)
    ids, types, mask = _inputs(99, [SEQ] * BATCH)
    sequence, pooled, hidden, scores = model(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))
    assert sequence.shape == (BATCH, SEQ, 32) and pooled.shape == (BATCH, 32)
    assert len(hidden) == 3 and all(h.shape == (BATCH, SEQ, 32) for h in hidden)
    assert len(scores) == 2 and all(s.shape == (BATCH, 4, SEQ, SEQ) for s in scores)
    np.testing.assert_array_equal(sequence.asnumpy(), hidden[-1].asnumpy())


def test_padding_does_not_change_real_tokens(student_config):
    """What sits in padded positions must not reach the real tokens' outputs."""
    model = BertModel(student_config.for_inference())
    model.set_train(False)
    ids, types, mask = _inputs(99, [4, 4])
    other = ids.copy()
    other[:, 4:] = 7
    first = model(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy()
    second = model(ms.Tensor(other), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy()
    np.testing.assert_allclose(first[:, :4], second[:, :4], atol=1e-5)
    assert not np.allclose(first[:, 4:], second[:, 4:])


def test_classifier_logits_and_dropout_is_not_relu(student_config):
    model = BertForSequenceClassification(student_config, num_labels=3)
    model.set_train(False)
    ids, types, mask = _inputs(99, [SEQ] * BATCH)
    logits = model(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy()
    pooled = model.bert(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[1].asnumpy()
    weight, bias = model.dense_1.weight.asnumpy(), model.dense_1.bias.asnumpy()
    assert (pooled < 0).any()  # a ReLU here (the zoo's bug) would change the logits below
    np.testing.assert_allclose(logits, pooled @ weight.T + bias, atol=1e-5)


def test_inference_function_is_the_cell_in_inference_mode_at_each_shape(student_config):
    """The jit function of a network left in training mode computes the Cell's eval-mode logits (dropout
    off), at two input shapes, and leaves the network in inference mode."""
    assert student_config.hidden_dropout_prob > 0
    network = LogitsOnly(BertForSequenceClassification(student_config, num_labels=3))
    network.set_train(True)
    run = inference_function(network)
    assert not network.training
    for lengths in ([SEQ] * BATCH, [3]):
        inputs = [ms.Tensor(x) for x in _inputs(99, lengths)]
        inputs[1], inputs[2] = inputs[2], inputs[1]  # _inputs gives (ids, types, mask)
        got = run(*inputs).asnumpy()
        np.testing.assert_array_equal(got, run(*inputs).asnumpy())
        network.set_train(False)
        np.testing.assert_allclose(got, network(*inputs).asnumpy(), atol=1e-6)
        network.set_train(True)
        assert not np.allclose(got, network(*inputs).asnumpy(), atol=1e-3)  # the Cell in training mode drops units
        network.set_train(False)


def test_float16_compute_is_close_to_float32(student_config):
    model32 = BertModel(student_config.for_inference())
    model16 = BertModel(student_config.for_inference().replace(compute_type="float16"))
    for (_, p32), (_, p16) in zip(model32.parameters_and_names(), model16.parameters_and_names()):
        p16.set_data(p32.data)
    ids, types, mask = _inputs(99, [SEQ, 3])
    out32 = model32(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy()
    out16 = model16(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy()
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, out32, atol=5e-2)


def test_config_errors():
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act 'swish'"):
        BertConfig(hidden_act="swish")
