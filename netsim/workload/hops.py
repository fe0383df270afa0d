"""Following a connection across the sidecar: app → capture listener → the sidecar's new connection → on.

Owns: :func:`follow` (the hop-by-hop kernel traces and the one plain sentence that answers "where
does this go, and why") and :func:`capture_matrix`. The sidecar's ports, credentials and bind
addresses come from :class:`~netsim.workload.identity.SidecarIdentity` (spec/istio-iptables.md §3,
spec/netfilter.md §1.11). What Envoy does between accepting and re-originating (listener, filter
chain, cluster) is ``netsim.mesh``'s business: here the proxy simply connects to the original
destination. Never does IO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from netsim.netfilter.conntrack import entry_after, later_packet
from netsim.netfilter.engine import CompiledRuleset, describe_failure, trace
from netsim.netfilter.model import Family
from netsim.netfilter.packet import Address, Netns, Origin, Packet, Proto, Socket
from netsim.netfilter.trace import Endpoint, Kind, Outcome, Step, Trace
from netsim.workload.identity import SidecarIdentity

# Ephemeral source ports the simulated sockets use (any port outside the rules' lists would do).
APP_SPORT = 43210
PROXY_SPORT = 43211
# Hops are followed at most this deep: a proxy whose own traffic is captured again would loop forever.
MAX_HOPS = 4


@dataclass(frozen=True, slots=True)
class KernelHop:
    who: str  # "app (uid 1000)", "sidecar (uid 1337)", "client 10.1.2.3"
    trace: Trace


@dataclass(frozen=True, slots=True)
class Followed:
    hops: tuple[KernelHop, ...]
    summary: str  # one plain sentence
    # captured-outbound, captured-inbound, captured-dns, bypassed, dropped, looped; for a reply-direction
    # packet delivered, sent or dropped
    verdict: str
    # What the capture listener learns as the connection's destination (SO_ORIGINAL_DST, or the
    # TPROXY socket's local address): the input of the proxy's own decision (netsim.mesh). Set for
    # captured-outbound and captured-inbound when the kernel has an answer, else None.
    original_dst: Endpoint | None = None


def _rule_ref(step: Step) -> str:
    if step.kind is Kind.CONNTRACK:
        return f"the conntrack entry's {step.target} binding (nat is not consulted again)"
    return f"{step.table} {step.chain} rule {step.position} `{step.text}`"


def _nat_steps(t: Trace, pass_no: int = 0) -> list[Step]:
    return [s for s in t.steps if s.table == "nat" and s.pass_no == pass_no and s.kind in (Kind.RULE, Kind.POLICY)]


def _why_not_captured(t: Trace) -> str:
    """The rule that let the packet bypass capture, or the capture rules that did not match."""
    nat = _nat_steps(t)
    if not nat:
        ct = t.packet.ct
        if t.ctstate in ("UNTRACKED", "INVALID"):
            return f"the packet is {t.ctstate}: without a conntrack entry nat never sees it"
        if ct.exists and t.zone == ct.zone:
            what = "carries no DNAT binding (its first packet was not redirected)" if ct.dnat_to is None else \
                "keeps its binding"
            return "nat is not consulted for a packet of an existing connection (conntrack state " \
                   f"{ct.state.value}), and the entry {what}"
        return "no nat rule saw it (nat table absent)"
    returns = [s for s in nat if s.kind is Kind.RULE and s.matched and s.verdict == "RETURN"]
    capturing = [s for s in nat if s.kind is Kind.RULE and not s.matched and
                 any(x in s.text for x in ("REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_REDIRECT"))]
    if returns:
        r = returns[-1]
        return f"{_rule_ref(r)} returned it before any capture rule"
    if capturing:
        missed = "; ".join(f"{_rule_ref(s)} failed on {describe_failure(s, t.packet.family).replace(': ', ' (', 1)})"
                           for s in capturing[-3:])
        return f"no capture rule matched it: {missed}"
    return "no nat rule redirected it (the chains ended and the policy accepted it unchanged)"


def _proxy_packet(t: Trace, dst: Address, dport: int, sidecar: SidecarIdentity, src: Address | None,
                  netns: Netns) -> Packet:
    fam = t.packet.family
    if src is None:
        primary = netns.primary_address(netns.default_iface, fam)
        src = primary if primary is not None else (IPv4Address("127.0.0.1") if fam is Family.IPV4
                                                   else IPv6Address("::1"))
        if netns.is_local(dst) and dst.is_loopback:
            src = dst
    return Packet(family=fam, proto=t.packet.proto, src=src, dst=dst, sport=PROXY_SPORT, dport=dport,
                  origin=Origin.LOCAL, socket=Socket(uid=sidecar.uid, gid=sidecar.gid))


def _proxy_trace(rules: CompiledRuleset, client: Packet, proxy: Packet, netns: Netns) -> Trace:
    """The proxy's packet for ``client``'s: a first packet when the client's is one; for a later packet
    of an existing connection, the proxy's upstream connection exists too, so a later packet of it, with
    the entry its own first packet leaves (spec/netfilter.md §1.3)."""
    first = trace(rules, proxy, netns, explain=not client.ct.exists)
    if not client.ct.exists:
        return first
    entry = entry_after(first)
    return first if entry is None else trace(rules, later_packet(proxy, entry), netns)


def _reply(hops: list[KernelHop], t: Trace) -> Followed:
    moved = [s for s in t.steps if s.kind is Kind.CONNTRACK]
    how = "; ".join(f"{s.text.removeprefix('conntrack entry: ').split(' (')[0]} (undoing its {s.target} binding)"
                    for s in moved)
    how = f"its conntrack entry rewrote the {how}" if how else "its conntrack entry has no NAT binding to undo"
    if t.outcome is Outcome.DROPPED:
        return Followed(tuple(hops), f"The reply is dropped: {t.reason}.", "dropped")
    verdict = "delivered" if t.outcome is Outcome.DELIVERED else "sent" if t.outcome is Outcome.SENT else \
        t.outcome.value
    return Followed(tuple(hops), f"Reply direction: {t.reason}, from {_ep(t.src.addr, t.src.port)}: {how}, "
                                 "without consulting nat.", verdict)


def follow(rules: CompiledRuleset, packet: Packet, netns: Netns, sidecar: SidecarIdentity, who: str) -> Followed:
    """Trace ``packet`` and, when a capture listener receives it, the proxy's connection onwards (a
    later packet of it when ``packet`` belongs to an existing connection). A reply-direction packet is
    one hop: where it is delivered and which bindings its conntrack entry undid."""
    hops: list[KernelHop] = []
    t = trace(rules, packet, netns)
    hops.append(KernelHop(who, t))
    if packet.ct.reply:
        return _reply(hops, t)
    proxy = f"sidecar (uid {sidecar.uid}, gid {sidecar.gid})"
    for _ in range(MAX_HOPS):
        port = t.local_port if t.outcome is Outcome.DELIVERED or t.transparent_socket else None
        if t.outcome is Outcome.DROPPED:
            return Followed(tuple(hops), _sentence(f"Dropped: {t.reason}."), "dropped")
        if port == sidecar.dns_port and t.packet.dport != sidecar.dns_port:
            orig = t.packet.dst
            how = _rule_ref(t.decided_by) if t.decided_by else "redirect"
            return Followed(tuple(hops), _sentence(f"Captured by the DNS proxy on port {sidecar.dns_port} "
                                                   f"via {how}; it answers or forwards the query to {orig} "
                                                   "itself."), "captured-dns")
        if port == sidecar.outbound_port and t.packet.dport != sidecar.outbound_port:
            if t.original_dst is None:
                return Followed(tuple(hops), _sentence(f"Captured by the outbound listener {port}, but "
                                                       "SO_ORIGINAL_DST has no answer (UDP or a non-default "
                                                       "conntrack zone), so the sidecar cannot forward it."),
                                "captured-outbound")
            od = t.original_dst
            nxt = _proxy_trace(rules, t.packet, _proxy_packet(t, od.addr, od.port, sidecar, None, netns), netns)
            hops.append(KernelHop(proxy, nxt))
            if nxt.outcome is Outcome.SENT:
                how = _rule_ref(t.decided_by) if t.decided_by else "capture"
                return Followed(tuple(hops), _sentence(f"Captured by the sidecar's outbound listener {port} "
                                                       f"via {how}; "
                                                       f"the sidecar connects to the original destination "
                                                       f"{_ep(od.addr, od.port)} as uid {sidecar.uid}, which "
                                                       f"leaves through {nxt.out_iface}."), "captured-outbound",
                                od)
            t = nxt
            continue
        if port == sidecar.inbound_port and t.packet.dport != sidecar.inbound_port:
            if t.transparent_socket:
                od_addr, od_port = t.dst.addr, t.dst.port
            elif t.original_dst is not None:
                od_addr, od_port = t.original_dst.addr, t.original_dst.port
            else:
                return Followed(tuple(hops), _sentence(f"Captured by the inbound listener {port}, but "
                                                       "SO_ORIGINAL_DST has no answer."), "captured-inbound")
            pt = sidecar.passthrough_v4 if t.packet.family is Family.IPV4 else sidecar.passthrough_v6
            src = ip_address(pt) if pt else None
            dst = od_addr
            if pt is None:  # before 1.10: the inbound cluster was 127.0.0.1:<port>
                dst = IPv4Address("127.0.0.1") if t.packet.family is Family.IPV4 else IPv6Address("::1")
                src = dst
            nxt = _proxy_trace(rules, t.packet, _proxy_packet(t, dst, od_port, sidecar, src, netns), netns)
            hops.append(KernelHop(proxy, nxt))
            via = f" from {src}" if src is not None else ""
            if nxt.outcome in (Outcome.DELIVERED, Outcome.REFUSED) and nxt.local_port == od_port:
                end = "the app" if nxt.outcome is Outcome.DELIVERED else "the app's port (nothing listens there)"
                how = (f"TPROXY ({_rule_ref(t.decided_by)})" if t.transparent_socket and t.decided_by
                       else _rule_ref(t.decided_by) if t.decided_by else "capture")
                return Followed(tuple(hops), _sentence(f"Captured by the sidecar's inbound listener {port} "
                                                       f"via {how}; the sidecar forwards it to "
                                                       f"{_ep(dst, od_port)}{via}, reaching {end}."),
                                "captured-inbound", Endpoint(od_addr, od_port))
            t = nxt
            continue
        break
    last = hops[-1].trace
    if len(hops) > 1:
        verdict = "looped" if len(hops) > MAX_HOPS else "captured"
        return Followed(tuple(hops), _sentence(f"The sidecar's own connection: {last.reason}; "
                                               f"{_why_not_captured(last)}."), verdict)
    if last.outcome is Outcome.DROPPED:
        return Followed(tuple(hops), f"Dropped: {last.reason}.", "dropped")
    return Followed(tuple(hops), f"Bypasses the sidecar ({last.reason}) because "
                                 f"{_why_not_captured(last)}.", "bypassed")


def _ep(addr: Address, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _sentence(text: str) -> str:
    return text.replace(" ()", "").replace("  ", " ")


@dataclass(frozen=True, slots=True)
class MatrixRow:
    direction: str  # outbound / inbound
    proto: str
    port: int
    who: str  # app / proxy / peer
    verdict: str
    summary: str
    rule: str


def capture_matrix(rules: CompiledRuleset, netns: Netns, sidecar: SidecarIdentity, *, app_uid: int, app_gid: int,
                   ports: Sequence[int], remote: Address, pod_ip: Address, peer: Address) -> tuple[MatrixRow, ...]:
    """For each direction, protocol, port and uid class: captured, bypassed or dropped, and by which rule."""
    rows: list[MatrixRow] = []
    fam = Family.IPV4 if pod_ip.version == 4 else Family.IPV6
    for proto in (Proto.TCP, Proto.UDP):
        for port in ports:
            for who, uid, gid in (("app", app_uid, app_gid), ("proxy", sidecar.uid, sidecar.gid)):
                p = Packet(family=fam, proto=proto, src=pod_ip, dst=remote, sport=APP_SPORT, dport=port,
                           socket=Socket(uid=uid, gid=gid))
                f = follow(rules, p, netns, sidecar, who)
                rows.append(_row("outbound", proto, port, who, f))
            p = Packet(family=fam, proto=proto, src=peer, dst=pod_ip, sport=APP_SPORT, dport=port,
                       origin=Origin.ARRIVING, in_iface=netns.default_iface, socket=None)
            f = follow(rules, p, netns, sidecar, "peer")
            rows.append(_row("inbound", proto, port, "peer", f))
    return tuple(rows)


def _row(direction: str, proto: Proto, port: int, who: str, f: Followed) -> MatrixRow:
    first = f.hops[0].trace
    verdict = {"captured-outbound": "captured", "captured-inbound": "captured", "captured-dns": "captured (dns)",
               "captured": "captured"}.get(f.verdict, f.verdict)
    decided = first.decided_by
    rule = ""
    if decided is not None:
        rule = f"{decided.table} {decided.chain} #{decided.position}"
    else:
        ret = [s for s in _nat_steps(first) if s.kind is Kind.RULE and s.matched and s.verdict == "RETURN"]
        rule = f"nat {ret[-1].chain} #{ret[-1].position}" if ret else "(no rule: policy)"
    if first.uncertain or first.branches:
        verdict += "?"
    return MatrixRow(direction, proto.value, port, who, verdict, f.summary, rule)


__all__ = ["APP_SPORT", "Followed", "KernelHop", "MatrixRow", "capture_matrix", "follow"]
