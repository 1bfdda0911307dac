"""The benchmarks run end to end on a trivially small grid and write stamped results.

Smoke tests only: no assertion here depends on how fast anything ran (docs/design.md,
"Benchmarks are not tests"). bench/ is not installed with the package, so it is imported
from the source tree.
"""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, scan, scan_backends, scan_cost, train_step  # noqa: E402
from estm_ref.pipeline.demo import TINY_CONFIG  # noqa: E402
from estm_ref.scan import selective_scan_ref  # noqa: E402

CPU = torch.device("cpu")
STAMP_KEYS = {"device", "torch", "triton", "python", "git commit", "date"}


def read_results(path: Path) -> tuple[dict, list[str], list[dict]]:
    """(stamp, header, rows) of a benchmark CSV."""
    lines = path.read_text().splitlines()
    stamp = dict(line[2:].split(": ", 1) for line in lines
                 if line.startswith("# ") and ": " in line)
    body = [line for line in lines if not line.startswith("#")]
    header = next(csv.reader(body[:1]))
    return stamp, header, list(csv.DictReader(body))


def test_scan_formulas_on_a_small_shape():
    shape = scan_cost.Shape(batch=1, dim=8, L=5, N=4)
    # s = 4, seq = 40, bc = 20, par = 4 * (8*4 + 2*8) = 192
    assert scan_cost.bytes_moved(shape, torch.float32, "fwd") == 4 * (4 * 40 + 2 * 20) + 192
    assert scan_cost.bytes_moved(shape, torch.float32, "fwd+bwd") == 4 * (11 * 40 + 6 * 20) + 3 * 192
    assert scan_cost.bytes_moved(shape, torch.bfloat16, "fwd") == 2 * (4 * 40 + 2 * 20) + 192
    assert scan_cost.exp_evaluations("ref", shape, "fwd+bwd") == 160
    assert scan_cost.exp_evaluations("triton", shape, "fwd+bwd") == 2 * 160


def test_cost_model_bound_is_the_larger_term():
    memory_bound = scan_cost.bound(n_bytes=4_000, n_exps=10, bandwidth=1_000.0, exp_per_s=100.0)
    assert (memory_bound.seconds, memory_bound.limit) == (4.0, "memory")
    exp_bound = scan_cost.bound(n_bytes=100, n_exps=1_000, bandwidth=1_000.0, exp_per_s=100.0)
    assert (exp_bound.seconds, exp_bound.limit) == (10.0, "exp")
    unknown_device = scan_cost.bound(n_bytes=100, n_exps=1_000, bandwidth=1_000.0, exp_per_s=None)
    assert (unknown_device.seconds, unknown_device.limit) == (0.1, "memory")
    assert scan_cost.device_model("NVIDIA H200").bandwidth > scan_cost.device_model("NVIDIA H100 80GB HBM3").bandwidth
    assert scan_cost.device_model("NVIDIA A10") is None


def test_kernel_moves_the_floor_plus_tile_states_and_partial_sums():
    shape = scan_cost.Shape(8, 1536, 2048, 16)
    for pass_ in ("fwd", "fwd+bwd"):
        floor = scan_cost.bytes_moved(shape, torch.bfloat16, pass_)
        assert floor < scan_cost.kernel_bytes(shape, torch.bfloat16, pass_) < 2 * floor
    rows = scan_cost.prediction_rows([shape])
    assert {r["pass"] for r in rows} == {"fwd", "fwd+bwd"}
    assert all(r["H200 us"] <= r["H100 us"] for r in rows)


def test_bench_comparison_flags_a_wrong_backend():
    """The benchmark's check against the reference goes through the parity harness."""
    shape = scan_cost.Shape(1, 4, 6, 2)
    inputs = scan_backends.make_inputs(shape, torch.float32, CPU, requires_grad=True)
    dy = torch.randn(1, 4, 6)
    right = scan_backends.workload(selective_scan_ref, inputs, dy)()
    err, note = scan.compare_with_ref(right, inputs, dy, torch.float32, CPU)
    assert note == "" and err == 0.0
    wrong = (right[0] * 1.01,) + right[1:]
    err, note = scan.compare_with_ref(wrong, inputs, dy, torch.float32, CPU)
    assert note.startswith("does not match") and "y (" in note and err > 0


def test_scan_bench_writes_stamped_results(tmp_path):
    opts = scan.Options(ref_max_len=64, compile_max_len=0, compile_dtypes=("float32",),
                        row_budget_s=0.01, time_budget_s=None)
    shapes = [scan_cost.Shape(1, 8, 5, 4)]
    # On CPU the triton backend sets TRITON_INTERPRET=1 for the process when triton is not
    # imported yet; on a CUDA machine that would turn later GPU tests into interpreter runs.
    backends = ["ref", "ref-compile", "mambapy"] + ([] if torch.cuda.is_available() else ["triton"])
    rows, copy_gb_s = scan.run_benchmark(backends, shapes,
                                         ["float32"], CPU, opts, progress=False,
                                         copy_bytes=1 << 20)
    by_backend = {}
    for r in rows:
        by_backend.setdefault(r["backend"], []).append(r)
    ref = by_backend["ref"]
    assert [r["status"] for r in ref] == ["ok", "ok"]
    assert all(r["speedup_vs_ref"] == 1.0 and r["copy_gb_s"] == copy_gb_s for r in ref)
    compiled = by_backend["ref-compile"]
    assert {r["status"] for r in compiled} == {"skipped"}
    assert all("--compile-max-len" in r["note"] for r in compiled)
    triton_rows = by_backend.get("triton-interpreter", []) + by_backend.get("triton", [])
    assert triton_rows or torch.cuda.is_available()
    for r in triton_rows:  # a smoke row under the interpreter, or skipped with the reason
        assert r["status"] in ("smoke", "skipped"), r
        assert r["note"]
        if r["status"] == "smoke":
            assert r.get("speedup_vs_ref") is None
            assert r["max_abs_err_vs_ref"] < 1e-4
    assert all(r["status"] in ("ok", "skipped") for r in by_backend["mambapy"])

    paths = scan.write_results(rows, common.Stamp.collect(CPU), tmp_path, quick=True,
                               copy_gb_s=copy_gb_s)
    csv_path = tmp_path / "scan-cpu-quick.csv"
    assert csv_path in paths and (tmp_path / "scan-cpu-quick.md") in paths
    stamp, header, written = read_results(csv_path)
    assert STAMP_KEYS <= set(stamp)
    assert "copy bandwidth" in stamp
    assert header == scan.COLUMNS
    assert len(written) == len(rows)
    markdown = (tmp_path / "scan-cpu-quick.md").read_text()
    assert "git commit" in markdown and "| backend" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "scan-cpu-quick.png").stat().st_size > 0


def test_mambapy_wrapper_has_the_reference_semantics():
    def sequential_pscan(a_bar, x):  # stands in for mambapy.pscan.pscan: (batch, L, dim, N)
        h, out = torch.zeros_like(x[:, 0]), []
        for t in range(x.shape[1]):
            h = a_bar[:, t] * h + x[:, t]
            out.append(h)
        return torch.stack(out, dim=1)

    x = scan_backends.make_inputs(scan_cost.Shape(2, 6, 7, 3), torch.float32, CPU, requires_grad=False)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    kwargs = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True)
    got = scan_backends.mambapy_scan(sequential_pscan, *args, **kwargs)
    torch.testing.assert_close(got, selective_scan_ref(*args, **kwargs), rtol=1e-5, atol=1e-6)


def test_train_bench_writes_stamped_results(tmp_path, monkeypatch):
    def one_second(fn, device, budget_s=1.0, max_reps=20):  # the step runs; its time is fixed
        fn()
        return common.Timing(ms=1000.0, method="wall-clock median", reps=1, first_call_s=1.0)

    monkeypatch.setattr(train_step, "time_call", one_second)
    tiny = {"model": {k: v for k, v in TINY_CONFIG["model"].items() if k != "scan_backend"}}
    rows = [train_step.train_step_row("tiny", tiny, "ref", 2, CPU, budget_s=0.01),
            train_step.train_step_row("tiny", tiny, "triton", 2, CPU, budget_s=0.01)]
    assert rows[0]["status"] == "ok" and rows[0]["clips_s"] == 2.0  # batch 2 in 1 s
    # the paper's 36,283 clips x 200 epochs at 2 clips/s: 3,628,300 s
    assert rows[0]["paper_protocol_h"] == pytest.approx(3_628_300 / 3600)
    assert rows[1]["status"] == "skipped" and "CUDA" in rows[1]["note"]
    loader = train_step.loader_rows(n_clips=2, batch=2, num_workers=0, budget_s=0.01,
                                    progress=False)
    assert loader and all(r["status"] in ("ok", "skipped") and r["part"] == "loader" for r in loader)
    # a cached loader at 2 clips/s in series with the 2 clips/s step: 1 clip/s, twice the hours
    cached = {"part": "loader", "status": "ok", "config": "epoch: decoded int16 cache",
              "clips_s": 2.0}
    (line,) = train_step.projections([rows[0], cached])
    assert "1008 h (42 days)" in line and "in series (num_workers 0): 2016 h" in line
    rows += loader

    train_step.write_results(rows, common.Stamp.collect(CPU), tmp_path, quick=True)
    stamp, header, written = read_results(tmp_path / "train-cpu-quick.csv")
    assert STAMP_KEYS <= set(stamp)
    assert header == train_step.COLUMNS
    assert len(written) == len(rows)
    assert written[0]["paper_protocol_h"] == "1007.86"  # 6 significant digits
    assert "Projected wall time" in (tmp_path / "train-cpu-quick.md").read_text()
