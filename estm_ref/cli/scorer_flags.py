"""The scorer flags `estm test` and `estm score` share: --scorer and one flag per scorer
parameter that has a help text, all read from the scorer registry."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from estm_ref.pipeline.scorers import DEFAULT_SCORER, SCORERS

_PREFIX = "scorer_"


def _flagged_fields():
    """(scorer name, field) of every parameter that is a flag; one flag per field name."""
    seen: dict[str, str] = {}
    for name, cls in SCORERS.items():
        for f in fields(cls):
            if f.init and "help" in f.metadata:
                if f.name in seen:
                    raise ValueError(f"scorers {seen[f.name]} and {name} both have a flag "
                                     f"parameter {f.name!r}; give one another name")
                seen[f.name] = name
                yield name, f


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    # no argparse `choices`: an unknown name is bad input, reported in one line (exit 2)
    summaries = "; ".join(f"{name}: {cls.summary}" for name, cls in SCORERS.items())
    parser.add_argument("--scorer", default=DEFAULT_SCORER, metavar="NAME",
                        help=f"{' | '.join(SCORERS)} (default {DEFAULT_SCORER}). {summaries}")
    for _, f in _flagged_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=_PREFIX + f.name, default=default, help=help_text,
                                action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(flag, dest=_PREFIX + f.name, default=default, type=type(default),
                                metavar=type(default).__name__.upper(), help=help_text)


def scorer_params(args: argparse.Namespace) -> dict[str, Any]:
    """{parameter: value} of every scorer flag, for `make_scorer`."""
    return {f.name: getattr(args, _PREFIX + f.name) for _, f in _flagged_fields()}
