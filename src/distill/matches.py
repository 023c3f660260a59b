"""Intermediate matches: which student layer's feature is compared with which teacher layer's, how.

A match is one config row, as in TextBrewer's `intermediate_matches`:
  {layer_S: 2, layer_T: 4, feature: hidden, loss: hidden_mse, weight: 1, proj: [linear, 312, 384]}
layer_S / layer_T: a layer number (0 = embeddings for hidden states), or a pair [a, b] for the pair
losses `mmd` and `fsp`; feature: one of `features.FEATURES`; loss: a feature loss (src/losses.py);
weight: its factor in the total; proj: none, `fit_dense` (one projection from student to teacher width
shared by every match that names it: TinyBERT's W_h, kept from GD for task phase 1), or
[linear, in, out] (the match's own projection); relation_heads: heads a relation feature is split
into (0 = the model's attention heads; student and teacher must use the same number); teacher:
which teacher of `teacher.ensemble` the feature comes from (0 = the first, or the only one).

Presets build the rows from the two model shapes: `tinybert`, `minilm`, `minilmv2`, `pkd`,
`hidden_mse_smmd`; `distill.intermediate_matches` replaces them.
"""
import dataclasses

from src.distill.features import FEATURES, RELATIONS
from src.losses import PAIR_LOSSES, get_loss

ROW_KEYS = ("layer_S", "layer_T", "feature", "loss", "weight", "proj", "relation_heads", "teacher")
# The features each built-in loss can compare (a registered loss of one's own is not checked).
_DISTRIBUTIONS = ("attention", "query_relation", "key_relation", "value_relation")
LOSS_FEATURES = {"hidden_mse": ("hidden",), "hidden_cos": ("hidden", "cls"), "pkd": ("cls",),
                 "attention_mse": ("attention", "attention_probs"), "attention_ce": _DISTRIBUTIONS,
                 "attention_kl": _DISTRIBUTIONS, "relation_kl": _DISTRIBUTIONS, "mmd": ("hidden",),
                 "fsp": ("hidden",), "nst": ("hidden",)}
PROJECTED_FEATURES = ("hidden", "cls")
SHARED_PROJECTION = "fit_dense"
# Losses that compare tensors of equal width: a student narrower than its teacher needs a projection.
SAME_WIDTH_LOSSES = ("hidden_mse", "hidden_cos", "pkd", "fsp")


@dataclasses.dataclass(frozen=True)
class Match:
    """One intermediate match; layers are tuples: (l,) for one layer, (a, b) for a pair loss."""
    layer_S: tuple
    layer_T: tuple
    feature: str
    loss: str
    weight: float = 1.0
    proj: object = None  # None | "fit_dense" | ("linear", in, out)
    relation_heads: int = 0
    teacher: int = 0  # index into teacher.ensemble

    def describe(self):
        layers = lambda x: x[0] if len(x) == 1 else list(x)  # noqa: E731
        proj = f", proj {self.proj if isinstance(self.proj, str) else list(self.proj)}" if self.proj else ""
        teacher = f" (teacher {self.teacher})" if self.teacher else ""
        return (f"S{layers(self.layer_S)} <- T{layers(self.layer_T)}{teacher} {self.feature} {self.loss} "
                f"x {self.weight:g}{proj}")


def _layers(value, key, pair):
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or len(values) != (2 if pair else 1):
        shape = "a pair [a, b] of layer numbers (pair loss)" if pair else "one layer number"
        raise ValueError(f"{key}: expected {shape}, got {value!r}")
    return tuple(values)


def parse_match(row, key):
    """A config row (dict) -> Match, checking names and kinds. `key` names the row in errors."""
    if not isinstance(row, dict):
        raise ValueError(f"{key}: expected a mapping with keys {', '.join(ROW_KEYS)}, got {row!r}")
    unknown = sorted(set(row) - set(ROW_KEYS))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {', '.join(unknown)}; a match has {', '.join(ROW_KEYS)}")
    missing = [k for k in ("layer_S", "layer_T", "feature", "loss") if k not in row]
    if missing:
        raise ValueError(f"{key}: missing {', '.join(missing)}")
    if row["feature"] not in FEATURES:
        raise ValueError(f"{key}.feature: {row['feature']!r} is not one of {', '.join(FEATURES)}")
    get_loss("feature", row["loss"], f"{key}.loss")
    pair = row["loss"] in PAIR_LOSSES
    weight = row.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"{key}.weight: expected a non-negative number, got {weight!r}")
    proj = row.get("proj")
    if proj not in (None, SHARED_PROJECTION):
        if not (isinstance(proj, (list, tuple)) and len(proj) == 3 and proj[0] == "linear"
                and all(isinstance(v, int) and v > 0 for v in proj[1:])):
            raise ValueError(f"{key}.proj: expected {SHARED_PROJECTION!r} or [linear, in_width, out_width], "
                             f"got {proj!r}")
        proj = tuple(proj)
    heads = row.get("relation_heads", 0)
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 0:
        raise ValueError(f"{key}.relation_heads: expected a non-negative integer, got {heads!r}")
    teacher = row.get("teacher", 0)
    if not isinstance(teacher, int) or isinstance(teacher, bool) or teacher < 0:
        raise ValueError(f"{key}.teacher: expected the index of a teacher in teacher.ensemble, got {teacher!r}")
    match = Match(_layers(row["layer_S"], f"{key}.layer_S", pair), _layers(row["layer_T"], f"{key}.layer_T", pair),
                  row["feature"], row["loss"], float(weight), proj, heads, teacher)
    accepted = LOSS_FEATURES.get(match.loss)
    if accepted is not None and match.feature not in accepted:
        raise ValueError(f"{key}: loss {match.loss} compares {' or '.join(accepted)} features, not {match.feature}")
    if proj is not None and match.feature not in PROJECTED_FEATURES:
        raise ValueError(f"{key}.proj: a projection applies to {' and '.join(PROJECTED_FEATURES)} features only")
    return match


def parse_matches(rows, key="distill.intermediate_matches"):
    if not isinstance(rows, list):
        raise ValueError(f"{key}: expected a list of match rows, got {rows!r}")
    return tuple(parse_match(row, f"{key}[{i}]") for i, row in enumerate(rows))


def uniform_mapping(num_student_layers, num_teacher_layers):
    """(student layer, teacher layer) pairs, 0 = embeddings: student layer m <- teacher layer
    m * N_T / N_S rounded half up, evenly spaced for any layer counts (TinyBERT's m * k when
    N_T = k N_S; 4 of 6: 0, 2, 3, 5, 6)."""
    return [(m, (2 * m * num_teacher_layers + num_student_layers) // (2 * num_student_layers))
            for m in range(num_student_layers + 1)]


def layer_pairs(layer_mapping, num_student_layers, num_teacher_layers):
    """`distill.layer_mapping`: "uniform", or an explicit list of [student_layer, teacher_layer] pairs."""
    if layer_mapping == "uniform":
        return uniform_mapping(num_student_layers, num_teacher_layers)
    if isinstance(layer_mapping, str):
        raise ValueError(f"distill.layer_mapping: {layer_mapping!r} is neither 'uniform' nor a list of "
                         "[student_layer, teacher_layer] pairs")
    pairs = []
    for pair in layer_mapping:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
                and 0 <= pair[0] <= num_student_layers and 0 <= pair[1] <= num_teacher_layers):
            raise ValueError(f"distill.layer_mapping: pair {pair!r} must be [student_layer, teacher_layer] "
                             f"with student_layer in 0..{num_student_layers} and teacher_layer in "
                             f"0..{num_teacher_layers} (0 = embeddings)")
        pairs.append(tuple(pair))
    return pairs


def _tinybert(pairs, s, t, distill):
    """TinyBERT (Jiao et al. 2019): hidden MSE through fit_dense on every mapped layer, embeddings
    included, and attention-score MSE on every mapped encoder layer."""
    rows = [Match((ls,), (lt,), "hidden", distill.hidden_loss, distill.hidden_weight, SHARED_PROJECTION)
            for ls, lt in pairs]
    rows += [Match((ls,), (lt,), "attention", distill.attention_loss, distill.attention_weight)
             for ls, lt in pairs if ls > 0 and lt > 0]
    return rows


def _minilm(pairs, s, t, distill):
    """MiniLM (Wang et al. 2020): the last layers' attention distributions and value relations, KL."""
    last = ((s.num_hidden_layers,), (t.num_hidden_layers,))
    return [Match(*last, "attention", "attention_kl"), Match(*last, "value_relation", "relation_kl")]


def _minilmv2(pairs, s, t, distill):
    """MiniLMv2 (Wang et al. 2021): query-query, key-key and value-value relations of the last layers,
    split into as many relation heads as the student has attention heads."""
    last = ((s.num_hidden_layers,), (t.num_hidden_layers,))
    return [Match(*last, f"{kind}_relation", "relation_kl", relation_heads=s.num_attention_heads)
            for kind in ("query", "key", "value")]


def _pkd(pairs, s, t, distill):
    """Patient KD (Sun et al. 2019, PKD-skip): normalised [CLS] states of the mapped intermediate
    layers, weight 100 (the paper's beta grid runs 10-1000)."""
    proj = None if s.hidden_size == t.hidden_size else SHARED_PROJECTION
    return [Match((ls,), (lt,), "cls", "pkd", 100.0, proj) for ls, lt in pairs
            if 0 < ls < s.num_hidden_layers]


def _hidden_mse_smmd(pairs, s, t, distill):
    """TextBrewer's published `L4t_hidden_mse + L4_hidden_smmd` scheme, for any mapped layers:
    hidden MSE through each row's own projection, plus similarity-matrix MSE (`mmd`) on the same
    layers."""
    proj = ("linear", s.hidden_size, t.hidden_size)
    rows = [Match((ls,), (lt,), "hidden", "hidden_mse", 1.0, proj) for ls, lt in pairs]
    rows += [Match((ls, ls), (lt, lt), "hidden", "mmd", 1.0) for ls, lt in pairs]
    return rows


PRESETS = {"tinybert": _tinybert, "minilm": _minilm, "minilmv2": _minilmv2, "pkd": _pkd,
           "hidden_mse_smmd": _hidden_mse_smmd}


def resolve_matches(distill, student_config, teacher_configs):
    """The match list of a run: `distill.intermediate_matches` if given, else `distill.preset`'s rows
    for these model shapes (against the first teacher), checked against the student and the
    teacher each row names. teacher_configs: one BertConfig, or a list (teacher.ensemble)."""
    teacher_configs = teacher_configs if isinstance(teacher_configs, (list, tuple)) else [teacher_configs]
    if distill.intermediate_matches:
        matches = parse_matches(distill.intermediate_matches)
    else:
        pairs = layer_pairs(distill.layer_mapping, student_config.num_hidden_layers,
                            teacher_configs[0].num_hidden_layers)
        matches = tuple(PRESETS[distill.preset](pairs, student_config, teacher_configs[0], distill))
    for i, match in enumerate(matches):
        key = f"match {i} ({match.describe()})"
        if match.teacher >= len(teacher_configs):
            raise ValueError(f"{key}: teacher {match.teacher} does not exist; teacher.ensemble has "
                             f"{len(teacher_configs)} teacher(s)")
        check_match(match, student_config, teacher_configs[match.teacher], key)
        t_width, first_width = teacher_configs[match.teacher].hidden_size, teacher_configs[0].hidden_size
        if match.proj == SHARED_PROJECTION and t_width != first_width:
            raise ValueError(f"{key}: proj {SHARED_PROJECTION} maps to the first teacher's width {first_width}, "
                             f"teacher {match.teacher} is {t_width} wide: give the row its own projection, "
                             f"proj: [linear, {student_config.hidden_size}, {t_width}]")
    return matches


def feature_width(match, config):
    """Width of a match's feature on one side, before any projection (None: not a width-bearing feature)."""
    return config.hidden_size if match.feature in ("hidden", "cls") else None


def check_match(match, s, t, key):
    """Loss against feature, layer ranges, head counts and widths of one match against the two
    model configs."""
    layers_needed = 2 if match.loss in PAIR_LOSSES else 1
    if len(match.layer_S) != layers_needed or len(match.layer_T) != layers_needed:
        raise ValueError(f"{key}: loss {match.loss} needs " + ("a pair [a, b] of layers on each side"
                                                             if layers_needed == 2 else "one layer on each side"))
    accepted = LOSS_FEATURES.get(match.loss)
    if accepted is not None and match.feature not in accepted:
        raise ValueError(f"{key}: loss {match.loss} compares {' or '.join(accepted)} features, not "
                         f"{match.feature}")
    if match.proj is not None and match.feature not in PROJECTED_FEATURES:
        raise ValueError(f"{key}: proj applies to {' and '.join(PROJECTED_FEATURES)} features only, "
                         f"not {match.feature}")
    for side, layers, config in (("layer_S", match.layer_S, s), ("layer_T", match.layer_T, t)):
        low = 0 if match.feature in ("hidden", "cls") else 1
        for layer in layers:
            if not low <= layer <= config.num_hidden_layers:
                raise ValueError(f"{key}: {side} {layer} is outside {low}..{config.num_hidden_layers} "
                                 f"for feature {match.feature}")
    if match.feature in ("attention", "attention_probs"):
        # Heads left in the matched layers: a structurally pruned model has fewer in some (pruned_heads).
        s_heads, t_heads = s.num_heads_in_layer(match.layer_S[0] - 1), t.num_heads_in_layer(match.layer_T[0] - 1)
        if s_heads != t_heads:
            raise ValueError(f"{key}: attention maps need equal head counts, student has {s_heads}, teacher "
                             f"{t_heads}: use a relation feature or drop the match (a model with pruned heads: "
                             f"match hidden states)")
    if match.feature in RELATIONS:
        heads = match.relation_heads
        for name, config, layers in (("student", s, match.layer_S), ("teacher", t, match.layer_T)):
            split = heads or config.num_attention_heads
            for layer in layers:
                # The layer's query/key/value width: a structurally pruned layer keeps fewer heads.
                left = config.num_heads_in_layer(layer - 1)
                width = left * config.hidden_size // config.num_attention_heads
                if width % split:
                    pruned = left < config.num_attention_heads
                    where = f"layer {layer} width {width} ({left} of {config.num_attention_heads} heads left " \
                            f"after pruning): set relation_heads to a divisor of {width}" if pruned else f"width {width}"
                    raise ValueError(f"{key}: relation_heads {split} does not divide the {name}'s {where}")
        if not heads and s.num_attention_heads != t.num_attention_heads:
            raise ValueError(f"{key}: student and teacher head counts differ: set relation_heads")
    s_width = feature_width(match, s)
    t_width = feature_width(match, t)
    if isinstance(match.proj, tuple):
        if match.proj[1] != s_width or match.proj[2] != t_width:
            raise ValueError(f"{key}: proj {list(match.proj)} must map the student's width {s_width} to the "
                             f"teacher's {t_width}")
    elif match.proj is None and match.loss in SAME_WIDTH_LOSSES and s_width != t_width:
        raise ValueError(f"{key}: {match.loss} needs equal widths, student {s_width} vs teacher {t_width}: "
                         f"add proj: {SHARED_PROJECTION} or [linear, {s_width}, {t_width}]")
