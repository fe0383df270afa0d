"""``netsim lab up|exec|status|verify|list|down``: parse arguments, call one function of the lab, print the result.

Owns: the lab's click group and the real runner's preconditions (root, iptables, iproute2, the ``lab`` extra),
each a one-line error with exit status 2 through ``netsim.cli.main``; how ``exec`` passes signals on; how
``status`` shows the relays' records and ``verify`` its progress. Never does: decide anything (``control``),
or import pyroute2 (only ``netsim.lab.netns`` does, when a command really touches netlink).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from netsim.commands.progress import ProgressLine
from netsim.errors import LabError

if TYPE_CHECKING:
    from netsim.lab.runner import RealRunner
    from netsim.lab.state import LabState

RECENT_CONNECTIONS = 10  # connections `status` shows per relay
RECENT_QUERIES = 10  # queries the cluster DNS stand-in answered, shown by `status`


def _runner() -> RealRunner:
    from netsim.lab.runner import RealRunner, check_host

    if importlib.util.find_spec("pyroute2") is None:  # before anything is made, not at the first netlink call
        raise LabError("the lab needs pyroute2, which is not installed: pip install 'netsim[lab]'")
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
@click.option("--namespace", default=None,
              help="the pod's Kubernetes namespace (default: the manifest's metadata.namespace, else default)")
@click.option("--app-uid", default=1000, show_default=True, type=click.IntRange(0, 2**32 - 2),
              help="uid `lab exec` runs commands as")
@click.option("--istio-version", default=None, metavar="X.Y[.Z]")
@click.option("--backend", type=click.Choice(["iptables", "nft"]), default="iptables", show_default=True,
              help="nft: Istio's native nftables rules (netsim compile --backend nft), loaded with nft -f")
@click.option("--mode", type=click.Choice(["ambient", "sidecar"]), default=None,
              help="ambient: istio-cni's in-pod rules, its policy routes and stand-ins for ztunnel's sockets "
                   "(15001, 15006, 15008, DNS 15053, mark 0x539). Default: ambient when the pod or its namespace "
                   "(a Namespace object in the pod's file, --config or --services) is labelled "
                   "istio.io/dataplane-mode=ambient and the pod is not opted out; else sidecar.")
@click.option("--ambient-config", "ambient_settings", multiple=True, metavar="KEY=VALUE,...",
              help="Ambient: the node agent's settings (EnableIPv6, RedirectDNS, HostProbeSNATAddress, "
                   "HostProbeV6SNATAddress); default a real agent's of the release.")
@click.option("--config", "config_paths", multiple=True, metavar="PATH",
              help="Kubernetes objects (files or directories): the pod's Namespace and its labels.")
def up_cmd(pod_file: str, name: str | None, services_flag: bool, services: tuple[str, ...], upstreams: tuple[str, ...],
           namespace: str | None, app_uid: int, istio_version: str | None, backend: str, mode: str | None,
           ambient_settings: tuple[str, ...], config_paths: tuple[str, ...]) -> None:
    """Create the pod and node namespaces, load the rules, start the agent and listeners (idempotent).

    Example: netsim lab up --pod pod.yaml --services svc.yaml serviceentries/
    """
    if services and not services_flag:
        raise click.UsageError(f"unexpected argument {services[0]!r}: Services files go after --services")
    from netsim.lab.control import up
    from netsim.lab.inputs import lab_spec

    runner = _runner()
    if backend == "nft" and shutil.which("nft") is None:
        raise LabError("lab up --backend nft needs nft: install the nftables package")
    spec = lab_spec(pod_file, name=name, services=services, upstreams=upstreams, namespace=namespace,
                    app_uid=app_uid, istio_version=istio_version, backend=backend, mode=mode,
                    ambient_settings=ambient_settings, config_paths=config_paths)
    for note in spec.notes:
        click.echo(note)
    result = up(runner, spec)
    if result.note:
        click.echo(result.note)
    if not result.changed:
        click.echo(f"lab {spec.name} is already up; nothing changed")
        return
    pods = ", ".join(str(i.ip) for i in spec.pod_ips)
    nodes = ", ".join(str(i.ip) for i in spec.node_ips)
    from netsim.lab.state import run_dir

    dns = ", ".join(str(a) for a in spec.cluster_dns)
    relays = ", ".join(dict.fromkeys(str(p) for p in (spec.proxy_port, spec.inbound_port)))  # one before 1.3
    if spec.ambient:
        relays = (f"mode ambient: ztunnel stand-ins {spec.proxy_port}, {spec.inbound_port}, {spec.hbone_port} "
                  f"(mark {spec.mark:#x})")
    else:
        relays = f"relays {relays}"
    click.echo(f"lab {spec.name} up: pod netns {spec.name} ({pods}, namespace {spec.dns.namespace}), node netns "
               f"{spec.node} ({nodes}, cluster DNS {dns}); {relays}"
               f", DNS agent {spec.dns_port}; {'nftables' if spec.nft_rules is not None else 'iptables'} rules"
               f"; logs in {run_dir(spec.name)}")


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
    sys.exit(run_forwarding_signals(netns_argv(e.netns, e.argv, e.uid, e.gid)))


FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def run_forwarding_signals(argv: Sequence[str]) -> int:
    """Run ``argv`` and wait for it, passing SIGTERM/SIGINT/SIGHUP/SIGQUIT on to it; its exit status
    (128 + N when signal N ended it, as a shell reports it).

    ``ip netns exec`` and ``setpriv`` exec in place, so the child is the command itself. A signal the
    terminal sent to the whole foreground process group has reached the command already and is not sent twice.
    """
    proc: subprocess.Popen[bytes] | None = None
    early: list[int] = []  # signals that came before the child existed: sent to it as soon as it does

    def forward(signum: int, _frame: object) -> None:
        if signum != signal.SIGTERM and _from_terminal():
            return
        if proc is None:
            early.append(signum)
        else:
            proc.send_signal(signum)  # nothing if it has exited already

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}  # the child starts with defaults
    try:
        proc = subprocess.Popen(argv)
        for signum in early:
            proc.send_signal(signum)
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _from_terminal() -> bool:
    """Whether this process is in its terminal's foreground process group (then so is its child)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _records(path: Path) -> list[dict[str, Any]]:
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
    return out


def connections(records: list[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], int]:
    """The last ``n`` connections of a relay's log, each its accept record with the dial record (if any yet)
    under ``"dial"``, and how many of ``lab verify``'s probes were left out."""
    conns: dict[Any, dict[str, Any]] = {}
    probes: set[Any] = set()
    for r in records:
        key = r.get("conn")
        if r.get("probe"):
            probes.add(key)
            continue
        if r.get("stage") == "dial":
            conn = conns.setdefault(key, {k: v for k, v in r.items() if k in ("conn", "peer", "local",
                                                                               "original_dst", "listener")})
            conn["dial"] = {k: r[k] for k in ("time", "result", "upstream", "source") if k in r}
        else:
            conns[key] = {**{k: v for k, v in r.items() if k != "stage"}, **conns.get(key, {})}
    return list(conns.values())[-n:], len(probes)


def _connection_line(c: dict[str, Any]) -> str:
    dial = c.get("dial")
    then = f"{dial.get('time', '')} {dial.get('result', '')}" if dial else "dialing"
    return f"{c.get('time', '?')} {c.get('peer')} -> {c.get('original_dst')}: accepted; {then}"


@lab_group.command("status")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status_cmd(name: str, fmt: str) -> None:
    """The rules with live packet counters, the processes, the relays' recent connections and the cluster
    DNS's recent answers. Exit status 1 when a process is dead or a rule set differs from what up loaded."""
    from netsim.lab import state as st
    from netsim.lab.control import health
    from netsim.lab.runner import Exec, NetnsInode
    from netsim.netfilter.model import Family

    runner = _runner()
    state = _state(name)
    rules: dict[str, str] = {}
    saved: dict[Family, str] = {}
    if runner.run(NetnsInode(name)).inode is not None and state.backend == "nft":
        rules["nft"] = runner.run(Exec(netns=name, argv=("nft", "list", "ruleset"))).stdout
    elif runner.run(NetnsInode(name)).inode is not None:
        for family in Family:
            if family is Family.IPV6 and state.info.get("rules_v6") is None:
                continue
            text = runner.run(Exec(netns=name, argv=(family.save_command, "-c"))).stdout
            rules[f"ipv{family.value}"] = text
            saved[family] = text
    problems = health(runner, state, saved)
    procs = [{"role": p.role, "pid": p.pid, "log": p.log} for p in state.of(st.Process)]
    recent: dict[str, list[dict[str, Any]]] = {}
    probes: dict[str, int] = {}
    queries: list[dict[str, Any]] = []
    for p in state.of(st.Process):
        if p.role.startswith("listener-"):
            recent[p.role], probes[p.role] = connections(_records(Path(p.log)), RECENT_CONNECTIONS)
        elif p.role == "cluster-dns":
            queries = _records(Path(p.log))[-RECENT_QUERIES:]
    if fmt == "json":
        click.echo(json.dumps({"name": name, "healthy": not problems, "problems": problems, "info": {
            k: v for k, v in state.info.items() if not k.startswith(("rules_", "loaded_"))}, "processes": procs,
            "rules": rules, "connections": recent, "probe_connections": probes, "cluster_dns_queries": queries},
            indent=2))
    else:
        _print_status(name, state.info, problems, procs, rules, recent, probes, queries)
    if problems:
        sys.exit(1)


def _print_status(name: str, info: dict[str, Any], problems: list[str], procs: list[dict[str, Any]],
                  rules: dict[str, str], recent: dict[str, list[dict[str, Any]]], probes: dict[str, int],
                  queries: list[dict[str, Any]]) -> None:
    click.echo(f"lab {name}: " + ("healthy" if not problems else "; ".join(problems)))
    click.echo(f"pod netns {name} {', '.join(info.get('pod_ips', []))}; "
               f"node netns {info.get('node_netns')} {', '.join(info.get('node_ips', []))}")
    if info.get("mode") == "ambient":
        ports = info.get("ports", {})
        click.echo(f"mode ambient: ztunnel stand-ins on {ports.get('outbound')}, {ports.get('inbound')}, "
                   f"{ports.get('hbone')}, DNS {ports.get('dns')} (mark {int(info.get('mark', 0)):#x}); policy "
                   f"routes {', '.join(_route_text(r) for r in info.get('fwmark_routes', []))}")
    else:
        click.echo("mode sidecar")
    for p in procs:
        click.echo(f"process {p['role']}: pid {p['pid']}, log {p['log']}")
    for fam, text in rules.items():
        click.echo(f"--- {fam} rules" + (" (nft list ruleset)" if fam == "nft" else " [packets:bytes]"))
        click.echo(text.rstrip("\n"))
    for role, conns in recent.items():
        hidden = f" ({probes[role]} lab verify probes not shown)" if probes.get(role) else ""
        click.echo(f"--- {role}: last {len(conns)} connections{hidden}")
        for c in conns:
            click.echo(_connection_line(c))
    if queries:
        click.echo(f"--- cluster-dns: last {len(queries)} answers not from its address records")
        for q in queries:
            click.echo(f"{q.get('time', '')} {q.get('peer')} {q.get('name')} {q.get('type')}: {q.get('rcode')}")


def _route_text(route: list[int]) -> str:
    mark = f"{route[0]:#x}" + (f"/{route[2]:#x}" if len(route) > 2 else "")
    return f"fwmark {mark} lookup {route[1]}"


@lab_group.command("verify")
@click.argument("name")
@click.option("--probes", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", default=None, type=int, help="seed of the random probes (default: random)")
@click.option("--family", type=click.Choice(["4", "6", "all"]), default="all", show_default=True,
              help="all: every family the pod has an address in")
@click.option("--verbose", "-v", is_flag=True, help="print every probe's two traces")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def verify_cmd(name: str, probes: int, seed: int | None, family: str, verbose: bool, fmt: str) -> None:
    """Send random probes (per family); compare the kernel's trace (`xtables-monitor --trace`, IPv6: `nft monitor
    trace`; a lab up with --backend nft: `nft monitor trace` against --format nft-trace) with `netsim trace` on the
    same rules. Exit status 1 when they differ. On a terminal, a progress
    line on stderr."""
    from netsim.lab.verify import verify

    runner = _runner()
    state = _state(name)
    progress = ProgressLine(sys.stderr, "verify", "probes sent and traced")
    try:
        report = verify(runner, state, probes=probes, seed=seed, families=() if family == "all" else (int(family),),
                        progress=progress)
    finally:
        progress.done()
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines(verbose=verbose):
            click.echo(line)
    if not report.agreed:
        sys.exit(1)


@lab_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def list_cmd(fmt: str) -> None:
    """Every lab netsim's state directory records on this machine: name, pod, age, health."""
    from netsim.lab import state as st
    from netsim.lab.control import health

    runner = _runner()
    rows = []
    for name in st.recorded():
        state = st.load(name)
        if state is None:
            continue
        problems = health(runner, state)
        created = state.info.get("created")
        rows.append({"name": name, "pod": state.info.get("pod", ""), "namespace": state.info.get("namespace", ""),
                     "age_seconds": round(time.time() - created) if isinstance(created, int | float) else None,
                     "healthy": not problems, "problems": problems})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no labs (nothing recorded in {st.run_root()})")
        return
    table = [("NAME", "POD", "AGE", "HEALTH")] + [
        (r["name"], f"{r['namespace']}/{r['pod']}" if r["namespace"] else r["pod"] or "-", _age(r["age_seconds"]),
         "healthy" if r["healthy"] else "; ".join(r["problems"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@lab_group.command("down")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True, help="every lab netsim's state directory records (lab list)")
def down_cmd(name: str | None, every: bool) -> None:
    """Remove every namespace, link, route, rule, process and file the lab made (idempotent)."""
    from netsim.lab import state as st
    from netsim.lab.control import down

    if every == (name is not None):
        raise click.UsageError("give a lab NAME or --all")
    runner = _runner()
    names = st.recorded() if every else [name or ""]
    if every and not names:
        click.echo(f"no labs (nothing recorded in {st.run_root()}); nothing to do")
    failed: list[str] = []
    for n in names:
        try:
            gone = down(runner, n)
        except LabError as e:
            if not every:
                raise
            click.echo(f"Error: {e}", err=True)
            failed.append(n)
            continue
        click.echo(f"lab {n} down" if gone else f"no lab named {n}; nothing to do")
    if failed:
        raise LabError(f"{len(failed)} of {len(names)} labs not fully removed: {', '.join(failed)}")


__all__ = ["lab_group"]
