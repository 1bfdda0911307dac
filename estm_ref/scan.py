"""The selective scan: argument checks, the PyTorch reference, and the backend dispatcher.

`selective_scan_ref` is the numerical ground truth; the Triton kernel
(`triton_kernels.selective_scan.selective_scan_fn`) shares its signature and is
proven equal to it by the tests. `selective_scan` picks one explicitly.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MAX_D_STATE = 256
LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "ref", "triton")


def check_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None,
                    allow_float64=False):
    """Raise a ValueError naming the first bad argument; return (batch, dim, L, N, G).

    G is 0 for B/C of shape (batch, N, L) and the group count for (batch, G, N, L).
    """
    io_dtypes = LOW_PRECISION + ((torch.float64,) if allow_float64 else ())
    param_dtypes = (torch.float32,) + ((torch.float64,) if allow_float64 else ())
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise ValueError(f"u must have shape (batch, dim, L), got {tuple(u.shape)}")
    batch, dim, L = u.shape
    if batch == 0 or dim == 0 or L == 0:
        raise ValueError(f"u must be non-empty, got shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must have shape (dim={dim}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    if not 1 <= N <= MAX_D_STATE:
        raise ValueError(f"A: d_state N must be in [1, {MAX_D_STATE}], got {N}")
    device = u.device

    def check(name, t, shape, dtypes):
        if t is None:
            return
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
        if t.dtype not in dtypes:
            raise ValueError(f"{name} has dtype {t.dtype}; expected one of {dtypes}")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but u is on {device}")

    check("u", u, (batch, dim, L), io_dtypes)
    check("delta", delta, (batch, dim, L), io_dtypes)
    check("A", A, (dim, N), param_dtypes)
    if B.dim() == 3:
        G = 0
        bc_shape = (batch, N, L)
    elif B.dim() == 4:
        G = B.shape[1]
        if G < 1 or dim % G:
            raise ValueError(f"B: {G} groups do not split dim={dim} evenly")
        bc_shape = (batch, G, N, L)
    else:
        raise ValueError(f"B must have shape (batch, N, L) or (batch, G, N, L), got {tuple(B.shape)}")
    check("B", B, bc_shape, io_dtypes)
    check("C", C, bc_shape, io_dtypes)
    check("D", D, (dim,), param_dtypes)
    check("z", z, (batch, dim, L), io_dtypes)
    check("delta_bias", delta_bias, (dim,), param_dtypes)
    check("initial_state", initial_state, (batch, dim, N), param_dtypes)
    return batch, dim, L, N, G


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False, initial_state=None):
    """Selective scan (Mamba S6), written as the plain recurrence. The ground truth.

    Shapes: u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, N, L) or
    (batch, G, N, L) where group g serves channels [g*dim/G, (g+1)*dim/G);
    D, delta_bias: (dim,); initial_state: (batch, dim, N).

    For every batch b, channel d, state n and step t = 0..L-1, with h_{-1} = initial_state
    (zeros when None)::

        dt[t]   = delta[b,d,t] + delta_bias[d]           (softplus(dt), threshold 20, if delta_softplus)
        h[t,n]  = exp(dt[t] * A[d,n]) * h[t-1,n] + dt[t] * B[b,n,t] * u[b,d,t]
        y[t]    = sum_n C[b,n,t] * h[t,n] + D[d] * u[b,d,t]
        y[t]   *= silu(z[b,d,t])                          (if z is given)

    All arithmetic is float32 whatever the input dtype (float64 if any input is float64,
    for gradcheck). Returns y with u's dtype, or (y, last_state) with last_state =
    h[L-1] as float32 (batch, dim, N) when return_last_state.
    """
    batch, dim, L, N, G = check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                          allow_float64=True)
    inputs = [u, delta, A, B, C, D, z, delta_bias, initial_state]
    ctype = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in inputs) \
        else torch.float32
    out_dtype = u.dtype
    u_f, A_f = u.to(ctype), A.to(ctype)
    dt = delta.to(ctype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ctype)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt, threshold=20.0)
    B_f, C_f = _per_channel(B.to(ctype), dim), _per_channel(C.to(ctype), dim)  # (batch, dim, L, N)

    # Everything but the recurrence itself is computed for all steps at once: the loop
    # over L is then one multiply-add per step, which keeps autograd's graph small.
    decay = torch.exp(dt[..., None] * A_f[:, None, :])  # (batch, dim, L, N)
    drive = (dt * u_f)[..., None] * B_f  # (batch, dim, L, N)
    h = u.new_zeros((batch, dim, N), dtype=ctype) if initial_state is None \
        else initial_state.to(ctype)
    states = []
    for decay_t, drive_t in zip(decay.unbind(2), drive.unbind(2)):
        h = decay_t * h + drive_t
        states.append(h)
    y = (torch.stack(states, dim=2) * C_f).sum(-1)  # (batch, dim, L)
    if D is not None:
        y = y + D.to(ctype)[None, :, None] * u_f
    if z is not None:
        y = y * F.silu(z.to(ctype))
    y = y.to(out_dtype)
    if return_last_state:
        return y, h.to(torch.float64 if ctype == torch.float64 else torch.float32)
    return y


def _per_channel(bc: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, N, L) or (batch, G, N, L) -> (batch, dim, L, N), a broadcast view when G <= 1."""
    bc = bc.transpose(-1, -2)
    if bc.dim() == 3:
        return bc[:, None].expand(-1, dim, -1, -1)
    batch, G, L, N = bc.shape
    return bc[:, :, None].expand(batch, G, dim // G, L, N).reshape(batch, dim, L, N)


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
