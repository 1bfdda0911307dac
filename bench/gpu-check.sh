#!/usr/bin/env bash
# The one script to run on a GPU machine:   OUT=<results folder> bash bench/gpu-check.sh
#
# Steps, each under `timeout`, each logged to $OUT/<step>.log:
#   device       nvidia-smi, torch / triton / Python versions        (limit  30 s)
#   determinism  the scan's gradients bit-identical run to run       (limit  60 s)
#   gpu-tests    python3 -m pytest -q -m gpu tests                   (limit 120 s)
#   selfcheck    python3 -m estm_ref selfcheck --device cuda         (limit  60 s)
#   bench-scan   bench/scan.py: triton, ref, mambapy and mamba-ssm (each when importable)
#                at ESTM's and language-model shapes, with the cost model's bound beside
#                every time; rows past 120 s skipped as such          (limit 180 s)
#   bench-train  bench/train_step.py, batch 128                      (limit  90 s)
# At most 9 minutes if every step runs into its limit. The benchmarks write their
# CSV / Markdown / PNG files into $OUT; $OUT/summary.txt lists each step's exit code and time.
#
# Without a CUDA device nothing is run: the script says so (also in $OUT/summary.txt) and
# exits 2. Every step needs the GPU; CPU numbers come from `bench/scan.py --quick` and
# `bench/train_step.py --quick`.
# Exit status: 0 every step passed; 1 a step failed or timed out (named at the end);
# 2 no CUDA device, or OUT not set.
#
# Runs from the source tree without installing anything (PYTHONPATH). PYTHON overrides
# the interpreter (default python3). When the tree is a copy without .git, set
# BENCH_COMMIT=<commit> so that the results are stamped with it.
set -uo pipefail

if [ -z "${OUT:-}" ]; then
  echo "gpu-check: set OUT to the folder for logs and results" >&2
  exit 2
fi
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  msg="gpu-check: no CUDA device visible to torch ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1)); no step was run"
  echo "$msg" | tee -a "$SUMMARY" >&2
  exit 2
fi

failed=()
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  local note="rc $rc"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note="timed out after ${limit} s (rc $rc)"
  echo "$name: $note, $((SECONDS - start)) s" | tee -a "$SUMMARY"
  [ "$rc" -eq 0 ] || failed+=("$name ($note)")
}

export PY
step device 30 bash -c '
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  else
    echo "nvidia-smi not found"
  fi
  "$PY" -c "import platform, torch, triton; print(\"python\", platform.python_version(), \"| torch\", torch.__version__, \"| triton\", triton.__version__, \"| device\", torch.cuda.get_device_name())"
  echo "git commit: $(git rev-parse HEAD 2> /dev/null || echo "${BENCH_COMMIT:-unknown (not a git checkout)}")"'
step determinism 60 "$PY" -m pytest -q -m gpu tests/kernel/test_scan_parity.py -k bit_identical
step gpu-tests 120 "$PY" -m pytest -q -m gpu tests
step selfcheck 60 "$PY" -m estm_ref selfcheck --device cuda
step bench-scan 180 "$PY" bench/scan.py --device cuda --out "$OUT" --time-budget-s 120
step bench-train 90 "$PY" bench/train_step.py --device cuda --out "$OUT" --step-budget-s 3

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu-check: ${#failed[@]} step(s) failed: $(printf '%s; ' "${failed[@]}")" | tee -a "$SUMMARY"
  exit 1
fi
echo "gpu-check: all steps passed; results in $OUT" | tee -a "$SUMMARY"
