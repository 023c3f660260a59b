#!/bin/bash
# One real epoch of teacher fine-tuning and of td2 on SST-2 (sequence 64, batch 32), ours against the same
# epoch in PyTorch + transformers with dynamic padding, in one run (issue 15), the frameworks taking turns:
#   ours:  run_task_distill.py --phase=teacher (bench/real_sst2.yaml's fine-tuning; records padded per batch
#          to the next length bucket, data.padding's default), then --phase=td2 with the teacher-output cache,
#          student = teacher layers 2,4,6
#   torch: bench/hf_finetune_reference.py, then bench/hf_td2_reference.py from our fine-tuned teacher
#          exported to Hugging Face's layout (same teacher logits, same student start)
# Both evaluate on SST-2 dev once, at the end of the epoch.
#   bash bench/epoch_vs_torch.sh [DATA_DIR] [OUT_DIR]
# DATA_DIR defaults to ../shared/data, OUT_DIR to bench_output/epoch. SST2_ROWS: first rows of SST-2 train
# (default 16000, bench/real_runs.sh's teacher epoch; "" for all 67,349).
# Results: OUT_DIR/summary.md (whole command and training loop times); wall times in OUT_DIR/times.tsv.
# Finished stages are skipped when run again on the same OUT_DIR (rm -r it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLOG_v=3  # MindSpore's own warnings off
DATA=../shared/data
OUT=bench_output/epoch
[[ $# -gt 0 ]] && { DATA=$1; shift; }
[[ $# -gt 0 ]] && { OUT=$1; shift; }
SST2_ROWS=${SST2_ROWS-16000}
. bench/stage.sh  # stage, head_rows, bad, positive, shipped_teacher
positive SST2_ROWS
SST2=$DATA/glue/SST-2
[[ -f $SST2/train.tsv && -f $SST2/dev.tsv ]] ||
  bad "$SST2 does not hold train.tsv and dev.tsv (give the shared data folder)"
MINILM=$(shipped_teacher) || exit 2
mkdir -p "$OUT/done" "$OUT/data" "$OUT/records"
PRETRAINED=$OUT/teacher_pretrained

echo "# run started $(date -u '+%F %T') UTC on $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" >> "$OUT/times.tsv"
TRAIN=$OUT/data/sst2_train.tsv
head_rows "$SST2/train.tsv" "$SST2_ROWS" > "$TRAIN"
stage "import teacher" python -m src.hf_convert import --hf_dir "$MINILM" --output_dir "$PRETRAINED"
stage "records" bash -c "python -m src.glue_to_records --task sst2 --input_file '$TRAIN' \
  --output_file '$OUT/records/train.mindrecord' --vocab_file '$PRETRAINED/vocab.txt' --seq_length 64 && \
  python -m src.glue_to_records --task sst2 --input_file '$SST2/dev.tsv' \
  --output_file '$OUT/records/dev.mindrecord' --vocab_file '$PRETRAINED/vocab.txt' --seq_length 64"
ours=(--config_path=bench/real_sst2.yaml --teacher.model="$PRETRAINED/config.json" --output_dir="$OUT/ours"
      --data.train_path="$OUT/records/train.mindrecord" --data.eval_path="$OUT/records/dev.mindrecord"
      --eval.every_steps=0 --log_steps=1)
torch_args=(--task sst2 --train "$TRAIN" --dev "$SST2/dev.tsv" --epochs 1 --batch_size 32 --learning_rate 1e-4
            --seq_length 64)

stage "ours teacher epoch" python run_task_distill.py "${ours[@]}" --phase=teacher \
  --teacher.checkpoint="$PRETRAINED/model.ckpt"
stage "torch teacher epoch" bash -c "python bench/hf_finetune_reference.py ${torch_args[*]} | tee '$OUT/torch_teacher.txt'"
TEACHER=$OUT/ours/teacher/teacher_best.ckpt
stage "export teacher to HF" python -m src.hf_convert export --checkpoint "$TEACHER" \
  --vocab_file "$PRETRAINED/vocab.txt" --output_dir "$OUT/teacher_hf" --num_labels 2
stage "ours td2 epoch" python run_task_distill.py "${ours[@]}" --phase=td2 --teacher.checkpoint="$TEACHER" \
  --student.init=teacher_layers --student.teacher_layers=[2,4,6] --distill.teacher_cache=true
stage "torch td2 epoch" bash -c "python bench/hf_td2_reference.py --teacher_dir '$OUT/teacher_hf' \
  --teacher_layers 2,4,6 ${torch_args[*]} | tee '$OUT/torch_td2.txt'"
python bench/epoch_summary.py "$OUT" | tee "$OUT/summary.md"
