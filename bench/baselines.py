"""All baselines on any data root in the DCASE 2020 Task 2 layout (real or synthetic):
the official autoencoder baseline, per-ID Mahalanobis and a linear ID classifier on clip
log-mel statistics, and a loudness-only detector. Usage:

    python bench/baselines.py --data-root DIR [--data-root DIR2 ...] [--ae-epochs 100]

Prints per machine type AUC / pAUC (%) of each baseline beside the published figures of
the autoencoder on the real development set, and writes
bench/results/<name>-<device>.{csv,md} (`--name`, default "baselines"). The baselines
themselves are in `estm_ref.baselines`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (DEFAULT_OUT, Stamp, markdown_table, setup_logging,  # noqa: E402
                          write_csv, write_markdown)
from estm_ref.baselines.autoencoder import AutoencoderConfig, divergences  # noqa: E402
from estm_ref.baselines.run import (BASELINES, PUBLISHED_AE, PUBLISHED_AE_AVERAGE,  # noqa: E402
                                    BaselineRun, run_baselines)
from estm_ref.data import scan_roots  # noqa: E402
from estm_ref.pipeline.metrics import evaluate_ids, summarise_types  # noqa: E402

log = logging.getLogger("bench")

COLUMNS = ["machine_type", "published_ae_auc", "published_ae_pauc", "ae_auc", "ae_pauc",
           "mahalanobis_auc", "mahalanobis_pauc", "id_classifier_auc", "id_classifier_pauc",
           "rms_auc", "rms_pauc"]
_PREFIX = {"autoencoder": "ae", "mahalanobis": "mahalanobis", "id-classifier": "id_classifier",
           "rms": "rms"}


def summary_rows(run: BaselineRun) -> list[dict]:
    """One row per machine type and an 'Average' row: AUC / pAUC (%) of every baseline
    run, beside the published autoencoder figures (blank for types DCASE does not have)."""
    rows: dict[str, dict] = {}
    averages: dict[str, dict] = {"Average": {"machine_type": "Average"}}
    for name, scores in run.scores.items():
        types, average = summarise_types(evaluate_ids(scores))
        prefix = _PREFIX[name]
        for t in types:
            row = rows.setdefault(t.machine_type, {"machine_type": t.machine_type})
            row[f"{prefix}_auc"], row[f"{prefix}_pauc"] = 100 * t.auc, 100 * t.pauc
        averages["Average"][f"{prefix}_auc"] = 100 * average.auc
        averages["Average"][f"{prefix}_pauc"] = 100 * average.pauc
    for machine_type, row in rows.items():
        if machine_type in PUBLISHED_AE:
            row["published_ae_auc"], row["published_ae_pauc"] = PUBLISHED_AE[machine_type]
    if set(rows) == set(PUBLISHED_AE):  # the published average is over all six types
        averages["Average"]["published_ae_auc"], averages["Average"]["published_ae_pauc"] = \
            PUBLISHED_AE_AVERAGE
    return [rows[t] for t in sorted(rows, key=str.lower)] + [averages["Average"]]


def _pair(row: dict, prefix: str) -> str:
    auc, pauc = row.get(f"{prefix}_auc"), row.get(f"{prefix}_pauc")
    if auc is None or math.isnan(auc):
        return "-"
    return f"{auc:.2f} / {pauc:.2f}"


def table(rows: list[dict], extra: dict[str, str] | None = None) -> str:
    """Markdown: published AE | AE | Mahalanobis | ID classifier | RMS, AUC / pAUC (%)."""
    extra = extra or {}
    headers = ["machine type", "AE published (real)", "AE (this data)", "Mahalanobis",
               "ID classifier", "RMS only", *extra]
    body = [[r["machine_type"], _pair(r, "published_ae"), _pair(r, "ae"),
             _pair(r, "mahalanobis"), _pair(r, "id_classifier"), _pair(r, "rms"),
             *(r.get(k, "") for k in extra.values())] for r in rows]
    return markdown_table(headers, body)


def add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baselines", nargs="+", choices=BASELINES, default=list(BASELINES))
    parser.add_argument("--ae-epochs", type=int, default=AutoencoderConfig().epochs,
                        help="autoencoder epochs (official: %(default)s)")
    parser.add_argument("--ae-seed", type=int, default=0, help="autoencoder initialisation seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes for the machine types' autoencoders, one torch "
                             "thread each (default: the CPU count, %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for CSV + Markdown")
    parser.add_argument("--quiet", action="store_true", help="only warnings, errors and tables")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def autoencoder_config(args: argparse.Namespace) -> AutoencoderConfig:
    cfg = AutoencoderConfig(epochs=args.ae_epochs, seed=args.ae_seed)
    for line in divergences(cfg):
        print(f"autoencoder differs from the official recipe: {line}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", action="append", required=True, type=Path)
    parser.add_argument("--name", default="baselines", help="result file name (default %(default)s)")
    add_baseline_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    ae_cfg = autoencoder_config(args)
    index = scan_roots(args.data_root)
    train = index.select(split="train")
    test = [c for c in index.select(split="test") if c.label is not None]
    start = time.perf_counter()
    try:
        run = run_baselines(train, test, ae_cfg, args.baselines, progress=not args.no_progress,
                            jobs=args.jobs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    rows = summary_rows(run)
    notes = [f"data roots: {' '.join(map(str, args.data_root))}",
             f"{run.n_train} training clips, {run.n_test} test clips, {len(run.skipped)} skipped",
             f"autoencoder: {ae_cfg}", f"run time: {seconds:.0f} s"]
    print(f"\n{table(rows)}\n\n" + "\n".join(notes))
    stamp = Stamp.collect(torch.device("cpu")).with_extra(data_roots=notes[0].split(": ", 1)[1])
    csv_path = write_csv(args.out / f"{args.name}-{stamp.device_kind}.csv", COLUMNS, rows, stamp,
                         notes)
    md_path = write_markdown(args.out / f"{args.name}-{stamp.device_kind}.md",
                             "Baselines, AUC / pAUC (%)", stamp,
                             table(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes))
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
