"""Following a connection across the sidecar: app → capture listener → the sidecar's new connection → on.

Owns: :func:`follow` (the hop-by-hop kernel traces and the one plain sentence that answers "where
does this go, and why") and :func:`capture_matrix`. The sidecar's ports, credentials and bind
addresses come from :class:`~netsim.workload.identity.SidecarIdentity` (spec/istio-iptables.md §3,
spec/netfilter.md §1.11). What Envoy does between accepting and re-originating (listener, filter
chain, cluster) is ``netsim.mesh``'s business: here the proxy simply connects to the original
destination. Never does IO.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from netsim.netfilter.conntrack import entry_after, later_packet
from netsim.netfilter.engine import CompiledRuleset, describe_failure, trace
from netsim.netfilter.model import Family
from netsim.netfilter.packet import Address, Conntrack, Netns, Origin, Packet, Proto, Socket
from netsim.netfilter.trace import Endpoint, Kind, Outcome, Step, Trace
from netsim.workload.identity import SidecarIdentity
from netsim.workload.verdict import DecidedBy, Decision, ListenerRef, Verdict

# Ephemeral source ports the simulated sockets use (any port outside the rules' lists would do).
APP_SPORT = 43210
PROXY_SPORT = 43211
# Hops are followed at most this deep: a proxy whose own traffic is captured again would loop forever.
MAX_HOPS = 4


@dataclass(frozen=True, slots=True)
class KernelHop:
    who: str  # "app (uid 1000)", "sidecar (uid 1337)", "client 10.1.2.3"
    trace: Trace


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """Where the sidecar connects for a captured connection, as Envoy decides it (``netsim.mesh``):
    ``address`` None means it opens no upstream connection (a blackhole, a local 502, a cluster
    without endpoints, a DNS name netsim cannot resolve). ``what`` names it for the sentence, e.g.
    "the EDS endpoint of outbound|80||reviews.default.svc.cluster.local"."""

    address: Address | None
    port: int
    what: str


# The sidecar's decision for a captured connection, given by the caller (the command shell builds
# it from netsim.mesh, see docs/design.md): the verdict (captured-outbound or captured-inbound) and
# the original destination → where Envoy connects, or None to let netsim assume the default (the
# original destination outbound, the app through the passthrough address inbound).
EnvoyHop = Callable[[Verdict, Endpoint], "Upstream | None"]


@dataclass(frozen=True, slots=True)
class Followed:
    hops: tuple[KernelHop, ...]
    decision: Decision
    summary: str  # one plain sentence, rendered from ``decision`` and the hops
    # What the capture listener learns as the connection's destination (SO_ORIGINAL_DST, or the
    # TPROXY socket's local address): the input of the proxy's own decision (netsim.mesh). Set for
    # captured-outbound and captured-inbound when the kernel has an answer, else None.
    original_dst: Endpoint | None = None
    upstream: Upstream | None = None  # where the sidecar connected (captured-outbound/-inbound)

    @property
    def verdict(self) -> str:
        """The verdict's name (``decision.verdict.value``)."""
        return self.decision.verdict.value

    def to_json(self) -> dict[str, Any]:
        """``verdict``, ``decided_by``, ``reason`` and ``listener`` (the contract's fields)."""
        return self.decision.to_json()


def _delivered_port(t: Trace) -> int | None:
    return t.local_port if t.outcome is Outcome.DELIVERED or t.transparent_socket else None


_CAPTURE_TARGETS = ("REDIRECT", "TPROXY", "DNAT")
# Istio's chains that hold nothing but the capture itself (a jump to one of them is a capture rule)
_CAPTURE_CHAINS = ("ISTIO_IN_REDIRECT", "ISTIO_REDIRECT", "ISTIO_TPROXY", "ISTIO_DIVERT",
                   "istio-in-redirect", "istio-redirect", "istio-tproxy", "istio-divert")  # the nftables backend's
_NFT_CAPTURE = {"redirect": "REDIRECT", "dnat": "DNAT", "tproxy": "TPROXY"}
_CAPTURES = frozenset((*_CAPTURE_TARGETS, *_CAPTURE_CHAINS))  # a rule jumping to one of them captures


def _jump(step: Step) -> str:
    """The target a rule's text names (``-j X`` or ``-g X``; nft's ``jump X``, ``goto X``, or its ``redirect``,
    ``dnat``, ``tproxy`` statement as the iptables target's name), "" for none."""
    b = step.base
    return _text_target(step.text, b is not None and b.backend == "nft")


# A rule's text is the same string object for every step of it, and a step of a rule that did not match carries
# no target field, so the target is read off the text once per text (follow's hot path: every bypass asks it
# of each rule the packet missed). Bounded: a long-lived process traces many rulesets.
@functools.lru_cache(maxsize=8192)
def _text_target(text: str, nft: bool) -> str:
    tokens = text.split()
    if nft:
        for i, word in enumerate(tokens):
            if word in _NFT_CAPTURE:
                return _NFT_CAPTURE[word]
            if word in ("jump", "goto") and i + 1 < len(tokens):
                return tokens[i + 1]
        return ""
    for flag in ("-j", "--jump", "-g", "--goto"):
        if flag in tokens[:-1]:
            return tokens[tokens.index(flag) + 1]
    return ""


_ADDRESSED = "addressed to it"  # the basis of a delivery no rule redirected


def _how(t: Trace, port: int, sidecar: SidecarIdentity) -> tuple[DecidedBy | None, str, bool, str]:
    """How a packet delivered to sidecar ``port`` got there: (deciding rule, phrase, redirected, basis)."""
    step = t.decided_by
    if step is not None and step.kind is Kind.RULE and _jump(step) in _CAPTURE_TARGETS:
        by = DecidedBy.of(step)
        return by, (f"TPROXY ({by.ref})" if t.transparent_socket else by.ref), True, "rule"
    conntrack = Kind.CONNTRACK
    for x in t.steps:
        if x.kind is conntrack and x.verdict == "dst":
            return None, f"the conntrack entry's {x.target} binding (nat is not consulted again)", True, "conntrack"
    return (None, f"it was addressed to {sidecar.possessive} port {port} itself (no rule redirected it)", False,
            _ADDRESSED)


def _role(step: Step) -> str:
    """The iptables table a step's chain plays the part of: nft's nat-type chains are "nat", its chains at the
    mangle priority "mangle" (Istio's nftables backend keeps the iptables layout, spec/istio-iptables.md §12)."""
    b = step.base
    if b is None or b.backend != "nft":
        return step.table
    return "nat" if b.nat else "mangle" if b.priority == -150 else step.table


_NAT_ENDS = ("RETURN", "ACCEPT")


def _bypass(t: Trace, sidecar: SidecarIdentity) -> tuple[DecidedBy | None, str, str]:
    """The rule that let the packet bypass capture (a RETURN in the capture chains), or why none did.

    Reads the capture tables' own steps (first pass): nat, and mangle where TPROXY captures, each step's
    role read once, in one pass over the steps from the last: nat's last RETURN (or ACCEPT) decides before
    anything else, so the steps before it are not read."""
    rule, policy = Kind.RULE, Kind.POLICY
    # a RETURN out of the capture chains; in nat also an ACCEPT (ambient's probe, own-pod and 0x111
    # rules, spec/istio-ambient-capture.md §3 rules 9, 10, 17, 18), which ends nat for the packet, and for
    # ztunnel in mangle too (1.21-1.24's TPROXY inbound accepts probes and loopback there, §11)
    mangle_ends = _NAT_ENDS if sidecar.ambient else ("RETURN",)
    mangle_end: Step | None = None  # mangle's last matched RETURN (or ACCEPT)
    seen_nat = seen_mangle = False
    missed_nat: list[Step] = []  # rules the packet did not match, last first: a capture rule among them is named
    missed_mangle: list[Step] = []
    for s in reversed(t.steps):
        kind = s.kind
        if s.pass_no != 0 or (kind is not rule and kind is not policy):
            continue
        b = s.base
        role = s.table if b is None or b.backend != "nft" else _role(s)  # _role's iptables case, without the call
        if role == "nat":
            seen_nat = True
            if kind is rule:
                if not s.matched:
                    missed_nat.append(s)
                elif s.verdict in _NAT_ENDS:
                    r = DecidedBy.of(s)
                    did = "returned" if s.verdict == "RETURN" else "accepted"
                    return r, f"{r.ref} {did} it before any capture rule", "rule"
        elif role == "mangle":
            seen_mangle = True
            if kind is rule:
                if not s.matched:
                    missed_mangle.append(s)
                elif s.verdict in mangle_ends and mangle_end is None:
                    mangle_end = s
    if mangle_end is not None:
        r = DecidedBy.of(mangle_end)
        did = "returned" if mangle_end.verdict == "RETURN" else "accepted"
        return r, f"{r.ref} {did} it before any capture rule", "rule"
    if not seen_nat:
        ct = t.packet.ct
        if t.ctstate in ("UNTRACKED", "INVALID"):
            return None, f"the packet is {t.ctstate}: without a conntrack entry nat never sees it", "conntrack"
        if ct.exists and t.zone == ct.zone:
            what = "carries no DNAT binding (its first packet was not redirected)" if ct.dnat_to is None else \
                "keeps its binding"
            return None, ("nat is not consulted for a packet of an existing connection (conntrack state "
                          f"{ct.state.value}), and the entry {what}"), "conntrack"
        if not seen_mangle:  # no nat chain is hooked where the packet passed: an empty chain, or no nat table at all
            hook = t.steps[0].hook if t.steps else "its hook"
            return None, f"no nat rule saw it (nat {hook} has no rules)", "policy"
    capturing = [s for s in (*reversed(missed_nat), *reversed(missed_mangle)) if _jump(s) in _CAPTURES]
    if capturing:
        fam = t.packet.family
        missed = "; ".join(_missed(s, fam) for s in capturing[-3:])
        return None, f"no capture rule matched it: {missed}", "policy"
    return None, "no rule redirected it (the chains ended and the policy accepted it unchanged)", "policy"


# _missed's phrases: the same rule fails on the same field and value for many packets (every probe of a port or
# protocol the capture rule excludes). Bounded: cleared when full, as a long-lived process traces many rulesets.
_MISSED: dict[tuple[object, ...], str] = {}
_MISSED_MAX = 4096


def _missed(step: Step, family: Family) -> str:
    """``<rule> failed on <condition> (<why>)``: a capture rule the packet did not match, and why."""
    key = (step.text, step.position, step.chain, step.table, step.base, step.failed, family)
    try:
        hit, hashable = _MISSED.get(key), True
    except TypeError:  # a failed value that cannot be hashed: said without the memo
        hit, hashable = None, False
    if hit is None:
        hit = f"{DecidedBy.of(step).ref} failed on {describe_failure(step, family).replace(': ', ' (', 1)})"
        if hashable:
            if len(_MISSED) >= _MISSED_MAX:
                _MISSED.clear()
            _MISSED[key] = hit
    return hit


def _decide_first(t: Trace, sidecar: SidecarIdentity, netns: Netns) -> Decision:
    """The verdict of the connection's first hop, from its steps alone."""
    step = t.decided_by
    outcome = t.outcome
    if outcome is Outcome.QUEUED or outcome is Outcome.DROPPED:
        rule = DecidedBy.of(step) if step is not None and step.kind is Kind.RULE else None
        if outcome is Outcome.QUEUED:
            return Decision(verdict=Verdict.UNCERTAIN, decided_by=rule, reason=t.reason, basis="userspace")
        return Decision(verdict=Verdict.DROPPED, decided_by=rule, reason=t.reason, basis=_drop_basis(step))
    port = _delivered_port(t)
    kind = _listener_kind(sidecar, port, t, netns)
    if port is not None and kind is not None:
        by, how, _, basis = _how(t, port, sidecar)
        return Decision(verdict=kind, decided_by=by, reason=how,
                        listener=ListenerRef(_listener_addr(t), port, sidecar.owner), basis=basis)
    by, why, basis = _bypass(t, sidecar)
    return Decision(verdict=Verdict.BYPASSED, decided_by=by, reason=why, basis=basis)


def _drop_basis(step: Step | None) -> str:
    if step is None:
        return "routing"
    return {Kind.RULE: "rule", Kind.POLICY: "policy", Kind.CONNTRACK: "conntrack"}.get(step.kind, "routing")


_ANY4, _ANY6 = IPv4Address("0.0.0.0"), IPv6Address("::")


def _listener_addr(t: Trace) -> Address:
    if t.transparent_socket:  # the IP_TRANSPARENT listener is bound to the wildcard address
        return _ANY4 if t.packet.family is Family.IPV4 else _ANY6
    return t.dst.addr


# A first packet's conntrack view (no entry yet): Packet's default, one immutable value for every proxy packet
_NO_ENTRY = Conntrack()


def _proxy_packet(t: Trace, dst: Address, dport: int, socket: Socket, mark: int, src: Address | None,
                  netns: Netns) -> Packet:
    """The first packet of the proxy's connection for ``t``'s, from its ``socket`` with its ``mark``."""
    fam = t.packet.family
    if src is None:
        primary = netns.primary_address(netns.default_iface, fam)
        src = primary if primary is not None else (IPv4Address("127.0.0.1") if fam is Family.IPV4
                                                   else IPv6Address("::1"))
        if dst.is_loopback and netns.is_local(dst):
            src = dst
    return Packet(family=fam, proto=t.packet.proto, src=src, dst=dst, sport=PROXY_SPORT, dport=dport,
                  origin=Origin.LOCAL, socket=socket, mark=mark, ct=_NO_ENTRY)


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
        rule = t.decided_by if t.decided_by is not None and t.decided_by.kind is Kind.RULE else None
        d = Decision(verdict=Verdict.DROPPED, decided_by=None if rule is None else DecidedBy.of(rule), reason=t.reason,
                     basis=_drop_basis(t.decided_by))
        return Followed(tuple(hops), d, f"The reply is dropped: {t.reason}.")
    d = Decision(verdict=Verdict.BYPASSED, decided_by=None,
                 reason=f"a reply-direction packet: nat is not consulted, {how}", basis="conntrack")
    return Followed(tuple(hops), d, f"Reply direction: {t.reason}, from {_ep(t.src.addr, t.src.port)}: {how}, "
                                    "without consulting nat.")


def follow(rules: CompiledRuleset, packet: Packet, netns: Netns, sidecar: SidecarIdentity, who: str, *,
           envoy: EnvoyHop | None = None) -> Followed:
    """Trace ``packet`` and, when a sidecar listener receives it, the sidecar's connection onwards (a
    later packet of it when ``packet`` belongs to an existing connection). A reply-direction packet is
    one hop: where it is delivered and which bindings its conntrack entry undid.

    ``envoy`` decides where the sidecar connects (see :data:`EnvoyHop`); without it, to the original
    destination (outbound) or to the app through the passthrough address (inbound). The result's
    :class:`Decision` is computed from the hops' steps; its sentence is rendered from it. Following many
    packets through the same rules and proxy: :class:`Follower` (what this builds each call).
    """
    return Follower(rules, sidecar).follow(packet, netns, who, envoy=envoy)


class Follower:
    """:func:`follow` for one ruleset and proxy: what is constant for them (the proxy's names and
    credentials as the sentences print them, the socket its connections come from) is read once, not per
    packet. ``Workload.follow`` keeps one per family; :func:`capture_matrix` one per matrix."""

    __slots__ = ("credentials", "label", "name", "possessive", "rules", "sidecar", "socket")

    def __init__(self, rules: CompiledRuleset, sidecar: SidecarIdentity) -> None:
        self.rules, self.sidecar = rules, sidecar
        self.name, self.possessive = sidecar.name, sidecar.possessive
        self.label, self.credentials = sidecar.label, sidecar.credentials
        self.socket = Socket(uid=sidecar.uid, gid=sidecar.gid)  # every connection the proxy opens comes from it

    def follow(self, packet: Packet, netns: Netns, who: str, *, envoy: EnvoyHop | None = None) -> Followed:
        """:func:`follow` of ``packet`` through this follower's rules and proxy."""
        sidecar = self.sidecar
        t = trace(self.rules, packet, netns)
        first = KernelHop(who, t)
        if packet.ct.reply:
            return _reply([first], t)
        d = _decide_first(t, sidecar, netns)
        v = d.verdict
        if v is Verdict.DROPPED:
            return Followed((first,), d, _sentence(f"Dropped: {t.reason}."))
        if v is Verdict.UNCERTAIN:
            return Followed((first,), d, _sentence(f"Uncertain: {t.reason}; netsim cannot say more."))
        sc, sc_s = self.name, self.possessive
        if v is Verdict.BYPASSED:
            reached = "" if _delivered_port(t) is None else f", which is not {sc_s}"
            return Followed((first,), d, _sentence(f"Bypasses {sc} ({t.reason}{reached}) because {d.reason}."))
        assert d.listener is not None
        port = d.listener.port
        name = _listener_name(v, port, sidecar)
        how, redirected = d.reason, d.basis != _ADDRESSED  # what _how said when deciding (one home: _decide_first)
        if not redirected:
            return Followed((first,), d, _sentence(f"Delivered to {sc_s} {name} {port} directly: {how}."))
        if port in sidecar.direct_inbound:  # HBONE: what the tunnel carries is ztunnel's to open, not the kernel's
            return Followed((first,), d, _sentence(
                f"Captured by {sc_s} {name} {port} via {how}; the connection inside the tunnel is {sc}'s to open."))
        if v is Verdict.CAPTURED_DNS:
            proxy = f"{sc_s} DNS proxy" if sidecar.ambient else "the DNS proxy"
            return Followed((first,), d, _sentence(
                f"Captured by {proxy} on port {port} via {how}; it answers or forwards the query to "
                f"{t.packet.dst} itself."))
        parts = [f"Captured by {sc_s} {name} {port} via {how}"]
        hops = [first]
        first_od: Endpoint | None = None
        first_up: Upstream | None = None
        stage = v
        while True:
            od = t.dst if t.transparent_socket else t.original_dst  # the TPROXY socket's local address
            if od is None:
                parts.append(f"but SO_ORIGINAL_DST has no answer (UDP or a non-default conntrack zone), so {sc} "
                             "cannot forward it")
                return Followed(tuple(hops), d, _sentence(", ".join(parts) + "."), first_od, first_up)
            up = envoy(stage, od) if envoy is not None else None
            up = up or _default_upstream(stage, od, t.packet.family, sidecar)
            if first_od is None:
                first_od, first_up = od, up
            if up.address is None:
                parts.append(f"{sc} opens no upstream connection: {up.what}")
                return Followed(tuple(hops), d, _sentence("; ".join(parts) + "."), first_od, first_up)
            src = None
            if stage is Verdict.CAPTURED_INBOUND and sidecar.spoofs_client:
                # ztunnel connects to the app from the client's own address (IP_TRANSPARENT, ambient §8), unless
                # the two are equal
                client = t.packet.src
                src = client if client != up.address else None
            elif stage is Verdict.CAPTURED_INBOUND:
                pt = sidecar.passthrough_v4 if t.packet.family is Family.IPV4 else sidecar.passthrough_v6
                src = ip_address(pt) if pt else up.address if up.address.is_loopback else None
            out = _proxy_packet(t, up.address, up.port, self.socket, sidecar.mark, src, netns)
            nxt = _proxy_trace(self.rules, t.packet, out, netns)
            hops.append(KernelHop(self.label, nxt))
            ep = _ep(up.address, up.port)
            target = ep if not up.what else f"{up.what} {ep}" if up.what == _ORIGINAL else f"{up.what} at {ep}"
            via = f" from {src}" if src is not None else ""
            nport = _delivered_port(nxt)
            nstage_or_none = _listener_kind(sidecar, nport, nxt, netns)
            if nport is not None and nstage_or_none is not None:
                by2, how2, redirected2, basis2 = _how(nxt, nport, sidecar)
                nstage = nstage_or_none
                if redirected2 and nstage is Verdict.CAPTURED_INBOUND and stage is Verdict.CAPTURED_OUTBOUND \
                        and len(hops) <= MAX_HOPS:
                    # Outbound to the pod's own address: Envoy's connection goes through its inbound listener.
                    parts.append(f"{sc} connects to {target} as {self.credentials}, which its inbound "
                                 f"listener {nport} captures via {how2}")
                    t, stage = nxt, nstage
                    continue
                reached = f"again via {how2}" if redirected2 else "directly (addressed to it; no rule redirected it)"
                reason = f"{sc_s} own connection to {target}{via} reaches its " \
                         f"{_listener_name(nstage, nport, sidecar)} {nport} {reached}"
                loop = Decision(verdict=Verdict.LOOPED, decided_by=by2, reason=reason, hop=len(hops) - 1, basis=basis2)
                return Followed(tuple(hops), loop, _sentence("; ".join([*parts, reason]) + ": a loop."), first_od,
                                first_up)
            if nxt.outcome is Outcome.SENT:
                end = f"{sc} connects to {target} as {self.credentials}, which leaves through {nxt.out_iface}"
            elif stage is Verdict.CAPTURED_INBOUND and nxt.outcome in (Outcome.DELIVERED, Outcome.REFUSED) \
                    and nxt.local_port == up.port:
                app = "the app" if nxt.outcome is Outcome.DELIVERED else "the app's port (nothing listens there)"
                end = f"{sc} forwards it to {_ep(up.address, up.port)}{via}, reaching {app}"
                if sidecar.policy_route is not None and nxt.ctmark & sidecar.policy_route[1] == sidecar.policy_route[0]:
                    end += (f"; the connection is marked {nxt.ctmark:#x}, so the app's replies are routed back to "
                            f"{sc} through table {sidecar.policy_route[2]}")
            elif nxt.outcome is Outcome.DROPPED:
                end = f"{sc_s} connection to {target}{via} is dropped: {nxt.reason}"
            else:
                end = f"{sc_s} connection to {target}{via}: {nxt.reason}"
            return Followed(tuple(hops), d, _sentence("; ".join([*parts, end]) + "."), first_od, first_up)


_LISTENER_NAMES = {Verdict.CAPTURED_OUTBOUND: "outbound listener", Verdict.CAPTURED_INBOUND: "inbound listener",
                   Verdict.CAPTURED_DNS: "DNS proxy on port"}


def _listener_name(v: Verdict, port: int, sidecar: SidecarIdentity) -> str:
    """"outbound listener", "inbound listener", "DNS proxy on port"; ztunnel's 15008 "HBONE inbound listener"."""
    return "HBONE inbound listener" if port in sidecar.direct_inbound else _LISTENER_NAMES[v]


def _listener_kind(sidecar: SidecarIdentity, port: int | None, t: Trace, netns: Netns) -> Verdict | None:
    """The verdict of a packet ``t`` delivered to sidecar ``port`` (None: not a capture listener).

    A listener shared by both directions (before Istio 1.3) is Envoy's 15001 handing each connection
    to the listener of its original destination: the pod's own address is inbound, anything else
    outbound (spec/istio-iptables-history.md §2.1).
    """
    if port is None:
        return None
    if port == sidecar.dns_port:
        return Verdict.CAPTURED_DNS
    if port in sidecar.direct_inbound:  # ztunnel's HBONE listener: inbound, whether or not a rule sent it there
        return Verdict.CAPTURED_INBOUND
    if sidecar.shared_listener and port == sidecar.outbound_port:
        od = t.dst if t.transparent_socket else t.original_dst
        own = od is not None and not od.addr.is_loopback and netns.is_local(od.addr)
        return Verdict.CAPTURED_INBOUND if own else Verdict.CAPTURED_OUTBOUND
    if port == sidecar.inbound_port:
        return Verdict.CAPTURED_INBOUND
    return Verdict.CAPTURED_OUTBOUND if port == sidecar.outbound_port else None


_ORIGINAL = "the original destination"


def _default_upstream(v: Verdict, od: Endpoint, family: Family, sidecar: SidecarIdentity) -> Upstream:
    if v is Verdict.CAPTURED_OUTBOUND:
        return Upstream(address=od.addr, port=od.port, what=_ORIGINAL)
    pt = sidecar.passthrough_v4 if family is Family.IPV4 else sidecar.passthrough_v6
    if pt is None and not sidecar.spoofs_client:  # before 1.10: the inbound cluster was 127.0.0.1:<port>
        lo = IPv4Address("127.0.0.1") if family is Family.IPV4 else IPv6Address("::1")
        return Upstream(address=lo, port=od.port, what="")
    return Upstream(address=od.addr, port=od.port, what="")


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
    decision: Decision
    summary: str
    uncertain: bool  # the deciding trace rests on an assumption (an unknown match, a listener, a random draw)

    @property
    def verdict(self) -> str:
        """The cell's text: captured / captured (dns) / bypassed / …, with ``?`` when uncertain."""
        return self.decision.cell + ("?" if self.uncertain else "")

    @property
    def rule(self) -> str:
        return self.decision.rule_cell

    def to_json(self) -> dict[str, Any]:
        return {"direction": self.direction, "proto": self.proto, "port": self.port, "who": self.who,
                **self.decision.to_json(), "cell": self.verdict, "rule": self.rule, "uncertain": self.uncertain,
                "summary": self.summary}


def capture_matrix(rules: CompiledRuleset, netns: Netns, sidecar: SidecarIdentity, *, app_uid: int, app_gid: int,
                   ports: Sequence[int], remote: Address, pod_ip: Address, peer: Address) -> tuple[MatrixRow, ...]:
    """For each direction, protocol, port and uid class: captured, bypassed or dropped, and by which rule."""
    rows: list[MatrixRow] = []
    follow = Follower(rules, sidecar).follow
    fam = Family.IPV4 if pod_ip.version == 4 else Family.IPV6
    for proto in (Proto.TCP, Proto.UDP):
        for port in ports:
            # the proxy's own sockets carry its mark (ztunnel's 0x539)
            for who, uid, gid, mark in (("app", app_uid, app_gid, 0),
                                        ("proxy", sidecar.uid, sidecar.gid, sidecar.mark)):
                p = Packet(family=fam, proto=proto, src=pod_ip, dst=remote, sport=APP_SPORT, dport=port,
                           socket=Socket(uid=uid, gid=gid), mark=mark)
                f = follow(p, netns, who)
                rows.append(_row("outbound", proto, port, who, f))
            p = Packet(family=fam, proto=proto, src=peer, dst=pod_ip, sport=APP_SPORT, dport=port,
                       origin=Origin.ARRIVING, in_iface=netns.default_iface, socket=None)
            f = follow(p, netns, "peer")
            rows.append(_row("inbound", proto, port, "peer", f))
    return tuple(rows)


def _row(direction: str, proto: Proto, port: int, who: str, f: Followed) -> MatrixRow:
    decider = f.hops[f.decision.hop].trace
    return MatrixRow(direction, proto.value, port, who, f.decision, f.summary,
                     bool(decider.uncertain or decider.branches))


__all__ = ["APP_SPORT", "EnvoyHop", "Followed", "Follower", "KernelHop", "MatrixRow", "Upstream", "capture_matrix",
           "follow"]
