"""The optimizer of every phase: Adam with decoupled weight decay, with or without bias correction.

MindSpore's nn.AdamWeightDecay is the original BERT optimizer (also the model zoo's and TinyBERT's
BertAdam): it skips Adam's bias correction, so its update at step t is
(1 - 0.9**t) / sqrt(1 - 0.999**t) times what the learning rate says: 6.5x around step 12, 3.2x at
step 100, 1.6x at step 458. On a small task that is too much: a MiniLM teacher fine-tuned on MRPC
at lr 5e-5 stayed at the majority class (dev acc 0.703), where the same run with bias correction
(torch.optim.AdamW) reaches 0.79. Mosbach et al. (2021, "On the Stability of Fine-tuning BERT")
trace failed fine-tuning runs to the same cause.
"""
import mindspore as ms
from mindspore import nn, ops

from src.lr_schedule import WarmupPolynomialDecayLR

NO_DECAY = ("bias", "beta", "gamma", "layernorm")  # parameter-name parts that are never decayed

_adamw_update = ops.MultitypeFuncGraph("adamw_update")


@_adamw_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor")
def _update(adam, beta1, beta2, beta1_power, beta2_power, epsilon, lr, weight_decay, param, m, v, grad):
    """torch.optim.AdamW's step for one parameter: decay, then the bias-corrected Adam update (fused)."""
    decayed = ops.assign(param, param * (1.0 - lr * weight_decay))
    grad = ops.depend(grad.astype(param.dtype), decayed)
    return adam(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad)


class AdamW(nn.Optimizer):
    """Adam with bias correction and decoupled weight decay, the update of torch.optim.AdamW.

    The Adam part is MindSpore's fused `ops.Adam` kernel, which corrects the bias through the
    learning rate: lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + epsilon). With epsilon
    = eps * sqrt(1 - beta2**t) that is exactly AdamW's lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t))
    + eps). The decoupled decay is one multiply before it. Written out of element-wise operations
    instead, the update was several times slower on a CPU (bench/GD_STEP.md, "Optimizer").
    Its state is named as nn.AdamWeightDecay's (adam_m.*, adam_v.*, global_step), so checkpoints
    resume under either optimizer.
    """

    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
        super().__init__(learning_rate, params, weight_decay)
        self.beta1 = ms.Tensor(beta1, ms.float32)
        self.beta2 = ms.Tensor(beta2, ms.float32)
        self.eps = eps
        self.adam = ops.Adam()
        self.moments1 = self._parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="adam_v", init="zeros")

    def construct(self, gradients):
        lr = self.get_lr()
        weight_decay = self.get_weight_decay()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        step = self.global_step.astype(ms.float32)  # 1 at the first update
        beta1_power, beta2_power = ops.pow(self.beta1, step), ops.pow(self.beta2, step)
        epsilon = self.eps * ops.sqrt(1.0 - beta2_power)
        update = ops.partial(_adamw_update, self.adam, self.beta1, self.beta2, beta1_power, beta2_power, epsilon)
        if self.is_group_lr:  # one learning rate and one weight decay per parameter
            return self.hyper_map(update, lr, weight_decay, self._parameters, self.moments1, self.moments2,
                                  gradients)
        lrs = (lr,) * len(self._parameters)
        if self.is_group:  # one weight decay per parameter
            return self.hyper_map(update, lrs, weight_decay, self._parameters, self.moments1, self.moments2,
                                  gradients)
        return self.hyper_map(update, lrs, (weight_decay,) * len(self._parameters), self._parameters,
                              self.moments1, self.moments2, gradients)


def build_optimizer(params, phase_cfg, total_steps, own_rate=(), own_learning_rate=0.0):
    """The phase's optimizer and schedule; biases and LayerNorm parameters are not decayed.

    own_rate: parameters trained at `own_learning_rate` (same warm-up and decay shape) without weight
    decay: Movement Pruning's mask scores (mask_scores_learning_rate).
    """
    def schedule_from(learning_rate):
        end = phase_cfg.end_learning_rate * learning_rate / phase_cfg.learning_rate
        return WarmupPolynomialDecayLR(learning_rate, end, phase_cfg.warmup_ratio * total_steps, total_steps,
                                       phase_cfg.power)
    schedule = schedule_from(phase_cfg.learning_rate)
    own = {id(p) for p in own_rate}
    params = [p for p in params if id(p) not in own]
    exempt = [any(key in p.name.lower() for key in NO_DECAY) for p in params]
    decay = [p for p, skip in zip(params, exempt) if not skip]
    rest = [p for p, skip in zip(params, exempt) if skip]
    groups = [{"params": decay, "weight_decay": phase_cfg.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    if own_rate:
        groups = [dict(group, lr=schedule) for group in groups]
        groups.append({"params": list(own_rate), "weight_decay": 0.0, "lr": schedule_from(own_learning_rate)})
    optimizer = AdamW if phase_cfg.bias_correction else nn.AdamWeightDecay
    return optimizer(groups, learning_rate=schedule, eps=phase_cfg.eps)
