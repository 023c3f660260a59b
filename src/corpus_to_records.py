"""Plain-text corpus -> general-distillation records (input_ids, input_mask, segment_ids).

Input: one sentence or paragraph a line, documents separated by blank lines (each file ends a
document too). Consecutive lines of a document are packed into sequences as Google BERT's
`create_pretraining_data.py` does: [CLS] A [SEP] B [SEP] with the A/B split at a random line
boundary, and with probability `short_seq_prob` a shorter target length. Unlike it, nothing is
truncated away: a line longer than a sequence is cut into several, and a chunk is closed before
the next line would overflow it. There is no next-sentence task, so B always follows A.

Usage:
  python -m src.corpus_to_records --input_files a.txt b.txt --vocab_file vocab.txt \
      --output_dir data/gd --seq_length 128 --num_shards 4 --format mindrecord [--do_lower_case true]
"""
import argparse
import logging
import random
import sys
import time
from pathlib import Path

from tqdm import tqdm

from src.cli import require_file, run_cli
from src.records_writer import ID_COLUMNS, RecordsWriter, add_output_args
from src.tokenization import WordPieceTokenizer, add_tokenizer_args

OUTPUT_NAME = "gd"  # files: gd.mindrecord[N] or gd[-0000i-of-0000N].tfrecord + gd.schema.json
LINES_PER_BLOCK = 4096  # lines tokenized in one batched call
ROWS_PER_WRITE = 4096  # sequences encoded and written at once


def _documents(paths, tokenizer, progress):
    """Yields each document as a list of token-id lists, one per non-empty line, tokenizing in blocks."""
    for path in paths:
        undecodable = 0
        document, block = [], []
        with open(path, "rb") as f:
            for raw in f:
                progress.update()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                    undecodable += 1
                block.append(text.strip())
                if len(block) == LINES_PER_BLOCK:
                    yield from _split_documents(block, tokenizer, document)
                    block = []
        yield from _split_documents(block, tokenizer, document)
        if document:
            yield document
        if undecodable:
            logging.warning("%s: %d lines had bytes that are not UTF-8 (read as [UNK])", path, undecodable)


def _split_documents(lines, tokenizer, document):
    """Adds the tokenized `lines` to the open `document` (a list, kept across blocks), yielding
    each document that a blank line closes."""
    ids = iter(tokenizer.token_ids([line for line in lines if line]))
    for line in lines:
        if not line:
            if document:
                yield document[:]
                document.clear()
            continue
        tokens = next(ids)
        if tokens:
            document.append(tokens)


def pack_document(document, max_tokens, rng, short_seq_prob=0.1):
    """Splits one document into (A, B) token-id pairs of at most `max_tokens` tokens together.

    Args:
        document (list[list[int]]): token ids of each line.
        max_tokens (int): room for tokens in a sequence (seq_length - 3).
        rng (random.Random): source of the target lengths and split points.
        short_seq_prob (float): chance of a chunk aiming at a random shorter length. Default: 0.1.

    Returns:
        list of (tokens_a, tokens_b); tokens_b is empty when the chunk is a single segment.
    """
    segments = [line[start:start + max_tokens] for line in document for start in range(0, len(line), max_tokens)]
    pairs, chunk = [], []

    def target_length():
        return rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens

    def close_chunk():
        """Splits the chunk at a random line boundary into A and B; returns the next target length."""
        split = rng.randint(1, len(chunk) - 1) if len(chunk) > 1 else 1
        pairs.append(([t for s in chunk[:split] for t in s], [t for s in chunk[split:] for t in s]))
        chunk.clear()
        return target_length()

    target = target_length()
    for segment in segments:
        if chunk and sum(map(len, chunk)) + len(segment) > max_tokens:
            target = close_chunk()
        chunk.append(segment)
        if sum(map(len, chunk)) >= target:
            target = close_chunk()
    if chunk:
        close_chunk()
    return pairs


def _count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def convert(input_files, tokenizer, output_dir, seq_length, num_shards=1, data_format="mindrecord",
            seed=12345, short_seq_prob=0.1):
    """Converts the corpus and returns the summary line."""
    paths = [Path(p) for p in input_files]
    for path in paths:
        require_file(path, "input file")
    if seq_length < 5:
        raise ValueError(f"seq_length {seq_length} leaves no room for text after [CLS] A [SEP] B [SEP]: use 5 or more")
    rng = random.Random(seed)
    start = time.perf_counter()
    total_lines = sum(map(_count_lines, paths))
    sequences = tokens = unknown = text_tokens = 0
    # delay: an error in the first lines prints no bar before its error line
    with tqdm(total=total_lines, unit=" lines", file=sys.stderr, mininterval=1.0, delay=1.0) as progress, \
            RecordsWriter(Path(output_dir) / f"{OUTPUT_NAME}.{data_format}", data_format, seq_length,
                          num_shards=num_shards) as writer:
        pending = []

        def flush():
            nonlocal sequences, tokens, unknown, text_tokens
            arrays = tokenizer.build_inputs([a for a, _ in pending], [b or None for _, b in pending], seq_length)
            writer.write(dict(zip(ID_COLUMNS, arrays)))
            sequences += len(pending)
            tokens += int(arrays[1].sum())
            counts = tokenizer.count_unknown(arrays[0], arrays[1])
            unknown, text_tokens = unknown + counts[0], text_tokens + counts[1]
            pending.clear()

        for document in _documents(paths, tokenizer, progress):
            pending.extend(pack_document(document, seq_length - 3, rng, short_seq_prob))
            if len(pending) >= ROWS_PER_WRITE:
                flush()
        if pending:
            flush()
        if not sequences:
            raise ValueError(f"no text in {', '.join(map(str, paths))}: give one sentence or paragraph a line")
    warning = tokenizer.unknown_warning(unknown, text_tokens)
    if warning:
        logging.warning(warning)
    seconds = time.perf_counter() - start
    padding = 100.0 * (1 - tokens / (sequences * seq_length))
    return (f"wrote {sequences} sequences ({tokens} tokens, {padding:.1f}% padding) to {num_shards} files "
            f"in {seconds:.1f} s ({total_lines / seconds:.0f} lines/s); {tokenizer.casing}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Plain-text corpus -> general-distillation records.")
    parser.add_argument("--input_files", nargs="+", required=True,
                        help="text files: a sentence or paragraph a line, blank lines between documents")
    parser.add_argument("--output_dir", required=True, help=f"folder for the {OUTPUT_NAME}.* record files")
    add_tokenizer_args(parser)
    add_output_args(parser)
    parser.add_argument("--seed", type=int, default=12345, help="seed of the packing choices (default 12345)")
    parser.add_argument("--short_seq_prob", type=float, default=0.1,
                        help="chance of a shorter target length, as in BERT pre-training (default 0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    tokenizer = WordPieceTokenizer(args.vocab_file, args.do_lower_case)
    print(convert(args.input_files, tokenizer, args.output_dir, args.seq_length, args.num_shards, args.format,
                  args.seed, args.short_seq_prob))


if __name__ == "__main__":
    run_cli(main)
