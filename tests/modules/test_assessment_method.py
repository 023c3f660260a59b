"""Metrics against values worked out by hand, numpy, and scipy and seqeval where they are installed."""
import math

import numpy as np
import pytest

from src.assessment_method import (METRICS, accuracy, compute_metric, entity_scores, entity_spans, f1, macro_f1,
                                   mcc, ner_scores, pearson, spearman)
from src.conll_to_records import IGNORE_INDEX, convert, features_path, read_sentences
from src.tokenization import WordPieceTokenizer

# Binary case: TP = 3 (rows 0, 2, 6), FN = 1 (row 1), FP = 1 (row 4), TN = 3.
LABELS = [1, 1, 1, 0, 0, 0, 1, 0]
PREDICTIONS = [1, 0, 1, 0, 1, 0, 1, 0]


def test_binary_metrics_by_hand():
    assert accuracy(PREDICTIONS, LABELS) == 6 / 8
    assert f1(PREDICTIONS, LABELS) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert mcc(PREDICTIONS, LABELS) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))


def test_f1_uses_precision_and_recall_of_class_one():
    # TP = 1, FP = 3, FN = 0: precision 1/4, recall 1, F1 = 2PR/(P+R) = 0.4. Formulas that mix up
    # FP and FN, or score class 0, give other values here (class 0 alone: F1 = 0).
    labels, predictions = [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]
    precision, recall = 1 / 4, 1 / 1
    assert f1(predictions, labels) == pytest.approx(2 * precision * recall / (precision + recall))
    assert f1(predictions, labels) == pytest.approx(0.4)


def test_macro_f1_and_multiclass_mcc_by_hand():
    labels, predictions = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 2]
    # Per class: F1(0) = 2*2/(4+1+0) = 0.8, F1(1) = 0, F1(2) = 2*1/(2+1+1) = 0.5.
    assert macro_f1(predictions, labels) == pytest.approx((0.8 + 0 + 0.5) / 3)
    # Confusion trace c = 3, total s = 6, true counts t = (2, 2, 2), predicted counts p = (3, 1, 2).
    assert mcc(predictions, labels) == pytest.approx((3 * 6 - 12) / math.sqrt((36 - 12) * (36 - 14)))


def test_all_one_class():
    ones = np.ones(6, dtype=int)
    assert accuracy(ones, ones) == 1.0
    assert f1(ones, ones) == 1.0
    assert mcc(ones, ones) == 0.0  # undefined: no variation in either
    assert f1(np.zeros(6), np.zeros(6)) == 0.0  # no positive class at all
    assert macro_f1(np.zeros(6), np.zeros(6)) == 1.0
    assert mcc(np.zeros(6), [0, 0, 1, 0, 1, 0]) == 0.0
    assert pearson(np.full(5, 2.0), [1, 2, 3, 4, 5]) == 0.0
    assert spearman(np.full(5, 2.0), [1, 2, 3, 4, 5]) == 0.0


def test_correlations_against_numpy_and_hand_ranks():
    predictions = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.5])
    labels = np.array([2.0, 1.0, 3.0, 3.0, 4.0, 6.0, 5.0, 1.0])
    assert pearson(predictions, labels) == pytest.approx(np.corrcoef(predictions, labels)[0, 1])
    prediction_ranks = [2, 3.5, 3.5, 5, 7, 7, 7, 1]  # ties share the mean of their ranks
    label_ranks = [3, 1.5, 4.5, 4.5, 6, 8, 7, 1.5]
    assert spearman(predictions, labels) == pytest.approx(np.corrcoef(prediction_ranks, label_ranks)[0, 1])
    assert pearson([1, 2, 3], [-2, -4, -6]) == pytest.approx(-1.0)


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is optional: install it to cross-check correlations")
    rng = np.random.default_rng(0)
    predictions = rng.normal(size=200)
    labels = np.round(predictions + rng.normal(size=200), 1)  # rounding makes ties
    assert pearson(predictions, labels) == pytest.approx(stats.pearsonr(predictions, labels)[0])
    assert spearman(predictions, labels) == pytest.approx(stats.spearmanr(predictions, labels)[0])


def test_compute_metric_turns_logits_into_predictions():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.4], [5.0, 0.0]])
    assert compute_metric("accuracy", logits, [1, 0, 0, 0]) == 0.75
    scores = np.array([[0.5], [1.5], [2.5]])
    assert compute_metric("pearson", scores, [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert compute_metric("spearman", scores.reshape(-1), [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_compute_metric_errors():
    with pytest.raises(ValueError, match="metric 'auc' is not one of accuracy, f1"):
        compute_metric("auc", np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match=r"'pearson' needs one output per example, got logits of shape \(2, 3\)"):
        compute_metric("pearson", np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match="need as many predictions as labels"):
        accuracy([1, 0], [1])


def test_metrics_table():
    assert set(METRICS) == {"accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman"}


@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 2)]),  # I- after O starts an entity (conlleval, IOB1)
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),  # I- of another type starts one too
    (["I-ORG", "B-ORG", "I-ORG", "B-ORG"], [("ORG", 0, 0), ("ORG", 1, 2), ("ORG", 3, 3)]),
    (["B-MISC", "O", "O", "I-MISC"], [("MISC", 0, 0), ("MISC", 3, 3)]),
    (["O", "O"], []),
])
def test_entity_spans_by_hand(tags, spans):
    assert entity_spans(tags) == spans


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-PER", "I-PER", "O"], ["B-ORG", "I-ORG", "I-ORG"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"],  # PER right, ORG wrong (gold LOC missed)
                 ["O", "I-PER", "I-PER", "O"],  # a broken I- run: still the gold PER span, so right
                 ["B-ORG", "I-ORG", "O"]]  # ORG with a wrong end: wrong, and the gold ORG is missed
    # Gold: PER, LOC, PER, ORG = 4; predicted: PER, ORG, PER, ORG = 4; correct: the two PER.
    scores = entity_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(2 / 4) and scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["ORG"]["precision"] == 0.0 and scores["per_type"]["ORG"]["support"] == 1
    nothing = entity_scores([["O", "O"]], [["O", "O"]])
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0.0, 0.0, 0.0)
    # precision 1/3, recall 1/1: F1 = 2PR / (P + R) = 0.5
    assert entity_scores([["B-A", "O", "O"]], [["B-A", "B-B", "I-C"]])["f1"] == pytest.approx(0.5)


def test_entity_scores_errors():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted ones"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0 has 2 gold tags but 1 predicted ones"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="tag 'E-PER' at word 1 is not an IOB tag"):
        entity_scores([["O", "O"]], [["O", "E-PER"]])


def _random_tags(rng, count, types=("PER", "LOC", "ORG")):
    """Tag sequences with every oddity: I- after O, I- of another type, B- after B-."""
    tags = ["O"] + [f"{p}-{t}" for p in "BI" for t in types]
    return [list(rng.choice(tags, size=rng.integers(1, 12), p=[0.4] + [0.1] * 6)) for _ in range(count)]


def test_entity_scores_against_seqeval():
    metrics = pytest.importorskip("seqeval.metrics", reason="seqeval is optional: install it to cross-check")
    rng = np.random.default_rng(0)
    gold = _random_tags(rng, 300)
    predicted = [[tag if rng.random() < 0.7 else rng.choice(sentence) for tag in sentence] for sentence in gold]
    scores = entity_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(metrics.precision_score(gold, predicted))
    assert scores["recall"] == pytest.approx(metrics.recall_score(gold, predicted))
    assert scores["f1"] == pytest.approx(metrics.f1_score(gold, predicted))
    report = metrics.classification_report(gold, predicted, output_dict=True)
    for entity_type, ours in scores["per_type"].items():
        assert ours["f1"] == pytest.approx(report[entity_type]["f1-score"])
        assert ours["support"] == report[entity_type]["support"]


@pytest.fixture
def tokenizer(minilm_dir):
    return WordPieceTokenizer(str(minilm_dir / "vocab.txt"))


def _logits_for(rows, word_predictions, labels, sentence_index, first_word, starts, rng):
    """Logits whose argmax at each word's first piece is `word_predictions`, noise elsewhere."""
    logits = rng.normal(size=(*rows["label_ids"].shape, len(labels))).astype(np.float32)
    for record, token_labels in enumerate(rows["label_ids"]):
        positions = np.flatnonzero(token_labels != IGNORE_INDEX)
        first = starts[sentence_index[record]] + first_word[record]
        logits[record, positions, [labels.index(t) for t in word_predictions[first:first + len(positions)]]] = 10.0
    return logits


def _converted(tmp_path, tokenizer, source, seq_length, long_sentences="split"):
    from tests.modules.test_conll_to_records import read_back  # noqa: PLC0415 -- one reader for both tests
    output = tmp_path / "ner.mindrecord"
    _, labels = convert(source, tokenizer, output, seq_length, long_sentences=long_sentences)
    with np.load(features_path(output)) as features:
        mapping = {name: features[name] for name in ("sentence_index", "first_word", "sentence_starts")}
    return read_back(output), labels, mapping


@pytest.mark.parametrize("long_sentences", ["split", "truncate"])
def test_ner_scores_put_windows_back_together(tmp_path, tokenizer, long_sentences):
    source = tmp_path / "ner.txt"
    rng = np.random.default_rng(1)
    gold = _random_tags(rng, 40)
    source.write_text("\n\n".join("\n".join(f"w{i} {t}" for i, t in enumerate(s)) for s in gold) + "\n")
    # 9 tokens: 3 two-piece words per record, so most sentences span several records.
    rows, labels, mapping = _converted(tmp_path, tokenizer, source, 9, long_sentences)
    assert len(rows["example_id"]) > (len(gold) if long_sentences == "split" else len(gold) - 1)
    predicted = [[tag if rng.random() < 0.6 else rng.choice(labels) for tag in sentence] for sentence in gold]
    flat = [tag for sentence in predicted for tag in sentence]
    logits = _logits_for(rows, flat, labels, mapping["sentence_index"], mapping["first_word"],
                         mapping["sentence_starts"], rng)
    order = rng.permutation(len(logits))  # records may come back in any order
    scores = ner_scores(logits[order], rows["label_ids"][order], rows["example_id"][order],
                        features_path(tmp_path / "ner.mindrecord"))
    if long_sentences == "truncate":  # words a truncating conversion dropped count as predicted O
        predicted = [p[:3] + ["O"] * (len(p) - 3) for p in predicted]
    assert scores == entity_scores(gold, predicted)
    assert ner_scores(_logits_for(rows, [t for s in gold for t in s], labels, mapping["sentence_index"],
                                  mapping["first_word"], mapping["sentence_starts"], rng),
                      rows["label_ids"], rows["example_id"], features_path(tmp_path / "ner.mindrecord"))["f1"] == \
        (1.0 if long_sentences == "split" else entity_scores(gold, [g[:3] + ["O"] * (len(g) - 3) for g in gold])["f1"])

    with pytest.raises(ValueError, match=f"predictions cover {len(logits) - 1} of the {len(logits)} records"):
        ner_scores(logits[1:], rows["label_ids"][1:], rows["example_id"][1:],
                   features_path(tmp_path / "ner.mindrecord"))
    with pytest.raises(ValueError, match=r"need logits \(N, T, \d+\), label_ids \(N, T\) and example_ids \(N,\)"):
        ner_scores(logits[:, :, :2], rows["label_ids"], rows["example_id"], features_path(tmp_path / "ner.mindrecord"))


def test_ner_scores_on_real_conll_dev_against_seqeval(tmp_path, tokenizer, shared_data):
    metrics = pytest.importorskip("seqeval.metrics", reason="seqeval is optional: install it to cross-check")
    source = shared_data / "conll2003" / "dev.txt"
    rows, labels, mapping = _converted(tmp_path, tokenizer, source, 24)  # short windows: many sentences split
    assert np.bincount(mapping["sentence_index"]).max() > 3
    gold = [s.tags for s in read_sentences(source)]
    rng = np.random.default_rng(2)
    predicted = [[tag if rng.random() < 0.8 else rng.choice(labels) for tag in sentence] for sentence in gold]
    logits = _logits_for(rows, [t for s in predicted for t in s], labels, mapping["sentence_index"],
                         mapping["first_word"], mapping["sentence_starts"], rng)
    scores = ner_scores(logits, rows["label_ids"], rows["example_id"], features_path(tmp_path / "ner.mindrecord"))
    assert scores["f1"] == pytest.approx(metrics.f1_score(gold, predicted))
    assert scores["precision"] == pytest.approx(metrics.precision_score(gold, predicted))
    assert scores["recall"] == pytest.approx(metrics.recall_score(gold, predicted))
    assert sum(t["support"] for t in scores["per_type"].values()) == 5942  # CoNLL-2003 dev's entity count
