"""Cost model of the selective scan: the bytes it must move, the exponentials it must
evaluate, and the time those imply on a GPU.

    python bench/scan_cost.py          (predictions for H100 and H200 at the benchmark shapes)

A scan pass cannot be faster than the larger of
    memory time = bytes moved / memory bandwidth
    exp time    = exponentials / special-function throughput
where the special-function units evaluate 16 exp2 per clock per SM on Hopper and Ampere
(Triton lowers `tl.exp` to one `ex2.approx` and a multiply). This is a lower bound: the
scan's own multiply-adds (the associative scan's combines, the y and gradient sums: several
FP32 instructions per state element per pass, not counted here) and latency are not in it.

Counts, with s = bytes per element of the dtype (u, delta, z, B, C, y and their gradients),
seq = batch*dim*L, bc = batch*N*L, par = 4*(dim*N + 2*dim) (the float32 A, D, delta_bias):

    floor bytes, fwd     = s*(4*seq + 2*bc) + par        read u, delta, z, B, C, A, D, bias; write y
    floor bytes, fwd+bwd = s*(11*seq + 6*bc) + 3*par     the backward also reads dy and writes
                                                          du, ddelta, dz, dB, dC, dA, dD, dbias
    kernel bytes         counted from the kernel's own launch plans (`kernel_bytes`): the
                         floor's tensors, the last state, and with a backward the tile states
                         (4*batch*dim*n_tiles*N, written and read) and the partial sums of
                         dA, dB, dC, dD, dbias (dB, dC: 4*n_dblocks*bc each), written, read
                         back and summed
    exps (E = batch*dim*L*N, the state elements): exp(dt*A) once per state element in the
    forward and once in the backward (recomputed, then used by both scans): fwd E, fwd+bwd 2E;
    plus the softplus (exp, log) and sigmoid per (batch, dim, L): N times fewer.

The device figures are datasheet peaks (HBM bandwidth, SMs, boost clock), not measurements;
`bench/scan.py` uses the copy bandwidth it measures in the same run instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/scan_cost.py`: import from this source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch


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


@dataclass(frozen=True)
class Device:
    name: str
    bandwidth: float  # bytes/s, datasheet HBM peak
    sms: int
    clock_hz: float  # boost clock
    exp_per_clock_per_sm: int = 16

    @property
    def exp_per_s(self) -> float:
        return self.sms * self.exp_per_clock_per_sm * self.clock_hz


DEVICES = {
    "H100": Device("H100 SXM5 80GB", 3.35e12, 132, 1.98e9),
    "H200": Device("H200 SXM 141GB", 4.8e12, 132, 1.98e9),
}


def device_model(name: str) -> Device | None:
    """The datasheet entry whose key appears in a device name such as 'NVIDIA H200'."""
    return next((d for key, d in DEVICES.items() if key in name), None)


# exp(delta * A) evaluations per pass, in units of E = batch*dim*L*N
EXP_PER_PASS = {
    "triton": {"fwd": 1, "fwd+bwd": 2},  # the backward recomputes a = exp(dt A) once per tile
    "ref": {"fwd": 1, "fwd+bwd": 1},  # autograd's backward of exp reuses the saved output
    "ref-compile": {"fwd": 1, "fwd+bwd": 1},  # as written; inductor may recompute
    "mambapy": {"fwd": 1, "fwd+bwd": 1},  # evaluated in torch before pscan, saved
    "mamba-ssm": {"fwd": 1, "fwd+bwd": 2},  # the CUDA backward recomputes exp once per step
}
EXP_PER_PASS["triton-interpreter"] = EXP_PER_PASS["triton"]


def exp_evaluations(backend: str, shape: Shape, pass_: str) -> int:
    """exp(delta * A) evaluations of one call: EXP_PER_PASS[backend][pass] * batch*dim*L*N."""
    return EXP_PER_PASS[backend][pass_] * shape.elements


def bytes_moved(shape: Shape, dtype: torch.dtype, pass_: str) -> int:
    """The floor: each input read once, each output written once (module docstring)."""
    s = torch.empty((), dtype=dtype).element_size()
    seq = shape.batch * shape.dim * shape.L
    bc = shape.batch * shape.N * shape.L
    par = 4 * (shape.dim * shape.N + 2 * shape.dim)
    fwd = s * (4 * seq + 2 * bc) + par
    if pass_ == "fwd":
        return fwd
    return fwd + s * (7 * seq + 4 * bc) + 2 * par


def kernel_launches(shape: Shape, dtype: torch.dtype, pass_: str, sm_count: int | None = None):
    """The kernel's launch plans for a pass (every optional input but the initial state),
    on `meta` tensors: nothing is allocated or run. sm_count: the GPU's multiprocessors,
    which the channel block depends on (None: not narrowed)."""
    from triton_kernels import selective_scan as ss

    m = dict(device="meta")
    b, d, L, N = shape.batch, shape.dim, shape.L, shape.N
    x = dict(u=torch.empty(b, d, L, dtype=dtype, **m), delta=torch.empty(b, d, L, dtype=dtype, **m),
             A=torch.empty(d, N, **m), B=torch.empty(b, 1, N, L, dtype=dtype, **m),
             C=torch.empty(b, 1, N, L, dtype=dtype, **m), D=torch.empty(d, **m),
             z=torch.empty(b, d, L, dtype=dtype, **m), delta_bias=torch.empty(d, **m))
    options = ss.LaunchOptions(ss.choose_config(d, L, N, b, sm_count))
    forward = ss.fwd_launch(**x, initial_state=None, delta_softplus=True,
                            store_tile_states=pass_ == "fwd+bwd", options=options)
    if pass_ == "fwd":
        return [forward]
    return [forward, ss.bwd_launch(**x, tile_states=forward.outputs["tile_states"],
                                   dy=torch.empty_like(x["u"]), dlast_state=None, delta_softplus=True,
                                   use_initial_state=False, options=options)]


def kernel_bytes(shape: Shape, dtype: torch.dtype, pass_: str, sm_count: int | None = None) -> int:
    """What the kernel moves: every tensor its launches read or write, once (B, C, re-read
    by each channel block, hit in L2), plus the reduction of its partial sums (each read
    once, its sum written)."""
    launches = kernel_launches(shape, dtype, pass_, sm_count)
    touched = {id(t): t.nbytes for launch in launches
               for t in [*launch.args.values(), *launch.outputs.values()] if isinstance(t, torch.Tensor)}
    partials = [t for launch in launches for name, t in launch.outputs.items() if name.endswith("_part")]
    return sum(touched.values()) + sum(t.nbytes + t.nbytes // t.shape[0] for t in partials)


@dataclass(frozen=True)
class Bound:
    memory_s: float
    exp_s: float | None

    @property
    def seconds(self) -> float:
        return max(self.memory_s, self.exp_s or 0.0)

    @property
    def limit(self) -> str:
        return "exp" if self.exp_s is not None and self.exp_s > self.memory_s else "memory"


def bound(n_bytes: int, n_exps: int, bandwidth: float, exp_per_s: float | None) -> Bound:
    """The cost model's lower bound for moving n_bytes and evaluating n_exps."""
    return Bound(n_bytes / bandwidth, n_exps / exp_per_s if exp_per_s else None)


def estm_shapes() -> list[Shape]:
    """ESTM's scans at the default config: batch 128, d_inner 256, N 16, and the two
    sequence lengths, n_time_patches + 1 = 13 (TMamba) and n_freq_patches + 1 = 17 (SMamba)."""
    from estm_ref.config import Config

    cfg = Config()
    m = cfg.model
    return [Shape(cfg.train.batch_size, m.d_inner, n + 1, m.d_state)
            for n in (m.n_time_patches, m.n_freq_patches)]


# language-model scans: Mamba-130M's d_inner, long sequences
# a language model's Mamba layer (d_inner 1536), and one sequence of it at inference
LM_SHAPES = [Shape(8, 1536, L, 16) for L in (512, 1024, 2048, 4096, 8192)] + [Shape(1, 1536, 2048, 16)]


def prediction_rows(shapes: list[Shape], dtypes=(torch.bfloat16,)) -> list[dict]:
    """The kernel's predicted lower bound per shape, dtype, pass and device."""
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            for pass_ in ("fwd", "fwd+bwd"):
                n_bytes = kernel_bytes(shape, dtype, pass_)
                n_exps = exp_evaluations("triton", shape, pass_)
                row = {"shape": str(shape), "dtype": str(dtype).removeprefix("torch."), "pass": pass_,
                       "MB": n_bytes / 1e6, "Gexp": n_exps / 1e9}
                for key, dev in DEVICES.items():
                    b = bound(n_bytes, n_exps, dev.bandwidth, dev.exp_per_s)
                    row[f"{key} us"] = 1e6 * b.seconds
                    row[f"{key} limit"] = b.limit
                rows.append(row)
    return rows


def main() -> int:
    from bench.common import fmt, markdown_table

    rows = prediction_rows(estm_shapes() + LM_SHAPES, (torch.float32, torch.bfloat16))
    headers = list(rows[0])
    print("Predicted lower bounds of the Triton scan (datasheet figures, not measured):")
    for key, dev in DEVICES.items():
        print(f"  {key}: {dev.name}, {dev.bandwidth / 1e12:.2f} TB/s, {dev.exp_per_s / 1e12:.2f} Texp/s")
    print(markdown_table(headers, [[fmt(r[h]) if isinstance(r[h], float) else r[h] for h in headers]
                                   for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
