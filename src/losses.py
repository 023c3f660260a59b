"""Distillation losses as pure functions, in one registry per kind.

Three kinds, each with one call signature (as TextBrewer's `losses.py` splits them):
  FEATURE_LOSSES     (student, teacher, attention_mask) -> scalar: intermediate matches; student and
                     teacher are one feature each (a tensor, or a pair of tensors for the pair losses
                     `mmd` and `fsp`), attention_mask (B, T) is 1 on real tokens.
  PREDICTION_LOSSES  (student_logits, teacher_logits, temperature, mask) -> scalar: soft targets;
                     logits (..., C), temperature broadcastable to (..., 1), mask (...,) 1 where a
                     prediction counts (every row of a sentence task; real first word-pieces in NER).
  LABEL_LOSSES       (logits, labels) -> scalar: gold labels; label -100 is ignored.
`register_feature_loss` and its two siblings add a loss: one function and one registration. A name
is looked up with `get_loss(kind, name, key)`, which rejects a loss of another kind by name, so a
wrong choice stops the run when the config is read, not inside graph compilation.

Masking differs from the model zoo on purpose: the zoo zeroes attention scores <= -100 and averages
over every entry, padding included, so the loss shrinks as padding grows. Here padded positions are
left out and means are over real entries only.
"""
import mindspore as ms
from mindspore import ops

from src.fused_ops import masked_squared_error_sum

NEG_INF = -10000.0  # additive bias that gives a masked key ~0 probability, as BERT's own mask does
IGNORE_LABEL = -100  # Hugging Face's ignore index: word-piece continuations and padding in NER


def _token_mask(attention_mask):
    return attention_mask.astype(ms.float32)


def _pair_mask(attention_mask):
    mask = _token_mask(attention_mask)
    return (mask[:, :, None] * mask[:, None, :])[:, None]  # (B, 1, T, T)


# ---- feature losses: (student, teacher, attention_mask) ----

def hidden_mse(student_hidden, teacher_hidden, attention_mask):
    """MSE of hidden states over real tokens (TinyBERT Eq. 8). Both (B, T, H): project the student first."""
    batch, seq_length, width = student_hidden.shape
    mask = _token_mask(attention_mask).reshape(batch * seq_length, 1, 1)
    squared = masked_squared_error_sum(student_hidden.reshape(batch * seq_length, width, 1),
                                       teacher_hidden.reshape(batch * seq_length, width, 1), mask)
    return squared / (mask.sum() * width)


def hidden_cos(student_hidden, teacher_hidden, attention_mask):
    """1 - cosine similarity of each real token's hidden state, averaged. Both (B, T, H) or (B, H)."""
    cosine = (student_hidden * teacher_hidden).sum(-1) / (
        ops.norm(student_hidden, dim=-1) * ops.norm(teacher_hidden, dim=-1) + 1e-12)
    if cosine.ndim == 1:
        return (1.0 - cosine).mean()
    mask = _token_mask(attention_mask)
    return ((1.0 - cosine) * mask).sum() / mask.sum()


def pkd(student_cls, teacher_cls, attention_mask):
    """Patient KD (Sun et al. 2019, Eq. 5): squared distance of L2-normalised [CLS] states, (B, H) each.

    Summed over the hidden axis, averaged over the batch; attention_mask is not needed.
    """
    s = student_cls / (ops.norm(student_cls, dim=-1, keepdim=True) + 1e-12)
    t = teacher_cls / (ops.norm(teacher_cls, dim=-1, keepdim=True) + 1e-12)
    return ops.square(s - t).sum(-1).mean()


def attention_mse(student_scores, teacher_scores, attention_mask):
    """MSE of attention maps over (query, key) pairs of real tokens (TinyBERT Eq. 7).

    (B, nh, T, T) each, same number of heads: pre-softmax scores (feature `attention`) or
    probabilities (feature `attention_probs`).
    """
    batch, heads, queries, keys = student_scores.shape
    pairs = _pair_mask(attention_mask).reshape(batch, 1, queries * keys)
    squared = masked_squared_error_sum(student_scores.reshape(batch, heads, queries * keys),
                                       teacher_scores.reshape(batch, heads, queries * keys), pairs)
    return squared / (pairs.sum() * heads)


def _masked_log_softmax(logits, attention_mask):
    """log softmax over the key axis of (B, h, T, T) logits, masked keys excluded."""
    bias = (1.0 - _token_mask(attention_mask))[:, None, None, :] * NEG_INF
    return ops.log_softmax(logits + bias, axis=-1)


def _mean_over_real_queries(per_query, attention_mask):
    """per_query (B, h, T) -> mean over heads and real query positions."""
    mask = _token_mask(attention_mask)[:, None, :]
    return (per_query * mask).sum() / (mask.sum() * per_query.shape[1])


def attention_ce(student_logits, teacher_logits, attention_mask):
    """Cross-entropy of the student's attention distribution against the teacher's, per query.

    Inputs are (B, h, T, T) pre-softmax logits (attention scores or relation logits); softmax is
    taken over real keys only. Mean over heads and real queries.
    """
    teacher_log_probs = _masked_log_softmax(teacher_logits, attention_mask)
    student_log_probs = _masked_log_softmax(student_logits, attention_mask)
    return _mean_over_real_queries(-(ops.exp(teacher_log_probs) * student_log_probs).sum(-1), attention_mask)


def attention_kl(student_logits, teacher_logits, attention_mask):
    """KL(teacher || student) of attention or relation distributions per query (MiniLM, Wang et al.
    2020, Eq. 4 and 6; MiniLMv2, Wang et al. 2021, Eq. 7). Inputs as `attention_ce`."""
    teacher_log_probs = _masked_log_softmax(teacher_logits, attention_mask)
    student_log_probs = _masked_log_softmax(student_logits, attention_mask)
    kl = (ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs)).sum(-1)
    return _mean_over_real_queries(kl, attention_mask)


def mmd(student_pair, teacher_pair, attention_mask):
    """Similarity-matrix MSE of two layers (TextBrewer's `mmd`, the `hidden_smmd` matches).

    student_pair: (S_a, S_b), each (B, T, H_S); teacher_pair: (T_a, T_b), each (B, T, H_T). The
    token-by-token matrices S_a S_b^T / H_S and T_a T_b^T / H_T (B, T, T) are compared over real
    token pairs, so student and teacher widths may differ.
    """
    s_a, s_b = student_pair
    t_a, t_b = teacher_pair
    gram_s = ops.matmul(s_a, s_b.swapaxes(1, 2)) / s_b.shape[-1]
    gram_t = ops.matmul(t_a, t_b.swapaxes(1, 2)) / t_b.shape[-1]
    pairs = _pair_mask(attention_mask)[:, 0]
    return (ops.square(gram_s - gram_t) * pairs).sum() / pairs.sum()


def fsp(student_pair, teacher_pair, attention_mask):
    """Flow of solution procedure (Yim et al. 2017): MSE of the Gram matrices between two layers.

    student_pair: (S_a, S_b), each (B, T, H); teacher_pair likewise with the same H (project the
    student first). G = A^T B / (number of real tokens), (B, H, H), summed over real tokens only.
    """
    mask = _token_mask(attention_mask)[:, :, None]
    lengths = mask.sum(1)[:, :, None]  # (B, 1, 1)
    s_a, s_b = student_pair
    t_a, t_b = teacher_pair
    gram_s = ops.matmul((s_a * mask).swapaxes(1, 2), s_b * mask) / lengths
    gram_t = ops.matmul((t_a * mask).swapaxes(1, 2), t_b * mask) / lengths
    return ops.square(gram_s - gram_t).mean()


def nst(student_hidden, teacher_hidden, attention_mask):
    """Neuron selectivity transfer (Huang and Wang 2017): MMD with the polynomial kernel (x.y)^2.

    Each neuron's activations over the real tokens, L2-normalised, form one sample; the student's
    H_S neurons and the teacher's H_T neurons are compared as two sets, so the widths may differ.
    student_hidden (B, T, H_S), teacher_hidden (B, T, H_T). Mean over the batch.
    """
    mask = _token_mask(attention_mask)[:, :, None]
    s = (student_hidden * mask).swapaxes(1, 2)  # (B, H_S, T)
    t = (teacher_hidden * mask).swapaxes(1, 2)
    s = s / (ops.norm(s, dim=-1, keepdim=True) + 1e-12)
    t = t / (ops.norm(t, dim=-1, keepdim=True) + 1e-12)
    kernel_ss = ops.square(ops.matmul(s, s.swapaxes(1, 2))).mean((1, 2))
    kernel_tt = ops.square(ops.matmul(t, t.swapaxes(1, 2))).mean((1, 2))
    kernel_st = ops.square(ops.matmul(s, t.swapaxes(1, 2))).mean((1, 2))
    return (kernel_ss + kernel_tt - 2.0 * kernel_st).mean()


# ---- prediction losses: (student_logits, teacher_logits, temperature, mask) ----

def _masked_mean(values, mask):
    mask = mask.astype(ms.float32)
    return (values * mask).sum() / ops.maximum(mask.sum(), 1.0)


def soft_cross_entropy(student_logits, teacher_logits, temperature, mask):
    """Cross-entropy of student against teacher class distributions, both softened by temperature
    (TinyBERT Eq. 10; Hinton et al. 2015). Not rescaled by temperature**2 here: see
    `distill.temperature_squared`."""
    targets = ops.softmax(teacher_logits / temperature, axis=-1)
    log_probs = ops.log_softmax(student_logits / temperature, axis=-1)
    return _masked_mean(-(targets * log_probs).sum(-1), mask)


def kl_div(student_logits, teacher_logits, temperature, mask):
    """KL(teacher || student) of the softened class distributions: soft cross-entropy minus the
    teacher's entropy, so it is 0 when the student matches."""
    teacher_log_probs = ops.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_probs = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = (ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs)).sum(-1)
    return _masked_mean(kl, mask)


def logits_mse(student_logits, teacher_logits, temperature, mask):
    """MSE of raw logits (regression, or logit matching as in Ba and Caruana 2014): temperature unused."""
    return _masked_mean(ops.square(student_logits - teacher_logits).mean(-1), mask)


# ---- label losses: (logits, labels) ----

def cross_entropy(logits, labels):
    """Cross-entropy against gold class ids; logits (..., C), labels (...) int, -100 ignored."""
    num_labels = logits.shape[-1]
    return ops.cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1).astype(ms.int32),
                             ignore_index=IGNORE_LABEL)


def mse(logits, labels):
    """Squared error against gold regression targets; logits (B, 1), labels (B,)."""
    return ops.square(logits[:, 0] - labels.astype(ms.float32)).mean()


FEATURE_LOSSES = {"hidden_mse": hidden_mse, "hidden_cos": hidden_cos, "pkd": pkd,
                  "attention_mse": attention_mse, "attention_ce": attention_ce, "attention_kl": attention_kl,
                  "relation_kl": attention_kl, "mmd": mmd, "fsp": fsp, "nst": nst}
PREDICTION_LOSSES = {"soft_cross_entropy": soft_cross_entropy, "kl_div": kl_div, "logits_mse": logits_mse}
LABEL_LOSSES = {"cross_entropy": cross_entropy, "mse": mse}
REGISTRIES = {"feature": FEATURE_LOSSES, "prediction": PREDICTION_LOSSES, "label": LABEL_LOSSES}
PAIR_LOSSES = ("mmd", "fsp")  # take two layers from each side: layer_S and layer_T are [a, b]


def _register(kind, name, fn):
    if any(name in registry for registry in REGISTRIES.values()):
        raise ValueError(f"a loss named {name!r} is already registered")
    REGISTRIES[kind][name] = fn


def register_feature_loss(name, fn):
    """Make `fn(student, teacher, attention_mask) -> scalar` selectable as a match's `loss`."""
    _register("feature", name, fn)


def register_prediction_loss(name, fn):
    """Make `fn(student_logits, teacher_logits, temperature, mask) -> scalar` selectable as distill.prediction_loss."""
    _register("prediction", name, fn)


def register_label_loss(name, fn):
    """Make `fn(logits, labels) -> scalar` selectable as distill.label_loss."""
    _register("label", name, fn)


def get_loss(kind, name, key):
    """The `kind` loss called `name`; `key` is the config key that named it, for the error message."""
    registry = REGISTRIES[kind]
    if name in registry:
        return registry[name]
    other = next((k for k, r in REGISTRIES.items() if name in r), None)
    reason = f"{name!r} is a {other} loss" if other else f"unknown loss {name!r}"
    raise ValueError(f"{key}: {reason}; a {kind} loss is needed here: one of {', '.join(sorted(registry))}")
