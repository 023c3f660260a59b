#!/bin/bash
# General distillation on DEVICE_NUM GPUs of this machine, data parallel, started with msrun (NCCL).
#   bash scripts/run_distributed_gd_gpu.sh DEVICE_NUM EPOCH_SIZE DATA_DIR SCHEMA_DIR TEACHER_CKPT [--key=value ...]
# (the model zoo's argument order) e.g.
#   bash scripts/run_distributed_gd_gpu.sh 8 3 /data/wiki_tfrecord /data/schema.json /ckpt/bert_base.ckpt \
#        --teacher.model=bert_base --output_dir=./output
# DATA_DIR: a records file or folder. SCHEMA_DIR: the TFRecord schema json, which also sets
# --data.format=tfrecord; "" for MindRecord data. Each worker runs run_general_distill.py
# --distribute=true --device_target=GPU --gd.epochs=EPOCH_SIZE with the paths, then the --key=value
# arguments (which win).
# Several machines: run the script on each, with DEVICE_NUM = GPUs of that machine and
#   WORKER_NUM=<GPUs on all machines> MASTER_ADDR=<IP of machine 0> MASTER_PORT=<free port there>
#   NODE_RANK=<0 on the master, 1, 2... on the others>
# and the data, teacher and output paths visible on every machine. The other settings (LOG_DIR,
# CLUSTER_TIME_OUT, JOB_TIMEOUT, FOREGROUND, LOG_FILE) and how failures end the job are described
# in scripts/common.sh (msrun_job, supervise).
# Output: LOG/worker_<rank>.log per rank and LOG/scheduler.log; log.txt here holds msrun's messages
# and the first local worker's log; checkpoints (rank 0 only) in OUTPUT_DIR/gd/.
set -eu
source "$(dirname "$0")/common.sh"
USAGE="usage: bash $0 DEVICE_NUM EPOCH_SIZE DATA_DIR SCHEMA_DIR TEACHER_CKPT [--key=value ...]  (SCHEMA_DIR: \"\" ok)"
[ $# -ge 5 ] || usage_error "expected at least 5 arguments, got $#"
require_count DEVICE_NUM "$1"
require_count EPOCH_SIZE "$2"
require_file DATA_DIR "$3"
[ -z "$4" ] || [ -f "$4" ] || usage_error "SCHEMA_DIR '$4' is not a file (give \"\" for MindRecord data)"
[ -f "$5" ] || usage_error "TEACHER_CKPT '$5' is not a file"
ARGS=(--distribute=true --device_target=GPU "--gd.epochs=$2" "--data.train_path=$3" "--teacher.checkpoint=$5")
[ -z "$4" ] || ARGS+=(--data.format=tfrecord "--data.schema_file=$4")
launch_job msrun_job "$1" "$REPO_ROOT/run_general_distill.py" "${ARGS[@]}" "${@:6}"
