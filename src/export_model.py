"""Export a trained student to MINDIR, ONNX or AIR, then reload the file and compare its outputs.

Every format is written into a private temporary folder beside the output and moved into place when
complete: MindSpore's writer makes the folder it writes into private (mode 700) and the file
read-only, and a failed write (a full disk) must leave nothing behind.

ONNX: MindSpore writes fixed shapes only. The graph is exported at probe sizes (a batch size and a
sequence length that no dimension of the model uses) and rewritten with the `onnx` package so both
are dynamic: the shapes given to Reshape, the position ids and full-size constants are recomputed from
the input's shape; then its GELU and LayerNorm subgraphs are rewritten into the patterns ONNX Runtime
fuses (src/onnx_fusion.py). The inputs are input_ids, attention_mask, token_type_ids; the output logits (a
sentence classifier's (batch, labels), a token classifier's (batch, sequence, labels), a QA model's
(batch, 2, sequence): start, then end logits), or sequence_output and pooled_output for an encoder.
The reload check runs the file at several batch sizes and sequence lengths against the MindSpore Cell.
"""
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn

from src.checkpoint import (ARCHITECTURE, HEAD_PREFIXES, assign_parameters, load_checkpoint, named_parameters,
                            recorded_config, split_metadata)
from src.cli import require_device
from src.config import DEFAULT_CONFIG, bert_config, load_config
from src.distill.multitask import all_heads, head_names, single_head
from src.logger import get_logger
from src.onnx_fusion import fuse_for_onnxruntime, graph_constants
from src.tinybert_model import (BertForQuestionAnswering, BertForSequenceClassification, BertModel,
                                LogitsOnly)

EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
TOLERANCE = 1e-4
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
BATCH, SEQUENCE = "batch", "sequence"  # names of the dynamic ONNX dimensions
# ONNX ops that broadcast a constant operand, so a constant of one repeated value may become a scalar.
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "Where"}


class EncoderOutputs(nn.Cell):
    """A GD student (no classifier) exports its sequence and pooled outputs."""

    def __init__(self, encoder):
        super().__init__(auto_prefix=False)
        self.encoder = encoder

    def construct(self, input_ids, attention_mask, token_type_ids):
        sequence_output, pooled_output, _, _ = self.encoder(input_ids, attention_mask, token_type_ids)
        return sequence_output, pooled_output


def student_config(cfg, metadata):
    """The student's BertConfig: the one the checkpoint records (`model_config`), else student.model."""
    return recorded_config(metadata) or bert_config(cfg, "student")


def export_seq_length(cfg, metadata):
    """The sequence length to export at: a seq_length set in the config (task yaml or command line)
    wins; else the one the checkpoint was trained with; else the default."""
    default = load_config([], DEFAULT_CONFIG).seq_length
    if cfg.seq_length != default or not metadata.get("seq_length"):
        return cfg.seq_length
    return int(metadata["seq_length"])


def head_weight(tensors):
    """The task head's weight (labels or 2 spans, hidden) among checkpoint tensors, or None for an encoder."""
    return next((tensors[p + "weight"] for p in HEAD_PREFIXES if p + "weight" in tensors), None)


def head_task_type(tensors, metadata):
    """The task shape (a `tasks.TASK_TYPES` name) of a checkpoint's head, or None for an encoder.

    The recorded model class (`checkpoint.ARCHITECTURE`) decides; without one, a `dense_1` head is a
    sentence classifier (as checkpoints were before token classifiers existed) and `dense1` a QA head.
    """
    from src.tasks import TASK_TYPES  # noqa: PLC0415 -- tasks imports the converters
    if head_weight(tensors) is None:
        return None
    recorded = {task.model.__name__: name for name, task in TASK_TYPES.items()}.get(metadata.get(ARCHITECTURE))
    default = BertForQuestionAnswering if HEAD_PREFIXES[1] + "weight" in tensors else BertForSequenceClassification
    return recorded or default.task


def build_exportable(config, tensors, source, task_type=None, heads=()):
    """(network, output names) of an inference BertConfig and checkpoint tensors: the task head's
    logits for a task model (sequence classifier (B, C), token classifier (B, T, C), QA span head
    (B, 2, T): start then end logits), every head's for a multi-task student (`logits_<task>`, in
    head order), else the encoder's sequence and pooled outputs.

    task_type: the head's task shape (`head_task_type`); None for an encoder. heads: a multi-task
    student's task names (`multitask.head_names`).
    """
    from src.tasks import build_task_model  # noqa: PLC0415
    if heads:
        return all_heads(config, tensors, source), tuple(f"logits_{name}" for name in heads)
    if task_type is not None:
        model = build_task_model(task_type, config, head_weight(tensors).shape[0])
        network, outputs = LogitsOnly(model), ("logits",)
        assign_parameters(named_parameters(model), tensors, f"student checkpoint {source}")
    else:
        model = BertModel(config)
        network, outputs = EncoderOutputs(model), ("sequence_output", "pooled_output")
        assign_parameters(named_parameters(model, "bert."), tensors, f"student checkpoint {source}")
    network.set_train(False)
    return network, outputs


def _example_inputs(batch_size, seq_length, vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, vocab_size, (batch_size, seq_length)).astype(np.int32)
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[:, seq_length // 2:] = 1
    attention_mask = np.ones_like(input_ids)
    attention_mask[0, seq_length - seq_length // 4:] = 0
    return input_ids, attention_mask, token_type_ids


def probe_sizes(config, head_width):
    """(batch, sequence) to export ONNX at: primes that no dimension of the model (nor their product)
    equals, so a constant holding one of them can only be that dimension."""
    taken = {config.vocab_size, config.hidden_size, config.num_attention_heads, config.intermediate_size,
             config.hidden_size // config.num_attention_heads, config.type_vocab_size,
             config.max_position_embeddings, head_width}
    primes = [n for n in range(11, config.max_position_embeddings + 1)
              if all(n % d for d in range(2, n)) and n not in taken]
    if len(primes) < 2 or primes[0] * primes[1] in taken:
        raise ValueError(f"max_position_embeddings {config.max_position_embeddings} is too small to export a "
                         "dynamic ONNX graph: export MINDIR instead")
    return primes[0], primes[1]


def make_onnx_dynamic(model, batch, sequence, output_names, fixed_batch=False):
    """Rewrite an ONNX graph exported at (batch, sequence) so that both dimensions are dynamic.

    Constants that hold the probe sizes are replaced by values computed from the first input's shape:
    Reshape shapes (each element equal to `batch`, `sequence` or their product), the position ids
    (0 .. sequence-1), and full-size constants of one repeated value (a scalar broadcasts instead).

    Args:
        model (onnx.ModelProto): the graph as MindSpore wrote it; changed in place.
        batch, sequence (int): the probe sizes it was exported at.
        output_names (tuple[str]): names for the graph outputs, in order.
        fixed_batch (bool): keep the batch size fixed (only the sequence becomes dynamic).
    Raises:
        ValueError: a constant holds a probe size in a way this rewrite does not handle.
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415 -- only ONNX export needs onnx
    graph = model.graph
    constants = graph_constants(graph)
    consumers = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))

    added, new_initializers = [], []

    def constant(name, value):
        new_initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, name, **attributes):
        added.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    shape = node("Shape", [graph.input[0].name], "dynamic/shape")
    dims = {sequence: node("Slice", [shape, constant("dynamic/one", [1]), constant("dynamic/two", [2])],
                           "dynamic/sequence")}
    batch_dim = constant("dynamic/fixed_batch", [batch]) if fixed_batch else \
        node("Slice", [shape, constant("dynamic/zero", [0]), "dynamic/one"], "dynamic/batch")
    dims[batch * sequence] = node("Mul", [batch_dim, dims[sequence]], "dynamic/batch_x_sequence")
    if not fixed_batch:
        dims[batch] = batch_dim
    probes = set(dims)
    replaced = {}
    for name, value in constants.items():
        uses = consumers.get(name, [])
        holds_probe = probes & set(value.shape) or (
            value.ndim == 1 and np.issubdtype(value.dtype, np.integer) and probes & set(value.tolist()))
        if not uses or not holds_probe:
            continue
        if all(user.op_type == "Reshape" and index == 1 for user, index in uses):
            parts = [dims[v] if v in dims else constant(f"dynamic/{name}/{i}", [v]) for i, v in enumerate(value.tolist())]
            replaced[name] = node("Concat", parts, f"dynamic/{name}", axis=0)
        elif value.shape == (sequence,) and np.issubdtype(value.dtype, np.integer) \
                and np.array_equal(value, np.arange(sequence)):
            length = node("Squeeze", [dims[sequence]], f"dynamic/{name}/length", axes=[0])
            positions = node("Range", [constant("dynamic/range_start", np.int64(0)), length,
                                       constant("dynamic/range_step", np.int64(1))], f"dynamic/{name}/range")
            replaced[name] = node("Cast", [positions], f"dynamic/{name}",
                                  to=helper.np_dtype_to_tensor_dtype(value.dtype))
        elif value.size and (value == value.flat[0]).all() and all(user.op_type in ELEMENTWISE for user, _ in uses):
            replaced[name] = constant(f"dynamic/{name}", value.flat[0])
        else:
            raise ValueError(f"cannot make the ONNX graph dynamic: constant {name} {value.shape} holds the batch "
                             f"size or sequence length and feeds {', '.join(sorted({u.op_type for u, _ in uses}))}")
    for user in graph.node:
        for index, name in enumerate(user.input):
            if name in replaced:
                user.input[index] = replaced[name]
    kept = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in replaced)]
    del graph.node[:]
    graph.node.extend(added + kept)
    unused = [init for init in graph.initializer if init.name in replaced]
    for init in unused:
        graph.initializer.remove(init)
    graph.initializer.extend(new_initializers)

    renames = {output.name: new for output, new in zip(graph.output, output_names)}
    for user in graph.node:
        user.output[:] = [renames.get(name, name) for name in user.output]
        user.input[:] = [renames.get(name, name) for name in user.input]
    for value_info in list(graph.input) + list(graph.output):
        value_info.name = renames.get(value_info.name, value_info.name)
        for dim in value_info.type.tensor_type.shape.dim:
            if dim.dim_value == sequence or (dim.dim_value == batch and not fixed_batch):
                dim.dim_param = SEQUENCE if dim.dim_value == sequence else BATCH
    del graph.value_info[:]  # intermediate shapes recorded at the probe sizes


def _run_exported(path, file_format, inputs):
    if file_format == "ONNX":
        import onnxruntime  # noqa: PLC0415 -- only ONNX export needs onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})
    outputs = nn.GraphCell(ms.load(str(path)))(*[ms.Tensor(x) for x in inputs])
    return [o.asnumpy() for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]


def _write(exported, signature, path, file_format, dynamic=None):
    """ms.export into a private temporary folder beside `path`, then move the file into place.

    dynamic: (batch, sequence, output names, fixed batch) for ONNX, rewritten by make_onnx_dynamic, then
    its GELU and LayerNorm subgraphs into the forms ONNX Runtime fuses (src/onnx_fusion.py).
    """
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give export.file_name a file name (the extension is added)")
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*"):  # the temporary folder of an export killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:  # name the folder the user gave, not the temporary name inside it
        raise OSError(err.errno, err.strerror, str(path.parent)) from None
    try:
        ms.export(exported, *signature, file_name=str(tmp_dir / "model"), file_format=file_format)
        written = tmp_dir / ("model" + EXTENSIONS[file_format])
        if dynamic is not None:
            import onnx  # noqa: PLC0415 -- only ONNX export needs onnx
            model = onnx.load(str(written))
            make_onnx_dynamic(model, *dynamic)
            fuse_for_onnxruntime(model)
            onnx.checker.check_model(model)
            written = tmp_dir / "dynamic.onnx"
            onnx.save(model, str(written))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(written, 0o666 & ~umask)  # MindSpore leaves the file read-only for its owner
        os.replace(written, path)
    except OSError as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        for folder in created:  # the folders this export made, deepest first, if nothing else is in them
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if err.filename is None:  # MindSpore's writer does not say where it was writing
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _check_shapes(batch_size, seq_length, file_format):
    """The (batch, sequence) sizes the reload check runs: for ONNX, whose graph this module rewrites,
    three batch sizes and sequence lengths; else one."""
    if file_format != "ONNX":
        return [(batch_size or 2, seq_length)]
    batches = [batch_size] * 3 if batch_size else [2, 1, 3]
    return list(zip(batches, [seq_length, max(3, seq_length // 2), max(3, seq_length // 4 + 1)]))


def export_student(cfg):
    """Write cfg.export.file_name + extension and return (path, max abs difference to the Cell).

    The student's config and sequence length come from the checkpoint's metadata when it records them
    (see `student_config`, `export_seq_length`). ONNX gets a dynamic batch size (unless
    export.batch_size is set) and sequence length; MINDIR a dynamic batch size; AIR neither.
    """
    logger = get_logger()
    file_format = cfg.export.file_format
    if file_format == "AIR" and cfg.device_target != "Ascend":
        raise ValueError("AIR export needs an Ascend device (MindSpore writes AIR only with the Ascend "
                         "backend): run with --device_target=Ascend there, or use MINDIR/ONNX here")
    if not cfg.export.checkpoint:
        raise ValueError("export.checkpoint is empty: give the student checkpoint (--export.checkpoint=PATH)")
    require_device(cfg.device_target)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=cfg.device_target)
    tensors, metadata = split_metadata(load_checkpoint(cfg.export.checkpoint))
    if cfg.export.head:  # one head of a multi-task student, written as a sentence classifier
        tensors, metadata = single_head(tensors, metadata, cfg.export.head)
    config = student_config(cfg, metadata).replace(compute_type=cfg.compute_type).for_inference()
    seq_length = export_seq_length(cfg, metadata)
    if seq_length > config.max_position_embeddings:
        raise ValueError(f"seq_length {seq_length} exceeds the student's max_position_embeddings "
                         f"{config.max_position_embeddings}")
    task_type, heads = head_task_type(tensors, metadata), head_names(metadata)
    network, output_names = build_exportable(config, tensors, cfg.export.checkpoint, task_type, heads)
    batch_size = cfg.export.batch_size or (1 if file_format == "AIR" else None)
    path = Path(cfg.export.file_name + EXTENSIONS[file_format])
    # MindSpore's own ops in the file: it must not depend on this machine's src/fused_ops library.
    plain = config.replace(fused_cpu_ops=False)
    if file_format == "ONNX":
        # The exact GELU through a polynomial erf: ONNX export has no Erf op.
        exported, _ = build_exportable(plain.replace(hidden_act="gelu_poly") if config.hidden_act == "gelu"
                                       else plain, tensors, cfg.export.checkpoint, task_type, heads)
        head = head_weight(tensors)
        head_width = head.shape[0] if head is not None else config.hidden_size
        probe_batch, probe_sequence = probe_sizes(config, head_width)
        shape = [batch_size or probe_batch, probe_sequence]
        dynamic = (shape[0], probe_sequence, output_names, batch_size is not None)
    else:
        exported, _ = build_exportable(plain, tensors, cfg.export.checkpoint, task_type, heads)
        shape, dynamic = [batch_size, seq_length], None
    _write(exported, [ms.Tensor(shape=shape, dtype=ms.int32) for _ in INPUT_NAMES], path, file_format, dynamic)
    if file_format == "AIR":
        logger.info("exported %s (AIR cannot be reloaded here for a check)", path)
        return path, None
    difference = 0.0
    # The Cell runs in PyNative mode here: GRAPH_MODE would compile it once per checked shape.
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        for batch, length in _check_shapes(batch_size, seq_length, file_format):
            example = _example_inputs(batch, length, config.vocab_size)
            expected = network(*[ms.Tensor(x) for x in example])
            expected = [o.asnumpy() for o in (expected if isinstance(expected, tuple) else (expected,))]
            actual = _run_exported(path, file_format, example)
            difference = max([difference] + [float(np.abs(a - e).max()) for a, e in zip(actual, expected)])
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    batches = batch_size or "any"
    lengths = "any" if file_format == "ONNX" else seq_length
    logger.info("exported %s (batch size %s, sequence length %s; inputs %s; outputs %s); reloaded, max abs "
                "difference to the trained Cell: %.3g", path, batches, lengths, ", ".join(INPUT_NAMES),
                ", ".join(output_names), difference)
    if difference > TOLERANCE:
        path.unlink()
        raise ValueError(f"exported {path} differs from the Cell by {difference:.3g} (> {TOLERANCE}); file removed")
    return path, difference
