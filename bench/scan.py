"""Selective-scan benchmark: forward and forward+backward time of every available backend.

    python bench/scan.py [--quick] [--out DIR] [--device cuda]     (every flag: docs/benchmarks.md)

Backends (`bench/scan_backends.py`): triton, ref, ref-compile, mambapy, mamba-ssm. One that
cannot run gets a `skipped` row with the reason; nothing falls back to another backend.
On CPU the Triton kernel runs only as one `triton-interpreter` smoke row.

Inputs are those of a Mamba block: u, delta, z (batch, dim, L) and B, C (batch, N, L) in
the row's dtype, A = -(1..N) for every channel, D = 1 and delta_bias (dim,) in float32,
delta_softplus=True. "fwd" is an inference forward (no autograd graph); "fwd+bwd" is the
forward with autograd plus `torch.autograd.grad` of all eight inputs for a random dy.
Every row of a backend other than ref is compared with the reference on the same inputs
(when the reference fits) by the parity harness (`estm_ref.scan.parity.compare`, with its
tolerances): a backend that computes something else is an error, not a timed success.

Columns: ms (median, see bench/common.py), bytes (`scan_cost.bytes_moved`, the floor),
gb_s = bytes / time, copy_gb_s (a torch copy on the same device in the same run),
roofline_pct = 100 * gb_s / copy_gb_s, exp_evals (`scan_cost.exp_evaluations`), gexp_s,
speedup_vs_ref (same shape, dtype and pass, same run), and on CUDA the cost model's
bound (`scan_cost`: the floor bytes at the measured copy bandwidth, the backend's exps at
the device's datasheet special-function rate): model_us, model_limit (memory or exp) and
pct_of_model = 100 * bound / time.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as `python bench/scan.py`: import from this source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import (Stamp, Timing, add_common_arguments, available_memory, copy_bandwidth,
                          fmt, free_device_memory, import_pyplot, markdown_table, resolve_device,
                          result_path, setup_logging, time_call, write_csv, write_markdown)
from bench.scan_backends import (BACKENDS, REF, Backend, load_backend, make_inputs, memory_estimate,
                                 workload)
from bench.scan_cost import (EXP_PER_PASS, LM_SHAPES, Shape, bound, bytes_moved, device_model,
                             estm_shapes, exp_evaluations)
from estm_ref.scan.parity import compare, tolerance

log = logging.getLogger("bench.scan")

PASSES = ("fwd", "fwd+bwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COLUMNS = ["backend", "pass", "dtype", "batch", "dim", "L", "N", "status", "ms", "timing",
           "reps", "first_call_s", "bytes", "gb_s", "copy_gb_s", "roofline_pct", "exp_evals",
           "gexp_s", "model_us", "model_limit", "pct_of_model", "speedup_vs_ref",
           "max_abs_err_vs_ref", "note"]
QUICK_EXTRA = [Shape(2, 256, 512, 16)]
SMOKE_SHAPE = Shape(1, 8, 16, 4)  # the Triton interpreter row on CPU: small, the interpreter pays per element
MEMORY_FRACTION = 0.7  # of the memory available when a row starts


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
    need = memory_estimate(backend.name, shape, pass_)
    avail = available_memory(device)
    if need and avail is not None and need > MEMORY_FRACTION * avail:
        return (f"needs about {need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available on {device}")
    return None


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
    return {**row, **_derived(row, timing, copy_gb_s, backend.smoke, device), "status": status,
            "max_abs_err_vs_ref": err, "note": note}


def _derived(row: dict, timing: Timing, copy_gb_s: float, smoke: bool, device: torch.device) -> dict:
    seconds = timing.ms * 1e-3
    out = {"ms": timing.ms, "timing": timing.method, "reps": timing.reps,
           "first_call_s": timing.first_call_s}
    if not smoke:
        gb_s = row["bytes"] / seconds / 1e9
        out.update(gb_s=gb_s, roofline_pct=100 * gb_s / copy_gb_s,
                   gexp_s=row["exp_evals"] / seconds / 1e9 if row["exp_evals"] else None)
    if device.type == "cuda" and not smoke:
        model = device_model(torch.cuda.get_device_name(device))
        b = bound(row["bytes"], row["exp_evals"] or 0, copy_gb_s * 1e9, model and model.exp_per_s)
        out.update(model_us=1e6 * b.seconds, model_limit=b.limit, pct_of_model=100 * b.seconds / seconds)
    return out


def compare_with_ref(outputs: tuple, inputs: dict, dy: torch.Tensor | None, dtype: torch.dtype,
                     device: torch.device) -> tuple[float, str]:
    """(max abs error, '' or why it fails): a backend's outputs against the reference's on
    the same inputs, through the parity harness and its tolerance for the dtype."""
    expected = workload(REF.scan, inputs, dy)()
    names = ("y",) + tuple(f"d{k}" for k in inputs)[:len(outputs) - 1]
    rtol, atol = tolerance(dtype, device)
    rows = compare(dict(zip(names, outputs)), dict(zip(names, expected)), rtol, atol)
    worst = max((r.max_abs_err for r in rows if not math.isnan(r.max_abs_err)), default=float("nan"))
    failures = [f"{r.name} (max abs err {r.max_abs_err:.3g}{', ' + r.note if r.note else ''})"
                for r in rows if not r.ok]
    if failures:
        return worst, f"does not match the reference (rtol {rtol}, atol {atol}): " + ", ".join(failures)
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
  fwd = s*(4*seq + 2*bc) + par; fwd+bwd = s*(11*seq + 6*bc) + 3*par. GB/s = bytes / time.
- roofline %: GB/s over the device's copy bandwidth measured in the same run (read + write).
- exp evaluations: E = batch*dim*L*N per pass of exp(delta*A), as each implementation
  evaluates them: triton fwd E, fwd+bwd 2E (the backward recomputes once); ref, ref-compile
  and mambapy 1E; mamba-ssm 2E.
- model us (CUDA only, bench/scan_cost.py): max(bytes / measured copy bandwidth,
  exps / datasheet exp rate of the device); limit says which term; % of model = bound / time.
- speed-up: ref ms / this ms, same shape, dtype and pass, same run."""


def markdown_body(rows: list[dict], copy_gb_s: float) -> str:
    headers = ["backend", "pass", "dtype", "batch x dim x L x N", "ms", "GB/s", "% of copy",
               "Gexp/s", "model us", "limit", "% of model", "speed-up vs ref", "max err vs ref",
               "first call s", "status", "note"]
    table = []
    for r in rows:
        shape = f"{r['batch']}x{r['dim']}x{r['L']}x{r['N']}" if r.get("L") else "-"
        table.append([r["backend"], r.get("pass") or "-", r.get("dtype") or "-", shape,
                      fmt(r.get("ms")), fmt(r.get("gb_s")), fmt(r.get("roofline_pct")),
                      fmt(r.get("gexp_s")), fmt(r.get("model_us")), r.get("model_limit") or "-",
                      fmt(r.get("pct_of_model")), fmt(r.get("speedup_vs_ref")),
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
