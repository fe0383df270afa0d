"""``netsim trace``: parse the options, build the ruleset and packet, call the tracer, print the result.

Owns: the option types (endpoints, port lists), reading ``--rules`` dumps (IPv4 and IPv6 sections of
one file, as ``iptables-save; ip6tables-save`` writes them) and ``--pod`` manifests (through
``netsim.spec`` and ``netsim.capture``), the pcap table (scapy is imported only there), the three
output formats, and handing a captured connection to ``netsim.mesh`` when ``--config`` is given
(imported only then: yaml stays out of the plain trace's cold start). Never decides anything about
packets itself (``engine``, ``trace_hops``) or about the sidecar's listeners (``netsim.mesh``).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from netsim.errors import NetsimError, RulesetError, SpecError
from netsim.netfilter.model import BUILTIN_CHAINS, Family, RestorePayload, Ruleset
from netsim.netfilter.packet import (
    ACK,
    Address,
    Conntrack,
    CtState,
    FwmarkRoute,
    Interface,
    Listener,
    Netns,
    Origin,
    Packet,
    Proto,
    Socket,
)

if TYPE_CHECKING:  # imported where used: netsim.mesh (and yaml) load only with --config
    from netsim.mesh.build import ProxyIndex
    from netsim.mesh.trace import MeshContinuation
    from netsim.netfilter.engine import CompiledRuleset
    from netsim.netfilter.trace_hops import Followed, Sidecar

DEFAULT_POD_IP = "10.244.0.5"  # the examples' pod IP (rules/README.md) when neither the pod nor --pod-ip has one
# Ports the capture matrix always probes besides the pod's own (Istio's fixed ports, DNS, web).
MATRIX_PORTS = (53, 80, 443, 8080, 15001, 15006, 15008, 15020, 15021, 15053, 15090)


class EndpointType(click.ParamType):  # type: ignore[type-arg]
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT``."""

    name = "IP[:PORT]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[Address, int | None]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_endpoint(str(value))
        except ValueError as e:
            raise SpecError(f"{_opt(param)} {value!r}: {e}") from None


class PortListType(click.ParamType):  # type: ignore[type-arg]
    name = "PORTS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        out = []
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            if not item.isdigit() or not 0 < int(item) <= 65535:
                raise SpecError(f"{_opt(param)} {value!r}: {item!r} is not a port (1-65535)")
            out.append(int(item))
        return tuple(out)


class MarkType(click.ParamType):  # type: ignore[type-arg]
    """A 32-bit mark: decimal or ``0x`` hex, as iptables prints it."""

    name = "MARK"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            mark = int(str(value), 0)
        except ValueError:
            raise SpecError(f"{_opt(param)} {value!r}: not a number (e.g. 0x539 or 1337)") from None
        if not 0 <= mark <= 0xFFFFFFFF:
            raise SpecError(f"{_opt(param)} {value!r}: a mark is 32 bits (0-0xffffffff)")
        return mark


def _opt(param: click.Parameter | None) -> str:
    """Option errors are one line (SpecError → ``Error: …``, exit 2), naming the option."""
    return param.opts[0] if param is not None and param.opts else "value"


def parse_endpoint(text: str) -> tuple[Address, int | None]:
    """``10.0.0.5:80`` → (address, 80); ``10.0.0.5`` → (address, None); ``[fd00::1]:53``; bare IPv6."""
    port: int | None = None
    host = text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected [IPv6]:PORT")
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p)
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"port {text!r} must be 1-65535")
    return int(text)


def split_families(text: str) -> list[tuple[Family, str]]:
    """Split ``iptables-save; ip6tables-save`` output into its IPv4 and IPv6 parts: a table that
    appears a second time, or a ``# IPv6``/``ip6tables-save`` comment, starts the second part."""
    from netsim.netfilter.parse import guess_family

    parts: list[list[str]] = [[]]
    seen: set[str] = set()
    for line in text.splitlines():
        s = line.strip()
        starts_v6 = s.startswith("#") and ("IPv6" in s or "ip6tables-save" in s) and any(
            ln.strip().startswith("*") for ln in parts[-1])
        if s.startswith("*"):
            name = s[1:].strip()
            if name in seen:
                starts_v6 = True
                seen = set()
            seen.add(name)
        if starts_v6 and parts[-1]:
            parts.append([])
            seen = {s[1:].strip()} if s.startswith("*") else set()
        parts[-1].append(line)
    out = []
    for i, lines in enumerate(parts):
        body = "\n".join(lines)
        if not any(ln.strip().startswith("*") for ln in lines):
            continue
        fam = guess_family(body)
        if i > 0 and fam is Family.IPV4 and len(parts) == 2:
            fam = Family.IPV6
        out.append((fam, body))
    return out


@dataclass(frozen=True)
class _MeshRequest:
    """``--config`` and the connection's first bytes: what ``netsim.mesh.trace.continue_trace`` needs."""

    index: ProxyIndex  # built once per command
    send: str
    host: str | None
    path: str
    sni: str | None


# the options that only mean something to the sidecar's hop (--config)
_MESH_ONLY = ("--mesh-config", "--send", "--host", "--path", "--sni")


@dataclass
class _Setup:
    rulesets: dict[Family, Ruleset] = field(default_factory=dict)
    base_chains: dict[Family, set[tuple[str, str]] | None] = field(default_factory=dict)
    pod_ips: list[Address] = field(default_factory=list)
    app_uid: int = 0
    app_gid: int = 0
    app_ports: tuple[int, ...] = ()
    proxy_uid: int = 1337
    proxy_gid: int = 1337
    tproxy_mark: int | None = None
    dns: bool = False
    passthrough: bool = True
    notes: list[str] = field(default_factory=list)

    def owner(self, uid: int | None, gid: int | None) -> tuple[int, int]:
        """The app socket's uid and gid: --uid/--gid, else the app's (the gid follows a given --uid)."""
        u = self.app_uid if uid is None else uid
        return u, (self.app_gid if uid is None else u) if gid is None else gid


def _load_rules(paths: tuple[str, ...], setup: _Setup) -> None:
    from netsim.netfilter.parse import parse_ruleset

    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise NetsimError(f"{path}: cannot read: {e.strerror}") from None
        parts = split_families(text)
        if not parts:
            raise RulesetError(f"{path}: no tables found (expected iptables-save output)")
        for fam, body in parts:
            try:
                setup.rulesets[fam] = parse_ruleset(body, fam)
            except NetsimError as e:
                raise e.at(path) from None
            setup.base_chains[fam] = None


def _payload_chains(payload: RestorePayload) -> set[tuple[str, str]]:
    return {(op.table, op.chain) for op in payload.ops if op.chain in BUILTIN_CHAINS.get(op.table, ())}


def _load_pod(path: str, version: str | None, setup: _Setup) -> None:
    from netsim.capture.compiled import compile_config
    from netsim.spec.pod import load_pod
    from netsim.spec.resolve import PodNetwork, resolve
    from netsim.spec.versions import profile_for

    pod = load_pod(path)
    profile = profile_for(version)
    net = PodNetwork(pod_ips=tuple(str(a) for a in setup.pod_ips))
    res = resolve(pod=pod, net=net, profile=profile, profile_given=version is not None)
    setup.notes.extend(res.warnings)
    if not res.capture or res.config is None:
        setup.notes.append(f"no capture rules: {res.no_capture_reason}")
        setup.rulesets[Family.IPV4] = Ruleset(Family.IPV4, ())
        setup.base_chains[Family.IPV4] = set()
    else:
        cfg = res.config
        compiled = compile_config(cfg)
        setup.rulesets[Family.IPV4] = compiled.ruleset_v4
        # iptables-nft creates only the base chains a payload appends or inserts to (spec §4).
        setup.base_chains[Family.IPV4] = _payload_chains(compiled.v4)
        if compiled.ruleset_v6 is not None and compiled.v6 is not None:
            setup.rulesets[Family.IPV6] = compiled.ruleset_v6
            setup.base_chains[Family.IPV6] = _payload_chains(compiled.v6)
        setup.proxy_uid = int(cfg.proxy_uid[0]) if cfg.proxy_uid and cfg.proxy_uid[0].isdigit() else 1337
        setup.proxy_gid = int(cfg.proxy_gid[0]) if cfg.proxy_gid and cfg.proxy_gid[0].isdigit() else 1337
        if cfg.mode.value == "TPROXY":
            # The injector runs Envoy as uid 0 / gid 1337 in TPROXY mode (spec/istio-iptables.md §6).
            setup.proxy_uid, setup.proxy_gid = 0, 1337
            setup.tproxy_mark = int(cfg.tproxy_mark, 0)
        from netsim.capture.iptables import dns_capture_effective

        setup.dns = dns_capture_effective(cfg)
    setup.passthrough = profile.version >= (1, 10)
    if not setup.pod_ips:
        setup.pod_ips = [ipaddress.ip_address(a) for a in pod.pod_ips]
    apps = [c for c in pod.containers if c.name != "istio-proxy"]
    uids = [c.run_as_user for c in apps if c.run_as_user is not None]
    if uids:
        setup.app_uid = setup.app_gid = uids[0]
    else:
        setup.notes.append("the app's uid is not set in securityContext: assuming the image runs as root (uid 0)")
    setup.app_ports = tuple(p for c in apps for p in c.ports)


def _netns(setup: _Setup, listening: tuple[int, ...] | None, pod: bool) -> Netns:
    addrs = [f"{a}/{24 if a.version == 4 else 64}" for a in setup.pod_ips]
    lo = Interface.of("lo", "127.0.0.1/8", "::1/128", "::6/128")
    eth = Interface.of("eth0", *addrs)
    listeners: tuple[Listener, ...] | None = None
    if listening is not None:
        listeners = tuple(Listener(port=p, proto=pr, transparent=True) for p in listening
                          for pr in (Proto.TCP, Proto.UDP))
    elif pod:
        envoy = [15001, 15006, 15008, 15020, 15021, 15090]
        ls = [Listener(port=p, transparent=setup.tproxy_mark is not None) for p in envoy]
        ls += [Listener(port=15053, proto=pr) for pr in (Proto.TCP, Proto.UDP)] if setup.dns else []
        listeners = tuple(ls)
        setup.notes.append("the app is assumed to listen on every other port (use --listening to say which)")
    routes: tuple[FwmarkRoute, ...] = ()
    if setup.tproxy_mark is not None:
        routes = (FwmarkRoute(mark=setup.tproxy_mark, table=133),)
    return Netns(interfaces=(lo, eth), default_iface="eth0", listeners=listeners, fwmark_routes=routes,
                 other_ports_listen=pod and listening is None)


def _load_mesh(configs: tuple[str, ...], pod_file: str | None, mesh_config: str | None,
               istio_version: str | None, setup: _Setup) -> ProxyIndex:
    """The sidecar's listener/cluster index for the traced pod (its file, else its IPs), built once.

    Broken documents are notes and the rest still loads (as for ``netsim mesh hop``); a path that
    does not exist or cannot be read, or a bad mesh config, raises (one ``Error:`` line, exit 2).
    """
    from netsim.mesh.files import load_index

    index = load_index(configs, pod_file=pod_file, pod_ips=tuple(str(a) for a in setup.pod_ips),
                       mesh_config=mesh_config, istio_version=istio_version)
    setup.notes.extend(f"--config: {e}" for e in (*index.objects.errors, *index.errors))
    return index


@click.command("trace")
@click.option("--pod", "pod_file", type=click.Path(dir_okay=False),
              help="Pod/Deployment manifest: compile its capture rules.")
@click.option("--istio-version", help="Istio release whose injector defaults (--pod) and sidecar behaviour "
                                      "(--config) apply (default: current).")
@click.option("--rules", "rules_files", multiple=True, type=click.Path(dir_okay=False),
              help="iptables-save (and ip6tables-save) output to trace through instead of --pod.")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp", show_default=True)
@click.option("--src", type=EndpointType(), help="Source IP[:PORT] of a locally generated packet.")
@click.option("--dst", type=EndpointType(), help="Destination IP:PORT.")
@click.option("--from", "from_", type=EndpointType(), help="Trace an arriving packet from this IP[:PORT].")
@click.option("--uid", type=click.IntRange(0), help="Owner uid of the sending socket (default: the app's).")
@click.option("--gid", type=click.IntRange(0), help="Owner gid of the sending socket (default: the uid).")
@click.option("--in-iface", default="eth0", show_default=True, help="Device an arriving packet comes in on.")
@click.option("--pod-ip", "pod_ips", multiple=True, help="The pod's addresses (comma list or repeated).")
@click.option("--listening", type=PortListType(), help="Ports with a listening socket; empty means none.")
@click.option("--pcap", type=click.Path(dir_okay=False), help="Trace every IP packet of this capture file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "xtables-trace"]), default="text",
              show_default=True)
@click.option("--matrix", is_flag=True, help="Print the capture matrix instead of one trace.")
@click.option("--config", "configs", multiple=True, type=click.Path(),
              help="Kubernetes/Istio objects (files or directories, repeatable): continue a connection "
                   "captured on 15001/15006 through the sidecar's listener, route and cluster.")
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
def trace_cmd(pod_file: str | None, istio_version: str | None, rules_files: tuple[str, ...], proto: str,
              src: tuple[Address, int | None] | None, dst: tuple[Address, int | None] | None,
              from_: tuple[Address, int | None] | None, uid: int | None, gid: int | None, in_iface: str,
              pod_ips: tuple[str, ...], listening: tuple[int, ...] | None, pcap: str | None, fmt: str,
              matrix: bool, configs: tuple[str, ...], mesh_config: str | None, send: str | None,
              host: str | None, http_path: str | None, sni: str | None, ct_state: str | None,
              ct_zone: int | None, ct_mark: int | None, ct_dnat: tuple[Address, int | None] | None, ct_reply: bool,
              follow_up: bool) -> None:
    """Where does this packet go, and why? Trace it through the pod's iptables rules and the sidecar.

    With --config, a connection the sidecar captures continues through its Envoy listener, filter
    chain, route and cluster (as `netsim mesh hop` decides them), shown after the kernel's steps.
    """
    mesh_only = [name for name, value in zip(_MESH_ONLY, (mesh_config, send, host, http_path, sni), strict=True)
                 if value is not None]
    if mesh_only and not configs:
        raise SpecError(f"{', '.join(mesh_only)} describe{'s' if len(mesh_only) == 1 else ''} the sidecar's hop: "
                        "give the mesh objects with --config PATH")
    if configs and (matrix or pcap or fmt == "xtables-trace"):
        what = "--matrix" if matrix else "--pcap" if pcap else "--format xtables-trace"
        raise SpecError(f"--config continues one trace in text or JSON; it does not apply to {what}")
    ct = _CtRequest(ct_state, ct_zone, ct_mark, ct_dnat, ct_reply, follow_up)
    ct.check(matrix=matrix, pcap=pcap, configs=configs)
    setup = _Setup()
    for text in pod_ips:
        for item in text.split(","):
            try:
                setup.pod_ips.append(ipaddress.ip_address(item.strip()))
            except ValueError:
                raise SpecError(f"--pod-ip {item!r}: not an IP address") from None
    if bool(pod_file) == bool(rules_files):
        raise SpecError("give exactly one of --pod FILE or --rules FILE")
    if pod_file:
        _load_pod(pod_file, istio_version, setup)
    else:
        _load_rules(rules_files, setup)
    if not setup.pod_ips:
        setup.pod_ips = [ipaddress.ip_address(DEFAULT_POD_IP)]
        setup.notes.append(f"pod IP not given (--pod-ip): assuming {DEFAULT_POD_IP}")
    netns = _netns(setup, listening, bool(pod_file))
    from netsim.netfilter.trace_hops import Sidecar

    sidecar = Sidecar(uid=setup.proxy_uid, gid=setup.proxy_gid,
                      passthrough_v4="127.0.0.6" if setup.passthrough else None,
                      passthrough_v6="::6" if setup.passthrough else None)
    if matrix:
        _matrix(setup, netns, sidecar, fmt)
        return
    if pcap:
        _pcap(pcap, setup, netns, sidecar, uid, gid, fmt)
        return
    if dst is None or (dst[1] is None and proto != "icmp"):
        raise SpecError("--dst IP:PORT is required (or --matrix, or --pcap FILE)")
    packet, who = _packet(setup, proto, src, dst, from_, uid, gid, in_iface)
    if follow_up:
        _follow_up(setup, netns, sidecar, packet, who, fmt, ct, uid, gid)
        return
    if ct.given:
        packet, who = ct.apply(packet, who, netns, sidecar, setup, uid, gid)
    mesh = None
    if configs:
        mesh = _MeshRequest(index=_load_mesh(configs, pod_file, mesh_config, istio_version, setup),
                            send=send or "tcp", host=host, path=http_path or "/", sni=sni)
    _trace_one(setup, netns, sidecar, packet, who, fmt, mesh)


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

    def entry(self, packet: Packet) -> Conntrack:
        state = CtState((self.state or ("ESTABLISHED" if self.reply else "NEW")).upper())
        dnat = None
        if self.dnat is not None:
            addr, port = self.dnat
            if addr.version != packet.dst.version:
                raise SpecError("--ct-dnat and --dst must be the same IP version")
            dnat = (addr, packet.dport if port is None else port)
        try:
            return Conntrack(state=state, zone=self.zone or 0, mark=self.mark or 0, dnat_to=dnat,
                             orig_src=(packet.src, packet.sport), orig_dst=(packet.dst, packet.dport))
        except ValueError as e:
            raise SpecError(f"conntrack options: {e}") from None

    def apply(self, packet: Packet, who: str, netns: Netns, sidecar: Sidecar, setup: _Setup, uid: int | None,
              gid: int | None) -> tuple[Packet, str]:
        """``packet`` (the connection's first packet as the options describe it) with the entry; with
        --ct-reply the reply-direction packet of that connection instead."""
        entry = self.entry(packet)
        if not self.reply:
            return replace(packet, ct=entry, tcp_flags=ACK if packet.proto is Proto.TCP and entry.exists
                           else packet.tcp_flags), who
        return _reply_of(packet, entry, netns, sidecar, setup, uid, gid)


def _reply_of(packet: Packet, entry: Conntrack, netns: Netns, sidecar: Sidecar, setup: _Setup, uid: int | None,
              gid: int | None) -> tuple[Packet, str]:
    """The reply-direction packet of ``packet``'s connection: locally generated by the sidecar when it
    comes from one of its listeners, else by the app (--uid/--gid, default the app's), or arriving."""
    from netsim.netfilter.conntrack import reply_packet

    src_port = entry.dnat_to[1] if entry.dnat_to else packet.dport
    ports = (sidecar.outbound_port, sidecar.inbound_port, sidecar.dns_port)
    if src_port in ports:
        sock, who = Socket(uid=sidecar.uid, gid=sidecar.gid), f"reply from the sidecar (uid {sidecar.uid})"
    else:
        u, g = setup.owner(uid, gid)
        sock, who = Socket(uid=u, gid=g), f"reply from the app (uid {u}, gid {g})"
    try:
        reply = reply_packet(packet, entry, netns, sock)
    except ValueError as e:
        raise SpecError(f"--ct-reply: {e}") from None
    if reply.origin is Origin.ARRIVING:
        who = f"reply from {reply.src}"
    return reply, who


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


def _follow_up(setup: _Setup, netns: Netns, sidecar: Sidecar, packet: Packet, who: str, fmt: str, ct: _CtRequest,
               uid: int | None, gid: int | None) -> None:
    """The connection's first packet, then a second one finding the entry the first left (§1.3): the
    same direction (nat not consulted, the binding reused — istio#33480's UDP tuple reuse), or with
    --ct-reply the reply (the binding undone)."""
    from netsim.netfilter.conntrack import entry_after, later_packet
    from netsim.netfilter.trace_hops import follow

    crs = _compiled(setup, packet.family)
    first = follow(crs, packet, netns, sidecar, who)
    entry = entry_after(first.hops[0].trace)
    second = None
    if entry is None:
        t = first.hops[0].trace
        setup.notes.append(f"--follow-up: no second packet: the first one leaves no conntrack entry "
                           f"({t.outcome.value}, conntrack {t.ctstate})")
    else:
        if ct.reply:
            nxt, nwho = _reply_of(packet, entry, netns, sidecar, setup, uid, gid)
        else:
            nxt, nwho = later_packet(packet, entry), who
        second = follow(crs, nxt, netns, sidecar, nwho)
    label2 = "the reply" if ct.reply else "a second packet of the same connection"
    if fmt == "json":
        def part(f: Followed) -> dict[str, Any]:
            return {"hops": _hops_json(f), "summary": f.summary, "verdict": f.verdict}
        click.echo(json.dumps({"first": part(first), "entry": _entry_json(entry),
                               "second": None if second is None else {"reply": ct.reply, **part(second)},
                               "notes": setup.notes}, indent=2))
        return
    parts = [("first packet", first)] + ([(label2, second)] if second is not None else [])
    if fmt == "xtables-trace":
        for name, f in parts:
            click.echo(f"# {name}")
            _echo_hops(f, fmt)
        return
    for note in setup.notes:
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


def _compiled(setup: _Setup, family: Family) -> CompiledRuleset:
    from netsim.netfilter.engine import compile_ruleset

    rs = setup.rulesets.get(family)
    if rs is None:
        raise SpecError(f"no IPv{family.value} rules to trace an IPv{family.value} packet through")
    return compile_ruleset(rs, setup.base_chains.get(family))


def _packet(setup: _Setup, proto: str, src: tuple[Address, int | None] | None, dst: tuple[Address, int | None],
            from_: tuple[Address, int | None] | None, uid: int | None, gid: int | None,
            in_iface: str) -> tuple[Packet, str]:
    daddr, dport = dst
    fam = Family.IPV4 if daddr.version == 4 else Family.IPV6
    from netsim.netfilter.trace_hops import APP_SPORT

    pr = Proto.parse(proto)
    if pr is Proto.ICMP and fam is Family.IPV6:
        pr = Proto.ICMPV6
    if from_ is not None:
        saddr, sport = from_
        if saddr.version != daddr.version:
            raise SpecError("--from and --dst must be the same IP version")
        return (Packet(family=fam, proto=pr, src=saddr, dst=daddr, sport=sport or APP_SPORT, dport=dport or 0,
                       origin=Origin.ARRIVING, in_iface=in_iface, socket=None), f"client {saddr}")
    u, g = setup.owner(uid, gid)
    if src is not None:
        saddr, sport = src[0], src[1] or APP_SPORT
    else:
        sport = APP_SPORT
        if daddr.is_loopback:
            saddr = daddr
        else:
            own = [a for a in setup.pod_ips if a.version == daddr.version]
            saddr = own[0] if own else (ipaddress.ip_address("127.0.0.1") if fam is Family.IPV4
                                        else ipaddress.ip_address("::1"))
    if saddr.version != daddr.version:
        raise SpecError("--src and --dst must be the same IP version")
    return (Packet(family=fam, proto=pr, src=saddr, dst=daddr, sport=sport, dport=dport or 0,
                   socket=Socket(uid=u, gid=g)), f"app (uid {u}, gid {g})")


def _continue(mesh: _MeshRequest, f: Followed, notes: list[str]) -> MeshContinuation | None:
    """The sidecar's hop after the kernel's verdict (None when no Envoy listener gets the connection)."""
    from netsim.mesh.trace import continue_trace

    od = f.original_dst
    cont = None if od is None else continue_trace(mesh.index, f.verdict, dst_ip=str(od.addr), dst_port=od.port,
                                                  send=mesh.send, host=mesh.host, path=mesh.path, sni=mesh.sni)
    if cont is None:
        notes.append(f"--config: no Envoy hop to show: the connection does not reach the sidecar's outbound or "
                     f"inbound listener (kernel verdict: {f.verdict})")
    return cont


def _trace_one(setup: _Setup, netns: Netns, sidecar: Sidecar, packet: Packet, who: str, fmt: str,
               mesh: _MeshRequest | None = None) -> None:
    """Follow ``packet`` (and, with ``mesh``, the sidecar's hop) and print it in ``fmt``.

    JSON: ``{"hops": [{"who", **trace (render_trace's schema)}], "summary": the last sentence,
    "verdict": Followed.verdict, "notes": [str]}``, plus with ``--config`` ``"mesh"``: null, or
    MeshContinuation.to_json() (``netsim mesh hop``'s fields, ``istio``, ``steps``) with
    ``config_errors`` and ``conflicts`` as ``netsim mesh hop`` reports them.
    """
    from netsim.netfilter.trace_hops import follow

    crs = _compiled(setup, packet.family)
    f = follow(crs, packet, netns, sidecar, who)
    cont = _continue(mesh, f, setup.notes) if mesh is not None else None
    summary = cont.final_sentence(f.summary) if cont is not None else f.summary
    if fmt == "json":
        out: dict[str, Any] = {"hops": _hops_json(f), "summary": summary, "verdict": f.verdict, "notes": setup.notes}
        if mesh is not None:
            out["mesh"] = None if cont is None else {
                **cont.to_json(), "config_errors": [str(e) for e in (*mesh.index.objects.errors, *mesh.index.errors)],
                "conflicts": list(mesh.index.conflicts)}
        click.echo(json.dumps(out, indent=2))
        return
    if fmt == "xtables-trace":
        _echo_hops(f, fmt)
        return
    for note in setup.notes:
        click.echo(f"Note: {note}")
    _echo_hops(f, fmt)
    if cont is not None:
        for line in cont.text_lines():
            click.echo(line)
        click.echo()
    click.echo(summary)


def _hops_json(f: Followed) -> list[dict[str, Any]]:
    from netsim.netfilter.render_trace import trace_json

    return [{"who": h.who, **trace_json(h.trace)} for h in f.hops]


def _echo_hops(f: Followed, fmt: str) -> None:
    """Each hop's trace: ``xtables-trace`` lines (with a ``# hop N: who`` line when there are several), or
    text under ``== Hop N: who``."""
    from netsim.netfilter.render_trace import render_text, render_xtables

    for i, h in enumerate(f.hops):
        if fmt == "xtables-trace":
            if len(f.hops) > 1:
                click.echo(f"# hop {i + 1}: {h.who}")
            click.echo(render_xtables(h.trace), nl=False)
        else:
            click.echo(f"== Hop {i + 1}: {h.who}")
            click.echo(render_text(h.trace))


def _matrix(setup: _Setup, netns: Netns, sidecar: Sidecar, fmt: str) -> None:
    from netsim.netfilter.trace_hops import capture_matrix

    ports = sorted(set(MATRIX_PORTS) | set(setup.app_ports))
    out: list[dict[str, Any]] = []
    for fam, rs in setup.rulesets.items():
        own = [a for a in setup.pod_ips if a.version == fam.value]
        if not own or not rs.tables:
            continue
        remote = ipaddress.ip_address("10.96.0.10" if fam is Family.IPV4 else "fd00:96::10")
        peer = ipaddress.ip_address("10.1.2.3" if fam is Family.IPV4 else "fd00:1::3")
        rows = capture_matrix(_compiled(setup, fam), netns, sidecar, app_uid=setup.app_uid,
                              app_gid=setup.app_gid, ports=ports, remote=remote, pod_ip=own[0], peer=peer)
        out.extend({"family": fam.value, "direction": r.direction, "proto": r.proto, "port": r.port, "who": r.who,
                    "verdict": r.verdict, "rule": r.rule, "summary": r.summary} for r in rows)
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{'ip':<3} {'direction':<9} {'proto':<5} {'port':>5} {'from':<6} {'verdict':<16} rule")
    for r in out:
        click.echo(f"v{r['family']:<2} {r['direction']:<9} {r['proto']:<5} {r['port']:>5} {r['who']:<6} "
                   f"{r['verdict']:<16} {r['rule']}")
    click.echo("('?' marks a cell that rests on an assumption: an unknown match, a listener or a random draw)")


def _pcap(path: str, setup: _Setup, netns: Netns, sidecar: Sidecar, uid: int | None, gid: int | None, fmt: str) -> None:
    try:
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.inet6 import IPv6
        from scapy.utils import rdpcap
    except ImportError:
        raise NetsimError("--pcap needs scapy: pip install 'netsim[pcap]'") from None
    from netsim.netfilter.trace_hops import follow

    try:
        packets = rdpcap(path)
    except Exception as e:  # OSError, or scapy's Scapy_Exception for a file that is not a capture
        raise NetsimError(f"{path}: cannot read capture: {e}") from None
    own = set(setup.pod_ips)
    rows: list[dict[str, Any]] = []
    for i, pkt in enumerate(packets, 1):
        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
        if ip is None or l4 is None:
            continue
        s, d = ipaddress.ip_address(ip.src), ipaddress.ip_address(ip.dst)
        fam = Family.IPV4 if s.version == 4 else Family.IPV6
        if fam not in setup.rulesets:
            continue
        proto = Proto.TCP if pkt.getlayer(TCP) is not None else Proto.UDP
        flags: frozenset[str] = frozenset()
        if proto is Proto.TCP:
            names = {"F": "FIN", "S": "SYN", "R": "RST", "P": "PSH", "A": "ACK", "U": "URG"}
            flags = frozenset(names[c] for c in str(l4.flags) if c in names)
        if s in own:
            u, g = setup.owner(uid, gid)
            packet = Packet(family=fam, proto=proto, src=s, dst=d, sport=int(l4.sport), dport=int(l4.dport),
                            tcp_flags=flags, socket=Socket(uid=u, gid=g))
        else:
            packet = Packet(family=fam, proto=proto, src=s, dst=d, sport=int(l4.sport), dport=int(l4.dport),
                            tcp_flags=flags, origin=Origin.ARRIVING, in_iface="eth0", socket=None)
        f = follow(_compiled(setup, fam), packet, netns, sidecar, "pcap")
        rows.append({"no": i, "proto": proto.value, "src": f"{s}:{l4.sport}", "dst": f"{d}:{l4.dport}",
                     "verdict": f.verdict, "summary": f.summary})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'no':>4} {'proto':<5} {'source':<22} {'destination':<22} verdict")
    for r in rows:
        click.echo(f"{r['no']:>4} {r['proto']:<5} {r['src']:<22} {r['dst']:<22} {r['verdict']}")
    click.echo(f"{len(rows)} packets traced (each as the first packet of its connection)")


__all__ = ["parse_endpoint", "split_families", "trace_cmd"]
