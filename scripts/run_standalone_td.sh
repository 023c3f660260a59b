#!/bin/bash
# Task distillation on one device: phase 1 (intermediate layers), then phase 2 (prediction layer)
# from phase 1's final checkpoint, evaluating on the dev set each epoch and keeping the best.
#   bash scripts/run_standalone_td.sh TASK_YAML [--key=value ...]
# e.g.
#   bash scripts/run_standalone_td.sh src/task_configs/sst2.yaml --device_target=GPU \
#        --data.train_path=/data/sst2_train.mindrecord --data.eval_path=/data/sst2_dev.mindrecord \
#        --teacher.checkpoint=/ckpt/bert_sst2.ckpt --student.checkpoint=./output/gd/student_final.ckpt
# --phase=td1, td2 or eval runs one phase only. Then: grep "The best acc" log.txt
set -eu
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "usage: bash $0 TASK_YAML [--key=value ...]   (task yamls are in src/task_configs/)" >&2
  exit 2
fi
source "$(dirname "$0")/common.sh"
launch python "$REPO_ROOT/run_task_distill.py" --config_path="$1" --phase=td "${@:2}"
