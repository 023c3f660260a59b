"""The whole pipeline as a user runs it: launch scripts and entry points in subprocesses, on tiny data.

GD -> td (td1 then td2 with evaluation) -> eval -> export, then bad inputs (resuming: test_resume_exact.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import load_checkpoint, named_parameters, save_checkpoint, split_metadata
from src.records_writer import RecordsWriter
from src.tinybert_model import BertConfig, BertForSequenceClassification, BertModel, LogitsOnly

ROOT = Path(__file__).resolve().parents[2]
SEQ = 24
TEACHER = dict(vocab_size=99, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=64)
STUDENT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=64)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _rows(rng, count, labels):
    ids = rng.integers(5, 99, (count, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    for row, length in enumerate(rng.integers(6, SEQ + 1, count)):
        mask[row, length:] = 0
        ids[row, length:] = 0
    columns = {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)}
    if labels:
        columns["label_ids"] = (ids[:, 1] > 50).astype(np.int32)  # learnable from one token
    return columns


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Records, model configs and a random teacher checkpoint in a temporary folder."""
    root = tmp_path_factory.mktemp("pipeline")
    rng = np.random.default_rng(0)
    for name, count, labels in [("gd", 96, False), ("train", 96, True), ("dev", 37, True)]:
        with RecordsWriter(root / f"{name}.mindrecord", "mindrecord", SEQ,
                           label_dtype=np.int32 if labels else None) as writer:
            writer.write(_rows(rng, count, labels))
    for name, shape in [("teacher", TEACHER), ("student", STUDENT)]:
        (root / f"{name}.json").write_text(json.dumps(shape))
        (root / f"{name}_nodrop.json").write_text(json.dumps({**shape, **NO_DROPOUT}))
    ms.set_seed(0)
    save_checkpoint(root / "teacher.ckpt", named_parameters(BertModel(BertConfig(**TEACHER)), "bert."))
    return root


def common(work, out="out", teacher="teacher.json", student="student.json"):
    return [f"--teacher.model={work / teacher}", f"--student.model={work / student}", f"--seq_length={SEQ}",
            f"--output_dir={work / out}", "--log_steps=1"]


def run(args, work, script=None, expect_ok=True):
    """An entry point (or a launch script in the foreground) as a user runs it."""
    env = dict(os.environ, GLOG_v="3", FOREGROUND="1", LOG_FILE=str(work / "log.txt"))
    command = ["bash", str(ROOT / script)] if script else [sys.executable]
    result = subprocess.run(command + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _losses(log):
    return [float(line.split("outputs are (")[1].split(",")[0]) for line in log.splitlines() if "outputs are (" in line]


@pytest.fixture(scope="module")
def pipeline(work):
    """GD through the standalone script, then td (td1 + td2, td1 in micro-batches) through its script;
    their logs."""
    run([*common(work), f"--data.train_path={work / 'gd.mindrecord'}", f"--teacher.checkpoint={work / 'teacher.ckpt'}",
              "--gd.batch_size=8", "--gd.epochs=3", "--gd.learning_rate=1e-3", "--checkpoint.save_steps=5",
              "--checkpoint.max_num=2"], work, "scripts/run_standalone_gd.sh")
    gd_log = (work / "log.txt").read_text()
    # The task teacher: the same random encoder with a classifier (a fine-tuned one is not needed here).
    teacher = BertForSequenceClassification(BertConfig(**TEACHER), 2)
    save_checkpoint(work / "task_teacher.ckpt", named_parameters(teacher))
    run([str(ROOT / "src/task_configs/sst2.yaml"), *common(work), f"--data.train_path={work / 'train.mindrecord'}",
         f"--data.eval_path={work / 'dev.mindrecord'}", f"--teacher.checkpoint={work / 'task_teacher.ckpt'}",
         f"--student.checkpoint={work / 'out/gd/student_final.ckpt'}", "--td1.epochs=1", "--td2.epochs=2",
         "--td1.batch_size=16", "--td1.micro_batches=2", "--td2.batch_size=16", "--td2.learning_rate=1e-3"], work,
        "scripts/run_standalone_td.sh")
    return {"gd": gd_log, "td": (work / "log.txt").read_text()}


def test_gd_logs_falling_loss_and_rotates_checkpoints(pipeline, work):
    losses = _losses(pipeline["gd"])
    assert len(losses) == 36  # 3 epochs of 96 / 8 rows
    assert "epoch: 1, step: 1, outputs are (" in pipeline["gd"]
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    steps = sorted(p.name for p in (work / "out/gd").glob("student_step_*.ckpt"))
    assert steps == ["student_step_30.ckpt", "student_step_35.ckpt"]
    tensors, metadata = split_metadata(load_checkpoint(work / "out/gd/student_final.ckpt"))
    assert "fit_dense.weight" in tensors and metadata["step"] == 36


def test_td_runs_both_phases_and_keeps_the_best(pipeline, work):
    log = pipeline["td"]
    assert f"student initialised from {work / 'out/gd/student_final.ckpt'}" in log
    assert f"student initialised from {work / 'out/td1/student_final.ckpt'}" in log  # phase 2 from phase 1
    assert "training td1: 6 steps (1 epoch of 6 steps), batch 16 per device in 2 micro-batches" in log
    assert "training td2: 12 steps (2 epochs of 6 steps), batch 16 per device, " in log
    evals = [float(line.split("acc = ")[1].split(",")[0]) for line in log.splitlines() if "eval: step" in line]
    assert len(evals) == 2 and "on 37 examples" in log  # every dev example, batch 32 leaves 5
    bests = [float(line.split("The best acc is ")[1].split()[0]) for line in log.splitlines() if "The best acc is" in line]
    assert bests and bests[-1] == max(evals)
    # The kept checkpoint scores what the log says.
    result = run(["run_task_distill.py", "--config_path=src/task_configs/sst2.yaml", *common(work, out="eval_out"),
                  "--phase=eval", f"--data.eval_path={work / 'dev.mindrecord'}",
                  f"--student.checkpoint={work / 'out/td2/student_best.ckpt'}"], work)
    assert f"acc = {bests[-1]:.6f}" in result.stdout
    record = json.loads((work / "eval_out/metrics.jsonl").read_text().splitlines()[-1])  # also for scripts
    assert record["phase"] == "eval" and record["checkpoint"] == str(work / "out/td2/student_best.ckpt")
    assert record["eval"]["accuracy"] == pytest.approx(bests[-1], abs=1e-6) and record["examples"] == 37


@pytest.mark.parametrize("file_format", ["MINDIR", "ONNX"])
def test_export_reloads_with_the_cells_outputs(pipeline, work, file_format):
    checkpoint = work / "out/td2/student_best.ckpt"
    result = run(["export.py", *common(work), f"--export.checkpoint={checkpoint}", f"--export.file_format={file_format}",
                  f"--export.file_name={work / 'student'}"], work)
    assert "max abs difference to the trained Cell" in result.stdout
    # Independently of export.py: our Cell from the checkpoint against the file, on real records.
    model = BertForSequenceClassification(BertConfig(**STUDENT).for_inference(), 2)
    tensors, _ = split_metadata(load_checkpoint(checkpoint))
    for name, param in named_parameters(model).items():
        param.set_data(tensors[name])
    network = LogitsOnly(model)
    network.set_train(False)
    rows = _rows(np.random.default_rng(5), 1, labels=False)
    inputs = [rows["input_ids"], rows["input_mask"], rows["segment_ids"]]
    expected = network(*[ms.Tensor(x) for x in inputs]).asnumpy()
    if file_format == "MINDIR":
        got = ms.nn.GraphCell(ms.load(str(work / "student.mindir")))(*[ms.Tensor(x) for x in inputs]).asnumpy()
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(work / "student.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, dict(zip([i.name for i in session.get_inputs()], inputs)))[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_air_export_off_ascend_says_so(pipeline, work):
    result = run(["export.py", *common(work), f"--export.checkpoint={work / 'out/td2/student_best.ckpt'}",
                  "--export.file_format=AIR"], work, expect_ok=False)
    assert result.returncode == 2
    assert "AIR export needs an Ascend device" in result.stderr


def _bad_teacher(work):
    weights = named_parameters(BertModel(BertConfig(**TEACHER)), "bert.")
    del weights["bert.bert_encoder.layers.2.attention.output.dense.weight"]
    save_checkpoint(work / "bad_teacher.ckpt", weights)
    return work / "bad_teacher.ckpt"


@pytest.mark.parametrize("change, message", [
    (["--data.train_path=/nonexistent/records"], "/nonexistent/records"),
    (["--teacher.checkpoint=BAD"], "lacks parameters the model needs: bert.bert_encoder.layers.2.attention.output.dense.weight"),
    (["--seq_length=16"], "stores sequences of length 24 but seq_length is 16"),
    (["--student.model=SMALL_VOCAB"], "token id"),
    (["--gd.batch_size=zero"], "gd.batch_size: expected int"),
])
def test_bad_input_is_one_clear_line(work, change, message):
    args = [*common(work, out="bad"), f"--data.train_path={work / 'gd.mindrecord'}",
            f"--teacher.checkpoint={work / 'teacher.ckpt'}", "--gd.max_steps=2"]
    change = [c.replace("BAD", str(_bad_teacher(work))) for c in change]
    if change[0].endswith("SMALL_VOCAB"):
        (work / "small_vocab.json").write_text(json.dumps({**STUDENT, "vocab_size": 50}))
        change = [f"--student.model={work / 'small_vocab.json'}"]
    result = run(["run_general_distill.py", *args, *change], work, expect_ok=False)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (work / "bad/gd").exists()  # every input, token ids included, is checked before anything is written


def test_gd_reads_tfrecord_with_schema(work):
    with RecordsWriter(work / "tf" / "gd.tfrecord", "tfrecord", SEQ, num_shards=2) as writer:
        writer.write(_rows(np.random.default_rng(3), 40, labels=False))
    result = run(["run_general_distill.py", *common(work, out="tf_out"), "--data.format=tfrecord",
                  f"--data.train_path={work / 'tf'}", f"--data.schema_file={work / 'tf' / 'gd.schema.json'}",
                  f"--teacher.checkpoint={work / 'teacher.ckpt'}", "--gd.batch_size=8", "--gd.epochs=1"], work)
    assert "training gd: 5 steps (1 epoch of 5 steps)" in result.stdout
    assert (work / "tf_out/gd/student_final.ckpt").is_file()


def test_teacher_fine_tuning_feeds_task_distillation(pipeline, work):
    """--phase=teacher from a pretrained encoder, then its best checkpoint is the teacher of a td1 that
    starts from GD's student and its projection (fit_dense, unchanged by a learning rate of 1e-12)."""
    result = run(["run_task_distill.py", *common(work, out="ft"), "--phase=teacher",
                  f"--teacher.checkpoint={work / 'teacher.ckpt'}", f"--data.train_path={work / 'train.mindrecord'}",
                  f"--data.eval_path={work / 'dev.mindrecord'}", "--teacher_finetune.batch_size=16",
                  "--teacher_finetune.learning_rate=1e-3", "--teacher_finetune.epochs=2"], work)
    assert "The best acc is" in result.stdout and "teacher_best.ckpt" in result.stdout
    tensors, _ = split_metadata(load_checkpoint(work / "ft/teacher/teacher_best.ckpt"))
    assert tensors["dense_1.weight"].shape == (2, TEACHER["hidden_size"])
    run(["run_task_distill.py", *common(work, out="ft"), "--phase=td1", "--td1.max_steps=1", "--td1.learning_rate=1e-12",
         f"--teacher.checkpoint={work / 'ft/teacher/teacher_best.ckpt'}", f"--data.train_path={work / 'train.mindrecord'}",
         f"--student.checkpoint={work / 'out/gd/student_final.ckpt'}"], work)
    gd, _ = split_metadata(load_checkpoint(work / "out/gd/student_final.ckpt"))
    td1, _ = split_metadata(load_checkpoint(work / "ft/td1/student_final.ckpt"))
    np.testing.assert_allclose(td1["fit_dense.weight"].asnumpy(), gd["fit_dense.weight"].asnumpy(), atol=1e-8)
