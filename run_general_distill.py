"""General distillation: a pretrained BERT teacher into a TinyBERT student on a text corpus.

python run_general_distill.py --data.train_path=RECORDS --teacher.checkpoint=TEACHER.ckpt [--key=value ...]
"""
from src.cli import run_cli
from src.config import load_config
from src.trainer import run_phase


def main(argv):
    run_phase(load_config(argv), "gd")


if __name__ == "__main__":
    run_cli(main, usage=__doc__, config_keys="gd")
