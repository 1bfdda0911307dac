"""`estm synth`: write seeded synthetic machine sounds in the DCASE 2020 Task 2 layout."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from estm_ref.synth.generate import DEFAULTS, MACHINE_TYPES, MAX_IDS, format_summary, generate

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    parser.add_argument("--out", required=True, type=Path, help="root folder of the data set")
    parser.add_argument("--seed", type=int, default=d["seed"], help="(default %(default)s)")
    parser.add_argument("--ids-per-type", type=int, default=d["ids_per_type"],
                        help=f"machine IDs per type, 1-{MAX_IDS} (default %(default)s)")
    parser.add_argument("--train-per-id", type=int, default=d["train_per_id"],
                        help="normal training clips per ID (default %(default)s)")
    parser.add_argument("--test-per-id", type=int, default=d["test_per_id"],
                        help="test clips per ID (default %(default)s)")
    parser.add_argument("--anomaly-fraction", type=float, default=d["anomaly_fraction"],
                        help="share of anomalous test clips (default %(default)s)")
    parser.add_argument("--snr-db", type=float, default=d["snr_db"],
                        help="machine-to-factory-noise ratio in dB; lower is harder "
                             "(default %(default)s)")
    parser.add_argument("--anomaly-strength", type=float, default=d["anomaly_strength"],
                        help="scale of the faults; lower is harder (default %(default)s)")
    parser.add_argument("--duration-s", type=float, default=d["duration_s"],
                        help="clip length in seconds (default %(default)s)")
    parser.add_argument("--types", nargs="+", choices=MACHINE_TYPES, metavar="TYPE",
                        help=f"machine types (default all: {' '.join(MACHINE_TYPES)})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        summary = generate(args.out, seed=args.seed, ids_per_type=args.ids_per_type,
                           train_per_id=args.train_per_id, test_per_id=args.test_per_id,
                           types=args.types, snr_db=args.snr_db,
                           anomaly_strength=args.anomaly_strength, duration_s=args.duration_s,
                           anomaly_fraction=args.anomaly_fraction, progress=not args.no_progress)
    except ValueError as err:
        log.error("%s", err)
        return 2
    print(format_summary(summary))
    return 0
