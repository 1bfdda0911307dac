"""Registers and spills of the Triton scan kernels, compiled ahead of time without a GPU.

    python bench/scan_registers.py [--out DIR] [--json]

Compiles the forward and the backward kernel of every pinned launch configuration
(`triton_kernels.selective_scan.CONFIGS`, in float32 and bfloat16, with every optional
input present: the most registers) for sm_80 and sm_90 through Triton's own pipeline (PTX, then ptxas to a
cubin), and reads registers and spill bytes from ptxas's `-v` report, which Triton prints
when TRITON_DUMP_PTXAS_LOG=1. Writes scan-registers.csv / .md under --out (default
bench/results), stamped with the Triton version; `--json` prints the rows instead.
The arguments are specialised as Triton's JIT does at launch: pointers and integers
divisible by 16 carry a divisibility hint.

Runs in a process without TRITON_INTERPRET (the interpreter never meets the compiler).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/scan_registers.py`: import from this tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # read by Triton's compiler when it runs ptxas

import torch  # noqa: E402

COLUMNS = ["kernel", "arch", "block_d", "block_l", "num_warps", "block_n", "dtype", "registers", "spill_stores", "spill_loads", "shared_bytes"]
ARCHS = (80, 90)
TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def variants():
    """(config, N, dtype): every pinned configuration at the largest N it serves (its
    BLOCK_N), in float32 and in bfloat16 (the training dtype)."""
    from triton_kernels.selective_scan import CONFIGS

    return [(config, max_N, dtype) for config, _, max_N in CONFIGS
            for dtype in (torch.float32, torch.bfloat16)]


def launches(config, N: int, dtype: torch.dtype):
    """The forward and backward launch plans of one variant, on `meta` tensors (no data)."""
    from triton_kernels import selective_scan as ss

    batch, dim, L = 2, 8 * config.block_d, 4 * config.block_l
    m = dict(device="meta")
    x = dict(u=torch.empty(batch, dim, L, dtype=dtype, **m), delta=torch.empty(batch, dim, L, dtype=dtype, **m),
             A=torch.empty(dim, N, **m), B=torch.empty(batch, 1, N, L, dtype=dtype, **m),
             C=torch.empty(batch, 1, N, L, dtype=dtype, **m), D=torch.empty(dim, **m),
             z=torch.empty(batch, dim, L, dtype=dtype, **m), delta_bias=torch.empty(dim, **m))
    options = ss.LaunchOptions(config)
    fwd = ss.fwd_launch(**x, initial_state=torch.empty(batch, dim, N, **m), delta_softplus=True,
                        store_tile_states=True, options=options)
    bwd = ss.bwd_launch(**x, tile_states=fwd.outputs["tile_states"], dy=torch.empty_like(x["u"]),
                        dlast_state=torch.empty(batch, dim, N, **m), delta_softplus=True,
                        use_initial_state=True, options=options)
    return {"fwd": fwd, "bwd": bwd}


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
    """Compile for sm_<arch>; registers and spill bytes from ptxas's report."""
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
            "shared_bytes": kernel.metadata.shared}


def measure() -> list[dict]:
    from triton_kernels.selective_scan import INTERPRETED

    if INTERPRETED:
        raise SystemExit("TRITON_INTERPRET=1 is set: unset it, the interpreter does not compile")
    rows = []
    for config, N, dtype in variants():
        for name, launch in launches(config, N, dtype).items():
            for arch in ARCHS:
                rows.append({"kernel": name, "arch": f"sm_{arch}", "block_d": config.block_d,
                             "block_l": config.block_l, "num_warps": config.num_warps,
                             "block_n": config.block_n, "dtype": TYPES[dtype],
                             **compile_one(launch, arch)})
    return rows


def write(rows: list[dict], out: Path) -> list[Path]:
    import triton

    from bench.common import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    stamp = f"triton {triton.__version__}, torch {torch.__version__}, compiled without a GPU"
    csv_path, md_path = out / "scan-registers.csv", out / "scan-registers.md"
    lines = [f"# {stamp}", ",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    table = markdown_table(COLUMNS, [[str(r[c]) for c in COLUMNS] for r in rows])
    md_path.write_text(f"# Registers and spills of the scan kernels\n\n{stamp}; every optional input "
                       f"present (D, z, delta_bias + softplus, initial state, dlast_state).\n\n{table}\n")
    return [csv_path, md_path]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--json", action="store_true", help="print the rows as JSON, write nothing")
    args = p.parse_args(argv)
    rows = measure()
    if args.json:
        print(json.dumps(rows))
        return 0
    for path in write(rows, args.out):
        print(f"wrote {path}")
    spilled = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    return 1 if spilled else 0


if __name__ == "__main__":
    sys.exit(main())
