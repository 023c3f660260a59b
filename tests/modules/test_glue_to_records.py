"""GLUE and generic conversion: real dev sets with their counts, every task's layout, bad rows."""
import json
import re
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.glue_to_records import TASKS, TaskSpec, convert, main
from src.records_writer import schema_path
from src.tokenization import WordPieceTokenizer

ROOT = Path(__file__).resolve().parents[2]
SEQ = 64


@pytest.fixture
def tokenizer(minilm_dir):
    return WordPieceTokenizer(str(minilm_dir / "vocab.txt"))


def read_back(path, data_format="mindrecord"):
    """Every column of the records file `path` (or the records in the folder `path`) as the converter wrote it."""
    path = Path(path)
    if path.is_dir():  # MindDataset reads every shard of a file's group
        path = min(p for p in path.glob(f"*.{data_format}*") if p.suffix != ".db")
    if data_format == "mindrecord":
        data = ms.dataset.MindDataset(str(path), shuffle=False)
    else:
        data = ms.dataset.TFRecordDataset(str(path), schema=str(schema_path(path)), shuffle=False)
    rows = list(data.create_dict_iterator(num_epochs=1, output_numpy=True))
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def counts_in(summary):
    return dict(re.findall(r"([\w.-]+): (\d+)", summary.split("labels ", 1)[1]))


def test_tasks_table():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli-mm", "qnli", "rte", "wnli"}
    assert {name: spec.metric for name, spec in TASKS.items() if spec.metric != "accuracy"} == {
        "cola": "mcc", "stsb": "pearson"}
    assert TASKS["stsb"].labels is None and TASKS["stsb"].num_labels == 1
    assert TASKS["mnli"].num_labels == TASKS["mnli-mm"].num_labels == 3
    assert TASKS["qnli"].labels == ("entailment", "not_entailment")
    assert [name for name, spec in TASKS.items() if spec.text_b is None] == ["cola", "sst2"]


def test_sst2_dev(tmp_path, tokenizer, shared_data):
    source = shared_data / "glue" / "SST-2" / "dev.tsv"
    summary = convert(source, TASKS["sst2"], tokenizer, tmp_path / "sst2_dev.mindrecord", SEQ)
    assert summary.startswith("wrote 872 examples (0 bad rows skipped; labels 0: 428, 1: 444) to 1 files")
    rows = read_back(tmp_path)
    assert len(rows["label_ids"]) == 872 and rows["label_ids"].sum() == 444
    first_sentence, first_label = source.read_text().splitlines()[1].split("\t")
    np.testing.assert_array_equal(rows["input_ids"][0], tokenizer.encode(first_sentence, seq_length=SEQ)[0])
    assert rows["label_ids"][0] == int(first_label) and not rows["segment_ids"].any()


def test_mrpc_dev_pairs_with_bom(tmp_path, tokenizer, shared_data):
    source = shared_data / "glue" / "MRPC" / "dev.tsv"
    summary = convert(source, TASKS["mrpc"], tokenizer, tmp_path / "mrpc_dev.tfrecord", SEQ, data_format="tfrecord")
    assert counts_in(summary) == {"0": "129", "1": "279"}
    rows = read_back(tmp_path, "tfrecord")
    assert len(rows["label_ids"]) == 408
    quality, _, _, first, second = source.read_text(encoding="utf-8-sig").splitlines()[1].split("\t")
    expected = tokenizer.encode(first, second, seq_length=SEQ)
    for name, array in zip(("input_ids", "input_mask", "segment_ids"), expected):
        np.testing.assert_array_equal(rows[name][0], array)
    assert rows["label_ids"][0] == int(quality) and rows["segment_ids"][0].any()


def test_qnli_dev_whole_file(tmp_path, tokenizer, shared_data):
    summary = convert(shared_data / "glue" / "QNLI" / "dev.tsv", TASKS["qnli"], tokenizer,
                      tmp_path / "qnli_dev.mindrecord", SEQ, num_shards=2)
    assert counts_in(summary) == {"entailment": "2702", "not_entailment": "2761"}
    rows = read_back(tmp_path)
    assert len(rows["label_ids"]) == 5463 and rows["label_ids"].sum() == 2761


def test_cola_has_no_header(tmp_path, tokenizer):
    source = tmp_path / "train.tsv"
    source.write_text("gj04\t1\t\tOur friends won't buy this analysis.\n"
                      "gj04\t0\t*\tThey drank the pub.\n")
    assert counts_in(convert(source, TASKS["cola"], tokenizer, tmp_path / "cola.mindrecord", SEQ)) == {
        "0": "1", "1": "1"}
    assert read_back(tmp_path)["label_ids"].tolist() == [1, 0]


def test_stsb_is_regression(tmp_path, tokenizer):
    source = tmp_path / "dev.tsv"
    source.write_text("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                      "0\tmain\tx\t2012\t1\tnone\tnone\tA man plays.\tA man is playing.\t5.000\n"
                      "1\tmain\tx\t2012\t2\tnone\tnone\tA cat.\tA dog runs.\t0.750\n")
    summary = convert(source, TASKS["stsb"], tokenizer, tmp_path / "stsb.mindrecord", SEQ)
    assert "scores mean 2.875, range 0.75..5" in summary
    labels = read_back(tmp_path)["label_ids"]
    assert labels.dtype == np.float32 and labels.tolist() == [5.0, 0.75]


def test_mnli_reads_gold_label_by_name(tmp_path, tokenizer):
    header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "label2", "label3",
              "label4", "label5", "gold_label"]
    row = ["0", "1", "1e", "fiction", "(x)", "(y)", "(X)", "(Y)", "He ran.", "He moved.", "neutral",
           "entailment", "entailment", "entailment", "entailment", "entailment"]
    source = tmp_path / "dev_matched.tsv"
    source.write_text("\t".join(header) + "\n" + "\t".join(row) + "\n")
    convert(source, TASKS["mnli"], tokenizer, tmp_path / "mnli.mindrecord", SEQ)
    assert read_back(tmp_path)["label_ids"].tolist() == [1]


QQP = ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
       "1\t1\t2\tHow do I learn?\tWhat is the way to learn?\t1\n"
       "2\t3\t4\tWhy is the sky blue?\n"
       "3\t5\t6\tIs this a question?\tIs that one?\t0\n")


def test_malformed_rows_stop_the_conversion(tmp_path, tokenizer):
    source = tmp_path / "train.tsv"
    source.write_text(QQP)
    with pytest.raises(ValueError, match=r"train.tsv:3: 4 columns where the header has 6: "
                                         r"fix the row or pass --skip_bad_rows"):
        convert(source, TASKS["qqp"], tokenizer, tmp_path / "out" / "qqp.mindrecord", SEQ)
    assert list((tmp_path / "out").iterdir()) == []


def test_skip_bad_rows_counts_them(tmp_path, tokenizer):
    source = tmp_path / "train.tsv"
    source.write_text(QQP)
    summary = convert(source, TASKS["qqp"], tokenizer, tmp_path / "qqp.mindrecord", SEQ, skip_bad_rows=True)
    assert summary.startswith("wrote 2 examples (1 bad rows skipped; labels 0: 1, 1: 1)")


@pytest.mark.parametrize("row, message", [
    (b"a fine sentence .\t2\n", r":2: unknown label '2' \(expected one of 0, 1\)"),
    (b" \t1\n", r":2: empty text in column 'sentence'"),
    (b"caf\xe9 au lait\t1\n", r":2: bytes that are not UTF-8 at byte 3"),
])
def test_bad_row_messages(tmp_path, tokenizer, row, message):
    source = tmp_path / "dev.tsv"
    source.write_bytes(b"sentence\tlabel\n" + row)
    with pytest.raises(ValueError, match=message):
        convert(source, TASKS["sst2"], tokenizer, tmp_path / "x.mindrecord", SEQ)


def test_wrong_file_for_the_task(tmp_path, tokenizer):
    source = tmp_path / "dev.tsv"
    source.write_text("sentence\tlabel\nhello\t1\n")
    with pytest.raises(ValueError, match=r"column 'question' is not in the header \(sentence, label\)"):
        convert(source, TASKS["qnli"], tokenizer, tmp_path / "x.mindrecord", SEQ)
    rows = tmp_path / "dev.jsonl"  # CoLA's columns are numbers (its files have no header): JSONL cannot give them
    rows.write_text('{"sentence": "hello", "label": 1}\n')
    with pytest.raises(ValueError, match=r"dev\.jsonl: JSONL rows are read by field name, not by column number"):
        convert(rows, TASKS["cola"], tokenizer, tmp_path / "x.mindrecord", SEQ)


def run_generic(tmp_path, vocab_file, name, content, *options):
    """Runs the CLI's main() on a generic file written from `content`; returns the records read back."""
    source = tmp_path / name
    source.write_bytes(content.encode())
    output = tmp_path / "out" / f"{source.stem}.mindrecord"
    main(["--task", "generic", "--input_file", str(source), "--output_file", str(output), "--vocab_file", vocab_file,
          "--seq_length", str(SEQ), *options])
    return read_back(output)


@pytest.fixture
def vocab_file(minilm_dir):
    return str(minilm_dir / "vocab.txt")


def test_generic_csv_with_quotes(tmp_path, vocab_file, tokenizer, capsys):
    rows = run_generic(tmp_path, vocab_file, "reviews.csv",
                       'id,review,stars\n1,"Good, really good",pos\n2,"Two\nlines",neg\n3,fine,neutral\n',
                       "--text_a", "review", "--label", "stars", "--labels", "neg,neutral,pos")
    assert rows["label_ids"].tolist() == [2, 0, 1]
    np.testing.assert_array_equal(rows["input_ids"][0], tokenizer.encode("Good, really good", seq_length=SEQ)[0])
    assert "labels neg: 1, neutral: 1, pos: 1" in capsys.readouterr().out


def test_generic_jsonl_pairs_and_regression(tmp_path, vocab_file, tokenizer):
    lines = [{"q": "Is it hot?", "a": "It is warm.", "score": 3.5}, {"q": "Why?", "a": "Because.", "score": 1}]
    rows = run_generic(tmp_path, vocab_file, "pairs.jsonl", "".join(json.dumps(line) + "\n" for line in lines),
                       "--text_a", "q", "--text_b", "a", "--label", "score")
    assert rows["label_ids"].dtype == np.float32 and rows["label_ids"].tolist() == [3.5, 1.0]
    np.testing.assert_array_equal(rows["segment_ids"][1], tokenizer.encode("Why?", "Because.", seq_length=SEQ)[2])


def test_generic_jsonl_missing_field(tmp_path, vocab_file):
    with pytest.raises(ValueError, match=r"x.jsonl:2: no column 'text'"):
        run_generic(tmp_path, vocab_file, "x.jsonl", '{"text": "ok", "y": "1"}\n{"txt": "typo", "y": "0"}\n',
                    "--text_a", "text", "--label", "y", "--labels", "0,1")


def test_cli_bad_row_fails_in_one_line_and_leaves_nothing(tmp_path, minilm_dir):
    source = tmp_path / "dev.tsv"
    source.write_text("sentence\tlabel\ngood movie\t1\nbad movie\tnegative\n")
    output = tmp_path / "out" / "sst2_dev.mindrecord"
    result = subprocess.run(
        [sys.executable, "-m", "src.glue_to_records", "--task", "sst2", "--input_file", str(source),
         "--output_file", str(output), "--vocab_file", str(minilm_dir / "vocab.txt"), "--seq_length", "32"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {source}:3: unknown label 'negative' (expected one of 0, 1): "
        "fix the row or pass --skip_bad_rows"]
    assert list(output.parent.iterdir()) == []


@pytest.mark.parametrize("data_format", ["mindrecord", "tfrecord"])
def test_example_id_is_the_row_in_the_source_file(tmp_path, tokenizer, data_format):
    source = tmp_path / "dev.tsv"
    source.write_text("sentence\tlabel\nfirst\t1\n\nsecond\tbad\nthird\t0\n")
    output = tmp_path / f"dev.{data_format}"
    convert(source, TASKS["sst2"], tokenizer, output, SEQ, data_format=data_format, skip_bad_rows=True)
    rows = read_back(output, data_format)
    assert rows["example_id"].dtype == np.int64 and rows["example_id"].tolist() == [0, 2]
    assert rows["label_ids"].tolist() == [1, 0]
    np.testing.assert_array_equal(rows["input_ids"][1], tokenizer.encode("third", seq_length=SEQ)[0])


@pytest.mark.parametrize("name, content", [
    ("pairs.tsv", "Is it hot?\tIt is warm.\tyes\nWhy?\tBecause.\tno\n"),
    ("pairs.csv", '"Is it hot?","It is warm.",yes\nWhy?,Because.,no\n'),
])
def test_generic_file_without_header(tmp_path, vocab_file, tokenizer, name, content):
    rows = run_generic(tmp_path, vocab_file, name, content, "--no_header", "--text_a", "0", "--text_b", "1",
                       "--label", "2", "--labels", "no,yes")
    assert rows["label_ids"].tolist() == [1, 0]  # the first line is an example, not a header
    expected = tokenizer.encode("Is it hot?", "It is warm.", seq_length=SEQ)
    np.testing.assert_array_equal(rows["input_ids"][0], expected[0])
    np.testing.assert_array_equal(rows["segment_ids"][0], expected[2])


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "src.glue_to_records", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_no_header_needs_column_numbers(tmp_path, vocab_file):
    result = run_cli("--task", "generic", "--no_header", "--input_file", tmp_path / "x.tsv", "--output_file",
                     tmp_path / "x.mindrecord", "--vocab_file", vocab_file, "--text_a", "review", "--label", "2")
    assert result.returncode == 2
    assert "error: with --no_header, --text_a is a column number counted from 0, got 'review'" in result.stderr


def test_column_numbers_on_a_file_with_a_header_point_to_no_header(tmp_path, vocab_file, tokenizer):
    source = tmp_path / "x.tsv"
    source.write_text("good movie\t1\n")
    with pytest.raises(ValueError, match=r"column '0' is not in the header \(good movie, 1\): .*--no_header and "
                                         r"column numbers"):
        convert(source, TaskSpec("0", None, "1", ("0", "1"), "accuracy"), tokenizer, tmp_path / "x.mindrecord", SEQ)


RECIPE_VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] The Paris France Marie visited in May . the".split()


@pytest.fixture
def cased_vocab(tmp_path):
    path = tmp_path / "cased" / "vocab.txt"
    path.parent.mkdir()
    path.write_text("\n".join(RECIPE_VOCAB) + "\n")
    return path


def test_cased_vocabulary_keeps_names(tmp_path, cased_vocab):
    source = tmp_path / "dev.tsv"
    source.write_text("sentence\tlabel\nMarie visited France in May .\t1\n")
    output = tmp_path / "out" / "dev.mindrecord"
    result = run_cli("--task", "sst2", "--input_file", source, "--output_file", output, "--vocab_file", cased_vocab,
                     "--seq_length", 9)
    assert result.returncode == 0, result.stderr
    assert f"do_lower_case false judged from the letters of {cased_vocab}" in result.stdout
    ids = read_back(output)["input_ids"][0]
    assert [RECIPE_VOCAB[i] for i in ids] == "[CLS] Marie visited France in May . [SEP] [PAD]".split()

    (cased_vocab.parent / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    result = run_cli("--task", "sst2", "--input_file", source, "--output_file", output, "--vocab_file", cased_vocab,
                     "--seq_length", 9)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {cased_vocab} is a cased vocabulary, but the text would be lower-cased")
    assert result.stderr.rstrip().endswith("pass --do_lower_case false (and correct tokenizer_config.json)")
    assert output.exists()  # the earlier file is left as it was, nothing half-written beside it
    assert sorted(p.name for p in output.parent.iterdir()) == ["dev.mindrecord", "dev.mindrecord.db"]


def test_many_unknown_tokens_are_warned_about(tmp_path, cased_vocab):
    source = tmp_path / "dev.tsv"
    source.write_text("sentence\tlabel\nMarie visited Rome in June .\t1\n")
    result = run_cli("--task", "sst2", "--input_file", source, "--output_file", tmp_path / "dev.mindrecord",
                     "--vocab_file", cased_vocab, "--seq_length", 9)
    assert result.returncode == 0
    assert f"WARNING: {source}: 33.3% of the tokens are [UNK]: is --vocab_file the model's vocabulary" in result.stderr
