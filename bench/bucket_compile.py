"""What each new padding length costs a training run: the first step at each of a few sequence lengths
(compilation included) and the steps after it, with the training step as one compiled graph (the train
cell called directly) or as two (`TrainingStep`: forward and backward per shape, the update once).

python bench/bucket_compile.py --graphs two [--layers 6] [--lengths 32 48 64] [--batch 32]

A MiniLM-shaped classifier (hidden 384, 12 heads, intermediate 1536, --layers layers, random weights)
trained as td2 trains from the teacher-logits cache (the soft cross-entropy, src.optimizer.AdamW, loss
scaling): with 6 layers its step is that of teacher fine-tuning, with 3 that of td2's student. Each
line: the graphs, the length, the seconds of the first step at that length and the median of 3 later
ones, and the process's peak resident memory so far. Run each --graphs in its own process (compiled
graphs are kept per process). Results: bench/GD_STEP.md, "Two graphs a step".
"""
import argparse
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np
import mindspore as ms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from src.config import load_config  # noqa: E402
from src.distill.teacher import CachedTeacher  # noqa: E402
from src.optimizer import AdamW  # noqa: E402
from src.tasks import build_task_model  # noqa: E402
from src.tinybert_for_gd_td import (BertTrainWithLossScaleCell, DistillationLoss, TrainingStep,  # noqa: E402
                                    make_scale_update_cell)
from src.tinybert_model import BertConfig  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", choices=("one", "two"), required=True)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=args.layers, num_attention_heads=12,
                        intermediate_size=1536)
    loss = DistillationLoss(build_task_model("sequence_classification", config, 2), ("prediction",),
                            load_config([]).distill)
    scale = types.SimpleNamespace(enabled=True, init_value=2.0 ** 16, factor=2, window=1000)
    train_cell = BertTrainWithLossScaleCell(loss, AdamW(loss.trainable_params(), 1e-4), make_scale_update_cell(scale),
                                            1.0)
    train_step = TrainingStep(train_cell)
    train_step.set_train(True)
    rng = np.random.default_rng(0)
    teacher = CachedTeacher(rng.normal(0, 2, (args.batch, 2)).astype(np.float32))
    schedule = ms.Tensor([1.0, 0.0, 1.0, 0.0], ms.float32)
    for length in args.lengths:
        inputs = (ms.Tensor(rng.integers(1000, 30000, (args.batch, length)).astype(np.int32)),
                  ms.Tensor(np.ones((args.batch, length), np.int32)),
                  ms.Tensor(np.zeros((args.batch, length), np.int32)),
                  ms.Tensor(np.zeros(args.batch, np.int32)), ms.Tensor(np.arange(args.batch, dtype=np.int32)))
        times = []
        for step in range(4):
            start = time.perf_counter()
            if args.graphs == "one":
                float(train_cell(teacher(*inputs), schedule, *inputs)[0].asnumpy())
            else:
                train_step(step, teacher, schedule, inputs, inputs)
            times.append(time.perf_counter() - start)
        print(f"{args.graphs} graph(s)  length {length:4d}  first step {times[0]:6.2f} s  "
              f"later steps {np.median(times[1:]):.3f} s  peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
