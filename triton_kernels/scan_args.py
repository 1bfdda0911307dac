"""Argument checks shared by the Triton scan and any reference: plain torch, no project imports.

Bad shapes, dtypes, devices or N > MAX_D_STATE raise a ValueError that names the argument.
"""

from __future__ import annotations

import torch

MAX_D_STATE = 256
LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


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
