"""Export a student checkpoint to MINDIR (default), ONNX, or AIR (Ascend only), and check the file.

python export.py --export.checkpoint=output/td2/student_best.ckpt --student.model=CONFIG [--export.file_format=ONNX]
"""
from src.cli import run_cli
from src.config import load_config
from src.export_model import export_student


def main(argv):
    export_student(load_config(argv))


if __name__ == "__main__":
    run_cli(main, usage=__doc__, config_keys="export")
