"""CPU inference time of a structurally pruned (compacted) MiniLM-sized classifier against the dense one.

Usage:
  python bench/structured_prune_speed.py [--batch_size 32] [--seq_length 128] [--runs 7]
  python bench/structured_prune_speed.py --checkpoints dense.ckpt compact.ckpt [...]

Without --checkpoints the dense model has all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads,
intermediate 1536) and each compacted model is the same model after `src.prune.structured.compact`
removed heads (the same number in every layer) and intermediate rows; weights are random: the time
of a forward pass does not depend on their values. With --checkpoints the models are the ones the
checkpoints record (the first is the baseline of the speed-up), e.g. a fine-tuned teacher and its
compacted copy from `python -m src.prune.structured`. Each model is compiled once (GRAPH_MODE), then
the models run in turn, `runs` times each, so a change in machine load hits all of them alike; the
median is reported. Prints the CPU model and load (lscpu, uptime) beside the numbers.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.checkpoint import load_model, named_parameters  # noqa: E402
from src.prune.structured import compact  # noqa: E402
from src.tinybert_model import BertConfig, BertForSequenceClassification, LogitsOnly, count_parameters  # noqa: E402

MINILM = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512).for_inference()
# (heads kept per layer, intermediate rows kept per layer)
SHAPES = ((12, 1536), (8, 1024), (6, 768), (4, 512))


def _machine():
    model = [line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
             .stdout.splitlines() if line.startswith("Model name")]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return (model[0] if model else "unknown CPU"), uptime


def _build(dense_arrays, heads_kept, rows_kept):
    """A compacted classifier: the last heads and rows of each layer removed."""
    prune = {layer: list(range(heads_kept, MINILM.num_attention_heads)) for layer in range(MINILM.num_hidden_layers)}
    keep = [np.arange(rows_kept)] * MINILM.num_hidden_layers
    arrays, config = compact(dense_arrays, MINILM, prune if heads_kept < MINILM.num_attention_heads else {}, keep)
    model = BertForSequenceClassification(config, num_labels=2)
    for name, param in named_parameters(model).items():
        param.set_data(ms.Tensor(arrays[name]))
    return _runner(model, f"{heads_kept} heads/layer, intermediate {rows_kept}")


def _runner(model, label):
    """(label, logits-only runner in inference mode, encoder parameter count) of a classifier."""
    runner = LogitsOnly(model)
    runner.set_train(False)
    return label, runner, count_parameters(model, "bert.bert_encoder.")


def _from_checkpoint(path):
    """A sequence classifier rebuilt from a checkpoint that records its model, labelled with its shape."""
    model, _ = load_model(path)
    config = model.bert.config
    heads = "/".join(str(config.num_heads_in_layer(i)) for i in range(config.num_hidden_layers))
    return _runner(model, f"{Path(path).name} (heads {heads}, intermediate {config.intermediate_size})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--checkpoints", nargs="+", default=[],
                        help="classifier checkpoints to time (the first is the baseline); default: random MiniLM shapes")
    args = parser.parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(0)
    if args.checkpoints:
        models = [_from_checkpoint(path) for path in args.checkpoints]
    else:
        dense = BertForSequenceClassification(MINILM, num_labels=2)
        dense_arrays = {name: rng.normal(scale=0.05, size=p.shape).astype(np.float32)
                        for name, p in named_parameters(dense).items()}
        models = [_build(dense_arrays, *shape) for shape in SHAPES]
    inputs = (ms.Tensor(rng.integers(1000, 30000, (args.batch_size, args.seq_length)).astype(np.int32)),
              ms.Tensor(np.ones((args.batch_size, args.seq_length), np.int32)),
              ms.Tensor(np.zeros((args.batch_size, args.seq_length), np.int32)))
    for _, runner, _ in models:
        runner(*inputs).asnumpy()  # compile
    times = [[] for _ in models]
    for _ in range(args.runs):
        for spent, (_, runner, _) in zip(times, models):
            start = time.perf_counter()
            runner(*inputs).asnumpy()
            spent.append(time.perf_counter() - start)
    cpu, load = _machine()
    print(f"CPU: {cpu}; {load}")
    print(f"batch {args.batch_size}, seq {args.seq_length}, GRAPH_MODE float32, median of {args.runs} runs")
    print(f"{'model':<60}  encoder params   median ms   speed-up")
    base = statistics.median(times[0])
    for spent, (label, _, params) in zip(times, models):
        median = statistics.median(spent)
        print(f"{label:<60}  {params:>14,}  {1000 * median:>10.0f}   {base / median:>7.2f}x")


if __name__ == "__main__":
    main()
