"""Properties any selective scan must have, each a function of (scan, case, seed).

They need no reference run: the scan is compared with itself (in two pieces, without D
and z) or with a closed form (A -> -inf), at the tolerance of the case's precision. Each
raises AssertionError naming what differs. `estm_ref.scan.testing.scan_property_tests`
draws cases for them with Hypothesis; the project's tests run them on its own scans.

  two_pieces_equal_one   scanning [0, k) then [k, L) from the carried state gives the same
                         y, last state and gradients as one scan over [0, L)
  D_and_z_act_pointwise  y(D, z) = (y(no D, no z) + D u) * silu(z), element by element
  negative_A_forgets     exp(dt A) underflows to 0: h[t] = dt[t] B[t] u[t], y[t] depends on
                         step t only
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F

from estm_ref.scan.parity import ScanCase, make_inputs, tolerance, upstream_grads


def _close(actual, expected, case: ScanCase, device, what: str) -> None:
    rtol, atol = tolerance(case.lowest_precision, device)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _scan(scan: Callable, x: dict, case: ScanCase, piece: slice | None = None, initial_state=None):
    """y and last_state over all steps, or over `piece` of the time axis from `initial_state`."""
    cut = (lambda t: t) if piece is None else (lambda t: None if t is None else t[..., piece])
    h0 = x["initial_state"] if piece is None or piece.start in (None, 0) else initial_state
    return scan(cut(x["u"]), cut(x["delta"]), x["A"], cut(x["B"]), cut(x["C"]), D=x["D"], z=cut(x["z"]),
                delta_bias=x["delta_bias"], delta_softplus=case.delta_softplus, return_last_state=True,
                initial_state=h0)


def two_pieces_equal_one(scan: Callable, case: ScanCase, split: int, seed: int = 0, device="cpu") -> None:
    """[0, split) then [split, L) from the carried state: same outputs and same gradients."""
    x0 = make_inputs(case, device, seed)
    gy, gh = upstream_grads(case, device, seed)
    results = []
    for pieces in ([None], [slice(0, split), slice(split, None)]):
        x = {k: None if v is None else v.clone().requires_grad_() for k, v in x0.items()}
        ys, h = [], None
        for piece in pieces:
            y, h = _scan(scan, x, case, piece, h)
            ys.append(y)
        y = torch.cat(ys, dim=-1)
        ((y.float() * gy.float()).sum() + (h.float() * gh).sum()).backward()
        results.append((y.detach(), h.detach(), {k: v.grad for k, v in x.items() if v is not None}))
    (y_one, h_one, g_one), (y_two, h_two, g_two) = results
    _close(y_two, y_one, case, device, f"y, split at {split}")
    _close(h_two, h_one, case, device, f"last_state, split at {split}")
    for k, g in g_one.items():
        _close(g_two[k], g, case, device, f"d{k}, split at {split}")


def D_and_z_act_pointwise(scan: Callable, case: ScanCase, seed: int = 0, device="cpu") -> None:
    """y(D, z) = (y(no D, no z) + D u) * silu(z), per element."""
    x = make_inputs(replace(case, has_D=True, has_z=True), device, seed)
    kw = dict(delta_bias=x["delta_bias"], delta_softplus=case.delta_softplus, initial_state=x["initial_state"])
    args = [x[k] for k in ("u", "delta", "A", "B", "C")]
    y_bare = scan(*args, **kw)
    y_full = scan(*args, D=x["D"], z=x["z"], **kw)
    expected = (y_bare.float() + x["D"][None, :, None] * x["u"].float()) * F.silu(x["z"].float())
    _close(y_full.float(), expected, case, device, "y with D and z")


def negative_A_forgets(scan: Callable, case: ScanCase, seed: int = 0, device="cpu") -> None:
    """A = -1e4: every state forgets its past, so y[t] and h[L-1] have a closed form."""
    case = replace(case, delta_softplus=True)
    x = make_inputs(case, device, seed)
    x["A"] = torch.full_like(x["A"], -1e4)
    u = x["u"].clone().requires_grad_()
    y, h = scan(**{**x, "u": u}, delta_softplus=True, return_last_state=True)
    y[..., -1].float().sum().backward()

    x = {k: None if v is None else v.float() for k, v in x.items()}
    dt = F.softplus(x["delta"] + (0 if x["delta_bias"] is None else x["delta_bias"][None, :, None]))
    G = case.groups or 1
    per_channel = [t.reshape(case.batch, G, 1, case.N, case.L).expand(-1, -1, case.dim // G, -1, -1)
                   .reshape(case.batch, case.dim, case.N, case.L) for t in (x["B"], x["C"])]
    h_all = dt[:, :, None] * per_channel[0] * x["u"][:, :, None]  # (batch, dim, N, L)
    expected = (h_all * per_channel[1]).sum(2)
    if x["D"] is not None:
        expected = expected + x["D"][None, :, None] * x["u"]
    if x["z"] is not None:
        expected = expected * F.silu(x["z"])
    _close(y.float(), expected, case, device, "y")
    _close(h, h_all[..., -1], case, device, "last_state")
    assert torch.all(u.grad[..., :-1] == 0), "the last output must not depend on earlier inputs"
