"""A teacher whose vocabulary differs from the student's (TextBrewer feeds each model its own batch):
records tokenized twice by glue_to_records --teacher_vocab_file, each model fed its own columns,
prediction-level distillation only, each vocabulary checked against its own model."""
import json

import numpy as np
import mindspore as ms
import pytest
from tokenizers import BertWordPieceTokenizer

from src.checkpoint import assign_parameters, load_checkpoint, named_parameters, save_checkpoint, split_metadata
from src.dataset import create_dataset, has_teacher_inputs
from src.glue_to_records import main
from src.tinybert_model import BertConfig, BertForSequenceClassification
from tests.modules.test_glue_to_records import read_back, run_cli
from tests.tasks.test_pipeline import NO_DROPOUT, run

SEQ = 29  # two sides of at most 4 words, at most 3 teacher pieces a word, [CLS] and two [SEP]: 27
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a movie film was is good bad great dull plot actor actors story".split()
# The student's vocabulary: every word whole, after 30 unused entries (ids 35..48, above the teacher's size).
STUDENT_VOCAB = SPECIAL + [f"[unused{i}]" for i in range(30)] + WORDS
# The teacher's: another order, and some words only in pieces, so its token positions differ.
TEACHER_VOCAB = SPECIAL + "story plot great film movie the a was is good bad dull act ##or ##s".split()
# Wide initial weights: random models whose logits depend on their input well beyond float32 noise.
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64, initializer_range=0.5, **NO_DROPOUT)
TEACHER = dict(SHAPE, vocab_size=len(TEACHER_VOCAB), hidden_size=48, num_hidden_layers=3)
STUDENT = dict(SHAPE, vocab_size=len(STUDENT_VOCAB))


def _sentence(rng):
    return " ".join(rng.choice(WORDS, rng.integers(1, 5))).capitalize()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Both vocabularies, 40 labelled sentence pairs as JSONL, model configs and random checkpoints."""
    root = tmp_path_factory.mktemp("teacher_vocab")
    for name, vocab in (("student", STUDENT_VOCAB), ("teacher", TEACHER_VOCAB)):
        (root / name).mkdir()
        (root / name / "vocab.txt").write_text("\n".join(vocab) + "\n")
    rng = np.random.default_rng(0)
    (root / "pairs.jsonl").write_text("".join(
        json.dumps({"a": _sentence(rng), "b": _sentence(rng), "y": str(rng.integers(0, 2))}) + "\n"
        for _ in range(40)))
    ms.set_seed(1)
    for name, shape in (("teacher", TEACHER), ("student", STUDENT)):
        (root / f"{name}.json").write_text(json.dumps(shape))
        save_checkpoint(root / f"{name}.ckpt", named_parameters(BertForSequenceClassification(BertConfig(**shape), 2)))
    return root


def convert(work, output, *options, teacher=True):
    main(["--task", "generic", "--input_file", str(work / "pairs.jsonl"), "--text_a", "a", "--text_b", "b",
          "--label", "y", "--labels", "0,1", "--output_file", str(output), "--seq_length", str(SEQ),
          "--vocab_file", str(work / "student/vocab.txt"), *options,
          *(["--teacher_vocab_file", str(work / "teacher/vocab.txt")] if teacher else [])])
    return output


@pytest.fixture(scope="module")
def records(work):
    return convert(work, work / "data/pairs.mindrecord")


def reference_columns(vocab_file, work):
    """input_ids, input_mask, segment_ids (N, SEQ) of every pair, tokenized by `tokenizers` itself."""
    tokenizer = BertWordPieceTokenizer(str(vocab_file), lowercase=True)
    tokenizer.enable_padding(length=SEQ, pad_id=0)
    rows = [json.loads(line) for line in (work / "pairs.jsonl").read_text().splitlines()]
    encodings = tokenizer.encode_batch([(row["a"], row["b"]) for row in rows])
    return [np.array([getattr(e, name) for e in encodings]) for name in ("ids", "attention_mask", "type_ids")]


@pytest.mark.parametrize("data_format", ["mindrecord", "tfrecord"])
def test_records_carry_each_models_tokenization(work, data_format):
    output = convert(work, work / f"both/pairs.{data_format}", "--format", data_format)
    rows = read_back(output, data_format)
    for prefix, vocab in (("", "student"), ("teacher_", "teacher")):
        expected = reference_columns(work / vocab / "vocab.txt", work)
        for name, values in zip(("input_ids", "input_mask", "segment_ids"), expected):
            np.testing.assert_array_equal(rows[prefix + name], values, err_msg=prefix + name)
    assert rows["input_ids"].max() >= len(TEACHER_VOCAB)  # student ids the teacher's embeddings lack
    assert (rows["input_mask"].sum(1) != rows["teacher_input_mask"].sum(1)).any()  # positions differ
    assert has_teacher_inputs(output, data_format)
    assert not has_teacher_inputs(convert(work, work / f"student_only/pairs.{data_format}", "--format", data_format,
                                          teacher=False), data_format)


def test_bad_teacher_vocabulary_is_one_error_line(work, tmp_path):
    result = run_cli("--task", "sst2", "--input_file", work / "pairs.jsonl", "--output_file", tmp_path / "x.mindrecord",
                     "--vocab_file", work / "student/vocab.txt", "--teacher_vocab_file", tmp_path / "none/vocab.txt")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: vocab file {tmp_path / 'none/vocab.txt'} does not exist: "
                                          "pass the teacher's vocab.txt"]
    assert not list(tmp_path.glob("x.mindrecord*"))
    result = run_cli("--task", "generic", "--input_file", work / "pairs.jsonl", "--text_a", "a", "--label", "y",
                     "--output_file", tmp_path / "x.mindrecord", "--vocab_file", work / "student/vocab.txt",
                     "--teacher_vocab_file", work / "teacher/vocab.txt", "--teacher_do_lower_case", "false")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {work / 'teacher/vocab.txt'} is an uncased vocabulary, but the text "
                                    "would keep its capitals (do_lower_case false from --teacher_do_lower_case;")
    assert result.stderr.rstrip().endswith("pass --teacher_do_lower_case true")


def test_each_model_gets_its_columns_cut_by_its_own_mask(records):
    data = create_dataset(records, "mindrecord", 8, SEQ, with_labels=True, shuffle=False, padding="longest",
                          with_teacher_inputs=True, with_example_ids=True)
    assert data.get_col_names() == ["input_ids", "attention_mask", "token_type_ids", "teacher_input_ids",
                                    "teacher_attention_mask", "teacher_token_type_ids", "label_ids", "example_id"]
    full = read_back(records)
    widths = []
    for i, batch in enumerate(data.create_tuple_iterator(num_epochs=1, output_numpy=True)):
        rows = slice(8 * i, 8 * i + 8)
        for offset, prefix in ((0, ""), (3, "teacher_")):
            longest = full[f"{prefix}input_mask"][rows].sum(1).max()
            for column, name in zip(batch[offset:offset + 3], ("input_ids", "input_mask", "segment_ids")):
                np.testing.assert_array_equal(column, full[prefix + name][rows, :longest])
        widths.append((batch[0].shape[1], batch[3].shape[1]))
    assert len(widths) == 5 and any(student != teacher for student, teacher in widths)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _logits(shape, checkpoint, ids, mask, segments):
    """(B, 2) float64 logits of the model `shape` with the weights of `checkpoint`."""
    model = BertForSequenceClassification(BertConfig(**shape), 2)
    assign_parameters(named_parameters(model), split_metadata(load_checkpoint(checkpoint))[0], str(checkpoint))
    model.set_train(False)
    outputs = model(*(ms.Tensor(a.astype(np.int32)) for a in (ids, mask, segments)))
    return outputs[0].asnumpy().astype(np.float64)


def td2_args(work, records, out, *extra):
    return ["run_task_distill.py", "--phase=td2", f"--teacher.model={work / 'teacher.json'}",
            f"--student.model={work / 'student.json'}", f"--seq_length={SEQ}", f"--output_dir={work / out}",
            f"--teacher.checkpoint={work / 'teacher.ckpt'}", "--student.init=checkpoint",
            f"--student.checkpoint={work / 'student.ckpt'}", f"--data.train_path={records}",
            f"--data.eval_path={records}", "--data.shuffle=false", "--td2.batch_size=8", "--td2.max_steps=2",
            "--distill.temperature=2.0", "--task.num_labels=2", *extra]


def _first_step(work, out):
    lines = (work / out / "metrics.jsonl").read_text().splitlines()
    return next(r for r in map(json.loads, lines) if r.get("phase") == "td2" and r.get("step") == 1)


def test_td2_feeds_the_teacher_its_columns(work, records):
    """The step-1 soft-target loss equals numpy's from the teacher's logits on the teacher columns and
    the student's on the student columns, live and from the teacher cache; the student's ids exceed
    the teacher's vocab_size, which the check of each vocabulary against its own model allows."""
    full = read_back(records)
    first = slice(0, 8)
    teacher = _logits(TEACHER, work / "teacher.ckpt", *(full[f"teacher_{n}"][first] for n in
                                                          ("input_ids", "input_mask", "segment_ids")))
    student = _logits(STUDENT, work / "student.ckpt", *(full[n][first] for n in
                                                        ("input_ids", "input_mask", "segment_ids")))
    expected = -(np.exp(_log_softmax(teacher / 2.0)) * _log_softmax(student / 2.0)).sum(-1).mean()
    wrong = _logits(TEACHER, work / "teacher.ckpt", np.minimum(full["input_ids"][first], len(TEACHER_VOCAB) - 1),
                    full["input_mask"][first], full["segment_ids"][first])
    assert abs(-(np.exp(_log_softmax(wrong / 2.0)) * _log_softmax(student / 2.0)).sum(-1).mean() - expected) > 1e-3
    for out, extra in (("live", ()), ("cached", ("--distill.teacher_cache=true",))):
        result = run(td2_args(work, records, out, *extra), work)
        assert "teacher logits of 40 examples cached" in result.stdout or not extra
        np.testing.assert_allclose(_first_step(work, out)["prediction"], expected, rtol=1e-4)


def _error_line(result):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def test_runs_that_need_matching_positions_are_refused(work, records):
    result = run([*td2_args(work, records, "td1"), "--phase=td1"], work, expect_ok=False)
    assert _error_line(result).startswith(
        "error: intermediate matches (attention, hidden) need the teacher and student to see the same token "
        f"positions; {records} carries teacher columns")
    assert "allow only prediction-level distillation: use --phase=td2" in _error_line(result)
    result = run([*td2_args(work, records, "teacher"), "--phase=teacher"], work, expect_ok=False)
    assert "but phase teacher trains on input_ids, the student's tokens" in _error_line(result)
    result = run([*td2_args(work, records, "ner"), "--task.type=token_classification", "--task.metric=f1"], work,
                 expect_ok=False)
    assert "token_classification compares the two models' predictions position by position" in _error_line(result)
    task = {"name": "pairs", "train_path": str(records), "eval_path": str(records),
            "teacher_checkpoint": str(work / "teacher.ckpt"), "num_labels": 2}
    result = run([*td2_args(work, records, "multitask"), "--phase=multitask",
                  f"--multitask.tasks={json.dumps([task])}"], work, expect_ok=False)
    assert "which multi-task distillation does not read" in _error_line(result)
    for out, phase in (("td1", "td1"), ("teacher", "teacher"), ("ner", "td2"), ("multitask", "multitask")):
        assert not (work / out / phase).exists()  # refused before anything is written


@pytest.mark.parametrize("cache", ["false", "true"])
def test_teacher_columns_are_checked_against_the_teachers_vocabulary(work, records, cache):
    small = dict(TEACHER, vocab_size=len(TEACHER_VOCAB) - 3)  # lacks act ##or ##s
    (work / "small_teacher.json").write_text(json.dumps(small))
    save_checkpoint(work / "small_teacher.ckpt",
                    named_parameters(BertForSequenceClassification(BertConfig(**small), 2)))
    result = run([*td2_args(work, records, "small"), f"--teacher.model={work / 'small_teacher.json'}",
                  f"--teacher.checkpoint={work / 'small_teacher.ckpt'}", f"--distill.teacher_cache={cache}"], work,
                 expect_ok=False)
    largest = read_back(records)["teacher_input_ids"].max()
    assert _error_line(result) == (
        f"error: {records} holds token id {largest} in teacher_input_ids but the teacher's vocab_size is "
        f"{small['vocab_size']}: convert the data with the teacher's vocab.txt (--teacher_vocab_file), or fix the "
        "teacher config")
    assert not (work / "small/td2").exists() and not (work / "small/teacher_cache").exists()
