"""The selective scan: the reference, the Triton kernel, and the explicit choice between them.

`selective_scan_ref` (`ref.py`) is the numerical ground truth; the Triton kernel
(`triton_kernels.selective_scan.selective_scan_fn`) shares its signature and is
proven equal to it by the tests (`parity.py` holds the comparison harness).
`op.py` registers the scan as PyTorch operators (Triton kernels on CUDA, the reference
on CPU) so that torch.compile traces through it. `selective_scan` picks one explicitly.
"""

from __future__ import annotations

import logging

import torch

from estm_ref.config import SCAN_BACKENDS
from estm_ref.scan.ref import selective_scan_ref
from triton_kernels.scan_args import MAX_D_STATE, check_scan_args

log = logging.getLogger(__name__)

BACKENDS = SCAN_BACKENDS  # ("auto", "ref", "triton"), written once in the config

__all__ = ["BACKENDS", "MAX_D_STATE", "check_scan_args", "resolve_backend", "selective_scan",
           "selective_scan_ref"]


_logged: set[tuple[str, str]] = set()


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'triton' on CUDA, 'ref' elsewhere. Logs each (choice, device) once."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    chosen = backend
    if backend == "auto":
        chosen = "triton" if device.type == "cuda" else "ref"
    key = (chosen, device.type)
    if key not in _logged and not torch.compiler.is_compiling():
        _logged.add(key)
        how = "auto" if backend == "auto" else "explicit"
        log.info("selective scan backend: %s on %s (%s)", chosen, device.type, how)
    return chosen


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, backend="auto"):
    """Selective scan through an explicit backend: "ref", "triton" or "auto".

    Same arguments and semantics as `selective_scan_ref` (see its docstring).
    "auto" goes through the registered operator `torch.ops.estm_ref.selective_scan_fwd`
    (`op.py`) on CUDA, where it runs the Triton scan, and under torch.compile on any
    device, so that the compiler sees one operator instead of a loop unrolled over L. In
    eager mode on CPU "auto" calls the reference itself: the operator's CPU backward
    recomputes the states tile by tile and is about 3x slower there than the reference's
    autograd. "ref" always calls the reference itself.
    "triton" takes the same operator on CUDA; on CPU tensors it calls the kernel through
    the Triton interpreter (TRITON_INTERPRET=1, slow, for tests) and raises without it.
    """
    chosen = resolve_backend(backend, u.device)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)
    if backend == "ref" or (chosen == "ref" and not torch.compiler.is_compiling()):
        return selective_scan_ref(*args)
    if chosen == "triton" and u.device.type != "cuda":
        from triton_kernels.selective_scan import selective_scan_fn

        return selective_scan_fn(*args)
    from estm_ref.scan.op import selective_scan_op

    return selective_scan_op(*args)
