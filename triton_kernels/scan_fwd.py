"""Selective scan, forward kernel: tiles of the sequence scanned in parallel.

The math is that of `estm_ref.scan.selective_scan_ref` (read its docstring first). One
program owns one batch element and BLOCK_D channels of one group of B/C; it walks the
sequence in tiles of BLOCK_L steps. Per tile it loads u, delta, z as (BLOCK_D, BLOCK_L)
tiles (contiguous along L) and, for each state index n, the rows B[n], C[n] of the tile
(shared by the channel block). The recurrence h[t] = a[t] h[t-1] + b[t] with
a = exp(dt A[:, n]) and b = dt u B[n] is a composition of affine maps, so the tile's
states come from one `tl.associative_scan` of the pairs (a, b) along L, with the combine
(a1, b1) . (a2, b2) = (a1 a2, b1 a2 + b2), applied to the state carried in from the
previous tile. Steps past L get the identity pair (1, 0), so the tile's last column is
the state after its last real step.

The state of the channel block is a (BLOCK_D, BLOCK_N) float32 register tensor; the loop
over n is a runtime loop that reads and writes its column n through `tl.where`, which
keeps the register count independent of N (an unrolled loop over n spilled).

These helpers (`_softplus`, `_channel_block`, `_affine_combine`) are shared with the
backward kernel in `scan_bwd.py`.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20: identity above it (exp would overflow)
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))), x)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # h -> a2 (a1 h + b1) + b2: step 1 then step 2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _channel_block(dim, n_groups, BLOCK_D: tl.constexpr):
    """This program's batch element i_b, group i_g, channels o_d (BLOCK_D,) and mask m_d.

    All int64: batch * dim * L overflows int32 at realistic sizes.
    """
    i_d = tl.program_id(0).to(tl.int64)
    i_b = tl.program_id(1).to(tl.int64)
    i_g = tl.program_id(2).to(tl.int64)
    dim_per_group = dim // n_groups
    o_dg = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_dg < dim_per_group
    o_d = i_g * dim_per_group + o_dg
    return i_d, i_b, i_g, o_d, m_d


@triton.jit
def _dt_tile(delta, o_dl, m_dl, m_l, b_delta_bias, HAS_DELTA_BIAS: tl.constexpr,
             DELTA_SOFTPLUS: tl.constexpr):
    """(x, dt): delta + delta_bias before and after the softplus, (BLOCK_D, BLOCK_L) float32,
    with dt = 0 past L (softplus(delta_bias) is not 0 there): with u = 0 there too, every
    state index's pair past L is the identity (exp(0 A), 0 u B) = (1, 0), unmasked."""
    b_x = tl.load(delta + o_dl, mask=m_dl, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        b_x += b_delta_bias[:, None]
    if DELTA_SOFTPLUS:
        b_dt = _softplus(b_x)
    else:
        b_dt = b_x
    return b_x, tl.where(m_l[None, :], b_dt, 0.0)


@triton.jit
def _state_pairs(A, B, C, o_d, m_d, o_bc, o_t, m_l, L, N, n, b_dt, b_dtu):
    """Column n of the tile: A[:, n] (BLOCK_D,), B[n], C[n] (BLOCK_L,) and the scan pairs
    a = exp(dt A[:, n]), b = dt u B[n] (BLOCK_D, BLOCK_L); past L, where `_dt_tile` made dt
    0, they are the identity pair (1, 0) without a mask."""
    b_A = tl.load(A + o_d * N + n, mask=m_d, other=0.0).to(tl.float32)
    b_B = tl.load(B + o_bc + n * L + o_t, mask=m_l, other=0.0).to(tl.float32)
    b_C = tl.load(C + o_bc + n * L + o_t, mask=m_l, other=0.0).to(tl.float32)
    b_a = tl.exp(b_dt * b_A[:, None])
    b_b = b_dtu * b_B[None, :]
    return b_A, b_B, b_C, b_a, b_b


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
    """
    i_d, i_b, i_g, o_d, m_d = _channel_block(dim, n_groups, BLOCK_D)
    o_n = tl.arange(0, BLOCK_N)
    o_l = tl.arange(0, BLOCK_L)
    m_dn = m_d[:, None] & (o_n < N)[None, :]
    o_seq = (i_b * dim + o_d) * L  # (BLOCK_D,) offsets of t = 0 in (batch, dim, L)
    o_bc = (i_b * n_groups + i_g) * N * L  # offset of B[b, g, 0, 0]
    o_state = (i_b * dim + o_d)[:, None] * N + o_n[None, :]
    o_tile = ((i_b * dim + o_d) * n_tiles)[:, None] * N + o_n[None, :]

    if HAS_D:
        b_D = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_delta_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DELTA_BIAS:
        b_delta_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    if USE_INITIAL_STATE:
        b_h = tl.load(initial_state + o_state, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    for c in range(n_tiles):
        if STORE_TILE_STATES:
            tl.store(tile_states + o_tile + c * N, b_h, mask=m_dn)
        o_t = c * BLOCK_L + o_l
        m_l = o_t < L
        m_dl = m_d[:, None] & m_l[None, :]
        o_dl = o_seq[:, None] + o_t[None, :]
        b_u = tl.load(u + o_dl, mask=m_dl, other=0.0).to(tl.float32)
        b_x, b_dt = _dt_tile(delta, o_dl, m_dl, m_l, b_delta_bias, HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        b_dtu = b_dt * b_u
        b_y = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        for n in range(N):
            _, b_B, b_C, b_a, b_b = _state_pairs(A, B, C, o_d, m_d, o_bc, o_t, m_l, L, N, n,
                                                 b_dt, b_dtu)
            b_aa, b_bb = tl.associative_scan((b_a, b_b), 1, _affine_combine)
            m_col = o_n[None, :] == n
            b_h0 = tl.sum(tl.where(m_col, b_h, 0.0), axis=1)
            b_hs = b_aa * b_h0[:, None] + b_bb  # (BLOCK_D, BLOCK_L) states of the tile
            b_y += b_hs * b_C[None, :]
            b_h_end = tl.sum(tl.where(o_l[None, :] == BLOCK_L - 1, b_hs, 0.0), axis=1)
            b_h = tl.where(m_col, b_h_end[:, None], b_h)
        if HAS_D:
            b_y += b_D[:, None] * b_u
        if HAS_Z:
            b_z = tl.load(z + o_dl, mask=m_dl, other=0.0).to(tl.float32)
            b_y *= b_z * tl.sigmoid(b_z)
        tl.store(y + o_dl, b_y.to(y.dtype.element_ty), mask=m_dl)
    tl.store(last_state + o_state, b_h, mask=m_dn)
