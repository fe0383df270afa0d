"""The nftables model: tables of a family, base and regular chains, sets, and rules as typed expressions.

Values are immutable and already in the kernel's normal form (addresses and ports as integer intervals,
marks as integers, ct states as bits), so that :func:`rule_text` prints a rule the way ``nft list ruleset``
(and ``nft monitor trace``) prints it, whatever spelling the input used (``mark 7`` → ``meta mark
0x00000007``, ``10.0.0.1/32`` → ``10.0.0.1``, a ``meta l4proto tcp`` a later ``tcp dport`` depends on
dropped). Never does: parse text (``parse.py``) or evaluate a packet (``evaluate.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from netsim.netfilter.model import Family
from netsim.netfilter.render import inet_ntop


class NftFamily(enum.Enum):
    IP = "ip"
    IP6 = "ip6"
    INET = "inet"
    ARP = "arp"
    BRIDGE = "bridge"
    NETDEV = "netdev"

    @property
    def traced(self) -> bool:
        """Whether netsim walks packets through this family's chains (the IP hooks only)."""
        return self in (NftFamily.IP, NftFamily.IP6, NftFamily.INET)

    def sees(self, family: Family) -> bool:
        """Whether a packet of ``family`` passes this family's base chains."""
        if self is NftFamily.INET:
            return True
        return (self is NftFamily.IP) == (family is Family.IPV4) and self.traced


# nft's named priorities for the ip, ip6 and inet families (nft(8) "Table 6. Standard priority names")
NAMED_PRIORITIES: dict[str, int] = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                                    "srcnat": 100}
# the names valid only on some hooks (nft refuses others: "invalid priority expression value in this context";
# verified for input, forward, output and the other nat hook)
NAMED_PRIORITY_HOOKS: dict[str, tuple[str, ...]] = {"dstnat": ("prerouting",), "srcnat": ("postrouting",)}
# nft hook name → the engine's hook name
HOOKS: dict[str, str] = {"prerouting": "PREROUTING", "input": "INPUT", "forward": "FORWARD", "output": "OUTPUT",
                         "postrouting": "POSTROUTING"}
CHAIN_TYPES = ("filter", "nat", "route")

# ct state bits (include/uapi/linux/netfilter/nf_conntrack_common.h), in the order nft prints them
CT_STATES: dict[str, int] = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
L4PROTOS: dict[str, int] = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132,
                            "udplite": 136, "dccp": 33, "esp": 50, "ah": 51, "gre": 47}
L4NAMES: dict[int, str] = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite",
                           33: "dccp", 50: "esp", 51: "ah", 47: "gre"}
NFPROTOS: dict[str, int] = {"ipv4": 2, "ipv6": 10}
FIB_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable",
             "prohibit")
TCP_FLAGS: dict[str, int] = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}


class Kind(enum.Enum):
    """What a field's values are, which decides how they are read, compared and printed."""

    IPV4 = "ipv4_addr"
    IPV6 = "ipv6_addr"
    PORT = "inet_service"
    INT = "integer"  # uid, gid, zone, numgen: printed in decimal
    MARK = "mark"  # printed as 0x%08x
    IFNAME = "ifname"
    L4PROTO = "inet_proto"
    NFPROTO = "nf_proto"
    CTSTATE = "ct_state"
    FIBTYPE = "fib_addrtype"
    TCPFLAGS = "tcp_flag"
    VERDICT = "verdict"


# field → (kind, the network family it needs (its implicit ``meta nfproto`` dependency), the l4 protocol
# it needs (its implicit ``meta l4proto`` dependency)); the name is nft's listing spelling.
FIELDS: dict[str, tuple[Kind, Family | None, str | None]] = {
    "ip saddr": (Kind.IPV4, Family.IPV4, None),
    "ip daddr": (Kind.IPV4, Family.IPV4, None),
    "ip protocol": (Kind.L4PROTO, Family.IPV4, None),
    "ip6 saddr": (Kind.IPV6, Family.IPV6, None),
    "ip6 daddr": (Kind.IPV6, Family.IPV6, None),
    "ip6 nexthdr": (Kind.L4PROTO, Family.IPV6, None),
    "tcp sport": (Kind.PORT, None, "tcp"),
    "tcp dport": (Kind.PORT, None, "tcp"),
    "tcp flags": (Kind.TCPFLAGS, None, "tcp"),
    "udp sport": (Kind.PORT, None, "udp"),
    "udp dport": (Kind.PORT, None, "udp"),
    "sctp sport": (Kind.PORT, None, "sctp"),
    "sctp dport": (Kind.PORT, None, "sctp"),
    "th sport": (Kind.PORT, None, "th"),
    "th dport": (Kind.PORT, None, "th"),
    "meta l4proto": (Kind.L4PROTO, None, None),
    "meta nfproto": (Kind.NFPROTO, None, None),
    "meta mark": (Kind.MARK, None, None),
    "meta skuid": (Kind.INT, None, None),
    "meta skgid": (Kind.INT, None, None),
    "iifname": (Kind.IFNAME, None, None),
    "oifname": (Kind.IFNAME, None, None),
    "ct state": (Kind.CTSTATE, None, None),
    "ct mark": (Kind.MARK, None, None),
    "ct zone": (Kind.INT, None, None),
    "fib daddr type": (Kind.FIBTYPE, None, None),
    "fib saddr type": (Kind.FIBTYPE, None, None),
    "numgen": (Kind.INT, None, None),
}
# spellings the parser accepts for a field (nft's unqualified meta keys, ``meta iifname``, …)
FIELD_ALIASES: dict[str, str] = {
    "mark": "meta mark", "skuid": "meta skuid", "skgid": "meta skgid", "l4proto": "meta l4proto",
    "nfproto": "meta nfproto", "meta iifname": "iifname", "meta oifname": "oifname",
}


# One value of a field: an inclusive interval of integers (addresses, ports, marks, bits), or an
# interface name (a trailing ``*`` is a prefix wildcard).
Atom = tuple[int, int] | str
# A set element: one atom per field of the (concatenated) key.
Element = tuple[Atom, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """``accept``, ``drop``, ``reject`` (traced as drop), ``return``, ``continue``, ``queue``, ``jump C``,
    ``goto C``."""

    kind: str
    chain: str = ""
    text: str = ""  # reject's own spelling (``reject with tcp reset``)


@dataclass(frozen=True, slots=True, kw_only=True)
class Elements:
    """An anonymous set (``{ 53, 80 }``), or a single value when ``braces`` is False; for a map each element
    has its data (``: verdict``)."""

    items: tuple[Element, ...]
    braces: bool = True
    data: tuple[Verdict, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRef:
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """``FIELD [. FIELD…] [and MASK] OP VALUE`` (an implicit ``==``, or a bit test for ct state/tcp flags)."""

    fields: tuple[str, ...]
    op: str  # == != < > <= >=
    value: Elements | SetRef
    mask: int | None = None
    numgen_mod: int = 0  # ``numgen random mod N``: N


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictMap:
    """``FIELD [. FIELD…] vmap { k : verdict, … }`` or ``vmap @name``: the element's verdict, else the rule stops."""

    fields: tuple[str, ...]
    value: Elements | SetRef
    numgen_mod: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Nat:
    """``redirect``, ``dnat``, ``snat``, ``masquerade``: ``to [ADDR][:PORT[-PORT]]``."""

    kind: str
    family: str = ""  # ``dnat ip to …`` in an inet table
    addr: int | None = None
    addr_text: str = ""
    ports: tuple[int, int] | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Tproxy:
    """``tproxy [ip|ip6] to [ADDR]:PORT``: assign a transparent socket, else the rule stops (no drop)."""

    family: str = ""
    addr: int | None = None
    addr_text: str = ""
    port: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SetStmt:
    """``meta mark set V``, ``ct mark set V``, ``ct zone set N``, ``meta nftrace set 1``: V is a number or
    another field (``ct mark set meta mark``), with an optional ``and|or|xor N``."""

    key: str
    value: int | None = None
    source: str = ""
    op: str = ""
    operand: int = 0
    op2: str = ""  # a second operator applied after the first: ``ct mark & 0xfffff000 | 0x111``
    operand2: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Other:
    """A statement with no effect on the path: ``counter``, ``log …``, ``limit …``, ``comment``, ``notrack``
    is not one (its own class); ``text`` is its listing."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Notrack:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown:
    """What netsim cannot evaluate, kept as written: the trace assumes it matched and says so."""

    text: str


Expr = Match | VerdictMap | Nat | Tproxy | SetStmt | Other | Notrack | Verdict | Unknown


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    exprs: tuple[Expr, ...]
    line: int = 0
    handle: int | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Chain:
    name: str
    rules: tuple[Rule, ...] = ()
    type: str | None = None  # filter / nat / route for a base chain, None for a regular one
    hook: str | None = None  # nft's hook name
    priority: int = 0
    policy: str = "accept"
    line: int = 0

    @property
    def base(self) -> bool:
        return self.hook is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedSet:
    """A named set or map: ``fields`` its key's kinds, ``interval`` its flag, ``elements`` (with map data)."""

    name: str
    kinds: tuple[Kind, ...]
    elements: Elements
    interval: bool = False
    is_map: bool = False
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    family: NftFamily
    name: str
    chains: tuple[Chain, ...] = ()
    sets: tuple[NamedSet, ...] = ()

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    def set(self, name: str) -> NamedSet | None:
        return next((s for s in self.sets if s.name == name), None)


@dataclass(frozen=True, slots=True)
class NftRuleset:
    """Every table of one ``nft list ruleset`` (or what an ``nft -f`` transaction leaves), in order."""

    tables: tuple[Table, ...] = ()
    has_handles: bool = False

    def table(self, family: NftFamily, name: str) -> Table | None:
        return next((t for t in self.tables if t.family is family and t.name == name), None)


# ------------------------------------------------------------------------------------------ listing text


def _addr(kind: Kind, value: int) -> str:
    return inet_ntop(IPv4Address(value) if kind is Kind.IPV4 else IPv6Address(value))


def atom_text(kind: Kind, atom: Atom) -> str:
    """One value as ``nft list`` prints it."""
    if isinstance(atom, str):
        return f'"{atom}"' if kind is Kind.IFNAME else atom
    lo, hi = atom
    if kind in (Kind.IPV4, Kind.IPV6):
        bits = 32 if kind is Kind.IPV4 else 128
        if lo == hi:
            return _addr(kind, lo)
        size = hi - lo + 1
        if size & (size - 1) == 0 and lo % size == 0:
            return f"{_addr(kind, lo)}/{bits - size.bit_length() + 1}"
        return f"{_addr(kind, lo)}-{_addr(kind, hi)}"
    if kind is Kind.CTSTATE:
        return ",".join(n for n, b in CT_STATES.items() if lo & b)
    if kind is Kind.TCPFLAGS:
        return ",".join(n for n, b in TCP_FLAGS.items() if lo & b) if lo else "0x0"
    if kind is Kind.L4PROTO:
        return L4NAMES.get(lo, str(lo)) if lo == hi else f"{lo}-{hi}"
    if kind is Kind.NFPROTO:
        return {2: "ipv4", 10: "ipv6"}.get(lo, str(lo))
    if kind is Kind.FIBTYPE:
        return FIB_TYPES[lo] if lo < len(FIB_TYPES) else str(lo)
    if kind is Kind.MARK:
        one = f"0x{lo:08x}"
        return one if lo == hi else f"{one}-0x{hi:08x}"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _kinds(fields: tuple[str, ...]) -> tuple[Kind, ...]:
    return tuple(FIELDS[f][0] for f in fields)


def element_text(kinds: tuple[Kind, ...], element: Element) -> str:
    return " . ".join(atom_text(k, a) for k, a in zip(kinds, element, strict=True))


def verdict_text(v: Verdict) -> str:
    if v.kind in ("jump", "goto"):
        return f"{v.kind} {v.chain}"
    return v.text or v.kind


def _value_text(kinds: tuple[Kind, ...], value: Elements | SetRef) -> str:
    if isinstance(value, SetRef):
        return f"@{value.name}"
    if not value.braces:
        return element_text(kinds, value.items[0])
    if value.data:
        items = sorted(zip(value.items, value.data, strict=True), key=lambda p: _sort_key(p[0]))
        return "{ " + ", ".join(f"{element_text(kinds, e)} : {verdict_text(d)}" for e, d in items) + " }"
    return "{ " + ", ".join(element_text(kinds, e) for e in sorted(value.items, key=_sort_key)) + " }"


def _sort_key(e: Element) -> tuple[object, ...]:
    return tuple((0, a[0]) if not isinstance(a, str) else (1, a) for a in e)


def _selector(fields: tuple[str, ...], numgen_mod: int) -> str:
    return " . ".join(f"numgen random mod {numgen_mod}" if f == "numgen" else f for f in fields)


def expr_text(e: Expr) -> str:
    """One expression or statement as ``nft list`` prints it (counters with zero values)."""
    if isinstance(e, Match):
        kinds = _kinds(e.fields)
        sel = _selector(e.fields, e.numgen_mod)
        if e.mask is not None:
            sel += f" & {atom_text(kinds[0], (e.mask, e.mask))}" if kinds[0] is Kind.MARK else f" & {e.mask:#x}"
        op = "" if e.op == "==" and e.mask is None else f"{e.op} "
        return f"{sel} {op}{_value_text(kinds, e.value)}"
    if isinstance(e, VerdictMap):
        return f"{_selector(e.fields, e.numgen_mod)} vmap {_value_text(_kinds(e.fields), e.value)}"
    if isinstance(e, Verdict):
        return verdict_text(e)
    if isinstance(e, Nat):
        to = ""
        if e.addr_text or e.ports is not None:
            port = "" if e.ports is None else (f":{e.ports[0]}" if e.ports[0] == e.ports[1]
                                               else f":{e.ports[0]}-{e.ports[1]}")
            addr = f"[{e.addr_text}]" if ":" in e.addr_text and port else e.addr_text
            fam = f"{e.family} " if e.family else ""
            to = f" {fam}to {addr}{port}"
        return f"{e.kind}{to}{''.join(' ' + f for f in e.flags)}"
    if isinstance(e, Tproxy):
        addr = f"[{e.addr_text}]" if ":" in e.addr_text else e.addr_text
        fam = f"{e.family} " if e.family else ""
        return f"tproxy {fam}to {addr}:{e.port}" if e.port else f"tproxy {fam}to {addr}"
    if isinstance(e, SetStmt):
        if e.source:
            val = e.source + (f" {e.op} 0x{e.operand:08x}" if e.op else "")  # op: & | ^
            if e.op == "&" and e.op2 == "|":  # nft lists (x & A) | B as x & (A & ~B | B) | B
                mask = (e.operand & ~e.operand2 | e.operand2) & 0xFFFFFFFF
                val = f"{e.source} & 0x{mask:08x} | 0x{e.operand2:08x}"
            elif e.op2:
                val += f" {e.op2} 0x{e.operand2:08x}"
        else:
            assert e.value is not None
            val = f"0x{e.value:08x}" if e.key in ("meta mark", "ct mark") else str(e.value)
        return f"{e.key} set {val}"
    if isinstance(e, Notrack):
        return "notrack"
    return e.text


def rule_text(rule: Rule) -> str:
    """The rule as ``nft list ruleset`` prints it: a ``meta l4proto``/``meta nfproto``/``ip protocol`` match
    that a later field depends on is dropped (nft's dependency elimination), counters read 0."""
    deps: set[str] = set()
    for e in rule.exprs:
        if isinstance(e, Match | VerdictMap):
            for f in e.fields:
                _, fam, l4 = FIELDS[f]
                if l4 not in (None, "th"):
                    deps.add(f"l4:{l4}")
                if fam is not None:
                    deps.add(f"nf:{fam.value}")
    parts = []
    for e in rule.exprs:
        if isinstance(e, Match) and e.op == "==" and e.mask is None and isinstance(e.value, Elements) \
                and not e.value.braces and len(e.fields) == 1:
            atom = e.value.items[0][0]
            if isinstance(atom, tuple) and atom[0] == atom[1]:
                f = e.fields[0]
                if f in ("meta l4proto", "ip protocol", "ip6 nexthdr") and f"l4:{L4NAMES.get(atom[0])}" in deps:
                    continue
                if f == "meta nfproto" and f"nf:{4 if atom[0] == 2 else 6}" in deps:
                    continue
        parts.append(expr_text(e))
    if rule.comment is not None:
        parts.append(f'comment "{rule.comment}"')
    return " ".join(parts)


__all__ = [
    "CHAIN_TYPES",
    "CT_STATES",
    "FIELDS",
    "FIELD_ALIASES",
    "HOOKS",
    "NAMED_PRIORITIES",
    "NAMED_PRIORITY_HOOKS",
    "Atom",
    "Chain",
    "Element",
    "Elements",
    "Expr",
    "Kind",
    "Match",
    "NamedSet",
    "Nat",
    "NftFamily",
    "NftRuleset",
    "Notrack",
    "Other",
    "Rule",
    "SetRef",
    "SetStmt",
    "Table",
    "Tproxy",
    "Unknown",
    "Verdict",
    "VerdictMap",
    "atom_text",
    "element_text",
    "expr_text",
    "rule_text",
]
