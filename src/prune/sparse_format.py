"""Compact storage of a baked (pruned) model: compressed sparse rows, small index types, optional int8.

Usage:
  python -m src.prune.sparse_format pack --checkpoint baked.ckpt --output baked.sparse.safetensors [--values int8]
  python -m src.prune.sparse_format unpack --input baked.sparse.safetensors --output dense.ckpt

The file is safetensors (no pickles; `safetensors` reads it anywhere). Every 2-D float matrix that
takes fewer bytes in compressed sparse rows (CSR) than dense is stored as
  NAME.indptr   (rows + 1,) row starts, the smallest unsigned type that holds the non-zero count
  NAME.indices  (nnz,) column of each non-zero, the smallest unsigned type that holds the width
                (uint16 for BERT's 768 or 3072 columns)
  NAME.values   (nnz,) float32, or int8 with
  NAME.scale    (rows,) float32: value = int8 x scale, scale = max |value in the row| / 127.
Everything else (embeddings, LayerNorm, biases, dense matrices) is stored as it is: int8
applies to the CSR matrices only, and may round a kept weight below scale / 2 to 0. The layout
and the checkpoint's metadata sit in the file's metadata under "tinybert_sparse". float32 reloads
bit for bit; int8 reloads each kept weight within scale / 2 of its value, and pruned weights stay
exactly 0. Sizes are printed in bytes.
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import mindspore as ms
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file

from src.atomic_files import atomic_path
from src.checkpoint import STATE_PREFIX, load_checkpoint, save_checkpoint, split_metadata, write_safetensors
from src.cli import check_distinct_files, require_file, run_cli

LAYOUT_KEY = "tinybert_sparse"
FORMAT_VERSION = 1
VALUE_TYPES = ("float32", "int8")
INT8_MAX = 127
_PARTS = ("indptr", "indices", "values", "scale")


def _smallest_unsigned(largest):
    """The narrowest numpy unsigned integer type that holds 0..largest."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def to_csr(matrix, values="float32"):
    """A 2-D array as CSR parts.

    Args:
        matrix (np.ndarray, (rows, cols) float): mostly zeros.
        values (str, default "float32"): float32 keeps the values exactly; int8 quantises them with
            one symmetric scale per row.
    Returns:
        dict of str: np.ndarray: indptr (rows + 1,), indices (nnz,), values (nnz,), and scale (rows,)
        for int8 (see the module docstring).
    Raises:
        ValueError: `values` is not one of VALUE_TYPES, or `matrix` is not 2-D.
    """
    if values not in VALUE_TYPES:
        raise ValueError(f"values {values!r} must be one of {', '.join(VALUE_TYPES)}")
    rows, cols = matrix.shape
    row_ids, col_ids = np.nonzero(matrix)
    counts = np.bincount(row_ids, minlength=rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(_smallest_unsigned(len(col_ids)))
    parts = {"indptr": indptr, "indices": col_ids.astype(_smallest_unsigned(max(cols - 1, 0)))}
    kept = matrix[row_ids, col_ids].astype(np.float32)
    if values == "float32":
        parts["values"] = kept
    else:
        row_max = np.zeros(rows, np.float32)
        np.maximum.at(row_max, row_ids, np.abs(kept))
        scale = np.where(row_max > 0, row_max / INT8_MAX, 1.0).astype(np.float32)
        parts["values"] = np.clip(np.rint(kept / scale[row_ids]), -INT8_MAX, INT8_MAX).astype(np.int8)
        parts["scale"] = scale
    return parts


def from_csr(parts, shape):
    """The dense float32 matrix, of shape `shape` (rows, cols), of `to_csr`'s parts (int8 values scaled back)."""
    indptr = parts["indptr"].astype(np.int64)
    row_ids = np.repeat(np.arange(shape[0]), np.diff(indptr))
    values = parts["values"].astype(np.float32)
    if "scale" in parts:
        values = values * parts["scale"][row_ids]
    matrix = np.zeros(shape, np.float32)
    matrix[row_ids, parts["indices"].astype(np.int64)] = values
    return matrix


def _csr_bytes(parts):
    return sum(part.nbytes for part in parts.values())


def save_sparse(path, arrays, metadata=None, values="float32"):
    """Write a model's tensors compactly, atomically (a temporary name in the same folder, then a rename).

    Args:
        path (str or Path): the .safetensors file to write.
        arrays (dict of str: np.ndarray): the tensors (a baked checkpoint's); optimizer state is skipped.
        metadata (dict, default None): str/int/float entries stored beside them (the checkpoint's).
        values (str, default "float32"): float32 or int8 for the values of CSR-stored matrices.
    Returns:
        dict: {"sparse": names stored as CSR, "dense": names stored as they are}, each sorted.
    Raises:
        ValueError: an unknown value type, or a tensor name that collides with a CSR part name.
        OSError: the file cannot be written (a full disk, no permission).
    """
    if values not in VALUE_TYPES:
        raise ValueError(f"values {values!r} must be one of {', '.join(VALUE_TYPES)}")
    arrays = {name: value for name, value in arrays.items() if not name.startswith(STATE_PREFIX)}
    tensors, layout = {}, {}
    for name, value in arrays.items():
        # sparse enough if exact (float32) CSR is smaller; int8 then applies to these matrices only
        if value.ndim == 2 and np.issubdtype(value.dtype, np.floating) and _csr_bytes(to_csr(value)) < value.nbytes:
            layout[name] = {"shape": list(value.shape), "values": values}
            tensors.update({f"{name}.{part}": array for part, array in to_csr(value, values).items()})
        else:
            tensors[name] = np.ascontiguousarray(value)
    clashes = [name for name in arrays if name not in layout and name.rsplit(".", 1)[0] in layout]
    if clashes:
        raise ValueError(f"tensor {clashes[0]} has the name of a CSR part: rename it before packing")
    header = {"version": FORMAT_VERSION, "sparse": layout, "metadata": dict(metadata or {})}
    with atomic_path(path) as tmp:
        write_safetensors(tensors, tmp, {LAYOUT_KEY: json.dumps(header)}, path)
    return {"sparse": sorted(layout), "dense": sorted(set(arrays) - set(layout))}


def storage_summary(stored, values):
    """One line on what `save_sparse` stored (its return value `stored`): the matrices as CSR with their
    value type, the tensors kept dense, and a warning when no matrix was sparse enough for CSR."""
    line = f"{len(stored['sparse'])} matrices as CSR ({values} values), {len(stored['dense'])} tensors dense"
    if not stored["sparse"]:
        line += (": no matrix is sparse enough for CSR to be smaller than it, so the file is as large as the "
                 "dense checkpoint")
    return line


def load_sparse(path):
    """(arrays, metadata) of a file `save_sparse` wrote: {name: dense np.ndarray} and the checkpoint's metadata.

    CSR matrices come back as float32 (rows, cols); other tensors as they were stored.
    Raises:
        FileNotFoundError: no such file. ValueError: not a safetensors file, or not one of this format
            or version.
    """
    path = Path(path)
    require_file(path, "sparse model", "check the path you passed")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = (handle.metadata() or {}).get(LAYOUT_KEY)
    except SafetensorError as error:
        raise ValueError(f"{path} is not a safetensors file ({error}): pass a sparse model written by "
                         "src.prune.sparse_format") from None
    if header is None:
        raise ValueError(f"{path} is a safetensors file but not a sparse model written by src.prune.sparse_format")
    header = json.loads(header)
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has sparse format version {header.get('version')}; this code reads {FORMAT_VERSION}")
    tensors = load_file(str(path))
    arrays = {}
    for name, layout in header["sparse"].items():
        parts = {part: tensors.pop(f"{name}.{part}") for part in _PARTS if f"{name}.{part}" in tensors}
        arrays[name] = from_csr(parts, tuple(layout["shape"]))
    arrays.update(tensors)
    return arrays, header["metadata"]


def main(argv=None):
    """`pack` or `unpack` one model (the module docstring's usage); sizes are printed in bytes.

    Args:
        argv (list of str, default None): the command-line arguments; sys.argv[1:] if None.
    Raises:
        FileNotFoundError, ValueError: a missing input, or one that is not a checkpoint (pack) or
            not a sparse model (unpack). `run_cli` prints these as one `error:` line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="baked checkpoint -> compact .safetensors")
    pack.add_argument("--checkpoint", required=True)
    pack.add_argument("--output", required=True)
    pack.add_argument("--values", choices=VALUE_TYPES, default="float32")
    unpack = commands.add_parser("unpack", help="compact .safetensors -> ordinary checkpoint")
    unpack.add_argument("--input", required=True)
    unpack.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    source = "checkpoint" if args.command == "pack" else "input"
    check_distinct_files({f"--{source}": getattr(args, source), "--output": args.output})
    if args.command == "pack":
        tensors, metadata = split_metadata(load_checkpoint(args.checkpoint))
        stored = save_sparse(args.output, {name: value.asnumpy() for name, value in tensors.items()},
                             metadata, args.values)
        print(storage_summary(stored, args.values))
        print(f"size on disk: {args.checkpoint} {os.path.getsize(args.checkpoint):,} bytes, "
              f"{args.output} {os.path.getsize(args.output):,} bytes")
    else:
        arrays, metadata = load_sparse(args.input)
        save_checkpoint(args.output, {name: ms.Tensor(value) for name, value in arrays.items()}, metadata)
        print(f"wrote {args.output} ({len(arrays)} tensors)")


if __name__ == "__main__":
    run_cli(main)
