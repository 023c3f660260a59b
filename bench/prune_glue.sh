#!/bin/bash
# Pruning with distillation on real GLUE data (issue 12), CPU. Each task's fine-tuned all-MiniLM-L6-v2
# teacher is pruned under its own soft targets (--phase=prune, bench/prune_glue.yaml) by each unstructured
# method to each fraction of its dense-layer weights kept, then counted (src.prune.count), baked with its
# compact files (src.prune.bake) and the baked model evaluated; and structurally: heads and feed-forward
# rows removed (src.prune.structured, importance from training batches), the smaller model distilled from
# the teacher (td2), its dev metric, encoder size and inference time against the dense teacher's.
#   bash bench/prune_glue.sh [DATA_DIR] [OUT_DIR] [--key=value ...]
# DATA_DIR is the shared data folder (default ../shared/data, right from the project's usual place; give its
# path from a clone elsewhere), OUT_DIR defaults to bench_output/prune. Extra --key=value go to every training
# step (e.g. --prune.max_steps=300). A smoke run (both tasks: 19 min at 13a6aa1, before td1, sharing the CPU
# with another job; 45 min on 2026-12-04 with td1, beside three other jobs that filled the memory):
#   ROWS=64 KEEP=0.5 METHODS=topK STRUCTURED_STEPS=2 STRUCTURED_TD1_STEPS=2 bash bench/prune_glue.sh ../shared/data /tmp/prune_smoke \
#     --teacher_finetune.max_steps=2 --prune.max_steps=4
# Environment:
#   TASKS       default "sst2 mrpc"
#   METHODS     unstructured methods, default "magnitude topK sigmoied_threshold l0" ("" for none)
#   KEEP        fractions of the dense-layer weights kept (magnitude, topK), default "0.5 0.1 0.03"
#   SOFT_LAMBDA, L0_LAMBDA  final_lambda values of sigmoied_threshold and l0 (default "400 800" and "400"):
#               for these the penalty, not a fraction, decides what remains; one run per value, and
#               summary.md gives the fraction each reached (SST-2, 300 steps: 400 -> 19.8%, 800 -> 10.4%)
#   FIXED_STEPS steps of distillation with the masks fixed after each unstructured run (default 0: none; folder
#               METHOD-KEEP-fixed): the prune phase from the run's best checkpoint, its scores restored and
#               frozen, at its final threshold, weights at 5e-5
#   STRUCTURED  "HEADS:ROWS" values, one structured run each (folder structured-HEADSh-ROWSr): heads removed
#               across layers and intermediate rows kept per layer (default 30:896: 42 of MiniLM's 72 heads
#               and 896 of its 1536 rows left; SST-2 with 600 td2 steps: 0.34 points lost, about 1.5x
#               faster; 36:768 is half of each; "" skips structured pruning)
#   STRUCTURED_STEPS  td2 steps of the compacted model (default 600; SST-2 30:896 at 300: 1.6 points lost)
#   STRUCTURED_TD1_STEPS  td1 steps before them (default 300): the compacted model's hidden states matched
#               to the teacher's at every layer (bench/prune_glue.yaml's intermediate_matches); 0: td2 only
#   SST2_ROWS   first rows of SST-2 train (default 16000, as bench/real_runs.sh's teacher)
#   ROWS        keep only the first ROWS rows of every task file (smoke runs)
#   SST2_TEACHER_RUN, MRPC_TEACHER_RUN  an earlier teacher run's output folder of that task (holding
#               teacher/teacher_best.ckpt and metrics.jsonl): SST-2 of bench/real_runs.sh (seq 64), MRPC of
#               bench/multitask_glue.sh (seq 128); used instead of fine-tuning the teacher here
# Results: OUT_DIR/summary.md; wall times: OUT_DIR/times.tsv. Finished stages are marked in OUT_DIR/done/
# and skipped when the script runs again on the same OUT_DIR (rm -r it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3  # MindSpore's own warnings off
DATA=../shared/data
OUT=bench_output/prune
[[ $# -gt 0 && $1 != --* ]] && { DATA=$1; shift; }
[[ $# -gt 0 && $1 != --* ]] && { OUT=$1; shift; }
EXTRA=("$@")
read -r -a TASKS <<< "${TASKS:-sst2 mrpc}"
read -r -a METHODS <<< "${METHODS-magnitude topK sigmoied_threshold l0}"
read -r -a KEEP <<< "${KEEP:-0.5 0.1 0.03}"
read -r -a STRUCTURED <<< "${STRUCTURED-30:896}"
STRUCTURED_STEPS=${STRUCTURED_STEPS:-600}
STRUCTURED_TD1_STEPS=${STRUCTURED_TD1_STEPS:-300}
FIXED_STEPS=${FIXED_STEPS:-0}
SST2_ROWS=${SST2_ROWS:-16000}
ROWS=${ROWS:-}
. bench/stage.sh  # stage, head_rows, reuse_teacher, bad, one_of, positive, shipped_teacher
positive STRUCTURED_STEPS SST2_ROWS ROWS
for name in STRUCTURED_TD1_STEPS FIXED_STEPS; do
  [[ ${!name} =~ ^[0-9]+$ ]] || bad "$name: ${!name} is not a whole number"
done
for keep in "${KEEP[@]}"; do
  [[ $keep =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] || bad "KEEP: $keep is not a fraction in (0, 1]"
done
for spec in "${STRUCTURED[@]}"; do
  [[ $spec =~ ^[0-9]+:[0-9]+$ ]] || bad "STRUCTURED: $spec is not HEADS:ROWS, like 36:768"
done
GLUE=$DATA/glue
for task in "${TASKS[@]}"; do
  case $task in sst2) dir=SST-2 ;; mrpc) dir=MRPC ;; *) bad "TASKS: $task is not sst2 or mrpc" ;; esac
  [[ -f $GLUE/$dir/train.tsv && -f $GLUE/$dir/dev.tsv ]] ||
    bad "$GLUE/$dir does not hold train.tsv and dev.tsv (give the shared data folder)"
done
one_of "METHODS[@]" magnitude topK sigmoied_threshold l0
MINILM=$(shipped_teacher) || exit 2
mkdir -p "$OUT/done" "$OUT/data" "$OUT/records"
PRETRAINED=$OUT/teacher_pretrained

echo "# run started $(date -u '+%F %T') UTC" >> "$OUT/times.tsv"
stage "import teacher" python -m src.hf_convert import --hf_dir "$MINILM" --output_dir "$PRETRAINED"

# The task's sequence length and teacher fine-tuning, as the teachers the script can reuse had them.
declare -A SEQ=([sst2]=64 [mrpc]=128)
teacher_args() {
  case $1 in
    sst2) echo "--teacher_finetune.epochs=1 --teacher_finetune.learning_rate=1.0e-4" ;;
    mrpc) echo "--teacher_finetune.epochs=2 --teacher_finetune.batch_size=16 --teacher_finetune.learning_rate=5.0e-5" ;;
  esac
}
# method_args METHOD KEEP_OR_LAMBDA: the pruning settings of one run: the paper's, with the thresholds set to reach
# KEEP (magnitude, topK) or the penalty's final_lambda (sigmoied_threshold, l0).
# The learned scores (topK, soft movement, l0) learn at 0.1, not the paper's 1e-2: Adam moves a score about
# one learning rate per step, so at 1e-2 a soft-movement weight (gone once sigmoid(S) < 0.1, i.e. S < -2.2)
# never goes in a run of a few hundred steps, and topK's scores (all 0 at first) are ranked on a few steps'
# noise (SST-2, 300 steps, keep 10% at 1e-2: 0.509, chance); the paper's runs are 10+ epochs of MNLI.
method_args() {
  case $1 in
    magnitude) echo "--pruning.initial_threshold=1 --pruning.final_threshold=$2" ;;
    topK) echo "--pruning.initial_threshold=1 --pruning.final_threshold=$2 --pruning.mask_scale=0 \
      --pruning.mask_scores_learning_rate=0.1" ;;
    sigmoied_threshold) echo "--pruning.initial_threshold=0 --pruning.final_threshold=0.1 --pruning.mask_scale=0 \
      --pruning.mask_scores_learning_rate=0.1 --pruning.regularization=l1 --pruning.final_lambda=$2" ;;
    l0) echo "--pruning.mask_scale=2.197 --pruning.mask_scores_learning_rate=0.1 --pruning.regularization=l0 \
      --pruning.final_lambda=$2" ;;
  esac
}

# fixed_args METHOD KEEP_OR_LAMBDA: a pruned run distilled on with its masks fixed: scores frozen, the threshold
# held at the run's final one (a fraction for magnitude and topK; magnitude's mask still follows |W|).
fixed_args() {
  case $1 in
    magnitude|topK) echo "--pruning.initial_threshold=$2 --pruning.final_threshold=$2 --pruning.mask_scores_learning_rate=0" ;;
    sigmoied_threshold) echo "--pruning.initial_threshold=0.1 --pruning.final_threshold=0.1 --pruning.mask_scale=0 \
      --pruning.mask_scores_learning_rate=0 --pruning.regularization=none" ;;
    l0) echo "--pruning.mask_scores_learning_rate=0 --pruning.regularization=none" ;;
  esac
}
# prune_run NAME RUN_DIR ARGS...: prune (--phase=prune with ARGS), count, bake, evaluate the baked model.
prune_run() {
  local name=$1 run=$2
  shift 2
  stage "$name prune" python run_task_distill.py --config_path=bench/prune_glue.yaml --phase=prune \
    --output_dir="$run" "${DATA_ARGS[@]}" "$@"
  stage "$name count" python -m src.prune.count --checkpoint "$run/prune/student_best.ckpt" --output "$run/count.json"
  stage "$name bake" python -m src.prune.bake --checkpoint "$run/prune/student_best.ckpt" \
    --output "$run/baked.ckpt" --sparse_output "$run/baked.int8.safetensors" --sparse_values int8
  stage "$name baked eval" python run_task_distill.py --config_path=bench/prune_glue.yaml --phase=eval \
    --output_dir="$run/baked_eval" --student.checkpoint="$run/baked.ckpt" "${DATA_ARGS[@]}"
}

runs=()
for task in "${TASKS[@]}"; do
  case $task in sst2) dir=SST-2 rows=$SST2_ROWS ;; mrpc) dir=MRPC rows= ;; esac
  [[ -n $ROWS ]] && rows=$ROWS
  head_rows "$GLUE/$dir/train.tsv" "$rows" > "$OUT/data/${task}_train.tsv"
  head_rows "$GLUE/$dir/dev.tsv" "$ROWS" > "$OUT/data/${task}_dev.tsv"
  for split in train dev; do
    stage "$task $split records" python -m src.glue_to_records --task "$task" --input_file "$OUT/data/${task}_$split.tsv" \
      --output_file "$OUT/records/${task}_$split.mindrecord" --vocab_file "$PRETRAINED/vocab.txt" \
      --seq_length "${SEQ[$task]}"
  done
  DATA_ARGS=(--task.name="$task" --data.train_path="$OUT/records/${task}_train.mindrecord"
             --data.eval_path="$OUT/records/${task}_dev.mindrecord" --seq_length="${SEQ[$task]}")
  reuse=${task^^}_TEACHER_RUN
  if [[ -n ${!reuse:-} ]]; then
    stage "$task teacher" reuse_teacher "${!reuse}" "$task"
  else
    # shellcheck disable=SC2046  # teacher_args prints several --key=value words
    stage "$task teacher" python run_task_distill.py --phase=teacher --output_dir="$OUT/$task" \
      --teacher.model="$PRETRAINED/config.json" --teacher.checkpoint="$PRETRAINED/model.ckpt" "${DATA_ARGS[@]}" \
      $(teacher_args "$task") "${EXTRA[@]}"
  fi
  TEACHER=$OUT/$task/teacher/teacher_best.ckpt
  MODELS=(--student.model="$TEACHER" --student.checkpoint="$TEACHER" --teacher.model="$TEACHER" --teacher.checkpoint="$TEACHER")

  for method in "${METHODS[@]}"; do
    case $method in
      sigmoied_threshold) read -r -a keeps <<< "${SOFT_LAMBDA:-400 800}"; label=lambda ;;
      l0) read -r -a keeps <<< "${L0_LAMBDA:-400}"; label=lambda ;;
      *) keeps=("${KEEP[@]}"); label= ;;
    esac
    for keep in "${keeps[@]}"; do
      run=$OUT/$task/$method-$label$keep
      read -r -a margs <<< "$(method_args "$method" "$keep")"
      prune_run "$task $method $label$keep" "$run" "${MODELS[@]}" --pruning.pruning_method="$method" "${margs[@]}" \
        "${EXTRA[@]}"
      runs+=("$task $method $label$keep $run")
      if ((FIXED_STEPS > 0)); then  # distilled on from the best checkpoint's masks, frozen
        read -r -a margs <<< "$(fixed_args "$method" "$keep")"
        prune_run "$task $method $label$keep fixed" "$run-fixed" --student.model="$TEACHER" \
          --student.checkpoint="$run/prune/student_best.ckpt" --teacher.model="$TEACHER" --teacher.checkpoint="$TEACHER" \
          --pruning.pruning_method="$method" "${margs[@]}" "${EXTRA[@]}" --prune.max_steps="$FIXED_STEPS" \
          --prune.learning_rate=5.0e-5 --eval.every_steps=100
        runs+=("$task $method $label$keep+fixed$FIXED_STEPS $run-fixed")
      fi
    done
  done

  for spec in "${STRUCTURED[@]}"; do
    heads=${spec%:*} inter=${spec#*:}  # HEADS:ROWS, checked at the start
    run=$OUT/$task/structured-${heads}h-${inter}r name="$task structured $spec"
    stage "$name compact" python -m src.prune.structured --checkpoint "$TEACHER" \
      --data "$OUT/records/${task}_train.mindrecord" --max_batches 50 --prune_heads "$heads" \
      --intermediate_size "$inter" --output "$run/compact.ckpt"
    stage "$name eval before td2" python run_task_distill.py --config_path=bench/prune_glue.yaml --phase=eval \
      --output_dir="$run/compact_eval" --student.checkpoint="$run/compact.ckpt" "${DATA_ARGS[@]}"
    phase=td2 && ((STRUCTURED_TD1_STEPS > 0)) && phase=td  # td: td1 then td2
    stage "$name $phase" python run_task_distill.py --config_path=bench/prune_glue.yaml --phase=$phase \
      --output_dir="$run" --student.model="$run/compact.ckpt" --student.init=checkpoint \
      --student.checkpoint="$run/compact.ckpt" --teacher.model="$TEACHER" --teacher.checkpoint="$TEACHER" \
      --td1.max_steps="$STRUCTURED_TD1_STEPS" --td2.max_steps="$STRUCTURED_STEPS" --td2.learning_rate=5.0e-5 \
      --distill.hard_label_weight=0.1 "${DATA_ARGS[@]}" "${EXTRA[@]}"
    stage "$name speed" bash -c 'python bench/structured_prune_speed.py --checkpoints "$1" "$2" \
      --batch_size 32 --seq_length "$3" --runs 7 | tee "$4"' _ "$TEACHER" "$run/td2/student_best.ckpt" \
      "${SEQ[$task]}" "$run/speed.txt"
    runs+=("$task structured $spec $run")
  done
done

python - "$OUT" "${runs[@]}" <<'PY'
"""OUT/summary.md: per task the dense teacher's dev metric, then every pruned model's: what it keeps, its
dev metric (masked at the end of pruning, and baked), its files' sizes, and the structured model's speed."""
import json
import re
import sys
from pathlib import Path

out, runs = Path(sys.argv[1]), [line.split(" ", 3) for line in sys.argv[2:]]


def evals(path):
    return [r for r in map(json.loads, path.read_text().splitlines()) if "eval" in r]


def metric(record):
    return next(iter(record["eval"].items()))


def mb(path):
    return f"{path.stat().st_size / 1e6:.1f}"


lines = ["# Pruning with distillation: dev metric, weights kept, sizes", ""]
for task in dict.fromkeys(run[0] for run in runs):
    teacher = max(evals(out / task / "metrics.jsonl"), key=lambda r: metric(r)[1])
    name, dense = metric(teacher)
    dense_mb = mb(out / task / "teacher/teacher_best.ckpt")
    lines += [f"## {task}: dense teacher {name} {dense:.4f}, checkpoint {dense_mb} MB", ""]
    unstructured = [r for r in runs if r[0] == task and r[1] != "structured"]
    if unstructured:
        lines += ["| method | target kept (or final_lambda) | dense-layer weights kept | encoder kept | " + name
                  + f" (masked) | {name} (baked) | of dense | baked .ckpt MB | CSR int8 MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
    for _, method, keep, run in unstructured:
        run = Path(run)
        counts = json.loads((run / "count.json").read_text())
        masked = metric(evals(run / "metrics.jsonl")[-1])[1]
        baked = metric(evals(run / "baked_eval/metrics.jsonl")[-1])[1]
        lines.append(f"| {method} | {keep} | {100 * counts['pruned_weights']['fraction']:.1f}% | "
                     f"{100 * counts['encoder']['fraction']:.1f}% | {masked:.4f} | {baked:.4f} | "
                     f"{100 * baked / dense:.1f}% | {mb(run / 'baked.ckpt')} | {mb(run / 'baked.int8.safetensors')} |")
    for _, _, spec, run in (r for r in runs if r[0] == task and r[1] == "structured"):
        run = Path(run)
        before = metric(evals(run / "compact_eval/metrics.jsonl")[-1])[1]
        after = max(metric(r)[1] for r in evals(run / "metrics.jsonl"))
        speed = (run / "speed.txt").read_text()
        rows = [line for line in speed.splitlines() if re.search(r"\d+\.\d+x$", line)]
        lines += ["", f"Structured {spec} (heads removed:rows kept): {name} {before:.4f} right after compaction, {after:.4f} after distillation "
                  f"({100 * after / dense:.1f}% of dense, {100 * (after - dense):+.1f} points); "
                  f"checkpoint {mb(run / 'td2/student_best.ckpt')} MB.", "", "```", *speed.splitlines()[:3], *rows, "```"]
    lines.append("")
(out / "summary.md").write_text("\n".join(lines))
print("\n".join(lines))
PY
echo "== done: $OUT/summary.md; wall times: $OUT/times.tsv"
