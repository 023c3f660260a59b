#!/bin/bash
# Multi-task distillation on real GLUE data (issue 14, item 2), CPU. One 3 x 384 student learns SST-2,
# MRPC and QNLI at once, each task from its own fine-tuned all-MiniLM-L6-v2 teacher (--phase=multitask);
# the baseline is a single-task td2 student per task, from the same initial student, trained for the
# same total number of steps as the multi-task student (which spends them on all three tasks).
#   bash bench/multitask_glue.sh [DATA_DIR] [OUT_DIR] [--key=value ...]
# DATA_DIR defaults to ../shared/data, OUT_DIR to bench_output/multitask. Extra --key=value go to every
# training step. A smoke run (minutes): ROWS=200 bash bench/multitask_glue.sh ../shared/data /tmp/mt_smoke \
#   --gd.max_steps=2 --teacher_finetune.max_steps=2 --multitask_train.max_steps=2
# Environment:
#   SST2_ROWS  first rows of SST-2 train used (default 8000)
#   ROWS       keep only the first ROWS rows of every task file, train and dev (smoke runs; default all;
#              the GD corpus is not cut)
#   GD_STUDENT an existing general-distillation checkpoint of the same student shape to start from
#              (e.g. bench_output/gd/gd/student_final.ckpt of bench/real_runs.sh); default: run GD here,
#              the student starting from layers 2, 4, 6 of the pretrained MiniLM
#   SST2_TEACHER_RUN, MRPC_TEACHER_RUN, QNLI_TEACHER_RUN  an earlier teacher run's output folder of that task
#              (holding teacher/teacher_best.ckpt and metrics.jsonl, e.g. bench_output/sst2 of bench/real_runs.sh:
#              16,000 rows at sequence 64): used instead of fine-tuning that task's teacher here
# QNLI has no public labelled test set and the shared data holds its dev set only: it is split by its
# `index` column, rows with index % 5 == 0 (1,093 of 5,463) for evaluation, the other 4,370 for training.
# Results: OUT_DIR/summary.md (every task's dev metric: teacher, single-task student, multi-task
# student at its best mean); wall times: OUT_DIR/times.tsv. Finished stages are marked in OUT_DIR/done/
# and skipped when the script runs again on the same OUT_DIR (rm -r it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3  # MindSpore's own warnings off
DATA=../shared/data
OUT=bench_output/multitask
[[ $# -gt 0 && $1 != --* ]] && { DATA=$1; shift; }
[[ $# -gt 0 && $1 != --* ]] && { OUT=$1; shift; }
EXTRA=("$@")
SST2_ROWS=${SST2_ROWS:-8000}
ROWS=${ROWS:-}
. bench/stage.sh  # stage (skipped by a rerun once done), head_rows, reuse_teacher, bad, positive, shipped_teacher
positive SST2_ROWS ROWS
GLUE=$DATA/glue
WIKITEXT=$DATA/wikitext/wikitext-2-raw.wiki.test.raw
inputs=("$GLUE"/{SST-2/train.tsv,SST-2/dev.tsv,MRPC/train.tsv,MRPC/dev.tsv,QNLI/dev.tsv})
[[ -z ${GD_STUDENT:-} ]] && inputs+=("$WIKITEXT")
for file in "${inputs[@]}"; do
  [[ -f $file ]] || bad "$file does not exist (give the shared data folder)"
done
MINILM=$(shipped_teacher) || exit 2
mkdir -p "$OUT/done" "$OUT/data" "$OUT/records"
PRETRAINED=$OUT/teacher_pretrained
VOCAB=$PRETRAINED/vocab.txt
CONFIG=(--config_path=bench/multitask_glue.yaml --teacher.model="$PRETRAINED/config.json")

echo "# run started $(date -u '+%F %T') UTC" >> "$OUT/times.tsv"
stage "import teacher" python -m src.hf_convert import --hf_dir "$MINILM" --output_dir "$PRETRAINED"

# The task files: SST-2 train cut to SST2_ROWS, QNLI dev split by index, everything cut to ROWS if set.
SST2_TRAIN_ROWS=$SST2_ROWS; [[ -n $ROWS && $ROWS -lt $SST2_ROWS ]] && SST2_TRAIN_ROWS=$ROWS
head_rows "$GLUE/SST-2/train.tsv" "$SST2_TRAIN_ROWS" > "$OUT/data/sst2_train.tsv"
head_rows "$GLUE/SST-2/dev.tsv" "$ROWS" > "$OUT/data/sst2_dev.tsv"
head_rows "$GLUE/MRPC/train.tsv" "$ROWS" > "$OUT/data/mrpc_train.tsv"
head_rows "$GLUE/MRPC/dev.tsv" "$ROWS" > "$OUT/data/mrpc_dev.tsv"
# qnli_part TEST: the header and the rows whose index % 5 == 0 is TEST (1: the test part, 0: the train part).
qnli_part() {
  awk -F'\t' -v test="$1" -v rows="$ROWS" 'NR == 1 || (($1 % 5 == 0) == test && (rows == "" || ++n <= rows))' \
    "$GLUE/QNLI/dev.tsv"
}
qnli_part 0 > "$OUT/data/qnli_train.tsv"
qnli_part 1 > "$OUT/data/qnli_dev.tsv"
TASKS=(sst2 mrpc qnli)
for task in "${TASKS[@]}"; do
  for split in train dev; do
    stage "$task $split records" python -m src.glue_to_records --task "$task" --input_file "$OUT/data/${task}_$split.tsv" \
      --output_file "$OUT/records/${task}_$split.mindrecord" --vocab_file "$VOCAB" --seq_length 128
  done
done

# One teacher per task, fine-tuned from the pretrained MiniLM; MRPC as bench/real_mrpc.yaml does (dev acc 0.80
# in bench/REAL_RUNS.md), the others with the settings of bench/multitask_glue.yaml.
teacher_args() {
  case $1 in
    mrpc) echo "--teacher_finetune.epochs=2 --teacher_finetune.batch_size=16 --teacher_finetune.learning_rate=5.0e-5" ;;
    *) ;;
  esac
}
for task in "${TASKS[@]}"; do
  reuse=${task^^}_TEACHER_RUN
  if [[ -n ${!reuse:-} ]]; then
    stage "$task teacher" reuse_teacher "${!reuse}" "$task"
    continue
  fi
  # shellcheck disable=SC2046  # teacher_args prints several --key=value words
  stage "$task teacher" python run_task_distill.py "${CONFIG[@]}" --task.name="$task" --phase=teacher \
    --output_dir="$OUT/$task" --teacher.checkpoint="$PRETRAINED/model.ckpt" \
    --data.train_path="$OUT/records/${task}_train.mindrecord" --data.eval_path="$OUT/records/${task}_dev.mindrecord" \
    $(teacher_args "$task") "${EXTRA[@]}"
done

# The initial student of every run: general distillation on WikiText from layers 2, 4, 6 of the pretrained
# MiniLM (or the one given).
if [[ -z ${GD_STUDENT:-} ]]; then
  stage "gd records" python -m src.corpus_to_records --input_files "$WIKITEXT" \
    --vocab_file "$VOCAB" --output_dir "$OUT/records/gd" --seq_length 128
  stage "gd" python run_general_distill.py "${CONFIG[@]}" --output_dir="$OUT/gd" \
    --teacher.checkpoint="$PRETRAINED/model.ckpt" --data.train_path="$OUT/records/gd" --student.init=teacher_layers \
    "--student.teacher_layers=[2,4,6]" "${EXTRA[@]}"
  GD_STUDENT=$OUT/gd/gd/student_final.ckpt
fi

rows=()
for task in "${TASKS[@]}"; do
  rows+=("{name: $task, train_path: $OUT/records/${task}_train.mindrecord, eval_path: $OUT/records/${task}_dev.mindrecord, teacher_checkpoint: $OUT/$task/teacher/teacher_best.ckpt}")
done
MULTITASK_ROWS="[$(IFS=,; echo "${rows[*]}")]"
stage "multitask" bash -c 'set -o pipefail; python run_task_distill.py "$@" | tee "$0"' "$OUT/multitask.log" "${CONFIG[@]}" \
  --phase=multitask --output_dir="$OUT/multitask" --multitask.tasks="$MULTITASK_ROWS" --student.init=checkpoint \
  --student.checkpoint="$GD_STUDENT" "${EXTRA[@]}"
# "training multitask: N steps (E epochs of S steps), ..." (or "N steps (max_steps; E epochs of S steps would
# be T)"): the baselines get N steps, evaluated every S (or at their end, in a run shorter than an epoch).
read -r STEPS EPOCH_STEPS < <(sed -n 's/.*training multitask: \([0-9]*\) steps (.*[0-9]* epochs\? of \([0-9]*\) steps.*/\1 \2/p' \
  "$OUT/multitask.log" | tail -n 1)
[[ -n ${STEPS:-} ]] || { echo "error: no 'training multitask: N steps' line in $OUT/multitask.log" >&2; exit 1; }
EVERY=$((EPOCH_STEPS < STEPS ? EPOCH_STEPS : STEPS))
for task in "${TASKS[@]}"; do
  stage "$task single-task student" python run_task_distill.py "${CONFIG[@]}" --task.name="$task" --phase=td2 \
    --output_dir="$OUT/$task/single" --teacher.checkpoint="$OUT/$task/teacher/teacher_best.ckpt" \
    --student.init=checkpoint --student.checkpoint="$GD_STUDENT" --td2.max_steps="$STEPS" \
    --eval.every_steps="$EVERY" --data.train_path="$OUT/records/${task}_train.mindrecord" \
    --data.eval_path="$OUT/records/${task}_dev.mindrecord" "${EXTRA[@]}"
done

python - "$OUT" "$STEPS" "${ROWS:-}" "${TASKS[@]}" <<'PY'
"""OUT/summary.md: each task's dev metric for the teacher, its single-task student and the multi-task
student (at the evaluation with the best mean), from the runs' metrics.jsonl."""
import json
import sys
from pathlib import Path

out, steps, rows, tasks = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]


def evals(path, phase):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r.get("phase") == phase and "eval" in r]


def best(path, phase):
    found = evals(path, phase)
    metric = next(iter(found[0]["eval"]))
    return max(found, key=lambda r: r["eval"][metric])


multi = best(out / "multitask/metrics.jsonl", "multitask")
lines = [f"# Multi-task distillation, SST-2 + MRPC + QNLI ({steps} steps for every student)", "",
         f"Multi-task student: best mean {multi['eval']['mean']:.4f} at step {multi['step']}."
         + (f" Every task file, dev sets included, cut to its first {rows} rows (ROWS)." if rows else ""), "",
         "| task | metric | teacher | single-task student | multi-task student |", "|---|---|---|---|---|"]
for task in tasks:
    teacher = best(out / task / "metrics.jsonl", "teacher")
    single = best(out / task / "single/metrics.jsonl", "td2")
    metric = next(iter(single["eval"]))
    lines.append(f"| {task} | {metric} | {teacher['eval'][metric]:.4f} | {single['eval'][metric]:.4f} "
                 f"(step {single['step']}) | {multi['eval'][f'{task}/{metric}']:.4f} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "== done: $OUT/summary.md; wall times: $OUT/times.tsv"
