"""The Triton kernels compile for real GPUs, ahead of time and without a device, and spill nothing.

Under TRITON_INTERPRET=1 `@triton.jit` returns an interpreted function that never meets
the compiler, so the interpreter parity tests say nothing about GPU compilation. These
tests run `bench/scan_static.py` in a fresh Python without TRITON_INTERPRET and with an
empty Triton cache: it plans every launch of a forward and a backward at N 16, 64 and 256
exactly as `selective_scan_fn` would (tensors on the `meta` device), specialises the
arguments as Triton's JIT does, compiles each kernel through PTX to a cubin for sm_80 and
sm_90 and reads registers and spill bytes from ptxas's report. A compiler that cannot do
this here is a failure, not a skip: the kernels must compile on the Triton versions that
pyproject.toml allows.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "bench" / "results" / "scan-static.csv"
KEY = ("pass", "kernel", "N", "dtype", "arch", "block_d", "block_l", "block_n", "warps")


def _fresh_python(tmp, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp / "triton-cache")  # a cached kernel would skip ptxas
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    proc = _fresh_python(tmp_path_factory.mktemp("aot"), "bench/scan_static.py", "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_kernel_compiles_for_sm80_and_sm90(compiled):
    kernels = {(r["kernel"], r["arch"]) for r in compiled}
    for kernel in ("fwd", "fwd (saving tile states)", "bwd"):
        for arch in ("sm_80", "sm_90"):
            assert (kernel, arch) in kernels
    assert all(0 < r["registers"] <= 255 for r in compiled)


@pytest.mark.slow
def test_no_spills_in_bfloat16(compiled):
    """The training dtype spills nothing; float32 spill bytes, if any, are in the record."""
    spilled = [r for r in compiled if r["spill_bytes"] and r["dtype"] == "bf16"]
    assert not spilled, "register spills: " + "; ".join(
        f"{r['kernel']} {r['arch']} N{r['N']} {r['dtype']}: {r['spill_bytes']} B" for r in spilled)


@pytest.mark.slow
def test_committed_record_covers_every_compiled_variant(compiled):
    """bench/results/scan-static.csv is the record the docs cite: regenerate it
    (`python bench/scan_static.py`) when a kernel or a configuration changes."""
    lines = [line for line in RECORD.read_text().splitlines() if not line.startswith("#")]
    recorded = {tuple(str(r[k]) for k in KEY) for r in csv.DictReader(lines)}
    missing = [key for key in (tuple(str(r[k]) for k in KEY) for r in compiled) if key not in recorded]
    assert not missing, f"not in {RECORD.name}: {missing}"


def test_cpu_tensors_without_interpreter_are_refused(tmp_path):
    script = ("import torch\n"
              "from triton_kernels.selective_scan import selective_scan_fn\n"
              "u = torch.zeros(1, 2, 3)\n"
              "try:\n"
              "    selective_scan_fn(u, u, torch.zeros(2, 2), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))\n"
              "except ValueError as e:\n"
              "    print(e)\n")
    proc = _fresh_python(tmp_path, "-c", script, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    message = proc.stdout.strip()
    assert message.startswith("u ") and "TRITON_INTERPRET=1" in message and "backend='ref'" in message
