#!/bin/bash
# The accelerator check (issue 15, item 7): one general-distillation step (BERT-base teacher -> TinyBERT-4
# student, batch 32, sequence 128: bench/gd_step.py) on the first GPU, float32 and float16, through MindSpore
# and through PyTorch + transformers, ms/step and peak memory, in at most 5 minutes. The model zoo's
# TinyBERT README gives 98.654 ms/step for its GD on one of 8 V100-32G (MindSpore 0.7, float16,
# cn-wiki-128; its batch size per device is in its gd_config, not the README).
#   bash bench/accelerator_check.sh [OUT]        (default OUT bench_output/accelerator; PYTHON=python3)
# Every run writes OUT/NAME.log; OUT/summary.txt has the machine, one line per run (its result, or
# FAILED with the exit status and the log's last lines), and the peak GPU memory nvidia-smi saw.
# Where MindSpore is missing or its GPU backend does not start, the summary says exactly what failed and
# the PyTorch runs go on. Each run is cut at STEP_TIMEOUT seconds (default 60).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_output/accelerator}
PYTHON=${PYTHON:-python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-60}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

say "# accelerator check, $(date -u '+%F %T') UTC, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if command -v nvidia-smi > /dev/null; then
  say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
else
  say "gpu: no nvidia-smi on this machine (no NVIDIA driver); the GPU runs below will fail"
fi
say "python: $($PYTHON -c 'import sys; print(sys.version.split()[0])' 2>&1)," \
    "torch: $($PYTHON -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)"

# what_failed FILE: the log's first 3 error lines (else its last 3 lines), each cut to 300 characters, on one line.
what_failed() {
  { grep -E 'Error|ERROR|error:' "$1" || grep -v '^\s*$' "$1" | tail -3; } | head -3 | cut -c1-300 | tr '\n' ' '
}

# gpu_run NAME ARGS...: one bench/gd_step.py run on the GPU, its peak device memory sampled by nvidia-smi.
gpu_run() {
  local name=$1 log=$OUT/$1.log sampler=
  shift
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/$name.memory" 2>/dev/null &
    sampler=$!
  fi
  timeout "$STEP_TIMEOUT" env GLOG_v=3 PYTHONUNBUFFERED=1 "$PYTHON" bench/gd_step.py --device gpu --steps 20 "$@" \
    > "$log" 2>&1
  local rc=$?
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null
  local peak
  peak=$(sort -n "$OUT/$name.memory" 2>/dev/null | tail -1)
  if [[ $rc -eq 0 ]]; then
    say "$name: $(grep -E '^(mindspore|torch) ' "$log" | tail -1); nvidia-smi peak ${peak:-?} MiB"
  else
    say "$name: FAILED (exit $rc$([[ $rc -eq 124 ]] && echo ", cut at $STEP_TIMEOUT s")): $(what_failed "$log")"
  fi
}

# MindSpore's own check of its GPU backend first: its message is the clearest account of what is missing.
if $PYTHON -c "import mindspore" > "$OUT/mindspore_import.log" 2>&1; then
  if timeout "$STEP_TIMEOUT" $PYTHON -c "import mindspore as ms; ms.set_context(device_target='GPU'); ms.run_check()" \
      > "$OUT/mindspore_run_check.log" 2>&1; then
    say "mindspore $($PYTHON -c 'import mindspore; print(mindspore.__version__)'): run_check on GPU passed"
    gpu_run mindspore_float32 --framework mindspore --dtype float32
    gpu_run mindspore_float16 --framework mindspore --dtype float16
  else
    say "mindspore: its GPU backend does not start (mindspore.run_check): $(what_failed "$OUT/mindspore_run_check.log")"
  fi
else
  say "mindspore: cannot be imported by $PYTHON: $(what_failed "$OUT/mindspore_import.log")"
fi
gpu_run torch_float32 --framework torch --dtype float32
gpu_run torch_float16 --framework torch --dtype float16
say "model zoo, for comparison: 98.654 ms/step (GD, one V100-32G of 8, MindSpore 0.7, float16)"
