"""Each loss against a numpy reference on small tensors, with padding in the batch."""
import numpy as np
import mindspore as ms
import pytest

from src import losses

RNG = np.random.default_rng(0)


def _mask(batch, seq, lengths):
    mask = np.zeros((batch, seq), np.int32)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return mask


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_attention_mse_counts_only_real_query_key_pairs():
    student, teacher = RNG.normal(size=(2, 3, 5, 5)), RNG.normal(size=(2, 3, 5, 5))
    mask = _mask(2, 5, [5, 3])
    pairs = mask[:, None, :, None] * mask[:, None, None, :]
    expected = (((student - teacher) ** 2) * pairs).sum() / (pairs.sum() * 3)
    got = losses.attention_mse(ms.Tensor(student, ms.float32), ms.Tensor(teacher, ms.float32), ms.Tensor(mask))
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-5)


def test_attention_mse_ignores_padding_values():
    student, teacher = RNG.normal(size=(1, 2, 4, 4)), RNG.normal(size=(1, 2, 4, 4))
    mask = _mask(1, 4, [2])
    changed = teacher.copy()
    changed[..., 3] = -10000.0  # what an additive mask would put there
    changed[..., 3, :] = 55.0
    args = [ms.Tensor(student, ms.float32), ms.Tensor(mask)]
    a = losses.attention_mse(args[0], ms.Tensor(teacher, ms.float32), args[1]).asnumpy()
    b = losses.attention_mse(args[0], ms.Tensor(changed, ms.float32), args[1]).asnumpy()
    assert a == pytest.approx(b, rel=1e-6)


def test_hidden_mse_matches_numpy():
    student, teacher = RNG.normal(size=(3, 6, 8)), RNG.normal(size=(3, 6, 8))
    mask = _mask(3, 6, [6, 1, 4])
    expected = (((student - teacher) ** 2) * mask[..., None]).sum() / (mask.sum() * 8)
    got = losses.hidden_mse(ms.Tensor(student, ms.float32), ms.Tensor(teacher, ms.float32), ms.Tensor(mask))
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_cross_entropy_matches_numpy(temperature):
    student, teacher = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    targets = _softmax(teacher / temperature)
    log_probs = np.log(_softmax(student / temperature))
    expected = -(targets * log_probs).sum(-1).mean()
    got = losses.soft_cross_entropy(ms.Tensor(student, ms.float32), ms.Tensor(teacher, ms.float32), temperature)
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-5)


def test_hard_losses_match_numpy():
    logits, labels = RNG.normal(size=(5, 3)), np.array([0, 2, 1, 1, 0], np.int32)
    expected = -np.log(_softmax(logits)[np.arange(5), labels]).mean()
    got = losses.hard_cross_entropy(ms.Tensor(logits, ms.float32), ms.Tensor(labels))
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-5)
    scores, targets = RNG.normal(size=(5, 1)), RNG.normal(size=5)
    got = losses.hard_mse(ms.Tensor(scores, ms.float32), ms.Tensor(targets, ms.float32))
    np.testing.assert_allclose(got.asnumpy(), ((scores[:, 0] - targets) ** 2).mean(), rtol=1e-5)


def test_register_and_unknown_loss():
    losses.register_loss("zero_for_test", lambda s, t, m: 0.0)
    assert losses.get_loss("zero_for_test", "k") is losses.LOSSES["zero_for_test"]
    with pytest.raises(ValueError, match="already registered"):
        losses.register_loss("zero_for_test", lambda s, t, m: 0.0)
    with pytest.raises(ValueError, match=r"distill.hidden_loss: unknown loss 'nope'"):
        losses.get_loss("nope", "distill.hidden_loss")
    del losses.LOSSES["zero_for_test"]
