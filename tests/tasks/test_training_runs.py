"""Training runs that fail, resume, or meet a checkpoint that does not fit, as a user meets them."""
import json
import re

import numpy as np
import pytest

from src.checkpoint import (load_checkpoint, load_model, model_metadata, named_parameters, save_checkpoint,
                            split_metadata)
from src.records_writer import RecordsWriter
from src.tinybert_model import BertConfig, BertForSequenceClassification
from tests.tasks.test_pipeline import SEQ, STUDENT, TEACHER, _rows, common, run, work  # noqa: F401


def _task_teacher(work, shape="teacher"):
    """A random classifier of the TEACHER (or the 2-layer STUDENT) shape, standing in for a fine-tuned one."""
    path = work / f"task_{shape}_runs.ckpt"
    if not path.exists():
        config = BertConfig(**(TEACHER if shape == "teacher" else STUDENT))
        save_checkpoint(path, named_parameters(BertForSequenceClassification(config, 2)))
    return path


def _error_line(result):
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def test_diverging_run_stops_and_saves_no_best_model(work):
    result = run(["run_task_distill.py", *common(work, out="diverge"), "--phase=teacher",
                  f"--teacher.checkpoint={work / 'teacher.ckpt'}", f"--data.train_path={work / 'train.mindrecord'}",
                  f"--data.eval_path={work / 'dev.mindrecord'}", "--teacher_finetune.learning_rate=5.0e+30",
                  "--teacher_finetune.warmup_ratio=0.0", "--teacher_finetune.max_steps=5",
                  "--teacher_finetune.batch_size=16"], work, expect_ok=False)
    assert "diverged" in _error_line(result)
    assert not list((work / "diverge/teacher").glob("teacher_*.ckpt"))


def test_labels_outside_the_task_are_an_error_in_training_and_evaluation(work):
    rows = _rows(np.random.default_rng(9), 32, labels=True)
    rows["label_ids"][30] = 2  # in the last batch: found before the first step all the same
    with RecordsWriter(work / "bad_labels.mindrecord", "mindrecord", SEQ, label_dtype=np.int32) as writer:
        writer.write(rows)
    base = [*common(work, out="labels"), f"--teacher.checkpoint={work / 'teacher.ckpt'}", "--task.num_labels=2"]
    good = run(["run_task_distill.py", *base, "--phase=teacher", f"--data.train_path={work / 'train.mindrecord'}",
                f"--data.eval_path={work / 'dev.mindrecord'}", "--teacher_finetune.max_steps=1"], work)
    assert re.search(r"training teacher: 1 steps \(max_steps; \d+ epochs? of \d+ steps would be \d+\)",
                     good.stdout)
    written = (work / "labels/teacher/config.yaml").read_text()
    result = run(["run_task_distill.py", *base, "--phase=teacher", f"--data.train_path={work / 'bad_labels.mindrecord'}",
                  f"--data.eval_path={work / 'dev.mindrecord'}", "--teacher_finetune.batch_size=16"], work,
                 expect_ok=False)
    assert "the training records hold label 2 but the task has 2 labels" in _error_line(result)
    assert (work / "labels/teacher/config.yaml").read_text() == written  # nothing of the failed run written
    result = run(["run_task_distill.py", *base, "--phase=eval", f"--teacher.checkpoint={work / 'teacher.ckpt'}",
                  f"--student.model={work / 'teacher.json'}",
                  f"--student.checkpoint={work / 'labels/teacher/teacher_final.ckpt'}",
                  f"--data.eval_path={work / 'bad_labels.mindrecord'}"], work, expect_ok=False)
    assert "the dev records hold label 2" in _error_line(result)


def test_eval_takes_the_model_and_label_order_from_the_checkpoint(work):
    model = BertForSequenceClassification(BertConfig(**TEACHER), 2)
    for name, labels in (("in_order", ["0", "1"]), ("swapped", ["1", "0"])):
        save_checkpoint(work / f"eval_{name}.ckpt", named_parameters(model), model_metadata(model, 2, labels))
    base = ["run_task_distill.py", "--phase=eval", f"--seq_length={SEQ}", "--task.num_labels=2",
            f"--data.eval_path={work / 'dev.mindrecord'}", f"--output_dir={work / 'eval_only'}"]
    # no --student.model: the default preset differs from the checkpoint's model, which it records
    result = run([*base, f"--student.checkpoint={work / 'eval_in_order.ckpt'}"], work)
    assert re.search(r"eval: acc = [0-9.]+", result.stdout)
    result = run([*base, f"--student.checkpoint={work / 'eval_swapped.ckpt'}"], work, expect_ok=False)
    assert "orders its labels ['1', '0'] but the task's order is ['0', '1']" in _error_line(result)


def test_resume_skips_partial_and_unreadable_checkpoints(work):
    """A resume passes over damaged checkpoints; then a run that fails leaves the earlier config alone."""
    args = [*common(work, out="resume_fallback", teacher="teacher_nodrop.json", student="student_nodrop.json"),
            f"--data.train_path={work / 'gd.mindrecord'}", f"--teacher.checkpoint={work / 'teacher.ckpt'}",
            "--gd.batch_size=16", "--gd.epochs=2", "--gd.learning_rate=1e-3", "--checkpoint.save_steps=4",
            "--checkpoint.max_num=5"]
    run(["run_general_distill.py", *args], work)
    phase_dir = work / "resume_fallback/gd"
    whole, metadata = split_metadata(load_checkpoint(phase_dir / "student_final.ckpt"))
    for stale in ["student_step_12.ckpt", "student_final.ckpt"]:
        (phase_dir / stale).unlink()
    newest = phase_dir / "student_step_8.ckpt"
    newest.write_bytes(newest.read_bytes()[:5000])  # cut off, as a crash during a copy leaves it
    (phase_dir / "student_step_17.tmp.ckpt").write_text("an older version's temporary name")
    (phase_dir / ".student_step_16.partial.ckpt").write_text("a save killed half-way")
    result = run(["run_general_distill.py", *args, "--checkpoint.resume=true"], work)
    assert "student_step_8.ckpt is unreadable" in result.stdout
    assert "at step 4" in result.stdout and "epoch: 1, step: 5," in result.stdout
    assert not (phase_dir / ".student_step_16.partial.ckpt").exists()
    resumed, _ = split_metadata(load_checkpoint(phase_dir / "student_final.ckpt"))
    for name, value in whole.items():
        np.testing.assert_allclose(resumed[name].asnumpy(), value.asnumpy(), atol=1e-6, err_msg=name)
    model, stored = load_model(phase_dir / "student_final.ckpt")  # the checkpoint knows its model
    assert json.loads(stored["model_config"])["hidden_size"] == 32 and stored["seq_length"] == SEQ
    records = [json.loads(line) for line in (work / "resume_fallback/metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records if r["phase"] == "gd"} >= set(range(1, 9))
    assert all(r["match_0"] >= 0 and r["loss"] == pytest.approx(sum(r[f"match_{i}"] for i in range(5)), rel=1e-4)
               for r in records if "loss" in r)
    # A run that fails on its input leaves the earlier run's config alone.
    written = (phase_dir / "config.yaml").read_text()
    result = run(["run_general_distill.py", *args, "--seed=8", "--data.train_path=/nonexistent"], work, expect_ok=False)
    assert "/nonexistent" in _error_line(result)
    assert (phase_dir / "config.yaml").read_text() == written


def test_a_teacher_with_another_label_order_is_refused(work):
    swapped = work / "swapped_teacher.ckpt"
    save_checkpoint(swapped, named_parameters(BertForSequenceClassification(BertConfig(**TEACHER), 2)),
                    {"label_names": json.dumps(["1", "0"])})
    result = run(["run_task_distill.py", *common(work, out="swapped"), "--task.name=sst2", "--phase=td2",
                  f"--teacher.checkpoint={swapped}", f"--data.train_path={work / 'train.mindrecord'}",
                  f"--data.eval_path={work / 'dev.mindrecord'}", "--student.init=random"], work, expect_ok=False)
    assert "orders its labels ['1', '0'] but the task's order is ['0', '1']" in _error_line(result)
