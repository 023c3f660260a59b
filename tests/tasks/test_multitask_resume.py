"""A multi-task run resumed from a step checkpoint, its teachers' logits from the cache: the same tasks,
losses and weights as the uninterrupted run with live teachers."""
import shutil

import numpy as np

from src.checkpoint import load_checkpoint, split_metadata
from tests.tasks.test_multitask_run import multitask_args, records, write_tasks
from tests.tasks.test_pipeline import run


def test_resume_from_cached_teachers_continues_with_the_same_tasks_and_weights(tmp_path):
    write_tasks(tmp_path)
    settings = ["--multitask_train.epochs=1", "--checkpoint.save_steps=3"]
    run([*multitask_args(tmp_path, "whole"), *settings], tmp_path)
    shutil.copytree(tmp_path / "whole/multitask", tmp_path / "resumed/multitask")
    for name in ("student_step_6.ckpt", "student_final.ckpt", "student_best.ckpt"):
        (tmp_path / "resumed/multitask" / name).unlink()
    result = run([*multitask_args(tmp_path, "resumed"), *settings, "--checkpoint.resume=true",
                  "--distill.teacher_cache=true"], tmp_path)
    assert "at step 3" in result.stdout
    assert result.stdout.count("teacher logits of") == 2  # one cache per task: 64 and 32 examples
    assert "teacher logits of 64 examples cached" in result.stdout and "of 32 examples cached" in result.stdout
    whole = [r for r in records(tmp_path / "whole/metrics.jsonl") if "loss" in r]
    resumed = [r for r in records(tmp_path / "resumed/metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in resumed] == [4, 5, 6]
    assert [r["task"] for r in resumed] == [r["task"] for r in whole[3:]]
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in whole[3:]], rtol=1e-5)
    expected, _ = split_metadata(load_checkpoint(tmp_path / "whole/multitask/student_final.ckpt"))
    actual, _ = split_metadata(load_checkpoint(tmp_path / "resumed/multitask/student_final.ckpt"))
    assert sorted(actual) == sorted(expected) and any(name.startswith("heads.1.") for name in actual)
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name].asnumpy(), value.asnumpy(), atol=1e-6, err_msg=name)
