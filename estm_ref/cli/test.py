"""`estm test`: score the test clips of a run under every scorer; Table I, DCASE files, figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from estm_ref.cli.scorer_flags import add_scorer_arguments, scorer_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run folder written by train")
    parser.add_argument("--data-root", action="append", required=True, type=Path,
                        help="root(s) holding <type>/test/*.wav (and <type>/train/*.wav, used "
                             "once when the run has no saved training embeddings)")
    parser.add_argument("--out", type=Path, help="output folder (default RUN/test)")
    parser.add_argument("--per-id", action="store_true", help="per-ID rows in the table")
    add_scorer_arguments(parser)
    parser.add_argument("--no-plots", action="store_true", help="skip ROC and t-SNE figures")


def run(args: argparse.Namespace) -> int:
    from estm_ref.pipeline.evaluate import test_run

    result = test_run(args.run, args.data_root, args.out, args.device, args.per_id,
                      not args.no_plots, not args.no_progress, scorer=args.scorer,
                      scorer_params=scorer_params(args))
    print(f"AUC / pAUC (%) under each scorer; * = {result['scorer']}, whose scores fill the "
          "DCASE files and results.csv:\n")
    print(result["scorer_table"])
    print(f"\n{result['n_clips']} clips scored ({result['unlabelled']} unlabelled, "
          f"{result['skipped_files']} bad files skipped); results in {result['out_dir']}")
    for fig in result["figures"]:
        print(f"figure: {fig}")
    return 0
