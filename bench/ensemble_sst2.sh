#!/bin/bash
# Multi-teacher distillation on real SST-2 (issue 14, item 1), CPU. Three all-MiniLM-L6-v2 teachers
# fine-tuned on the same rows with seeds 1, 2, 3 (the seed sets the classifier head's init, the data
# order and the dropout masks); their dev accuracy alone and as an ensemble (mean of the logits, what
# `teacher.ensemble` gives the student); then two students of 3 x 384 with the same start (layers 2, 4,
# 6 of the best teacher) and the same td2 budget: one distilled from the best teacher alone, one from
# the ensemble (best teacher first, so `student.init=teacher_layers` copies the same layers).
#   bash bench/ensemble_sst2.sh [DATA_DIR] [OUT_DIR] [--key=value ...]
# DATA_DIR defaults to ../shared/data, OUT_DIR to bench_output/ensemble. Extra --key=value go to every
# training step. A smoke run (minutes): SST2_ROWS=64 STUDENT_STEPS=2 bash bench/ensemble_sst2.sh \
#   ../shared/data /tmp/ens_smoke --teacher_finetune.max_steps=2 --eval.every_steps=0
# Environment: SST2_ROWS (first rows of SST-2 train, default 16000: the teacher of bench/real_runs.sh),
# SEEDS (default "1 2 3"), STUDENT_STEPS (td2 steps of each student, default 250).
# Settings: bench/real_sst2.yaml (seq 64, teacher one epoch at 1e-4, td2 at 1e-4), live teachers.
# Results: OUT_DIR/summary.md; wall times: OUT_DIR/times.tsv. Finished stages are marked in OUT_DIR/done/
# and skipped when the script runs again on the same OUT_DIR (rm -r it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3  # MindSpore's own warnings off
DATA=../shared/data
OUT=bench_output/ensemble
[[ $# -gt 0 && $1 != --* ]] && { DATA=$1; shift; }
[[ $# -gt 0 && $1 != --* ]] && { OUT=$1; shift; }
EXTRA=("$@")
SST2_ROWS=${SST2_ROWS:-16000}
SEEDS=${SEEDS:-1 2 3}
STUDENT_STEPS=${STUDENT_STEPS:-250}
. bench/stage.sh  # stage (a stage a rerun on the same OUT skips once done), bad, positive, shipped_teacher
positive SST2_ROWS SEEDS STUDENT_STEPS
GLUE=$DATA/glue
[[ -f $GLUE/SST-2/train.tsv && -f $GLUE/SST-2/dev.tsv ]] ||
  bad "$GLUE/SST-2 does not hold train.tsv and dev.tsv (give the shared data folder)"
MINILM=$(shipped_teacher) || exit 2
mkdir -p "$OUT/done" "$OUT/data" "$OUT/records"
PRETRAINED=$OUT/teacher_pretrained
VOCAB=$PRETRAINED/vocab.txt
TRAIN=$OUT/records/sst2_train.mindrecord
DEV=$OUT/records/sst2_dev.mindrecord
COMMON=(--config_path=bench/real_sst2.yaml --teacher.model="$PRETRAINED/config.json"
        --data.train_path="$TRAIN" --data.eval_path="$DEV")

echo "# run started $(date -u '+%F %T') UTC" >> "$OUT/times.tsv"
stage "import teacher" python -m src.hf_convert import --hf_dir "$MINILM" --output_dir "$PRETRAINED"
head -n $((SST2_ROWS + 1)) "$GLUE/SST-2/train.tsv" > "$OUT/data/sst2_train.tsv"  # + header
stage "sst2 records" bash -c "python -m src.glue_to_records --task sst2 --input_file '$OUT/data/sst2_train.tsv' \
  --output_file '$TRAIN' --vocab_file '$VOCAB' --seq_length 64 && python -m src.glue_to_records --task sst2 \
  --input_file '$GLUE/SST-2/dev.tsv' --output_file '$DEV' --vocab_file '$VOCAB' --seq_length 64"

teachers=()
for seed in $SEEDS; do
  # the teacher's seed after EXTRA, which wins: a --seed=N given to the script seeds the students only
  stage "teacher seed $seed" python run_task_distill.py "${COMMON[@]}" --phase=teacher "${EXTRA[@]}" \
    --seed="$seed" --output_dir="$OUT/seed$seed" --teacher.checkpoint="$PRETRAINED/model.ckpt"
  teachers+=("$OUT/seed$seed/teacher/teacher_best.ckpt")
done
stage "teachers on dev" python bench/ensemble_teachers.py --dev_file "$GLUE/SST-2/dev.tsv" --vocab_file "$VOCAB" \
  --teachers "${teachers[@]}" --output "$OUT/teachers.json"

# The best teacher first: the single student's teacher, and teacher 0 of the ensemble (the layers copied).
BEST=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['best'])" "$OUT/teachers.json")
rows=("{model: $PRETRAINED/config.json, checkpoint: $BEST}")
for teacher in "${teachers[@]}"; do
  [[ $teacher == "$BEST" ]] || rows+=("{model: $PRETRAINED/config.json, checkpoint: $teacher}")
done
ENSEMBLE="[$(IFS=,; echo "${rows[*]}")]"
STUDENT=(--phase=td2 --student.init=teacher_layers "--student.teacher_layers=[2,4,6]"
         --td2.max_steps="$STUDENT_STEPS" --eval.every_steps=$((STUDENT_STEPS / 2 > 0 ? STUDENT_STEPS / 2 : 1)))
stage "student from the best teacher" python run_task_distill.py "${COMMON[@]}" "${STUDENT[@]}" \
  --output_dir="$OUT/student_single" --teacher.checkpoint="$BEST" "${EXTRA[@]}"
stage "student from the ensemble" python run_task_distill.py "${COMMON[@]}" "${STUDENT[@]}" \
  --output_dir="$OUT/student_ensemble" --teacher.ensemble="$ENSEMBLE" "${EXTRA[@]}"

python - "$OUT" "$STUDENT_STEPS" <<'PY'
"""OUT/summary.md: the teachers' dev accuracy, alone and as an ensemble, and each student's best."""
import json
import sys
from pathlib import Path

out, steps = Path(sys.argv[1]), sys.argv[2]
teachers = json.loads((out / "teachers.json").read_text())


def best_accuracy(run):
    records = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines()]
    found = [r for r in records if r.get("phase") == "td2" and "eval" in r]
    top = max(found, key=lambda r: r["eval"]["accuracy"])
    return f"{top['eval']['accuracy']:.4f} (step {top['step']})"


lines = [f"# Multi-teacher distillation, SST-2 dev ({teachers['examples']} sentences)", "",
         "| model | dev accuracy |", "|---|---|"]
lines += [f"| teacher {Path(t['checkpoint']).parent.parent.name} | {t['accuracy']:.4f} |" for t in teachers["teachers"]]
lines += [f"| ensemble of the teachers (mean logits) | {teachers['ensemble_accuracy']:.4f} |",
          f"| student ({steps} td2 steps) from the best teacher | {best_accuracy('student_single')} |",
          f"| student ({steps} td2 steps) from the ensemble | {best_accuracy('student_ensemble')} |"]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "== done: $OUT/summary.md; wall times: $OUT/times.tsv"
