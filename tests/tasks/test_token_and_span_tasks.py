"""NER and extractive QA through the pipeline as a user runs it: converters, teacher fine-tuning,
task distillation (td1 then td2) with evaluation that keeps the best checkpoint, on tiny data."""
import json

import pytest

from src.checkpoint import load_model
from src.tinybert_model import BertForQuestionAnswering, BertForTokenClassification
from tests.tasks.test_pipeline import run

CONLL = """EU B-ORG
rejects O
German B-MISC
call O
to O
boycott O
British B-MISC
lamb O
. O

Peter B-PER
Blackburn I-PER

BRUSSELS B-LOC
1996-08-22 O

Schwarzenegger B-PER
visited O
Paris B-LOC
and O
Berlin B-LOC
"""
SQUAD = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
    {"context": "The Eiffel Tower is in Paris. It was finished in 1889 for the world fair.",
     "qas": [{"id": "q1", "question": "Where is the Eiffel Tower?", "answers": [{"text": "Paris", "answer_start": 23}]},
             {"id": "q2", "question": "When was it finished?", "answers": [{"text": "1889", "answer_start": 49}]}]},
    {"context": "Marie Curie won two Nobel prizes, in physics and in chemistry.",
     "qas": [{"id": "q3", "question": "How many Nobel prizes did Curie win?",
              "answers": [{"text": "two", "answer_start": 16}]}]}]}]}


def _models(work, vocab_size):
    for name, shape in (("teacher", dict(hidden_size=48, num_hidden_layers=4, intermediate_size=64)),
                        ("student", dict(hidden_size=32, num_hidden_layers=2, intermediate_size=48))):
        (work / f"{name}.json").write_text(json.dumps(dict(shape, vocab_size=vocab_size, num_attention_heads=4,
                                                           max_position_embeddings=128)))


def _run_task(work, task_yaml, seq_length, train, dev, *extra):
    common = [f"--config_path={task_yaml}", *extra, f"--teacher.model={work / 'teacher.json'}",
              f"--student.model={work / 'student.json'}", f"--seq_length={seq_length}", f"--output_dir={work / 'out'}",
              f"--data.train_path={train}", f"--data.eval_path={dev}", "--log_steps=1", "--eval.batch_size=4"]
    teacher = run(["run_task_distill.py", *common, "--phase=teacher", "--teacher_finetune.batch_size=4",
                   "--teacher_finetune.epochs=3", "--teacher_finetune.learning_rate=1e-3"], work)
    td = run(["run_task_distill.py", *common, "--phase=td", f"--teacher.checkpoint={work / 'out/teacher/teacher_best.ckpt'}",
              "--td1.batch_size=4", "--td2.batch_size=4", "--td1.epochs=1", "--td2.epochs=2",
              "--td2.learning_rate=1e-3", "--distill.hard_label_weight=0.5"], work)
    return teacher.stdout, td.stdout


def test_ner_teacher_and_distillation(minilm_dir, tmp_path):
    vocab = minilm_dir / "vocab.txt"
    (tmp_path / "train.txt").write_text((CONLL + "\n") * 6)
    (tmp_path / "dev.txt").write_text(CONLL)
    run(["-m", "src.conll_to_records", "--input_file", str(tmp_path / "train.txt"), "--output_file",
         str(tmp_path / "train.mindrecord"), "--vocab_file", str(vocab), "--seq_length", "24"], tmp_path)
    run(["-m", "src.conll_to_records", "--input_file", str(tmp_path / "dev.txt"), "--output_file",
         str(tmp_path / "dev.mindrecord"), "--vocab_file", str(vocab), "--seq_length", "24",
         "--labels_file", str(tmp_path / "train.labels.json")], tmp_path)
    _models(tmp_path, 30522)
    labels = json.loads((tmp_path / "train.labels.json").read_text())
    assert labels[0] == "O" and len(labels) == 6  # the tags this file has
    result = run(["run_task_distill.py", "--config_path=src/task_configs/conll2003.yaml", "--phase=teacher",
                  f"--teacher.model={tmp_path / 'teacher.json'}", "--seq_length=24",
                  f"--data.train_path={tmp_path / 'train.mindrecord'}", f"--data.eval_path={tmp_path / 'dev.mindrecord'}"],
                 tmp_path, expect_ok=False)
    assert "task.num_labels is 9 but the training records' label list has 6 labels" in result.stderr
    teacher_log, td_log = _run_task(tmp_path, "src/task_configs/conll2003.yaml", 24, tmp_path / "train.mindrecord",
                                    tmp_path / "dev.mindrecord", "--task.num_labels=6")
    assert "The best f1 is" in teacher_log and "precision =" in teacher_log
    assert "match: S1 <- T2 hidden" in td_log and "The best f1 is" in td_log
    model, metadata = load_model(tmp_path / "out/td2/student_best.ckpt")
    assert isinstance(model, BertForTokenClassification)
    assert json.loads(metadata["label_names"]) == labels
    # the fine-tuned tagger pruned to 30% of its dense weights under its own soft targets, then baked
    teacher = tmp_path / "out/teacher/teacher_best.ckpt"
    pruned = run(["run_task_distill.py", "--config_path=src/task_configs/conll2003.yaml", "--task.num_labels=6",
                  "--phase=prune", f"--teacher.model={teacher}", f"--teacher.checkpoint={teacher}",
                  f"--student.model={teacher}", f"--student.checkpoint={teacher}", "--seq_length=24",
                  f"--output_dir={tmp_path / 'pruned'}", f"--data.train_path={tmp_path / 'train.mindrecord'}",
                  f"--data.eval_path={tmp_path / 'dev.mindrecord'}", "--prune.batch_size=4", "--prune.epochs=2",
                  "--pruning.pruning_method=topK", "--pruning.final_threshold=0.3", "--eval.batch_size=4"], tmp_path)
    assert "The best f1 is" in pruned.stdout
    model, metadata = load_model(tmp_path / "pruned/prune/student_final_baked.ckpt")
    assert isinstance(model, BertForTokenClassification) and json.loads(metadata["label_names"]) == labels
    kept = model.bert.bert_encoder.layers[1].intermediate.weight.asnumpy() != 0
    assert kept.mean() == pytest.approx(0.3, abs=0.01)


@pytest.mark.slow  # 1.5 minutes; SQuAD's records, heads and deploy folder are tested in tests/modules
def test_squad_teacher_and_distillation(minilm_dir, tmp_path):
    vocab = minilm_dir / "vocab.txt"
    copies = [{**article, "paragraphs": [{**p, "qas": [{**q, "id": f"{q['id']}-{n}"} for q in p["qas"]]}
                                         for p in article["paragraphs"]]} for n in range(4) for article in SQUAD["data"]]
    (tmp_path / "train.json").write_text(json.dumps({**SQUAD, "data": copies}))
    (tmp_path / "dev.json").write_text(json.dumps(SQUAD))
    for name in ("train", "dev"):
        run(["-m", "src.squad_to_records", "--input_file", str(tmp_path / f"{name}.json"), "--output_file",
             str(tmp_path / f"{name}.mindrecord"), "--vocab_file", str(vocab), "--seq_length", "32",
             "--doc_stride", "8", "--max_query_length", "12"], tmp_path)
    _models(tmp_path, 30522)
    teacher_log, td_log = _run_task(tmp_path, "src/task_configs/squad.yaml", 32, tmp_path / "train.mindrecord",
                                    tmp_path / "dev.mindrecord")
    assert "(exact match" in teacher_log
    questions = sum(len(paragraph["qas"]) for article in SQUAD["data"] for paragraph in article["paragraphs"])
    assert f"on {questions} examples" in teacher_log  # questions (windows: test_deploy_spans.py)
    best = [line for line in td_log.splitlines() if "The best f1 is" in line]
    assert best and "(exact match" in best[0]
    model, _ = load_model(tmp_path / "out/td2/student_best.ckpt")
    assert isinstance(model, BertForQuestionAnswering)


def test_a_task_metric_of_another_task_type_is_one_line(tmp_path):
    result = run(["run_task_distill.py", "--config_path=src/task_configs/conll2003.yaml", "--task.metric=accuracy"],
                 tmp_path, expect_ok=False)
    assert result.returncode == 2 and "task.metric: 'accuracy' is not a metric of token_classification" in result.stderr
