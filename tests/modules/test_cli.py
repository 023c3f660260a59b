"""Command-line entry points: one `error:` line and an exit code for every user-facing failure, real --help."""
import errno
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
import yaml

from src.checkpoint import named_parameters, save_checkpoint
from src.cli import ENVIRONMENT_ERROR, MAIN_KEYS, USER_ERROR, describe_error, read_json, run_cli
from src.config import DEFAULT_CONFIG
from src.records_writer import RecordsWriter
from src.prune.sparse_format import save_sparse
from src.tinybert_model import BertConfig, BertModel

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=32)


def run(*args, env=None):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "GLOG_v": "3", **(env or {})})


def exit_of(main, capsys):
    """(exit code, stderr) of run_cli(main)."""
    with pytest.raises(SystemExit) as stop:
        run_cli(main, [])
    return stop.value.code, capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    code, err = exit_of(interrupted, capsys)
    assert code == 130 and err.startswith("error: interrupted (Ctrl-C)") and len(err.splitlines()) == 1


@pytest.fixture
def mount_point(tmp_path):
    """A fresh folder to mount a tmpfs on (needs root: the test is skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    yield point
    subprocess.run(["umount", str(point)], check=False, capture_output=True)


def mount_tmpfs(point, options):
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")


@pytest.mark.parametrize("script, keys", [("run_general_distill.py", "gd"), ("run_task_distill.py", "td"),
                                          ("export.py", "export")])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_main_keys_with_their_defaults(script, keys, flag):
    result = run(script, "--output_dir=/x", flag)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines()[0] == (ROOT / script).read_text().split('"""')[1].splitlines()[0]
    defaults = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for key in MAIN_KEYS[keys]:
        value = defaults
        for part in key.split("."):
            value = value[part]
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"--{key}="))
        assert yaml.safe_load(line.split("=", 1)[1].split("  ")[0]) == value, line
    assert f"Every key, documented: {DEFAULT_CONFIG}" in result.stdout


def test_value_errors_stay_one_line_with_code_2(capsys):
    def main(_):
        raise ValueError("gd.batch_size: must be positive, got 0")
    assert exit_of(main, capsys) == (2, "error: gd.batch_size: must be positive, got 0\n")


@pytest.mark.parametrize("error, message", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out/gd/config.yaml"),
     "permission denied on /data/out/gd/config.yaml: choose a folder you can write to (e.g. --output_dir=...), "
     "or fix its permissions"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "no space left on the device: free some space or choose an output folder on another disk"),
    (OSError(errno.ENOSPC, "No space left on device", "/mnt/x/a.tmp", None, "/mnt/x/a"),
     "no space left on the device writing /mnt/x/a.tmp -> /mnt/x/a: free some space or choose an output folder "
     "on another disk"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/out"),
     "/ro/out is on a read-only file system: choose a writable output folder"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such/vocab.txt"),
     "/no/such/vocab.txt does not exist: check the path"),
    (MemoryError(), "out of memory: lower the batch size or seq_length, or use a machine with more memory"),
    (ImportError("sympy is required for symbolic shape inference"),
     "sympy is required for symbolic shape inference: install the project's requirements "
     "(pip install -r requirements.txt)"),
])
def test_environment_errors_name_the_path_and_the_fix(error, message):
    assert describe_error(error)[0] == message


def test_a_path_with_a_file_where_a_folder_should_be_is_bad_input(tmp_path):
    """Writing under a path one of whose folders is a file (making the folder: EEXIST; opening below it:
    ENOTDIR) or reading a folder as a file (EISDIR) is the user's path: exit code 2, the path named."""
    afile = tmp_path / "in.jsonl"
    afile.write_text("{}\n", encoding="utf-8")
    with pytest.raises(FileExistsError) as made:
        afile.mkdir(parents=True, exist_ok=True)  # the output folder of --output in.jsonl/x.csv
    assert describe_error(made.value) == (f"a part of {afile} is a file where a folder was expected: check the "
                                          "path", USER_ERROR)
    with pytest.raises(NotADirectoryError) as opened:
        (afile / "x.csv").write_text("")
    assert describe_error(opened.value) == (f"a part of {afile / 'x.csv'} is a file where a folder was expected: "
                                            "check the path", USER_ERROR)
    with pytest.raises(IsADirectoryError) as read:
        tmp_path.read_text()
    assert describe_error(read.value) == (f"{tmp_path} is a folder where a file was expected: give a file path",
                                          USER_ERROR)
    assert describe_error(PermissionError(errno.EACCES, "Permission denied", "/x"))[1] == ENVIRONMENT_ERROR


def test_read_json_names_the_file_it_cannot_parse(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('["a", "b",]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"labels.json is not valid JSON \(Expecting value at line 1 column 11\): "
                                         "correct it or write it again with the tool that made it"):
        read_json(path)
    path.write_text('["a", "b"]', encoding="utf-8")
    assert read_json(path) == ["a", "b"]


def test_mindspore_runtime_error_loses_its_cpp_stack():
    error = RuntimeError("The pointer[kernel] is null.\n\n----------------------------------------------------\n"
                         "- C++ Call Stack: (For framework developers)\n--------------------------------------"
                         "--------------\nmindspore/ccsrc/x.cc:12 Launch\n")
    assert describe_error(error) == ("The pointer[kernel] is null. (MindSpore; TINYBERT_DEBUG=1 shows the "
                                     "traceback)", 1)


def test_mindspore_runtime_error_that_refers_to_a_section_gives_that_section():
    error = RuntimeError("Exception thrown from dataset pipeline. Refer to 'Dataset Pipeline Error Message'. \n\n"
                         "------------------------------------------------------------------\n"
                         "- Dataset Pipeline Error Message: \n"
                         "------------------------------------------------------------------\n"
                         "[ERROR] Invalid file, the file does not exist: /x.mindrecord\n\n"
                         "------------------------------------------------------------------\n"
                         "- C++ Call Stack: (For framework developers) \n"
                         "------------------------------------------------------------------\n"
                         "mindspore/ccsrc/minddata/mindrecord/io/shard_writer.cc(584).\n")
    assert describe_error(error)[0] == ("Invalid file, the file does not exist: /x.mindrecord (MindSpore; "
                                        "TINYBERT_DEBUG=1 shows the traceback)")


def test_a_bug_keeps_its_traceback(capsys):
    def main(_):
        raise KeyError("a bug")
    with pytest.raises(KeyError):
        run_cli(main, [])


def test_debug_variable_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("TINYBERT_DEBUG", "1")

    def main(_):
        raise ValueError("bad value")
    with pytest.raises(ValueError, match="bad value"):
        run_cli(main, [])


def test_invalid_json_names_the_file(tmp_path):
    student = tmp_path / "student.json"
    student.write_text("hidden_size: 32\n")
    result = run("run_task_distill.py", "--phase=eval", f"--student.model={student}", f"--output_dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: {student} is not valid JSON (Expecting value at line 1 column 1): give the JSON file the option "
        "asks for")


def test_unavailable_device_is_one_line():
    if ms.hal.is_available("GPU"):
        pytest.skip("this MindSpore build has a GPU")
    result = run("run_general_distill.py", "--device_target=GPU", "--output_dir=/tmp/tinybert-never-written")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "C++" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: device_target GPU is not available in this MindSpore build (it has CPU): run with "
        "--device_target=CPU, or install MindSpore built for GPU")


@pytest.fixture
def gd_inputs(tmp_path):
    """A tiny teacher checkpoint, config and GD records: a run that fails only on its output folder."""
    (tmp_path / "model.json").write_text(json.dumps(TINY))
    ms.set_seed(0)
    save_checkpoint(tmp_path / "teacher.ckpt", named_parameters(BertModel(BertConfig(**TINY)), "bert."))
    ids = np.random.default_rng(0).integers(5, 99, (8, 16)).astype(np.int32)
    with RecordsWriter(tmp_path / "gd.mindrecord", "mindrecord", 16) as writer:
        writer.write({"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)})
    return [f"--teacher.model={tmp_path / 'model.json'}", f"--student.model={tmp_path / 'model.json'}",
            f"--teacher.checkpoint={tmp_path / 'teacher.ckpt'}", f"--data.train_path={tmp_path / 'gd.mindrecord'}",
            "--seq_length=16", "--gd.batch_size=4", "--gd.epochs=1"]


def test_read_only_output_folder_is_one_line(gd_inputs, mount_point):
    mount_tmpfs(mount_point, "ro,size=1m")
    result = run("run_general_distill.py", *gd_inputs, f"--output_dir={mount_point / 'out'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (f"error: {mount_point / 'out'} is on a read-only file system: "
                                              "choose a writable output folder")


@pytest.fixture
def full_disk(mount_point):
    """A 16 KiB tmpfs: every tool's output overflows it."""
    mount_tmpfs(mount_point, "size=16k")
    return mount_point


def test_sparse_model_on_a_full_disk_names_its_file_and_leaves_none(full_disk):
    """safetensors' own I/O error (src.checkpoint.write_safetensors) comes out as the OSError it is."""
    path = full_disk / "pruned.sparse.safetensors"
    with pytest.raises(OSError) as raised:
        save_sparse(path, {"w": np.ones((100, 100), np.float32)})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert [p for p in full_disk.rglob("*") if not p.is_dir()] == []


def test_checkpoint_on_a_full_disk_names_its_file_and_leaves_none(full_disk):
    path = full_disk / "gd" / "student_final.ckpt"
    with pytest.raises(OSError) as raised:
        save_checkpoint(path, {"w": ms.Tensor(np.ones((100, 100), np.float32))})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert describe_error(raised.value)[0] == (f"no space left on the device writing {path}: free some space or "
                                               "choose an output folder on another disk")
    assert [p for p in full_disk.rglob("*") if not p.is_dir()] == []


@pytest.fixture
def small_inputs(tmp_path, minilm_dir):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"a fine film number {i} .\t1\n"
                                                                     for i in range(400)))
    (tmp_path / "corpus.txt").write_text("".join(f"sentence {i} of the corpus .\n" for i in range(400)))
    (tmp_path / "student.json").write_text(json.dumps(TINY))
    ms.set_seed(0)
    save_checkpoint(tmp_path / "student.ckpt", named_parameters(BertModel(BertConfig(**TINY)), "bert."))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "fine"]) + "\n")
    return {"folder": tmp_path, "vocab": minilm_dir / "vocab.txt"}


@pytest.mark.parametrize("tool", ["demo_data", "glue_mindrecord", "glue_tfrecord", "corpus_to_records",
                                  "hf_convert_export", "hf_convert_import"])
def test_full_disk_is_one_line_and_leaves_no_file(full_disk, small_inputs, tool):
    src, vocab = small_inputs["folder"], small_inputs["vocab"]
    glue = ["-m", "src.glue_to_records", "--task", "sst2", "--input_file", src / "dev.tsv", "--vocab_file", vocab,
            "--seq_length", 32]
    command = {
        "demo_data": ["-m", "src.demo_data", "--output_dir", full_disk / "demo"],
        "glue_mindrecord": [*glue, "--output_file", full_disk / "out" / "dev.mindrecord"],
        "glue_tfrecord": [*glue, "--output_file", full_disk / "out" / "dev.tfrecord", "--format", "tfrecord"],
        "corpus_to_records": ["-m", "src.corpus_to_records", "--input_files", src / "corpus.txt", "--vocab_file",
                              vocab, "--output_dir", full_disk / "gd", "--seq_length", 32],
        "hf_convert_export": ["-m", "src.hf_convert", "export", "--checkpoint", src / "student.ckpt", "--config",
                              src / "student.json", "--vocab_file", src / "vocab.txt", "--output_dir",
                              full_disk / "hf"],
        "hf_convert_import": ["-m", "src.hf_convert", "import", "--hf_dir", vocab.parent, "--output_dir",
                              full_disk / "imported"],
    }[tool]
    result = run(*command)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.fullmatch(r"error: no space left on the device( writing \S+)?: free some space or choose an output "
                        r"folder on another disk", result.stderr.splitlines()[-1]), result.stderr
    assert "Failed to save" not in result.stderr  # MindSpore's own CRITICAL line: the error is said once
    assert [p for p in full_disk.rglob("*") if not p.is_dir()] == []


def test_a_folder_where_a_file_is_meant_is_named_as_such(tmp_path):
    """Every reader that needs a file says so when given a folder (it used to say "does not exist"), and
    the entry points print it as one line."""
    from src.checkpoint import load_checkpoint
    from src.config import load_config
    from src.prune.sparse_format import load_sparse
    from src.tokenization import load_vocab
    for read, message in [(lambda: load_checkpoint(tmp_path, "student.checkpoint"), "student.checkpoint"),
                          (lambda: load_config([f"--config_path={tmp_path}"]), "config file"),
                          (lambda: load_sparse(tmp_path), "sparse model"),
                          (lambda: load_vocab(tmp_path), "vocab file")]:
        with pytest.raises(FileNotFoundError, match=f"^{message} {re.escape(str(tmp_path))} is a folder, not a file"):
            read()
    with pytest.raises(FileNotFoundError, match="does not exist: check the path you passed"):
        load_checkpoint(tmp_path / "missing.ckpt")
    result = run("-m", "src.prune.sparse_format", "unpack", "--input", tmp_path, "--output", tmp_path / "x.ckpt")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: sparse model {tmp_path} is a folder, not a file: check the "
                                                  "path you passed"]
