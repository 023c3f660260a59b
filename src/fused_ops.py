"""This project's C++ kernels (`fused_ops.cc`) for MindSpore's CPU backend: GELU, LayerNorm, the
attention's head swap and masked softmax, the masked sums of the MSE distillation losses, and
StatelessDropout's mask.

Two things they fix, both measured (bench/GD_STEP.md). Time: MindSpore 2.10 runs the exact GELU on
the CPU as six kernels, Erf among them, and LayerNorm at about 20x PyTorch's time; together they were
a fifth of a BERT-base forward pass. Memory: the CPU backend keeps the buffers of a Transpose and of a
broadcasting Add or Mul alive to the end of the graph, which made a distillation step hold twice
PyTorch's memory; custom ops' buffers are reused like any other. Each kernel computes its function in
one pass, forward and backward, called through `ops.Custom(func_type="aot")`. The library is
compiled with the machine's C++ compiler on first use (about 2 s) and kept in a cache folder under a
name that hashes the source, the flags and the processor, so a cache shared between machines never
loads a build for another CPU.

When they are not used (another device target, no compiler, `TINYBERT_FUSED_OPS=0`) the model
falls back to MindSpore's own ops, with a one-line warning if the build failed. Exported files never
contain them (`BertConfig.fused_cpu_ops` is turned off for export): a MINDIR or ONNX file must not
depend on a library on this machine.
"""
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.logger import get_logger

SOURCE = Path(__file__).with_suffix(".cc")
# -fno-trapping-math lets g++ vectorise floor/fabs/copysign; -fopenmp-simd only reads the `omp simd`
# reductions (no OpenMP runtime, so no worker threads spinning beside MindSpore's).
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC")
_library = None  # the built library's path, "" once the build has failed in this process
# The kernels that model code reads as module attributes (a constant when a graph is compiled): None
# until `available()` has been True in this process.
squared_error_sum = None  # a MaskedSquaredErrorSum Cell
dropout_mask = None  # an ApplyDropoutMask Cell


def cache_dir():
    """Where built libraries are kept: $TINYBERT_CACHE_DIR, else $XDG_CACHE_HOME/tinybert_mindspore, else ~/.cache/..."""
    if os.environ.get("TINYBERT_CACHE_DIR"):
        return Path(os.environ["TINYBERT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinybert_mindspore"


def _processor_id():
    """The CPU's feature flags (what -march=native compiles for), or the platform's name where /proc is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def build_library(compiler=None):
    """Compile fused_ops.cc once per (source, flags, processor) and return the library's path.

    compiler defaults to $CXX, else g++. The build goes to a temporary name in `cache_dir()` and is
    renamed when complete, so processes building at once (msrun workers) never load a half-written file.
    Raises RuntimeError with the compiler's first error line when the build fails.
    """
    compiler = compiler or os.environ.get("CXX", "g++")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + compiler.encode()
                         + _processor_id().encode()).hexdigest()[:16]
    target = cache_dir() / f"fused_ops-{key}.so"
    if target.exists():
        return target
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler {compiler!r} on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp")
    os.close(fd)
    try:
        result = subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            first_error = next((line for line in result.stderr.splitlines() if "error" in line),
                               result.stderr.strip()[:200])
            raise RuntimeError(f"{compiler} failed: {first_error}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def available():
    """True when the kernels can run here: CPU device target, TINYBERT_FUSED_OPS not 0, and the library built.

    Builds the library on the first call; a failed build is logged once and not retried in this process.
    """
    global _library, squared_error_sum, dropout_mask
    if ms.get_context("device_target") != "CPU" or os.environ.get("TINYBERT_FUSED_OPS", "1") == "0":
        return False
    if _library is None:
        try:
            _library = str(build_library())
        except (OSError, RuntimeError) as error:
            _library = ""
            get_logger().warning("fused CPU ops unavailable (%s): using MindSpore's ops, which are "
                                 "slower and hold more memory; set TINYBERT_FUSED_OPS=0 to silence this", error)
        squared_error_sum, dropout_mask = (MaskedSquaredErrorSum(), ApplyDropoutMask()) if _library else (None, None)
    return bool(_library)


def _custom(function, out_shape, out_dtype, bprop=None):
    return ops.Custom(f"{_library}:{function}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot",
                      bprop=bprop)


class Gelu(nn.Cell):
    """The exact GELU, x * Phi(x), float32 (..., N) -> (..., N); |error| < 4e-7 against float64.

    Call only when `available()` is True.
    """

    def __init__(self):
        super().__init__()
        backward = _custom("GeluBackward", lambda x, dy: x, lambda x, dy: x)

        def bprop(x, out, dout):
            return (backward(x, dout),)

        self.forward = _custom("GeluForward", lambda x: x, lambda x: x, bprop)

    def construct(self, x):
        return self.forward(x)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with `nn.LayerNorm`'s parameters (`gamma`, `beta`) and results.

    float32 (..., width) -> (..., width); the same checkpoint names as nn.LayerNorm, so the two swap
    freely. Call only when `available()` is True.
    """

    def __init__(self, width, epsilon):
        super().__init__()
        self.gamma = ms.Parameter(ms.Tensor(np.ones(width, np.float32)), name="gamma")
        self.beta = ms.Parameter(ms.Tensor(np.zeros(width, np.float32)), name="beta")
        self.epsilon = ms.Tensor([epsilon], ms.float32)
        backward = _custom("LayerNormBackward", lambda dy, x, gamma, mean, rstd: (x, gamma, gamma),
                           lambda dy, x, gamma, mean, rstd: (x, gamma, gamma))

        def bprop(x, gamma, beta, epsilon, out, dout):
            dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
            return dx, dgamma, dbeta, ops.zeros_like(epsilon)

        self.forward = _custom("LayerNormForward", lambda x, gamma, beta, eps: (x, x[:-1], x[:-1]),
                               lambda x, gamma, beta, eps: (x, x, x), bprop)

    def construct(self, x):
        return self.forward(x, self.gamma, self.beta, self.epsilon)[0]


class MaskedSoftmax(nn.Cell):
    """Attention probabilities softmax(scores + mask_bias) over the last axis, float32.

    Inputs: scores (B, H, T, K); mask_bias (B, 1, 1, K), broadcast over heads and queries. Output:
    probs (B, H, T, K). Raises ValueError (when the graph is compiled) for any other mask shape.
    Call only when `available()` is True.
    """

    def __init__(self):
        super().__init__()
        backward = _custom("MaskedSoftmaxBackward", lambda probs, dprobs: (probs, probs[:1] + [1, 1] + probs[3:]),
                           lambda probs, dprobs: (probs, probs))

        def bprop(scores, mask_bias, out, dout):
            return backward(out, dout)

        self.forward = _custom("MaskedSoftmaxForward", _masked_softmax_shape, lambda scores, mask_bias: scores, bprop)

    def construct(self, scores, mask_bias):
        return self.forward(scores, mask_bias)


def _masked_softmax_shape(scores, mask_bias):
    if len(scores) != 4 or list(mask_bias) != [scores[0], 1, 1, scores[3]]:
        raise ValueError(f"MaskedSoftmax needs scores (B, H, T, K) and mask_bias (B, 1, 1, K), got {list(scores)} "
                         f"and {list(mask_bias)}")
    return scores


class SwapMiddleAxes(nn.Cell):
    """float32 (A, B, C, D) -> (A, C, B, D), as `x.transpose(0, 2, 1, 3)`; its gradient is the same swap.

    Attention's head split and merge. Call only when `available()` is True.
    """

    def __init__(self):
        super().__init__()
        swapped_shape = lambda x: (x[0], x[2], x[1], x[3])  # noqa: E731
        swap = _custom("SwapMiddleAxes", swapped_shape, lambda x: x)

        def bprop(x, out, dout):
            return (swap(dout),)

        self.forward = _custom("SwapMiddleAxes", swapped_shape, lambda x: x, bprop)

    def construct(self, x):
        return self.forward(x)


class MaskedSquaredErrorSum(nn.Cell):
    """sum((x - y)^2 * mask) as a float32 (1,) tensor: x, y (A, M, C) float32, mask (A, 1, C) float32.

    Gradients for all three inputs. Call only when `available()` is True; `masked_squared_error_sum`
    chooses between it and MindSpore's ops.
    """

    def __init__(self):
        super().__init__()
        backward = _custom("MaskedSquaredErrorSumBackward", lambda x, y, mask, g: (x, mask),
                           lambda x, y, mask, g: (x, mask))

        def bprop(x, y, mask, out, dout):
            dx, dmask = backward(x, y, mask, dout)
            return dx, -dx, dmask  # -dx is dropped from the graph where y needs no gradient (a teacher's)

        self.forward = _custom("MaskedSquaredErrorSumForward", lambda x, y, mask: [1], lambda x, y, mask: x, bprop)

    def construct(self, x, y, mask):
        return self.forward(x, y, mask)


def masked_squared_error_sum(x, y, mask):
    """sum((x - y)^2 * mask), a float32 scalar; x, y (A, M, C), mask (A, 1, C) broadcast over M.

    Through `MaskedSquaredErrorSum` once `available()` has been True in this process (a model was built
    with the kernels), else with MindSpore's ops. Callable inside a graph: the choice is a constant there.
    """
    if squared_error_sum is None:
        return (ops.square(x - y) * mask).sum()
    return squared_error_sum(x.astype(ms.float32), y.astype(ms.float32), mask.astype(ms.float32)).reshape(())


class ApplyDropoutMask(nn.Cell):
    """x times StatelessDropout's mask, drawn from the table in one pass and never stored.

    Inputs: x float32 (any shape, N units); table (TABLE_SIZE,) uint16; offsets (2 x windows,) int32,
    each pair the two table offsets of one window of `window` units; threshold (1,) int32, scale (1,)
    float32, window (1,) int32. Output like x. Call only when `available()` is True.
    """

    def __init__(self):
        super().__init__()
        apply = _custom("ApplyDropoutMask", lambda x, *mask: x, lambda x, *mask: x)

        def bprop(x, table, offsets, threshold, scale, window, out, dout):
            return (apply(dout, table, offsets, threshold, scale, window), ops.zeros_like(table),
                    ops.zeros_like(offsets), ops.zeros_like(threshold), ops.zeros_like(scale), ops.zeros_like(window))

        self.forward = _custom("ApplyDropoutMask", lambda x, *mask: x, lambda x, *mask: x, bprop)

    def construct(self, x, table, offsets, threshold, scale, window):
        return self.forward(x, table, offsets, threshold, scale, window)
