"""`estm selfcheck`: the Triton selective scan against the reference on one device.

Runs a few parity cases (float32 and bfloat16, shared and grouped B/C, with an initial
state) through forward and backward, prints the largest absolute error of the output,
the last state and every gradient, and says PASS or FAIL. Training calls
`check_parity("cuda")` before it trusts the kernel.

On CPU the kernel runs through the Triton interpreter (TRITON_INTERPRET=1), which this
command turns on when it is not set; that is slow, so the CPU cases are small.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from estm_ref.scan.parity import ScanCase, check_case

_bf16 = torch.bfloat16
CASES = {
    "cpu": [
        ScanCase(2, 8, 19, 16),
        ScanCase(1, 6, 12, 4, groups=3),
        ScanCase(2, 8, 16, 16, dtype=_bf16, has_initial_state=False),
        ScanCase(1, 6, 12, 4, groups=2, dtype=_bf16),
    ],
    "cuda": [
        ScanCase(2, 256, 1024, 16),
        ScanCase(2, 192, 777, 16, groups=4),
        ScanCase(2, 256, 1024, 16, dtype=_bf16, has_initial_state=False),
        ScanCase(2, 192, 777, 16, groups=4, dtype=_bf16),
    ],
}
KERNEL_MODULE = "triton_kernels.selective_scan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cuda", "cpu"), default=default,
                        help=f"where to run both scans (default here: {default}); cpu uses the "
                             "Triton interpreter")


def check_parity(device, scan=None) -> tuple[bool, str]:
    """Kernel (or `scan`) vs reference on `device`; returns (all within tolerance, report table)."""
    device = torch.device(device)
    from triton_kernels.selective_scan import launch_options, selective_scan_fn

    scan = scan or selective_scan_fn
    cases = CASES["cuda" if device.type == "cuda" else "cpu"]
    # poison: a buffer the kernel forgets to write shows up as NaN, not as stale memory
    with launch_options(poison=True):
        reports = [check_case(scan, case, device, seed=i) for i, case in enumerate(cases)]
    ok = all(r.ok for r in reports)
    return ok, _table(reports, device, ok)


def _table(reports, device, ok) -> str:
    lines = [f"selective scan parity on {device}: max |kernel - reference| per tensor "
             "(! = outside tolerance)"]
    for i, r in enumerate(reports, 1):
        lines.append(f"  case {i}: {r.case}  rtol {r.rtol:g} atol {r.atol:g}")
    names = list(dict.fromkeys(row.name for r in reports for row in r.rows))
    lines.append(f"  {'tensor':<16}" + "".join(f"{'case ' + str(i):>12}" for i in range(1, len(reports) + 1)))
    for name in names:
        cells = []
        for r in reports:
            row = next((x for x in r.rows if x.name == name), None)
            cells.append("-" if row is None else f"{row.max_abs_err:.2e}{'' if row.ok else '!'}")
        lines.append(f"  {name:<16}" + "".join(f"{c:>12}" for c in cells))
    for r in reports:
        lines += [f"  {r.case} {row.name}: {row.note}" for row in r.rows if row.note]
    lines.append("PASS" if ok else "FAIL")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        print("selfcheck: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        if KERNEL_MODULE in sys.modules:
            print("selfcheck: the kernel module is already loaded without TRITON_INTERPRET=1; "
                  "run `TRITON_INTERPRET=1 estm selfcheck --device cpu`", file=sys.stderr)
            return 2
        # must happen before the kernels are defined: @triton.jit reads it then
        os.environ["TRITON_INTERPRET"] = "1"
        print("selfcheck: set TRITON_INTERPRET=1 to run the Triton kernel on CPU (interpreter, slow)")
    start = time.perf_counter()
    ok, table = check_parity(args.device)
    print(table)
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1
