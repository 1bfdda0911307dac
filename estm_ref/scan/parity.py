"""Parity harness: run two selective scans on the same inputs and compare everything.

Used by `estm selfcheck`, `estm scan-check` (`check.py`) and the tests. A scan is any callable with the signature of
`estm_ref.scan.selective_scan_ref`. `check_case` runs both on one `ScanCase` (seeded
inputs, random upstream gradients for y and last_state), and compares y, last_state and
the gradient of every input against the per-dtype tolerance table below (the one the
Triton kernel meets).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from estm_ref.scan.ref import selective_scan_ref

# (dtype, where the kernel runs) -> (rtol, atol); "interpreter" is TRITON_INTERPRET=1 on CPU.
# Low-precision inputs are compared with the reference run on the same low-precision inputs.
TOLERANCES: dict[tuple[torch.dtype, str], tuple[float, float]] = {
    (torch.float32, "interpreter"): (1e-4, 1e-5),
    (torch.float32, "gpu"): (6e-4, 2e-3),
    (torch.bfloat16, "interpreter"): (3e-2, 5e-2),
    (torch.bfloat16, "gpu"): (3e-2, 5e-2),
    (torch.float16, "interpreter"): (3e-2, 5e-2),
    (torch.float16, "gpu"): (3e-2, 5e-2),
}

INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def tolerance(dtype: torch.dtype, device: torch.device | str) -> tuple[float, float]:
    """(rtol, atol) for a case whose lowest input precision is `dtype`."""
    where = "gpu" if torch.device(device).type == "cuda" else "interpreter"
    return TOLERANCES[(dtype, where)]


@dataclass(frozen=True)
class ScanCase:
    """One parity case. groups=0 means B, C of shape (batch, N, L); >0 means (batch, G, N, L).

    dtype is that of u and z; delta_dtype and bc_dtype (B and C) default to it.
    big_delta puts the middle step's delta above softplus's threshold (20).
    noncontiguous passes u, delta, z, B, C as strided views instead of fresh tensors.
    """

    batch: int
    dim: int
    L: int
    N: int
    groups: int = 0
    has_D: bool = True
    has_z: bool = True
    has_delta_bias: bool = True
    delta_softplus: bool = True
    has_initial_state: bool = True
    dtype: torch.dtype = torch.float32
    delta_dtype: torch.dtype | None = None
    bc_dtype: torch.dtype | None = None
    big_delta: bool = False
    noncontiguous: bool = False

    def __str__(self) -> str:
        flags = "".join(c for c, on in (("D", self.has_D), ("z", self.has_z), ("b", self.has_delta_bias),
                                        ("s", self.delta_softplus), ("h", self.has_initial_state),
                                        ("!", self.big_delta), ("~", self.noncontiguous)) if on)
        dtypes = {str(t).removeprefix("torch.") for t in (self.dtype, self.delta_dtype, self.bc_dtype) if t}
        return (f"b{self.batch}-d{self.dim}-L{self.L}-N{self.N}-G{self.groups}-{flags or 'plain'}-"
                f"{'+'.join(sorted(dtypes))}")

    @property
    def lowest_precision(self) -> torch.dtype:
        dtypes = [self.dtype, self.delta_dtype or self.dtype, self.bc_dtype or self.dtype]
        return next((t for t in (torch.bfloat16, torch.float16) if t in dtypes), torch.float32)


def make_inputs(case: ScanCase, device, seed: int = 0) -> dict[str, torch.Tensor | None]:
    """Seeded inputs in the ranges Mamba uses: A < 0, dt positive and moderate."""
    g = torch.Generator().manual_seed(seed)
    b, d, L, N = case.batch, case.dim, case.L, case.N

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    if case.delta_softplus:
        delta = randn(b, d, L, scale=0.5) - 1.0  # softplus(delta) in about (0.1, 0.8)
    else:
        delta = torch.rand(b, d, L, generator=g) * 0.5 + 0.05
    if case.big_delta:
        delta[..., L // 2] = 20.5 + 5 * torch.rand(b, d, generator=g)
    bc_shape = (b, N, L) if case.groups == 0 else (b, case.groups, N, L)
    x = {
        "u": randn(b, d, L),
        "delta": delta,
        "A": -torch.exp(randn(d, N, scale=0.5)),
        "B": randn(*bc_shape),
        "C": randn(*bc_shape),
        "D": randn(d) if case.has_D else None,
        "z": randn(b, d, L) if case.has_z else None,
        "delta_bias": randn(d, scale=0.1) if case.has_delta_bias else None,
        "initial_state": randn(b, d, N) if case.has_initial_state else None,
    }
    dtypes = {"u": case.dtype, "z": case.dtype, "delta": case.delta_dtype or case.dtype,
              "B": case.bc_dtype or case.dtype, "C": case.bc_dtype or case.dtype}
    return {name: None if t is None else t.to(device=device, dtype=dtypes.get(name, torch.float32))
            for name, t in x.items()}


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as a view whose last axis has stride 2 (differentiable)."""
    return torch.stack([t, torch.full_like(t, float("nan"))], dim=-1)[..., 0]


def upstream_grads(case: ScanCase, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random dLoss/dy (batch, dim, L) in u's dtype and dLoss/dlast_state (batch, dim, N)."""
    g = torch.Generator().manual_seed(seed + 1_000_003)
    gy = torch.randn(case.batch, case.dim, case.L, generator=g).to(device=device, dtype=case.dtype)
    gh = torch.randn(case.batch, case.dim, case.N, generator=g).to(device=device)
    return gy, gh


def run_scan(scan, case: ScanCase, inputs: dict, grads: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Forward and backward of `scan`; returns y, last_state and d<name> for every given input."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
    args = {k: leaves.get(k) for k in INPUT_NAMES}
    if case.noncontiguous:
        args.update({k: _strided(args[k]) for k in ("u", "delta", "z", "B", "C") if args[k] is not None})
    y, last_state = scan(**args, delta_softplus=case.delta_softplus, return_last_state=True)
    gy, gh = grads
    ctype = torch.float64 if y.dtype == torch.float64 else torch.float32  # float64: the exact run
    loss = (y.to(ctype) * gy.to(ctype)).sum() + (last_state.to(ctype) * gh.to(ctype)).sum()
    names = list(leaves)
    dx = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    out = {"y": y.detach(), "last_state": last_state.detach()}
    out.update({f"d{k}": g for k, g in zip(names, dx)})
    return out


@dataclass
class Row:
    name: str
    max_abs_err: float
    worst: float  # max |a - e| / (atol + rtol |e|); <= 1 passes
    ok: bool
    note: str = ""
    max_rel_err: float = float("nan")  # max |a - e| / max |e|: the error relative to the tensor's scale


@dataclass
class ParityReport:
    case: ScanCase
    rtol: float
    atol: float
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    def format(self) -> str:
        lines = [f"{self.case}  (rtol {self.rtol:g}, atol {self.atol:g})",
                 f"  {'tensor':<16}{'max abs err':>12}{'err/tol':>10}  result"]
        for r in self.rows:
            lines.append(f"  {r.name:<16}{r.max_abs_err:>12.3e}{r.worst:>10.3f}  "
                         f"{'ok' if r.ok else 'FAIL'}{'  ' + r.note if r.note else ''}")
        return "\n".join(lines)


def compare(actual: dict, expected: dict, rtol: float, atol: float, check_dtype: bool = True) -> list[Row]:
    """One row per expected tensor; a missing tensor, a dtype or shape change, or NaN fails.
    check_dtype=False compares values only (against a float64 run)."""
    rows = []
    for name, e in expected.items():
        a = actual.get(name)
        if e is None and a is None:
            continue
        if a is None or e is None:
            rows.append(Row(name, float("nan"), float("inf"), False,
                            "missing" if a is None else "unexpected (reference has none)"))
            continue
        if (check_dtype and a.dtype != e.dtype) or a.shape != e.shape:
            rows.append(Row(name, float("nan"), float("inf"), False,
                            f"got {a.dtype} {tuple(a.shape)}, want {e.dtype} {tuple(e.shape)}"))
            continue
        a64, e64 = a.detach().double().cpu(), e.detach().double().cpu()
        err = (a64 - e64).abs()
        ratio = err / (atol + rtol * e64.abs())
        finite = bool(torch.isfinite(a64).all())
        worst = float(ratio.max()) if finite else float("inf")
        max_err = float(err.max()) if finite else float("nan")
        scale = float(e64.abs().max()) if e64.numel() else 0.0
        rel = max_err / scale if scale > 0 else (0.0 if max_err == 0 else float("inf"))
        rows.append(Row(name, max_err, worst, finite and worst <= 1.0, "" if finite else "non-finite values",
                        rel))
    return rows


def check_case(scan, case: ScanCase, device, seed: int = 0, reference=selective_scan_ref,
               tol: tuple[float, float] | None = None) -> ParityReport:
    """Compare `scan` with `reference` on `case`: y, last_state and every input gradient."""
    inputs = make_inputs(case, device, seed)
    grads = upstream_grads(case, device, seed)
    expected = run_scan(reference, case, inputs, grads)
    actual = run_scan(scan, case, inputs, grads)
    rtol, atol = tol or tolerance(case.lowest_precision, device)
    return ParityReport(case, rtol, atol, compare(actual, expected, rtol, atol))


def assert_parity(scan, case: ScanCase, device, seed: int = 0, reference=selective_scan_ref,
                  tol: tuple[float, float] | None = None) -> ParityReport:
    """`check_case`, raising AssertionError with the table when anything differs."""
    report = check_case(scan, case, device, seed, reference, tol)
    if not report.ok:
        raise AssertionError("selective scan parity failed:\n" + report.format())
    return report


__all__ = ["TOLERANCES", "ScanCase", "make_inputs", "upstream_grads", "run_scan", "compare",
           "check_case", "assert_parity", "tolerance"]


# ----------------------------------------------------------------------------- device self-check

_bf16 = torch.bfloat16
CASES = {
    "cpu": [
        ScanCase(2, 8, 19, 16),
        ScanCase(1, 6, 12, 4, groups=3),
        ScanCase(2, 8, 16, 16, dtype=_bf16, has_initial_state=False),
        ScanCase(1, 6, 12, 4, groups=2, dtype=_bf16),
    ],
    "cuda": [
        ScanCase(2, 256, 1024, 16),
        ScanCase(2, 192, 777, 16, groups=4),
        ScanCase(2, 256, 1024, 16, dtype=_bf16, has_initial_state=False),
        ScanCase(2, 192, 777, 16, groups=4, dtype=_bf16),
    ],
}


def check_parity(device, scan=None) -> tuple[bool, str]:
    """Kernel (or `scan`) vs reference on `device`; returns (all within tolerance, report table)."""
    device = torch.device(device)
    if scan is None:
        from triton_kernels.selective_scan import LaunchOptions, selective_scan_fn

        # poison: a buffer the kernel forgets to write shows up as NaN, not as stale memory
        scan = functools.partial(selective_scan_fn, options=LaunchOptions(poison=True))
    cases = CASES["cuda" if device.type == "cuda" else "cpu"]
    reports = [check_case(scan, case, device, seed=i) for i, case in enumerate(cases)]
    ok = all(r.ok for r in reports)
    return ok, _table(reports, device, ok)


def _table(reports, device, ok) -> str:
    lines = [f"selective scan parity on {device}: max |kernel - reference| per tensor "
             "(! = outside tolerance)"]
    for i, r in enumerate(reports, 1):
        lines.append(f"  case {i}: {r.case}  rtol {r.rtol:g} atol {r.atol:g}")
    names = list(dict.fromkeys(row.name for r in reports for row in r.rows))
    lines.append(f"  {'tensor':<16}" + "".join(f"{'case ' + str(i):>12}" for i in range(1, len(reports) + 1)))
    for name in names:
        cells = []
        for r in reports:
            row = next((x for x in r.rows if x.name == name), None)
            cells.append("-" if row is None else f"{row.max_abs_err:.2e}{'' if row.ok else '!'}")
        lines.append(f"  {name:<16}" + "".join(f"{c:>12}" for c in cells))
    for r in reports:
        lines += [f"  {r.case} {row.name}: {row.note}" for row in r.rows if row.note]
    lines.append("PASS" if ok else "FAIL")
    return "\n".join(lines)
