"""Selective scan, forward kernel: every state of a channel block scanned at once per tile.

The math is that of `estm_ref.scan.selective_scan_ref` (read its docstring first). One
program owns one batch element and BLOCK_D channels of one group of B/C and walks the
sequence in tiles of BLOCK_L steps. Per tile it loads u, delta, z as (BLOCK_D, BLOCK_L)
tiles and B, C as (BLOCK_N, BLOCK_L) tiles (contiguous along L), and builds the pairs

    a = exp2(dt * A log2(e)),   b = dt u B            (BLOCK_D, BLOCK_N, BLOCK_L)

of the recurrence h[t] = a[t] h[t-1] + b[t] for all N states of all BLOCK_D channels. A
composition of affine maps is affine, so one `tl.associative_scan` along L with the
combine (a1, b1) . (a2, b2) = (a1 a2, b1 a2 + b2) gives every state of the tile from the
state carried in: h = A_t h0 + B_t. y is then summed over N inside the program. A is
scaled by log2(e) once per program, so each element costs one `exp2`. Steps past L get
dt = 0 and u = 0, the identity pair (1, 0), so the tile's last column is the state after
its last real step.

The helpers here (`_softplus`, `_affine_combine`, `_channel_block`, `_dt_tile`, `_bc_tile`) are
shared with the backward kernels in `scan_bwd.py`.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x log2(e))


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20: identity above it (exp would overflow)
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))), x)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # h -> a2 (a1 h + b1) + b2: step 1 then step 2. A reverse scan passes (later, earlier),
    # and g[t] = x[t] + a_next[t] g[t+1] composes the same way, so it serves both directions.
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _channel_block(i_d, dim, n_groups, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N):
    """Channels o_d (BLOCK_D,) of channel block i_d of group i_g, their mask m_d, the state
    index o_n (BLOCK_N,) and the (BLOCK_D, BLOCK_N) mask m_dn. int64: batch * dim * L
    overflows int32 at realistic sizes."""
    i_g = tl.program_id(2).to(tl.int64)
    dim_per_group = dim // n_groups
    o_dg = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_dg < dim_per_group
    o_d = i_g * dim_per_group + o_dg
    o_n = tl.arange(0, BLOCK_N)
    m_dn = m_d[:, None] & (o_n < N)[None, :]
    return o_d, m_d, o_n, m_dn


@triton.jit
def _dt_tile(delta, o_dl, m_dl, m_l, b_delta_bias, HAS_DELTA_BIAS: tl.constexpr,
             DELTA_SOFTPLUS: tl.constexpr):
    """(x, dt) of one tile, float32 (BLOCK_D, BLOCK_L): x = delta + delta_bias before the
    softplus, dt after it, with dt = 0 where m_l is false (past L)."""
    b_x = tl.load(delta + o_dl, mask=m_dl, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        b_x += b_delta_bias[:, None]
    if DELTA_SOFTPLUS:
        b_dt = _softplus(b_x)
    else:
        b_dt = b_x
    return b_x, tl.where(m_l[None, :], b_dt, 0.0)  # softplus(delta_bias) is not 0 past L


@triton.jit
def _bc_tile(B, o_bcn, m_n, o_t, m_l):
    """Rows of B (or C) for one tile: (BLOCK_N, BLOCK_L) float32, 0 past N and L."""
    return tl.load(B + o_bcn[:, None] + o_t[None, :], mask=m_n[:, None] & m_l[None, :],
                   other=0.0).to(tl.float32)


@triton.jit
def _selective_scan_fwd_kernel(
    u, delta, A, B, C, D, z, delta_bias, initial_state,  # inputs
    y, last_state, tile_states,  # outputs
    dim, L, N, n_groups, n_tiles,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, USE_INITIAL_STATE: tl.constexpr,
    STORE_TILE_STATES: tl.constexpr,
):
    """Grid (ceil(dim / n_groups / BLOCK_D), batch, n_groups); all tensors contiguous.

    u, delta, z, y: (batch, dim, L); A: (dim, N); B, C: (batch, n_groups, N, L);
    D, delta_bias: (dim,); initial_state, last_state: (batch, dim, N) float32;
    tile_states: (batch, dim, n_tiles, N) float32, the state before steps 0, BLOCK_L, ...
    (written only when STORE_TILE_STATES: a backward will follow).
    """
    i_d = tl.program_id(0).to(tl.int64)
    i_b = tl.program_id(1).to(tl.int64)
    i_g = tl.program_id(2).to(tl.int64)
    o_d, m_d, o_n, m_dn = _channel_block(i_d, dim, n_groups, BLOCK_D, BLOCK_N, N)
    m_n = o_n < N
    o_l = tl.arange(0, BLOCK_L)
    o_seq = (i_b * dim + o_d) * L  # (BLOCK_D,) offsets of t = 0 in (batch, dim, L)
    o_bcn = ((i_b * n_groups + i_g) * N + o_n) * L  # (BLOCK_N,) offsets of B[b, g, n, 0]
    o_state = (i_b * dim + o_d)[:, None] * N + o_n[None, :]
    o_tile = ((i_b * dim + o_d) * n_tiles)[:, None] * N + o_n[None, :]

    b_A2 = tl.load(A + o_d[:, None] * N + o_n[None, :], mask=m_dn, other=0.0).to(tl.float32) * LOG2E
    if HAS_D:
        b_D = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_delta_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DELTA_BIAS:
        b_delta_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    if USE_INITIAL_STATE:
        b_h = tl.load(initial_state + o_state, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    m_end = (o_l == BLOCK_L - 1)[None, None, :]

    for c in range(n_tiles):
        if STORE_TILE_STATES:
            tl.store(tile_states + o_tile + c * N, b_h, mask=m_dn)
        o_t = c * BLOCK_L + o_l
        m_l = o_t < L
        o_dl = o_seq[:, None] + o_t[None, :]
        m_dl = m_d[:, None] & m_l[None, :]
        b_u = tl.load(u + o_dl, mask=m_dl, other=0.0).to(tl.float32)
        _, b_dt = _dt_tile(delta, o_dl, m_dl, m_l, b_delta_bias, HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        b_B = _bc_tile(B, o_bcn, m_n, o_t, m_l)
        b_C = _bc_tile(C, o_bcn, m_n, o_t, m_l)
        b_a = tl.exp2(b_dt[:, None, :] * b_A2[:, :, None])
        b_b = (b_dt * b_u)[:, None, :] * b_B[None, :, :]
        b_aa, b_bb = tl.associative_scan((b_a, b_b), 2, _affine_combine)
        b_hs = b_aa * b_h[:, :, None] + b_bb  # (BLOCK_D, BLOCK_N, BLOCK_L)
        b_y = tl.sum(b_hs * b_C[None, :, :], axis=1)
        b_h = tl.sum(tl.where(m_end, b_hs, 0.0), axis=2)
        if HAS_D:
            b_y += b_D[:, None] * b_u
        if HAS_Z:
            b_z = tl.load(z + o_dl, mask=m_dl, other=0.0).to(tl.float32)
            b_y *= b_z * tl.sigmoid(b_z)
        tl.store(y + o_dl, b_y.to(y.dtype.element_ty), mask=m_dl)
    tl.store(last_state + o_state, b_h, mask=m_dn)
