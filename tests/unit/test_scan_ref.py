"""The reference selective scan on its own: gradients, closed forms, a dense rewrite, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from estm_ref.scan import selective_scan, selective_scan_ref


def _inputs(batch, dim, L, N, groups=0, dtype=torch.float64, seed=0, softplus=True):
    g = torch.Generator().manual_seed(seed)
    bc = (batch, N, L) if groups == 0 else (batch, groups, N, L)
    delta = torch.randn(batch, dim, L, generator=g) * 0.5 - (1.0 if softplus else 0.0)
    if not softplus:
        delta = delta.abs() * 0.5 + 0.05
    return dict(
        u=torch.randn(batch, dim, L, generator=g, dtype=dtype),
        delta=delta.to(dtype),
        A=-torch.exp(torch.randn(dim, N, generator=g, dtype=dtype) * 0.5),
        B=torch.randn(*bc, generator=g, dtype=dtype),
        C=torch.randn(*bc, generator=g, dtype=dtype),
        D=torch.randn(dim, generator=g, dtype=dtype),
        z=torch.randn(batch, dim, L, generator=g, dtype=dtype),
        delta_bias=torch.randn(dim, generator=g, dtype=dtype) * 0.1,
        initial_state=torch.randn(batch, dim, N, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("groups, softplus", [(0, True), (2, False)])
def test_gradcheck_float64_every_input(groups, softplus):
    x = {k: v.requires_grad_() for k, v in _inputs(2, 4, 5, 3, groups, softplus=softplus).items()}
    names = list(x)

    def f(*args):
        return selective_scan_ref(**dict(zip(names, args)), delta_softplus=softplus,
                                  return_last_state=True)

    assert torch.autograd.gradcheck(f, tuple(x.values()), eps=1e-6, atol=1e-7)


def test_gradcheck_float64_without_optional_inputs():
    x = _inputs(1, 3, 4, 2)
    args = tuple(x[k].requires_grad_() for k in ("u", "delta", "A", "B", "C"))
    assert torch.autograd.gradcheck(lambda *a: selective_scan_ref(*a, return_last_state=True), args)


@pytest.mark.parametrize("with_initial_state", [False, True])
def test_closed_form_n1_constant_inputs(with_initial_state):
    """N = 1, constant inputs: h[t] = r^(t+1) h0 + dt b u (1 - r^(t+1)) / (1 - r), r = exp(dt a)."""
    L, u0, dt, a, b, c, d, h0 = 12, 0.7, 0.3, -0.8, 1.5, -0.6, 0.25, 2.0
    full = lambda shape, v: torch.full(shape, v, dtype=torch.float64)  # noqa: E731
    y, last = selective_scan_ref(
        full((1, 1, L), u0), full((1, 1, L), dt), full((1, 1), a), full((1, 1, L), b),
        full((1, 1, L), c), D=full((1,), d), return_last_state=True,
        initial_state=full((1, 1, 1), h0) if with_initial_state else None)
    r = math.exp(dt * a)
    start = h0 if with_initial_state else 0.0
    h = [r ** (t + 1) * start + dt * b * u0 * (1 - r ** (t + 1)) / (1 - r) for t in range(L)]
    expected = torch.tensor([c * ht + d * u0 for ht in h], dtype=torch.float64)
    torch.testing.assert_close(y[0, 0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last[0, 0, 0], torch.tensor(h[-1], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def _dense_scan(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    """The scan as one matmul per (b, d, n) with the (L x L) lower-triangular transfer matrix.

    M[t, s] = prod_{s < r <= t} exp(dt[r] A) = exp(S[t] - S[s]), S the cumulative dt A,
    h[t] = sum_s M[t, s] dt[s] B[s] u[s] + exp(S[t]) h0.
    """
    batch, dim, L = u.shape
    G = 1 if B.dim() == 3 else B.shape[1]
    Bd = (B[:, None] if B.dim() == 3 else B).repeat_interleave(dim // G, dim=1)  # (batch, dim, N, L)
    Cd = (C[:, None] if C.dim() == 3 else C).repeat_interleave(dim // G, dim=1)
    dt = delta + delta_bias[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt, threshold=20.0)
    S = torch.cumsum(dt[:, :, None, :] * A[None, :, :, None], dim=-1)  # (batch, dim, N, L)
    diff = S[..., :, None] - S[..., None, :]  # [t, s]
    lower = torch.ones(L, L, dtype=torch.bool).tril()
    M = torch.where(lower, torch.exp(diff.masked_fill(~lower, 0.0)), torch.zeros((), dtype=u.dtype))
    x = dt[:, :, None, :] * Bd * u[:, :, None, :]  # (batch, dim, N, L)
    h = (M @ x[..., None])[..., 0] + torch.exp(S) * initial_state[..., None]
    y = (Cd * h).sum(2) + D[None, :, None] * u
    return y * F.silu(z), h[..., -1]


@pytest.mark.parametrize("groups, softplus", [(0, True), (3, False), (6, True)])
def test_matches_dense_transfer_matrix(groups, softplus):
    x = _inputs(2, 6, 9, 4, groups, softplus=softplus, seed=3)
    y, last = selective_scan_ref(**x, delta_softplus=softplus, return_last_state=True)
    y_dense, last_dense = _dense_scan(**x, delta_softplus=softplus)
    torch.testing.assert_close(y, y_dense, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, last_dense, rtol=1e-10, atol=1e-10)


def test_low_precision_output_dtype_and_float32_state():
    x = _inputs(1, 2, 3, 2, dtype=torch.float32)
    x.update({k: x[k].to(torch.bfloat16) for k in ("u", "delta", "B", "C", "z")})
    y, last = selective_scan_ref(**x, return_last_state=True)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32


def _bad(name, value):
    def build():
        x = _inputs(2, 4, 5, 3, dtype=torch.float32)
        x[name] = value(x) if callable(value) else value
        return x
    return build


BAD_ARGS = [
    ("u", _bad("u", lambda x: x["u"][0]), "u"),
    ("u int", _bad("u", lambda x: x["u"].to(torch.int32)), "u"),
    ("delta", _bad("delta", lambda x: x["delta"][..., :-1]), "delta"),
    ("A rank", _bad("A", lambda x: x["A"][0]), "A"),
    ("A dim", _bad("A", lambda x: x["A"][:-1]), "A"),
    ("A float16", _bad("A", lambda x: x["A"].half()), "A"),
    ("N > 256", lambda: _inputs(1, 2, 3, 257, dtype=torch.float32), "A"),
    ("B shape", _bad("B", lambda x: x["B"][..., :-1]), "B"),
    ("B rank", _bad("B", lambda x: x["B"][0]), "B"),
    ("groups", lambda: _inputs(1, 4, 3, 2, groups=3, dtype=torch.float32), "B"),
    ("C", _bad("C", lambda x: x["C"][:, :-1]), "C"),
    ("D", _bad("D", lambda x: x["D"][:-1]), "D"),
    ("z", _bad("z", lambda x: x["z"][:1]), "z"),
    ("delta_bias", _bad("delta_bias", lambda x: x["delta_bias"][None]), "delta_bias"),
    ("initial_state", _bad("initial_state", lambda x: x["initial_state"][..., :-1]), "initial_state"),
    ("initial_state dtype", _bad("initial_state", lambda x: x["initial_state"].half()), "initial_state"),
    # the meta device stands in for a second device: the check only compares devices
    ("device", _bad("z", lambda x: x["z"].to("meta")), "z"),
    ("not a tensor", _bad("C", [[1.0]]), "C"),
]


@pytest.mark.parametrize("build, name", [(b, n) for _, b, n in BAD_ARGS], ids=[i for i, _, _ in BAD_ARGS])
def test_bad_arguments_raise_value_error_naming_them(build, name):
    x = build()
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        selective_scan_ref(**x)


def test_unknown_backend_raises():
    x = _inputs(1, 2, 3, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**x, backend="cuda")


def test_ref_backend_is_the_reference():
    x = _inputs(1, 2, 3, 2, dtype=torch.float32)
    torch.testing.assert_close(selective_scan(**x, backend="ref"), selective_scan_ref(**x), rtol=0, atol=0)
