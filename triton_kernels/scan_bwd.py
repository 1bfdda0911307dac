"""Selective scan, backward kernel: the tiles in reverse, recomputed in registers.

Grid and layout as the forward (`scan_fwd.py`). The program walks its tiles from the last
to the first. For a tile and a state index n it recomputes the tile's states h from the
state the forward saved at the tile's start (one forward associative scan, in registers),
then runs the adjoint recurrence backwards with a reverse associative scan:

    g[t] = C[t] dy'[t] + a[t+1] g[t+1]     (dy' = dy * silu(z): the gradient before the gate)

where g[t] = dLoss/dh[t]. The last real step of a tile also receives the carry
a[t+1] g[t+1] from the tile after it (dlast_state for the last tile). Because g[t] needs
a[t+1], not a[t], one element of the reverse scan is the triple (a[t], 1, x[t]) and a
segment [i, j] is summarised as (a[i], P, Q) with g[i] = Q + P a[j+1] g[j+1]; combining
segment E = [i, k] with the later F = [k+1, j] gives (a_E, P_E a_F P_F, Q_E + P_E a_F Q_F).

Every input gradient at step t then needs only g[t], h[t] and a[t] h[t-1] = h[t] - b[t]
(no division by a, which under- and overflows). No global scratch, no barriers, no
atomics: dA, dD, d(delta_bias) are per-(batch, channel) sums and dB, dC per-channel-block
partial sums (n_dblocks, batch, G, N, L), all plain stores that the caller reduces in a
fixed order, so gradients are bit-reproducible.
"""

from __future__ import annotations

import triton
import triton.language as tl

from triton_kernels.scan_fwd import _affine_combine, _channel_block, _dt_tile, _state_pairs


@triton.jit
def _adjoint_combine(a_f, p_f, q_f, a_e, p_e, q_e):
    # a reverse scan passes (the later segment F, the earlier segment E): JAX's order, the
    # one Triton's own test of a reverse linear recurrence (test_scan2d) checks on GPUs
    w = p_e * a_f
    return a_e, w * p_f, q_e + w * q_f


@triton.jit
def _selective_scan_bwd_kernel(
    u, delta, A, B, C, D, z, delta_bias, tile_states, dy, dlast_state,  # inputs
    du, ddelta, dz, dA_part, dB_part, dC_part, dD_part, ddelta_bias_part, dinitial_state,  # outputs
    batch, dim, L, N, n_groups, n_tiles,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, USE_INITIAL_STATE: tl.constexpr,
    HAS_DLAST_STATE: tl.constexpr,
):
    """Shapes as the forward; dy: (batch, dim, L); dlast_state: (batch, dim, N).

    Outputs: du, ddelta, dz (batch, dim, L); float32 partial sums dA_part (batch, dim, N),
    dB_part, dC_part (n_dblocks, batch, n_groups, N, L), dD_part and ddelta_bias_part
    (batch, dim), reduced over their first axis by the caller; dinitial_state (batch, dim, N).
    """
    i_d, i_b, i_g, o_d, m_d = _channel_block(dim, n_groups, BLOCK_D)
    o_n = tl.arange(0, BLOCK_N)
    o_l = tl.arange(0, BLOCK_L)
    m_dn = m_d[:, None] & (o_n < N)[None, :]
    o_seq = (i_b * dim + o_d) * L
    o_bc = (i_b * n_groups + i_g) * N * L
    o_part = ((i_d * batch + i_b) * n_groups + i_g) * N * L  # this block's slot in dB_part, dC_part
    o_state = (i_b * dim + o_d)[:, None] * N + o_n[None, :]
    o_tile = (i_b * dim + o_d) * n_tiles * N

    if HAS_D:
        b_D = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_dD = tl.zeros([BLOCK_D], dtype=tl.float32)
    b_delta_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DELTA_BIAS:
        b_delta_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_ddelta_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    # b_g: the carry a[t+1] g[t+1] into the last real step of the current tile, per state
    if HAS_DLAST_STATE:
        b_g = tl.load(dlast_state + o_state, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    for i_c in range(n_tiles):
        c = n_tiles - 1 - i_c  # reversed with an up-counting loop: portable
        o_t = c * BLOCK_L + o_l
        m_l = o_t < L
        m_dl = m_d[:, None] & m_l[None, :]
        o_dl = o_seq[:, None] + o_t[None, :]
        m_last = o_l[None, :] == tl.minimum(L - c * BLOCK_L, BLOCK_L) - 1
        b_u = tl.load(u + o_dl, mask=m_dl, other=0.0).to(tl.float32)
        b_x, b_dt = _dt_tile(delta, o_dl, m_dl, m_l, b_delta_bias, HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        b_dtu = b_dt * b_u
        b_dy = tl.load(dy + o_dl, mask=m_dl, other=0.0).to(tl.float32)
        if HAS_Z:
            b_z = tl.load(z + o_dl, mask=m_dl, other=0.0).to(tl.float32)
            b_sig = tl.sigmoid(b_z)
            b_dyp = b_dy * b_z * b_sig
            b_ypre = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        else:
            b_dyp = b_dy
        b_du = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        b_ddt = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        for n in range(N):
            b_A, b_B, b_C, b_a, b_b = _state_pairs(A, B, C, o_d, m_d, o_bc, o_t, m_l, L, N, n,
                                                   b_dt, b_dtu)
            # 1) the tile's states from the saved start state
            b_aa, b_bb = tl.associative_scan((b_a, b_b), 1, _affine_combine)
            b_h0 = tl.load(tile_states + o_tile + c * N + n, mask=m_d, other=0.0)
            b_hs = b_aa * b_h0[:, None] + b_bb
            if HAS_Z:
                b_ypre += b_hs * b_C[None, :]
            # 2) the adjoint, backwards through the tile
            m_col = o_n[None, :] == n
            b_carry = tl.sum(tl.where(m_col, b_g, 0.0), axis=1)
            b_xg = b_dyp * b_C[None, :] + tl.where(m_last, b_carry[:, None], 0.0)
            _, _, b_gs = tl.associative_scan((b_a, tl.full([BLOCK_D, BLOCK_L], 1.0, tl.float32), b_xg),
                                             1, _adjoint_combine, reverse=True)
            # 3) the gradients of step t from g[t], h[t] and a[t] h[t-1]
            b_ah = b_hs - b_b
            tl.store(dB_part + o_part + n * L + o_t, tl.sum(b_gs * b_dtu, axis=0), mask=m_l)
            tl.store(dC_part + o_part + n * L + o_t, tl.sum(b_hs * b_dyp, axis=0), mask=m_l)
            b_du += b_gs * b_B[None, :]
            b_ddt += b_gs * (b_ah * b_A[:, None] + b_u * b_B[None, :])
            b_dA = tl.where(m_col, b_dA + tl.sum(b_gs * b_ah * b_dt, axis=1)[:, None], b_dA)
            b_g_out = tl.sum(tl.where(o_l[None, :] == 0, b_a * b_gs, 0.0), axis=1)
            b_g = tl.where(m_col, b_g_out[:, None], b_g)
        b_du *= b_dt
        if HAS_D:
            b_du += b_dyp * b_D[:, None]
            b_dD += tl.sum(b_dyp * b_u, axis=1)
        if HAS_Z:
            if HAS_D:
                b_ypre += b_D[:, None] * b_u
            b_dz = b_dy * b_ypre * b_sig * (1.0 + b_z * (1.0 - b_sig))
            tl.store(dz + o_dl, b_dz.to(dz.dtype.element_ty), mask=m_dl)
        tl.store(du + o_dl, b_du.to(du.dtype.element_ty), mask=m_dl)
        if DELTA_SOFTPLUS:
            b_ddt = tl.where(b_x <= 20.0, b_ddt * tl.sigmoid(b_x), b_ddt)
        tl.store(ddelta + o_dl, b_ddt.to(ddelta.dtype.element_ty), mask=m_dl)
        if HAS_DELTA_BIAS:
            b_ddelta_bias += tl.sum(b_ddt, axis=1)

    if USE_INITIAL_STATE:
        tl.store(dinitial_state + o_state, b_g, mask=m_dn)
    tl.store(dA_part + o_state, b_dA, mask=m_dn)
    if HAS_D:
        tl.store(dD_part + i_b * dim + o_d, b_dD, mask=m_d)
    if HAS_DELTA_BIAS:
        tl.store(ddelta_bias_part + i_b * dim + o_d, b_ddelta_bias, mask=m_d)
