"""report: a small run made by the real training entry point, read back into report.md, report.json,
plots and a Hugging Face model card."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import load_checkpoint, load_model, named_parameters, save_checkpoint, split_metadata
from src.hf_convert import export_hf
from src.records_writer import RecordsWriter
from src.report import latency_stats, main, read_metrics, time_in_turns, write_report
from src.tinybert_model import BertConfig, BertForSequenceClassification, BertModel, count_parameters

ROOT = Path(__file__).resolve().parents[2]
SEQ = 12
TEACHER = dict(vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=32)
STUDENT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Teacher fine-tuning, then task distillation, through run_task_distill.py."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    for name, count in (("train", 32), ("dev", 21)):
        ids = rng.integers(5, 99, (count, SEQ)).astype(np.int32)
        with RecordsWriter(root / f"{name}.mindrecord", "mindrecord", SEQ, label_dtype=np.int32) as writer:
            writer.write({"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids),
                          "label_ids": (ids[:, 1] > 50).astype(np.int32)})
    for name, shape in (("teacher", TEACHER), ("student", STUDENT)):
        (root / f"{name}.json").write_text(json.dumps(shape))
    ms.set_seed(0)
    encoder = BertModel(BertConfig(**TEACHER))
    save_checkpoint(root / "pretrained.ckpt", named_parameters(encoder, "bert."))
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                              [f"w{i}" for i in range(5, 99)]) + "\n")
    common = ["--config_path=src/task_configs/sst2.yaml", f"--teacher.model={root / 'teacher.json'}",
              f"--student.model={root / 'student.json'}", f"--seq_length={SEQ}", f"--output_dir={root / 'out'}",
              "--log_steps=1", f"--data.train_path={root / 'train.mindrecord'}",
              f"--data.eval_path={root / 'dev.mindrecord'}"]
    # Two phases keep the test short: the teacher's fine-tuning and task distillation's prediction layer
    # (td2) from a random student; each evaluates after every step. Subprocesses, as a user runs them
    # (MindSpore's device is set once per process, before any kernel runs).
    for phase in (["--phase=teacher", f"--teacher.checkpoint={root / 'pretrained.ckpt'}", "--teacher_finetune.epochs=1",
                   "--teacher_finetune.batch_size=16", "--teacher_finetune.learning_rate=1e-3"],
                  ["--phase=td2", f"--teacher.checkpoint={root / 'out/teacher/teacher_best.ckpt'}",
                   "--student.init=random", "--td2.epochs=1", "--td2.batch_size=16", "--td2.learning_rate=1e-3"]):
        result = subprocess.run([sys.executable, "run_task_distill.py", *common, *phase, "--eval.every_steps=1"],
                                cwd=ROOT, env=dict(os.environ, GLOG_v="3"), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return root


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_report_says_what_the_run_did(run):
    out = run / "out"
    deploy = run / "deploy"  # the report only lists and measures what a deploy folder holds
    deploy.mkdir()
    (deploy / "model.onnx").write_bytes(b"x" * 3000)
    (deploy / "model.int8.onnx").write_bytes(b"x" * 1000)
    check = {"metric": "accuracy", "examples": 21, "float32": 0.9, "int8": 0.88, "drop_points": 2.0,
             "max_drop_points": 3.0}
    (deploy / "model.json").write_text(json.dumps({"int8_check": check}))
    bench = {"rows": [{"model": "student", "engine": "onnxruntime-int8", "batch": 1, "sequence": 128, "median_ms": 8.74,
                       "p95_ms": 9.53, "throughput_per_s": 114.4, "calls": 20}]}
    (run / "latency.json").write_text(json.dumps(bench))  # as bench/latency.py --json writes it
    main([str(out), "--deploy_dir", str(deploy), "--latency", str(run / "latency.json")])
    report = json.loads((out / "report" / "report.json").read_text())

    teacher_model = BertForSequenceClassification(BertConfig(**TEACHER), 2)
    student_model = BertForSequenceClassification(BertConfig(**STUDENT), 2)
    assert report["teacher"]["parameters"] == count_parameters(teacher_model)
    assert report["student"]["parameters"] == count_parameters(student_model)
    assert report["parameter_ratio"] == pytest.approx(count_parameters(student_model) / count_parameters(teacher_model))
    assert report["student"]["file_bytes"] == (out / "td2" / "student_best.ckpt").stat().st_size
    assert report["files"]["onnx"]["bytes"] == 3000 and report["files"]["onnx_int8"]["bytes"] == 1000
    assert report["int8_check"] == check

    lines = records(out / "metrics.jsonl")
    for role, phase, checkpoint in (("teacher", "teacher", "teacher/teacher_best.ckpt"),
                                    ("student", "td2", "td2/student_best.ckpt")):
        evals = [r["eval"]["accuracy"] for r in lines if r["phase"] == phase and "eval" in r]
        assert len(evals) == 2 and report["dev"][role]["value"] == max(evals)
        _, metadata = split_metadata(load_checkpoint(out / checkpoint))  # the checkpoint kept says the same
        assert metadata["accuracy"] == pytest.approx(report["dev"][role]["value"])
    assert report["dev"]["student_over_teacher"] == pytest.approx(report["dev"]["student"]["value"] /
                                                                  report["dev"]["teacher"]["value"])
    steps = {p["phase"]: p["steps"] for p in report["phases"]}
    assert steps == {"teacher": 2, "td2": 2}  # 32 rows in batches of 16, one epoch each
    assert report["settings"]["task.name"] == "sst2" and report["settings"]["seq_length"] == SEQ

    markdown = (out / "report" / "report.md").read_text()
    assert f"| parameters | {count_parameters(teacher_model):,} | {count_parameters(student_model):,} |" in markdown
    assert "The student keeps **" in markdown and "![loss per phase](loss.png)" in markdown
    assert report["settings_phase"] == "td2"
    assert "## Settings that mattered (task distillation 2 (prediction layer), the run's last phase)" in markdown
    assert "ONNX int8 against float32 on 21 dev examples: accuracy 0.8800 vs 0.9000 (+2.00 points lost" in markdown
    assert "| student | onnxruntime-int8 | 1 | 128 | 8.74 | 9.53 | 114.4 |" in markdown
    assert report["latency"]["bench"] == bench
    for plot in ("loss.png", "dev_metric.png"):
        pixels = matplotlib.image.imread(out / "report" / plot)
        assert pixels.shape[0] > 200 and len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20
    assert matplotlib.image.imread(out / "report" / "loss.png").shape[1] > 2 * 400  # one panel per phase


def test_model_card_of_the_hugging_face_export(run, tmp_path):
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415
    export_hf(run / "out/td2/student_best.ckpt", None, run / "vocab.txt", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert "1 layer, hidden size 32, 4 attention heads, feed-forward size 48" in card
    assert "Labels (output order): `0`, `1`" in card and f"Teacher: `{run / 'teacher.json'}`" in card
    td2_steps = max(r["step"] for r in records(run / "out/metrics.jsonl") if r["phase"] == "td2" and "loss" in r)
    assert f"| task distillation 2 (prediction layer) | {td2_steps} |" in card
    best = max((r for r in records(run / "out/metrics.jsonl") if r["phase"] == "td2" and "eval" in r),
               key=lambda r: r["eval"]["accuracy"])
    assert f"accuracy {best['eval']['accuracy']:.4f}" in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert model.config.id2label == {0: "0", 1: "1"}


def test_model_card_lists_the_phases_that_made_the_checkpoint(run, tmp_path):
    """The teacher's checkpoint of a run that went on to td2: its card has the teacher's phase and dev
    metrics, not td2's (which came after it and did not train it)."""
    export_hf(run / "out/teacher/teacher_best.ckpt", None, run / "vocab.txt", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    teacher_steps = max(r["step"] for r in records(run / "out/metrics.jsonl") if r["phase"] == "teacher" and "loss" in r)
    assert f"| teacher fine-tuning | {teacher_steps} |" in card
    assert "task distillation 2" not in card


def test_model_card_names_every_teacher_of_an_ensemble(run, tmp_path):
    """A student distilled from teacher.ensemble: the card lists the ensemble's teachers, not the
    unused teacher.model / teacher.checkpoint defaults."""
    import shutil  # noqa: PLC0415
    import yaml  # noqa: PLC0415
    from src.report import model_card  # noqa: PLC0415
    td2 = tmp_path / "out" / "td2"
    td2.mkdir(parents=True)
    shutil.copy(run / "out/td2/student_best.ckpt", td2)
    config = yaml.safe_load((run / "out/td2/config.yaml").read_text())
    config["teacher"]["ensemble"] = [{"model": "a/config.json", "checkpoint": "a.ckpt", "weight": 1.0},
                                     {"model": "b/config.json", "checkpoint": "b.ckpt", "weight": 2.0}]
    (td2 / "config.yaml").write_text(yaml.safe_dump(config))
    model, _ = load_model(td2 / "student_best.ckpt")
    card = model_card(td2 / "student_best.ckpt", "BertForSequenceClassification", ["0", "1"], model.bert.config)
    assert ("- Teachers (an ensemble, weighted mean of their logits): `a/config.json` (checkpoint `a.ckpt`, "
            "weight 1); `b/config.json` (checkpoint `b.ckpt`, weight 2).") in card
    assert f"`{config['teacher']['model']}`" not in card


def test_a_phase_run_again_keeps_only_its_last_run(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = [{"phase": "td2", "step": s, "loss": 1.0} for s in (1, 2, 3)] + \
        [{"phase": "td2", "step": 3, "eval": {"accuracy": 0.9}, "examples": 5}]
    again = [{"phase": "td2", "step": s, "loss": 0.5} for s in (1, 2)] + \
        [{"phase": "td2", "step": 2, "eval": {"accuracy": 0.6}, "examples": 5}]
    gd = [{"phase": "gd", "step": 1, "loss": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in first + gd + again))
    phases = read_metrics(path)
    assert list(phases) == ["gd", "td2"]  # the order a run goes through
    assert [r["loss"] for r in phases["td2"]["steps"]] == [0.5, 0.5]
    assert [r["eval"]["accuracy"] for r in phases["td2"]["evals"]] == [0.6]


def test_timing_takes_turns_and_summarises():
    calls = []
    times = time_in_turns({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and [len(v) for v in times.values()] == [3, 3]
    stats = latency_stats([0.010, 0.020, 0.030, 0.040], batch_size=32)
    assert stats["median_ms"] == 25.0 and stats["p95_ms"] == pytest.approx(np.percentile([10, 20, 30, 40], 95))
    assert stats["throughput_per_s"] == pytest.approx(32 / 0.025, abs=0.1)


def test_timing_in_bursts_leaves_out_each_turns_first_call():
    calls = []

    def runner(name):
        def run():
            if calls and calls[-1] != name:  # the first call of a turn: an engine waking up
                time.sleep(0.05)
            calls.append(name)
        return run
    times = time_in_turns({"a": runner("a"), "b": runner("b")}, repeats=4, warmup=1, burst=3)
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert [len(v) for v in times.values()] == [4, 4]
    assert max(max(v) for v in times.values()) < 0.04  # the woken calls are not among the timed ones


def test_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no metrics.jsonl and no checkpoints: give a run's OUTPUT_DIR"):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="run folder .* does not exist"):
        main([str(tmp_path / "missing")])
