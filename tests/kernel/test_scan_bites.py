"""The parity harness and the scan check reject wrong scans: proof that they can fail.

Each candidate is the reference with one deliberate bug, of the kind a kernel author
makes. The harness must flag it, and flag the tensor the bug actually touches; the
battery check (`estm scan-check`, `estm_ref.scan.testing`) must name the cases and
quantities the bug breaks, and pass the cases it does not touch.
"""

import pytest
import torch
import torch.nn.functional as F

from estm_ref.scan import properties, selective_scan_ref
from estm_ref.scan.battery import select
from estm_ref.scan.check import FAIL, check_scan
from estm_ref.scan.parity import ScanCase, assert_parity, check_case

CASE = ScanCase(2, 6, 12, 4, groups=2)
DEVICE = "cpu"


def _with_output_from_previous_state(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                     delta_softplus=False, return_last_state=False, initial_state=None):
    """Off by one in time: y[t] reads h[t-1] instead of h[t]."""
    batch, dim, L = u.shape
    G = 1 if B.dim() == 3 else B.shape[1]
    Bd = (B[:, None] if B.dim() == 3 else B).float().repeat_interleave(dim // G, dim=1)
    Cd = (C[:, None] if C.dim() == 3 else C).float().repeat_interleave(dim // G, dim=1)
    dt = delta.float() + (0 if delta_bias is None else delta_bias[None, :, None])
    dt = F.softplus(dt, threshold=20.0) if delta_softplus else dt
    h = initial_state if initial_state is not None else u.new_zeros(batch, dim, A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(L):
        ys.append((h * Cd[..., t]).sum(-1))  # the bug: before the update
        h = torch.exp(dt[..., t, None] * A) * h + dt[..., t, None] * Bd[..., t] * u[..., t, None].float()
    y = torch.stack(ys, -1) + (0 if D is None else D[None, :, None] * u.float())
    y = (y * F.silu(z.float()) if z is not None else y).to(u.dtype)
    return (y, h) if return_last_state else y


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient comes back multiplied by `scale`."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


class _SoftplusWithoutDerivative(torch.autograd.Function):
    """softplus forward, but the backward forgets the sigmoid factor."""

    @staticmethod
    def forward(ctx, x):
        return F.softplus(x, threshold=20.0)

    @staticmethod
    def backward(ctx, g):
        return g


def drop_D(**kw):
    return selective_scan_ref(**{**kw, "D": None})


def D_sign_flipped(u, delta, A, B, C, D=None, **kw):
    return selective_scan_ref(u, delta, A, B, C, None if D is None else -D, **kw)


def softplus_twice(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kw):
    if delta_softplus:  # the caller's softplus, then the scan's own
        x = delta.float() + (0 if delta_bias is None else delta_bias[None, :, None])
        delta, delta_bias = F.softplus(x, threshold=20.0), None
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, **kw)


def dB_dropped_for_groups(u, delta, A, B, C, **kw):
    """A backward that forgets dB when B comes in groups (batch, G, N, L) with G > 1."""
    if B.dim() == 4 and B.shape[1] > 1:
        B = B.detach()
    return selective_scan_ref(u, delta, A, B, C, **kw)


def initial_state_ignored(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, initial_state=None):
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def softplus_grad_dropped(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          **kw):
    x = delta.float() + (0 if delta_bias is None else delta_bias[None, :, None])
    dt = _SoftplusWithoutDerivative.apply(x) if delta_softplus else x
    return selective_scan_ref(u, dt, A, B, C, D, z, None, False, **kw)


def dA_off_by_a_thousandth(u, delta, A, B, C, **kw):
    return selective_scan_ref(u, delta, _ScaleGrad.apply(A, 1.001), B, C, **kw)


def dA_sign_flipped(u, delta, A, B, C, **kw):
    return selective_scan_ref(u, delta, _ScaleGrad.apply(A, -1.0), B, C, **kw)


def last_state_gradient_ignored(**kw):
    y, h = selective_scan_ref(**kw)
    return y, h.detach()


def last_state_one_step_early(u, delta, A, B, C, D=None, z=None, **kw):
    y, _ = selective_scan_ref(u, delta, A, B, C, D, z, **kw)
    _, h = selective_scan_ref(u[..., :-1], delta[..., :-1], A, B[..., :-1], C[..., :-1], D,
                              None if z is None else z[..., :-1], **kw)
    return y, h


def forgotten_store(**kw):
    y, h = selective_scan_ref(**kw)
    y = y.clone()
    y[-1, -1, -1] = float("nan")  # what a NaN-poisoned buffer looks like where a store is missing
    return y, h


def float32_output(**kw):
    y, h = selective_scan_ref(**kw)
    return y.float(), h


BITES = [
    # (candidate, case, tensors that must be flagged)
    (drop_D, CASE, {"y", "du", "dz"}),
    (_with_output_from_previous_state, CASE, {"y", "du", "dC"}),
    (softplus_grad_dropped, CASE, {"ddelta", "ddelta_bias"}),
    (dA_off_by_a_thousandth, CASE, {"dA"}),
    (dA_sign_flipped, CASE, {"dA"}),
    (last_state_gradient_ignored, CASE, {"du", "dA", "dinitial_state"}),
    (last_state_one_step_early, CASE, {"last_state"}),
    (forgotten_store, CASE, {"y"}),
    (float32_output, ScanCase(1, 4, 6, 4, dtype=torch.bfloat16), {"y"}),
    # still caught at the loose low-precision tolerance
    (_with_output_from_previous_state, ScanCase(2, 6, 12, 4, dtype=torch.bfloat16), {"y", "du"}),
]


@pytest.mark.parametrize("candidate, case, flagged", BITES, ids=[f"{c.__name__}-{s}" for c, s, _ in BITES])
def test_harness_rejects_a_wrong_scan(candidate, case, flagged):
    report = check_case(candidate, case, DEVICE)
    failed = {r.name for r in report.rows if not r.ok}
    assert not report.ok
    assert flagged <= failed, f"expected {flagged} among the failures, got {failed}\n{report.format()}"
    with pytest.raises(AssertionError, match="parity failed"):
        assert_parity(candidate, case, DEVICE)


def test_harness_accepts_the_reference_itself():
    for case in (CASE, ScanCase(1, 4, 6, 4, dtype=torch.bfloat16, groups=4)):
        report = assert_parity(selective_scan_ref, case, DEVICE)
        assert {r.name for r in report.rows} == {
            "y", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dinitial_state"}


# candidate -> (failures that must be reported as (case, quantity), a case it must pass or None)
BATTERY_BITES = {
    D_sign_flipped: ({("D-only", "y"), ("D-only", "dD"), ("D-only", "du")}, "z-only"),
    softplus_twice: ({("estm-time-path", "y"), ("softplus-above-threshold", "ddelta")}, "D-only"),
    last_state_one_step_early: ({("L40-shared", "last_state"), ("L40-shared", "du")}, None),
    dB_dropped_for_groups: ({("groups-L-prime", "dB"), ("N-large", "dB"), ("bf16-groups", "dB")},
                            "noncontiguous"),
    initial_state_ignored: ({("initial-state-only", "y"), ("initial-state-only", "last_state"),
                             ("initial-state-only", "dinitial_state")}, "N-odd"),
}


@pytest.mark.parametrize("candidate", list(BATTERY_BITES), ids=[c.__name__ for c in BATTERY_BITES])
def test_battery_check_names_the_broken_cases(candidate):
    must_fail, must_pass = BATTERY_BITES[candidate]
    result = check_scan(candidate, select(quick=True), DEVICE)
    failed = {(r.case, r.quantity) for r in result.failed}
    assert not result.ok
    assert must_fail <= failed, f"missing from the failures: {must_fail - failed}\n{result.table()}"
    assert not any(case == must_pass for case, _ in failed), result.table()
    first = result.failed[0]
    assert result.verdict().startswith("FAIL") and f"{first.case} {first.quantity}" in result.verdict()


def test_battery_check_skips_nothing_on_a_plain_failure():
    """A wrong scan is FAIL, never SKIP: only NotImplementedError or an adapter declares a case unsupported."""
    result = check_scan(D_sign_flipped, select(patterns=["D-only"]), DEVICE)
    assert {r.status for r in result.rows} == {"PASS", FAIL}


def test_determinism_catches_a_scan_that_changes_between_runs():
    calls = []

    def drifting(**kw):  # the second call differs in the last bit of dB, as an atomic add might
        calls.append(1)
        B = kw["B"]
        if len(calls) > 1:
            B = _ScaleGrad.apply(B, 1 + 2**-20)
        return selective_scan_ref(**{**kw, "B": B})

    result = check_scan(drifting, select(patterns=["estm-time-path"]), DEVICE)
    assert [(r.quantity, r.note) for r in result.failed] == [("determinism", "two runs differ in dB")]


def test_groups_bug_passes_every_shared_case():
    """The bug sits only where G > 1: the check must not blame shared B/C."""
    result = check_scan(dB_dropped_for_groups, select(quick=True), DEVICE)
    grouped = {bc.name for bc in select(quick=True) if bc.case.groups > 1}
    assert {r.case for r in result.failed} == grouped


@pytest.mark.parametrize("candidate, prop, message", [
    (initial_state_ignored, lambda scan, case: properties.two_pieces_equal_one(scan, case, 5), "split at 5"),
    (D_sign_flipped, properties.D_and_z_act_pointwise, "y with D and z"),
    (softplus_twice, properties.negative_A_forgets, "y"),
], ids=["initial-state-ignored-two-pieces", "D-sign-D-and-z", "softplus-twice-forgetting"])
def test_properties_reject_a_wrong_scan(candidate, prop, message):
    with pytest.raises(AssertionError, match=message):
        prop(candidate, CASE)
