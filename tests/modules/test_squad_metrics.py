"""SQuAD scoring: the official normalisation and F1 by hand, span choice against brute force, end to end
on converted records."""
import itertools
import json

import numpy as np
import pytest

from src.squad_metrics import exact_match, f1, normalize_answer, predict_answers, squad_evaluate, squad_scores
from src.squad_to_records import convert, examples_path
from src.tokenization import WordPieceTokenizer
from src.windows import best_span, features_path
from tests.modules.test_squad_to_records import SAMPLE, read_back, write


@pytest.mark.parametrize("text, normalised", [
    ("The  Quick, brown-fox!", "quick brownfox"),  # punctuation removed, not replaced by a space
    ("an apple a day", "apple day"),
    ("Theater of the Absurd", "theater of absurd"),  # articles only as whole words
    ("A", ""),
    ("  1,000\tpeople.\n", "1000 people"),
    ("Élan's \"best\"", "élans best"),  # accents kept, as the official script keeps them
])
def test_normalisation(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_and_f1_by_hand():
    # "the cat sat" -> [cat, sat]; "a cat sat on the mat" -> [cat, sat, on, mat]: 2 shared,
    # precision 2/2, recall 2/4, F1 = 2 * 1 * 0.5 / 1.5.
    assert f1("the cat sat", ["a cat sat on the mat"]) == pytest.approx(2 / 3)
    assert exact_match("the cat sat", ["a cat sat on the mat"]) == 0.0
    assert exact_match("The Cat, sat.", ["cat sat"]) == 1.0
    # The best of several references counts.
    assert f1("cat sat", ["dog", "cat sat on", "sat"]) == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert exact_match("sat", ["dog", "Sat!"]) == 1.0
    # Repeated tokens count as often as both sides have them: [cat, cat] vs [cat]: 1 shared.
    assert f1("the cat cat", ["cat"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1("", ["cat"]) == 0.0 and f1("dog", ["cat"]) == 0.0
    assert f1("the", ["a"]) == 0.0 and exact_match("the", ["a"]) == 1.0  # both normalise to nothing (v1.1)


def test_squad_scores_mean_over_examples():
    examples = [{"id": "a", "answers": ["Denver Broncos"]}, {"id": "b", "answers": ["1990", "in 1990"]},
                {"id": "c", "answers": ["blue"]}]
    scores = squad_scores({"a": "the Denver Broncos", "b": "1990s"}, examples)  # c unanswered: 0
    assert scores == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx(1 / 3), "count": 3}
    with pytest.raises(ValueError, match="question x has no reference answer"):
        squad_scores({}, [{"id": "x", "answers": []}])


def _brute_force(starts, ends, offsets, n_best, max_length):
    """Every pair of the n_best highest starts and ends among the context tokens, checked one by one."""
    context = [i for i in range(len(starts)) if offsets[i, 0] >= 0]
    top_starts = sorted(context, key=lambda i: -starts[i])[:n_best]
    top_ends = sorted(context, key=lambda i: -ends[i])[:n_best]
    valid = [(float(starts[s]) + float(ends[e]), s, e) for s, e in itertools.product(top_starts, top_ends)
             if s <= e and e - s + 1 <= max_length]
    return max(valid, key=lambda v: v[0]) if valid else None


@pytest.mark.parametrize("n_best, max_length", [(20, 30), (5, 3), (64, 64)])
def test_best_span_against_brute_force(n_best, max_length):
    rng = np.random.default_rng(n_best)
    for _ in range(200):
        length = 64
        offsets = np.full((length, 2), -1)
        context_from, context_to = rng.integers(3, 20), rng.integers(30, length)
        offsets[context_from:context_to] = np.arange(context_to - context_from)[:, None] * 3 + [0, 2]
        starts, ends = rng.normal(size=length), rng.normal(size=length)
        got, expected = best_span(starts, ends, offsets, n_best, max_length), \
            _brute_force(starts, ends, offsets, n_best, max_length)
        assert (got is None) == (expected is None)
        if got is not None:
            assert got[1:] == expected[1:] and got[0] == pytest.approx(expected[0])


def test_best_span_rules():
    offsets = np.array([[-1, -1], [0, 3], [4, 9], [10, 12], [-1, -1]])  # [CLS] three pieces [SEP]
    # The best pair overall (3, 2: score 17) ends before it starts: the best valid pair (2, 2: 9) wins.
    assert best_span(np.array([0, 0, 1, 9, 0.]), np.array([0, 0, 8, -1, 0.]), offsets) == (9.0, 2, 2)
    # [CLS] and [SEP] are never part of an answer.
    assert best_span(np.array([9, 0, 1, 0, 0.]), np.array([0, 0, 0, 1, 9.]), offsets)[1:] == (2, 3)
    # (1, 3: score 10) is longer than max_answer_length: the best shorter span is (2, 3: 7), not (1, 2: 6).
    assert best_span(np.array([0, 5, 2, 0, 0.]), np.array([0, 0, 1, 5, 0.]), offsets, max_answer_length=2) == \
        (7.0, 2, 3)
    # n_best_size=1: the best context start (1) pairs with the first of the equal context ends (1), not
    # with [SEP]; a best end before the best start leaves no pair.
    assert best_span(np.array([0, 5, 0, 0, 0.]), np.array([0, 0, 0, 0, 5.]), offsets, n_best_size=1) == (5.0, 1, 1)
    assert best_span(np.array([0, 0, 5, 0, 0.]), np.array([0, 5, 0, 0, 0.]), offsets, n_best_size=1) is None


def test_best_span_does_not_depend_on_padding():
    """Padding (offset -1) with the highest logits must not push context tokens out of the n best:
    the same window cut to its length and padded to 64 gives the same span."""
    rng = np.random.default_rng(3)
    offsets = np.full((64, 2), -1)
    offsets[5:30] = np.arange(25)[:, None] * 3 + [0, 2]
    starts, ends = rng.normal(size=64), rng.normal(size=64)
    starts[31:], ends[31:] = 50.0, 50.0  # a trained model may score padding highest
    assert best_span(starts, ends, offsets, n_best_size=5) == best_span(starts[:31], ends[:31], offsets[:31],
                                                                        n_best_size=5)
    assert best_span(starts, ends, offsets, n_best_size=5) is not None


def test_predict_answers_takes_the_best_window():
    examples = [{"id": "q1", "context": "alpha beta gamma delta"}, {"id": "q2", "context": "x"}]
    # Two windows of q1: "alpha beta gamma" and "gamma delta"; one of q2 with no context piece chosen.
    offsets = np.full((3, 6, 2), -1)
    offsets[0, 2:5] = [[0, 5], [6, 10], [11, 16]]
    offsets[1, 2:4] = [[11, 16], [17, 22]]
    offsets[2, 2:3] = [[0, 1]]
    starts, ends = np.zeros((3, 6)), np.zeros((3, 6))
    starts[0, 3], ends[0, 4] = 2.0, 2.0  # "beta gamma", score 4 in window 0
    starts[1, 2], ends[1, 3] = 3.0, 3.0  # "gamma delta", score 6 in window 1: the best
    starts[2, 0], ends[2, 0] = 9.0, 9.0  # q2's logits favour [CLS], which is not an answer
    order = np.array([1, 0, 2])  # records in another order than the features file's
    answers = predict_answers(starts[order], ends[order], order, examples, np.array([0, 0, 1]), offsets)
    assert answers == {"q1": "gamma delta", "q2": "x"}
    assert predict_answers(starts[:2], ends[:2], np.array([0, 1]), examples, np.array([0, 0, 1]), offsets)["q2"] == ""


@pytest.fixture
def converted(tmp_path, minilm_dir):
    tokenizer = WordPieceTokenizer(str(minilm_dir / "vocab.txt"))
    output = tmp_path / "squad.mindrecord"
    convert(write(tmp_path, SAMPLE), tokenizer, output, 40, doc_stride=12, max_query_length=6)
    return output, read_back(output)


def test_squad_evaluate_end_to_end(converted):
    output, rows = converted
    count, length = rows["input_ids"].shape
    rng = np.random.default_rng(0)
    starts, ends = rng.normal(size=(count, length)), rng.normal(size=(count, length))
    held = rows["start_positions"] > 0
    starts[held, rows["start_positions"][held]] = 20.0  # an oracle: the gold span in every window holding it
    ends[held, rows["end_positions"][held]] = 20.0
    order = rng.permutation(count)
    result = squad_evaluate(starts[order], ends[order], rows["example_id"][order], features_path(output),
                            examples_path(output))
    assert result["exact_match"] == 1.0 and result["f1"] == 1.0 and result["count"] == 4
    # Logits cut short (batches cut to their longest record) score the same: the last position is [SEP].
    assert squad_evaluate(starts[:, :-1], ends[:, :-1], rows["example_id"], features_path(output),
                          examples_path(output))["predictions"] == result["predictions"]
    assert result["predictions"] == {"q-rollo": "Rollo", "q-normandy": "Normandy",
                                     "q-century": "the first half of the 10th century", "q-paris": "Paris"}

    # Move q-century's answer one piece to the right in all of its windows: "first half of the 10th century."
    examples = json.loads(examples_path(output).read_text())
    century = [i for i, e in enumerate(examples) if e["id"] == "q-century"][0]
    with np.load(features_path(output)) as features:
        windows = np.flatnonzero((features["example_index"] == century) & held)
    starts[windows, rows["start_positions"][windows]] = 0.0
    starts[windows, rows["start_positions"][windows] + 1] = 20.0
    ends[windows, rows["end_positions"][windows]] = 0.0
    ends[windows, rows["end_positions"][windows] + 1] = 20.0
    result = squad_evaluate(starts, ends, rows["example_id"], features_path(output), examples_path(output))
    assert result["predictions"]["q-century"] == "first half of the 10th century."
    # Normalised: [first, half, of, 10th, century] both sides: F1 1, EM 1 (articles and punctuation dropped).
    assert result["exact_match"] == 1.0 and result["f1"] == 1.0
    starts[windows, rows["start_positions"][windows] + 1] = 0.0
    starts[windows, rows["start_positions"][windows] + 3] = 20.0  # "of the 10th century."
    result = squad_evaluate(starts, ends, rows["example_id"], features_path(output), examples_path(output))
    # [of, 10th, century] vs [first, half, of, 10th, century]: precision 1, recall 3/5, F1 0.75.
    assert result["exact_match"] == pytest.approx(3 / 4) and result["f1"] == pytest.approx((3 + 0.75) / 4)


def test_squad_evaluate_errors(converted):
    output, rows = converted
    count, length = rows["input_ids"].shape
    logits = np.zeros((count, length))
    with pytest.raises(ValueError, match=f"predictions cover {count - 1} of the {count} records"):
        squad_evaluate(logits[1:], logits[1:], rows["example_id"][1:], features_path(output), examples_path(output))
    with pytest.raises(ValueError, match=rf"need start and end logits \(N, T <= {length}\) and example_ids \(N,\)"):
        squad_evaluate(logits[:, :5], logits[:, :6], rows["example_id"], features_path(output), examples_path(output))
    wide = np.zeros((count, length + 1))
    with pytest.raises(ValueError, match=r"got \(\d+, 41\)"):
        squad_evaluate(wide, wide, rows["example_id"], features_path(output), examples_path(output))
