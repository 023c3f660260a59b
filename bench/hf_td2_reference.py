"""Task distillation's prediction phase (td2) with cached teacher logits, redone in PyTorch + transformers.

The reference for timing our `--phase=td2 --distill.teacher_cache=true` epoch (bench/epoch_vs_torch.sh):
a fine-tuned teacher in Hugging Face's layout (what `python -m src.hf_convert export` writes from ours)
labels the training rows once (the cache, timed on its own), then a student made of the teacher's
embeddings, pooler and chosen encoder layers (our `--student.init=teacher_layers`) learns from those
logits alone by soft cross-entropy at temperature 1 (td2's defaults: kd_weight 1, hard_label_weight 0),
each batch padded to its longest example (Hugging Face's dynamic padding). Optimiser, warm-up, decay and
clipping as hf_finetune_reference.py, with td2's weight decay.
    python bench/hf_td2_reference.py --teacher_dir HF_TEACHER --task sst2 --train TRAIN.tsv --dev DEV.tsv \
        --teacher_layers 2,4,6 --epochs 1 --batch_size 32 --learning_rate 1e-4 --seq_length 64
Prints the cache's and each epoch's seconds and the student's dev accuracy and F1.
"""
import argparse
import random
import time

import torch
from transformers import BertForSequenceClassification, BertTokenizerFast

from hf_finetune_reference import COLUMNS, adamw_update, encode, evaluate, read_rows


def student_from_teacher(teacher, layers):
    """A copy of `teacher` keeping only encoder layers `layers` (1-based), in that order; a new classifier."""
    config = teacher.config.__class__.from_dict({**teacher.config.to_dict(), "num_hidden_layers": len(layers)})
    student = BertForSequenceClassification(config)
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    for i, t in enumerate(layers):
        student.bert.encoder.layer[i].load_state_dict(teacher.bert.encoder.layer[t - 1].state_dict())
    return student


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher_dir", required=True, help="fine-tuned teacher: config.json, weights, vocab.txt")
    parser.add_argument("--task", choices=sorted(COLUMNS), required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--teacher_layers", default="2,4,6", help="teacher layer (1-based) of each student layer")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = BertTokenizerFast(f"{args.teacher_dir}/vocab.txt")
    teacher = BertForSequenceClassification.from_pretrained(args.teacher_dir).eval()
    student = student_from_teacher(teacher, [int(t) for t in args.teacher_layers.split(",")])
    train, dev = read_rows(args.train, args.task), read_rows(args.dev, args.task)

    start = time.time()
    with torch.inference_mode():  # the cache: one teacher pass over the training rows, batches as in training
        cached = torch.cat([teacher(**encode(tokenizer, train[i:i + args.batch_size], args.seq_length)).logits
                            for i in range(0, len(train), args.batch_size)])
    print(f"{args.task}: teacher logits of {len(train)} train rows cached in {time.time() - start:.1f} s", flush=True)

    steps_per_epoch = len(train) // args.batch_size  # the last partial batch is dropped, as ours does
    update = adamw_update(student, args, steps_per_epoch * args.epochs)
    order = list(range(len(train)))
    for epoch in range(1, args.epochs + 1):
        start = time.time()
        random.shuffle(order)
        for step in range(steps_per_epoch):
            ids = order[step * args.batch_size:(step + 1) * args.batch_size]
            logits = student(**encode(tokenizer, [train[i] for i in ids], args.seq_length)).logits
            soft_targets = torch.softmax(cached[ids], dim=-1)
            update(-(soft_targets * torch.log_softmax(logits, dim=-1)).sum(-1).mean())
        train_seconds = time.time() - start
        accuracy, f1 = evaluate(student, tokenizer, dev, args.seq_length)
        print(f"epoch {epoch}: {steps_per_epoch} steps in {train_seconds:.1f} s, dev acc = {accuracy:.6f}, "
              f"f1 = {f1:.6f} on {len(dev)} examples ({time.time() - start:.1f} s with the evaluation)", flush=True)


if __name__ == "__main__":
    main()
