"""`estm test`: score the test clips of a run and write Table I, the DCASE files and figures."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run folder written by train")
    parser.add_argument("--data-root", action="append", required=True, type=Path,
                        help="root(s) holding <type>/test/*.wav")
    parser.add_argument("--out", type=Path, help="output folder (default RUN/test)")
    parser.add_argument("--per-id", action="store_true", help="per-ID rows in the table")
    parser.add_argument("--no-margin", action="store_true",
                        help="score without the ArcFace margin on the own class")
    parser.add_argument("--no-plots", action="store_true", help="skip ROC and t-SNE figures")


def run(args: argparse.Namespace) -> int:
    from estm_ref.pipeline.evaluate import test_run

    result = test_run(args.run, args.data_root, args.out, args.device, args.per_id,
                      not args.no_margin, not args.no_plots, not args.no_progress)
    print(result["table"])
    print(f"\n{result['n_clips']} clips scored ({result['unlabelled']} unlabelled, "
          f"{result['skipped_files']} bad files skipped); results in {result['out_dir']}")
    for fig in result["figures"]:
        print(f"figure: {fig}")
    return 0
