"""`estm bench scan|train`: run a benchmark script of the source tree's `bench/` folder.

`bench/` is not installed with the package: this command finds it next to the `estm_ref`
package, as in a source checkout or an editable install, and says so when it is not
there. The script runs in a fresh Python (so that, without CUDA, the scan benchmark can
set TRITON_INTERPRET=1 before Triton is imported); its exit code is this command's.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

SCRIPTS = {"scan": "scan.py", "train": "train_step.py"}


class BenchNotFound(FileNotFoundError):
    """The bench/ folder of the source tree is not next to the installed package."""


def find_bench_dir(package_dir: Path | None = None) -> Path:
    """The bench/ folder beside the estm_ref package (`package_dir`, default this package's)."""
    root = (package_dir or Path(__file__).resolve().parent).parent
    bench = root / "bench"
    if not all((bench / name).is_file() for name in SCRIPTS.values()):
        raise BenchNotFound(
            f"no benchmark scripts in {bench}: `estm bench` runs them from a source tree "
            "(git clone, then `pip install -e .` or PYTHONPATH=<tree>); a wheel install does not "
            "include bench/")
    return bench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", choices=sorted(SCRIPTS),
                        help="scan: selective-scan backends; train: training step and data loader")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="...",
                        help="passed to the script, e.g. --quick --out DIR "
                             "(`estm bench scan --help` lists them)")


def command(args: argparse.Namespace) -> list[str]:
    script = find_bench_dir() / SCRIPTS[args.which]
    extra = list(args.bench_args)
    if getattr(args, "quiet", False) and "--quiet" not in extra:
        extra.append("--quiet")
    return [sys.executable, str(script), *extra]


def run(args: argparse.Namespace) -> int:
    cmd = command(args)
    root = str(Path(cmd[1]).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log.info("running %s", " ".join(cmd))
    return subprocess.call(cmd, env=env)
