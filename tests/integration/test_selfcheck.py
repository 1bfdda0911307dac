"""`estm selfcheck`: kernel vs reference on a device, PASS/FAIL and the exit code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HAS_CUDA, KERNEL_DEVICE
from estm_ref.scan import parity
from estm_ref.cli.main import main
from estm_ref.scan import selective_scan_ref

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(HAS_CUDA, reason="a CUDA machine checks the CLI on cuda (test_cli_on_cuda_passes); "
                                       "the interpreter path is for machines without a GPU")
def test_cli_on_cpu_turns_on_the_interpreter_and_passes():
    """A fresh process without TRITON_INTERPRET: the command must set it itself and pass."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-m", "estm_ref", "--quiet", "selfcheck", "--device", "cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TRITON_INTERPRET=1" in proc.stdout
    assert proc.stdout.splitlines()[-2] == "PASS"
    for name in ("y", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias",
                 "dinitial_state"):
        assert f"  {name} " in proc.stdout


def test_a_wrong_scan_fails_with_marked_rows():
    def without_D(**kw):
        return selective_scan_ref(**{**kw, "D": None})

    ok, table = parity.check_parity("cpu", scan=without_D)
    assert not ok
    assert table.splitlines()[-1] == "FAIL"
    y_row = next(line for line in table.splitlines() if line.startswith("  y "))
    assert "!" in y_row


def test_run_returns_1_on_failure(monkeypatch, capsys):
    monkeypatch.setattr(parity, "check_parity", lambda device: (False, "table\nFAIL"))
    assert main(["selfcheck", "--device", KERNEL_DEVICE]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.gpu
def test_cli_on_cuda_passes(capsys):
    assert main(["selfcheck", "--device", "cuda"]) == 0
    assert "PASS" in capsys.readouterr().out
