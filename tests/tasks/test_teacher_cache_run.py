"""Task distillation from cached teacher logits, alone and in an ensemble, against the live teachers."""
import numpy as np
import pytest

from src.checkpoint import named_parameters, save_checkpoint
from src.records_writer import RecordsWriter
from src.tinybert_model import BertConfig, BertForSequenceClassification
from tests.tasks.test_pipeline import SEQ, TEACHER, _losses, _rows, common, run, work  # noqa: F401
from tests.tasks.test_training_runs import _task_teacher


def _runs(work):
    """The td2 command line on records with example ids, and the --teacher.ensemble of two teachers."""
    train = work / "train_ids.mindrecord"
    if not train.exists():
        rows = _rows(np.random.default_rng(11), 48, labels=True)
        rows["example_id"] = np.arange(48, dtype=np.int64)
        with RecordsWriter(train, "mindrecord", SEQ, label_dtype=np.int32, with_example_ids=True) as writer:
            writer.write(rows)
        save_checkpoint(work / "second_teacher.ckpt",
                        named_parameters(BertForSequenceClassification(BertConfig(**TEACHER), 2)))
    teacher_json = work / "teacher_nodrop.json"
    base = ["run_task_distill.py", *common(work, teacher="teacher_nodrop.json", student="student_nodrop.json"),
            "--task.name=sst2", "--phase=td2", f"--teacher.checkpoint={_task_teacher(work)}",
            f"--data.train_path={train}", f"--data.eval_path={work / 'dev.mindrecord'}",
            "--student.init=random", "--td2.batch_size=16", "--td2.epochs=1", "--distill.hard_label_weight=0.5"]
    ensemble = (f"--teacher.ensemble=[{{model: {teacher_json}, checkpoint: {_task_teacher(work)}}}, "
                f"{{model: {teacher_json}, checkpoint: {work / 'second_teacher.ckpt'}, weight: 3.0}}]")
    return base, ensemble


def test_cached_teacher_logits_match_the_live_teachers(work):
    """distill.teacher_cache gives the losses the live teacher gives."""
    base, _ = _runs(work)
    live = run([*base, f"--output_dir={work / 'live'}"], work)
    cached = run([*base, f"--output_dir={work / 'cached'}", "--distill.teacher_cache=true"], work)
    assert "teacher logits of 48 examples cached" in cached.stdout
    assert "one forward pass over the training records (2 batches)" in cached.stdout  # eval.batch_size 32
    assert "teacher logits: 100%" in cached.stderr and "2/2" in cached.stderr  # the progress bar
    np.testing.assert_allclose(_losses(cached.stdout), _losses(live.stdout), rtol=1e-5)
    assert len(_losses(live.stdout)) == 3


@pytest.mark.slow
def test_an_ensembles_cached_logits_match_its_live_teachers(work):
    """In an ensemble each teacher has its own cache, combined with the weights; a teacher's cache is
    reused by a later run, another teacher's never."""
    base, ensemble = _runs(work)
    run([*base, f"--output_dir={work / 'ens_cached'}", "--distill.teacher_cache=true"], work)  # the first one's
    live = run([*base, ensemble, f"--output_dir={work / 'ens_live'}"], work)
    cached = run([*base, ensemble, f"--output_dir={work / 'ens_cached'}", "--distill.teacher_cache=true"], work)
    assert "teacher logits from cache" in cached.stdout  # the first teacher's, from the run above
    assert "for another teacher or other records, not used" in cached.stdout  # when the second one's is built
    assert cached.stdout.count("teacher logits of 48 examples cached") == 1
    np.testing.assert_allclose(_losses(cached.stdout), _losses(live.stdout), rtol=1e-5)
