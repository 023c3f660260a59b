"""predict for NER and extractive QA: entity spans from known logits against seqeval, the answer span over
windows mapped back to the context's characters, the same spans through a checkpoint, its MINDIR and its ONNX
file, and bad input as one error line."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import model_metadata, named_parameters, save_checkpoint
from src.config import load_config
from src.export_model import export_student
from src.predict import Predictor, main, question_windows, sentence_windows, tag_sentences
from src.tinybert_model import BertForQuestionAnswering, BertForTokenClassification
from src.tokenization import WordPieceTokenizer
from src.windows import best_answer_spans
from tests.modules.test_predict import cell_logits, tiny_config, write_vocab

ROOT = Path(__file__).resolve().parents[2]
SEQ = 16
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
SENTENCES = ["Peter Blackburn visited Paris and Berlin.", "the cat sat on the mat",
             "Marie Curie won two prizes, in physics and in chemistry, at the Sorbonne in Paris, France."]
QUESTION = "who sat?"
CONTEXT = "The cat sat on the mat. The dog ran on the Mat, and it was fun."


def _save(model, path, labels):
    """A random task model whose head is scaled up, so its outputs are far from ties."""
    head = model.dense_1 if hasattr(model, "dense_1") else model.dense1
    rng = np.random.default_rng(1)
    head.weight.set_data(ms.Tensor(rng.normal(0, 3.0, head.weight.shape).astype(np.float32)))
    save_checkpoint(path, named_parameters(model), model_metadata(model, len(labels) or 2, labels, "", SEQ))


def _export(checkpoint, folder, description):
    for file_format in ("MINDIR", "ONNX"):
        export_student(load_config([f"--export.checkpoint={checkpoint}", f"--export.file_format={file_format}",
                                    f"--export.file_name={folder / 'model'}"]))
    (folder / "model.json").write_text(json.dumps(description), encoding="utf-8")
    write_vocab(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random NER model and a random QA model, each as a checkpoint, a MINDIR and an ONNX file."""
    root = tmp_path_factory.mktemp("spans")
    vocab = write_vocab(root)
    config = tiny_config(len(vocab.read_text().splitlines()))
    ms.set_seed(0)
    ner, qa = BertForTokenClassification(config, len(TAGS)), BertForQuestionAnswering(config)
    _save(ner, root / "ner.ckpt", TAGS)
    _save(qa, root / "qa.ckpt", [])
    for name in ("ner", "qa"):
        (root / name).mkdir()
        _export(root / f"{name}.ckpt", root / name, {"labels": TAGS, "max_seq_length": SEQ} if name == "ner" else
                {"max_seq_length": SEQ})
    return {"root": root, "vocab": vocab, "ner": ner, "qa": qa}


def _word_spans(text):
    """[begin, end) of each word as BERT's basic tokenizer splits ASCII text: letter/digit runs and single
    punctuation marks."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def test_entities_from_known_logits_match_seqeval(models):
    get_entities = pytest.importorskip("seqeval.metrics.sequence_labeling",
                                       reason="seqeval is optional: install it to cross-check").get_entities
    tokenizer = WordPieceTokenizer(models["vocab"])
    text = SENTENCES[2]
    spans = _word_spans(text)
    # Broken sequences on purpose: I- after O and after another type start entities (conlleval, seqeval).
    tags = ["B-PER", "I-PER", "O", "O", "I-LOC", "O", "O", "B-ORG", "I-LOC", "O", "I-ORG", "O", "O", "O", "B-ORG",
            "O", "B-LOC", "I-LOC", "B-LOC", "O"]
    assert len(tags) == len(spans)
    windows = sentence_windows(tokenizer, [text], SEQ)
    assert len(windows.inputs[0]) > 1 and windows.word_spans[0] == spans  # the sentence needs several windows
    # Logits: the chosen tag high at each word's first piece, large random values everywhere else (other
    # pieces, [CLS], [SEP], padding), which must be ignored.
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 20.0, (len(windows.inputs[0]), SEQ, len(TAGS))).astype(np.float32)
    words = [tags[windows.first_word[row] + i] for row in range(len(logits)) for i in
             range(int((windows.word_index[row] >= 0).sum()))]
    assert len(words) == len(tags)  # each word sits in exactly one window
    for row, positions in enumerate(windows.word_index):
        for position in np.flatnonzero(positions >= 0):
            logits[row, position] = 0.0
            logits[row, position, TAGS.index(tags[windows.first_word[row] + positions[position]])] = 3.0
    record, = tag_sentences([text], windows, logits, TAGS)
    assert record["tags"] == tags and record["words"] == [text[a:b] for a, b in spans]
    expected = [(kind, text[spans[first][0]:spans[last][1]], spans[first][0], spans[last][1])
                for kind, first, last in get_entities(tags)]
    assert [(e["type"], e["text"], e["start_char"], e["end_char"]) for e in record["entities"]] == expected
    probability = np.exp(3.0) / (np.exp(3.0) + len(TAGS) - 1)
    assert all(e["score"] == pytest.approx(probability, rel=1e-5) for e in record["entities"])


def test_answer_in_the_second_window_maps_back_to_the_context(models):
    tokenizer = WordPieceTokenizer(models["vocab"])
    input_ids, _, token_type_ids, offsets, owners = question_windows(tokenizer, [QUESTION], [CONTEXT], SEQ,
                                                                     doc_stride=6, max_query_length=6)
    assert len(owners) == 3 and set(owners) == {0}
    # Each window's context tokens are consecutive pieces of the context, windows 6 pieces apart.
    pieces = sorted({tuple(o) for row in offsets for o in row if o[0] >= 0})
    assert [tuple(row[type_ids == 1][0]) for row, type_ids in zip(offsets, token_type_ids)] == pieces[0:13:6]
    assert (input_ids[:, 0] == tokenizer.cls_id).all()
    # "the Mat" (a capital in the context, lower-cased pieces) is in the second window, not the first: start
    # and end logits on its pieces there; a weaker valid span in the first window, and a stronger one in the
    # third that ends before it starts (invalid).
    where = CONTEXT.index("the Mat")
    assert where not in offsets[0][:, 0] and where in offsets[1][:, 0]
    first_piece = int(np.flatnonzero(offsets[1][:, 0] == where)[0])
    last_piece = int(np.flatnonzero(offsets[1][:, 1] == where + 7)[0])
    start_logits, end_logits = np.zeros((2,) + input_ids.shape, np.float32)
    start_logits[1, first_piece], end_logits[1, last_piece] = 6.0, 5.0
    context_first = int(np.flatnonzero(offsets[0][:, 0] >= 0)[0])
    start_logits[0, context_first], end_logits[0, context_first] = 5.0, 5.0
    later, earlier = np.flatnonzero(offsets[2][:, 0] >= 0)[[3, 2]]
    start_logits[2], end_logits[2] = -50.0, -50.0
    start_logits[2, later], end_logits[2, earlier] = 20.0, 20.0  # each valid pair there scores -30
    best = best_answer_spans(start_logits, end_logits, offsets, owners, n_best_size=20, max_answer_length=30)
    score, start, end = best[0]
    assert (CONTEXT[start:end], start, end, score) == ("the Mat", where, where + 7, 11.0)
    # With answers of one piece at most, the two-piece span no longer counts: the first window's wins.
    assert best_answer_spans(start_logits, end_logits, offsets, owners, max_answer_length=1)[0] == (10.0, 0, 3)


def test_the_three_formats_give_the_same_entities(models):
    records = {}
    for name, path in (("ckpt", models["root"] / "ner.ckpt"), ("mindir", models["root"] / "ner" / "model.mindir"),
                       ("onnx", models["root"] / "ner" / "model.onnx")):
        predictor = Predictor(path, models["vocab"] if name == "ckpt" else None)
        assert predictor.task_type == "token_classification" and predictor.label_names == TAGS
        records[name] = predictor.records(SENTENCES, batch_size=2)
    # Reference: the Cell over each sentence's words, split by hand into windows of at most SEQ - 2 pieces.
    tokenizer = WordPieceTokenizer(models["vocab"])
    for text, record in zip(SENTENCES, records["ckpt"]):
        spans = _word_spans(text)
        assert record["words"] == [text[a:b] for a, b in spans]
        pieces = [tokenizer.token_ids([text[a:b]])[0] for a, b in spans]
        tags, window = [], []
        for word in pieces + [None]:
            if word is None or sum(map(len, window)) + len(word) > SEQ - 2:
                ids = [tokenizer.cls_id] + [p for w in window for p in w] + [tokenizer.sep_id]
                ids = np.array([ids], np.int32)
                logits = cell_logits(models["ner"], [ids, np.ones_like(ids), np.zeros_like(ids)])[0]
                firsts = np.cumsum([1] + [len(w) for w in window[:-1]])
                tags += [TAGS[i] for i in logits[firsts].argmax(axis=1)]
                window = []
            window.append(word)
        assert record["tags"] == tags, text
    assert sum(len(r["entities"]) for r in records["ckpt"]) > 2  # not a model that tags everything O
    for name in ("mindir", "onnx"):
        for ours, theirs in zip(records["ckpt"], records[name]):
            assert ours["tags"] == theirs["tags"], name
            assert [{k: v for k, v in e.items() if k != "score"} for e in ours["entities"]] == \
                [{k: v for k, v in e.items() if k != "score"} for e in theirs["entities"]], name
            np.testing.assert_allclose([e["score"] for e in ours["entities"]], [e["score"] for e in theirs["entities"]],
                                       atol=1e-5)


def test_the_three_formats_give_the_same_answers(models):
    questions, contexts = [QUESTION, "who ran?", "what was boring?"], [CONTEXT, "The dog ran.", CONTEXT]
    options = {"doc_stride": 4, "max_query_length": 6, "max_answer_length": 5}
    records = {}
    for name, path in (("ckpt", models["root"] / "qa.ckpt"), ("mindir", models["root"] / "qa" / "model.mindir"),
                       ("onnx", models["root"] / "qa" / "model.onnx")):
        predictor = Predictor(path, models["vocab"] if name == "ckpt" else None)
        assert predictor.task_type == "question_answering"
        records[name] = predictor.records(questions, contexts, batch_size=3, **options)
    # Reference: the Cell on every window at full length, then every valid span by brute force.
    tokenizer = WordPieceTokenizer(models["vocab"])
    *arrays, offsets, owners = question_windows(tokenizer, questions, contexts, SEQ, 4, 6)
    logits = cell_logits(models["qa"], arrays)
    for index, record in enumerate(records["ckpt"]):
        candidates = [(logits[row, 0, s] + logits[row, 1, e], offsets[row, s, 0], offsets[row, e, 1])
                      for row in np.flatnonzero(owners == index) for s in range(SEQ) for e in range(s, min(s + 5, SEQ))
                      if offsets[row, s, 0] >= 0 and offsets[row, e, 0] >= 0]
        score, start, end = max(candidates, key=lambda c: c[0])
        assert (record["start_char"], record["end_char"]) == (start, end)
        assert record["answer"] == contexts[index][start:end] and record["score"] == pytest.approx(score, abs=1e-4)
    for name in ("mindir", "onnx"):
        for ours, theirs in zip(records["ckpt"], records[name]):
            assert (ours["answer"], ours["start_char"], ours["end_char"]) == \
                (theirs["answer"], theirs["start_char"], theirs["end_char"]), name
            assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)


def test_command_line_pairs_alternate_and_csv_holds_json(models, tmp_path, capsys):
    onnx = models["root"] / "qa" / "model.onnx"
    options = ["--doc_stride", "4", "--max_query_length", "6"]
    main(["--model", str(onnx), QUESTION, "--text_b", CONTEXT, "who ran?", "--text_b", "The dog ran.", *options])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = Predictor(onnx).records([QUESTION, "who ran?"], [CONTEXT, "The dog ran."], doc_stride=4,
                                       max_query_length=6)
    assert records == json.loads(json.dumps(expected))
    main(["--model", str(models["root"] / "ner" / "model.onnx"), *SENTENCES[:2], "--output", str(tmp_path / "ner.csv")])
    with open(tmp_path / "ner.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ours = Predictor(models["root"] / "ner" / "model.onnx").records(SENTENCES[:2])
    assert [json.loads(r["tags"]) for r in rows] == [r["tags"] for r in ours]
    assert [json.loads(r["entities"]) for r in rows] == json.loads(json.dumps([r["entities"] for r in ours]))


def _predict(*args):
    return subprocess.run([sys.executable, "predict.py", *map(str, args)], cwd=ROOT, env=dict(os.environ, GLOG_v="3"),
                          capture_output=True, text=True, timeout=120)


def test_bad_input_is_one_error_line(models, tmp_path):
    questions = tmp_path / "questions.tsv"
    questions.write_text("question\nwhere did the cat sit?\n", encoding="utf-8")
    result = _predict("--model", models["root"] / "qa" / "model.onnx", "--input", questions)
    assert result.returncode == 2 and not result.stdout
    line, = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {questions}: column 'context' is not in the header (question)"), line
    result = _predict("--model", models["root"] / "ner" / "model.onnx", "Peter went to Paris", "--text_b", "a pair")
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.strip() == ("error: a token-classification (NER) model tags single sentences, not pairs: "
                                     "give one sentence per text, without --text_b (or a tab on standard input)")
