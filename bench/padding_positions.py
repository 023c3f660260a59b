"""Positions an epoch computes (rows x padded width, summed over its batches) under each padding
setting, read through `create_dataset` itself: a machine-independent measure of what padding costs.

python bench/padding_positions.py --records TRAIN.mindrecord [--batch_size 32] [--order shuffled|file|length]
    [--buckets 4 5 "[32,48]"] [--seed 1]

Settings: max_length; buckets as the quarters of seq_length (the default before 2026-12-05); each
--buckets value (a number: that many lengths fitted to the records by `fit_buckets`; a list: those
lengths); longest (what PyTorch's dynamic padding computes). --order shuffled reads one shuffled
epoch as training does (last partial batch dropped), file the file order, length shortest first as
evaluation and the teacher-logits cache do (`create_dataset(..., by_length=True)`).
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from src.dataset import create_dataset, stored_seq_length  # noqa: E402


def positions(records, batch_size, seq_length, order, seed, padding, buckets):
    """(positions computed by one epoch, sorted distinct batch widths)."""
    shuffled = order == "shuffled"
    data = create_dataset(records, "mindrecord", batch_size, seq_length, with_labels=False, shuffle=shuffled,
                          drop_remainder=shuffled, seed=seed, padding=padding, buckets=buckets,
                          by_length=order == "length")
    shapes = [batch[0].shape for batch in data.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    return sum(rows * width for rows, width in shapes), sorted({width for _, width in shapes})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", required=True, help="a MindRecord file (glue_to_records' output)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--order", choices=("shuffled", "file", "length"), default="shuffled")
    parser.add_argument("--buckets", nargs="+", default=["4", "5"],
                        help="data.buckets values: a number of lengths to fit, or a list like [32,48]")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    seq_length = stored_seq_length(args.records, "mindrecord")
    quarters = [math.ceil(seq_length * quarter / 4) for quarter in (1, 2, 3)]  # the old default, rounded up
    settings = [("max_length", "max_length", 4), (f"buckets {quarters} (quarters)", "buckets", quarters)]
    settings += [(f"buckets {value}", "buckets", json.loads(value)) for value in args.buckets]
    settings.append(("longest", "longest", 4))
    print(f"{args.records}: seq_length {seq_length}, batch {args.batch_size}, {args.order} order")
    print("| padding | positions | vs longest | batch widths |\n|---|---|---|---|")
    results = [(name, *positions(args.records, args.batch_size, seq_length, args.order, args.seed, padding, buckets))
               for name, padding, buckets in settings]
    longest = results[-1][1]
    for name, count, widths in results:
        shown = widths if len(widths) <= 6 else f"{len(widths)} widths, {widths[0]}-{widths[-1]}"
        print(f"| {name} | {count:,} | {count / longest:.3f} | {shown} |")


if __name__ == "__main__":
    main()
