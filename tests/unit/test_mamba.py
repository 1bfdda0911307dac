"""Causal conv, Mamba initialisation, block properties, and the block's ref-vs-Triton parity."""

import math

import pytest
import torch
import torch.nn.functional as F

from estm_ref.config import ModelConfig
from estm_ref.model.mamba import DT_FLOOR, DT_MAX, DT_MIN, MambaBlock, causal_conv1d, inverse_softplus

# float32 under the Triton interpreter (docs/design.md, "Scan")
RTOL, ATOL = 1e-4, 1e-5


def loop_causal_conv(x, weight, bias):
    batch, channels, L = x.shape
    width = weight.shape[-1]
    y = torch.zeros_like(x)
    for t in range(L):
        for k in range(width):
            s = t - (width - 1) + k
            if s >= 0:
                y[:, :, t] += weight[:, 0, k] * x[:, :, s]
    return y + bias[None, :, None]


@pytest.mark.parametrize("L", [1, 3, 13])
@pytest.mark.parametrize("width", [1, 4])
def test_causal_conv_equals_loop(L, width):
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 5, L, dtype=torch.float64), torch.randn(5, 1, width, dtype=torch.float64), \
        torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(causal_conv1d(x, w, b), loop_causal_conv(x, w, b))


def test_causal_conv_never_looks_ahead():
    torch.manual_seed(0)
    x, w, b = torch.randn(1, 3, 17), torch.randn(3, 1, 4), torch.randn(3)
    y = causal_conv1d(x, w, b)
    for t in range(17):
        x2 = x.clone()
        x2[:, :, t] += 1.0
        y2 = causal_conv1d(x2, w, b)
        assert torch.equal(y2[:, :, :t], y[:, :, :t]), t
        assert not torch.equal(y2[:, :, t], y[:, :, t]), t


def test_causal_conv_rejects_wrong_channels():
    with pytest.raises(ValueError, match="x must have shape"):
        causal_conv1d(torch.zeros(1, 4, 5), torch.zeros(3, 1, 2))


def test_mamba_initialisation():
    torch.manual_seed(0)
    block = MambaBlock(ModelConfig(d_model=48, d_state=16, expand=2, d_conv=4))
    ssm = block.ssm
    E, R = 96, 3
    assert ssm.dt_rank == R == math.ceil(48 / 16)
    torch.testing.assert_close(-torch.exp(ssm.A_log), -torch.arange(1.0, 17.0).repeat(E, 1))
    assert torch.equal(ssm.D, torch.ones(E))
    dt = F.softplus(ssm.dt_proj.bias)
    assert dt.min() >= max(DT_MIN, DT_FLOOR) * (1 - 1e-5) and dt.max() <= DT_MAX * (1 + 1e-5)
    assert ssm.dt_proj.weight.abs().max() <= R ** -0.5
    assert block.in_proj.bias is None and block.out_proj.bias is None and ssm.x_proj.bias is None
    assert ssm.conv1d.bias is not None and ssm.conv1d.weight.shape == (E, 1, 4)
    assert block.in_proj.weight.shape == (2 * E, 48) and ssm.x_proj.weight.shape == (R + 32, E)
    assert ssm.A_log._no_weight_decay and ssm.D._no_weight_decay
    y = torch.tensor([1e-4, 0.01, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(F.softplus(inverse_softplus(y)), y)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_block_shape_and_causality(bidirectional):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, d_state=4, bidirectional=bidirectional, scan_backend="ref")
    block = MambaBlock(cfg).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    y = block(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 5] += torch.randn(16, dtype=torch.float64)  # not a constant: LayerNorm removes that
    y2 = block(x2)
    changed = (y2 - y).abs().amax(dim=(0, 2)) > 0
    # forward-only: steps before 5 cannot see step 5; bidirectional: every step can
    assert changed.tolist() == ([False] * 5 + [True] * 4 if not bidirectional else [True] * 9)


def loop_direction(p, prefix, u, z, order):
    """One SelectiveSSM visiting the time steps in `order`, one at a time: its conv sees the
    steps visited before, its state carries them. u, z: (batch, L, E) -> (batch, L, E)."""
    w, bias = p[f"{prefix}.conv1d.weight"][:, 0], p[f"{prefix}.conv1d.bias"]  # (E, width), (E,)
    # the scan takes A, D and the delta bias in float32 whatever the dtype of u: round them alike
    f32 = {k: p[f"{prefix}.{k}"].float().to(u.dtype) for k in ("A_log", "D", "dt_proj.bias")}
    A = -torch.exp(f32["A_log"])  # (E, N)
    rank, n_state = p[f"{prefix}.dt_proj.weight"].shape[1], A.shape[1]
    h = torch.zeros(u.shape[0], *A.shape, dtype=u.dtype)
    y = torch.zeros_like(u)
    for i, t in enumerate(order):
        c = bias.expand(u.shape[0], -1)
        for k in range(w.shape[1]):
            j = i - (w.shape[1] - 1) + k
            if j >= 0:
                c = c + w[:, k] * u[:, order[j]]
        v = c * torch.sigmoid(c)
        x_dbl = v @ p[f"{prefix}.x_proj.weight"].T
        dt, B, C = x_dbl[:, :rank], x_dbl[:, rank:rank + n_state], x_dbl[:, rank + n_state:]
        delta = torch.log1p(torch.exp(dt @ p[f"{prefix}.dt_proj.weight"].T + f32["dt_proj.bias"]))
        h = torch.exp(delta[..., None] * A) * h + (delta * v)[..., None] * B[:, None, :]
        gate = z[:, t] * torch.sigmoid(z[:, t])
        y[:, t] = ((h * C[:, None, :]).sum(-1) + f32["D"] * v) * gate
    return y


def loop_block(block, x):
    """The block written out from its parameters alone (none of its modules' forwards, no
    causal_conv1d, no selective_scan): LayerNorm, in_proj, one SSM over steps 0..L-1 and, if
    bidirectional, a second over L-1..0, the mean of the two, out_proj, residual."""
    p = {name: t.detach() for name, t in block.named_parameters()}
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    xn = (x - mean) / torch.sqrt(var + block.norm.eps) * p["norm.weight"] + p["norm.bias"]
    uz = xn @ p["in_proj.weight"].T
    u, z = uz[..., :uz.shape[-1] // 2], uz[..., uz.shape[-1] // 2:]
    L = x.shape[1]
    y = loop_direction(p, "ssm", u, z, list(range(L)))
    if "ssm_reverse.D" in p:
        y = 0.5 * (y + loop_direction(p, "ssm_reverse", u, z, list(range(L - 1, -1, -1))))
    return x + y @ p["out_proj.weight"].T


@pytest.mark.parametrize("bidirectional", [False, True])
def test_block_equals_a_step_by_step_loop(bidirectional):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, d_state=4, d_conv=3, bidirectional=bidirectional, scan_backend="ref")
    block = MambaBlock(cfg).double()
    with torch.no_grad():  # D = 1 and equal A_log in both directions would hide a swapped branch
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(block(x), loop_block(block, x), rtol=1e-10, atol=1e-12)


def test_block_gradcheck_float64():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=8, d_state=2, expand=1, d_conv=3, bidirectional=True, scan_backend="ref")
    block = MambaBlock(cfg).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [False, True])
def test_block_ref_vs_triton(bidirectional):
    torch.manual_seed(0)
    block = MambaBlock(ModelConfig(d_model=16, d_state=8, bidirectional=bidirectional, scan_backend="ref"))
    x = torch.randn(2, 13, 16)
    grad_out = torch.randn(2, 13, 16)

    def run(backend):
        block.scan_backend = backend
        block.zero_grad()
        xi = x.clone().requires_grad_()
        y = block(xi)
        y.backward(grad_out)
        return y.detach(), xi.grad, {n: p.grad.clone() for n, p in block.named_parameters()}

    y_ref, gx_ref, g_ref = run("ref")
    y_tri, gx_tri, g_tri = run("triton")
    torch.testing.assert_close(y_tri, y_ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx_tri, gx_ref, rtol=RTOL, atol=ATOL)
    assert g_ref.keys() == g_tri.keys()
    for name in g_ref:
        torch.testing.assert_close(g_tri[name], g_ref[name], rtol=RTOL, atol=ATOL, msg=name)
