"""Count the weights a pruned checkpoint keeps, per layer and for the whole encoder.

Usage:
  python -m src.prune.count --checkpoint CKPT [--pruning_method METHOD] [--threshold T] [--output counts.json]

A masked checkpoint (written while pruning) is counted with the masks its scores give at the
threshold; without --pruning_method / --threshold the checkpoint's own are used (another method than
the recorded one is refused: the scores are that method's). For
sigmoied_threshold the threshold decides what remains, as in the paper's counting script; l0
counts the deterministic gates that are not 0 and ignores the threshold.
`--pruning_method nonzero` counts the non-zero weights of a plain checkpoint (a baked one).
Fractions are printed as percentages and written to --output as fractions in [0, 1].

Two totals: the pruned weights (the six dense matrices of every layer), and the whole encoder as
Movement Pruning reports "remaining weights": biases and LayerNorm counted as kept.
"""
import argparse
import json

import numpy as np

from src.atomic_files import write_text_atomically
from src.checkpoint import PRUNING_METHOD, STATE_PREFIX, load_checkpoint, split_metadata
from src.cli import run_cli
from src.prune.apply import MASKED_LAYERS, SCORES, THRESHOLD, checkpoint_masks, checkpoint_pruning, \
    parse_masked_name, pruned_weight_names
from src.prune.settings import PRUNING_METHODS

NONZERO = "nonzero"  # counting only: a plain checkpoint's non-zero weights
ENCODER = "bert_encoder."


def read_arrays(path):
    """(numpy arrays of the model's tensors, metadata) of a checkpoint; optimizer state left out.

    Raises:
        FileNotFoundError, ValueError: as `load_checkpoint` (no such file, not a MindSpore checkpoint).
    """
    tensors, metadata = split_metadata(load_checkpoint(path, keep_masks=True))
    return {name: value.asnumpy() for name, value in tensors.items() if not name.startswith(STATE_PREFIX)}, metadata


def count_remaining(arrays, masks):
    """What the masks keep.

    Args:
        arrays (dict of str: np.ndarray): the checkpoint's tensors.
        masks (dict of str: np.ndarray): {pruned weight name: mask}; an entry counts as kept where != 0.
    Returns:
        dict: "layers": [{"layer": n, <short name>: fraction kept, ..., "kept": int, "total": int}],
        "pruned_weights": {"kept", "total", "fraction"} over the masked matrices, and "encoder": the
        same over every encoder tensor (mask scores and the threshold excepted), others counted as kept.
        Counts are numbers of weights; fractions are in [0, 1], not percentages.
    Raises:
        ZeroDivisionError: `masks` is empty (callers pass `pruned_weight_names`, which never is).
    """
    layers = {}
    for name, mask in masks.items():
        number, short, _ = parse_masked_name(name)
        row = layers.setdefault(number, {"layer": number, "kept": 0, "total": 0})
        kept = int(np.count_nonzero(mask))
        row[short] = kept / mask.size
        row["kept"] += kept
        row["total"] += mask.size
    pruned_kept = sum(row["kept"] for row in layers.values())
    pruned_total = sum(row["total"] for row in layers.values())
    others = sum(value.size for name, value in arrays.items()
                 if ENCODER in name and name not in masks and not name.endswith((SCORES, THRESHOLD)))
    return {"layers": [layers[n] for n in sorted(layers)],
            "pruned_weights": {"kept": pruned_kept, "total": pruned_total, "fraction": pruned_kept / pruned_total},
            "encoder": {"kept": pruned_kept + others, "total": pruned_total + others,
                        "fraction": (pruned_kept + others) / (pruned_total + others)}}


def format_table(report):
    """`count_remaining`'s report as a fixed-width text table, its fractions shown as percentages kept."""
    shorts = [short for short, _ in MASKED_LAYERS]
    lines = ["layer " + " ".join(f"{s:>16}" for s in shorts) + f" {'layer':>8}"]
    for row in report["layers"]:
        cells = " ".join(f"{100 * row[s]:15.2f}%" if s in row else f"{'-':>16}" for s in shorts)
        lines.append(f"{row['layer']:>5} {cells} {100 * row['kept'] / row['total']:7.2f}%")
    pruned, encoder = report["pruned_weights"], report["encoder"]
    lines.append(f"pruned weights: {pruned['kept']:,} of {pruned['total']:,} kept ({100 * pruned['fraction']:.2f}%)")
    lines.append(f"encoder, biases and LayerNorm counted as kept: {encoder['kept']:,} of {encoder['total']:,} "
                 f"({100 * encoder['fraction']:.2f}%)")
    return "\n".join(lines)


def write_json(path, report):
    """Write `report` as indented JSON to `path` atomically (a temporary name in the same folder, then a
    rename), creating missing folders.

    Raises:
        OSError: the folder cannot be created or written.
    """
    write_text_atomically(path, json.dumps(report, indent=2) + "\n")


def main(argv=None):
    """Count one checkpoint (the module docstring's usage): a table on stdout, JSON with --output.

    Args:
        argv (list of str, default None): the command-line arguments; sys.argv[1:] if None.
    Raises:
        ValueError: the method or threshold is missing or out of range, or the checkpoint has no
            pruned layers or lacks the scores its method needs. FileNotFoundError: no such checkpoint.
            `run_cli` prints these as one `error:` line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--pruning_method", default=None, choices=PRUNING_METHODS + (NONZERO,),
                        help="magnitude | topK | sigmoied_threshold | l0 | nonzero (default: the checkpoint's)")
    parser.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's last threshold")
    parser.add_argument("--output", default=None, help="also write the counts as JSON here")
    args = parser.parse_args(argv)
    if args.pruning_method == NONZERO and args.threshold is not None:
        raise ValueError("--threshold does not apply to --pruning_method nonzero, which counts the non-zero "
                         "weights: leave it out")
    arrays, metadata = read_arrays(args.checkpoint)
    if args.pruning_method == NONZERO:
        method, threshold = NONZERO, None
        masks = {name: arrays[name] for name in pruned_weight_names(arrays)}
    else:
        if args.pruning_method is None and PRUNING_METHOD not in metadata:
            raise ValueError(f"{args.checkpoint} is a plain checkpoint (it records no pruning method): "
                             "--pruning_method nonzero counts its non-zero weights (a baked model's), "
                             "--pruning_method magnitude --threshold T what keeping the top T of |W| would keep")
        method, threshold = checkpoint_pruning(arrays, metadata, args.pruning_method, args.threshold)
        masks = checkpoint_masks(arrays, method, threshold)
        threshold = None if method == "l0" else threshold  # l0 counts its deterministic gates
    report = dict(checkpoint=str(args.checkpoint), pruning_method=method, threshold=threshold,
                  **count_remaining(arrays, masks))
    print(f"{args.checkpoint}: {method}" + (f" at threshold {threshold:g}" if threshold is not None else ""))
    print(format_table(report))
    if args.output:
        write_json(args.output, report)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
