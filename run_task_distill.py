"""Task distillation, fine-tuning, pruning and evaluation on a task: sentence(-pair) classification
or regression (GLUE), token classification (NER) or extractive QA (SQuAD).

Phases: td (td1 then td2), td1 (intermediate layers), td2 (prediction layer; evaluates on the dev
set and keeps the best checkpoint), eval (a checkpoint on the dev set), teacher (fine-tune the
teacher on the task first), prune (pruning with distillation), multitask (one student, a head per
task of multitask.tasks).

python run_task_distill.py --config_path=src/task_configs/sst2.yaml --phase=td [--key=value ...]
"""
from src.cli import run_cli
from src.config import load_config
from src.phases import phases_of
from src.trainer import final_checkpoint, run_phase


def main(argv):
    cfg = load_config(argv)
    previous = ""
    for name in phases_of(cfg.phase):
        # A chained phase starts from its predecessor's final checkpoint, named explicitly, not the newest file.
        run_phase(cfg, name, student_checkpoint=str(final_checkpoint(cfg, previous)) if previous else "")
        previous = name


if __name__ == "__main__":
    run_cli(main, usage=__doc__, config_keys="td")
