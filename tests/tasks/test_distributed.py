"""Distributed training: the launchers, and 2 CPU workers under msrun against one process.

Select with `pytest -m distributed`; the two marked slow (a killed worker, multi-task on 2 workers:
3 minutes) are outside the CI run, `pytest tests -m slow` runs them. Every msrun run lives in this one file, so
that `pytest -n 2 --dist loadfile` never runs two jobs of 2 workers at once. What the msrun runs prove:
  - 2 workers x batch 16 end where 1 process x batch 32 ends (same global batches, step for step),
    with an optimizer made sensitive to the gradient's scale (Adam's eps dominating, no clipping):
    a gradient averaged twice, or summed, would move the weights visibly differently;
  - both ranks end with the same weights (each logs the L1 norm of its student);
  - the learning-rate schedule counts the same steps (the logged lr of every step matches);
  - only rank 0 writes checkpoints and evaluates; task distillation runs both phases distributed;
  - a killed worker ends the job with an error in bounded time;
  - distillation from two teachers, and multi-task distillation, take the same steps (multi-task: the
    same task each step).
Why the global batches match: MindDataset shards a file row by row (row i -> shard i % 2), so with
shuffle off rank r's batch k holds rows 32k + r, 32k + r + 2, ...: together, the single process's
batch k (test_two_shards_make_the_single_process_batches checks it). Rows are full length (mask all
ones), so the masked-mean losses of the two halves average to the loss of the whole batch; dropout
is 0 in both configs.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms
import pytest

from src.checkpoint import load_checkpoint, named_parameters, save_checkpoint, split_metadata
from src.dataset import create_dataset
from src.records_writer import RecordsWriter
from src.tinybert_for_gd_td import make_projection
from src.tinybert_model import BertConfig, BertForSequenceClassification, BertModel
from tests.tasks.test_multitask_run import records, tasks_option, write_tasks
from tests.tasks.test_pipeline import SEQ as PIPELINE_SEQ, run as run_entry

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
ROWS, SEQ, GLOBAL_BATCH = 128, 32, 32
STEPS = ROWS // GLOBAL_BATCH
SMALL = dict(vocab_size=99, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TEACHER = dict(SMALL, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37)
STUDENT = dict(SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=29)
# Adam's update m / (sqrt(v) + eps) is proportional to the gradient when eps dominates: with
# eps = 1 and no clipping, halving the gradient (a second average over 2 ranks) moves the weights
# by 0.05 here (measured), against 7e-8 between the 2-worker and the single-process runs.
SCALE_SENSITIVE = {"learning_rate": 1.0, "eps": 1.0, "clip_norm": 1.0e6, "warmup_ratio": 0.25, "epochs": 1}
L1_LINE = re.compile(r"phase (\w+): student weights L1 norm (\S+) on rank (\d+)")
STEP_LINE = re.compile(r"step: (\d+), outputs are \(([-\d.]+), \w+, [\d.]+\), lr (\S+),")

needs_msrun = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(**extra):
    env = dict(os.environ, GLOG_v="3", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_script(name, args, cwd, **env):
    return subprocess.run(["bash", str(SCRIPTS / name), *map(str, args)], cwd=cwd, env=environment(**env),
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- launcher argument checks

@pytest.mark.parametrize("script, args, message", [
    ("run_distributed_cpu.sh", [], "expected at least 2 arguments"),
    ("run_distributed_cpu.sh", ["0", "gd"], "WORKER_NUM must be a positive integer"),
    ("run_distributed_cpu.sh", ["two", "gd"], "WORKER_NUM must be a positive integer"),
    ("run_distributed_cpu.sh", ["2", "train"], "must be gd or td"),
    ("run_distributed_gd_gpu.sh", ["8", "3", "data"], "expected at least 5 arguments"),
    ("run_distributed_gd_gpu.sh", ["8", "-1", "data", "", "t.ckpt"], "EPOCH_SIZE must be a positive integer"),
    ("run_distributed_gd_gpu.sh", ["8", "3", "missing_data", "", "t.ckpt"], "DATA_DIR 'missing_data' does not exist"),
    ("run_distributed_gd_gpu.sh", ["8", "3", "data", "no.json", "t.ckpt"], "SCHEMA_DIR 'no.json' is not a file"),
    ("run_distributed_gd_gpu.sh", ["8", "3", "data", "", "missing.ckpt"], "TEACHER_CKPT 'missing.ckpt' is not a file"),
    ("run_distributed_gd_ascend.sh", ["8", "3"], "expected at least 3 arguments"),
    ("run_distributed_gd_ascend.sh", ["8x", "3", "rank_table.json"], "DEVICE_NUM must be a positive integer"),
    ("run_distributed_gd_ascend.sh", ["2", "3", "missing.json"], "RANK_TABLE_FILE 'missing.json' is not a file"),
    ("run_distributed_gd_ascend.sh", ["4", "3", "rank_table.json"], "lists 2 ranks, fewer than"),
])
def test_launchers_reject_bad_arguments(tmp_path, script, args, message):
    (tmp_path / "data").mkdir()
    (tmp_path / "t.ckpt").write_text("")
    write_rank_table(tmp_path / "rank_table.json", 2)
    result = run_script(script, args, tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "usage: bash" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "rank_table.json", "t.ckpt"]  # nothing started


def write_rank_table(path, count):
    devices = [{"device_id": str(i), "device_ip": f"192.{i}.1.6", "rank_id": str(i)} for i in range(count)]
    table = {"version": "1.0", "server_count": "1", "status": "completed",
             "server_list": [{"server_id": "10.0.0.1", "device": devices, "host_nic_ip": "reserve"}]}
    path.write_text(json.dumps(table))


# ---------------------------------------------------------------- launchers with fake programs

FAKE_PYTHON = """#!/bin/bash
# Stands in for python: records its arguments, environment and CPU affinity, then fails or waits.
{ echo "pid $$"; echo "args $*"; grep Cpus_allowed_list /proc/$$/status | tr -d '\\t' | sed 's/:/ /'
  env | grep -E '^(RANK_ID|DEVICE_ID|RANK_SIZE|RANK_TABLE_FILE|MINDSPORE_HCCL_CONFIG_PATH|HCCL_CONNECT_TIMEOUT)=' \\
  | sed 's/=/ /'; } > "$FAKE_OUT/rank_$RANK_ID.txt"
[ "${FAKE_FAIL_RANK:-none}" != "$RANK_ID" ] || { echo "RuntimeError: rank $RANK_ID failed"; exit 3; }
exec sleep "${FAKE_SLEEP:-0}"
"""

FAKE_MSRUN = """#!{python}
# Stands in for msrun: records its arguments, then waits FAKE_SLEEP seconds (SIGINT ends it, as msrun).
import os, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
with open(os.path.join(os.environ["FAKE_OUT"], "msrun.txt"), "w") as f:
    f.write("\\n".join(sys.argv[1:]))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
"""


@pytest.fixture
def fake_bin(tmp_path):
    """A bin folder with fake `python` and `msrun`, and the environment that puts it first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "python").write_text(FAKE_PYTHON)
    (folder / "msrun").write_text(FAKE_MSRUN.format(python=sys.executable))
    for program in folder.iterdir():
        program.chmod(0o755)
    out = tmp_path / "fake_out"
    out.mkdir()
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "FAKE_OUT": out, "FOREGROUND": 1}


def read_fake(path):
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def cpu_set(text):
    """'0-2,5' -> {0, 1, 2, 5}"""
    cores = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return cores


@pytest.mark.parametrize("bind_cores", ["1", "0"])
def test_ascend_launcher_starts_one_process_per_device(tmp_path, fake_bin, bind_cores):
    write_rank_table(tmp_path / "rank_table.json", 2)
    result = run_script("run_distributed_gd_ascend.sh", [2, 7, "rank_table.json", "--output_dir=out"], tmp_path,
                        DATA_DIR="/data/wiki", SCHEMA_DIR="/data/schema.json", TEACHER_CKPT="/ckpt/bert.ckpt",
                        BIND_CORES=bind_cores, **fake_bin)
    assert result.returncode == 0, result.stderr
    table = str(tmp_path / "rank_table.json")
    cores = os.cpu_count() // 2
    for rank in range(2):
        seen = read_fake(fake_bin["FAKE_OUT"] / f"rank_{rank}.txt")
        assert seen["args"].split() == [
            str(ROOT / "run_general_distill.py"), "--distribute=true", "--device_target=Ascend", "--gd.epochs=7",
            "--data.train_path=/data/wiki", "--data.format=tfrecord", "--data.schema_file=/data/schema.json",
            "--teacher.checkpoint=/ckpt/bert.ckpt", "--output_dir=out", f"--device_id={rank}"]
        assert (seen["RANK_ID"], seen["DEVICE_ID"], seen["RANK_SIZE"]) == (str(rank), str(rank), "2")
        assert seen["RANK_TABLE_FILE"] == seen["MINDSPORE_HCCL_CONFIG_PATH"] == table
        assert seen["HCCL_CONNECT_TIMEOUT"] == "600"
        pinned = bind_cores == "1" and cores >= 1 and shutil.which("taskset")
        expected = set(range(rank * cores, rank * cores + cores)) if pinned else own_cpus()
        assert cpu_set(seen["Cpus_allowed_list"]) == expected
        assert (tmp_path / f"LOG{rank}" / "log.txt").is_file() and (tmp_path / f"LOG{rank}" / "env.log").is_file()


def own_cpus():
    return cpu_set(re.search(r"Cpus_allowed_list:\s*(\S+)", Path("/proc/self/status").read_text()).group(1))


def test_ascend_launcher_stops_every_rank_when_one_fails(tmp_path, fake_bin):
    write_rank_table(tmp_path / "rank_table.json", 2)
    start = time.time()
    result = run_script("run_distributed_gd_ascend.sh", [2, 1, "rank_table.json"], tmp_path,
                        FAKE_FAIL_RANK=1, FAKE_SLEEP=120, **fake_bin)
    assert result.returncode == 3
    assert time.time() - start < 20
    # FOREGROUND=1 sends the job's stdout and stderr together to the console and log.txt
    assert "error: rank 1 (LOG1/log.txt) exited with code 3; stopping rank 0 (LOG0/log.txt)" in result.stdout
    assert "RuntimeError: rank 1 failed" in (tmp_path / "LOG1" / "log.txt").read_text()
    survivor = int(read_fake(fake_bin["FAKE_OUT"] / "rank_0.txt")["pid"])
    assert not Path(f"/proc/{survivor}").exists()
    assert "exited with code 3" in (tmp_path / "log.txt").read_text()  # the supervisor's log


def test_gpu_launcher_passes_the_cluster_layout_to_msrun(tmp_path, fake_bin):
    (tmp_path / "data").mkdir()
    (tmp_path / "schema.json").write_text("{}")
    (tmp_path / "t.ckpt").write_text("")
    result = run_script("run_distributed_gd_gpu.sh", [8, 3, "data", "schema.json", "t.ckpt", "--gd.batch_size=64"],
                        tmp_path, WORKER_NUM=16, NODE_RANK=1, MASTER_ADDR="10.1.2.3", MASTER_PORT=29500,
                        CLUSTER_TIME_OUT=120, **fake_bin)
    assert result.returncode == 0, result.stderr
    assert (fake_bin["FAKE_OUT"] / "msrun.txt").read_text().split("\n") == [
        "--worker_num=16", "--local_worker_num=8", "--master_addr=10.1.2.3", "--master_port=29500",
        "--node_rank=1", "--log_dir=LOG", "--join=True", "--cluster_time_out=120", "--tail_worker_log=8",
        str(ROOT / "run_general_distill.py"), "--distribute=true", "--device_target=GPU", "--gd.epochs=3",
        "--data.train_path=data", "--teacher.checkpoint=t.ckpt", "--data.format=tfrecord",
        "--data.schema_file=schema.json", "--gd.batch_size=64"]


def test_job_timeout_stops_msrun(tmp_path, fake_bin):
    start = time.time()
    result = run_script("run_distributed_cpu.sh", [2, "gd"], tmp_path, JOB_TIMEOUT=2, FAKE_SLEEP=120, **fake_bin)
    assert result.returncode == 124
    assert time.time() - start < 15
    assert "error: the job ran past JOB_TIMEOUT=2 s; stopping msrun" in result.stdout


# ---------------------------------------------------------------- 2 CPU workers against 1 process

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Configs, a random teacher classifier, an initial student, and GD / task records of full-length rows."""
    folder = tmp_path_factory.mktemp("tiny")
    paths = {name: folder / name for name in ("t.json", "s.json", "teacher.ckpt", "teacher2.ckpt", "init.ckpt",
                                              "gd.mindrecord", "td.mindrecord")}
    paths["t.json"].write_text(json.dumps(TEACHER))
    paths["s.json"].write_text(json.dumps(STUDENT))
    ms.set_seed(0)
    t_config, s_config = BertConfig(**TEACHER), BertConfig(**STUDENT)
    save_checkpoint(paths["teacher.ckpt"], named_parameters(BertForSequenceClassification(t_config, 2)))
    save_checkpoint(paths["teacher2.ckpt"], named_parameters(BertForSequenceClassification(t_config, 2)))
    student = named_parameters(BertModel(s_config), "bert.")
    student.update(named_parameters(make_projection(s_config.hidden_size, t_config.hidden_size,
                                                    s_config.initializer_range), "fit_dense."))
    save_checkpoint(paths["init.ckpt"], student)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, SMALL["vocab_size"], (ROWS, SEQ))
    columns = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": rng.integers(0, 2, (ROWS, SEQ))}
    with RecordsWriter(paths["gd.mindrecord"], "mindrecord", SEQ) as writer:
        writer.write(columns)
    with RecordsWriter(paths["td.mindrecord"], "mindrecord", SEQ, np.int32) as writer:
        writer.write(dict(columns, label_ids=rng.integers(0, 2, ROWS)))
    return paths


def test_two_shards_make_the_single_process_batches(tiny):
    def batches(shards, shard_id):
        data = create_dataset(str(tiny["gd.mindrecord"]), "mindrecord", GLOBAL_BATCH // shards, SEQ,
                              with_labels=False, shuffle=False, num_shards=shards, shard_id=shard_id)
        return [b[0] for b in data.create_tuple_iterator(num_epochs=1, output_numpy=True)]

    single, halves = batches(1, 0), list(zip(batches(2, 0), batches(2, 1)))
    assert len(single) == len(halves) == STEPS
    for whole, (first, second) in zip(single, halves):
        assert sorted(map(tuple, whole)) == sorted(map(tuple, np.concatenate([first, second])))


def common_args(tiny, phase, output_dir):
    args = [f"--teacher.model={tiny['t.json']}", f"--student.model={tiny['s.json']}", f"--seq_length={SEQ}",
            f"--teacher.checkpoint={tiny['teacher.ckpt']}", f"--student.checkpoint={tiny['init.ckpt']}",
            "--data.shuffle=false", f"--output_dir={output_dir}"]
    return args + [f"--{phase}.{key}={value}" for key, value in SCALE_SENSITIVE.items()]


def run_single(tiny, entry, phase, output_dir, extra):
    """One process, batch 32: the reference the 2-worker run must reproduce."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, str(ROOT / entry), *common_args(tiny, phase, output_dir),
                             f"--{phase}.batch_size={GLOBAL_BATCH}", *extra],
                            cwd=output_dir.parent, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def run_two_workers(tiny, entry, phase, output_dir, extra):
    folder = output_dir.parent
    folder.mkdir(parents=True, exist_ok=True)
    result = run_script("run_distributed_cpu.sh", [2, entry, *common_args(tiny, phase, output_dir),
                                                   f"--{phase}.batch_size={GLOBAL_BATCH // 2}", *extra],
                        folder, FOREGROUND=1, MASTER_PORT=free_port(), LOG_DIR=folder / "LOG",
                        LOG_FILE=folder / "log.txt", CLUSTER_TIME_OUT=60, JOB_TIMEOUT=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [(folder / "LOG" / f"worker_{rank}.log").read_text() for rank in range(2)]


def steps(log):
    return [(int(step), float(loss), lr) for step, loss, lr in STEP_LINE.findall(log)]


def l1_norms(log):
    return {phase: float(value) for phase, value, _ in L1_LINE.findall(log)}


def load_weights(path):
    return {name: p.asnumpy() for name, p in ms.load_checkpoint(str(path)).items()
            if isinstance(p, ms.Tensor) and p.dtype != ms.string}


def assert_same_training(single_dir, two_dir, single_log, rank_logs, init_path):
    """Rank 0's checkpoint is the single process's; the ranks agree; losses and lr match step by step."""
    single = load_weights(single_dir / "student_final.ckpt")
    two = load_weights(two_dir / "student_final.ckpt")
    init = load_weights(init_path)
    assert single.keys() == two.keys()
    difference = max(float(np.abs(single[n] - two[n]).max()) for n in single)
    update = max(float(np.abs(single[n] - init[n]).max()) for n in single if n in init)
    assert difference < 1e-5 and difference < 1e-4 * update, (difference, update)
    rank0, rank1 = (steps(log) for log in rank_logs)
    reference = steps(single_log)
    assert len(reference) == len(rank0) == len(rank1) == STEPS
    for (step, loss, lr), (_, loss0, lr0), (_, loss1, lr1) in zip(reference, rank0, rank1):
        assert lr == lr0 == lr1, step  # the schedule counts the same global steps
        assert abs(loss - (loss0 + loss1) / 2) < 2e-6, step  # the two half batches make the whole batch


@pytest.mark.slow
@needs_msrun
def test_general_distillation_on_two_workers_matches_one_process(tiny, tmp_path):
    single_log = run_single(tiny, "run_general_distill.py", "gd", tmp_path / "single" / "out",
                            [f"--data.train_path={tiny['gd.mindrecord']}"])
    logs = run_two_workers(tiny, "gd", "gd", tmp_path / "two" / "out", [f"--data.train_path={tiny['gd.mindrecord']}"])
    assert_same_training(tmp_path / "single" / "out" / "gd", tmp_path / "two" / "out" / "gd", single_log, logs,
                         tiny["init.ckpt"])
    assert l1_norms(logs[0])["gd"] == l1_norms(logs[1])["gd"]  # both ranks hold the same weights
    assert "final checkpoint" in logs[0] and "final checkpoint" not in logs[1]  # only rank 0 saves
    assert "final checkpoint" in (tmp_path / "two" / "log.txt").read_text()  # log.txt follows rank 0


@pytest.mark.slow
@needs_msrun
def test_task_distillation_from_two_teachers_on_two_workers_matches_one_process(tiny, tmp_path):
    """--phase=td from an ensemble of two teachers (td1 matches the first one's layers, td2 the weighted
    mean of their logits): both phases on 2 workers match one process; only rank 0 evaluates and saves."""
    data = [f"--data.train_path={tiny['td.mindrecord']}", f"--data.eval_path={tiny['td.mindrecord']}", "--phase=td",
            f"--teacher.ensemble=[{{model: {tiny['t.json']}, checkpoint: {tiny['teacher.ckpt']}}}, "
            f"{{model: {tiny['t.json']}, checkpoint: {tiny['teacher2.ckpt']}, weight: 2.0}}]",
            *(f"--td2.{key}={value}" for key, value in SCALE_SENSITIVE.items())]
    single, two = tmp_path / "single" / "out", tmp_path / "two" / "out"
    single_log = run_single(tiny, "run_task_distill.py", "td1", single, [*data, f"--td2.batch_size={GLOBAL_BATCH}"])
    logs = run_two_workers(tiny, "td", "td1", two, [*data, f"--td2.batch_size={GLOBAL_BATCH // 2}"])
    for part, (phase, init) in enumerate([("td1", tiny["init.ckpt"]), ("td2", single / "td1" / "student_final.ckpt")]):
        single_part, *rank_parts = (log.split("phase td2, rank")[part] for log in (single_log, *logs))
        assert_same_training(single / phase, two / phase, single_part, rank_parts, init)
    norms = [l1_norms(log) for log in logs]
    assert norms[0] == norms[1] and set(norms[0]) == {"td1", "td2"}
    assert "The best acc is" in logs[0] and f"on {ROWS} examples" in logs[0]  # rank 0 evaluates the whole dev set
    assert "eval: step" not in logs[1] and "The best" not in logs[1] and "final checkpoint" not in logs[1]
    assert (two / "td2" / "student_best.ckpt").is_file()


@pytest.mark.slow
@needs_msrun
def test_a_killed_worker_ends_the_job_with_an_error(tiny, tmp_path):
    psutil = pytest.importorskip("psutil")
    args = [2, "gd", *common_args(tiny, "gd", tmp_path / "out"), f"--data.train_path={tiny['gd.mindrecord']}",
            "--gd.epochs=10000", "--gd.batch_size=16"]
    launcher = subprocess.Popen(["bash", str(SCRIPTS / "run_distributed_cpu.sh"), *map(str, args)], cwd=tmp_path,
                                env=environment(FOREGROUND=1, MASTER_PORT=free_port(), CLUSTER_TIME_OUT=60),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        worker_log = tmp_path / "LOG" / "worker_1.log"
        deadline = time.time() + 120
        while not (worker_log.is_file() and "step: 2," in worker_log.read_text()):
            assert time.time() < deadline and launcher.poll() is None, "the workers did not start training"
            time.sleep(0.5)
        workers = {environ(p).get("RANK_ID"): p for p in psutil.Process(launcher.pid).children(recursive=True)
                   if environ(p).get("MS_ROLE") == "MS_WORKER"}
        victim = workers["1"]
        killed_at = time.time()
        victim.kill()
        output = "".join(launcher.communicate(timeout=120))
        ended_in = time.time() - killed_at
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert ended_in < 90, ended_in  # measured ~31 s: msrun sees the death at once, the scheduler after 30 s
    assert "error: the distributed job failed" in output and "a worker was killed" in output
    assert not any(alive(p) for p in workers.values())


def environ(process):
    try:
        return process.environ()
    except Exception:  # psutil.NoSuchProcess, AccessDenied: not one of our workers any more
        return {}


def alive(process):
    try:
        return process.is_running() and process.status() != "zombie"
    except Exception:  # psutil.NoSuchProcess
        return False


@pytest.mark.slow
@needs_msrun
def test_multitask_on_two_workers_matches_one_process(tmp_path):
    """Multi-task distillation on 2 workers against one process with their two half batches as one:
    the same tasks step by step, the same losses and the same weights."""
    write_tasks(tmp_path)
    for name in ("teacher", "student"):  # dropout masks depend on the rank: none here
        shape = json.loads((tmp_path / f"{name}.json").read_text())
        (tmp_path / f"{name}_nodrop.json").write_text(json.dumps(
            dict(shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)))
    # eps 1 and no clipping make Adam's step proportional to the gradient, so a gradient averaged
    # wrongly across the ranks shows in the weights (as tests/tasks/test_distributed.py does).
    args = [f"--teacher.model={tmp_path / 'teacher_nodrop.json'}", f"--student.model={tmp_path / 'student_nodrop.json'}",
            f"--seq_length={PIPELINE_SEQ}", "--log_steps=1", "--phase=multitask", f"--multitask.tasks={tasks_option(tmp_path)}",
            "--student.init=random", "--multitask_train.epochs=1", "--data.shuffle=false", "--data.padding=max_length",
            "--multitask_train.learning_rate=1.0", "--multitask_train.eps=1.0", "--multitask_train.clip_norm=1.0e6"]
    single = run_entry(["run_task_distill.py", *args, f"--output_dir={tmp_path / 'single'}", "--multitask_train.batch_size=16"], tmp_path)
    result = run_script("run_distributed_cpu.sh", [2, "td", *args, f"--output_dir={tmp_path / 'two'}",
                                                   "--multitask_train.batch_size=8"], tmp_path, FOREGROUND=1,
                        MASTER_PORT=free_port(), LOG_DIR=tmp_path / "LOG", LOG_FILE=tmp_path / "log.txt",
                        CLUSTER_TIME_OUT=60, JOB_TIMEOUT=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [(tmp_path / "LOG" / f"worker_{rank}.log").read_text() for rank in range(2)]
    reference, rank0, rank1 = ([(int(s), float(loss), lr) for s, loss, lr in STEP_LINE.findall(log)]
                               for log in (single.stdout, *ranks))
    assert len(reference) == len(rank0) == len(rank1) == 6
    for (step, loss, lr), (_, loss0, lr0), (_, loss1, lr1) in zip(reference, rank0, rank1):
        assert lr == lr0 == lr1 and abs(loss - (loss0 + loss1) / 2) < 2e-6, step
    assert [r["task"] for r in records(tmp_path / "two/metrics.jsonl") if "loss" in r] == \
        [r["task"] for r in records(tmp_path / "single/metrics.jsonl") if "loss" in r]
    norms = [L1_LINE.findall(log)[0][1] for log in ranks]
    assert norms[0] == norms[1]  # the ranks hold the same weights
    expected, _ = split_metadata(load_checkpoint(tmp_path / "single/multitask/student_final.ckpt"))
    actual, _ = split_metadata(load_checkpoint(tmp_path / "two/multitask/student_final.ckpt"))
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name].asnumpy(), value.asnumpy(), atol=1e-5, err_msg=name)
