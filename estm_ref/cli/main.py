"""The `estm` command line. Each subcommand lives in its own module, imported on use.

A command module provides `add_arguments(parser)` and `run(args) -> int` (exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "selfcheck": ("estm_ref.cli.selfcheck", "check the Triton scan against the reference on a device"),
    "train": ("estm_ref.train", "train one ESTM model on all machines of DCASE 2020 Task 2 data"),
    "test": ("estm_ref.evaluate", "score the test clips of a run: Table I, DCASE files, figures"),
    "score": ("estm_ref.score", "anomaly score and decision for single WAV files"),
    "demo": ("estm_ref.demo", "synthetic data -> train -> test -> table, on a CPU in minutes"),
    "ablation": ("estm_ref.ablation", "the Table II grid: paths x features"),
    "synth": ("estm_ref.cli.synth", "write seeded synthetic machine sounds in the DCASE 2020 Task 2 layout"),
    "model-summary": ("estm_ref.summary", "shape after every stage and parameter counts of an ESTM model"),
    "bench": ("estm_ref.bench_cli", "benchmarks from the source tree: bench scan | bench train"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser when `command` is None; otherwise only that command's module is
    imported, so a command runs without the dependencies of the others (e.g. selfcheck
    on a machine without soundfile)."""
    parser = argparse.ArgumentParser(prog="estm", description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # bad input (a file, a flag, a run folder): a message, not a traceback
        logging.getLogger("estm").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
