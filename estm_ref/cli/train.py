"""`estm train`: train one ESTM model on all machines (the paper's protocol by default)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from estm_ref.config import (PRESETS, Config, add_config_arguments, load_toml, overrides_from_args,
                             preset_overrides, with_overrides)
from estm_ref.errors import InputError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", action="append", required=True, type=Path,
                        help="DCASE 2020 Task 2 root (repeat for dev + additional data)")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--config", type=Path, help="TOML file with [features] [model] [train]")
    parser.add_argument("--preset", metavar="NAME",
                        help=f"measured settings for a case the paper's protocol does not fit: "
                             f"{', '.join(PRESETS)} (up to ~100 training clips per ID); flags "
                             "given beside it override it")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--force", action="store_true", help="overwrite the run in --out")
    parser.add_argument("--cache-dir", type=Path, help="decoded-audio cache (default RUN/cache)")
    add_config_arguments(parser)


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults, then the preset or the TOML file (not both), then the flags given."""
    if args.preset and args.config:
        raise InputError("--preset and --config both set the config; put the preset's "
                         "settings in the file, or give flags beside the preset")
    base = load_toml(args.config) if args.config else Config()
    if args.preset:
        base = with_overrides(base, preset_overrides(args.preset))
    return with_overrides(base, overrides_from_args(args))


def resume_overrides(args: argparse.Namespace) -> dict | None:
    """What --resume may change of the saved config: only the number of epochs."""
    if not args.resume:
        return None
    overrides = overrides_from_args(args)
    extra = {k for values in overrides.values() for k in values} - {"epochs"}
    if extra or args.config or args.preset:
        raise InputError("--resume continues the saved config; only --epochs may change "
                         f"(got {sorted(extra) or ('--config' if args.config else '--preset')})")
    return overrides.get("train")


def run(args: argparse.Namespace) -> int:
    from estm_ref.pipeline.train import train
    from estm_ref.runtime import shutdown_distributed

    epoch_overrides = resume_overrides(args)
    cfg = config_from_args(args)
    try:
        summary = train(cfg, args.data_root, args.out, device=args.device, resume=args.resume,
                        force=args.force, progress=not args.no_progress,
                        cache_dir=args.cache_dir, epoch_overrides=epoch_overrides)
    finally:
        shutdown_distributed()
    summary.pop("model")
    log.info("training finished: %s", json.dumps(summary))
    return 0
