"""``netsim dns serve|table|query``: parse options, call one core function, print the result.

Owns: the DNS command line (options, their validation, text and JSON rendering). A
:class:`~netsim.errors.NetsimError` is left to :func:`netsim.cli.main`, which prints it as one
``Error:`` line with exit status 2.

Never does: decide an answer (``netsim.dns.resolve``), build a table (``netsim.dns.table``) or touch
sockets itself (``netsim.dns.server``, imported only by ``serve``).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from netsim.dns.allocate import Generation, generation_for_version
from netsim.dns.profile import Profile, profile_for_version
from netsim.dns.resolvconf import expand_localhost, parse_hostport, read_resolv_conf
from netsim.dns.resolve import (
    QTYPE_A,
    QTYPE_AAAA,
    Forward,
    Lookup,
    Reply,
    Transport,
    alternate_names,
    build_lookup,
    effective_domain,
    make_query,
    resolve,
)
from netsim.dns.table import (
    KUBE_CLUSTER,
    NameTable,
    Proxy,
    Unresolved,
    cluster_domain_of,
    load_config,
    load_ndsz,
)
from netsim.errors import NetsimError, SpecError
from netsim.k8s import expand_paths


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


@dataclass(frozen=True, slots=True)
class _Source:
    """Where the table comes from: Kubernetes/Istio YAML, or an istiod NameTable dump."""

    config: tuple[str, ...]
    name_table: str | None
    namespace: str
    domain: str
    profile: Profile  # the --istio-version's switches, with --allocator's generation
    pod_ips: tuple[str, ...]

    def files(self) -> list[Path]:
        if self.name_table:
            return [Path(self.name_table)]
        return expand_paths(self.config)

    def lookup(self, table: NameTable, search: Sequence[str]) -> Lookup:
        p = self.profile
        return build_lookup(table, namespace=self.namespace, domain=self.domain, search=search,
                            se_trailing_dot=p.se_trailing_dot, skip_s0_cname=p.skip_s0_cname)

    def load(self, *, strict: bool) -> tuple[NameTable, list[NetsimError]]:
        table, errors, _ = self.load_explained(strict=strict)
        return table, errors

    def load_explained(self, *, strict: bool) -> tuple[NameTable, list[NetsimError], tuple[Unresolved, ...]]:
        if self.name_table:
            return load_ndsz(self.name_table), [], ()
        proxy = Proxy(ips=self.pod_ips or ("10.0.0.1",), namespace=self.namespace, cluster=KUBE_CLUSTER)
        res = load_config(self.config, namespace=self.namespace, domain=self.domain,
                          generation=self.profile.generation, istio_version=self.profile.version, proxy=proxy)
        if strict and res.errors:
            raise res.errors[0]
        return res.table, list(res.errors), res.unresolved


def _source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--config", "config", multiple=True, metavar="FILE|DIR",
                     help="Kubernetes/Istio YAML or JSON (Services, Endpoints, EndpointSlices, Pods, "
                          "ServiceEntries, WorkloadEntries); multi-document files, Lists and directories. "
                          "Repeatable."),
        click.option("--name-table", "name_table", metavar="FILE",
                     help="istiod's NameTable for a proxy (JSON or YAML, as /debug/ndsz prints it) "
                          "instead of --config."),
        click.option("--namespace", "-n", default="default", show_default=True,
                     help="Namespace of the client pod (decides short names and exportTo)."),
        click.option("--domain", default=None, metavar="D",
                     help="The agent's --domain (default <namespace>.svc.cluster.local)."),
        click.option("--istio-version", default=None, metavar="X.Y[.Z]",
                     help="Istio release whose auto-allocator and defaults to use (default: HEAD)."),
        click.option("--allocator", type=click.Choice([g.value for g in Generation]), default=None,
                     help="ServiceEntry auto-allocation generation (overrides --istio-version's)."),
        click.option("--pod-ip", "pod_ips", multiple=True, metavar="IP",
                     help="The client pod's IPs (their families pick the VIP family; default 10.0.0.1)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _make_source(config: Sequence[str], name_table: str | None, namespace: str, domain: str | None,
                 istio_version: str | None, allocator: str | None, pod_ips: Sequence[str]) -> _Source:
    if config and name_table:
        raise SpecError("use --config or --name-table, not both")
    if not config and not name_table:
        raise SpecError("no name table: give --config FILE (Kubernetes/Istio YAML) or --name-table FILE")
    gen = Generation.parse(allocator) if allocator else None
    if istio_version is not None:
        generation_for_version(istio_version)  # validates the version early
    for ip in pod_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SpecError(f"--pod-ip {ip!r}: not an IP address") from None
    return _Source(config=tuple(config), name_table=name_table, namespace=namespace,
                   domain=domain or f"{namespace}.svc.cluster.local",
                   profile=profile_for_version(istio_version, gen), pod_ips=tuple(pod_ips))


def _default_search(namespace: str, domain: str) -> tuple[str, ...]:
    cd = cluster_domain_of(domain, namespace)
    return (f"{namespace}.svc.{cd}", f"svc.{cd}", cd)


@click.group("dns")
def dns_group() -> None:
    """pilot-agent's DNS proxy: run it, list its names, or ask it offline."""


# --------------------------------------------------------------------------------------------
# table

@dns_group.command("table")
@_source_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def table_cmd(config: tuple[str, ...], name_table: str | None, namespace: str, domain: str | None,
              istio_version: str | None, allocator: str | None, pod_ips: tuple[str, ...], fmt: str) -> None:
    """List every name the agent answers, with its addresses, origin and allocator."""
    src = _make_source(config, name_table, namespace, domain, istio_version, allocator, pod_ips)
    table, errors, unresolved = src.load_explained(strict=False)
    for e in errors:
        _warn(str(e))
    pdomain = effective_domain(src.domain, namespace)
    rows: list[dict[str, Any]] = []
    for host, info in table.entries.items():
        rows.append({"name": host, "addresses": list(info.ips), "registry": info.registry,
                     "shortname": info.shortname, "namespace": info.namespace,
                     "aliases": [n for n in alternate_names(host, info, namespace, pdomain,
                                                            se_trailing_dot=src.profile.se_trailing_dot)
                                 if n.rstrip(".") != host.rstrip(".")],
                     "sources": list(info.sources), "allocator": info.allocator})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("(no names: every query would be forwarded upstream)")
    for r in rows:
        alloc = f"  [auto-allocated: {r['allocator']}]" if r["allocator"] else ""
        click.echo(f"{r['name']}  {', '.join(r['addresses'])}  ({r['registry']}){alloc}")
        if r["aliases"]:
            click.echo(f"    also answers: {' '.join(r['aliases'])}")
        for s in r["sources"]:
            click.echo(f"    from {s}")
    if unresolved:
        click.echo("")
        click.echo("not in the table (the agent forwards these upstream):")
        for u in unresolved:
            click.echo(f"{u.hostname}  {u.reason}")
            click.echo(f"    from {u.source}")


# --------------------------------------------------------------------------------------------
# query

_QTYPES = {"A": QTYPE_A, "AAAA": QTYPE_AAAA}


@dns_group.command("query")
@click.argument("name")
@click.option("--type", "qtype", type=click.Choice(sorted(_QTYPES), case_sensitive=False), default="A",
              show_default=True)
@_source_options
@click.option("--search", multiple=True, metavar="DOMAIN",
              help="resolv.conf search list (default <ns>.svc.<cluster domain>, svc.<…>, <…>).")
@click.option("--resolv-conf", "resolv_conf", default=None, metavar="FILE",
              help="Take the search list from this resolv.conf.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def query_cmd(name: str, qtype: str, config: tuple[str, ...], name_table: str | None, namespace: str,
              domain: str | None, istio_version: str | None, allocator: str | None, pod_ips: tuple[str, ...],
              search: tuple[str, ...], resolv_conf: str | None, fmt: str) -> None:
    """Answer NAME offline, exactly as the agent would (or say that it forwards it)."""
    src = _make_source(config, name_table, namespace, domain, istio_version, allocator, pod_ips)
    if search and resolv_conf:
        raise SpecError("use --search or --resolv-conf, not both")
    if resolv_conf:
        search = read_resolv_conf(resolv_conf).search
    table, errors, unresolved = src.load_explained(strict=False)
    search = search or _default_search(namespace, src.domain)
    lookup = src.lookup(table, search)
    fqdn = name if name.endswith(".") else name + "."
    wire = make_query(fqdn, _QTYPES[qtype.upper()], qid=1)
    for e in errors:
        _warn(str(e))
    decision = resolve(wire, lookup, transport=Transport.UDP)
    why = _why_unresolved(fqdn, search, unresolved) if isinstance(decision, Forward) else None
    _print_decision(decision, fqdn, qtype.upper(), fmt, why)


def _why_unresolved(fqdn: str, search: Sequence[str], unresolved: Sequence[Unresolved]) -> Unresolved | None:
    """The configured host a forwarded name would have been, had it made it into the table."""
    name = fqdn.rstrip(".").lower()
    candidates = [name, *(f"{name}.{d.strip('.').lower()}" for d in search)]
    for cand in candidates:
        for u in unresolved:
            if u.hostname.rstrip(".").lower() == cand:
                return u
    return None


def _records(wire: bytes) -> tuple[str, list[dict[str, Any]], int]:
    from dnslib import DNSRecord  # dnslib decodes for display only

    msg = DNSRecord.parse(wire)
    flags = [f for f in ("qr", "aa", "tc", "rd", "ra") if getattr(msg.header, f)]
    recs = [{"name": str(rr.rname), "type": {1: "A", 28: "AAAA", 5: "CNAME"}.get(rr.rtype, str(rr.rtype)),
             "ttl": rr.ttl, "data": str(rr.rdata)} for rr in msg.rr]
    return " ".join(flags), recs, msg.header.rcode


def _print_decision(decision: object, name: str, qtype: str, fmt: str, why: Unresolved | None) -> None:
    if isinstance(decision, Forward):
        out: dict[str, Any] = {"name": name, "type": qtype, "handled_by": "upstream", "answer": [],
                               "why": "not in the agent's name table"}
        if why is not None:
            out["configured_as"] = {"hostname": why.hostname, "source": why.source, "reason": why.reason}
        if fmt == "json":
            click.echo(json.dumps(out, indent=2))
        else:
            click.echo(f";; {name} {qtype}: {out['why']}: the agent forwards it to the upstream nameservers")
            if why is not None:
                click.echo(f";; {why.hostname} is configured but has no entry: {why.reason}")
                click.echo(f";;   from {why.source}")
        return
    assert isinstance(decision, Reply)
    flags, recs, rcode = _records(decision.wire)
    if fmt == "json":
        click.echo(json.dumps({"name": name, "type": qtype, "handled_by": "table",
                               "rcode": {0: "NOERROR"}.get(rcode, str(rcode)), "flags": flags.split(),
                               "answer": recs}, indent=2))
        return
    click.echo(f";; answered by the agent from its name table: NOERROR, flags: {flags}")
    if not recs:
        click.echo(f";; {name} is known but has no {qtype} records (empty NOERROR, never NXDOMAIN)")
    for r in recs:
        click.echo(f"{r['name']}\t{r['ttl']}\tIN\t{r['type']}\t{r['data']}")


# --------------------------------------------------------------------------------------------
# serve

@dns_group.command("serve")
@_source_options
@click.option("--resolv-conf", "resolv_conf", default="/etc/resolv.conf", show_default=True, metavar="FILE",
              help="Upstream nameservers (unless --upstream is given) and search list. The nameservers "
                   "are read once, at start, as pilot-agent does (it never reads the file again): a reload "
                   "(SIGHUP or file change) keeps the upstreams and takes only the new search list; "
                   "restart the agent to change them.")
@click.option("--listen", multiple=True, metavar="ADDR[:PORT]",
              help="Address to serve UDP and TCP on; repeatable; IPv6 as [::1]:15053; 'localhost' binds "
                   "127.0.0.1 and/or ::1 like pilot-agent (default 127.0.0.1:15053).")
@click.option("--upstream", multiple=True, metavar="ADDR[:PORT]",
              help="Upstream nameserver (default: the resolv.conf nameservers, port 53); repeatable.")
@click.option("--timeout", type=click.FloatRange(min=0.001), default=5.0, show_default=True,
              help="Per-upstream timeout in seconds (DNS_FORWARD_TIMEOUT).")
@click.option("--forward-parallel", is_flag=True, help="Ask every upstream at once (DNS_FORWARD_PARALLEL).")
@click.option("--max-inflight", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Concurrent upstream exchanges; beyond this a query gets SERVFAIL at once.")
@click.option("--max-tcp", type=click.IntRange(min=1), default=512, show_default=True,
              help="Concurrent TCP connections; beyond this a new connection is closed.")
@click.option("--reload-interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between checks of the config files for changes (0: only on SIGHUP).")
@click.option("--answer-cache/--no-answer-cache", default=True, show_default=True,
              help="Memoise local answers that involve no shuffle (per table; cleared on reload).")
def serve_cmd(config: tuple[str, ...], name_table: str | None, namespace: str, domain: str | None,
              istio_version: str | None, allocator: str | None, pod_ips: tuple[str, ...], resolv_conf: str,
              listen: tuple[str, ...], upstream: tuple[str, ...], timeout: float, forward_parallel: bool,
              max_inflight: int, max_tcp: int, reload_interval: float, answer_cache: bool) -> None:
    """Run the agent: answer from the table on UDP and TCP, forward everything else upstream."""
    src = _make_source(config, name_table, namespace, domain, istio_version, allocator, pod_ips)
    resolv = read_resolv_conf(resolv_conf)
    listen_addrs: list[tuple[str, int]] = []
    for item in listen or ("127.0.0.1:15053",):
        listen_addrs.extend(expand_localhost(parse_hostport(item, default_port=15053, option="--listen"),
                                             resolv, both_families=src.profile.bind_both_families))
    ups = tuple(parse_hostport(u, default_port=53, option="--upstream") for u in upstream) \
        or resolv.upstreams()
    table, errors = src.load(strict=False)
    for e in errors:
        _warn(str(e))
    if not ups:
        _warn(f"no upstream nameserver (none in {resolv_conf}, no --upstream): names not in the table get SERVFAIL")
    initial = [(table, resolv.search)]  # what was read above makes the first table

    def loader() -> Lookup:
        if initial:
            t, search = initial.pop()
        else:
            t, _ = src.load(strict=True)  # any bad object on reload: keep the previous table
            search = read_resolv_conf(resolv_conf).search
        return src.lookup(t, search)

    def watch() -> list[Path]:
        return [*src.files(), Path(resolv_conf)]

    from netsim.dns.server import ServerConfig, run  # the asyncio shell, only for serve

    cfg = ServerConfig(listen=tuple(listen_addrs), upstreams=ups, timeout=timeout, parallel=forward_parallel,
                       max_inflight=max_inflight, max_tcp=max_tcp, reload_interval=reload_interval,
                       answer_cache=answer_cache, shuffle_upstreams=src.profile.shuffle_upstreams)

    def ready(server: Any) -> None:
        addrs = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in server.addresses)
        upstreams = ", ".join(f"{h}:{p}" for h, p in ups) or "none"
        n = len(server.lookup.table) if server.lookup else 0
        click.echo(f"netsim dns: serving {n} names on {addrs} (udp, tcp); upstreams: {upstreams}", err=True)

    try:
        run(cfg, loader, watch=watch, on_ready=ready)
    except OSError as e:
        raise NetsimError(f"cannot listen on {', '.join(f'{h}:{p}' for h, p in listen_addrs)}: "
                          f"{e.strerror or e}") from None
    sys.stderr.flush()


__all__ = ["dns_group"]
