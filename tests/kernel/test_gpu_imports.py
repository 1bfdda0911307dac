"""The GPU test machine has no soundfile, librosa or mambapy: what bench/gpu-check.sh runs
must import without them. Checked here in a subprocess where importing them fails."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABSENT = ("soundfile", "librosa", "mambapy")

PRELUDE = textwrap.dedent(f"""
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {ABSENT!r}:
                raise ModuleNotFoundError(f"{{name}} is not installed on this machine")
            return None

    sys.meta_path.insert(0, Refuse())
    sys.path.insert(0, {str(ROOT)!r})
""")


def run_without_optional_packages(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_refusal_works():
    """Without this the two checks below would pass on any machine that has the packages."""
    done = run_without_optional_packages("import soundfile")
    assert done.returncode != 0 and "not installed on this machine" in done.stderr


@pytest.mark.slow
def test_gpu_tests_collect_without_optional_packages():
    done = run_without_optional_packages("""
        import pytest
        sys.exit(pytest.main(["--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]))
    """)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " error" not in done.stdout.lower(), done.stdout[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert any("tests/kernel/" in line for line in collected), done.stdout[-3000:]
    assert any("tests/gpu/" in line for line in collected), done.stdout[-3000:]


def test_benchmarks_import_without_optional_packages():
    done = run_without_optional_packages("""
        import bench.scan, bench.train_step, estm_ref.model, estm_ref.pipeline.demo
        import triton_kernels.selective_scan
        print("imported")
    """)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-3000:]
