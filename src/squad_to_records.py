"""SQuAD v1.1 JSON -> extractive question-answering records: question + context windows.

Each question becomes `[CLS] question [SEP] context window [SEP]` records (segment 0 for the
question, 1 for the context), as in BERT's SQuAD fine-tuning (Devlin et al. 2018, 4.2): the
question is cut to `max_query_length` pieces, and a context longer than the room left is covered
by windows that start `doc_stride` pieces apart. The answer's first and last pieces are the
targets in each window that holds the whole answer; the other windows point both at [CLS]
(position 0). Pieces come from the teacher's WordPiece tokenizer with their character offsets in
the original context, so predicted spans map back to the exact text.

Beside the records go:
  STEM.examples.json  one entry per question, in file order: id, question, context, answers
                      (every reference text);
  STEM.features.npz   example_index (F,) int32, the question (row of examples.json) of each
                      record; token_offsets (F, seq_length, 2) int32, each token's [begin, end)
                      character offsets in its context, -1 for [CLS], the question, [SEP] and
                      padding. `squad_metrics.squad_evaluate` reads both.
Records (column `example_id` = the record's row in STEM.features.npz): input_ids, input_mask,
segment_ids (int32, (seq_length,)), start_positions, end_positions (int32), example_id (int64).

Usage:
  python -m src.squad_to_records --input_file squad/train-v1.1.json --output_file out/squad_train.mindrecord \
      --vocab_file vocab.txt --seq_length 384 [--doc_stride 128] [--max_query_length 64]
"""
import argparse
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
from src.records_writer import EXAMPLE_ID_COLUMN, ID_COLUMNS, RecordsWriter, add_output_args
from src.tokenization import WordPieceTokenizer, add_tokenizer_args
from src.windows import (context_windows, encode_with_offsets, features_path, files_beside,
                         pack_question_windows)

START_COLUMN, END_COLUMN = "start_positions", "end_positions"  # Hugging Face's names for the targets


def examples_path(output_file):
    """Where the questions of `output_file` go: `stem.examples.json` beside it."""
    output_file = Path(output_file)
    return output_file.with_name(f"{output_file.stem}.examples.json")


@dataclasses.dataclass
class Question:
    """One question: its id and text, its paragraph (index into the contexts), its answers as
    (text, answer_start) pairs, and where it is in the file, for messages."""
    id: str
    text: str
    context_index: int
    answers: list
    where: str


def _check_answers(qas, context):
    """(text, answer_start) pairs of a question's answers; raises BadRow."""
    answers = qas.get("answers")
    if not isinstance(answers, list) or not answers:
        raise BadRow("has no answers (SQuAD v1.1 gives every question at least one)")
    pairs = []
    for answer in answers:
        text, start = (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
        if not isinstance(text, str) or not text.strip() or not isinstance(start, int) or isinstance(start, bool):
            raise BadRow(f"answer {answer!r} needs a non-empty 'text' and an integer 'answer_start'")
        found = context[start:start + len(text)]
        if found != text:
            raise BadRow(f"answer {text!r} is not at answer_start {start} of its context (there: {found!r}); "
                         + _where_in(context, text))
        pairs.append((text, start))
    return pairs


def _where_in(context, text):
    """Where `text` does occur in `context`, for the wrong-offset message: the fix to make."""
    starts = [m.start() for m in re.finditer(re.escape(text), context)]
    if not starts:
        return "the text is nowhere in the context: correct the answer's text"
    shown = ", ".join(map(str, starts[:5])) + (", ..." if len(starts) > 5 else "")
    return f"the text is at character offset{'s' if len(starts) > 1 else ''} {shown}: correct answer_start"


def read_squad(path):
    """Reads SQuAD v1.1 JSON.

    Args:
        path (str | Path): the file (`data[].paragraphs[].context/qas[].id/question/answers[]`).
    Returns:
        tuple (contexts list[str], questions list[Question | tuple(where, BadRow)]) in file order.
    Raises:
        ValueError: not JSON, or not SQuAD's layout at the top.
    """
    squad = read_json(path, fix="give SQuAD v1.1's train or dev JSON")
    if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
        raise ValueError(f"{path} is not SQuAD v1.1 JSON: it needs a top-level 'data' list of articles")
    contexts, questions, seen = [], [], set()
    for a, article in enumerate(squad["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            questions.append((f"data[{a}]", BadRow("has no 'paragraphs' list")))
            continue
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not context.strip() or not isinstance(qas, list):
                questions.append((where, BadRow("needs a non-empty 'context' string and a 'qas' list")))
                continue
            contexts.append(context)
            for q, entry in enumerate(qas):
                entry = entry if isinstance(entry, dict) else {}
                qid, text = entry.get("id"), entry.get("question")
                where_q = f"question {qid}" if isinstance(qid, str) else f"{where}.qas[{q}]"
                try:
                    if not isinstance(qid, str) or not qid:
                        raise BadRow("has no 'id' string")
                    if qid in seen:
                        raise BadRow("repeats the id of an earlier question")
                    if not isinstance(text, str) or not text.strip():
                        raise BadRow("has no 'question' text")
                    answers = _check_answers(entry, context)
                except BadRow as err:
                    questions.append((where_q, err))
                    continue
                seen.add(qid)
                questions.append(Question(qid, text, len(contexts) - 1, answers, where_q))
    return contexts, questions


def answer_tokens(offsets, start_char, end_char):
    """First and last piece of a character span [start_char, end_char) of the context.

    Args:
        offsets (array (L, 2) int): [begin, end) of each context piece, in order.
    Returns:
        tuple (first, last) piece indices; raises BadRow when the span covers no piece.
    """
    first = int(np.searchsorted(offsets[:, 1], start_char, side="right"))  # first piece ending after the start
    last = int(np.searchsorted(offsets[:, 0], end_char, side="left")) - 1  # last piece beginning before the end
    if first > last:
        raise BadRow(f"the answer at characters {start_char}..{end_char} covers no word piece of its context")
    return first, last


@dataclasses.dataclass
class ConversionStats:
    """What a conversion wrote and left out, for its summary line."""
    questions: int = 0
    records: int = 0
    multi_window: int = 0
    answer_in_no_window: int = 0
    answer_inside_piece: int = 0
    skipped: int = 0


def build_features(questions, answer_spans, context_pieces, query_ids, tokenizer, seq_length, doc_stride, stats):
    """Record columns and feature mapping of the questions.

    Args:
        questions (list[Question]): good questions.
        answer_spans (list[tuple(int, int)]): first and last context piece of each one's first answer.
        context_pieces (list[tuple]): ids, character offsets (L, 2) and words of every context's
            pieces (`windows.encode_with_offsets`).
        query_ids (list[list[int]]): each question's pieces, already cut to max_query_length.
        tokenizer (WordPieceTokenizer): for [CLS], [SEP] and [PAD].
        seq_length (int): tokens per record.
        doc_stride (int): pieces between the starts of consecutive windows.
        stats (ConversionStats): counts updated in place.
    Returns:
        (dict of columns, dict of mapping arrays).
    """
    rows, example_index, positions = [], [], []
    for index, (question, (first, last), query) in enumerate(zip(questions, answer_spans, query_ids)):
        ids, offsets = context_pieces[question.context_index][:2]
        text, start_char = question.answers[0]
        if offsets[first, 0] != start_char or offsets[last, 1] != start_char + len(text):
            stats.answer_inside_piece += 1
        windows = context_windows(len(ids), seq_length - len(query) - 3, doc_stride)
        stats.multi_window += len(windows) > 1
        held = False
        for window_start, window_end in windows:
            context_at = len(query) + 2  # position of the window's first piece in the record
            if window_start <= first and last < window_end:
                positions.append((first - window_start + context_at, last - window_start + context_at))
                held = True
            else:
                positions.append((0, 0))
            rows.append((query, ids[window_start:window_end], offsets[window_start:window_end]))
            example_index.append(index)
        stats.answer_in_no_window += not held
    input_ids, input_mask, segment_ids, token_offsets = pack_question_windows(rows, tokenizer, seq_length)
    count = len(rows)
    positions = np.array(positions, np.int32).reshape(count, 2)
    columns = {ID_COLUMNS[0]: input_ids, ID_COLUMNS[1]: input_mask, ID_COLUMNS[2]: segment_ids,
               START_COLUMN: positions[:, 0], END_COLUMN: positions[:, 1],
               EXAMPLE_ID_COLUMN: np.arange(count, dtype=np.int64)}
    mapping = {"example_index": np.array(example_index, np.int32), "token_offsets": token_offsets}
    return columns, mapping


def convert(input_file, tokenizer, output_file, seq_length, doc_stride=128, max_query_length=64,
            data_format="mindrecord", num_shards=1, skip_bad_rows=False):
    """Converts one SQuAD v1.1 file; writes the records, STEM.examples.json and STEM.features.npz.

    Args:
        input_file (str): SQuAD v1.1 JSON.
        tokenizer (WordPieceTokenizer): the teacher's WordPiece tokenizer.
        output_file (str): records to write (see `records_writer.shard_paths` for shards).
        seq_length (int): tokens per record.
        doc_stride (int): pieces between the starts of consecutive context windows. Default: 128.
        max_query_length (int): question pieces kept. Default: 64.
        data_format (str): 'mindrecord' or 'tfrecord'. Default: 'mindrecord'.
        num_shards (int): record files. Default: 1.
        skip_bad_rows (bool): skip and count bad questions instead of raising. Default: False.
    Returns:
        str: the summary line.
    Raises:
        FileNotFoundError: no input file. ValueError: a bad question (its id or place named), no
        question, lengths that leave no room for the context.
    """
    require_file(input_file, "input file")
    if doc_stride < 1 or max_query_length < 1:
        raise ValueError(f"doc_stride {doc_stride} and max_query_length {max_query_length} must be at least 1")
    if seq_length - max_query_length - 3 < 1:
        raise ValueError(f"seq_length {seq_length} leaves no room for the context after a question of "
                         f"max_query_length {max_query_length} and [CLS], [SEP], [SEP]: raise seq_length or lower "
                         f"max_query_length")
    start = time.perf_counter()
    stats = ConversionStats()
    contexts, entries = read_squad(input_file)
    pieces = encode_with_offsets(tokenizer, contexts)
    questions, answer_spans = [], []
    for entry in entries:
        try:
            if not isinstance(entry, Question):
                raise entry[1]
            text, start_char = entry.answers[0]
            answer_spans.append(answer_tokens(pieces[entry.context_index][1], start_char, start_char + len(text)))
            questions.append(entry)
        except BadRow as err:
            where = entry.where if isinstance(entry, Question) else entry[0]
            if not skip_bad_rows:
                raise ValueError(f"{input_file}: {where}: {err}: fix it or pass --skip_bad_rows") from None
            get_logger().warning("%s: %s: skipped: %s", input_file, where, err)
            stats.skipped += 1
    if not questions:
        raise ValueError(f"no questions in {input_file}: check that it is SQuAD v1.1 JSON")
    query_ids = [ids[:max_query_length] for ids in tokenizer.token_ids([q.text for q in questions])]
    columns, mapping = build_features(questions, answer_spans, pieces, query_ids, tokenizer, seq_length, doc_stride,
                                      stats)
    stats.questions, stats.records = len(questions), len(mapping["example_index"])
    examples = [{"id": q.id, "question": q.text, "context": contexts[q.context_index],
                 "answers": [text for text, _ in q.answers]} for q in questions]
    with ExitStack() as stack:
        side = stack.enter_context(files_beside([examples_path(output_file), features_path(output_file)]))
        writer = stack.enter_context(RecordsWriter(
            output_file, data_format, seq_length, num_shards=num_shards, with_example_ids=True,
            extra_columns={START_COLUMN: (np.int32, False), END_COLUMN: (np.int32, False)}))
        writer.write(columns)
        side[examples_path(output_file)].write_text(json.dumps(examples, ensure_ascii=False) + "\n", encoding="utf-8")
        with open(side[features_path(output_file)], "wb") as f:
            np.savez_compressed(f, **mapping)
    warning = tokenizer.unknown_warning(*tokenizer.count_unknown(columns[ID_COLUMNS[0]], columns[ID_COLUMNS[1]]))
    if warning:
        get_logger().warning("%s: %s", input_file, warning)
    seconds = time.perf_counter() - start
    return (f"wrote {stats.records} records for {stats.questions} questions of {len(contexts)} paragraphs "
            f"({stats.multi_window} questions over more than one window; {stats.answer_in_no_window} answers in no "
            f"single window; {stats.answer_inside_piece} answers starting or ending inside a word piece; "
            f"{stats.skipped} bad questions skipped) to {len(writer.final_paths)} files in {seconds:.1f} s; "
            f"{tokenizer.casing}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="SQuAD v1.1 JSON -> extractive question-answering records.")
    parser.add_argument("--input_file", required=True, help="SQuAD v1.1 JSON")
    parser.add_argument("--output_file", required=True, help="record file to write, e.g. out/squad_train.mindrecord")
    add_tokenizer_args(parser)
    add_output_args(parser)
    parser.add_argument("--doc_stride", type=int, default=128,
                        help="pieces between the starts of consecutive context windows (default 128)")
    parser.add_argument("--max_query_length", type=int, default=64, help="question pieces kept (default 64)")
    parser.add_argument("--skip_bad_rows", action="store_true",
                        help="skip and count bad questions, instead of stopping at the first")
    args = parser.parse_args(argv)
    tokenizer = WordPieceTokenizer(args.vocab_file, args.do_lower_case)
    print(convert(args.input_file, tokenizer, args.output_file, args.seq_length, args.doc_stride,
                  args.max_query_length, args.format, args.num_shards, args.skip_bad_rows))


if __name__ == "__main__":
    run_cli(main)
