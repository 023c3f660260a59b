"""The optimizer against numpy and torch.optim.AdamW: bias correction, decoupled decay, no-decay group."""
from types import SimpleNamespace

import numpy as np
import mindspore as ms
import pytest
from mindspore import Parameter

from src.optimizer import AdamW, build_optimizer

LR, WEIGHT_DECAY, EPS, STEPS = 1e-2, 0.1, 1e-6, 6


def phase(bias_correction, warmup_ratio=0.0):
    """A constant learning rate unless warming up."""
    return SimpleNamespace(learning_rate=LR, end_learning_rate=LR, warmup_ratio=warmup_ratio, power=1.0,
                           weight_decay=WEIGHT_DECAY, eps=EPS, bias_correction=bias_correction)


def start_values():
    rng = np.random.default_rng(0)
    return {"dense.weight": rng.normal(size=(3, 4)).astype(np.float32),
            "dense.bias": rng.normal(size=(3,)).astype(np.float32)}


def gradients(scale=1.0):
    rng = np.random.default_rng(1)
    return [{name: (scale * rng.normal(size=value.shape)).astype(np.float32) for name, value in start_values().items()}
            for _ in range(STEPS)]


def run_ours(phase_cfg, total_steps=100, scale=1.0):
    params = [Parameter(ms.Tensor(value), name=name) for name, value in start_values().items()]
    optimizer = build_optimizer(params, phase_cfg, total_steps)
    trace = []
    for grads in gradients(scale):
        optimizer(tuple(ms.Tensor(grads[p.name]) for p in params))
        trace.append({p.name: p.asnumpy().copy() for p in params})
    return optimizer, trace


def numpy_adam(bias_correction, decay_bias=False, scale=1.0):
    """Adam with decoupled decay (of the bias too if asked). Returns the parameters after every step."""
    values = start_values()
    m = {k: np.zeros_like(v) for k, v in values.items()}
    v = {k: np.zeros_like(x) for k, x in values.items()}
    trace = []
    for t, grads in enumerate(gradients(scale), start=1):
        for name, g in grads.items():
            m[name] = 0.9 * m[name] + 0.1 * g
            v[name] = 0.999 * v[name] + 0.001 * g * g
            m_hat, v_hat = (m[name] / (1 - 0.9 ** t), v[name] / (1 - 0.999 ** t)) if bias_correction else (
                m[name], v[name])
            decay = 0.0 if name.endswith("bias") and not decay_bias else WEIGHT_DECAY
            values[name] = values[name] - LR * decay * values[name] - LR * m_hat / (np.sqrt(v_hat) + EPS)
        trace.append({k: x.copy() for k, x in values.items()})
    return trace


@pytest.mark.parametrize("bias_correction", [True, False])
def test_matches_numpy_adam(bias_correction):
    optimizer, ours = run_ours(phase(bias_correction))
    assert isinstance(optimizer, AdamW) == bias_correction
    for step, (got, expected) in enumerate(zip(ours, numpy_adam(bias_correction)), start=1):
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=f"{name} step {step}")


def test_eps_is_added_to_the_corrected_second_moment():
    """Gradients of 1e-6, the size of eps: AdamW's sqrt(v / (1 - 0.999**t)) + eps, not sqrt(v) + eps."""
    _, ours = run_ours(phase(True), scale=1e-6)
    expected = numpy_adam(True, scale=1e-6)
    start = start_values()
    for step, (got, want) in enumerate(zip(ours, expected), start=1):
        for name in want:
            np.testing.assert_allclose(got[name] - start[name], want[name] - start[name], rtol=1e-3, atol=1e-9,
                                       err_msg=f"{name} step {step}")


def test_one_group_decays_everything():
    params = [Parameter(ms.Tensor(value), name=name) for name, value in start_values().items()]
    optimizer = AdamW(params, learning_rate=LR, eps=EPS, weight_decay=WEIGHT_DECAY)
    for grads in gradients():
        optimizer(tuple(ms.Tensor(grads[p.name]) for p in params))
    expected = numpy_adam(True, decay_bias=True)[-1]
    for p in params:
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-5, atol=1e-6, err_msg=p.name)


def test_bias_correction_shrinks_the_first_steps():
    """Without correction the first update is (1 - 0.9) / sqrt(1 - 0.999) = 3.16x as large."""
    start = start_values()["dense.bias"]  # not decayed: the move is the Adam update alone
    corrected, uncorrected = (np.abs(run_ours(phase(flag))[1][0]["dense.bias"] - start) for flag in (True, False))
    np.testing.assert_allclose(uncorrected / corrected, 0.1 / np.sqrt(0.001), rtol=1e-3)


def test_matches_torch_adamw_with_warmup():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    total = 20
    _, ours = run_ours(phase(True, warmup_ratio=0.5), total_steps=total)
    values = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in start_values().items()}
    reference = torch.optim.AdamW([{"params": [values["dense.weight"]], "weight_decay": WEIGHT_DECAY},
                                   {"params": [values["dense.bias"]], "weight_decay": 0.0}], lr=LR, eps=EPS)
    warmup = total // 2
    for step, grads in enumerate(gradients()):
        for group in reference.param_groups:
            group["lr"] = LR * (step + 1) / warmup  # the schedule's warm-up (src/lr_schedule.py)
        for name, param in values.items():
            param.grad = torch.tensor(grads[name])
        reference.step()
        for name, param in values.items():
            np.testing.assert_allclose(ours[step][name], param.detach().numpy(), rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name} step {step + 1}")
