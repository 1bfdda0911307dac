"""The selective scan: the reference, the Triton kernel, and the explicit choice between them.

`selective_scan_ref` (`ref.py`) is the numerical ground truth; the Triton kernel
(`triton_kernels.selective_scan.selective_scan_fn`) shares its signature and is
proven equal to it by the tests (`parity.py` holds the comparison harness).
`selective_scan` picks one explicitly.
"""

from __future__ import annotations

import logging

import torch

from estm_ref.scan.ref import selective_scan_ref
from triton_kernels.scan_args import MAX_D_STATE, check_scan_args

log = logging.getLogger(__name__)

BACKENDS = ("auto", "ref", "triton")

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
    if key not in _logged:
        _logged.add(key)
        how = "auto" if backend == "auto" else "explicit"
        log.info("selective scan backend: %s on %s (%s)", chosen, device.type, how)
    return chosen


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, backend="auto"):
    """Selective scan through an explicit backend: "ref", "triton" or "auto".

    Same arguments and semantics as `selective_scan_ref` (see its docstring). "auto"
    takes the Triton kernel on CUDA tensors and the reference elsewhere. "triton" on
    CPU tensors needs TRITON_INTERPRET=1 (slow; for tests) and raises otherwise.
    """
    chosen = resolve_backend(backend, u.device)
    if chosen == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                  return_last_state, initial_state)
    from triton_kernels.selective_scan import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                             return_last_state, initial_state)
