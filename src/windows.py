"""Windows over long inputs, and putting the model's outputs on them back together: one module for
the converters (src/conll_to_records.py, src/squad_to_records.py), evaluation (NER and SQuAD
scores) and prediction on raw text (src/predict.py), so training, scoring and serving cut and
reassemble texts the same way.

Token classification (NER): a sentence is split at word boundaries into consecutive windows of at
most `seq_length - 2` pieces, `[CLS] pieces [SEP]`; each word's output is read at its first piece
(Devlin et al. 2018, 5.3) and put back at its place in the sentence.

Extractive QA (SQuAD): `[CLS] question [SEP] context window [SEP]`, the question cut to
`max_query_length` pieces and the context covered by windows that start `doc_stride` pieces apart
(Devlin et al. 2018, 4.2; Google BERT's run_squad.py). The answer is the best span of all windows
(BERT's n-best decoding), mapped back to the context's characters through each piece's offsets.

Side files: what evaluation needs to map records back to their source is written beside the
records (`features_path`), atomically with them (`files_beside`).
"""
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def features_path(output_file):
    """Where the evaluation mapping of `output_file` goes: `stem.features.npz` beside it."""
    output_file = Path(output_file)
    return output_file.with_name(f"{output_file.stem}.features.npz")


@contextmanager
def files_beside(paths):
    """Temporary names, in the same folders, for files that belong with a set of records.

    They replace `paths` only when the block completes (after the records writer, entered inside
    this block, has moved its shards into place), and are removed if it fails: a failed run leaves
    neither records nor half of their companions.

    Args:
        paths (list[Path]): the final paths.
    Yields:
        dict[Path, Path]: final path -> temporary path to write.
    """
    temporary = {Path(p): Path(p).with_name(f".{Path(p).name}.tmp-{os.getpid()}") for p in paths}
    try:
        yield temporary
    except BaseException:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
        raise
    for final, tmp in temporary.items():
        os.replace(tmp, final)


def encode_with_offsets(tokenizer, texts):
    """WordPiece ids, character offsets and word of every piece of each text, without special tokens.

    The offsets come from the `tokenizers` encoding that `WordPieceTokenizer` wraps: they point into
    the original text through its lower-casing and accent stripping, which `token_ids` drops. Words
    are BERT's pre-tokenisation: runs split at whitespace and at every punctuation character.

    Args:
        tokenizer (WordPieceTokenizer): the model's tokenizer.
        texts (list[str]): raw texts.
    Returns:
        list of (ids list[int], offsets int32 (L, 2) [begin, end) characters, word int32 (L,) the
        index of each piece's word in its text).
    """
    encodings = tokenizer._tokenizer.encode_batch(list(texts), add_special_tokens=False)  # noqa: SLF001
    return [(encoding.ids, np.array(encoding.offsets, np.int32).reshape(-1, 2),
             np.array(encoding.word_ids, np.int32).reshape(-1)) for encoding in encodings]


def word_windows(piece_counts, room):
    """[(first word, end word)] of consecutive words whose pieces fit in `room`, greedily.

    A word longer than `room` on its own gets a window to itself (`pack_word_windows` cuts it).

    Args:
        piece_counts (list[int]): pieces of each word of a sentence.
        room (int): pieces a window holds (seq_length - 2).
    """
    windows, start, used = [], 0, 0
    for index, count in enumerate(piece_counts):
        if used and used + count > room:
            windows.append((start, index))
            start, used = index, 0
        used += count
    windows.append((start, len(piece_counts)))
    return windows


def pack_word_windows(windows, tokenizer, seq_length):
    """`[CLS] pieces [SEP]` records of word windows, and where each word's first piece is.

    Args:
        windows (list[list[list[int]]]): per record, the piece ids of each of its words; a word of
            more than seq_length - 2 pieces is cut to that many (its first piece is kept).
        tokenizer (WordPieceTokenizer): for [CLS], [SEP] and [PAD].
        seq_length (int): tokens per record.
    Returns:
        tuple: input_ids, attention_mask, token_type_ids (F, seq_length) int32, and word_index
        (F, seq_length) int32, the index in its window of the word whose first piece sits at a
        position, -1 at other pieces, [CLS], [SEP] and padding.
    """
    room = seq_length - 2
    count = len(windows)
    input_ids = np.full((count, seq_length), tokenizer.pad_id, np.int32)
    attention_mask = np.zeros((count, seq_length), np.int32)
    word_index = np.full((count, seq_length), -1, np.int32)
    for row, words in enumerate(windows):
        ids, position = [tokenizer.cls_id], 1
        for index, pieces in enumerate(words):
            pieces = pieces[:room]
            word_index[row, position] = index
            ids += pieces
            position += len(pieces)
        ids.append(tokenizer.sep_id)
        input_ids[row, :len(ids)] = ids
        attention_mask[row, :len(ids)] = 1
    return input_ids, attention_mask, np.zeros_like(input_ids), word_index


def words_from_windows(values, first_pieces, records, sentence_index, first_word, sentence_starts, fill):
    """Per-record outputs read at the words' first pieces and put back at their words' places.

    Args:
        values (array (N, T, ...)): one output per position of N records (logits, class ids).
        first_pieces (array (N, T) bool): positions holding a word's first piece, in word order.
        records (array (N,) int): each record's row in the mapping below.
        sentence_index, first_word (array (F,) int): the sentence of each record and the index in
            it of the record's first word.
        sentence_starts (array (S+1,) int): where each sentence's words begin among all words.
        fill: the value of words no record holds (words a truncating conversion dropped).
    Returns:
        array (W, ...) of values.dtype: one value per word of every sentence, in order.
    Raises:
        ValueError: a record with more words than its sentence (a mapping of other records).
    """
    values = np.asarray(values)
    words = np.full((int(sentence_starts[-1]),) + values.shape[2:], fill, values.dtype)
    for row, mask, record in zip(values, np.asarray(first_pieces), np.asarray(records)):
        found = row[mask]
        sentence = sentence_index[record]
        first = sentence_starts[sentence] + first_word[record]
        if first + len(found) > sentence_starts[sentence + 1]:
            raise ValueError(f"record {record} has more words than its sentence: the mapping does not belong to "
                             "these records")
        words[first:first + len(found)] = found
    return words


def context_windows(context_length, room, doc_stride):
    """[(first piece, end piece)] of the windows that cover a context, `doc_stride` pieces apart
    (at most `room`), the last one reaching the context's end.

    Args:
        context_length (int): pieces of the context.
        room (int): context pieces a record holds (seq_length - question pieces - 3).
        doc_stride (int): pieces between the starts of consecutive windows.
    """
    starts = [0]
    while starts[-1] + room < context_length:
        starts.append(starts[-1] + min(room, doc_stride))
    return [(start, min(start + room, context_length)) for start in starts]


def pack_question_windows(rows, tokenizer, seq_length):
    """`[CLS] question [SEP] window [SEP]` records and their tokens' offsets in the context.

    Args:
        rows (list[tuple]): per record, (question ids, window ids, window offsets (L, 2)).
        tokenizer (WordPieceTokenizer): for [CLS], [SEP] and [PAD].
        seq_length (int): tokens per record; each row must fit.
    Returns:
        tuple: input_ids, attention_mask, token_type_ids (F, seq_length) int32 (type 1 for the
        window and its [SEP]), and token_offsets (F, seq_length, 2) int32, each token's [begin,
        end) characters in its context, -1 for [CLS], the question, [SEP] and padding.
    """
    count = len(rows)
    input_ids = np.full((count, seq_length), tokenizer.pad_id, np.int32)
    attention_mask = np.zeros((count, seq_length), np.int32)
    token_type_ids = np.zeros((count, seq_length), np.int32)
    token_offsets = np.full((count, seq_length, 2), -1, np.int32)
    for row, (query, window_ids, window_offsets) in enumerate(rows):
        context_at, length = len(query) + 2, len(query) + len(window_ids) + 3
        input_ids[row, :length] = [tokenizer.cls_id, *query, tokenizer.sep_id, *window_ids, tokenizer.sep_id]
        attention_mask[row, :length] = 1
        token_type_ids[row, context_at:length] = 1
        token_offsets[row, context_at:context_at + len(window_ids)] = window_offsets
    return input_ids, attention_mask, token_type_ids, token_offsets


def best_span(start_logits, end_logits, token_offsets, n_best_size=20, max_answer_length=30):
    """The highest-scoring answer span of one window, as BERT's SQuAD decoding chooses it.

    The `n_best_size` highest start and end logits of the context tokens (offset >= 0) are paired
    (BERT's `n_best_size`); a pair counts when start <= end and the span has at most
    `max_answer_length` tokens. Its score is start logit + end logit. BERT's run_squad.py takes the
    n best over the whole window, [CLS], question and padding included, and drops the invalid ones
    afterwards, so its answer changes with how far a batch was padded; here it does not.

    Args:
        start_logits, end_logits (array (T,)): one window's logits.
        token_offsets (array (T, 2) int): character offsets [begin, end) in the context of each
            token, -1 where the token is not context ([CLS], the question, [SEP], padding).
        n_best_size (int): candidates per end. Default: 20.
        max_answer_length (int): longest answer in tokens. Default: 30.
    Returns:
        tuple (score, start token, end token), or None when no pair is valid.
    """
    in_context = token_offsets[:, 0] >= 0
    starts = np.argsort(-np.where(in_context, start_logits, -np.inf), kind="stable")[:n_best_size, None]  # (n, 1)
    ends = np.argsort(-np.where(in_context, end_logits, -np.inf), kind="stable")[None, :n_best_size]  # (1, n)
    valid = in_context[starts] & in_context[ends] & (starts <= ends) & (ends < starts + max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, start_logits[starts].astype(np.float64) + end_logits[ends], -np.inf)
    row, column = np.unravel_index(scores.argmax(), scores.shape)
    return float(scores[row, column]), int(starts[row, 0]), int(ends[0, column])


def best_answer_spans(start_logits, end_logits, token_offsets, owners, n_best_size=20, max_answer_length=30):
    """The best span (`best_span`) over all windows of each question, in context characters.

    Args:
        start_logits, end_logits (array (N, T)): N windows' logits, any order.
        token_offsets (array (N, T, 2) int): each window's token offsets (see `best_span`).
        owners (array (N,) int): the question each window belongs to.
        n_best_size, max_answer_length (int): see `best_span`.
    Returns:
        dict[int, tuple(float, int, int)]: question -> (score, start_char, end_char), end
        exclusive; a question none of whose windows has a valid span is absent.
    """
    best = {}
    for starts, ends, offsets, owner in zip(np.asarray(start_logits), np.asarray(end_logits), token_offsets, owners):
        span = best_span(starts, ends, offsets, n_best_size, max_answer_length)
        owner = int(owner)
        if span is not None and (owner not in best or span[0] > best[owner][0]):
            best[owner] = (span[0], int(offsets[span[1], 0]), int(offsets[span[2], 1]))
    return best
