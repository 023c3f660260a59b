"""Label raw text with a trained model: a checkpoint, an exported MINDIR or an ONNX file.

  python predict.py --model MODEL [--vocab_file VOCAB] "a sentence" "another one" [--text_b "pair" ...]
  python predict.py --model MODEL --input dev.tsv|dev.csv|dev.jsonl|- [--text_a COL] [--text_b COL] \
      [--output out.jsonl|out.csv] [--batch_size 32]

What comes out follows the model's task shape:
  sequence classification  one label per text or pair: label, label_id, every label's probability
                           (softmax of the logits), or the score of a regression model
  token classification     (NER) one tag per word and the entities of the sentence: words, tags,
                           entities [{type, text, start_char, end_char, score}]
  question answering       (SQuAD) the answer span of a question (text_a, `question` in files) in
                           its context (--text_b, `context` in files): answer, start_char,
                           end_char, score
Character offsets index the input text, end exclusive (`text[start_char:end_char]`).

MODEL is a task checkpoint (`OUTPUT_DIR/td2/student_best.ckpt`), a MINDIR or ONNX file from
export.py or `src.deploy`, or a deploy folder (its model.onnx). What each format knows about itself:

  what                 checkpoint           MINDIR / ONNX
  model shape, task    recorded in it       in the graph (the shape of its logits output)
  label names          recorded in it       model.json beside the file (src.deploy writes it), else --labels
  vocabulary, casing   --vocab_file, else vocab.txt beside the file; do_lower_case from the
                       tokenizer_config.json beside the vocabulary (hf_convert import and src.deploy write it)
  sequence length      recorded in it       MINDIR: fixed in the graph; ONNX: model.json, else --seq_length

Texts are tokenized with the model's WordPiece vocabulary, sorted by length and batched, and each
batch is padded only to its longest row where the format allows it (checkpoint and ONNX; a MINDIR
graph has a fixed sequence length). Sentence classification truncates a long text; NER and QA
cover it with windows as their training records do (src/windows.py). Output: one record per
input, in input order.
"""
import argparse
import contextlib
import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn

from src.checkpoint import (HEAD_PREFIX, HEAD_PREFIXES, LABEL_NAMES, SEQ_LENGTH, TASK, load_checkpoint, load_model,
                            split_metadata)
from src.assessment_method import entity_spans
from src.atomic_files import write_text_atomically
from src.cli import read_json, require_file
from src.distill.multitask import head_names
from src.logger import get_logger
from src.tinybert_model import (BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
                                LogitsOnly)
from src.tokenization import WordPieceTokenizer
from src.windows import (best_answer_spans, context_windows, encode_with_offsets, pack_question_windows,
                         pack_word_windows, word_windows, words_from_windows)

MODEL_DESCRIPTION = "model.json"  # written by src.deploy beside the exported files
VOCAB_FILE = "vocab.txt"
FLOAT_ONNX = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_SEQ_LENGTH = 128
SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, QUESTION_ANSWERING = (
    model.task for model in (BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering))


def read_description(folder):
    """The model.json in `folder` as a dict; {} when there is none."""
    path = Path(folder) / MODEL_DESCRIPTION
    if not path.is_file():
        return {}
    values = read_json(path)
    if not isinstance(values, dict):
        raise ValueError(f"{path} should be a JSON object describing the model (as src.deploy writes it)")
    return values


def onnx_session(path, threads=0, spinning=True):
    """An ONNX Runtime CPU session with every graph optimisation on (constant folding, node fusions,
    layout changes: ORT_ENABLE_ALL); threads 0 lets ONNX Runtime choose. spinning False stops its
    worker threads from busy-waiting after each run, which would slow other engines timed in turn.
    Raises ValueError when `path` is not a whole, valid ONNX model."""
    import onnxruntime  # noqa: PLC0415 -- only ONNX models need it
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf  # noqa: PLC0415
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (InvalidProtobuf, InvalidGraph, Fail) as error:  # a file that is not a whole, valid ONNX model
        raise ValueError(f"{path} is not an ONNX model ONNX Runtime can load ({str(error).splitlines()[0]}): "
                         "export it again with export.py or src.deploy") from None


def task_type_of_logits(dims, sequence):
    """The task shape of a graph's logits output: (B, C) sentence classification, (B, T, C) token
    classification, (B, 2, T) question answering (start, then end logits).

    Args:
        dims (tuple): the output's dimensions, a name or -1 where dynamic.
        sequence: the graph's sequence dimension as `dims` writes it (a name, or the fixed length).
    """
    if len(dims) == 2:
        return SEQUENCE_CLASSIFICATION
    if len(dims) == 3 and dims[1] == 2 and dims[2] == sequence:
        return QUESTION_ANSWERING
    if len(dims) == 3 and dims[1] == sequence:
        return TOKEN_CLASSIFICATION
    raise ValueError(f"the model's logits have shape {list(dims)}, which is none of a classifier's (batch, labels), "
                     "a token classifier's (batch, sequence, labels) or a QA model's (batch, 2, sequence): export "
                     "it with export.py")


class CheckpointModel:
    """A task checkpoint run by MindSpore in GRAPH mode with dynamic batch and sequence sizes (one
    compilation serves every batch shape)."""

    dynamic_length = True

    def __init__(self, path):
        tensors, metadata = split_metadata(load_checkpoint(path))
        heads = head_names(metadata)
        if heads:
            raise ValueError(f"{path} is a multi-task student (heads {', '.join(heads)}): export the head of one "
                             f"task, `python export.py --export.checkpoint={path} --export.head={heads[0]} "
                             "--export.file_format=ONNX`, and predict with that file")
        if not any(prefix + "weight" in tensors for prefix in HEAD_PREFIXES):
            raise ValueError(f"{path} has no task head ({HEAD_PREFIX}weight): it is an encoder from general "
                             "distillation; give a task checkpoint such as OUTPUT_DIR/td2/student_best.ckpt")
        ms.set_context(mode=ms.GRAPH_MODE)
        model, metadata = load_model(path, dynamic_shapes=True)
        self.network = LogitsOnly(model)
        self.network.set_train(False)
        self.network.set_inputs(*[ms.Tensor(shape=[None, None], dtype=ms.int32) for _ in INPUT_NAMES])
        self.config = model.bert.config
        self.task_type = model.task
        self.label_names = json.loads(metadata.get(LABEL_NAMES, "[]"))
        self.task = metadata.get(TASK, "")
        self.seq_length = int(metadata.get(SEQ_LENGTH) or 0) or None

    def logits(self, input_ids, attention_mask, token_type_ids):
        """float32 logits of int32 arrays (B, T): (B, C), (B, T, C) or (B, 2, T) by task shape."""
        return self.network(*[ms.Tensor(x) for x in (input_ids, attention_mask, token_type_ids)]).asnumpy()


def mindir_shapes(path):
    """(first input's shape, first output's shape) of a MINDIR file, -1 for a dynamic dimension.

    MindSpore's GraphCell does not expose its shapes, so they are read from the file's protobuf
    (mind_ir_pb2, the schema MindSpore writes it with).
    """
    from google.protobuf.message import DecodeError  # noqa: PLC0415
    from mindspore.train import mind_ir_pb2  # noqa: PLC0415
    proto = mind_ir_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except DecodeError as error:
        raise ValueError(f"{path} is not a MINDIR file ({error}): export it again with export.py") from None
    if not proto.graph.input or not proto.graph.input[0].tensor or not proto.graph.output:
        raise ValueError(f"{path} is not a MINDIR file with inputs and outputs: export it with export.py")
    return tuple(tuple(int(d) for d in part[0].tensor[0].dims) for part in (proto.graph.input, proto.graph.output))


def mindir_input_shape(path):
    """The (batch, sequence) shape of a MINDIR file's first input, -1 for a dynamic dimension."""
    return mindir_shapes(path)[0]


class MindirModel:
    """An exported MINDIR file run by MindSpore: dynamic batch size, fixed sequence length."""

    dynamic_length = False

    def __init__(self, path):
        shape, output = mindir_shapes(path)
        ms.set_context(mode=ms.GRAPH_MODE)
        self.network = nn.GraphCell(ms.load(str(path)))
        self.seq_length = shape[-1] if shape[-1] > 0 else None
        self.fixed_batch = shape[0] if shape[0] > 0 else None
        self.task_type = task_type_of_logits(output, shape[-1])

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
        self.task_type = task_type_of_logits(self.session.get_outputs()[0].shape, sequence)

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
    require_file(path, "model", "give a .ckpt, .mindir or .onnx file, or a deploy folder")
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
        ValueError: a model without a task head, a vocabulary larger than the model's, label names
            that do not match the outputs, a sequence length the model cannot take.
    """

    def __init__(self, model_path, vocab_file=None, labels=None, seq_length=None, do_lower_case=None):
        self.model, folder = load_predictor(model_path)
        description = read_description(folder) if not isinstance(self.model, CheckpointModel) else {}
        vocab_file = Path(vocab_file) if vocab_file else folder / VOCAB_FILE
        require_file(vocab_file, f"no vocabulary for {model_path}:", "pass --vocab_file (the vocab.txt the model "
                     "was trained with)")
        self.tokenizer = WordPieceTokenizer(vocab_file, do_lower_case)
        vocab_size = getattr(getattr(self.model, "config", None), "vocab_size", None)
        if vocab_size is not None and self.tokenizer.vocab_size > vocab_size:
            raise ValueError(f"{vocab_file} has {self.tokenizer.vocab_size} tokens but the model only {vocab_size} "
                             "embeddings: pass the vocabulary the model was trained with")
        self.task = getattr(self.model, "task", "") or description.get("task", "")
        self.task_type = self.model.task_type
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

    def _run(self, arrays, batch_size, progress):
        """The model's logits for every row of packed inputs, in row order.

        Rows are sorted by token count and batched, so each batch is padded only to its own longest
        row (for models of dynamic sequence length); the logits' sequence axis is padded back to
        seq_length (with zeros, at positions the inputs pad) and the rows put back in input order.

        Args:
            arrays (tuple): input_ids, attention_mask, token_type_ids, int32 (N, seq_length), N > 0.
            batch_size (int): rows per model call.
            progress (bool): show a progress bar on standard error.
        Returns:
            float32 array: (N, C) sentence classification, (N, seq_length, C) token
            classification, (N, 2, seq_length) question answering.
        """
        from tqdm import tqdm  # noqa: PLC0415
        sequence_axis = {TOKEN_CLASSIFICATION: 1, QUESTION_ANSWERING: 2}.get(self.task_type)
        order = np.argsort(arrays[1].sum(axis=1), kind="stable")
        logits = None
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, file=sys.stderr):
            rows = order[start:start + batch_size]
            batch = tuple(x[rows] for x in arrays)
            if self.model.dynamic_length:
                width = int(batch[1].sum(axis=1).max())
                batch = tuple(np.ascontiguousarray(x[:, :width]) for x in batch)
            values = np.asarray(self.model.logits(*batch), dtype=np.float32)
            if sequence_axis is not None:
                pad = [(0, 0)] * values.ndim
                pad[sequence_axis] = (0, self.seq_length - values.shape[sequence_axis])
                values = np.pad(values, pad)
            if logits is None:
                logits = np.empty((len(order),) + values.shape[1:], np.float32)
            logits[rows] = values
        return logits

    def _expect(self, task_type, what):
        if self.task_type != task_type:
            raise ValueError(f"the model is a {self.task_type.replace('_', '-')} model: it cannot {what}")

    def logits(self, texts_a, texts_b=None, batch_size=32, progress=False):
        """float32 (N, num_labels) logits of N texts (or pairs), in input order (sentence classifiers).

        A text (pair) longer than seq_length is truncated, the longer text of a pair first.
        """
        self._expect(SEQUENCE_CLASSIFICATION, "label sentences or pairs")
        ids_b = None
        if texts_b is not None:
            ids_b = [None if text is None else ids for text, ids in
                     zip(texts_b, self.tokenizer.token_ids(["" if text is None else text for text in texts_b]))]
        arrays = self.tokenizer.build_inputs(self.tokenizer.token_ids(texts_a), ids_b, self.seq_length)
        logits = self._run(arrays, batch_size, progress)
        self._check_labels(logits.shape[1])
        return logits

    def _check_labels(self, width):
        self.regression = width == 1 and self.task_type == SEQUENCE_CLASSIFICATION
        if self.regression:
            return
        if not self.label_names:
            self.label_names = [f"LABEL_{i}" for i in range(width)]  # transformers' names for unnamed outputs
            get_logger().info("the model names no labels (no model.json beside it, no --labels): outputs are "
                              "called %s", ", ".join(self.label_names))
        if len(self.label_names) != width:
            raise ValueError(f"{len(self.label_names)} label names ({', '.join(self.label_names)}) for a model of "
                             f"{width} outputs: give one name per output")

    def records(self, texts_a, texts_b=None, batch_size=32, progress=False, **span_options):
        """One dict per text (pair), by the model's task shape (see the module doc).

        Sentence classification: text_a (text_b), then label, label_id and probabilities {name: p}
        (softmax of the logits), or score for a regression model. Token classification: see
        `entity_records`; question answering (texts_a questions, texts_b contexts): see
        `answer_records`, which takes `span_options`.

        Raises:
            ValueError: pairs for a token classifier, a question without a context.
        """
        if self.task_type == TOKEN_CLASSIFICATION:
            if texts_b is not None and any(text is not None for text in texts_b):
                raise ValueError("a token-classification (NER) model tags single sentences, not pairs: give one "
                                 "sentence per text, without --text_b (or a tab on standard input)")
            return self.entity_records(texts_a, batch_size, progress)
        if self.task_type == QUESTION_ANSWERING:
            if texts_b is None or any(text is None for text in texts_b):
                raise ValueError("a question-answering model needs a context for each question: give --text_b "
                                 "CONTEXT once per question (in a file, a context column; on standard input, "
                                 "question TAB context)")
            return self.answer_records(texts_a, texts_b, batch_size, progress, **span_options)
        logits = self.logits(texts_a, texts_b, batch_size, progress)
        out = []
        if self.regression:
            for i, value in enumerate(logits[:, 0]):
                out.append({**_texts(texts_a, texts_b, i), "score": float(value)})
            return out
        probabilities = _softmax(logits)
        for i, (row, best) in enumerate(zip(probabilities, probabilities.argmax(axis=1))):
            out.append({**_texts(texts_a, texts_b, i), "label": self.label_names[best], "label_id": int(best),
                        "probabilities": {name: float(p) for name, p in zip(self.label_names, row)}})
        return out

    def entity_records(self, texts, batch_size=32, progress=False):
        """The tags and entities of raw sentences (a token-classification model).

        Sentences are cut into records by `sentence_windows`; each word's tag is read at its first
        piece, and tags become entities by conlleval's rules (`assessment_method.entity_spans`:
        IOB2, a stray I- starts an entity).

        Args:
            texts (list[str]): sentences.
            batch_size (int): windows per model call. Default: 32.
            progress (bool): show a progress bar. Default: False.
        Returns:
            list[dict]: per sentence, text, words, tags (one per word), and entities
            [{type, text, start_char, end_char, score}]: characters of `text`, end exclusive;
            score the mean over the entity's words of their tag's probability (softmax).
        Raises:
            ValueError: label names that are not IOB tags (O, B-TYPE, I-TYPE).
        """
        self._expect(TOKEN_CLASSIFICATION, "tag words")
        windows = sentence_windows(self.tokenizer, texts, self.seq_length)
        logits = self._run(windows.inputs, batch_size, progress)
        self._check_labels(logits.shape[-1])
        try:
            entity_spans(self.label_names)
        except ValueError:
            raise ValueError(f"the model's labels ({', '.join(self.label_names)}) are not IOB tags (O, B-TYPE, "
                             "I-TYPE): name them with --labels, or the model.json beside the model") from None
        return tag_sentences(texts, windows, logits, self.label_names)

    def answer_records(self, questions, contexts, batch_size=32, progress=False, doc_stride=128, max_query_length=64,
                       max_answer_length=30, n_best_size=20):
        """The answer span of each question in its context (an extractive QA model).

        The question is cut to `max_query_length` pieces and the context covered by windows
        `doc_stride` pieces apart, as `squad_to_records` builds training records; the answer is the
        best span over all windows (`windows.best_answer_spans`, BERT's n-best decoding).

        Args:
            questions, contexts (list[str]): one context per question.
            batch_size (int): windows per model call. Default: 32.
            progress (bool): show a progress bar. Default: False.
            doc_stride (int): pieces between the starts of consecutive windows. Default: 128.
            max_query_length (int): question pieces kept. Default: 64.
            max_answer_length (int): longest answer in pieces. Default: 30.
            n_best_size (int): start and end candidates paired per window. Default: 20.
        Returns:
            list[dict]: per question, question, context, answer (`context[start_char:end_char]`),
            start_char, end_char, score (start + end logit); answer "" and the others None when no
            window holds a valid span.
        Raises:
            ValueError: an option under 1, or a question that leaves no room for its context.
        """
        self._expect(QUESTION_ANSWERING, "answer questions")
        for name, value in (("doc_stride", doc_stride), ("max_query_length", max_query_length),
                            ("max_answer_length", max_answer_length), ("n_best_size", n_best_size)):
            if value < 1:
                raise ValueError(f"--{name} {value} must be at least 1")
        *arrays, token_offsets, owners = question_windows(self.tokenizer, questions, contexts, self.seq_length,
                                                          doc_stride, max_query_length)
        logits = self._run(tuple(arrays), batch_size, progress)
        best = best_answer_spans(logits[:, 0], logits[:, 1], token_offsets, owners, n_best_size, max_answer_length)
        out = []
        for index, (question, context) in enumerate(zip(questions, contexts)):
            score, start, end = best.get(index, (None, None, None))
            out.append({"question": question, "context": context, "answer": "" if start is None else context[start:end],
                        "start_char": start, "end_char": end, "score": score})
        return out


@dataclasses.dataclass
class SentenceWindows:
    """Raw sentences cut into token-classification records (see `sentence_windows`).

    inputs: input_ids, attention_mask, token_type_ids (F, seq_length) int32; word_index (F,
    seq_length) int32, the word (in its window) whose first piece sits at a position, else -1;
    sentence_index, first_word (F,) the sentence of each record and its first word there;
    sentence_starts (S+1,) where each sentence's words begin among all words; word_spans, per
    sentence, [begin, end) characters of each word.
    """
    inputs: tuple
    word_index: np.ndarray
    sentence_index: list
    first_word: list
    sentence_starts: list
    word_spans: list


def sentence_windows(tokenizer, texts, seq_length):
    """Token-classification records of raw sentences, cut as `conll_to_records` cuts training data.

    Words are BERT's pre-tokenisation (split at whitespace and at punctuation, as CoNLL-2003 writes
    them); a sentence of more than seq_length - 2 pieces is split at word boundaries
    (`windows.word_windows`).

    Args:
        tokenizer (WordPieceTokenizer): the model's tokenizer.
        texts (list[str]): sentences.
        seq_length (int): tokens per record.
    Returns:
        SentenceWindows.
    """
    windows, sentence_index, first_word, word_spans, sentence_starts = [], [], [], [], [0]
    for index, (ids, offsets, word_ids) in enumerate(encode_with_offsets(tokenizer, texts)):
        words = np.split(np.arange(len(ids)), np.flatnonzero(np.diff(word_ids)) + 1) if len(ids) else []
        pieces = [ids[word[0]:word[-1] + 1] for word in words]
        word_spans.append([(int(offsets[word[0], 0]), int(offsets[word[-1], 1])) for word in words])
        for start, end in word_windows([len(p) for p in pieces], seq_length - 2):
            windows.append(pieces[start:end])
            sentence_index.append(index)
            first_word.append(start)
        sentence_starts.append(sentence_starts[-1] + len(words))
    *inputs, word_index = pack_word_windows(windows, tokenizer, seq_length)
    return SentenceWindows(tuple(inputs), word_index, sentence_index, first_word, sentence_starts, word_spans)


def tag_sentences(texts, windows, logits, label_names):
    """Each sentence's word tags and entities from the logits of its records.

    Each word's tag is the most probable label at its first piece (softmax over the labels).

    Args:
        texts (list[str]): the sentences.
        windows (SentenceWindows): their records.
        logits (array (F, seq_length, C)): the model's logits for the records.
        label_names (list[str]): C IOB tags.
    Returns:
        list[dict]: per sentence, text, words, tags (one per word), and entities (see
        `sentence_entities`).
    """
    probabilities = words_from_windows(_softmax(logits), windows.word_index >= 0, np.arange(len(logits)),
                                       windows.sentence_index, windows.first_word, windows.sentence_starts, 0.0)
    out = []
    for index, (text, spans) in enumerate(zip(texts, windows.word_spans)):
        words = probabilities[windows.sentence_starts[index]:windows.sentence_starts[index + 1]]
        tags = [label_names[i] for i in words.argmax(axis=1)]
        out.append({"text": text, "words": [text[a:b] for a, b in spans], "tags": tags,
                    "entities": sentence_entities(text, spans, tags, words.max(axis=1))})
    return out


def sentence_entities(text, word_spans, tags, scores):
    """The entities of one sentence's word tags, by conlleval's rules (`assessment_method.entity_spans`).

    Args:
        text (str): the sentence.
        word_spans (list[tuple(int, int)]): [begin, end) characters of each word in `text`.
        tags (list[str]): each word's IOB tag.
        scores (array (W,)): each word's tag probability.
    Returns:
        list[dict]: type, text, start_char, end_char (end exclusive), score (the mean of its words').
    """
    return [{"type": kind, "text": text[word_spans[first][0]:word_spans[last][1]], "start_char": word_spans[first][0],
             "end_char": word_spans[last][1], "score": float(np.mean(scores[first:last + 1]))}
            for kind, first, last in entity_spans(tags)]


def question_windows(tokenizer, questions, contexts, seq_length, doc_stride, max_query_length):
    """The `[CLS] question [SEP] window [SEP]` records of raw questions and contexts, cut as
    `squad_to_records` cuts training data (see `windows.context_windows`).

    Args:
        tokenizer (WordPieceTokenizer): the model's tokenizer.
        questions, contexts (list[str]): one context per question.
        seq_length (int): tokens per record.
        doc_stride (int): pieces between the starts of consecutive windows.
        max_query_length (int): question pieces kept.
    Returns:
        tuple: input_ids, attention_mask, token_type_ids (F, seq_length) int32, token_offsets
        (F, seq_length, 2) int32 (see `windows.pack_question_windows`), owners (F,) int, the
        question of each record.
    Raises:
        ValueError: a question that leaves no room for its context.
    """
    query_ids = [ids[:max_query_length] for ids in tokenizer.token_ids(questions)]
    rows, owners = [], []
    for index, (query, (ids, offsets, _)) in enumerate(zip(query_ids, encode_with_offsets(tokenizer, contexts))):
        room = seq_length - len(query) - 3
        if room < 1:
            raise ValueError(f"question {index + 1} keeps {len(query)} pieces, which leave no room for its context in "
                             f"{seq_length} tokens: lower --max_query_length")
        for start, end in context_windows(len(ids), room, doc_stride):
            rows.append((query, ids[start:end], offsets[start:end]))
            owners.append(index)
    return (*pack_question_windows(rows, tokenizer, seq_length), np.array(owners))


def _softmax(logits):
    """Softmax over the last axis."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


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
        require_file(path, "input file")
        columns = [c for c in (text_a, text_b) if c is not None]
        for line_no, row in read_rows(path, columns, fix="name the text columns with --text_a/--text_b"):
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
    """JSONL (one object a line) or CSV to `output`, written to a temporary name and renamed when
    complete; None writes to stdout. CSV: one column per key (probabilities as p_<label>), lists and
    objects (NER words, tags and entities) as JSON text."""
    if output_format == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        flat = []
        for record in records:
            row = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                   for k, v in record.items() if k != "probabilities"}
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
    write_text_atomically(output, text)


def _output_format(output, requested):
    if requested:
        return requested
    if output is None:
        return "jsonl"
    suffix = Path(output).suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"--output {output}: name it .jsonl or .csv, or give --format")
    return suffix[1:]


def _glue_text_columns(task):
    """(text_a, text_b or None) column names of `task` when it is a GLUE task read by header; else None."""
    from src.glue_to_records import TASKS  # noqa: PLC0415
    spec = TASKS.get(task)
    return (spec.text_a, spec.text_b) if spec is not None and isinstance(spec.text_a, str) else None


def _default_columns(task, task_type):
    """The text columns of the model's GLUE task; `question` and `context` for QA; else `text`."""
    if task_type == QUESTION_ANSWERING:
        return "question", "context"
    return _glue_text_columns(task) or ("text", None)


def _single_text_task(task):
    """Whether `task` is a GLUE task whose examples are one text (a second text would change the labels)."""
    columns = _glue_text_columns(task)
    return columns is not None and columns[1] is None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="texts to label (or first texts of pairs; questions for QA)")
    parser.add_argument("--model", required=True, help="a task .ckpt, a .mindir or .onnx file, or a deploy folder")
    parser.add_argument("--vocab_file", default=None, help=f"the model's vocabulary (default: {VOCAB_FILE} beside "
                                                           "the model)")
    parser.add_argument("--do_lower_case", choices=("true", "false"), default=None,
                        help="override the casing of the tokenizer_config.json beside the vocabulary")
    parser.add_argument("--text_b", action="append", default=None,
                        help="with texts on the command line: the second text of each pair (the context of "
                             "each question for QA), once per text; with --input: the column of the second texts")
    parser.add_argument("--input", default=None, help="a TSV/CSV/JSONL file with a header, or - for standard input "
                                                      "(one text a line; a tab separates a pair)")
    parser.add_argument("--text_a", default=None, help="column of the texts in --input (default: the model's GLUE "
                                                       "task's; 'question' (and 'context') for QA; else 'text')")
    parser.add_argument("--output", default=None, help="a .jsonl or .csv file (default: JSONL on standard output)")
    parser.add_argument("--format", choices=("jsonl", "csv"), default=None, help="output format (default: from "
                                                                                 "--output's extension)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_length", type=int, default=None, help="longest sequence in tokens (default: the "
                                                                     "model's)")
    parser.add_argument("--labels", default=None, help="label names, comma-separated, for an exported file "
                                                       "without a model.json")
    qa = parser.add_argument_group("question answering", "windows over long contexts, as src.squad_to_records "
                                                         "cuts them, and the span search")
    qa.add_argument("--doc_stride", type=int, default=128, help="pieces between window starts (default 128)")
    qa.add_argument("--max_query_length", type=int, default=64, help="question pieces kept (default 64)")
    qa.add_argument("--max_answer_length", type=int, default=30, help="longest answer in pieces (default 30)")
    qa.add_argument("--n_best_size", type=int, default=20, help="start and end candidates per window (default 20)")
    args = parser.parse_intermixed_args(argv)  # texts and their --text_b may alternate
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
        column_a, column_b = _default_columns(predictor.task, predictor.task_type)
        if args.text_b and len(args.text_b) > 1:
            raise ValueError("with --input, --text_b names one column")
        if not args.text_b and args.text_a and predictor.task_type != QUESTION_ANSWERING:
            column_b = None  # a text column of the user's, not the GLUE task's: no second text unless named
        texts_a, texts_b = read_inputs(args.input, args.text_a or column_a, args.text_b[0] if args.text_b else column_b)
    if texts_b is not None and any(t is not None for t in texts_b) and _single_text_task(predictor.task):
        raise ValueError(f"the model was trained on {predictor.task}, whose examples are single texts, but the input "
                         "gives pairs (--text_b, or a tab in a line of standard input): give one text each")
    records = predictor.records(texts_a, texts_b, args.batch_size, progress=bool(args.input),
                                doc_stride=args.doc_stride, max_query_length=args.max_query_length,
                                max_answer_length=args.max_answer_length, n_best_size=args.n_best_size)
    write_records(records, args.output, output_format)
    if args.output:
        print(f"labelled {len(records)} texts into {args.output}", file=sys.stderr)


if __name__ == "__main__":
    from src.cli import run_cli  # noqa: PLC0415
    run_cli(main)
