"""Properties of the selective scan that hold for any shape, checked with Hypothesis.

Block sizes and N come from small fixed sets so that, on a GPU, the kernel compiles a
handful of variants rather than one per example. Shapes stay small: under the
interpreter every element of every tile's associative scan costs Python time.
Inputs come in float32, bfloat16 or float16 (u, delta, B, C, z), each compared with the
tolerance of its precision.
"""

import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import KERNEL_DEVICE
from estm_ref.scan import selective_scan_ref
from estm_ref.scan.parity import ScanCase, assert_parity, make_inputs, tolerance, upstream_grads
from triton_kernels.selective_scan import LaunchOptions, ScanConfig, selective_scan_fn

SCANS = {"ref": lambda blocks: selective_scan_ref, "triton": lambda blocks: kernel(blocks)}
BLOCK_D = (2, 16)
BLOCK_L = (2, 4, 8)
DTYPES = (torch.float32, torch.float32, torch.bfloat16, torch.float16)
PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw, min_L=1, max_L=20):
    groups = draw(st.sampled_from([0, 1, 2, 3]))
    dim = groups * draw(st.integers(1, 3)) if groups else draw(st.integers(1, 8))
    flags = {k: draw(st.booleans()) for k in
             ("has_D", "has_z", "has_delta_bias", "delta_softplus", "has_initial_state")}
    return ScanCase(batch=draw(st.integers(1, 2)), dim=dim, L=draw(st.integers(min_L, max_L)),
                    N=draw(st.sampled_from([1, 4, 4, 16])), groups=groups,
                    dtype=draw(st.sampled_from(DTYPES)), **flags)


blocks = st.tuples(st.sampled_from(BLOCK_D), st.sampled_from(BLOCK_L))


def kernel(blocks):
    """The Triton scan with these (BLOCK_D, BLOCK_L) and NaN-poisoned buffers."""
    return functools.partial(selective_scan_fn, options=LaunchOptions(ScanConfig(*blocks), poison=True))
seeds = st.integers(0, 2**16)


def _close(actual, expected, case, **kw):
    rtol, atol = tolerance(case.lowest_precision, KERNEL_DEVICE)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, **kw)


def _scan_all(scan, x, case, split=None):
    """y and last_state of one scan over [0, L), or of [0, k) then [k, L) from the carried state."""
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=case.delta_softplus,
              return_last_state=True)
    if split is None:
        return scan(x["u"], x["delta"], x["A"], x["B"], x["C"], initial_state=x["initial_state"], **kw)
    part = lambda t, s: None if t is None else t[..., s]  # noqa: E731  (time is the last axis)
    y1, h1 = scan(*(part(x[k], slice(0, split)) for k in ("u", "delta")), x["A"],
                  *(part(x[k], slice(0, split)) for k in ("B", "C")),
                  initial_state=x["initial_state"], **{**kw, "z": part(x["z"], slice(0, split))})
    y2, h2 = scan(*(part(x[k], slice(split, None)) for k in ("u", "delta")), x["A"],
                  *(part(x[k], slice(split, None)) for k in ("B", "C")),
                  initial_state=h1, **{**kw, "z": part(x["z"], slice(split, None))})
    return torch.cat([y1, y2], dim=-1), h2


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCANS))
@PROPERTY
@given(case=cases(min_L=2), data=st.data(), blocks=blocks, seed=seeds)
def test_scan_in_two_pieces_equals_one_scan(name, case, data, blocks, seed):
    """[0, k) then [k, L) from the carried state: same outputs and same gradients."""
    split = data.draw(st.integers(1, case.L - 1), label="split")
    x0 = make_inputs(case, KERNEL_DEVICE, seed)
    gy, gh = upstream_grads(case, KERNEL_DEVICE, seed)
    results = []
    for s in (None, split):
        x = {k: None if v is None else v.clone().requires_grad_() for k, v in x0.items()}
        y, h = _scan_all(SCANS[name](blocks), x, case, s)
        ((y.float() * gy.float()).sum() + (h * gh).sum()).backward()
        results.append((y.detach(), h.detach(), {k: v.grad for k, v in x.items() if v is not None}))
    (y_full, h_full, g_full), (y_two, h_two, g_two) = results
    _close(y_two, y_full, case)
    _close(h_two, h_full, case)
    for k in g_full:
        _close(g_two[k], g_full[k], case, msg=f"d{k}")


@pytest.mark.slow
@PROPERTY
@given(case=cases(), blocks=blocks, seed=seeds)
@example(case=ScanCase(1, 3, 5, 4, has_D=False, has_z=False), blocks=(2, 4), seed=0)
def test_D_and_z_act_pointwise(case, blocks, seed):
    """y(D, z) = (y(no D, no z) + D u) * silu(z), per element."""
    x = make_inputs(ScanCase(**{**case.__dict__, "has_D": True, "has_z": True}), KERNEL_DEVICE, seed)
    kw = dict(delta_bias=x["delta_bias"], delta_softplus=case.delta_softplus,
              initial_state=x["initial_state"])
    args = [x[k] for k in ("u", "delta", "A", "B", "C")]
    y_bare = kernel(blocks)(*args, **kw)
    y_full = kernel(blocks)(*args, D=x["D"], z=x["z"], **kw)
    expected = (y_bare.float() + x["D"][None, :, None] * x["u"].float()) * F.silu(x["z"].float())
    _close(y_full.float(), expected, case)


@pytest.mark.slow
@PROPERTY
@given(case=cases(), blocks=blocks, seed=seeds)
def test_very_negative_A_forgets_the_past(case, blocks, seed):
    """exp(dt A) underflows to 0: h[t] = dt[t] B[t] u[t], so y[t] depends on step t only."""
    x = make_inputs(ScanCase(**{**case.__dict__, "delta_softplus": True}), KERNEL_DEVICE, seed)
    x["A"] = torch.full_like(x["A"], -1e4)
    u = x["u"].clone().requires_grad_()
    y, h = kernel(blocks)(**{**x, "u": u}, delta_softplus=True, return_last_state=True)
    y[..., -1].float().sum().backward()

    x = {k: None if v is None else v.float() for k, v in x.items()}
    dt = F.softplus(x["delta"] + (0 if x["delta_bias"] is None else x["delta_bias"][None, :, None]))
    G = case.groups or 1
    Bd = x["B"].reshape(case.batch, G, 1, case.N, case.L).expand(-1, -1, case.dim // G, -1, -1)
    Cd = x["C"].reshape(case.batch, G, 1, case.N, case.L).expand(-1, -1, case.dim // G, -1, -1)
    Bd, Cd = (t.reshape(case.batch, case.dim, case.N, case.L) for t in (Bd, Cd))
    h_all = dt[:, :, None] * Bd * x["u"][:, :, None]  # (batch, dim, N, L)
    expected = (h_all * Cd).sum(2)
    if x["D"] is not None:
        expected = expected + x["D"][None, :, None] * x["u"]
    if x["z"] is not None:
        expected = expected * F.silu(x["z"])
    _close(y.float(), expected, case)
    _close(h, h_all[..., -1], case)
    assert torch.all(u.grad[..., :-1] == 0), "the last output must not depend on earlier inputs"


@pytest.mark.slow
@PROPERTY
@given(case=cases(), blocks=blocks, seed=seeds,
       low_precision=st.sampled_from([None, torch.bfloat16, torch.float16]))
@example(case=ScanCase(1, 1, 1, 1), blocks=(16, 8), seed=0, low_precision=None)
def test_poisoned_buffers_are_overwritten_and_match_the_reference(case, blocks, seed, low_precision):
    if low_precision is not None:
        case = ScanCase(**{**case.__dict__, "dtype": low_precision})
    # non-finite values fail the comparison, so a NaN left in any buffer is caught here
    assert_parity(kernel(blocks), case, KERNEL_DEVICE, seed)
