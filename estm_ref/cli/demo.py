"""`estm demo`: synthetic data -> train -> test under every scorer, beside two baselines on
the same clips -> one table, on a CPU in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path

from estm_ref.config import add_config_arguments, overrides_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("estm-demo"),
                        help="folder for data, run and results (default ./estm-demo)")
    parser.add_argument("--tiny", action="store_true",
                        help="a much smaller setting, used by the test suite")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from estm_ref.pipeline.demo import run_demo

    result = run_demo(args.out, args.tiny, overrides_from_args(args), args.device,
                      not args.no_progress)
    print("\nESTM under each scorer and two baselines on the same synthetic DCASE 2020 "
          "Task 2 test clips (AUC / pAUC, %; * = ESTM's default scorer):\n")
    print(result["demo_table"])
    print(f"\nAE baseline: the official recipe except {'; '.join(result['ae_divergences'])}")
    print(f"results: {result['out_dir']}")
    for fig in result["figures"]:
        print(f"figure:  {fig}")
    print(f"total time: {result['seconds']:.0f} s")
    return 0
