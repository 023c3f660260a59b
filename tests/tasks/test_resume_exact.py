"""Exact runs with dropout: general distillation with the default dropout (0.1), killed with SIGKILL
after a step checkpoint and resumed, logs the losses of an uninterrupted run with the same command
at every step and ends with bit-identical weights; the killed run, the same command started again,
logged the same losses too (past step 7, where runs with MindSpore's own dropout kernel parted)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import load_checkpoint, named_parameters, save_checkpoint, split_metadata
from src.records_writer import RecordsWriter
from src.tinybert_model import BertConfig, BertModel
from tests.tasks.test_pipeline import ROOT, SEQ, STUDENT, TEACHER, _rows, common, run

STEPS = 24  # 2 epochs of 96 rows at batch 8
KILL_AFTER = 8


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_exact")
    with RecordsWriter(root / "gd.mindrecord", "mindrecord", SEQ) as writer:
        writer.write(_rows(np.random.default_rng(0), 96, labels=False))
    for name, shape in [("teacher", TEACHER), ("student", STUDENT)]:
        (root / f"{name}.json").write_text(json.dumps(shape))  # default dropout: 0.1
    ms.set_seed(0)
    save_checkpoint(root / "teacher.ckpt", named_parameters(BertModel(BertConfig(**TEACHER)), "bert."))
    return root


def _args(work, out):
    return ["run_general_distill.py", *common(work, out=out), f"--data.train_path={work / 'gd.mindrecord'}",
            f"--teacher.checkpoint={work / 'teacher.ckpt'}", "--gd.batch_size=8", "--gd.epochs=2",
            "--gd.learning_rate=1e-3", "--checkpoint.save_steps=4", "--checkpoint.max_num=10"]


def _losses(work, out):
    """(step, loss) of every metrics.jsonl record, in the order written (a resumed run appends)."""
    lines = (work / out / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


def _kill_after_checkpoint(work, out):
    """Start the run and SIGKILL it as soon as its step-KILL_AFTER checkpoint exists."""
    env = dict(os.environ, GLOG_v="3")
    process = subprocess.Popen([sys.executable, *_args(work, out)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = work / out / "gd" / f"student_step_{KILL_AFTER}.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run ended or stalled before its step checkpoint"
    assert not (work / out / "gd" / "student_final.ckpt").exists(), "the run finished before it was killed"


def test_killed_and_resumed_run_equals_the_uninterrupted_one(work):
    run(_args(work, "whole"), work)
    whole_losses = dict(_losses(work, "whole"))
    assert sorted(whole_losses) == list(range(1, STEPS + 1))

    _kill_after_checkpoint(work, "killed")
    killed_steps = [step for step, _ in _losses(work, "killed")]
    assert killed_steps == list(range(1, len(killed_steps) + 1)) and len(killed_steps) >= KILL_AFTER
    result = run([*_args(work, "killed"), "--checkpoint.resume=true"], work)
    resumed_at = int(re.search(r"resumed from \S+ at step (\d+)", result.stdout).group(1))
    assert KILL_AFTER <= resumed_at < STEPS

    records = _losses(work, "killed")
    assert [step for step, _ in records] == killed_steps + list(range(resumed_at + 1, STEPS + 1))
    for step, loss in records:  # the killed run, then the resumed one: every loss as the whole run's
        assert loss == whole_losses[step], f"step {step}: {loss} != {whole_losses[step]}"
    whole, _ = split_metadata(load_checkpoint(work / "whole/gd/student_final.ckpt"))
    resumed, _ = split_metadata(load_checkpoint(work / "killed/gd/student_final.ckpt"))
    assert sorted(resumed) == sorted(whole)
    for name, value in whole.items():
        np.testing.assert_array_equal(resumed[name].asnumpy(), value.asnumpy(), err_msg=name)
