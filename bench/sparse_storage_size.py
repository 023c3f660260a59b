"""Size on disk of a baked, pruned MiniLM-sized classifier: dense checkpoint vs the compact format.

Usage:
  python bench/sparse_storage_size.py [--output_dir /tmp/sparse_sizes]

Random weights magnitude-pruned to 50%, 10% and 3% of each encoder matrix, baked, then written as
an ordinary checkpoint and by `src.prune.sparse_format` with float32 and int8 values; sizes for the
whole model (embeddings stay dense) and for the encoder alone. Sizes depend on the number of kept
weights, not their values, so random weights give the sizes a trained model would have.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import mindspore as ms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.checkpoint import named_parameters, save_checkpoint  # noqa: E402
from src.prune.apply import bake_arrays, checkpoint_masks  # noqa: E402
from src.prune.sparse_format import save_sparse  # noqa: E402
from src.tinybert_model import BertConfig, BertForSequenceClassification  # noqa: E402

MINILM = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536)


def _sizes(arrays, directory):
    save_checkpoint(directory / "dense.ckpt", {name: ms.Tensor(value) for name, value in arrays.items()})
    sizes = [os.path.getsize(directory / "dense.ckpt")]
    for values in ("float32", "int8"):
        save_sparse(directory / "sparse.safetensors", arrays, None, values)
        sizes.append(os.path.getsize(directory / "sparse.safetensors"))
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output_dir", default=None, help="where the files are written (default: a temporary folder)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    arrays = {name: rng.normal(scale=0.05, size=p.shape).astype(np.float32)
              for name, p in named_parameters(BertForSequenceClassification(MINILM, num_labels=2)).items()}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.output_dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        print("kept   whole model: checkpoint / CSR float32 / CSR int8   encoder only: checkpoint / float32 / int8 (MB)")
        for keep in (0.5, 0.1, 0.03):
            baked = bake_arrays(arrays, checkpoint_masks(arrays, "magnitude", keep))
            whole = _sizes(baked, directory)
            encoder = _sizes({name: value for name, value in baked.items() if "bert_encoder." in name}, directory)
            print(f"{100 * keep:>3.0f}%   " + " / ".join(f"{size / 1e6:.1f}" for size in whole) + "   "
                  + " / ".join(f"{size / 1e6:.1f}" for size in encoder))


if __name__ == "__main__":
    main()
