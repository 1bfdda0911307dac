"""Selective-scan benchmark: forward and forward+backward time of every available backend.

    python bench/scan.py [--quick] [--out DIR] [--device cuda]     (or: estm bench scan ...)

Backends. One that cannot run at all gets a `skipped` row per shape with the reason,
in the table and in the log; nothing falls back to another backend.

  triton       `triton_kernels.selective_scan.selective_scan_fn` on CUDA. On CPU it runs
               only through the Triton interpreter, as one tiny row labelled
               `triton-interpreter` with status `smoke`: it shows the kernel runs on this
               machine; its time is the interpreter's and is compared with nothing.
  ref          `estm_ref.scan.selective_scan_ref`, eager.
  ref-compile  the same function under `torch.compile(dynamic=False)`. The reference's
               Python loop over L is unrolled when traced, so compile time grows with L:
               rows above --compile-max-len are skipped. first_call_s is the compile time.
  mambapy      the parallel (Blelloch) scan `mambapy.pscan.pscan`, wrapped into this
               scan's semantics (`mambapy_scan`); optional, skipped when not importable.
  mamba-ssm    `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` (optional, CUDA).

Inputs are those of a Mamba block: u, delta, z (batch, dim, L) and B, C (batch, N, L) in
the row's dtype, A = -(1..N) for every channel, D = 1 and delta_bias (dim,) in float32,
delta_softplus=True. "fwd" is an inference forward (no autograd graph); "fwd+bwd" is
the forward with autograd plus `torch.autograd.grad` of all eight inputs for a random dy.
Every fwd row of a backend other than ref is compared with the reference on the same
inputs (when the reference fits) within `estm_ref.scan.parity`'s tolerances: a backend
that computes something else is reported as an error, not timed as a success.

Columns (per row): ms (median, see bench/common.py for the method), bytes (`bytes_moved`),
gb_s = bytes / time, copy_gb_s = a torch copy on the same device in the same run (bytes
read + written), roofline_pct = 100 * gb_s / copy_gb_s, exp_evals (`exp_evaluations`),
gexp_s = exp_evals / time / 1e9, speedup_vs_ref = ref ms / this ms for the same shape,
dtype and pass in the same run.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as `python bench/scan.py`: import from this source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from bench.common import (Stamp, Timing, add_common_arguments, available_memory, copy_bandwidth,
                          fmt, free_device_memory, import_pyplot, markdown_table, resolve_device,
                          result_path, setup_logging, time_call, write_csv, write_markdown)
from estm_ref.scan import selective_scan_ref

log = logging.getLogger("bench.scan")

PASSES = ("fwd", "fwd+bwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BACKENDS = ("triton", "ref", "ref-compile", "mambapy", "mamba-ssm")
COLUMNS = ["backend", "pass", "dtype", "batch", "dim", "L", "N", "status", "ms", "timing",
           "reps", "first_call_s", "bytes", "gb_s", "copy_gb_s", "roofline_pct", "exp_evals",
           "gexp_s", "speedup_vs_ref", "max_abs_err_vs_ref", "note"]


@dataclass(frozen=True)
class Shape:
    batch: int
    dim: int  # d_inner
    L: int
    N: int  # d_state

    @property
    def elements(self) -> int:
        """batch * dim * L * N: the size of the (never materialised) state sequence."""
        return self.batch * self.dim * self.L * self.N

    def __str__(self) -> str:
        return f"{self.batch}x{self.dim}x{self.L}x{self.N}"


def estm_shapes() -> list[Shape]:
    """ESTM's scans at the default config: batch 128, d_inner 256, N 16, and the two
    sequence lengths, n_time_patches + 1 = 13 (TMamba) and n_freq_patches + 1 = 17 (SMamba)."""
    from estm_ref.config import Config

    cfg = Config()
    m = cfg.model
    return [Shape(cfg.train.batch_size, m.d_inner, n + 1, m.d_state)
            for n in (m.n_time_patches, m.n_freq_patches)]


# language-model scans: Mamba-130M's d_inner, long sequences
LM_SHAPES = [Shape(8, 1536, L, 16) for L in (512, 1024, 2048, 4096, 8192)]
QUICK_EXTRA = [Shape(2, 256, 512, 16)]
SMOKE_SHAPE = Shape(1, 32, 16, 16)  # the Triton interpreter row on CPU
# Peak memory of the reference per state element (batch*dim*L*N): it materialises
# float32 (batch, dim, L, N) decay, drive and state tensors. Measured as the growth of the
# peak RSS at 2x256x2048x16 on CPU: 20 bytes for fwd, 36 for fwd+bwd; with some margin:
REF_BYTES_PER_ELEMENT = {"fwd": 24, "fwd+bwd": 40}
MEMORY_FRACTION = 0.7  # of the memory available when a row starts


# ----------------------------------------------------------------------------- what a row counts


def bytes_moved(shape: Shape, dtype: torch.dtype, pass_: str) -> int:
    """Bytes a scan must move at the least: each input read once, each output written once.

    With s = bytes per element of `dtype` (u, delta, z, B, C, y and their gradients),
    seq = batch*dim*L, bc = batch*N*L, and par = 4*(dim*N + 2*dim) for the float32
    A, D, delta_bias (and, backwards, their gradients):

        fwd      = s*(4*seq + 2*bc) + par       read u, delta, z, B, C, A, D, delta_bias; write y
        backward = s*(7*seq + 4*bc) + 2*par     read u, delta, z, dy, B, C, A, D, delta_bias;
                                                write du, ddelta, dz, dB, dC, dA, dD, d(delta_bias)
        fwd+bwd  = fwd + backward = s*(11*seq + 6*bc) + 3*par

    What an implementation moves on top (the kernel's chunk states and partial sums, the
    reference's per-step tensors) is not counted: this is the floor the roofline refers to.
    """
    s = torch.empty((), dtype=dtype).element_size()
    seq = shape.batch * shape.dim * shape.L
    bc = shape.batch * shape.N * shape.L
    par = 4 * (shape.dim * shape.N + 2 * shape.dim)
    fwd = s * (4 * seq + 2 * bc) + par
    if pass_ == "fwd":
        return fwd
    return fwd + s * (7 * seq + 4 * bc) + 2 * par


# exp(delta * A) evaluations per pass, in units of E = batch*dim*L*N (the exps inside
# softplus and sigmoid are O(batch*dim*L), N times fewer, and are not counted):
EXP_PER_PASS = {
    # fwd: once per step. fwd+bwd: the forward (1), the backward's recomputation of each
    # chunk's forward from its saved start state (1), and the adjoint recurrence (1).
    "triton": {"fwd": 1, "fwd+bwd": 3},
    # one exp for all steps at once; autograd's backward of exp reuses the saved output
    "ref": {"fwd": 1, "fwd+bwd": 1},
    # the graph as written; inductor's partitioner may recompute it in the backward
    # instead of saving it, which this lower bound does not see
    "ref-compile": {"fwd": 1, "fwd+bwd": 1},
    # the exp is evaluated by `mambapy_scan` in torch, before pscan; saved for the backward
    "mambapy": {"fwd": 1, "fwd+bwd": 1},
    # the CUDA backward recomputes exp once per step and reuses it for the reverse scan
    "mamba-ssm": {"fwd": 1, "fwd+bwd": 2},
}
EXP_PER_PASS["triton-interpreter"] = EXP_PER_PASS["triton"]


def exp_evaluations(backend: str, shape: Shape, pass_: str) -> int:
    """exp(delta * A) evaluations of one call: EXP_PER_PASS[backend][pass] * batch*dim*L*N."""
    return EXP_PER_PASS[backend][pass_] * shape.elements


# ----------------------------------------------------------------------------- backends


@dataclass
class Backend:
    name: str
    scan: Callable | None  # the selective_scan signature; None when it cannot run
    reason: str = ""  # why scan is None
    smoke: bool = False  # runs only the smoke shape; its time is not a performance number
    compiled: bool = False


REF = Backend("ref", selective_scan_ref)


def mambapy_scan(pscan, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """This scan's semantics (see `selective_scan_ref`) around mambapy's parallel scan.

    pscan(A_bar, X) takes (batch, L, dim, N) tensors and returns h with
    h[t] = A_bar[t] * h[t-1] + X[t]; it pads L to a power of two internally. Float32
    throughout; B, C of shape (batch, N, L) only.
    """
    if B.dim() != 3:
        raise ValueError("mambapy_scan takes B, C of shape (batch, N, L)")
    f32 = torch.float32
    dt = delta.to(f32)
    if delta_bias is not None:
        dt = dt + delta_bias[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt, threshold=20.0)
    dt = dt.transpose(1, 2)  # (batch, L, dim)
    u_t = u.to(f32).transpose(1, 2)
    a_bar = torch.exp(dt.unsqueeze(-1) * A)  # (batch, L, dim, N)
    x = (dt * u_t).unsqueeze(-1) * B.to(f32).transpose(1, 2).unsqueeze(2)
    h = pscan(a_bar, x)
    y = (h @ C.to(f32).transpose(1, 2).unsqueeze(-1)).squeeze(-1)  # (batch, L, dim)
    if D is not None:
        y = y + D * u_t
    y = y.transpose(1, 2)
    if z is not None:
        y = y * F.silu(z.to(f32))
    return y.to(u.dtype)


def load_backend(name: str, device: torch.device) -> Backend:
    if name == "ref":
        return REF
    if name == "ref-compile":
        return Backend("ref-compile", selective_scan_ref, compiled=True)
    if name == "triton":
        return _load_triton(device)
    if name == "mambapy":
        try:
            from mambapy.pscan import pscan
        except ImportError as err:
            return Backend("mambapy", None, f"mambapy is not importable ({err}); it is optional")
        return Backend("mambapy", functools.partial(mambapy_scan, pscan))
    if name == "mamba-ssm":
        if device.type != "cuda":
            return Backend("mamba-ssm", None, "mamba-ssm's scan is a CUDA extension")
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except ImportError as err:
            return Backend("mamba-ssm", None, f"mamba_ssm is not importable ({err}); it is optional")
        return Backend("mamba-ssm", selective_scan_fn)
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")


def _load_triton(device: torch.device) -> Backend:
    """The kernel on CUDA; on CPU the interpreter, setting TRITON_INTERPRET=1 for this
    process when triton is not imported yet (a script's first import of it)."""
    if device.type == "cpu" and "TRITON_INTERPRET" not in os.environ:
        if "triton" in sys.modules:
            return Backend("triton", None, "triton was imported before TRITON_INTERPRET=1 could be "
                                           "set; run with TRITON_INTERPRET=1 for the interpreter row")
        # read when triton.language and the kernels are decorated, i.e. at their import
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        from triton_kernels import selective_scan as kernel
    except ImportError as err:
        return Backend("triton", None, f"triton_kernels.selective_scan is not importable ({err})")
    if device.type == "cuda" and kernel.INTERPRETED:
        return Backend("triton", None, "TRITON_INTERPRET=1 is set: unset it to time the compiled kernel")
    if device.type == "cuda":
        return Backend("triton", kernel.selective_scan_fn)
    if device.type == "cpu" and kernel.INTERPRETED:
        return Backend("triton-interpreter", kernel.selective_scan_fn, smoke=True)
    return Backend("triton", None, f"the Triton kernel runs on CUDA, or on CPU under TRITON_INTERPRET=1 "
                                   f"set before its import (device {device}, TRITON_INTERPRET="
                                   f"{os.environ.get('TRITON_INTERPRET')!r})")


# ----------------------------------------------------------------------------- one row


def make_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, requires_grad: bool,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """Mamba-block-like inputs: delta_bias = softplus^-1 of dt log-uniform in [1e-3, 1e-1]."""
    g = torch.Generator(device=device).manual_seed(seed)
    b, d, L, N = shape.batch, shape.dim, shape.L, shape.N

    def rand(*size, dtype=dtype, scale=1.0):
        return (scale * torch.randn(*size, generator=g, device=device)).to(dtype)

    dt = torch.exp(torch.empty(d, device=device).uniform_(math.log(1e-3), math.log(1e-1), generator=g))
    inputs = {
        "u": rand(b, d, L), "delta": rand(b, d, L, scale=0.5),
        "A": -torch.arange(1, N + 1, dtype=torch.float32, device=device).repeat(d, 1),
        "B": rand(b, N, L), "C": rand(b, N, L),
        "D": torch.ones(d, device=device), "z": rand(b, d, L),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),
    }
    for t in inputs.values():
        t.requires_grad_(requires_grad)
    return inputs


def _call(scan, inputs: dict) -> torch.Tensor:
    x = inputs
    return scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                delta_bias=x["delta_bias"], delta_softplus=True)


def workload(scan, inputs: dict, dy: torch.Tensor | None) -> Callable[[], tuple]:
    """One call of a pass: fwd (dy None) -> (y,); fwd+bwd -> (y, grad of each input)."""
    if dy is None:
        def run():
            with torch.no_grad():
                return (_call(scan, inputs),)
        return run
    wrt = list(inputs.values())

    def run():
        y = _call(scan, inputs)
        return (y.detach(), *torch.autograd.grad(y, wrt, dy))
    return run


@dataclass
class Options:
    ref_max_len: int
    compile_max_len: int
    compile_dtypes: tuple[str, ...]
    row_budget_s: float
    time_budget_s: float | None


def skip_reason(backend: Backend, shape: Shape, dtype_name: str, pass_: str, opts: Options,
                device: torch.device) -> str | None:
    """Why this row is not run (None: run it)."""
    if backend.scan is None:
        return backend.reason
    if backend.name in ("ref", "ref-compile") and shape.L > opts.ref_max_len:
        return f"L > --ref-max-len {opts.ref_max_len} (the reference loops over L in Python)"
    if backend.compiled:
        if shape.L > opts.compile_max_len:
            return (f"L > --compile-max-len {opts.compile_max_len} (torch.compile unrolls the "
                    "reference's loop over L; compile time grows with L)")
        if dtype_name not in opts.compile_dtypes:
            return f"{dtype_name} not in --compile-dtypes {','.join(opts.compile_dtypes)}"
    need = _memory_estimate(backend.name, shape, pass_)
    avail = available_memory(device)
    if need and avail is not None and need > MEMORY_FRACTION * avail:
        return (f"needs about {need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available on {device}")
    return None


def _memory_estimate(backend: str, shape: Shape, pass_: str) -> int:
    """Bytes of the per-step / per-state tensors a backend keeps (0: nothing of that size)."""
    if backend in ("ref", "ref-compile"):
        return REF_BYTES_PER_ELEMENT[pass_] * shape.elements
    if backend == "mambapy":
        # float32 (batch, L', dim, N) tensors, L' the next power of two: a_bar, x, pscan's
        # two working copies and the product with C; about twice that with the backward
        padded = shape.batch * shape.dim * shape.N * 2 ** math.ceil(math.log2(shape.L))
        return 4 * padded * (5 if pass_ == "fwd" else 12)
    return 0


def run_row(backend: Backend, shape: Shape | None, dtype_name: str | None, pass_: str | None,
            device: torch.device, opts: Options, copy_gb_s: float) -> dict:
    if shape is None:
        return {"backend": backend.name, "status": "skipped", "note": backend.reason}
    dtype = DTYPES[dtype_name]
    row = {"backend": backend.name, "pass": pass_, "dtype": dtype_name, "batch": shape.batch,
           "dim": shape.dim, "L": shape.L, "N": shape.N,
           "bytes": bytes_moved(shape, dtype, pass_), "copy_gb_s": copy_gb_s,
           "exp_evals": exp_evaluations(backend.name, shape, pass_)
           if backend.name in EXP_PER_PASS else None}
    reason = skip_reason(backend, shape, dtype_name, pass_, opts, device)
    if reason:
        log.info("skip %s %s %s %s: %s", backend.name, pass_, dtype_name, shape, reason)
        return {**row, "status": "skipped", "note": reason}
    scan = backend.scan
    if backend.compiled:
        torch._dynamo.reset()  # one fresh compilation per row: no cache-limit fallback to eager
        scan = torch.compile(scan, dynamic=False)
    try:
        inputs = make_inputs(shape, dtype, device, requires_grad=pass_ == "fwd+bwd")
        dy = torch.randn(shape.batch, shape.dim, shape.L, device=device, dtype=dtype) \
            if pass_ == "fwd+bwd" else None
        run = workload(scan, inputs, dy)
        timing = time_call(run, device, budget_s=opts.row_budget_s)
        err, note = None, ""
        if backend.name != "ref":
            if skip_reason(REF, shape, dtype_name, pass_, opts, device):
                note = "not compared with the reference: it does not run at this size"
            else:
                try:
                    err, note = compare_with_ref(run(), inputs, dy, dtype, device)
                except torch.OutOfMemoryError:  # both results at once do not fit; the time stands
                    free_device_memory(device)
                    note = "not compared with the reference: out of memory holding both results"
    except torch.OutOfMemoryError as oom:
        log.warning("%s %s %s %s: out of memory", backend.name, pass_, dtype_name, shape)
        return {**row, "status": "skipped", "note": f"out of memory: {str(oom).splitlines()[0]}"}
    except Exception as exc:  # noqa: BLE001 - reported as an error row; the run exits non-zero
        log.exception("%s %s %s %s failed", backend.name, pass_, dtype_name, shape)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return {**row, "status": "error", "note": f"{type(exc).__name__}: {first_line}"}
    finally:
        run = inputs = dy = None
        free_device_memory(device)
    status = "smoke" if backend.smoke else "ok"
    if note.startswith("does not match"):
        status = "error"
        log.error("%s %s %s %s: %s", backend.name, pass_, dtype_name, shape, note)
    if backend.smoke:
        note = ("TRITON_INTERPRET=1 on CPU: shows the kernel runs here; the time is the "
                "interpreter's, not a performance number") + (f"; {note}" if note else "")
    return {**row, **_derived(row, timing, copy_gb_s, smoke=backend.smoke), "status": status,
            "max_abs_err_vs_ref": err, "note": note}


def _derived(row: dict, timing: Timing, copy_gb_s: float, smoke: bool) -> dict:
    seconds = timing.ms * 1e-3
    out = {"ms": timing.ms, "timing": timing.method, "reps": timing.reps,
           "first_call_s": timing.first_call_s}
    if not smoke:
        gb_s = row["bytes"] / seconds / 1e9
        out.update(gb_s=gb_s, roofline_pct=100 * gb_s / copy_gb_s,
                   gexp_s=row["exp_evals"] / seconds / 1e9 if row["exp_evals"] else None)
    return out


def compare_with_ref(outputs: tuple, inputs: dict, dy: torch.Tensor | None, dtype: torch.dtype,
                     device: torch.device) -> tuple[float, str]:
    """(max abs error, '' or why it fails) of a backend's outputs against the reference's
    on the same inputs, within `estm_ref.scan.parity.tolerance` of the dtype."""
    from estm_ref.scan.parity import tolerance

    expected = workload(selective_scan_ref, inputs, dy)()
    names = ("y",) + tuple(f"d{k}" for k in inputs)[:len(outputs) - 1]
    rtol, atol = tolerance(dtype, device)
    worst, failures = 0.0, []
    for name, got, want in zip(names, outputs, expected):
        got, want = got.float(), want.float()
        err = (got - want).abs()
        worst = max(worst, err.max().item())
        if not torch.isfinite(got).all() or bool((err > atol + rtol * want.abs()).any()):
            failures.append(f"{name} (max abs err {err.max().item():.3g})")
    if failures:
        return worst, (f"does not match the reference (rtol {rtol}, atol {atol}): "
                       + ", ".join(failures))
    return worst, ""


# ----------------------------------------------------------------------------- the grid


def plan(backends: list[Backend], shapes: list[Shape], dtypes: list[str]):
    """(backend, shape, dtype, pass) in run order: backend by backend, so that a time
    budget cuts the slowest (compiled, last) rows first; the smoke backend on its shape only,
    a backend that cannot run once, with shape, dtype and pass None."""
    for backend in backends:
        if backend.scan is None:  # one row that says why
            yield backend, None, None, None
            continue
        if backend.smoke:
            yield from ((backend, SMOKE_SHAPE, "float32", p) for p in PASSES)
            continue
        for shape in shapes:
            for dtype in dtypes:
                for pass_ in PASSES:
                    yield backend, shape, dtype, pass_


def add_speedups(rows: list[dict]) -> None:
    def key(r):
        return r.get("pass"), r.get("dtype"), r.get("batch"), r.get("dim"), r.get("L"), r.get("N")

    ref = {key(r): r["ms"] for r in rows if r["backend"] == "ref" and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and key(r) in ref:
            r["speedup_vs_ref"] = ref[key(r)] / r["ms"]


def run_benchmark(backends: list[str], shapes: list[Shape], dtypes: list[str],
                  device: torch.device, opts: Options, progress: bool = True,
                  on_row: Callable[[list[dict]], None] | None = None,
                  copy_bytes: int | None = None) -> tuple[list[dict], float]:
    """Run the grid; returns (rows, copy GB/s). on_row(rows) is called after every row;
    copy_bytes sizes the copy-bandwidth buffers (default: past the device's caches)."""
    from tqdm.auto import tqdm

    loaded = [load_backend(name, device) for name in backends]
    for b in loaded:
        if b.scan is None:
            log.warning("backend %s skipped: %s", b.name, b.reason)
        elif b.smoke:
            log.info("backend %s: one smoke row on %s (not a performance number)", b.name, SMOKE_SHAPE)
    copy_gb_s = copy_bandwidth(device, copy_bytes)
    start = time.perf_counter()
    rows: list[dict] = []
    todo = list(plan(loaded, shapes, dtypes))
    for backend, shape, dtype, pass_ in tqdm(todo, desc="scan bench", unit="row", disable=not progress):
        if shape is not None and opts.time_budget_s is not None \
                and time.perf_counter() - start > opts.time_budget_s:
            backend = Backend(backend.name, None, f"--time-budget-s {opts.time_budget_s:g} used up")
        rows.append(run_row(backend, shape, dtype, pass_, device, opts, copy_gb_s))
        add_speedups(rows)
        if on_row:
            on_row(rows)
    return rows, copy_gb_s


# ----------------------------------------------------------------------------- output


FORMULAS = """\
- ms: median time of one call (`timing`: do_bench on CUDA, wall-clock median on CPU; `reps` warm calls).
- bytes moved (the least a scan must move; s = bytes per element of the dtype, seq = batch*dim*L,
  bc = batch*N*L, par = 4*(dim*N + 2*dim) for the float32 A, D, delta_bias):
  fwd = s*(4*seq + 2*bc) + par; fwd+bwd = s*(11*seq + 6*bc) + 3*par
  (fwd reads u, delta, z, B, C and the parameters and writes y; the backward also reads dy and
  writes du, ddelta, dz, dB, dC and the parameter gradients). GB/s = bytes / time.
- roofline %: GB/s over the device's copy bandwidth measured in the same run (torch copy,
  bytes read + written).
- exp evaluations: E = batch*dim*L*N per pass of exp(delta*A); fwd+bwd counts what the
  implementation evaluates: triton 3E (forward, chunk recomputation, adjoint), ref 1E
  (autograd reuses exp's output), ref-compile 1E (lower bound), mambapy 1E, mamba-ssm 2E.
- speed-up: ref ms / this ms, same shape, dtype and pass, same run.
- fwd is an inference forward; fwd+bwd is the forward with autograd plus the gradients of
  all eight inputs."""


def markdown_body(rows: list[dict], copy_gb_s: float) -> str:
    headers = ["backend", "pass", "dtype", "batch x dim x L x N", "ms", "GB/s", "% of copy",
               "Gexp/s", "speed-up vs ref", "max err vs ref", "first call s", "status", "note"]
    table = []
    for r in rows:
        shape = f"{r['batch']}x{r['dim']}x{r['L']}x{r['N']}" if r.get("L") else "-"
        table.append([r["backend"], r.get("pass") or "-", r.get("dtype") or "-", shape,
                      fmt(r.get("ms")), fmt(r.get("gb_s")), fmt(r.get("roofline_pct")),
                      fmt(r.get("gexp_s")), fmt(r.get("speedup_vs_ref")),
                      fmt(r.get("max_abs_err_vs_ref"), 2), fmt(r.get("first_call_s")),
                      r["status"], r.get("note") or ""])
    return (f"Copy bandwidth (torch copy, read + write): {copy_gb_s:.1f} GB/s\n\n"
            f"{markdown_table(headers, table)}\n\n## How the columns are computed\n\n{FORMULAS}\n")


def plot(rows: list[dict], path: Path) -> Path | None:
    """Time vs L per backend and dtype (log-log), forward and forward+backward side by side."""
    plt = import_pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, pass_ in zip(axes, PASSES):
        lines: dict[tuple, list[tuple[int, float]]] = {}
        for r in rows:
            if r.get("pass") == pass_ and r["status"] == "ok":
                lines.setdefault((r["backend"], r["dtype"], r["batch"], r["dim"]), []).append((r["L"], r["ms"]))
        for (backend, dtype, batch, dim), points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    label=f"{backend} {dtype} (batch {batch}, dim {dim})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("ms per call")
        ax.set_title(pass_)
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(rows: list[dict], stamp: Stamp, out: Path, quick: bool, copy_gb_s: float,
                  with_plot: bool = True) -> list[Path]:
    stamp = stamp.with_extra(copy_bandwidth=f"{copy_gb_s:.2f} GB/s (torch copy, read + write)")
    paths = [write_csv(result_path(out, "scan", stamp, quick, "csv"), COLUMNS, rows, stamp,
                       notes=FORMULAS.splitlines()),
             write_markdown(result_path(out, "scan", stamp, quick, "md"),
                            "Selective scan benchmark", stamp, markdown_body(rows, copy_gb_s))]
    if with_plot:
        png = plot(rows, result_path(out, "scan", stamp, quick, "png"))
        if png:
            paths.append(png)
    return paths


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/scan.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    add_common_arguments(p)
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma list (default all)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma list of float32, bfloat16, float16")
    p.add_argument("--grid", default="estm,lm", help="estm and/or lm shapes (ignored with --quick)")
    p.add_argument("--ref-max-len", type=int, help="longest L for the reference (default 8192 on "
                   "CUDA, 2048 on CPU; 512 with --quick)")
    p.add_argument("--compile-max-len", type=int, default=32,
                   help="longest L for ref-compile (default 32: ESTM's shapes)")
    p.add_argument("--compile-dtypes", default="float32", help="dtypes of the ref-compile rows")
    p.add_argument("--row-budget-s", type=float, help="time spent repeating one row "
                   "(default 1 on CUDA, 2 on CPU, 0.5 with --quick)")
    p.add_argument("--time-budget-s", type=float,
                   help="after this many seconds the remaining rows are skipped (default no limit)")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    device = resolve_device(args.device)
    dtypes = [d for d in args.dtypes.split(",") if d]
    backends = [b for b in args.backends.split(",") if b]
    for flag, given, known in (("--dtypes", dtypes, DTYPES), ("--backends", backends, BACKENDS),
                               ("--compile-dtypes", args.compile_dtypes.split(","), DTYPES)):
        unknown = [x for x in given if x not in known]
        if unknown:
            raise SystemExit(f"{flag}: unknown {unknown}; choose from {sorted(known)}")
    if args.quick:
        shapes = estm_shapes() + QUICK_EXTRA
    else:
        grids = {"estm": estm_shapes(), "lm": LM_SHAPES}
        bad = [g for g in args.grid.split(",") if g not in grids]
        if bad:
            raise SystemExit(f"--grid: unknown {bad}; choose from {sorted(grids)}")
        shapes = [s for g in args.grid.split(",") for s in grids[g]]
    cuda = device.type == "cuda"
    opts = Options(
        ref_max_len=args.ref_max_len or (512 if args.quick else 8192 if cuda else 2048),
        compile_max_len=args.compile_max_len,
        compile_dtypes=tuple(d for d in args.compile_dtypes.split(",") if d),
        row_budget_s=args.row_budget_s or (0.5 if args.quick else 1.0 if cuda else 2.0),
        time_budget_s=args.time_budget_s)
    stamp = Stamp.collect(device)
    log.info("scan benchmark on %s (%s), %d shapes, dtypes %s", stamp.device, device,
             len(shapes), ",".join(dtypes))

    def checkpoint(rows):  # a run stopped by a timeout still leaves its finished rows
        write_csv(result_path(args.out, "scan", stamp, args.quick, "csv"), COLUMNS, rows, stamp,
                  notes=["partial: the run has not finished"])

    start = time.perf_counter()
    rows, copy_gb_s = run_benchmark(backends, shapes, dtypes, device, opts,
                                    progress=not args.quiet, on_row=checkpoint)
    paths = write_results(rows, stamp, args.out, args.quick, copy_gb_s, with_plot=not args.no_plot)
    print(markdown_body(rows, copy_gb_s))
    for path in paths:
        print(f"wrote {path}")
    print(f"total {time.perf_counter() - start:.0f} s")
    errors = [r for r in rows if r["status"] == "error"]
    if errors:
        log.error("%d row(s) failed; see the note column", len(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
