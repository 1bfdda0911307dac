"""Selective scan, backward: the adjoint's carries first, then every tile in parallel.

With g[t] = dLoss/dh[t] and dy' = dy * silu(z) (the gradient before the gate),

    g[t] = C[t] dy'[t] + a[t+1] g[t+1],    g[L-1] = C[L-1] dy'[L-1] + dlast_state.

Every input gradient at step t needs only g[t], h[t] and a[t] h[t-1] = h[t] - b[t] (no
division by a, which under- and overflows). Two kernels:

1. `_selective_scan_bwd_carry_kernel`, grid (channel blocks, batch, G), walks the tiles
   from the last to the first and stores, per tile, the carry into the tile's last real
   step (g_carry (batch, dim, n_tiles, N) float32: a[t+1] g[t+1] from the tile after it,
   dlast_state for the last tile). It needs no state h: a tile maps its carry to the
   previous one as g[start] = sum_t x[t] w[t] + w[last] carry with x = C dy' and
   w[t] = prod_{start < s <= t} a[s] = exp2(A log2(e) (cumsum(dt)[t] - dt[start])),
   a plain sum along L. The carry out of the first tile is d(initial_state).
2. `_selective_scan_bwd_tile_kernel`, grid (tiles x slices, batch, G): a program owns one
   tile of one batch element and one slice of a group's channel blocks (at most
   MAX_SLICES slices), and loops over those blocks. Per block it recomputes the tile's
   states from the forward's tile state (one forward scan), runs the adjoint backwards
   from the tile's carry (one reverse scan of the pairs (a[t+1], x[t])) and writes du,
   ddelta, dz; dB and dC are summed over the slice's channels in registers and stored
   once per (slice, tile), so their workspace is at most MAX_SLICES times B and C, whatever
   dim. dA, dD, d(delta_bias) are stored per (tile, batch, channel).

No atomics, no barriers, no global scratch beyond g_carry: every partial sum is a plain
store that the launcher reduces in a fixed order, so gradients are bit-identical run to run.
"""

from __future__ import annotations

import triton
import triton.language as tl

from triton_kernels.scan_fwd import LOG2E, _affine_combine, _bc_tile, _channel_block, _dt_tile


@triton.jit
def _gated_dy(dy, z, o_dl, m_dl, HAS_Z: tl.constexpr):
    """(dy, dy', z, sigmoid(z)) of one tile, float32 (BLOCK_D, BLOCK_L); dy' = dy * silu(z)
    (without z: dy' = dy, and z, sigmoid(z) are dy, unused)."""
    b_dy = tl.load(dy + o_dl, mask=m_dl, other=0.0).to(tl.float32)
    if HAS_Z:
        b_z = tl.load(z + o_dl, mask=m_dl, other=0.0).to(tl.float32)
        b_sig = tl.sigmoid(b_z)
        return b_dy, b_dy * b_z * b_sig, b_z, b_sig
    return b_dy, b_dy, b_dy, b_dy


@triton.jit
def _selective_scan_bwd_carry_kernel(
    delta, A, C, z, delta_bias, dy, dlast_state,  # inputs
    g_carry, dinitial_state,  # outputs
    dim, L, N, n_groups, n_tiles,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, HAS_DLAST_STATE: tl.constexpr,
):
    """Grid and shapes as the forward; g_carry: (batch, dim, n_tiles, N) float32."""
    i_d = tl.program_id(0).to(tl.int64)
    i_b = tl.program_id(1).to(tl.int64)
    i_g = tl.program_id(2).to(tl.int64)
    o_d, m_d, o_n, m_dn = _channel_block(i_d, dim, n_groups, BLOCK_D, BLOCK_N, N)
    m_n = o_n < N
    o_l = tl.arange(0, BLOCK_L)
    o_seq = (i_b * dim + o_d) * L
    o_bcn = ((i_b * n_groups + i_g) * N + o_n) * L
    o_state = (i_b * dim + o_d)[:, None] * N + o_n[None, :]
    o_tile = ((i_b * dim + o_d) * n_tiles)[:, None] * N + o_n[None, :]

    b_A2 = tl.load(A + o_d[:, None] * N + o_n[None, :], mask=m_dn, other=0.0).to(tl.float32) * LOG2E
    b_delta_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DELTA_BIAS:
        b_delta_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_DLAST_STATE:
        b_g = tl.load(dlast_state + o_state, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    for i_c in range(n_tiles):
        c = n_tiles - 1 - i_c  # reversed with an up-counting loop: portable
        tl.store(g_carry + o_tile + c * N, b_g, mask=m_dn)
        o_t = c * BLOCK_L + o_l
        m_l = o_t < L
        o_dl = o_seq[:, None] + o_t[None, :]
        m_dl = m_d[:, None] & m_l[None, :]
        _, b_dt = _dt_tile(delta, o_dl, m_dl, m_l, b_delta_bias, HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        _, b_dyp, _, _ = _gated_dy(dy, z, o_dl, m_dl, HAS_Z)
        b_C = _bc_tile(C, o_bcn, m_n, o_t, m_l)
        b_dt0 = tl.sum(tl.where(o_l[None, :] == 0, b_dt, 0.0), axis=1)
        b_e = tl.cumsum(b_dt, axis=1) - b_dt0[:, None]  # sum of dt over (start, t]; flat past L
        b_e_last = tl.sum(tl.where(o_l[None, :] == BLOCK_L - 1, b_e, 0.0), axis=1)
        b_w = tl.exp2(b_A2[:, :, None] * b_e[:, None, :])
        b_x = b_dyp[:, None, :] * b_C[None, :, :]
        b_g_start = tl.sum(b_x * b_w, axis=2) + b_g * tl.exp2(b_A2 * b_e_last[:, None])
        b_g = tl.exp2(b_A2 * b_dt0[:, None]) * b_g_start  # a[start] g[start]
    if USE_INITIAL_STATE:
        tl.store(dinitial_state + o_state, b_g, mask=m_dn)


@triton.jit
def _selective_scan_bwd_tile_kernel(
    u, delta, A, B, C, D, z, delta_bias, tile_states, g_carry, dy,  # inputs
    du, ddelta, dz, dA_part, dB_part, dC_part, dD_part, ddelta_bias_part,  # outputs
    batch, dim, L, N, n_groups, n_tiles, blocks_per_slice,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr,
):
    """Grid (n_tiles * n_slices, batch, n_groups). Outputs: du, ddelta, dz (batch, dim, L);
    float32 partial sums dA_part (n_tiles, batch, dim, N), dB_part, dC_part
    (n_slices, batch, n_groups, N, L), dD_part and ddelta_bias_part (n_tiles, batch, dim)."""
    c = tl.program_id(0) % n_tiles
    i_s = (tl.program_id(0) // n_tiles).to(tl.int64)
    i_b = tl.program_id(1).to(tl.int64)
    i_g = tl.program_id(2).to(tl.int64)
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    o_l = tl.arange(0, BLOCK_L)
    o_t = c * BLOCK_L + o_l
    m_l = o_t < L
    o_bcn = ((i_b * n_groups + i_g) * N + o_n) * L
    b_B = _bc_tile(B, o_bcn, m_n, o_t, m_l)
    b_C = _bc_tile(C, o_bcn, m_n, o_t, m_l)
    t_last = tl.minimum(L - c * BLOCK_L, BLOCK_L) - 1  # the tile's last real step
    m_last = (o_l == t_last)[None, None, :]
    m_next = (o_l < t_last)[None, :]  # a[t+1] lies inside the tile
    m_l_next = (o_t + 1) < L
    b_dB = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)
    b_dC = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)

    for k in range(blocks_per_slice):
        o_d, m_d, _, m_dn = _channel_block(i_s * blocks_per_slice + k, dim, n_groups, BLOCK_D, BLOCK_N, N)
        o_seq = (i_b * dim + o_d) * L
        o_tile = ((i_b * dim + o_d) * n_tiles + c)[:, None] * N + o_n[None, :]
        b_A = tl.load(A + o_d[:, None] * N + o_n[None, :], mask=m_dn, other=0.0).to(tl.float32)
        b_A2 = b_A * LOG2E
        b_delta_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_DELTA_BIAS:
            b_delta_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
        o_dl = o_seq[:, None] + o_t[None, :]
        m_dl = m_d[:, None] & m_l[None, :]
        b_u = tl.load(u + o_dl, mask=m_dl, other=0.0).to(tl.float32)
        b_x, b_dt = _dt_tile(delta, o_dl, m_dl, m_l, b_delta_bias, HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        _, b_dt_next = _dt_tile(delta, o_dl + 1, m_d[:, None] & m_l_next[None, :], m_l_next,
                                b_delta_bias, HAS_DELTA_BIAS, DELTA_SOFTPLUS)  # dt[t+1]
        b_dy, b_dyp, b_z, b_sig = _gated_dy(dy, z, o_dl, m_dl, HAS_Z)
        b_dtu = b_dt * b_u
        # 1) the tile's states from the state the forward saved at its start
        b_a = tl.exp2(b_dt[:, None, :] * b_A2[:, :, None])
        b_b = b_dtu[:, None, :] * b_B[None, :, :]
        b_aa, b_bb = tl.associative_scan((b_a, b_b), 2, _affine_combine)
        b_h0 = tl.load(tile_states + o_tile, mask=m_dn, other=0.0)
        b_hs = b_aa * b_h0[:, :, None] + b_bb
        # 2) the adjoint, backwards through the tile from the carry into its last step
        b_a_next = tl.where(m_next[:, None, :], tl.exp2(b_dt_next[:, None, :] * b_A2[:, :, None]), 0.0)
        b_carry = tl.load(g_carry + o_tile, mask=m_dn, other=0.0)
        b_xg = b_dyp[:, None, :] * b_C[None, :, :] + tl.where(m_last, b_carry[:, :, None], 0.0)
        _, b_gs = tl.associative_scan((b_a_next, b_xg), 2, _affine_combine, reverse=True)
        # 3) the gradients of step t from g[t], h[t] and a[t] h[t-1] = h[t] - b[t]
        b_gah = b_gs * (b_hs - b_b)
        b_gB = tl.sum(b_gs * b_B[None, :, :], axis=1)
        b_ddt = tl.sum(b_gah * b_A[:, :, None], axis=1) + b_u * b_gB
        b_du = b_dt * b_gB
        b_dB += tl.sum(b_gs * b_dtu[:, None, :], axis=0)
        b_dC += tl.sum(b_hs * b_dyp[:, None, :], axis=0)
        o_part = (c * batch + i_b) * dim + o_d  # (BLOCK_D,) rows of dA_part, dD_part, ...
        tl.store(dA_part + o_part[:, None] * N + o_n[None, :], tl.sum(b_gah * b_dt[:, None, :], axis=2),
                 mask=m_dn)
        if HAS_D:
            b_D = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
            b_du += b_dyp * b_D[:, None]
            tl.store(dD_part + o_part, tl.sum(b_dyp * b_u, axis=1), mask=m_d)
        if HAS_Z:
            b_ypre = tl.sum(b_hs * b_C[None, :, :], axis=1)
            if HAS_D:
                b_ypre += b_D[:, None] * b_u
            b_dz = b_dy * b_ypre * b_sig * (1.0 + b_z * (1.0 - b_sig))
            tl.store(dz + o_dl, b_dz.to(dz.dtype.element_ty), mask=m_dl)
        tl.store(du + o_dl, b_du.to(du.dtype.element_ty), mask=m_dl)
        if DELTA_SOFTPLUS:
            b_ddt = tl.where(b_x <= 20.0, b_ddt * tl.sigmoid(b_x), b_ddt)
        tl.store(ddelta + o_dl, b_ddt.to(ddelta.dtype.element_ty), mask=m_dl)
        if HAS_DELTA_BIAS:
            tl.store(ddelta_bias_part + o_part, tl.sum(b_ddt, axis=1), mask=m_d)

    o_slot = (((i_s * batch + i_b) * n_groups + i_g) * N + o_n)[:, None] * L + o_t[None, :]
    m_nl = m_n[:, None] & m_l[None, :]
    tl.store(dB_part + o_slot, b_dB, mask=m_nl)
    tl.store(dC_part + o_slot, b_dC, mask=m_nl)
