"""Masked dense layers: the four pruning methods of Movement Pruning (Sanh, Wolf and Rush 2020).

A `MaskedDense` computes x W_eff^T + b with W_eff = W * M, where the mask M (out, in) comes from
  magnitude           the largest |W|: M = 1 at the top `threshold` fraction of |W| (no scores);
  topK                movement pruning: M = 1 at the top `threshold` fraction of learned scores S;
  sigmoied_threshold  soft movement pruning: M = 1 where sigmoid(S) > threshold, at least 0.5% kept;
  l0                  hard-concrete gates (Louizos, Welling and Kingma 2018): stochastic while
                      training, the deterministic clamp(sigmoid(S) (zeta - gamma) + gamma, 0, 1) at
                      evaluation.
For topK and sigmoied_threshold the gradient reaches S through the straight-through estimator:
dL/dS = dL/dM = (dL/dW_eff) * W. The threshold is a Parameter shared by every masked layer of a model
and set before each step, so changing it neither recompiles the graph nor is baked into it.
Magnitude and topK masks need a full sort of every matrix; a training loop that runs several
forward passes per optimizer step (micro-batches) caches them (`MaskedDense.cache_mask`,
`MaskRefresh`) and sorts once a step instead of once a forward.
Thresholds and kept amounts are fractions in [0, 1] throughout, never percentages.
"""
import functools
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Constant, HeUniform, Uniform, initializer

# Hard-concrete stretch interval (gamma, zeta) and temperature beta: Louizos et al. 2018.
L0_GAMMA, L0_ZETA, L0_BETA = -0.1, 1.1, 2.0 / 3.0
# soft movement pruning keeps at least this fraction of a matrix, as the paper's code does
MIN_KEPT_FRACTION = 0.005
# hard-concrete noise u is drawn from [eps, 1 - eps] so log(u) and log(1 - u) stay finite
L0_NOISE_EPS = 1e-4


def _top_fraction(values, fraction):
    """1.0 at the floor(fraction x n) largest of `values` (any shape), 0.0 elsewhere.

    The count is computed in float32, fraction x n rounded to float32 then floored; ties at the
    boundary go to the earlier position in row-major order.
    """
    flat = values.reshape(-1)
    size = flat.shape[0]
    kept = ops.floor(fraction.astype(ms.float32) * float(size)).astype(ms.int32)
    # A full descending order: MindSpore's TopK with k = n is faster than its Sort on the CPU.
    _, order = ops.topk(flat.astype(ms.float32), size)
    on = (ops.arange(size, dtype=ms.int32) < kept).astype(ms.float32)
    mask = ops.tensor_scatter_elements(ops.zeros((size,), ms.float32), order, on, axis=0)
    return mask.reshape(values.shape)


class TopKBinarizer(nn.Cell):
    """Movement pruning's mask (Sanh et al. 2020, the `topK` method of their code).

    Inputs: scores (out, in) float32; threshold (1,) float32, the fraction of entries kept, in
    (0, 1]. Output: (out, in) float32, 1.0 at the floor(threshold x out x in) largest scores.
    Straight-through: the gradient of the mask passes to the scores unchanged; none to the threshold.
    """

    def construct(self, scores, threshold):
        return _top_fraction(scores, threshold)

    def bprop(self, scores, threshold, out, dout):
        return dout, ops.zeros_like(threshold)


class MagnitudeBinarizer(nn.Cell):
    """Magnitude pruning's mask, the baseline of Sanh et al. 2020.

    Inputs: |W| (out, in) float32; threshold (1,) float32, the fraction kept, in (0, 1].
    Output: (out, in) float32, 1.0 at the floor(threshold x out x in) largest magnitudes.
    No gradient flows through the mask (W is trained only through W * M).
    """

    def construct(self, magnitudes, threshold):
        return _top_fraction(magnitudes, threshold)

    def bprop(self, magnitudes, threshold, out, dout):
        return ops.zeros_like(magnitudes), ops.zeros_like(threshold)


class _CachedStraightThrough(nn.Cell):
    """topK's straight-through estimator on a mask computed earlier: forward the cached mask,
    backward dL/dM to the scores unchanged (as TopKBinarizer). Inputs: scores, mask, both (out, in)."""

    def construct(self, scores, mask):
        return mask

    def bprop(self, scores, mask, out, dout):
        return dout, ops.zeros_like(mask)


class _MaskCache(nn.Cell):
    """Holds a cached mask Parameter (out, in) float32 outside its layer's Parameter tree, so it is
    neither trained, nor saved in checkpoints, nor baked."""

    def __init__(self, shape, name):
        super().__init__()
        self.mask = Parameter(Tensor(np.zeros(shape, np.float32)), name=name, requires_grad=False)


class ThresholdBinarizer(nn.Cell):
    """Soft movement pruning's mask (Sanh et al. 2020, `sigmoied_threshold` in their code).

    Inputs: scores (out, in) float32; threshold (1,) float32, a cut-off on sigmoid(score) in [0, 1)
    (not a fraction kept). Output: (out, in) float32, 1.0 where sigmoid(scores) > threshold.
    If fewer than int(0.005 n) + 1 of the n entries pass, the mask keeps those above the
    max(n - that, 1)-th smallest score instead (the paper's code keeps at least 0.5%).
    Straight-through: the gradient of the mask passes to the scores unchanged, not through sigmoid.
    """

    def construct(self, scores, threshold):
        mask = (ops.sigmoid(scores) > threshold).astype(ms.float32)
        size = scores.size
        min_kept = int(MIN_KEPT_FRACTION * size) + 1
        if mask.sum() < min_kept:
            # the max(n - min_kept, 1)-th smallest is the (n - max(n - min_kept, 1) + 1)-th largest
            rank = size - max(size - min_kept, 1) + 1
            kth_largest = ops.topk(scores.reshape(-1), rank)[0][rank - 1]
            mask = (scores > kth_largest).astype(ms.float32)
        return mask

    def bprop(self, scores, threshold, out, dout):
        return dout, ops.zeros_like(threshold)


class HardConcreteGate(nn.Cell):
    """Hard-concrete L0 gates (Louizos, Welling and Kingma 2018), as Movement Pruning's `l0` uses them.

    Inputs: log_alpha scores (out, in) float32; a threshold, ignored (one signature for all methods).
    Output: (out, in) float32 gates clamp(s (zeta - gamma) + gamma, 0, 1) in [0, 1], differentiable in
    log_alpha. Training draws u ~ U(0, 1), clamped to [L0_NOISE_EPS, 1 - L0_NOISE_EPS], and uses
    s = sigmoid((log u - log(1 - u) + log_alpha) / beta); evaluation uses s = sigmoid(log_alpha).
    """

    def construct(self, log_alpha, threshold):
        if self.training:
            noise = ops.clamp(ops.rand_like(log_alpha), L0_NOISE_EPS, 1.0 - L0_NOISE_EPS)
            s = ops.sigmoid((ops.log(noise) - ops.log(1.0 - noise) + log_alpha) / L0_BETA)
        else:
            s = ops.sigmoid(log_alpha)
        return ops.clamp(s * (L0_ZETA - L0_GAMMA) + L0_GAMMA, 0.0, 1.0)


# the methods whose masks sort every matrix, and so are worth computing once a step (`MaskedDense.cache_mask`)
CACHED_METHODS = ("magnitude", "topK")

BINARIZERS = {"magnitude": MagnitudeBinarizer, "topK": TopKBinarizer,
              "sigmoied_threshold": ThresholdBinarizer, "l0": HardConcreteGate}


def mask_penalty(scores, regularization):
    """Per-matrix regulariser of Movement Pruning's training scripts; scores (out, in) -> scalar float32.

    l1: mean of sigmoid(S) (soft movement pruning). l0: the expected fraction of open hard-concrete
    gates, mean of sigmoid(log_alpha - beta log(-gamma / zeta)) (Louizos et al. 2018, Eq. 12).
    Both are fractions in (0, 1). Any `regularization` other than "l1" is taken as l0 (unchecked
    here: `MaskRegularization` checks it).
    """
    if regularization == "l1":
        return ops.sigmoid(scores).sum() / scores.size
    return ops.sigmoid(scores - L0_BETA * math.log(-L0_GAMMA / L0_ZETA)).sum() / scores.size


def score_initializer(mask_init, mask_scale):
    """MindSpore initializer of the scores, as Movement Pruning's code initialises them.

    mask_init "constant": mask_scale everywhere; "uniform": U(-mask_scale, mask_scale); anything
    else (PruningConfig allows only "kaiming"): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's
    kaiming_uniform_ with a = sqrt(5).
    """
    if mask_init == "constant":
        return Constant(mask_scale)
    if mask_init == "uniform":
        return Uniform(mask_scale)
    return HeUniform(negative_slope=math.sqrt(5))


class MaskedDense(nn.Cell):
    """An `nn.Dense` whose weight is multiplied by a pruning mask: y = x (W * M)^T + b.

    Keeps the Dense's own `weight` (out, in) and `bias` (out,) Parameters, so the checkpoint names
    do not change, and adds `mask_scores` (out, in) float32 for every method but magnitude.
    Inputs: x (..., in). Output: (..., out) in compute_type.

    Args:
        dense (nn.Dense): the layer to mask; its Parameters are reused, not copied.
        settings (PruningConfig): method and score initialisation.
        threshold (Parameter): the shared float32 threshold, shape (1,) (see the module docstring).
        compute_type (ms.dtype, default float32): dtype of the matmul (float16 on Ascend/GPU); the
            mask is always computed in float32.
    """

    def __init__(self, dense, settings, threshold, compute_type=ms.float32):
        super().__init__()
        self.pruning_method = settings.pruning_method
        self.weight = dense.weight
        self.bias = dense.bias
        if settings.has_scores:
            self.mask_scores = Parameter(initializer(score_initializer(settings.mask_init, settings.mask_scale),
                                                     dense.weight.shape, ms.float32), name="mask_scores")
        self.pruning_threshold = threshold
        self.binarizer = BINARIZERS[settings.pruning_method]()
        self.compute_type = compute_type
        self.cache = ()  # a plain tuple: the cache's Parameter stays out of this layer's (`cache_mask`)
        self.straight_through = _CachedStraightThrough()

    def mask(self):
        """The current mask (out, in), float32: 0/1, or gates in [0, 1] for l0."""
        if self.pruning_method == "magnitude":
            return self.binarizer(ops.abs(self.weight), self.pruning_threshold)
        return self.binarizer(self.mask_scores, self.pruning_threshold)

    def cache_mask(self):
        """From now on, training-mode forward passes read the mask `MaskRefresh` last stored instead of
        sorting the matrix again (evaluation still computes it). Call before the layer is first run
        (compiled), and run the refresh whenever the weights, scores or threshold have changed.
        Gradients are unchanged: none to |W| for magnitude, straight-through to the scores for topK.
        Raises:
            ValueError: the method is neither magnitude nor topK (their masks are cheap to compute).
        """
        if self.pruning_method not in CACHED_METHODS:
            raise ValueError(f"only {' and '.join(CACHED_METHODS)} masks are cached, not {self.pruning_method}")
        self.cache = (_MaskCache(self.weight.shape, self.weight.name[:-len("weight")] + "mask_cache"),)

    def training_mask(self):
        """The mask of a training forward pass: cached (`cache_mask`) or computed now."""
        if not self.cache:
            return self.mask()
        if self.pruning_method == "magnitude":
            return ops.stop_gradient(self.cache[0].mask)
        return self.straight_through(self.mask_scores, self.cache[0].mask)

    def penalty(self, regularization):
        """`mask_penalty` of this layer's scores, a scalar; magnitude layers have none (AttributeError)."""
        return mask_penalty(self.mask_scores, regularization)

    def construct(self, x):
        mask = self.training_mask() if self.training else self.mask()
        weight = (self.weight * mask).astype(self.compute_type)
        return ops.dense(x.astype(self.compute_type), weight, self.bias.astype(self.compute_type))


class MaskRefresh(nn.Cell):
    """Stores the current mask of each caching MaskedDense (`cache_mask`) in its cache: run once per
    optimizer step, before its first forward pass. Inputs: none. Output: a scalar float32 0, returned
    after every cache is written.

    Args:
        masked_layers (sequence of MaskedDense): each has had `cache_mask` called; held as a plain tuple.
    """

    def __init__(self, masked_layers):
        super().__init__()
        self.masked_layers = tuple(masked_layers)

    def construct(self):
        written = ()
        for layer in self.masked_layers:
            written += (ops.assign(layer.cache[0].mask, layer.mask()),)
        return ops.depend(ops.zeros((), ms.float32), written)


class MaskRegularization(nn.Cell):
    """The regularisation term of Movement Pruning's loss: the mean over masked layers of
    `mask_penalty`. The training loss adds regu_lambda x this (regu_lambda from the schedule).

    Args:
        masked_layers (sequence of MaskedDense): held as a plain tuple, so their Parameters are
            neither registered twice nor renamed when this Cell sits inside a loss Cell.
        regularization (str): l1 or l0.
    Inputs: none. Output: scalar float32, a fraction in (0, 1).
    Raises:
        ValueError: regularization is not l1 or l0, no layers are given, or one is magnitude-pruned.
    """

    def __init__(self, masked_layers, regularization):
        super().__init__()
        if regularization not in ("l1", "l0"):
            raise ValueError(f"regularization {regularization!r} must be l1 or l0 for a regularisation term")
        if not masked_layers:
            raise ValueError("no masked layers to regularise: apply masking to the model first")
        if any(layer.pruning_method == "magnitude" for layer in masked_layers):
            raise ValueError("magnitude pruning has no scores to regularise: use regularization none")
        self.masked_layers = tuple(masked_layers)
        self.regularization = regularization

    def construct(self):
        total = 0.0
        for layer in self.masked_layers:
            total = total + layer.penalty(self.regularization)
        return total / len(self.masked_layers)


@functools.lru_cache(maxsize=None)
def _evaluation_binarizer(pruning_method):
    """One Cell per method for the whole process: MindSpore compiles it once per matrix shape."""
    binarizer = BINARIZERS[pruning_method]()
    binarizer.set_train(False)
    return binarizer


def compute_masks(pruning_method, values, threshold):
    """Evaluation-mode masks of several matrices, outside training (counting, baking).

    Args:
        pruning_method (str): one of BINARIZERS.
        values (dict of str: np.ndarray (out, in)): |W| for magnitude, else the mask scores.
        threshold (float): as during training, a fraction (see settings.check_threshold; ignored by l0).
    Returns:
        dict of str: np.ndarray float32 (out, in): 0/1, or the deterministic l0 gates in [0, 1].
    Raises:
        ValueError: an unknown pruning_method.
    """
    if pruning_method not in BINARIZERS:
        raise ValueError(f"pruning_method {pruning_method!r} is not one of {', '.join(BINARIZERS)}")
    binarizer = _evaluation_binarizer(pruning_method)
    threshold = Tensor([threshold], ms.float32)
    return {name: binarizer(Tensor(np.asarray(array, np.float32)), threshold).asnumpy()
            for name, array in values.items()}
