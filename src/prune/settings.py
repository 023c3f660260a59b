"""The pruning settings, named as Movement Pruning's scripts name their flags (Sanh et al. 2020)."""
import dataclasses

PRUNING_METHODS = ("magnitude", "topK", "sigmoied_threshold", "l0")
MASK_INITS = ("constant", "uniform", "kaiming")
REGULARIZATIONS = ("none", "l1", "l0")
# Methods whose threshold is the fraction of weights kept; sigmoied_threshold compares sigmoid(S) with it.
FRACTION_METHODS = ("magnitude", "topK")


def check_threshold(pruning_method, threshold, key="threshold"):
    """Raise ValueError when `threshold` means nothing for `pruning_method`.

    magnitude and topK keep a fraction of the weights, in (0, 1] (0.1 = 10% kept, not 0.1%);
    sigmoied_threshold keeps the weights whose sigmoid(score) exceeds it, in [0, 1); l0 has
    deterministic gates at evaluation and ignores it. `key` names the setting in the message.

    Raises:
        ValueError: an unknown pruning_method, or a threshold outside its method's range.
    """
    if pruning_method not in PRUNING_METHODS:
        raise ValueError(f"pruning_method {pruning_method!r} is not one of {', '.join(PRUNING_METHODS)}")
    if pruning_method in FRACTION_METHODS and not 0.0 < threshold <= 1.0:
        raise ValueError(f"{key} {threshold} must be in (0, 1] for {pruning_method}: the fraction of weights kept")
    if pruning_method == "sigmoied_threshold" and not 0.0 <= threshold < 1.0:
        raise ValueError(f"{key} {threshold} must be in [0, 1) for sigmoied_threshold: "
                         "a weight is kept where sigmoid(score) exceeds it")


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """How the encoder's dense layers are pruned.

    Args:
        pruning_method (str, default "topK"): magnitude (keep the largest |W|), topK (movement
            pruning: keep the largest learned scores), sigmoied_threshold (soft movement pruning:
            keep where sigmoid(S) > threshold) or l0 (hard-concrete gates, Louizos et al. 2018).
        mask_init (str, default "constant"): initialisation of the scores: constant (= mask_scale),
            uniform (U(-mask_scale, mask_scale)) or kaiming (U(+-1/sqrt(fan_in)), as torch's
            kaiming_uniform_ with a = sqrt(5)).
        mask_scale (float, default 0.0): see mask_init. The paper uses 0 for the movement methods
            and 2.197 for l0 (sigmoid(2.197) = 0.9: gates start nearly open).
        mask_scores_learning_rate (float, default 1e-2): learning rate of the scores (no weight decay).
        initial_threshold, final_threshold (float, defaults 1.0 and 0.1): the threshold before and
            after the cubic schedule; see `check_threshold` for its meaning per method.
        initial_warmup, final_warmup (float, defaults 1 and 2): steps at the initial and final
            threshold, in units of the learning-rate warm-up steps, as the paper's scripts count them.
        regularization (str, default "none"): none, l1 (mean of sigmoid(S), soft movement pruning)
            or l0 (expected fraction of open hard-concrete gates, Louizos et al. 2018).
        final_lambda (float, default 0.0): weight of the regularisation at the final threshold.
    Raises:
        ValueError: a value outside its choices or range (see `check_threshold`), regularization
            with magnitude or with final_threshold 0, or a negative warm-up.
    """
    pruning_method: str = "topK"
    mask_init: str = "constant"
    mask_scale: float = 0.0
    mask_scores_learning_rate: float = 1e-2
    initial_threshold: float = 1.0
    final_threshold: float = 0.1
    initial_warmup: float = 1
    final_warmup: float = 2
    regularization: str = "none"
    final_lambda: float = 0.0

    def __post_init__(self):
        check_threshold(self.pruning_method, self.initial_threshold, "initial_threshold")
        check_threshold(self.pruning_method, self.final_threshold, "final_threshold")
        if self.mask_init not in MASK_INITS:
            raise ValueError(f"mask_init {self.mask_init!r} is not one of {', '.join(MASK_INITS)}")
        if self.regularization not in REGULARIZATIONS:
            raise ValueError(f"regularization {self.regularization!r} is not one of {', '.join(REGULARIZATIONS)}")
        if self.pruning_method == "magnitude" and self.regularization != "none":
            raise ValueError("regularization must be none for magnitude pruning: it has no scores to regularise")
        if self.regularization != "none" and self.final_threshold == 0.0:
            raise ValueError(f"final_threshold 0 with regularization {self.regularization}: the penalty weight is "
                             "final_lambda * threshold / final_threshold; give a positive final_threshold")
        if min(self.initial_warmup, self.final_warmup) < 0:
            raise ValueError("initial_warmup and final_warmup must be >= 0 (units of learning-rate warm-up steps)")

    @property
    def has_scores(self):
        """Whether the method learns mask scores (all but magnitude)."""
        return self.pruning_method != "magnitude"
