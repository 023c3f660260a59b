"""The cubic sparsity schedule of Movement Pruning (Sanh et al. 2020), after Zhu and Gupta
2017 ("To prune, or not to prune").

The threshold stays at `initial_threshold` for the first initial_warmup x warmup_steps steps, at
`final_threshold` for the last final_warmup x warmup_steps steps, and in between moves as
    final + (initial - final) * (1 - (step - t_i) / (total_steps - t_i - t_f)) ** 3
with t_i = initial_warmup x warmup_steps and t_f = final_warmup x warmup_steps, so sparsity grows
fast at first and slowly near the end. For magnitude and topK the threshold is the fraction of
weights kept (1 - sparsity), so this is Zhu and Gupta's cubic curve on sparsity; for
sigmoied_threshold it is a cut-off on sigmoid(score). The regularisation weight follows it:
final_lambda x threshold / final_threshold. `warmup_steps` is the learning-rate warm-up, the unit
the paper's scripts count `initial_warmup` and `final_warmup` in.
"""


def cubic_threshold(step, total_steps, warmup_steps, initial_threshold, final_threshold,
                    initial_warmup, final_warmup, final_lambda):
    """Threshold and regularisation weight in force at an optimizer step.

    Args:
        step (int): the optimizer step, counted as the paper's `global_step` (1 at the first update).
        total_steps (int): optimizer steps of the whole run.
        warmup_steps (int): learning-rate warm-up steps (the unit of the two warm-ups below).
        initial_threshold, final_threshold (float): the two ends of the schedule, fractions (see
            settings.check_threshold), not percentages.
        initial_warmup, final_warmup (float): steps held at each end, in units of warmup_steps.
        final_lambda (float): regularisation weight at final_threshold.
    Returns:
        tuple: (threshold, regu_lambda), Python floats; regu_lambda is 0 when final_threshold is 0.
    Raises nothing: a run shorter than the two warm-ups simply never enters the cubic part.
    """
    initial_steps = initial_warmup * warmup_steps
    final_steps = final_warmup * warmup_steps
    if step <= initial_steps:
        threshold = initial_threshold
    elif step > total_steps - final_steps:
        threshold = final_threshold
    else:  # initial_steps < step <= total_steps - final_steps, so the denominator is positive
        progress = (step - initial_steps) / (total_steps - initial_steps - final_steps)
        threshold = final_threshold + (initial_threshold - final_threshold) * (1.0 - progress) ** 3
    regu_lambda = final_lambda * threshold / final_threshold if final_threshold else 0.0
    return threshold, regu_lambda


def schedule_for(settings, step, total_steps, warmup_steps):
    """`cubic_threshold` with the thresholds, warm-ups and final_lambda of a PruningConfig."""
    return cubic_threshold(step, total_steps, warmup_steps, settings.initial_threshold, settings.final_threshold,
                           settings.initial_warmup, settings.final_warmup, settings.final_lambda)
