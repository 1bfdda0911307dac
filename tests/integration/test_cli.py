"""The `estm` entry point: every command is registered and parses; a command imports only its module."""

import subprocess
import sys

import pytest

from estm_ref.cli.main import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_builds_its_parser(command):
    parser = build_parser(command)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "--help"])
    assert exit_info.value.code == 0


def test_a_command_does_not_import_the_others():
    code = ("import sys; from estm_ref.cli.main import build_parser; build_parser('selfcheck'); "
            "print(sorted(m for m in sys.modules if m.startswith('estm_ref.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "estm_ref.synth.generate" not in out and "estm_ref.data" not in out and "estm_ref.cli.selfcheck" in out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
