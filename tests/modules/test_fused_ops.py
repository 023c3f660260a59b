"""The C++ kernels (src/fused_ops.cc) against PyTorch in float64 or MindSpore's ops, forward and backward
(GELU, LayerNorm, the attention's head swap and masked softmax, the masked MSE sums, the dropout mask);
a BERT with them against one with MindSpore's ops; the build's cache and its fallback."""
from types import SimpleNamespace

import numpy as np
import mindspore as ms
import pytest

from src import dropout, fused_ops, losses
from src.checkpoint import named_parameters
from src.tinybert_model import BertForSequenceClassification

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
if not fused_ops.available():
    pytest.skip("the fused CPU ops did not build here (see the warning above)", allow_module_level=True)


def gradients(cell, x, weights, upstream):
    """(output, d sum(output * upstream) / d x, then / d each of `weights`) of a MindSpore cell."""
    loss = lambda inputs: (cell(inputs) * ms.Tensor(upstream)).sum()  # noqa: E731
    grads = ms.grad(loss, grad_position=0, weights=weights)(ms.Tensor(x))
    dx, dweights = (grads, ()) if weights is None else grads
    return cell(ms.Tensor(x)).asnumpy(), dx.asnumpy(), [g.asnumpy() for g in dweights]


def test_gelu_and_its_gradient_match_torch_in_float64():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-9, 9, 13 * 7 * 37 - 300), rng.standard_normal(300) * 3])
    x = x.astype(np.float32).reshape(13, 7, 37)  # odd sizes: no whole vector registers
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    y, dx, _ = gradients(fused_ops.Gelu(), x, None, upstream)
    reference = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    expected = torch.nn.functional.gelu(reference)
    (expected * torch.tensor(upstream, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-6, atol=5e-7)
    np.testing.assert_allclose(dx, reference.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("epsilon", [1e-12, 1e-5])
def test_layer_norm_and_its_gradients_match_torch_in_float64(epsilon):
    rng = np.random.default_rng(1)
    width = 45
    x = (rng.standard_normal((13, 7, width)) * 3 + 1.5).astype(np.float32)
    x[0, 0] = 2.0  # a constant row: variance 0, where epsilon alone keeps rstd finite
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    norm = fused_ops.LayerNorm(width, epsilon)
    gamma, beta = rng.uniform(0.5, 1.5, width).astype(np.float32), rng.standard_normal(width).astype(np.float32)
    norm.gamma.set_data(ms.Tensor(gamma))
    norm.beta.set_data(ms.Tensor(beta))
    y, dx, (dgamma, dbeta) = gradients(norm, x, norm.trainable_params(), upstream)
    reference = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta)]
    expected = torch.nn.functional.layer_norm(reference[0], (width,), reference[1], reference[2], eps=epsilon)
    (expected * torch.tensor(upstream, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(y, expected.detach().numpy(), atol=5e-6)
    np.testing.assert_allclose(dx, reference[0].grad.numpy(), rtol=1e-5, atol=2e-5 if epsilon < 1e-6 else 1e-5)
    np.testing.assert_allclose(dgamma, reference[1].grad.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dbeta, reference[2].grad.numpy(), rtol=1e-5, atol=1e-4)


def test_head_swap_and_masked_softmax_and_their_gradients_match_torch_in_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4, 7)).astype(np.float32)
    upstream = rng.standard_normal((3, 4, 5, 7)).astype(np.float32)
    y, dx, _ = gradients(fused_ops.SwapMiddleAxes(), x, None, upstream)
    np.testing.assert_array_equal(y, x.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(dx, upstream.transpose(0, 2, 1, 3))

    scores = (rng.standard_normal((3, 4, 5, 13)) * 4).astype(np.float32)
    mask_bias = np.where(rng.random((3, 1, 1, 13)) < 0.3, -10000.0, 0.0).astype(np.float32)
    upstream = rng.standard_normal(scores.shape).astype(np.float32)
    softmax = fused_ops.MaskedSoftmax()
    loss = lambda s, m: (softmax(s, m) * ms.Tensor(upstream)).sum()  # noqa: E731
    dscores, dmask = ms.grad(loss, grad_position=(0, 1))(ms.Tensor(scores), ms.Tensor(mask_bias))
    reference = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (scores, mask_bias)]
    expected = torch.softmax(reference[0] + reference[1], dim=-1)
    (expected * torch.tensor(upstream, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(softmax(ms.Tensor(scores), ms.Tensor(mask_bias)).asnumpy(), expected.detach().numpy(),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dscores.asnumpy(), reference[0].grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dmask.asnumpy(), reference[1].grad.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"mask_bias \(B, 1, 1, K\), got \[3, 4, 5, 13\] and \[3, 1, 5, 13\]"):
        softmax(ms.Tensor(scores), ms.Tensor(np.zeros((3, 1, 5, 13), np.float32)))


def test_masked_squared_error_sum_and_its_gradients_match_torch_in_float64():
    rng = np.random.default_rng(4)
    x, y = (rng.standard_normal((6, 5, 9)).astype(np.float32) for _ in range(2))
    mask = (rng.random((6, 1, 9)) < 0.7).astype(np.float32)
    total = lambda a, b, m: fused_ops.squared_error_sum(a, b, m) * 3.0  # noqa: E731  (an upstream gradient of 3)
    grads = ms.grad(total, grad_position=(0, 1, 2))(ms.Tensor(x), ms.Tensor(y), ms.Tensor(mask))
    reference = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, y, mask)]
    expected = ((reference[0] - reference[1]) ** 2 * reference[2]).sum() * 3.0
    expected.backward()
    np.testing.assert_allclose(total(ms.Tensor(x), ms.Tensor(y), ms.Tensor(mask)).asnumpy(), [expected.item()],
                               rtol=1e-6)
    for got, want in zip(grads, reference):
        np.testing.assert_allclose(got.asnumpy(), want.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss", ["attention_mse", "hidden_mse"])
def test_the_mse_losses_give_with_the_kernel_what_mindspores_ops_give(loss, monkeypatch):
    rng = np.random.default_rng(5)
    shape = (4, 3, 6, 6) if loss == "attention_mse" else (4, 6, 10)
    student, teacher = (ms.Tensor(rng.standard_normal(shape).astype(np.float32)) for _ in range(2))
    attention_mask = np.ones((4, 6), np.int32)
    attention_mask[1, 4:] = attention_mask[3, 1:] = 0
    function = getattr(losses, loss)

    def value_and_gradient():  # a new function each time: a graph compiled for the kernel choice of the moment
        def masked_loss(s, t):
            return function(s, t, ms.Tensor(attention_mask))
        return ms.value_and_grad(masked_loss, grad_position=0)(student, teacher)

    with_kernel = value_and_gradient()
    monkeypatch.setattr(fused_ops, "squared_error_sum", None)
    without = value_and_gradient()
    np.testing.assert_allclose(with_kernel[0].asnumpy(), without[0].asnumpy(), rtol=1e-6)
    np.testing.assert_allclose(with_kernel[1].asnumpy(), without[1].asnumpy(), rtol=1e-5, atol=1e-8)
    padded = (3, slice(None), slice(None), slice(1, None)) if loss == "attention_mse" else (3, slice(1, None))
    assert np.all(with_kernel[1].asnumpy()[padded] == 0) and np.any(with_kernel[1].asnumpy()[3] != 0)


def test_the_dropout_kernel_draws_the_masks_of_mindspores_ops(monkeypatch):
    """Units beyond one window (2^22) too, so the second window's offsets are checked."""
    x = ms.Tensor(np.random.default_rng(6).standard_normal((2, dropout.WINDOW // 2 + 1000)).astype(np.float32))
    upstream = ms.Tensor(np.random.default_rng(7).standard_normal(x.shape).astype(np.float32))
    dropout.set_dropout_step(seed=3, step=11)

    def output_and_gradient():
        cell = dropout.StatelessDropout(p=0.1)
        cell.set_site(1)
        cell.set_train(True)

        def weighted(a):
            return (cell(a) * upstream).sum()
        return cell(x).asnumpy(), ms.grad(weighted)(x).asnumpy()

    with_kernel = output_and_gradient()
    monkeypatch.setattr(fused_ops, "dropout_mask", None)
    without = output_and_gradient()
    for got, expected in zip(with_kernel, without):
        np.testing.assert_array_equal(got, expected)
    assert 0.09 < (with_kernel[0] == 0).mean() < 0.11


def test_a_bert_with_fused_ops_computes_what_mindspores_ops_do(student_config):
    """Same parameter names (checkpoints swap freely), logits and gradients to float tolerance."""
    ms.set_seed(5)
    fused = BertForSequenceClassification(student_config.for_inference(), 3)
    plain = BertForSequenceClassification(student_config.for_inference().replace(fused_cpu_ops=False), 3)
    assert isinstance(fused.bert.bert_encoder.layers[0].output.layernorm, fused_ops.LayerNorm)
    assert isinstance(plain.bert.bert_encoder.layers[0].output.layernorm, ms.nn.LayerNorm)
    fused_params, plain_params = dict(named_parameters(fused)), dict(named_parameters(plain))
    assert sorted(fused_params) == sorted(plain_params)
    for name, parameter in plain_params.items():
        parameter.set_data(ms.Tensor(fused_params[name].asnumpy()))
    rng = np.random.default_rng(2)
    ids = ms.Tensor(rng.integers(0, student_config.vocab_size, (5, 11)).astype(np.int32))
    mask = np.ones((5, 11), np.int32)
    mask[1, 6:] = 0
    inputs = (ids, ms.Tensor(mask), ms.Tensor(np.zeros((5, 11), np.int32)))

    def logits_and_gradients(model):
        loss = lambda *columns: (model(*columns)[0] ** 2).sum()  # noqa: E731
        grads = ms.grad(loss, grad_position=None, weights=model.trainable_params())(*inputs)
        return model(*inputs)[0].asnumpy(), {p.name: g.asnumpy() for p, g in zip(model.trainable_params(), grads)}

    fused_logits, fused_grads = logits_and_gradients(fused)
    plain_logits, plain_grads = logits_and_gradients(plain)
    np.testing.assert_allclose(fused_logits, plain_logits, atol=2e-6)
    assert fused_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        np.testing.assert_allclose(fused_grads[name], grad, atol=2e-5 * max(1.0, np.abs(grad).max()), err_msg=name)


def test_the_build_is_kept_and_a_failed_build_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYBERT_CACHE_DIR", str(tmp_path / "cache"))
    first = fused_ops.build_library()
    assert fused_ops.build_library() == first and first.parent == tmp_path / "cache"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary file left
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler 'no-such-g\\+\\+' on PATH"):
        fused_ops.build_library("no-such-g++")
    broken = tmp_path / "broken-g++"
    broken.write_text("#!/bin/sh\necho 'fused_ops.cc:1: error: something broke' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(RuntimeError, match="failed: fused_ops.cc:1: error: something broke"):
        fused_ops.build_library(str(broken))
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # the failed build left nothing

    warnings = []  # the project's logger, whose stream depends on what ran before in this process
    monkeypatch.setattr(fused_ops, "get_logger", lambda: SimpleNamespace(
        warning=lambda message, *args: warnings.append(message % args)))
    for name in ("_library", "squared_error_sum", "dropout_mask"):  # restored for the tests after this one
        monkeypatch.setattr(fused_ops, name, None if name == "_library" else getattr(fused_ops, name))
    monkeypatch.setenv("CXX", str(broken))
    monkeypatch.setenv("TINYBERT_CACHE_DIR", str(tmp_path / "empty"))
    assert not fused_ops.available() and not fused_ops.available()
    assert len(warnings) == 1  # said once, not tried again
    assert fused_ops.squared_error_sum is None and fused_ops.dropout_mask is None  # the losses use MindSpore's ops
    assert "fused CPU ops unavailable" in warnings[0] and "something broke" in warnings[0]
    monkeypatch.setenv("TINYBERT_FUSED_OPS", "0")
    monkeypatch.setattr(fused_ops, "_library", None)
    assert not fused_ops.available() and fused_ops._library is None  # switched off: nothing built or tried
