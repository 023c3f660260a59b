"""Label raw text with a trained classifier: a checkpoint, an exported MINDIR or an ONNX file.

  python predict.py --model MODEL [--vocab_file VOCAB] "a sentence" "another one" [--text_b "pair" ...]
  python predict.py --model MODEL --input dev.tsv|dev.csv|dev.jsonl|- [--text_a COL] [--text_b COL] \
      [--output out.jsonl|out.csv] [--batch_size 32]

MODEL is a task checkpoint (`OUTPUT_DIR/td2/student_best.ckpt`), a MINDIR or ONNX file from
export.py or `src.deploy`, or a deploy folder (its model.onnx). What each format knows about itself:

  what                 checkpoint           MINDIR / ONNX
  model shape          recorded in it       in the graph
  label names, task    recorded in it       model.json beside the file (src.deploy writes it), else --labels
  vocabulary, casing   --vocab_file, else vocab.txt beside the file; do_lower_case from the
                       tokenizer_config.json beside the vocabulary (hf_convert import and src.deploy write it)
  sequence length      recorded in it       MINDIR: fixed in the graph; ONNX: model.json, else --seq_length

Texts are tokenized with the model's WordPiece vocabulary, sorted by length and batched, and each
batch is padded only to its longest row where the format allows it (checkpoint and ONNX; a MINDIR
graph has a fixed sequence length). Output: one record per input, in input order, with the label,
its id and every label's probability (softmax of the logits), or the score of a regression model.
"""
import argparse
import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn

from src.checkpoint import HEAD_PREFIX, LABEL_NAMES, SEQ_LENGTH, TASK, load_checkpoint, load_model, split_metadata
from src.logger import get_logger
from src.tinybert_model import LogitsOnly
from src.tokenization import WordPieceTokenizer

MODEL_DESCRIPTION = "model.json"  # written by src.deploy beside the exported files
VOCAB_FILE = "vocab.txt"
FLOAT_ONNX = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_SEQ_LENGTH = 128


def read_description(folder):
    """The model.json in `folder` as a dict; {} when there is none."""
    path = Path(folder) / MODEL_DESCRIPTION
    if not path.is_file():
        return {}
    values = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(values, dict):
        raise ValueError(f"{path} should be a JSON object describing the model (as src.deploy writes it)")
    return values


def onnx_session(path, threads=0, spinning=True):
    """An ONNX Runtime CPU session with every graph optimisation on (constant folding, node fusions,
    layout changes: ORT_ENABLE_ALL); threads 0 lets ONNX Runtime choose. spinning False stops its
    worker threads from busy-waiting after each run, which would slow other engines timed in turn."""
    import onnxruntime  # noqa: PLC0415 -- only ONNX models need it
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class CheckpointModel:
    """A task checkpoint run by MindSpore in GRAPH mode with dynamic batch and sequence sizes (one
    compilation serves every batch shape)."""

    dynamic_length = True

    def __init__(self, path):
        tensors, metadata = split_metadata(load_checkpoint(path))
        # Checkpoints record their model class since task heads other than sentence classifiers exist.
        architecture = metadata.get("architecture") or ("BertForSequenceClassification"
                                                        if HEAD_PREFIX + "weight" in tensors else "BertModel")
        if architecture == "BertModel":
            raise ValueError(f"{path} has no classifier ({HEAD_PREFIX}weight): it is an encoder from general "
                             "distillation; give a task checkpoint such as OUTPUT_DIR/td2/student_best.ckpt")
        if architecture != "BertForSequenceClassification":
            raise ValueError(f"{path} is a {architecture}: predict labels sentences and pairs (sequence "
                             "classification and regression) only")
        ms.set_context(mode=ms.GRAPH_MODE)
        model, metadata = load_model(path)
        self.network = LogitsOnly(model)
        self.network.set_train(False)
        self.network.set_inputs(*[ms.Tensor(shape=[None, None], dtype=ms.int32) for _ in INPUT_NAMES])
        self.config = model.bert.config
        self.num_labels = model.num_labels
        self.label_names = json.loads(metadata.get(LABEL_NAMES, "[]"))
        self.task = metadata.get(TASK, "")
        self.seq_length = int(metadata.get(SEQ_LENGTH) or 0) or None

    def logits(self, input_ids, attention_mask, token_type_ids):
        """(B, num_labels) float32 logits of int32 arrays (B, T)."""
        return self.network(*[ms.Tensor(x) for x in (input_ids, attention_mask, token_type_ids)]).asnumpy()


def mindir_input_shape(path):
    """The (batch, sequence) shape of a MINDIR file's first input, -1 for a dynamic dimension.

    MindSpore's GraphCell does not expose its input shapes, so they are read from the file's
    protobuf (mind_ir_pb2, the schema MindSpore writes it with).
    """
    from mindspore.train import mind_ir_pb2  # noqa: PLC0415
    proto = mind_ir_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    if not proto.graph.input or not proto.graph.input[0].tensor:
        raise ValueError(f"{path} is not a MINDIR file with inputs: export it with export.py")
    return tuple(int(d) for d in proto.graph.input[0].tensor[0].dims)


class MindirModel:
    """An exported MINDIR file run by MindSpore: dynamic batch size, fixed sequence length."""

    dynamic_length = False

    def __init__(self, path):
        shape = mindir_input_shape(path)
        ms.set_context(mode=ms.GRAPH_MODE)
        self.network = nn.GraphCell(ms.load(str(path)))
        self.seq_length = shape[-1] if shape[-1] > 0 else None
        self.fixed_batch = shape[0] if shape[0] > 0 else None

    def logits(self, input_ids, attention_mask, token_type_ids):
        batch = input_ids.shape[0]
        if self.fixed_batch and batch != self.fixed_batch:  # a graph exported at a fixed batch size: pad rows
            rows = self.fixed_batch - batch
            input_ids, attention_mask, token_type_ids = (np.pad(x, ((0, rows), (0, 0))) for x in
                                                         (input_ids, attention_mask, token_type_ids))
        out = self.network(*[ms.Tensor(x) for x in (input_ids, attention_mask, token_type_ids)])
        return (out[0] if isinstance(out, (tuple, list)) else out).asnumpy()[:batch]


class OnnxModel:
    """An ONNX file run by ONNX Runtime with graph optimisations on; dynamic batch and sequence
    sizes when the graph has them (export.py and src.deploy write them so)."""

    def __init__(self, path):
        self.session = onnx_session(path)
        inputs = self.session.get_inputs()
        names = tuple(i.name for i in inputs)
        if names != INPUT_NAMES:
            raise ValueError(f"{path} takes inputs {', '.join(names)}, not {', '.join(INPUT_NAMES)}: export it "
                             "with export.py or src.deploy")
        if [o.name for o in self.session.get_outputs()] != ["logits"]:
            raise ValueError(f"{path} has no logits output (an encoder without a task head?): predict needs a "
                             "task model")
        batch, sequence = inputs[0].shape
        self.dynamic_length = not isinstance(sequence, int)
        self.seq_length = None if self.dynamic_length else sequence
        self.fixed_batch = batch if isinstance(batch, int) else None

    def logits(self, input_ids, attention_mask, token_type_ids):
        batch = input_ids.shape[0]
        arrays = (input_ids, attention_mask, token_type_ids)
        if self.fixed_batch and batch != self.fixed_batch:
            arrays = tuple(np.pad(x, ((0, self.fixed_batch - batch), (0, 0))) for x in arrays)
        feed = {name: x.astype(np.int32) for name, x in zip(INPUT_NAMES, arrays)}
        return self.session.run(["logits"], feed)[0][:batch]


def load_predictor(model_path):
    """(model runner, folder its side files live in) for a .ckpt, .mindir, .onnx or deploy folder."""
    path = Path(model_path)
    if path.is_dir():
        path = path / FLOAT_ONNX
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist: give a .ckpt, .mindir or .onnx file, or a deploy folder")
    suffix = path.suffix.lower()
    runners = {".ckpt": CheckpointModel, ".mindir": MindirModel, ".onnx": OnnxModel}
    if suffix not in runners:
        raise ValueError(f"model {path} is not a .ckpt, .mindir or .onnx file")
    return runners[suffix](path), path.parent


class Predictor:
    """Tokenizer + model + label names: texts in, logits and labelled records out.

    Args:
        model_path (str or Path): a .ckpt, .mindir or .onnx file, or a deploy folder.
        vocab_file (str or Path, default None): the model's vocab.txt; None takes vocab.txt beside the
            model. Casing comes from the tokenizer_config.json beside it (see WordPieceTokenizer).
        labels (list[str], default None): label names, for an exported file without a model.json.
        seq_length (int, default None): longest sequence; None takes the model's (see module doc).
        do_lower_case (bool, default None): overrides the tokenizer settings.
    Raises:
        FileNotFoundError: model or vocabulary missing.
        ValueError: a model without a classifier, a vocabulary larger than the model's, label names
            that do not match the outputs, a sequence length the model cannot take.
    """

    def __init__(self, model_path, vocab_file=None, labels=None, seq_length=None, do_lower_case=None):
        self.model, folder = load_predictor(model_path)
        description = read_description(folder) if not isinstance(self.model, CheckpointModel) else {}
        vocab_file = Path(vocab_file) if vocab_file else folder / VOCAB_FILE
        if not vocab_file.is_file():
            raise FileNotFoundError(f"no vocabulary for {model_path}: {vocab_file} does not exist; pass --vocab_file "
                                    "(the vocab.txt the model was trained with)")
        self.tokenizer = WordPieceTokenizer(vocab_file, do_lower_case)
        vocab_size = getattr(getattr(self.model, "config", None), "vocab_size", None)
        if vocab_size is not None and self.tokenizer.vocab_size > vocab_size:
            raise ValueError(f"{vocab_file} has {self.tokenizer.vocab_size} tokens but the model only {vocab_size} "
                             "embeddings: pass the vocabulary the model was trained with")
        self.task = getattr(self.model, "task", "") or description.get("task", "")
        self.label_names = list(labels or getattr(self.model, "label_names", None) or description.get("labels") or [])
        self.seq_length = self._sequence_length(seq_length, description.get("max_seq_length"))
        self.regression = None  # set by `logits` from the width of the logits (exported files do not say)

    def _sequence_length(self, requested, described):
        fixed = None if self.model.dynamic_length else self.model.seq_length
        if fixed and requested and requested != fixed:
            raise ValueError(f"--seq_length {requested}: the model file takes sequences of exactly {fixed} tokens")
        length = fixed or requested or self.model.seq_length or described or DEFAULT_SEQ_LENGTH
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if limit and length > limit:
            raise ValueError(f"--seq_length {length} exceeds the model's max_position_embeddings {limit}")
        return int(length)

    def logits(self, texts_a, texts_b=None, batch_size=32, progress=False):
        """float32 (N, num_labels) logits of N texts (or pairs), in input order.

        Rows are sorted by token count and batched, so each batch is padded only to its own longest
        row (for models of dynamic sequence length); the result is put back in input order.
        """
        from tqdm import tqdm  # noqa: PLC0415
        count = len(texts_a)
        ids_a = self.tokenizer.token_ids(texts_a)
        ids_b = None
        if texts_b is not None:
            ids_b = [None if text is None else ids for text, ids in
                     zip(texts_b, self.tokenizer.token_ids(["" if text is None else text for text in texts_b]))]
        lengths = [len(a) + len(b or ()) for a, b in zip(ids_a, ids_b or [None] * count)]
        order = np.argsort(lengths, kind="stable")
        results = [None] * count
        starts = range(0, count, batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, file=sys.stderr):
            rows = order[start:start + batch_size]
            arrays = self.tokenizer.build_inputs([ids_a[r] for r in rows],
                                                 None if ids_b is None else [ids_b[r] for r in rows], self.seq_length)
            if self.model.dynamic_length:
                width = int(arrays[1].sum(axis=1).max())
                arrays = tuple(np.ascontiguousarray(x[:, :width]) for x in arrays)
            batch_logits = np.asarray(self.model.logits(*arrays), dtype=np.float32)
            for row, values in zip(rows, batch_logits):
                results[row] = values
        logits = np.stack(results) if results else np.zeros((0, max(len(self.label_names), 1)), np.float32)
        self._check_labels(logits.shape[1])
        return logits

    def _check_labels(self, width):
        self.regression = width == 1
        if self.regression:
            return
        if not self.label_names:
            self.label_names = [f"LABEL_{i}" for i in range(width)]  # transformers' names for unnamed outputs
            get_logger().info("the model names no labels (no model.json beside it, no --labels): outputs are "
                              "called %s", ", ".join(self.label_names))
        if len(self.label_names) != width:
            raise ValueError(f"{len(self.label_names)} label names ({', '.join(self.label_names)}) for a model of "
                             f"{width} outputs: give one name per output")

    def records(self, texts_a, texts_b=None, batch_size=32, progress=False):
        """One dict per text: text_a (text_b), then label, label_id and probabilities {name: p}
        (softmax of the logits), or score for a regression model."""
        logits = self.logits(texts_a, texts_b, batch_size, progress)
        out = []
        if self.regression:
            for i, value in enumerate(logits[:, 0]):
                out.append({**_texts(texts_a, texts_b, i), "score": float(value)})
            return out
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        for i, (row, best) in enumerate(zip(probabilities, probabilities.argmax(axis=1))):
            out.append({**_texts(texts_a, texts_b, i), "label": self.label_names[best], "label_id": int(best),
                        "probabilities": {name: float(p) for name, p in zip(self.label_names, row)}})
        return out


def _texts(texts_a, texts_b, i):
    texts = {"text_a": texts_a[i]}
    if texts_b is not None and texts_b[i] is not None:
        texts["text_b"] = texts_b[i]
    return texts


def read_inputs(path, text_a, text_b):
    """(texts_a, texts_b or None) of a TSV/CSV/JSONL file with a header (by extension), or of
    standard input (`-`: one text a line, a tab between the two texts of a pair).

    Raises:
        ValueError: a column missing from the header, a bad row (with its line), or no text at all.
    """
    from src.glue_to_records import BadRow, read_rows  # noqa: PLC0415 -- the converters own the file readers
    texts_a, texts_b = [], []
    if path == "-":
        for line_no, line in enumerate(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"), 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) > 2:
                raise ValueError(f"standard input line {line_no} has {len(parts)} tab-separated fields: give one "
                                 "text, or two texts of a pair separated by one tab")
            texts_a.append(parts[0].strip())
            texts_b.append(parts[1].strip() if len(parts) == 2 else None)
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file {path} does not exist")
        columns = [c for c in (text_a, text_b) if c is not None]
        for line_no, row in read_rows(path, columns):
            if isinstance(row, BadRow):
                raise ValueError(f"{path}:{line_no}: {row}")
            values = []
            for column in columns:
                if row.get(column) is None:
                    raise ValueError(f"{path}:{line_no}: no field {column!r}: name the text columns with "
                                     "--text_a/--text_b")
                values.append(str(row[column]).strip())
            texts_a.append(values[0])
            texts_b.append(values[1] if text_b is not None else None)
    if not texts_a:
        raise ValueError(f"{'standard input' if path == '-' else path} holds no text to label")
    return texts_a, (texts_b if any(t is not None for t in texts_b) else None)


def write_records(records, output, output_format):
    """JSONL (one object a line) or CSV (text_a, text_b, label, label_id, p_<label>... or score) to
    `output`, written to a temporary name and renamed when complete; None writes to stdout."""
    if output_format == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        flat = []
        for record in records:
            row = {k: v for k, v in record.items() if k != "probabilities"}
            row.update({f"p_{name}": f"{p:.6f}" for name, p in record.get("probabilities", {}).items()})
            flat.append(row)
        fields = list(dict.fromkeys(k for row in flat for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
        text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
        return
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _output_format(output, requested):
    if requested:
        return requested
    if output is None:
        return "jsonl"
    suffix = Path(output).suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"--output {output}: name it .jsonl or .csv, or give --format")
    return suffix[1:]


def _default_columns(task):
    """The text columns of the model's GLUE task, else `text`."""
    from src.glue_to_records import TASKS  # noqa: PLC0415
    spec = TASKS.get(task)
    if spec is None or not isinstance(spec.text_a, str):
        return "text", None
    return spec.text_a, spec.text_b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="texts to label (or first texts of pairs)")
    parser.add_argument("--model", required=True, help="a task .ckpt, a .mindir or .onnx file, or a deploy folder")
    parser.add_argument("--vocab_file", default=None, help=f"the model's vocabulary (default: {VOCAB_FILE} beside "
                                                           "the model)")
    parser.add_argument("--do_lower_case", choices=("true", "false"), default=None,
                        help="override the casing of the tokenizer_config.json beside the vocabulary")
    parser.add_argument("--text_b", action="append", default=None,
                        help="with texts on the command line: the second text of each pair, once per text; "
                             "with --input: the column of the second texts")
    parser.add_argument("--input", default=None, help="a TSV/CSV/JSONL file with a header, or - for standard input "
                                                      "(one text a line; a tab separates a pair)")
    parser.add_argument("--text_a", default=None, help="column of the texts in --input (default: the model's GLUE "
                                                       "task's, else 'text')")
    parser.add_argument("--output", default=None, help="a .jsonl or .csv file (default: JSONL on standard output)")
    parser.add_argument("--format", choices=("jsonl", "csv"), default=None, help="output format (default: from "
                                                                                 "--output's extension)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_length", type=int, default=None, help="longest sequence in tokens (default: the "
                                                                     "model's)")
    parser.add_argument("--labels", default=None, help="label names, comma-separated, for an exported file "
                                                       "without a model.json")
    args = parser.parse_args(argv)
    with _log_to_stderr():
        _predict(args)


@contextlib.contextmanager
def _log_to_stderr():
    """Send the log lines to standard error while standard output carries the records."""
    handler = get_logger().handlers[0]
    previous, handler.stream = handler.stream, sys.stderr
    try:
        yield
    finally:
        handler.stream = previous


def _predict(args):
    if bool(args.texts) == bool(args.input):
        raise ValueError("give texts on the command line or --input FILE (- for standard input), not both or neither")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size {args.batch_size} must be at least 1")
    output_format = _output_format(args.output, args.format)
    predictor = Predictor(args.model, args.vocab_file, args.labels.split(",") if args.labels else None,
                          args.seq_length, None if args.do_lower_case is None else args.do_lower_case == "true")
    if args.texts:
        texts_a = list(args.texts)
        texts_b = args.text_b
        if texts_b is not None and len(texts_b) != len(texts_a):
            raise ValueError(f"{len(texts_b)} --text_b for {len(texts_a)} texts: give one --text_b per text")
    else:
        column_a, column_b = _default_columns(predictor.task)
        if args.text_b and len(args.text_b) > 1:
            raise ValueError("with --input, --text_b names one column")
        texts_a, texts_b = read_inputs(args.input, args.text_a or column_a,
                                       args.text_b[0] if args.text_b else (None if args.text_a else column_b))
    records = predictor.records(texts_a, texts_b, args.batch_size, progress=bool(args.input))
    write_records(records, args.output, output_format)
    if args.output:
        print(f"labelled {len(records)} texts into {args.output}", file=sys.stderr)


if __name__ == "__main__":
    from src.cli import run_cli  # noqa: PLC0415
    run_cli(main)
