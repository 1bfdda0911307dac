"""Training-step benchmark: clips/s of a full ESTM step, of the data loader, and what they mean
for the paper's protocol.

    python bench/train_step.py [--quick] [--out DIR] [--device cuda]   (every flag: docs/benchmarks.md)

Training step: features (log-mel, TSG, Tgram) + both Mamba paths + ArcFace +
cross-entropy + backward + AdamW, on random waveforms of the clip length, as one step of
`estm_ref.pipeline.train` does it (bf16 autocast on CUDA under amp="auto"). Rows: the default model
config and the demo's small one (d_model 64, depth 2), each with the reference scan and
the Triton scan (CUDA only; on CPU the kernel runs only through the interpreter, far too
slow for a training step, so that row is skipped with the reason). Batch 128 (the
paper's), 8 with --quick.

Data loader: a small synthetic set (`estm_ref.synth.generate`) in a temporary folder,
read through `estm_ref.data.ClipDataset` and a DataLoader, without the decoded-audio cache
(WAV decode per clip) and with it (memory-mapped int16); the cache build and the header
check at dataset creation are timed once. The files were just written, so they come from
the OS page cache: this is the decode rate, not the disk's.

Projection: the paper trains on 36,283 normal clips for 200 epochs; the projected wall
time is 36,283 * epochs / (clips/s) for the measured step rate, and with the cached
loader in series with the step (num_workers 0: 1 / (1/step rate + 1/loader rate)).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/train_step.py`: import from this source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from bench.common import (Stamp, add_common_arguments, fmt, markdown_table, resolve_device,
                          result_path, setup_logging, time_call, write_csv, write_markdown)
from estm_ref.config import Config, with_overrides

log = logging.getLogger("bench.train")

PAPER_CLIPS = 36_283  # normal training clips, DCASE 2020 Task 2 development + additional data
N_CLASSES = 41  # (machine type, ID) pairs of the full data set
COLUMNS = ["part", "config", "backend", "batch", "amp", "status", "ms_per_batch", "clips_s",
           "timing", "reps", "first_call_s", "paper_protocol_h", "params_m", "note"]


def model_configs() -> dict[str, dict]:
    """name -> config overrides: the defaults, and the demo's small model (its scan backend
    is set per row here)."""
    from estm_ref.pipeline.demo import DEMO_CONFIG

    demo = {k: v for k, v in DEMO_CONFIG["model"].items() if k != "scan_backend"}
    return {"default": {}, "demo": {"model": demo}}


def paper_protocol_hours(clips_s: float | None, epochs: int) -> float | None:
    return PAPER_CLIPS * epochs / clips_s / 3600 if clips_s else None


# ----------------------------------------------------------------------------- training step


def train_step_row(name: str, overrides: dict, backend: str, batch: int, device: torch.device,
                   budget_s: float, seed: int = 0) -> dict:
    """Time one training step (mirrors the loop body of `estm_ref.pipeline.train._train_epoch`)."""
    from estm_ref.model import build_model
    from estm_ref.runtime import autocast_for

    cfg = with_overrides(Config(), overrides)
    cfg = with_overrides(cfg, {"model": {"scan_backend": backend}, "train": {"batch_size": batch}})
    amp = "bf16" if device.type == "cuda" and cfg.train.amp in ("auto", "bf16") else "off"
    row = {"part": "train step", "config": _describe(cfg), "backend": backend, "batch": batch,
           "amp": amp}
    if backend == "triton" and device.type != "cuda":
        reason = ("the Triton scan runs on CUDA; on CPU only through the interpreter, far too "
                  "slow for a training step")
        log.info("skip train step %s/%s: %s", name, backend, reason)
        return {**row, "status": "skipped", "note": reason}
    torch.manual_seed(seed)
    model = build_model(cfg.features, cfg.model, N_CLASSES, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    wave = 0.1 * torch.randn(batch, cfg.features.clip_samples, device=device).clamp_(-10, 10)
    labels = torch.randint(0, N_CLASSES, (batch,), device=device)

    def step():
        with autocast_for(cfg.train.amp, device):
            out = model(wave, labels)
        loss = F.cross_entropy(out.logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    try:
        timing = time_call(step, device, budget_s=budget_s, max_reps=10)
    except torch.OutOfMemoryError as oom:
        return {**row, "status": "skipped", "note": f"out of memory: {str(oom).splitlines()[0]}"}
    clips_s = batch / (timing.ms * 1e-3)
    return {**row, "status": "ok", "ms_per_batch": timing.ms, "clips_s": clips_s,
            "timing": timing.method, "reps": timing.reps, "first_call_s": timing.first_call_s,
            "paper_protocol_h": paper_protocol_hours(clips_s, Config().train.epochs),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "note": ""}


def _describe(cfg: Config) -> str:
    m = cfg.model
    return f"d_model {m.d_model}, depth {m.depth}, d_state {m.d_state}"


# ----------------------------------------------------------------------------- data loader


def loader_rows(n_clips: int, batch: int, num_workers: int, budget_s: float,
                progress: bool) -> list[dict]:
    """clips/s of ClipDataset + DataLoader on a fresh synthetic set, without and with the cache."""
    base = {"part": "loader", "backend": "-", "batch": batch, "amp": "-"}
    try:
        from estm_ref.data import ClipDataset, build_class_list, scan_roots
        from estm_ref.synth.generate import generate
    except ImportError as err:
        reason = f"the data modules do not import here ({err})"
        log.warning("loader benchmark skipped: %s", reason)
        return [{**base, "config": "-", "status": "skipped", "note": reason}]
    cfg = Config()
    device = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory(prefix="estm-bench-") as tmp:
        root = Path(tmp) / "data"
        start = time.perf_counter()
        generate(root, seed=0, ids_per_type=1, train_per_id=n_clips, test_per_id=0,
                 types=["fan"], progress=progress)
        log.info("generated %d synthetic clips in %.1f s", n_clips, time.perf_counter() - start)
        clips = scan_roots(root).select(split="train")
        class_list = build_class_list(clips)

        def build(cache_dir):
            return ClipDataset(clips, class_list, cfg.features, cache_dir=cache_dir, progress=False)

        for label, cache_dir in (("WAV decode, no cache", None),
                                 ("decoded int16 cache", Path(tmp) / "cache")):
            start = time.perf_counter()
            dataset = build(cache_dir)
            made_s = time.perf_counter() - start
            what = "cache build (decode + write)" if cache_dir else "dataset creation (header check)"
            rows.append({**base, "config": what, "status": "ok", "ms_per_batch": None,
                         "clips_s": len(dataset) / made_s, "timing": "one run", "reps": 1,
                         "first_call_s": made_s, "note": f"{len(dataset)} clips, once per run"})
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                                 num_workers=num_workers)
            timing = time_call(lambda: sum(1 for _ in loader), device, budget_s=budget_s,
                               max_reps=5)
            clips_s = len(dataset) / (timing.ms * 1e-3)
            rows.append({**base, "config": f"epoch: {label}", "status": "ok",
                         "ms_per_batch": timing.ms / len(loader), "clips_s": clips_s,
                         "timing": timing.method, "reps": timing.reps,
                         "first_call_s": timing.first_call_s,
                         "paper_protocol_h": paper_protocol_hours(clips_s, cfg.train.epochs),
                         "note": f"{len(dataset)} clips, num_workers {num_workers}, "
                                 "timed as whole passes"})
    return rows


# ----------------------------------------------------------------------------- output


def projections(rows: list[dict]) -> list[str]:
    """Lines: projected wall time of the paper's protocol for every measured step rate."""
    epochs = Config().train.epochs
    cached = next((r["clips_s"] for r in rows if r["part"] == "loader" and r["status"] == "ok"
                   and r["config"].startswith("epoch: decoded")), None)
    lines = []
    for r in rows:
        if r["part"] != "train step" or r["status"] != "ok":
            continue
        h = r["paper_protocol_h"]
        line = (f"- {r['config']}, {r['backend']} scan, batch {r['batch']}: {fmt(r['clips_s'])} "
                f"clips/s -> {fmt(h)} h ({fmt(h / 24)} days) for {PAPER_CLIPS:,} clips x {epochs} epochs")
        if cached:
            both = 1 / (1 / r["clips_s"] + 1 / cached)
            line += (f"; with the cached loader in series (num_workers 0): "
                     f"{fmt(paper_protocol_hours(both, epochs))} h")
        lines.append(line)
    return lines


def _timing(row: dict) -> str:
    if not row.get("timing"):
        return "-"
    return f"{row['timing']} of {row['reps']}" if "median" in row["timing"] else row["timing"]


def markdown_body(rows: list[dict]) -> str:
    headers = ["part", "config", "scan", "batch", "amp", "ms / batch", "clips/s", "paper protocol h",
               "params M", "first call s", "timing", "status", "note"]
    table = [[r["part"], r.get("config", "-"), r.get("backend", "-"), r.get("batch", "-"),
              r.get("amp", "-"), fmt(r.get("ms_per_batch")), fmt(r.get("clips_s")),
              fmt(r.get("paper_protocol_h")), fmt(r.get("params_m")), fmt(r.get("first_call_s")),
              _timing(r),
              r["status"], r.get("note") or ""] for r in rows]
    lines = projections(rows)
    body = markdown_table(headers, table)
    if lines:
        body += "\n\n## Projected wall time of the paper's protocol\n\n" + "\n".join(lines)
    return body + ("\n\nThe loader reads files the benchmark has just written (OS page cache): "
                   "decode rate, not disk rate. A training step uses random waveforms.\n")


def write_results(rows: list[dict], stamp: Stamp, out: Path, quick: bool) -> list[Path]:
    notes = [f"paper protocol: {PAPER_CLIPS} clips x {Config().train.epochs} epochs / clips_s"]
    return [write_csv(result_path(out, "train", stamp, quick, "csv"), COLUMNS, rows, stamp, notes),
            write_markdown(result_path(out, "train", stamp, quick, "md"),
                           "ESTM training-step and data-loader benchmark", stamp, markdown_body(rows))]


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/train_step.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    add_common_arguments(p)
    p.add_argument("--batch", type=int, help="training batch (default 128; 8 with --quick)")
    p.add_argument("--configs", default="default,demo", help="comma list of: default, demo")
    p.add_argument("--backends", default="ref,triton", help="scan backends: ref, triton")
    p.add_argument("--step-budget-s", type=float, default=5.0,
                   help="time spent repeating one training step (at least one warm step)")
    p.add_argument("--loader-clips", type=int, help="synthetic clips for the loader (default 64; 16 with --quick)")
    p.add_argument("--loader-batch", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=Config().train.num_workers)
    p.add_argument("--no-loader", action="store_true", help="skip the data-loader part")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    device = resolve_device(args.device)
    batch = args.batch or (8 if args.quick else Config().train.batch_size)
    configs = model_configs()
    unknown = [c for c in args.configs.split(",") if c not in configs]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; choose from {sorted(configs)}")
    stamp = Stamp.collect(device)
    log.info("training-step benchmark on %s (%s), batch %d", stamp.device, device, batch)
    start = time.perf_counter()
    rows = []
    for name in args.configs.split(","):
        for backend in args.backends.split(","):
            rows.append(train_step_row(name, configs[name], backend, batch, device,
                                       args.step_budget_s))
            write_csv(result_path(args.out, "train", stamp, args.quick, "csv"), COLUMNS, rows,
                      stamp, notes=["partial: the run has not finished"])
    if not args.no_loader:
        rows += loader_rows(args.loader_clips or (16 if args.quick else 64), args.loader_batch,
                            args.num_workers, budget_s=2.0, progress=not args.quiet)
    paths = write_results(rows, stamp, args.out, args.quick)
    print(markdown_body(rows))
    for path in paths:
        print(f"wrote {path}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
