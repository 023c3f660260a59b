"""SQuAD conversion: windows, answer positions that map back to the answer text, bad questions, the real subset."""
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.records_writer import schema_path
from src.squad_to_records import answer_tokens, convert, examples_path, main, read_squad
from src.tokenization import WordPieceTokenizer
from src.windows import encode_with_offsets, features_path

ROOT = Path(__file__).resolve().parents[2]
LONG_CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
                "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland "
                "and Norway who, under their leader Rollo, agreed to swear fealty to King Charles III of West "
                "Francia. Through generations of assimilation the descendants would gradually merge with the "
                "Carolingian-based cultures of West Francia. The distinct cultural and ethnic identity of the "
                "Normans emerged initially in the first half of the 10th century.")


def _squad(*paragraphs):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": list(paragraphs)}]}


def _question(qid, question, context, answer, occurrence=0):
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer, start + 1)
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": start}]}


SAMPLE = _squad(
    {"context": LONG_CONTEXT, "qas": [
        _question("q-rollo", "Who was the Norse leader?", LONG_CONTEXT, "Rollo"),
        _question("q-normandy", "What is named after the Normans?", LONG_CONTEXT, "Normandy"),
        _question("q-century", "When did the Norman identity emerge?", LONG_CONTEXT,
                  "the first half of the 10th century")]},
    {"context": "Paris is the capital of France.", "qas": [
        {"id": "q-paris", "question": "What is the capital of France?",
         "answers": [{"text": "Paris", "answer_start": 0}, {"text": "Paris ", "answer_start": 0}]}]})


@pytest.fixture
def tokenizer(minilm_dir):
    return WordPieceTokenizer(str(minilm_dir / "vocab.txt"))


def read_back(path, data_format="mindrecord"):
    if data_format == "mindrecord":
        data = ms.dataset.MindDataset(str(path), shuffle=False)
    else:
        data = ms.dataset.TFRecordDataset(str(path), schema=str(schema_path(path)), shuffle=False)
    rows = list(data.create_dict_iterator(num_epochs=1, output_numpy=True))
    return {name: np.stack([row[name] for row in rows]).reshape(len(rows), -1).squeeze(-1)
            if rows[0][name].size == 1 else np.stack([row[name] for row in rows]) for name in rows[0]}


def write(tmp_path, squad, name="squad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(squad))
    return path


@pytest.mark.parametrize("data_format", ["mindrecord", "tfrecord"])
def test_windows_and_answer_positions(tmp_path, tokenizer, minilm_dir, data_format):
    transformers = pytest.importorskip("transformers", reason="the token reference is transformers' tokenizer")
    hf = transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))
    output = tmp_path / f"squad.{data_format}"
    seq_length, stride, max_query = 40, 12, 6
    summary = convert(write(tmp_path, SAMPLE), tokenizer, output, seq_length, doc_stride=stride,
                      max_query_length=max_query, data_format=data_format)
    rows = read_back(output, data_format)
    examples = json.loads(examples_path(output).read_text())
    with np.load(features_path(output)) as features:
        example_index, offsets = features["example_index"], features["token_offsets"]
    assert [e["id"] for e in examples] == ["q-rollo", "q-normandy", "q-century", "q-paris"]
    assert examples[3]["answers"] == ["Paris", "Paris "] and examples[0]["context"] == LONG_CONTEXT
    np.testing.assert_array_equal(rows["example_id"], np.arange(len(example_index)))
    assert summary.startswith(f"wrote {len(example_index)} records for 4 questions of 2 paragraphs (3 questions over "
                              f"more than one window; 0 answers in no single window;")

    context_ids = hf(LONG_CONTEXT, add_special_tokens=False, return_offsets_mapping=True)
    for index, example in enumerate(examples):
        records = np.flatnonzero(example_index == index)
        question = hf(example["question"], add_special_tokens=False)["input_ids"][:max_query]
        context = hf(example["context"], add_special_tokens=False, return_offsets_mapping=True)
        room = seq_length - len(question) - 3
        covered = []
        for window, record in enumerate(records):
            ids, mask, segments = rows["input_ids"][record], rows["input_mask"][record], rows["segment_ids"][record]
            length = int(mask.sum())
            window_ids = ids[len(question) + 2:length - 1].tolist()
            first = window * min(room, stride)  # BERT's windows: `doc_stride` pieces apart
            assert window_ids == context["input_ids"][first:first + room]
            assert ids[:len(question) + 2].tolist() == [hf.cls_token_id, *question, hf.sep_token_id]
            assert ids[length - 1] == hf.sep_token_id and not ids[length:].any() and not mask[length:].any()
            assert not segments[:len(question) + 2].any() and segments[len(question) + 2:length].all()
            window_offsets = offsets[record][len(question) + 2:length - 1]
            assert window_offsets.tolist() == [list(o) for o in context["offset_mapping"][first:first + room]]
            assert (offsets[record][:len(question) + 2] == -1).all() and (offsets[record][length - 1:] == -1).all()
            covered += range(first, first + len(window_ids))
            start, end = rows["start_positions"][record], rows["end_positions"][record]
            if start:  # the answer's pieces give back the answer text exactly
                assert example["context"][offsets[record][start, 0]:offsets[record][end, 1]] == example["answers"][0]
            else:  # only windows that do not hold the whole answer point at [CLS]
                answer_at = example["context"].index(example["answers"][0])
                inside = [i for i, (b, e) in enumerate(context["offset_mapping"])
                          if b < answer_at + len(example["answers"][0]) and e > answer_at]
                assert end == 0 and not (first <= inside[0] and inside[-1] < first + len(window_ids))
        assert sorted(set(covered)) == list(range(len(context["input_ids"])))  # windows cover the context
        assert (rows["start_positions"][records] > 0).any()
    assert len(context_ids["input_ids"]) > 2 * stride  # the long context really needs several windows


def test_answer_tokens_inside_a_piece():
    offsets = np.array([[0, 5], [6, 11], [11, 12]])  # "sixth words." -> sixth, words, .
    assert answer_tokens(offsets, 0, 3) == (0, 0)  # "six" lies inside "sixth": the whole piece
    assert answer_tokens(offsets, 6, 12) == (1, 2)
    with pytest.raises(ValueError, match="covers no word piece"):
        answer_tokens(offsets, 5, 6)  # the space between two pieces


@pytest.mark.parametrize("edit, message", [
    (lambda q: q["answers"][0].update(answer_start=3),
     r"question q-rollo: answer 'Rollo' is not at answer_start 3 of its context \(there: ' Norm'\); the text is at "
     rf"character offset {LONG_CONTEXT.index('Rollo')}: correct answer_start: fix it or pass --skip_bad_rows"),
    (lambda q: q["answers"][0].update(text="Ragnar"),
     r"answer 'Ragnar' is not at answer_start \d+ of its context \(there: 'Rollo,'\); the text is nowhere in the "
     r"context: correct the answer's text"),
    (lambda q: q["answers"][0].update(text="the", answer_start=0),  # "the" 9 times: the first 5 shown
     r"answer 'the' is not at answer_start 0 of its context \(there: 'The'\); the text is at character offsets "
     r"17, 35, 68, 207, 323, \.\.\.: correct answer_start"),
    (lambda q: q.update(answers=[]), r"question q-rollo: has no answers"),
    (lambda q: q.pop("id"), r"data\[0\]\.paragraphs\[1\]\.qas\[0\]: has no 'id' string"),
    (lambda q: q.update(id="q-paris"), r"question q-paris: repeats the id of an earlier question"),
    (lambda q: q.update(question=" "), r"question q-rollo: has no 'question' text"),
    (lambda q: q["answers"][0].update(answer_start="7"), r"needs a non-empty 'text' and an integer 'answer_start'"),
])
def test_bad_questions(tmp_path, tokenizer, edit, message):
    squad = json.loads(json.dumps(SAMPLE))
    squad["data"][0]["paragraphs"].reverse()  # the paragraph with q-paris comes first
    edit(squad["data"][0]["paragraphs"][1]["qas"][0])
    source = write(tmp_path, squad)
    with pytest.raises(ValueError, match=message):
        convert(source, tokenizer, tmp_path / "x.mindrecord", 128)
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".*"))
    summary = convert(source, tokenizer, tmp_path / "x.mindrecord", 128, skip_bad_rows=True)
    assert "1 bad questions skipped" in summary and "for 3 questions" in summary


@pytest.mark.parametrize("content, message", [
    ("{not json", r"bad\.json is not valid JSON \(Expecting property name enclosed in double quotes at line 1"),
    ('{"version": "2.0"}', r"bad\.json is not SQuAD v1.1 JSON: it needs a top-level 'data' list"),
    ('{"data": [{"paragraphs": [{"qas": []}]}]}', r"data\[0\]\.paragraphs\[0\]: needs a non-empty 'context'"),
    ('{"data": []}', r"no questions in .*bad\.json"),
])
def test_bad_files(tmp_path, tokenizer, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        convert(tmp_path / "bad.json", tokenizer, tmp_path / "x.mindrecord", 128)


def test_lengths_are_checked(tmp_path, tokenizer):
    source = write(tmp_path, SAMPLE)
    with pytest.raises(ValueError, match="seq_length 20 leaves no room for the context after a question of "
                                         "max_query_length 17"):
        convert(source, tokenizer, tmp_path / "x.mindrecord", 20, max_query_length=17)
    with pytest.raises(ValueError, match="doc_stride 0 and max_query_length 64 must be at least 1"):
        convert(source, tokenizer, tmp_path / "x.mindrecord", 128, doc_stride=0)


def test_cli(tmp_path, minilm_dir, capsys):
    source = write(tmp_path, SAMPLE)
    main(["--input_file", str(source), "--output_file", str(tmp_path / "out" / "squad.mindrecord"),
          "--vocab_file", str(minilm_dir / "vocab.txt"), "--seq_length", "128", "--doc_stride", "32"])
    assert capsys.readouterr().out.startswith("wrote 4 records for 4 questions of 2 paragraphs (0 questions over")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "squad.examples.json", "squad.features.npz", "squad.mindrecord", "squad.mindrecord.db"]
    squad = json.loads(json.dumps(SAMPLE))
    squad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 0
    write(tmp_path, squad, "bad.json")
    run = subprocess.run([sys.executable, "-m", "src.squad_to_records", "--input_file", str(tmp_path / "bad.json"),
                          "--output_file", str(tmp_path / "bad" / "squad.mindrecord"),
                          "--vocab_file", str(minilm_dir / "vocab.txt")],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"error: {tmp_path / 'bad.json'}: question q-rollo: answer 'Rollo' is not at "
                                  f"answer_start 0 of its context (there: 'The N'); the text is at character offset "
                                  f"{LONG_CONTEXT.index('Rollo')}: correct answer_start: fix it or pass --skip_bad_rows")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_real_squad_subset(tmp_path, tokenizer, shared_data):
    folder = shared_data / "squad"
    contexts, questions = read_squad(folder / "train-v1.1-subset.json")
    assert len(questions) == 10593 and len(contexts) == 2053
    # Every training answer's pieces map back to its text; where SQuAD's answer is part of a word
    # piece ("six" of "sixth"), to that whole piece, which holds it.
    pieces = encode_with_offsets(tokenizer, contexts)
    exact = 0
    for question in questions:
        text, start = question.answers[0]
        offsets = pieces[question.context_index][1]
        first, last = answer_tokens(offsets, start, start + len(text))
        found = contexts[question.context_index][offsets[first, 0]:offsets[last, 1]]
        exact += found == text
        assert text in found and offsets[first, 0] <= start and offsets[last, 1] >= start + len(text)
    assert exact == 10593 - 74

    output = tmp_path / "dev.mindrecord"
    summary = convert(folder / "dev-v1.1-subset.json", tokenizer, output, 384)
    assert summary.startswith("wrote 1292 records for 1284 questions of 377 paragraphs (7 questions over more than "
                              "one window; 0 answers in no single window; 12 answers starting or ending inside a "
                              "word piece; 0 bad questions skipped)")
    rows = read_back(output)
    examples = json.loads(examples_path(output).read_text())
    with np.load(features_path(output)) as features:
        example_index, offsets = features["example_index"], features["token_offsets"]
    assert len(examples) == 1284 and len(set(e["id"] for e in examples)) == 1284
    held = rows["start_positions"] > 0
    assert held.sum() == 1292 - 3 and set(example_index[held]) == set(range(1284))
    mapped = [examples[example_index[r]]["context"][offsets[r][rows["start_positions"][r], 0]:
                                                     offsets[r][rows["end_positions"][r], 1]]
              for r in np.flatnonzero(held)]
    answers = [examples[example_index[r]]["answers"][0] for r in np.flatnonzero(held)]
    assert sum(m == a for m, a in zip(mapped, answers)) == held.sum() - 12
    assert all(a in m for m, a in zip(mapped, answers))
