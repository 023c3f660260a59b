"""BERT WordPiece tokenization into fixed-length model inputs.

The `tokenizers` package does the normalisation, pre-tokenisation and WordPiece split (in Rust,
batched); this module adds what BERT's inputs need on top: [CLS]/[SEP], Google BERT's
longest-first pair truncation, padding, the attention mask and segment ids.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from src.cli import require_file

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")
# Hugging Face's tokenizer settings file; `hf_convert import` keeps it beside the vocabulary, so the
# casing the model was trained with travels with it.
TOKENIZER_CONFIG = "tokenizer_config.json"
# A vocabulary is cased when at least this share of its word entries has a capital letter:
# bert-base-cased has about 20 %, uncased ones none (a stray entry or two must not flip the verdict).
CASED_SHARE = 0.01
UNK_WARNING_SHARE = 0.05  # [UNK] share of the written tokens above which the converters warn


def str2bool(value):
    """argparse type for `true`/`false`, so a flag reads the same as the yaml booleans."""
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return lowered == "true"


def add_tokenizer_args(parser):
    """The vocabulary, casing and length options shared by the record converters."""
    parser.add_argument("--vocab_file", required=True,
                        help="WordPiece vocab.txt of the models that read the records "
                             "(glue_to_records with --teacher_vocab_file: the student's)")
    parser.add_argument("--do_lower_case", type=str2bool, default=None,
                        help=f"true for uncased vocabularies (default: do_lower_case of the {TOKENIZER_CONFIG} "
                             "beside the vocab, else judged from the vocab's letters)")
    parser.add_argument("--seq_length", type=int, default=128, help="tokens per sequence (default 128)")


def load_vocab(vocab_file):
    """Reads vocab.txt (one token a line, id = line number) and checks BERT's special tokens."""
    path = Path(vocab_file)
    require_file(path, "vocab file", "pass the teacher's vocab.txt")
    vocab = {}
    try:
        with path.open(encoding="utf-8") as f:
            for index, line in enumerate(f):
                vocab[line.rstrip("\r\n")] = index
    except UnicodeDecodeError as exc:
        raise ValueError(f"vocab file {path} is not UTF-8 text (byte {exc.start}): pass the teacher's vocab.txt, "
                         "one token a line") from exc
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"vocab file {path} lacks {', '.join(missing)}: use a BERT WordPiece vocab.txt")
    return vocab


def cased_entries(vocab):
    """The word entries of `vocab` (tokens, ## stripped, [SPECIAL] tokens left out) that have a capital."""
    words = (token.removeprefix("##") for token in vocab if not (token.startswith("[") and token.endswith("]")))
    return [word for word in words if word != word.lower()]


def vocab_is_cased(vocab):
    """Whether a WordPiece vocabulary (an iterable of tokens) was built from cased text."""
    vocab = list(vocab)
    return len(cased_entries(vocab)) >= max(1, CASED_SHARE * len(vocab))


def read_tokenizer_config(vocab_file):
    """The Hugging Face tokenizer_config.json beside `vocab_file` as a dict; {} when there is none."""
    path = Path(vocab_file).with_name(TOKENIZER_CONFIG)
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}): it should be the tokenizer "
                         "settings of the model (a JSON object such as {\"do_lower_case\": true}), or remove it") from None
    if not isinstance(values, dict) or not isinstance(values.get("do_lower_case", False), bool):
        raise ValueError(f"{path} should be a JSON object whose do_lower_case is true or false")
    return values


def resolve_casing(vocab_file, vocab, do_lower_case=None, option_prefix=""):
    """Whether to lower-case, checked against the vocabulary's letters.

    Args:
        vocab_file (str or Path): the vocab.txt, to find the tokenizer_config.json beside it.
        vocab (iterable of str): its tokens.
        do_lower_case (bool or None): an explicit choice; None takes `do_lower_case` from the
            tokenizer_config.json beside the vocab, else judges it from the vocabulary.
        option_prefix (str): prefix of the command-line options the messages name ("teacher_" for
            `--teacher_do_lower_case`). Default: "".
    Returns:
        tuple (bool, str): the casing and where it came from, for messages.
    Raises:
        ValueError: the casing contradicts the vocabulary (a cased vocabulary with lower-casing, or an
            uncased one without): most capitalised words would silently become [UNK].
    """
    vocab = list(vocab)
    cased, is_cased = cased_entries(vocab), vocab_is_cased(vocab)
    settings = read_tokenizer_config(vocab_file)
    option = f"--{option_prefix}do_lower_case"
    if do_lower_case is not None:
        source = f"from {option}"
    elif "do_lower_case" in settings:
        do_lower_case = settings["do_lower_case"]
        source = f"from {Path(vocab_file).with_name(TOKENIZER_CONFIG)}"
    else:
        return not is_cased, f"judged from the letters of {vocab_file}"
    if do_lower_case == is_cased:
        what = ("a cased vocabulary, but the text would be lower-cased" if is_cased
                else "an uncased vocabulary, but the text would keep its capitals")
        examples = f", e.g. {', '.join(cased[:3])}" if cased else ""
        fix = f"{option} {str(not is_cased).lower()}"
        if source != f"from {option}":
            fix += f" (and correct {TOKENIZER_CONFIG})"
        raise ValueError(f"{vocab_file} is {what} (do_lower_case {str(do_lower_case).lower()} {source}; "
                         f"{len(cased)} of its {len(vocab)} entries have capitals{examples}), so words would "
                         f"silently become [UNK]: pass {fix}")
    return do_lower_case, source


def truncate_seq_pair(tokens_a, tokens_b, max_length):
    """Pops from the end of the longer list (of `tokens_b` on a tie) until both fit, in place.

    Google BERT's `_truncate_seq_pair`: trimming the longer side keeps the most of the shorter one.
    When the room is odd and both sides are long, A keeps the extra token (Hugging Face's
    `longest_first` gives it to B), as in the data the zoo's TinyBERT was trained on.
    """
    while len(tokens_a) + len(tokens_b) > max_length:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        longer.pop()


class WordPieceTokenizer:
    """Turns texts into BERT `input_ids, input_mask, segment_ids` of a fixed length.

    Args:
        vocab_file (str): WordPiece vocab.txt with [CLS], [SEP], [PAD] and [UNK].
        do_lower_case (bool or None): lower-case and strip accents, for uncased models; None (default)
            reads it from the tokenizer_config.json beside the vocab, else from the vocabulary's
            letters. A casing that contradicts the vocabulary raises ValueError (see `resolve_casing`).
        option_prefix (str): prefix of the command-line options its messages name ("teacher_" for the
            teacher's vocabulary: `--teacher_vocab_file`, `--teacher_do_lower_case`). Default: "".
    """

    def __init__(self, vocab_file, do_lower_case=None, option_prefix=""):
        vocab = load_vocab(vocab_file)
        self.option_prefix = option_prefix
        self.do_lower_case, source = resolve_casing(vocab_file, vocab, do_lower_case, option_prefix)
        self.casing = f"do_lower_case {str(self.do_lower_case).lower()} {source}"  # for summaries
        self.vocab_size = len(vocab)
        self.cls_id, self.sep_id, self.pad_id = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
        self.unk_id = vocab["[UNK]"]
        self._tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        # strip_accents=None follows `lowercase`, as BERT's BasicTokenizer does.
        self._tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=self.do_lower_case)
        self._tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def count_unknown(self, input_ids, input_mask):
        """(number of [UNK] tokens, number of text tokens) in int arrays (N, seq_length) as
        `build_inputs` returns them; [CLS], [SEP] and padding are not text."""
        real = (input_mask == 1) & (input_ids != self.cls_id) & (input_ids != self.sep_id)
        return int((real & (input_ids == self.unk_id)).sum()), int(real.sum())

    def unknown_warning(self, unknown, total):
        """A warning when more than UNK_WARNING_SHARE of `total` text tokens are [UNK], else None."""
        if total == 0 or unknown <= UNK_WARNING_SHARE * total:
            return None
        return (f"{100.0 * unknown / total:.1f}% of the tokens are [UNK]: is --{self.option_prefix}vocab_file the "
                f"model's vocabulary, and is the casing right (do_lower_case {str(self.do_lower_case).lower()})?")

    def token_ids(self, texts):
        """WordPiece ids of each text, without special tokens (list of lists)."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def build_inputs(self, ids_a, ids_b, seq_length):
        """[CLS] A [SEP] (B [SEP]) padded to `seq_length`, truncating the longer side first.

        Args:
            ids_a (list[list[int]]): first segments, without special tokens.
            ids_b (list[list[int] | None] | None): second segments; None (or a None row) for
                single sentences.
            seq_length (int): length of every output row.

        Returns:
            tuple of three int32 arrays (N, seq_length): input_ids, input_mask, segment_ids.
        """
        if seq_length < (2 if ids_b is None else 3):
            raise ValueError(f"seq_length {seq_length} leaves no room for [CLS]/[SEP]: use at least 3")
        count = len(ids_a)
        input_ids = np.full((count, seq_length), self.pad_id, dtype=np.int32)
        input_mask = np.zeros((count, seq_length), dtype=np.int32)
        segment_ids = np.zeros((count, seq_length), dtype=np.int32)
        for row in range(count):
            first = list(ids_a[row])
            second = None if ids_b is None or ids_b[row] is None else list(ids_b[row])
            if second is None:
                del first[seq_length - 2:]
                tokens = [self.cls_id] + first + [self.sep_id]
            else:
                truncate_seq_pair(first, second, seq_length - 3)
                tokens = [self.cls_id] + first + [self.sep_id] + second + [self.sep_id]
                segment_ids[row, len(first) + 2:len(tokens)] = 1
            input_ids[row, :len(tokens)] = tokens
            input_mask[row, :len(tokens)] = 1
        return input_ids, input_mask, segment_ids

    def encode_batch(self, texts_a, texts_b=None, seq_length=128):
        """Encodes single texts (`texts_b` None) or pairs; returns three int32 arrays (N, seq_length)."""
        ids_b = None if texts_b is None else self.token_ids(texts_b)
        return self.build_inputs(self.token_ids(texts_a), ids_b, seq_length)

    def encode(self, text_a, text_b=None, seq_length=128):
        """Encodes one text or pair; returns input_ids, input_mask, segment_ids as int32 (seq_length,)."""
        arrays = self.encode_batch([text_a], None if text_b is None else [text_b], seq_length)
        return tuple(array[0] for array in arrays)
