"""Fused selective scan (Mamba S6) in Triton: launch configurations, launchers, autograd.

The math, argument shapes and semantics are those of `estm_ref.scan.selective_scan_ref`;
read its docstring first. The kernels live in `scan_fwd.py` (forward: tiles of the
sequence, one associative scan per state index) and `scan_bwd.py` (backward: tiles in
reverse, recomputed in registers, reverse associative scan for the adjoint). This file
reads top to bottom: the pinned launch configurations, the launch plans (checks, grid,
buffers), the forward and backward as functions of tensors, the `torch.autograd.Function`
and the public `selective_scan_fn`.

Memory. A forward that a backward will follow saves only the state at each tile
boundary, tile_states (batch, dim, ceil(L / BLOCK_L), N) float32; one without (no input
needs a gradient) saves nothing. Nothing of size (batch, dim, L, N) exists in either
direction. The backward writes dB, dC as one partial sum per channel block
(n_dblocks, batch, G, N, L) and dA, dD, d(delta_bias) per batch element, all plain stores
reduced here in a fixed order: no atomics, gradients are bit-identical run to run.

Launch knobs are explicit: `selective_scan_fn(..., options=LaunchOptions(...))`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction

from triton_kernels.scan_args import check_scan_args
from triton_kernels.scan_bwd import _selective_scan_bwd_kernel
from triton_kernels.scan_fwd import _selective_scan_fwd_kernel

# True when TRITON_INTERPRET=1 was set before the kernels were defined: they then run
# through the interpreter on CPU tensors.
INTERPRETED = isinstance(_selective_scan_fwd_kernel, InterpretedFunction)


# ----------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class ScanConfig:
    """Block sizes of one launch: BLOCK_D channels x BLOCK_L steps per tile, warps, and
    BLOCK_N, the width of the carried state (None: N rounded up to a power of two)."""

    block_d: int
    block_l: int
    num_warps: int = 4
    block_n: int | None = None

    def __post_init__(self):
        for name in ("block_d", "block_l", "num_warps", "block_n"):
            value = getattr(self, name)
            if value is not None and (value < 1 or value & (value - 1)):
                raise ValueError(f"{name} must be a power of two, got {value}")


# The pinned set (no autotuning): (config, longest L, largest N it is chosen for). Each
# compiles for sm_80 and sm_90 without a register spill in bfloat16 (the float32 forward
# spills a few bytes on sm_90: bench/scan_static.py, record in bench/results/scan-static.md); BLOCK_N is fixed
# per class of N so that the compiled variants are exactly these. The channel block is as
# wide as registers allow: the backward's dB, dC partial sums are one (batch, G, N, L)
# slab per channel block, so BLOCK_D sets the bytes they add (bench/scan_cost.py). As N
# grows the block narrows, since the carried state and the dA accumulator are
# BLOCK_D x BLOCK_N registers.
UNBOUNDED = 1 << 62
CONFIGS: tuple[tuple[ScanConfig, int, int], ...] = (
    (ScanConfig(32, 32, 4, 16), UNBOUNDED, 16),  # Mamba's d_state; ESTM's 13 and 17 tokens are one tile
    (ScanConfig(16, 32, 4, 64), UNBOUNDED, 64),
    (ScanConfig(2, 64, 4, 256), UNBOUNDED, 256),
)


# On a GPU the channel block narrows (halving, down to MIN_BLOCK_D) while the programs of
# a launch would give fewer than PROGRAMS_PER_SM per multiprocessor: batch 1 x dim 1536 at
# BLOCK_D 32 is 48 programs for 132 SMs. A tile of MIN_BLOCK_D x BLOCK_L still gives each
# of the 128 threads of 4 warps an element.
PROGRAMS_PER_SM, MIN_BLOCK_D = 2, 4


def choose_config(dim_per_group: int, L: int, N: int, programs_per_block: int = 1,
                  sm_count: int | None = None) -> ScanConfig:
    """The pinned configuration for a shape, its channel block narrowed when
    programs_per_block (batch x groups) channel blocks would leave multiprocessors idle
    (sm_count None: not narrowed).

    Under the interpreter, which pays per element, BLOCK_D shrinks to the group's channel
    count; compiled kernels use the pinned configuration as it is.
    """
    config = next(c for c, max_L, max_N in CONFIGS if L <= max_L and N <= max_N)
    block_d = config.block_d
    if INTERPRETED:
        block_d = min(block_d, triton.next_power_of_2(dim_per_group))
    while (sm_count and block_d > MIN_BLOCK_D
           and triton.cdiv(dim_per_group, block_d) * programs_per_block < PROGRAMS_PER_SM * sm_count):
        block_d //= 2
    return replace(config, block_d=block_d)


@dataclass(frozen=True)
class LaunchOptions:
    """Knobs for tests and benchmarks.

    config: block sizes to use instead of `choose_config`'s (None: chosen by shape).
    poison: fill every buffer a kernel must fully overwrite with NaN first, so a missing
    store shows up as NaN instead of stale memory.
    """

    config: ScanConfig | None = None
    poison: bool = False


DEFAULT_OPTIONS = LaunchOptions()


# ----------------------------------------------------------------------------- launch plans


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

    def __call__(self, wrap=None) -> None:
        """Launch; `wrap` (e.g. torch.library.wrap_triton) wraps the kernel first."""
        kernel = wrap(self.kernel) if wrap is not None else self.kernel
        device = self.args["u"].device
        # Triton launches on the current CUDA device, which need not be the tensors' one
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            kernel[self.grid](**self.args, **self.meta, num_warps=self.num_warps)


def _alloc(shape, dtype, device, poison: bool) -> torch.Tensor:
    if poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _or(t, default):
    return default if t is None else t


def _flags(D, z, delta_bias, delta_softplus) -> dict[str, bool]:
    return dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
                DELTA_SOFTPLUS=bool(delta_softplus))


def _geometry(u, B, options: LaunchOptions):
    """(batch, dim, L, N, G, config, grid, n_tiles) of a launch; B is (batch, G, N, L)."""
    batch, dim, L = u.shape
    n_groups, N = B.shape[1], B.shape[2]
    sm_count = torch.cuda.get_device_properties(u.device).multi_processor_count if u.device.type == "cuda" else None
    config = options.config or choose_config(dim // n_groups, L, N, batch * n_groups, sm_count)
    if config.block_n is None:
        config = replace(config, block_n=triton.next_power_of_2(N))
    if config.block_n < N:
        raise ValueError(f"A: d_state N={N} exceeds the configuration's block_n={config.block_n}")
    grid = (triton.cdiv(dim // n_groups, config.block_d), batch, n_groups)
    return batch, dim, L, N, n_groups, config, grid, triton.cdiv(L, config.block_l)


def fwd_launch(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
               store_tile_states, options: LaunchOptions = DEFAULT_OPTIONS) -> KernelLaunch:
    """Plan the forward; B, C are (batch, G, N, L) and every tensor contiguous.

    outputs: y (batch, dim, L) in u's dtype, last_state (batch, dim, N) float32 and,
    if store_tile_states, tile_states (batch, dim, n_tiles, N) float32.
    """
    batch, dim, L, N, n_groups, config, grid, n_tiles = _geometry(u, B, options)
    dev, poison = u.device, options.poison
    y = _alloc((batch, dim, L), u.dtype, dev, poison)
    last_state = _alloc((batch, dim, N), torch.float32, dev, poison)
    outputs = {"y": y, "last_state": last_state}
    if store_tile_states:
        outputs["tile_states"] = _alloc((batch, dim, n_tiles, N), torch.float32, dev, poison)
    return KernelLaunch(
        kernel=_selective_scan_fwd_kernel, grid=grid,
        # an absent optional tensor is replaced by u: its constexpr switch keeps it unread
        args=dict(u=u, delta=delta, A=A, B=B, C=C, D=_or(D, u), z=_or(z, u),
                  delta_bias=_or(delta_bias, u), initial_state=_or(initial_state, u),
                  y=y, last_state=last_state, tile_states=outputs.get("tile_states", last_state),
                  dim=dim, L=L, N=N, n_groups=n_groups, n_tiles=n_tiles),
        meta=dict(BLOCK_D=config.block_d, BLOCK_L=config.block_l,
                  BLOCK_N=config.block_n, **_flags(D, z, delta_bias, delta_softplus),
                  USE_INITIAL_STATE=initial_state is not None,
                  STORE_TILE_STATES=bool(store_tile_states)),
        num_warps=config.num_warps, outputs=outputs)


def bwd_launch(u, delta, A, B, C, D, z, delta_bias, tile_states, dy, dlast_state,
               delta_softplus, use_initial_state, options: LaunchOptions = DEFAULT_OPTIONS) -> KernelLaunch:
    """Plan the backward; the configuration must be the forward's (tile_states' tiles).

    outputs: du, ddelta, dz (when z is given) and the float32 partial sums dA_part,
    dB_part, dC_part, dD_part, ddelta_bias_part and dinitial_state (see the kernel).
    """
    batch, dim, L, N, n_groups, config, grid, n_tiles = _geometry(u, B, options)
    if tile_states.shape[2] != n_tiles:
        raise ValueError(f"tile_states has {tile_states.shape[2]} tiles but BLOCK_L="
                         f"{config.block_l} needs {n_tiles}: use the forward's configuration")
    dev, poison, f32 = u.device, options.poison, torch.float32
    out = {
        "du": _alloc((batch, dim, L), u.dtype, dev, poison),
        "ddelta": _alloc((batch, dim, L), delta.dtype, dev, poison),
        "dz": _alloc((batch, dim, L), z.dtype, dev, poison) if z is not None else None,
        "dA_part": _alloc((batch, dim, N), f32, dev, poison),
        "dB_part": _alloc((grid[0], batch, n_groups, N, L), f32, dev, poison),
        "dC_part": _alloc((grid[0], batch, n_groups, N, L), f32, dev, poison),
        "dD_part": _alloc((batch, dim), f32, dev, poison) if D is not None else None,
        "ddelta_bias_part": _alloc((batch, dim), f32, dev, poison) if delta_bias is not None else None,
        "dinitial_state": _alloc((batch, dim, N), f32, dev, poison) if use_initial_state else None,
    }
    dummy = out["du"]  # stands in for absent tensors; their constexpr switch keeps it untouched
    return KernelLaunch(
        kernel=_selective_scan_bwd_kernel, grid=grid,
        args=dict(u=u, delta=delta, A=A, B=B, C=C, D=_or(D, u), z=_or(z, u),
                  delta_bias=_or(delta_bias, u), tile_states=tile_states, dy=dy,
                  dlast_state=_or(dlast_state, u), **{k: _or(v, dummy) for k, v in out.items()},
                  batch=batch, dim=dim, L=L, N=N, n_groups=n_groups, n_tiles=n_tiles),
        meta=dict(BLOCK_D=config.block_d, BLOCK_L=config.block_l,
                  BLOCK_N=config.block_n, **_flags(D, z, delta_bias, delta_softplus),
                  USE_INITIAL_STATE=bool(use_initial_state), HAS_DLAST_STATE=dlast_state is not None),
        num_warps=config.num_warps, outputs={k: v for k, v in out.items() if v is not None})


# ----------------------------------------------------------------------------- tensors in, tensors out


def scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                 store_tile_states, options: LaunchOptions = DEFAULT_OPTIONS, wrap=None):
    """(y, last_state, tile_states or None); B, C (batch, G, N, L), all contiguous."""
    launch = fwd_launch(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                        store_tile_states, options)
    launch(wrap)
    return launch.outputs["y"], launch.outputs["last_state"], launch.outputs.get("tile_states")


def scan_backward(u, delta, A, B, C, D, z, delta_bias, tile_states, dy, dlast_state,
                  delta_softplus, use_initial_state, options: LaunchOptions = DEFAULT_OPTIONS,
                  wrap=None):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state), None where
    the input is absent; the partial sums are reduced in a fixed order (deterministic)."""
    launch = bwd_launch(u, delta, A, B, C, D, z, delta_bias, tile_states, dy, dlast_state,
                        delta_softplus, use_initial_state, options)
    launch(wrap)
    g = launch.outputs
    dD = g["dD_part"].sum(0) if D is not None else None
    ddelta_bias = g["ddelta_bias_part"].sum(0) if delta_bias is not None else None
    return (g["du"], g["ddelta"], g["dA_part"].sum(0), g["dB_part"].sum(0).to(B.dtype),
            g["dC_part"].sum(0).to(C.dtype), dD, g.get("dz"), ddelta_bias, g.get("dinitial_state"))


# ----------------------------------------------------------------------------- autograd


class _SelectiveScan(torch.autograd.Function):
    """Inputs as `selective_scan_fn` after normalisation: B, C (batch, G, N, L), all contiguous."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, options):
        needs_grad = any(ctx.needs_input_grad[:9])
        if needs_grad:  # the backward must walk the forward's tiles
            options = replace(options, config=options.config or _geometry(u, B, options)[5])
        y, last_state, tile_states = scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                                  delta_softplus, needs_grad, options)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, tile_states)
            ctx.delta_softplus = delta_softplus
            ctx.use_initial_state = initial_state is not None
            ctx.options = options
        ctx.set_materialize_grads(False)
        return y, last_state

    @staticmethod
    def backward(ctx, dy, dlast_state):
        u, delta, A, B, C, D, z, delta_bias, tile_states = ctx.saved_tensors
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        if dlast_state is not None:
            dlast_state = dlast_state.contiguous()
        grads = scan_backward(u, delta, A, B, C, D, z, delta_bias, tile_states, dy, dlast_state,
                              ctx.delta_softplus, ctx.use_initial_state, ctx.options)
        return (*grads, None, None)


def check_device(u: torch.Tensor) -> None:
    """Raise unless the kernels can run on u's device (CUDA, or CPU under the interpreter)."""
    if u.device.type == "cuda" or (u.device.type == "cpu" and INTERPRETED):
        return
    if u.device.type == "cpu":
        raise ValueError(
            "u is on cpu: the Triton selective scan runs on CUDA tensors, or on CPU tensors only "
            "through the Triton interpreter (set TRITON_INTERPRET=1 before importing "
            "triton_kernels.selective_scan; slow, meant for tests). Use backend='ref' for CPU.")
    raise ValueError(f"u is on {u.device}: the Triton selective scan supports cuda (and cpu "
                     "under TRITON_INTERPRET=1) only")


def normalize_args(u, delta, A, B, C, D, z, delta_bias, initial_state):
    """Check the arguments and return them contiguous, with B, C as (batch, G, N, L)."""
    batch, _, _, _, G = check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    check_device(u)
    if max(batch, G) > 65535:  # the grid's second and third axes
        raise ValueError(f"u: batch {batch} or B's groups {G} exceed the CUDA grid limit 65535")
    if G == 0:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    return tuple(None if t is None else t.contiguous()
                 for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, initial_state=None, *,
                      options: LaunchOptions | None = None):
    """Fused Triton selective scan, forward and backward.

    Arguments, shapes, math and return values are exactly those of
    `estm_ref.scan.selective_scan_ref` (see its docstring): u, delta, z: (batch, dim, L);
    A: (dim, N) float32; B, C: (batch, N, L) or (batch, G, N, L); D, delta_bias: (dim,)
    float32; initial_state: (batch, dim, N) float32. Returns y (batch, dim, L) in u's
    dtype, or (y, last_state (batch, dim, N) float32). `options`: `LaunchOptions`
    (block sizes, NaN poisoning), for tests and benchmarks.

    Runs on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set before this
    module was imported; anything else raises ValueError. Non-contiguous inputs are
    copied to contiguous ones.
    """
    args = normalize_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    y, last_state = _SelectiveScan.apply(*args, bool(delta_softplus), options or DEFAULT_OPTIONS)
    return (y, last_state) if return_last_state else y


__all__ = ["CONFIGS", "INTERPRETED", "LaunchOptions", "ScanConfig", "choose_config", "scan_backward",
           "scan_forward", "selective_scan_fn"]
