"""Multi-task distillation on 2 CPU workers (msrun) against one process with their two half batches
as one: the same tasks step by step, the same losses and the same weights."""
import json

import numpy as np
import pytest

from src.checkpoint import load_checkpoint, split_metadata
from tests.tasks.test_distributed import L1_LINE, STEP_LINE, environment, free_port, needs_msrun, run_script
from tests.tasks.test_multitask_run import records, tasks_option, write_tasks
from tests.tasks.test_pipeline import SEQ, run

pytestmark = pytest.mark.distributed


@needs_msrun
def test_multitask_on_two_workers_matches_one_process(tmp_path):
    write_tasks(tmp_path)
    for name in ("teacher", "student"):  # dropout masks depend on the rank: none here
        shape = json.loads((tmp_path / f"{name}.json").read_text())
        (tmp_path / f"{name}_nodrop.json").write_text(json.dumps(
            dict(shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)))
    # eps 1 and no clipping make Adam's step proportional to the gradient, so a gradient averaged
    # wrongly across the ranks shows in the weights (as tests/tasks/test_distributed.py does).
    args = [f"--teacher.model={tmp_path / 'teacher_nodrop.json'}", f"--student.model={tmp_path / 'student_nodrop.json'}",
            f"--seq_length={SEQ}", "--log_steps=1", "--phase=multitask", f"--multitask.tasks={tasks_option(tmp_path)}",
            "--student.init=random", "--multitask_train.epochs=1", "--data.shuffle=false", "--data.padding=max_length",
            "--multitask_train.learning_rate=1.0", "--multitask_train.eps=1.0", "--multitask_train.clip_norm=1.0e6"]
    single = run(["run_task_distill.py", *args, f"--output_dir={tmp_path / 'single'}", "--multitask_train.batch_size=16"], tmp_path)
    result = run_script("run_distributed_cpu.sh", [2, "td", *args, f"--output_dir={tmp_path / 'two'}",
                                                   "--multitask_train.batch_size=8"], tmp_path, FOREGROUND=1,
                        MASTER_PORT=free_port(), LOG_DIR=tmp_path / "LOG", LOG_FILE=tmp_path / "log.txt",
                        CLUSTER_TIME_OUT=60, JOB_TIMEOUT=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [(tmp_path / "LOG" / f"worker_{rank}.log").read_text() for rank in range(2)]
    reference, rank0, rank1 = ([(int(s), float(loss), lr) for s, loss, lr in STEP_LINE.findall(log)]
                               for log in (single.stdout, *ranks))
    assert len(reference) == len(rank0) == len(rank1) == 6
    for (step, loss, lr), (_, loss0, lr0), (_, loss1, lr1) in zip(reference, rank0, rank1):
        assert lr == lr0 == lr1 and abs(loss - (loss0 + loss1) / 2) < 2e-6, step
    assert [r["task"] for r in records(tmp_path / "two/metrics.jsonl") if "loss" in r] == \
        [r["task"] for r in records(tmp_path / "single/metrics.jsonl") if "loss" in r]
    norms = [L1_LINE.findall(log)[0][1] for log in ranks]
    assert norms[0] == norms[1]  # the ranks hold the same weights
    expected, _ = split_metadata(load_checkpoint(tmp_path / "single/multitask/student_final.ckpt"))
    actual, _ = split_metadata(load_checkpoint(tmp_path / "two/multitask/student_final.ckpt"))
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name].asnumpy(), value.asnumpy(), atol=1e-5, err_msg=name)
