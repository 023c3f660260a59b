"""Corpus packing: nothing lost or repeated, lengths respected, deterministic, CLI errors."""
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.corpus_to_records import convert, pack_document
from src.dataset import count_examples, create_dataset
from src.tokenization import WordPieceTokenizer

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"wrote (\d+) sequences \((\d+) tokens, ([\d.]+)% padding\) to (\d+) files "
                     r"in [\d.]+ s \(\d+ lines/s\); do_lower_case true from .*tokenizer_config.json")


@pytest.fixture
def tokenizer(minilm_dir):
    return WordPieceTokenizer(str(minilm_dir / "vocab.txt"))


def test_pack_document_keeps_every_token_in_order():
    rng = random.Random(3)
    document = [list(range(start, start + length)) for start, length in
                [(0, 5), (100, 40), (200, 3), (300, 1), (400, 12), (500, 25), (600, 7)]]
    for short_seq_prob in (0.0, 0.5):
        pairs = pack_document(document, 20, rng, short_seq_prob)
        flat = [t for a, b in pairs for t in a + b]
        assert flat == [t for line in document for t in line]  # the 40-token line is cut, not dropped
        assert all(0 < len(a) and len(a) + len(b) <= 20 for a, b in pairs)


def test_pack_document_splits_at_line_boundaries():
    document = [[1] * 4, [2] * 4, [3] * 4, [4] * 4]
    pairs = pack_document(document, 16, random.Random(0), short_seq_prob=0.0)
    assert len(pairs) == 1
    first, second = pairs[0]
    assert len(first) % 4 == 0 and len(second) % 4 == 0 and first and second


def test_pack_document_is_deterministic():
    document = [list(range(n)) for n in (3, 9, 4, 30, 2, 8, 8)]
    assert pack_document(document, 10, random.Random(7)) == pack_document(document, 10, random.Random(7))


def read_rows(path, seq_length):
    data = create_dataset(str(path), "mindrecord", batch_size=64, seq_length=seq_length, with_labels=False,
                          shuffle=False, drop_remainder=False)
    batches = list(data.create_tuple_iterator(num_epochs=1, output_numpy=True))
    return [np.concatenate([b[i] for b in batches]) for i in range(3)]


def test_wikitext_lines_become_sequences_without_loss(tmp_path, tokenizer, shared_data):
    raw = (shared_data / "wikitext" / "wikitext-2-raw.wiki.test.raw").read_bytes()
    corpus = tmp_path / "wiki.txt"
    corpus.write_bytes(b"".join(raw.splitlines(keepends=True)[:300]))
    assert b"\r\n" in corpus.read_bytes()
    summary = convert([corpus], tokenizer, tmp_path / "out", seq_length=64)
    sequences, tokens, padding, files = (float(g) for g in SUMMARY.fullmatch(summary).groups())
    input_ids, input_mask, segment_ids = read_rows(tmp_path / "out", 64)
    assert count_examples(str(tmp_path / "out"), "mindrecord") == len(input_ids) == sequences
    assert input_mask.sum() == tokens and files == 1
    assert padding == pytest.approx(100 * (1 - tokens / (sequences * 64)), abs=0.05)

    lines = [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines()]
    expected = [t for ids in tokenizer.token_ids([line for line in lines if line]) for t in ids]
    special = (input_ids == tokenizer.cls_id) | (input_ids == tokenizer.sep_id)
    assert input_ids[input_mask == 1][~special[input_mask == 1]].tolist() == expected
    assert (input_ids[:, 0] == tokenizer.cls_id).all()
    seps = special.sum(1) - 1
    assert set(seps.tolist()) <= {1, 2} and (seps == 2).any()
    for row in np.flatnonzero(seps == 2):  # pairs: segment 1 runs from after the first [SEP] to the end
        first_sep = np.flatnonzero(input_ids[row] == tokenizer.sep_id)[0]
        assert segment_ids[row, first_sep + 1:input_mask[row].sum()].all()
        assert not segment_ids[row, :first_sep + 1].any()


def test_crlf_and_lf_give_the_same_records(tmp_path, tokenizer):
    text = "First line of a doc.\nSecond line.\n\nAnother document here.\nWith two lines.\n"
    (tmp_path / "lf.txt").write_text(text)
    (tmp_path / "crlf.txt").write_bytes(text.replace("\n", "\r\n").encode())
    for name in ("lf", "crlf"):
        convert([tmp_path / f"{name}.txt"], tokenizer, tmp_path / name, seq_length=32, data_format="tfrecord")
    assert (tmp_path / "lf" / "gd.tfrecord").read_bytes() == (tmp_path / "crlf" / "gd.tfrecord").read_bytes()


def test_seed_decides_the_packing(tmp_path, tokenizer):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"sentence number {i} of the only document ." for i in range(60)))
    outputs = {}
    for run, seed in (("a", 1), ("b", 1), ("c", 2)):
        convert([corpus], tokenizer, tmp_path / run, seq_length=48, num_shards=2, data_format="tfrecord", seed=seed)
        outputs[run] = b"".join(p.read_bytes() for p in sorted((tmp_path / run).glob("*.tfrecord")))
    assert outputs["a"] == outputs["b"] and outputs["a"] != outputs["c"]


def test_empty_input_is_an_error_and_writes_nothing(tmp_path, tokenizer):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n  \n\r\n")
    with pytest.raises(ValueError, match="no text in .*empty.txt: give one sentence or paragraph a line"):
        convert([corpus], tokenizer, tmp_path / "out", seq_length=32)
    assert list((tmp_path / "out").iterdir()) == []


def test_cased_vocabulary_keeps_names(tmp_path):
    vocab = "[PAD] [UNK] [CLS] [SEP] [MASK] The Paris France Marie visited in May . the".split()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "corpus.txt").write_text("Marie visited France in May .\n")
    summary = convert([tmp_path / "corpus.txt"], WordPieceTokenizer(str(tmp_path / "vocab.txt")), tmp_path / "out",
                      seq_length=9)
    assert summary.endswith(f"do_lower_case false judged from the letters of {tmp_path / 'vocab.txt'}")
    input_ids, _, _ = read_rows(tmp_path / "out", 9)
    assert [vocab[i] for i in input_ids[0]] == "[CLS] Marie visited France in May . [SEP] [PAD]".split()


def test_cli_reports_a_missing_input_in_one_line(tmp_path, minilm_dir):
    result = subprocess.run(
        [sys.executable, "-m", "src.corpus_to_records", "--input_files", str(tmp_path / "missing.txt"),
         "--vocab_file", str(minilm_dir / "vocab.txt"), "--output_dir", str(tmp_path / "out"),
         "--format", "tfrecord", "--do_lower_case", "true"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: input file {tmp_path / 'missing.txt'} does not exist"]
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
