"""``netsim trace``: parse the options, build the workload once, ask it, print its answer.

A thin shell over :class:`netsim.workload.Workload` (which builds the rules, the network namespace and
the packet, and follows the sidecar's hops) and ``netsim.workload.packets`` (the conntrack entry, the
reply, a follow-up packet, a capture file's packets): this module owns only the options, the three
output formats and the pcap table, and handing a captured connection to
``netsim.mesh`` when ``--config`` is given (imported only then, so yaml stays out of the plain
trace's cold start; the workload layer never imports the mesh, see docs/design.md).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import click

from netsim.commands.options import (
    PICTURE_FORMATS,
    EndpointType,
    MarkType,
    PortListType,
    ambient_config_option,
    check_output,
    config_option,
    keep_going_option,
    mode_option,
    output_option,
    pod_name_option,
    write_picture,
)
from netsim.errors import SpecError
from netsim.netfilter.packet import Address, Conntrack, CtState, Netns, Packet
from netsim.workload.verdict import EXPECTABLE

if TYPE_CHECKING:  # imported where used: netsim.mesh (and yaml) load only with --config
    from netsim.mesh.build import ProxyIndex
    from netsim.mesh.trace import MeshContinuation
    from netsim.netfilter.trace import Endpoint
    from netsim.workload.hops import EnvoyHop, Followed
    from netsim.workload.model import Workload
    from netsim.workload.verdict import Decision, Verdict


@dataclass(frozen=True)
class _MeshRequest:
    """``--config`` and the connection's first bytes: what ``netsim.mesh.trace.continue_trace`` needs."""

    index: ProxyIndex  # built once per command
    send: str
    host: str | None
    path: str
    sni: str | None


# formats that print the kernel's own trace lines
_KERNEL_FORMATS = ("xtables-trace", "nft-trace")
# the options that only mean something to the sidecar's hop (--config)
_MESH_ONLY = ("--mesh-config", "--send", "--host", "--path", "--sni", "--keep-going")


@dataclass
class _Session:
    """One command's workload, its namespace model and the notes to print."""

    workload: Workload
    netns: Netns
    notes: list[str]
    output: str | None = None  # --output: where --format html|svg writes the picture


def _load_mesh(configs: tuple[str, ...], pod_file: str | None, mesh_config: str | None,
               istio_version: str | None, keep_going: bool, s: _Session, pod_name: str | None = None) -> ProxyIndex:
    """The sidecar's listener/cluster index for the traced pod (its file, else its IPs), built once.

    As for ``netsim mesh hop``: an invalid document raises (one ``Error:`` line, exit 2) unless
    ``keep_going``, which skips it and names it in the notes; a path that does not exist or cannot be
    read, or a bad mesh config, always raises.
    """
    from netsim.mesh.files import load_index

    index = load_index(configs, pod_file=pod_file, pod_ips=tuple(str(a) for a in s.workload.addresses),
                       mesh_config=mesh_config, istio_version=istio_version, keep_going=keep_going,
                       pod_name=pod_name)
    s.notes.extend(index.objects.not_objects)
    s.notes.extend(f"skipped (--keep-going): {e}" for e in index.objects.errors)
    s.notes.extend(f"--config: {e}" for e in index.errors)
    return index


@click.command("trace")
@click.option("--pod", "pod_file", type=click.Path(dir_okay=False),
              help="Pod/Deployment manifest: compile its capture rules.")
@pod_name_option
@click.option("--istio-version", help="Istio release whose injector defaults (--pod) and sidecar behaviour "
                                      "(--config) apply (default: current).")
@click.option("--rules", "rules_files", multiple=True, type=click.Path(dir_okay=False),
              help="iptables-save (and ip6tables-save) output to trace through instead of --pod.")
@click.option("--nft", "nft_files", multiple=True, type=click.Path(dir_okay=False),
              help="nft list ruleset output (text or -j JSON) or an nft -f file, instead of --pod; with --rules, "
                   "one namespace holding both (base chains run in priority order).")
@click.option("--rules-legacy", "legacy_files", multiple=True, type=click.Path(dir_okay=False),
              help="iptables-legacy-save output (legacy x_tables at their fixed priorities), instead of --pod or with "
                   "--rules/--nft: one namespace (loaded first); never in --format nft-trace.")
@click.option("--group-file", metavar="FILE", default=None,
              help="With --rules/--nft: an /etc/group-format file (the node's) to resolve owner-group names in the "
                   "dump with (skgid java, --gid-owner java), as nft and iptables resolved them when they loaded "
                   "it; default: this machine's groups.")
@click.option("--backend", type=click.Choice(["iptables", "nft"]), default=None,
              help="With --pod: the capture backend (nft: Istio's native nftables rules, --native-nftables).")
@mode_option("with --rules/--nft, the dump is traced with ztunnel and its policy routes are assumed")
@ambient_config_option("with --pod")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp", show_default=True)
@click.option("--src", type=EndpointType(), help="Source IP[:PORT] of a locally generated packet.")
@click.option("--dst", type=EndpointType(), help="Destination IP:PORT.")
@click.option("--from", "from_", type=EndpointType(), help="Trace an arriving packet from this IP[:PORT].")
@click.option("--uid", type=click.IntRange(0), help="Owner uid of the sending socket (default: the app's).")
@click.option("--gid", type=click.IntRange(0), help="Owner gid of the sending socket (default: the uid).")
@click.option("--mark", type=MarkType(), help="SO_MARK of the sending socket (a locally generated packet's mark; "
                                              "decimal or 0x hex).")
@click.option("--as", "as_", type=click.Choice(["ztunnel"]),
              help="Send as ztunnel: its uid and gid and its sockets' mark 0x539 (short for --uid/--gid/--mark).")
@click.option("--in-iface", help="Device an arriving packet (--from) comes in on (default: eth0); a virtual "
                                 "interface needs an address (--iface-addr, or the pod's network-status annotation).")
@click.option("--iface-addr", "iface_addrs", multiple=True, metavar="NAME=IP",
              help="An address of device NAME (e.g. a virtual interface), which REDIRECT of what arrives on it needs.")
@click.option("--pod-ip", "pod_ips", multiple=True, help="The pod's addresses (comma list or repeated).")
@click.option("--listening", type=PortListType(), help="Ports with a listening socket; empty means none.")
@click.option("--pcap", type=click.Path(dir_okay=False), help="Trace every IP packet of this capture file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "xtables-trace", "nft-trace", *PICTURE_FORMATS]),
              default="text", show_default=True,
              help="xtables-trace: xtables-monitor --trace lines of the iptables chains; nft-trace: nft monitor "
                   "trace lines of the nftables chains; html: one self-contained page (the hooks, chains and rules "
                   "with the path marked); svg: the path alone.")
@output_option
@click.option("--matrix", is_flag=True, help="Print the capture matrix instead of one trace.")
@config_option(help="Kubernetes/Istio objects (files or directories, several after one flag or the flag "
                    "repeated): continue a connection captured on 15001/15006 through the sidecar's listener, "
                    "route and cluster.")
@keep_going_option
@click.option("--mesh-config", type=click.Path(dir_okay=False),
              help="Mesh config for --config (MeshConfig YAML, the istio ConfigMap, or an IstioOperator).")
@click.option("--send", type=click.Choice(["tcp", "http", "tls", "mtls"]),
              help="With --config: what the client sends first (default: tcp).")
@click.option("--host", help="With --config: the HTTP Host header (and the TLS SNI for --send tls).")
@click.option("--path", "http_path", help="With --config: the HTTP request path (default: /).")
@click.option("--sni", help="With --config: the TLS SNI (default: --host).")
@click.option("--ct-state", type=click.Choice([s.value for s in CtState], case_sensitive=False),
              help="Conntrack state the packet finds (default NEW: the connection's first packet, for which "
                   "nat is consulted; ESTABLISHED with --ct-reply).")
@click.option("--ct-zone", type=click.IntRange(0, 65535), help="Zone of the existing entry (default 0); a packet "
                                                               "looking in another zone starts a NEW connection.")
@click.option("--ct-mark", type=MarkType(), help="Connmark of the existing entry (decimal or 0x hex).")
@click.option("--ct-dnat", type=EndpointType(), help="The entry's DNAT/REDIRECT binding IP[:PORT]: applied to the "
                                                     "packet without consulting nat (an existing entry).")
@click.option("--ct-reply", is_flag=True, help="Trace the reply-direction packet of the connection described by "
                                               "--src/--from/--dst (the entry's bindings undone).")
@click.option("--follow-up", is_flag=True, help="Trace the connection's first packet, then a second packet of it "
                                                "(the reply with --ct-reply) using the entry the first one left.")
@click.option("--route-localnet", is_flag=True, help="The node sets net.ipv4.conf.*.route_localnet=1: a loopback "
                                                     "source that nat sends off the host is not dropped.")
@click.option("--expect", type=click.Choice(EXPECTABLE),
              help="Exit 0 when the verdict is this (captured: any captured-*), 1 when not; for scripts and CI.")
def trace_cmd(pod_file: str | None, pod_name: str | None, istio_version: str | None, rules_files: tuple[str, ...],
              nft_files: tuple[str, ...], backend: str | None, mode: str | None, ambient_settings: tuple[str, ...],
              proto: str,
              src: tuple[Address, int | None] | None, dst: tuple[Address, int | None] | None,
              from_: tuple[Address, int | None] | None, uid: int | None, gid: int | None, mark: int | None,
              as_: str | None, in_iface: str, iface_addrs: tuple[str, ...],
              pod_ips: tuple[str, ...], listening: tuple[int, ...] | None, pcap: str | None, fmt: str,
              output: str | None, matrix: bool, configs: tuple[str, ...], keep_going: bool, mesh_config: str | None,
              send: str | None,
              host: str | None, http_path: str | None, sni: str | None, ct_state: str | None,
              ct_zone: int | None, ct_mark: int | None, ct_dnat: tuple[Address, int | None] | None, ct_reply: bool,
              follow_up: bool, expect: str | None, route_localnet: bool = False,
              legacy_files: tuple[str, ...] = (), group_file: str | None = None) -> None:
    """Where does this packet go, and why? Trace it through the pod's iptables rules and the sidecar.

    With --config, a connection the sidecar captures continues through its Envoy listener, filter
    chain, route and cluster (as `netsim mesh hop` decides them), shown after the kernel's steps, and
    the sidecar's connection goes where Envoy sends it.

    Exit status: 0 for any completed answer; with --expect, 1 when the verdict is not the expected one.
    """
    mesh_only = [name for name, value in zip(_MESH_ONLY, (mesh_config, send, host, http_path, sni, keep_going or None),
                                                strict=True)
                 if value is not None]
    if mesh_only and not configs:
        raise SpecError(f"{', '.join(mesh_only)} describe{'s' if len(mesh_only) == 1 else ''} the sidecar's hop: "
                        "give the mesh objects with --config PATH")
    check_output(fmt, output)
    if fmt in PICTURE_FORMATS and pcap:
        raise SpecError(f"--format {fmt} draws one trace (or --follow-up, or --matrix as html); not --pcap")
    if fmt == "svg" and (matrix or follow_up):
        raise SpecError(f"--format svg draws one packet's path; for {'--matrix' if matrix else '--follow-up'} use "
                        "--format html")
    if configs and (matrix or pcap or fmt in _KERNEL_FORMATS):
        what = "--matrix" if matrix else "--pcap" if pcap else f"--format {fmt}"
        raise SpecError(f"--config continues one trace in text or JSON; it does not apply to {what}")
    if expect is not None and (matrix or pcap):
        what = "--matrix" if matrix else "--pcap"
        raise SpecError(f"--expect checks one trace's verdict; it does not apply to {what}")
    if src is not None and from_ is not None:
        raise SpecError("--src is the source of a locally generated packet, --from the peer of an arriving one: "
                        "give one of them")
    if in_iface is not None and from_ is None:
        raise SpecError("--in-iface is the device an arriving packet comes in on: give --from too")
    if (mark is not None or as_ is not None) and (matrix or pcap):
        raise SpecError(f"{'--as' if as_ is not None else '--mark'} describes one traced packet's socket; it does not "
                        f"apply to {'--matrix' if matrix else '--pcap'}")
    ct = _CtRequest(ct_state, ct_zone, ct_mark, ct_dnat, ct_reply, follow_up)
    ct.check(matrix=matrix, pcap=pcap, configs=configs)
    from netsim.workload.model import Workload

    if bool(pod_file) == bool(rules_files or nft_files or legacy_files):
        raise SpecError("give exactly one of --pod FILE or --rules FILE (and/or --nft FILE, --rules-legacy FILE)")
    if pod_name is not None and not pod_file:
        raise SpecError("option --name: needs --pod FILE")
    if group_file is not None and pod_file:
        raise SpecError("--group-file resolves the names in a dump (--rules, --nft); for --pod's rules give it to "
                        "netsim compile")
    if backend is not None and not pod_file:
        raise SpecError("--backend chooses how --pod's rules are written: give --pod FILE (--rules and --nft "
                        "name their backend themselves)")
    ifaces = _iface_addrs(iface_addrs)
    if pod_file:
        w = Workload.from_pod(pod_file, istio_version=istio_version, pod_ips=pod_ips, backend=backend,
                              mode=mode, ambient_settings=ambient_settings, config_paths=configs, name=pod_name)
    else:
        if ambient_settings:
            raise SpecError("--ambient-config sets the node agent that compiles --pod's rules; a dump (--rules, "
                            "--nft) was written already")
        from netsim.netfilter.matches import Names
        from netsim.reader import read_group_file

        w = Workload.from_rules(rules_files, pod_ips=pod_ips, istio_version=istio_version, nft_paths=nft_files,
                                legacy_paths=legacy_files,
                                names=Names.resolving(read_group_file(group_file) if group_file else None))
        if mode == "ambient":
            w = w.as_ambient()
    w = w.with_iface_addrs((*w.annotated_iface_addrs(), *ifaces))
    if in_iface is not None and in_iface not in ("lo", "eth0") and in_iface not in dict(w.iface_addrs):
        w = replace(w, notes=(*w.notes, f"--in-iface {in_iface}: no address known for it (give --iface-addr "
                                        f"{in_iface}=IP): REDIRECT in PREROUTING drops what arrives on a device "
                                        "without one"))
    s = _Session(w, w.netns(listening, route_localnet=route_localnet), [*w.notes, *w.assumptions(listening)],
                 output)
    if matrix:
        _matrix(s, fmt)
        return
    if pcap:
        _pcap(pcap, s, uid, gid, fmt)
        return
    if dst is None or (dst[1] is None and proto != "icmp"):
        raise SpecError("--dst IP:PORT is required (or --matrix, or --pcap FILE)")
    w, own_notes = w.for_destination(dst[0], arriving=from_ is not None)
    if own_notes:
        s = _Session(w, w.netns(listening, route_localnet=route_localnet), [*w.notes, *w.assumptions(listening)],
                     output)
    packet, who = w.packet(dst, proto=proto, src=src, from_=from_, uid=uid, gid=gid, in_iface=in_iface or "eth0",
                           mark=mark, as_=as_)
    if follow_up:
        _exit(_follow_up(s, packet, who, fmt, ct, uid, gid), expect)
        return
    if ct.given:
        packet, who = ct.apply(packet, who, s, uid, gid)
    mesh = None
    if configs and w.sidecar.owner == "ztunnel":
        s.notes.append("--config: ztunnel, not an Envoy sidecar, takes this pod's connections; what it does next (the "
                       "endpoint it picks, HBONE to that endpoint's 15008, a waypoint) is not modelled, so no "
                       "listener or cluster is shown")
    elif configs:
        mesh = _MeshRequest(index=_load_mesh(configs, pod_file, mesh_config, istio_version, keep_going, s, pod_name),
                            send=send or "tcp", host=host, path=http_path or "/", sni=sni)
    _exit(_trace_one(s, packet, who, fmt, mesh), expect)


def _iface_addrs(items: tuple[str, ...]) -> list[tuple[str, Address]]:
    """``--iface-addr NAME=IP`` → (NAME, address); one clear error for anything else."""
    out = []
    for item in items:
        name, sep, ip = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out.append((name.strip(), ipaddress.ip_address(ip.strip())))
        except ValueError:
            raise SpecError(f"--iface-addr {item!r}: expected NAME=IP (e.g. net1=10.10.0.5)") from None
    return out


def _exit(decision: Decision, expect: str | None) -> None:
    """--expect: exit status 1 when the verdict is not the expected one (0 otherwise, as without it)."""
    if expect is not None and not decision.verdict.holds(expect):
        raise click.exceptions.Exit(1)


_CT_OPTIONS = ("--ct-state", "--ct-zone", "--ct-mark", "--ct-dnat", "--ct-reply", "--follow-up")


@dataclass(frozen=True)
class _CtRequest:
    """The conntrack options: the entry the traced packet finds (spec/netfilter.md §1.3, §1.9)."""

    state: str | None
    zone: int | None
    mark: int | None
    dnat: tuple[Address, int | None] | None
    reply: bool
    follow_up: bool

    @property
    def given(self) -> bool:
        return any(v not in (None, False) for v in self._values())

    def _values(self) -> tuple[object, ...]:
        return (self.state, self.zone, self.mark, self.dnat, self.reply, self.follow_up)

    def check(self, *, matrix: bool, pcap: str | None, configs: tuple[str, ...]) -> None:
        """Combinations that describe no packet: one ``Error:`` line each (SpecError)."""
        named = [n for n, v in zip(_CT_OPTIONS, self._values(), strict=True) if v not in (None, False)]
        if named and (matrix or pcap):
            raise SpecError(f"{', '.join(named)}: {'--matrix' if matrix else '--pcap'} traces first packets of "
                            "new connections; conntrack options apply to one traced packet")
        if configs and (self.reply or self.follow_up):
            raise SpecError(f"--config continues one captured connection; it does not apply to "
                            f"{'--ct-reply' if self.reply else '--follow-up'}")
        entry = [n for n, v in zip(_CT_OPTIONS[:4], self._values()[:4], strict=True) if v is not None]
        if self.follow_up:
            if entry:
                raise SpecError(f"--follow-up takes the entry from the connection's first packet: drop "
                                f"{', '.join(entry)}")
            return
        state = (self.state or ("ESTABLISHED" if self.reply else "NEW")).upper()
        if self.reply and state in ("NEW", "UNTRACKED", "INVALID"):
            raise SpecError(f"--ct-reply: a reply-direction packet belongs to an entry (ESTABLISHED or RELATED), "
                            f"not --ct-state {state}")
        if self.dnat is not None and state in ("UNTRACKED", "INVALID"):
            raise SpecError(f"--ct-dnat: an {state} packet has no conntrack entry to carry a binding")
        extra = [n for n, v in (("--ct-zone", self.zone), ("--ct-mark", self.mark)) if v is not None]
        if extra and (state in ("UNTRACKED", "INVALID") or (state == "NEW" and self.dnat is None)):
            why = f"an {state} packet has none" if state != "NEW" else \
                "a first packet (NEW) has none yet: give --ct-state or --ct-dnat"
            raise SpecError(f"{', '.join(extra)} describe an existing conntrack entry; {why}")

    def apply(self, packet: Packet, who: str, s: _Session, uid: int | None, gid: int | None) -> tuple[Packet, str]:
        """``packet`` (the connection's first packet as the options describe it) with the entry; with
        --ct-reply the reply-direction packet of that connection instead."""
        from netsim.workload.packets import conntrack_entry, reply_to, with_entry

        entry = conntrack_entry(packet, state=self.state, zone=self.zone, mark=self.mark, dnat=self.dnat,
                                reply=self.reply)
        if not self.reply:
            return with_entry(packet, entry), who
        return reply_to(s.workload, packet, entry, s.netns, uid=uid, gid=gid)


def _entry_json(entry: Conntrack | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    def ep(b: tuple[Address, int] | None) -> str | None:
        return None if b is None else (f"[{b[0]}]:{b[1]}" if b[0].version == 6 else f"{b[0]}:{b[1]}")
    return {"state": entry.state.value, "zone": entry.zone, "mark": entry.mark, "dnat_to": ep(entry.dnat_to),
            "snat_to": ep(entry.snat_to)}


def _entry_text(entry: Conntrack) -> str:
    e = _entry_json(entry)
    assert e is not None
    parts = [f"zone {entry.zone}", f"mark {entry.mark:#x}"]
    parts.append(f"DNAT to {e['dnat_to']}" if entry.dnat_to else "no DNAT")
    if entry.snat_to:
        parts.append(f"SNAT to {e['snat_to']}")
    return ", ".join(parts)


def _follow_up(s: _Session, packet: Packet, who: str, fmt: str, ct: _CtRequest, uid: int | None,
               gid: int | None) -> Decision:
    """The connection's first packet, then a second one finding the entry the first left
    (:func:`netsim.workload.packets.follow_up`), printed in ``fmt``."""
    from netsim.workload.packets import follow_up

    fu = follow_up(s.workload, packet, who, s.netns, reply=ct.reply, uid=uid, gid=gid)
    first, entry, second = fu.first, fu.entry, fu.second
    if fu.note is not None:
        s.notes.append(fu.note)
    label2 = "the reply" if ct.reply else "a second packet of the same connection"
    if fmt == "json":
        def part(f: Followed) -> dict[str, Any]:
            return {"hops": _hops_json(f), "summary": f.summary, **f.to_json()}
        click.echo(json.dumps({"first": part(first), "entry": _entry_json(entry),
                               "second": None if second is None else {"reply": ct.reply, **part(second)},
                               "notes": s.notes}, indent=2))
        return first.decision
    if fmt == "html":
        from netsim.picture.html import follow_up_page
        from netsim.picture.view import trace_view

        write_picture(follow_up_page(trace_view(first, notes=s.notes),
                                     None if second is None else trace_view(second), None if entry is None else
                                     f"ESTABLISHED, {_entry_text(entry)}", label2), s.output)
        return first.decision
    parts = [("first packet", first)] + ([(label2, second)] if second is not None else [])
    if fmt in _KERNEL_FORMATS:
        for name, f in parts:
            click.echo(f"# {name}")
            _echo_hops(f, fmt)
        return first.decision
    for note in s.notes:
        click.echo(f"Note: {note}")
    for n, (name, f) in enumerate(parts):
        if n:
            assert entry is not None
            click.echo(f"==== Then {name}, finding the entry the first packet left (ESTABLISHED, "
                       f"{_entry_text(entry)})")
        else:
            click.echo("==== The connection's first packet (conntrack NEW: nat is consulted)")
        _echo_hops(f, fmt)
        click.echo(f.summary)
        click.echo()
    return first.decision


def _envoy(mesh: _MeshRequest, conts: list[MeshContinuation]) -> EnvoyHop:
    """The sidecar's Envoy decision as the workload's tracer asks for it (netsim.mesh, imported here):
    each continuation is kept in ``conts`` for printing, and its upstream address goes back to the
    tracer, whose next hop goes there."""
    from netsim.mesh.trace import continue_trace
    from netsim.workload.hops import Upstream

    def decide(verdict: Verdict, od: Endpoint) -> Upstream | None:
        cont = continue_trace(mesh.index, verdict.value, dst_ip=str(od.addr), dst_port=od.port, send=mesh.send,
                              host=mesh.host, path=mesh.path, sni=mesh.sni)
        if cont is None:
            return None
        conts.append(cont)
        up = cont.upstream
        if up is None:
            return None
        addr = ipaddress.ip_address(up.address) if up.address is not None else None
        if addr is not None and addr.version != od.addr.version:
            return Upstream(address=None, port=up.port, what=f"{up.what} is an IPv{addr.version} address")
        return Upstream(address=addr, port=up.port, what=up.what)

    return decide


def _trace_one(s: _Session, packet: Packet, who: str, fmt: str, mesh: _MeshRequest | None = None) -> Decision:
    """Follow ``packet`` (and, with ``mesh``, the sidecar's hop) and print it in ``fmt``.

    JSON: ``{"hops": [{"who", **trace (render_trace's schema)}], "summary": the last sentence,
    "verdict", "decided_by", "reason", "listener" (:class:`~netsim.workload.verdict.Decision`),
    "notes": [str]}``, plus with ``--config`` ``"mesh"``: null, or MeshContinuation.to_json()
    (``netsim mesh hop``'s fields, ``istio``, ``steps``) with ``config_errors`` and ``conflicts`` as
    ``netsim mesh hop`` reports them.
    """
    conts: list[MeshContinuation] = []
    f = s.workload.follow(packet, who, netns=s.netns, envoy=_envoy(mesh, conts) if mesh is not None else None)
    cont = conts[0] if conts else None
    if mesh is not None and cont is None:
        s.notes.append(f"--config: no Envoy hop to show: the connection does not reach the sidecar's outbound or "
                       f"inbound listener through a capture rule (kernel verdict: {f.verdict})")
    summary = cont.final_sentence(f.summary) if cont is not None else f.summary
    if fmt == "json":
        out: dict[str, Any] = {"hops": _hops_json(f), "summary": summary, **f.to_json(), "notes": s.notes}
        if mesh is not None:
            out["mesh"] = None if cont is None else {
                **cont.to_json(), "config_errors": [str(e) for e in (*mesh.index.objects.errors, *mesh.index.errors)],
                "conflicts": list(mesh.index.conflicts)}
        click.echo(json.dumps(out, indent=2))
        return f.decision
    if fmt in PICTURE_FORMATS:
        from netsim.picture.view import trace_view

        view = trace_view(f, summary=summary, notes=s.notes, mesh=cont)
        title = f"netsim trace: {view.lanes[0].packet}"
        if fmt == "svg":
            from netsim.picture.svg import trace_svg

            write_picture(trace_svg(view, title=title), s.output)
        else:
            from netsim.picture.html import trace_page

            write_picture(trace_page(view, title=title), s.output)
        return f.decision
    if fmt in _KERNEL_FORMATS:
        _echo_hops(f, fmt)
        return f.decision
    for note in s.notes:
        click.echo(f"Note: {note}")
    _echo_hops(f, fmt, envoy_after=cont.text_lines() if cont is not None else None)
    click.echo(summary)
    return f.decision


def _hops_json(f: Followed) -> list[dict[str, Any]]:
    from netsim.netfilter.render_trace import trace_json

    return [{"who": h.who, **trace_json(h.trace)} for h in f.hops]


def _echo_hops(f: Followed, fmt: str, envoy_after: list[str] | None = None) -> None:
    """Each hop's trace: ``xtables-trace`` or ``nft-trace`` lines (with a ``# hop N: who`` line when there are
    several), or text under ``== Hop N: who``; ``envoy_after``: the Envoy block, printed after the hop it decides."""
    from netsim.netfilter.render_trace import render_nft_trace, render_text, render_xtables

    for i, h in enumerate(f.hops):
        if fmt in _KERNEL_FORMATS:
            if len(f.hops) > 1:
                click.echo(f"# hop {i + 1}: {h.who}")
            click.echo((render_xtables if fmt == "xtables-trace" else render_nft_trace)(h.trace), nl=False)
        else:
            click.echo(f"== Hop {i + 1}: {h.who}")
            click.echo(render_text(h.trace))
            if envoy_after is not None and i == 0:
                for line in envoy_after:
                    click.echo(line)
                click.echo()
                envoy_after = None
    if envoy_after is not None:
        for line in envoy_after:
            click.echo(line)
        click.echo()


def _matrix(s: _Session, fmt: str) -> None:
    out: list[dict[str, Any]] = []
    for fam, rows in s.workload.matrix(netns=s.netns):
        out.extend({"family": fam.value, **r.to_json()} for r in rows)
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    if fmt == "html":
        from netsim.picture.html import matrix_page

        write_picture(matrix_page(out), s.output)
        return
    click.echo(f"{'ip':<3} {'direction':<9} {'proto':<5} {'port':>5} {'from':<6} {'verdict':<16} rule")
    for r in out:
        click.echo(f"v{r['family']:<2} {r['direction']:<9} {r['proto']:<5} {r['port']:>5} {r['who']:<6} "
                   f"{r['cell']:<16} {r['rule']}")
    click.echo("('?' marks a cell that rests on an assumption: an unknown match, a listener or a random draw)")


def _pcap(path: str, sess: _Session, uid: int | None, gid: int | None, fmt: str) -> None:
    from netsim.workload.packets import trace_capture

    rows = [{"no": c.no, "proto": c.packet.proto.value, "src": f"{c.packet.src}:{c.packet.sport}",
             "dst": f"{c.packet.dst}:{c.packet.dport}", **c.followed.to_json(), "summary": c.followed.summary}
            for c in trace_capture(sess.workload, path, sess.netns, uid=uid, gid=gid)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'no':>4} {'proto':<5} {'source':<22} {'destination':<22} verdict")
    for r in rows:
        click.echo(f"{r['no']:>4} {r['proto']:<5} {r['src']:<22} {r['dst']:<22} {r['verdict']}")
    click.echo(f"{len(rows)} packets traced (each as the first packet of its connection)")


__all__ = ["trace_cmd"]
