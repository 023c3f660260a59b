"""deploy for NER and extractive QA: the folder describes the task's output, its int8 check scores entity F1 /
SQuAD F1 as training evaluation does (checked against the Cell's own logits), and predict reads the folder."""
import json

import numpy as np
import mindspore as ms
import pytest

from src.assessment_method import ner_scores
from src.conll_to_records import convert as convert_conll
from src.deploy import deploy
from src.predict import Predictor
from src.squad_metrics import squad_evaluate
from src.squad_to_records import convert as convert_squad, examples_path
from src.tinybert_model import BertForQuestionAnswering, BertForTokenClassification
from src.tokenization import WordPieceTokenizer
from src.windows import features_path
from tests.modules.test_conll_to_records import read_back
from tests.modules.test_predict import cell_logits, tiny_config, write_vocab
from tests.modules.test_predict_spans import CONTEXT, QUESTION, SEQ, SENTENCES, TAGS, _save

QUESTIONS = [QUESTION, "who ran?", "what was fun?"]
CONTEXTS = [CONTEXT, CONTEXT, "The film was fun, and the cat sat on the mat."]
QA_OPTIONS = {"doc_stride": 4, "max_query_length": 6}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy_spans")
    write_vocab(root)
    return root


def _check(described, folder, problem, shape):
    assert described == json.loads((folder / "model.json").read_text())
    assert described["problem"] == problem and described["outputs"][0]["shape"] == shape
    assert sorted(p.name for p in folder.iterdir()) == ["model.int8.onnx", "model.json", "model.mindir", "model.onnx",
                                                        "tokenizer_config.json", "vocab.txt"]
    check = described["int8_check"]
    assert check["metric"] == "f1" and 0.0 <= check["agreement"] <= 1.0
    return check


def _config(vocab):
    return tiny_config(len(vocab.read_text().splitlines()))


def test_ner_folder(root):
    vocab = root / "vocab.txt"
    tokenizer = WordPieceTokenizer(vocab)
    ms.set_seed(0)
    model = BertForTokenClassification(_config(vocab), len(TAGS))
    _save(model, root / "ner.ckpt", TAGS)
    ours = Predictor(root / "ner.ckpt", vocab).records(SENTENCES)
    assert sum(len(r["entities"]) for r in ours) > 2
    # Gold tags = the float model's own: its entity F1 is 1.
    (root / "dev.txt").write_text("\n".join("".join(f"{w} {t}\n" for w, t in zip(r["words"], r["tags"])) for r in ours),
                                  encoding="utf-8")
    convert_conll(root / "dev.txt", tokenizer, root / "ner_dev.mindrecord", SEQ, labels=TAGS)
    described = deploy(root / "ner.ckpt", vocab, root / "ner", root / "ner_dev.mindrecord", max_int8_drop=100.0)
    check = _check(described, root / "ner", "token_classification", ["batch", "sequence", len(TAGS)])
    assert described["labels"] == TAGS
    rows = read_back(root / "ner_dev.mindrecord")
    logits = cell_logits(model, (rows["input_ids"], rows["input_mask"], rows["segment_ids"]))
    expected = ner_scores(logits, rows["label_ids"], rows["example_id"], features_path(root / "ner_dev.mindrecord"))
    assert check["windows"] == len(rows["input_ids"]) > len(SENTENCES) == check["examples"]  # one over two windows
    assert check["float32"] == expected["f1"] == 1.0
    theirs = Predictor(root / "ner").records(SENTENCES)
    assert [r["tags"] for r in ours] == [r["tags"] for r in theirs]


def test_qa_folder(root):
    vocab = root / "vocab.txt"
    tokenizer = WordPieceTokenizer(vocab)
    ms.set_seed(0)
    model = BertForQuestionAnswering(_config(vocab))
    _save(model, root / "qa.ckpt", [])
    ours = Predictor(root / "qa.ckpt", vocab).records(QUESTIONS, CONTEXTS, **QA_OPTIONS)
    # Reference answers = the float model's own: its exact match is 1 (F1 is 0 on an answer that normalises
    # to nothing, such as "the", as in the official script).
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": r["context"], "qas": [{"id": f"q{i}", "question": r["question"],
                                           "answers": [{"text": r["answer"], "answer_start": r["start_char"]}]}]}
        for i, r in enumerate(ours)]}]}
    (root / "dev.json").write_text(json.dumps(squad), encoding="utf-8")
    output = root / "qa_dev.mindrecord"
    convert_squad(root / "dev.json", tokenizer, output, SEQ, **QA_OPTIONS)
    described = deploy(root / "qa.ckpt", vocab, root / "qa", output, max_int8_drop=100.0)
    check = _check(described, root / "qa", "question_answering", ["batch", 2, "sequence"])
    rows = read_back(output)
    logits = cell_logits(model, (rows["input_ids"], rows["input_mask"], rows["segment_ids"]))
    expected = squad_evaluate(logits[:, 0], logits[:, 1], rows["example_id"], features_path(output),
                              examples_path(output))
    assert check["windows"] == len(rows["input_ids"]) > len(QUESTIONS) == check["examples"]
    assert expected["exact_match"] == 1.0 and check["float32"] == pytest.approx(expected["f1"], abs=1e-12)
    assert expected["f1"] > 0.5
    theirs = Predictor(root / "qa").records(QUESTIONS, CONTEXTS, **QA_OPTIONS)
    assert [(r["start_char"], r["end_char"]) for r in ours] == [(r["start_char"], r["end_char"]) for r in theirs]
    assert np.isfinite([r["score"] for r in theirs]).all()
