"""The values a trace starts from: the packet, its socket and conntrack entry, and the namespace around it.

Owns: :class:`Packet` (what the kernel knows about one skb when it enters the first hook),
:class:`Socket` (the owner credentials ``-m owner`` compares, spec/netfilter.md §1.6),
:class:`Conntrack` (state and zone as an *input*: first packet or an existing entry, §1.3, §1.9) and
:class:`Netns` (interfaces with ordered addresses, listening sockets and ``ip rule fwmark`` routes,
which REDIRECT in PREROUTING, ``addrtype``, ``-m socket`` and TPROXY depend on, §1.4, §1.7).

Never does: evaluate rules (``engine.py``), parse user text beyond typed constructors, or IO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_interface

from netsim.netfilter.model import Family

Address = IPv4Address | IPv6Address


class Proto(enum.Enum):
    """IP protocols the engine understands; values are the names iptables-save prints."""

    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    ICMPV6 = "ipv6-icmp"
    SCTP = "sctp"

    @classmethod
    def parse(cls, text: str) -> Proto:
        low = text.lower()
        aliases = {"icmpv6": "ipv6-icmp", "icmp6": "ipv6-icmp", "6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp"}
        low = aliases.get(low, low)
        for p in cls:
            if p.value == low:
                return p
        raise ValueError(f"unknown protocol {text!r} (tcp, udp, icmp, ipv6-icmp, sctp)")

    @property
    def has_ports(self) -> bool:
        return self in (Proto.TCP, Proto.UDP, Proto.SCTP)


class Origin(enum.Enum):
    """Where the packet comes from: a local socket (OUTPUT first) or a device (PREROUTING first)."""

    LOCAL = "local"
    ARRIVING = "arriving"


class CtState(enum.Enum):
    """The conntrack state a packet has when it enters the hooks (``--ctstate`` names)."""

    NEW = "NEW"
    ESTABLISHED = "ESTABLISHED"
    RELATED = "RELATED"
    INVALID = "INVALID"
    UNTRACKED = "UNTRACKED"


# Flags a first TCP packet carries; later packets of an established connection carry ACK.
SYN = frozenset({"SYN"})
ACK = frozenset({"ACK"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Socket:
    """The local socket that sent a packet: its file's fsuid/fsgid at creation (xt_owner compares
    these, §1.6) and supplementary groups. ``kernel`` is a socket without a file (the TCP control
    socket sending RSTs): ``--socket-exists`` is true for it, uid/gid matches behave as without a socket."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    kernel: bool = False
    bind: Address | None = None


Binding = tuple[Address, int]  # (address, port) a NAT manip rewrites to


@dataclass(frozen=True, slots=True, kw_only=True)
class Conntrack:
    """The conntrack entry as the packet finds it (spec/netfilter.md §1.3, §1.9).

    ``state`` NEW without a binding is the first packet of a connection: the nat table is consulted
    for it. An existing entry (any other tracked state, or NEW with a binding: an entry that has not
    seen a reply yet, e.g. a second UDP datagram or a retransmitted SYN) carries its NAT binding and
    nat is never consulted again; the binding is applied from the entry instead (``nf_nat_packet``):

    - ``dnat_to`` (address, port): the DNAT/REDIRECT binding, applied to the destination at
      PREROUTING/OUTPUT; ``snat_to``: the SNAT/MASQUERADE binding, applied to the source at
      INPUT/POSTROUTING.
    - ``reply``: the packet travels in the reply direction and gets the inverse: the source becomes
      ``orig_dst`` again at INPUT/POSTROUTING (de-DNAT), the destination ``orig_src`` at
      PREROUTING/OUTPUT (de-SNAT). Reply packets are never NEW.

    ``confirmed``: an entry exists for this NEW packet's connection (an earlier packet confirmed it, no
    reply has been seen yet), so nat is not consulted even without a binding (the first packet got a
    null binding, ``nf_nat_alloc_null_binding``) while ``--ctstate NEW`` still matches: verified in a
    namespace, three datagrams of one UDP flow and a SYN with its retransmissions all counted under NEW,
    the nat rule once. ``zone`` is the zone the entry lives in: a packet that looks in another zone does not find it and
    starts a NEW connection there (§1.9). ``mark`` is the connmark. ``dnat``/``snat`` set the
    ``--ctstate DNAT/SNAT`` virtual states without a binding to apply. Raises ValueError for an entry
    the kernel cannot have."""

    state: CtState = CtState.NEW
    zone: int = 0
    mark: int = 0
    dnat: bool = False
    snat: bool = False
    reply: bool = False
    dnat_to: Binding | None = None
    snat_to: Binding | None = None
    orig_src: Binding | None = None
    orig_dst: Binding | None = None
    confirmed: bool = False

    def __post_init__(self) -> None:
        bound = self.dnat_to is not None or self.snat_to is not None
        if bound and self.state in (CtState.UNTRACKED, CtState.INVALID):
            raise ValueError(f"an {self.state.value} packet has no conntrack entry, so no NAT binding")
        if self.confirmed and self.state is not CtState.NEW:
            raise ValueError("confirmed marks a NEW packet of an existing entry; other states imply one")
        if self.reply and self.state in (CtState.NEW, CtState.UNTRACKED):
            raise ValueError(f"a reply-direction packet is never {self.state.value} (ESTABLISHED or RELATED)")
        if self.reply and self.dnat_to is not None and self.orig_dst is None:
            raise ValueError("a reply to a DNATed connection needs the original destination (orig_dst)")
        if self.reply and self.snat_to is not None and self.orig_src is None:
            raise ValueError("a reply to an SNATed connection needs the original source (orig_src)")
        if not 0 <= self.zone <= 0xFFFF:
            raise ValueError(f"zone {self.zone} is out of range (0-65535)")
        if not 0 <= self.mark <= 0xFFFFFFFF:
            raise ValueError(f"connmark {self.mark:#x} is out of range (32 bits)")

    @property
    def exists(self) -> bool:
        """The packet belongs to an existing entry: nat has already decided for its connection."""
        if self.state is CtState.NEW:
            return self.confirmed or self.dnat_to is not None or self.snat_to is not None
        return self.state is CtState.ESTABLISHED or self.state is CtState.RELATED


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    """One packet as it enters the first hook.

    ``origin`` LOCAL: generated by ``socket`` (None = no socket, e.g. a forwarded or kernel packet);
    the route (and so ``OUT=``) is decided from ``dst`` and the namespace unless ``out_iface`` is
    given. ARRIVING: received on ``in_iface``."""

    family: Family = Family.IPV4
    proto: Proto = Proto.TCP
    src: Address
    dst: Address
    sport: int = 0
    dport: int = 0
    origin: Origin = Origin.LOCAL
    in_iface: str | None = None
    out_iface: str | None = None
    mark: int = 0
    tcp_flags: frozenset[str] = SYN
    icmp_type: int = 8
    icmp_code: int = 0
    socket: Socket | None = None
    ct: Conntrack = field(default_factory=Conntrack)
    length: int = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Interface:
    """A device and its addresses in kernel order (the first is the primary: REDIRECT in
    PREROUTING and TPROXY without ``--on-ip`` use it, §1.4, §1.7)."""

    name: str
    addresses: tuple[IPv4Interface | IPv6Interface, ...] = ()

    @classmethod
    def of(cls, name: str, *cidrs: str) -> Interface:
        return cls(name=name, addresses=tuple(ip_interface(c) for c in cidrs))


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """A listening socket: ``addr`` None is the wildcard address; ``transparent`` is IP_TRANSPARENT
    (what TPROXY and ``-m socket --transparent`` require, §1.7)."""

    port: int
    proto: Proto = Proto.TCP
    addr: Address | None = None
    transparent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FwmarkRoute:
    """``ip rule add fwmark M/MASK lookup T`` whose table T holds ``local default dev lo``: packets
    carrying the mark are delivered locally (TPROXY's policy routing, §1.7)."""

    mark: int
    mask: int = 0xFFFFFFFF
    table: int = 133
    family: Family | None = None  # the rule's family (``ip -4 rule`` / ``ip -6 rule``); None: both

    def selects(self, mark: int, family: Family) -> bool:
        """Whether this rule sends a packet of ``family`` carrying ``mark`` to its local table."""
        return (mark & self.mask) == self.mark and (self.family is None or self.family is family)


@dataclass(frozen=True, slots=True, kw_only=True)
class Netns:
    """The network namespace the ruleset lives in.

    ``listeners`` None means unknown: TPROXY and ``-m socket`` are then reported as uncertain
    (assuming a transparent listener exists). ``default_iface`` is where non-local destinations are
    routed. ``ip_forward`` off (a pod's default) drops arriving packets for non-local addresses at
    routing, before FORWARD. ``route_localnet`` off (a pod's default: ``net.ipv4.conf.*.route_localnet``
    is 0) drops a locally generated IPv4 packet with a loopback source that nat OUTPUT sends to a
    non-local address, at the re-routing right after nat (``ip_route_me_harder``; verified in a
    namespace: the DNAT rule counts it, filter OUTPUT never sees it; with route_localnet=1 on the device
    it goes on through filter and POSTROUTING and out)."""

    interfaces: tuple[Interface, ...] = ()
    default_iface: str = "eth0"
    listeners: tuple[Listener, ...] | None = None
    fwmark_routes: tuple[FwmarkRoute, ...] = ()
    ip_forward: bool = False
    # Every port not in ``listeners`` has an ordinary (non-transparent) listener: the app's ports
    # when netsim cannot know them (a manifest lists containerPorts, not what the app binds).
    other_ports_listen: bool = False
    route_localnet: bool = False

    @classmethod
    def pod(
        cls,
        *addresses: str,
        listeners: tuple[Listener, ...] | None = None,
        fwmark_routes: tuple[FwmarkRoute, ...] = (),
        iface: str = "eth0",
    ) -> Netns:
        """A pod's namespace: ``lo`` (127.0.0.1/8, ::1/128) and one device with ``addresses``."""
        lo = Interface.of("lo", "127.0.0.1/8", "::1/128")
        eth = Interface.of(iface, *addresses)
        return cls(interfaces=(lo, eth), default_iface=iface, listeners=listeners, fwmark_routes=fwmark_routes)

    def interface(self, name: str | None) -> Interface | None:
        for i in self.interfaces:
            if i.name == name:
                return i
        return None

    def primary_address(self, iface: str | None, family: Family) -> Address | None:
        dev = self.interface(iface)
        if dev is None:
            return None
        for ifa in dev.addresses:
            if ifa.version == family.value:
                return ifa.ip
        return None

    def is_local(self, addr: Address) -> bool:
        """In the local routing table: loopback ranges and every address of every device (§1.10)."""
        if addr.is_loopback:
            return True
        for dev in self.interfaces:
            for ifa in dev.addresses:
                if ifa.ip == addr:
                    return True
        return False


__all__ = [
    "ACK",
    "SYN",
    "Address",
    "Binding",
    "Conntrack",
    "CtState",
    "FwmarkRoute",
    "Interface",
    "Listener",
    "Netns",
    "Origin",
    "Packet",
    "Proto",
    "Socket",
]
