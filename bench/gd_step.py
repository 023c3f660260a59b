"""Time one distillation step and its peak memory: BERT-base teacher -> TinyBERT-4 student.

python bench/gd_step.py [--framework mindspore|torch] [--phase gd|td2] [--teacher cached|live] [--batch 32]
    [--seq 128] [--steps 5] [--student tinybert_4_312] [--micro_batches 1] [--device cpu|gpu] [--dtype float32|float16]

--phase gd: general distillation, every student layer's attention scores and hidden states matched
to the teacher's (TinyBERT's uniform mapping). Task distillation's first phase (td1) has the same
loss and models on task data, so its step is this one at the task's sequence length (--seq 64).
--phase td2: the prediction layer, soft cross-entropy of a 2-class student against the teacher's
logits; --teacher cached takes them from a table by example id (the trainer's teacher-output cache,
no teacher pass), --teacher live runs the 2-class BERT-base teacher forward each step.
Random weights and random token ids: the step's cost does not depend on their values. Each
framework runs in its own process (run the script twice) so peak memory is that framework's alone.
The torch version is the same step written plainly with transformers' BertModel, as a reference.
--device gpu runs on the first GPU (bench/accelerator_check.sh); --dtype float16 is MindSpore's
compute_type float16 (matrix products in half precision, the rest float32, a dynamic loss scale) and
PyTorch's autocast to float16 with its GradScaler, the usual mixed-precision step of each. On a GPU the
step time includes waiting for the device, and the memory line is the device's peak allocation.
"""
import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def batch(size, seq, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (size, seq)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[size // 2:, seq * 3 // 4:] = 0  # some padding, as real batches have
    return ids, mask, np.zeros_like(ids)


def teacher_logits(args, num_labels=2, seed=1):
    """The cached teacher's table: (batch, num_labels) float32 logits, row i for example i."""
    return np.random.default_rng(seed).normal(0, 2, (args.batch, num_labels)).astype(np.float32)


def mindspore_step(args, presets):
    import types
    import mindspore as ms
    from mindspore import nn
    from src.distill.matches import resolve_matches
    from src.distill.teacher import CachedTeacher, LiveTeacher, freeze
    from src.tinybert_for_gd_td import (BertTrainWithLossScaleCell, DistillationLoss, TrainingStep,
                                        make_projections, make_scale_update_cell)
    from src.config import load_config
    from src.tasks import build_task_model
    from src.tinybert_model import BertConfig, BertModel
    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device.upper())
    t_config = BertConfig.from_dict(presets["bert_base"]).replace(compute_type=args.dtype).for_inference()
    s_config = BertConfig.from_dict(presets[args.student]).replace(compute_type=args.dtype)
    distill = load_config([]).distill  # the default: the tinybert preset, uniform mapping
    inputs = [ms.Tensor(x) for x in batch(args.batch, args.seq, t_config.vocab_size)]
    if args.phase == "gd":
        matches = resolve_matches(distill, s_config, t_config)
        loss = DistillationLoss(BertModel(s_config), ("matches",), distill, matches,
                                make_projections(matches, s_config, t_config))
        teacher = LiveTeacher(freeze(BertModel(t_config)), matches)
    else:  # td2: the trainer's columns after the three inputs are label_ids and example_id
        inputs += [ms.Tensor(np.zeros(args.batch, np.int32)), ms.Tensor(np.arange(args.batch, dtype=np.int32))]
        loss = DistillationLoss(build_task_model("sequence_classification", s_config, 2), ("prediction",), distill)
        teacher = CachedTeacher(teacher_logits(args)) if args.teacher == "cached" else \
            LiveTeacher(freeze(build_task_model("sequence_classification", t_config, 2)), with_logits=True)
    optimizer = nn.AdamWeightDecay(loss.trainable_params(), learning_rate=1e-4)
    scale = types.SimpleNamespace(enabled=True, init_value=2.0 ** 16, factor=2, window=1000)
    train_step = TrainingStep(BertTrainWithLossScaleCell(loss, optimizer, make_scale_update_cell(scale), 1.0),
                              args.micro_batches)
    train_step.set_train(True)
    schedule = ms.Tensor([1.0, 0.0, 1.0, 0.0], ms.float32)

    done = [0]

    def step():  # as src/trainer.py does it: the teacher's graph, then the training step's, per micro-batch
        done[0] += 1
        return train_step(done[0] - 1, teacher, schedule, inputs, inputs)[0]  # a float: waits for the device
    return step


def torch_step(args, presets):
    return (torch_gd_step if args.phase == "gd" else torch_td2_step)(args, presets)


class TorchPrecision:
    """Where the torch step runs and in what precision: the device, the inputs moved there, and
    `update(loss, params, optimizer)`: backward, clip to norm 1, step; under float16 through a
    GradScaler, as mixed-precision training in PyTorch is usually written."""

    def __init__(self, args):
        import torch
        if args.device == "gpu" and not torch.cuda.is_available():
            sys.exit("error: --device gpu: torch sees no CUDA GPU (torch.cuda.is_available() is False)")
        self.torch = torch
        self.device = "cuda" if args.device == "gpu" else "cpu"
        self.half = args.dtype == "float16"
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.half)

    def inputs(self, args):
        return [self.torch.from_numpy(x.astype(np.int64)).to(self.device)
                for x in batch(args.batch, args.seq, 30522)]

    def autocast(self):
        return self.torch.autocast(self.device, dtype=self.torch.float16, enabled=self.half)

    def update(self, loss, params, optimizer):
        optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        self.torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.scaler.step(optimizer)
        self.scaler.update()
        return float(loss.detach())  # waits for the device


def torch_td2_step(args, presets):
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    run = TorchPrecision(args)
    student = BertForSequenceClassification(BertConfig(**presets[args.student], num_labels=2)).to(run.device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    ids, mask, segments = run.inputs(args)
    if args.teacher == "cached":
        cached = torch.from_numpy(teacher_logits(args)).to(run.device)
        example_id = torch.arange(args.batch, device=run.device)
        def teacher():
            return cached[example_id]
    else:
        model = BertForSequenceClassification(BertConfig(**presets["bert_base"], num_labels=2)).to(run.device).eval()
        def teacher():
            with torch.no_grad(), run.autocast():
                return model(ids, mask, segments).logits.float()

    def step():  # soft cross-entropy at temperature 1, as td2's default
        target = torch.softmax(teacher(), dim=-1)
        with run.autocast():
            logits = student(ids, mask, segments).logits.float()
        loss = -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        return run.update(loss, list(student.parameters()), optimizer)
    return step


def torch_gd_step(args, presets):
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    run = TorchPrecision(args)
    teacher = BertModel(BertConfig(**presets["bert_base"], attn_implementation="eager")).to(run.device).eval()
    student = BertModel(BertConfig(**presets[args.student], attn_implementation="eager")).to(run.device).train()
    fit_dense = torch.nn.Linear(presets[args.student]["hidden_size"], 768).to(run.device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = list(student.parameters()) + list(fit_dense.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids, mask, segments = run.inputs(args)
    k = 12 // presets[args.student]["num_hidden_layers"]
    mse = torch.nn.functional.mse_loss
    # The scores before softmax are not returned by transformers; distil the probabilities instead,
    # which costs the same.
    def step():
        with torch.no_grad(), run.autocast():
            t = teacher(ids, mask, segments, output_hidden_states=True, output_attentions=True)
        with run.autocast():
            s = student(ids, mask, segments, output_hidden_states=True, output_attentions=True)
            loss = sum(mse(s.attentions[i].float(), t.attentions[(i + 1) * k - 1].float())
                       for i in range(len(s.attentions)))
            loss = loss + sum(mse(fit_dense(s.hidden_states[m]).float(), t.hidden_states[m * k].float())
                              for m in range(len(s.hidden_states)))
        return run.update(loss, params, optimizer)
    return step


def peak_memory(args):
    """'peak RSS X GB' on the CPU; on a GPU the framework's peak device allocation."""
    if args.device == "cpu":
        return f"peak RSS {peak_rss_gb():.2f} GB"
    if args.framework == "torch":
        import torch
        return f"peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB (torch.cuda.max_memory_allocated)"
    import mindspore as ms
    allocated = getattr(getattr(ms, "runtime", None), "max_memory_allocated", None)
    return (f"peak GPU memory {allocated() / 1e9:.2f} GB (mindspore.runtime.max_memory_allocated)" if allocated
            else "peak GPU memory: not reported by this MindSpore (see nvidia-smi in accelerator_check.sh)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("mindspore", "torch"), default="mindspore")
    parser.add_argument("--phase", choices=("gd", "td2"), default="gd")
    parser.add_argument("--teacher", choices=("cached", "live"), default="cached",
                        help="td2: the teacher's logits from a table (the trainer's cache) or a BERT-base pass")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--student", default="tinybert_4_312")
    parser.add_argument("--micro_batches", type=int, default=1,
                        help="mindspore: slices of the batch, gradients summed before one update")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="float16: MindSpore's compute_type float16, PyTorch's autocast with a GradScaler")
    args = parser.parse_args()
    import yaml
    presets = yaml.safe_load((ROOT / "default_config.yaml").read_text())["model_presets"]
    step = (mindspore_step if args.framework == "mindspore" else torch_step)(args, presets)
    start = time.time()
    first_loss = step()
    first = time.time() - start
    times, losses = [], []
    for _ in range(args.steps):
        start = time.time()
        losses.append(step())
        times.append(time.time() - start)
    slices = f" in {args.micro_batches} micro-batches" if args.micro_batches > 1 else ""
    phase = "gd" if args.phase == "gd" else f"td2 ({args.teacher} teacher logits)"
    print(f"{args.framework} {phase} on {args.device}, {args.dtype}: batch {args.batch}{slices}, seq {args.seq}, "
          f"BERT-base -> {args.student}: "
          f"first step {first:.1f} s, then median {1000 * np.median(times):.1f} ms/step (min {1000 * min(times):.1f}) "
          f"over {args.steps} steps, {peak_memory(args)}, loss {first_loss:.3f} -> {losses[-1]:.3f}")


if __name__ == "__main__":
    main()
