#!/bin/bash
# Data-parallel training on WORKER_NUM CPU processes of this machine, started with msrun (MCCL):
# the check that the distributed path trains exactly as one process does (no speed-up on CPU).
#   bash scripts/run_distributed_cpu.sh WORKER_NUM gd|td [--key=value ...]
# gd runs run_general_distill.py, td runs run_task_distill.py (both task phases unless --phase says
# otherwise), each with --distribute=true --device_target=CPU, then the --key=value arguments, e.g.
#   MASTER_PORT=29500 bash scripts/run_distributed_cpu.sh 2 td --config_path=src/task_configs/sst2.yaml \
#        --data.train_path=... --data.eval_path=... --teacher.checkpoint=... --student.checkpoint=...
# --td1.batch_size etc. are per process: WORKER_NUM x batch_size rows make one optimizer step.
# MASTER_PORT (default 8118) must be free; LOG_DIR, CLUSTER_TIME_OUT, JOB_TIMEOUT, FOREGROUND and
# LOG_FILE are described in scripts/common.sh (msrun_job, supervise).
# Output: LOG/worker_<rank>.log per rank and LOG/scheduler.log; log.txt here holds msrun's messages
# and rank 0's log; checkpoints and evaluation (rank 0 only) in OUTPUT_DIR/PHASE/.
set -eu
source "$(dirname "$0")/common.sh"
USAGE="usage: bash $0 WORKER_NUM gd|td [--key=value ...]"
[ $# -ge 2 ] || usage_error "expected at least 2 arguments, got $#"
require_count WORKER_NUM "$1"
case "$2" in
  gd) ENTRY=run_general_distill.py ;;
  td) ENTRY=run_task_distill.py ;;
  *) usage_error "the entry point must be gd or td, got '$2'" ;;
esac
WORKER_NUM=$1 NODE_RANK=-1 launch_job msrun_job "$1" "$REPO_ROOT/$ENTRY" --distribute=true --device_target=CPU "${@:3}"
