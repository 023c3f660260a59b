"""Intermediate matches (src/distill/matches.py): every preset's rows written out by hand from its
paper for a 4-layer student and 12- or 6-layer teachers, the uniform layer mapping, and each parse
and check error with its message."""
import pytest

from src.config import load_config
from src.distill.matches import Match, layer_pairs, parse_matches, resolve_matches, uniform_mapping

KEY = r"distill\.intermediate_matches"


@pytest.fixture
def s4(student_config):
    """TinyBERT-4-like student: 4 layers, width 32, 4 heads."""
    return student_config.replace(num_hidden_layers=4)


@pytest.fixture
def t12(teacher_config):
    """BERT-base-like teacher: 12 layers, width 48, 4 heads."""
    return teacher_config.replace(num_hidden_layers=12)


@pytest.fixture
def t6(teacher_config):
    return teacher_config.replace(num_hidden_layers=6)


def _distill(*overrides):
    return load_config(list(overrides)).distill


def _rows(rows):
    """The config's own YAML reading of a list of rows, as given on the command line."""
    return _distill(f"--distill.intermediate_matches={rows}")


def _hidden(ls, lt, loss="hidden_mse", weight=1.0, proj="fit_dense"):
    return Match((ls,), (lt,), "hidden", loss, weight, proj)


# ---- layer mapping ----

@pytest.mark.parametrize("num_student, num_teacher, expected", [
    (4, 12, [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]),  # TinyBERT: m * k, k = 3
    (6, 12, [(0, 0), (1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]),
    (3, 7, [(0, 0), (1, 2), (2, 5), (3, 7)]),  # 2.33 -> 2, 4.67 -> 5
    (4, 4, [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]),
])
def test_uniform_mapping_by_hand(num_student, num_teacher, expected):
    assert uniform_mapping(num_student, num_teacher) == expected


def test_uniform_mapping_is_evenly_spaced_for_any_layer_counts():
    """4 vs 6 has ties (1.5, 4.5): each teacher layer is within half a layer of m * N_T / N_S."""
    for num_student in range(1, 7):
        for num_teacher in range(num_student, 13):
            pairs = uniform_mapping(num_student, num_teacher)
            assert [s for s, _ in pairs] == list(range(num_student + 1))
            teacher = [t for _, t in pairs]
            assert teacher[0] == 0 and teacher[-1] == num_teacher
            assert all(a < b for a, b in zip(teacher, teacher[1:])), (num_student, num_teacher, teacher)
            for m, t in pairs:
                assert abs(t - m * num_teacher / num_student) <= 0.5
    teacher = [t for _, t in uniform_mapping(4, 6)]
    assert teacher[:2] == [0, 2] and teacher[2] == 3 and teacher[3] in (4, 5) and teacher[4] == 6


def test_explicit_layer_mapping_and_its_errors():
    assert layer_pairs([[0, 0], [1, 5], [4, 12]], 4, 12) == [(0, 0), (1, 5), (4, 12)]
    assert layer_pairs("uniform", 4, 12) == uniform_mapping(4, 12)
    with pytest.raises(ValueError, match=r"^distill\.layer_mapping: 'uniformly' is neither 'uniform' nor a list"):
        layer_pairs("uniformly", 4, 12)
    for bad in ([[0, 0], [5, 12]], [[1, 13]], [[-1, 0]], [[1]], [[1, 2, 3]]):
        with pytest.raises(ValueError, match=r"^distill\.layer_mapping: pair .* must be \[student_layer, "
                                             r"teacher_layer\] with student_layer in 0\.\.4 and teacher_layer in 0\.\.12"):
            layer_pairs(bad, 4, 12)


def test_layer_mapping_rejects_a_layer_that_is_not_a_whole_number():
    """A layer number of 1.5 is in range but indexes no layer; it must be refused with the other bad pairs."""
    with pytest.raises(ValueError, match=r"distill\.layer_mapping: pair \[1\.5, 3\]"):
        layer_pairs([[0, 0], [1.5, 3]], 4, 12)


# ---- presets ----

def test_tinybert_preset_4_vs_12(s4, t12):
    """Jiao et al. 2019: hidden MSE through one W_h (fit_dense) on embeddings and layers m <- 3m, and
    attention-score MSE on layers 1..4 <- 3, 6, 9, 12; the weights come from the config."""
    distill = _distill("--distill.hidden_weight=0.5", "--distill.attention_weight=2.0")
    expected = [_hidden(0, 0, weight=0.5), _hidden(1, 3, weight=0.5), _hidden(2, 6, weight=0.5),
                _hidden(3, 9, weight=0.5), _hidden(4, 12, weight=0.5),
                Match((1,), (3,), "attention", "attention_mse", 2.0), Match((2,), (6,), "attention", "attention_mse", 2.0),
                Match((3,), (9,), "attention", "attention_mse", 2.0),
                Match((4,), (12,), "attention", "attention_mse", 2.0)]
    assert list(resolve_matches(distill, s4, t12)) == expected


def test_tinybert_preset_takes_the_named_losses_and_an_explicit_mapping(s4, t6):
    distill = _distill("--distill.hidden_loss=hidden_cos", "--distill.attention_loss=attention_kl",
                       "--distill.layer_mapping=[[0, 0], [2, 3], [4, 6]]")
    expected = [_hidden(0, 0, "hidden_cos"), _hidden(2, 3, "hidden_cos"), _hidden(4, 6, "hidden_cos"),
                Match((2,), (3,), "attention", "attention_kl"), Match((4,), (6,), "attention", "attention_kl")]
    assert list(resolve_matches(distill, s4, t6)) == expected


def test_tinybert_preset_4_vs_6_uses_the_uniform_mapping(s4, t6):
    matches = resolve_matches(_distill(), s4, t6)
    pairs = [(m.layer_S[0], m.layer_T[0]) for m in matches if m.feature == "hidden"]
    assert pairs == uniform_mapping(4, 6)
    assert [(m.layer_S[0], m.layer_T[0]) for m in matches if m.feature == "attention"] == pairs[1:]


@pytest.mark.parametrize("teacher", ["t12", "t6"])
def test_minilm_preset_is_the_last_layers_attention_and_value_relation(s4, teacher, request):
    """Wang et al. 2020: KL of the last layers' attention distributions and value relations."""
    t = request.getfixturevalue(teacher)
    last = t.num_hidden_layers
    assert list(resolve_matches(_distill("--distill.preset=minilm"), s4, t)) == [
        Match((4,), (last,), "attention", "attention_kl"), Match((4,), (last,), "value_relation", "relation_kl")]


def test_minilm_preset_needs_equal_head_counts(s4, t12):
    with pytest.raises(ValueError, match=r"attention maps need equal head counts, student has 4, teacher 6"):
        resolve_matches(_distill("--distill.preset=minilm"), s4, t12.replace(num_attention_heads=6))


def test_minilmv2_preset_is_qkv_relations_with_the_students_head_count(s4, t12):
    """Wang et al. 2021: Q-Q, K-K and V-V relations of the last layers, KL, in as many relation heads as
    the student has attention heads; the teacher's head count does not matter."""
    expected = [Match((4,), (12,), f"{kind}_relation", "relation_kl", relation_heads=4)
                for kind in ("query", "key", "value")]
    assert list(resolve_matches(_distill("--distill.preset=minilmv2"), s4, t12)) == expected
    assert list(resolve_matches(_distill("--distill.preset=minilmv2"), s4,
                                t12.replace(num_attention_heads=6))) == expected


def test_pkd_preset_is_cls_of_the_intermediate_layers(s4, t12):
    """Sun et al. 2019 (PKD-skip): normalised [CLS] of student layers 1..3 <- teacher 3, 6, 9; not the
    embeddings, not the last layer (the prediction loss covers it)."""
    expected = [Match((m,), (3 * m,), "cls", "pkd", 100.0, "fit_dense") for m in (1, 2, 3)]
    assert list(resolve_matches(_distill("--distill.preset=pkd"), s4, t12)) == expected
    same_width = s4.replace(hidden_size=48)
    assert [m.proj for m in resolve_matches(_distill("--distill.preset=pkd"), same_width, t12)] == [None] * 3


def test_hidden_mse_smmd_preset_layers_and_mmd_rows(s4, t12):
    """TextBrewer's L4_hidden_smmd: mmd of each mapped layer with itself, [l, l] <- [3l, 3l], no projection."""
    matches = resolve_matches(_distill("--distill.preset=hidden_mse_smmd"), s4, t12)
    assert [m for m in matches if m.loss == "mmd"] == [
        Match((m, m), (3 * m, 3 * m), "hidden", "mmd") for m in range(5)]
    assert [(m.layer_S, m.layer_T, m.feature) for m in matches if m.loss == "hidden_mse"] == [
        ((m,), (3 * m,), "hidden") for m in range(5)]
    assert len(matches) == 10


def test_hidden_mse_smmd_preset_projects_each_layer_as_textbrewer_publishes_it(s4, t12):
    """TextBrewer's L4t_hidden_mse (examples/matches/matches.py) gives every row its own
    proj ["linear", 312, 768], and its GeneralDistiller builds one projection per row."""
    matches = resolve_matches(_distill("--distill.preset=hidden_mse_smmd"), s4, t12)
    assert [m.proj for m in matches if m.loss == "hidden_mse"] == [("linear", 32, 48)] * 5


def test_every_preset_resolves_for_4_vs_12_and_4_vs_6(s4, t12, t6):
    for preset in ("tinybert", "minilm", "minilmv2", "pkd", "hidden_mse_smmd"):
        for teacher in (t12, t6):
            matches = resolve_matches(_distill(f"--distill.preset={preset}"), s4, teacher)
            assert matches and all(isinstance(m, Match) for m in matches)


def test_intermediate_matches_replace_the_preset(s4, t12):
    distill = _rows("[{layer_S: 2, layer_T: 7, feature: cls, loss: pkd, weight: 3, proj: [linear, 32, 48]},"
                    " {layer_S: [1, 2], layer_T: [4, 8], feature: hidden, loss: mmd}]")
    assert list(resolve_matches(distill, s4, t12)) == [
        Match((2,), (7,), "cls", "pkd", 3.0, ("linear", 32, 48)), Match((1, 2), (4, 8), "hidden", "mmd")]


# ---- row parsing: one line naming the row and the key ----

@pytest.mark.parametrize("row, message", [
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "layer_s": 1},
     rf"^{KEY}\[0\]: unknown key\(s\) layer_s; a match has layer_S, layer_T, feature, loss, weight, proj, "
     r"relation_heads, teacher$"),
    ({"layer_S": 1}, rf"^{KEY}\[0\]: missing layer_T, feature, loss$"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hiden", "loss": "hidden_mse"},
     rf"^{KEY}\[0\]\.feature: 'hiden' is not one of hidden, cls, attention, attention_probs, query_relation"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "kl_div"},
     rf"^{KEY}\[0\]\.loss: 'kl_div' is a prediction loss; a feature loss is needed here"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mes"},
     rf"^{KEY}\[0\]\.loss: unknown loss 'hidden_mes'"),
    ({"layer_S": 1, "layer_T": [2, 4], "feature": "hidden", "loss": "mmd"},
     rf"^{KEY}\[0\]\.layer_S: expected a pair \[a, b\] of layer numbers \(pair loss\), got 1$"),
    ({"layer_S": [1, 2], "layer_T": 3, "feature": "hidden", "loss": "fsp"},
     rf"^{KEY}\[0\]\.layer_T: expected a pair \[a, b\] of layer numbers \(pair loss\), got 3$"),
    ({"layer_S": [1, 2], "layer_T": [3, 4], "feature": "hidden", "loss": "hidden_mse"},
     rf"^{KEY}\[0\]\.layer_S: expected one layer number, got \[1, 2\]$"),
    ({"layer_S": True, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse"},
     rf"^{KEY}\[0\]\.layer_S: expected one layer number, got True$"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "weight": -1},
     rf"^{KEY}\[0\]\.weight: expected a non-negative number, got -1$"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "weight": "1"},
     rf"^{KEY}\[0\]\.weight: expected a non-negative number, got '1'$"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "proj": ["linear", 32]},
     rf"^{KEY}\[0\]\.proj: expected 'fit_dense' or \[linear, in_width, out_width\], got \['linear', 32\]$"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "proj": ["conv", 32, 48]},
     rf"^{KEY}\[0\]\.proj: expected 'fit_dense' or \[linear"),
    ({"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "proj": "fitdense"},
     rf"^{KEY}\[0\]\.proj: expected 'fit_dense' or \[linear"),
    ({"layer_S": 1, "layer_T": 2, "feature": "value_relation", "loss": "relation_kl", "relation_heads": -2},
     rf"^{KEY}\[0\]\.relation_heads: expected a non-negative integer, got -2$"),
    ([1, 2, "hidden", "hidden_mse"], rf"^{KEY}\[0\]: expected a mapping with keys layer_S, layer_T"),
])
def test_bad_row_is_one_line_naming_its_key(row, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_matches([row])
    assert "\n" not in str(error.value)


def test_error_names_the_index_of_the_bad_row_and_rows_must_be_a_list():
    good = {"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse"}
    with pytest.raises(ValueError, match=rf"^{KEY}\[1\]\.feature"):
        parse_matches([good, dict(good, feature="hiden")])
    with pytest.raises(ValueError, match=rf"^{KEY}: expected a list of match rows"):
        parse_matches(good)


def test_rows_are_checked_when_the_config_is_read():
    with pytest.raises(ValueError, match=rf"^{KEY}\[0\]\.layer_S: expected a pair"):
        _rows("[{layer_S: 1, layer_T: 2, feature: hidden, loss: mmd}]")


def test_row_defaults_and_description():
    (match,) = parse_matches([{"layer_S": 1, "layer_T": 3, "feature": "hidden", "loss": "hidden_mse",
                               "proj": ["linear", 32, 48]}])
    assert match == Match((1,), (3,), "hidden", "hidden_mse", 1.0, ("linear", 32, 48), 0)
    assert match.describe() == "S1 <- T3 hidden hidden_mse x 1, proj ['linear', 32, 48]"
    assert Match((1, 1), (3, 3), "hidden", "mmd", 0.5).describe() == "S[1, 1] <- T[3, 3] hidden mmd x 0.5"


# ---- checks against the two model shapes ----

@pytest.mark.parametrize("row, message", [
    ("{layer_S: 1, layer_T: 3, feature: hidden, loss: hidden_mse, proj: [linear, 48, 32]}",
     r"proj \['linear', 48, 32\] must map the student's width 32 to the teacher's 48"),
    ("{layer_S: 1, layer_T: 3, feature: hidden, loss: hidden_mse}",
     r"hidden_mse needs equal widths, student 32 vs teacher 48: add proj: fit_dense or \[linear, 32, 48\]"),
    ("{layer_S: 1, layer_T: 3, feature: cls, loss: pkd}", r"pkd needs equal widths, student 32 vs teacher 48"),
    ("{layer_S: 1, layer_T: 3, feature: hidden, loss: hidden_cos}", r"hidden_cos needs equal widths"),
    ("{layer_S: [1, 2], layer_T: [3, 6], feature: hidden, loss: fsp}", r"fsp needs equal widths"),
    ("{layer_S: 1, layer_T: 13, feature: hidden, loss: hidden_mse, proj: fit_dense}",
     r"layer_T 13 is outside 0\.\.12 for feature hidden"),
    ("{layer_S: 5, layer_T: 12, feature: hidden, loss: hidden_mse, proj: fit_dense}",
     r"layer_S 5 is outside 0\.\.4 for feature hidden"),
    ("{layer_S: 0, layer_T: 0, feature: attention, loss: attention_mse}",
     r"layer_S 0 is outside 1\.\.4 for feature attention"),
    ("{layer_S: 1, layer_T: 0, feature: value_relation, loss: relation_kl}",
     r"layer_T 0 is outside 1\.\.12 for feature value_relation"),
    ("{layer_S: [1, 5], layer_T: [3, 6], feature: hidden, loss: mmd}", r"layer_S 5 is outside 0\.\.4"),
    ("{layer_S: 1, layer_T: 3, feature: key_relation, loss: relation_kl, relation_heads: 5}",
     r"relation_heads 5 does not divide the student's width 32"),
])
def test_match_that_does_not_fit_the_models_is_rejected(s4, t12, row, message):
    with pytest.raises(ValueError, match=rf"^match 0 \(S.*\): {message}") as error:
        resolve_matches(_rows(f"[{row}]"), s4, t12)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("feature", ["attention", "attention_probs"])
def test_attention_maps_need_equal_head_counts(s4, t12, feature):
    distill = _rows(f"[{{layer_S: 4, layer_T: 12, feature: {feature}, loss: attention_mse}}]")
    with pytest.raises(ValueError, match=r"attention maps need equal head counts, student has 4, teacher 6: "
                                         r"use a relation feature"):
        resolve_matches(distill, s4, t12.replace(num_attention_heads=6))


def test_attention_maps_of_a_layer_with_pruned_heads_are_rejected(s4, t12):
    """A structurally pruned student (src/prune/structured.py) has fewer heads in some layers only."""
    pruned = s4.replace(pruned_heads=((1, (0, 2)),))
    ok = _rows("[{layer_S: 1, layer_T: 3, feature: attention, loss: attention_mse}]")
    assert len(resolve_matches(ok, pruned, t12)) == 1
    bad = _rows("[{layer_S: 2, layer_T: 6, feature: attention, loss: attention_mse}]")
    with pytest.raises(ValueError, match=r"attention maps need equal head counts, student has 2, teacher 4: "
                                         r".*pruned heads: match hidden states"):
        resolve_matches(bad, pruned, t12)


def test_relations_of_a_layer_with_pruned_heads_need_relation_heads_that_divide_its_width(s4, t12):
    """A layer with 3 of 4 heads of 8 left projects to width 24: 16 relation heads split the full width 32
    (and the teacher's 48), not that layer's."""
    pruned = s4.replace(pruned_heads=((1, (0,)),))
    row = "[{layer_S: %d, layer_T: 6, feature: query_relation, loss: relation_kl, relation_heads: %d}]"
    assert len(resolve_matches(_rows(row % (1, 16)), pruned, t12)) == 1
    with pytest.raises(ValueError, match=r"relation_heads 16 does not divide the student's layer 2 width 24 "
                                         r"\(3 of 4 heads left after pruning\): set relation_heads to a divisor of 24"):
        resolve_matches(_rows(row % (2, 16)), pruned, t12)
    (match,) = resolve_matches(_rows(row % (2, 8)), pruned, t12)
    assert match.relation_heads == 8


def test_relations_across_head_counts_need_relation_heads(s4, t12):
    t = t12.replace(num_attention_heads=6)
    row = "{layer_S: 4, layer_T: 12, feature: value_relation, loss: relation_kl%s}"
    with pytest.raises(ValueError, match=r"student and teacher head counts differ: set relation_heads"):
        resolve_matches(_rows(f"[{row % ''}]"), s4, t)
    (match,) = resolve_matches(_rows(f"[{row % ', relation_heads: 8'}]"), s4, t)
    assert match.relation_heads == 8


def test_width_free_losses_need_no_projection(s4, t12):
    distill = _rows("[{layer_S: 2, layer_T: 6, feature: hidden, loss: nst},"
                    " {layer_S: [2, 3], layer_T: [6, 9], feature: hidden, loss: mmd}]")
    assert [m.proj for m in resolve_matches(distill, s4, t12)] == [None, None]


# ---- matches the losses cannot compute must stop the run before a graph is built ----

def test_preset_with_a_pair_loss_on_single_layers_is_rejected(s4, t12):
    """`--distill.attention_loss=mmd` passes the kind check (mmd is a feature loss), but the tinybert
    preset gives mmd one layer per side; without a check here it fails later, inside graph
    compilation, with a broadcast error."""
    with pytest.raises(ValueError, match="pair"):
        resolve_matches(_distill("--distill.attention_loss=mmd"), s4, t12)


@pytest.mark.parametrize("row", [
    "{layer_S: 1, layer_T: 3, feature: hidden, loss: attention_kl}",  # (B, T, H) into a (B, h, T, T) loss
    "{layer_S: 1, layer_T: 3, feature: attention, loss: hidden_mse}",  # (B, h, T, T) into a token loss
    "{layer_S: 1, layer_T: 3, feature: attention, loss: attention_mse, proj: fit_dense}",  # Dense on the key axis
    "{layer_S: 1, layer_T: 3, feature: cls, loss: hidden_mse, proj: fit_dense}",  # (B, H) against a (B, T) mask
    # pkd normalises whatever rows it is given: on (B, T, H) it averages every token, padding included
    # (TextBrewer's pkd_loss takes position 0 of 3-D states).
    "{layer_S: 1, layer_T: 3, feature: hidden, loss: pkd, proj: fit_dense}",
])
def test_feature_the_loss_cannot_take_is_rejected(s4, t12, row):
    """Each row passes parse and shape checks today and then fails inside graph compilation with a
    broadcast or MatMul error (measured for the first three), or silently computes something else."""
    with pytest.raises(ValueError, match=r"intermediate_matches\[0\]|match 0"):
        resolve_matches(_rows(f"[{row}]"), s4, t12)


def test_shared_projection_to_a_teacher_of_another_width_is_rejected(s4, t12, t6):
    """fit_dense is one Dense sized for the first teacher; a row taking its feature from an ensemble
    teacher of another width would fail inside the graph with a shape error."""
    wider = t12.replace(hidden_size=64, intermediate_size=128)
    row = "{layer_S: 1, layer_T: 3, feature: hidden, loss: hidden_mse, proj: fit_dense, teacher: 1}"
    with pytest.raises(ValueError, match=r"match 0 .*proj fit_dense maps to the first teacher's width 48, teacher 1 "
                                         r"is 64 wide: give the row its own projection, proj: \[linear, 32, 64\]"):
        resolve_matches(_rows(f"[{row}]"), s4, [t12, wider])
    (match,) = resolve_matches(_rows(f"[{row}]"), s4, [t12, t6])  # same width: the shared projection fits
    assert match.proj == "fit_dense" and match.teacher == 1
