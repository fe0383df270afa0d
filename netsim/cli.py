"""Command line: parse arguments, call one core function, print its result.

Subcommands are loaded lazily (click's "Lazily Loading Subcommands" pattern) so that
``netsim compile`` never imports the DNS server, scapy or pyroute2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from netsim.errors import NetsimError, one_line

# name -> "module:attribute" of a click command or group, and its one-line help for `netsim --help`
# (kept here so that listing the commands imports none of them).
_COMMANDS: dict[str, tuple[str, str]] = {
    "compile": ("netsim.capture.cli:compile_cmd", "Print the rules Istio writes into a pod (sidecar or ambient)."),
    "trace": ("netsim.commands.trace:trace_cmd", "Follow a packet through the rules and the proxy's hops."),
    "dns": ("netsim.dns.cli:dns_group", "pilot-agent's DNS proxy: serve, list its names, query offline."),
    "lab": ("netsim.lab.cli:lab_group", "A real pod network namespace running the rules and the agent."),
    "mesh": ("netsim.mesh.cli:mesh_group", "Which Envoy listener and cluster a captured connection reaches."),
    "diagnose": ("netsim.mesh.cli:diagnose_cmd", "Check one workload for the known capture pitfalls."),
    "check": ("netsim.commands.check:check_cmd", "Check every workload of manifests or a cluster dump, for CI."),
    "drift": ("netsim.commands.drift:drift_cmd", "Compare a pod's rules (a dump) with what its spec gives."),
    "infer": ("netsim.commands.infer:infer_cmd", "Tell which generator, release and options wrote a pod's rules."),
    "migrate": ("netsim.commands.migrate:migrate_cmd", "What changes in a pod's capture when it moves to ambient."),
}


# optional dependency (top-level module) -> the extra that installs it (pyproject.toml's optional-dependencies)
OPTIONAL_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "pyroute2": ("pyroute2", "lab"),
    "scapy": ("scapy", "pcap"),
    "uvloop": ("uvloop", "fast"),
}


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """The one-line hint for an optional dependency that is not installed, or None for any other module."""
    found = OPTIONAL_DEPENDENCIES.get((e.name or "").split(".")[0])
    if found is None:
        return None
    package, extra = found
    return f"{package} is not installed; this command needs it: pip install 'netsim[{extra}]'"


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netsim")
def cli() -> None:
    """See what Istio's traffic capture (sidecar or ambient) does to a pod's packets and DNS queries, offline."""


def _error(message: str) -> None:
    """Print ``Error: message`` as one line under MAX_ERROR_LINE characters, whatever the message holds."""
    click.echo(one_line(f"Error: {message}"), err=True)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: a NetsimError or a usage error becomes one ``Error:`` line and exit status 2, never a
    traceback."""
    try:
        return cli.main(args=argv, prog_name="netsim", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.UsageError as e:
        # one line, like every other error (click would print the usage block first)
        hint = ""
        if not isinstance(e, click.BadParameter):  # a wrong word rather than a wrong value: point at --help
            hint = f" (see '{e.ctx.command_path if e.ctx is not None else 'netsim'} --help')"
        _error(f"{e.format_message()}{hint}")
        sys.exit(e.exit_code)
    except click.ClickException as e:
        _error(e.format_message())
        sys.exit(e.exit_code)
    except NetsimError as e:
        _error(str(e))
        sys.exit(2)
    except ModuleNotFoundError as e:
        missing = missing_extra(e)
        if missing is None:
            raise
        _error(missing)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(1)
