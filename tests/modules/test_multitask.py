"""Multi-task distillation parts: the interleaving sampler, each task's loss against single-task td2,
the config rows' errors, and export of one head or all of them."""
import json
import re

import numpy as np
import mindspore as ms
import pytest
from mindspore import nn, ops

from conftest import BATCH, SEQ
from src.checkpoint import named_parameters
from src.cli import run_cli
from src.config import load_config
from src.distill.multitask import BertForMultiTaskClassification, MultiTaskDistillationLoss
from src.multitask_data import TaskSampler, task_rows, task_shares
from src.tinybert_for_gd_td import DistillationLoss
from src.tinybert_model import BertForSequenceClassification
import run_task_distill


# ---- the sampler ----

def test_every_epoch_holds_each_task_its_exact_share_in_a_seeded_order():
    sizes = [50, 20, 7]
    sampler = TaskSampler(task_shares(sizes), sum(sizes), seed=5)
    np.testing.assert_array_equal(sampler.quotas, sizes)  # tau 1: one pass over every task per epoch
    orders = [sampler.epoch_order(epoch) for epoch in range(3)]
    for order in orders:
        np.testing.assert_array_equal(np.bincount(order, minlength=3), sizes)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch
    again = TaskSampler(task_shares(sizes), sum(sizes), seed=5)  # a resumed run: any step, same task
    assert [again.task_at(step) for step in range(230, 160, -1)] == [sampler.task_at(step) for step in range(230, 160, -1)]
    assert [sampler.task_at(step) for step in range(77, 154)] == orders[1].tolist()
    other = TaskSampler(task_shares(sizes), sum(sizes), seed=6)
    assert not np.array_equal(other.epoch_order(0), orders[0])


def test_shares_from_tau_or_ratios_rounded_to_the_epoch():
    np.testing.assert_allclose(task_shares([90, 10], tau=0.5), [0.75, 0.25])  # 9:3, TextBrewer's |d|^tau
    np.testing.assert_allclose(task_shares([90, 10], tau=0.0), [0.5, 0.5])
    np.testing.assert_allclose(task_shares([90, 10], ratios=[1.0, 3.0]), [0.25, 0.75])
    sampler = TaskSampler(task_shares([3, 3, 3], ratios=[1, 1, 1]), 10, seed=0)  # 3.33 each: one gets the remainder
    assert sorted(sampler.quotas.tolist()) == [3, 3, 4] and sampler.quotas.sum() == 10
    shares = task_shares([90, 10], tau=0.5)
    counts = np.bincount([TaskSampler(shares, 100, 1).task_at(s) for s in range(1000)])
    np.testing.assert_array_equal(counts, [750, 250])


# ---- each task's loss is single-task td2's ----

class _Total(nn.Cell):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def construct(self, *inputs):
        return self.loss(*inputs)[0]


def _gradients(loss, model, *inputs):
    """{name in `model`: gradient of the total loss} for every trainable parameter of `loss`."""
    params = loss.trainable_params()
    grads = ops.GradOperation(get_by_list=True)(_Total(loss), ms.ParameterTuple(params))(*inputs)
    names = {id(p): n for n, p in model.parameters_and_names()}
    return {names[id(p)]: g.asnumpy() for p, g in zip(params, grads)}


def test_a_tasks_loss_and_gradients_are_the_single_task_td2_ones(student_config):
    distill = load_config(["--distill.temperature=2.0"]).distill
    config = student_config.for_inference()
    student = BertForMultiTaskClassification(config, [2, 3])
    multitask = MultiTaskDistillationLoss([DistillationLoss(student.task_model(i), ("prediction", "label"), distill)
                                           for i in range(2)])
    single = BertForSequenceClassification(config, 3)
    weights = named_parameters(student)
    for name, param in named_parameters(single).items():
        source = "heads.1." + name if name.startswith("dense_1.") else name
        param.set_data(weights[source].data.copy())
    reference = DistillationLoss(single, ("prediction", "label"), distill)
    rng = np.random.default_rng(0)
    ids = ms.Tensor(rng.integers(1, 99, (BATCH, SEQ)).astype(np.int32))
    mask = np.ones((BATCH, SEQ), np.int32)
    mask[::3, 4:] = 0
    mask, segments = ms.Tensor(mask), ms.Tensor(np.zeros((BATCH, SEQ), np.int32))
    labels = ms.Tensor(rng.integers(0, 3, BATCH).astype(np.int32))
    teacher_logits = rng.normal(size=(BATCH, 3)).astype(np.float32)
    schedule = ms.Tensor([0.7, 0.5, 2.0, 0.0], ms.float32)
    teacher = ms.mutable((ms.Tensor(teacher_logits),))
    total, components = multitask(teacher, schedule, ids, mask, segments, labels, 1)
    expected_total, expected_components = reference(teacher, schedule, ids, mask, segments, labels)
    np.testing.assert_allclose(components.asnumpy(), expected_components.asnumpy(), rtol=1e-6)
    # ... and both against numpy: 0.7 soft cross-entropy at T=2 + 0.5 cross-entropy on the gold labels.
    logits = single(ids, mask, segments)[0].asnumpy().astype(np.float64)

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    targets = np.exp(log_softmax(teacher_logits / 2.0))
    soft = -(targets * log_softmax(logits / 2.0)).sum(-1).mean()
    hard = -log_softmax(logits)[np.arange(BATCH), labels.asnumpy()].mean()
    np.testing.assert_allclose(total.asnumpy(), 0.7 * soft + 0.5 * hard, rtol=1e-5)
    np.testing.assert_allclose(expected_total.asnumpy(), 0.7 * soft + 0.5 * hard, rtol=1e-5)
    # Gradients: the encoder's and task 1's head's as single-task td2 has them; task 0's head none.
    by_name = _gradients(multitask, student, teacher, schedule, ids, mask, segments, labels, 1)
    for name, grad in _gradients(reference, single, teacher, schedule, ids, mask, segments, labels).items():
        mine = by_name["heads.1." + name if name.startswith("dense_1.") else name]
        np.testing.assert_allclose(mine, grad, rtol=1e-4, atol=1e-7, err_msg=name)
    assert np.abs(by_name["heads.1.dense_1.weight"]).sum() > 0 and np.abs(by_name["bert.dense.weight"]).sum() > 0
    assert np.abs(by_name["heads.0.dense_1.weight"]).sum() == 0


# ---- config rows ----

def _rows(*rows):
    return "--multitask.tasks=[" + ", ".join(rows) + "]"


SST2 = "{name: sst2, train_path: a.mindrecord, eval_path: b.mindrecord, teacher_checkpoint: t.ckpt}"


@pytest.mark.parametrize("rows, message", [
    ([SST2, "{name: mrpc, train_path: c.mindrecord, teacher_checkpoint: u.ckpt}"],
     r"multitask.tasks\[1\].eval_path is empty: give task mrpc's dev records"),
    ([SST2.replace("}", ", metric: bleu}")], r"multitask.tasks\[0\].metric: 'bleu' is not one of accuracy, f1"),
    ([SST2, SST2], r"multitask.tasks\[1\].name: 'sst2' is already the name of multitask.tasks\[0\]"),
    ([SST2.replace("sst2", "reviews")], r"'reviews' is not a GLUE task .*: give num_labels"),
    ([SST2.replace("}", ", ratio: 2}"), SST2.replace("sst2", "qnli")], r"give a ratio on every row or on none"),
    ([SST2.replace("}", ", teacher: t.ckpt}")], r"unknown key 'teacher'; a row takes name, train_path"),
    ([SST2.replace("}", ", metric: pearson}")], r"pearson does not fit 2 label"),
])
def test_a_bad_row_is_one_error_line(rows, message, capsys):
    with pytest.raises(ValueError, match=message):
        load_config([_rows(*rows)])
    with pytest.raises(SystemExit) as stopped:
        run_cli(run_task_distill.main, ["--phase=multitask", _rows(*rows)])
    assert stopped.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: multitask.tasks[")


def test_a_teacher_ensemble_is_refused_in_a_multitask_run():
    """Each task has its own teacher; an ensemble set beside the rows would be silently unused."""
    import logging  # noqa: PLC0415
    from src.phases import PHASES, build_models  # noqa: PLC0415
    cfg = load_config(["--phase=multitask", _rows(SST2), "--teacher.ensemble=[{model: bert_base, checkpoint: e.ckpt}]"])
    with pytest.raises(ValueError, match=r"^teacher.ensemble is not used by a multi-task run: each task has its own "
                                         r"teacher \(multitask.tasks\[i\].teacher_checkpoint and teacher_model\); "
                                         r"remove teacher.ensemble$"):
        build_models(cfg, PHASES["multitask"], logging.getLogger("test"))


@pytest.mark.parametrize("options, named", [
    (["--phase=multitask", _rows(SST2.replace("t.ckpt", "{absent}"))], "multitask.tasks[0].teacher_checkpoint"),
    (["--phase=td2", "--teacher.ensemble=[{model: tinybert_4_312, checkpoint: {absent}}]"],
     "teacher.ensemble[0] checkpoint"),
])
def test_a_missing_teacher_checkpoint_names_its_setting(options, named, tmp_path):
    """With several teachers, the error says which row's checkpoint is missing."""
    import logging  # noqa: PLC0415
    from src.phases import PHASES, build_models  # noqa: PLC0415
    absent = tmp_path / "absent.ckpt"
    cfg = load_config([option.replace("{absent}", str(absent)) for option in options] + ["--teacher.model=tinybert_4_312"])
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(named)} {re.escape(str(absent))} does not exist: "
                                                "check the path you passed$"):
        build_models(cfg, PHASES[cfg.phase], logging.getLogger("test"))


def test_a_glue_row_takes_its_labels_and_metric():
    mrpc, reviews = task_rows({"tau": 1.0, "tasks": [
        {"name": "mrpc", "eval_path": "d"}, {"name": "reviews", "eval_path": "e", "num_labels": 1}]})
    assert (mrpc.num_labels, mrpc.metric, mrpc.labels) == (2, "accuracy", ("0", "1"))
    assert (reviews.num_labels, reviews.metric, reviews.labels) == (1, "pearson", ())
    qnli, = task_rows({"tau": 0.0, "tasks": [{"name": "qnli", "eval_path": "d"}]})
    assert qnli.labels == ("entailment", "not_entailment")
    with pytest.raises(ValueError, match="multitask.tau: must not be negative"):
        task_rows({"tau": -1.0, "tasks": []})
    assert json.loads(json.dumps(load_config([]).multitask.tasks)) == []


# ---- export: every head, or one ----

@pytest.fixture
def multitask_checkpoint(tmp_path, student_config):
    from src.checkpoint import model_metadata, save_checkpoint  # noqa: PLC0415
    from src.distill.multitask import multitask_metadata  # noqa: PLC0415
    model = BertForMultiTaskClassification(student_config.for_inference(), [2, 3])
    rows = task_rows({"tau": 1.0, "tasks": [{"name": "sst2", "eval_path": "d"},
                                            {"name": "topic", "eval_path": "e", "num_labels": 3}]})
    path = tmp_path / "multitask.ckpt"
    save_checkpoint(path, named_parameters(model), {**model_metadata(model, 0, (), "multitask", SEQ),
                                                    **multitask_metadata(rows)})
    return path, model


def test_export_writes_every_head_as_its_own_output_or_one_head(multitask_checkpoint, tmp_path):
    import onnxruntime  # noqa: PLC0415
    from src.export_model import export_student  # noqa: PLC0415
    path, model = multitask_checkpoint
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 99, (3, SEQ)).astype(np.int32)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    expected = [x.asnumpy() for x in model(*[ms.Tensor(x) for x in inputs.values()])]
    written, _ = export_student(load_config([f"--export.checkpoint={path}", "--export.file_format=ONNX",
                                             f"--export.file_name={tmp_path / 'all'}"]))
    session = onnxruntime.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits_sst2", "logits_topic"]
    for actual, wanted in zip(session.run(None, inputs), expected):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)
    written, _ = export_student(load_config([f"--export.checkpoint={path}", "--export.file_format=ONNX",
                                             f"--export.file_name={tmp_path / 'topic'}", "--export.head=topic"]))
    session = onnxruntime.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    np.testing.assert_allclose(session.run(None, inputs)[0], expected[1], atol=1e-5)
    written, _ = export_student(load_config([f"--export.checkpoint={path}", f"--export.file_name={tmp_path / 'all'}"]))
    outputs = nn.GraphCell(ms.load(str(written)))(*[ms.Tensor(x) for x in inputs.values()])
    for actual, wanted in zip(outputs, expected):
        np.testing.assert_allclose(actual.asnumpy(), wanted, atol=1e-6)
    with pytest.raises(ValueError, match="export.head: 'mrpc' is not a task of this checkpoint: one of sst2, topic"):
        export_student(load_config([f"--export.checkpoint={path}", f"--export.file_name={tmp_path / 'x'}",
                                    "--export.head=mrpc"]))
    assert not list(tmp_path.glob("x*"))


def test_evaluation_rebuilds_the_student_the_checkpoint_records(multitask_checkpoint):
    """--phase=eval of a multi-task student needs no --student.model: the checkpoint's recorded
    config sets its shape (the default student.model is another size and would not load)."""
    import logging  # noqa: PLC0415
    from src.phases import PHASES, build_models  # noqa: PLC0415
    path, model = multitask_checkpoint
    rows = "[{name: sst2, eval_path: d}, {name: topic, eval_path: e, num_labels: 3}]"
    cfg = load_config([f"--multitask.tasks={rows}", f"--student.checkpoint={path}"])
    assert cfg.student.model == "tinybert_4_312" and model.bert.config.hidden_size != 312
    built = build_models(cfg, PHASES["eval"], logging.getLogger("test"))
    assert built.trained.bert.config.to_dict() == model.bert.config.to_dict()
    for name, value in named_parameters(built.trained).items():
        np.testing.assert_array_equal(value.asnumpy(), named_parameters(model)[name].asnumpy())


def test_predict_on_a_multitask_checkpoint_says_to_export_a_head(multitask_checkpoint):
    from src.predict import CheckpointModel  # noqa: PLC0415
    path, _ = multitask_checkpoint
    with pytest.raises(ValueError, match=r"is a multi-task student \(heads sst2, topic\): export the head of one "
                                         r"task, `python export.py --export.checkpoint=.* --export.head=sst2"):
        CheckpointModel(path)
