"""One graph for every sequence length (dynamic shape), or no graph (PyNative), against a graph per
length: peak memory and time per training step of a 3 x 384 classifier (batch 32) at lengths 48, 64,
80, 128, twice over.

    python bench/dynamic_shape_step.py static     # a graph per input shape, as training runs today
    python bench/dynamic_shape_step.py dynamic    # set_inputs with None for batch and length
    python bench/dynamic_shape_step.py pynative   # op by op, nothing compiled

Each line: the length, ms per step (mean of 3; the first round at a length includes compilation),
and the process's peak resident memory so far. Results: bench/MEMORY.md.
"""
import argparse
import resource
import time
from pathlib import Path
import sys

import numpy as np
import mindspore as ms
from mindspore import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from src.tinybert_model import BertConfig, BertForSequenceClassification  # noqa: E402


class ClassifierLoss(nn.Cell):
    """Cross-entropy of the classifier's logits: the smallest training step that runs the encoder."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.cross_entropy = nn.CrossEntropyLoss()

    def construct(self, input_ids, attention_mask, token_type_ids, labels):
        return self.cross_entropy(self.model(input_ids, attention_mask, token_type_ids)[0], labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", choices=("static", "dynamic", "pynative"))
    args = parser.parse_args()
    ms.set_context(mode=ms.PYNATIVE_MODE if args.shapes == "pynative" else ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(0)
    config = BertConfig(hidden_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=1536,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if args.shapes == "dynamic":
        config = config.for_dynamic_shapes()
    model = BertForSequenceClassification(config, 2)
    step = nn.TrainOneStepCell(ClassifierLoss(model), nn.Adam(model.trainable_params(), 1e-4))
    if args.shapes == "dynamic":
        ids = ms.Tensor(shape=[None, None], dtype=ms.int32)
        step.set_inputs(ids, ids, ids, ms.Tensor(shape=[None], dtype=ms.int32))
    rng = np.random.default_rng(0)
    for length in (48, 64, 80, 128) * 2:
        input_ids = ms.Tensor(rng.integers(0, config.vocab_size, (32, length)), ms.int32)
        ones, zeros = ms.Tensor(np.ones((32, length)), ms.int32), ms.Tensor(np.zeros((32, length)), ms.int32)
        labels = ms.Tensor(rng.integers(0, 2, 32), ms.int32)
        start = time.perf_counter()
        for _ in range(3):
            step(input_ids, ones, zeros, labels).asnumpy()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
        print(f"length {length}: {(time.perf_counter() - start) / 3 * 1000:.0f} ms/step, peak {peak:.2f} GB",
              flush=True)


if __name__ == "__main__":
    main()
