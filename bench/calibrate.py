"""Calibration report: does the synthetic data rank the baselines like the real data?

    python bench/calibrate.py [--seeds 0 1 2] [--jobs 2]

For each seed: generates the calibration set at the generator's default difficulty
(4 IDs x 100 training x 40 test clips per type, the `SynthConfig` defaults), runs the
baselines (`estm_ref.baselines`) and prints per machine type the published AUC / pAUC of
the official autoencoder on the real development set beside the autoencoder's,
per-ID Mahalanobis' and the loudness-only detector's figures on the synthetic set, with
the targets checked:
- autoencoder within 6 points of its published AUC for every type, within 3 on average;
- per-ID Mahalanobis on clip statistics 80-90 on average;
- loudness (RMS) alone near 50 (45-55 on average).
Writes bench/results/calibration.{csv,md}, stamped. The data goes to a temporary folder
(`--keep DIR` keeps it). The autoencoder follows the official recipe, 100 epochs; `--jobs N`
(default: the CPU count) renders the clips and trains the machine types' autoencoders in
N worker processes, which brings a seed under 20 minutes on two cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines import (add_baseline_arguments, autoencoder_config,  # noqa: E402
                             summary_rows, table)
from bench.common import Stamp, setup_logging, write_csv, write_markdown  # noqa: E402
from estm_ref.baselines.autoencoder import divergences  # noqa: E402
from estm_ref.baselines.run import run_baselines  # noqa: E402
from estm_ref.data import scan_roots  # noqa: E402
from estm_ref.synth.config import SynthConfig  # noqa: E402
from estm_ref.synth.machines import MACHINE_TYPES  # noqa: E402
from estm_ref.synth.generate import generate  # noqa: E402

AE_TYPE_TOL, AE_AVERAGE_TOL = 6.0, 3.0
MAHALANOBIS_RANGE = (80.0, 90.0)
RMS_RANGE = (45.0, 55.0)
COLUMNS = ["seed", "machine_type", "published_ae_auc", "published_ae_pauc", "ae_auc", "ae_pauc",
           "ae_gap", "mahalanobis_auc", "mahalanobis_pauc", "id_classifier_auc",
           "id_classifier_pauc", "rms_auc", "rms_pauc"]


def checks(rows: list[dict]) -> list[tuple[str, bool]]:
    """(what, met) for every calibration target on one seed's rows."""
    out = []
    for row in rows:
        if row["machine_type"] != "Average" and "published_ae_auc" in row:
            gap = row["ae_auc"] - row["published_ae_auc"]
            out.append((f"AE {row['machine_type']}: {gap:+.2f} (within {AE_TYPE_TOL:g})",
                        abs(gap) <= AE_TYPE_TOL))
    average = rows[-1]
    if "published_ae_auc" in average:
        gap = average["ae_auc"] - average["published_ae_auc"]
        out.append((f"AE average: {gap:+.2f} (within {AE_AVERAGE_TOL:g})",
                    abs(gap) <= AE_AVERAGE_TOL))
    for key, (lo, hi), name in (("mahalanobis_auc", MAHALANOBIS_RANGE, "Mahalanobis average"),
                                ("rms_auc", RMS_RANGE, "RMS-only average")):
        if key in average:
            out.append((f"{name}: {average[key]:.2f} (in {lo:g}-{hi:g})",
                        lo <= average[key] <= hi))
    return out


def calibrate_seed(cfg: SynthConfig, args, work: Path) -> tuple[list[dict], dict]:
    """Generate one seed's set and run the baselines on it: (rows, timing)."""
    root = work / f"seed-{cfg.seed}"
    summary = generate(root, cfg, progress=not args.no_progress, jobs=args.jobs)
    index = scan_roots([root])
    start = time.perf_counter()
    run = run_baselines(index.select(split="train"), index.select(split="test"),
                        autoencoder_config(args), args.baselines, progress=not args.no_progress,
                        jobs=args.jobs)
    timing = {"generate_s": summary["seconds"], "clips_per_s": summary["clips_per_s"],
              "clips_per_cpu_s": summary["clips_per_cpu_s"],
              "baselines_s": time.perf_counter() - start, "n_clips": summary["n_files"]}
    rows = summary_rows(run)
    for row in rows:
        row["seed"] = cfg.seed
        if "published_ae_auc" in row and "ae_auc" in row:
            row["ae_gap"] = row["ae_auc"] - row["published_ae_auc"]
    return rows, timing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--types", nargs="+", choices=MACHINE_TYPES, default=list(MACHINE_TYPES))
    parser.add_argument("--ids-per-type", type=int, default=SynthConfig.ids_per_type)
    parser.add_argument("--train-per-id", type=int, default=SynthConfig.train_per_id)
    parser.add_argument("--test-per-id", type=int, default=SynthConfig.test_per_id)
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated data here")
    add_baseline_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = SynthConfig(ids_per_type=args.ids_per_type, train_per_id=args.train_per_id,
                       test_per_id=args.test_per_id, types=tuple(args.types))
    work = args.keep or Path(tempfile.mkdtemp(prefix="estm-calibration-"))
    all_rows, sections, met_all = [], [], True
    try:
        for seed in args.seeds:
            rows, timing = calibrate_seed(replace(base, seed=seed), args, work)
            results = checks(rows)
            met_all &= all(ok for _, ok in results)
            text = (f"## Seed {seed}\n\n{table(rows)}\n\n"
                    + "\n".join(f"- [{'x' if ok else ' '}] {what}" for what, ok in results)
                    + f"\n\nGenerated {timing['n_clips']} clips in {timing['generate_s']:.0f} s "
                      f"({timing['clips_per_s']:.1f} clips/s wall clock, "
                      f"{timing['clips_per_cpu_s']:.1f} per CPU-second, {args.jobs} processes); "
                      f"baselines {timing['baselines_s']:.0f} s; seed total "
                      f"{timing['generate_s'] + timing['baselines_s']:.0f} s.")
            print("\n" + text)
            sections.append(text)
            all_rows += rows
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    ae_cfg = autoencoder_config(argparse.Namespace(ae_epochs=args.ae_epochs, ae_seed=args.ae_seed))
    notes = [f"data: SynthConfig defaults except {base.ids_per_type} IDs x {base.train_per_id} "
             f"training x {base.test_per_id} test clips per type, seeds {args.seeds}",
             "autoencoder settings that differ from the official recipe: "
             + ("; ".join(divergences(ae_cfg)) or "none"),
             f"all targets met: {'yes' if met_all else 'no'}"]
    stamp = Stamp.collect(torch.device("cpu"))
    write_csv(args.out / "calibration.csv", COLUMNS, all_rows, stamp, notes)
    write_markdown(args.out / "calibration.md", "Calibration of the synthetic data", stamp,
                   "\n".join(f"- {n}" for n in notes) + "\n\n" + "\n\n".join(sections))
    print(f"\nall targets met: {'yes' if met_all else 'no'}; wrote {args.out}/calibration.csv, .md")
    return 0 if met_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
