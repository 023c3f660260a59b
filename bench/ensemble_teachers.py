"""Dev accuracy of each fine-tuned teacher and of their ensemble (weighted mean of the logits, as
`teacher.ensemble` combines them for the student), on raw text through `src.predict.Predictor`.

    python bench/ensemble_teachers.py --dev_file SST-2/dev.tsv --vocab_file vocab.txt \
        --teachers A.ckpt B.ckpt C.ckpt [--weights 1 1 1] [--output summary.json]

Prints one line per teacher and one for the ensemble; --output writes them as JSON, with the
teacher of the best accuracy (`best`), through a temporary name.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.glue_to_records import BadRow, read_rows  # noqa: E402  (after the path set-up)
from src.predict import Predictor  # noqa: E402


def read_glue_sentences(path):
    """(sentences, labels) of a GLUE SST-2 style file with `sentence` and `label` columns, read by the
    converters' reader (`glue_to_records.read_rows`: errors name the file and line)."""
    sentences, labels = [], []
    for line_no, row in read_rows(path, ["sentence", "label"]):
        if isinstance(row, BadRow):
            raise ValueError(f"{path}:{line_no}: {row}")
        sentences.append(row["sentence"])
        labels.append(int(row["label"]))
    return sentences, np.array(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev_file", required=True)
    parser.add_argument("--vocab_file", required=True)
    parser.add_argument("--teachers", nargs="+", required=True)
    parser.add_argument("--weights", nargs="+", type=float)
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--output")
    args = parser.parse_args()
    weights = np.array(args.weights or [1.0] * len(args.teachers))
    if len(weights) != len(args.teachers):
        parser.error(f"--weights gives {len(weights)} weights for {len(args.teachers)} teachers")
    sentences, labels = read_glue_sentences(args.dev_file)
    logits = []
    result = {"examples": len(labels), "teachers": []}
    for path in args.teachers:
        predictor = Predictor(path, vocab_file=args.vocab_file, seq_length=args.seq_length)
        logits.append(predictor.logits(sentences, batch_size=64))
        accuracy = float((logits[-1].argmax(axis=1) == labels).mean())
        result["teachers"].append({"checkpoint": path, "accuracy": accuracy})
        print(f"{path}: dev accuracy {accuracy:.4f}")
    mean = np.tensordot(weights / weights.sum(), np.stack(logits), axes=1)
    result["ensemble_accuracy"] = float((mean.argmax(axis=1) == labels).mean())
    result["best"] = max(result["teachers"], key=lambda t: t["accuracy"])["checkpoint"]
    print(f"ensemble (weighted mean of the logits, weights {weights.tolist()}): dev accuracy "
          f"{result['ensemble_accuracy']:.4f}")
    if args.output:
        tmp = f"{args.output}.tmp"
        Path(tmp).write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
