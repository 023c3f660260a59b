"""Dev metrics of bench/real_runs.sh's students over seeds: mean and standard deviation per task, student
and augmentation, and the ratio to the task's teacher (issue 13: small dev sets move by a point on a few
examples, so each student is reported over several seeds).

    python bench/seed_summary.py OUT_DIR        # writes OUT_DIR/summary.md and prints it

Reads OUT_DIR/TASK/metrics.jsonl (the teacher's fine-tuning) and OUT_DIR/TASK/RUN/metrics.jsonl for every
run folder named STUDENT[-aug][-seedN] (seed 1 when no -seedN); a run's score is its td2 phase's best
evaluation, the checkpoint td2 keeps. The standard deviation is the sample one (n - 1); a single seed has
none. Runs without a td2 evaluation yet are listed as unfinished. A task folder without the teacher's
metrics.jsonl (its teacher fine-tuned elsewhere) still gets its students' rows, without the ratio.
"""
import os
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.report import best_eval, read_metrics  # noqa: E402  (after the path set-up)

RUN_NAME = re.compile(r"^(?P<student>[a-z0-9_]+?)(?P<aug>-aug)?(?:-seed(?P<seed>\d+))?$")


def best_scores(metrics_file, phase):
    """{metric: value} of the phase's best evaluation in a metrics.jsonl, or None if it has none."""
    if not metrics_file.is_file():
        return None
    _, record = best_eval(read_metrics(metrics_file).get(phase, {}).get("evals", []))
    return record["eval"] if record else None


def mean_std(values):
    """'0.8521 ± 0.0040' (sample standard deviation), or the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def task_rows(task_dir):
    """Markdown rows of one task folder: the teacher, then each (student, augmentation) over its seeds."""
    teacher = best_scores(task_dir / "metrics.jsonl", "teacher")
    rows, unfinished, groups = [], [], {}
    if teacher:
        rows.append(f"| {task_dir.name} | teacher | | | {teacher['accuracy']:.4f} | {teacher.get('f1', float('nan')):.4f} "
                    "| 100% | |")
    for run in sorted(p for p in task_dir.iterdir() if p.is_dir()):
        match = RUN_NAME.match(run.name)
        if not match or not (run / "td2").is_dir():
            continue
        scores = best_scores(run / "metrics.jsonl", "td2")
        if scores is None:
            unfinished.append(run.name)
            continue
        key = (match["student"], "yes" if match["aug"] else "no")
        groups.setdefault(key, []).append((int(match["seed"] or 1), scores))
    for (student, aug), runs in sorted(groups.items()):
        runs.sort()
        accuracy = [s["accuracy"] for _, s in runs]
        f1 = [s["f1"] for _, s in runs if "f1" in s]
        ratio = f"{statistics.mean(accuracy) / teacher['accuracy']:.1%}" if teacher else ""
        seeds = ", ".join(f"{seed}: {s['accuracy']:.4f}" for seed, s in runs)
        rows.append(f"| {task_dir.name} | {student} | {aug} | {len(runs)} | {mean_std(accuracy)} | "
                    f"{mean_std(f1) if f1 else ''} | {ratio} | {seeds} |")
    return rows, unfinished


def is_task_folder(path):
    """Whether `path` holds a teacher's metrics.jsonl or a student run folder with a td2 phase."""
    return path.is_dir() and ((path / "metrics.jsonl").is_file() or any(
        run.is_dir() and RUN_NAME.match(run.name) and (run / "td2").is_dir() for run in path.iterdir()))


def summary(out_dir):
    """The Markdown summary of every task folder under out_dir (see is_task_folder)."""
    lines = ["# Students over seeds (bench/real_runs.sh)", "",
             "Dev metrics of each student's td2 best checkpoint: mean ± sample standard deviation over the seeds; "
             "'of the teacher' is the mean accuracy over the teacher's.", "",
             "| task | student | augmented | seeds | dev acc | dev F1 | of the teacher | per seed (acc) |",
             "|---|---|---|---|---|---|---|---|"]
    unfinished = []
    for task_dir in sorted(p for p in Path(out_dir).iterdir() if is_task_folder(p)):
        rows, left = task_rows(task_dir)
        lines += rows
        unfinished += [f"{task_dir.name}/{name}" for name in left]
    if unfinished:
        lines += ["", "Not finished (no td2 evaluation yet): " + ", ".join(unfinished)]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python bench/seed_summary.py OUT_DIR  (the output folder of bench/real_runs.sh)")
    text = summary(sys.argv[1])
    path = Path(sys.argv[1]) / "summary.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    print(text, end="")


if __name__ == "__main__":
    main()
