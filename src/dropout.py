"""Stateless dropout: masks that are a pure function of (seed, step, rank, site), so a resumed run
draws the masks the uninterrupted run drew and two runs of one command are identical.

Why not `nn.Dropout` (MindSpore 2.10, CPU), measured: its kernel keeps a random engine per op,
seeded when the graph is built and advanced by every call. Nothing saves that engine, so a resumed
process starts it over and draws other masks; `ms.get_rng_state`/`set_rng_state` do not reach it.
The kernel also splits its work over the CPU kernel threads (25 by default), which draw from that
one engine at once once its thread-count search moves past one thread: two runs of one command
agree for 6 steps and part at step 7, and agree throughout with
`ms.device_context.cpu.op_tuning.threads_num(1)`. The random ops that take a seed and an offset as
inputs (`DropoutExt`, `RandExt`, `UniformExt`, `mint.nn.functional.dropout`, ...) have no CPU
kernel, and a per-unit integer hash built from MindSpore's integer ops costs several times
nn.Dropout (bitwise ops take 60-130 ms per op on 6.3M units).

How (the name follows TensorFlow's stateless random ops, which take their seed as an input):
a fixed table of 2^23 uniform 16-bit numbers is made once. A site's mask at a step adds two
windows of the table, each at an offset drawn by a counter-based hash of (step key, site, window
index), modulo 2^16, and keeps the units whose sum is below round(keep x 2^16); kept units are
scaled by 2^16 / that threshold, so the expected output equals the input. Masks longer than
2^22 units are made of several such pairs of windows. A sum of two independent uniforms modulo
2^16 is uniform and independent of each of them, so units that happen to share one table entry
are still independent; two units draw the same pair of entries only when both offsets of their
windows differ by the same amount (odds about 1 in 4 million per pair of windows). One window
alone would be cheaper, but its masks are shifted copies of one another wherever windows overlap.

The training loop calls `set_dropout_step(seed, step, rank)` before every step; `number_dropout_sites`
numbers the sites of a model by their place in it, so a model's masks do not depend on what else
the process built. The hash is Chris Wellons' "lowbias32" integer finalizer (hash-prospector).
A training step costs about what it costs with nn.Dropout (bench/DROPOUT.md: -4% to +4%).
"""
import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from src import fused_ops

TABLE_SIZE = 1 << 23  # uniform 16-bit numbers (16 MB), shared by every site
WINDOW = 1 << 22  # longest window; longer masks are made of several
_RESOLUTION = 1 << 16  # keep probabilities are rounded to a multiple of 2^-16
_M1, _M2, _GOLDEN = 0x7FEB352D, 0x846CA68B, 0x9E3779B9  # lowbias32 multipliers; 2^32 / golden ratio
_TABLE_SEED = 20241201
# The step key every site reads: one process-wide value, set by the training loop before each step.
_STEP_KEY = Parameter(Tensor(0, ms.uint32), name="dropout_step_key", requires_grad=False)
# The table, made when the first site with p > 0 is built. Read as a module global, as the step key
# is: a Parameter set as a Cell attribute would become one of the model's weights.
_DROPOUT_TABLE = None
_UNNUMBERED = [0]  # sites built outside `number_dropout_sites` get distinct numbers in build order


def _lowbias32(x):
    """The lowbias32 finalizer on a Python int (the same arithmetic as `StatelessDropout._hash`)."""
    x ^= x >> 16
    x = (x * _M1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * _M2) & 0xFFFFFFFF
    return x ^ (x >> 16)


def step_key(seed, step, rank=0, micro_batch=0):
    """The 32-bit key of one training step: a hash of (seed, rank, step), and of the micro-batch
    when a step is cut into several (micro_batch 0 keeps the whole step's key).

    Args:
        seed (int): the run's seed (`seed` in the config).
        step (int): the number of steps done before this one (0 for the first).
        rank (int): the data-parallel rank, so ranks drop different units. Default: 0.
        micro_batch (int): the slice of the step's batch (`TrainingStep`), so slices drop different
            units. Default: 0.
    """
    key = _lowbias32(seed & 0xFFFFFFFF)
    key = _lowbias32(key ^ (rank & 0xFFFFFFFF))
    key = _lowbias32(key ^ (step & 0xFFFFFFFF))
    return _lowbias32(key ^ _lowbias32(micro_batch & 0xFFFFFFFF)) if micro_batch else key


def set_dropout_step(seed, step, rank=0, micro_batch=0):
    """Make every StatelessDropout draw the masks of this (seed, step, rank, micro_batch); call before
    each step (each micro-batch)."""
    _STEP_KEY.set_data(Tensor(step_key(seed, step, rank, micro_batch), ms.uint32))


def number_dropout_sites(model):
    """Number the StatelessDropout cells of `model` 1, 2, ... in the order `cells_and_names` walks them.

    A site's masks depend on its number: numbered by place, the same model built twice draws the
    same masks whatever else the process built first. Returns the number of sites.
    """
    sites = [cell for _, cell in model.cells_and_names() if isinstance(cell, StatelessDropout)]
    for number, cell in enumerate(sites, start=1):
        cell.set_site(number)
    return len(sites)


def dropout_table():
    """The (TABLE_SIZE,) uint16 Parameter of uniform numbers the masks are cut from (made on first use)."""
    global _DROPOUT_TABLE
    if _DROPOUT_TABLE is None:
        values = np.random.default_rng(_TABLE_SEED).integers(0, _RESOLUTION, TABLE_SIZE, dtype=np.uint16)
        _DROPOUT_TABLE = Parameter(Tensor(values), name="dropout_table", requires_grad=False)
    return _DROPOUT_TABLE


class StatelessDropout(nn.Cell):
    """Dropout whose mask is a pure function of (step key, site, unit): see the module docstring.

    Args:
        p (float): probability of zeroing a unit, 0 <= p < 1, used as round((1 - p) x 2^16) / 2^16.

    Inputs: x (Tensor of any shape, float16 or float32). Outputs: a Tensor like x; x itself when
    the cell is not training or p rounds to 0.

    Raises:
        ValueError: p outside [0, 1), or so close to 1 that no unit would be kept.
    """

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        threshold = round((1.0 - p) * _RESOLUTION)
        if threshold == 0:
            raise ValueError(f"dropout probability {p} keeps no unit at 2^-16 resolution: use p <= 0.99998")
        self.p = p
        self.active = threshold < _RESOLUTION
        if self.active:
            self.threshold, self.scale = Tensor(threshold, ms.uint16), _RESOLUTION / threshold
            dropout_table()
            _UNNUMBERED[0] += 1
            self.set_site(1 << 20 | _UNNUMBERED[0])  # above any number_dropout_sites number
            self.m1, self.m2, self.golden = (Tensor(v, ms.uint32) for v in (_M1, _M2, _GOLDEN))
            self.shift1, self.shift15, self.shift16 = (Tensor(v, ms.uint32) for v in (1, 15, 16))
            self.kernel_threshold, self.kernel_scale, self.kernel_window = (
                Tensor([threshold], ms.int32), Tensor([self.scale], ms.float32), Tensor([WINDOW], ms.int32))

    def set_site(self, number):
        """This site's number (mixed, so neighbouring numbers give unrelated masks)."""
        self.site = Tensor(_lowbias32((number * _GOLDEN) & 0xFFFFFFFF), ms.uint32)

    def _hash(self, x):
        x = x ^ ops.bitwise_right_shift(x, self.shift16)
        x = x * self.m1  # uint32 products wrap modulo 2^32, as the hash needs
        x = x ^ ops.bitwise_right_shift(x, self.shift15)
        x = x * self.m2
        return x ^ ops.bitwise_right_shift(x, self.shift16)

    def construct(self, x):
        if not self.training or not self.active:
            return x
        size = x.size
        windows = (size + WINDOW - 1) // WINDOW
        index = ops.arange(0, 2 * windows, dtype=ms.int32).astype(ms.uint32)
        draws = self._hash(self._hash(_STEP_KEY ^ self.site) ^ (index * self.golden))
        starts = ops.bitwise_right_shift(draws, self.shift1).astype(ms.int32)  # below 2^31: int32 holds it
        offsets = ()
        for j in range(windows):
            length = min(WINDOW, size - j * WINDOW)
            offsets += (starts[2 * j] % (TABLE_SIZE - length + 1), starts[2 * j + 1] % (TABLE_SIZE - length + 1))
        if fused_ops.dropout_mask is not None and x.dtype == ms.float32:  # the same mask, never stored
            return fused_ops.dropout_mask(x, _DROPOUT_TABLE, ops.stack(offsets), self.kernel_threshold,
                                          self.kernel_scale, self.kernel_window)
        first, second = (), ()
        for j in range(windows):
            length = min(WINDOW, size - j * WINDOW)
            first += (ops.slice(_DROPOUT_TABLE, (offsets[2 * j],), (length,)),)
            second += (ops.slice(_DROPOUT_TABLE, (offsets[2 * j + 1],), (length,)),)
        uniform = first[0] + second[0] if windows == 1 else ops.concat(first) + ops.concat(second)  # wraps mod 2^16
        mask = (uniform < self.threshold).astype(x.dtype) * self.scale
        return x * ops.stop_gradient(mask.reshape(x.shape))
