"""The launch scripts' own behaviour: early failures reported, logs kept, MindSpore's log level, the
demo's log telling its stages apart. A stand-in `python` keeps most of these fast."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"

# Stands in for python: prints its arguments and GLOG_v, fails on --fail, sleeps FAKE_SLEEP seconds.
# For the demo it answers `-c` with a folder and prints the training runs' best-accuracy lines.
FAKE_PYTHON = r"""#!/bin/bash
echo "GLOG_v=${GLOG_v-unset} args $*"
case "$*" in
  -c*) echo /nowhere/model ;;
  *--fail*) echo "error: gd.batch_size: must be positive, got 0" >&2; exit 2 ;;
  *--phase=teacher*) echo "2026-01-01 00:00:00 The best acc is 0.900000 (step 5), saved to t.ckpt" ;;
  *--phase=td*) echo "2026-01-01 00:00:00 The best acc is 0.850000 (step 9), saved to s.ckpt" ;;
esac
exec sleep "${FAKE_SLEEP:-0}"
"""


@pytest.fixture
def fake_python(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "python").write_text(FAKE_PYTHON)
    (folder / "python").chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def run_script(script, args, cwd, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("GLOG_v", "FOREGROUND", "LOG_FILE")}
    environment.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)


def test_a_run_that_fails_at_once_is_reported(tmp_path):
    """The real entry point with a bad value: the launcher waits, sees it stop, and says why."""
    environment = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "EARLY_CHECK": 120}
    result = run_script(SCRIPTS / "run_standalone_gd.sh", ["--gd.batch_size=0"], tmp_path, **environment)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: gd.batch_size: must be positive, got 0 (the run stopped with exit "
                                          "code 2; its output: log.txt)"]
    assert "running in the background" not in result.stdout
    assert "error: gd.batch_size: must be positive, got 0" in (tmp_path / "log.txt").read_text()


def test_a_run_still_going_is_left_in_the_background(tmp_path, fake_python):
    result = run_script(SCRIPTS / "run_standalone_gd.sh", ["--gd.epochs=1"], tmp_path, EARLY_CHECK=1, FAKE_SLEEP=60,
                        **fake_python)
    assert result.returncode == 0
    match = re.fullmatch(r"running in the background \(pid (\d+)\): follow it with  tail -f log.txt\n", result.stdout)
    assert match, result.stdout
    pid = int(match.group(1))
    try:
        assert Path(f"/proc/{pid}").exists()
        assert "args " + str(ROOT / "run_general_distill.py") + " --gd.epochs=1" in (tmp_path / "log.txt").read_text()
    finally:
        os.kill(pid, signal.SIGTERM)


def test_earlier_logs_are_kept(tmp_path, fake_python):
    (tmp_path / "log.txt").write_text("first run\n")
    outputs = [run_script(SCRIPTS / "run_standalone_td.sh", [str(ROOT / "src/task_configs/sst2.yaml"), f"--seed={i}"],
                          tmp_path, EARLY_CHECK=30, **fake_python) for i in (1, 2)]
    assert all(o.returncode == 0 for o in outputs)
    assert outputs[0].stdout.startswith("the previous log.txt is kept as log.txt.1\n")
    assert (tmp_path / "log.txt.2").read_text() == "first run\n"
    assert "--seed=1" in (tmp_path / "log.txt.1").read_text() and "--seed=2" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("preset, seen", [(None, "3"), ("1", "1")])
def test_mindspore_log_level_defaults_to_errors_only(tmp_path, fake_python, preset, seen):
    env = {**fake_python, "FOREGROUND": 1, **({"GLOG_v": preset} if preset else {})}
    result = run_script(SCRIPTS / "run_standalone_gd.sh", [], tmp_path, **env)
    assert result.returncode == 0 and f"GLOG_v={seen} args" in (tmp_path / "log.txt").read_text()


def test_demo_log_tells_teacher_from_student(tmp_path, fake_python):
    """The demo in a copy of the scripts folder (it writes log.txt in the folder above its scripts)."""
    (tmp_path / "scripts").mkdir()
    for name in ("run_demo.sh", "common.sh"):
        shutil.copy(SCRIPTS / name, tmp_path / "scripts" / name)
    (tmp_path / "log.txt").write_text("an earlier run\n")
    result = run_script(tmp_path / "scripts" / "run_demo.sh", [], tmp_path, **fake_python)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "log.txt.1").read_text() == "an earlier run\n"
    found = subprocess.run(["grep", "best acc", "log.txt"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert found.splitlines() == [
        "[teacher] 2026-01-01 00:00:00 The best acc is 0.900000 (step 5), saved to t.ckpt",
        "[student-td] 2026-01-01 00:00:00 The best acc is 0.850000 (step 9), saved to s.ckpt"]
    assert "  [teacher] 2026-01-01 00:00:00 The best acc is 0.900000" in result.stdout  # the summary, not logged
    assert all(re.match(r"\[[a-z-]+\] ", line) for line in (tmp_path / "log.txt").read_text().splitlines())


def readme_outputs():
    """Every output path a README example writes in the repository: --output_dir, --output_file,
    --output, --sparse_output, and --export.file_name with each export extension."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = set()
    options = r"(--output_dir|--output_file|--output|--sparse_output|--export\.file_name)"
    for option, path in re.findall(options + r"[ =]([\w./-]+)", text):
        if path.startswith("/") or path.upper() == path:  # absolute paths and PLACEHOLDERS are not in the repo
            continue
        path = path.removeprefix("./").rstrip("/")
        found.update([path + ext for ext in (".mindir", ".onnx", ".air")] if option == "--export.file_name"
                     else [path + "/any_file" if "." not in Path(path).name else path])
    return sorted(found)


def test_readme_outputs_are_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = readme_outputs()
    assert {"data/gd/any_file", "hf_student/any_file", "tinybert.mindir", "tinybert.onnx"} <= set(outputs)
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-v", "-n"], cwd=ROOT, text=True,
                            input="\n".join(outputs) + "\n", capture_output=True)
    not_ignored = [line.split("\t")[1] for line in result.stdout.splitlines() if line.startswith("::")]
    assert not_ignored == [], f"README example outputs that git would track: {not_ignored}"
