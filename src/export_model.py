"""Export a trained student to MINDIR, ONNX or AIR, then reload the file and compare its outputs."""
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn

from src.checkpoint import assign_parameters, load_checkpoint, named_parameters, split_metadata
from src.config import bert_config
from src.logger import get_logger
from src.tinybert_model import BertForSequenceClassification, BertModel, LogitsOnly

EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
TOLERANCE = 1e-4


class EncoderOutputs(nn.Cell):
    """A GD student (no classifier) exports its sequence and pooled outputs."""

    def __init__(self, encoder):
        super().__init__(auto_prefix=False)
        self.encoder = encoder

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, pooled_output, _, _ = self.encoder(input_ids, attention_mask, token_type_ids)
        return sequence_output, pooled_output


def build_exportable(cfg, checkpoint, for_onnx=False):
    """The student as an inference network: the classifier if the checkpoint has one, else the encoder."""
    tensors, _ = split_metadata(load_checkpoint(checkpoint))
    config = bert_config(cfg, "student").for_inference()
    if for_onnx and config.hidden_act == "gelu":
        config = config.replace(hidden_act="gelu_poly")  # the same function, without the Erf op ONNX lacks
    if "dense_1.weight" in tensors:
        model = BertForSequenceClassification(config, tensors["dense_1.weight"].shape[0])
        network = LogitsOnly(model)
        assign_parameters(named_parameters(model), tensors, f"student checkpoint {checkpoint}")
    else:
        model = BertModel(config)
        network = EncoderOutputs(model)
        assign_parameters(named_parameters(model, "bert."), tensors, f"student checkpoint {checkpoint}")
    network.set_train(False)
    return network


def _example_inputs(batch_size, seq_length, vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, vocab_size, (batch_size, seq_length)).astype(np.int32)
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[:, seq_length // 2:] = 1
    attention_mask = np.ones_like(input_ids)
    attention_mask[0, seq_length - seq_length // 4:] = 0
    return input_ids, attention_mask, token_type_ids


def _run_exported(path, file_format, inputs):
    if file_format == "ONNX":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, dict(zip(names, inputs)))
    outputs = nn.GraphCell(ms.load(str(path)))(*[ms.Tensor(x) for x in inputs])
    return [o.asnumpy() for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]


def export_student(cfg):
    """Write cfg.export.file_name + extension and return (path, max abs difference to the Cell)."""
    logger = get_logger()
    file_format = cfg.export.file_format
    if file_format == "AIR" and cfg.device_target != "Ascend":
        raise ValueError("AIR export needs an Ascend device (MindSpore writes AIR only with the Ascend "
                         "backend): run with --device_target=Ascend there, or use MINDIR/ONNX here")
    if not cfg.export.checkpoint:
        raise ValueError("export.checkpoint is empty: give the student checkpoint (--export.checkpoint=PATH)")
    ms.set_context(mode=ms.GRAPH_MODE, device_target=cfg.device_target)
    network = build_exportable(cfg, cfg.export.checkpoint)
    exported = build_exportable(cfg, cfg.export.checkpoint, for_onnx=True) if file_format == "ONNX" else network
    vocab_size = bert_config(cfg, "student").vocab_size
    batch_size = cfg.export.batch_size or (None if file_format == "MINDIR" else 1)
    example = _example_inputs(batch_size or 2, cfg.seq_length, vocab_size)
    signature = [ms.Tensor(shape=[batch_size, cfg.seq_length], dtype=ms.int32) for _ in example]
    path = Path(cfg.export.file_name + EXTENSIONS[file_format])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_base = path.with_name(path.stem + ".tmp")
    ms.export(exported, *signature, file_name=str(tmp_base), file_format=file_format)
    tmp_base.with_name(tmp_base.name + EXTENSIONS[file_format]).replace(path)
    if file_format == "AIR":
        logger.info("exported %s (AIR cannot be reloaded here for a check)", path)
        return path, None
    expected = network(*[ms.Tensor(x) for x in example])
    expected = [o.asnumpy() for o in (expected if isinstance(expected, tuple) else (expected,))]
    actual = _run_exported(path, file_format, example)
    difference = max(float(np.abs(a - e).max()) for a, e in zip(actual, expected))
    logger.info("exported %s; reloaded, max abs difference to the trained Cell: %.3g", path, difference)
    if difference > TOLERANCE:
        raise ValueError(f"exported {path} differs from the Cell by {difference:.3g} (> {TOLERANCE})")
    return path, difference
