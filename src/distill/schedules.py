"""Schedules of the loss weights and the distillation temperature, chosen by name.

Weight schedules (TextBrewer's `kd_loss_weight_scheduler` / `hard_label_weight_scheduler`) scale a
weight by training progress p = step / total_steps in [0, 1]: `constant` (1), `linear_growth` (p),
`linear_decay` (1 - p). They run on the host; the values in force are fed to the step as a tensor.

Temperature schedules return a per-example temperature (..., 1) from the logits, inside the graph
and outside the gradient:
  constant  the configured temperature everywhere.
  flsw      TextBrewer's focal-loss-style weighting: w = (1 - cos(student, teacher logits))^gamma,
            tau = T + (mean(w) - w) * beta: examples the student already matches get a higher
            temperature.
  cwsm      TextBrewer's confidence-weighted scheduler: w = 1 / (max softmax(student) + 1e-3),
            tau = T + (mean(w) - w) * beta: confident examples get a higher temperature.
"""
from mindspore import ops

WEIGHT_SCHEDULES = {
    "constant": lambda progress: 1.0,
    "linear_growth": lambda progress: progress,
    "linear_decay": lambda progress: 1.0 - progress,
}


def _constant(student_logits, teacher_logits, temperature, beta, gamma):
    return ops.ones_like(student_logits[..., :1]) * temperature


def _flsw(student_logits, teacher_logits, temperature, beta, gamma):
    student = ops.stop_gradient(student_logits)
    teacher = ops.stop_gradient(teacher_logits)
    student = student / (ops.norm(student, dim=-1, keepdim=True) + 1e-4)
    teacher = teacher / (ops.norm(teacher, dim=-1, keepdim=True) + 1e-4)
    weight = ops.pow(1.0 - (student * teacher).sum(-1, keepdims=True), gamma)
    return temperature + (weight.mean() - weight) * beta


def _cwsm(student_logits, teacher_logits, temperature, beta, gamma):
    probs = ops.softmax(ops.stop_gradient(student_logits), axis=-1)
    weight = 1.0 / (probs.max(axis=-1, keepdims=True) + 1e-3)
    return temperature + (weight.mean() - weight) * beta


TEMPERATURE_SCHEDULES = {"constant": _constant, "flsw": _flsw, "cwsm": _cwsm}


def schedule_values(distill, step, total_steps, terms, pruning=None, regu_lambda=0.0):
    """(kd_weight, hard_label_weight, temperature, regu_lambda) in force at `step` (0-based) of
    `total_steps`.

    terms: the phase's loss terms; a phase with the label term alone is plain supervised training
    (teacher fine-tuning), whose label weight is 1. pruning: the `pruning` section in the prune
    phase, whose weights are Movement Pruning's alpha_distil and alpha_ce; regu_lambda: the
    pruning schedule's regularisation weight.
    """
    if tuple(terms) == ("label",):
        return 0.0, 1.0, distill.temperature, 0.0
    progress = step / max(total_steps, 1)
    kd_weight, hard_label_weight = (pruning.alpha_distil, pruning.alpha_ce) if pruning is not None \
        else (distill.kd_weight, distill.hard_label_weight)
    return (kd_weight * WEIGHT_SCHEDULES[distill.kd_weight_schedule](progress),
            hard_label_weight * WEIGHT_SCHEDULES[distill.hard_label_weight_schedule](progress),
            distill.temperature, regu_lambda)
