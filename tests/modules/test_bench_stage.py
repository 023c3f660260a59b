"""bench/stage.sh's `stage`: the resumable runs' bookkeeping (a finished stage is skipped on a rerun, and a
rerun with other settings says that it reuses the earlier output)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stage(out, name, *command):
    """`stage NAME COMMAND...` in a bash that sourced bench/stage.sh with OUT=out."""
    script = f'OUT="$1"; shift; . "{ROOT}/bench/stage.sh"; stage "$@"'
    return subprocess.run(["bash", "-c", script, "bash", str(out), name, *command],
                          capture_output=True, text=True, check=False)


def test_a_finished_stage_is_skipped_and_other_settings_are_named(tmp_path):
    (tmp_path / "done").mkdir()
    marker = tmp_path / "done" / "write_text"
    first = stage(tmp_path, "write text", "echo", "first run")
    assert first.returncode == 0 and "first run" in first.stdout and not first.stderr
    assert marker.read_text() == "echo first run\n"
    name, seconds = (tmp_path / "times.tsv").read_text().splitlines()[-1].split("\t")
    assert name == "write text" and int(seconds) >= 0

    again = stage(tmp_path, "write text", "echo", "first run")
    assert "first run" not in again.stdout and "done in an earlier run" in again.stdout and not again.stderr

    other = stage(tmp_path, "write text", "echo", "second run")
    assert other.returncode == 0 and "second run" not in other.stdout  # skipped all the same
    warning, = other.stderr.splitlines()
    assert warning.startswith("warning: write text was done with other settings; its output is reused as it is")
    assert warning.endswith("Then: echo first run; now: echo second run")

    marker.write_text("")  # a marker made by hand (`touch`) to reuse a folder is trusted
    trusted = stage(tmp_path, "write text", "echo", "third run")
    assert "done in an earlier run" in trusted.stdout and not trusted.stderr
    assert len((tmp_path / "times.tsv").read_text().splitlines()) == 1


def test_a_failed_stage_is_not_marked(tmp_path):
    (tmp_path / "done").mkdir()
    failed = stage(tmp_path, "fail", "false")
    assert failed.returncode != 0 and not (tmp_path / "done" / "fail").exists()


def test_settings_are_checked_with_one_error_line():
    def check(script):
        return subprocess.run(["bash", "-c", f'. "{ROOT}/bench/stage.sh"; {script}; echo passed'],
                              capture_output=True, text=True, check=False)
    assert check('TASKS="sst2 mrpc"; one_of TASKS sst2 mrpc; SEEDS="1 2"; positive SEEDS').stdout == "passed\n"
    for script, message in (('TASKS="sst2 qnli"; one_of TASKS sst2 mrpc', "TASKS: qnli is not one of: sst2 mrpc"),
                            ('M=(topK x); one_of "M[@]" topK l0', "M: x is not one of: topK l0"),
                            ('SEEDS="1 0"; positive SEEDS', "SEEDS: 0 is not a whole number of 1 or more")):
        result = check(script)
        assert result.returncode == 2 and not result.stdout and result.stderr == f"error: {message}\n"
