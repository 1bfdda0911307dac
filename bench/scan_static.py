"""Static performance record of the Triton scan: what the compiler makes of it, no GPU needed.

    python bench/scan_static.py [--out DIR] [--label NAME] [--json]

For every kernel launch of a forward and of a forward + backward at batch 8 x dim 1536 x
L 2048 (a language model's Mamba layer) with N = 16, 64 and 256, in float32 and bfloat16,
compiled for sm_80 and sm_90 through Triton's own pipeline (PTX, then ptxas to a cubin):

- registers and spill bytes (ptxas -v), shared memory, and blocks per SM that the
  registers and the shared memory allow (65,536 registers, 228 / 164 KiB shared per SM);
- the steady-state loop (the longest innermost loop: label to back edge, which the compiler
  may have unrolled): its PTX instructions per thread, and per (d, n, t) state element.
  Each loop evaluates exactly one `exp` (`ex2`) per state element it handles (the forward
  for the pairs, the backward for its recompute), so instructions per element =
  instructions / ex2 in the loop, and states_per_trip = the state indices n one trip of
  the loop covers (ex2 x threads / (BLOCK_D x BLOCK_L));
- programs per launch;
- bytes per call (`bench/scan_cost.kernel_bytes`: every tensor a launch reads or writes
  once, plus the reduction of partial sums) against the cost model's floor
  (`bench/scan_cost.bytes_moved`).

Counting PTX, not SASS: ptxas schedules and may fold a few instructions, so these are
close to, not exactly, what the GPU issues. Writes scan-static[-LABEL].csv / .md under
--out (default bench/results). Runs without TRITON_INTERPRET (the interpreter never
meets the compiler); the kernel package is imported from PYTHONPATH, so an older copy of
it can be measured by putting it first there (--label names the result).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/scan_static.py`: import from this tree
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: see --label

os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # read by Triton's compiler when it runs ptxas

import torch  # noqa: E402

from bench.scan_cost import Shape, bytes_moved, kernel_bytes, kernel_launches  # noqa: E402

ARCHS = (80, 90)
TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
SHARED_PER_SM = {80: 164 * 1024, 90: 228 * 1024}
REGISTERS_PER_SM, MAX_BLOCKS_PER_SM = 65536, 32
SM_COUNT = 132  # an H100 / H200 SXM: the channel block is chosen as it would be there
SHAPES = [Shape(8, 1536, 2048, N) for N in (16, 64, 256)]
COLUMNS = ["pass", "kernel", "N", "dtype", "arch", "block_d", "block_l", "block_n", "warps", "programs",
           "registers", "spill_bytes", "shared_bytes", "blocks_per_sm", "loop_instructions",
           "instructions_per_element", "states_per_trip", "bytes", "floor_bytes", "bytes_over_floor"]
LABEL = re.compile(r"^\s*(\$L__\w+):", re.M)
BRANCH = re.compile(r"^\s*(?:@!?%p\d+\s+)?bra(?:\.uni)?\s+(\$L__\w+);", re.M)


def source(launch):
    """An ASTSource specialised like the JIT at launch time."""
    import triton

    hint = [["tt.divisibility", 16]]
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(launch.kernel.arg_names):
        if name in launch.meta:
            signature[name], constexprs[name] = "constexpr", launch.meta[name]
            continue
        value = launch.args[name]
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + TYPES[value.dtype]
            attrs[(i,)] = hint  # torch allocations are 16-byte aligned
        else:
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = hint
    return triton.compiler.ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs,
                                     attrs=attrs)


PTXAS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads.*?Used (\d+) registers", re.S)


def compile_one(launch, arch: int) -> dict:
    """Compile for sm_<arch>: registers and spill bytes from ptxas's report, the PTX."""
    import triton
    from triton.backends.compiler import GPUTarget

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        kernel = triton.compile(source(launch), target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": launch.num_warps})
    found = PTXAS.search(log.getvalue())
    if not kernel.asm.get("cubin") or found is None:
        raise RuntimeError(f"no cubin or no ptxas report for sm_{arch} (a cached kernel skips ptxas: "
                           f"use a fresh TRITON_CACHE_DIR); output was: {log.getvalue()[-500:]!r}")
    stores, loads, registers = map(int, found.groups())
    return {"registers": registers, "spill_stores": stores, "spill_loads": loads,
            "shared_bytes": kernel.metadata.shared, "ptx": kernel.asm["ptx"]}


def steady_loop(ptx: str) -> list[str]:
    """The instructions of the longest innermost loop (label ... back-edge branch to it, with
    no other back edge inside): the loop the kernel spends its time in."""
    lines = ptx.splitlines()
    where = {m.group(1): i for i, line in enumerate(lines) for m in [LABEL.match(line)] if m}
    loops = [(where[m.group(1)], i) for i, line in enumerate(lines) for m in [BRANCH.match(line)]
             if m and m.group(1) in where and where[m.group(1)] < i]
    best: list[str] = []
    for start, end in loops:
        if any(start < s and e < end for s, e in loops):
            continue  # an outer loop
        if any(s == start and e > end for s, e in loops):
            continue  # another back edge of a longer loop with the same header: not a loop of its own
        body = [s.strip() for s in lines[start + 1: end + 1]]
        body = [s for s in body if s.endswith(";") and not s.startswith(("//", ".", "$"))]
        if len(body) > len(best):
            best = body
    return best


def blocks_per_sm(registers: int, warps: int, shared: int, arch: int) -> int:
    per_warp = math.ceil(registers * 32 / 256) * 256  # registers are allocated per warp in 256s
    by_registers = REGISTERS_PER_SM // (per_warp * warps)
    by_shared = SHARED_PER_SM[arch] // shared if shared else MAX_BLOCKS_PER_SM
    return min(by_registers, by_shared, MAX_BLOCKS_PER_SM)


def measure() -> list[dict]:
    import triton

    from triton_kernels.selective_scan import INTERPRETED

    if INTERPRETED:
        raise SystemExit("TRITON_INTERPRET=1 is set: unset it, the interpreter does not compile")

    rows = []
    for shape in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for pass_ in ("fwd", "fwd+bwd"):
                launches = kernel_launches(shape, dtype, pass_, SM_COUNT)
                total, floor = kernel_bytes(shape, dtype, pass_, SM_COUNT), bytes_moved(shape, dtype, pass_)
                for launch in launches:
                    name = launch.kernel.fn.__name__.removeprefix("_selective_scan_").removesuffix("_kernel")
                    if launch.meta.get("STORE_TILE_STATES"):
                        name += " (saving tile states)"
                    m = launch.meta
                    for arch in ARCHS:
                        compiled = compile_one(launch, arch)
                        loop = steady_loop(compiled["ptx"])
                        ex2 = sum(line.startswith("ex2") for line in loop)
                        threads = 32 * launch.num_warps
                        rows.append({
                            "pass": pass_, "kernel": name, "N": shape.N, "dtype": TYPES[dtype],
                            "arch": f"sm_{arch}", "block_d": m["BLOCK_D"], "block_l": m["BLOCK_L"],
                            "block_n": m["BLOCK_N"], "warps": launch.num_warps,
                            "programs": math.prod(launch.grid),
                            "registers": compiled["registers"],
                            "spill_bytes": compiled["spill_stores"] + compiled["spill_loads"],
                            "shared_bytes": compiled["shared_bytes"],
                            "blocks_per_sm": blocks_per_sm(compiled["registers"], launch.num_warps,
                                                           compiled["shared_bytes"], arch),
                            "loop_instructions": len(loop),
                            "instructions_per_element": round(len(loop) / max(1, ex2), 1),
                            "states_per_trip": ex2 * threads // (m["BLOCK_D"] * m["BLOCK_L"]),
                            "bytes": total, "floor_bytes": floor,
                            "bytes_over_floor": round(total / floor, 2)})
    return rows, triton.__version__


def write(rows: list[dict], version: str, out: Path, label: str) -> list[Path]:
    from bench.common import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    stem = "scan-static" + (f"-{label}" if label else "")
    stamp = (f"triton {version}, torch {torch.__version__}, compiled without a GPU; command: "
             f"python bench/scan_static.py{' --label ' + label if label else ''}")
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    lines = [f"# {stamp}", ",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    table = markdown_table(COLUMNS, [[str(r[c]) for c in COLUMNS] for r in rows])
    md_path.write_text(f"# Static record of the scan kernels{' (' + label + ')' if label else ''}\n\n"
                       f"{stamp}. Shape 8 x 1536 x 2048 x N, every optional input present but the "
                       f"initial state; instructions are PTX of the steady-state loop per (d, n, t) "
                       f"element (instructions / ex2 in the loop); bytes are per call (every tensor touched once, plus partial-sum "
                       f"reductions) against the cost model's floor.\n\n{table}\n")
    return [csv_path, md_path]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--label", default="", help="suffix of the result files (e.g. the kernel version)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON, write nothing")
    args = p.parse_args(argv)
    rows, version = measure()
    if args.json:
        print(json.dumps(rows))
        return 0
    for path in write(rows, version, args.out, args.label):
        print(f"wrote {path}")
    return 1 if any(r["spill_bytes"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
