"""The cubic sparsity schedule on values worked out by hand from the paper's definition."""
import pytest

from src.prune.schedule import cubic_threshold, schedule_for
from src.prune.settings import PruningConfig

# 110 steps, 10 warm-up steps, initial_warmup 1, final_warmup 2: held at the start for steps <= 10,
# at the end for steps > 90, cubic over the 80 steps between.
MOVEMENT = dict(total_steps=110, warmup_steps=10, initial_threshold=1.0, final_threshold=0.1,
                initial_warmup=1, final_warmup=2, final_lambda=400.0)


@pytest.mark.parametrize("step,threshold", [
    (0, 1.0), (10, 1.0),        # initial warm-up, inclusive
    (30, 0.4796875),            # progress 1/4: 0.1 + 0.9 * 0.75**3
    (50, 0.2125),               # progress 1/2: 0.1 + 0.9 * 0.125
    (70, 0.1140625),            # progress 3/4: 0.1 + 0.9 * 0.25**3
    (90, 0.1),                  # progress 1, still the cubic branch
    (91, 0.1), (110, 0.1),      # final warm-up
])
def test_topk_schedule(step, threshold):
    value, regu_lambda = cubic_threshold(step, **MOVEMENT)
    assert value == pytest.approx(threshold, abs=1e-12)
    assert regu_lambda == pytest.approx(400.0 * threshold / 0.1)


def test_soft_movement_schedule_rises_from_zero():
    """sigmoied_threshold runs 0 -> final: the threshold and the penalty weight grow together."""
    soft = dict(MOVEMENT, initial_threshold=0.0)
    assert cubic_threshold(5, **soft) == (0.0, 0.0)
    threshold, regu_lambda = cubic_threshold(50, **soft)
    assert threshold == pytest.approx(0.0875)  # 0.1 - 0.1 * 0.125
    assert regu_lambda == pytest.approx(350.0)
    assert cubic_threshold(100, **soft) == pytest.approx((0.1, 400.0))


def test_l0_schedule_is_constant_and_fractional_warmups():
    l0 = dict(MOVEMENT, initial_threshold=1.0, final_threshold=1.0, final_lambda=125.0)
    assert all(cubic_threshold(step, **l0) == (1.0, 125.0) for step in (0, 37, 110))
    # initial_warmup 0.5 of 10 steps holds 5 steps; the cubic part then spans 110 - 5 - 20 = 85 steps
    half = dict(MOVEMENT, initial_warmup=0.5)
    assert cubic_threshold(5, **half)[0] == 1.0
    assert cubic_threshold(5 + 85 / 2, **half)[0] == pytest.approx(0.2125)


def test_schedule_for_reads_the_settings():
    settings = PruningConfig(pruning_method="sigmoied_threshold", initial_threshold=0.0, final_threshold=0.1,
                             regularization="l1", final_lambda=400.0)
    assert schedule_for(settings, 50, 110, 10) == pytest.approx((0.0875, 350.0))
