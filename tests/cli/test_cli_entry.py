"""The top-level command: every subcommand loads and helps; errors are one line; start-up stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from netsim.cli import _COMMANDS, cli

SUBCOMMANDS = sorted(_COMMANDS)


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert f"  {name} " in result.output


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert result.exception is None


def test_unknown_subcommand_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "netsim", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "No such command 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_netsim_error_is_one_line_exit_2(tmp_path: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "netsim", "trace", "--rules", "/nonexistent/dump", "--dst",
                           "10.0.0.5:80"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ")
    assert "Traceback" not in proc.stderr


HEAVY = ("scapy", "pyroute2", "dnslib", "asyncio", "yaml")


@pytest.mark.parametrize("argv", [["--help"], ["trace", "--help"], ["compile", "--help"]])
def test_start_up_loads_nothing_heavy(argv: list[str]) -> None:
    code = (
        "import sys, json; from netsim.cli import main\n"
        "try:\n    main(" + repr(argv) + ")\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
