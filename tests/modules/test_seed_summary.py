"""bench/seed_summary.py: students grouped by (student, augmentation) over seeds, mean and sample standard
deviation checked against numpy, the teacher ratio, unfinished runs named."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "seed_summary.py"


def _load():
    spec = importlib.util.spec_from_file_location("seed_summary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(path, phase, evals):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"phase": phase, "step": 10 * (i + 1), "eval": e} for i, e in enumerate(evals)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_seeds_are_grouped_and_summarised(tmp_path):
    task = tmp_path / "mrpc"
    _metrics(task / "metrics.jsonl", "teacher", [{"accuracy": 0.78, "f1": 0.85}, {"accuracy": 0.80, "f1": 0.86}])
    layers = {"layers": [0.76, 0.77], "layers-seed2": [0.75], "layers-seed3": [0.79, 0.74]}
    for name, accs in layers.items():
        (task / name / "td2").mkdir(parents=True)
        _metrics(task / name / "metrics.jsonl", "td2", [{"accuracy": a, "f1": a + 0.05} for a in accs])
    (task / "layers-aug" / "td2").mkdir(parents=True)
    _metrics(task / "layers-aug" / "metrics.jsonl", "td2", [{"accuracy": 0.79, "f1": 0.84}])
    (task / "random" / "td2").mkdir(parents=True)  # started, no evaluation yet

    text = _load().summary(tmp_path)
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in text.splitlines()
            if line.startswith("| mrpc")}
    best = np.array([0.77, 0.75, 0.79])  # each seed's best td2 evaluation
    row = rows[("mrpc", "layers", "no")]
    assert f"{best.mean():.4f} ± {best.std(ddof=1):.4f}" in row
    assert f"{(best + 0.05).mean():.4f} ± {(best + 0.05).std(ddof=1):.4f}" in row
    assert "| 3 |" in row and f"{best.mean() / 0.80:.1%}" in row  # the teacher's best evaluation, 0.80
    assert "1: 0.7700, 2: 0.7500, 3: 0.7900" in row
    assert "| 0.7900 | 0.8400 |" in rows[("mrpc", "layers", "yes")]
    assert "| 0.8000 | 0.8600 | 100% |" in rows[("mrpc", "teacher", "")]
    assert "Not finished (no td2 evaluation yet): mrpc/random" in text


def test_students_are_summarised_without_the_teachers_metrics(tmp_path):
    (tmp_path / "sst2" / "random-aug-seed2" / "td2").mkdir(parents=True)  # the teacher fine-tuned in another folder
    _metrics(tmp_path / "sst2" / "random-aug-seed2" / "metrics.jsonl", "td2", [{"accuracy": 0.83, "f1": 0.84}])
    (tmp_path / "records" / "gd").mkdir(parents=True)  # bench/real_runs.sh's other folders are no task
    (tmp_path / "gd" / "gd").mkdir(parents=True)
    rows = [line for line in _load().summary(tmp_path).splitlines() if line.startswith("| ")][1:]
    assert rows == ["| sst2 | random | yes | 1 | 0.8300 | 0.8400 |  | 2: 0.8300 |"]


def test_the_summary_file_is_written_and_bad_usage_is_one_line(tmp_path):
    _metrics(tmp_path / "sst2" / "metrics.jsonl", "teacher", [{"accuracy": 0.87}])
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "summary.md").read_text() == done.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("usage:") and len(bad.stderr.splitlines()) == 1
