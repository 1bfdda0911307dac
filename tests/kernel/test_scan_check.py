"""`estm scan-check` and `estm_ref.scan.testing`: the check passes on correct scans (the
reference, the Triton kernel, mambapy's pscan, a stand-in with mamba-ssm's signature, a
user's module outside the project), reports unsupported cases as SKIP, and turns bad
input into exit code 2 with one line. The broken scans it must reject are in
test_scan_bites.py.
"""

import json
import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import KERNEL_DEVICE
from estm_ref.cli.main import main
from estm_ref.scan import selective_scan_ref
from estm_ref.scan.adapters import ADAPTERS
from estm_ref.scan.battery import BATTERY, QUICK, TINY, select
from estm_ref.scan.check import PASS, SKIP, check_scan
from estm_ref.scan.testing import scan_property_tests, scan_tests
from triton_kernels.selective_scan import LaunchOptions, selective_scan_fn

# the reference through the pytest factories: one test per quick case, one per property
test_reference_passes_the_quick_battery = scan_tests(selective_scan_ref)
test_reference_has_the_properties = scan_property_tests(selective_scan_ref, max_examples=4)


def test_the_battery_covers_what_a_scan_gets_wrong():
    cases = [bc.case for bc in BATTERY.values()]
    assert {1, 5, 256} <= {c.N for c in cases}  # N = 1, odd, large
    assert {1, 23, 4099} <= {c.L for c in cases}  # L = 1, a multiple of no tile size, long
    assert {0, 1, 2, 6} <= {c.groups for c in cases}  # shared, one group, grouped, a channel per group
    for flag in ("has_D", "has_z", "has_delta_bias", "has_initial_state", "delta_softplus"):
        assert {getattr(c, flag) for c in cases} == {True, False}, flag
    assert any(c.big_delta for c in cases) and any(c.noncontiguous for c in cases)
    assert any(c.batch == 1 for c in cases)
    assert {torch.float32, torch.bfloat16, torch.float16} <= {c.dtype for c in cases}
    assert any(c.delta_dtype not in (None, c.dtype) for c in cases)  # mixed
    assert any(BATTERY[name].determinism for name in QUICK)
    assert set(TINY) < set(QUICK) < set(BATTERY)


def test_kernel_passes_the_check():
    """Triton scan (interpreter on CPU, NaN-poisoned buffers): odd N, and one channel per
    group run twice for determinism, each also against the float64 run."""
    kernel = lambda *a, **kw: selective_scan_fn(*a, **kw, options=LaunchOptions(poison=True))  # noqa: E731
    result = check_scan(kernel, select(patterns=["N-odd", "one-channel-per-group"]),
                        KERNEL_DEVICE)
    assert result.ok, result.table()
    assert ("one-channel-per-group", "determinism") in {(r.case, r.quantity) for r in result.rows}
    assert all(r.abs_err_f64 is not None for r in result.rows if r.quantity != "determinism")


def test_mambapy_pscan_passes_through_its_adapter():
    pscan = pytest.importorskip("mambapy.pscan", reason="mambapy is optional").pscan
    adapter = ADAPTERS["mambapy"]
    result = check_scan(adapter.wrap(pscan), select(quick=True),
                        unsupported=lambda bc: adapter.unsupported(pscan, bc.case))
    assert result.ok, result.table()
    assert {r.status for r in result.rows} == {PASS}


def test_mambapy_adapter_with_a_sequential_pscan():
    """The adapter's own part (discretisation, groups, initial state, C and D, z) around the
    plainest pscan there is, so the adapter is checked where mambapy is not installed."""
    def sequential_pscan(a_bar, x):  # (batch, L, dim, N), h[t] = a_bar[t] h[t-1] + x[t]
        h, out = torch.zeros_like(x[:, 0]), []
        for t in range(x.shape[1]):
            h = a_bar[:, t] * h + x[:, t]
            out.append(h)
        return torch.stack(out, dim=1)

    result = check_scan(ADAPTERS["mambapy"].wrap(sequential_pscan), select(patterns=TINY))
    assert result.ok, result.table()


def mamba_ssm_stand_in(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """mamba-ssm's selective_scan_fn signature and dtype rules, computed by the reference."""
    if delta.dtype != u.dtype:
        raise RuntimeError("delta must have the same dtype as u")  # what its CUDA extension checks
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def test_mamba_ssm_adapter_declares_what_mamba_ssm_cannot_run():
    adapter = ADAPTERS["mamba-ssm"]
    result = check_scan(adapter.wrap(mamba_ssm_stand_in), select(quick=True),
                        unsupported=lambda bc: adapter.unsupported(mamba_ssm_stand_in, bc.case))
    assert result.ok, result.table()
    skipped = {r.case: r.note for r in result.rows if r.status == SKIP}
    assert skipped == {name: skipped[name] for name in QUICK
                       if BATTERY[name].case.has_initial_state or name == "mixed-dtypes"}
    assert "no initial state" in skipped["initial-state-only"]
    assert "delta in u's dtype" in skipped["mixed-dtypes"]
    assert {r.case for r in result.rows if r.status == PASS} >= {"N1-nothing-optional", "fp16", "z-only"}


def test_not_implemented_is_unsupported_not_failed():
    def no_groups(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                  return_last_state=False, initial_state=None):
        if B.dim() == 4:
            raise NotImplementedError("grouped B/C")
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                  initial_state)

    result = check_scan(no_groups, select(patterns=["groups-L-prime", "L1-batch1"]))
    assert result.ok
    assert [(r.case, r.status, r.note) for r in result.rows if r.case == "groups-L-prime"] == [
        ("groups-L-prime", SKIP, "unsupported: grouped B/C")]
    assert "unsupported: groups-L-prime" in result.verdict()


USER_SCAN = '''
from estm_ref.scan import selective_scan_ref


def chunked_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 return_last_state=False, initial_state=None):
    """Two chunks along L, the state carried from the first into the second."""
    k = max(1, u.shape[-1] // 2)
    if k == u.shape[-1]:
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                  return_last_state, initial_state)
    part = lambda t, s: None if t is None else t[..., s]
    a, b = slice(0, k), slice(k, None)
    y1, h = selective_scan_ref(part(u, a), part(delta, a), A, part(B, a), part(C, a), D, part(z, a),
                               delta_bias, delta_softplus, True, initial_state)
    y2, h = selective_scan_ref(part(u, b), part(delta, b), A, part(B, b), part(C, b), D, part(z, b),
                               delta_bias, delta_softplus, True, h)
    y = __import__("torch").cat([y1, y2], dim=-1)
    return (y, h) if return_last_state else y


def {name}(u, delta, A, B, C, D=None, **kw):
    return chunked_scan(u, delta, A, B, C, None if D is None else {D}, **kw)
'''


def _user_module(folder, module, name="my_scan", D="D"):
    (folder / f"{module}.py").write_text(USER_SCAN.replace("{name}", name).replace("{D}", D))


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_user_module_outside_the_project_from_the_command_line_and_pytest(tmp_path):
    _user_module(tmp_path, "user_scan")
    cli = _run(["-m", "estm_ref", "scan-check", "user_scan:my_scan", "--quick", "--json", "out.json"], tmp_path)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.splitlines()[-1].startswith("PASS")
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["verdict"] == "PASS" and len(report["cases"]) == len(QUICK)
    assert {row["quantity"] for row in report["rows"]} >= {"y", "last_state", "dB", "dinitial_state"}

    (tmp_path / "test_user_scan.py").write_text(textwrap.dedent("""\
        from estm_ref.scan.testing import scan_property_tests, scan_tests
        from user_scan import my_scan
        test_my_scan = scan_tests(my_scan)
        """))
    tests = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user_scan.py"], tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert f"{len(QUICK)} passed" in tests.stdout


def test_a_broken_user_module_fails_naming_case_and_quantity(tmp_path, monkeypatch, capsys):
    _user_module(tmp_path, "user_scan_wrong_D", D="-D")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["scan-check", "user_scan_wrong_D:my_scan", "--cases", "D-only,z-*", "--json", "r.json"]) == 1
    *table, verdict = capsys.readouterr().out.splitlines()
    failed = {tuple(line.split()[:2]) for line in table if "  FAIL" in line}
    assert {("D-only", "y"), ("D-only", "du"), ("D-only", "dD")} <= failed
    assert verdict.startswith("FAIL") and "D-only y" in verdict
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert {r["case"] for r in rows if r["status"] == "FAIL"} == {"D-only"}
    assert {r["status"] for r in rows if r["case"] == "z-only"} == {PASS}


BAD = {
    "no module": (["nosuch_module_for_scan_check:f"], "cannot import nosuch_module_for_scan_check"),
    "no function": (["estm_ref.scan:nope"], "has no attribute 'nope'"),
    "no colon": (["estm_ref.scan"], "expected MODULE:FUNCTION"),
    "not callable": (["estm_ref.scan:BACKENDS"], "is not callable"),
    "wrong signature": (["estm_ref.scan:resolve_backend"], "does not take"),
    "mamba-ssm signature as native": (["mamba_ssm_like:selective_scan_fn"], "initial_state"),
    "unknown case": (["estm_ref.scan:selective_scan_ref", "--cases", "zz*"], "no case matches zz*"),
    "syntax error": (["broken_syntax_scan:f"], "raised SyntaxError"),
}
if not torch.cuda.is_available():
    BAD["no cuda"] = (["estm_ref.scan:selective_scan_ref", "--device", "cuda"], "no CUDA device")


@pytest.mark.parametrize("args, message", list(BAD.values()), ids=list(BAD))
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, caplog, capsys):
    (tmp_path / "broken_syntax_scan.py").write_text("def f(:\n")
    (tmp_path / "mamba_ssm_like.py").write_text(
        "def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,\n"
        "                      return_last_state=False):\n    raise AssertionError('never called')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with caplog.at_level(logging.ERROR):
        assert main(["scan-check", *args]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and message in errors[0], errors
    assert capsys.readouterr().out == ""


def test_bad_input_from_the_shell_prints_one_line(tmp_path):
    result = _run(["-m", "estm_ref", "scan-check", "estm_ref.scan:nope", "--quick"], tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
