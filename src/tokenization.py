"""BERT WordPiece tokenization into fixed-length model inputs.

The `tokenizers` package does the normalisation, pre-tokenisation and WordPiece split (in Rust,
batched); this module adds what BERT's inputs need on top: [CLS]/[SEP], Google BERT's
longest-first pair truncation, padding, the attention mask and segment ids.
"""
import argparse
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")


def str2bool(value):
    """argparse type for `true`/`false`, so a flag reads the same as the yaml booleans."""
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return lowered == "true"


def add_tokenizer_args(parser):
    """The vocabulary, casing and length options shared by the record converters."""
    parser.add_argument("--vocab_file", required=True, help="WordPiece vocab.txt of the teacher")
    parser.add_argument("--do_lower_case", type=str2bool, default=True,
                        help="true for uncased vocabularies (default true)")
    parser.add_argument("--seq_length", type=int, default=128, help="tokens per sequence (default 128)")


def load_vocab(vocab_file):
    """Reads vocab.txt (one token a line, id = line number) and checks BERT's special tokens."""
    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"vocab file {path} does not exist: pass the teacher's vocab.txt")
    vocab = {}
    with path.open(encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\r\n")] = index
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"vocab file {path} lacks {', '.join(missing)}: use a BERT WordPiece vocab.txt")
    return vocab


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
        do_lower_case (bool): lower-case and strip accents, for uncased models. Default: True.
    """

    def __init__(self, vocab_file, do_lower_case=True):
        vocab = load_vocab(vocab_file)
        self.vocab_size = len(vocab)
        self.cls_id, self.sep_id, self.pad_id = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
        self._tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        # strip_accents=None follows `lowercase`, as BERT's BasicTokenizer does.
        self._tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case)
        self._tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

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
