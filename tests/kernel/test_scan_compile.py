"""The Triton kernels compile for real GPUs, ahead of time and without a device.

Under TRITON_INTERPRET=1 `@triton.jit` returns an interpreted function that never meets
the compiler, so the interpreter parity tests say nothing about GPU compilation. This
test runs a fresh Python without TRITON_INTERPRET, plans each launch exactly as
`selective_scan_fn` would (tensors on the `meta` device: shapes and dtypes, no data),
specialises the arguments the way Triton's JIT does at launch (ints equal to 1 become
constants, 16-divisible ints and pointers get divisibility hints) and compiles through
PTX to a cubin for sm_90 and sm_80. It also checks that CPU tensors without the
interpreter are refused with a clear error.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, sys
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget

result = {"variants": {}}

@triton.jit
def _probe(x, y, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y + o, tl.load(x + o, mask=o < n), mask=o < n)

try:
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.nvidia.compiler import CUDABackend
    triton.compile(triton.compiler.ASTSource(
        fn=_probe, signature={"x": "*fp32", "y": "*fp32", "n": "i32", "BLOCK": "constexpr"},
        constexprs={"BLOCK": 64}), target=GPUTarget("cuda", 90, 32))
except Exception as e:  # reported to the test, which skips with this reason
    print(json.dumps({"skip": f"{type(e).__name__}: {e}"}))
    sys.exit(0)

from triton_kernels import selective_scan as ss


def compile_launch(launch, arch):
    """Specialise like triton.runtime.jit at launch time, then compile to a cubin."""
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(launch.kernel.arg_names):
        if name in launch.meta:
            signature[name], constexprs[name] = "constexpr", launch.meta[name]
            continue
        ty, attr = native_specialize_impl(CUDABackend, launch.args[name], False, True, True)
        signature[name] = ty
        if ty == "constexpr":
            constexprs[name] = attr
        elif isinstance(attr, str):
            attrs[(i,)] = CUDABackend.parse_attr(attr)
    src = triton.compiler.ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": launch.num_warps})
    return {"cubin_bytes": len(k.asm["cubin"]), "num_warps": launch.num_warps,
            "shared": k.metadata.shared, "meta": {k_: v for k_, v in launch.meta.items()}}


def meta_inputs(batch, dim, L, N, G, dtype, delta_dtype, bc_dtype, has_D, has_z, has_bias, has_h0):
    m = dict(device="meta")
    return dict(
        u=torch.empty(batch, dim, L, dtype=dtype, **m),
        delta=torch.empty(batch, dim, L, dtype=delta_dtype, **m),
        A=torch.empty(dim, N, **m),
        B=torch.empty(batch, G, N, L, dtype=bc_dtype, **m),
        C=torch.empty(batch, G, N, L, dtype=bc_dtype, **m),
        D=torch.empty(dim, **m) if has_D else None,
        z=torch.empty(batch, dim, L, dtype=dtype, **m) if has_z else None,
        delta_bias=torch.empty(dim, **m) if has_bias else None,
        initial_state=torch.empty(batch, dim, N, **m) if has_h0 else None,
    )


f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
ALL, NONE = (True,) * 4, (False,) * 4
VARIANTS = {
    # name: (batch, dim, L, N, G, dtype, delta_dtype, bc_dtype, (D, z, bias, h0), softplus, arch)
    "fp32-all-sm90": (2, 512, 4096, 16, 1, f32, f32, f32, ALL, True, 90),
    "fp32-all-sm80": (2, 512, 4096, 16, 1, f32, f32, f32, ALL, True, 80),
    "bf16-all-grouped-sm90": (2, 256, 1000, 16, 4, bf16, bf16, bf16, ALL, True, 90),
    "bf16-none-sm90": (3, 96, 333, 16, 1, bf16, bf16, bf16, NONE, False, 90),
    "bf16-none-sm80": (3, 96, 333, 16, 1, bf16, bf16, bf16, NONE, False, 80),
    "fp16-z-only-sm90": (1, 64, 1, 4, 1, f16, f16, f16, (False, True, False, False), False, 90),
    "mixed-dtypes-sm90": (2, 48, 100, 8, 2, f16, f32, bf16, (True, False, True, True), True, 90),
    "N1-sm90": (1, 7, 33, 1, 1, f32, f32, f32, ALL, True, 90),
    "N256-shared-slots-sm90": (1, 64, 300, 256, 1, bf16, bf16, bf16, ALL, True, 90),
}
for name, (batch, dim, L, N, G, dt, ddt, bct, flags, softplus, arch) in VARIANTS.items():
    x = meta_inputs(batch, dim, L, N, G, dt, ddt, bct, *flags)
    opts = ss.LaunchOptions()
    entry = {}
    try:
        fwd = ss.fwd_launch(**x, delta_softplus=softplus, store_chunk_states=True, opts=opts)
        entry["fwd"] = compile_launch(fwd, arch)
        bwd = ss.bwd_launch(**{k: x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")},
                            chunk_states=fwd.outputs["chunk_states"], dy=torch.empty_like(x["u"]),
                            dlast_state=torch.empty(batch, dim, N, device="meta"),
                            delta_softplus=softplus, use_initial_state=flags[3], opts=opts)
        entry["bwd"] = compile_launch(bwd, arch)
        entry["ok"] = True
    except Exception as e:  # one variant's failure must not hide the others'
        entry.update(ok=False, error=f"{type(e).__name__}: {e}")
    result["variants"][name] = entry

# without the interpreter, CPU tensors must be refused, not silently sent elsewhere
u = torch.zeros(1, 2, 3)
try:
    ss.selective_scan_fn(u, u, torch.zeros(2, 2), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    result["cpu_error"] = None
except ValueError as e:
    result["cpu_error"] = str(e)
result["interpreted"] = ss.INTERPRETED
result["triton"] = triton.__version__
print(json.dumps(result))
'''

VARIANT_NAMES = ["fp32-all-sm90", "fp32-all-sm80", "bf16-all-grouped-sm90", "bf16-none-sm90", "bf16-none-sm80",
                 "fp16-z-only-sm90", "mixed-dtypes-sm90", "N1-sm90", "N256-shared-slots-sm90"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aot")
    script = tmp / "compile_scan_kernels.py"  # a file: @triton.jit needs the source of its functions
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp / "triton-cache")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(f"the Triton CUDA compiler backend is not usable here: {result['skip']}")
    return result


def test_kernel_module_is_compiled_not_interpreted(compiled):
    assert compiled["interpreted"] is False


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_forward_and_backward_compile_to_cubin(compiled, name):
    entry = compiled["variants"][name]
    assert entry["ok"], entry.get("error")
    for kernel in ("fwd", "bwd"):
        assert entry[kernel]["cubin_bytes"] > 0


def test_cpu_tensors_without_interpreter_are_refused(compiled):
    message = compiled["cpu_error"]
    assert message is not None, "selective_scan_fn ran on CPU tensors without the interpreter"
    assert message.startswith("u ") and "TRITON_INTERPRET=1" in message and "backend='ref'" in message
