"""Cost of the stateless dropout (src/dropout.py) in a training step, against MindSpore's nn.Dropout
and against no dropout.

python bench/dropout_step.py [--seq 128] [--batch 32] [--rounds 8]

One process builds the same MiniLM-sized student classifier (3 layers, hidden 384, 12 heads,
intermediate 1536) three times: without dropout, with nn.Dropout, with StatelessDropout (p = 0.1
everywhere), each with the project's loss-scaled step and AdamW. Each round runs one step of
each, in rotated order, so a busy shared machine slows all three alike; the ratios are taken per
round (paired) and their median reported.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("none", "nn.Dropout", "stateless")


def build_step(variant):
    from mindspore import nn
    import src.tinybert_model as model_module
    from src.config import load_config
    from src.optimizer import build_optimizer
    from src.tinybert_for_gd_td import BertTrainWithLossScaleCell, DistillationLoss, make_scale_update_cell

    cfg = load_config([])
    p = 0.0 if variant == "none" else 0.1
    config = model_module.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12,
                                     intermediate_size=1536, hidden_dropout_prob=p, attention_probs_dropout_prob=p)
    stateless = model_module.StatelessDropout
    if variant == "nn.Dropout":
        model_module.StatelessDropout = lambda p: nn.Dropout(p=p)
    try:
        student = model_module.BertForSequenceClassification(config, 2)
    finally:
        model_module.StatelessDropout = stateless
    loss = DistillationLoss(student, ("label",), cfg.distill)
    step = BertTrainWithLossScaleCell(loss, build_optimizer(loss.trainable_params(), cfg.td2, 1000),
                                      make_scale_update_cell(cfg.loss_scale), 1.0)
    step.set_train(True)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    import mindspore as ms
    from src.dropout import number_dropout_sites, set_dropout_step

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    steps = {variant: build_step(variant) for variant in VARIANTS}
    number_dropout_sites(steps["stateless"])
    rng = np.random.default_rng(0)
    inputs = (ms.Tensor(rng.integers(1000, 30522, (args.batch, args.seq)).astype(np.int32)),
              ms.Tensor(np.ones((args.batch, args.seq), np.int32)), ms.Tensor(np.zeros((args.batch, args.seq), np.int32)),
              ms.Tensor(rng.integers(0, 2, args.batch).astype(np.int32)))
    schedule = ms.Tensor([1.0, 1.0, 1.0], ms.float32)
    times = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds + 1):  # round 0 compiles
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            set_dropout_step(1, round_index)
            start = time.perf_counter()
            float(steps[variant]((), schedule, *inputs)[0].asnumpy())
            if round_index:
                times[variant].append(time.perf_counter() - start)
    base = {name: np.array(values) for name, values in times.items()}
    print(f"batch {args.batch}, seq {args.seq}, {args.rounds} paired rounds")
    for variant in VARIANTS:
        print(f"{variant:>11}: median {np.median(base[variant]) * 1000:6.0f} ms/step, "
              f"vs none x{np.median(base[variant] / base['none']):.3f}, "
              f"vs nn.Dropout x{np.median(base[variant] / base['nn.Dropout']):.3f}")


if __name__ == "__main__":
    main()
