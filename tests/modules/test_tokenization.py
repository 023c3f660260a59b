"""WordPiece encoding against Hugging Face's BERT tokenizer on the real MiniLM vocabulary."""
from pathlib import Path

import numpy as np
import pytest
from tokenizers import BertWordPieceTokenizer

from src.tokenization import WordPieceTokenizer, load_vocab, truncate_seq_pair

SENTENCES = [
    "it 's a charming and often affecting journey . ",
    "He said the foodservice pie business doesn't fit the company's long-term growth strategy.",
    "Café Déjà-vu: naïve façades, 3.14159 and 1,000,000 unbelievably-hyphenated\twords!",
    "Tokyo (東京) is Japan's capital; Zürich isn't.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis and supercalifragilisticexpialidocious",
    "Line one\r\nline two\u00a0with a non-breaking space and an emoji 🙂",
    "",
]


@pytest.fixture
def vocab_file(minilm_dir):
    return str(minilm_dir / "vocab.txt")


@pytest.fixture
def tokenizer(vocab_file):
    return WordPieceTokenizer(vocab_file)


@pytest.fixture
def hf_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))


def test_single_sentences_match_hugging_face(tokenizer, hf_tokenizer):
    input_ids, input_mask, segment_ids = tokenizer.encode_batch(SENTENCES, seq_length=48)
    reference = hf_tokenizer(SENTENCES, max_length=48, truncation=True, padding="max_length")
    assert input_ids.dtype == np.int32 and input_ids.shape == (len(SENTENCES), 48)
    np.testing.assert_array_equal(input_ids, reference["input_ids"])
    np.testing.assert_array_equal(input_mask, reference["attention_mask"])
    np.testing.assert_array_equal(segment_ids, reference["token_type_ids"])


def test_pairs_match_hugging_face_without_truncation(tokenizer, hf_tokenizer):
    firsts, seconds = SENTENCES[:-1], SENTENCES[1:]
    input_ids, input_mask, segment_ids = tokenizer.encode_batch(firsts, seconds, seq_length=96)
    reference = hf_tokenizer(firsts, seconds, max_length=96, padding="max_length")
    np.testing.assert_array_equal(input_ids, reference["input_ids"])
    np.testing.assert_array_equal(input_mask, reference["attention_mask"])
    np.testing.assert_array_equal(segment_ids, reference["token_type_ids"])


def test_real_glue_pairs_match_hugging_face(tokenizer, hf_tokenizer, shared_data):
    lines = (shared_data / "glue" / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:201]
    pairs = [line.split("\t")[3:5] for line in lines]
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    input_ids, _, segment_ids = tokenizer.encode_batch(firsts, seconds, seq_length=128)
    reference = hf_tokenizer(firsts, seconds, max_length=128, padding="max_length")
    np.testing.assert_array_equal(input_ids, reference["input_ids"])
    np.testing.assert_array_equal(segment_ids, reference["token_type_ids"])


@pytest.fixture
def cased_vocab_file(vocab_file, tmp_path):
    """The MiniLM vocabulary plus capitalised words (a cased vocabulary), no tokenizer_config.json."""
    tokens = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    capitalised = [t.capitalize() for t in tokens[2000:3000] if t.isalpha()]
    path = tmp_path / "cased" / "vocab.txt"
    path.parent.mkdir()
    path.write_text("\n".join(tokens + capitalised + ["Café", "Tokyo", "Zürich", "Line"]) + "\n", encoding="utf-8")
    return str(path)


def test_cased_vocabulary_keeps_case_and_accents(cased_vocab_file):
    cased = WordPieceTokenizer(cased_vocab_file)  # casing judged from the vocabulary
    assert cased.do_lower_case is False and "judged from the letters" in cased.casing
    reference = BertWordPieceTokenizer(cased_vocab_file, lowercase=False)
    for sentence in SENTENCES:
        assert cased.token_ids([sentence])[0] == reference.encode(sentence, add_special_tokens=False).ids
    uncased_reference = BertWordPieceTokenizer(cased_vocab_file, lowercase=True)
    assert cased.token_ids(["Café"])[0] != uncased_reference.encode("Café", add_special_tokens=False).ids


# The recipe: a cased vocabulary in which lower-casing turns names into [UNK].
RECIPE_VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] The Paris France Marie visited in May . the".split()


def write_vocab(folder, tokens, tokenizer_config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(tokenizer_config, encoding="utf-8")
    return str(folder / "vocab.txt")


def test_recipe_vocabulary_keeps_names(tmp_path):
    tokenizer = WordPieceTokenizer(write_vocab(tmp_path, RECIPE_VOCAB))
    input_ids, _, _ = tokenizer.encode("Marie visited France in May .", seq_length=9)
    assert [RECIPE_VOCAB[i] for i in input_ids] == "[CLS] Marie visited France in May . [SEP] [PAD]".split()


@pytest.mark.parametrize("tokens, setting, flag, message", [
    (RECIPE_VOCAB, None, True, r"is a cased vocabulary, but the text would be lower-cased \(do_lower_case true from "
     r"--do_lower_case; 5 of its 14 entries have capitals, e.g. The, Paris, France\), so words would silently "
     r"become \[UNK\]: pass --do_lower_case false$"),
    (RECIPE_VOCAB, '{"do_lower_case": true}', None, r"do_lower_case true from .*tokenizer_config.json; .*pass "
     r"--do_lower_case false \(and correct tokenizer_config.json\)$"),
    (RECIPE_VOCAB[:5] + "the paris france marie visited in may .".split(), None, False, r"is an uncased vocabulary, but the text would keep its "
     r"capitals \(do_lower_case false from --do_lower_case; 0 of its 13 entries have capitals\), .*pass "
     r"--do_lower_case true$"),
])
def test_casing_that_contradicts_the_vocabulary_is_an_error(tmp_path, tokens, setting, flag, message):
    with pytest.raises(ValueError, match=message):
        WordPieceTokenizer(write_vocab(tmp_path, tokens, setting), flag)


def test_tokenizer_config_beside_the_vocab_decides_and_the_flag_overrides(tmp_path, vocab_file):
    tokens = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    mixed = tokens + ["Paris"]  # one capitalised entry among 30k: still an uncased vocabulary
    assert WordPieceTokenizer(write_vocab(tmp_path / "a", mixed)).do_lower_case is True
    from_settings = WordPieceTokenizer(write_vocab(tmp_path / "b", mixed, '{"do_lower_case": true}'))
    assert from_settings.do_lower_case is True and str(tmp_path / "b" / "tokenizer_config.json") in from_settings.casing
    cased = WordPieceTokenizer(write_vocab(tmp_path / "c", RECIPE_VOCAB, '{"do_lower_case": true}'), False)
    assert cased.do_lower_case is False and cased.casing == "do_lower_case false from --do_lower_case"


def test_tokenizer_config_that_is_not_json(tmp_path):
    with pytest.raises(ValueError, match=r"tokenizer_config.json is not valid JSON \(Expecting value at line 1\): it "
                                         r"should be the tokenizer settings of the model"):
        WordPieceTokenizer(write_vocab(tmp_path, RECIPE_VOCAB, "do_lower_case: yes"))


def test_unknown_share_warning(tmp_path):
    tokenizer = WordPieceTokenizer(write_vocab(tmp_path, RECIPE_VOCAB))
    ids, mask, _ = tokenizer.encode_batch(["Marie visited Rome in May .", "The Paris ."], seq_length=12)
    assert tokenizer.count_unknown(ids, mask) == (1, 9)
    assert tokenizer.unknown_warning(1, 9).startswith("11.1% of the tokens are [UNK]: is --vocab_file")
    assert tokenizer.unknown_warning(1, 20) is None


@pytest.mark.parametrize("len_a, len_b, room, kept", [
    (5, 5, 7, (4, 3)),   # tie: B gives first, so A keeps the odd token
    (6, 2, 5, (3, 2)),   # only the longer side shrinks while it is longer
    (1, 10, 4, (1, 3)),
    (3, 2, 9, (3, 2)),   # fits: untouched
    (4, 4, 0, (0, 0)),
])
def test_truncate_seq_pair_follows_google_bert(len_a, len_b, room, kept):
    tokens_a, tokens_b = list(range(len_a)), list(range(100, 100 + len_b))
    truncate_seq_pair(tokens_a, tokens_b, room)
    assert (len(tokens_a), len(tokens_b)) == kept
    assert tokens_a == list(range(kept[0])) and tokens_b == list(range(100, 100 + kept[1]))  # cut from the end


def test_truncated_pair_layout(tokenizer):
    a, b = "one two three four five six", "seven eight nine ten"
    ids_a, ids_b = tokenizer.token_ids([a, b])
    input_ids, input_mask, segment_ids = tokenizer.encode(a, b, seq_length=9)
    expected = [tokenizer.cls_id] + ids_a[:3] + [tokenizer.sep_id] + ids_b[:3] + [tokenizer.sep_id]
    assert input_ids.tolist() == expected
    assert input_mask.tolist() == [1] * 9
    assert segment_ids.tolist() == [0] * 5 + [1] * 4


def test_long_single_sentence_is_cut_and_ends_with_sep(tokenizer):
    input_ids, input_mask, segment_ids = tokenizer.encode(" ".join(["word"] * 50), seq_length=16)
    assert input_ids[0] == tokenizer.cls_id and input_ids[-1] == tokenizer.sep_id
    assert input_mask.sum() == 16 and segment_ids.sum() == 0


def test_padding_uses_pad_id_and_zero_mask(tokenizer):
    input_ids, input_mask, segment_ids = tokenizer.encode("hello", "world", seq_length=10)
    assert input_ids[5:].tolist() == [tokenizer.pad_id] * 5
    assert input_mask.tolist() == [1] * 5 + [0] * 5
    assert segment_ids.tolist() == [0, 0, 0, 1, 1] + [0] * 5


def test_missing_vocab_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab file .*nope.txt does not exist"):
        WordPieceTokenizer(str(tmp_path / "nope.txt"))


def test_vocab_without_special_tokens(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[CLS]\n[SEP]\n[UNK]\nhello\n")
    with pytest.raises(ValueError, match=r"lacks \[PAD\]: use a BERT WordPiece vocab.txt"):
        load_vocab(str(vocab))


def test_binary_vocab_file_is_named(tmp_path):
    vocab = tmp_path / "model.ckpt"
    vocab.write_bytes(b"[PAD]\n\xc6\xff\n")
    with pytest.raises(ValueError, match=r"vocab file .*model.ckpt is not UTF-8 text \(byte 6\)"):
        load_vocab(str(vocab))


def test_seq_length_too_short_for_a_pair(tokenizer):
    with pytest.raises(ValueError, match="seq_length 2 leaves no room"):
        tokenizer.encode("a", "b", seq_length=2)
