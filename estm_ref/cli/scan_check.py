"""`estm scan-check MODULE:FUNCTION`: check anyone's selective scan against the reference.

The callable has the signature of `estm_ref.scan.selective_scan_ref`, or, with `--adapter`,
that of mamba-ssm's `selective_scan_fn` or mambapy's `pscan`. It runs on the battery of
`estm_ref.scan.battery` (`--quick`: the small cases plus one each of large N and long L);
the table lists every case and quantity, and the last line is the verdict. Exit code 0
when nothing fails (unsupported cases are SKIP), 1 when a case fails, 2 on bad input.

MODULE is imported with the current directory first on the import path, as `python -m`
does. On CPU, TRITON_INTERPRET=1 is set before the import (when it is not set and Triton is
not loaded yet), so a Triton kernel runs through the interpreter.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

import torch
from tqdm import tqdm

from estm_ref.errors import InputError
from estm_ref.scan.adapters import ADAPTERS
from estm_ref.scan.battery import BATTERY, select
from estm_ref.scan.check import check_scan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE:FUNCTION",
                        help="the scan to check, e.g. my_package.scan:selective_scan")
    parser.add_argument("--adapter", choices=list(ADAPTERS), default="native",
                        help="the callable's signature: native (this project's, default), mamba-ssm "
                             "(selective_scan_fn) or mambapy (pscan)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    parser.add_argument("--quick", action="store_true", help="the quick subset: the small cases, one large N, long L (seconds on a CPU)")
    parser.add_argument("--cases", metavar="PATTERNS",
                        help=f"comma-separated names or shell patterns of cases; the battery: {', '.join(BATTERY)}")
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the verdict to FILE as JSON")


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("scan-check: --device cuda, but torch sees no CUDA device")
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()] if args.cases is not None else None
    if patterns == []:
        raise InputError("scan-check: --cases is empty")
    try:
        cases = select(args.quick, patterns)
    except KeyError as err:
        raise InputError(f"scan-check: {err.args[0]}") from None
    if not cases:
        raise InputError(f"scan-check: no case of the {'quick ' if args.quick else ''}battery matches "
                         f"--cases {args.cases}")
    adapter = ADAPTERS[args.adapter]
    fn = load_callable(args.target, args.device)
    problem = adapter.problem(fn, torch.device(args.device))
    if problem:
        raise InputError(f"scan-check: {args.target}: {problem}")

    start = time.perf_counter()
    with tqdm(total=len(cases), unit="case", disable=args.quiet or not sys.stderr.isatty()) as bar:
        result = check_scan(adapter.wrap(fn), cases, args.device,
                            unsupported=lambda bc: adapter.unsupported(fn, bc.case),
                            progress=lambda bc: (bar.set_description(bc.name), bar.update()))
    seconds = time.perf_counter() - start
    print(f"estm scan-check {args.target} --adapter {args.adapter} --device {args.device}"
          f"{' --quick' if args.quick else ''}{' --cases ' + args.cases if args.cases else ''}")
    print(result.table())
    print(f"{result.verdict()} in {seconds:.1f} s")
    if args.json:
        report = {"target": args.target, "adapter": args.adapter, "device": args.device,
                  "quick": args.quick, "cases": [c.name for c in cases], "seconds": round(seconds, 2),
                  "torch": torch.__version__, "python": platform.python_version(), **result.to_json()}
        try:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        except OSError as err:
            raise InputError(f"scan-check: cannot write --json {args.json}: {err.strerror}") from None
    return 0 if result.ok else 1


def load_callable(target: str, device: str):
    """Import MODULE and look up FUNCTION (dotted attributes allowed); InputError if either fails."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"scan-check: expected MODULE:FUNCTION, got {target!r}")
    if device == "cpu" and "TRITON_INTERPRET" not in os.environ and "triton" not in sys.modules:
        # read when a @triton.jit kernel is defined, i.e. at the import below
        os.environ["TRITON_INTERPRET"] = "1"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    importlib.invalidate_caches()  # a module written since the last import
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise InputError(f"scan-check: cannot import {module_name}: {err}") from None
    # the module is the user's code: whatever its import raises is reported in one line
    except Exception as err:  # noqa: BLE001
        raise InputError(f"scan-check: importing {module_name} raised {type(err).__name__}: "
                         f"{' '.join(str(err).split())}") from None
    fn = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise InputError(f"scan-check: {module_name} has no attribute {attr!r}") from None
    return fn
