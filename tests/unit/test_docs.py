"""The documentation cannot drift from the code.

Every `estm ...` and `python bench/...` command in README.md, CONTRIBUTING.md and docs/*.md
parses with the current argument parsers (commands in code blocks in full; commands quoted
inline in prose: their subcommand and every flag exist). Every relative link (and its
#anchor) and every repository path mentioned exists. No tracked file cites a design
document outside the repository. Fast: parsers are built, nothing is run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is not installed: import it from the source tree

from estm_ref.cli.main import build_parser  # noqa: E402

DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:estm_ref|triton_kernels|bench|tests|docs|\.ci)/"
                       r"[A-Za-z0-9_./{},*-]*[A-Za-z0-9_}/*])")
SHELL_SEPARATORS = {"&&", "||", ";", "|"}


# ----------------------------------------------------------------------------- reading the pages


def split_page(text: str) -> tuple[list[tuple[str, str]], str]:
    """([(language, line) of every line inside a fenced block], the prose outside them)."""
    code, prose, lang = [], [], None
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            lang = fence.group(1) if lang is None else None
            continue
        (code.append((lang, line)) if lang is not None else prose.append(line))
    return code, "\n".join(prose)


def commands(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """(program, arguments) of each `estm ...` / `-m estm_ref ...` / `python bench/X.py ...`
    in a tokenised shell line; program is "estm" or a bench script path."""
    found, segment = [], []
    for tok in [*tokens, ";"]:
        if tok not in SHELL_SEPARATORS:
            segment.append(tok)
            continue
        for i, t in enumerate(segment):
            if t == "estm" and i == 0:
                found.append(("estm", segment[1:]))
            elif t == "-m" and segment[i + 1:i + 2] == ["estm_ref"]:
                found.append(("estm", segment[i + 2:]))
            elif t in ("python", "python3") and i + 1 < len(segment) and \
                    re.fullmatch(r"bench/\w+\.py", segment[i + 1]):
                found.append((segment[i + 1], segment[i + 2:]))
        segment = []
    return found


def page_commands(path: Path) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
    """(commands in shell code blocks, commands quoted inline in prose) of one page."""
    code, prose = split_page(path.read_text())
    full = []
    for lang, line in code:
        if lang not in ("", "bash", "sh", "shell", "console"):
            continue
        line = re.sub(r"^\s*\$\s+", "", line)
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # prose in a block (an apostrophe): words will do
            tokens = line.split("#")[0].split()
        full += commands(tokens)
    inline = []
    for span in INLINE.findall(prose):
        if re.match(r"(estm|python3? bench/\w+\.py)( |$)", span):
            try:
                inline += commands(shlex.split(span))
            except ValueError:
                continue
    return full, inline


# ----------------------------------------------------------------------------- the parsers


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def bench_parser(script: str) -> argparse.ArgumentParser | None:
    """The argument parser a bench script builds in its main(), caught before it parses;
    None for a script that takes no arguments."""
    path = ROOT / script
    if "argparse" not in path.read_text():
        return None
    module = importlib.import_module("bench." + path.stem)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = capture
    argv = sys.argv
    try:
        sys.argv = [script]
        try:
            module.main(*([[]] if inspect.signature(module.main).parameters else []))
        except _Captured as caught:
            return caught.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original
        sys.argv = argv
    raise AssertionError(f"{script}: main() did not build an argument parser")


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def exact(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser (and its subcommands) without abbreviations: a page must spell each flag
    in full, so a renamed flag that happens to be a prefix of another still fails."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                exact(sub)
    return parser


def parse_error(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """argparse's message when `args` do not parse, else None."""
    exact(parser)
    err = StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(StringIO()):
            parser.parse_args(args)
    except SystemExit as exit_:
        if exit_.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def unknown_flags(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    known = {s for a in parser._actions for s in a.option_strings}
    return [a.split("=")[0] for a in args if a.startswith("--") and a.split("=")[0] not in known]


_PARSERS: dict[str, argparse.ArgumentParser | None] = {}


def parser_for(program: str) -> argparse.ArgumentParser | None:
    if program not in _PARSERS:
        _PARSERS[program] = build_parser() if program == "estm" else bench_parser(program)
    return _PARSERS[program]


def command_problems(path: Path) -> list[str]:
    full, inline = page_commands(path)
    problems = []
    for program, args in full + inline:
        if program != "estm" and not (ROOT / program).is_file():
            problems.append(f"{program} does not exist")
    full, inline = [c for c in full if c[0] == "estm" or (ROOT / c[0]).is_file()], \
        [c for c in inline if c[0] == "estm" or (ROOT / c[0]).is_file()]
    for program, args in full:
        parser = parser_for(program)
        if parser is None:
            if args:
                problems.append(f"{program} takes no arguments, given {args}")
            continue
        error = parse_error(parser, args)
        if error:
            problems.append(f"`{program} {' '.join(args)}`: {error}")
    for program, args in inline:
        parser = parser_for(program)
        if program == "estm":
            if not args or args[0].startswith(("-", ".", "<")):
                continue  # `estm`, `estm --help`, `estm ...`: no command named
            sub = subparser(parser, args[0])
            if sub is None:
                problems.append(f"`estm {' '.join(args)}`: no command {args[0]!r}")
                continue
            parser, args = sub, args[1:]
        if parser is not None:
            problems += [f"`{program} ... {flag}`: no such flag" for flag in unknown_flags(parser, args)]
    return problems


# ----------------------------------------------------------------------------- links and paths


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = split_page(path.read_text())
    return {slug(line.lstrip("#")) for line in prose.splitlines() if line.startswith("#")}


def expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for alt in match.group(1).split(",")
            for p in expand_braces(path[:match.start()] + alt + path[match.end():])]


def link_problems(path: Path) -> list[str]:
    text = path.read_text()
    problems = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"link to {target}: {file_part} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"link to {target}: no heading #{anchor} in {dest.name}")
    for mention in REPO_PATH.findall(text):
        for candidate in expand_braces(mention.rstrip(".,")):
            if not ((ROOT / candidate).exists() or "*" in candidate and any(ROOT.glob(candidate))):
                problems.append(f"path {candidate} does not exist")
    return problems


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        return [ROOT / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".ci-venv", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


# the two names written in pieces, so that this file does not match itself
OUTSIDE_DOCUMENT = re.compile(r"\b" + "SP" + r"EC\b|\b" + "STY" + r"LE\.md\b")


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_parses(page):
    assert command_problems(page) == []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_and_path_exists(page):
    assert link_problems(page) == []


QUOTED_ROWS = re.compile(r"<!-- rows of (bench/results/[\w./-]+\.md) -->")


def table_after(lines: list[str], start: int) -> list[dict[str, str]]:
    """The rows of the Markdown table that starts at or after lines[start], as dicts."""
    while start < len(lines) and not lines[start].startswith("|"):
        start += 1
    block = []
    while start < len(lines) and lines[start].startswith("|"):
        block.append([c.strip() for c in lines[start].strip().strip("|").split("|")])
        start += 1
    return [dict(zip(block[0], row)) for row in block[2:]] if block else []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_quoted_result_rows_match_their_file(page):
    """A table marked `<!-- rows of bench/results/X.md -->` quotes rows of that file: each
    of its rows equals a row of the file in every column they share."""
    lines = page.read_text().splitlines()
    for n, line in enumerate(lines):
        match = QUOTED_ROWS.search(line)
        if not match:
            continue
        source = ROOT / match.group(1)
        assert source.is_file(), f"{page.name}:{n + 1}: {match.group(1)} does not exist"
        src_lines = source.read_text().splitlines()
        rows = table_after(src_lines, 0)
        quoted = table_after(lines, n + 1)
        assert quoted, f"{page.name}:{n + 1}: no table after the marker"
        for row in quoted:
            assert any(all(src.get(k, v) == v for k, v in row.items()) for src in rows), \
                f"{page.name}: row {row} is not in {match.group(1)}"


def test_the_pages_hold_commands():
    """The extraction itself works: the pages' commands are found."""
    full, _ = page_commands(ROOT / "README.md")
    assert ("estm", ["demo"]) in full
    assert sum(len(page_commands(p)[0]) for p in DOCS) > 20


def test_no_file_cites_a_document_outside_the_repository():
    hits = []
    for path in tracked_files():
        if path.suffix in {".gz", ".png", ".npy", ".pt", ".wav"} or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                 if OUTSIDE_DOCUMENT.search(line)]
    assert hits == []


def test_no_history_in_readme_or_docs():
    """Git keeps the history: no "version N" narrative, no commit hashes in prose."""
    hits = []
    for page in DOCS:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if re.search(r"\bversion [0-9]", line, re.I) or \
                    re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", line):
                hits.append(f"{page.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


def test_readme_is_short_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    ci = (ROOT / ".ci" / "run").read_text()
    for step in ('pip install torch==2.13.0 && pip install -e ".[test]"', "python -m pytest -q"):
        assert step in readme and step in ci, step
