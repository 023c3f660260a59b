"""GLUE (or any labelled TSV/CSV/JSONL) -> task-distillation records with label_ids.

`TASKS` is the one table of what each GLUE task reads and how it is scored: the training code
takes `num_labels` and the metric from it. GLUE files are read as the GLUE download ships them:
tab-separated without quoting (MRPC and QNLI have unbalanced quotes inside sentences), CoLA's
train/dev without a header, MRPC's UTF-8 byte-order mark removed.

Usage:
  python -m src.glue_to_records --task sst2 --input_file SST-2/dev.tsv \
      --output_file out/sst2_dev.mindrecord --vocab_file vocab.txt --seq_length 128 [--format tfrecord]
  python -m src.glue_to_records --task generic --input_file reviews.jsonl --text_a review \
      --label stars --labels 1,2,3,4,5 --output_file out/reviews.mindrecord --vocab_file vocab.txt
  python -m src.glue_to_records --task generic --no_header --input_file pairs.tsv --text_a 0 --text_b 1 \
      --label 2 --labels 0,1 --output_file out/pairs.mindrecord --vocab_file vocab.txt
  python -m src.glue_to_records --task sst2 --input_file SST-2/train.tsv --output_file out/sst2_train.mindrecord \
      --vocab_file student/vocab.txt --teacher_vocab_file teacher/vocab.txt

Every record carries `example_id`, the example's 0-based row in the input file (header and blank
lines not counted), so predictions can be matched back to the rows.

With `--teacher_vocab_file` (a teacher whose tokenizer differs from the student's, as TextBrewer
feeds each model its own batch) every example is tokenized twice: `--vocab_file` gives the student's
input_ids/input_mask/segment_ids, the teacher's vocabulary the columns teacher_input_ids,
teacher_input_mask and teacher_segment_ids, of the same seq_length, each casing resolved from its own
vocabulary. Training feeds each model its own columns; such records allow prediction-level
distillation only (the token positions of the two models do not correspond).
"""
import argparse
import collections
import csv
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from src.cli import require_file, run_cli
from src.records_writer import (EXAMPLE_ID_COLUMN, ID_COLUMNS, LABEL_COLUMN, TEACHER_ID_COLUMNS, RecordsWriter,
                                add_output_args)
from src.tokenization import WordPieceTokenizer, add_tokenizer_args, str2bool

ROWS_PER_WRITE = 4096  # examples tokenized and written at once


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What one task reads and how it is scored.

    Args:
        text_a (str | int): column of the first sentence (an index when the file has no header).
        text_b (str | int | None): column of the second sentence, None for single-sentence tasks.
        label (str | int): label column.
        labels (tuple[str] | None): label values in class-id order; None for regression.
        metric (str): primary metric, a key of `assessment_method.METRICS`.
        has_header (bool): whether the first line names the columns. Default: True.
    """
    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple | None
    metric: str
    has_header: bool = True

    @property
    def num_labels(self):
        """Classifier outputs: one per class, or one score for regression."""
        return 1 if self.labels is None else len(self.labels)


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_MNLI = TaskSpec("sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"), "accuracy")
TASKS = {
    "cola": TaskSpec(3, None, 1, _BINARY, "mcc", has_header=False),
    "sst2": TaskSpec("sentence", None, "label", _BINARY, "accuracy"),
    "mrpc": TaskSpec("#1 String", "#2 String", "Quality", _BINARY, "accuracy"),  # F1 reported beside it
    "qqp": TaskSpec("question1", "question2", "is_duplicate", _BINARY, "accuracy"),  # F1 reported beside it
    "stsb": TaskSpec("sentence1", "sentence2", "score", None, "pearson"),  # Spearman reported beside it
    "mnli": _MNLI,  # train.tsv, dev_matched.tsv
    "mnli-mm": _MNLI,  # dev_mismatched.tsv
    "qnli": TaskSpec("question", "sentence", "label", _NLI, "accuracy"),
    "rte": TaskSpec("sentence1", "sentence2", "label", _NLI, "accuracy"),
    "wnli": TaskSpec("sentence1", "sentence2", "label", _BINARY, "accuracy"),
}


class BadRow(ValueError):
    """A row that cannot become an example; `--skip_bad_rows` skips these and only these."""


def _decode(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRow(f"bytes that are not UTF-8 at byte {err.start}") from None


# What to do about a column missing from the header; each tool names its own options (`read_rows(fix=...)`).
MISSING_COLUMN_FIX = "pass the file of this task, or name the right column"


def _check_header(path, header, columns, fix):
    """Fails at once, not row by row, when a named column is absent from the header."""
    for column in columns:
        if isinstance(column, str) and column not in header:
            raise ValueError(f"{path}: column {column!r} is not in the header ({', '.join(header)}): {fix}")


def _tsv_rows(path, columns, has_header, fix):
    """Tab-separated rows without quote handling, as GLUE is written; by header name if it has one."""
    header = None
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # MRPC's byte-order mark
            raw = raw.rstrip(b"\r\n")
            if not raw:
                continue
            try:
                fields = _decode(raw).split("\t")
            except BadRow as err:
                if has_header and header is None:
                    raise ValueError(f"{path}:{line_no}: header has {err}: save the file as UTF-8") from None
                yield line_no, err
                continue
            if has_header and header is None:
                header = fields
                _check_header(path, header, columns, fix)
            elif header is None:
                yield line_no, fields
            elif len(fields) != len(header):
                yield line_no, BadRow(f"{len(fields)} columns where the header has {len(header)}")
            else:
                yield line_no, dict(zip(header, fields))


def _csv_rows(path, columns, has_header, fix):
    """Comma-separated rows with standard quoting, by header name if it has one, else by index."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, []) if has_header else None
        if has_header:
            _check_header(path, header, columns, fix)
        for fields in reader:
            if not fields:
                continue
            if any("\udc80" <= c <= "\udcff" for field in fields for c in field):  # surrogateescape'd bytes
                yield reader.line_num, BadRow("bytes that are not UTF-8")
            elif header is None:
                yield reader.line_num, fields
            elif len(fields) != len(header):
                yield reader.line_num, BadRow(f"{len(fields)} columns where the header has {len(header)}")
            else:
                yield reader.line_num, dict(zip(header, fields))


def _jsonl_rows(path):
    """One JSON object a line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(_decode(raw.removeprefix(b"\xef\xbb\xbf")))
            except BadRow as err:
                yield line_no, err
            except json.JSONDecodeError as err:
                yield line_no, BadRow(f"invalid JSON ({err.msg})")
            else:
                yield line_no, row if isinstance(row, dict) else BadRow("the line is not a JSON object")


def read_rows(path, columns, has_header=True, fix=MISSING_COLUMN_FIX):
    """(line number, row or BadRow) of a TSV, CSV or JSONL file (by extension); a row maps column
    names (or, without a header, indices) to values. Raises ValueError ending in `fix` (what to do, in the
    calling tool's options) if the header lacks one of `columns`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path, columns, has_header, fix)
    if suffix == ".jsonl":
        if not has_header:
            raise ValueError(f"{path}: JSONL rows are read by field name, not by column number (--no_header, "
                             "or a task whose files have no header, as CoLA's): give a TSV or CSV file, or name "
                             "the fields")
        return _jsonl_rows(path)
    return _tsv_rows(path, columns, has_header, fix)


def _field(row, column):
    try:
        value = row[column]
    except (KeyError, IndexError):
        raise BadRow(f"no column {column!r}") from None
    return "" if value is None else str(value).strip()


def _example(row, spec):
    """(text_a, text_b or None, class id or score) of one row; raises BadRow."""
    text_a, text_b = (None if column is None else _field(row, column) for column in (spec.text_a, spec.text_b))
    for column, text in ((spec.text_a, text_a), (spec.text_b, text_b)):
        if text == "":
            raise BadRow(f"empty text in column {column!r}")
    label = _field(row, spec.label)
    if spec.labels is not None:
        if label not in spec.labels:
            raise BadRow(f"unknown label {label!r} (expected one of {', '.join(spec.labels)})")
        return text_a, text_b, spec.labels.index(label)
    try:
        score = float(label)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise BadRow(f"label {label!r} is not a number")
    return text_a, text_b, score


def _label_summary(labels, spec):
    if spec.labels is None:
        values = np.asarray(labels)
        return f"scores mean {values.mean():.3f}, range {values.min():g}..{values.max():g}"
    counts = collections.Counter(labels)
    return "labels " + ", ".join(f"{name}: {counts[i]}" for i, name in enumerate(spec.labels))


def convert(input_file, spec, tokenizer, output_file, seq_length, data_format="mindrecord", num_shards=1,
            skip_bad_rows=False, teacher_tokenizer=None):
    """Converts one labelled file and returns the summary line.

    Args:
        input_file (str): the TSV, CSV or JSONL file.
        spec (TaskSpec): what to read from it.
        tokenizer (WordPieceTokenizer): the student's (the only one without `teacher_tokenizer`).
        output_file (str): the records to write (see `records_writer.shard_paths` for shards).
        seq_length (int): tokens per sequence, for both tokenizations.
        data_format (str): 'mindrecord' or 'tfrecord'. Default: 'mindrecord'.
        num_shards (int): number of output files. Default: 1.
        skip_bad_rows (bool): skip and count unreadable rows instead of stopping. Default: False.
        teacher_tokenizer (WordPieceTokenizer | None): the teacher's, when its vocabulary differs;
            its ids go to the TEACHER_ID_COLUMNS (int32, (N, seq_length)). Default: None.

    Raises:
        FileNotFoundError: the input file does not exist.
        ValueError: a bad row (without skip_bad_rows), a missing column, or no examples at all.
    """
    require_file(input_file, "input file")
    start = time.perf_counter()
    label_dtype = np.float32 if spec.labels is None else np.int32
    labels, skipped, pending, example_ids = [], 0, [], []
    # (tokenizer, its record columns, [unknown, total] tokens) of each tokenization written
    encodings = [(tokenizer, ID_COLUMNS, [0, 0])]
    if teacher_tokenizer is not None:
        encodings.append((teacher_tokenizer, TEACHER_ID_COLUMNS, [0, 0]))
    teacher_columns = {name: (np.int32, True) for name in TEACHER_ID_COLUMNS} if teacher_tokenizer else None
    with RecordsWriter(output_file, data_format, seq_length, label_dtype, num_shards,
                       with_example_ids=True, extra_columns=teacher_columns) as writer:
        def flush():
            texts_b = None if spec.text_b is None else [b for _, b, _ in pending]
            columns = {LABEL_COLUMN: np.array([label for _, _, label in pending], dtype=label_dtype),
                       EXAMPLE_ID_COLUMN: np.array(example_ids, dtype=np.int64)}
            for encoder, names, counts in encodings:
                arrays = encoder.encode_batch([a for a, _, _ in pending], texts_b, seq_length)
                columns.update(zip(names, arrays))
                unknown, total = encoder.count_unknown(arrays[0], arrays[1])
                counts[0], counts[1] = counts[0] + unknown, counts[1] + total
            writer.write(columns)
            pending.clear()
            example_ids.clear()

        rows = read_rows(input_file, (spec.text_a, spec.text_b, spec.label), spec.has_header,
                         fix=f"{MISSING_COLUMN_FIX} (a file without a header: --no_header and column numbers)")
        for example_id, (line_no, row) in enumerate(rows):
            try:
                if isinstance(row, BadRow):
                    raise row
                example = _example(row, spec)
            except BadRow as err:
                if not skip_bad_rows:
                    raise ValueError(f"{input_file}:{line_no}: {err}: fix the row or pass --skip_bad_rows") from None
                logging.warning("%s:%d: skipped: %s", input_file, line_no, err)
                skipped += 1
                continue
            pending.append(example)
            example_ids.append(example_id)
            labels.append(example[2])
            if len(pending) == ROWS_PER_WRITE:
                flush()
        if pending:
            flush()
        if not labels:
            raise ValueError(f"no examples in {input_file}: check the file and --task")
    for encoder, _, counts in encodings:
        warning = encoder.unknown_warning(*counts)
        if warning:
            logging.warning("%s: %s", input_file, warning)
    seconds = time.perf_counter() - start
    casing = tokenizer.casing if teacher_tokenizer is None else \
        f"student {tokenizer.casing}; teacher columns {teacher_tokenizer.casing}"
    return (f"wrote {len(labels)} examples ({skipped} bad rows skipped; {_label_summary(labels, spec)}) "
            f"to {len(writer.final_paths)} files in {seconds:.1f} s; {casing}")


def _task_spec(parser, args):
    """The GLUE task's spec, or one built from the column options of `--task generic`."""
    generic_options = {"--text_a": args.text_a, "--text_b": args.text_b, "--label": args.label, "--labels": args.labels,
                       "--no_header": args.no_header or None}
    if args.task != "generic":
        given = [name for name, value in generic_options.items() if value is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply to --task generic")
        return TASKS[args.task]
    if args.text_a is None or args.label is None:
        parser.error("--task generic needs --text_a and --label (and --labels for classification)")
    columns = [args.text_a, args.text_b, args.label]
    if args.no_header:
        for name, column in zip(("--text_a", "--text_b", "--label"), columns):
            if column is not None and not column.isdigit():
                parser.error(f"with --no_header, {name} is a column number counted from 0, got {column!r}")
        columns = [None if column is None else int(column) for column in columns]
    labels = None if args.labels is None else tuple(label.strip() for label in args.labels.split(","))
    return TaskSpec(columns[0], columns[1], columns[2], labels, "accuracy" if labels else "pearson",
                    has_header=not args.no_header)


def main(argv=None):
    parser = argparse.ArgumentParser(description="GLUE or labelled TSV/CSV/JSONL -> task-distillation records.")
    parser.add_argument("--task", required=True, choices=[*TASKS, "generic"], help="GLUE task, or generic")
    parser.add_argument("--input_file", required=True, help="the task's train/dev .tsv (generic: .tsv, .csv, .jsonl)")
    parser.add_argument("--output_file", required=True, help="record file to write, e.g. out/sst2_dev.mindrecord")
    add_tokenizer_args(parser)
    add_output_args(parser)
    parser.add_argument("--skip_bad_rows", action="store_true",
                        help="skip and count rows that cannot be read, instead of stopping at the first")
    parser.add_argument("--text_a", help="generic: column of the first text (a name, or a number with --no_header)")
    parser.add_argument("--text_b", help="generic: column of the second text, for sentence pairs")
    parser.add_argument("--label", help="generic: label column")
    parser.add_argument("--no_header", action="store_true",
                        help="generic: the TSV/CSV file has no header line; columns are numbers counted from 0")
    parser.add_argument("--labels", help="generic: comma-separated label values in class order; omit for regression")
    parser.add_argument("--teacher_vocab_file",
                        help="the teacher's vocab.txt when it differs from --vocab_file (then the student's): "
                             "also writes teacher_input_ids, teacher_input_mask, teacher_segment_ids (for "
                             "prediction-level distillation only)")
    parser.add_argument("--teacher_do_lower_case", type=str2bool, default=None,
                        help="casing of --teacher_vocab_file, resolved as --do_lower_case is for --vocab_file")
    args = parser.parse_args(argv)
    spec = _task_spec(parser, args)
    if args.teacher_do_lower_case is not None and not args.teacher_vocab_file:
        parser.error("--teacher_do_lower_case applies to --teacher_vocab_file, which is not given")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    tokenizer = WordPieceTokenizer(args.vocab_file, args.do_lower_case)
    teacher_tokenizer = WordPieceTokenizer(args.teacher_vocab_file, args.teacher_do_lower_case, "teacher_") \
        if args.teacher_vocab_file else None
    print(convert(args.input_file, spec, tokenizer, args.output_file, args.seq_length, args.format,
                  args.num_shards, args.skip_bad_rows, teacher_tokenizer))


if __name__ == "__main__":
    run_cli(main)
