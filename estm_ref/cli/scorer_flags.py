"""The scorer flags `estm test` and `estm score` share, defined once."""

from __future__ import annotations

import argparse

from estm_ref.pipeline.scorers import DEFAULT_K, DEFAULT_N_CENTRES, DEFAULT_SCORER, SCORERS


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    # no argparse `choices`: an unknown name is bad input, reported in one line (exit 2)
    parser.add_argument("--scorer", default=DEFAULT_SCORER, metavar="NAME",
                        help=f"{' | '.join(SCORERS)} (default {DEFAULT_SCORER}; nll is the "
                             "paper's -log p of the own class)")
    parser.add_argument("--k", type=int, default=DEFAULT_K,
                        help=f"neighbours of the knn scorer (default {DEFAULT_K})")
    parser.add_argument("--n-centres", type=int, default=DEFAULT_N_CENTRES,
                        help=f"k-means centres per ID of the centres scorer (default "
                             f"{DEFAULT_N_CENTRES})")
    parser.add_argument("--no-margin", action="store_true",
                        help="nll without the ArcFace margin on the own class")
