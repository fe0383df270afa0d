"""``netsim lab up|exec|status|verify|down``: parse arguments, call one function of the lab, print the result.

Owns: the lab's click group and the real runner's preconditions (root, iptables, iproute2), each a
one-line error with exit status 2 through ``netsim.cli.main``. Never does: decide anything (``control``),
or import pyroute2 (only ``netsim.lab.netns`` does, when a command really touches netlink).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from netsim.errors import LabError

if TYPE_CHECKING:
    from netsim.lab.runner import RealRunner
    from netsim.lab.state import LabState

RECENT_CONNECTIONS = 10  # listener log lines `status` shows per listener


def _runner() -> RealRunner:
    from netsim.lab.runner import RealRunner, check_host

    check_host()
    return RealRunner()


def _state(name: str) -> LabState:
    from netsim.lab import state as st

    state = st.load(name)
    if state is None:
        raise LabError(f"no lab named {name} (nothing recorded in {st.run_dir(name)})")
    return state


@click.group("lab")
def lab_group() -> None:
    """A real pod network namespace running the compiled rules, the DNS agent and recording listeners."""


@lab_group.command("up")
@click.option("--pod", "pod_file", required=True, metavar="FILE", help="pod (or workload) manifest")
@click.option("--name", default=None, help="lab name = the pod's namespace name (default: the pod's name)")
@click.option("--services", "services_flag", is_flag=True,
              help="the files or directories that follow are Services/ServiceEntries for the DNS agent")
@click.argument("services", nargs=-1, metavar="[--services FILE|DIR...]", type=click.Path())
@click.option("--upstream", "upstreams", multiple=True, metavar="HOST:PORT",
              help="the agent's upstream resolver (default: the pod's nameservers, as pilot-agent does)")
@click.option("--namespace", default="default", show_default=True, help="the pod's Kubernetes namespace")
@click.option("--app-uid", default=1000, show_default=True, type=click.IntRange(0, 2**32 - 2),
              help="uid `lab exec` runs commands as")
@click.option("--istio-version", default=None, metavar="X.Y[.Z]")
def up_cmd(pod_file: str, name: str | None, services_flag: bool, services: tuple[str, ...], upstreams: tuple[str, ...],
           namespace: str, app_uid: int, istio_version: str | None) -> None:
    """Create the pod and node namespaces, load the rules, start the agent and listeners (idempotent).

    Example: netsim lab up --pod pod.yaml --services svc.yaml serviceentries/
    """
    if services and not services_flag:
        raise click.UsageError(f"unexpected argument {services[0]!r}: Services files go after --services")
    from netsim.lab.control import up
    from netsim.lab.inputs import lab_spec

    runner = _runner()
    spec = lab_spec(pod_file, name=name, services=services, upstreams=upstreams, namespace=namespace,
                    app_uid=app_uid, istio_version=istio_version)
    result = up(runner, spec)
    if result.note:
        click.echo(result.note)
    if not result.changed:
        click.echo(f"lab {spec.name} is already up; nothing changed")
        return
    pods = ", ".join(str(i.ip) for i in spec.pod_ips)
    nodes = ", ".join(str(i.ip) for i in spec.node_ips)
    from netsim.lab.state import run_dir

    click.echo(f"lab {spec.name} up: pod netns {spec.name} ({pods}), node netns {spec.node} ({nodes}); "
               f"listeners {spec.proxy_port}, {spec.inbound_port}"
               f", DNS agent {spec.dns_port}; logs in {run_dir(spec.name)}")


@lab_group.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--uid", type=click.IntRange(0, 2**32 - 2), default=None, help="default: the app's uid")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(name: str, uid: int | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in the pod namespace as the app's uid (``netsim lab exec N -- getent hosts x``)."""
    from netsim.lab.control import exec_argv
    from netsim.lab.runner import netns_argv

    _runner()
    state = _state(name)
    e = exec_argv(state, command, uid)
    done = subprocess.run(netns_argv(e.netns, e.argv, e.uid, e.gid), check=False)
    sys.exit(done.returncode)


def _recent(path: Path, n: int) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" not in record:
            out.append(record)
    return out[-n:]


@lab_group.command("status")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status_cmd(name: str, fmt: str) -> None:
    """The rules with live packet counters, the processes, and the listeners' recent connections."""
    from netsim.lab import state as st
    from netsim.lab.control import health
    from netsim.lab.runner import Exec
    from netsim.netfilter.model import Family

    runner = _runner()
    state = _state(name)
    problems = health(runner, state)
    rules: dict[str, str] = {}
    if not any("namespace" in p for p in problems):
        for family in Family:
            if family is Family.IPV6 and state.info.get("rules_v6") is None:
                continue
            rules[f"ipv{family.value}"] = runner.run(Exec(netns=name, argv=(family.save_command, "-c"))).stdout
    procs = [{"role": p.role, "pid": p.pid, "log": p.log} for p in state.of(st.Process)]
    recent = {p.role: _recent(Path(p.log), RECENT_CONNECTIONS) for p in state.of(st.Process)
              if p.role.startswith("listener-")}
    if fmt == "json":
        click.echo(json.dumps({"name": name, "healthy": not problems, "problems": problems, "info": {
            k: v for k, v in state.info.items() if not k.startswith("rules_")}, "processes": procs,
            "rules": rules, "connections": recent}, indent=2))
        return
    click.echo(f"lab {name}: " + ("healthy" if not problems else "; ".join(problems)))
    click.echo(f"pod netns {name} {', '.join(state.info.get('pod_ips', []))}; "
               f"node netns {state.info.get('node_netns')} {', '.join(state.info.get('node_ips', []))}")
    for p in procs:
        click.echo(f"process {p['role']}: pid {p['pid']}, log {p['log']}")
    for fam, text in rules.items():
        click.echo(f"--- {fam} rules [packets:bytes]")
        click.echo(text.rstrip("\n"))
    for role, records in recent.items():
        click.echo(f"--- {role}: last {len(records)} connections")
        for r in records:
            click.echo(f"{r.get('time', '')} {r.get('peer')} -> {r.get('original_dst')} "
                       f"{r.get('result', '')}")


@lab_group.command("verify")
@click.argument("name")
@click.option("--probes", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", default=None, type=int, help="seed of the random probes (default: random)")
@click.option("--family", type=click.Choice(["4", "6", "all"]), default="all", show_default=True,
              help="all: every family the pod has an address in")
@click.option("--verbose", "-v", is_flag=True, help="print every probe's two traces")
def verify_cmd(name: str, probes: int, seed: int | None, family: str, verbose: bool) -> None:
    """Send random probes (per family); compare the kernel's trace (`xtables-monitor --trace`, IPv6: `nft monitor
    trace`) with `netsim trace` on the same rules."""
    from netsim.lab.verify import verify

    runner = _runner()
    state = _state(name)
    report = verify(runner, state, probes=probes, seed=seed, families=() if family == "all" else (int(family),))
    for line in report.lines(verbose=verbose):
        click.echo(line)
    if not report.agreed:
        sys.exit(1)


@lab_group.command("down")
@click.argument("name")
def down_cmd(name: str) -> None:
    """Remove every namespace, link, route, rule, process and file the lab made (idempotent)."""
    from netsim.lab.control import down

    if down(_runner(), name):
        click.echo(f"lab {name} down")
    else:
        click.echo(f"no lab named {name}; nothing to do")


__all__ = ["lab_group"]
