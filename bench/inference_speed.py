"""Inference speed of a student vs its teacher: forward passes over the whole dev set, same process.

python bench/inference_speed.py [--repeats=5] --config_path=TASK.yaml --teacher.model=CONFIG.json \
    --teacher.checkpoint=TEACHER.ckpt --student.checkpoint=STUDENT.ckpt --data.eval_path=DEV.mindrecord \
    [--eval.batch_size=32] [--key=value ...]

Both classifiers are built as evaluation builds them (LogitsOnly, GRAPH_MODE, no dropout). The dev
batches are read into memory first so only the forward passes are timed; one untimed pass per model
compiles the graphs (full and last partial batch). Then the models take turns, `repeats` passes each,
so both see the same machine load. Prints parameter counts, dev accuracy of both checkpoints (a check
that the right weights were loaded), the median time of a pass and the ratio teacher / student.
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.assessment_method import compute_metric  # noqa: E402
from src.checkpoint import assign_parameters, load_checkpoint, named_parameters, split_metadata  # noqa: E402
from src.config import bert_config, load_config  # noqa: E402
from src.dataset import create_dataset  # noqa: E402
from src.tinybert_model import BertForSequenceClassification, LogitsOnly, count_parameters  # noqa: E402

ENCODER = "bert.bert_encoder."


def load_classifier(cfg, role, checkpoint):
    model = BertForSequenceClassification(bert_config(cfg, role).for_inference(), cfg.task.num_labels)
    tensors, _ = split_metadata(load_checkpoint(checkpoint))
    assign_parameters(named_parameters(model), tensors, f"{role} checkpoint {checkpoint}")
    network = LogitsOnly(model)
    network.set_train(False)
    return model, network


def forward_pass(network, batches):
    """Seconds for one pass over every batch, and the logits."""
    start = time.perf_counter()
    logits = [network(*inputs).asnumpy() for inputs in batches]  # asnumpy waits for the result
    return time.perf_counter() - start, np.concatenate(logits)


def main(argv):
    repeats = 5
    for arg in [a for a in argv if a.startswith("--repeats=")]:
        repeats = int(arg.split("=", 1)[1])
        argv.remove(arg)
    cfg = load_config(argv)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=cfg.device_target)
    data = create_dataset(cfg.data.eval_path, cfg.data.format, cfg.eval.batch_size, cfg.seq_length,
                          with_labels=True, shuffle=False, drop_remainder=False, schema_file=cfg.data.schema_file)
    batches, labels = [], []
    for input_ids, input_mask, segment_ids, label_ids in data.create_tuple_iterator(num_epochs=1):
        batches.append((input_ids, input_mask, segment_ids))
        labels.append(label_ids.asnumpy())
    labels = np.concatenate(labels)
    models = {"teacher": load_classifier(cfg, "teacher", cfg.teacher.checkpoint),
              "student": load_classifier(cfg, "student", cfg.student.checkpoint)}
    times = {name: [] for name in models}
    print(f"dev set {cfg.data.eval_path}: {len(labels)} examples, batch {cfg.eval.batch_size}, "
          f"seq {cfg.seq_length}, {repeats} timed passes per model")
    for name, (model, network) in models.items():
        _, logits = forward_pass(network, batches)  # compiles; not timed
        print(f"{name}: {count_parameters(model, ENCODER):,} encoder parameters, {count_parameters(model):,} in all; "
              f"dev accuracy {compute_metric('accuracy', logits, labels):.4f}")
    for repeat in range(repeats):
        order = list(models) if repeat % 2 == 0 else list(models)[::-1]
        for name in order:
            times[name].append(forward_pass(models[name][1], batches)[0])
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.3f} s per pass over the dev set "
              f"(all: {', '.join(f'{v:.3f}' for v in values)})")
    ratio = statistics.median(times["teacher"]) / statistics.median(times["student"])
    print(f"speed-up student vs teacher: {ratio:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
