"""The prune phase as a user runs it: masks on a schedule, distillation, evaluation, count and bake."""
import json
import re
import shutil

import numpy as np
import pytest

from src.checkpoint import load_checkpoint, load_model, split_metadata
from tests.tasks.test_pipeline import common, run, work  # noqa: F401
from tests.tasks.test_training_runs import _task_teacher


@pytest.mark.parametrize("method, extra", [
    ("topK", []),
    ("sigmoied_threshold", ["--pruning.initial_threshold=0.0", "--pruning.final_threshold=0.1",
                            "--pruning.regularization=l1", "--pruning.final_lambda=10.0"]),
])
def test_prune_phase_masks_distils_and_bakes(work, method, extra):
    """A 2-layer fine-tuned model pruned with itself as the teacher (compiling 4 layers would double the time)."""
    out = work / f"prune_{method}"
    small = _task_teacher(work, "student")
    models = common(work, out=out.name, teacher="student_nodrop.json", student="student_nodrop.json")
    result = run(["run_task_distill.py", *models, "--task.name=sst2", "--phase=prune", f"--teacher.checkpoint={small}",
                  f"--student.checkpoint={small}", f"--data.train_path={work / 'train.mindrecord'}",
                  f"--data.eval_path={work / 'dev.mindrecord'}", "--prune.batch_size=16", "--prune.epochs=2",
                  "--prune.warmup_ratio=0.1", "--eval.every_steps=5", f"--pruning.pruning_method={method}", *extra],
                 work)
    evals = [line for line in result.stdout.splitlines() if "eval: step" in line]
    best = [line for line in result.stdout.splitlines() if "The best acc is" in line]
    # Steps 5 and 10, and the final step 12 after the last multiple. The best is kept only at the
    # final threshold, reached by step 10 (the cubic schedule's cool-down), never at step 5.
    assert [line.split("eval: step ")[1].split(",")[0] for line in evals] == ["5", "10", "12"], result.stdout
    assert len(best) == 1 and re.search(r"\(step 1[02]\)", best[0]), result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"threshold"' in line]
    assert records[0]["threshold"] == (1.0 if method == "topK" else 0.0)
    assert records[-1]["threshold"] == pytest.approx(0.1)
    if method == "sigmoied_threshold":
        assert records[-1]["regularization"] > 0 and records[-1]["regu_lambda"] == pytest.approx(10.0)
    counted = run(["-m", "src.prune.count", "--checkpoint", str(out / "prune/student_final.ckpt")], work)
    assert "encoder" in counted.stdout
    baked, metadata = load_model(out / "prune/student_final_baked.ckpt")
    weights = baked.bert.bert_encoder.layers[0].attention.attention.query_layer.weight.asnumpy()
    if method == "topK":
        assert (weights != 0).mean() == pytest.approx(0.1, abs=0.01)  # 10% kept at the final threshold
        # distilled on with the masks fixed: the pruned checkpoint's scores restored, frozen, at its threshold
        fixed = run(["run_task_distill.py", *common(work, out="prune_fixed", teacher="student_nodrop.json",
                                                     student="student_nodrop.json"),
                     "--task.name=sst2", "--phase=prune", f"--teacher.checkpoint={small}",
                     f"--student.checkpoint={out / 'prune/student_final.ckpt'}",
                     f"--data.train_path={work / 'train.mindrecord'}", f"--data.eval_path={work / 'dev.mindrecord'}",
                     "--prune.batch_size=16", "--prune.max_steps=2", "--pruning.pruning_method=topK",
                     "--pruning.initial_threshold=0.1", "--pruning.mask_scores_learning_rate=0"], work)
        assert "mask scores restored from" in fixed.stdout
        again, _ = load_model(work / "prune_fixed/prune/student_final_baked.ckpt")
        weights_again = again.bert.bert_encoder.layers[0].attention.attention.query_layer.weight.asnumpy()
        np.testing.assert_array_equal(weights_again != 0, weights != 0)
        assert not np.array_equal(weights_again, weights)  # the kept weights trained on
    else:  # 12 steps keep every sigmoid(score) above 0.1, but the L1 penalty has pushed the scores down
        tensors, _ = split_metadata(load_checkpoint(out / "prune/student_final.ckpt", keep_masks=True))
        scores = [t.asnumpy() for name, t in tensors.items() if name.endswith("mask_scores")]
        assert len(scores) == 6 * 2 and np.mean([s.mean() for s in scores]) < 0
    assert "pruning_method" not in metadata


def test_a_resumed_prune_run_ends_as_the_uninterrupted_one(work):
    """Magnitude pruning in 2 micro-batches (masks cached once a step), resumed from the uninterrupted
    run's step-4 checkpoint in a fresh folder: the same losses from step 5 on and the same final weights,
    the threshold's schedule and the optimizer state restored with them."""
    small = _task_teacher(work, "student")

    def prune(out, *extra):
        models = common(work, out=out, teacher="student_nodrop.json", student="student_nodrop.json")
        return run(["run_task_distill.py", *models, "--task.name=sst2", "--phase=prune",
                    f"--teacher.checkpoint={small}", f"--student.checkpoint={small}",
                    f"--data.train_path={work / 'train.mindrecord'}", f"--data.eval_path={work / 'dev.mindrecord'}",
                    "--prune.batch_size=16", "--prune.micro_batches=2", "--prune.epochs=2",
                    "--prune.warmup_ratio=0.1", "--checkpoint.save_steps=4", "--pruning.pruning_method=magnitude",
                    *extra], work)

    def losses(out):
        records = [json.loads(line) for line in (work / out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: (r["loss"], r["threshold"]) for r in records if "loss" in r}

    prune("prune_whole")
    (work / "prune_resumed/prune").mkdir(parents=True)
    shutil.copy(work / "prune_whole/prune/student_step_4.ckpt", work / "prune_resumed/prune")
    result = prune("prune_resumed", "--checkpoint.resume=true")
    assert "at step 4" in result.stdout
    whole, resumed = losses("prune_whole"), losses("prune_resumed")
    assert sorted(resumed) == list(range(5, 13)) and resumed == {step: whole[step] for step in resumed}
    assert len({threshold for _, threshold in resumed.values()}) > 1  # the masks changed after the resume
    final = [split_metadata(load_checkpoint(work / out / "prune/student_final.ckpt", keep_masks=True))[0]
             for out in ("prune_whole", "prune_resumed")]
    assert sorted(final[0]) == sorted(final[1])
    for name, value in final[0].items():
        np.testing.assert_array_equal(final[1][name].asnumpy(), value.asnumpy(), err_msg=name)
