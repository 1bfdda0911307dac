"""Adapters: other projects' scans called with the signature of `selective_scan_ref`.

An `Adapter` turns a callable of some project's signature into a scan of ours (`wrap`),
says what is wrong with a callable that cannot be one (`problem`, checked before any case
runs) and declares the cases the wrapped scan cannot run (`unsupported`): those are
reported as unsupported, not failed.

  native     a callable with this project's signature, used as it is.
  mamba-ssm  `mamba_ssm.ops.selective_scan_interface.selective_scan_fn`: the same
             arguments without `initial_state`; u and delta of one dtype, B and C float32
             or u's dtype (its CUDA extension checks both).
  mambapy    `mambapy.pscan.pscan(A_bar, X)`, the parallel (Blelloch) scan of
             h[t] = A_bar[t] * h[t-1] + X[t]; `mambapy_scan` adds everything around it.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from estm_ref.scan.parity import ScanCase
from estm_ref.scan.ref import _per_channel

SCAN_ARGS = ("u", "delta", "A", "B", "C")
SCAN_KWARGS = ("D", "z", "delta_bias", "delta_softplus", "return_last_state", "initial_state")


def mambapy_scan(pscan, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 return_last_state=False, initial_state=None):
    """This project's scan (see `selective_scan_ref`) around mambapy's parallel scan.

    pscan(A_bar, X) takes (batch, L, dim, N) tensors and returns every h[t] with
    h[t] = A_bar[t] * h[t-1] + X[t] and h[-1] = 0; it pads L to a power of two internally.
    Grouped B, C are expanded to one row per channel first; an initial state h0 enters as
    A_bar[0] * h0 added to X[0], which the recurrence then carries. Float32 throughout.
    """
    f32 = torch.float32
    batch, dim, L = u.shape
    dt = delta.to(f32)
    if delta_bias is not None:
        dt = dt + delta_bias[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt, threshold=20.0)
    dt = dt.transpose(1, 2)  # (batch, L, dim)
    u_t = u.to(f32).transpose(1, 2)
    a_bar = torch.exp(dt.unsqueeze(-1) * A)  # (batch, L, dim, N)
    B_t, C_t = (_per_channel(t.to(f32), dim).transpose(1, 2) for t in (B, C))  # (batch, L, dim, N)
    x = (dt * u_t).unsqueeze(-1) * B_t
    if initial_state is not None:
        x = torch.cat([x[:, :1] + a_bar[:, :1] * initial_state.to(f32)[:, None], x[:, 1:]], dim=1)
    h = pscan(a_bar, x)
    y = (h * C_t).sum(-1)  # (batch, L, dim)
    if D is not None:
        y = y + D * u_t
    y = y.transpose(1, 2)
    if z is not None:
        y = y * F.silu(z.to(f32))
    y = y.to(u.dtype)
    return (y, h[:, -1]) if return_last_state else y


@dataclass(frozen=True)
class Adapter:
    name: str
    wrap: Callable[[Callable], Callable]
    problem: Callable[[Callable, torch.device], str | None]  # why fn cannot be checked; None if it can
    unsupported: Callable[[Callable, ScanCase], str | None]  # (fn, case) -> why not run; None if run


def _signature_problem(fn: Callable, args: tuple[str, ...], kwargs: tuple[str, ...]) -> str | None:
    if not callable(fn):
        return f"{fn!r} is not callable"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without introspectable arguments: the cases will tell
        return None
    try:
        signature.bind(*args, **{k: k for k in kwargs})
    except TypeError as err:
        return (f"its signature {signature} does not take ({', '.join(args)}, "
                f"{', '.join(k + '=' for k in kwargs)}): {err}")
    return None


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _mamba_ssm_wrap(fn: Callable) -> Callable:
    takes_initial_state = _accepts(fn, "initial_state")  # mamba-ssm's own does not; a fork might

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
             return_last_state=False, initial_state=None):
        kw = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  return_last_state=return_last_state)
        if initial_state is not None:
            if not takes_initial_state:
                raise NotImplementedError("mamba-ssm's selective_scan_fn takes no initial state")
            kw["initial_state"] = initial_state
        return fn(u, delta, A, B, C, **kw)

    return scan


def _mamba_ssm_problem(fn: Callable, device: torch.device) -> str | None:
    if getattr(fn, "__module__", "").startswith("mamba_ssm") and device.type != "cuda":
        return "mamba-ssm's selective_scan_fn is a CUDA extension: use --device cuda"
    return _signature_problem(fn, SCAN_ARGS, SCAN_KWARGS[:-1])


def _mamba_ssm_unsupported(fn: Callable, case: ScanCase) -> str | None:
    if case.delta_dtype not in (None, case.dtype):
        return "mamba-ssm needs delta in u's dtype"
    if case.bc_dtype not in (None, case.dtype, torch.float32):
        return "mamba-ssm needs B and C in float32 or u's dtype"
    if case.has_initial_state and not _accepts(fn, "initial_state"):
        return "mamba-ssm's selective_scan_fn takes no initial state"
    return None


def _native_problem(fn: Callable, device: torch.device) -> str | None:
    return _signature_problem(fn, SCAN_ARGS, SCAN_KWARGS)


ADAPTERS: dict[str, Adapter] = {
    "native": Adapter("native", lambda fn: fn, _native_problem, lambda fn, case: None),
    "mamba-ssm": Adapter("mamba-ssm", _mamba_ssm_wrap, _mamba_ssm_problem, _mamba_ssm_unsupported),
    "mambapy": Adapter("mambapy", lambda pscan: functools.partial(mambapy_scan, pscan),
                       lambda fn, device: _signature_problem(fn, ("A_bar", "X"), ()),
                       lambda fn, case: None),
}

