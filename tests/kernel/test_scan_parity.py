"""The Triton selective scan against the reference: output, last state and every gradient.

On a machine without CUDA the kernel runs under TRITON_INTERPRET=1 (set by conftest) on
CPU tensors. Every kernel output and gradient buffer is prefilled with NaN
(`LaunchOptions(poison=True)`), so a store the kernel forgets fails the comparison.
Explicit block sizes keep the interpreter cases small and put several tiles, ragged
tiles and ragged channel blocks into short sequences.
"""

import functools
import math

from dataclasses import replace

import pytest
import torch

from conftest import KERNEL_DEVICE, triton_scan as kernel
from estm_ref.scan import selective_scan, selective_scan_ref
from estm_ref.scan.battery import BATTERY
from estm_ref.scan.parity import ScanCase, assert_parity, make_inputs, run_scan, upstream_grads
from triton_kernels import selective_scan as ss
from triton_kernels.selective_scan import LaunchOptions, ScanConfig, selective_scan_fn

bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32


# battery case -> (BLOCK_D, BLOCK_L), None for the configuration chosen by shape: several
# tiles, ragged tiles and ragged channel blocks in short sequences
BLOCKS = {
    "L1-batch1": (2, 4),
    "N1-nothing-optional": (4, 4),
    "N-odd": (4, 4),
    "groups-L-prime": (4, 8),
    "one-channel-per-group": (1, 4),
    "z-only": (8, 8),
    "D-only": (8, 4),
    "bias-without-softplus": (4, 16),
    "initial-state-only": (2, 4),
    "softplus-above-threshold": (8, 4),
    "L-power-of-two-groups": (4, 8),
    "estm-time-path": (None, None),
    "L40-shared": (None, None),
    "noncontiguous": (8, 4),
    "bf16-groups": (4, 8),
    "fp16": (8, 4),
    "mixed-dtypes": (8, 4),
}
CASES = {name: (BATTERY[name].case, *blocks) for name, blocks in BLOCKS.items()}


@pytest.mark.parametrize("case, block_d, block_l", list(CASES.values()), ids=list(CASES))
def test_parity(case, block_d, block_l):
    assert_parity(kernel(block_d, block_l), case, KERNEL_DEVICE)


def test_parity_through_the_dispatcher():
    scan = functools.partial(selective_scan, backend="triton")
    assert_parity(scan, ScanCase(1, 3, 6, 4), KERNEL_DEVICE)


def test_gradients_are_bit_identical_run_to_run():
    """No atomics: two forward + backward passes give the same bits, with several channel
    blocks and several tiles contributing to every dB, dC, dA, dD and d(delta_bias)."""
    case = ScanCase(2, 8, 12, 4, groups=2)
    x = make_inputs(case, KERNEL_DEVICE, seed=3)
    grads = upstream_grads(case, KERNEL_DEVICE, seed=3)
    first, second = (run_scan(kernel(1, 4), case, x, grads) for _ in range(2))
    assert set(first) == {"y", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz",
                          "ddelta_bias", "dinitial_state"}
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def _leaves(case, seed=0):
    return {k: v.detach().clone().requires_grad_() for k, v in make_inputs(case, KERNEL_DEVICE, seed).items()
            if v is not None}


@pytest.mark.parametrize("use", ["y", "last_state"])
def test_gradient_of_one_output_only(use):
    """The other output's gradient arrives as None; the kernel must treat it as zero."""
    case = ScanCase(1, 4, 9, 4, groups=2)
    grads = []
    for scan in (selective_scan_ref, kernel(2, 4)):
        x = _leaves(case)
        y, last = scan(**x, delta_softplus=True, return_last_state=True)
        out = y if use == "y" else last
        out.pow(2).sum().backward()
        grads.append({k: v.grad for k, v in x.items()})
    for k, expected in grads[0].items():
        # the reference leaves inputs that cannot reach the used output without a gradient
        expected = torch.zeros_like(grads[1][k]) if expected is None else expected
        torch.testing.assert_close(grads[1][k], expected, rtol=1e-4, atol=1e-5, msg=k)


def test_only_some_inputs_require_grad_and_no_grad_forward():
    case = ScanCase(1, 4, 7, 4)
    x = make_inputs(case, KERNEL_DEVICE)
    expected = selective_scan_ref(**x, delta_softplus=True)
    scan = kernel(4, 4)
    with torch.no_grad():
        y = scan(**x, delta_softplus=True)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
    B = x["B"].clone().requires_grad_()
    scan(**{**x, "B": B}, delta_softplus=True).sum().backward()
    B_ref = x["B"].clone().requires_grad_()
    selective_scan_ref(**{**x, "B": B_ref}, delta_softplus=True).sum().backward()
    torch.testing.assert_close(B.grad, B_ref.grad, rtol=1e-4, atol=1e-5)


def test_return_last_state_false_returns_only_y():
    x = make_inputs(ScanCase(1, 2, 3, 2), KERNEL_DEVICE)
    y = selective_scan_fn(**x)
    assert isinstance(y, torch.Tensor) and y.shape == (1, 2, 3)


def test_poison_flag_prefills_outputs_with_nan():
    """The parity tests rely on this: without it a forgotten store could read stale zeros."""
    case = ScanCase(1, 4, 9, 4)
    x = make_inputs(case, KERNEL_DEVICE)
    x["B"], x["C"] = x["B"][:, None], x["C"][:, None]
    opts = LaunchOptions(ScanConfig(2, 4), poison=True)
    fwd = ss.fwd_launch(**x, delta_softplus=True, store_tile_states=True, options=opts)
    dy = torch.ones_like(x["u"])
    bwd = ss.bwd_launch(**{k: x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")},
                        tile_states=fwd.outputs["tile_states"], dy=dy, dlast_state=None,
                        delta_softplus=True, use_initial_state=True, options=opts)
    assert set(bwd.outputs) == {"du", "ddelta", "dz", "dA_part", "dB_part", "dC_part", "dD_part",
                                "ddelta_bias_part", "dinitial_state"}
    for name, t in {**fwd.outputs, **bwd.outputs}.items():
        assert torch.isnan(t).all(), name


def test_only_tile_boundary_states_are_saved():
    """The forward keeps the state at the start of each tile, nothing per step."""
    batch, dim, L, N = 2, 4, 32, 4
    x = _leaves(ScanCase(batch, dim, L, N))
    y = kernel(4, 8, poison=False)(**x, delta_softplus=True)
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    tile_states = [t for t in saved if t.dim() == 4 and t.shape[-1] == N and t.dtype == fp32]
    assert [tuple(t.shape) for t in tile_states] == [(batch, dim, math.ceil(L / 8), N)]
    assert all(t.numel() < batch * dim * L * N for t in saved)


@pytest.mark.parametrize("dim_per_group, L, N", [(256, 13, 16), (256, 17, 16), (1536, 2048, 16),
                                                  (256, 1000, 64), (64, 300, 256), (3, 5, 1)])
def test_configuration_fits_the_shape(dim_per_group, L, N):
    config = ss.choose_config(dim_per_group, L, N)
    assert config in [replace(c, block_d=config.block_d) for c, _, _ in ss.CONFIGS]  # a compiled variant
    assert config.block_n >= N
    assert config.block_d <= max(1, 2 * dim_per_group - 1)  # no block wider than the group needs
    if L <= 32 and N <= 16:  # ESTM's sequences (13 and 17 tokens) are one tile
        assert config.block_l >= L


def test_configuration_keeps_every_multiprocessor_busy():
    """Batch 1 x dim 1536 on 132 multiprocessors: the pinned 32-channel block gives 48
    programs; the block narrows until there are two per SM, or to its narrowest."""
    for dim, batch in ((1536, 1), (256, 1), (64, 2)):
        config = ss.choose_config(dim, 2048, 16, programs_per_block=batch, sm_count=132)
        programs = math.ceil(dim / config.block_d) * batch
        assert programs >= 2 * 132 or config.block_d == ss.MIN_BLOCK_D, (dim, batch, config)
        assert programs < 4 * 132 or config == ss.choose_config(dim, 2048, 16)  # no narrower than needed
    assert ss.choose_config(1536, 2048, 16, programs_per_block=1, sm_count=132).block_d == 4
    assert ss.choose_config(1536, 2048, 16, programs_per_block=64, sm_count=132) == ss.choose_config(1536, 2048, 16)


def test_kernel_rejects_what_it_cannot_run():
    x = make_inputs(ScanCase(1, 2, 3, 2), KERNEL_DEVICE)
    with pytest.raises(ValueError, match="^u "):
        selective_scan_fn(**{**x, "u": x["u"].double()})  # float64 is for the reference's gradcheck
    for bad in (dict(block_d=3, block_l=4), dict(block_d=2, block_l=6)):
        with pytest.raises(ValueError, match="power of two"):
            ScanConfig(**bad)


@pytest.mark.gpu
class TestParityGPU:
    """The case table and realistic sizes on CUDA (GPU tolerances of the table)."""

    @pytest.mark.parametrize("case, block_d, block_l", list(CASES.values()), ids=list(CASES))
    def test_case_table(self, case, block_d, block_l):
        assert_parity(kernel(block_d, block_l), case, "cuda")

    def test_int64_addressing(self):
        """A batch slice of more than 2^31 elements: offsets past it need 64-bit arithmetic.
        The channels at both ends are compared with the reference run on just those channels."""
        batch, dim, L, N = 1, 131072, 16400, 16
        assert dim * L > 2**31
        gen = torch.Generator(device="cuda").manual_seed(0)
        big = dict(device="cuda", dtype=bf16, generator=gen)
        x = {"u": torch.randn(batch, dim, L, **big), "delta": torch.randn(batch, dim, L, **big) * 0.5 - 1.0,
             "z": torch.randn(batch, dim, L, **big),
             "A": -torch.rand(dim, N, device="cuda", generator=gen) - 0.5,
             "B": torch.randn(batch, N, L, **big), "C": torch.randn(batch, N, L, **big),
             "D": torch.randn(dim, device="cuda", generator=gen),
             "delta_bias": torch.randn(dim, device="cuda", generator=gen) * 0.1}
        dy = torch.randn(batch, dim, L, **big)
        names = ("u", "delta", "z", "A", "D", "delta_bias")
        leaves = {k: v.requires_grad_() if k in names else v for k, v in x.items()}
        y = selective_scan_fn(**leaves, delta_softplus=True)
        got = dict(zip(names, torch.autograd.grad(y, [leaves[k] for k in names], dy)))
        got["y"] = y.detach()
        del leaves, y
        for rows in (slice(0, 4), slice(dim - 4, dim)):  # the last rows end past 2^31
            part = {k: (v[rows] if k in ("A", "D", "delta_bias") else
                        v[:, rows] if k in ("u", "delta", "z") else v).detach().clone().requires_grad_()
                    for k, v in x.items()}
            y_ref = selective_scan_ref(**part, delta_softplus=True)
            ref = dict(zip(names, torch.autograd.grad(y_ref, [part[k] for k in names], dy[:, rows])))
            ref["y"] = y_ref.detach()
            for k, expected in ref.items():
                value = got[k][rows] if k in ("A", "D", "delta_bias") else got[k][:, rows]
                torch.testing.assert_close(value.float(), expected.float(), rtol=3e-2, atol=5e-2,
                                           msg=f"{k}, channels {rows}")

    @pytest.mark.parametrize("dtype", [fp32, bf16], ids=["fp32", "bf16"])
    def test_realistic_size(self, dtype):
        assert_parity(kernel(), ScanCase(2, 512, 4096, 16, dtype=dtype), "cuda")

    @pytest.mark.parametrize("L", [13, 17], ids=["time-path", "frequency-path"])
    def test_estm_shapes(self, L):
        assert_parity(kernel(), ScanCase(128, 256, L, 16, dtype=bf16), "cuda")

    def test_grouped_large_state(self):
        assert_parity(kernel(), ScanCase(2, 256, 1000, 64, groups=4), "cuda")

    def test_d_state_256(self):
        assert_parity(kernel(), ScanCase(1, 64, 300, 256), "cuda")

    def test_gradients_are_bit_identical_run_to_run(self):
        case = ScanCase(2, 1536, 2048, 16, dtype=bf16)
        x = make_inputs(case, "cuda", seed=5)
        grads = upstream_grads(case, "cuda", seed=5)
        first, second = (run_scan(kernel(poison=False), case, x, grads) for _ in range(2))
        for name, value in first.items():
            assert torch.equal(value, second[name]), name
