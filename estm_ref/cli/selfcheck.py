"""`estm selfcheck`: the Triton selective scan against the reference on one device.

Runs the parity cases of `estm_ref.scan.parity.check_parity` (float32 and bfloat16, shared
and grouped B/C, with an initial state) through forward and backward, prints the largest
absolute error of the output, the last state and every gradient, and says PASS or FAIL.

On CPU the kernel runs through the Triton interpreter (TRITON_INTERPRET=1), which this
command turns on when it is not set; that is slow, so the CPU cases are small.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from estm_ref.errors import InputError

KERNEL_MODULE = "triton_kernels.selective_scan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cuda", "cpu"), default=default,
                        help=f"where to run both scans (default here: {default}); cpu uses the "
                             "Triton interpreter")


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("selfcheck: --device cuda, but torch sees no CUDA device")
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        if KERNEL_MODULE in sys.modules:
            raise InputError("selfcheck: the kernel module is already loaded without "
                             "TRITON_INTERPRET=1; run `TRITON_INTERPRET=1 estm selfcheck --device cpu`")
        # must happen before the kernels are defined: @triton.jit reads it then
        os.environ["TRITON_INTERPRET"] = "1"
        print("selfcheck: set TRITON_INTERPRET=1 to run the Triton kernel on CPU (interpreter, slow)")
    start = time.perf_counter()
    from estm_ref.scan.parity import check_parity

    ok, table = check_parity(args.device)
    print(table)
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1
