"""Check any selective scan against the reference on the battery (`battery.py`).

For each case: the output, the last state and the gradient of every input (random upstream
gradients) against the reference on the same inputs and, for tiny cases, against a float64
run of the reference, with the per-dtype tolerances of `parity.TOLERANCES`; for the
determinism cases, a second forward and backward must give bit-identical results. A case
the scan cannot run is SKIP, not FAIL, when the adapter declares it or when the scan raises
`NotImplementedError`; any other exception fails the case with its message.

`check_scan` returns a `CheckResult`: rows of (case, quantity, errors, tolerance, status),
a table, a verdict and a JSON form. `estm scan-check` and `estm_ref.scan.testing` use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch

from estm_ref.scan.battery import BatteryCase
from estm_ref.scan.parity import compare, make_inputs, run_scan, tolerance, upstream_grads
from estm_ref.scan.ref import selective_scan_ref

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class CheckRow:
    case: str
    quantity: str  # y, last_state, d<input>, determinism, or "-" for the whole case
    status: str  # PASS, FAIL or SKIP
    abs_err: float | None = None  # max |scan - reference|
    rel_err: float | None = None  # max |scan - reference| / max |reference|
    abs_err_f64: float | None = None  # the same against the float64 reference (tiny cases)
    rel_err_f64: float | None = None
    rtol: float | None = None
    atol: float | None = None
    note: str = ""


@dataclass
class CheckResult:
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def verdict(self) -> str:
        cases = list(dict.fromkeys(r.case for r in self.rows))
        skipped = list(dict.fromkeys(r.case for r in self.rows if r.status == SKIP and r.quantity == "-"))
        counts = f"{len(cases)} cases, {len(self.rows)} rows: " + ", ".join(
            f"{sum(r.status == s for r in self.rows)} {s}" for s in (PASS, FAIL, SKIP))
        if self.ok:
            return f"PASS ({counts}" + (f"; unsupported: {', '.join(skipped)})" if skipped else ")")
        names = [f"{r.case} {r.quantity}" for r in self.failed]
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        return f"FAIL ({counts}); failed: {', '.join(names[:8])}{more}"

    def table(self) -> str:
        head = (f"{'case':<28}{'quantity':<16}{'max abs':>10}{'max rel':>10}{'abs f64':>10}"
                f"{'rel f64':>10}  {'rtol/atol':<15}result")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            tol = f"{r.rtol:g}/{r.atol:g}" if r.rtol is not None else ""
            cells = "".join(f"{_num(x):>10}" for x in (r.abs_err, r.rel_err, r.abs_err_f64, r.rel_err_f64))
            lines.append(f"{r.case:<28}{r.quantity:<16}{cells}  {tol:<15}{r.status}"
                         + (f"  {r.note}" if r.note else ""))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"verdict": "PASS" if self.ok else "FAIL", "summary": self.verdict(),
                "rows": [asdict(r) for r in self.rows]}


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.2e}"


def check_scan(scan: Callable, cases: Iterable[BatteryCase], device="cpu",
               unsupported: Callable[[BatteryCase], str | None] | None = None, seed: int = 0,
               reference: Callable = selective_scan_ref, progress: Callable | None = None) -> CheckResult:
    """Run `scan` on every case; `unsupported(case)` returns the reason a case is not run."""
    result = CheckResult()
    for i, bc in enumerate(cases):
        if progress is not None:
            progress(bc)
        reason = unsupported(bc) if unsupported is not None else None
        if reason:
            result.rows.append(CheckRow(bc.name, "-", SKIP, note=f"unsupported: {reason}"))
            continue
        result.rows += check_one(scan, bc, torch.device(device), seed + i, reference)
    return result


def check_one(scan: Callable, bc: BatteryCase, device: torch.device, seed: int = 0,
              reference: Callable = selective_scan_ref) -> list[CheckRow]:
    """The rows of one case: one per compared tensor, plus determinism when the case asks."""
    case = bc.case
    inputs, grads = make_inputs(case, device, seed), upstream_grads(case, device, seed)
    expected = run_scan(reference, case, inputs, grads)
    try:
        actual = run_scan(scan, case, inputs, grads)
    except NotImplementedError as err:
        return [CheckRow(bc.name, "-", SKIP, note=f"unsupported: {err or 'NotImplementedError'}")]
    # the scan under test is anyone's code: whatever it raises is that case's failure, with its message
    except Exception as err:  # noqa: BLE001
        return [CheckRow(bc.name, "-", FAIL, note=f"raised {type(err).__name__}: {_one_line(err)}")]
    rtol, atol = tolerance(case.lowest_precision, device)
    rows = {r.name: CheckRow(bc.name, r.name, PASS if r.ok else FAIL, r.max_abs_err, r.max_rel_err,
                             rtol=rtol, atol=atol, note=r.note)
            for r in compare(actual, expected, rtol, atol)}
    if bc.tiny:
        exact = run_scan(reference, case, _float64(inputs), tuple(g.double() for g in grads))
        for r in compare(actual, exact, rtol, atol, check_dtype=False):
            row = rows.setdefault(r.name, CheckRow(bc.name, r.name, PASS, rtol=rtol, atol=atol))
            row.abs_err_f64, row.rel_err_f64 = r.max_abs_err, r.max_rel_err
            if not r.ok:
                row.status = FAIL
                row.note = "; ".join(filter(None, [row.note, "outside tolerance of the float64 run"
                                                   + (f" ({r.note})" if r.note else "")]))
    out = list(rows.values())
    if bc.determinism:
        out.append(_determinism(scan, bc, inputs, grads, actual))
    return out


def _determinism(scan, bc: BatteryCase, inputs, grads, first: dict) -> CheckRow:
    try:
        second = run_scan(scan, bc.case, inputs, grads)
    except Exception as err:  # noqa: BLE001  (as in check_one: the scan's failure, reported)
        return CheckRow(bc.name, "determinism", FAIL, note=f"second run raised {type(err).__name__}: "
                                                           f"{_one_line(err)}")
    differ = [k for k, v in first.items()
              if v is not None and (second.get(k) is None or not torch.equal(v, second[k]))]
    return CheckRow(bc.name, "determinism", FAIL if differ else PASS,
                    note=f"two runs differ in {', '.join(differ)}" if differ else "bit-identical twice")


def _float64(inputs: dict) -> dict:
    return {k: None if v is None else v.double() for k, v in inputs.items()}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] + ("..." if len(text) > 200 else "")
