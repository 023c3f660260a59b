"""CoNLL-style NER files -> token-classification records with WordPiece-aligned label ids.

Each line holds a word and its tag in whitespace-separated columns (`--tag_column`, the last by
default, as in CoNLL-2003's `word POS chunk NER`); a blank line ends a sentence and
`-DOCSTART-` lines are skipped. Each word is split into WordPieces; its label id sits on its first
piece and the other pieces, [CLS], [SEP] and padding get `IGNORE_INDEX` (-100), so the loss and
the metric see one prediction per word, as in BERT's NER fine-tuning (Devlin et al. 2018, 5.3).

A sentence longer than `seq_length - 2` pieces is split at word boundaries into consecutive
windows (`--long_sentences split`, the default: no word is lost), or keeps only its first window
(`truncate`). Beside the records go:
  STEM.labels.json    the label names in id order (a JSON list), to convert dev/test files with the
                      same ids (`--labels_file`) and to name the classifier's outputs;
  STEM.features.npz   what entity-level scoring needs (see `assessment_method.ner_scores`):
                      labels (C,) str; sentence_index (F,) int32, the sentence of each record;
                      first_word (F,) int32, the index in its sentence of the record's first word;
                      gold_label_ids (W,) int32, every word's label in file order;
                      sentence_starts (S+1,) int64, where each sentence's words begin in it.
Records (column `example_id` = the record's row in STEM.features.npz): input_ids, input_mask,
segment_ids (int32, (seq_length,)), label_ids (int32, (seq_length,)), example_id (int64).

Usage:
  python -m src.conll_to_records --input_file conll2003/train.txt --output_file out/ner_train.mindrecord \
      --vocab_file vocab.txt --seq_length 128
  python -m src.conll_to_records --input_file conll2003/dev.txt --output_file out/ner_dev.mindrecord \
      --vocab_file vocab.txt --seq_length 128 --labels_file out/ner_train.labels.json
"""
import argparse
import collections
import dataclasses
import json
import re
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from src.cli import read_json, require_file, run_cli
from src.glue_to_records import BadRow
from src.logger import get_logger
from src.records_writer import EXAMPLE_ID_COLUMN, ID_COLUMNS, LABEL_COLUMN, RecordsWriter, add_output_args
from src.tokenization import WordPieceTokenizer, add_tokenizer_args
from src.windows import features_path, files_beside, pack_word_windows, word_windows

IGNORE_INDEX = -100  # label of positions left out of the loss and the metric (torch's CrossEntropyLoss default)
DOCSTART = "-DOCSTART-"
LONG_SENTENCES = ("split", "truncate")
_IOB_TAG = re.compile(r"O|[BI]-\S+")


@dataclasses.dataclass
class Sentence:
    """One sentence of the input: where it starts, its words and tags, and its first bad line if any
    (line number, what is wrong)."""
    line_no: int
    words: list
    tags: list
    error: tuple | None = None


def labels_path(output_file):
    """Where the label list of `output_file` goes: `stem.labels.json` beside it."""
    output_file = Path(output_file)
    return output_file.with_name(f"{output_file.stem}.labels.json")


def _parse_line(raw, tag_column):
    """(word, tag) of one non-blank line; raises BadRow."""
    try:
        fields = raw.decode("utf-8").split()
    except UnicodeDecodeError as err:
        raise BadRow(f"bytes that are not UTF-8 at byte {err.start}") from None
    if len(fields) < 2:
        raise BadRow(f"the word {fields[0]!r} has no tag")
    if not -len(fields) <= tag_column < len(fields) or tag_column % len(fields) == 0:
        raise BadRow(f"no tag column {tag_column} in a line of {len(fields)} columns")
    tag = fields[tag_column]
    if not _IOB_TAG.fullmatch(tag):
        raise BadRow(f"tag {tag!r} is not an IOB tag (O, B-TYPE or I-TYPE): check --tag_column")
    return fields[0], tag


def read_sentences(path, tag_column=-1):
    """Reads a CoNLL-style file into sentences; a sentence with a bad line carries the first error.

    Args:
        path (str | Path): the file, UTF-8.
        tag_column (int): column of the tag, counted from 0, negative from the end. Default: -1.
    Returns:
        list[Sentence]: in file order, empty sentences (blank-line runs) left out.
    """
    sentences, current = [], None
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            raw = raw.removeprefix(b"\xef\xbb\xbf") if line_no == 1 else raw
            fields = raw.split(maxsplit=1)
            if not fields or fields[0] == DOCSTART.encode():
                current = None  # a blank line, or a document start, ends the sentence
                continue
            if current is None:
                current = Sentence(line_no, [], [])
                sentences.append(current)
            try:
                word, tag = _parse_line(raw, tag_column)
            except BadRow as err:
                current.error = current.error or (line_no, str(err))
                continue
            current.words.append(word)
            current.tags.append(tag)
    return sentences


def label_order(tags):
    """A fixed label order for a set of tags: O first, then by entity type, B- before I-."""
    return sorted(set(tags), key=lambda tag: (tag != "O", tag[2:], tag[:1]))


@dataclasses.dataclass
class ConversionStats:
    """What a conversion wrote and left out, for its summary line."""
    sentences: int = 0
    words: int = 0
    records: int = 0
    long_sentences: int = 0
    dropped_words: int = 0
    cut_words: int = 0
    skipped: int = 0


def build_features(sentences, label_ids, tokenizer, seq_length, long_sentences, stats):
    """Record columns and the feature mapping of labelled sentences.

    Args:
        sentences (list[Sentence]): good sentences.
        label_ids (list[list[int]]): each sentence's label id per word.
        tokenizer (WordPieceTokenizer): splits words into pieces; a word it turns into no piece
            (control characters only) gets [UNK], so every word keeps a first piece and its label.
        seq_length (int): tokens per record.
        long_sentences (str): 'split' or 'truncate'.
        stats (ConversionStats): counts updated in place.
    Returns:
        (dict of columns, dict of mapping arrays): input_ids, input_mask, segment_ids, label_ids
        (F, seq_length) int32; sentence_index, first_word (F,) int32.
    """
    room = seq_length - 2
    all_words = [word for sentence in sentences for word in sentence.words]
    all_pieces = iter([ids or [tokenizer.unk_id] for ids in tokenizer.token_ids(all_words)])
    windows, window_labels, sentence_index, first_word = [], [], [], []
    for index, (sentence, labels) in enumerate(zip(sentences, label_ids)):
        pieces = [next(all_pieces) for _ in sentence.words]
        spans = word_windows([len(p) for p in pieces], room)
        if len(spans) > 1:
            stats.long_sentences += 1
            if long_sentences == "truncate":
                stats.dropped_words += len(sentence.words) - spans[0][1]
                spans = spans[:1]
        for start, end in spans:
            stats.cut_words += sum(len(p) > room for p in pieces[start:end])
            windows.append(pieces[start:end])
            window_labels.append(np.array(labels[start:end] + [IGNORE_INDEX], np.int32))  # index -1 -> ignored
            sentence_index.append(index)
            first_word.append(start)
    input_ids, input_mask, segment_ids, word_index = pack_word_windows(windows, tokenizer, seq_length)
    token_labels = np.stack([labels[words] for labels, words in zip(window_labels, word_index)])
    columns = {ID_COLUMNS[0]: input_ids, ID_COLUMNS[1]: input_mask, ID_COLUMNS[2]: segment_ids,
               LABEL_COLUMN: token_labels}
    mapping = {"sentence_index": np.array(sentence_index, np.int32), "first_word": np.array(first_word, np.int32)}
    return columns, mapping


def convert(input_file, tokenizer, output_file, seq_length, labels=None, tag_column=-1,
            long_sentences="split", data_format="mindrecord", num_shards=1, skip_bad_rows=False):
    """Converts one CoNLL-style file; writes the records, STEM.labels.json and STEM.features.npz.

    Args:
        input_file (str): the CoNLL-style file.
        tokenizer (WordPieceTokenizer): the teacher's WordPiece tokenizer.
        output_file (str): records to write (see `records_writer.shard_paths` for shards).
        seq_length (int): tokens per record, at least 3.
        labels (list[str] | None): label names in id order; None to take them from this file
            (`label_order`). A tag outside a given list is a bad row. Default: None.
        tag_column (int): column of the tag. Default: -1.
        long_sentences (str): 'split' or 'truncate'. Default: 'split'.
        data_format (str): 'mindrecord' or 'tfrecord'. Default: 'mindrecord'.
        num_shards (int): record files. Default: 1.
        skip_bad_rows (bool): skip and count sentences with a bad line instead of raising. Default: False.
    Returns:
        tuple[str, list[str]]: the summary line and the label names.
    Raises:
        FileNotFoundError: no input file. ValueError: a bad line (file and line named), no
        sentence, seq_length under 3, an unknown long_sentences.
    """
    require_file(input_file, "input file")
    if seq_length < 3:
        raise ValueError(f"seq_length {seq_length} leaves no room for a word between [CLS] and [SEP]: use at least 3")
    if long_sentences not in LONG_SENTENCES:
        raise ValueError(f"long_sentences {long_sentences!r} is not one of {', '.join(LONG_SENTENCES)}")
    start = time.perf_counter()
    stats = ConversionStats()
    sentences = read_sentences(input_file, tag_column)
    if labels is not None:
        for sentence in sentences:
            unknown = next((tag for tag in sentence.tags if tag not in labels), None)
            if unknown is not None and sentence.error is None:
                line_no = sentence.line_no + sentence.tags.index(unknown)
                sentence.error = (line_no, f"tag {unknown!r} is not in the label list ({', '.join(labels)}): "
                                           f"pass the training file's labels, or a list that has it")
    good = []
    for sentence in sentences:
        if sentence.error is None:
            good.append(sentence)
        elif not skip_bad_rows:
            raise ValueError(f"{input_file}:{sentence.error[0]}: {sentence.error[1]}: fix the line or pass "
                             f"--skip_bad_rows")
        else:
            get_logger().warning("%s:%d: skipped its sentence: %s", input_file, *sentence.error)
            stats.skipped += 1
    if not good:
        raise ValueError(f"no sentences in {input_file}: check the file and --tag_column")
    labels = list(labels) if labels is not None else label_order(tag for s in good for tag in s.tags)
    label_index = {label: i for i, label in enumerate(labels)}
    label_ids = [[label_index[tag] for tag in sentence.tags] for sentence in good]
    columns, mapping = build_features(good, label_ids, tokenizer, seq_length, long_sentences, stats)
    stats.sentences, stats.words, stats.records = len(good), sum(len(s.words) for s in good), len(mapping["first_word"])
    columns[EXAMPLE_ID_COLUMN] = np.arange(stats.records, dtype=np.int64)
    gold = np.array([label for ids in label_ids for label in ids], np.int32)
    sentence_starts = np.concatenate([[0], np.cumsum([len(ids) for ids in label_ids])]).astype(np.int64)
    with ExitStack() as stack:
        side = stack.enter_context(files_beside([labels_path(output_file), features_path(output_file)]))
        writer = stack.enter_context(RecordsWriter(
            output_file, data_format, seq_length, num_shards=num_shards, with_example_ids=True,
            extra_columns={LABEL_COLUMN: (np.int32, True)}))
        writer.write(columns)
        side[labels_path(output_file)].write_text(json.dumps(labels) + "\n", encoding="utf-8")
        with open(side[features_path(output_file)], "wb") as f:
            np.savez_compressed(f, labels=np.array(labels), gold_label_ids=gold, sentence_starts=sentence_starts,
                                **mapping)
    warning = tokenizer.unknown_warning(*tokenizer.count_unknown(columns[ID_COLUMNS[0]], columns[ID_COLUMNS[1]]))
    if warning:
        get_logger().warning("%s: %s", input_file, warning)
    seconds = time.perf_counter() - start
    entities = collections.Counter(tag[2:] for s in good for tag in s.tags if tag.startswith("B-"))
    long_note = (f"{stats.long_sentences} sentences longer than {seq_length - 2} pieces "
                 + ("split at word boundaries" if long_sentences == "split"
                    else f"truncated ({stats.dropped_words} words dropped)"))
    summary = (f"wrote {stats.records} records from {stats.sentences} sentences ({stats.words} words; {long_note}; "
               f"{stats.cut_words} words cut to {seq_length - 2} pieces; {stats.skipped} bad sentences skipped; "
               f"B- tags {', '.join(f'{k}: {v}' for k, v in sorted(entities.items()))}) "
               f"to {len(writer.final_paths)} files in {seconds:.1f} s; {tokenizer.casing}")
    return summary, labels


def read_labels_file(path):
    """The label list a previous conversion wrote (STEM.labels.json)."""
    path = Path(path)
    require_file(path, "labels file", "pass the .labels.json written beside the training records")
    labels = read_json(path)
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels file {path} is not a JSON list of label names")
    return labels


def main(argv=None):
    parser = argparse.ArgumentParser(description="CoNLL-style NER file -> token-classification records.")
    parser.add_argument("--input_file", required=True, help="one `word ... TAG` a line, blank line between sentences")
    parser.add_argument("--output_file", required=True, help="record file to write, e.g. out/ner_train.mindrecord")
    add_tokenizer_args(parser)
    add_output_args(parser)
    parser.add_argument("--tag_column", type=int, default=-1,
                        help="column of the tag, from 0; negative counts from the end (default -1, the last)")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--labels", help="comma-separated label names in id order (default: from this file)")
    given.add_argument("--labels_file", help="the .labels.json of the training records, for dev and test files")
    parser.add_argument("--long_sentences", default="split", choices=LONG_SENTENCES,
                        help="sentences over seq_length-2 pieces: split into windows, or truncate (default split)")
    parser.add_argument("--skip_bad_rows", action="store_true",
                        help="skip and count sentences with a bad line, instead of stopping at the first")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else read_labels_file(args.labels_file) if args.labels_file else None
    tokenizer = WordPieceTokenizer(args.vocab_file, args.do_lower_case)
    summary, _ = convert(args.input_file, tokenizer, args.output_file,
                         args.seq_length, labels, args.tag_column, args.long_sentences, args.format,
                         args.num_shards, args.skip_bad_rows)
    print(summary)


if __name__ == "__main__":
    run_cli(main)
