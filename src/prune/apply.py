"""Masks into a BERT model, baked weights out of it, and the same masks read from a checkpoint.

Only the six dense layers of each encoder layer are pruned; the embeddings, pooler and classifier
stay dense, as in Movement Pruning (Sanh et al. 2020). A model is masked after its dense weights
are loaded (the masks reuse its Parameters), and a masked checkpoint loads into a masked model.
"""
import re

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor

from src.checkpoint import PRUNING_METHOD, STATE_PREFIX, named_parameters, split_metadata
from src.prune.masks import CACHED_METHODS, MaskedDense, MaskRefresh, MaskRegularization, compute_masks
from src.prune.settings import check_threshold
from src.tinybert_model import BertModel

# The pruned layers, as attribute paths from a BertLayer (the zoo's names), and their short names.
MASKED_LAYERS = (("query", "attention.attention.query_layer"), ("key", "attention.attention.key_layer"),
                 ("value", "attention.attention.value_layer"), ("attention_output", "attention.output.dense"),
                 ("intermediate", "intermediate"), ("output", "output.dense"))
SCORES, THRESHOLD = "mask_scores", "pruning_threshold"
_MASKED_NAME = re.compile(r"^(?P<stem>(?:.*\.)?bert_encoder\.layers\.(?P<layer>\d+)\.(?P<path>"
                          + "|".join(re.escape(path) for _, path in MASKED_LAYERS)
                          + r"))\.(?P<kind>weight|bias|" + SCORES + "|" + THRESHOLD + ")$")
_SHORT = {path: short for short, path in MASKED_LAYERS}


def _encoder(model):
    """The BertModel of a bare encoder or of a model with a head over `.bert` (classification, NER, QA)."""
    if isinstance(model, BertModel):
        return model
    if isinstance(getattr(model, "bert", None), BertModel):
        return model.bert
    raise ValueError(f"pruning applies to a BertModel or a model with one as .bert, not {type(model).__name__}")


def _parent_and_attribute(layer, path):
    *parents, attribute = path.split(".")
    for name in parents:
        layer = getattr(layer, name)
    return layer, attribute


def masked_layers(model):
    """The MaskedDense layers of a model, layer by layer in MASKED_LAYERS order; [] if it is not masked.

    Raises:
        ValueError: the model is neither a BertModel nor has one as `.bert`.
    """
    found = []
    for layer in _encoder(model).bert_encoder.layers:
        for _, path in MASKED_LAYERS:
            parent, attribute = _parent_and_attribute(layer, path)
            cell = getattr(parent, attribute)
            if isinstance(cell, MaskedDense):
                found.append(cell)
    return found


def apply_masking(model, settings):
    """Swap the six dense layers of every encoder layer for MaskedDense, in place.

    Args:
        model (BertModel, or a model with one as `.bert`: BertForSequenceClassification,
            BertForTokenClassification, BertForQuestionAnswering): with its dense weights loaded.
        settings (PruningConfig): method and score initialisation.
    Returns:
        Parameter: the float32 threshold, shape (1,), that every masked layer reads, set to
        settings.initial_threshold; change it with `set_threshold` (or ops.assign in a step).
    Raises:
        ValueError: the model is of another class, already masked, or already run (compiled). A cell
            that holds the model must be built after masking too: a compiled graph keeps its layers.
    """
    bert = _encoder(model)
    if masked_layers(model):
        raise ValueError("the model is already masked: apply masking once")
    if any(cell.compile_cache for _, cell in model.cells_and_names()):
        # MindSpore would keep running the graph it compiled, which has no masks in it
        raise ValueError("the model has been run already: apply masking to a model before its first call")
    # shape (1,), not (): a checkpoint keeps scalars as metadata, and this must load back as a tensor
    threshold = Parameter(Tensor([settings.initial_threshold], ms.float32), name=THRESHOLD, requires_grad=False)
    compute_type = ms.float16 if bert.config.compute_type == "float16" else ms.float32
    for layer in bert.bert_encoder.layers:
        for _, path in MASKED_LAYERS:
            parent, attribute = _parent_and_attribute(layer, path)
            dense = getattr(parent, attribute)
            prefix = dense.weight.name[:-len("weight")]
            masked = MaskedDense(dense, settings, threshold, compute_type)
            setattr(parent, attribute, masked)
            # attaching renamed the Parameters to "<attribute>.weight": restore the full path
            masked.update_parameters_name(prefix)
    # shared: named where a model's parameter listing first meets it
    threshold.name = masked_layers(model)[0].weight.name[:-len("weight")] + THRESHOLD
    return threshold


def set_threshold(model, value):
    """Set the threshold of a masked model (host side, between steps; no recompilation).

    `value` (float) is a fraction kept or a sigmoid cut-off as settings.check_threshold says; it is
    not range-checked here.
    Raises:
        ValueError: the model is not masked (or not a BERT model).
    """
    layers = masked_layers(model)
    if not layers:
        raise ValueError("the model is not masked: call apply_masking first")
    layers[0].pruning_threshold.set_data(Tensor([value], ms.float32))


def cache_masks(model):
    """Cache a magnitude- or topK-masked model's training masks: each is then sorted once per call of
    the returned Cell, not in every training forward pass (`MaskedDense.cache_mask`). Call before the
    model is first run; run the Cell (no inputs) before each optimizer step.

    Returns:
        MaskRefresh, or None for the other methods (their masks are a cheap comparison) and unmasked models.
    Raises:
        ValueError: the model is not a BERT model.
    """
    layers = masked_layers(model)
    if not layers or layers[0].pruning_method not in CACHED_METHODS:
        return None
    for layer in layers:
        layer.cache_mask()
    return MaskRefresh(layers)


def mask_score_parameters(model):
    """The `mask_scores` Parameters, each (out, in) float32: the optimizer group with
    mask_scores_learning_rate and no weight decay. Empty for magnitude pruning or an unmasked model.

    Raises:
        ValueError: the model is not a BERT model.
    """
    return [layer.mask_scores for layer in masked_layers(model) if layer.pruning_method != "magnitude"]


def regularization_term(model, regularization):
    """`MaskRegularization` over the model's masked layers (a Cell with no inputs returning a scalar).

    Raises:
        ValueError: as MaskRegularization (regularization not l1/l0, no masked layers, magnitude).
    """
    return MaskRegularization(masked_layers(model), regularization)


def baked_parameters(model):
    """The weights of the plain model a masked model stands for: masks baked in (the paper's bertarize).

    The masks are the evaluation-mode masks at the current threshold.
    Returns:
        dict of str: Tensor: `named_parameters` of the model without mask_scores and the threshold,
        pruned weights multiplied by their masks; loads into the unmasked model class as it is.
    Raises:
        ValueError: the model is not masked.
    """
    layers = masked_layers(model)
    if not layers:
        raise ValueError("the model is not masked: there is nothing to bake")
    arrays = {name: param.asnumpy() for name, param in named_parameters(model).items()}
    masks = checkpoint_masks(arrays, layers[0].pruning_method, _scalar(layers[0].pruning_threshold.asnumpy()))
    return {name: Tensor(value) for name, value in bake_arrays(arrays, masks).items()}


def parse_masked_name(name):
    """(layer number, short layer name, kind) of a pruned layer's tensor name, else None.

    E.g. "bert.bert_encoder.layers.3.intermediate.weight" -> (3, "intermediate", "weight");
    kind: weight, bias, mask_scores or pruning_threshold.
    """
    match = _MASKED_NAME.match(name)
    if match is None:
        return None
    return int(match.group("layer")), _SHORT[match.group("path")], match.group("kind")


def _scalar(value):
    return float(np.asarray(value).reshape(-1)[0])


def stored_threshold(arrays):
    """The threshold (float) a masked checkpoint was last trained at, or None if it holds none."""
    for name, value in arrays.items():
        parsed = parse_masked_name(name)
        if parsed and parsed[2] == THRESHOLD:
            return _scalar(value)
    return None


def pruned_weight_names(arrays):
    """Names of the pruned weights (six per encoder layer) among a checkpoint's tensor names.

    Raises:
        ValueError: there are none (not a BERT checkpoint of this project).
    """
    names = [name for name in arrays if (parsed := parse_masked_name(name)) and parsed[2] == "weight"]
    if not names:
        raise ValueError("the checkpoint has no encoder dense layers (bert_encoder.layers.N...): is it a BERT "
                         "checkpoint of this project?")
    return names


def checkpoint_masks(arrays, pruning_method, threshold):
    """The evaluation-mode mask of every pruned weight in a checkpoint.

    Args:
        arrays (dict of str: np.ndarray): a checkpoint's tensors (e.g. split_metadata's, as numpy).
        pruning_method (str): magnitude reads the weights; the others the `mask_scores` beside them.
        threshold (float): as in training (see settings.check_threshold); ignored by l0.
    Returns:
        dict of str: np.ndarray: {weight name: mask (out, in) float32}, in checkpoint order.
    Raises:
        ValueError: no pruned layer in the checkpoint, or scores missing for a scored method.
    """
    weights = pruned_weight_names(arrays)
    if pruning_method == "magnitude":
        values = {name: np.abs(arrays[name]) for name in weights}
    else:
        missing = [name for name in weights if name[:-len("weight")] + SCORES not in arrays]
        if missing:
            raise ValueError(f"the checkpoint has no {SCORES} for {missing[0]} ({len(missing)} layers in all): "
                             f"{pruning_method} needs the masked checkpoint its training wrote; "
                             "a plain checkpoint can only be pruned by magnitude")
        values = {name: arrays[name[:-len("weight")] + SCORES] for name in weights}
    return compute_masks(pruning_method, values, threshold)


def bake_arrays(arrays, masks):
    """The plain model's tensors: each masked weight times its mask; mask scores and threshold dropped.

    Args:
        arrays (dict of str: np.ndarray): a masked model's (or checkpoint's) tensors.
        masks (dict of str: np.ndarray): {weight name: mask}, as `checkpoint_masks` gives.
    Returns:
        dict of str: np.ndarray, in the order of `arrays`.
    """
    return {name: value * masks[name] if name in masks else value for name, value in arrays.items()
            if (parsed := parse_masked_name(name)) is None or parsed[2] in ("weight", "bias")}


def bake_checkpoint_arrays(arrays, metadata, pruning_method=None, threshold=None):
    """A masked checkpoint's arrays baked into the plain model's (Movement Pruning's "bertarize").

    Args:
        arrays (dict of str: np.ndarray): the checkpoint's tensors, optimizer state left out
            (`src.prune.count.read_arrays`).
        metadata (dict): its metadata entries.
        pruning_method (str or None), threshold (float or None): the masks to apply; None: the
            checkpoint's own method and last threshold (`checkpoint_pruning`).
    Returns:
        (baked, metadata, masks, method, threshold): `bake_arrays`'s plain tensors; the metadata
        without PRUNING_METHOD (the plain model must not claim scores it no longer has); the masks
        applied ({weight name: 0/1 array}); the method and threshold used.
    Raises:
        ValueError: as `checkpoint_pruning` and `checkpoint_masks` (no method or threshold, scores
            missing).
    """
    method, threshold = checkpoint_pruning(arrays, metadata, pruning_method, threshold)
    masks = checkpoint_masks(arrays, method, threshold)
    plain = {key: value for key, value in metadata.items() if key != PRUNING_METHOD}
    return bake_arrays(arrays, masks), plain, masks, method, threshold


def baked_checkpoint(loaded):
    """A masked checkpoint as `load_checkpoint` read it, baked: what the plain model loads.

    Args:
        loaded (dict): {name: Parameter} and metadata entries of a checkpoint recording PRUNING_METHOD.
    Returns:
        dict: the same layout: the plain model's weights (`bake_checkpoint_arrays` at the recorded
        method and last threshold), then the metadata without PRUNING_METHOD; mask_scores, the
        threshold and optimizer state (STATE_PREFIX) dropped.
    Raises:
        ValueError: as `bake_checkpoint_arrays`.
    """
    tensors, metadata = split_metadata(loaded)
    arrays = {name: value.asnumpy() for name, value in tensors.items() if not name.startswith(STATE_PREFIX)}
    baked, plain, *_ = bake_checkpoint_arrays(arrays, metadata)
    return {**{name: Parameter(Tensor(value), name=name) for name, value in baked.items()}, **plain}


def restore_mask_scores(model, tensors, metadata, source):
    """Continue pruning from a masked checkpoint: its mask_scores into the masked `model`.

    With them the masks are where that run left them; train on with mask_scores_learning_rate 0 and
    a constant threshold (initial_threshold = final_threshold) to distil with the masks fixed.
    Args:
        model: masked by `apply_masking`, its weights loaded from the same checkpoint.
        tensors (dict of str: Tensor), metadata (dict): the checkpoint's, as `split_metadata` gives
            them (read with keep_masks).
        source (str): the checkpoint's path, for messages.
    Returns:
        int: the number of layers whose scores were restored; 0 for a plain checkpoint or magnitude.
    Raises:
        ValueError: the checkpoint was pruned by another method than the model's (its scores mean
            something else), or lacks a masked layer's scores.
    """
    layers = masked_layers(model)
    recorded, method = metadata.get(PRUNING_METHOD), layers[0].pruning_method
    if recorded is None:
        return 0
    if recorded != method:
        raise ValueError(f"{source} was pruned with {recorded}, not {method}: continue it with "
                         f"--pruning.pruning_method={recorded}, or prune its baked model (python -m src.prune.bake) "
                         "anew")
    if method == "magnitude":  # its masks come from the weights themselves
        return 0
    for layer in layers:
        name = layer.weight.name[:-len("weight")] + SCORES
        if name not in tensors:
            raise ValueError(f"{source} records {recorded} but has no {name}: it is not a checkpoint the prune "
                             "phase wrote")
        layer.mask_scores.set_data(Tensor(tensors[name].asnumpy(), ms.float32))
    return len(layers)


def checkpoint_pruning(arrays, metadata, pruning_method=None, threshold=None):
    """The method and threshold to count or bake a checkpoint with: the ones given, else the
    checkpoint's own (`pruning_method` metadata, the threshold it was last trained at).

    Args:
        arrays (dict of str: np.ndarray): the checkpoint's tensors.
        metadata (dict): the checkpoint's metadata.
        pruning_method (str, default None): overrides the recorded method.
        threshold (float, default None): overrides the recorded threshold (a fraction, not percent).
    Returns:
        tuple: (pruning_method str, threshold float; 0.0 for l0, which needs none).
    Raises:
        ValueError: neither given nor recorded, one given that is not the recorded one (its scores
            mean something else to another method), or a threshold out of range for the method.
    """
    recorded = metadata.get(PRUNING_METHOD)
    if pruning_method and recorded and pruning_method != recorded:
        raise ValueError(f"the checkpoint was pruned with {recorded}, not {pruning_method}: its masks are "
                         f"{recorded}'s, so leave --pruning_method out (or give {recorded})")
    pruning_method = pruning_method or recorded
    if not pruning_method:
        raise ValueError("the checkpoint does not record its pruning method (it is not a masked checkpoint the "
                         "prune phase wrote): give --pruning_method")
    if threshold is None:
        threshold = 0.0 if pruning_method == "l0" else stored_threshold(arrays)
        if threshold is None:
            raise ValueError(f"the checkpoint records no threshold: give --threshold for {pruning_method}")
    check_threshold(pruning_method, threshold, "--threshold")
    return pruning_method, threshold
