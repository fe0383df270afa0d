"""Command line: parse arguments, call one core function, print its result.

Subcommands are loaded lazily (click's "Lazily Loading Subcommands" pattern) so that
``netsim compile`` never imports the DNS server, scapy or pyroute2.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from netsim.errors import NetsimError

# name -> "module:attribute" of a click command or group
_COMMANDS: dict[str, str] = {
    "compile": "netsim.capture.cli:compile_cmd",
    "trace": "netsim.netfilter.cli:trace_cmd",
    "dns": "netsim.dns.cli:dns_group",
    "lab": "netsim.lab.cli:lab_group",
    "mesh": "netsim.mesh.cli:mesh_group",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if self._importable(name))

    @staticmethod
    def _importable(name: str) -> bool:
        module = _COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None or not self._importable(cmd_name):
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netsim")
def cli() -> None:
    """See what Istio's sidecar capture does to a pod's packets and DNS queries, offline."""


def main(argv: list[str] | None = None) -> Any:
    """Entry point: a NetsimError becomes one ``Error:`` line and exit status 2, never a traceback."""
    try:
        return cli.main(args=argv, prog_name="netsim", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except NetsimError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(1)
