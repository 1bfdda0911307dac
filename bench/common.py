"""What both benchmarks share: the stamp, timing, copy bandwidth and the CSV/Markdown writers.

Timing. On CUDA, a call that takes less than `DO_BENCH_BELOW_S` is timed with
`triton.testing.do_bench` (its own warm-up, L2 flushed between repetitions, median).
Anything slower, and everything on CPU, is timed by wall clock: one call that absorbs
compilation and allocation, one warm call that sizes the repetitions to the row's
budget, then the median of the warm calls (CUDA synchronised around each). The method
and the number of repetitions go into every row, so a slow row timed once says so.

The stamp. Every result file starts with the device, torch / triton / Python versions,
the git commit (env BENCH_COMMIT overrides it, for a copy of the tree without .git;
"unknown" when neither is there) and the date, as `# key: value` lines in the CSV and a
list in the Markdown file.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "bench" / "results"
DO_BENCH_BELOW_S = 0.05
# copy-bandwidth buffers: well past the last-level cache of the device
COPY_BYTES = {"cuda": 1 << 30, "cpu": 256 << 20}

log = logging.getLogger("bench")


# ----------------------------------------------------------------------------- command line


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a small CPU grid that finishes in a minute or two on 2 cores")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the CSV, Markdown and PNG files (default {DEFAULT_OUT})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quiet", action="store_true", help="only warnings, errors and the tables")


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def resolve_device(name: str) -> torch.device:
    from estm_ref.runtime import resolve_device as resolve

    return resolve(name)


# ----------------------------------------------------------------------------- the stamp


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass  # not Linux: platform.processor() below
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {torch.get_num_threads()} torch threads"


def device_kind(device: torch.device) -> str:
    """'cpu' or 'cuda-<name>' (e.g. cuda-nvidia-h200), for file names."""
    if device.type != "cuda":
        return device.type
    slug = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cuda-{slug}"


def git_commit() -> tuple[str, str]:
    """(commit, tree state) of the source tree the benchmarks run from. Changes under
    bench/results/ do not count: they are what the benchmarks write, not what they run."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"], "from BENCH_COMMIT"
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True, timeout=20)
        diff = subprocess.run(["git", "-C", str(REPO_ROOT), "diff", "--quiet", "HEAD", "--", ".",
                               ":(exclude)bench/results"],
                              capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown", "not a git checkout"
    state = {0: "clean", 1: "tracked files modified"}.get(diff.returncode, "unknown")
    return head.stdout.strip(), state


def _version(distribution: str) -> str:
    """The installed version, read without importing the module (importing triton would
    decide TRITON_INTERPRET before the scan benchmark sets it)."""
    from importlib import metadata

    for name in (distribution, f"pytorch-{distribution}"):  # PyTorch's own build of triton
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


@dataclass(frozen=True)
class Stamp:
    device: str
    device_kind: str
    torch: str
    triton: str
    python: str
    commit: str
    tree: str
    date: str
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def collect(cls, device: torch.device) -> "Stamp":
        commit, tree = git_commit()
        return cls(device=device_name(device), device_kind=device_kind(device),
                   torch=torch.__version__, triton=_version("triton"),
                   python=platform.python_version(), commit=commit, tree=tree,
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    def with_extra(self, **items: str) -> "Stamp":
        return Stamp(**{**self.__dict__, "extra": self.extra + tuple(items.items())})

    def fields(self) -> list[tuple[str, str]]:
        return [("device", self.device), ("device kind", self.device_kind),
                ("torch", self.torch), ("triton", self.triton), ("python", self.python),
                ("git commit", self.commit), ("source tree", self.tree), ("date", self.date),
                *((k.replace("_", " "), v) for k, v in self.extra)]


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    ms: float  # median time of one call
    method: str
    reps: int | None  # None: chosen by do_bench
    first_call_s: float  # the first call, compilation / JIT included


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall_s(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_call(fn: Callable[[], object], device: torch.device, budget_s: float = 1.0,
              max_reps: int = 20) -> Timing:
    """Median time of `fn()` on `device`; see the module docstring for the method."""
    first = _wall_s(fn, device)
    warm = _wall_s(fn, device)
    if device.type == "cuda" and warm < DO_BENCH_BELOW_S:
        from triton.testing import do_bench

        ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
        return Timing(ms=float(ms), method="do_bench median", reps=None, first_call_s=first)
    reps = max(1, min(max_reps, int(budget_s / max(warm, 1e-9))))
    samples = [warm] + [_wall_s(fn, device) for _ in range(reps - 1)]
    return Timing(ms=1e3 * statistics.median(samples), method="wall-clock median",
                  reps=reps, first_call_s=first)


def copy_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """GB/s of `dst.copy_(src)` on `device`, counting the bytes read plus those written."""
    nbytes = nbytes or COPY_BYTES.get(device.type, COPY_BYTES["cpu"])
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device, budget_s=2.0, max_reps=30)
    gb_s = 2 * src.numel() * 4 / (timing.ms * 1e-3) / 1e9
    log.info("copy bandwidth on %s: %.1f GB/s (read + write of %d MiB, %s)", device, gb_s,
             nbytes >> 20, timing.method)
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return gb_s


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device` (None when the OS does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass  # not Linux: sysconf below
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- output


def result_path(out_dir: Path, name: str, stamp: Stamp, quick: bool, suffix: str) -> Path:
    """<out>/<name>-<device kind>[-quick].<suffix>, e.g. scan-cuda-nvidia-h200.csv."""
    return Path(out_dir) / f"{name}-{stamp.device_kind}{'-quick' if quick else ''}.{suffix}"


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict], stamp: Stamp,
              notes: Sequence[str] = ()) -> Path:
    """CSV with the stamp (and notes) as leading `# ` lines; read with comment='#'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        for key, value in stamp.fields():
            f.write(f"# {key}: {value}\n")
        for note in notes:
            f.write(f"# {note}\n")
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_value(row.get(c)) for c in columns})
    tmp.replace(path)  # a run killed mid-write leaves the previous complete file
    return path


def fmt(value, digits: int = 3) -> str:
    """A number for people: about `digits` significant digits, '-' for nothing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 10 ** (digits - 1):
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(map(str, headers))] + [[str(c).replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def stamp_markdown(stamp: Stamp) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in stamp.fields())


def write_markdown(path: Path, title: str, stamp: Stamp, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n{stamp_markdown(stamp)}\n\n{body.rstrip()}\n")
    return path


def import_pyplot():
    """matplotlib.pyplot with the Agg backend, or None (logged) when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as err:
        log.info("no plot: matplotlib is not importable (%s)", err)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

