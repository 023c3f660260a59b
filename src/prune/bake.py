"""Bake a pruned checkpoint: pruned weights set to zero once and for all, an ordinary checkpoint out.

Usage:
  python -m src.prune.bake --checkpoint masked.ckpt --output plain.ckpt [--pruning_method METHOD] \
      [--threshold T] [--sparse_output plain.sparse.safetensors [--sparse_values int8]]

Movement Pruning's "bertarize" step: each pruned weight is multiplied by its evaluation-mode mask
(0/1; the deterministic gate for l0), the mask scores and threshold are dropped, and the result is
a checkpoint of the ordinary model with the same metadata, which evaluates, exports (MINDIR/ONNX)
and converts to Hugging Face like any other. Without --pruning_method / --threshold the
checkpoint's own are used (another method than the recorded one is refused). --sparse_output also
writes the compact format of src/prune/sparse_format.py and prints its size beside the dense
checkpoint's.
"""
import argparse
import os

import mindspore as ms

from src.checkpoint import save_checkpoint
from src.cli import check_distinct_files, run_cli
from src.prune.apply import bake_checkpoint_arrays
from src.prune.count import count_remaining, read_arrays
from src.prune.settings import PRUNING_METHODS
from src.prune.sparse_format import VALUE_TYPES, save_sparse, storage_summary


def main(argv=None):
    """Bake one checkpoint (the module docstring's usage); prints the fraction kept and file sizes in bytes.

    Args:
        argv (list of str, default None): the command-line arguments; sys.argv[1:] if None.
    Raises:
        ValueError: --output or --sparse_output names the input checkpoint or the other output, the
            method or threshold is missing or out of range, or the checkpoint lacks what the method needs (see
            apply.bake_checkpoint_arrays). FileNotFoundError: no such checkpoint. `run_cli` prints these
            as one `error:` line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", required=True, help="a masked checkpoint (or any, for magnitude)")
    parser.add_argument("--output", required=True, help="the plain checkpoint to write")
    parser.add_argument("--pruning_method", default=None, choices=PRUNING_METHODS,
                        help="magnitude | topK | sigmoied_threshold | l0 (default: the checkpoint's)")
    parser.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's last threshold")
    parser.add_argument("--sparse_output", default=None, help="also write the compact .safetensors here")
    parser.add_argument("--sparse_values", choices=VALUE_TYPES, default="float32")
    args = parser.parse_args(argv)
    check_distinct_files({"--checkpoint": args.checkpoint, "--output": args.output, "--sparse_output": args.sparse_output})
    baked, metadata, masks, method, threshold = bake_checkpoint_arrays(*read_arrays(args.checkpoint),
                                                                       args.pruning_method, args.threshold)
    save_checkpoint(args.output, {name: ms.Tensor(value) for name, value in baked.items()}, metadata)
    kept = count_remaining(baked, masks)["pruned_weights"]
    print(f"baked {len(masks)} pruned matrices ({method}" + ("" if method == "l0" else f", threshold {threshold:g}")
          + f"): {100 * kept['fraction']:.2f}% of {kept['total']:,} weights kept")
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes)")
    if args.sparse_output:
        stored = save_sparse(args.sparse_output, baked, metadata, args.sparse_values)
        print(f"wrote {args.sparse_output} ({os.path.getsize(args.sparse_output):,} bytes): "
              f"{storage_summary(stored, args.sparse_values)}")


if __name__ == "__main__":
    run_cli(main)
