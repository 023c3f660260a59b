"""Structured pruning: whole attention heads and feed-forward rows out of the encoder, physically.

Usage:
  python -m src.prune.structured --checkpoint teacher_best.ckpt --data train.mindrecord --max_batches 50 \
      --prune_heads 24 --intermediate_size 768 --output compact.ckpt [--row_importance movement]

Importance comes from gates that multiply a head's output or an intermediate row's activation,
all 1 (so the model is unchanged), and the task loss on labelled batches:
  heads  Michel, Levy and Neubig 2019 ("Are Sixteen Heads Really Better than One?"):
         I_h = sum over batches of |dL / d gate_h|, then L2-normalised within each layer (as their
         pruning experiments do) before heads are ranked across layers.
  rows   `movement`: -sum over batches of dL / d gate_j, the movement score -sum dL/dW * W of
         Sanh et al. 2020 summed over the row's outgoing weights (high: the row's weights matter
         and move away from zero); `magnitude`: ||W_in[j, :]||_2 * ||W_out[:, j]||_2, no data needed.
Removal takes out the heads' rows of the query, key and value weights and biases and their columns
of the attention output weight, and the rows' entries of the intermediate weight and bias and
columns of the output weight. The config records removed heads in `pruned_heads` (Hugging Face's
field, original head numbers) and the new `intermediate_size`, which stays one number for the
whole model (the same count of rows is kept in every layer) because Hugging Face's BertConfig has
one. The result is an ordinary, smaller BERT that `BertForSequenceClassification` builds.
"""
import argparse
import json

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from src.checkpoint import HEAD_PREFIX, MODEL_CONFIG, SEQ_LENGTH, STATE_PREFIX, assign_parameters, load_checkpoint, \
    named_parameters, save_checkpoint, split_metadata
from src.cli import check_distinct_files, run_cli
from src.dataset import create_dataset
from src.losses import get_loss
from src.prune.apply import parse_masked_name
from src.prune.count import write_json
from src.tinybert_model import BertConfig, BertForSequenceClassification

ROW_IMPORTANCE = ("movement", "magnitude")
HEAD_LAYERS = ("query", "key", "value")


class GatedInputDense(nn.Cell):
    """A dense layer whose input columns are multiplied by one gate per group: dense(x * gate).

    The gate plays the role of Michel et al. 2019's head mask xi_h. The gates start at 1, so the
    layer computes what `dense` computes.
    Args:
        dense (nn.Dense): reused (its Parameters are shared).
        num_groups (int): in_channels / num_groups columns per gate: a head's columns of the
            attention output, or one intermediate row of the feed-forward output; must divide
            in_channels (else the reshape fails when the layer runs).
    Inputs: x (..., in_channels). Output: (..., out_channels). Parameter `gate`: (num_groups,) float32.
    """

    def __init__(self, dense, num_groups):
        super().__init__()
        self.weight = dense.weight
        self.bias = dense.bias
        self.num_groups = num_groups
        self.gate = Parameter(Tensor(np.ones(num_groups, np.float32)), name="gate")

    def construct(self, x):
        shape = x.shape
        grouped = x.reshape(shape[:-1] + (self.num_groups, -1)) * self.gate.reshape(-1, 1)
        return ops.dense(grouped.reshape(shape), self.weight, self.bias)


class _LabelLoss(nn.Cell):
    def __init__(self, classifier, loss_fn):
        super().__init__()
        self.classifier = classifier
        self.loss_fn = loss_fn

    def construct(self, input_ids, attention_mask, token_type_ids, labels):
        return self.loss_fn(self.classifier(input_ids, attention_mask, token_type_ids)[0], labels)


class _GateGradients(nn.Cell):
    def __init__(self, loss, gates):
        super().__init__()
        self.loss = loss
        self.gates = ms.ParameterTuple(gates)
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, input_ids, attention_mask, token_type_ids, labels):
        return self.grad(self.loss, self.gates)(input_ids, attention_mask, token_type_ids, labels)


def _swap_in_gates(model, config):
    """Gate the attention output (per head) and feed-forward output (per row) of every layer, in place."""
    head_gates, row_gates = [], []
    for index, layer in enumerate(model.bert.bert_encoder.layers):
        for parent, groups, gates in ((layer.attention.output, config.num_heads_in_layer(index), head_gates),
                                      (layer.output, config.intermediate_size, row_gates)):
            prefix = parent.dense.weight.name[:-len("weight")]
            gated = GatedInputDense(parent.dense, groups)
            parent.dense = gated
            gated.update_parameters_name(prefix)  # full, unique names: the graph needs them
            gates.append(gated.gate)
    return head_gates, row_gates


def gate_importance(config, arrays, batches, num_labels):
    """Summed gate gradients over labelled batches (Michel et al. 2019's head importance, before normalising).

    Each batch contributes the gradient of its mean loss, so the absolute value is taken per batch,
    not per example as Michel et al.'s expectation has it (Hugging Face's bertology script does the same).

    Args:
        config (BertConfig): the model's shape (pruned_heads included).
        arrays (dict of str: np.ndarray): the classifier's weights.
        batches (iterable): (input_ids, attention_mask, token_type_ids, labels) numpy arrays, (B, T)
            int32 and (B,) labels (int class ids, or float targets when num_labels is 1).
        num_labels (int): classes of the head; 1 = regression (squared error), else cross-entropy.
    Returns:
        tuple: (heads, rows), one float64 array per layer each: heads (heads left,) the sums over
        batches of |dL/dgate|, rows (intermediate_size,) the sums of dL/dgate.
    Raises:
        ValueError: no batches.
    """
    # float32 whatever the training compute type: this is a measurement, and the gates are float32
    model = BertForSequenceClassification(config.for_inference().replace(compute_type="float32"), num_labels)
    assign_parameters(named_parameters(model), {name: Tensor(value) for name, value in arrays.items()},
                      "the checkpoint")
    head_gates, row_gates = _swap_in_gates(model, config)
    loss_fn = get_loss("label", "mse" if num_labels == 1 else "cross_entropy", "structured pruning")
    step = _GateGradients(_LabelLoss(model, loss_fn), head_gates + row_gates)
    step.set_train(False)
    layers = len(head_gates)
    heads = [np.zeros(gate.shape, np.float64) for gate in head_gates]
    rows = [np.zeros(gate.shape, np.float64) for gate in row_gates]
    seen = 0
    for input_ids, attention_mask, token_type_ids, labels in batches:
        grads = step(Tensor(input_ids), Tensor(attention_mask), Tensor(token_type_ids), Tensor(labels))
        for layer in range(layers):
            heads[layer] += np.abs(grads[layer].asnumpy())  # per batch, as Michel et al. take the expectation
            rows[layer] += grads[layers + layer].asnumpy()
        seen += 1
    if not seen:
        raise ValueError("no batches to measure importance on: the data is empty")
    return heads, rows


def head_importance(abs_head_gradients):
    """Michel et al. 2019's head importance: the |gradient| sums, L2-normalised within each layer.

    Takes and returns one (heads left,) array per layer; each returned array has unit L2 norm
    (1e-20 is added to the norm, as Hugging Face's bertology script does, so an all-zero layer stays 0).
    """
    return [values / (np.linalg.norm(values) + 1e-20) for values in abs_head_gradients]


def row_importance(method, arrays, row_gradients=None):
    """Importance of every intermediate row, one (intermediate_size,) array per layer.

    Args:
        method (str): movement (needs row_gradients: -sum of dL/dgate) or magnitude
            (||W_in[j, :]||_2 * ||W_out[:, j]||_2, from the weights alone).
        arrays (dict of str: np.ndarray): the model's weights.
        row_gradients (list of np.ndarray, default None): `gate_importance`'s rows.
    Returns:
        list of np.ndarray: one (intermediate_size,) array per layer; higher means keep.
    Raises:
        ValueError: an unknown method, or movement without row_gradients.
    """
    if method not in ROW_IMPORTANCE:
        raise ValueError(f"row importance {method!r} is not one of {', '.join(ROW_IMPORTANCE)}")
    if method == "movement":
        if row_gradients is None:
            raise ValueError("movement row importance needs row_gradients (gate_importance's rows)")
        return [-gradients for gradients in row_gradients]
    names = _dense_names(arrays)
    layers = sorted({layer for layer, _, _ in names})
    return [np.linalg.norm(arrays[names[n, "intermediate", "weight"]], axis=1) *
            np.linalg.norm(arrays[names[n, "output", "weight"]], axis=0) for n in layers]


def heads_to_prune(config, importance, count):
    """The `count` heads of lowest importance across layers, never a layer's last head.

    Args:
        config (BertConfig): gives the heads left in each layer (original numbers).
        importance (list of np.ndarray): one value per head left, per layer (`head_importance`).
        count (int): heads to remove.
    Returns:
        dict of int: list of int: {layer: original head numbers to remove}; on equal importance the
        earlier layer and head go first.
    Raises:
        ValueError: count is negative or leaves some layer without a head.
    """
    removable = sum(config.num_heads_in_layer(layer) - 1 for layer in range(config.num_hidden_layers))
    if not 0 <= count <= removable:
        raise ValueError(f"cannot prune {count} heads: 0..{removable} can go while each layer keeps one")
    ranked = sorted((value, layer, head) for layer, values in enumerate(importance)
                    for head, value in zip(_heads_left(config, layer), values))
    left = {layer: config.num_heads_in_layer(layer) for layer in range(config.num_hidden_layers)}
    chosen = {}
    for _, layer, head in ranked:
        if count == 0:
            break
        if left[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
            count -= 1
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def rows_to_keep(importance, intermediate_size):
    """Per layer, the `intermediate_size` rows of highest importance, in their original order.

    Takes one (rows,) array per layer (`row_importance`); returns one (intermediate_size,) int array
    per layer. Ties go to the lower row number.
    Raises:
        ValueError: intermediate_size is not in 1..rows.
    """
    if not 0 < intermediate_size <= len(importance[0]):
        raise ValueError(f"intermediate_size {intermediate_size} must be in 1..{len(importance[0])}")
    return [np.sort(np.argsort(-values, kind="stable")[:intermediate_size]) for values in importance]


def _heads_left(config, layer):
    return [head for head in range(config.num_attention_heads) if head not in dict(config.pruned_heads).get(layer, ())]


def _dense_names(arrays):
    """{(layer, short name, weight|bias): tensor name} of the six dense layers of every encoder layer."""
    return {parsed: name for name in arrays
            if (parsed := parse_masked_name(name)) and parsed[2] in ("weight", "bias")}


def compact(arrays, config, prune_heads, keep_rows):
    """Remove heads and intermediate rows from a model's tensors.

    Args:
        arrays (dict of str: np.ndarray): the model's tensors (names as in its checkpoint).
        config (BertConfig): its shape.
        prune_heads (dict of int: list of int): {layer: original head numbers to remove}.
        keep_rows (list of np.ndarray, or None): per layer, the intermediate rows to keep (the same
            count in every layer; row numbers must exist, else IndexError); None keeps all.
    Returns:
        tuple: (arrays of the smaller model, its BertConfig with pruned_heads and intermediate_size).
        A layer's query/key/value weights become (heads kept x head size, hidden), the attention
        output weight (hidden, heads kept x head size); the intermediate weight (rows kept, hidden)
        and the output weight (hidden, rows kept). Arrays are C-contiguous copies.
    Raises:
        ValueError: a head that is already gone, a layer left without heads, or layers keeping
            different numbers of rows.
    """
    head_size = config.hidden_size // config.num_attention_heads
    if keep_rows is not None and len({len(rows) for rows in keep_rows}) != 1:
        raise ValueError("every layer must keep the same number of intermediate rows (one intermediate_size)")
    result = dict(arrays)
    merged = {layer: set(heads) for layer, heads in config.pruned_heads}
    names = _dense_names(arrays)
    for layer in range(config.num_hidden_layers):
        left = _heads_left(config, layer)
        gone = set(prune_heads.get(layer, ()))
        if not gone <= set(left):
            raise ValueError(f"layer {layer}: heads {sorted(gone - set(left))} are not in the model any more")
        kept_heads = [position for position, head in enumerate(left) if head not in gone]
        if not kept_heads:
            raise ValueError(f"layer {layer}: removing heads {sorted(gone)} leaves it none; keep at least one")
        columns = np.concatenate([np.arange(p * head_size, (p + 1) * head_size) for p in kept_heads])
        for short in HEAD_LAYERS:
            for kind in ("weight", "bias"):
                result[names[layer, short, kind]] = arrays[names[layer, short, kind]][columns]
        output = names[layer, "attention_output", "weight"]
        result[output] = arrays[output][:, columns]
        merged.setdefault(layer, set()).update(gone)
        if keep_rows is not None:
            rows = keep_rows[layer]
            for kind in ("weight", "bias"):
                result[names[layer, "intermediate", kind]] = arrays[names[layer, "intermediate", kind]][rows]
            ffn_output = names[layer, "output", "weight"]
            result[ffn_output] = arrays[ffn_output][:, rows]
    new_config = config.replace(pruned_heads={layer: sorted(heads) for layer, heads in merged.items()},
                                intermediate_size=config.intermediate_size if keep_rows is None
                                else len(keep_rows[0]))
    return {name: np.ascontiguousarray(value) for name, value in result.items()}, new_config


def expand_pruned_heads(arrays, config):
    """The same function with every head present: pruned heads put back as zeros.

    A head whose value weights and bias are zero contributes nothing (its context is 0), and zero
    columns of the attention output ignore it anyway, so outputs are unchanged. For consumers that
    cannot represent per-layer head counts (transformers 5 dropped `pruned_heads`).
    Args:
        arrays (dict of str: np.ndarray): a structurally pruned model's tensors (as `compact` gives).
        config (BertConfig): its shape, with pruned_heads.
    Returns:
        tuple: (arrays with query/key/value (hidden, hidden) and (hidden,), attention output
        (hidden, hidden), config without pruned_heads). The intermediate size is left as it is.
    """
    head_size = config.hidden_size // config.num_attention_heads
    names = _dense_names(arrays)
    result = dict(arrays)
    for layer, _ in config.pruned_heads:
        columns = np.concatenate([np.arange(h * head_size, (h + 1) * head_size) for h in _heads_left(config, layer)])
        for short in HEAD_LAYERS:
            for kind in ("weight", "bias"):
                value = arrays[names[layer, short, kind]]
                full = np.zeros((config.hidden_size,) + value.shape[1:], value.dtype)
                full[columns] = value
                result[names[layer, short, kind]] = full
        value = arrays[names[layer, "attention_output", "weight"]]
        full = np.zeros((value.shape[0], config.hidden_size), value.dtype)
        full[:, columns] = value
        result[names[layer, "attention_output", "weight"]] = full
    return result, config.replace(pruned_heads=())


def _batches(args, seq_length):
    dataset = create_dataset(args.data, args.data_format, args.batch_size, seq_length, with_labels=True,
                             shuffle=False, drop_remainder=False, schema_file=args.schema_file)
    for number, batch in enumerate(dataset.create_tuple_iterator(output_numpy=True)):
        if args.max_batches and number == args.max_batches:
            break
        yield batch


def main(argv=None):
    """Compact one classifier checkpoint (the module docstring's usage); prints what was removed.

    Args:
        argv (list of str, default None): the command-line arguments; sys.argv[1:] if None.
    Raises:
        ValueError: not a classifier checkpoint with its model config, --data or seq_length missing
            when importance needs batches, or counts out of range (see heads_to_prune, rows_to_keep).
        FileNotFoundError: no such checkpoint or data. `run_cli` prints these as one `error:` line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", required=True, help="a classifier checkpoint that carries its model config")
    parser.add_argument("--output", required=True, help="the compacted checkpoint")
    parser.add_argument("--data", default="",
                        help="labelled records for the importance: training records (the dev set would leak into "
                             "the accuracy you report)")
    parser.add_argument("--data_format", default="mindrecord", choices=("mindrecord", "tfrecord"))
    parser.add_argument("--schema_file", default="")
    parser.add_argument("--seq_length", type=int, default=0, help="default: the checkpoint's")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_batches", type=int, default=0, help="0 = the whole data")
    parser.add_argument("--prune_heads", type=int, default=0, help="heads to remove, across layers")
    parser.add_argument("--intermediate_size", type=int, default=0, help="rows kept per layer; 0 = all")
    parser.add_argument("--row_importance", choices=ROW_IMPORTANCE, default="movement")
    parser.add_argument("--importance_output", default=None, help="also write the importance scores as JSON")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch_size is {args.batch_size}: give a positive number")
    for flag in ("max_batches", "prune_heads", "intermediate_size", "seq_length"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag} is {getattr(args, flag)}: give a non-negative number")
    check_distinct_files({"--checkpoint": args.checkpoint, "--output": args.output,
                          "--importance_output": args.importance_output})
    tensors, metadata = split_metadata(load_checkpoint(args.checkpoint))
    if MODEL_CONFIG not in metadata or HEAD_PREFIX + "weight" not in tensors:
        raise ValueError(f"{args.checkpoint} must be a classifier checkpoint that records its model config "
                         "(a task-distilled or fine-tuned one written by this project)")
    config = BertConfig.from_dict(json.loads(metadata[MODEL_CONFIG]))
    arrays = {name: value.asnumpy() for name, value in tensors.items() if not name.startswith(STATE_PREFIX)}
    needs_data = args.prune_heads or (args.row_importance == "movement" and args.intermediate_size)
    if needs_data and not args.data:
        raise ValueError("--data is needed: head importance and movement row importance come from labelled batches")
    head_scores = row_gradients = None
    if needs_data:
        seq_length = args.seq_length or int(metadata.get(SEQ_LENGTH, 0))
        if not seq_length:
            raise ValueError(f"{args.checkpoint} records no seq_length: give --seq_length")
        abs_heads, row_gradients = gate_importance(config, arrays, _batches(args, seq_length),
                                                   arrays[HEAD_PREFIX + "weight"].shape[0])
        head_scores = head_importance(abs_heads)
    prune = heads_to_prune(config, head_scores, args.prune_heads) if args.prune_heads else {}
    keep = rows_to_keep(row_importance(args.row_importance, arrays, row_gradients), args.intermediate_size) \
        if args.intermediate_size else None
    compacted, new_config = compact(arrays, config, prune, keep)
    save_checkpoint(args.output, {name: Tensor(value) for name, value in compacted.items()},
                    dict(metadata, **{MODEL_CONFIG: json.dumps(new_config.to_dict())}))
    before = sum(value.size for name, value in arrays.items() if "bert_encoder." in name)
    after = sum(value.size for name, value in compacted.items() if "bert_encoder." in name)
    print(f"removed {sum(len(h) for h in prune.values())} heads {prune}; intermediate_size "
          f"{config.intermediate_size} -> {new_config.intermediate_size}")
    print(f"encoder parameters {before:,} -> {after:,} ({100 * after / before:.1f}%); wrote {args.output}")
    if args.importance_output:
        write_json(args.importance_output, {
            "heads": [values.tolist() for values in head_scores] if head_scores else None,
            "rows": [values.tolist() for values in row_importance(args.row_importance, arrays, row_gradients)]
            if args.intermediate_size else None})


if __name__ == "__main__":
    run_cli(main)
