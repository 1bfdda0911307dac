"""`estm synth`: write seeded synthetic machine sounds in the DCASE 2020 Task 2 layout."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from estm_ref.synth.config import SynthConfig
from estm_ref.synth.generate import format_summary, generate
from estm_ref.synth.machines import MACHINE_TYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--out and one flag per `SynthConfig` field (its default and help from there)."""
    parser.add_argument("--out", required=True, type=Path, help="root folder of the data set")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes that render clips; same files (default %(default)s)")
    defaults, helps = SynthConfig(), SynthConfig.field_help()
    for f in fields(SynthConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "types":
            parser.add_argument(flag, nargs="+", choices=MACHINE_TYPES, metavar="TYPE",
                                default=list(defaults.types),
                                help=f"machine types (default all: {' '.join(MACHINE_TYPES)})")
            continue
        kind = type(getattr(defaults, f.name))
        parser.add_argument(flag, type=kind, default=getattr(defaults, f.name),
                            help=f"{helps[f.name]} (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    cfg = SynthConfig(**{f.name: getattr(args, f.name) for f in fields(SynthConfig)})
    summary = generate(args.out, cfg, progress=not args.no_progress, jobs=args.jobs)
    print(format_summary(summary))
    return 0
