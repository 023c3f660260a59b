"""Package a task checkpoint for ONNX Runtime: float and int8 models, tokenizer, labels, a description.

  python -m src.deploy --checkpoint OUTPUT_DIR/td2/student_best.ckpt --vocab_file VOCAB \
      --dev_path DEV.mindrecord --output_dir deploy/ [--max_int8_drop 1.0] [--data_format tfrecord]

The folder is what a user ships; `predict.py --model deploy/` (or one of its model files) runs it:
  model.onnx             float32, dynamic batch and sequence (export_model's reload check passed)
  model.int8.onnx        dynamic int8 quantization (onnxruntime.quantization.quantize_dynamic): int8
                         weights, activations quantized per batch at run time
  model.mindir           the same network for MindSpore (dynamic batch, fixed sequence length)
  vocab.txt              the WordPiece vocabulary the model was trained with
  tokenizer_config.json  do_lower_case (checked against the vocabulary) and model_max_length
  model.json             inputs and outputs (names, types, shapes, meaning), label names, task, the
                         sequence length, and the int8 check below

The int8 check runs both ONNX models over the dev records with ONNX Runtime (graph optimisations on)
and refuses to write the folder when int8 loses more than --max_int8_drop points of the task's
metric. The folder is built under a temporary name and renamed when complete.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from src.atomic_files import atomic_directory
from src.checkpoint import LABEL_NAMES, MODEL_CONFIG, SEQ_LENGTH, TASK, load_checkpoint, split_metadata
from src.logger import get_logger
from src.predict import (FLOAT_ONNX, INPUT_NAMES, MODEL_DESCRIPTION, QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION,
                         TOKEN_CLASSIFICATION, VOCAB_FILE, mindir_input_shape, onnx_session)
from src.tokenization import TOKENIZER_CONFIG, load_vocab, resolve_casing

INT8_ONNX = "model.int8.onnx"
MINDIR = "model.mindir"
DEPLOY_FILES = {FLOAT_ONNX, INT8_ONNX, MINDIR, VOCAB_FILE, TOKENIZER_CONFIG, MODEL_DESCRIPTION}
INPUT_MEANING = {
    "input_ids": "WordPiece ids from vocab.txt: [CLS] text_a [SEP] (text_b [SEP]), then [PAD]",
    "attention_mask": "1 for real tokens, 0 for padding",
    "token_type_ids": "0 for [CLS], text_a and its [SEP]; 1 for text_b and its [SEP]; 0 for padding",
}


def task_metric(task, num_labels):
    """The metric a task is scored by: the GLUE task's, else accuracy (pearson for regression)."""
    from src.glue_to_records import TASKS  # noqa: PLC0415 -- the converters own the task table
    if task in TASKS:
        return TASKS[task].metric
    return "pearson" if num_labels == 1 else "accuracy"


def dev_logits(model_paths, dev_path, data_format, seq_length, batch_size=32, task_type=SEQUENCE_CLASSIFICATION):
    """Logits of ONNX models over dev records, with the records' labels (and example ids).

    The records are read once, shortest first (padding cut to each batch's longest row; the metrics do
    not depend on the order), and every model runs the same batches through an ONNX Runtime session
    with graph optimisations on, a progress bar on stderr (minutes for a SQuAD dev set on a CPU).

    Returns:
        tuple ({path: logits}, labels, example_ids). Sentence classification: logits (N, C) and
        labels (N,) float32 / int arrays, example_ids []. Token classification and QA: lists of
        per-batch arrays (batches of different lengths), as `tasks.evaluate` takes them: logits
        (B, T, C) or (B, 2, T), labels (B, T) or (B, 2) start/end, example ids (B,).
    """
    from src.dataset import create_dataset  # noqa: PLC0415 -- loads MindSpore's data pipeline
    from src.tasks import TASK_TYPES  # noqa: PLC0415
    label_columns = TASK_TYPES[task_type].label_columns
    with_ids = task_type != SEQUENCE_CLASSIFICATION
    data = create_dataset(str(dev_path), data_format, batch_size, seq_length, with_labels=True, shuffle=False,
                          drop_remainder=False, padding="longest", with_example_ids=with_ids,
                          label_columns=label_columns, by_length=True)
    batches, labels, example_ids = [], [], []
    for batch in data.create_tuple_iterator(num_epochs=1):
        batches.append({name: x.asnumpy() for name, x in zip(INPUT_NAMES, batch[:3])})
        columns = [c.asnumpy() for c in batch[3:3 + len(label_columns)]]
        labels.append(columns[0] if len(columns) == 1 else np.stack(columns, axis=1))
        if with_ids:
            example_ids.append(batch[-1].asnumpy())
    logits = {}
    for path in model_paths:
        session = onnx_session(path)
        logits[path] = [session.run(["logits"], batch)[0] for batch in
                        tqdm(batches, desc=f"dev set through {Path(path).name}", unit=" batches", file=sys.stderr,
                             mininterval=1.0)]
    if with_ids:
        return logits, labels, example_ids
    return {path: np.concatenate(values) for path, values in logits.items()}, np.concatenate(labels), []


def int8_check(float_logits, int8_logits, labels, metric, max_drop, score=None, examples=None):
    """Compare the int8 model's dev metric with the float model's.

    Args:
        float_logits, int8_logits: the two models' logits: (N, num_labels) arrays, or for NER and
            QA lists of per-batch arrays (see `dev_logits`).
        labels (np.ndarray): (N,) gold class ids or scores (sentence classification).
        metric (str): the metric's name (a key of assessment_method.METRICS without `score`).
        max_drop (float): the most points (metric x 100) int8 may lose.
        score (callable, default None): logits -> the metric's value, for metrics that need more
            than `labels` (NER and QA: `tasks.evaluate` with the records' mapping); None computes
            `assessment_method.compute_metric(metric, logits, labels)`.
        examples (int, default None): the examples the records are windows of (NER sentences, QA
            questions: `tasks.example_count`); None: one a record.
    Returns:
        dict: metric, examples (sentences, questions), windows (records scored: more than the examples
        when long ones span several), float32 and int8 values, drop_points, agreement (share of windows
        whose predicted classes, or answer start and end, are all the same; for regression, the
        largest score difference), max_drop_points.
    Raises:
        ValueError: int8 loses more than `max_drop` points.
    """
    from src.assessment_method import compute_metric  # noqa: PLC0415
    score = score or (lambda logits: compute_metric(metric, logits, labels))
    float_value, int8_value = float(score(float_logits)), float(score(int8_logits))
    float_batches, int8_batches = ((x if isinstance(x, list) else [x]) for x in (float_logits, int8_logits))
    windows = sum(len(batch) for batch in float_batches)
    examples = windows if examples is None else examples
    result = {"metric": metric, "examples": examples, "windows": windows,
              "float32": float_value, "int8": int8_value,
              "drop_points": round(100.0 * (float_value - int8_value), 4), "max_drop_points": max_drop}
    if float_batches[0].shape[-1] == 1:
        result["max_score_difference"] = float(max(np.abs(a - b).max() for a, b in zip(float_batches, int8_batches)))
    else:
        same = [np.all(a.argmax(-1) == b.argmax(-1), axis=tuple(range(1, a.ndim - 1)))
                for a, b in zip(float_batches, int8_batches)]
        result["agreement"] = float(np.concatenate(same).mean())
    if result["drop_points"] > max_drop:
        raise ValueError(f"the int8 model loses {result['drop_points']:.2f} points of dev {metric} ({float_value:.4f} "
                         f"-> {int8_value:.4f} on {examples} examples), more than --max_int8_drop {max_drop}: "
                         "ship the float model (--no_int8) or allow a larger drop")
    return result


def quantize(float_path, int8_path):
    """Dynamic int8 quantization of `float_path` (weights of MatMul/Gemm/Gather to int8, activations
    quantized per batch at run time), after ONNX Runtime's recommended pre-processing (shape
    inference and graph optimisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415
    prepared = Path(int8_path).with_name(".prepared.onnx")
    quant_pre_process(str(float_path), str(prepared))
    # reduce_range: 7-bit weights, ONNX Runtime's advice for x86 CPUs without VNNI, whose u8s8 kernels
    # saturate (an AMD EPYC without AVX-512 lost 87 points of a test model's accuracy at 8 bits).
    quantize_dynamic(str(prepared), str(int8_path), weight_type=QuantType.QInt8, reduce_range=True)
    prepared.unlink()


OUTPUTS = {  # the logits output of each task shape: its shape and meaning
    SEQUENCE_CLASSIFICATION: (["batch", "labels"], "one logit per label, in the order of `labels`; softmax gives "
                                                   "probabilities"),
    TOKEN_CLASSIFICATION: (["batch", "sequence", "labels"], "one logit per label at every token, in the order of "
                                                            "`labels`; a word's tag is read at its first piece"),
    QUESTION_ANSWERING: (["batch", 2, "sequence"], "row 0: the logit of each token starting the answer, row 1: of it "
                                                   "ending it (the question is text_a, the context text_b)"),
}


def description(metadata, seq_length, num_labels, files, mindir_shape, check, task_type=SEQUENCE_CLASSIFICATION):
    """The model.json dict: inputs, outputs, labels, task, files, the int8 check."""
    labels = json.loads(metadata.get(LABEL_NAMES, "[]"))
    shape, output = OUTPUTS[task_type]
    shape = [num_labels if dim == "labels" else dim for dim in shape]
    problem = task_type
    if task_type == SEQUENCE_CLASSIFICATION:
        problem = "regression" if num_labels == 1 else "single_label_classification"
        output = "one score (regression)" if num_labels == 1 else output
    return {
        "task": metadata.get(TASK, ""),
        "problem": problem,
        "labels": labels,
        "max_seq_length": seq_length,
        "inputs": [{"name": name, "dtype": "int32", "shape": ["batch", "sequence"], "meaning": INPUT_MEANING[name]}
                   for name in INPUT_NAMES],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": shape, "meaning": output}],
        "files": files,
        "mindir_input_shape": list(mindir_shape) if mindir_shape else None,
        "model_config": json.loads(metadata[MODEL_CONFIG]),
        "int8_check": check,
    }


def deploy(checkpoint, vocab_file, output_dir, dev_path=None, data_format="mindrecord", max_int8_drop=1.0,
           int8=True, mindir=True, batch_size=32):
    """Write the deploy folder (see the module docstring) and return its model.json as a dict.

    Args:
        checkpoint (str or Path): a task checkpoint that records its model (model_config, labels).
        vocab_file (str or Path): the vocabulary it was trained with; the tokenizer_config.json
            beside it (if any) gives the casing.
        output_dir (str or Path): created, or replaced if it holds only deploy files.
        dev_path (str or Path, default None): dev records for the int8 check; required with int8.
        data_format (str, default 'mindrecord'): 'mindrecord' or 'tfrecord'.
        max_int8_drop (float, default 1.0): points of the dev metric int8 may lose.
        int8 (bool, default True): write model.int8.onnx.
        mindir (bool, default True): write model.mindir.
        batch_size (int, default 32): dev batch size.
    Raises:
        FileNotFoundError: checkpoint, vocabulary or dev records missing.
        ValueError: a checkpoint without a classifier or model config, a vocabulary larger than the
            model's, an int8 model that loses more than `max_int8_drop` points, an output_dir that holds
            files other than a deploy folder's.
    """
    from src.config import load_config  # noqa: PLC0415
    from src.dataset import stored_seq_length  # noqa: PLC0415 -- loads MindSpore's data pipeline
    from src.export_model import export_student, head_task_type, head_weight  # noqa: PLC0415
    from src.tasks import TASK_TYPES, evaluate, example_count  # noqa: PLC0415
    logger = get_logger()
    tensors, metadata = split_metadata(load_checkpoint(checkpoint))
    if MODEL_CONFIG not in metadata:
        raise ValueError(f"{checkpoint} does not record its model config: deploy needs a checkpoint written by this "
                         "project's training (OUTPUT_DIR/td2/student_best.ckpt)")
    head = head_weight(tensors)
    if head is None:
        raise ValueError(f"{checkpoint} has no task head: deploy a task checkpoint (OUTPUT_DIR/td2/student_best.ckpt)")
    if int8 and not dev_path:
        raise ValueError("--dev_path is needed to check the int8 model's accuracy (or pass --no_int8)")
    if dev_path and not Path(dev_path).exists():
        raise FileNotFoundError(f"dev records {dev_path} do not exist: give the converted dev set (data.eval_path)")
    vocab = load_vocab(vocab_file)
    model_vocab = json.loads(metadata[MODEL_CONFIG])["vocab_size"]
    if len(vocab) > model_vocab:
        raise ValueError(f"{vocab_file} has {len(vocab)} tokens but the model only {model_vocab} embeddings: pass the "
                         "vocabulary the model was trained with")
    do_lower_case, casing_source = resolve_casing(vocab_file, vocab)
    num_labels = int(head.shape[0])
    task_type = head_task_type(tensors, metadata)
    seq_length = int(metadata.get(SEQ_LENGTH) or 128)
    if int8:  # the ONNX files take any length: the dev records are read at the length they store
        dev_seq_length = stored_seq_length(dev_path, data_format)
        positions = json.loads(metadata[MODEL_CONFIG])["max_position_embeddings"]
        if dev_seq_length > positions:
            raise ValueError(f"dev records {dev_path} store sequences of length {dev_seq_length} but the model has "
                             f"{positions} positions: convert the dev set again with --seq_length {seq_length}")
    with atomic_directory(output_dir, DEPLOY_FILES, "a deploy folder") as tmp:
        formats = [("ONNX", FLOAT_ONNX)] + ([("MINDIR", MINDIR)] if mindir else [])
        for file_format, name in formats:
            export_student(load_config([f"--export.checkpoint={checkpoint}", f"--export.file_format={file_format}",
                                        f"--export.file_name={tmp / Path(name).stem}"]))
        files = {"onnx": FLOAT_ONNX, "vocab": VOCAB_FILE, "tokenizer_config": TOKENIZER_CONFIG}
        check = None
        if int8:
            quantize(tmp / FLOAT_ONNX, tmp / INT8_ONNX)
            files["onnx_int8"] = INT8_ONNX
            logits, labels, example_ids = dev_logits([tmp / FLOAT_ONNX, tmp / INT8_ONNX], dev_path, data_format,
                                                     dev_seq_length, batch_size, task_type)
            metric, score, examples = task_metric(metadata.get(TASK, ""), num_labels), None, None
            if task_type != SEQUENCE_CLASSIFICATION:  # entity F1, SQuAD F1: scored through the records' mapping
                metric = TASK_TYPES[task_type].metrics[0]
                score = lambda x: evaluate(task_type, metric, x, labels, example_ids, dev_path)[metric]  # noqa: E731
                examples = example_count(task_type, labels, dev_path)  # the records are windows of these
            check = int8_check(logits[tmp / FLOAT_ONNX], logits[tmp / INT8_ONNX], labels, metric, max_int8_drop, score,
                               examples)
            check["dev_path"] = str(dev_path)
            logger.info("int8 check on %d dev examples: %s %.4f (float32) vs %.4f (int8), %.2f points lost",
                        check["examples"], check["metric"], check["float32"], check["int8"], check["drop_points"])
        if mindir:
            files["mindir"] = MINDIR
        shutil.copyfile(vocab_file, tmp / VOCAB_FILE)
        tokenizer = {"tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case, "model_max_length": seq_length}
        (tmp / TOKENIZER_CONFIG).write_text(json.dumps(tokenizer, indent=2) + "\n", encoding="utf-8")
        described = description(metadata, seq_length, num_labels, files,
                                mindir_input_shape(tmp / MINDIR) if mindir else None, check, task_type)
        (tmp / MODEL_DESCRIPTION).write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")
    logger.info("deploy folder %s: %s (do_lower_case %s, %s)", output_dir, ", ".join(sorted(DEPLOY_FILES & {
        p.name for p in Path(output_dir).iterdir()})), do_lower_case, casing_source)
    return described


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", required=True, help="a task checkpoint (OUTPUT_DIR/td2/student_best.ckpt)")
    parser.add_argument("--vocab_file", required=True, help="the vocab.txt the model was trained with")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dev_path", default=None, help="dev records (data.eval_path) for the int8 accuracy check")
    parser.add_argument("--data_format", choices=("mindrecord", "tfrecord"), default="mindrecord")
    parser.add_argument("--max_int8_drop", type=float, default=1.0,
                        help="points of the dev metric the int8 model may lose (default 1.0)")
    parser.add_argument("--no_int8", action="store_true", help="write no int8 model (and need no dev set)")
    parser.add_argument("--no_mindir", action="store_true", help="write no MINDIR file")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    described = deploy(args.checkpoint, args.vocab_file, args.output_dir, args.dev_path, args.data_format,
                       args.max_int8_drop, not args.no_int8, not args.no_mindir, args.batch_size)
    check = described["int8_check"]
    summary = "" if check is None else (f"; int8 {check['metric']} {check['int8']:.4f} vs float32 {check['float32']:.4f} "
                                        f"on {check['examples']} dev examples")
    print(f"wrote {args.output_dir}{summary}")


if __name__ == "__main__":
    from src.cli import run_cli  # noqa: PLC0415
    run_cli(main)
