"""The lab's ambient side: an ambient pod's lab spec, and the probes ``lab verify`` adds for it.

Owns: :func:`ambient_spec` (istio-cni's in-pod rules and §7's policy routes as ``netsim.capture.ambient`` compiled
them for the pod, ztunnel's stand-ins, the kubelet-probe SNAT addresses on the node side), :func:`table_probes`
(one probe per row of spec/istio-ambient-capture.md §10 that a lab can send: the app's TCP out, to itself and to
loopback, ztunnel's own marked traffic, the app's UDP and TCP DNS, a new connection marked 0x111, ztunnel's
connection to the app from the client's address, inbound plaintext, HBONE to 15008, kubelet's probe from the SNAT
address; those a listener answers are ``answered``), and the reply direction: the TRACE rules that select a
probe's first reply (:data:`REPLY_TRACE`), the monitors' output read per reply (:func:`as_first_packets`,
:func:`turned_back`) and netsim's trace of the reply (:func:`reply_lines`: the first packet traced, its conntrack
entry, ``conntrack.reply_packet`` from the socket that answers).
Never does: compile or decide anything itself (the workload holds the compiled rules and the mode decision), or
run anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_address, ip_interface
from typing import TYPE_CHECKING, Any

from netsim.errors import LabError
from netsim.netfilter.model import Family

if TYPE_CHECKING:
    from netsim.lab.control import DnsAgent, LabSpec
    from netsim.lab.runner import Address, Interface
    from netsim.lab.verify import Probe, ProbeResult
    from netsim.netfilter.engine import CompiledRuleset
    from netsim.netfilter.packet import Netns, Packet
    from netsim.workload.model import Workload

APP_PORT = 8080  # an app port the table's probes use (nothing need listen there: the first packet is compared)
OTHER_UDP = 5000


def ambient_spec(w: Workload, pod_file: str, *, name: str, pod_ips: tuple[Interface, ...],
                 cluster_dns: tuple[Address, ...], agent: DnsAgent, app_uid: int, notes: tuple[str, ...]) -> LabSpec:
    """The lab of an ambient pod's workload (``Workload.from_ambient_pod``): its compiled rules per family as
    ``iptables-restore --noflush`` text, the policy routes, ztunnel's ports, uid/gid and mark."""
    from netsim.capture import ambient as a
    from netsim.capture.dryrun import render_restore
    from netsim.lab.control import LabSpec, search_path
    from netsim.lab.inputs import node_interface, route_command
    from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID

    compiled = w.ambient
    if compiled is None:
        why = next((n for n in w.notes if n.startswith("no ambient rules")), "no ambient rules")
        raise LabError(f"{pod_file}: no capture to run: {why}")
    config = compiled.config
    nft = compiled.backend == "nft"  # NativeNftables (or --backend nft): the agent's inet tables, loaded with nft -f
    by_family = {f: [r for r in compiled.rules if r.family is f] for f in Family}
    v6 = any(i.version == 6 for i in pod_ips)
    snat: list[Address] = [ip_address(config.host_probe_snat_address)]
    if v6 and config.enable_ipv6:
        snat.append(ip_address(config.host_probe_v6_snat_address))
    return LabSpec(
        name=name,
        pod_ips=pod_ips,
        node_ips=tuple(node_interface(i) for i in pod_ips),
        cluster_dns=cluster_dns,
        search=search_path(agent.namespace),
        rules_v4="" if nft else render_restore(by_family[Family.IPV4]),
        rules_v6=render_restore(by_family[Family.IPV6]) if config.enable_ipv6 and not nft else None,
        nft_rules=compiled.nft_text() if nft else None,
        pod_routes=tuple(route_command(name, r) for r in compiled.routes),
        proxy_uid=ZTUNNEL_UID,
        proxy_gid=ZTUNNEL_GID,
        app_uid=app_uid,
        proxy_port=a.ZTUNNEL_OUTBOUND,
        inbound_port=a.ZTUNNEL_INBOUND,
        dns_port=a.ZTUNNEL_DNS,
        hbone_port=a.ZTUNNEL_HBONE,
        mark=a.MARK,
        ambient=True,
        node_addrs=tuple(snat),
        dns=agent,
        pod=w.pod.name if w.pod is not None else name,
        notes=(*notes, *w.notes),
    )


def table_probes(info: dict[str, Any], version: int) -> list[Probe]:
    """The §10 rows as probes of one family (source port 0: the caller gives each its own)."""
    from netsim.capture.ambient import CONN, MARK, ZTUNNEL_HBONE
    from netsim.lab.verify import Probe
    from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID

    pod = next((str(ip_interface(i).ip) for i in info["pod_ips"] if ip_interface(i).version == version), None)
    node = next((str(ip_interface(i).ip) for i in info["node_ips"] if ip_interface(i).version == version), None)
    if pod is None or node is None:
        return []
    remote = next((a for a in info.get("cluster_dns", []) if ip_address(a).version == version), node)
    snat = next((a for a in info.get("node_addrs", []) if ip_address(a).version == version), None)
    lo = "127.0.0.1" if version == 4 else "::1"
    app = {"uid": int(info.get("app_uid", 1000)), "gid": int(info.get("app_uid", 1000))}
    zt = {"uid": ZTUNNEL_UID, "gid": ZTUNNEL_GID, "mark": MARK}

    def p(proto: str, src: str, dst: str, dport: int, **kw: Any) -> Probe:
        return Probe(proto=proto, src=src, sport=0, dst=dst, dport=dport, **kw)

    out = [
        p("tcp", pod, remote, 80, answered=True, **app),  # app → remote TCP: ztunnel outbound 15001
        p("tcp", pod, pod, APP_PORT, **app),  # app → its own address, via lo: not captured
        p("tcp", lo, lo, 80, **app),  # app → loopback
        p("tcp", pod, remote, 80, **zt),  # ztunnel's own TCP (mark 0x539)
        p("udp", pod, remote, 53, **zt),  # ztunnel's upstream DNS: conntrack zone 1
        p("tcp", pod, remote, 53, **zt),
        p("udp", pod, remote, 53, **app),  # the app's DNS: 15053
        p("tcp", pod, remote, 53, answered=True, **app),  # ... answered by the DNS agent over lo
        p("tcp", pod, remote, 80, uid=0, gid=0, mark=CONN),  # new TCP marked 0x111: accepted, table 100 (local)
        p("tcp", node, pod, APP_PORT, transparent=True, **zt),  # ztunnel → app from the client: connmark 0x111
        # ... to a socket that answers (HBONE's): the SYN-ACK comes back by the connmark 0x111 / table 100 path
        p("tcp", node, pod, ZTUNNEL_HBONE, transparent=True, answered=True, **zt),
        p("udp", pod, remote, OTHER_UDP, **app),  # other UDP: not captured
        p("tcp", node, pod, APP_PORT, inbound=True, answered=True),  # remote → pod: 15006
        p("tcp", node, pod, ZTUNNEL_HBONE, inbound=True, answered=True),  # HBONE: ztunnel's listener, no rule
        p("udp", node, pod, OTHER_UDP, inbound=True),
    ]
    if snat is not None:
        out += [p("tcp", snat, pod, APP_PORT, inbound=True),  # kubelet's probe from the SNAT address
                p("tcp", snat, pod, ZTUNNEL_HBONE, inbound=True, answered=True),  # ... answered: out of eth0
                p("tcp", pod, snat, 80, **app)]  # the app's TCP to the SNAT address
    return out


# TRACE rules (iptables arguments after the chain) that select a probe's first reply: a SYN-ACK or a datagram whose
# destination port is in the probes' source-port range (a first packet's destination port never is).
def reply_trace(span: str) -> tuple[tuple[str, ...], ...]:
    return (("-p", "tcp", "-m", "tcp", "--dport", span, "--tcp-flags", "FIN,SYN,RST,ACK", "SYN,ACK", "-j", "TRACE"),
            ("-p", "udp", "-m", "udp", "--dport", span, "-j", "TRACE"))


_PORT_WORD = {"SPORT": "DPORT", "DPORT": "SPORT", "sport": "dport", "dport": "sport"}


def _turn(line: str) -> str:
    """A monitor's packet line with source and destination port swapped (the words, not the values)."""
    if line.lstrip().startswith("PACKET:"):
        return re.sub(r"\b([SD]PORT)=", lambda m: _PORT_WORD[m.group(1)] + "=", line)
    return re.sub(r"\b(tcp|udp) ([sd]port) ", lambda m: f"{m.group(1)} {_PORT_WORD[m.group(2)]} ", line)


def as_first_packets(text: str) -> str:
    """Monitor output (``xtables-monitor --trace`` or ``nft monitor trace``) with each packet line turned round —
    ports swapped, a SYN-ACK's ACK dropped — so that ``netsim.lab.kerneltrace``'s readers, which key a probe's
    first packet by its source port and skip packets carrying ACK, key a reply by its destination port: the
    probe's source port. :func:`turned_back` undoes it on the packet lines they return."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("PACKET:"):
            line = re.sub(r" ACK\b", "", _turn(line))
        elif " packet: " in line:
            line = _turn(line).replace("tcp flags == 0x12 ", "tcp flags == syn ")  # SYN|ACK
        out.append(line)
    return "".join(out)


def turned_back(traces: dict[int, list[str]]) -> dict[int, list[str]]:
    """Each packet line of the readers' result as the kernel printed it (``packet_line`` prints SPORT before
    DPORT, so there the values go back; nft's fields keep the kernel's order, so there the words do)."""
    def back(ln: str) -> str:
        if ln.startswith("PACKET:"):
            return re.sub(r"\bSPORT=(\d+) DPORT=(\d+)", r"SPORT=\2 DPORT=\1", ln)
        return _turn(ln) if " packet: " in ln else ln

    return {k: [back(ln) for ln in v] for k, v in traces.items()}


def reply_packet_of(crs: CompiledRuleset, probe: Probe, ns: Netns, *, uid: int = 0, gid: int = 0,
                    mark: int = 0) -> Packet:
    """The first reply of ``probe``'s connection as netsim builds it: the first packet traced, the conntrack entry
    it leaves (zone, connmark, NAT bindings), the reply from that entry — a SYN-ACK from a socket of ``uid``/``gid``
    with SO_MARK ``mark`` when the pod answers, else arriving. AssertionError if netsim leaves no entry."""
    from netsim.netfilter.conntrack import entry_after, reply_packet
    from netsim.netfilter.engine import trace
    from netsim.netfilter.packet import Origin, Socket

    first = probe.packet()
    entry = entry_after(trace(crs, first, ns, explain=False))
    if entry is None:
        raise LabError(f"netsim: {probe.describe()} leaves no conntrack entry, so no reply")
    reply = reply_packet(first, entry, ns, Socket(uid=uid, gid=gid))
    if reply.proto.value == "tcp":
        reply = replace(reply, tcp_flags=frozenset({"SYN", "ACK"}))
    if reply.origin is Origin.LOCAL and mark:
        reply = replace(reply, mark=mark)
    return reply


def reply_lines(crs: CompiledRuleset, probe: Probe, ns: Netns, *, packets: bool, uid: int = 0, gid: int = 0,
                mark: int = 0) -> tuple[str, ...]:
    """netsim's xtables-trace lines for ``probe``'s first reply (:func:`reply_packet_of`), as the family's monitor
    shows them (IPv6: each line's head)."""
    from netsim.lab.kerneltrace import RETURN_AS_PRINTED, kernel_view
    from netsim.netfilter.engine import trace
    from netsim.netfilter.render_trace import render_xtables

    reply = reply_packet_of(crs, probe, ns, uid=uid, gid=gid, mark=mark)
    lines = render_xtables(trace(crs, reply, ns, explain=False), return_verdict=RETURN_AS_PRINTED,
                           packets=packets).splitlines()
    return tuple(kernel_view(lines, probe.version))


def nft_reply_trace(table: str) -> str:
    """``nft -f`` text adding reply selectors to ``lab verify``'s trace table (its ``pre`` and ``out`` chains):
    a SYN-ACK or a datagram whose destination port is in the probes' source-port range."""
    from netsim.lab.probe import SPORT_HI, SPORT_LO

    span = f"{SPORT_LO}-{SPORT_HI}"
    return "".join(f"add rule inet {table} {chain} {sel} meta nftrace set 1\n" for chain in ("pre", "out")
                   for sel in (f"tcp dport {span} tcp flags & (fin|syn|rst|ack) == syn|ack", f"udp dport {span}"))


def compare_nft_replies(text: str, positions: dict[tuple[str, str, str, int], int], listing: str,
                        info: dict[str, Any], sockets: Sequence[tuple[str, str | None, int]], probes: list[Probe],
                        version: int, *, skip_table: str) -> list[ProbeResult]:
    """:func:`compare_replies` for an nft lab: ``nft monitor trace`` lines compared whole with netsim's
    ``--format nft-trace`` of each reply, through ``listing`` (``nft list ruleset``)."""
    from netsim.capture.ambient import MARK
    from netsim.lab.kerneltrace import nft_trace_lines, packet_fields
    from netsim.lab.probe import SPORT_HI, SPORT_LO
    from netsim.lab.verify import ProbeResult, lab_netns
    from netsim.netfilter.engine import trace
    from netsim.netfilter.nft import compile_nft, parse_nft
    from netsim.netfilter.render_trace import render_nft_trace
    from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID

    kernel = turned_back(nft_trace_lines(as_first_packets(text), positions, sports=(SPORT_LO, SPORT_HI),
                                         skip_table=skip_table))
    crs = compile_nft(parse_nft(listing), Family(version))
    ns = lab_netns(info, sockets)
    out = []
    for p in probes:
        reply = reply_packet_of(crs, p, ns, uid=ZTUNNEL_UID, gid=ZTUNNEL_GID, mark=MARK)
        lines = render_nft_trace(trace(crs, reply, ns, explain=False)).splitlines()
        mine = tuple(f"{head} packet: {packet_fields(rest)}" if sep else head
                     for head, sep, rest in (ln.partition(" packet: ") for ln in lines))
        out.append(ProbeResult(replace(p, reply=True), tuple(kernel.get(p.sport, [])), mine))
    return out


def compare_replies(text: str, positions: dict[tuple[str, str, int], int], dump: str, bases: set[tuple[str, str]],
                    info: dict[str, Any], sockets: Sequence[tuple[str, str | None, int]], probes: list[Probe],
                    version: int) -> list[ProbeResult]:
    """``lab verify``'s reply results of one family: for each answered probe, the kernel's trace of its first
    reply (the monitor's ``text`` read per reply) against netsim's (:func:`reply_lines`, answered by ztunnel's
    sockets: uid 0, gid 1337, mark 0x539), through the ruleset ``dump`` in verify's model of the lab's pod."""
    from netsim.capture.ambient import MARK
    from netsim.lab.kerneltrace import parse_monitor, parse_nft_monitor
    from netsim.lab.verify import ProbeResult, lab_netns
    from netsim.netfilter.engine import compile_ruleset
    from netsim.netfilter.parse import parse_ruleset
    from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID

    turned = as_first_packets(text)
    kernel = turned_back(parse_monitor(turned, positions) if version == 4 else parse_nft_monitor(turned, positions))
    crs = compile_ruleset(parse_ruleset(dump, Family(version)), base_chains=bases)
    ns = lab_netns(info, sockets)
    return [ProbeResult(replace(p, reply=True), tuple(kernel.get(p.sport, [])),
                        reply_lines(crs, p, ns, packets=False, uid=ZTUNNEL_UID, gid=ZTUNNEL_GID, mark=MARK))
            for p in probes]


__all__ = [
    "APP_PORT",
    "ambient_spec",
    "as_first_packets",
    "compare_nft_replies",
    "compare_replies",
    "nft_reply_trace",
    "reply_lines",
    "reply_packet_of",
    "reply_trace",
    "table_probes",
    "turned_back",
]
