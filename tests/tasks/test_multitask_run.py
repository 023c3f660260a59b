"""Multi-task distillation as a user runs it: two tasks with their own teachers, records and metrics,
one student; evaluation of both, the best checkpoint by their mean, and eval of it; the run resumed
from a step checkpoint with its teachers' logits from the cache."""
import json
import shutil

import numpy as np
import pytest

from src.assessment_method import compute_metric
from src.checkpoint import load_checkpoint, load_model, named_parameters, save_checkpoint, split_metadata
from src.records_writer import RecordsWriter
from src.tinybert_model import BertConfig, BertForSequenceClassification
from tests.tasks.test_pipeline import SEQ, TEACHER, _rows, common, run

# Task "sst2": 2 labels, 64 training rows (4 batches of 16); task "topic": 3 labels, 32 rows (2 batches).
TASKS = {"sst2": (2, 64, 21), "topic": (3, 32, 19)}


def write_tasks(root):
    """Each task's train and dev records (with example ids) and a random teacher; model configs."""
    rng = np.random.default_rng(3)
    for name, (num_labels, train, dev) in TASKS.items():
        for split, count in (("train", train), ("dev", dev)):
            rows = _rows(rng, count, labels=True)
            rows["label_ids"] = (rows["input_ids"][:, 1] % num_labels).astype(np.int32)
            rows["example_id"] = np.arange(count, dtype=np.int64)
            with RecordsWriter(root / f"{name}_{split}.mindrecord", "mindrecord", SEQ, label_dtype=np.int32,
                               with_example_ids=True) as writer:
                writer.write(rows)
        save_checkpoint(root / f"{name}_teacher.ckpt",
                        named_parameters(BertForSequenceClassification(BertConfig(**TEACHER), num_labels)))
    for name, shape in (("teacher", TEACHER), ("student", dict(TEACHER, hidden_size=32, num_hidden_layers=2,
                                                                intermediate_size=48))):
        (root / f"{name}.json").write_text(json.dumps(shape))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask")
    write_tasks(root)
    return root


def tasks_option(work):
    return "[" + ", ".join(
        f"{{name: {name}, train_path: {work / f'{name}_train.mindrecord'}, eval_path: {work / f'{name}_dev.mindrecord'}, "
        f"teacher_checkpoint: {work / f'{name}_teacher.ckpt'}" + ("" if name == "sst2" else ", num_labels: 3") + "}"
        for name in TASKS) + "]"


def multitask_args(work, out):
    return ["run_task_distill.py", *common(work, out=out), "--phase=multitask", f"--multitask.tasks={tasks_option(work)}",
            "--student.init=random", "--multitask_train.batch_size=16", "--multitask_train.learning_rate=1e-3",
            "--distill.hard_label_weight=0.5", "--eval.batch_size=8", "--data.padding=max_length"]


@pytest.fixture(scope="module")
def trained(work):
    return run([*multitask_args(work, "mt"), "--multitask_train.epochs=2", "--checkpoint.save_steps=3",
                "--checkpoint.max_num=4"], work)


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_tasks_interleave_evaluate_both_and_keep_the_best_mean(trained, work):
    entries = records(work / "mt/metrics.jsonl")
    steps = [r for r in entries if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))  # 2 epochs of 4 + 2 batches
    for epoch in (steps[:6], steps[6:]):  # each epoch: every batch of every task once
        assert sorted(r["task"] for r in epoch) == ["sst2"] * 4 + ["topic"] * 2
    evals = [r for r in entries if "eval" in r]
    assert [r["step"] for r in evals] == [6, 12]
    for r in evals:
        assert list(r["eval"])[0] == "mean" and r["examples"] == {"sst2": 21, "topic": 19}
        assert r["eval"]["mean"] == pytest.approx((r["eval"]["sst2/accuracy"] + r["eval"]["topic/accuracy"]) / 2)
        assert "topic/macro_f1" in r["eval"] and "sst2/mcc" in r["eval"]
    best = max(evals, key=lambda r: r["eval"]["mean"])
    lines = [line for line in trained.stdout.splitlines() if "The best mean is" in line]
    assert lines and f"(step {best['step']})" in lines[-1] and f"{best['eval']['mean']:.6f}" in lines[-1]
    assert "eval: step 6, mean = " in trained.stdout and "topic: acc = " in trained.stdout
    _, metadata = split_metadata(load_checkpoint(work / "mt/multitask/student_best.ckpt"))
    assert metadata["step"] == best["step"] and metadata["mean"] == pytest.approx(best["eval"]["mean"])
    assert [(t["name"], t["num_labels"], t["label_names"], t["metric"]) for t in json.loads(metadata["tasks"])] == [
        ("sst2", 2, ["0", "1"], "accuracy"), ("topic", 3, ["0", "1", "2"], "accuracy")]


def test_the_best_checkpoint_loads_and_scores_what_the_log_says(trained, work):
    """load_model rebuilds the two-head student; its heads score the dev records as the run logged."""
    best = max((r for r in records(work / "mt/metrics.jsonl") if "eval" in r), key=lambda r: r["eval"]["mean"])
    model, _ = load_model(work / "mt/multitask/student_best.ckpt")
    import mindspore as ms  # noqa: PLC0415
    import mindspore.dataset as ds  # noqa: PLC0415
    for index, name in enumerate(TASKS):
        data = ds.MindDataset(str(work / f"{name}_dev.mindrecord"), shuffle=False)
        rows = list(data.create_dict_iterator(num_epochs=1, output_numpy=True))
        columns = [np.stack([r[c] for r in rows]).astype(np.int32) for c in ("input_ids", "input_mask", "segment_ids")]
        logits = model(*[ms.Tensor(c) for c in columns])[index].asnumpy()
        labels = np.array([r["label_ids"] for r in rows]).reshape(-1)
        assert compute_metric("accuracy", logits, labels) == pytest.approx(best["eval"][f"{name}/accuracy"], abs=1e-6)
    result = run(["run_task_distill.py", *common(work, out="mt_eval"), "--phase=eval", f"--multitask.tasks={tasks_option(work)}",
                  f"--student.checkpoint={work / 'mt/multitask/student_best.ckpt'}"], work)
    assert f"mean = {best['eval']['mean']:.6f}" in result.stdout


@pytest.mark.slow  # 70-100 s on 2 cores: out of CI's 20 minutes
def test_resume_from_cached_teachers_continues_with_the_same_tasks_and_weights(trained, work):
    """Resumed at step 3 with the teachers' logits from the cache: the same tasks, losses and weights
    as the uninterrupted run with live teachers."""
    shutil.copytree(work / "mt/multitask", work / "resumed/multitask")
    for name in ("student_step_6.ckpt", "student_step_9.ckpt", "student_step_12.ckpt", "student_final.ckpt",
                 "student_best.ckpt"):
        (work / "resumed/multitask" / name).unlink()
    result = run([*multitask_args(work, "resumed"), "--multitask_train.epochs=2", "--checkpoint.save_steps=3",
                  "--checkpoint.resume=true", "--distill.teacher_cache=true"], work)
    assert "at step 3" in result.stdout
    assert result.stdout.count("teacher logits of") == 2  # one cache per task: 64 and 32 examples
    assert "teacher logits of 64 examples cached" in result.stdout and "of 32 examples cached" in result.stdout
    whole = [r for r in records(work / "mt/metrics.jsonl") if "loss" in r]
    resumed = [r for r in records(work / "resumed/metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in resumed] == list(range(4, 13))
    assert [r["task"] for r in resumed] == [r["task"] for r in whole[3:]]
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in whole[3:]], rtol=1e-5)
    expected, _ = split_metadata(load_checkpoint(work / "mt/multitask/student_final.ckpt"))
    actual, _ = split_metadata(load_checkpoint(work / "resumed/multitask/student_final.ckpt"))
    assert sorted(actual) == sorted(expected) and any(name.startswith("heads.1.") for name in actual)
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name].asnumpy(), value.asnumpy(), atol=1e-6, err_msg=name)
