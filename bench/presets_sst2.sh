#!/bin/bash
# Distillation presets side by side on SST-2 at the same budget, and td2 with cached teacher logits.
# Results: bench/PRESETS.md. Needs the fine-tuned teacher and the records that
#   TASKS=sst2 STUDENTS=none bash bench/real_runs.sh DATA_DIR OUT_DIR
# writes (run it first, on the same OUT_DIR). Then:
#   bash bench/presets_sst2.sh [OUT_DIR] [--key=value ...]
# Each preset trains the same 3 x 384 student, initialised from layers 2, 4, 6 of the fine-tuned
# teacher: 100 td1 steps with the preset's intermediate matches (lr 5e-5), then the same 100 td2
# steps (bench/real_sst2.yaml), dev accuracy every 50 steps. Extra --key=value change that budget
# (e.g. --student.init=random --td1.learning_rate=1.0e-3 --td1.max_steps=0: a random student, one
# full td1 epoch). Finished presets are skipped on a rerun.
# Wall times: OUT_DIR/presets/times.tsv; summary: OUT_DIR/presets/summary.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3
OUT=bench_output
[[ $# -gt 0 && $1 != --* ]] && { OUT=$1; shift; }
BUDGET=(--student.init=teacher_layers "--student.teacher_layers=[2,4,6]" --td1.learning_rate=5.0e-5
        --td1.max_steps=100 --td2.max_steps=100 --eval.every_steps=50)
for arg in "$@"; do
  [[ $arg == --distill.preset=* ]] && { echo "error: $arg: the script runs every preset itself; leave distill.preset out" >&2
                                        exit 2; }
done
EXTRA=("${BUDGET[@]}" "$@")
TEACHER=$OUT/sst2/teacher/teacher_best.ckpt
TRAIN=$OUT/records/sst2_train.mindrecord
DEV=$OUT/records/sst2_dev.mindrecord
for needed in "$TEACHER" "$TRAIN" "$DEV" "$OUT/teacher_pretrained/config.json"; do
  [[ -f $needed ]] || { echo "error: $needed is missing: run TASKS=sst2 STUDENTS=none bash bench/real_runs.sh DATA_DIR $OUT first" >&2
                        exit 2; }
done
DIR=$OUT/presets
mkdir -p "$DIR"
common=(--config_path=bench/real_sst2.yaml --teacher.model="$OUT/teacher_pretrained/config.json"
        --teacher.checkpoint="$TEACHER" --data.train_path="$TRAIN" --data.eval_path="$DEV")

timed() {  # timed NAME LOG COMMAND...: runs it into LOG, appends "NAME<TAB>seconds" to times.tsv
  local name=$1 log=$2 start=$SECONDS; shift 2
  echo "== $name: $*"
  if ! "$@" > "$log" 2>&1; then
    echo "error: $name failed; the end of $log:" >&2
    tail -n 3 "$log" >&2
    exit 1
  fi
  printf '%s\t%d\n' "$name" $((SECONDS - start)) | tee -a "$DIR/times.tsv"
}

for preset in tinybert minilm minilmv2 hidden_mse_smmd; do
  run=$DIR/$preset
  [[ -f $run/td2/student_final.ckpt ]] && { echo "== $preset: done in an earlier run, skipped"; continue; }
  timed "$preset td" "$DIR/$preset.log" python run_task_distill.py "${common[@]}" --phase=td --output_dir="$run" \
    --distill.preset="$preset" "${EXTRA[@]}"
done

# td2 of the tinybert student again, with the live teacher and from the logits cache (built once, then used).
td2=(python run_task_distill.py "${common[@]}" --phase=td2 "${EXTRA[@]}" --student.init=checkpoint
     --student.checkpoint="$DIR/tinybert/td1/student_final.ckpt" --eval.every_steps=0)
if [[ ! -f $DIR/cache_timed ]]; then
  timed "td2 live teacher" "$DIR/td2_live.log" "${td2[@]}" --output_dir="$DIR/td2_live"
  timed "td2 building the cache" "$DIR/td2_cache_build.log" "${td2[@]}" --output_dir="$DIR/td2_cached" \
    --distill.teacher_cache=true
  rm -r "$DIR/td2_cached/td2"
  timed "td2 from the cache" "$DIR/td2_cached.log" "${td2[@]}" --output_dir="$DIR/td2_cached" \
    --distill.teacher_cache=true
  touch "$DIR/cache_timed"
fi

{
  printf 'preset\tbest dev acc\n'
  for preset in tinybert minilm minilmv2 hidden_mse_smmd; do
    printf '%s\t%s\n' "$preset" "$(grep -o 'The best acc is [0-9.]*' "$DIR/$preset.log" | tail -1 | awk '{print $5}')"
  done
  for log in td2_live td2_cached; do
    printf '%s train ms/step (median)\t%s\n' "$log" "$(grep -o '[0-9]* ms/step' "$DIR/$log.log" | awk 'NR>1 {print $1}' \
      | sort -n | awk '{a[NR]=$1} END {print NR ? a[int((NR+1)/2)] : "n/a (fewer than 2 logged steps: lower --log_steps)"}')"
  done
} | tee "$DIR/summary.tsv"
