"""`estm score`: anomaly score, threshold and decision for single WAV files.

A file that cannot be scored (unreadable, unknown machine, no id in its name) is reported
and skipped; the others are still scored, and the exit code is 2 when any file failed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from estm_ref.cli.scorer_flags import add_scorer_arguments, scorer_params

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run folder written by train")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.wav")
    parser.add_argument("--type", dest="machine_type", help="machine type (default: from folder)")
    parser.add_argument("--id", dest="machine_id", help="machine id, e.g. 02 (default: from name)")
    parser.add_argument("--data-root", action="append", type=Path,
                        help="the run's training data, used once when the run has no saved "
                             "training embeddings")
    add_scorer_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from estm_ref.pipeline.evaluate import score_files

    results = score_files(args.run, args.files, args.machine_type, args.machine_id, args.device,
                          args.scorer, args.data_root, scorer_params(args))
    failed = [r for r in results if "error" in r]
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            log.error("%s", r["error"])
        elif not args.json:
            threshold = "n/a" if r["threshold"] is None else f"{r['threshold']:.4f}"
            decision = {None: "n/a", 0: "normal", 1: "ANOMALY"}[r["decision"]]
            print(f"{r['file']}: {r['machine_type']} id_{r['machine_id']}  {r['scorer']} "
                  f"score {r['score']:.4f}  "
                  f"threshold {threshold}  -> {decision}")
    if failed:
        log.error("%d of %d file(s) could not be scored", len(failed), len(results))
        return 2
    return 0
