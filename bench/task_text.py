"""The unlabelled text of the shared tasks' train splits, as general-distillation input (issue 13, item 3:
"the unlabelled sentences of every task").

    python bench/task_text.py DATA OUT_DIR     # writes OUT_DIR/{sst2,mrpc,conll,squad}_train.txt

DATA is the shared data folder (glue/SST-2, glue/MRPC, conll2003, squad). Each file holds one sentence or
paragraph a line and no blank lines, so src.corpus_to_records packs the whole file as one document:
SST-2's sentences; both sentences of every MRPC pair; CoNLL-2003's sentences, words joined by spaces; SQuAD's
contexts, once each. Only train splits are read, as the students are scored on the dev sets; labels, answers
and questions are left out. Rows the task converters would reject are skipped and counted. Each file is
written under a temporary name and renamed when complete; a missing or unreadable train file is one error line
(exit 2) and no output.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.atomic_files import write_text_atomically  # noqa: E402  (after the path set-up)
from src.cli import require_file, run_cli  # noqa: E402
from src.conll_to_records import read_sentences  # noqa: E402
from src.glue_to_records import TASKS, BadRow, _example, read_rows  # noqa: E402
from src.squad_to_records import read_squad  # noqa: E402


def glue_lines(path, task):
    """The texts of a GLUE train file, text_a then text_b of each row; (lines, rows skipped: those
    src.glue_to_records rejects, by its own row check)."""
    spec = TASKS[task]
    columns = [column for column in (spec.text_a, spec.text_b, spec.label) if column is not None]
    lines, skipped = [], 0
    for _, row in read_rows(path, columns, spec.has_header):
        try:
            if isinstance(row, BadRow):
                raise row
            text_a, text_b, _ = _example(row, spec)
        except BadRow:
            skipped += 1
            continue
        lines.extend(text for text in (text_a, text_b) if text is not None)
    return lines, skipped


def conll_lines(path):
    """CoNLL-2003 sentences as space-joined words; (lines, sentences skipped for a bad line)."""
    sentences = read_sentences(path)
    return [" ".join(s.words) for s in sentences if s.error is None], sum(s.error is not None for s in sentences)


def squad_lines(path):
    """SQuAD contexts, each once, newlines inside a context turned into spaces; (lines, 0)."""
    contexts, _ = read_squad(path)
    return [" ".join(context.split()) for context in dict.fromkeys(contexts)], 0


def main(argv):
    """Reads the four train files under DATA (argv[0]), then writes OUT_DIR/NAME_train.txt (argv[1]) for each.

    Raises:
        ValueError: not two arguments, or a file that its reader rejects (not SQuAD's JSON layout).
        FileNotFoundError: a train file is missing under DATA.
    """
    if len(argv) != 2:
        raise ValueError("usage: python bench/task_text.py DATA OUT_DIR (DATA: the shared data folder)")
    data, out_dir = Path(argv[0]), Path(argv[1])

    def train_file(relative):
        return require_file(data / relative, "train file", "DATA must be the shared data folder (see its README)")

    sources = {
        "sst2": lambda: glue_lines(train_file("glue/SST-2/train.tsv"), "sst2"),
        "mrpc": lambda: glue_lines(train_file("glue/MRPC/train.tsv"), "mrpc"),
        "conll": lambda: conll_lines(train_file("conll2003/train.txt")),
        "squad": lambda: squad_lines(train_file("squad/train-v1.1-subset.json")),
    }
    texts = {name: read() for name, read in sources.items()}  # all read before any is written
    for name, (lines, skipped) in texts.items():
        path = out_dir / f"{name}_train.txt"
        write_text_atomically(path, "".join(line + "\n" for line in lines))
        words = sum(len(line.split()) for line in lines)
        print(f"{path}: {len(lines):,} lines, {words:,} words" + (f", {skipped} rows skipped" if skipped else ""))


if __name__ == "__main__":
    run_cli(main)
