"""The Triton selective scan against the reference: output, last state and every gradient.

On a machine without CUDA the kernel runs under TRITON_INTERPRET=1 (set by conftest) on
CPU tensors. Every kernel output and gradient buffer is prefilled with NaN
(`launch_options(poison=True)`), so a store the kernel forgets fails the comparison.
"""

import math

import pytest
import torch

from conftest import KERNEL_DEVICE
from estm_ref.scan import selective_scan, selective_scan_ref
from estm_ref.scan.parity import TOLERANCES, ScanCase, assert_parity, make_inputs
from triton_kernels import selective_scan as ss
from triton_kernels.selective_scan import launch_options, selective_scan_fn

bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
NONE = dict(has_D=False, has_z=False, has_delta_bias=False, delta_softplus=False, has_initial_state=False)

# id -> (case, BLOCK_D or None for the default, CHUNK or None for the default)
CASES = {
    "L1-batch1-ragged-block": (ScanCase(1, 3, 1, 4), 2, 4),
    "N1-nothing-optional": (ScanCase(2, 5, 7, 1, **NONE), 4, 4),
    "groups-ragged-blocks-and-chunks": (ScanCase(1, 10, 23, 16, groups=2), 4, 8),
    "one-channel-per-group": (ScanCase(2, 6, 13, 4, groups=6, has_z=False), None, 4),
    "z-only": (ScanCase(1, 7, 17, 4, **{**NONE, "has_z": True}), None, 8),
    "D-only": (ScanCase(1, 7, 9, 4, **{**NONE, "has_D": True}), None, 4),
    "bias-without-softplus": (ScanCase(2, 4, 11, 4, **{**NONE, "has_delta_bias": True}), None, 16),
    "initial-state-only": (ScanCase(1, 4, 10, 16, **{**NONE, "has_initial_state": True}), 2, 4),
    "softplus-above-threshold": (ScanCase(1, 6, 12, 4, big_delta=True), None, 4),
    "exact-multiples": (ScanCase(1, 8, 16, 4, groups=2), 4, 8),
    "default-blocks": (ScanCase(2, 40, 40, 16), None, None),
    "noncontiguous": (ScanCase(1, 5, 9, 4, groups=1, noncontiguous=True), None, 4),
    "bf16-groups": (ScanCase(2, 8, 20, 16, groups=2, dtype=bf16), 4, 8),
    "fp16": (ScanCase(1, 6, 15, 4, dtype=fp16, has_initial_state=False), None, 4),
    "mixed-dtypes": (ScanCase(1, 6, 10, 4, dtype=fp16, delta_dtype=fp32, bc_dtype=bf16), None, 4),
}


@pytest.mark.parametrize("case, block_d, chunk", list(CASES.values()), ids=list(CASES))
def test_parity(case, block_d, chunk):
    with launch_options(poison=True, block_d=block_d, chunk=chunk):
        assert_parity(selective_scan_fn, case, KERNEL_DEVICE)


def test_parity_through_shared_dbc_slots():
    """More channel blocks than dB/dC slots: blocks share slots through atomic adds."""
    with launch_options(poison=True, block_d=1, chunk=4, max_partials=2):
        assert_parity(selective_scan_fn, ScanCase(2, 6, 9, 4, groups=2), KERNEL_DEVICE)


def test_parity_through_the_dispatcher():
    with launch_options(poison=True, chunk=4):
        assert_parity(lambda *a, **k: selective_scan(*a, **k, backend="triton"), ScanCase(1, 3, 6, 4),
                      KERNEL_DEVICE)


def test_tolerance_table_is_the_spec():
    assert TOLERANCES == {
        (fp32, "interpreter"): (1e-4, 1e-5), (fp32, "gpu"): (6e-4, 2e-3),
        (bf16, "interpreter"): (3e-2, 5e-2), (bf16, "gpu"): (3e-2, 5e-2),
        (fp16, "interpreter"): (3e-2, 5e-2), (fp16, "gpu"): (3e-2, 5e-2),
    }


def _leaves(case, seed=0):
    return {k: v.detach().clone().requires_grad_() for k, v in make_inputs(case, KERNEL_DEVICE, seed).items()
            if v is not None}


@pytest.mark.parametrize("use", ["y", "last_state"])
def test_gradient_of_one_output_only(use):
    """The other output's gradient arrives as None; the kernel must treat it as zero."""
    case = ScanCase(1, 4, 9, 4, groups=2)
    grads = []
    for scan in (selective_scan_ref, selective_scan_fn):
        x = _leaves(case)
        with launch_options(poison=True, chunk=4):
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
    with launch_options(poison=True, chunk=4):
        with torch.no_grad():
            y = selective_scan_fn(**x, delta_softplus=True)
        torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
        B = x["B"].clone().requires_grad_()
        selective_scan_fn(**{**x, "B": B}, delta_softplus=True).sum().backward()
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
    with launch_options(poison=True, chunk=4) as opts:
        fwd = ss.fwd_launch(**x, delta_softplus=True, store_chunk_states=True, opts=opts)
        dy = torch.ones_like(x["u"])
        bwd = ss.bwd_launch(**{k: x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")},
                            chunk_states=fwd.outputs["chunk_states"], dy=dy, dlast_state=None,
                            delta_softplus=True, use_initial_state=True, opts=opts)
    for name, t in {**fwd.outputs, **bwd.outputs}.items():
        assert torch.isnan(t).all(), name
    assert torch.isnan(bwd.args["scratch"]).all()


def test_no_tensor_of_size_batch_dim_L_N_is_saved():
    """Only chunk-start states are kept for the backward, not one state per step."""
    batch, dim, L, N = 2, 4, 32, 4
    case = ScanCase(batch, dim, L, N)
    x = _leaves(case)
    with launch_options(chunk=8):
        y = selective_scan_fn(**x, delta_softplus=True)
    saved = y.grad_fn.saved_tensors
    chunk_states = [t for t in saved if t is not None and t.dim() == 4 and t.shape[-1] == N]
    assert [tuple(t.shape) for t in chunk_states] == [(batch, dim, math.ceil(L / 8), N)]
    assert all(t.numel() < batch * dim * L * N for t in saved if t is not None)


def test_kernel_rejects_what_it_cannot_run():
    x = make_inputs(ScanCase(1, 2, 3, 2), KERNEL_DEVICE)
    with pytest.raises(ValueError, match="^u "):
        selective_scan_fn(**{**x, "u": x["u"].double()})  # float64 is for the reference's gradcheck
    for bad in (dict(block_d=3), dict(chunk=6)):
        with launch_options(**bad), pytest.raises(ValueError, match="power of two"):
            selective_scan_fn(**x)


@pytest.mark.gpu
class TestParityGPU:
    """Realistic sizes on CUDA with the default blocks (GPU tolerances of the table)."""

    @pytest.mark.parametrize("dtype", [fp32, bf16], ids=["fp32", "bf16"])
    def test_realistic_size(self, dtype):
        with launch_options(poison=True):
            assert_parity(selective_scan_fn, ScanCase(2, 512, 4096, 16, dtype=dtype), "cuda")

    def test_grouped_large_state(self):
        with launch_options(poison=True):
            assert_parity(selective_scan_fn, ScanCase(2, 256, 1000, 64, groups=4), "cuda")

    def test_d_state_256_shares_dbc_slots(self):
        # N = 256 gives BLOCK_D = 1: more channel blocks than dB/dC slots
        with launch_options(poison=True):
            assert_parity(selective_scan_fn, ScanCase(1, 64, 300, 256), "cuda")
