"""Where a batch-1 call of the student spends its time: per kernel kind, MindSpore against PyTorch.

python bench/student_profile.py [--work_dir bench_output/latency_2x192] [--calls 20] [--sequence 128] [--blocks 12]

Reads the student that bench/latency.py built in --work_dir (student.ckpt and its Hugging Face export
student_hf/), calls each engine --calls times back to back under its own profiler (mindspore.Profiler,
torch.profiler) after 5 untimed calls, and prints the kernels' time per call by kind (MatMul, Erf,
Softmax, ... for MindSpore; aten::addmm, aten::gelu, ... for PyTorch), their sum, and the wall time per
call measured in the same loop without a profiler. The difference between the wall time and the
kernels' sum is what the framework costs around the kernels (launching them, Python). Then --blocks
blocks of 100 back-to-back calls, the engines alternating block by block, each block's median: how
steady each engine's call time is over seconds (LATENCY.md, the last sections, reads both).
"""
import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench/latency.py: no thread spins between engines
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def wall_ms(call, calls):
    """Median wall time of `calls` back-to-back calls, in ms."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def mindspore_kernels(call, calls):
    """{kernel kind: ms per call} from mindspore.Profiler over `calls` calls (its CPU op-type table)."""
    import mindspore as ms  # noqa: PLC0415
    with tempfile.TemporaryDirectory() as folder:
        profiler = ms.Profiler(output_path=folder)
        for _ in range(calls):
            call()
        profiler.stop()
        profiler.analyse()
        table = next(Path(folder).rglob("cpu_op_type_info_0.csv"))
        with open(table, newline="", encoding="utf-8") as f:
            return {row["op_type"]: float(row["total_compute_time"]) / calls for row in csv.DictReader(f)}


def torch_kernels(call, calls):
    """{aten op: ms per call} of self CPU time from torch.profiler over `calls` calls."""
    import torch  # noqa: PLC0415
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(calls):
            call()
    return {event.key: event.self_cpu_time_total / 1e3 / calls for event in profile.key_averages()
            if event.self_cpu_time_total > 0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work_dir", default="bench_output/latency_2x192",
                        help="a bench/latency.py --work_dir (student.ckpt, student_hf/)")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=12, help="blocks of 100 calls per engine, alternating")
    args = parser.parse_args(argv)
    work_dir = Path(args.work_dir)
    if not (work_dir / "student.ckpt").is_file() or not (work_dir / "student_hf").is_dir():
        sys.exit(f"error: {work_dir} lacks student.ckpt or student_hf/: run bench/latency.py --work_dir {work_dir} first")
    import mindspore as ms  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from transformers import BertForSequenceClassification as TorchBert  # noqa: PLC0415
    from src.checkpoint import load_model  # noqa: PLC0415
    from src.tinybert_model import LogitsOnly, inference_function  # noqa: PLC0415
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")

    ids = np.random.default_rng(0).integers(1000, 30000, (1, args.sequence)).astype(np.int32)
    model, _ = load_model(work_dir / "student.ckpt")
    network = inference_function(LogitsOnly(model))
    ms_inputs = [ms.Tensor(x) for x in (ids, np.ones_like(ids), np.zeros_like(ids))]
    torch_model = TorchBert.from_pretrained(work_dir / "student_hf").eval()
    torch_ids = torch.from_numpy(ids.astype(np.int64))
    torch_inputs = {"input_ids": torch_ids, "attention_mask": torch.ones_like(torch_ids),
                    "token_type_ids": torch.zeros_like(torch_ids)}

    def torch_call():
        with torch.inference_mode():
            return torch_model(**torch_inputs).logits.numpy()
    engines = {"mindspore": (lambda: network(*ms_inputs).asnumpy(), mindspore_kernels),
               "pytorch": (torch_call, torch_kernels)}
    for name, (call, kernels) in engines.items():
        for _ in range(5):
            call()
        wall = wall_ms(call, args.calls)
        by_kind = kernels(call, args.calls)
        total = sum(by_kind.values())
        print(f"{name}: wall {wall:.2f} ms a call, kernels {total:.2f} ms (framework around them {wall - total:.2f} ms)")
        for kind, ms_per_call in sorted(by_kind.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {kind:50s} {ms_per_call:6.3f} ms")
    blocks = {name: [] for name in engines}
    for _ in range(args.blocks):
        for name, (call, _) in engines.items():
            blocks[name].append(wall_ms(call, 100))
    for name, medians in blocks.items():
        print(f"{name}: medians of {args.blocks} blocks of 100 calls (ms): {' '.join(f'{m:.2f}' for m in medians)}")


if __name__ == "__main__":
    main()
