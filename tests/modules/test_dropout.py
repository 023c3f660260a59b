"""Stateless dropout: the masks against a numpy computation of the documented formula, their
statistics (keep rate, independence across units, steps, sites and shifts), and determinism."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import ops

from src.dropout import TABLE_SIZE, WINDOW, StatelessDropout, dropout_table, number_dropout_sites, \
    set_dropout_step, step_key
from src.tinybert_model import BertModel

P = 0.1
KEEP = round((1 - P) * 65536) / 65536  # the keep probability at 2^-16 resolution


def _lowbias32(x):
    """Chris Wellons' lowbias32 on uint32 numpy arrays (products wrap modulo 2^32)."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _reference_mask(cell, shape, seed, step):
    """The keep mask (bool) the module docstring describes, computed with numpy."""
    size = int(np.prod(shape))
    windows = -(-size // WINDOW)
    base = _lowbias32(np.array([step_key(seed, step)], np.uint32) ^ cell.site.asnumpy())
    index = np.arange(2 * windows, dtype=np.uint32) * np.uint32(0x9E3779B9)
    starts = (_lowbias32(base ^ index) >> np.uint32(1)).astype(np.int64)
    table = dropout_table().asnumpy()
    first, second = [], []
    for j in range(windows):
        length = min(WINDOW, size - j * WINDOW)
        for out, start in ((first, starts[2 * j]), (second, starts[2 * j + 1])):
            start %= TABLE_SIZE - length + 1
            out.append(table[start:start + length].astype(np.int64))
    uniform = (np.concatenate(first) + np.concatenate(second)) % 65536
    return (uniform < round((1 - P) * 65536)).reshape(shape)


def _masks(cell, shape, keys):
    """The output of `cell` on ones for each (seed, step) in keys."""
    ones = ms.Tensor(np.ones(shape, np.float32))
    outputs = []
    for seed, step in keys:
        set_dropout_step(seed, step)
        outputs.append(cell(ones).asnumpy())
    return outputs


def _site(p=P):
    cell = StatelessDropout(p)
    cell.set_train(True)
    return cell


def test_masks_follow_the_documented_formula_over_several_windows():
    cell = _site()
    shape = (3, 700, 2100)  # 4.41M units: two pairs of windows, the second one short
    assert np.prod(shape) > WINDOW
    for seed, step in [(1, 0), (1, 7), (42, 7)]:
        out = _masks(cell, shape, [(seed, step)])[0]
        expected = _reference_mask(cell, shape, seed, step)
        np.testing.assert_array_equal(out != 0, expected)
        np.testing.assert_array_equal(np.unique(out), np.float32([0, 1 / KEEP]))


def test_keep_rate_and_expected_value():
    out = _masks(_site(), (1 << 22,), [(3, 5)])[0]
    n = out.size
    kept = np.count_nonzero(out) / n
    assert abs(kept - KEEP) < 6 * np.sqrt(KEEP * (1 - KEEP) / n)
    assert abs(out.mean(dtype=np.float64) - 1.0) < 6 * np.sqrt((1 / KEEP - 1) / n)  # inputs keep their mean


def _dependence(a, b):
    """Pearson correlation of two drop indicators."""
    return np.corrcoef(a == 0, b == 0)[0, 1]


def _max_shift_score(masks):
    """The largest z-score of the correlation between drop indicators a[i] and b[i + lag], over every
    ordered pair (a, b) of masks and every lag with at least 1000 units of overlap (by FFT).

    Independent masks stay near sqrt(2 ln(2n)), about 5.4 at n = 2^20; a mask that is a shifted copy
    of another over m units scores about sqrt(m).
    """
    n = len(masks[0])
    spectra = []
    for mask in masks:
        x = (mask == 0).astype(np.float64)
        spectra.append(np.fft.rfft((x - x.mean()) / x.std(), 2 * n))
    overlap = n - np.arange(n - 1000)
    best = 0.0
    for i, a in enumerate(spectra):
        for j, b in enumerate(spectra):
            if i != j:
                lags = np.fft.irfft(np.conj(a) * b, 2 * n)[:n - 1000]
                best = max(best, np.abs(lags / np.sqrt(overlap)).max())
    return best


def test_masks_are_independent_across_units_steps_sites_and_shifts():
    n = 1 << 20
    bound = 6 / np.sqrt(n)  # six standard errors of a correlation between independent masks
    one, other = _site(), _site()
    steps = _masks(one, (n,), [(1, step) for step in range(6)])
    same_step_other_site = _masks(other, (n,), [(1, 0)])[0]
    for i in range(len(steps)):
        assert abs(_dependence(steps[i][:-1], steps[i][1:])) < bound  # neighbouring units
        for j in range(i + 1, len(steps)):
            assert abs(_dependence(steps[i], steps[j])) < bound
    assert abs(_dependence(steps[0], same_step_other_site)) < bound
    # No mask is a shifted copy of another (what windows of one table, used alone, would give).
    assert _max_shift_score(steps + [same_step_other_site]) < 8


def test_same_seed_and_step_give_the_same_masks_in_a_model_built_again(student_config):
    ids = ms.Tensor(np.random.default_rng(0).integers(1, 99, (4, 9)).astype(np.int32))
    mask, types = ms.Tensor(np.ones((4, 9), np.int32)), ms.Tensor(np.zeros((4, 9), np.int32))

    def outputs(model, seed, step, rank=0):
        set_dropout_step(seed, step, rank)
        return model(ids, mask, types)[0].asnumpy()

    ms.set_seed(0)
    first = BertModel(student_config)
    _site()  # built in between: numbering by place makes it irrelevant
    ms.set_seed(0)
    second = BertModel(student_config)
    assert number_dropout_sites(first) == number_dropout_sites(second) == 1 + 3 * student_config.num_hidden_layers
    for model in (first, second):
        model.set_train(True)
    reference = outputs(first, 1, 5)
    np.testing.assert_array_equal(outputs(second, 1, 5), reference)
    for seed, step, rank in [(1, 6, 0), (2, 5, 0), (1, 5, 1)]:
        assert not np.allclose(outputs(second, seed, step, rank), reference)
    set_dropout_step(1, 5, 0, micro_batch=1)  # the second slice of a step cut into micro-batches
    assert not np.allclose(second(ids, mask, types)[0].asnumpy(), reference)
    set_dropout_step(1, 5, 0, micro_batch=0)  # the first slice: the whole step's masks
    np.testing.assert_array_equal(second(ids, mask, types)[0].asnumpy(), reference)
    first.set_train(False)
    evaluated = first(ids, mask, types)[0].asnumpy()
    set_dropout_step(9, 9)
    np.testing.assert_array_equal(first(ids, mask, types)[0].asnumpy(), evaluated)  # no dropout in evaluation


def test_gradient_uses_the_forward_mask():
    cell = _site()
    x = ms.Tensor(np.random.default_rng(1).normal(size=(6, 50)).astype(np.float32))
    set_dropout_step(4, 2)
    out = cell(x).asnumpy()

    def total(value):
        return cell(value).sum()

    grad = ops.grad(total)(x).asnumpy()
    np.testing.assert_array_equal(grad != 0, out != 0)
    np.testing.assert_allclose(grad[grad != 0], 1 / KEEP, rtol=1e-6)


def test_no_dropout_when_p_is_zero_or_not_training():
    x = ms.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    zero = StatelessDropout(0.0)
    zero.set_train(True)
    np.testing.assert_array_equal(zero(x).asnumpy(), x.asnumpy())
    evaluating = _site(0.5)
    evaluating.set_train(False)
    np.testing.assert_array_equal(evaluating(x).asnumpy(), x.asnumpy())


@pytest.mark.parametrize("p, message", [(1.0, r"dropout probability 1.0 must be in \[0, 1\)"),
                                        (-0.1, "must be in"), (0.999995, "keeps no unit")])
def test_bad_probability_is_a_clear_error(p, message):
    with pytest.raises(ValueError, match=message):
        StatelessDropout(p)
