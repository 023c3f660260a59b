"""Task distillation on a GLUE-style task.

Phases: td (td1 then td2), td1 (intermediate layers), td2 (prediction layer; evaluates on the dev
set and keeps the best checkpoint), eval (a checkpoint on the dev set), teacher (fine-tune the
teacher on the task first).

python run_task_distill.py --config_path=src/task_configs/sst2.yaml --phase=td [--key=value ...]
"""
from pathlib import Path

from src.cli import run_cli
from src.config import load_config
from src.trainer import FINAL_CHECKPOINT, run_phase


def main(argv):
    cfg = load_config(argv)
    if cfg.phase != "td":
        run_phase(cfg, cfg.phase)
        return
    run_phase(cfg, "td1")
    # Phase 2 starts from phase 1's final checkpoint, named explicitly, not the newest file.
    phase1 = Path(cfg.output_dir) / "td1" / FINAL_CHECKPOINT.format(model="student")
    run_phase(load_config([*argv, f"--student.checkpoint={phase1}", "--student.init=checkpoint"]), "td2")


if __name__ == "__main__":
    run_cli(main, usage=__doc__, config_keys="td")
