"""The table of bench/epoch_vs_torch.sh: one epoch of teacher fine-tuning and of td2, ours against PyTorch.

    python bench/epoch_summary.py OUT_DIR
Reads OUT_DIR/times.tsv (each stage's whole-command seconds: start-up, compilation and the dev evaluation
included), OUT_DIR/ours/metrics.jsonl (our per-step times, logged every step) and the PyTorch scripts'
printouts OUT_DIR/torch_teacher.txt and OUT_DIR/torch_td2.txt ("N steps in X s, dev acc = A, f1 = F").
Prints Markdown.
"""
import json
import re
import statistics
import sys
from pathlib import Path

TORCH_EPOCH = re.compile(r"epoch 1: (\d+) steps in ([\d.]+) s, dev acc = ([\d.]+), f1 = ([\d.]+)")
TORCH_CACHE = re.compile(r"cached in ([\d.]+) s")


def stage_seconds(out):
    """{stage name: seconds} from times.tsv; a stage run twice keeps its last time."""
    rows = [line.split("\t") for line in (out / "times.tsv").read_text().splitlines() if not line.startswith("#")]
    return {name: int(seconds) for name, seconds in rows}


def ours_epoch(out, phase):
    """Our training loop of `phase`: steps, first step's seconds, median later step's, loop seconds, dev metrics."""
    records = [json.loads(line) for line in (out / "ours" / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r["phase"] == phase]
    last_start = max(i for i, r in enumerate(records) if r.get("step") == 1 and "ms_per_step" in r)
    steps = [r for r in records[last_start:] if "ms_per_step" in r]
    evals = [r["eval"] for r in records[last_start:] if "eval" in r]
    seconds = [r["ms_per_step"] / 1000 for r in steps]
    return {"steps": len(steps), "first": seconds[0], "median": statistics.median(seconds[1:]),
            "loop": sum(seconds), "accuracy": evals[-1]["accuracy"], "f1": evals[-1]["f1"]}


def torch_epoch(path):
    """The PyTorch script's epoch: steps, loop seconds, dev accuracy and F1 (and the cache's seconds, if any)."""
    text = path.read_text()
    steps, loop, accuracy, f1 = TORCH_EPOCH.search(text).groups()
    cache = TORCH_CACHE.search(text)
    return {"steps": int(steps), "loop": float(loop), "median": float(loop) / int(steps),
            "accuracy": float(accuracy), "f1": float(f1), "cache": float(cache.group(1)) if cache else None}


def main(out):
    out = Path(out)
    seconds = stage_seconds(out)
    print("| epoch (SST-2, seq 64, batch 32) | steps | ours: whole command | ours: training loop "
          "(first step) | ours s/step (median) | PyTorch: whole command | PyTorch: training loop | "
          "PyTorch s/step (mean) | loop ours/PyTorch | command ours/PyTorch | dev acc ours / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for phase, name, torch_file in (("teacher", "teacher fine-tuning", "torch_teacher.txt"),
                                    ("td2", "td2, teacher logits cached", "torch_td2.txt")):
        ours, theirs = ours_epoch(out, phase), torch_epoch(out / torch_file)
        ours_all, torch_all = seconds[f"ours {phase} epoch"], seconds[f"torch {phase} epoch"]
        print(f"| {name} | {ours['steps']} | {ours_all} s | {ours['loop']:.0f} s ({ours['first']:.1f} s) | "
              f"{ours['median']:.3f} | {torch_all} s | {theirs['loop']:.0f} s | {theirs['median']:.3f} | "
              f"{ours['loop'] / theirs['loop']:.2f}x | {ours_all / torch_all:.2f}x | "
              f"{ours['accuracy']:.4f} / {theirs['accuracy']:.4f} |")
        if theirs["cache"] is not None:
            notes.append(f"PyTorch's teacher-logits cache took {theirs['cache']:.1f} s of its {name} command; "
                         "ours builds its cache inside its command too.")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main(sys.argv[1])
