"""TinyBERT data augmentation: masked-LM and embedding candidates against torch/transformers and numpy,
whole-word candidates, determinism, labels and pairs kept, files that convert, clear errors."""
import collections
import csv
import inspect
import json
import re
import shutil

import numpy as np
import mindspore as ms
import pytest
from safetensors.numpy import load_file, save_file

from src import augment
from src.augment import Augmenter, augment_file, render
from src.checkpoint import load_checkpoint, save_checkpoint, split_metadata
from src.cli import run_cli
from src.hf_convert import import_hf
from src.tinybert_model import BertConfig, BertForMaskedLM

VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
         + list(".,!?'\"-") + ["1", "2", "19"]
         + ("the a an movie film story plot is was were are good great bad fun funny boring and not very it this "
            "of to in with actors acting music man woman dog cat runs play quick brown fox jumps over lazy un "
            "best worst love hate 中 国 好").split()
         + ["##s", "##ing", "##ed", "##ly", "##believ", "##able", "##er", "##1"])
K = 5
SST = [("The movie was good and the actors were great .", "1"),
       ("an unbelievable , boring plot !", "0"),
       ("it is not funny", "0"),
       ("zzz", "1"),
       ("19 movies , 2 dogs", "1"),
       ("the quick brown fox jumps over the lazy dog", "1"),
       ("I love this film", "1")]
MRPC = [("1", "11", "12", "The man was playing music .", "A man plays the music !"),
        ("0", "21", "22", "This film is the worst .", "The dog runs with the cat ."),
        ("1", "31", "32", "Good acting , bad plot", "the plot was bad but the acting was good")]


def _special_or_piece(token):
    """The test's own statement of what must never replace a word."""
    return (token.startswith("[") and token.endswith("]")) or token.startswith("##") or \
        not any(c.isalpha() for c in token)


@pytest.fixture(scope="module")
def hf_mlm(tmp_path_factory):
    """A tiny randomly initialised transformers BertForMaskedLM, saved, and imported with its head."""
    torch = pytest.importorskip("torch", reason="the masked-LM reference needs torch")
    transformers = pytest.importorskip("transformers", reason="the masked-LM reference needs transformers")
    root = tmp_path_factory.mktemp("mlm")
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(3)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # a head that is not the identity at initialisation
        model.cls.predictions.bias.normal_()
        model.cls.predictions.transform.LayerNorm.weight.normal_(1.0, 0.3)
        model.cls.predictions.transform.LayerNorm.bias.normal_(0.0, 0.3)
    model.save_pretrained(root / "hf")
    (root / "hf" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (root / "hf" / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    import_hf(root / "hf", root / "mlm")
    # The same model without its head, as the shipped teacher comes.
    shutil.copytree(root / "hf", root / "hf_bare")
    weights = load_file(str(root / "hf_bare" / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("cls.")}, str(root / "hf_bare" / "model.safetensors"),
              metadata={"format": "pt"})
    import_hf(root / "hf_bare", root / "bare")
    if "vocab" in inspect.signature(transformers.BertTokenizerFast.__init__).parameters:  # transformers 5
        tokenizer = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=True)
    else:
        tokenizer = transformers.BertTokenizerFast(vocab_file=str(root / "hf" / "vocab.txt"), do_lower_case=True)
    return {"torch": torch, "model": model, "tokenizer": tokenizer, "hf": root / "hf", "mlm": root / "mlm",
            "bare": root / "bare"}


@pytest.fixture(scope="module")
def mlm_augmenter(hf_mlm):
    """One masked-LM augmenter for the module: each new one compiles its graph again (seconds)."""
    return Augmenter(hf_mlm["mlm"], num_candidates=K, batch_size=4)


def _write_tsv(path, header, rows, bom=False):
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_import_keeps_mlm_head_and_logits_match_transformers(hf_mlm):
    tensors, _ = split_metadata(load_checkpoint(hf_mlm["mlm"] / "model.ckpt"))
    assert sorted(name for name in tensors if name.startswith("cls1.")) == \
        ["cls1.dense.bias", "cls1.dense.weight", "cls1.layernorm.beta", "cls1.layernorm.gamma", "cls1.output_bias"]
    bare, _ = split_metadata(load_checkpoint(hf_mlm["bare"] / "model.ckpt"))
    assert not any(name.startswith("cls") for name in bare)

    ours = BertForMaskedLM(BertConfig.from_json_file(hf_mlm["mlm"] / "config.json").for_inference())
    params = dict(ours.parameters_and_names())
    for name, param in params.items():
        if not name.startswith("bert.dense."):  # HF's BertForMaskedLM has no pooler
            param.set_data(tensors[name])
    ours.set_train(False)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(VOCAB), (3, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    types = (np.arange(11) >= 6).astype(np.int32)[None].repeat(3, 0)
    scores = ours(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy()
    torch = hf_mlm["torch"]
    with torch.no_grad():
        expected = hf_mlm["model"](input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long(),
                                   token_type_ids=torch.tensor(types).long()).logits.numpy()
    assert scores.shape == (3, 11, len(VOCAB))
    real = mask == 1
    np.testing.assert_allclose(scores[real], expected[real], atol=2e-5, rtol=0)
    assert np.abs(expected[real]).max() > 1.0  # a head that does something


def test_import_refuses_an_untied_decoder(hf_mlm, tmp_path):
    shutil.copytree(hf_mlm["hf"], tmp_path / "hf")
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    weights["cls.predictions.decoder.weight"] = weights["bert.embeddings.word_embeddings.weight"] + 1.0
    save_file(weights, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"masked-LM decoder .* is not the word embedding table"):
        import_hf(tmp_path / "hf", tmp_path / "out")
    weights["cls.predictions.decoder.weight"] = weights["bert.embeddings.word_embeddings.weight"]
    save_file(weights, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    import_hf(tmp_path / "hf", tmp_path / "out")  # a tied copy, as older files repeat it, imports
    assert "cls1.output_bias" in load_checkpoint(tmp_path / "out" / "model.ckpt")


def _reference_mlm_top_k(hf_mlm, text_a, text_b):
    """{(segment, word): sorted top-K ids} from transformers' tokenizer and model, word by word."""
    torch, tokenizer = hf_mlm["torch"], hf_mlm["tokenizer"]
    encoding = tokenizer(text_a, text_b)
    ids, words, sequences = encoding["input_ids"], encoding.word_ids(), encoding.sequence_ids()
    banned = np.array([_special_or_piece(token) for token in VOCAB])
    expected = {}
    for position, (word, sequence) in enumerate(zip(words, sequences)):
        same_word = [p for p, (w, s) in enumerate(zip(words, sequences)) if w == word and s == sequence]
        token = VOCAB[ids[position]]
        if word is None or len(same_word) != 1 or token == "[UNK]" or not any(c.isalpha() for c in token):
            continue
        masked = list(ids)
        masked[position] = VOCAB.index("[MASK]")
        with torch.no_grad():
            logits = hf_mlm["model"](input_ids=torch.tensor([masked]),
                                     token_type_ids=torch.tensor([encoding["token_type_ids"]])).logits[0, position].numpy()
        logits[banned] = -np.inf
        logits[ids[position]] = -np.inf
        expected[(sequence, word)] = np.sort(np.argsort(-logits, kind="stable")[:K])
    return expected


def test_mlm_candidates_match_transformers_top_k(hf_mlm, mlm_augmenter):
    augmenter = mlm_augmenter
    assert augmenter.scorer is not None
    counts_before = dict(augmenter.counts)
    examples = [("The movie was good and the actors were great .", None),
                ("A man plays the music !", "This film is the worst , an unbelievable plot .")]
    expected_mlm = expected_embeddings = 0
    for text_a, text_b in examples:
        texts = [text_a] if text_b is None else [text_a, text_b]
        example = tuple(augmenter.split(texts))
        found = augmenter.candidates([example])[0]
        expected = _reference_mlm_top_k(hf_mlm, text_a, text_b)
        assert expected
        expected_mlm += len(expected)
        for (segment, word), ids in expected.items():
            np.testing.assert_array_equal(found[segment][word], ids, err_msg=f"{texts[segment]!r} word {word}")
        multi_piece = [(s, w) for s, seg in enumerate(example) for w, pieces in enumerate(seg.pieces)
                       if len(pieces) > 1]
        for s, w in multi_piece:  # "plays", "unbelievable": embedding neighbours
            np.testing.assert_array_equal(found[s][w], augmenter.embedding_neighbours([example[s].pieces[w]])[0])
        expected_embeddings += len(multi_piece)
    assert expected_embeddings == 2
    assert augmenter.counts["mlm"] - counts_before.get("mlm", 0) == expected_mlm
    assert augmenter.counts["embeddings"] - counts_before.get("embeddings", 0) == expected_embeddings


def test_words_cut_off_the_mlm_window_get_embedding_neighbours(mlm_augmenter, monkeypatch):
    monkeypatch.setattr(mlm_augmenter, "seq_length", 10)  # the graph takes any length: no new compile
    example = tuple(mlm_augmenter.split(["the movie was good and the actors were great", "it is not funny"]))
    assert [len(segment.pieces) for segment in example] == [9, 4]  # all single pieces
    # [CLS] A [SEP] B [SEP] in 10 tokens: the longer sentence is cut first, to 4 + 3 words.
    kept = [4, 3]
    counts_before = dict(mlm_augmenter.counts)
    found = mlm_augmenter.candidates([example])[0]
    for s, segment in enumerate(example):
        for w, pieces in enumerate(segment.pieces):
            neighbours = mlm_augmenter.embedding_neighbours([pieces])[0]
            assert np.array_equal(found[s][w], neighbours) == (w >= kept[s]), (s, w)
    assert mlm_augmenter.counts["mlm"] - counts_before.get("mlm", 0) == sum(kept)
    assert mlm_augmenter.counts["embeddings"] - counts_before.get("embeddings", 0) == 13 - sum(kept)


def test_embedding_neighbours_match_numpy_cosine(hf_mlm):
    augmenter = Augmenter(hf_mlm["bare"], num_candidates=K)
    assert augmenter.scorer is None
    table = split_metadata(load_checkpoint(hf_mlm["bare"] / "model.ckpt"))[0][
        "bert.bert_embedding_lookup.embedding_table"].asnumpy().astype(np.float64)
    words = [(VOCAB.index("good"),), (VOCAB.index("movie"), VOCAB.index("##s")),
             (VOCAB.index("un"), VOCAB.index("##believ"), VOCAB.index("##able")), (VOCAB.index("fox"),)]
    found = augmenter.embedding_neighbours(words)
    for word, ids in zip(words, found):
        query = table[list(word)].mean(axis=0)
        similarity = []
        for token_id, token in enumerate(VOCAB):
            if _special_or_piece(token) or word == (token_id,):
                continue
            vector = table[token_id]
            similarity.append((float(np.dot(query, vector) / (np.linalg.norm(query) * np.linalg.norm(vector))), token_id))
        best = sorted(similarity, reverse=True)[:K]
        assert best[-1][0] - sorted(similarity, reverse=True)[K][0] > 1e-6  # no tie at the boundary
        np.testing.assert_array_equal(ids, sorted(token_id for _, token_id in best), err_msg=str(word))
    assert len(augmenter.neighbour_cache) == 4
    again = augmenter.embedding_neighbours(words[:1])  # served from the cache
    assert again[0] is found[0]


@pytest.mark.parametrize("source", ["mlm", "embeddings"])
def test_candidates_are_whole_words_never_the_word(hf_mlm, mlm_augmenter, source):
    augmenter = mlm_augmenter if source == "mlm" else Augmenter(hf_mlm["mlm"], num_candidates=K, candidates=source)
    counts_before = dict(augmenter.counts)
    texts = [text for text, _ in SST] + ["中国good , 1 ##s [MASK] it's"]
    examples = [(segment,) for segment in augmenter.split(texts)]
    found = augmenter.candidates(examples)
    served = 0
    for (segment,), (candidates,) in zip(examples, found):
        for word, pieces in enumerate(segment.pieces):
            start, end = segment.spans[word]
            has_letter = any(c.isalpha() for c in segment.text[start:end])
            if pieces == (VOCAB.index("[UNK]"),) or not has_letter:
                assert word not in candidates, segment.text[start:end]
                continue
            ids = candidates[word]
            served += 1
            assert len(ids) == K and list(ids) == sorted(set(ids))
            assert not any(_special_or_piece(VOCAB[i]) for i in ids), [VOCAB[i] for i in ids]
            assert pieces != (ids[0],) and all((i,) != pieces for i in ids)
    mlm = augmenter.counts["mlm"] - counts_before.get("mlm", 0)
    assert served == mlm + augmenter.counts["embeddings"] - counts_before.get("embeddings", 0) > 30
    assert (mlm > 0) == (source == "mlm")


def test_render_keeps_words_apart(hf_mlm):
    augmenter = Augmenter(hf_mlm["bare"], num_candidates=K)
    (segment,) = augmenter.split(["中国good, it's"])
    assert len(segment.pieces) == 7  # 中 国 good , it ' s: CJK characters and "it's" split
    for index in range(3):
        for token in ("film", "好"):
            text = render(segment, {index: token})
            (again,) = augmenter.split([text])
            assert len(again.pieces) == len(segment.pieces), text
            assert VOCAB[again.pieces[index][0]] == token


def _augment(augmenter, tmp_path, name, **options):
    source = _write_tsv(tmp_path / "in.tsv", ["sentence", "label"], SST)
    result = augment_file(augmenter, source, "sst2", tmp_path / name, progress=False, **options)
    return result, (tmp_path / name).read_bytes()


def test_deterministic_for_a_seed_and_independent_of_batching(hf_mlm, mlm_augmenter, tmp_path, monkeypatch):
    _, first = _augment(mlm_augmenter, tmp_path, "a.tsv", num_aug=6, seed=5)
    _, again = _augment(Augmenter(hf_mlm["mlm"], num_candidates=K, candidates="embeddings"), tmp_path, "b.tsv",
                        num_aug=6, seed=5)
    _, other = _augment(mlm_augmenter, tmp_path, "c.tsv", num_aug=6, seed=6)
    monkeypatch.setattr(augment, "EXAMPLES_PER_CHUNK", 2)
    monkeypatch.setattr(augment, "QUERY_ROWS", 3)
    monkeypatch.setattr(mlm_augmenter, "batch_size", 1)
    mlm_augmenter.neighbour_cache.clear()
    _, rebatched = _augment(mlm_augmenter, tmp_path, "d.tsv", num_aug=6, seed=5)
    assert first == rebatched
    assert other != first
    assert again != first  # the masked LM's candidates are not the embedding neighbours


def test_labels_kept_copies_distinct_and_file_converts(hf_mlm, tmp_path):
    num_aug = 8
    augmenter = Augmenter(hf_mlm["bare"], num_candidates=K)
    result, _ = _augment(augmenter, tmp_path, "out.tsv", num_aug=num_aug, seed=2)
    rows = _read_tsv(tmp_path / "out.tsv")
    assert list(rows[0]) == ["sentence", "label", "source_example_id", "aug_index"]
    by_source = {}
    for row in rows:
        by_source.setdefault(int(row["source_example_id"]), []).append(row)
    assert sorted(by_source) == list(range(len(SST)))
    for example_id, group in by_source.items():
        text, label = SST[example_id]
        assert [int(row["aug_index"]) for row in group] == list(range(len(group)))
        assert group[0]["sentence"] == text and len(group) <= num_aug + 1
        assert all(row["label"] == label for row in group)
        assert len({row["sentence"] for row in group}) == len(group)  # no copy repeats the row or another copy
        (original,) = augmenter.split([text])
        for row in group[1:]:
            (copy,) = augmenter.split([row["sentence"]])
            assert len(copy.pieces) == len(original.pieces)
            changed = [(a, b) for a, b in zip(original.pieces, copy.pieces) if a != b]
            assert changed and all(len(b) == 1 and not _special_or_piece(VOCAB[b[0]]) for _, b in changed)
    assert len(by_source[3]) == 1  # "zzz" is [UNK]: nothing to replace
    assert result["examples"] == len(SST) and result["copies"] == len(rows) - len(SST) > 20

    run_cli(augment.main, ["--task", "sst2", "--input_file", str(tmp_path / "in.tsv"), "--output_file",
                           str(tmp_path / "cli.tsv"), "--model_dir", str(hf_mlm["bare"]), "--num_aug", str(num_aug),
                           "--num_candidates", str(K), "--seed", "2", "--no_progress", "--records_file",
                           str(tmp_path / "aug.mindrecord"), "--seq_length", "16"])
    assert (tmp_path / "cli.tsv").read_bytes() == (tmp_path / "out.tsv").read_bytes()
    records = list(ms.dataset.MindDataset(str(tmp_path / "aug.mindrecord"), shuffle=False)
                   .create_dict_iterator(num_epochs=1, output_numpy=True))
    assert [int(r["label_ids"]) for r in records] == [int(row["label"]) for row in rows]
    assert [int(r["example_id"]) for r in records] == list(range(len(rows)))


def _pair_rows(augmenter, tmp_path, pair_mode):
    """Each output row of the MRPC pairs: (row, [first sentence changed, second sentence changed])."""
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    source = _write_tsv(tmp_path / "mrpc.tsv", header, MRPC, bom=True)
    output = tmp_path / f"{pair_mode}.tsv"
    result = augment_file(augmenter, source, "mrpc", output, num_aug=10, seed=1, progress=False, pair_mode=pair_mode)
    assert result["examples"] == 3
    rows = _read_tsv(output)
    assert list(rows[0]) == header + ["source_example_id", "aug_index"]
    marked = []
    for row in rows:
        original = MRPC[int(row["source_example_id"])]
        assert [row[c] for c in header[:3]] == list(original[:3])  # label and ids kept
        changed = []
        for column, text in zip(header[3:], original[3:]):
            (before,), (after,) = augmenter.split([text]), augmenter.split([row[column]])
            assert len(after.pieces) == len(before.pieces)  # each sentence stays in its own column
            changed.append(after.pieces != before.pieces)
        assert any(changed) == (row["aug_index"] != "0")
        marked.append((row, changed))
    return marked


def test_pairs_stay_pairs(mlm_augmenter, tmp_path):
    both = _pair_rows(mlm_augmenter, tmp_path, "both")
    assert sum(all(changed) for _, changed in both) > 5


def test_pair_mode_one_changes_one_sentence_a_copy(mlm_augmenter, tmp_path):
    one = _pair_rows(mlm_augmenter, tmp_path, "one")
    copies = [changed for row, changed in one if row["aug_index"] != "0"]
    assert not any(all(changed) for changed in copies)
    first = sum(changed[0] for changed in copies)
    assert first > 5 and len(copies) - first > 5  # the first and the second sentence in turn
    # the same draws as pair_mode "both", restricted to one sentence: every word at a position of a
    # "one" row is the word some "both" row of the same example (the original row among them) has there
    both = _pair_rows(mlm_augmenter, tmp_path, "both")
    replaced = collections.defaultdict(set)
    for row, _ in both:
        for column in ("#1 String", "#2 String"):
            replaced[row["source_example_id"], column].update(enumerate(row[column].split()))
    for row, _ in one:
        for column in ("#1 String", "#2 String"):
            assert set(enumerate(row[column].split())) <= replaced[row["source_example_id"], column]
    with pytest.raises(ValueError, match="--pair_mode 'left' is not one of both, one"):
        augment_file(mlm_augmenter, tmp_path / "mrpc.tsv", "mrpc", tmp_path / "x.tsv", pair_mode="left")
    assert not (tmp_path / "x.tsv").exists()


def _changed_words(augmenter, rows):
    """The original words (as text) that the copies among `rows` (read from an SST-2 output) replaced."""
    changed = collections.Counter()
    for row in rows:
        if row["aug_index"] == "0":
            continue
        text = SST[int(row["source_example_id"])][0]
        (before,), (after,) = augmenter.split([text]), augmenter.split([row["sentence"]])
        changed.update(text[slice(*span)].lower() for span, a, b in zip(before.spans, before.pieces, after.pieces)
                       if a != b)
    return changed


def test_stop_words_are_never_replaced(hf_mlm, tmp_path, capsys):
    augmenter = Augmenter(hf_mlm["bare"], num_candidates=K)
    _augment(augmenter, tmp_path, "all.tsv", num_aug=12, seed=3)
    assert _changed_words(augmenter, _read_tsv(tmp_path / "all.tsv"))["the"] > 3  # replaced without a stop list
    stop_file = tmp_path / "stop.txt"
    stop_file.write_text("# NLTK-like list\nTHE\n\nwas\nit's\n", encoding="utf-8")
    source = _write_tsv(tmp_path / "in.tsv", ["sentence", "label"], SST)
    run_cli(augment.main, ["--task", "sst2", "--input_file", str(source), "--output_file", str(tmp_path / "stop.tsv"),
                           "--model_dir", str(hf_mlm["bare"]), "--num_aug", "12", "--num_candidates", str(K),
                           "--seed", "3", "--no_progress", "--stop_words", str(stop_file)])
    assert "; 5 stop words kept; " in capsys.readouterr().out  # the, was, it, ', s: the uncased tokenizer's words
    changed = _changed_words(augmenter, _read_tsv(tmp_path / "stop.tsv"))
    assert not {"the", "was", "it"} & set(changed)
    assert changed["movie"] and changed["good"]  # the other words still are


def test_errors_are_one_line_and_leave_no_file(hf_mlm, tmp_path, capsys):
    source = _write_tsv(tmp_path / "in.tsv", ["sentence", "label"], SST[:2] + [("fine", "7")])
    header_only = _write_tsv(tmp_path / "empty.tsv", ["sentence", "label"], [])
    other_columns = _write_tsv(tmp_path / "other.tsv", ["text", "label"], SST[:2])
    (tmp_path / "no_words.txt").write_text("# nothing\n\n", encoding="utf-8")
    base = ["--task", "sst2", "--input_file", str(source), "--model_dir", str(hf_mlm["bare"]), "--no_progress"]
    cases = [
        (["--output_file", str(tmp_path / "o.tsv"), "--num_aug", "0"], r"--num_aug is 0: .* at least 1"),
        (["--output_file", str(tmp_path / "o.tsv"), "--replace_prob", "1.5"], r"--replace_prob is 1.5: .*\(0, 1\]"),
        (["--output_file", str(tmp_path / "o.csv")], r"written as TSV: give it a \.tsv name"),
        (["--output_file", str(source)], r"--output_file .*in\.tsv is the same file as --input_file"),
        (["--output_file", str(tmp_path / "o.tsv"), "--candidates", "mlm"], r"has no masked-LM head: use --candidates"),
        (["--output_file", str(tmp_path / "o.tsv")], r"in\.tsv:4: unknown label '7' .* pass --skip_bad_rows"),
        (["--output_file", str(tmp_path / "o.tsv"), "--num_candidates", "99"], r"too few for --num_candidates 99"),
        (["--output_file", str(tmp_path / "o.tsv"), "--input_file", str(tmp_path / "absent.tsv")],
         r"input file .*absent\.tsv does not exist"),
        (["--output_file", str(tmp_path / "o.tsv"), "--stop_words", str(tmp_path / "no_words.txt")],
         r"--stop_words .*no_words\.txt holds no word: give one word a line"),
        (["--output_file", str(tmp_path / "o.tsv"), "--stop_words", str(tmp_path / "absent.txt")],
         r"stop-word file .*absent\.txt does not exist"),
        (["--output_file", str(tmp_path / "o.tsv"), "--input_file", str(header_only)], r"no examples in .*empty\.tsv"),
        (["--output_file", str(tmp_path / "o.tsv"), "--input_file", str(other_columns)],
         r"column 'sentence' is not in the header \(text, label\): pass the train file of this --task"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(augment.main, base + extra)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ")
        assert re.search(message, err), err
        assert not (tmp_path / "o.tsv").exists() and not list(tmp_path.glob(".o.tsv*"))
    with pytest.raises(SystemExit):  # with the progress bar on: still the error line alone, no bar before it
        run_cli(augment.main, [*base[:-1], "--output_file", str(tmp_path / "o.tsv"), "--input_file",
                               str(other_columns)])
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        run_cli(augment.main, ["--task", "sst2", "--input_file", str(source), "--model_dir", str(tmp_path / "none"),
                               "--output_file", str(tmp_path / "o.tsv")])
    assert "model.ckpt does not exist: --model_dir takes a directory" in capsys.readouterr().err
    run_cli(augment.main, base + ["--output_file", str(tmp_path / "o.tsv"), "--skip_bad_rows"])
    assert re.search(r": 2 examples and \d+ augmented copies \(.*; 1 bad rows skipped\)", capsys.readouterr().out)
    assert {row["source_example_id"] for row in _read_tsv(tmp_path / "o.tsv")} == {"0", "1"}


def test_model_directory_errors(hf_mlm, tmp_path):
    shutil.copytree(hf_mlm["mlm"], tmp_path / "no_mask")
    vocab = [token if token != "[MASK]" else "[unused9]" for token in VOCAB]
    (tmp_path / "no_mask" / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"has no \[MASK\] token for the masked LM: use --candidates embeddings"):
        Augmenter(tmp_path / "no_mask", num_candidates=K)
    assert Augmenter(tmp_path / "no_mask", num_candidates=K, candidates="embeddings").scorer is None

    shutil.copytree(hf_mlm["bare"], tmp_path / "long_vocab")
    (tmp_path / "long_vocab" / "vocab.txt").write_text("\n".join(VOCAB + ["extra"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"has {len(VOCAB) + 1} tokens but the model only {len(VOCAB)} embeddings"):
        Augmenter(tmp_path / "long_vocab", num_candidates=K)
    (tmp_path / "no_embeddings").mkdir()
    save_checkpoint(tmp_path / "no_embeddings" / "model.ckpt", {"dense_1.weight": ms.Tensor(np.ones((2, 3), np.float32))})
    shutil.copyfile(hf_mlm["bare"] / "vocab.txt", tmp_path / "no_embeddings" / "vocab.txt")
    with pytest.raises(ValueError, match=r"holds no word embeddings \(bert\.bert_embedding_lookup\.embedding_table\)"):
        Augmenter(tmp_path / "no_embeddings")
    for options, message in (({"seq_length": 2}, r"--seq_length is 2: it must be at least 3"),
                             ({"batch_size": 0}, r"--batch_size is 0"),
                             ({"candidates": "glove"}, r"--candidates 'glove' is not one of auto, mlm, embeddings")):
        with pytest.raises(ValueError, match=message):
            Augmenter(hf_mlm["bare"], **options)
