"""The selective scan as two registered PyTorch operators, so that torch.compile sees through it.

    torch.ops.estm_ref.selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                          delta_softplus, save_tile_states)
        -> (y, last_state, tile_states)
    torch.ops.estm_ref.selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                          tile_states, dy, dlast_state, delta_softplus)
        -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)

B, C are (batch, G, N, L) and every tensor contiguous (`selective_scan_op` arranges that).
On CUDA both run the Triton kernels (`torch.library.triton_op` with `wrap_triton` where
torch has them, 2.6 and later, so that inductor sees the kernels themselves;
`torch.library.custom_op` before). On CPU they run the reference: the forward scans tile
by tile from the carried state (the same recurrence, so y equals the reference's) to
produce the same tile_states, and the backward differentiates the reference. Each op has
a fake (meta) implementation, and the pair is tied together by `register_autograd`.

tile_states (batch, dim, ceil(L / BLOCK_L), N) float32 is the state before each tile:
what the kernel's backward restarts from; without save_tile_states (no input needs a
gradient) it is an empty tensor and nothing is written. Gradients of absent optional inputs come back
as empty tensors from the backward op (operators cannot return None) and as None from
autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton

from estm_ref.scan.ref import _per_channel, selective_scan_ref
from triton_kernels import selective_scan as kernels
from triton_kernels.scan_args import check_scan_args

Tensor = torch.Tensor
HAS_TRITON_OP = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")


def _define(name: str, fn):
    """Register `fn` as estm_ref::<name>: a triton_op on torch >= 2.6, else a custom_op."""
    if HAS_TRITON_OP:
        return torch.library.triton_op(f"estm_ref::{name}", fn, mutates_args=())
    return torch.library.custom_op(f"estm_ref::{name}", fn, mutates_args=(), device_types=("cuda", "cpu"))


def _wrap():
    return torch.library.wrap_triton if HAS_TRITON_OP else None


def tile_length(u: Tensor, B: Tensor) -> int:
    """BLOCK_L of the configuration the kernel chooses for this shape (B: (batch, G, N, L))."""
    G, N, L = B.shape[1], B.shape[2], u.shape[2]
    return kernels.choose_config(u.shape[1] // G, L, N).block_l


# ----------------------------------------------------------------------------- forward


def _fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
         z: Tensor | None, delta_bias: Tensor | None, initial_state: Tensor | None,
         delta_softplus: bool, save_tile_states: bool) -> tuple[Tensor, Tensor, Tensor]:
    # the body is what torch.compile traces, for every device: a per-device kernel would
    # not be used there, so the device is chosen here
    if u.device.type != "cuda":
        y, last_state, tile_states = _fwd_cpu(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                              delta_softplus)
    else:
        y, last_state, tile_states = kernels.scan_forward(
            u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_tile_states,
            wrap=_wrap())
    if not save_tile_states:
        tile_states = u.new_empty(0, dtype=torch.float32)
    return y, last_state, tile_states


def _fwd_cpu(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    batch, dim, L = u.shape
    N, block_l = A.shape[1], tile_length(u, B)
    h = u.new_zeros(batch, dim, N, dtype=torch.float32) if initial_state is None else initial_state
    ys, states = [], []
    for start in range(0, L, block_l):
        part = slice(start, start + block_l)
        states.append(h)
        y, h = selective_scan_ref(u[..., part], delta[..., part], A, B[..., part], C[..., part], D,
                                  None if z is None else z[..., part], delta_bias, delta_softplus,
                                  True, h)
        ys.append(y)
    return torch.cat(ys, dim=-1), h, torch.stack(states, dim=2)


selective_scan_fwd = _define("selective_scan_fwd", _fwd)


@selective_scan_fwd.register_fake
def _fwd_fake(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_tile_states):
    batch, dim, _ = u.shape
    N = A.shape[1]
    tiles = (batch, dim, triton.cdiv(u.shape[2], tile_length(u, B)), N) if save_tile_states else (0,)
    return (torch.empty_like(u), u.new_empty(batch, dim, N, dtype=torch.float32),
            u.new_empty(tiles, dtype=torch.float32))


# ----------------------------------------------------------------------------- backward


def _bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
         z: Tensor | None, delta_bias: Tensor | None, initial_state: Tensor | None,
         tile_states: Tensor, dy: Tensor, dlast_state: Tensor | None,
         delta_softplus: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    if u.device.type != "cuda":
        return _bwd_cpu(u, delta, A, B, C, D, z, delta_bias, initial_state, tile_states, dy,
                        dlast_state, delta_softplus)
    grads = kernels.scan_backward(u, delta, A, B, C, D, z, delta_bias, tile_states, dy, dlast_state,
                                  delta_softplus, initial_state is not None, wrap=_wrap())
    return _fill_absent(grads, u)


def _fill_absent(grads, u: Tensor) -> tuple[Tensor, ...]:
    return tuple(u.new_empty(0, dtype=torch.float32) if g is None else g for g in grads)


def _bwd_cpu(u, delta, A, B, C, D, z, delta_bias, initial_state, tile_states, dy, dlast_state,
             delta_softplus):
    """The reference's gradients written out (an operator's kernel runs below autograd):
    the states of every step, then the adjoint g[t] = C[t] dy'[t] + a[t+1] g[t+1] backwards."""
    f32, (batch, dim, L), G = torch.float32, u.shape, B.shape[1]
    x = delta.to(f32) + (0.0 if delta_bias is None else delta_bias.to(f32)[None, :, None])
    dt = F.softplus(x, threshold=20.0) if delta_softplus else x
    uf, Bd, Cd = u.to(f32), _per_channel(B.to(f32), dim), _per_channel(C.to(f32), dim)  # (b, d, L, N)
    a = torch.exp(dt[..., None] * A[:, None, :])
    h = u.new_zeros(batch, dim, A.shape[1], dtype=f32) if initial_state is None else initial_state
    h_prev = []
    for t in range(L):
        h_prev.append(h)
        h = a[:, :, t] * h + (dt[:, :, t] * uf[:, :, t])[..., None] * Bd[:, :, t]
    h_prev = torch.stack(h_prev, dim=2)
    hs = a * h_prev + (dt * uf)[..., None] * Bd
    dyp, dz = dy.to(f32), None
    if z is not None:
        zf = z.to(f32)
        sig = torch.sigmoid(zf)
        y_pre = (hs * Cd).sum(-1) + (0.0 if D is None else D[None, :, None] * uf)
        dz = (dyp * y_pre * sig * (1 + zf * (1 - sig))).to(z.dtype)
        dyp = dyp * zf * sig
    g = torch.zeros_like(h) if dlast_state is None else dlast_state.to(f32)
    gs = [None] * L
    for t in reversed(range(L)):
        g = g + dyp[:, :, t, None] * Cd[:, :, t]
        gs[t] = g
        g = a[:, :, t] * g
    gs = torch.stack(gs, dim=2)
    ddt = (gs * (h_prev * a * A[:, None, :] + uf[..., None] * Bd)).sum(-1)
    if delta_softplus:
        ddt = torch.where(x <= 20.0, ddt * torch.sigmoid(x), ddt)
    du = (gs * Bd).sum(-1) * dt + (0.0 if D is None else dyp * D[None, :, None])

    def per_group(t):  # (batch, dim, L, N) summed over each group's channels -> (batch, G, N, L)
        return t.reshape(batch, G, dim // G, L, -1).sum(2).transpose(2, 3)

    return _fill_absent([
        du.to(u.dtype), ddt.to(delta.dtype), (gs * h_prev * a * dt[..., None]).sum((0, 2)),
        per_group(gs * (dt * uf)[..., None]).to(B.dtype).contiguous(),
        per_group(hs * dyp[..., None]).to(C.dtype).contiguous(),
        None if D is None else (dyp * uf).sum((0, 2)), dz,
        None if delta_bias is None else ddt.sum((0, 2)), None if initial_state is None else g], u)


selective_scan_bwd = _define("selective_scan_bwd", _bwd)


@selective_scan_bwd.register_fake
def _bwd_fake(u, delta, A, B, C, D, z, delta_bias, initial_state, tile_states, dy, dlast_state,
              delta_softplus):
    f32 = torch.float32
    like = [torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A, dtype=f32),
            torch.empty_like(B), torch.empty_like(C), None if D is None else torch.empty_like(D, dtype=f32),
            None if z is None else torch.empty_like(z),
            None if delta_bias is None else torch.empty_like(delta_bias, dtype=f32),
            None if initial_state is None else torch.empty_like(initial_state, dtype=f32)]
    return _fill_absent(like, u)


# ----------------------------------------------------------------------------- autograd


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, _ = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, output[2])
    ctx.delta_softplus = delta_softplus
    ctx.present = [t is not None for t in (D, z, delta_bias, initial_state)]


def _backward(ctx, dy, dlast_state, _dtile_states):
    u, delta, A, B, C, D, z, delta_bias, initial_state, tile_states = ctx.saved_tensors
    dy = torch.zeros_like(u) if dy is None else dy.contiguous()
    if dlast_state is not None:
        dlast_state = dlast_state.contiguous()
    grads = list(selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, initial_state, tile_states,
                                    dy, dlast_state, ctx.delta_softplus))
    for i, present in zip((5, 6, 7, 8), ctx.present):
        if not present:
            grads[i] = None
    return (*grads, None, None)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_op(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, initial_state=None):
    """The selective scan through the registered operators: the Triton kernels on CUDA, the
    reference on CPU. Signature and semantics of `selective_scan_ref` (see its docstring)."""
    _, _, _, _, G = check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if G == 0:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    args = [None if t is None else t.contiguous() for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    y, last_state, _ = selective_scan_fwd(*args, bool(delta_softplus), save)
    return (y, last_state) if return_last_state else y
