"""Label raw text with a trained model (a task checkpoint, a MINDIR or ONNX file, or a deploy folder).

python predict.py --model demo_output/run/td2/student_best.ckpt --vocab_file VOCAB "a sentence" "another"
python predict.py --model demo_output/deploy --input dev.tsv --output predictions.csv
Options: python predict.py --help (src/predict.py).
"""
from src.cli import run_cli
from src.predict import main

if __name__ == "__main__":
    run_cli(main)
