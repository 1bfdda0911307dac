"""The backends the scan benchmark times, and the inputs and work of one benchmark row.

  triton       `triton_kernels.selective_scan.selective_scan_fn` on CUDA. On CPU it runs
               only through the Triton interpreter, as one tiny row labelled
               `triton-interpreter` with status `smoke`: it shows the kernel runs on this
               machine; its time is the interpreter's and is compared with nothing.
  ref          `estm_ref.scan.selective_scan_ref`, eager.
  ref-compile  the same function under `torch.compile(dynamic=False)`.
  mambapy      the parallel (Blelloch) scan `mambapy.pscan.pscan`, wrapped into this
               scan's semantics (`estm_ref.scan.adapters.mambapy_scan`); optional, skipped
               when not importable.
  mamba-ssm    `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` (optional, CUDA).

A backend that cannot run gets `scan=None` and the reason; nothing falls back to another.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from bench.scan_cost import Shape
from estm_ref.scan import selective_scan_ref
from estm_ref.scan.adapters import mambapy_scan

BACKENDS = ("triton", "ref", "ref-compile", "mambapy", "mamba-ssm")


@dataclass
class Backend:
    name: str
    scan: Callable | None  # the selective_scan signature; None when it cannot run
    reason: str = ""  # why scan is None
    smoke: bool = False  # runs only the smoke shape; its time is not a performance number
    compiled: bool = False


REF = Backend("ref", selective_scan_ref)


def load_backend(name: str, device: torch.device) -> Backend:
    if name == "ref":
        return REF
    if name == "ref-compile":
        return Backend("ref-compile", selective_scan_ref, compiled=True)
    if name == "triton":
        return _load_triton(device)
    if name == "mambapy":
        try:
            from mambapy.pscan import pscan
        except ImportError as err:
            return Backend("mambapy", None, f"mambapy is not importable ({err}); it is optional")
        return Backend("mambapy", functools.partial(mambapy_scan, pscan))
    if name == "mamba-ssm":
        if device.type != "cuda":
            return Backend("mamba-ssm", None, "mamba-ssm's scan is a CUDA extension")
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except ImportError as err:
            return Backend("mamba-ssm", None, f"mamba_ssm is not importable ({err}); it is optional")
        return Backend("mamba-ssm", selective_scan_fn)
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")


def _load_triton(device: torch.device) -> Backend:
    """The kernel on CUDA; on CPU the interpreter, setting TRITON_INTERPRET=1 for this
    process when triton is not imported yet (a script's first import of it)."""
    if device.type == "cpu" and "TRITON_INTERPRET" not in os.environ:
        if "triton" in sys.modules:
            return Backend("triton", None, "triton was imported before TRITON_INTERPRET=1 could be "
                                           "set; run with TRITON_INTERPRET=1 for the interpreter row")
        # read when triton.language and the kernels are decorated, i.e. at their import
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        from triton_kernels import selective_scan as kernel
    except ImportError as err:
        return Backend("triton", None, f"triton_kernels.selective_scan is not importable ({err})")
    if device.type == "cuda" and kernel.INTERPRETED:
        return Backend("triton", None, "TRITON_INTERPRET=1 is set: unset it to time the compiled kernel")
    if device.type == "cuda":
        return Backend("triton", kernel.selective_scan_fn)
    if device.type == "cpu" and kernel.INTERPRETED:
        return Backend("triton-interpreter", kernel.selective_scan_fn, smoke=True)
    return Backend("triton", None, f"the Triton kernel runs on CUDA, or on CPU under TRITON_INTERPRET=1 "
                                   f"set before its import (device {device}, TRITON_INTERPRET="
                                   f"{os.environ.get('TRITON_INTERPRET')!r})")


# ----------------------------------------------------------------------------- one row


def make_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, requires_grad: bool,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """Mamba-block-like inputs: delta_bias = softplus^-1 of dt log-uniform in [1e-3, 1e-1]."""
    g = torch.Generator(device=device).manual_seed(seed)
    b, d, L, N = shape.batch, shape.dim, shape.L, shape.N

    def rand(*size, dtype=dtype, scale=1.0):
        return (scale * torch.randn(*size, generator=g, device=device)).to(dtype)

    dt = torch.exp(torch.empty(d, device=device).uniform_(math.log(1e-3), math.log(1e-1), generator=g))
    inputs = {
        "u": rand(b, d, L), "delta": rand(b, d, L, scale=0.5),
        "A": -torch.arange(1, N + 1, dtype=torch.float32, device=device).repeat(d, 1),
        "B": rand(b, N, L), "C": rand(b, N, L),
        "D": torch.ones(d, device=device), "z": rand(b, d, L),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),
    }
    for t in inputs.values():
        t.requires_grad_(requires_grad)
    return inputs


def _call(scan, inputs: dict) -> torch.Tensor:
    x = inputs
    return scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                delta_bias=x["delta_bias"], delta_softplus=True)


def workload(scan, inputs: dict, dy: torch.Tensor | None) -> Callable[[], tuple]:
    """One call of a pass: fwd (dy None) -> (y,); fwd+bwd -> (y, grad of each input)."""
    if dy is None:
        def run():
            with torch.no_grad():
                return (_call(scan, inputs),)
        return run
    wrt = list(inputs.values())

    def run():
        y = _call(scan, inputs)
        return (y.detach(), *torch.autograd.grad(y, wrt, dy))
    return run


# Peak memory of the reference per state element (batch*dim*L*N): it materialises
# float32 (batch, dim, L, N) decay, drive and state tensors. Measured as the growth of the
# peak RSS at 2x256x2048x16 on CPU: 20 bytes for fwd, 36 for fwd+bwd; with some margin:
REF_BYTES_PER_ELEMENT = {"fwd": 24, "fwd+bwd": 40}


def memory_estimate(backend: str, shape: Shape, pass_: str) -> int:
    """Bytes of the per-step / per-state tensors a backend keeps (0: nothing of that size)."""
    if backend in ("ref", "ref-compile"):
        return REF_BYTES_PER_ELEMENT[pass_] * shape.elements
    if backend == "mambapy":
        # float32 (batch, L', dim, N) tensors, L' the next power of two: a_bar, x, pscan's
        # two working copies and the product with C; about twice that with the backward
        padded = shape.batch * shape.dim * shape.N * 2 ** math.ceil(math.log2(shape.L))
        return 4 * padded * (5 if pass_ == "fwd" else 12)
    return 0
