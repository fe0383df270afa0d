"""Run ``netsim`` in-process exactly as the console script does (``netsim.cli.main``), capturing
stdout, stderr and the exit status, with istio-iptables' environment variables cleared; and split
iptables-save output into tables for comparing."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from click.testing import CliRunner

from netsim.cli import main
from netsim.spec.flags import ENV_TO_KEY, OPTIONS_BY_KEY

REPO = Path(__file__).resolve().parents[2]


class Run(NamedTuple):
    """A run's exit status and output; unpacks as ``code, stdout, stderr``."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str | None]:
    env: dict[str, str | None] = {name: None for name in ENV_TO_KEY}
    env.update(extra or {})
    return env


def run(args: Sequence[str], env: Mapping[str, str] | None = None) -> Run:
    """``netsim ARGS`` in the repository root (examples are named ``rules/...``, as a user in a
    checkout would); an exception escaping ``main`` fails the test."""
    runner = CliRunner()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with runner.isolation(env=clean_env(env)) as (out, err, _):
            code: int | str | None = 0
            try:
                code = main(list(args))  # the console script exits with what main returns
            except SystemExit as e:
                code = e.code
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        os.chdir(cwd)
    assert isinstance(code, int) or code is None, code
    return Run(code=code or 0, stdout=stdout, stderr=stderr)


def netsim(*args: str, env: Mapping[str, str] | None = None) -> Run:
    return run(args, env)


def compile_(*args: str, env: Mapping[str, str] | None = None) -> Run:
    return run(["compile", *args], env)


def save_tables(text: str) -> dict[str, str]:
    """An iptables-save text as ``{table: its lines}``, comments and blank lines dropped: the order of
    table blocks depends on the iptables backend, so outputs are compared table by table."""
    tables: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("*"):
            name = line[1:]
            tables[name] = ""
        tables[name] += line + "\n"
    return tables


SKIP_KEYS = {"HOST_IP"}


def invocation(config: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The case's config as ``netsim compile`` arguments and environment."""
    args: list[str] = []
    env: dict[str, str] = {}
    for key, value in config.items():
        if key in SKIP_KEYS:
            continue
        if key == "ENABLE_INBOUND_IPV6":
            args.append(f"--ipv6={str(value).lower()}")
        elif key in ("DNS_SERVERS_V4", "DNS_SERVERS_V6"):
            args.append(f"--dns-servers-v{key[-1]}={','.join(value)}")
        elif key in OPTIONS_BY_KEY and OPTIONS_BY_KEY[key].long is None:
            env[key] = str(value)
        elif isinstance(value, bool):
            args.append(f"--{key}={str(value).lower()}")
        else:
            args.append(f"--{key}={value}")
    return args, env
