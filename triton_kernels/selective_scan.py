"""Fused selective scan (Mamba S6) in Triton: forward and backward kernels.

The math, argument shapes and semantics are those of `estm_ref.scan.selective_scan_ref`;
read its docstring first. This file reads top to bottom: the two `@triton.jit` kernels,
their launchers (argument checks, grid and block sizes), the `torch.autograd.Function`,
and the public `selective_scan_fn`.

Layout of the work. One program owns one batch element and a block of BLOCK_D channels
that all belong to one group of B/C, so the B/C values of a step are loaded once and
shared by the whole block. Its state h (BLOCK_D, BLOCK_N) lives in float32 registers
and the program walks L sequentially.

Memory. The forward stores the state at the start of every CHUNK steps,
chunk_states (batch, dim, ceil(L / CHUNK), N) float32, and nothing per step. The
backward walks the chunks in reverse: it recomputes the chunk's forward from the saved
start state into a per-program scratch of CHUNK states (CHUNK, BLOCK_D, BLOCK_N), then
runs the adjoint recurrence backwards through the chunk, reading h[t-1] from the
scratch. No (batch, dim, L, N) tensor exists in either direction, and h[t-1] is never
obtained by dividing by exp(dt * A) (which under- and overflows).

Reductions. dB, dC are summed over the channels of a group and dA, dD, d(delta_bias)
over the batch. Programs write partial sums into float32 buffers that torch sums
afterwards: dA, dD, d(delta_bias) per (batch, channel), plain stores, deterministic;
dB, dC into (slots, batch, G, N, L) with one slot per channel block (plain stores,
deterministic) up to `LaunchOptions.max_partials` slots (32), beyond which blocks
share slots through atomic adds. That keeps the buffers far from (batch, dim, L, N)
even when BLOCK_D is 1 (N = 256).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from triton_kernels.scan_args import check_scan_args


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20: identity above it (exp would overflow)
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))), x)


@triton.jit
def _channel_block(dim, n_groups, N, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch element, group, channels and state columns, with their masks.

    Returns i_d, i_b, i_g (int64: batch * dim * L overflows int32 at realistic sizes),
    o_d (BLOCK_D,) channel indices, o_n (BLOCK_N,) state indices and the masks m_d, m_n,
    m_dn (BLOCK_D, BLOCK_N).
    """
    i_d = tl.program_id(0).to(tl.int64)
    i_b = tl.program_id(1).to(tl.int64)
    i_g = tl.program_id(2).to(tl.int64)
    dim_per_group = dim // n_groups
    o_dg = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_dg < dim_per_group
    o_d = i_g * dim_per_group + o_dg
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    return i_d, i_b, i_g, o_d, o_n, m_d, m_n, m_dn


@triton.jit
def _channel_params(A, D, delta_bias, o_d, o_n, m_d, m_dn, N,
                    HAS_D: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr):
    """The block's A (BLOCK_D, BLOCK_N), D and delta_bias (BLOCK_D,) in float32 (zeros if absent)."""
    b_A = tl.load(A + o_d[:, None] * N + o_n[None, :], mask=m_dn, other=0.0).to(tl.float32)
    if HAS_D:
        b_D = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_D = tl.zeros(o_d.shape, dtype=tl.float32)
    if HAS_DELTA_BIAS:
        b_delta_bias = tl.load(delta_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_delta_bias = tl.zeros(o_d.shape, dtype=tl.float32)
    return b_A, b_D, b_delta_bias


@triton.jit
def _selective_scan_fwd_kernel(
    u, delta, A, B, C, D, z, delta_bias, initial_state,  # inputs
    y, last_state, chunk_states,  # outputs
    dim, L, N, n_groups, n_chunks,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, USE_INITIAL_STATE: tl.constexpr,
    STORE_CHUNK_STATES: tl.constexpr,
):
    """Grid (ceil(dim / n_groups / BLOCK_D), batch, n_groups); all tensors contiguous.

    u, delta, z, y: (batch, dim, L); A: (dim, N); B, C: (batch, n_groups, N, L);
    D, delta_bias: (dim,); initial_state, last_state: (batch, dim, N);
    chunk_states: (batch, dim, n_chunks, N), the state before steps 0, CHUNK, 2 CHUNK, ...
    """
    i_d, i_b, i_g, o_d, o_n, m_d, m_n, m_dn = _channel_block(dim, n_groups, N, BLOCK_D, BLOCK_N)
    p_u = u + (i_b * dim + o_d) * L  # (BLOCK_D,) pointers at t = 0
    p_delta = delta + (i_b * dim + o_d) * L
    p_y = y + (i_b * dim + o_d) * L
    p_z = z + (i_b * dim + o_d) * L
    p_B = B + ((i_b * n_groups + i_g) * N + o_n) * L  # (BLOCK_N,)
    p_C = C + ((i_b * n_groups + i_g) * N + o_n) * L
    o_state = (i_b * dim + o_d)[:, None] * N + o_n[None, :]  # (BLOCK_D, BLOCK_N) into (batch, dim, N)
    p_chunk = chunk_states + ((i_b * dim + o_d) * n_chunks * N)[:, None] + o_n[None, :]

    b_A, b_D, b_delta_bias = _channel_params(A, D, delta_bias, o_d, o_n, m_d, m_dn, N,
                                             HAS_D, HAS_DELTA_BIAS)
    if USE_INITIAL_STATE:
        b_h = tl.load(initial_state + o_state, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    for t in range(L):
        if STORE_CHUNK_STATES:
            # a masked store, not a branch: the condition is the same for every lane
            tl.store(p_chunk + (t // CHUNK) * N, b_h, mask=m_dn & (t % CHUNK == 0))
        b_u = tl.load(p_u + t, mask=m_d, other=0.0).to(tl.float32)
        b_dt = tl.load(p_delta + t, mask=m_d, other=0.0).to(tl.float32)
        if HAS_DELTA_BIAS:
            b_dt += b_delta_bias
        if DELTA_SOFTPLUS:
            b_dt = _softplus(b_dt)
        # B/C of this step: loaded once, shared by the BLOCK_D channels of the group
        b_B = tl.load(p_B + t, mask=m_n, other=0.0).to(tl.float32)
        b_C = tl.load(p_C + t, mask=m_n, other=0.0).to(tl.float32)
        b_h = tl.exp(b_dt[:, None] * b_A) * b_h + (b_dt * b_u)[:, None] * b_B[None, :]
        b_y = tl.sum(b_h * b_C[None, :], axis=1)
        if HAS_D:
            b_y += b_D * b_u
        if HAS_Z:
            b_z = tl.load(p_z + t, mask=m_d, other=0.0).to(tl.float32)
            b_y *= b_z * tl.sigmoid(b_z)
        tl.store(p_y + t, b_y.to(y.dtype.element_ty), mask=m_d)
    tl.store(last_state + o_state, b_h, mask=m_dn)


@triton.jit
def _selective_scan_bwd_kernel(
    u, delta, A, B, C, D, z, delta_bias, chunk_states, dy, dlast_state,  # inputs
    scratch,  # (n_programs, CHUNK, BLOCK_D, BLOCK_N) float32 work space
    du, ddelta, dz, dA_part, dB_part, dC_part, dD_part, ddelta_bias_part, dinitial_state,  # outputs
    batch, dim, L, N, n_groups, n_chunks, n_slots,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, USE_INITIAL_STATE: tl.constexpr,
    HAS_DLAST_STATE: tl.constexpr, ATOMIC_PARTIALS: tl.constexpr,
):
    """Grid and shapes as the forward; dy: (batch, dim, L); dlast_state: (batch, dim, N).

    Outputs: du, ddelta, dz: (batch, dim, L); dA_part: (batch, dim, N);
    dB_part, dC_part: (n_slots, batch, n_groups, N, L); dD_part,
    ddelta_bias_part: (batch, dim); dinitial_state: (batch, dim, N). The *_part
    buffers are float32 partial sums, reduced over their first axis by the caller.
    Channel block i_d owns dB/dC slot i_d % n_slots: with one slot per block
    (ATOMIC_PARTIALS off) plain stores, deterministic; with fewer slots than blocks,
    atomic adds into zeroed slots, which bounds the buffers when BLOCK_D is small.

    With g[t] = dLoss/dh[t] (through every later step), a[t] = exp(dt[t] * A) and
    dy'[t] the gradient of the output before the gate:
        g[t] = C[t] * dy'[t] + a[t+1] * g[t+1],   g[L-1] = C[L-1] * dy'[L-1] + dlast_state
    and every input gradient at step t needs only g[t], h[t-1], h[t] and step-t inputs.
    """
    i_d, i_b, i_g, o_d, o_n, m_d, m_n, m_dn = _channel_block(dim, n_groups, N, BLOCK_D, BLOCK_N)
    i_p = (i_b * tl.num_programs(2) + i_g) * tl.num_programs(0) + i_d  # this program's scratch slot

    o_seq = (i_b * dim + o_d) * L  # (BLOCK_D,) offsets of t = 0 in (batch, dim, L)
    o_bc = ((i_b * n_groups + i_g) * N + o_n) * L  # (BLOCK_N,) offsets of t = 0 in B, C
    o_part = ((((i_d % n_slots) * batch + i_b) * n_groups + i_g) * N + o_n) * L  # in dB_part, dC_part
    o_state = (i_b * dim + o_d)[:, None] * N + o_n[None, :]
    p_chunk = chunk_states + ((i_b * dim + o_d) * n_chunks * N)[:, None] + o_n[None, :]
    p_scratch = (scratch + i_p * CHUNK * BLOCK_D * BLOCK_N
                 + tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + o_n[None, :])

    b_A, b_D, b_delta_bias = _channel_params(A, D, delta_bias, o_d, o_n, m_d, m_dn, N,
                                             HAS_D, HAS_DELTA_BIAS)
    # b_dh carries a[t+1] * g[t+1] into step t
    if HAS_DLAST_STATE:
        b_dh = tl.load(dlast_state + o_state, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_dh = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_dD = tl.zeros([BLOCK_D], dtype=tl.float32)
    b_ddelta_bias = tl.zeros([BLOCK_D], dtype=tl.float32)

    for i_c in range(n_chunks):
        # reversed with an up-counting loop: negative-step ranges are not portable
        c = n_chunks - 1 - i_c
        # the last chunk may be short: loop over real steps only
        n_steps = tl.minimum(L - c * CHUNK, CHUNK)
        # 1) recompute the chunk's forward; scratch slot j holds h[t - 1] for t = c * CHUNK + j
        b_h = tl.load(p_chunk + c * N, mask=m_dn, other=0.0)
        for j in range(n_steps):
            t = c * CHUNK + j
            tl.store(p_scratch + j * BLOCK_D * BLOCK_N, b_h)
            b_u = tl.load(u + o_seq + t, mask=m_d, other=0.0).to(tl.float32)
            b_dt = tl.load(delta + o_seq + t, mask=m_d, other=0.0).to(tl.float32)
            if HAS_DELTA_BIAS:
                b_dt += b_delta_bias
            if DELTA_SOFTPLUS:
                b_dt = _softplus(b_dt)
            b_B = tl.load(B + o_bc + t, mask=m_n, other=0.0).to(tl.float32)
            b_h = tl.exp(b_dt[:, None] * b_A) * b_h + (b_dt * b_u)[:, None] * b_B[None, :]
        # scratch is written and read by different threads of the program on a GPU
        tl.debug_barrier()

        # 2) the adjoint recurrence backwards through the chunk
        for i_j in range(n_steps):
            j = n_steps - 1 - i_j
            t = c * CHUNK + j
            b_h_prev = tl.load(p_scratch + j * BLOCK_D * BLOCK_N)
            b_u = tl.load(u + o_seq + t, mask=m_d, other=0.0).to(tl.float32)
            b_x = tl.load(delta + o_seq + t, mask=m_d, other=0.0).to(tl.float32)
            if HAS_DELTA_BIAS:
                b_x += b_delta_bias
            if DELTA_SOFTPLUS:
                b_dt = _softplus(b_x)
            else:
                b_dt = b_x
            b_B = tl.load(B + o_bc + t, mask=m_n, other=0.0).to(tl.float32)
            b_C = tl.load(C + o_bc + t, mask=m_n, other=0.0).to(tl.float32)
            b_dy = tl.load(dy + o_seq + t, mask=m_d, other=0.0).to(tl.float32)
            b_a = tl.exp(b_dt[:, None] * b_A)
            b_h = b_a * b_h_prev + (b_dt * b_u)[:, None] * b_B[None, :]
            if HAS_Z:
                # the gate needs the pre-gate output, recomputed from h[t]
                b_y = tl.sum(b_h * b_C[None, :], axis=1)
                if HAS_D:
                    b_y += b_D * b_u
                b_z = tl.load(z + o_seq + t, mask=m_d, other=0.0).to(tl.float32)
                b_sig = tl.sigmoid(b_z)
                b_dz = b_dy * b_y * b_sig * (1.0 + b_z * (1.0 - b_sig))
                tl.store(dz + o_seq + t, b_dz.to(dz.dtype.element_ty), mask=m_d)
                b_dy = b_dy * b_z * b_sig
            b_dh += b_dy[:, None] * b_C[None, :]  # now g[t]

            b_dB = tl.sum(b_dh * (b_dt * b_u)[:, None], axis=0)
            b_dC = tl.sum(b_h * b_dy[:, None], axis=0)
            if ATOMIC_PARTIALS:
                tl.atomic_add(dB_part + o_part + t, b_dB, mask=m_n)
                tl.atomic_add(dC_part + o_part + t, b_dC, mask=m_n)
            else:
                tl.store(dB_part + o_part + t, b_dB, mask=m_n)
                tl.store(dC_part + o_part + t, b_dC, mask=m_n)
            b_du = tl.sum(b_dh * b_B[None, :], axis=1) * b_dt
            if HAS_D:
                b_du += b_dy * b_D
                b_dD += b_dy * b_u
            tl.store(du + o_seq + t, b_du.to(du.dtype.element_ty), mask=m_d)
            b_ddt = tl.sum(b_dh * (b_h_prev * b_a * b_A + b_u[:, None] * b_B[None, :]), axis=1)
            b_dA += b_dh * b_h_prev * b_a * b_dt[:, None]
            if DELTA_SOFTPLUS:
                b_ddt = tl.where(b_x <= 20.0, b_ddt * tl.sigmoid(b_x), b_ddt)
            tl.store(ddelta + o_seq + t, b_ddt.to(ddelta.dtype.element_ty), mask=m_d)
            if HAS_DELTA_BIAS:
                b_ddelta_bias += b_ddt
            b_dh = b_dh * b_a  # a[t] * g[t], the carry into step t - 1
        # the next chunk overwrites scratch slots other threads may still be reading
        tl.debug_barrier()

    if USE_INITIAL_STATE:
        tl.store(dinitial_state + o_state, b_dh, mask=m_dn)
    tl.store(dA_part + o_state, b_dA, mask=m_dn)
    if HAS_D:
        tl.store(dD_part + i_b * dim + o_d, b_dD, mask=m_d)
    if HAS_DELTA_BIAS:
        tl.store(ddelta_bias_part + i_b * dim + o_d, b_ddelta_bias, mask=m_d)


# ----------------------------------------------------------------------------- launchers

# True when TRITON_INTERPRET=1 was set before this module was imported: the kernels
# then run through the interpreter on CPU tensors.
INTERPRETED = isinstance(_selective_scan_fwd_kernel, InterpretedFunction)


@dataclass
class LaunchOptions:
    """Knobs for tests and benchmarks; None picks the default.

    poison: fill every buffer a kernel must fully overwrite with NaN first, so a
    missing store shows up as NaN instead of stale memory.
    max_partials: at most this many channel-block partial sums of dB, dC are kept
    (n_slots, batch, G, N, L); beyond it blocks share slots through atomic adds.
    """

    block_d: int | None = None
    chunk: int | None = None
    num_warps: int | None = None
    poison: bool = False
    max_partials: int = 32


_options = LaunchOptions()


@contextlib.contextmanager
def launch_options(**kwargs):
    """Temporarily override `LaunchOptions` fields, e.g. `launch_options(poison=True, chunk=4)`."""
    global _options
    saved = _options
    _options = LaunchOptions(**{**saved.__dict__, **kwargs})
    try:
        yield _options
    finally:
        _options = saved


@dataclass
class KernelLaunch:
    """One kernel launch, kept as data so that it can also be compiled ahead of time.

    args maps every runtime argument name to its tensor or int, meta every constexpr.
    """

    kernel: object
    grid: tuple[int, int, int]
    args: dict[str, object]
    meta: dict[str, object]
    num_warps: int
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self) -> None:
        device = self.args["u"].device
        # Triton launches on the current CUDA device, which need not be the tensors' one
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            self.kernel[self.grid](**self.args, **self.meta, num_warps=self.num_warps)


def _blocks(dim_per_group: int, L: int, N: int, opts: LaunchOptions) -> tuple[int, int, int, int]:
    """(BLOCK_D, BLOCK_N, CHUNK, num_warps) for a launch."""
    BLOCK_N = triton.next_power_of_2(N)
    if INTERPRETED:
        # the interpreter pays per operation, not per element: wide blocks are cheap
        block_d, chunk = min(triton.next_power_of_2(dim_per_group), 64), 16
    else:
        # a small state tile per program keeps registers low and gives more programs
        # to spread over the SMs; the loop over L is latency-bound, not compute-bound
        block_d = min(triton.next_power_of_2(dim_per_group), max(1, 256 // BLOCK_N), 16)
        # chunk_states grow as L / CHUNK and the backward scratch as CHUNK: near sqrt(L)
        # balances them; a few power-of-two values keep the number of compiled variants small
        chunk = min(64, max(16, triton.next_power_of_2(math.isqrt(L))))
    block_d = opts.block_d or block_d
    chunk = opts.chunk or chunk
    for name, value in (("block_d", block_d), ("chunk", chunk)):
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two, got {value}")
    num_warps = opts.num_warps or (1 if block_d * BLOCK_N <= 64 else 2 if block_d * BLOCK_N <= 512 else 4)
    return block_d, BLOCK_N, chunk, num_warps


def _alloc(shape, dtype, device, poison: bool, zero: bool = False) -> torch.Tensor:
    if zero:
        return torch.zeros(shape, dtype=dtype, device=device)
    if poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _check_device(u: torch.Tensor) -> None:
    if u.device.type == "cuda" or (u.device.type == "cpu" and INTERPRETED):
        return
    if u.device.type == "cpu":
        raise ValueError(
            "u is on cpu: the Triton selective scan runs on CUDA tensors, or on CPU tensors only "
            "through the Triton interpreter (set TRITON_INTERPRET=1 before importing "
            "triton_kernels.selective_scan; slow, meant for tests). Use backend='ref' for CPU.")
    raise ValueError(f"u is on {u.device}: the Triton selective scan supports cuda (and cpu "
                     "under TRITON_INTERPRET=1) only")


def fwd_launch(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
               store_chunk_states, opts: LaunchOptions) -> KernelLaunch:
    """Plan the forward launch; B, C are (batch, G, N, L) and every tensor contiguous.

    outputs: y (batch, dim, L) in u's dtype, last_state (batch, dim, N) float32 and,
    if store_chunk_states, chunk_states (batch, dim, ceil(L / CHUNK), N) float32.
    """
    batch, dim, L = u.shape
    n_groups, N = B.shape[1], B.shape[2]
    BLOCK_D, BLOCK_N, CHUNK, num_warps = _blocks(dim // n_groups, L, N, opts)
    n_chunks = triton.cdiv(L, CHUNK)
    dev, poison = u.device, opts.poison
    y = _alloc((batch, dim, L), u.dtype, dev, poison)
    last_state = _alloc((batch, dim, N), torch.float32, dev, poison)
    chunk_states = _alloc((batch, dim, n_chunks, N), torch.float32, dev, poison) \
        if store_chunk_states else last_state  # never written when not stored
    outputs = {"y": y, "last_state": last_state}
    if store_chunk_states:
        outputs["chunk_states"] = chunk_states
    return KernelLaunch(
        kernel=_selective_scan_fwd_kernel,
        grid=(triton.cdiv(dim // n_groups, BLOCK_D), batch, n_groups),
        # an absent optional tensor is replaced by u: its constexpr switch keeps it unread
        args=dict(u=u, delta=delta, A=A, B=B, C=C, D=_or(D, u), z=_or(z, u),
                  delta_bias=_or(delta_bias, u), initial_state=_or(initial_state, u),
                  y=y, last_state=last_state, chunk_states=chunk_states,
                  dim=dim, L=L, N=N, n_groups=n_groups, n_chunks=n_chunks),
        meta=dict(BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK=CHUNK, HAS_D=D is not None,
                  HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
                  DELTA_SOFTPLUS=bool(delta_softplus), USE_INITIAL_STATE=initial_state is not None,
                  STORE_CHUNK_STATES=bool(store_chunk_states)),
        num_warps=num_warps, outputs=outputs)


def bwd_launch(u, delta, A, B, C, D, z, delta_bias, chunk_states, dy, dlast_state,
               delta_softplus, use_initial_state, opts: LaunchOptions) -> KernelLaunch:
    """Plan the backward launch; CHUNK must be the one the forward used (chunk_states).

    outputs: du, ddelta, dz (or None), and the float32 partial sums dA_part, dB_part,
    dC_part, dD_part, ddelta_bias_part and dinitial_state (see the kernel's docstring).
    """
    batch, dim, L = u.shape
    n_groups, N = B.shape[1], B.shape[2]
    n_chunks = chunk_states.shape[2]
    BLOCK_D, BLOCK_N, CHUNK, num_warps = _blocks(dim // n_groups, L, N, opts)
    if n_chunks != triton.cdiv(L, CHUNK):
        raise ValueError(f"chunk_states has {n_chunks} chunks but CHUNK={CHUNK} needs {triton.cdiv(L, CHUNK)}")
    n_dblocks = triton.cdiv(dim // n_groups, BLOCK_D)
    grid = (n_dblocks, batch, n_groups)
    n_slots = min(n_dblocks, opts.max_partials)
    atomic = n_slots < n_dblocks
    dev, poison = u.device, opts.poison
    f32 = torch.float32
    out = {
        "du": _alloc((batch, dim, L), u.dtype, dev, poison),
        "ddelta": _alloc((batch, dim, L), delta.dtype, dev, poison),
        "dz": _alloc((batch, dim, L), z.dtype, dev, poison) if z is not None else None,
        "dA_part": _alloc((batch, dim, N), f32, dev, poison),
        # atomics accumulate, so their buffers start at zero and cannot be poisoned
        "dB_part": _alloc((n_slots, batch, n_groups, N, L), f32, dev, poison, zero=atomic),
        "dC_part": _alloc((n_slots, batch, n_groups, N, L), f32, dev, poison, zero=atomic),
        "dD_part": _alloc((batch, dim), f32, dev, poison) if D is not None else None,
        "ddelta_bias_part": _alloc((batch, dim), f32, dev, poison) if delta_bias is not None else None,
        "dinitial_state": _alloc((batch, dim, N), f32, dev, poison) if use_initial_state else None,
    }
    scratch = _alloc((grid[0] * grid[1] * grid[2], CHUNK, BLOCK_D, BLOCK_N), f32, dev, poison)
    dummy = out["du"]  # stands in for absent tensors; their constexpr switch keeps it untouched
    return KernelLaunch(
        kernel=_selective_scan_bwd_kernel,
        grid=grid,
        args=dict(u=u, delta=delta, A=A, B=B, C=C, D=_or(D, u), z=_or(z, u),
                  delta_bias=_or(delta_bias, u), chunk_states=chunk_states, dy=dy,
                  dlast_state=_or(dlast_state, u), scratch=scratch,
                  **{k: _or(v, dummy) for k, v in out.items()},
                  batch=batch, dim=dim, L=L, N=N, n_groups=n_groups, n_chunks=n_chunks,
                  n_slots=n_slots),
        meta=dict(BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK=CHUNK, HAS_D=D is not None,
                  HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
                  DELTA_SOFTPLUS=bool(delta_softplus), USE_INITIAL_STATE=bool(use_initial_state),
                  HAS_DLAST_STATE=dlast_state is not None, ATOMIC_PARTIALS=atomic),
        num_warps=num_warps, outputs={k: v for k, v in out.items() if v is not None})


def _or(t, default):
    return default if t is None else t


# ----------------------------------------------------------------------------- autograd


class _SelectiveScan(torch.autograd.Function):
    """Inputs as `selective_scan_fn` after normalisation: B, C (batch, G, N, L), all contiguous."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, opts):
        needs_grad = any(ctx.needs_input_grad[:9])
        launch = fwd_launch(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                            needs_grad, opts)
        launch()
        y, last_state = launch.outputs["y"], launch.outputs["last_state"]
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, launch.outputs["chunk_states"])
            ctx.delta_softplus = delta_softplus
            ctx.use_initial_state = initial_state is not None
            # the backward must walk the chunks the forward saved
            ctx.opts = LaunchOptions(**{**opts.__dict__, "chunk": launch.meta["CHUNK"],
                                        "block_d": launch.meta["BLOCK_D"]})
        ctx.set_materialize_grads(False)
        return y, last_state

    @staticmethod
    def backward(ctx, dy, dlast_state):
        u, delta, A, B, C, D, z, delta_bias, chunk_states = ctx.saved_tensors
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        if dlast_state is not None:
            dlast_state = dlast_state.contiguous()
        launch = bwd_launch(u, delta, A, B, C, D, z, delta_bias, chunk_states, dy, dlast_state,
                            ctx.delta_softplus, ctx.use_initial_state, ctx.opts)
        launch()
        g = launch.outputs
        dA = g["dA_part"].sum(0)
        dB = g["dB_part"].sum(0).to(B.dtype)
        dC = g["dC_part"].sum(0).to(C.dtype)
        dD = g["dD_part"].sum(0) if D is not None else None
        ddelta_bias = g["ddelta_bias_part"].sum(0) if delta_bias is not None else None
        return (g["du"], g["ddelta"], dA, dB, dC, dD, g.get("dz"), ddelta_bias,
                g.get("dinitial_state"), None, None)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, initial_state=None):
    """Fused Triton selective scan, forward and backward.

    Arguments, shapes, math and return values are exactly those of
    `estm_ref.scan.selective_scan_ref` (see its docstring): u, delta, z: (batch, dim, L);
    A: (dim, N) float32; B, C: (batch, N, L) or (batch, G, N, L); D, delta_bias: (dim,)
    float32; initial_state: (batch, dim, N) float32. Returns y (batch, dim, L) in u's
    dtype, or (y, last_state (batch, dim, N) float32).

    Runs on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set before this
    module was imported; anything else raises ValueError. Non-contiguous inputs are
    copied to contiguous ones.
    """
    batch, _, _, _, G = check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    _check_device(u)
    if max(batch, G) > 65535:  # the grid's second and third axes
        raise ValueError(f"u: batch {batch} or B's groups {G} exceed the CUDA grid limit 65535")
    if G == 0:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    u, delta, A, B, C, D, z, delta_bias, initial_state = (
        None if t is None else t.contiguous()
        for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    y, last_state = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                         bool(delta_softplus), _options)
    return (y, last_state) if return_last_state else y


__all__ = ["selective_scan_fn", "launch_options", "LaunchOptions", "INTERPRETED"]
