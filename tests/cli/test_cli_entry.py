"""The top-level command: every subcommand loads and helps; errors are one line; start-up stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


# what a plain `compile --pod` / `trace --pod` never needs: --explain's report, the other compile formats'
# renderers, the Envoy model, the whole-dump reader of --rules (each a cost at every cold start)
NEEDLESS = ("netsim.spec.explain", "netsim.capture.nft", "netsim.capture.dryrun", "netsim.mesh", "netsim.dns",
            "netsim.registry", "netsim.lab")


@pytest.mark.parametrize("argv", [["compile", "--pod", "rules/mtls-503/pod.yaml"],
                                  ["trace", "--pod", "rules/mtls-503/pod.yaml", "--from", "10.1.2.3", "--dst",
                                   "10.244.0.5:80"]])
def test_the_pod_commands_load_only_what_they_use(argv: list[str]) -> None:
    from conftest import REPO

    code = (
        "import sys, json; from netsim.cli import main\n"
        "try:\n    main(" + repr(argv) + ")\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print(json.dumps([m for m in sys.modules if m.startswith({NEEDLESS!r})]), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def test_spec_exports_stay_functions_after_their_modules_load_lazily() -> None:
    code = ("import sys, netsim.spec\nassert 'netsim.spec.explain' not in sys.modules\n"
            "import netsim.spec.explain, netsim.spec.resolve\n"
            "from netsim.spec import explain, resolve\nfrom netsim.spec.explain import render_text\n"
            "print(explain.__module__, resolve.__module__, callable(render_text))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["netsim.spec.explain", "netsim.spec.resolve", "True"], proc.stderr


def test_compile_pod_loads_no_packet_model_trace_or_dump_reader() -> None:
    """compile --pod renders rules: the netfilter package's packet model, trace steps, engine and dump reader
    load only when a command uses them (bench/RESULTS.md: ~10 ms of its cold start)."""
    from conftest import REPO

    lazy = ("netsim.netfilter.packet", "netsim.netfilter.trace", "netsim.netfilter.engine", "netsim.netfilter.dump")
    code = (
        "import sys, json; from netsim.cli import main\n"
        "try:\n    main(['compile', '--pod', 'rules/mtls-503/pod.yaml'])\nexcept SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        f"print(json.dumps([m for m in {lazy!r} if m in sys.modules]), file=sys.stderr)\n"
        "from netsim.netfilter import Packet, Step, trace\n"
        "import netsim.netfilter.trace\n"
        "import netsim.netfilter as nf\n"
        "assert callable(nf.trace) and nf.trace is trace and Step.__module__ == 'netsim.netfilter.trace'\n"
        "assert Packet.__module__ == 'netsim.netfilter.packet'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def test_python_dash_m_keeps_the_exit_status() -> None:
    """``python -m netsim`` exits with the command's status, as the ``netsim`` script does (``--expect``: 1 when
    the verdict is another)."""
    pod = Path(__file__).resolve().parents[2] / "rules" / "mtls-503" / "pod.yaml"
    codes = {}
    for expect in ("captured", "bypassed"):
        r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", str(pod), "--from", "10.1.2.3",
                            "--dst", "10.244.0.5:80", "--expect", expect], capture_output=True, text=True)
        codes[expect] = r.returncode
    assert codes == {"captured": 0, "bypassed": 1}
