"""The compression report of a run: what distillation gained (size, speed) and lost (dev metric).

  python -m src.report OUTPUT_DIR [--deploy_dir DIR] [--files a.mindir b.onnx] [--latency_repeats 30] \
      [--latency bench/latency.json] [--output_dir OUTPUT_DIR/report]

Reads OUTPUT_DIR/metrics.jsonl (one record per logged step and per evaluation, written by training),
OUTPUT_DIR/PHASE/config.yaml and the checkpoints of the run (the teacher's: OUTPUT_DIR/teacher/
teacher_best.ckpt, else the one td2 was given; the student's: td2's best, else the newest final),
and writes into --output_dir (default OUTPUT_DIR/report):
  report.md        teacher and student shapes and parameters, file sizes (checkpoint, MINDIR, ONNX,
                   ONNX int8: from --deploy_dir, default OUTPUT_DIR/../deploy, and --files), best dev
                   metrics and the student/teacher ratio, the int8 check, latency, the settings that mattered
  report.json      the same numbers
  loss.png         each phase's loss (and its components) over steps
  dev_metric.png   the dev metric over evaluations, teacher and student
`--latency_repeats N` times teacher and student checkpoints in MindSpore GRAPH mode at batch 1 and
the run's sequence length, N calls each, taking turns; `--latency FILE` adds the table of
bench/latency.py --json.

`model_card` writes the README.md of a Hugging Face export from the same records.
"""
import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import yaml

from src.atomic_files import atomic_path
from src.checkpoint import LABEL_NAMES, MODEL_CONFIG, SHARED_PROJECTION_PREFIX, STATE_PREFIX, TASK, \
    load_checkpoint, split_metadata
from src.cli import read_json
from src.logger import get_logger

METRICS_FILE = "metrics.jsonl"
PHASE_ORDER = ("teacher", "gd", "td1", "td2")  # the order a run goes through; other phases follow
PHASE_BLOCK = {"teacher": "teacher_finetune"}  # the optimizer block of a phase, when not named after it
PHASE_NAMES = {"teacher": "teacher fine-tuning", "gd": "general distillation", "td1": "task distillation 1 "
               "(intermediate layers)", "td2": "task distillation 2 (prediction layer)"}
# The settings a reader needs to repeat or judge the run; a key a run's config lacks is left out.
KEY_SETTINGS = ("task.name", "task.metric", "seq_length", "teacher.model", "student.model", "student.init",
                "student.teacher_layers", "distill.preset", "distill.layer_mapping", "distill.temperature",
                "distill.kd_weight", "distill.hard_label_weight", "data.train_path", "data.eval_path", "data.padding")
PHASE_SETTINGS = ("epochs", "batch_size", "learning_rate", "warmup_ratio", "max_steps")
SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
# The Hugging Face Hub's pipeline for each exported head (a bare encoder is feature extraction).
PIPELINE_TAGS = {"BertForSequenceClassification": "text-classification",
                 "BertForTokenClassification": "token-classification",
                 "BertForQuestionAnswering": "question-answering"}


# ---------------------------------------------------------------- reading a run


def read_metrics(path):
    """{phase: {"steps": [records], "evals": [records]}} from metrics.jsonl, in phase order.

    A phase run twice into one folder (a rerun, or a resume that repeats steps) appends records whose
    step goes back; only the last run of each phase is kept.
    """
    phases = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} is not JSON ({err.msg}): the file is damaged; remove that "
                                 "line") from None
            name, kind = record.get("phase", "?"), "evals" if "eval" in record else "steps"
            entry = phases.setdefault(name, {"steps": [], "evals": []})
            if entry[kind] and record["step"] <= entry[kind][-1]["step"]:  # the phase started again
                entry = phases[name] = {"steps": [], "evals": []}
            entry[kind].append(record)
    ordered = [p for p in PHASE_ORDER if p in phases] + sorted(p for p in phases if p not in PHASE_ORDER)
    return {p: phases[p] for p in ordered}


def read_phase_config(run_dir, phase):
    """The resolved config a phase wrote (OUTPUT_DIR/PHASE/config.yaml) as a dict; {} if absent."""
    path = Path(run_dir) / phase / "config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _dotted(values, key):
    for part in key.split("."):
        if not isinstance(values, dict) or part not in values:
            return None
        values = values[part]
    return values


def find_checkpoints(run_dir):
    """(teacher checkpoint or None, student checkpoint or None) of a run folder."""
    run_dir = Path(run_dir)
    teacher = run_dir / "teacher" / "teacher_best.ckpt"
    if not teacher.is_file():
        given = _dotted(read_phase_config(run_dir, "td2") or read_phase_config(run_dir, "td1"), "teacher.checkpoint")
        teacher = Path(given) if given and Path(given).is_file() else None
    candidates = [run_dir / "td2" / "student_best.ckpt"] + [run_dir / p / "student_final.ckpt"
                                                            for p in ("td2", "td1", "gd")]
    return teacher, next((c for c in candidates if c.is_file()), None)


def describe_checkpoint(path):
    """Shape, parameter counts and size of a checkpoint's model (training-only tensors left out).

    Returns:
        dict: path, file_bytes, shape (SHAPE_KEYS of its model_config), parameters (all),
        parameters_without_embeddings (TinyBERT's paper counts both), label_names, task, step.
    """
    tensors, metadata = split_metadata(load_checkpoint(path))
    model = {n: t for n, t in tensors.items() if not n.startswith((STATE_PREFIX, SHARED_PROJECTION_PREFIX))}
    sizes = {n: int(np.prod(t.shape)) for n, t in model.items()}
    config = json.loads(metadata[MODEL_CONFIG]) if MODEL_CONFIG in metadata else {}
    return {"path": str(path), "file_bytes": Path(path).stat().st_size,
            "shape": {k: config[k] for k in SHAPE_KEYS if k in config},
            "parameters": sum(sizes.values()),
            "parameters_without_embeddings": sum(s for n, s in sizes.items() if "embedding" not in n),
            "label_names": json.loads(metadata.get(LABEL_NAMES, "[]")), "task": metadata.get(TASK, ""),
            "step": metadata.get("step")}


def best_eval(evals):
    """(metric name, best record) of a phase's evaluations; the first metric is the one the run chose."""
    if not evals:
        return None, None
    metric = next(iter(evals[0]["eval"]))
    return metric, max(evals, key=lambda r: r["eval"][metric])


def phase_summary(name, entry, config):
    """Steps, time, final loss and optimizer settings of one phase."""
    steps, previous, seconds = entry["steps"], 0, 0.0
    for record in steps:
        seconds += record.get("ms_per_step", 0.0) * (record["step"] - previous) / 1000.0
        previous = record["step"]
    block = config.get(PHASE_BLOCK.get(name, name), {}) if config else {}
    return {"phase": name, "steps": steps[-1]["step"] if steps else 0,
            "epochs_run": steps[-1].get("epoch") if steps else None,
            "final_loss": steps[-1]["loss"] if steps else None, "train_seconds": round(seconds, 1),
            "evaluations": len(entry["evals"]),
            "settings": {k: block[k] for k in PHASE_SETTINGS if k in block}}


# ---------------------------------------------------------------- latency


def time_in_turns(runners, repeats, warmup=2, burst=1):
    """Seconds per call of each runner, the runners taking turns so they see the same machine load.

    Args:
        runners (dict[str, callable]): name -> a call that returns when its result is ready.
        repeats (int): timed calls of each runner.
        warmup (int, default 2): untimed calls first (compilation, caches).
        burst (int, default 1): calls of a runner in a row in each turn; with more than one, the first call
            of each turn is not timed (it wakes the engine's threads, which slept while the other runners
            had their turn), so the times are those of an engine serving calls back to back.
    Returns:
        dict[str, list[float]]: name -> `repeats` durations in seconds.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    untimed = 1 if burst > 1 else 0
    while any(len(t) < repeats for t in times.values()):
        for name, run in runners.items():
            for call in range(burst):
                start = time.perf_counter()
                run()
                if call >= untimed and len(times[name]) < repeats:
                    times[name].append(time.perf_counter() - start)
    return times


def latency_stats(seconds, batch_size):
    """Median and 95th percentile latency (ms) and throughput (sequences/s at the median)."""
    median = statistics.median(seconds)
    return {"median_ms": round(1000 * median, 3), "p95_ms": round(1000 * float(np.percentile(seconds, 95)), 3),
            "throughput_per_s": round(batch_size / median, 1), "calls": len(seconds)}


def checkpoint_latency(teacher_path, student_path, seq_length, repeats):
    """{teacher, student: latency_stats} of the two checkpoints in MindSpore GRAPH mode, batch 1."""
    import mindspore as ms  # noqa: PLC0415 -- only measuring needs the models built
    from src.checkpoint import load_model  # noqa: PLC0415
    from src.tinybert_model import LogitsOnly, inference_function  # noqa: PLC0415
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    runners = {}
    for name, path in (("teacher", teacher_path), ("student", student_path)):
        model, _ = load_model(path)
        network = inference_function(LogitsOnly(model))
        vocab = model.bert.config.vocab_size
        inputs = [ms.Tensor(rng.integers(1, vocab, (1, seq_length)).astype(np.int32)),
                  ms.Tensor(np.ones((1, seq_length), np.int32)), ms.Tensor(np.zeros((1, seq_length), np.int32))]
        runners[name] = (lambda n=network, x=inputs: n(*x).asnumpy())
    times = time_in_turns(runners, repeats)
    return {name: latency_stats(values, 1) for name, values in times.items()}


# ---------------------------------------------------------------- plots


def plot_losses(phases, path):
    """One panel per training phase: the loss and each loss component over steps."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    trained = {name: entry["steps"] for name, entry in phases.items() if entry["steps"]}
    fig, axes = plt.subplots(1, len(trained), figsize=(4.2 * len(trained), 3.4), squeeze=False)
    skip = {"phase", "step", "epoch", "loss", "overflow", "loss_scale", "lr", "ms_per_step", "kd_weight",
            "hard_label_weight", "temperature"}
    for ax, (name, steps) in zip(axes[0], trained.items()):
        x = [r["step"] for r in steps]
        ax.plot(x, [r["loss"] for r in steps], color="black", linewidth=2, label="loss (total)")
        components = [k for k in steps[0] if k not in skip and isinstance(steps[0][k], (int, float))]
        for component in components:
            values = [r.get(component, math.nan) for r in steps]
            if any(v for v in values if not math.isnan(v)):
                ax.plot(x, values, linewidth=1, alpha=0.8, label=component)
        ax.set_title(PHASE_NAMES.get(name, name), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dev_metric(phases, path):
    """The first (chosen) dev metric of each evaluating phase over its steps, the best marked."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    fig, ax = plt.subplots(figsize=(6, 3.6))
    metric = None
    for name, entry in phases.items():
        metric, best = best_eval(entry["evals"])
        if best is None:
            continue
        x = [r["step"] for r in entry["evals"]]
        line, = ax.plot(x, [r["eval"][metric] for r in entry["evals"]], marker="o", label=PHASE_NAMES.get(name, name))
        ax.scatter([best["step"]], [best["eval"][metric]], s=120, facecolors="none", edgecolors=line.get_color())
        ax.annotate(f"best {best['eval'][metric]:.4f}", (best["step"], best["eval"][metric]), fontsize=8,
                    textcoords="offset points", xytext=(4, 6))
    ax.margins(y=0.15)  # room for the "best" labels
    ax.set_xlabel("step of its phase")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(f"dev {metric} at each evaluation (circle: the checkpoint kept)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- the report


def _exported_files(deploy_dir, files):
    """{kind: {path, bytes}} of the exported student files found."""
    from src.deploy import INT8_ONNX, MINDIR  # noqa: PLC0415
    from src.predict import FLOAT_ONNX  # noqa: PLC0415
    missing = [str(f) for f in files or () if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"--files: {', '.join(missing)} does not exist")
    candidates = [Path(f) for f in files or ()]
    if deploy_dir and Path(deploy_dir).is_dir():
        candidates += [Path(deploy_dir) / name for name in (MINDIR, FLOAT_ONNX, INT8_ONNX)]
    found = {}
    for path in (c for c in candidates if c.is_file()):
        kind = "onnx_int8" if path.name.endswith(".int8.onnx") else path.suffix.lstrip(".").lower()
        found.setdefault(kind, {"path": str(path), "bytes": path.stat().st_size})
    return found


def build_report(run_dir, deploy_dir=None, files=(), latency_repeats=0, latency_file=None):
    """Everything report.md says, as a dict (report.json). Raises FileNotFoundError for a folder
    that holds neither metrics.jsonl nor checkpoints."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    teacher_path, student_path = find_checkpoints(run_dir)
    if not metrics_path.is_file() and student_path is None:
        raise FileNotFoundError(f"{run_dir} holds no {METRICS_FILE} and no checkpoints: give a run's OUTPUT_DIR "
                                "(the folder with gd/, td1/, td2/, teacher/)")
    phases = read_metrics(metrics_path) if metrics_path.is_file() else {}
    configs = {name: read_phase_config(run_dir, name) for name in phases}
    last_phase = next((p for p in reversed(list(configs)) if configs[p]), None)
    last_config = configs[last_phase] if last_phase else {}
    report = {"run_dir": str(run_dir), "phases": [phase_summary(n, e, configs[n]) for n, e in phases.items()]}
    report["teacher"] = describe_checkpoint(teacher_path) if teacher_path else None
    report["student"] = describe_checkpoint(student_path) if student_path else None
    if report["teacher"] and report["student"]:
        report["parameter_ratio"] = report["student"]["parameters"] / report["teacher"]["parameters"]
    report["files"] = _exported_files(deploy_dir, files)
    dev = {}
    for role, phase in (("teacher", "teacher"), ("student", "td2")):
        metric, best = best_eval(phases.get(phase, {}).get("evals", []))
        if best is not None:
            dev[role] = {"metric": metric, "value": best["eval"][metric], "step": best["step"], "all": best["eval"],
                         "examples": best.get("examples")}
    if "teacher" in dev and "student" in dev and dev["teacher"]["value"]:
        dev["student_over_teacher"] = dev["student"]["value"] / dev["teacher"]["value"]
    report["dev"] = dev
    description = Path(deploy_dir) / "model.json" if deploy_dir else None
    report["int8_check"] = read_json(description).get("int8_check") \
        if description is not None and description.is_file() else None
    report["latency"] = {}
    if latency_repeats and teacher_path and student_path:
        seq_length = int(last_config.get("seq_length") or 128)
        measured = checkpoint_latency(teacher_path, student_path, seq_length, latency_repeats)
        measured["setting"] = f"MindSpore GRAPH mode, batch 1, sequence {seq_length}, {latency_repeats} calls each"
        measured["teacher_over_student"] = measured["teacher"]["median_ms"] / measured["student"]["median_ms"]
        report["latency"]["checkpoints"] = measured
    if latency_file:
        report["latency"]["bench"] = read_json(latency_file)
    report["settings"] = {k: v for k in KEY_SETTINGS if (v := _dotted(last_config, k)) is not None}
    report["settings_phase"] = last_phase
    return report


def _count(n):
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def _size(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _layers(count):
    return f"{count} layer{'' if count == 1 else 's'}"


def _shape(info):
    s = info["shape"]
    return (f"{_layers(s.get('num_hidden_layers'))}, hidden {s.get('hidden_size')}, {s.get('num_attention_heads')} heads, "
            f"FFN {s.get('intermediate_size')}") if s else "unknown"


def render_markdown(report):
    """report.md from the dict `build_report` returns."""
    lines = [f"# Compression report: {report['run_dir']}", ""]
    teacher, student = report["teacher"], report["student"]
    lines += ["## Models", "", "| | teacher | student | student / teacher |", "|---|---|---|---|"]
    if teacher or student:
        t, s = teacher or {}, student or {}
        ratio = (lambda key: f"{s[key] / t[key]:.3f}" if t and s and t.get(key) else "")
        lines += [f"| shape | {_shape(t) if t else '-'} | {_shape(s) if s else '-'} | |",
                  f"| parameters | {_count(t['parameters']) if t else '-'} | {_count(s['parameters']) if s else '-'} | "
                  f"{ratio('parameters')} |",
                  f"| parameters without embeddings | {_count(t['parameters_without_embeddings']) if t else '-'} | "
                  f"{_count(s['parameters_without_embeddings']) if s else '-'} | {ratio('parameters_without_embeddings')} |",
                  f"| checkpoint | {_size(t['file_bytes']) if t else '-'} | {_size(s['file_bytes']) if s else '-'} | "
                  f"{ratio('file_bytes')} |"]
        names = {"mindir": "MINDIR", "onnx": "ONNX (float32)", "onnx_int8": "ONNX int8"}
        for kind, info in report["files"].items():
            shown = f"{_size(info['bytes'])} (`{info['path']}`)"
            share = f"{info['bytes'] / t['file_bytes']:.3f} of the teacher checkpoint" if t else ""
            lines.append(f"| {names.get(kind, kind)} | | {shown} | {share} |")
        lines.append("")
        lines += [f"Teacher: `{t.get('path', '-')}`; student: `{s.get('path', '-')}`.", ""]
    dev = report["dev"]
    lines += ["## Dev set", ""]
    if dev:
        lines += ["| | metric | best | at step | all metrics there |", "|---|---|---|---|---|"]
        for role in ("teacher", "student"):
            if role in dev:
                d = dev[role]
                others = ", ".join(f"{k} {v:.4f}" for k, v in d["all"].items())
                lines.append(f"| {role} | {d['metric']} | {d['value']:.4f} | {d['step']} | {others} |")
        if "student_over_teacher" in dev:
            lines += ["", f"The student keeps **{100 * dev['student_over_teacher']:.1f} %** of the teacher's dev "
                          f"{dev['student']['metric']} ({dev['student'].get('examples')} examples)."]
    else:
        lines.append("No evaluation was recorded.")
    if report.get("int8_check"):
        c = report["int8_check"]
        lines += ["", f"ONNX int8 against float32 on {c['examples']} dev examples: {c['metric']} {c['int8']:.4f} vs "
                      f"{c['float32']:.4f} ({c['drop_points']:+.2f} points lost; limit {c['max_drop_points']})."]
    lines.append("")
    latency = report["latency"]
    if latency:
        lines += ["## Latency", ""]
        if "checkpoints" in latency:
            m = latency["checkpoints"]
            lines += [f"{m['setting']}: teacher median {m['teacher']['median_ms']:.2f} ms (p95 "
                      f"{m['teacher']['p95_ms']:.2f}), student {m['student']['median_ms']:.2f} ms (p95 "
                      f"{m['student']['p95_ms']:.2f}): the student is **{m['teacher_over_student']:.2f}x** faster.", ""]
        if "bench" in latency:
            lines += ["From bench/latency.py (other models: see its header):", "",
                      "| model | engine | batch | sequence | median ms | p95 ms | sequences/s |", "|---|---|---|---|---|---|---|"]
            for row in latency["bench"].get("rows", []):
                lines.append(f"| {row['model']} | {row['engine']} | {row['batch']} | {row['sequence']} | "
                             f"{row['median_ms']:.2f} | {row['p95_ms']:.2f} | {row['throughput_per_s']:.1f} |")
            lines.append("")
    if report["phases"]:
        lines += ["## Training", "", "| phase | steps | epochs | final loss | train time | evaluations | settings |",
                  "|---|---|---|---|---|---|---|"]
        for p in report["phases"]:
            settings = ", ".join(f"{k} {v}" for k, v in p["settings"].items())
            loss = f"{p['final_loss']:.4f}" if p["final_loss"] is not None else "-"
            lines.append(f"| {PHASE_NAMES.get(p['phase'], p['phase'])} | {p['steps']} | {p['epochs_run'] or '-'} | {loss} "
                         f"| {p['train_seconds']:.0f} s | {p['evaluations']} | {settings} |")
        lines += ["", "![loss per phase](loss.png)", ""]
        if any(p["evaluations"] for p in report["phases"]):
            lines += ["![dev metric over evaluations](dev_metric.png)", ""]
    if report["settings"]:
        phase = report["settings_phase"]
        lines += [f"## Settings that mattered ({PHASE_NAMES.get(phase, phase)}, the run's last phase)", ""]
        lines += [f"- `{key}`: {json.dumps(value)}" for key, value in report["settings"].items()]
        lines.append("")
    return "\n".join(lines)


def write_report(run_dir, output_dir=None, **options):
    """Write report.md, report.json and the plots into output_dir (default RUN_DIR/report); returns
    the report dict. Each file is written under a temporary name and renamed."""
    report = build_report(run_dir, **options)
    output_dir = Path(output_dir or Path(run_dir) / "report")
    output_dir.mkdir(parents=True, exist_ok=True)
    phases = read_metrics(Path(run_dir) / METRICS_FILE) if (Path(run_dir) / METRICS_FILE).is_file() else {}
    outputs = {"report.md": lambda p: p.write_text(render_markdown(report), encoding="utf-8"),
               "report.json": lambda p: p.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")}
    if any(entry["steps"] for entry in phases.values()):
        outputs["loss.png"] = lambda p: plot_losses(phases, p)
    if any(entry["evals"] for entry in phases.values()):
        outputs["dev_metric.png"] = lambda p: plot_dev_metric(phases, p)
    for name, write in outputs.items():
        with atomic_path(output_dir / name) as tmp:
            write(tmp)
    get_logger().info("report written to %s: %s", output_dir, ", ".join(outputs))
    return report


# ---------------------------------------------------------------- Hugging Face model card


def model_card(checkpoint, architecture, label_names, config):
    """README.md text for a Hugging Face export of `checkpoint`: the model, its teacher, data, phases
    and steps, dev metrics, how to load it. The run's records are read when the checkpoint sits in
    a run folder (OUTPUT_DIR/PHASE/*.ckpt beside config.yaml, OUTPUT_DIR/metrics.jsonl): the phases up to
    and including PHASE, those that made the checkpoint.

    Args:
        checkpoint (str or Path): our checkpoint.
        architecture (str): the transformers class written to config.json.
        label_names (list[str]): the labels in output order (empty for regression or an encoder).
        config (BertConfig): the exported model's shape.
    """
    checkpoint = Path(checkpoint)
    phase_dir, run_dir = checkpoint.parent, checkpoint.parent.parent
    run_config = read_phase_config(run_dir, phase_dir.name)
    phases = read_metrics(run_dir / METRICS_FILE) if run_config and (run_dir / METRICS_FILE).is_file() else {}
    if phase_dir.name in phases:  # the phases that made this checkpoint, not those the run went on to
        names = list(phases)
        phases = {name: phases[name] for name in names[:names.index(phase_dir.name) + 1]
                  if not (phase_dir.name == "gd" and name == "teacher")}  # GD distils the pre-trained teacher
    _, metadata = split_metadata(load_checkpoint(checkpoint))
    # An encoder (general distillation) has no task, whatever task the run's later phases trained.
    task = "" if architecture == "BertModel" else metadata.get(TASK, "") or _dotted(run_config, "task.name") or ""
    shape = (f"{_layers(config.num_hidden_layers)}, hidden size {config.hidden_size}, {config.num_attention_heads} "
             f"attention heads, feed-forward size {config.intermediate_size}, vocabulary {config.vocab_size}")
    lines = ["---", "library_name: transformers", "pipeline_tag: " + PIPELINE_TAGS.get(architecture, "feature-extraction"),
             "tags: [bert, tinybert, knowledge-distillation, mindspore]", "---", "",
             f"# TinyBERT student{f' for {task}' if task else ''}", "",
             "A BERT student distilled with TinyBERT (Jiao et al. 2019) by this project's MindSpore code and "
             "converted to Hugging Face's format.", "", f"- Architecture: `{architecture}`; {shape}."]
    if label_names:
        lines.append(f"- Labels (output order): {', '.join(f'`{n}`' for n in label_names)}.")
    if run_config:
        ensemble = _dotted(run_config, "teacher.ensemble") or []
        rows = ensemble or [{"model": _dotted(run_config, "teacher.model"),
                             "checkpoint": _dotted(run_config, "teacher.checkpoint")}]
        teachers = [f"`{row['model']}` (checkpoint `{row['checkpoint']}`"
                    + (f", weight {row.get('weight', 1.0):g})" if ensemble else ")") for row in rows]
        lines += [("- Teachers (an ensemble, weighted mean of their logits): " if ensemble else "- Teacher: ")
                  + "; ".join(teachers) + ".",
                  f"- Data: train `{_dotted(run_config, 'data.train_path')}`, dev `{_dotted(run_config, 'data.eval_path')}`, "
                  f"sequence length {_dotted(run_config, 'seq_length')}.",
                  f"- Student initialised by `{_dotted(run_config, 'student.init')}`; distillation preset "
                  f"`{_dotted(run_config, 'distill.preset')}`, temperature {_dotted(run_config, 'distill.temperature')}."]
    if phases:
        lines += ["", "## Training", "", "| phase | steps | final loss |", "|---|---|---|"]
        for name, entry in phases.items():
            if entry["steps"]:
                lines.append(f"| {PHASE_NAMES.get(name, name)} | {entry['steps'][-1]['step']} | "
                             f"{entry['steps'][-1]['loss']:.4f} |")
        evaluated = [(name, *best_eval(entry["evals"])) for name, entry in phases.items() if entry["evals"]]
        if evaluated:
            lines += ["", "## Dev metrics (best evaluation of each phase)", "", "| phase | step | metrics |",
                      "|---|---|---|"]
            for name, _, best in evaluated:
                metrics = ", ".join(f"{k} {v:.4f}" for k, v in best["eval"].items())
                lines.append(f"| {PHASE_NAMES.get(name, name)} | {best['step']} | {metrics} on {best.get('examples')} "
                             "examples |")
    head_class = "AutoModelForSequenceClassification" if architecture == "BertForSequenceClassification" else \
        "AutoModel" if architecture == "BertModel" else architecture.replace("Bert", "AutoModel")
    lines += ["", "## How to load it", "", "```python", "import torch",
              f"from transformers import AutoTokenizer, {head_class}", "",
              'tokenizer = AutoTokenizer.from_pretrained("PATH_OF_THIS_FOLDER")',
              f'model = {head_class}.from_pretrained("PATH_OF_THIS_FOLDER").eval()',
              'inputs = tokenizer(["a sentence to label"], return_tensors="pt")',
              "with torch.no_grad():", "    outputs = model(**inputs)"]
    if architecture == "BertForSequenceClassification" and label_names:
        lines.append("print(model.config.id2label[int(outputs.logits.argmax(-1))])")
    lines += ["```", "", f"Converted from `{checkpoint}` with `python -m src.hf_convert export`.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("run_dir", help="the run's OUTPUT_DIR (holds metrics.jsonl and the phase folders)")
    parser.add_argument("--output_dir", default=None, help="default: RUN_DIR/report")
    parser.add_argument("--deploy_dir", default=None,
                        help="a src.deploy folder with the exported student (default: RUN_DIR/../deploy if present)")
    parser.add_argument("--files", nargs="*", default=(), help="further exported files (.mindir, .onnx) to list")
    parser.add_argument("--latency_repeats", type=int, default=0,
                        help="time teacher and student checkpoints, this many calls each (0: do not)")
    parser.add_argument("--latency", default=None, help="a JSON table from bench/latency.py --json")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist: give the run's OUTPUT_DIR")
    deploy_dir = args.deploy_dir or (run_dir.parent / "deploy" if (run_dir.parent / "deploy").is_dir() else None)
    report = write_report(run_dir, args.output_dir, deploy_dir=deploy_dir, files=args.files,
                          latency_repeats=args.latency_repeats, latency_file=args.latency)
    dev = report["dev"]
    kept = f"; the student keeps {100 * dev['student_over_teacher']:.1f} % of the teacher's dev {dev['student']['metric']}" \
        if "student_over_teacher" in dev else ""
    print(f"wrote {Path(args.output_dir or run_dir / 'report') / 'report.md'}{kept}")


if __name__ == "__main__":
    from src.cli import run_cli  # noqa: PLC0415
    run_cli(main)
