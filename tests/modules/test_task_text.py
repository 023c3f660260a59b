"""bench/task_text.py: the shared tasks' train text for general distillation, read back line by line; a
missing train file is one error line and leaves no output at all."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "task_text.py"


def _tiny_data(root):
    """A DATA folder in the shared data's layout, with a row of each kind the readers skip."""
    glue = root / "glue"
    (glue / "SST-2").mkdir(parents=True)
    (glue / "SST-2" / "train.tsv").write_text(
        "sentence\tlabel\nit 's a charming journey \t1\ntoo long\t0\textra column\nflat and dull\t0\n")
    (glue / "MRPC").mkdir()
    (glue / "MRPC" / "train.tsv").write_text(
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\tHe said "yes".\tHe agreed.\n'
        "0\t3\t4\tStocks fell.\t\n"
        "0\t5\t6\tRain is due.\tThe sun shone.\n", encoding="utf-8")
    (root / "conll2003").mkdir()
    (root / "conll2003" / "train.txt").write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n.  . O O\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    (root / "squad").mkdir()
    paragraphs = [{"context": "Paris is the capital\nof France.", "qas": []},
                  {"context": "Rome is old.", "qas": []},
                  {"context": "Paris is the capital\nof France.", "qas": []}]
    (root / "squad" / "train-v1.1-subset.json").write_text(
        json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return root


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_train_text_of_every_task(tmp_path):
    data, out = _tiny_data(tmp_path / "data"), tmp_path / "text"
    result = _run(data, out)
    assert result.returncode == 0, result.stderr
    written = {path.name: path.read_text(encoding="utf-8").splitlines() for path in out.iterdir()}
    assert written == {
        "sst2_train.txt": ["it 's a charming journey", "flat and dull"],
        "mrpc_train.txt": ['He said "yes".', "He agreed.", "Rain is due.", "The sun shone."],
        "conll_train.txt": ["EU rejects .", "Peter Blackburn"],
        "squad_train.txt": ["Paris is the capital of France.", "Rome is old."],
    }
    assert "sst2_train.txt: 2 lines, 8 words, 1 rows skipped" in result.stdout
    assert "mrpc_train.txt: 4 lines, 11 words, 1 rows skipped" in result.stdout


def test_missing_train_file_is_one_line_and_no_output(tmp_path):
    data, out = _tiny_data(tmp_path / "data"), tmp_path / "text"
    (data / "squad" / "train-v1.1-subset.json").unlink()  # the last one read: the others are read already
    result = _run(data, out)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: train file {data / 'squad' / 'train-v1.1-subset.json'} does not exist: "
        "DATA must be the shared data folder (see its README)"]
    assert not out.exists()
