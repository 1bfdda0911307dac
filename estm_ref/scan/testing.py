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
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from estm_ref.scan.adapters import ADAPTERS
from estm_ref.scan.battery import BatteryCase, select
from estm_ref.scan.check import FAIL, SKIP, CheckResult, check_scan

__all__ = ["scan_tests", "check_battery_case"]


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

