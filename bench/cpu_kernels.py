"""Where MindSpore's CPU time goes against PyTorch's: single kernels at BERT-base shapes, and the
time per op type of one BERT-base forward pass from MindSpore's profiler.

python bench/cpu_kernels.py --framework mindspore|torch [--batch 32] [--seq 128] [--repeats 10]
python bench/cpu_kernels.py --framework mindspore --profile DIR   # + the op types of a forward pass

Each kernel is timed alone (the kernels taking turns, src.report.time_in_turns), median of
--repeats calls after one warm-up, its result copied to numpy (both frameworks pay that copy):
MindSpore in GRAPH_MODE, each kernel its own compiled cell written as src/tinybert_model.py writes
it; PyTorch eager under inference_mode with its own ops (addmm, F.gelu, F.layer_norm, softmax), as
transformers' BertModel calls them. Run the script once per framework (each in its own process, so
the thread pools do not share the cores).
"""
import argparse
import csv
import glob
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from src.report import time_in_turns  # noqa: E402

HIDDEN, HEADS, INTERMEDIATE = 768, 12, 3072  # BERT-base


def median_ms(runners, repeats):
    """name -> median ms of `repeats` calls, the kernels taking turns after one warm-up call each."""
    return {name: 1e3 * float(np.median(t)) for name, t in time_in_turns(runners, repeats, warmup=1).items()}


def inputs(batch, seq, seed=0):
    """Float32 arrays of BERT-base's shapes at batch x seq tokens."""
    rng = np.random.default_rng(seed)
    tokens = batch * seq
    return {"hidden": rng.standard_normal((tokens, HIDDEN), np.float32),
            "intermediate": rng.standard_normal((tokens, INTERMEDIATE), np.float32),
            "weight": rng.standard_normal((HIDDEN, INTERMEDIATE), np.float32) * 0.02,
            "bias": rng.standard_normal(INTERMEDIATE, np.float32),
            "heads": rng.standard_normal((batch, HEADS, seq, HIDDEN // HEADS), np.float32),
            "scores": rng.standard_normal((batch, HEADS, seq, seq), np.float32),
            "mask_bias": np.zeros((batch, 1, 1, seq), np.float32)}


def mindspore_kernels(x, repeats):
    import mindspore as ms
    from mindspore import nn, ops
    from src import fused_ops
    from src.tinybert_model import _activation
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    fused = fused_ops.available()

    class Kernel(nn.Cell):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            self.layer_norm = nn.LayerNorm((HIDDEN,), epsilon=1e-12)
            self.dense = nn.Dense(HIDDEN, INTERMEDIATE)
            self.fused_layer_norm = fused_ops.LayerNorm(HIDDEN, 1e-12) if fused else None
            self.fused_gelu = fused_ops.Gelu() if fused else None
            self.fused_masked_softmax = fused_ops.MaskedSoftmax() if fused else None

        def construct(self, a, b):
            if self.kind == "dense":
                return self.dense(a)
            if self.kind == "scores":
                return ops.matmul(a, b.swapaxes(-1, -2))
            if self.kind == "softmax":
                return ops.softmax(a, axis=-1)
            if self.kind == "layer_norm":
                return self.layer_norm(a)
            if self.kind == "erf":
                return ops.erf(a)
            if self.kind == "fused_layer_norm":
                return self.fused_layer_norm(a)
            if self.kind == "fused_gelu":
                return self.fused_gelu(a)
            if self.kind == "fused_masked_softmax":
                return self.fused_masked_softmax(a, b)
            return _activation(self.kind, a)

    t = {k: ms.Tensor(v) for k, v in x.items()}
    cases = {"dense 768->3072 (MatMul+BiasAdd)": ("dense", t["hidden"], t["hidden"]),
             "attention scores QK^T (BatchMatMul)": ("scores", t["heads"], t["heads"]),
             "softmax over keys": ("softmax", t["scores"], t["scores"]),
             "LayerNorm over 768": ("layer_norm", t["hidden"], t["hidden"]),
             "erf alone": ("erf", t["intermediate"], t["intermediate"]),
             "GELU, erf form (the model's)": ("gelu", t["intermediate"], t["intermediate"]),
             "GELU, polynomial erf (gelu_poly)": ("gelu_poly", t["intermediate"], t["intermediate"])}
    if fused:  # what the model runs on the CPU (src/fused_ops.py)
        cases.update({"LayerNorm over 768, src/fused_ops": ("fused_layer_norm", t["hidden"], t["hidden"]),
                      "GELU, src/fused_ops": ("fused_gelu", t["intermediate"], t["intermediate"]),
                      "softmax + mask bias, src/fused_ops": ("fused_masked_softmax", t["scores"], t["mask_bias"])})
    runners = {name: (lambda cell=Kernel(kind), a=a, b=b: cell(a, b).asnumpy()) for name, (kind, a, b) in cases.items()}
    return median_ms(runners, repeats)


def torch_kernels(x, repeats):
    import torch
    import torch.nn.functional as F
    t = {k: torch.from_numpy(v) for k, v in x.items()}
    ln_weight, ln_bias = torch.ones(HIDDEN), torch.zeros(HIDDEN)
    cases = {"dense 768->3072 (MatMul+BiasAdd)": lambda: torch.addmm(t["bias"], t["hidden"], t["weight"]),
             "attention scores QK^T (BatchMatMul)": lambda: t["heads"] @ t["heads"].transpose(-1, -2),
             "softmax over keys": lambda: torch.softmax(t["scores"], -1),
             "LayerNorm over 768": lambda: F.layer_norm(t["hidden"], (HIDDEN,), ln_weight, ln_bias, 1e-12),
             "erf alone": lambda: torch.erf(t["intermediate"]),
             "GELU, erf form (the model's)": lambda: F.gelu(t["intermediate"])}
    with torch.inference_mode():
        return median_ms({name: (lambda fn=fn: fn().numpy()) for name, fn in cases.items()}, repeats)


def profile_forward(batch, seq, out_dir):
    """MindSpore's profiler over one BERT-base forward pass (GRAPH_MODE, after a warm-up):
    returns [(op_type, calls, total ms)] sorted by time, from the profiler's cpu_op_type_info csv."""
    import mindspore as ms
    from mindspore import Profiler
    from src.tinybert_model import BertConfig, BertModel
    presets = yaml.safe_load((ROOT / "default_config.yaml").read_text())["model_presets"]
    net = BertModel(BertConfig.from_dict(presets["bert_base"]).for_inference())
    net.set_train(False)
    rng = np.random.default_rng(0)
    ids = ms.Tensor(rng.integers(1000, 30000, (batch, seq)).astype(np.int32))
    ones, zeros = ms.Tensor(np.ones((batch, seq), np.int32)), ms.Tensor(np.zeros((batch, seq), np.int32))
    net(ids, ones, zeros)[0].asnumpy()
    start = time.perf_counter()
    net(ids, ones, zeros)[0].asnumpy()
    print(f"BERT-base forward, batch {batch}, seq {seq}: {time.perf_counter() - start:.2f} s unprofiled")
    profiler = Profiler(output_path=out_dir)
    net(ids, ones, zeros)[0].asnumpy()
    profiler.stop()
    profiler.analyse()
    table = sorted(glob.glob(f"{out_dir}/**/cpu_op_type_info_*.csv", recursive=True))[-1]
    with open(table) as f:
        rows = [(r["op_type"], int(r["type_occurrences"]), float(r["total_compute_time"])) for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: -r[2])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--framework", choices=["mindspore", "torch"], required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", metavar="DIR", help="mindspore: also profile a BERT-base forward pass into DIR")
    args = parser.parse_args()
    x = inputs(args.batch, args.seq)
    kernels = mindspore_kernels if args.framework == "mindspore" else torch_kernels
    print(f"{args.framework} kernels, BERT-base shapes at batch {args.batch}, seq {args.seq} "
          f"({args.batch * args.seq} tokens), median ms of {args.repeats}:")
    for name, ms_ in kernels(x, args.repeats).items():
        print(f"  {name:40s} {ms_:8.2f}")
    if args.profile and args.framework == "mindspore":
        rows = profile_forward(args.batch, args.seq, args.profile)
        total = sum(r[2] for r in rows)
        print(f"op types of the profiled forward pass ({total / 1e3:.2f} s of kernel time):")
        for op_type, calls, ms_ in rows:
            print(f"  {op_type:14s} {calls:4d} calls {ms_:8.1f} ms {100 * ms_ / total:5.1f}%")


if __name__ == "__main__":
    main()
