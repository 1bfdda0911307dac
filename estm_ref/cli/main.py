"""The `estm` command line. Each subcommand lives in its own module, imported on use.

A command module provides `add_arguments(parser)` and `run(args) -> int` (exit code) and
does nothing but parse and make one call into the layers below. The flags several
commands share (--device, --no-progress, --quiet) are defined here once, and so is the
mapping of the project's errors to exit codes: `InputError` (bad input) -> a one-line
message and 2, `TrainingError` (a run that cannot go on) -> the message and 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from estm_ref.errors import InputError, TrainingError

log = logging.getLogger("estm")

# name -> (module, one-line help, shared flags it takes)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "selfcheck": ("estm_ref.cli.selfcheck",
                  "check the Triton scan against the reference on a device", ()),
    "train": ("estm_ref.cli.train",
              "train one ESTM model on all machines of DCASE 2020 Task 2 data",
              ("device", "progress")),
    "test": ("estm_ref.cli.test", "score the test clips of a run: Table I, DCASE files, figures",
             ("device", "progress")),
    "score": ("estm_ref.cli.score", "anomaly score and decision for single WAV files",
              ("device",)),
    "demo": ("estm_ref.cli.demo", "synthetic data -> train -> test -> table, on a CPU in minutes",
             ("device", "progress")),
    "ablation": ("estm_ref.cli.ablation", "the Table II grid: paths x features",
                 ("device", "progress")),
    "synth": ("estm_ref.cli.synth",
              "write seeded synthetic machine sounds in the DCASE 2020 Task 2 layout",
              ("progress",)),
    "scan-check": ("estm_ref.cli.scan_check",
                   "check any selective scan against the reference: every case, output and gradient", ()),
    "model-summary": ("estm_ref.cli.model_summary",
                      "shape after every stage and parameter counts of an ESTM model", ()),
}


def _add_shared(parser: argparse.ArgumentParser, flags: tuple[str, ...]) -> None:
    # SUPPRESS: a subcommand's --quiet must not reset one given before the command
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors")
    if "device" in flags:
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    if "progress" in flags:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser when `command` is None; otherwise only that command's module is
    imported, so a command runs without the dependencies of the others (e.g. selfcheck
    on a machine without soundfile)."""
    parser = argparse.ArgumentParser(prog="estm", description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text, shared) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or name == command:
            _add_shared(p, shared)
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
    except InputError as err:
        log.error("%s", err)
        return 2
    except TrainingError as err:
        log.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
