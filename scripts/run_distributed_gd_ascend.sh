#!/bin/bash
# General distillation on DEVICE_NUM Ascend devices of this server, data parallel, one process per
# device, started the rank-table way (HCCL reads the devices and their ranks from RANK_TABLE_FILE).
#   bash scripts/run_distributed_gd_ascend.sh DEVICE_NUM EPOCH_SIZE RANK_TABLE_FILE [--key=value ...]
# e.g.
#   bash scripts/run_distributed_gd_ascend.sh 8 3 /path/hccl_8p.json --data.train_path=/data/wiki_records \
#        --teacher.model=bert_base --teacher.checkpoint=/ckpt/bert_base.ckpt --output_dir=./output
# Each process runs run_general_distill.py --distribute=true --device_target=Ascend
# --gd.epochs=EPOCH_SIZE --device_id=DEVICE_ID, then the --key=value arguments (which win).
# Environment (all optional):
#   DATA_DIR, SCHEMA_DIR, TEACHER_CKPT  instead of --data.train_path, --data.schema_file (TFRecord data:
#                       SCHEMA_DIR also sets --data.format=tfrecord) and --teacher.checkpoint
#   DEVICE_START        device id of the first process (default 0): devices DEVICE_START.. are used
#   RANK_START          rank of the first process (default 0); on a multi-server rank table, run the
#                       script on every server with the rank of its first device there
#   BIND_CORES          1 (default) pins each process to an equal share of the CPU cores with taskset
#                       (skipped when taskset is missing or there are fewer cores than devices); 0 = off
#   HCCL_CONNECT_TIMEOUT  seconds for all ranks to connect (set here to 600 unless given; HCCL's default
#                       is 120): a rank that never starts ends the others after this long
#   HCCL_EXEC_TIMEOUT   seconds a collective waits for the other ranks (HCCL's default, ~1800, is kept;
#                       rank 0 alone saves checkpoints, so keep it above the longest save)
#   JOB_TIMEOUT, FOREGROUND, LOG_FILE   see scripts/common.sh
# Output: LOG<rank>/log.txt per process (with env.log, and MindSpore's own logs in LOG<rank>/ms_log),
# ./log.txt for the supervisor, which stops every process as soon as one fails; checkpoints (rank 0
# only) in OUTPUT_DIR/gd/. Relative paths are taken from the folder you run the script in.
set -eu
source "$(dirname "$0")/common.sh"
USAGE="usage: bash $0 DEVICE_NUM EPOCH_SIZE RANK_TABLE_FILE [--key=value ...]"
[ $# -ge 3 ] || usage_error "expected at least 3 arguments, got $#"
require_count DEVICE_NUM "$1"
require_count EPOCH_SIZE "$2"
[ -f "$3" ] || usage_error "RANK_TABLE_FILE '$3' is not a file"
DEVICE_NUM=$1
RANK_TABLE=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
RANK_SIZE=$(grep -o '"rank_id"' "$RANK_TABLE" | wc -l)
RANK_START=${RANK_START:-0}
if [ $((RANK_START + DEVICE_NUM)) -gt "$RANK_SIZE" ]; then
  usage_error "$RANK_TABLE lists $RANK_SIZE ranks, fewer than RANK_START + DEVICE_NUM = $((RANK_START + DEVICE_NUM))"
fi
ARGS=(--distribute=true --device_target=Ascend "--gd.epochs=$2")
[ -z "${DATA_DIR:-}" ] || ARGS+=("--data.train_path=$DATA_DIR")
[ -z "${SCHEMA_DIR:-}" ] || ARGS+=(--data.format=tfrecord "--data.schema_file=$SCHEMA_DIR")
[ -z "${TEACHER_CKPT:-}" ] || ARGS+=("--teacher.checkpoint=$TEACHER_CKPT")
CORES_PER_RANK=$(($(getconf _NPROCESSORS_ONLN) / DEVICE_NUM))
if [ "${BIND_CORES:-1}" = "0" ] || ! command -v taskset > /dev/null || [ "$CORES_PER_RANK" -lt 1 ]; then
  CORES_PER_RANK=0
fi
export RANK_SIZE HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-600}
export RANK_TABLE_FILE=$RANK_TABLE MINDSPORE_HCCL_CONFIG_PATH=$RANK_TABLE

# start_ranks DEVICE_NUM DEVICE_START RANK_START CORES_PER_RANK ENTRY [ARGS...]: one process per device.
start_ranks() {
  local count=$1 device_start=$2 rank_start=$3 cores=$4 i pinned=() started=()
  shift 4
  for ((i = 0; i < count; i++)); do
    local rank=$((rank_start + i)) device=$((device_start + i))
    mkdir -p "LOG$rank/ms_log"
    if [ "$cores" -gt 0 ]; then
      pinned=(taskset -c "$((i * cores))-$((i * cores + cores - 1))")
    fi
    (
      export DEVICE_ID=$device RANK_ID=$rank GLOG_log_dir=$PWD/LOG$rank/ms_log GLOG_logtostderr=0
      env > "LOG$rank/env.log"
      exec "${pinned[@]}" python "$@" "--device_id=$device" > "LOG$rank/log.txt" 2>&1
    ) &
    echo "rank $rank on device $device: pid $!, log LOG$rank/log.txt${pinned[*]:+, ${pinned[*]}}"
    started+=("rank $rank (LOG$rank/log.txt)" $!)
  done
  supervise "${started[@]}"
}

launch_job start_ranks "$DEVICE_NUM" "${DEVICE_START:-0}" "$RANK_START" "$CORES_PER_RANK" \
  "$REPO_ROOT/run_general_distill.py" "${ARGS[@]}" "${@:4}"
