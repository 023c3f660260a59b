"""Distillation losses as pure functions `(student, teacher, ...) -> scalar`.

A loss is chosen by name in the config (`distill.attention_loss` and friends); `register_loss`
adds a new one without touching the distillation cells. Names are resolved when a cell is built.

Masking differs from the model zoo on purpose: the zoo zeroes scores <= -100 and then averages over
every entry, padding included, so the loss shrinks as padding grows. Here padded positions are
excluded and the mean is over real entries only.
"""
import mindspore as ms
from mindspore import ops


def attention_mse(student_scores, teacher_scores, attention_mask):
    """MSE of pre-softmax attention scores over (query, key) pairs of real tokens.

    student_scores, teacher_scores: (B, nh, T, T) float32, same number of heads.
    attention_mask: (B, T), 1 for real tokens.
    """
    mask = attention_mask.astype(ms.float32)
    pair_mask = (mask[:, :, None] * mask[:, None, :])[:, None]  # (B, 1, T, T)
    squared = ops.square(student_scores - teacher_scores) * pair_mask
    return squared.sum() / (pair_mask.sum() * student_scores.shape[1])


def hidden_mse(student_hidden, teacher_hidden, attention_mask):
    """MSE of hidden states over real tokens. Both (B, T, H_T): the student is projected first."""
    mask = attention_mask.astype(ms.float32)[:, :, None]  # (B, T, 1)
    squared = ops.square(student_hidden - teacher_hidden) * mask
    return squared.sum() / (mask.sum() * student_hidden.shape[-1])


def soft_cross_entropy(student_logits, teacher_logits, temperature):
    """Cross-entropy of student against teacher class distributions, both softened by temperature.

    logits: (B, C). Mean over the batch. Not rescaled by temperature**2, as in the TinyBERT paper.
    """
    targets = ops.softmax(teacher_logits / temperature, axis=-1)
    log_probs = ops.log_softmax(student_logits / temperature, axis=-1)
    return -(targets * log_probs).sum(axis=-1).mean()


def logits_mse(student_logits, teacher_logits, temperature):
    """Prediction-layer loss for regression tasks (one logit): temperature does not apply."""
    return ops.square(student_logits - teacher_logits).mean()


def hard_cross_entropy(logits, labels):
    """Cross-entropy against gold class ids; labels (B,) int32."""
    return ops.cross_entropy(logits, labels.astype(ms.int32))


def hard_mse(logits, labels):
    """Squared error against gold regression targets; logits (B, 1), labels (B,)."""
    return ops.square(logits[:, 0] - labels.astype(ms.float32)).mean()


LOSSES = {
    "attention_mse": attention_mse,
    "hidden_mse": hidden_mse,
    "soft_cross_entropy": soft_cross_entropy,
    "logits_mse": logits_mse,
    "hard_cross_entropy": hard_cross_entropy,
    "hard_mse": hard_mse,
}


def register_loss(name, fn):
    """Make `fn` selectable by `name` in the config."""
    if name in LOSSES:
        raise ValueError(f"a loss named {name!r} is already registered")
    LOSSES[name] = fn


def get_loss(name, key):
    """The loss called `name`; `key` is the config key that named it, for the error message."""
    if name not in LOSSES:
        raise ValueError(f"{key}: unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]
