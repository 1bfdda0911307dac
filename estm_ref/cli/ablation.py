"""`estm ablation`: the paper's Table II grid (SMamba / TMamba / STMamba x STgram / ESTgram)."""

from __future__ import annotations

import argparse
from pathlib import Path

from estm_ref.config import Config, add_config_arguments, overrides_from_args, with_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", action="append", type=Path,
                        help="data root(s); default: generate the demo's synthetic set in OUT/data")
    parser.add_argument("--out", type=Path, default=Path("estm-ablation"))
    parser.add_argument("--demo-config", action="store_true",
                        help="start from the demo's small config instead of the paper defaults")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from estm_ref.pipeline.ablation import format_ablation, run_ablation
    from estm_ref.pipeline.demo import demo_config

    base = demo_config() if args.demo_config else Config()
    base = with_overrides(base, overrides_from_args(args))
    results = run_ablation(args.out, args.data_root, base, args.device, not args.no_progress)
    print("\nTable II (average AUC / pAUC, %):\n")
    print(format_ablation(results))
    return 0
