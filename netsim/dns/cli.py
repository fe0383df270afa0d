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
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from netsim.commands.options import PathsOption, SecondsType, keep_going_option
from netsim.dns.allocate import Generation, generation_for_version
from netsim.dns.profile import Profile, profile_for_version
from netsim.dns.resolvconf import expand_localhost, parse_hostport, read_resolv_conf, search_names
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
from netsim.errors import NetsimError, SpecError, one_line
from netsim.k8s import expand_paths


def _warn(msg: str) -> None:
    click.echo(one_line(f"warning: {msg}"), err=True)


@dataclass(frozen=True, slots=True)
class _Source:
    """Where the table comes from: Kubernetes/Istio YAML, or an istiod NameTable dump."""

    config: tuple[str, ...]
    name_table: str | None
    namespace: str
    domain: str
    profile: Profile  # the --istio-version's switches, with --allocator's generation
    pod_ips: tuple[str, ...]
    dns_capture: bool = True  # the pod's proxyMetadata (--pod); without --pod: on, as for any captured pod
    dns_auto_allocate: bool = True
    keep_going: bool = True  # a bad --config document: skipped and warned (False: the error, exit 2)

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
        proxy = Proxy(ips=self.pod_ips or ("10.0.0.1",), namespace=self.namespace, cluster=KUBE_CLUSTER,
                      dns_capture=self.dns_capture, dns_auto_allocate=self.dns_auto_allocate)
        res = load_config(self.config, namespace=self.namespace, domain=self.domain,
                          generation=self.profile.generation, istio_version=self.profile.version, proxy=proxy)
        from netsim.k8s import in_document_order

        for note in res.not_objects:
            click.echo(one_line(f"note: {note}"), err=True)
        errors = in_document_order(res.errors, (str(f) for f in self.files()))
        if (strict or not self.keep_going) and errors:
            raise errors[0]
        return res.table, list(errors), res.unresolved


def _source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--config", "config", cls=PathsOption, multiple=True, metavar="PATH…",
                     help="Kubernetes/Istio YAML or JSON (Services, Endpoints, EndpointSlices, Pods, "
                          "ServiceEntries, WorkloadEntries); multi-document files, Lists and directories. "
                          "Several after one flag, or the flag repeated."),
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


# pilot-agent's DNS proxy (port 15053, the NDS name table) first shipped in 1.8.0: spec/istio-iptables-history.md
# §4.6 ("DNS → agent 15053"); 1.6-1.7's experimental DNS_CAPTURE/DNS_AGENT redirects are not modelled
DNS_PROXY_SINCE = (1, 8, 0)


@dataclass(frozen=True, slots=True)
class _Agent:
    """Whether the pod's pilot-agent runs the DNS proxy at all, and as whom (``--pod``)."""

    runs: bool
    why: str  # why it does not run ("" when it does)
    namespace: str | None = None
    pod_ips: tuple[str, ...] = ()
    dns_capture: bool = True
    dns_auto_allocate: bool = True


def _pod_agent(pod_file: str | None, mesh_config: str | None, istio_version: str | None,
               keep_going: bool, config: Sequence[str] = ()) -> _Agent:
    """The agent of the pod in ``pod_file``: its namespace, IPs and proxyMetadata (mesh ``defaultConfig``
    overlaid by the pod's ``proxy.istio.io/config``), read by the same code as ``mesh`` and ``diagnose``."""
    from netsim.istio_version import parse_istio_version

    if istio_version is not None and parse_istio_version(istio_version, option="--istio-version") < DNS_PROXY_SINCE:
        return _Agent(runs=False, why=(f"Istio {istio_version} had no DNS proxy in pilot-agent (first in 1.8): the "
                                       "app's queries go to its nameservers (kube-dns)"))
    if pod_file is None:
        if mesh_config is not None:
            raise SpecError("--mesh-config gives the proxyMetadata of a --pod: give the pod with --pod FILE")
        return _Agent(runs=True, why="")
    from netsim.mesh.files import read_config, read_mesh_config
    from netsim.mesh.proxy import pick_pod, pod_from_file
    from netsim.workload.model import Workload

    read = read_config([pod_file], keep_going=keep_going)
    pod = pick_pod(read.objects.pods)
    if pod is not None and config and pod.namespace not in dict(read.objects.namespaces):
        # its Namespace (injection and ambient labels) may be among --config's objects
        pod = pod_from_file(read.objects, read_config(config, keep_going=True, skip_non_objects=True).objects)
    if pod is None:
        raise SpecError("no Pod or workload found", where=pod_file)
    mesh = read_mesh_config(mesh_config)
    w = Workload.from_pod_info(pod, istio_version=istio_version).with_mesh_defaults(mesh.proxy_metadata, mesh.source)
    sidecar, sidecar_why = w.injection
    why = ""
    if pod.ambient:
        why = _ztunnel_dns(pod, istio_version)
    elif not sidecar:
        why = f"{w.ref} has no sidecar ({sidecar_why}): no pilot-agent answers its queries"
    elif not w.dns_capture:
        why = (f"{w.ref} does not set ISTIO_META_DNS_CAPTURE ({w.metadata_origin or 'no proxyMetadata set'}): "
               "pilot-agent runs no DNS proxy and the app's queries go to its nameservers (kube-dns)")
    return _Agent(runs=not why, why=why, namespace=w.namespace,
                  pod_ips=() if w.addresses_assumed else tuple(str(a) for a in w.addresses),
                  dns_capture=w.dns_capture, dns_auto_allocate=w.dns_auto_allocate)


def _ztunnel_dns(pod: Any, istio_version: str | None) -> str:
    """Why no pilot-agent answers a pod enrolled in ambient: where its queries go instead (ztunnel's DNS proxy
    when the node agent captures its DNS, else its nameservers)."""
    from netsim.capture.ambient import dns_effective
    from netsim.istio_version import CURRENT, parse_istio_version
    from netsim.spec.ambient import ambient_config, pod_overrides

    version = parse_istio_version(istio_version, option="--istio-version")
    release = None if version == CURRENT else tuple(version)
    captured = dns_effective(ambient_config(release), pod_overrides(pod.annotation_map, where=pod.where))
    where = ("istio-cni captures its DNS to ztunnel's DNS proxy on 15053, which netsim does not model (it models "
             "pilot-agent's)" if captured else
             "its DNS is not captured (the node agent's RedirectDNS, or the pod's ambient.istio.io/dns-capture): "
             "the app's queries go to its nameservers (kube-dns)")
    return f"{pod.ref} is enrolled in ambient ({pod.ambient_why}), with no sidecar: {where}"


def _pod_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--pod``, ``--mesh-config``, ``--keep-going``: answer as that pod's agent (query and table)."""
    opts = [
        click.option("--pod", "pod_file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Answer as this pod's agent: its namespace, IPs and proxyMetadata "
                          "(ISTIO_META_DNS_CAPTURE, ISTIO_META_DNS_AUTO_ALLOCATE) decide what it answers."),
        click.option("--mesh-config", type=click.Path(dir_okay=False), default=None,
                     help="Mesh config whose defaultConfig.proxyMetadata the --pod's annotation overlays."),
        keep_going_option,
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _pod_source(ctx: click.Context, agent: _Agent, config: Sequence[str], name_table: str | None, namespace: str,
                domain: str | None, istio_version: str | None, allocator: str | None, pod_ips: Sequence[str],
                keep_going: bool) -> _Source:
    """The table source as ``agent``'s pod sees it (its namespace and IPs unless the options name others)."""
    from dataclasses import replace

    explicit = ctx.get_parameter_source("namespace") is click.core.ParameterSource.COMMANDLINE
    if agent.namespace is not None and explicit and namespace != agent.namespace:
        raise SpecError(f"--namespace {namespace}: the --pod is in namespace {agent.namespace}")
    ns = agent.namespace or namespace
    src = _make_source(config, name_table, ns, domain, istio_version, allocator, pod_ips or agent.pod_ips)
    return replace(src, dns_capture=agent.dns_capture, dns_auto_allocate=agent.dns_auto_allocate,
                   keep_going=keep_going)


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
@_pod_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def table_cmd(ctx: click.Context, config: tuple[str, ...], name_table: str | None, namespace: str,
              domain: str | None, istio_version: str | None, allocator: str | None, pod_ips: tuple[str, ...],
              pod_file: str | None, mesh_config: str | None, keep_going: bool, fmt: str) -> None:
    """List every name the agent answers, with its addresses, origin and allocator.

    With --pod, the agent of that pod: none at all when it does not run a DNS proxy.
    An invalid --config document is an error (exit 2) unless --keep-going.
    """
    agent = _pod_agent(pod_file, mesh_config, istio_version, keep_going, config)
    if not agent.runs:
        click.echo("[]" if fmt == "json" else f"(no names: {agent.why})")
        return
    src = _pod_source(ctx, agent, config, name_table, namespace, domain, istio_version, allocator, pod_ips,
                      keep_going)
    namespace = src.namespace
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
@_pod_options
@click.option("--search", multiple=True, metavar="DOMAIN",
              help="resolv.conf search list (default <ns>.svc.<cluster domain>, svc.<…>, <…>).")
@click.option("--resolv-conf", "resolv_conf", default=None, metavar="FILE",
              help="Take the search list from this resolv.conf.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def query_cmd(ctx: click.Context, name: str, qtype: str, config: tuple[str, ...], name_table: str | None,
              namespace: str, domain: str | None, istio_version: str | None, allocator: str | None,
              pod_ips: tuple[str, ...], pod_file: str | None, mesh_config: str | None, keep_going: bool,
              search: tuple[str, ...], resolv_conf: str | None, fmt: str) -> None:
    """Answer NAME offline, exactly as the agent would (or say that it forwards it).

    With --pod, as that pod's agent: its namespace and proxyMetadata (DNS capture, auto-allocation).
    An invalid --config document is an error (exit 2) unless --keep-going.
    """
    if search and resolv_conf:
        raise SpecError("use --search or --resolv-conf, not both")
    agent = _pod_agent(pod_file, mesh_config, istio_version, keep_going, config)
    fqdn = name if name.endswith(".") else name + "."
    if not agent.runs:
        _print_forward(fqdn, qtype.upper(), fmt, None, why_text=agent.why)
        return
    src = _pod_source(ctx, agent, config, name_table, namespace, domain, istio_version, allocator, pod_ips,
                      keep_going)
    namespace = src.namespace
    if resolv_conf:
        search = read_resolv_conf(resolv_conf).search
    table, errors, unresolved = src.load_explained(strict=False)
    search = search or _default_search(namespace, src.domain)
    lookup = src.lookup(table, search)
    for e in errors:
        _warn(str(e))
    decision = resolve(make_query(fqdn, _QTYPES[qtype.upper()], qid=1), lookup, transport=Transport.UDP)
    q, forwarded = fqdn, list[str]()
    if isinstance(decision, Forward) and not name.endswith("."):
        q, decision, forwarded = _search_answer(name, search, lookup, qtype, decision, fqdn)
    why = _why_unresolved(fqdn, search, unresolved) if isinstance(decision, Forward) else None
    _print_decision(decision, q, qtype.upper(), fmt, why, forwarded=forwarded)


def _search_answer(name: str, search: Sequence[str], lookup: Any, qtype: str, forwarded_decision: Forward,
                   fqdn: str) -> tuple[str, Reply | Forward, list[str]]:
    """A relative NAME whose absolute form the agent forwards: the pod's resolver also asks the search-list
    names (``search_names``, ndots:5), and the agent answers those it knows (spec/istio-dns.md §4-5: the
    FQDNs and the first search domain's CNAME shortcuts). Returns (the name answered, the agent's answer,
    the names asked before it, which the agent forwards), or the absolute name's forward when none is known.
    A name whose absolute form the agent knows is answered as asked: each search name it knows is a CNAME
    to the same entry, so the addresses are the same."""
    asked: list[str] = []
    for cand in search_names(name, search):
        decision = resolve(make_query(cand, _QTYPES[qtype.upper()], qid=1), lookup, transport=Transport.UDP)
        if isinstance(decision, Reply):
            return cand, decision, asked
        asked.append(cand)
    return fqdn, forwarded_decision, []


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


def _print_forward(name: str, qtype: str, fmt: str, why: Unresolved | None, *,
                   why_text: str = "not in the agent's name table") -> None:
    out: dict[str, Any] = {"name": name, "type": qtype, "handled_by": "upstream", "answer": [], "why": why_text}
    if why is not None:
        out["configured_as"] = {"hostname": why.hostname, "source": why.source, "reason": why.reason}
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    if why_text == "not in the agent's name table":
        click.echo(f";; {name} {qtype}: {why_text}: the agent forwards it to the upstream nameservers")
    else:
        click.echo(f";; {name} {qtype}: not answered by an agent: {why_text}")
    if why is not None:
        click.echo(f";; {why.hostname} is configured but has no entry: {why.reason}")
        click.echo(f";;   from {why.source}")


def _print_decision(decision: object, name: str, qtype: str, fmt: str, why: Unresolved | None, *,
                    forwarded: Sequence[str] = ()) -> None:
    """The agent's answer to ``name``; ``forwarded``: the names the pod's resolver asked before ``name``, a
    search-list name (``_search_answer``), which the agent forwards upstream (JSON ``search_forwarded``,
    there only for such an answer)."""
    if isinstance(decision, Forward):
        _print_forward(name, qtype, fmt, why)
        return
    assert isinstance(decision, Reply)
    flags, recs, rcode = _records(decision.wire)
    if fmt == "json":
        out = {"name": name, "type": qtype, "handled_by": "table", "rcode": {0: "NOERROR"}.get(rcode, str(rcode)),
               "flags": flags.split(), "answer": recs}
        if forwarded:
            out["search_forwarded"] = list(forwarded)
        click.echo(json.dumps(out, indent=2))
        return
    if forwarded:
        click.echo(f";; the agent forwards {', '.join(forwarded)} upstream; the pod's resolver then asks {name} "
                   "from its search list (when the upstream answered NXDOMAIN)")
    click.echo(f";; answered by the agent from its name table: NOERROR, flags: {flags}")
    if not recs:
        click.echo(f";; {name} is known but has no {qtype} records (empty NOERROR, never NXDOMAIN)")
    for r in recs:
        click.echo(f"{r['name']}\t{r['ttl']}\tIN\t{r['type']}\t{r['data']}")


# --------------------------------------------------------------------------------------------
# serve

_MAX_SECONDS = 3600.0  # an hour: any longer timeout or interval is a typo, not a setting
_MAX_SOCKETS = 65535  # each in-flight exchange or TCP connection may hold a socket
_MAX_TCP_QUERIES = 1_000_000  # as good as unlimited: a connection that lives for hours at 100 queries/s


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
@click.option("--timeout", type=SecondsType(min=0.001, max=_MAX_SECONDS), default=5.0, show_default=True,
              help="Per-upstream timeout in seconds (DNS_FORWARD_TIMEOUT).")
@click.option("--forward-parallel", is_flag=True, help="Ask every upstream at once (DNS_FORWARD_PARALLEL).")
@click.option("--max-inflight", type=click.IntRange(min=1, max=_MAX_SOCKETS), default=2048, show_default=True,
              help="Concurrent upstream exchanges; beyond this a query gets SERVFAIL at once.")
@click.option("--max-tcp", type=click.IntRange(min=1, max=_MAX_SOCKETS), default=512, show_default=True,
              help="Concurrent TCP connections; when all are taken, a new connection takes the slot of the one "
                   "that has waited longest for its next query.")
@click.option("--tcp-max-queries", type=click.IntRange(min=1, max=_MAX_TCP_QUERIES), default=128, show_default=True,
              help="Queries per TCP connection, then the agent closes it (miekg's default, which pilot-agent "
                   "keeps; queries a client pipelined past it are lost).")
@click.option("--reload-interval", type=SecondsType(min=0, max=_MAX_SECONDS), default=1.0, show_default=True,
              help="Seconds between checks of the config files for changes (0: only on SIGHUP).")
@click.option("--answer-cache/--no-answer-cache", default=True, show_default=True,
              help="Memoise local answers that involve no shuffle, and the parse of forwarded queries and "
                   "re-packing of upstream replies seen before (exact; per table; cleared on reload). Forwarded "
                   "queries still go upstream every time.")
@click.option("--user", "run_uid", type=click.IntRange(0, 2**32 - 2), default=None, metavar="UID",
              help="Once the files are read and the code is loaded, become this uid (with --group's gid, no "
                   "supplementary groups) before binding: start as root, serve as the proxy.")
@click.option("--group", "run_gid", type=click.IntRange(0, 2**32 - 2), default=None, metavar="GID",
              help="The gid to become with --user.")
def serve_cmd(config: tuple[str, ...], name_table: str | None, namespace: str, domain: str | None,
              istio_version: str | None, allocator: str | None, pod_ips: tuple[str, ...], resolv_conf: str,
              listen: tuple[str, ...], upstream: tuple[str, ...], timeout: float, forward_parallel: bool,
              max_inflight: int, max_tcp: int, tcp_max_queries: int, reload_interval: float,
              answer_cache: bool, run_uid: int | None, run_gid: int | None) -> None:
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
        try:
            return [*src.files(), Path(resolv_conf)]
        except OSError:  # a directory this uid cannot search (after --user): nothing there to reload from
            return [Path(resolv_conf)]

    from netsim.dns.server import ServerConfig, loop_factory, run  # the asyncio shell, only for serve

    cfg = ServerConfig(listen=tuple(listen_addrs), upstreams=ups, timeout=timeout, parallel=forward_parallel,
                       max_inflight=max_inflight, max_tcp=max_tcp, tcp_max_queries=tcp_max_queries,
                       reload_interval=reload_interval,
                       answer_cache=answer_cache, shuffle_upstreams=src.profile.shuffle_upstreams)

    def ready(server: Any) -> None:
        addrs = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in server.addresses)
        upstreams = ", ".join(f"{h}:{p}" for h, p in ups) or "none"
        n = len(server.lookup.table) if server.lookup else 0
        click.echo(f"netsim dns: serving {n} names on {addrs} (udp, tcp); upstreams: {upstreams}", err=True)

    if run_uid is not None or run_gid is not None:
        # Before the sockets exist: the kernel's owner match reads a socket's creator, and the UDP replies
        # leave through the listening socket. What would load lazily is loaded first, while root can still
        # read it (the interpreter may live in a mode-700 home): uvloop, and the idna codec getaddrinfo uses.
        import encodings.idna  # noqa: F401

        loop_factory()
        try:
            os.setgroups([])
            os.setgid(os.getgid() if run_gid is None else run_gid)
            os.setuid(os.getuid() if run_uid is None else run_uid)
        except OSError as e:
            raise NetsimError(f"--user/--group: {e.strerror} (only root can change them)") from None
    try:
        run(cfg, loader, watch=watch, on_ready=ready)
    except OSError as e:
        raise NetsimError(f"cannot listen on {', '.join(f'{h}:{p}' for h, p in listen_addrs)}: "
                          f"{e.strerror or e}") from None
    sys.stderr.flush()


__all__ = ["dns_group"]
