"""The update after the backward pass, ours against PyTorch's: unscale, overflow check, clip, AdamW.

python bench/optimizer_step.py [--model minilm] [--repeats 10]

Ours: `BertTrainWithLossScaleCell.apply_gradients` in GRAPH mode, the training step's own update:
the loss-scaled gradients' global norm (overflow check and clip in one), one multiply to unscale
and clip, and `src.optimizer.AdamW` (biases and LayerNorm not decayed, as build_optimizer groups
them). PyTorch: `torch.nn.utils.clip_grad_norm_` and `torch.optim.AdamW` with the same two groups,
the update of a plain fp32 fine-tuning loop. Both on every trainable parameter of the encoder
(--model: a preset of default_config.yaml, or minilm = all-MiniLM-L6-v2's shape), random gradients
of a realistic size, one process, the two taking turns (src.report.time_in_turns). Prints the
first call (ours: graph compilation) and the median of --repeats, in ms.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from src.config import load_config  # noqa: E402
from src.report import time_in_turns  # noqa: E402

MINILM = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
          "intermediate_size": 1536}
LOSS_SCALE = 65536.0


def gradients(shapes, seed=0):
    """Random float32 gradients of the given shapes, about 1e-3 each (a fine-tuning step's size)."""
    rng = np.random.default_rng(seed)
    return [(1e-3 * rng.standard_normal(shape)).astype(np.float32) for shape in shapes]


def mindspore_update(preset):
    """(parameter shapes, a call doing our update once)."""
    import mindspore as ms
    from mindspore import nn
    from src.optimizer import build_optimizer
    from src.tinybert_for_gd_td import BertTrainWithLossScaleCell, make_scale_update_cell
    from src.tinybert_model import BertConfig, BertModel
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    cfg = load_config([])
    model = BertModel(BertConfig.from_dict(preset))
    params = model.trainable_params()
    train_cell = BertTrainWithLossScaleCell(model, build_optimizer(params, cfg.teacher_finetune, 1000),
                                            make_scale_update_cell(cfg.loss_scale), cfg.teacher_finetune.clip_norm)

    class Update(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.train_cell = train_cell

        def construct(self, grads, scale):
            return self.train_cell.apply_gradients(grads, scale)

    update = Update()
    shapes = [p.shape for p in train_cell.weights]  # the optimizer's order: decayed group first
    grads = tuple(ms.Tensor(g * LOSS_SCALE) for g in gradients(shapes))
    scale = ms.Tensor(LOSS_SCALE, ms.float32)
    return shapes, lambda: update(grads, scale).asnumpy()


def torch_update(preset, shapes):
    """A call doing PyTorch's update once on parameters of `shapes` (transformers' BertModel's)."""
    import torch
    from transformers import BertConfig, BertModel
    model = BertModel(BertConfig(**preset), add_pooling_layer=True)
    params = [p for p in model.parameters() if p.requires_grad]
    assert sorted(tuple(p.shape) for p in params) == sorted(tuple(s) for s in shapes), "parameter shapes differ"
    names = dict(model.named_parameters())
    no_decay = [p for n, p in names.items() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in names.items() if not ("bias" in n or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=2e-5, eps=1e-6)
    for p, g in zip(params, gradients([tuple(p.shape) for p in params])):
        p.grad = torch.from_numpy(g)

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    return update


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="minilm", help="minilm or a model_presets name of default_config.yaml")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    presets = yaml.safe_load((ROOT / "default_config.yaml").read_text())["model_presets"]
    preset = MINILM if args.model == "minilm" else presets[args.model]
    shapes, ours = mindspore_update(preset)
    theirs = torch_update(preset, shapes)
    first = {}
    for name, run in (("ours", ours), ("torch", theirs)):
        start = time.perf_counter()
        run()
        first[name] = time.perf_counter() - start
    times = time_in_turns({"ours": ours, "torch": theirs}, args.repeats, warmup=1)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"{args.model}: {sum(int(np.prod(s)) for s in shapes):,} parameters in {len(shapes)} tensors")
    for name in ("ours", "torch"):
        print(f"  {name:5s} first call {1000 * first[name]:8.0f} ms   median {1000 * median[name]:7.1f} ms")
    print(f"  ours/torch {median['ours'] / median['torch']:.2f}x")


if __name__ == "__main__":
    main()
