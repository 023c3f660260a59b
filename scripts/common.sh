# Sourced by the launch scripts: run a command in the background into log.txt (the model zoo's way),
# or in the foreground with FOREGROUND=1, still keeping log.txt.
#   LOG_FILE     where the output goes (default: ./log.txt). An existing one is kept, not overwritten:
#                it becomes LOG_FILE.1 (an older LOG_FILE.1 becomes .2, and so on; LOG_KEEP, default 5, kept)
#   FOREGROUND   1 to wait for the run and print its output as well
#   EARLY_CHECK  seconds a background run is watched before the script returns (default 10): a run that
#                stops in that time (a bad option, a missing file) is reported with its error line and
#                exit code instead of "running in the background"
#   GLOG_v       MindSpore's C++ log level; 3 (errors only) unless set

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_FILE=${LOG_FILE:-log.txt}
export GLOG_v=${GLOG_v:-3}

# rotate_log FILE: keep an existing FILE as FILE.1, FILE.1 as FILE.2 ... (LOG_KEEP files), and say so.
rotate_log() {
  local file=$1 keep=${LOG_KEEP:-5} i
  [ -e "$file" ] || return 0
  for ((i = keep - 1; i >= 1; i--)); do
    if [ -e "$file.$i" ]; then mv -f "$file.$i" "$file.$((i + 1))"; fi
  done
  mv -f "$file" "$file.1"
  echo "the previous $file is kept as $file.1"
}

# last_error FILE: the last `error: ...` or Python exception line of FILE, else its last line.
last_error() {
  local found
  found=$(grep -E '^(error: |[A-Za-z_.]*(Error|Exception): )' "$1" | tail -n 1) || true
  [ -n "$found" ] || found=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1) || true
  echo "${found#error: }"
}

launch() {
  rotate_log "$LOG_FILE"
  if [ "${FOREGROUND:-0}" = "1" ]; then
    set -o pipefail
    "$@" 2>&1 | tee "$LOG_FILE"
    return
  fi
  nohup "$@" > "$LOG_FILE" 2>&1 &
  local pid=$! ticks=0 rc=0
  while [ "$ticks" -lt $((${EARLY_CHECK:-10} * 4)) ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.25
    ticks=$((ticks + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "running in the background (pid $pid): follow it with  tail -f $LOG_FILE"
    return 0
  fi
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "error: $(last_error "$LOG_FILE") (the run stopped with exit code $rc; its output: $LOG_FILE)" >&2
    return "$rc"
  fi
  echo "finished already (exit code 0); its output: $LOG_FILE"
}

# ---- distributed launchers (scripts/run_distributed_*.sh) ----
# They run a supervising shell function through `launch` (launch_job), which starts the training
# processes and waits for them (supervise): the first process that fails, or a job older than
# JOB_TIMEOUT seconds (default 0 = no limit), stops all the others, so a dead rank never leaves the
# rest hanging in a collective. The error names the failed process and its log.
#   JOB_TIMEOUT  wall-clock limit of the whole job in seconds (exit code 124 when reached)

# usage_error MESSAGE: MESSAGE and the calling script's $USAGE on stderr, then exit code 2.
usage_error() {
  echo "error: $1" >&2
  echo "$USAGE" >&2
  exit 2
}

# require_count NAME VALUE: VALUE must be a positive integer.
require_count() {
  case "$2" in
    '' | *[!0-9]* | 0*) usage_error "$1 must be a positive integer, got '$2'" ;;
  esac
}

# require_file NAME PATH: PATH must be an existing file or folder.
require_file() {
  [ -e "$2" ] || usage_error "$1 '$2' does not exist"
}

# launch_job FUNCTION [ARGS...]: `launch` for a shell function (nohup runs only programs, so the
# function's definition goes along to a fresh bash). Variables it reads must be exported or passed.
launch_job() {
  launch bash -c "set -eu; $(declare -f); \"\$0\" \"\$@\"" "$@"
}

# supervise NAME PID [NAME PID ...]: wait for every process. When one exits with an error, or
# JOB_TIMEOUT passes, send STOP_SIGNAL (default TERM) to the others, SIGKILL to any still running
# 30 s later, and return that exit code (124 for the timeout); 0 when all succeed.
supervise() {
  local names=() pids=() left=0 i rc=0 reason=""
  while [ $# -ge 2 ]; do names+=("$1"); pids+=("$2"); left=$((left + 1)); shift 2; done
  local deadline=$((SECONDS + ${JOB_TIMEOUT:-0}))
  while [ "$left" -gt 0 ] && [ -z "$reason" ]; do
    sleep 1
    for i in "${!pids[@]}"; do
      if [ -z "${pids[$i]}" ] || kill -0 "${pids[$i]}" 2>/dev/null; then continue; fi
      wait "${pids[$i]}" && rc=0 || rc=$?
      pids[$i]="" && left=$((left - 1))
      if [ "$rc" -ne 0 ]; then reason="${names[$i]} exited with code $rc" && break; fi
    done
    if [ -z "$reason" ] && [ "${JOB_TIMEOUT:-0}" -gt 0 ] && [ "$SECONDS" -ge "$deadline" ]; then
      rc=124 && reason="the job ran past JOB_TIMEOUT=${JOB_TIMEOUT} s"
    fi
  done
  [ -n "$reason" ] || return 0
  local running=() stopping=""
  for i in "${!pids[@]}"; do
    [ -z "${pids[$i]}" ] || { running+=("${pids[$i]}") && stopping+=", ${names[$i]}"; }
  done
  echo "error: $reason${stopping:+; stopping ${stopping#, }}" >&2
  if [ ${#running[@]} -gt 0 ]; then
    kill -s "${STOP_SIGNAL:-TERM}" "${running[@]}" 2>/dev/null || true
    for _ in $(seq 30); do
      kill -0 "${running[@]}" 2>/dev/null || break
      sleep 1
    done
    kill -s KILL "${running[@]}" 2>/dev/null || true
  fi
  return "$rc"
}

# msrun_job LOCAL_WORKERS SCRIPT [ARGS...]: SCRIPT on LOCAL_WORKERS processes of this machine under
# msrun (MindSpore's dynamic cluster: a scheduler plus workers; NCCL on GPU, MCCL on CPU), supervised.
# Per-rank output goes to LOG_DIR/worker_<rank>.log, the scheduler's to LOG_DIR/scheduler.log, and
# the first local worker's is copied to stdout (log.txt). Environment:
#   WORKER_NUM        workers on all machines (default LOCAL_WORKERS: one machine)
#   MASTER_ADDR       address of the machine that runs the scheduler (default 127.0.0.1)
#   MASTER_PORT       its port, free on that machine (default 8118)
#   NODE_RANK         index of this machine, 0 on the master; ranks are NODE_RANK * LOCAL_WORKERS + i
#                     (default: -1 = msrun assigns ranks; set it on every machine of a multi-machine job)
#   LOG_DIR           where msrun writes the per-rank logs (default LOG)
#   CLUSTER_TIME_OUT  seconds to wait for all WORKER_NUM workers to join (default 300): a master that
#                     cannot be reached, or a machine never started, ends the job after about this
#                     long (measured: 35 s with CLUSTER_TIME_OUT=20)
# A worker that dies is noticed by msrun on its machine at once (it kills the local workers) and by
# the scheduler when its heartbeat stops (MS_NODE_TIMEOUT, default 30 s), which ends the workers on
# the other machines; a worker that loses the scheduler exits after MS_HEARTBEAT_RETRY_TIMEOUT
# (default 20 s). Measured on CPU, 2 workers: a killed worker ends the job in 31 s.
msrun_job() {
  local local_workers=$1 total=${WORKER_NUM:-$1} node_rank=${NODE_RANK:--1} log_dir=${LOG_DIR:-LOG} tail=-1
  shift
  if [ "$node_rank" -ge 0 ]; then
    tail=$((node_rank * local_workers))
  elif [ "$total" -eq "$local_workers" ]; then
    tail=0
  fi
  msrun --worker_num="$total" --local_worker_num="$local_workers" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${MASTER_PORT:-8118}" --node_rank="$node_rank" --log_dir="$log_dir" --join=True \
    --cluster_time_out="${CLUSTER_TIME_OUT:-300}" --tail_worker_log="$tail" "$@" &
  local rc=0
  # SIGINT makes msrun kill its workers and the scheduler before it exits
  STOP_SIGNAL=INT supervise msrun $! || rc=$?
  [ "$rc" -eq 0 ] && return 0
  echo "error: the distributed job failed (exit code $rc); per-rank logs: $log_dir/worker_<rank>.log," \
    "scheduler: $log_dir/scheduler.log" >&2
  local python_error='^(error: |[A-Za-z_.]*(Error|Exception): )'
  [ "$rc" -eq 124 ] || grep -H -m1 -E "$python_error" "$log_dir"/worker_*.log >&2 2>/dev/null ||
    echo "no Python error in the worker logs: a worker was killed (msrun's 'Worker process PID exit" \
      "with exception' line above says so)" >&2
  return "$rc"
}
