"""The PyTorch reference of the selective scan: the numerical ground truth.

The Triton kernel (`triton_kernels.selective_scan.selective_scan_fn`) shares its
signature and is proven equal to it by the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triton_kernels.scan_args import check_scan_args


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
