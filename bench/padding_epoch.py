"""One evaluation epoch over a dev set with full padding, length buckets and per-batch longest padding,
against the same forward pass in PyTorch + transformers with Hugging Face's dynamic padding.

python bench/padding_epoch.py --model_dir TEACHER_DIR --hf_dir HF_DIR --records 64=DEV64.mindrecord \
    [128=DEV128.mindrecord ...] [--batch_size 32] [--warm_epochs 2]

TEACHER_DIR is what `python -m src.hf_convert import --hf_dir HF_DIR` wrote; HF_DIR the same model in
Hugging Face's layout. A classification head (2 labels, seeded) is put on both, the same weights on
both sides. Each variant gets a fresh network, so its first ("cold") epoch includes compiling a graph
for every batch shape it meets; then `--warm_epochs` rounds run every variant in turn, so all see the
same machine load. An epoch is timed as evaluation runs it: reading the records through
`create_dataset`, the forward pass, the logits back as numpy. Variants:
  max_length   every batch padded to seq_length (what the records store)
  buckets      padded to the next of data.buckets' default: 4 lengths fitted to the batches' longest rows
  longest      padded to the batch's longest example: one graph per distinct batch shape
  longest+dyn  the same batches through one graph compiled for any (B, T) (`Cell.set_inputs` with None dims)
  torch        transformers' BertForSequenceClassification, batches padded by DataCollatorWithPadding
               from the same token ids, under torch.inference_mode
Prints, per sequence length: distinct batch shapes, positions computed (B x T summed, padding included),
cold and median warm seconds per epoch, the warm ratio to torch, and the largest logit difference to
max_length (a check that every variant computes the same thing).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.checkpoint import assign_parameters, load_checkpoint, named_parameters, split_metadata  # noqa: E402
from src.dataset import create_dataset  # noqa: E402
from src.tinybert_model import BertConfig, BertForSequenceClassification, LogitsOnly  # noqa: E402

HEAD = "dense_1."
NUM_LABELS = 2
VARIANTS = {"max_length": "max_length", "buckets": "buckets", "longest": "longest", "longest+dyn": "longest"}


def ms_network(model_dir, dynamic):
    """LogitsOnly over a BertForSequenceClassification with the imported encoder and a seeded head."""
    ms.set_seed(0)
    config = BertConfig.from_json_file(model_dir / "config.json").for_inference()
    model = BertForSequenceClassification(config.for_dynamic_shapes() if dynamic else config, NUM_LABELS)
    tensors, _ = split_metadata(load_checkpoint(model_dir / "model.ckpt"))
    assign_parameters(named_parameters(model), tensors, f"checkpoint {model_dir}", allow_missing=(HEAD,))
    network = LogitsOnly(model)
    network.set_train(False)
    if dynamic:
        any_shape = ms.Tensor(shape=[None, None], dtype=ms.int32)
        network.set_inputs(any_shape, any_shape, any_shape)
    return network, model


def ms_epoch(network, data):
    """Seconds for one evaluation epoch (as src.callbacks' evaluation runs it), its logits and batch shapes."""
    start = time.perf_counter()
    logits, shapes = [], []
    for input_ids, attention_mask, token_type_ids, _ in data.create_tuple_iterator(num_epochs=1):
        shapes.append(tuple(input_ids.shape))
        logits.append(network(input_ids, attention_mask, token_type_ids).asnumpy())
    return time.perf_counter() - start, np.concatenate(logits), shapes


def torch_setup(hf_dir, head, records, seq_length):
    """transformers' classifier with our head's weights, its collator, and the dev set as unpadded rows."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification as HFClassifier, DataCollatorWithPadding
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # the expected "classifier newly initialized" report
    model = HFClassifier.from_pretrained(hf_dir, num_labels=NUM_LABELS).eval()
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(head[HEAD + "weight"].asnumpy()))
        model.classifier.bias.copy_(torch.from_numpy(head[HEAD + "bias"].asnumpy()))
    collator = DataCollatorWithPadding(AutoTokenizer.from_pretrained(hf_dir), padding="longest", return_tensors="pt")
    data = create_dataset(str(records), "mindrecord", 256, seq_length, with_labels=False, shuffle=False,
                          drop_remainder=False)
    rows = []
    for batch in data.create_dict_iterator(num_epochs=1, output_numpy=True):
        for ids, mask, types in zip(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]):
            real = int(mask.sum())
            rows.append({"input_ids": ids[:real].tolist(), "token_type_ids": types[:real].tolist()})
    return model, collator, rows


def torch_epoch(model, collator, rows, batch_size):
    """Seconds for one epoch the Hugging Face way (pad each batch to its longest row, forward, to numpy),
    its logits and batch shapes."""
    import torch
    start = time.perf_counter()
    logits, shapes = [], []
    with torch.inference_mode():
        for first in range(0, len(rows), batch_size):
            batch = collator(rows[first:first + batch_size])
            shapes.append(tuple(batch["input_ids"].shape))
            logits.append(model(**batch).logits.numpy())
    return time.perf_counter() - start, np.concatenate(logits), shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, type=Path, help="output of src.hf_convert import")
    parser.add_argument("--hf_dir", required=True, help="the same model in Hugging Face's layout")
    parser.add_argument("--records", required=True, nargs="+", help="SEQ_LENGTH=PATH of dev-set MindRecord files")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--warm_epochs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="the MindSpore variants to run (torch always runs: it is the reference)")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    print(f"processor: {cpu}; {os.cpu_count()} CPUs; torch {torch.__version__} threads {torch.get_num_threads()}; "
          f"mindspore {ms.__version__}; load average at start {os.getloadavg()[0]:.2f}")
    for spec in args.records:
        seq_length, records = int(spec.split("=", 1)[0]), spec.split("=", 1)[1]
        variants = {}
        for name in ["max_length"] + [v for v in args.variants if v != "max_length"]:  # the logits' reference first
            network, classifier = ms_network(args.model_dir, dynamic=name == "longest+dyn")
            variants[name] = network, create_dataset(records, "mindrecord", args.batch_size, seq_length,
                                                     with_labels=True, shuffle=False, drop_remainder=False,
                                                     padding=VARIANTS[name])
        model, collator, rows = torch_setup(args.hf_dir, named_parameters(classifier), records, seq_length)

        def run(name):
            return torch_epoch(model, collator, rows, args.batch_size) if name == "torch" else ms_epoch(*variants[name])

        names = list(variants) + ["torch"]
        cold, warm, logits, shapes = {}, {name: [] for name in names}, {}, {}
        for name in names:
            cold[name], logits[name], shapes[name] = run(name)
        for round_ in range(args.warm_epochs):
            for name in names if round_ % 2 == 0 else names[::-1]:
                warm[name].append(run(name)[0])
        reference = statistics.median(warm["torch"])
        print(f"\nseq_length {seq_length}: {len(rows)} examples, batch {args.batch_size}, "
              f"mean real length {np.mean([len(r['input_ids']) for r in rows]):.1f} tokens; "
              f"load average now {os.getloadavg()[0]:.2f}")
        print(f"{'variant':12} {'shapes':>6} {'tokens':>7} {'cold s':>7} {'warm s':>7} {'warm/torch':>10} "
              f"{'max |dlogit|':>12}")
        for name in names:
            middle = statistics.median(warm[name])
            difference = np.abs(logits[name] - logits["max_length"]).max()
            tokens = sum(batch * length for batch, length in shapes[name])  # positions computed, padding included
            print(f"{name:12} {len(set(shapes[name])):>6} {tokens:>7} {cold[name]:7.2f} {middle:7.2f} "
                  f"{middle / reference:10.2f} {difference:12.2e}   (warm: {', '.join(f'{v:.2f}' for v in warm[name])})")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
