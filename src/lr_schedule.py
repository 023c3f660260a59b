"""Learning rate: linear warm-up, then polynomial decay to an end value, as BERT fine-tuning uses."""
import mindspore as ms
from mindspore import nn, ops


class WarmupPolynomialDecayLR(nn.learning_rate_schedule.LearningRateSchedule):
    """lr(step) = peak * step / warmup while warming up, then
    (peak - end) * (1 - (step - warmup) / (total - warmup)) ** power + end.

    `step` is the optimizer's own counter: every rank takes the same number of optimizer steps,
    so the schedule counts global steps correctly in data-parallel runs.
    """

    def __init__(self, learning_rate, end_learning_rate, warmup_steps, total_steps, power):
        super().__init__()
        if total_steps <= 0:
            raise ValueError("the learning-rate schedule needs at least one training step; "
                             "the dataset is smaller than one batch?")
        self.peak = learning_rate
        self.end = end_learning_rate
        self.warmup_steps = max(int(warmup_steps), 0)
        self.decay_steps = max(total_steps - self.warmup_steps, 1)
        self.power = power

    def construct(self, global_step):
        step = global_step.astype(ms.float32)
        warmup = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = ops.clip_by_value((step - self.warmup_steps) / self.decay_steps, 0.0, 1.0)
        decay = (self.peak - self.end) * ops.pow(1.0 - progress, self.power) + self.end
        if step < self.warmup_steps:
            return warmup
        return decay
