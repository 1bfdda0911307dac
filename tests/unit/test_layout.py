"""The folder listing is the architecture: imports run one way, with no circle anywhere.

Layers, lowest first (a module imports only from lower layers or from its own package):

    errors                     the project's error types
    config, runtime, processes typed config; device, autocast, distributed; worker processes;
    gaussian                   the Ledoit-Wolf Gaussian of the baseline and the scorer
    triton_kernels             the kernel on its own: nothing from estm_ref
    scan                       reference, parity harness, backend choice
    data, synth, model         data on disk, the synthetic generator, the network
    baselines                  detectors that are not ESTM (autoencoder, statistics)
    pipeline                   train, score, test, demo, ablation
    cli                        argparse -> one call into the pipeline
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [("errors",), ("config", "runtime", "processes", "gaussian"), ("triton_kernels",),
          ("scan",), ("data", "synth", "model"), ("baselines",), ("pipeline",), ("cli",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("estm_ref", "triton_kernels"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _unit(module: str) -> str | None:
    """The layer a module belongs to, or None for the package roots (estm_ref, __main__)."""
    parts = module.split(".")
    if parts[0] == "triton_kernels":
        return "triton_kernels"
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def _imports(path: Path, module: str) -> set[str]:
    """Every project module `module` imports, at any depth in the file (lazy imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + [node.module])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m.split(".")[0] in ("estm_ref", "triton_kernels")}


MODULES = _modules()
GRAPH = {m: {i for i in _imports(p, m) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_every_module_sits_in_a_known_layer():
    roots = {"estm_ref", "estm_ref.__main__", "triton_kernels"}
    assert {m for m in MODULES if _unit(m) is None} <= roots


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downward_only(module):
    unit = _unit(module)
    if unit is None:
        return
    for target in GRAPH[module]:
        other = _unit(target)
        if other == unit:
            continue
        assert other is not None and RANK[other] < RANK[unit], \
            f"{module} ({unit}) imports {target} ({other}): imports must run downward"


def test_triton_kernels_import_nothing_of_estm_ref():
    for module, path in MODULES.items():
        if module.startswith("triton_kernels"):
            assert not any(i.startswith("estm_ref") for i in _imports(path, module)), module


def test_no_import_circle():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(path + [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_no_source_file_over_the_limit():
    long = []
    for folder in ("estm_ref", "triton_kernels", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, f"files over {MAX_LINES} lines: {long}"


def _is_triton_jit(node: ast.AST) -> bool:
    return any(ast.unparse(d).split("(")[0] in ("triton.jit", "jit") for d in node.decorator_list)


def test_no_function_over_the_limit():
    """A function longer than MAX_FUNCTION_LINES (from `def` to its last line) does two
    things; Triton kernels are exempt, since a kernel is one fused loop by design."""
    long = []
    for folder in ("estm_ref", "triton_kernels", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                        and not _is_triton_jit(node):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n}")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
