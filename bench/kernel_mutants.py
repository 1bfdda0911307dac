"""How many single-operator mutants of the Triton scan kernels the kernel tests kill.

    python bench/kernel_mutants.py [--mutants 20] [--seed 0] [--out DIR]

Each mutant changes one operator in `triton_kernels/scan_fwd.py` or `scan_bwd.py` (a
binary operator + - * / swapped for another, a comparison < <= == swapped for a
neighbour, or a float constant scaled), chosen at random among all such sites inside
`@triton.jit` functions. The mutant is written into a copy of the source tree, and the
kernel tests (`tests/kernel/test_scan_parity.py` and `test_scan_kernel.py`, without the
slow and gpu marks, under the Triton interpreter) run there; a mutant is killed when they
fail. A mutant the tests cannot see (the same results, e.g. `x * 1.0` for `x / 1.0`) counts
as a survivor: read the list, not only the rate. Writes kernel-mutants.md under --out
(default bench/results).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("triton_kernels/scan_fwd.py", "triton_kernels/scan_bwd.py")
BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
COMPARES = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Gt: ast.GtE,
            ast.GtE: ast.Gt}
TESTS = ["tests/kernel/test_scan_parity.py", "tests/kernel/test_scan_kernel.py"]


def _jit_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Attribute) and d.attr == "jit" for d in node.decorator_list):
            yield node


def sites(path: Path) -> list[tuple[int, int, str]]:
    """(line, column, kind) of every mutable operator inside a jit function."""
    found = []
    for fn in _jit_functions(ast.parse(path.read_text())):
        for node in ast.walk(fn):
            if isinstance(node, ast.BinOp) and isinstance(node.op, BINOPS):
                found.append((node.lineno, node.col_offset, "binop"))
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARES:
                found.append((node.lineno, node.col_offset, "compare"))
            elif isinstance(node, ast.Constant) and isinstance(node.value, float):
                found.append((node.lineno, node.col_offset, "constant"))
    return found


class _Mutate(ast.NodeTransformer):
    def __init__(self, site, rng: random.Random):
        self.site, self.rng, self.what = site, rng, None

    def _here(self, node) -> bool:
        return (node.lineno, node.col_offset) == self.site[:2]

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if self._here(node) and self.site[2] == "binop" and isinstance(node.op, BINOPS):
            new = self.rng.choice([op for op in BINOPS if not isinstance(node.op, op)])
            self.what = f"{type(node.op).__name__} -> {new.__name__}"
            node.op = new()
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if self._here(node) and self.site[2] == "compare":
            old = type(node.ops[0])
            self.what = f"{old.__name__} -> {COMPARES[old].__name__}"
            node.ops = [COMPARES[old]()]
        return node

    def visit_Constant(self, node):
        if self._here(node) and self.site[2] == "constant" and isinstance(node.value, float):
            self.what = f"{node.value!r} -> {node.value * 1.5 + 0.5!r}"
            return ast.copy_location(ast.Constant(node.value * 1.5 + 0.5), node)
        return node


def mutate(source: str, site, rng: random.Random) -> tuple[str, str]:
    """The source with the operator at `site` changed, and what changed."""
    tree = ast.parse(source)
    mutator = _Mutate(site, rng)
    tree = mutator.visit(tree)
    return ast.unparse(tree), mutator.what


def run_tests(tree: Path, timeout_s: int) -> tuple[bool, str]:
    """(killed, reason) for the tree's kernel tests."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow and not gpu",
           *TESTS]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the mutated copy before any installed one
    try:
        done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return True, f"timed out after {timeout_s} s"
    if done.returncode == 0:
        return False, "tests pass"
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return True, (failed[0] if failed else f"pytest exit {done.returncode}")[:120]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutants", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=int, default=600, help="per mutant")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    all_sites = [(f, s) for f in FILES for s in sites(ROOT / f)]
    chosen = rng.sample(all_sites, min(args.mutants, len(all_sites)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", ".ci-venv", "*.egg-info",
                                                                  "__pycache__", "bench"))
        killed_unmutated, reason = run_tests(tree, args.timeout_s)
        if killed_unmutated:  # every mutant would count as killed
            raise SystemExit(f"the kernel tests fail on the unmutated copy: {reason}")
        for i, (rel, site) in enumerate(chosen, 1):
            original = (ROOT / rel).read_text()
            source, what = mutate(original, site, rng)
            (tree / rel).write_text(source)
            start = time.perf_counter()
            killed, reason = run_tests(tree, args.timeout_s)
            (tree / rel).write_text(original)
            rows.append((rel, site[0], what, killed, reason))
            print(f"[{i}/{len(chosen)}] {rel}:{site[0]} {what}: {'killed' if killed else 'SURVIVED'} "
                  f"({time.perf_counter() - start:.0f} s) {reason}", flush=True)
    killed = sum(r[3] for r in rows)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Kernel mutants: {killed} of {len(rows)} killed ({100 * killed / max(1, len(rows)):.0f} %)", "",
             f"Command: `python bench/kernel_mutants.py --mutants {args.mutants} --seed {args.seed}`; "
             f"{len(all_sites)} mutable sites in {', '.join(FILES)}; tests: {' '.join(TESTS)} "
             "(not slow, not gpu; Triton interpreter).", "",
             "| file | line | mutation | killed | by |", "|---|---:|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {'yes' if r[3] else 'no'} | {r[4].replace('|', '/')} |" for r in rows]
    (args.out / "kernel-mutants.md").write_text("\n".join(lines) + "\n")
    print(f"{killed} of {len(rows)} mutants killed; wrote {args.out / 'kernel-mutants.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
