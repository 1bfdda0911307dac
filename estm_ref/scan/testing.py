"""The scan check for pytest: one parametrised test per battery case.

A user's whole test file::

    from estm_ref.scan.testing import scan_tests
    from my_package.scan import my_selective_scan
    test_my_scan = scan_tests(my_selective_scan)

Each case is one test (`test_my_scan[L1-batch1]`, ...): it fails with the table of that
case when any quantity is outside tolerance, and is skipped with the reason when the
adapter declares the case unsupported or the scan raises `NotImplementedError`.
`scan_tests(fn, adapter="mambapy")` checks a callable of another project's signature
(see `estm_ref.scan.adapters`); `quick=False` runs the full battery; `cases` keeps the
cases whose names match those shell patterns.

`test_my_scan_properties = scan_property_tests(my_selective_scan)` adds the properties of
`estm_ref.scan.properties` on small cases drawn by Hypothesis (`scan_cases`).
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from estm_ref.scan import properties
from estm_ref.scan.adapters import ADAPTERS
from estm_ref.scan.battery import BatteryCase, select
from estm_ref.scan.check import FAIL, SKIP, CheckResult, check_scan
from estm_ref.scan.parity import ScanCase

__all__ = ["scan_tests", "scan_property_tests", "scan_cases", "check_battery_case"]

PROPERTIES = ("two_pieces_equal_one", "D_and_z_act_pointwise", "negative_A_forgets")


def check_battery_case(scan: Callable, case: BatteryCase, device="cpu", adapter: str = "native") -> CheckResult:
    """The check of one case, as pytest sees it: fails with the table, skips with the reason."""
    chosen = ADAPTERS[adapter]
    result = check_scan(chosen.wrap(scan), [case], device,
                        unsupported=lambda bc: chosen.unsupported(scan, bc.case))
    if any(r.status == FAIL for r in result.rows):
        pytest.fail(f"selective scan check failed: {result.verdict()}\n{result.table()}", pytrace=False)
    if result.rows and all(r.status == SKIP for r in result.rows):
        pytest.skip(result.rows[0].note)
    return result


def scan_tests(scan: Callable, *, adapter: str = "native", device="cpu", quick: bool = True,
               cases: list[str] | None = None) -> Callable:
    """A test function parametrised over the battery; assign it to a `test_*` name."""
    chosen = ADAPTERS[adapter]
    problem = chosen.problem(scan, torch.device(device))
    if problem:
        raise TypeError(f"cannot check {scan!r}: {problem}")
    selected = select(quick, cases)

    @pytest.mark.parametrize("battery_case", selected, ids=[c.name for c in selected])
    def test_scan(battery_case: BatteryCase) -> None:
        check_battery_case(scan, battery_case, device, adapter)

    return test_scan



def scan_cases(min_L: int = 1, max_L: int = 20):
    """A Hypothesis strategy of small `ScanCase`s: shared or grouped B/C, every optional
    input on or off, N from a small fixed set (a kernel compiles a few variants, not one
    per example), float32, bfloat16 or float16 inputs."""
    from hypothesis import strategies as st

    dtypes = (torch.float32, torch.float32, torch.bfloat16, torch.float16)

    @st.composite
    def cases(draw):
        groups = draw(st.sampled_from([0, 1, 2, 3]))
        dim = groups * draw(st.integers(1, 3)) if groups else draw(st.integers(1, 8))
        flags = {k: draw(st.booleans()) for k in
                 ("has_D", "has_z", "has_delta_bias", "delta_softplus", "has_initial_state")}
        return ScanCase(batch=draw(st.integers(1, 2)), dim=dim, L=draw(st.integers(min_L, max_L)),
                        N=draw(st.sampled_from([1, 4, 4, 16])), groups=groups,
                        dtype=draw(st.sampled_from(dtypes)), **flags)

    return cases()


def scan_property_tests(scan: Callable, *, device="cpu", max_examples: int = 12) -> Callable:
    """A test function parametrised over the properties, each on `max_examples` drawn cases."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @pytest.mark.parametrize("prop", PROPERTIES)
    @settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_scan_properties(prop: str, data) -> None:
        case = data.draw(scan_cases(min_L=2 if prop == "two_pieces_equal_one" else 1), label="case")
        seed = data.draw(st.integers(0, 2**16), label="seed")
        if prop == "two_pieces_equal_one":
            split = data.draw(st.integers(1, case.L - 1), label="split")
            properties.two_pieces_equal_one(scan, case, split, seed, device)
        else:
            getattr(properties, prop)(scan, case, seed, device)

    return test_scan_properties
