"""Task distillation on a GLUE-style task: phase td1 (intermediate layers), td2 (prediction layer,
keeps the best checkpoint by dev metric), eval (a checkpoint on the dev set), or teacher (fine-tune
the teacher first).

python run_task_distill.py --config_path=src/task_configs/sst2.yaml --phase=td1 [--key=value ...]
"""
from src.cli import run_cli
from src.config import load_config
from src.trainer import run_phase


def main(argv):
    cfg = load_config(argv)
    run_phase(cfg, cfg.phase)


if __name__ == "__main__":
    run_cli(main)
