"""CoNLL conversion: label alignment against transformers' word_ids, long sentences, bad lines, real CoNLL-2003."""
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.conll_to_records import IGNORE_INDEX, convert, label_order, labels_path, main, read_labels_file, read_sentences
from src.records_writer import schema_path
from src.tokenization import WordPieceTokenizer
from src.windows import features_path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
-DOCSTART- -X- -X- O
Unbelievably RB B-ADVP O
Schwarzenegger NNP B-NP B-PER
"""
SENTENCES = [["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."], ["Peter", "Blackburn"],
             ["BRUSSELS", "1996-08-22"], ["Unbelievably", "Schwarzenegger"]]


@pytest.fixture
def tokenizer(minilm_dir):
    return WordPieceTokenizer(str(minilm_dir / "vocab.txt"))


@pytest.fixture
def hf_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers", reason="the alignment reference is transformers' tokenizer")
    return transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))


def read_back(path, data_format="mindrecord"):
    """Every column of a records file, rows in file order."""
    if data_format == "mindrecord":
        data = ms.dataset.MindDataset(str(path), shuffle=False)
    else:
        data = ms.dataset.TFRecordDataset(str(path), schema=str(schema_path(path)), shuffle=False)
    rows = list(data.create_dict_iterator(num_epochs=1, output_numpy=True))
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def hf_alignment(hf_tokenizer, words, tags, labels, seq_length):
    """input_ids and label ids as Hugging Face's token-classification recipe builds them (label on a word's
    first piece, -100 elsewhere): the independent reference for our alignment."""
    encoding = hf_tokenizer(words, is_split_into_words=True, padding="max_length", max_length=seq_length)
    word_ids, previous, label_ids = encoding.word_ids(), None, []
    for word in word_ids:
        label_ids.append(IGNORE_INDEX if word is None or word == previous else labels.index(tags[word]))
        previous = word
    return np.array(encoding["input_ids"]), np.array(label_ids)


@pytest.mark.parametrize("data_format", ["mindrecord", "tfrecord"])
def test_sample_matches_transformers_alignment(tmp_path, tokenizer, hf_tokenizer, data_format):
    source = tmp_path / "sample.txt"
    source.write_text(SAMPLE)
    output = tmp_path / f"ner.{data_format}"
    summary, labels = convert(source, tokenizer, output, 16, data_format=data_format)
    assert summary.startswith("wrote 4 records from 4 sentences (15 words; 0 sentences longer than 14 pieces")
    assert "B- tags LOC: 1, MISC: 2, ORG: 1, PER: 2" in summary
    assert labels == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    assert json.loads(labels_path(output).read_text()) == labels
    assert [s.words for s in read_sentences(source)] == SENTENCES

    rows = read_back(output, data_format)
    assert set(rows) == {"input_ids", "input_mask", "segment_ids", "label_ids", "example_id"}
    assert rows["label_ids"].shape == (4, 16)
    np.testing.assert_array_equal(rows["example_id"].reshape(-1), np.arange(4))
    tags = [line.split()[-1] for line in SAMPLE.splitlines() if line and not line.startswith("-DOCSTART-")]
    starts = np.cumsum([0] + [len(words) for words in SENTENCES])
    for row, words in enumerate(SENTENCES):
        ids, label_ids = hf_alignment(hf_tokenizer, words, tags[starts[row]:starts[row + 1]], labels, 16)
        np.testing.assert_array_equal(rows["input_ids"][row], ids)
        np.testing.assert_array_equal(rows["label_ids"][row], label_ids)
        np.testing.assert_array_equal(rows["input_mask"][row], ids != tokenizer.pad_id)
    assert not rows["segment_ids"].any()
    # "1996-08-22" is several pieces: one label, then ignored positions.
    assert (rows["label_ids"][2] != IGNORE_INDEX).sum() == 2

    with np.load(features_path(output)) as features:
        assert features["labels"].tolist() == labels
        np.testing.assert_array_equal(features["sentence_starts"], starts)
        assert [labels[i] for i in features["gold_label_ids"]] == tags
        np.testing.assert_array_equal(features["sentence_index"], np.arange(4))
        assert not features["first_word"].any()


def test_label_order_is_fixed():
    assert label_order(["I-PER", "O", "B-ORG", "B-PER", "O", "I-ORG"]) == ["O", "B-ORG", "I-ORG", "B-PER", "I-PER"]


@pytest.mark.parametrize("long_sentences", ["split", "truncate"])
def test_long_sentences(tmp_path, tokenizer, long_sentences):
    words = [f"w{i}" for i in range(9)]  # each word two pieces ("w", "##N")
    assert all(len(ids) == 2 for ids in tokenizer.token_ids(words))
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "B-ORG", "I-ORG", "I-ORG"]
    source = tmp_path / "long.txt"
    source.write_text("\n".join(f"{w} {t}" for w, t in zip(words, tags)) + "\n\nshort O\n")
    output = tmp_path / "long.mindrecord"
    summary, labels = convert(source, tokenizer, output, 9, long_sentences=long_sentences)  # 7 pieces of room
    rows = read_back(output)
    with np.load(features_path(output)) as features:
        sentence_index, first_word = features["sentence_index"].tolist(), features["first_word"].tolist()
    if long_sentences == "split":
        assert "wrote 4 records from 2 sentences (10 words; 1 sentences longer than 7 pieces split at word " \
               "boundaries;" in summary
        assert sentence_index == [0, 0, 0, 1] and first_word == [0, 3, 6, 0]
        # Three words (six pieces) per window; every word labelled exactly once, in order.
        word_labels = [labels[i] for row in rows["label_ids"][:3] for i in row if i != IGNORE_INDEX]
        assert word_labels == tags
    else:
        assert "1 sentences longer than 7 pieces truncated (6 words dropped)" in summary
        assert sentence_index == [0, 1] and first_word == [0, 0]
        assert [labels[i] for i in rows["label_ids"][0] if i != IGNORE_INDEX] == tags[:3]
    assert (rows["input_mask"].sum(1) <= 9).all() and (rows["label_ids"][:, 0] == IGNORE_INDEX).all()


def test_one_word_longer_than_the_window_is_cut(tmp_path, tokenizer):
    source = tmp_path / "cut.txt"
    source.write_text("a O\n" + "-".join(["x"] * 10) + " B-MISC\nb O\n")  # x - x - ...: 19 pieces
    summary, labels = convert(source, tokenizer, tmp_path / "cut.mindrecord", 8)
    assert "1 words cut to 6 pieces" in summary
    rows = read_back(tmp_path / "cut.mindrecord")
    assert [[labels[i] for i in row if i != IGNORE_INDEX] for row in rows["label_ids"]] == [["O"], ["B-MISC"], ["O"]]
    assert rows["input_mask"][1].sum() == 8


def test_given_labels_fix_the_ids(tmp_path, tokenizer):
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("Paris B-LOC\nis O\nnice O\n\nBob B-PER\n")
    dev.write_text("Bob B-PER\nsaw O\nParis B-LOC\n")
    _, labels = convert(train, tokenizer, tmp_path / "train.mindrecord", 16)
    _, dev_labels = convert(dev, tokenizer, tmp_path / "dev.mindrecord", 16,
                            labels=read_labels_file(labels_path(tmp_path / "train.mindrecord")))
    assert dev_labels == labels == ["O", "B-LOC", "B-PER"]
    first_pieces = read_back(tmp_path / "dev.mindrecord")["label_ids"][0]
    assert first_pieces[first_pieces != IGNORE_INDEX].tolist() == [2, 0, 1]
    dev.write_text("Bob B-PER\nin O\nBerlin B-MISC\n")
    with pytest.raises(ValueError, match=r"dev\.txt:3: tag 'B-MISC' is not in the label list \(O, B-LOC, B-PER\)"):
        convert(dev, tokenizer, tmp_path / "dev2.mindrecord", 16, labels=labels)


@pytest.mark.parametrize("content, message", [
    ("EU B-ORG\nrejects\n", r"bad\.txt:2: the word 'rejects' has no tag: fix the line or pass --skip_bad_rows"),
    ("EU NNP\n", r"bad\.txt:1: tag 'NNP' is not an IOB tag \(O, B-TYPE or I-TYPE\): check --tag_column"),
    ("\n\n", r"no sentences in .*bad\.txt"),
])
def test_bad_lines(tmp_path, tokenizer, content, message):
    source = tmp_path / "bad.txt"
    source.write_text(content)
    with pytest.raises(ValueError, match=message):
        convert(source, tokenizer, tmp_path / "x.mindrecord", 16)
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".*"))  # nothing half-written


def test_tag_column_picks_the_column(tmp_path, tokenizer):
    source = tmp_path / "four.txt"
    source.write_text(SAMPLE)
    _, chunk_labels = convert(source, tokenizer, tmp_path / "chunks.mindrecord", 16, tag_column=2)
    assert chunk_labels == ["O", "B-ADVP", "B-NP", "I-NP", "B-VP", "I-VP"]
    _, ner_labels = convert(source, tokenizer, tmp_path / "ner.mindrecord", 16, tag_column=3)
    assert ner_labels == convert(source, tokenizer, tmp_path / "last.mindrecord", 16)[1]


def test_skip_bad_rows_skips_whole_sentences(tmp_path, tokenizer):
    source = tmp_path / "bad.txt"
    source.write_text("EU B-ORG\nrejects\ncall O\n\nPeter B-PER\n\nBad X-TAG\n")
    summary, _ = convert(source, tokenizer, tmp_path / "x.mindrecord", 16, skip_bad_rows=True)
    assert "wrote 1 records from 1 sentences (1 words;" in summary and "2 bad sentences skipped" in summary


def test_tag_column_out_of_range(tmp_path, tokenizer):
    source = tmp_path / "x.txt"
    source.write_text("EU B-ORG\n")
    with pytest.raises(ValueError, match=r"x\.txt:1: no tag column 5 in a line of 2 columns"):
        convert(source, tokenizer, tmp_path / "x.mindrecord", 16, tag_column=5)
    with pytest.raises(ValueError, match=r"x\.txt:1: no tag column 0 in a line of 2 columns"):
        convert(source, tokenizer, tmp_path / "x.mindrecord", 16, tag_column=0)  # that is the word


def test_cli_error_is_one_line_and_leaves_nothing(tmp_path, minilm_dir):
    source = tmp_path / "bad.txt"
    source.write_text("EU B-ORG\nrejects\n")
    run = subprocess.run([sys.executable, "-m", "src.conll_to_records", "--input_file", str(source),
                          "--output_file", str(tmp_path / "out" / "ner.mindrecord"),
                          "--vocab_file", str(minilm_dir / "vocab.txt")],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"error: {source}:2: the word 'rejects' has no tag: fix the line or pass "
                                  f"--skip_bad_rows")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_writes_labels_beside(tmp_path, minilm_dir, capsys):
    source = tmp_path / "ok.txt"
    source.write_text("EU B-ORG\nrejects O\n")
    main(["--input_file", str(source), "--output_file", str(tmp_path / "ner.tfrecord"), "--format", "tfrecord",
          "--vocab_file", str(minilm_dir / "vocab.txt"), "--seq_length", "12", "--labels", "O,B-ORG,I-ORG"])
    assert capsys.readouterr().out.startswith("wrote 1 records from 1 sentences")
    assert json.loads((tmp_path / "ner.labels.json").read_text()) == ["O", "B-ORG", "I-ORG"]
    assert json.loads(schema_path(tmp_path / "ner.tfrecord").read_text())["columns"]["label_ids"] == \
        {"type": "int64", "rank": 1, "shape": [12]}


def test_real_conll2003(tmp_path, tokenizer, hf_tokenizer, shared_data):
    folder = shared_data / "conll2003"
    train = read_sentences(folder / "train.txt")
    assert len(train) == 14041 and not any(s.error for s in train)
    assert label_order(tag for s in train for tag in s.tags) == [
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    labels = label_order(tag for s in train for tag in s.tags)
    for name, sentences in (("dev", 3250), ("test", 3453)):  # test.txt has -DOCSTART- lines
        output = tmp_path / f"{name}.mindrecord"
        summary, _ = convert(folder / f"{name}.txt", tokenizer, output, 128, labels=labels)
        assert summary.startswith(f"wrote {sentences + (3 if name == 'dev' else 1)} records from {sentences} "
                                  f"sentences"), summary
    rows = read_back(tmp_path / "dev.mindrecord")
    dev = read_sentences(folder / "dev.txt")
    with np.load(features_path(tmp_path / "dev.mindrecord")) as features:
        sentence_index = features["sentence_index"]
        assert features["gold_label_ids"].size == sum(len(s.words) for s in dev) == 51362
    single = np.flatnonzero(np.bincount(sentence_index) == 1)
    for record in np.flatnonzero(np.isin(sentence_index, single))[::10]:  # every 10th unsplit sentence
        sentence = dev[sentence_index[record]]
        ids, label_ids = hf_alignment(hf_tokenizer, sentence.words, sentence.tags, labels, 128)
        np.testing.assert_array_equal(rows["input_ids"][record], ids)
        np.testing.assert_array_equal(rows["label_ids"][record], label_ids)
    # Split sentences: their windows together label every word once, in order.
    for index in np.flatnonzero(np.bincount(sentence_index) > 1):
        windows = rows["label_ids"][sentence_index == index]
        assert [labels[i] for i in windows[windows != IGNORE_INDEX]] == dev[index].tags
