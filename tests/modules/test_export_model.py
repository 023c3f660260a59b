"""Export: named, dynamic ONNX checked by onnxruntime against a Cell built here; the user's folder is
left as it was; the model and sequence length come from the checkpoint; a full disk leaves nothing."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import named_parameters, save_checkpoint
from src.config import load_config
from src.export_model import export_student
from src.tinybert_model import BertForSequenceClassification, BertModel

ROOT = Path(__file__).resolve().parents[2]
onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture
def pynative():
    """References without a graph compile per input shape."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture
def checkpoints(tmp_path, student_config):
    """A classifier and an encoder checkpoint without metadata, and one that records its model."""
    (tmp_path / "student.json").write_text(json.dumps(student_config.to_dict()))
    ms.set_seed(3)
    classifier = BertForSequenceClassification(student_config, 3)
    encoder = BertModel(student_config)
    save_checkpoint(tmp_path / "classifier.ckpt", named_parameters(classifier))
    save_checkpoint(tmp_path / "encoder.ckpt", named_parameters(encoder, "bert."))
    save_checkpoint(tmp_path / "recorded.ckpt", named_parameters(classifier),
                    {"model_config": json.dumps(student_config.to_dict()), "seq_length": 24})
    for cell in (classifier, encoder):
        cell.set_train(False)
    return {"classifier": classifier, "encoder": encoder, "folder": tmp_path}


def inputs(batch, length, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 99, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, length - length // 3:] = 0
    types = (np.arange(length) >= length // 2).astype(np.int32)[None].repeat(batch, 0)
    return ids, mask, types


@pytest.mark.parametrize("kind, outputs", [("classifier", ["logits"]),
                                           ("encoder", ["sequence_output", "pooled_output"])])
def test_onnx_has_named_inputs_and_any_batch_and_sequence(checkpoints, kind, outputs, pynative):
    folder = checkpoints["folder"]
    (folder / "out").mkdir()
    os.chmod(folder / "out", 0o755)
    cfg = load_config([f"--student.model={folder / 'student.json'}", "--seq_length=16",
                       f"--export.checkpoint={folder / kind}.ckpt", "--export.file_format=ONNX",
                       f"--export.file_name={folder / 'out' / kind}"])
    path, _ = export_student(cfg)
    assert_untouched(folder / "out", path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == outputs
    assert all([d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"] for i in graph.input)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cell = checkpoints[kind]
    for batch, length in [(1, 5), (4, 16), (7, 40)]:  # 40 > the config's seq_length: only positions limit it
        ids, mask, types = inputs(batch, length, seed=length)
        got = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        expected = cell(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))
        expected = [expected[0]] if kind == "classifier" else [expected[0], expected[1]]
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e.asnumpy(), atol=2e-5)


@pytest.mark.parametrize("hidden_act, fused", [("gelu", True), ("relu", False)])
def test_onnx_runtime_fuses_the_exported_gelu_and_layernorm(checkpoints, tmp_path, student_config, hidden_act, fused):
    """src/onnx_fusion.py: the exported file has Erf, not gelu_poly's Abs/Exp polynomial, and no
    ReduceSumSquare; ONNX Runtime's optimiser then runs one Gelu and one LayerNormalization kernel each
    (2 layers: 2 GELUs; the embeddings' LayerNorm and 2 a layer). A ReLU model has nothing to rewrite."""
    config = student_config.replace(hidden_act=hidden_act)
    (tmp_path / "act.json").write_text(json.dumps(config.to_dict()))
    save_checkpoint(tmp_path / "act.ckpt", named_parameters(BertForSequenceClassification(config, 3)))
    cfg = load_config([f"--student.model={tmp_path / 'act.json'}", "--seq_length=16",
                       f"--export.checkpoint={tmp_path / 'act.ckpt'}", "--export.file_format=ONNX",
                       f"--export.file_name={tmp_path / 'act'}"])
    path, _ = export_student(cfg)  # its reload check compares the rewritten file with the Cell
    exported = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert exported.count("Erf") == (2 if fused else 0)
    assert "Abs" not in exported and "ReduceSumSquare" not in exported
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert optimized.count("Gelu") == (2 if fused else 0)
    assert optimized.count("LayerNormalization") == 5
    assert "Erf" not in optimized and "Pow" not in optimized


def assert_untouched(folder, path):
    """MindSpore's writer makes its folder private and the file read-only: neither may reach the user."""
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    umask = os.umask(0)
    os.umask(umask)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary folder left


def test_model_and_sequence_length_come_from_the_checkpoint(checkpoints, pynative):
    folder = checkpoints["folder"]
    (folder / "mindir").mkdir()
    os.chmod(folder / "mindir", 0o755)
    cfg = load_config([f"--export.checkpoint={folder / 'recorded.ckpt'}", f"--export.file_name={folder / 'mindir/m'}"])
    assert cfg.seq_length == 128 and cfg.student.model != str(folder / "student.json")
    path, _ = export_student(cfg)
    assert_untouched(folder / "mindir", path)
    assert b"fused_ops" not in path.read_bytes()  # MindSpore's ops only: no path to this machine's library
    graph_cell = ms.nn.GraphCell(ms.load(str(path)))
    ids, mask, types = inputs(3, 24, seed=1)
    expected = checkpoints["classifier"](ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types))[0].asnumpy()
    np.testing.assert_allclose(graph_cell(ms.Tensor(ids), ms.Tensor(mask), ms.Tensor(types)).asnumpy(), expected,
                               atol=1e-6)


def test_failed_write_leaves_nothing(checkpoints, monkeypatch):
    folder = checkpoints["folder"]

    def disk_full(*_, **__):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ms, "export", disk_full)
    cfg = load_config([f"--student.model={folder / 'student.json'}", "--seq_length=16",
                       f"--export.checkpoint={folder / 'classifier.ckpt'}", "--export.file_format=ONNX",
                       f"--export.file_name={folder / 'new' / 'deeper' / 'model'}"])
    with pytest.raises(OSError) as error:
        export_student(cfg)
    assert error.value.filename == str(folder / "new" / "deeper" / "model.onnx")
    assert not (folder / "new").exists()


def test_full_disk_is_one_line_and_leaves_nothing(checkpoints):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = checkpoints["folder"] / f"full-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = subprocess.run(
            [sys.executable, "export.py", f"--student.model={checkpoints['folder'] / 'student.json'}",
             "--seq_length=16", f"--export.checkpoint={checkpoints['folder'] / 'classifier.ckpt'}",
             "--export.file_format=ONNX", f"--export.file_name={point / 'out' / 'model'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, "GLOG_v": "3"})
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1] == (f"error: no space left on the device writing {point / 'out'}"
                                                  "/model.onnx: free some space or choose an output folder on "
                                                  "another disk")
        assert list(point.iterdir()) == []
    finally:
        subprocess.run(["umount", str(point)], check=False)


def test_read_only_folder_is_named_not_the_temporary_file(checkpoints, monkeypatch):
    folder = checkpoints["folder"]

    def read_only(*_, dir=None, **__):
        raise OSError(30, "Read-only file system", str(Path(dir) / ".model.onnx.x1y2z3"))
    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    cfg = load_config([f"--student.model={folder / 'student.json'}", "--seq_length=16",
                       f"--export.checkpoint={folder / 'classifier.ckpt'}", "--export.file_format=ONNX",
                       f"--export.file_name={folder / 'ro' / 'model'}"])
    with pytest.raises(OSError) as error:
        export_student(cfg)
    assert error.value.errno == 30 and error.value.filename == str(folder / "ro")


def test_a_folder_as_target_is_an_error_and_a_killed_export_leaves_nothing_behind(checkpoints):
    folder = checkpoints["folder"]
    args = [f"--student.model={folder / 'student.json'}", "--seq_length=16",
            f"--export.checkpoint={folder / 'classifier.ckpt'}", "--export.file_format=ONNX"]
    (folder / "taken.onnx").mkdir()
    with pytest.raises(ValueError, match="taken.onnx is a folder: give export.file_name a file name"):
        export_student(load_config([*args, f"--export.file_name={folder / 'taken'}"]))
    stale = folder / ".model.onnx.k1ll3d"  # what an export killed with -9 leaves
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    export_student(load_config([*args, f"--export.file_name={folder / 'model'}"]))
    assert (folder / "model.onnx").is_file() and not stale.exists()
