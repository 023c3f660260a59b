"""predict: the same labels through a checkpoint, its MINDIR and its ONNX file; input and output formats."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import model_metadata, named_parameters, save_checkpoint
from src.config import load_config
from src.export_model import export_student
from src.predict import Predictor, main, mindir_input_shape
from src.tinybert_model import BertConfig, BertForSequenceClassification, BertModel, LogitsOnly
from src.tokenization import WordPieceTokenizer

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["negative", "neutral", "positive"]
SEQ = 16
WORDS = ("the a cat dog sat ran on mat film movie was is good bad great awful fine not very plot actors "
         "boring fun loved hated it and but of to").split()
TEXTS = ["The cat sat on the mat.", "A very good film", "awful , boring plot and bad actors", "fun",
         "the dog ran", "It was not great but fine", "loved it, loved it, loved it, very very fun movie"]
PAIRS = ["the cat", None, "a dog", "not fun", None, "the plot", "good"]


def write_vocab(folder, extra=()):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", *WORDS, *extra]
    tokens += [c for c in "abcdefghijklmnopqrstuvwxyz"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return folder / "vocab.txt"


def tiny_config(vocab_size):
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=29, max_position_embeddings=64,
                      initializer_range=0.1)  # large weights: texts get different labels


def make_classifier(path, config, labels, seed=0):
    """A random classifier whose head is scaled up, so the labels are far from ties."""
    ms.set_seed(seed)
    model = BertForSequenceClassification(config, len(labels) or 1)
    rng = np.random.default_rng(seed)
    model.dense_1.weight.set_data(ms.Tensor(rng.normal(0, 3.0, model.dense_1.weight.shape).astype(np.float32)))
    save_checkpoint(path, named_parameters(model), model_metadata(model, len(labels) or 1, labels, "", SEQ))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """vocab.txt, a task checkpoint, and its MINDIR and ONNX exports (ONNX with a model.json naming labels)."""
    root = tmp_path_factory.mktemp("predict")
    vocab = write_vocab(root)
    size = len(vocab.read_text().splitlines())
    config = tiny_config(size)
    model = make_classifier(root / "run" / "student.ckpt", config, LABELS)  # no vocab.txt beside it
    exported = root / "exported"
    for file_format in ("MINDIR", "ONNX"):
        export_student(load_config([f"--export.checkpoint={root / 'run' / 'student.ckpt'}", f"--export.file_format={file_format}",
                                    f"--export.file_name={exported / 'student'}"]))
    (exported / "model.json").write_text(json.dumps({"labels": LABELS, "max_seq_length": SEQ}))
    write_vocab(exported)
    return {"root": root, "vocab": vocab, "config": config, "model": model,
            "ckpt": root / "run" / "student.ckpt", "mindir": exported / "student.mindir", "onnx": exported / "student.onnx"}


def cell_logits(model, arrays):
    """The task model's head output (the MindSpore Cell, PyNative) for packed inputs, every row at full length."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        network = LogitsOnly(model)
        network.set_train(False)
        return network(*[ms.Tensor(x) for x in arrays]).asnumpy()
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def reference_logits(models, texts_a, texts_b):
    """The MindSpore Cell on every row padded to SEQ, in one batch, in input order."""
    tokenizer = WordPieceTokenizer(models["vocab"])
    ids_b = None if texts_b is None else [None if t is None else tokenizer.token_ids([t])[0] for t in texts_b]
    return cell_logits(models["model"], tokenizer.build_inputs(tokenizer.token_ids(texts_a), ids_b, SEQ))


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_three_formats_give_the_cells_labels(models):
    expected = softmax(reference_logits(models, TEXTS, PAIRS))
    assert len(set(expected.argmax(axis=1))) > 1  # the texts do not all get one label
    answers = {}
    for name in ("ckpt", "mindir", "onnx"):
        vocab = models["vocab"] if name == "ckpt" else None  # exported files find vocab.txt beside them
        predictor = Predictor(models[name], vocab, labels=LABELS if name == "mindir" else None)
        records = predictor.records(TEXTS, PAIRS, batch_size=3)
        answers[name] = records
        assert [r["text_a"] for r in records] == TEXTS
        assert [r.get("text_b") for r in records] == PAIRS
        assert [r["label"] for r in records] == [LABELS[i] for i in expected.argmax(axis=1)], name
        probabilities = np.array([[r["probabilities"][label] for label in LABELS] for r in records])
        np.testing.assert_allclose(probabilities, expected, atol=2e-5, err_msg=name)
    assert Predictor(models["onnx"]).seq_length == SEQ  # from model.json
    assert Predictor(models["mindir"], labels=LABELS).seq_length == SEQ  # fixed in the graph
    assert mindir_input_shape(models["mindir"]) == (-1, SEQ)


def test_casing_comes_from_the_tokenizer_settings_beside_the_vocabulary(models):
    predictor = Predictor(models["onnx"])
    upper, lower = predictor.logits(["THE CAT SAT ON THE MAT"]), predictor.logits(["the cat sat on the mat"])
    np.testing.assert_allclose(upper, lower, atol=1e-6)
    assert np.abs(predictor.logits(["THE DOG SAT ON THE MAT"]) - lower).max() > 1e-4  # not a constant model
    with pytest.raises(ValueError, match="an uncased vocabulary, but the text would keep its capitals"):
        Predictor(models["onnx"], do_lower_case=False)


def test_long_texts_are_truncated_to_the_models_length(models):
    long_text = " ".join(["very good film"] * 30)
    ckpt = Predictor(models["ckpt"], models["vocab"])
    assert ckpt.seq_length == SEQ
    np.testing.assert_allclose(ckpt.logits([long_text]), reference_logits(models, [long_text], None), atol=1e-5)


def test_command_line_file_and_stdin_give_the_same_labels(models, tmp_path, monkeypatch, capsys):
    expected = [LABELS[i] for i in softmax(reference_logits(models, TEXTS, None)).argmax(axis=1)]
    tsv = tmp_path / "in.tsv"
    tsv.write_text("id\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    env = dict(os.environ, GLOG_v="3")
    result = subprocess.run([sys.executable, "predict.py", "--model", str(models["onnx"]), "--input", str(tsv),
                             "--output", str(tmp_path / "out.csv"), "--batch_size", "2"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "labelled 7 texts" in result.stderr and "predict" in result.stderr  # the progress bar
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == expected and [r["text_a"] for r in rows] == TEXTS
    assert set(rows[0]) == {"text_a", "label", "label_id", "p_negative", "p_neutral", "p_positive"}
    assert sum(float(rows[0][f"p_{label}"]) for label in LABELS) == pytest.approx(1.0, abs=1e-5)

    lines = "\n".join(TEXTS[:3]) + "\n\n" + "\t".join(TEXTS[3:5]) + "\n"  # a blank line, a pair
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines.encode("utf-8"))))
    main(["--model", str(models["ckpt"]), "--vocab_file", str(models["vocab"]), "--input", "-"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    pair = softmax(reference_logits(models, [TEXTS[3]], [TEXTS[4]])).argmax(axis=1)
    assert [r["label"] for r in records] == expected[:3] + [LABELS[pair[0]]]
    assert records[3]["text_b"] == TEXTS[4]


def test_jsonl_input_with_pairs_and_column_names(models, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"q": a, "p": b or "", "id": i}) + "\n"
                            for i, (a, b) in enumerate(zip(TEXTS, PAIRS))), encoding="utf-8")
    main(["--model", str(models["onnx"]), "--input", str(path), "--text_a", "q", "--text_b", "p"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = softmax(reference_logits(models, TEXTS, [b or "" for b in PAIRS])).argmax(axis=1)
    assert [r["label_id"] for r in records] == list(expected)
    assert [r["text_b"] for r in records] == [b or "" for b in PAIRS]


def test_regression_model_gives_a_score(tmp_path):
    vocab = write_vocab(tmp_path)
    config = tiny_config(len(vocab.read_text().splitlines()))
    model = make_classifier(tmp_path / "stsb.ckpt", config, [], seed=3)
    records = Predictor(tmp_path / "stsb.ckpt", vocab).records(TEXTS[:3], ["the cat", "fun", "a dog"])
    arrays = WordPieceTokenizer(vocab).encode_batch(TEXTS[:3], ["the cat", "fun", "a dog"], SEQ)
    expected = cell_logits(model, arrays)[:, 0]
    np.testing.assert_allclose([r["score"] for r in records], expected, atol=1e-5)
    assert "label" not in records[0]


def test_bad_inputs_are_one_clear_line(models, tmp_path):
    ms.set_seed(0)
    config = models["config"]
    encoder = BertModel(config)
    save_checkpoint(tmp_path / "gd.ckpt", named_parameters(encoder, "bert."), model_metadata(encoder))
    with pytest.raises(ValueError, match="has no task head.*give a task checkpoint"):
        Predictor(tmp_path / "gd.ckpt", models["vocab"])
    with pytest.raises(FileNotFoundError, match="no vocabulary for .*pass --vocab_file"):
        Predictor(models["ckpt"])
    with pytest.raises(ValueError, match="2 label names .* for a model of 3 outputs"):
        Predictor(models["mindir"], labels=["a", "b"]).logits(["the cat"])
    with pytest.raises(ValueError, match="takes sequences of exactly 16 tokens"):
        Predictor(models["mindir"], seq_length=32)
    big = write_vocab(tmp_path, extra=[f"w{i}" for i in range(200)])
    with pytest.raises(ValueError, match=r"vocab.txt has \d+ tokens but the model only \d+ embeddings"):
        Predictor(models["ckpt"], big)
    with pytest.raises(ValueError, match="not both or neither"):
        main(["--model", str(models["onnx"])])
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"column 'text' is not in the header \(sentence\): name the text columns "
                                         r"with --text_a/--text_b$"):
        main(["--model", str(models["onnx"]), "--input", str(bad)])
    with pytest.raises(ValueError, match="holds no text to label"):
        main(["--model", str(models["onnx"]), "--input", str(bad), "--text_a", "sentence"])
    with pytest.raises(ValueError, match="name it .jsonl or .csv"):
        main(["--model", str(models["onnx"]), "the cat", "--output", str(tmp_path / "x.txt")])


def test_pairs_are_refused_by_a_model_of_a_single_text_task(models, tmp_path, monkeypatch):
    """A tab on standard input (or --text_b) makes a pair; an SST-2 model was never given pairs, and the
    second text would change its labels: one clear error instead of labels of the wrong input."""
    model = models["model"]
    sst2 = tmp_path / "sst2.ckpt"
    save_checkpoint(sst2, named_parameters(model), model_metadata(model, len(LABELS), LABELS, "sst2", SEQ))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a good film\tthe plot\n")))
    message = "trained on sst2, whose examples are single texts, but the input gives pairs"
    with pytest.raises(ValueError, match=message):
        main(["--model", str(sst2), "--vocab_file", str(models["vocab"]), "--input", "-"])
    with pytest.raises(ValueError, match=message):
        main(["--model", str(sst2), "--vocab_file", str(models["vocab"]), "a good film", "--text_b", "the plot"])


def test_corrupt_model_files_are_one_clear_line(models, tmp_path):
    """A truncated ONNX file, a MINDIR that is not one, and a deploy folder whose model.json is not JSON:
    a ValueError naming the file (run_cli's one line, exit 2), not the loaders' own exceptions."""
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(models["onnx"].read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"truncated.onnx is not an ONNX model ONNX Runtime can load \(.*\): export it "
                                         r"again with export.py or src.deploy$"):
        Predictor(truncated, models["vocab"])
    garbage = tmp_path / "garbage.mindir"
    garbage.write_bytes(b"not a model\n")
    with pytest.raises(ValueError, match=r"garbage.mindir is not a MINDIR file \(.*\): export it again with export.py$"):
        Predictor(garbage, models["vocab"])
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(models["onnx"].read_bytes())
    (folder / "vocab.txt").write_text(models["vocab"].read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "model.json").write_text("{\"labels\": [", encoding="utf-8")
    with pytest.raises(ValueError, match=r"deploy/model.json is not valid JSON \(Expecting value at line 1 column 13\)"):
        Predictor(folder)


def test_a_bare_exported_file_names_its_outputs_and_keeps_stdout_for_records(models, tmp_path, capsys):
    shutil.copy(models["onnx"], tmp_path / "student.onnx")  # no model.json beside it
    write_vocab(tmp_path)
    main(["--model", str(tmp_path / "student.onnx"), *TEXTS[:2]])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [set(r["probabilities"]) for r in records] == [{"LABEL_0", "LABEL_1", "LABEL_2"}] * 2
    assert "the model names no labels" in captured.err
