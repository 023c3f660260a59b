"""Every loss of the three registries against an independent torch reference written from its paper.

Odd sizes (batch 3, heads 5, seq 7, widths 11 and 13) make a swapped axis fail. The batch is padded
to three different lengths; the references crop each example to its real tokens rather than mask
it, so they share no masking code with src/losses.py, and changing the padded values must leave
every loss unchanged.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest
import torch
import torch.nn.functional as F

from src import losses
from src.distill.matches import parse_matches

ROOT = Path(__file__).resolve().parents[2]
B, HEADS, T, H_S, H_T, C = 3, 5, 7, 11, 13, 5
LENGTHS = (7, 4, 2)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _mask(lengths=LENGTHS, seq=T):
    mask = np.zeros((len(lengths), seq), np.int32)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return mask


def _ms(x):
    if isinstance(x, tuple):
        return tuple(_ms(v) for v in x)
    return ms.Tensor(x, ms.int32 if x.dtype.kind == "i" else ms.float32)


def _th(x):
    if isinstance(x, tuple):
        return tuple(_th(v) for v in x)
    return torch.tensor(x, dtype=torch.float64)


def _pad_tokens(x, rng):
    """(B, T, ...) with every padded token replaced by large noise."""
    if isinstance(x, tuple):
        return tuple(_pad_tokens(v, rng) for v in x)
    x = x.copy()
    for row, length in enumerate(LENGTHS):
        x[row, length:] = rng.normal(size=x[row, length:].shape) * 30.0
    return x


def _pad_attention(x, rng):
    """(B, h, T, T) with padded queries and padded keys replaced by large noise."""
    x = x.copy()
    for row, length in enumerate(LENGTHS):
        x[row, :, length:, :] = rng.normal(size=x[row, :, length:, :].shape) * 30.0
        x[row, :, :, length:] = rng.normal(size=x[row, :, :, length:].shape) * 30.0
    return x


def _tokens(x):
    """(B, T, H) -> (real tokens, H)."""
    return torch.cat([x[row, :length] for row, length in enumerate(LENGTHS)])


# ---- references, from the papers' formulas, one example cropped to its length at a time ----

def ref_hidden_mse(s, t):  # TinyBERT Eq. 8: MSE(H^S W_h, H^T)
    return F.mse_loss(_tokens(s), _tokens(t))


def ref_hidden_cos(s, t):  # 1 - cos per real token (DistilBERT's cosine loss)
    if s.ndim == 2:
        return 1.0 - F.cosine_similarity(s, t, dim=-1).mean()
    return 1.0 - F.cosine_similarity(_tokens(s), _tokens(t), dim=-1).mean()


def ref_pkd(s, t):  # Sun et al. 2019, Eq. 5: || h_S/||h_S|| - h_T/||h_T|| ||_2^2
    return (F.normalize(s, dim=-1) - F.normalize(t, dim=-1)).pow(2).sum(-1).mean()


def _attention_blocks(x):
    return [x[row, :, :length, :length] for row, length in enumerate(LENGTHS)]


def ref_attention_mse(s, t):  # TinyBERT Eq. 7, over real (query, key) pairs
    return F.mse_loss(torch.cat([a.flatten() for a in _attention_blocks(s)]),
                      torch.cat([a.flatten() for a in _attention_blocks(t)]))


def ref_attention_ce(s, t):  # -sum_k softmax(T)_k log softmax(S)_k per real query, softmax over real keys
    return torch.cat([-(F.softmax(b_t, -1) * F.log_softmax(b_s, -1)).sum(-1).flatten()
                      for b_s, b_t in zip(_attention_blocks(s), _attention_blocks(t))]).mean()


def ref_attention_kl(s, t):  # MiniLM Eq. 4: KL(teacher || student) per real query
    return torch.cat([F.kl_div(F.log_softmax(b_s, -1), F.log_softmax(b_t, -1), reduction="none",
                               log_target=True).sum(-1).flatten()
                      for b_s, b_t in zip(_attention_blocks(s), _attention_blocks(t))]).mean()


def ref_mmd(s, t):  # TextBrewer's mmd: MSE of token similarity matrices A B^T / width, real pairs only
    diffs = []
    for row, length in enumerate(LENGTHS):
        gram_s = s[0][row, :length] @ s[1][row, :length].T / s[1].shape[-1]
        gram_t = t[0][row, :length] @ t[1][row, :length].T / t[1].shape[-1]
        diffs.append((gram_s - gram_t).flatten())
    return torch.cat(diffs).pow(2).mean()


def ref_fsp(s, t):  # Yim et al. 2017: G = sum over positions of F1^T F2 / positions; MSE of G
    grams_s, grams_t = [], []
    for row, length in enumerate(LENGTHS):
        grams_s.append(s[0][row, :length].T @ s[1][row, :length] / length)
        grams_t.append(t[0][row, :length].T @ t[1][row, :length] / length)
    return F.mse_loss(torch.stack(grams_s), torch.stack(grams_t))


def ref_nst(s, t):
    """Huang and Wang 2017, Eq. 4 with k(x, y) = (x.y)^2: each neuron's L2-normalised activations over
    the real tokens is one sample; MMD^2 = mean k(s, s') + mean k(t, t') - 2 mean k(s, t)."""
    per_example = []
    for row, length in enumerate(LENGTHS):
        fs = F.normalize(s[row, :length].T, dim=1)  # (H_S, L)
        ft = F.normalize(t[row, :length].T, dim=1)  # (H_T, L)
        per_example.append((fs @ fs.T).pow(2).mean() + (ft @ ft.T).pow(2).mean() - 2 * (fs @ ft.T).pow(2).mean())
    return torch.stack(per_example).mean()


def _feature_cases():
    rng = _rng(1)
    hidden_s, hidden_s2 = rng.normal(size=(B, T, H_S)), rng.normal(size=(B, T, H_S))
    hidden_t, hidden_t2 = rng.normal(size=(B, T, H_T)), rng.normal(size=(B, T, H_T))
    scores_s, scores_t = rng.normal(size=(B, HEADS, T, T)) * 3, rng.normal(size=(B, HEADS, T, T)) * 3
    cls_s, cls_t = rng.normal(size=(B, H_S)), rng.normal(size=(B, H_S))
    same_width = rng.normal(size=(B, T, H_S)) + 0.5 * hidden_s  # correlated, so the loss is not ~ constant
    return {
        # name: (student, teacher, reference, how padding is perturbed)
        "hidden_mse": (hidden_s, same_width, ref_hidden_mse, _pad_tokens),
        "hidden_cos": (hidden_s, same_width, ref_hidden_cos, _pad_tokens),
        "hidden_cos[cls]": (cls_s, cls_t, ref_hidden_cos, None),
        "pkd": (cls_s, cls_t, ref_pkd, None),
        "attention_mse": (scores_s, scores_t, ref_attention_mse, _pad_attention),
        "attention_ce": (scores_s, scores_t, ref_attention_ce, _pad_attention),
        "attention_kl": (scores_s, scores_t, ref_attention_kl, _pad_attention),
        "relation_kl": (scores_t * 0.5 + scores_s, scores_t, ref_attention_kl, _pad_attention),
        "mmd": ((hidden_s, hidden_s2), (hidden_t, hidden_t2), ref_mmd, _pad_tokens),
        "fsp": ((hidden_s, hidden_s2), (same_width, hidden_s2 * 0.3), ref_fsp, _pad_tokens),
        "nst": (hidden_s, hidden_t, ref_nst, _pad_tokens),
    }


FEATURE_CASES = _feature_cases()


@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_feature_loss_matches_torch_reference(case):
    student, teacher, reference, _ = FEATURE_CASES[case]
    loss = losses.get_loss("feature", case.split("[")[0], "test")
    got = loss(_ms(student), _ms(teacher), _ms(_mask())).asnumpy()
    expected = reference(_th(student), _th(teacher)).item()
    assert got.shape == ()
    assert expected > 1e-3, "a reference near 0 would not catch a wrong loss"
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(name for name, c in FEATURE_CASES.items() if c[3] is not None))
def test_feature_loss_ignores_values_on_padded_positions(case):
    student, teacher, _, perturb = FEATURE_CASES[case]
    loss = losses.get_loss("feature", case, "test")
    rng = _rng(2)
    clean = loss(_ms(student), _ms(teacher), _ms(_mask())).asnumpy()
    padded = loss(_ms(perturb(student, rng)), _ms(perturb(teacher, rng)), _ms(_mask())).asnumpy()
    np.testing.assert_allclose(padded, clean, rtol=1e-5, atol=1e-7)


def test_feature_losses_are_zero_for_identical_inputs():
    rng = _rng(3)
    hidden, scores = rng.normal(size=(B, T, H_S)), rng.normal(size=(B, HEADS, T, T))
    mask = _ms(_mask())
    for name, x in (("hidden_mse", hidden), ("hidden_cos", hidden), ("attention_mse", scores),
                    ("attention_kl", scores), ("nst", hidden), ("mmd", (hidden, hidden)), ("fsp", (hidden, hidden))):
        assert abs(losses.FEATURE_LOSSES[name](_ms(x), _ms(x), mask).asnumpy()) < 1e-5, name


def test_pair_and_width_free_losses_accept_different_widths():
    """mmd and nst compare a student of width 11 with a teacher of width 13 (no projection needed)."""
    assert H_S != H_T
    assert FEATURE_CASES["mmd"][0][0].shape[-1] == H_S and FEATURE_CASES["mmd"][1][0].shape[-1] == H_T
    assert FEATURE_CASES["nst"][0].shape[-1] == H_S and FEATURE_CASES["nst"][1].shape[-1] == H_T
    assert set(losses.PAIR_LOSSES) == {"mmd", "fsp"} and set(losses.PAIR_LOSSES) <= set(losses.FEATURE_LOSSES)


# ---- prediction losses ----

def ref_soft_cross_entropy(s, t, temperature):  # Hinton et al. 2015; TinyBERT Eq. 10
    return F.cross_entropy(s / temperature, F.softmax(t / temperature, -1), reduction="mean")


def ref_kl_div(s, t, temperature):
    return F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="batchmean")


def ref_logits_mse(s, t, temperature):
    return F.mse_loss(s, t)


PREDICTION_REFERENCES = {"soft_cross_entropy": ref_soft_cross_entropy, "kl_div": ref_kl_div,
                         "logits_mse": ref_logits_mse}


def _temperatures(shape):
    rng = _rng(4)
    return {"scalar": 2.0, "per_example": rng.uniform(0.5, 3.0, size=shape).astype(np.float32)}


@pytest.mark.parametrize("name", sorted(PREDICTION_REFERENCES))
@pytest.mark.parametrize("temperature_kind", ["scalar", "per_example"])
def test_prediction_loss_on_sentences_matches_torch(name, temperature_kind):
    rng = _rng(5)
    student, teacher = rng.normal(size=(B, C)) * 3, rng.normal(size=(B, C)) * 3
    temperature = _temperatures((B, 1))[temperature_kind]
    ms_temperature = temperature if isinstance(temperature, float) else _ms(temperature)
    th_temperature = temperature if isinstance(temperature, float) else _th(temperature)
    got = losses.get_loss("prediction", name, "test")(_ms(student), _ms(teacher), ms_temperature,
                                                     _ms(np.ones(B, np.int32))).asnumpy()
    expected = PREDICTION_REFERENCES[name](_th(student), _th(teacher), th_temperature).item()
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PREDICTION_REFERENCES))
def test_prediction_loss_on_tokens_counts_only_masked_rows(name):
    """Token-level soft targets (NER): logits (B, T, C), mask (B, T), temperature per token (B, T, 1)."""
    rng = _rng(6)
    student, teacher = rng.normal(size=(B, T, C)) * 3, rng.normal(size=(B, T, C)) * 3
    temperature = _temperatures((B, T, 1))["per_example"]
    loss = losses.get_loss("prediction", name, "test")
    got = loss(_ms(student), _ms(teacher), _ms(temperature), _ms(_mask())).asnumpy()
    expected = PREDICTION_REFERENCES[name](_tokens(_th(student)), _tokens(_th(teacher)),
                                           _tokens(_th(temperature))).item()
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    padded = loss(_ms(_pad_tokens(student, rng)), _ms(_pad_tokens(teacher, rng)), _ms(temperature),
                  _ms(_mask())).asnumpy()
    np.testing.assert_allclose(padded, got, rtol=1e-5, atol=1e-7)


def test_temperature_changes_soft_losses_but_not_logits_mse():
    rng = _rng(7)
    student, teacher, ones = _ms(rng.normal(size=(B, C)) * 3), _ms(rng.normal(size=(B, C)) * 3), _ms(np.ones(B))
    for name in ("soft_cross_entropy", "kl_div"):
        cold = losses.PREDICTION_LOSSES[name](student, teacher, 1.0, ones).asnumpy()
        hot = losses.PREDICTION_LOSSES[name](student, teacher, 4.0, ones).asnumpy()
        assert abs(cold - hot) > 1e-2, name
    assert losses.logits_mse(student, teacher, 1.0, ones).asnumpy() == pytest.approx(
        losses.logits_mse(student, teacher, 4.0, ones).asnumpy())


# ---- label losses ----

def test_cross_entropy_ignores_label_minus_100_like_torch():
    rng = _rng(8)
    logits = rng.normal(size=(6, C)) * 2
    labels = np.array([0, -100, 4, 2, -100, 1], np.int32)
    got = losses.cross_entropy(_ms(logits), _ms(labels)).asnumpy()
    expected = F.cross_entropy(_th(logits), torch.tensor(labels, dtype=torch.long), ignore_index=-100).item()
    np.testing.assert_allclose(got, expected, rtol=2e-5)
    changed = logits.copy()
    changed[labels == -100] = rng.normal(size=(2, C)) * 50
    np.testing.assert_allclose(losses.cross_entropy(_ms(changed), _ms(labels)).asnumpy(), got, rtol=1e-6)


def test_cross_entropy_on_tokens_like_torch():
    """NER: logits (B, T, C), labels (B, T) with -100 on padding and word-piece continuations."""
    rng = _rng(9)
    logits = rng.normal(size=(B, T, C)) * 2
    labels = rng.integers(0, C, size=(B, T)).astype(np.int32)
    labels[_mask() == 0] = -100
    labels[0, 3] = labels[1, 1] = -100
    got = losses.cross_entropy(_ms(logits), _ms(labels)).asnumpy()
    expected = F.cross_entropy(_th(logits).reshape(-1, C), torch.tensor(labels, dtype=torch.long).reshape(-1),
                               ignore_index=-100).item()
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_mse_label_loss_like_torch():
    rng = _rng(10)
    logits, labels = rng.normal(size=(5, 1)), rng.uniform(0, 5, size=5)
    got = losses.mse(_ms(logits), _ms(labels)).asnumpy()
    np.testing.assert_allclose(got, F.mse_loss(_th(logits)[:, 0], _th(labels)).item(), rtol=2e-5)


# ---- gradients w.r.t. the student input, against torch autograd ----

def _torch_grad(reference, student, *rest):
    x = _th(student).requires_grad_(True)
    reference(x, *rest).backward()
    return x.grad.numpy()


def test_hidden_mse_gradient_matches_torch():
    student, teacher, reference, _ = FEATURE_CASES["hidden_mse"]
    got = ms.grad(losses.hidden_mse, grad_position=0)(_ms(student), _ms(teacher), _ms(_mask())).asnumpy()
    expected = _torch_grad(reference, student, _th(teacher))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert np.abs(got).sum() > 0 and not got[2, LENGTHS[2]:].any()


def test_attention_kl_gradient_matches_torch():
    student, teacher, reference, _ = FEATURE_CASES["attention_kl"]
    got = ms.grad(losses.attention_kl, grad_position=0)(_ms(student), _ms(teacher), _ms(_mask())).asnumpy()
    expected = _torch_grad(reference, student, _th(teacher))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert np.abs(got).sum() > 0


def test_soft_cross_entropy_gradient_matches_torch_with_per_example_temperature():
    rng = _rng(11)
    student, teacher = rng.normal(size=(B, C)) * 3, rng.normal(size=(B, C)) * 3
    temperature = _temperatures((B, 1))["per_example"]
    got = ms.grad(losses.soft_cross_entropy, grad_position=0)(
        _ms(student), _ms(teacher), _ms(temperature), _ms(np.ones(B, np.int32))).asnumpy()
    expected = _torch_grad(ref_soft_cross_entropy, student, _th(teacher), _th(temperature))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert np.abs(got).sum() > 0


# ---- registries ----

@pytest.mark.parametrize("kind, name, other", [
    ("feature", "soft_cross_entropy", "prediction"),
    ("feature", "cross_entropy", "label"),
    ("prediction", "hidden_mse", "feature"),
    ("prediction", "mse", "label"),
    ("label", "kl_div", "prediction"),
    ("label", "attention_kl", "feature"),
])
def test_wrong_kind_is_rejected_in_one_line_naming_the_key(kind, name, other):
    key = "distill.intermediate_matches[0].loss"
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}: '{name}' is a {other} loss; a {kind} loss is needed") \
            as error:
        losses.get_loss(kind, name, key)
    assert "\n" not in str(error.value)
    for choice in losses.REGISTRIES[kind]:
        assert choice in str(error.value)


def test_unknown_loss_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"^distill\.hidden_loss: unknown loss 'hiden_mse'; .*hidden_mse"):
        losses.get_loss("feature", "hiden_mse", "distill.hidden_loss")


def test_every_registered_loss_is_found_under_its_own_kind_only():
    names = [name for registry in losses.REGISTRIES.values() for name in registry]
    assert len(names) == len(set(names)), "a name in two registries would be ambiguous"
    for kind, registry in losses.REGISTRIES.items():
        for name, fn in registry.items():
            assert losses.get_loss(kind, name, "k") is fn


@pytest.fixture
def scratch_names():
    """Names a test registers, removed afterwards so other tests see the stock registries."""
    names = []
    yield names
    for name in names:
        for registry in losses.REGISTRIES.values():
            registry.pop(name, None)


def test_registered_losses_are_selectable(scratch_names):
    scratch_names += ["test_l1", "test_logit_l1", "test_hinge"]
    losses.register_feature_loss("test_l1", lambda s, t, m: (s - t).abs().mean())
    losses.register_prediction_loss("test_logit_l1", lambda s, t, tau, m: (s - t).abs().mean())
    losses.register_label_loss("test_hinge", lambda logits, labels: logits.mean())
    assert losses.get_loss("feature", "test_l1", "k")(_ms(np.ones(3)), _ms(np.zeros(3)), None).asnumpy() == 1.0
    assert losses.get_loss("prediction", "test_logit_l1", "k") is losses.PREDICTION_LOSSES["test_logit_l1"]
    assert losses.get_loss("label", "test_hinge", "k") is losses.LABEL_LOSSES["test_hinge"]
    (match,) = parse_matches([{"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "test_l1"}])
    assert match.loss == "test_l1"
    with pytest.raises(ValueError, match="'test_logit_l1' is a prediction loss"):
        parse_matches([{"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "test_logit_l1"}])


def test_duplicate_registration_is_rejected_in_any_kind(scratch_names):
    stock = losses.FEATURE_LOSSES["hidden_mse"]
    for register in (losses.register_feature_loss, losses.register_prediction_loss, losses.register_label_loss):
        with pytest.raises(ValueError, match="a loss named 'hidden_mse' is already registered"):
            register("hidden_mse", lambda *args: 0.0)
    assert losses.FEATURE_LOSSES["hidden_mse"] is stock
    assert "hidden_mse" not in losses.PREDICTION_LOSSES and "hidden_mse" not in losses.LABEL_LOSSES
    scratch_names.append("test_once")
    losses.register_label_loss("test_once", lambda logits, labels: 0.0)
    with pytest.raises(ValueError, match="already registered"):
        losses.register_label_loss("test_once", lambda logits, labels: 1.0)


WRONG_KIND_RUNS = {
    "hidden_loss": ("--distill.hidden_loss=soft_cross_entropy", r"distill\.hidden_loss"),
    "match_row": ("--distill.intermediate_matches=[{layer_S: 1, layer_T: 2, feature: hidden, loss: kl_div}]",
                  r"distill\.intermediate_matches\[0\]\.loss"),
}


@pytest.fixture(scope="module")
def wrong_kind_runs(tmp_path_factory):
    """Both command lines run at once (each is mostly MindSpore's import): {case: (result, seconds, output_dir)}."""
    runs = {}
    for case, (option, _) in WRONG_KIND_RUNS.items():
        output_dir = tmp_path_factory.mktemp(case) / "out"
        process = subprocess.Popen([sys.executable, "run_general_distill.py", option, f"--output_dir={output_dir}"],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "GLOG_v": "3", "TINYBERT_DEBUG": ""})
        runs[case] = (process, time.monotonic(), output_dir)
    results = {}
    for case, (process, start, output_dir) in runs.items():
        stdout, stderr = process.communicate(timeout=120)
        results[case] = (process.returncode, stdout, stderr, time.monotonic() - start, output_dir)
    return results


@pytest.mark.parametrize("case", sorted(WRONG_KIND_RUNS))
def test_wrong_kind_stops_general_distillation_before_anything_is_built(wrong_kind_runs, case):
    """One `error:` line naming the key, exit 2, no traceback; nothing written, no graph compiled."""
    returncode, stdout, stderr, elapsed, output_dir = wrong_kind_runs[case]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "is a prediction loss; a feature loss is needed" in lines[0]
    assert re.search(WRONG_KIND_RUNS[case][1], lines[0])
    assert "Traceback" not in stderr + stdout
    assert not output_dir.exists()
    # The run loads MindSpore (~2 s of CPU) and stops at the config; building models and compiling
    # a graph would take several times longer.
    assert elapsed < 60, f"took {elapsed:.1f} s"
