#!/bin/bash
# General distillation on one device.
#   bash scripts/run_standalone_gd.sh [--key=value ...]
# Any config key can be given, e.g.
#   bash scripts/run_standalone_gd.sh --device_target=GPU --data.train_path=/data/wiki_records \
#        --teacher.model=bert_base --teacher.checkpoint=/ckpt/bert_base.ckpt --output_dir=./output
# Output: log.txt here (FOREGROUND=1 to watch it), checkpoints in OUTPUT_DIR/gd/.
set -eu
source "$(dirname "$0")/common.sh"
launch python "$REPO_ROOT/run_general_distill.py" "$@"
