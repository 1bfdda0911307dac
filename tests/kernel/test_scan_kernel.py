"""What the kernel's design relies on: associative combines, shapes around the tile
length and the state width, no tile states at inference.

Under the interpreter `tl.associative_scan` is a sequential left fold, so only the
associativity test below proves what a GPU's tree scan needs of the combine function.
"""

import pytest
import torch
import triton
import triton.language as tl

from conftest import KERNEL_DEVICE, triton_scan
from estm_ref.scan.parity import ScanCase, assert_parity, make_inputs
from triton_kernels import selective_scan as ss
from triton_kernels.scan_bwd import _adjoint_combine
from triton_kernels.scan_fwd import _affine_combine
from triton_kernels.selective_scan import selective_scan_fn


@triton.jit
def _three_way(x, left, right, BLOCK: tl.constexpr):
    """Rows of x: a1, b1, a2, b2, a3, b3; left = (1 . 2) . 3, right = 1 . (2 . 3)."""
    o = tl.arange(0, BLOCK)
    a1, b1 = tl.load(x + o), tl.load(x + BLOCK + o)
    a2, b2 = tl.load(x + 2 * BLOCK + o), tl.load(x + 3 * BLOCK + o)
    a3, b3 = tl.load(x + 4 * BLOCK + o), tl.load(x + 5 * BLOCK + o)
    a12, b12 = _affine_combine(a1, b1, a2, b2)
    la, lb = _affine_combine(a12, b12, a3, b3)
    a23, b23 = _affine_combine(a2, b2, a3, b3)
    ra, rb = _affine_combine(a1, b1, a23, b23)
    tl.store(left + o, la)
    tl.store(left + BLOCK + o, lb)
    tl.store(right + o, ra)
    tl.store(right + BLOCK + o, rb)


def test_affine_combine_is_associative():
    """Random float32 pairs with a in (0, 1] (decays, as exp of dt A < 0) and any b."""
    block = 1024
    g = torch.Generator().manual_seed(0)
    rows = [torch.rand(block, generator=g) if i % 2 == 0 else torch.randn(block, generator=g) * 10
            for i in range(6)]
    x = torch.stack(rows).to(KERNEL_DEVICE)
    left, right = torch.empty(2, block, device=KERNEL_DEVICE), torch.empty(2, block, device=KERNEL_DEVICE)
    _three_way[(1,)](x, left, right, BLOCK=block)
    torch.testing.assert_close(left, right, rtol=1e-6, atol=1e-5)
    a1, b1, a2, b2, a3, b3 = (r.to(KERNEL_DEVICE) for r in rows)  # and it is the composition
    torch.testing.assert_close(left[0], a1 * a2 * a3, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(left[1], (b1 * a2 + b2) * a3 + b3, rtol=1e-6, atol=1e-5)


@triton.jit
def _three_way_adjoint(x, left, right, BLOCK: tl.constexpr):
    """Rows of x: (a, p, q) of segments 1, 2, 3 in time order. A reverse scan passes (later,
    earlier): left = (3 . 2) . 1, right = 3 . (2 . 1) in that argument order."""
    o = tl.arange(0, BLOCK)
    a1, p1, q1 = tl.load(x + o), tl.load(x + BLOCK + o), tl.load(x + 2 * BLOCK + o)
    a2, p2, q2 = tl.load(x + 3 * BLOCK + o), tl.load(x + 4 * BLOCK + o), tl.load(x + 5 * BLOCK + o)
    a3, p3, q3 = tl.load(x + 6 * BLOCK + o), tl.load(x + 7 * BLOCK + o), tl.load(x + 8 * BLOCK + o)
    a23, p23, q23 = _adjoint_combine(a3, p3, q3, a2, p2, q2)
    la, lp, lq = _adjoint_combine(a23, p23, q23, a1, p1, q1)
    a12, p12, q12 = _adjoint_combine(a2, p2, q2, a1, p1, q1)
    ra, rp, rq = _adjoint_combine(a3, p3, q3, a12, p12, q12)
    tl.store(left + o, la)
    tl.store(left + BLOCK + o, lp)
    tl.store(left + 2 * BLOCK + o, lq)
    tl.store(right + o, ra)
    tl.store(right + BLOCK + o, rp)
    tl.store(right + 2 * BLOCK + o, rq)


def test_adjoint_combine_is_associative():
    """g[i] = Q + P a[j+1] g[j+1] composed over three segments, both ways, equals the
    segments written out: P = p1 a2 p2 a3 p3 and Q = q1 + p1 a2 (q2 + p2 a3 q3)."""
    block = 1024
    g = torch.Generator().manual_seed(1)
    rows = [torch.rand(block, generator=g) if i % 3 != 2 else torch.randn(block, generator=g) * 10
            for i in range(9)]
    x = torch.stack(rows).to(KERNEL_DEVICE)
    left, right = torch.empty(3, block, device=KERNEL_DEVICE), torch.empty(3, block, device=KERNEL_DEVICE)
    _three_way_adjoint[(1,)](x, left, right, BLOCK=block)
    torch.testing.assert_close(left, right, rtol=1e-6, atol=1e-5)
    a1, p1, q1, a2, p2, q2, a3, p3, q3 = (r.to(KERNEL_DEVICE) for r in rows)
    torch.testing.assert_close(left[1], p1 * a2 * p2 * a3 * p3, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(left[2], q1 + p1 * a2 * (q2 + p2 * a3 * q3), rtol=1e-5, atol=1e-5)


# (case, (BLOCK_D, BLOCK_L)): N around powers of two and up to the largest; L around the tile length
# (64 at N 16) and past 32 tiles; the chosen configuration unless given
SHAPES = {
    "N3": (ScanCase(1, 3, 10, 3), None),
    "N17": (ScanCase(1, 2, 9, 17, groups=1), None),
    "N64": (ScanCase(1, 2, 33, 64, groups=2), None),
    "N256": (ScanCase(1, 1, 20, 256, has_z=False), None),
    "L63": (ScanCase(1, 2, 63, 4), (2, 64)),
    "L64": (ScanCase(1, 2, 64, 4), (2, 64)),
    "L65": (ScanCase(1, 2, 65, 4, groups=1), (2, 64)),
    "L2049": (ScanCase(1, 1, 2049, 2, has_z=False), None),
}


@pytest.mark.parametrize("case, blocks", list(SHAPES.values()), ids=list(SHAPES))
def test_parity_around_the_tile_length_and_state_width(case, blocks):
    assert_parity(triton_scan(*(blocks or ())), case, KERNEL_DEVICE)


def _spy(monkeypatch, name):
    """Record the launch plans that `ss.<name>` returns."""
    plans, plan = [], getattr(ss, name)

    def recording(*args, **kwargs):
        out = plan(*args, **kwargs)
        plans.append(out)
        return out

    monkeypatch.setattr(ss, name, recording)
    return plans


def test_a_forward_without_grad_writes_no_tile_states(monkeypatch):
    plans = _spy(monkeypatch, "fwd_launch")
    x = make_inputs(ScanCase(1, 4, 40, 4), KERNEL_DEVICE)
    with torch.no_grad():
        selective_scan_fn(**x, delta_softplus=True)
    selective_scan_fn(**x, delta_softplus=True)  # no input requires grad either
    assert [set(p.outputs) for p in plans] == [{"y", "last_state"}] * 2
    assert all(p.meta["STORE_TILE_STATES"] is False for p in plans)
    leaf = {**x, "u": x["u"].clone().requires_grad_()}
    selective_scan_fn(**leaf, delta_softplus=True)
    assert "tile_states" in plans[-1].outputs
