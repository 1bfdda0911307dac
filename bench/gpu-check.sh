#!/usr/bin/env bash
# The one script to run on a GPU machine:   OUT=<results folder> bash bench/gpu-check.sh
#
# Steps, each under `timeout`, their limits adding up to 420 s:
#   device     nvidia-smi, torch / triton / Python versions                    (limit  15 s)
#   gpu-tests  python3 -m pytest -m gpu tests: the whole parity case table on CUDA,
#              realistic sizes, a case past 2^31 elements, bit-identical gradients,
#              the model with either scan (pytest-xdist spreads it when installed)  (limit 180 s)
#   memcheck   compute-sanitizer --tool memcheck over one forward and one backward
#              with ragged tiles and channel blocks (when compute-sanitizer is there) (limit  45 s)
#   selfcheck  python3 -m estm_ref selfcheck --device cuda                     (limit  30 s)
#   bench-scan bench/scan.py: every importable backend at ESTM's and language-model
#              shapes, the cost model's bound beside each time                  (limit 100 s)
#   bench-train bench/train_step.py, batch 128, without the WAV loader          (limit  50 s)
#
# $OUT receives two files: summary.txt (each step's exit code and time) and
# gpu-check.tar.gz (every step's log and every benchmark's CSV / Markdown / PNG).
#
# Without a CUDA device nothing is run: the script says so (also in $OUT/summary.txt) and
# exits 2. CPU numbers come from `bench/scan.py --quick` and `bench/train_step.py --quick`.
# Exit status: 0 every step passed; 1 a step failed or timed out (named at the end);
# 2 no CUDA device, or OUT not set.
#
# Runs from the source tree without installing anything (PYTHONPATH) and needs neither
# soundfile, librosa nor mambapy. PYTHON overrides the interpreter (default python3).
# When the tree is a copy without .git, set BENCH_COMMIT=<commit> to stamp the results.
set -uo pipefail

if [ -z "${OUT:-}" ]; then
  echo "gpu-check: set OUT to the folder for logs and results" >&2
  exit 2
fi
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
SUMMARY="$OUT/summary.txt"
WORK=$(mktemp -d)  # logs and results, packed into one archive at the end
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
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  local note="rc $rc"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note="timed out after ${limit} s (rc $rc)"; fi
  echo "$name: $note, $((SECONDS - start)) s" | tee -a "$SUMMARY"
  [ "$rc" -eq 0 ] || failed+=("$name ($note)")
}

export PY
step device 15 bash -c '
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  else
    echo "nvidia-smi not found"
  fi
  "$PY" -c "import platform, torch, triton; print(\"python\", platform.python_version(), \"| torch\", torch.__version__, \"| triton\", triton.__version__, \"| device\", torch.cuda.get_device_name())"
  echo "git commit: ${BENCH_COMMIT:-$(git rev-parse HEAD 2> /dev/null || echo "unknown (not a git checkout)")}"'

xdist=()
if "$PY" -c "import xdist" 2> /dev/null; then xdist=(-n 8); fi
step gpu-tests 180 "$PY" -m pytest -q -rs -p no:cacheprovider "${xdist[@]}" -m gpu tests

if command -v compute-sanitizer > /dev/null; then
  step memcheck 45 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" -c '
import torch
from estm_ref.scan.parity import ScanCase, assert_parity
from triton_kernels.selective_scan import LaunchOptions, ScanConfig, selective_scan_fn
from functools import partial
for config in (None, ScanConfig(4, 16)):  # the chosen blocks, and ragged tiles and channel blocks
    scan = partial(selective_scan_fn, options=LaunchOptions(config=config))
    assert_parity(scan, ScanCase(2, 40, 71, 16, groups=2), "cuda")
print("memcheck: forward and backward ran under compute-sanitizer")'
else
  echo "memcheck: skipped, compute-sanitizer is not on the PATH" | tee -a "$SUMMARY"
fi

step selfcheck 30 "$PY" -m estm_ref selfcheck --device cuda
step bench-scan 100 "$PY" bench/scan.py --device cuda --out "$WORK" --time-budget-s 75 \
  --backends triton,ref,mambapy,mamba-ssm --dtypes bfloat16 --row-budget-s 0.5 --ref-max-len 2048
step bench-train 50 "$PY" bench/train_step.py --device cuda --out "$WORK" --step-budget-s 2 --no-loader

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu-check: ${#failed[@]} step(s) failed: $(printf '%s; ' "${failed[@]}")" | tee -a "$SUMMARY"
  status=1
else
  echo "gpu-check: all steps passed" | tee -a "$SUMMARY"
  status=0
fi
cp "$SUMMARY" "$WORK/summary.txt"
tar -czf "$OUT/gpu-check.tar.gz" -C "$WORK" . && echo "gpu-check: logs and results in $OUT/gpu-check.tar.gz"
rm -rf "$WORK"
exit $status
