"""Match extensions: how each ``-m module`` option is read and stored the way the kernel keeps it.

A table, not a class hierarchy (STYLE §3): for each module we know, the options it takes (name,
aliases, argument count) and a normaliser that turns what a user or Istio wrote into what
``iptables-save`` prints (iptables 1.8.9, checked on Linux 6.18 in a throw-away namespace). The
options of a module are printed in the module's fixed save order, whatever order they were written.

Modules we do not know keep their tokens verbatim; the engine reports them as uncertain.
Never evaluates packets (that is ``engine.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netsim.errors import RulesetError
from netsim.netfilter.model import Family, Match, Option

Normalizer = Callable[[str, tuple[str, ...], "Names"], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Names:
    """How user and group names in ``--uid-owner``/``--gid-owner`` become numbers at load time.

    The kernel never sees names: iptables resolves them when the rule is loaded and fails if one
    does not exist. ``users``/``groups`` map names to ids; ``system`` also consults this machine's
    passwd/group databases (off in tests, so results never depend on the host)."""

    users: tuple[tuple[str, int], ...] = (("root", 0),)
    groups: tuple[tuple[str, int], ...] = (("root", 0),)
    system: bool = False

    @classmethod
    def resolving(cls, groups: Sequence[tuple[str, int]] | None) -> Names:
        """Names as the machine that loads the rules resolves them: ``groups`` given (an /etc/group-format
        file's, ``--group-file``; root besides), else this machine's databases."""
        return cls(system=True) if groups is None else cls(groups=(("root", 0), *groups))

    def uid(self, name: str) -> int | None:
        return self._lookup(name, self.users, "pwd")

    def gid(self, name: str) -> int | None:
        return self._lookup(name, self.groups, "grp")

    def _lookup(self, name: str, table: tuple[tuple[str, int], ...], module: str) -> int | None:
        for key, value in table:
            if key == name:
                return value
        if self.system:
            import grp
            import pwd

            try:
                return pwd.getpwnam(name).pw_uid if module == "pwd" else grp.getgrnam(name).gr_gid
            except KeyError:
                return None
        return None


DEFAULT_NAMES = Names()


# ---------------------------------------------------------------- shared value parsers

# /etc/services entries iptables users commonly write; iptables-save always prints numbers.
SERVICES: dict[str, int] = {
    "ftp": 21,
    "ssh": 22,
    "telnet": 23,
    "smtp": 25,
    "domain": 53,
    "http": 80,
    "pop3": 110,
    "ntp": 123,
    "imap": 143,
    "snmp": 161,
    "ldap": 389,
    "https": 443,
    "smtps": 465,
    "submission": 587,
    "ldaps": 636,
    "imaps": 993,
    "pop3s": 995,
    "mysql": 3306,
    "postgresql": 5432,
    "redis": 6379,
    "http-alt": 8080,
}


_STRTOUL10 = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_STRTOUL = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def strtoui(text: str, high: int, base: int = 0) -> int | None:
    """``xtables_strtoui(text, NULL, &v, 0, high)``: C's strtoul in base 0 (``0x1f`` hex, ``017`` octal)
    over the whole text, then the range check; None if it fails."""
    if text.isdigit() and text.isascii() and (base == 10 or text[0] != "0" or len(text) == 1):
        value = int(text)  # the common case: plain decimal (a leading 0 means octal in base 0)
        return value if value <= high else None
    m = (_STRTOUL10 if base == 10 else _STRTOUL).fullmatch(text)
    if m is None:
        return None
    sign, digits = m.groups()
    if base == 10:
        value = int(digits)
        return None if (sign == "-" and value) or value > high else value
    value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 8 if digits.startswith("0") else 10)
    if sign == "-" and value:
        return None  # strtoul wraps a negative number to a huge one
    return value if value <= high else None


def parse_port(text: str, base: int = 0, services: bool = True) -> int:
    """A port number or service name → int (0–65535). tcp (x6 parser) reads numbers in any C base
    (``0x50`` is 80, ``080`` is refused), udp and dccp in base 10 (``080`` is 80, ``0x50`` refused);
    /etc/services names only tcp and udp ports. Base 10 is C's strtoul with no range check but its own
    (ULONG_MAX) and the result cut to 16 bits, as libxt_udp/libxt_dccp store it (verified: ``--sport 65537``
    loads as 1, ``70000:80000`` as 4464:14464, 2**64 is refused)."""
    if base == 10:
        wide = strtoui(text, 2**64 - 1, 10)
        if wide is not None:
            return wide & 0xFFFF
    value = strtoui(text, 65535, base)
    if value is not None:
        return value
    if services and text in SERVICES:
        return SERVICES[text]
    raise RulesetError(f"invalid port/service `{text}' specified")


def port_range(text: str, sep: str = ":", ordered: bool = True, base: int = 0,
               services: bool = True) -> tuple[int, int]:
    """``80``, ``80:90``, ``80:`` (to 65535), ``:80`` (from 0) → (low, high). Without ``ordered`` a range
    whose low end is above its high end is kept as written (libxt_udp and libxt_dccp do not check)."""
    if sep in text:
        lo, _, hi = text.partition(sep)
        low = parse_port(lo, base, services) if lo else 0
        high = parse_port(hi, base, services) if hi else 65535
        if low > high and ordered:
            raise RulesetError(f"invalid portrange ({text}) specified")
        return low, high
    value = parse_port(text, base, services)
    return value, value


def _fmt_range(low: int, high: int, sep: str = ":") -> str:
    return str(low) if low == high else f"{low}{sep}{high}"


def parse_u32(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise RulesetError(f"bad value `{text}'") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise RulesetError(f"value `{text}' out of range")
    return value


def value_mask(text: str) -> tuple[int, int]:
    """``1000`` or ``0x10/0xff`` → (value, mask); the mask defaults to 0xffffffff."""
    value, sep, mask = text.partition("/")
    return parse_u32(value), parse_u32(mask) if sep else 0xFFFFFFFF


def fmt_mark(value: int, mask: int) -> str:
    """As the mark/connmark matches print: the mask only when it is not all ones."""
    return f"{value:#x}" if mask == 0xFFFFFFFF else f"{value:#x}/{mask:#x}"


def _id_range(text: str, lookup: Callable[[str], int | None], what: str) -> str:
    lo, sep, hi = text.partition("-")

    def one(part: str) -> int:
        if part.isdigit():
            return int(part)
        found = lookup(part)
        if found is None:
            raise RulesetError(f'Bad {what} value "{part}"')
        return found

    low = one(lo)
    high = one(hi) if sep else low
    return _fmt_range(low, high, "-")


# ---------------------------------------------------------------- the per-module normalisers


def _ports(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    return (_fmt_range(*port_range(args[0])),)


def _unordered_ports(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    return (_fmt_range(*port_range(args[0], ordered=False, base=10)),)


def _numeric_ports(ordered: bool) -> Normalizer:
    """sctp (any C base, ordered) and dccp (base 10, unordered) ports: no service names."""

    def norm(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
        return (_fmt_range(*port_range(args[0], ordered=ordered, base=0 if ordered else 10, services=False)),)

    return norm


TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG")


def _flag_list(text: str) -> str:
    if text == "ALL":
        wanted = set(TCP_FLAGS)
    elif text == "NONE":
        wanted = set()
    else:
        wanted = set(text.split(","))
        unknown = wanted - set(TCP_FLAGS) - {"ALL", "NONE"}
        if unknown:
            raise RulesetError(f"Unknown TCP flag `{sorted(unknown)[0]}'")
        if "ALL" in wanted:
            wanted = set(TCP_FLAGS)
        wanted.discard("NONE")
    return ",".join(f for f in TCP_FLAGS if f in wanted) or "NONE"


def _tcp_flags(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    return (_flag_list(args[0]), _flag_list(args[1]))


def _multiport(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    items = args[0].split(",")
    if len(items) > 15:
        raise RulesetError("too many ports specified")
    out = []
    for item in items:
        low, high = port_range(item)
        if ":" in item and low >= high:
            raise RulesetError("invalid portrange specified")
        out.append(_fmt_range(low, high))
    return (",".join(out),)


def _uid(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    return (_id_range(args[0], names.uid, "UID"),)


def _gid(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    return (_id_range(args[0], names.gid, "GID"),)


def _mark(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    return (fmt_mark(*value_mask(args[0])),)


CT_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
CT_STATUSES = ("NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED")


def _ordered_list(choices: tuple[str, ...], what: str) -> Normalizer:
    def norm(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
        wanted = set(args[0].split(","))
        unknown = wanted - set(choices)
        if unknown:
            raise RulesetError(f'Bad {what} "{sorted(unknown)[0]}"')
        return (",".join(c for c in choices if c in wanted),)

    return norm


ADDR_TYPES = (
    "UNSPEC",
    "UNICAST",
    "LOCAL",
    "BROADCAST",
    "ANYCAST",
    "MULTICAST",
    "BLACKHOLE",
    "UNREACHABLE",
    "PROHIBIT",
    "THROW",
    "NAT",
    "XRESOLVE",
)

ICMP_TYPES: dict[str, tuple[int, int, int]] = {
    "any": (255, 0, 255),
    "echo-reply": (0, 0, 255),
    "pong": (0, 0, 255),
    "destination-unreachable": (3, 0, 255),
    "network-unreachable": (3, 0, 0),
    "host-unreachable": (3, 1, 1),
    "protocol-unreachable": (3, 2, 2),
    "port-unreachable": (3, 3, 3),
    "fragmentation-needed": (3, 4, 4),
    "source-route-failed": (3, 5, 5),
    "network-unknown": (3, 6, 6),
    "host-unknown": (3, 7, 7),
    "network-prohibited": (3, 9, 9),
    "host-prohibited": (3, 10, 10),
    "communication-prohibited": (3, 13, 13),
    "source-quench": (4, 0, 255),
    "redirect": (5, 0, 255),
    "echo-request": (8, 0, 255),
    "ping": (8, 0, 255),
    "router-advertisement": (9, 0, 255),
    "router-solicitation": (10, 0, 255),
    "time-exceeded": (11, 0, 255),
    "ttl-exceeded": (11, 0, 255),
    "ttl-zero-during-transit": (11, 0, 0),
    "parameter-problem": (12, 0, 255),
    "timestamp-request": (13, 0, 255),
    "timestamp-reply": (14, 0, 255),
    "address-mask-request": (17, 0, 255),
    "address-mask-reply": (18, 0, 255),
}
ICMP6_TYPES: dict[str, tuple[int, int, int]] = {
    "destination-unreachable": (1, 0, 255),
    "no-route": (1, 0, 0),
    "communication-prohibited": (1, 1, 1),
    "address-unreachable": (1, 3, 3),
    "port-unreachable": (1, 4, 4),
    "packet-too-big": (2, 0, 255),
    "time-exceeded": (3, 0, 255),
    "ttl-exceeded": (3, 0, 255),
    "parameter-problem": (4, 0, 255),
    "echo-request": (128, 0, 255),
    "ping": (128, 0, 255),
    "echo-reply": (129, 0, 255),
    "pong": (129, 0, 255),
    "router-solicitation": (133, 0, 255),
    "router-advertisement": (134, 0, 255),
    "neighbour-solicitation": (135, 0, 255),
    "neighbor-solicitation": (135, 0, 255),
    "neighbour-advertisement": (136, 0, 255),
    "neighbor-advertisement": (136, 0, 255),
    "redirect": (137, 0, 255),
}


def icmp_type(text: str, table: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    """``echo-request`` / ``8`` / ``3/1`` → (type, code_min, code_max)."""
    if text in table:
        return table[text]
    kind, sep, code = text.partition("/")
    try:
        if sep:
            c = int(code)
            return int(kind), c, c
        return int(kind), 0, 255
    except ValueError:
        raise RulesetError(f"Invalid ICMP type `{text}'") from None


def _icmp(table: dict[str, tuple[int, int, int]]) -> Normalizer:
    def norm(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
        kind, lo, hi = icmp_type(args[0], table)
        if kind == 255 and table is ICMP_TYPES:
            return ("any",)
        if lo == 0 and hi == 255:
            return (str(kind),)
        return (f"{kind}/{lo}" if lo == hi else f"{kind}/{lo}-{hi}",)

    return norm


def _probability(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    try:
        p = float(args[0])
    except ValueError:
        raise RulesetError(f'Bad probability "{args[0]}"') from None
    # The kernel keeps the probability as a 31-bit fraction; iptables prints it with 11 decimals.
    if not 0 <= p <= 1:
        raise RulesetError(f'probability "{args[0]}" must be between 0 and 1')
    stored = round(p * 0x80000000)
    return (f"{stored / 0x80000000:.11f}",)


def same_value(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    """The normaliser of an option kept as written (a comment)."""
    return args


_same = same_value


def _int(name: str, args: tuple[str, ...], names: Names) -> tuple[str, ...]:
    try:
        return (str(int(args[0], 0)),)
    except ValueError:
        raise RulesetError(f'Bad value for {name}: "{args[0]}"') from None


@dataclass(frozen=True, slots=True)
class OptionSpec:
    name: str
    nargs: int = 1
    normalize: Normalizer = _same
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """A known extension: its options in save order, and how a bare option is rewritten."""

    name: str
    options: tuple[OptionSpec, ...]
    saved_as: str | None = None  # e.g. ``icmpv6`` is saved as ``icmp6``
    rewrite: Callable[[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] | None = None

    def lookup(self, option: str) -> OptionSpec | None:
        for spec in self.options:
            if option == spec.name or option in spec.aliases:
                return spec
        return None


def _tcp_rewrite(name: str, args: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    if name == "--syn":
        return "--tcp-flags", ("FIN,SYN,RST,ACK", "SYN")
    return name, args


_PORT_OPTS = (
    OptionSpec("--sport", 1, _ports, ("--source-port",)),
    OptionSpec("--dport", 1, _ports, ("--destination-port",)),
)

MODULES: dict[str, ModuleSpec] = {
    spec.name: spec
    for spec in (
        ModuleSpec(
            "tcp",
            (
                *_PORT_OPTS,
                OptionSpec("--tcp-option", 1, _int),
                OptionSpec("--tcp-flags", 2, _tcp_flags),
                OptionSpec("--syn", 0),
            ),
            rewrite=_tcp_rewrite,
        ),
        ModuleSpec("udp", (OptionSpec("--sport", 1, _unordered_ports, ("--source-port",)),
                           OptionSpec("--dport", 1, _unordered_ports, ("--destination-port",)))),
        # sctp and dccp stay xt matches under iptables-nft: ports are kept as written, unlike tcp/udp's
        ModuleSpec("sctp", (OptionSpec("--sport", 1, _numeric_ports(True), ("--source-port",)),
                            OptionSpec("--dport", 1, _numeric_ports(True), ("--destination-port",)),
                            OptionSpec("--chunk-types", 2))),
        ModuleSpec("dccp", (OptionSpec("--sport", 1, _numeric_ports(False), ("--source-port",)),
                            OptionSpec("--dport", 1, _numeric_ports(False), ("--destination-port",)),
                            OptionSpec("--dccp-types", 1), OptionSpec("--dccp-option", 1))),
        ModuleSpec(
            "multiport",
            (
                OptionSpec("--sports", 1, _multiport, ("--source-ports",)),
                OptionSpec("--dports", 1, _multiport, ("--destination-ports",)),
                OptionSpec("--ports", 1, _multiport),
            ),
        ),
        ModuleSpec(
            "owner",
            (
                OptionSpec("--socket-exists", 0),
                OptionSpec("--uid-owner", 1, _uid),
                OptionSpec("--gid-owner", 1, _gid),
                OptionSpec("--suppl-groups", 0),
            ),
        ),
        ModuleSpec("mark", (OptionSpec("--mark", 1, _mark),)),
        ModuleSpec("connmark", (OptionSpec("--mark", 1, _mark),)),
        ModuleSpec(
            "conntrack",
            (
                OptionSpec("--ctstate", 1, _ordered_list(CT_STATES, "ctstate")),
                OptionSpec("--ctproto", 1),
                OptionSpec("--ctorigsrc", 1),
                OptionSpec("--ctorigdst", 1),
                OptionSpec("--ctreplsrc", 1),
                OptionSpec("--ctrepldst", 1),
                OptionSpec("--ctorigsrcport", 1),
                OptionSpec("--ctorigdstport", 1),
                OptionSpec("--ctreplsrcport", 1),
                OptionSpec("--ctrepldstport", 1),
                OptionSpec("--ctstatus", 1, _ordered_list(CT_STATUSES, "ctstatus")),
                OptionSpec("--ctexpire", 1),
                OptionSpec("--ctdir", 1),
            ),
        ),
        ModuleSpec("state", (OptionSpec("--state", 1, _ordered_list(CT_STATES, "state")),)),
        ModuleSpec(
            "addrtype",
            (
                OptionSpec("--src-type", 1, _ordered_list(ADDR_TYPES, "address type")),
                OptionSpec("--dst-type", 1, _ordered_list(ADDR_TYPES, "address type")),
                OptionSpec("--limit-iface-in", 0),
                OptionSpec("--limit-iface-out", 0),
            ),
        ),
        ModuleSpec("comment", (OptionSpec("--comment", 1),)),
        ModuleSpec("icmp", (OptionSpec("--icmp-type", 1, _icmp(ICMP_TYPES)),)),
        ModuleSpec("icmp6", (OptionSpec("--icmpv6-type", 1, _icmp(ICMP6_TYPES)),)),
        ModuleSpec(
            "socket",
            (
                OptionSpec("--transparent", 0),
                OptionSpec("--nowildcard", 0),
                OptionSpec("--restore-skmark", 0),
            ),
        ),
        ModuleSpec(
            "statistic",
            (
                OptionSpec("--mode", 1),
                OptionSpec("--probability", 1, _probability),
                OptionSpec("--every", 1, _int),
                OptionSpec("--packet", 1, _int),
            ),
        ),
    )
}
MODULE_ALIASES = {"icmpv6": "icmp6", "ipv6-icmp": "icmp6"}
# The match extensions iptables 1.8.9 has (libxt_*, libipt_* for IPv4, libip6t_* for IPv6): ``-m`` of any
# other name is "Couldn't load match" (names are case-sensitive).
INSTALLED_MATCHES = frozenset({
    "addrtype", "bpf", "cgroup", "cluster", "comment", "connbytes", "connlabel", "connlimit", "connmark",
    "conntrack", "cpu", "dccp", "devgroup", "dscp", "ecn", "esp", "hashlimit", "helper", "ipcomp", "iprange",
    "ipvs", "length", "limit", "mac", "mark", "multiport", "nfacct", "osf", "owner", "physdev", "pkttype",
    "policy", "quota", "rateest", "recent", "rpfilter", "sctp", "set", "socket", "state", "statistic",
    "string", "tcp", "tcpmss", "time", "tos", "u32", "udp",
})
INSTALLED_BY_FAMILY = {Family.IPV4: frozenset({"ah", "icmp", "realm", "ttl"}),
                       Family.IPV6: frozenset({"ah", "dst", "eui64", "frag", "hbh", "hl", "icmp6", "icmpv6",
                                               "ipv6-icmp", "ipv6header", "mh", "rt", "srh"})}
# Options a match cannot do without (x6 XTOPT_MAND).
MANDATORY = {"icmp": "--icmp-type", "icmp6": "--icmpv6-type"}

# Options a protocol loads implicitly (``-p tcp --dport 80`` → ``-p tcp -m tcp --dport 80``): iptables
# loads the match named like the protocol if one exists (none for udplite, so ``-p udplite --dport`` is
# an unknown option); icmp exists for IPv4 only and icmp6 for IPv6 only.
IMPLICIT_BY_PROTO = {"tcp": "tcp", "udp": "udp", "sctp": "sctp", "dccp": "dccp", "icmp": "icmp",
                     "ipv6-icmp": "icmp6"}


def loadable(module: str, family: Family) -> bool:
    """Whether iptables of ``family`` has this match (icmp is IPv4's, icmp6 IPv6's)."""
    return module in INSTALLED_MATCHES or module in INSTALLED_BY_FAMILY[family]


def known_module(name: str) -> ModuleSpec | None:
    return MODULES.get(MODULE_ALIASES.get(name, name))


def normalize_match(module: str, options: Sequence[Option], names: Names, family: Family) -> Match | None:
    """Build a Match in canonical form: known options normalised and put in save order; None when
    iptables would store nothing for it (see ``_nft_port_ranges``).

    Raises RulesetError for an option the module does not take or a bad value."""
    if module not in INSTALLED_MATCHES and module not in INSTALLED_BY_FAMILY[family]:
        raise RulesetError(f"Couldn't load match `{module}' (no such IPv{family.value} match in iptables)")
    spec = known_module(module)
    mandatory = MANDATORY.get(spec.name) if spec is not None else None
    if mandatory is not None and not any(spec is not None and spec.lookup(o.name) is not None for o in options):
        raise RulesetError(f'{spec.name if spec else module}: option "{mandatory}" must be specified')
    if spec is None:
        return Match(module, tuple(options))
    out: list[tuple[int, Option]] = []
    for opt in options:
        name, args = opt.name, opt.args
        if spec.rewrite is not None:
            name, args = spec.rewrite(name, args)
        ospec = spec.lookup(name)
        if ospec is None:
            raise RulesetError(f'unknown option "{opt.name}" for match `{module}\'')
        out.append(
            (
                spec.options.index(ospec),
                Option(ospec.name, ospec.normalize(ospec.name, args, names), opt.negated),
            )
        )
    if spec.name == "statistic":
        out = [(i, o) for i, o in out if not (o.name == "--packet" and o.args == ("0",))]
    out.sort(key=lambda pair: pair[0])
    options_out = tuple(o for _, o in out)
    if spec.name in ("tcp", "udp"):
        options_out, keep = _nft_port_ranges(options_out)
        if not keep:
            return None
    return Match(spec.saved_as or spec.name, options_out)


def _nft_port_ranges(options: tuple[Option, ...]) -> tuple[tuple[Option, ...], bool]:
    """iptables-nft stores tcp/udp ports as native nft comparisons, and what it saves back differs from
    what was written (iptables 1.8.9, verified here): ``! --sport 0:100`` comes back as
    ``--sport 101:65535``; a full range ``0:65535`` is dropped, and when it was negated and nothing
    else is left, the whole ``-m tcp`` goes too. Returns the options and whether the match stays."""
    out: list[Option] = []
    dropped_negated = False
    for opt in options:
        if opt.name in ("--sport", "--dport"):
            low, high = port_range(opt.args[0], ordered=False)
            if (low, high) == (0, 65535):
                dropped_negated = dropped_negated or opt.negated
                continue
            if opt.negated and low == 0:
                opt = Option(opt.name, (_fmt_range(high + 1, 65535),))
        out.append(opt)
    return tuple(out), bool(out) or not dropped_negated


@functools.lru_cache(maxsize=1024)
def option_arity(module: str, option: str) -> int | None:
    """How many arguments ``option`` of ``module`` takes, or None if the module does not know it."""
    spec = known_module(module)
    if spec is None:
        return None
    ospec = spec.lookup(option)
    return None if ospec is None else ospec.nargs


__all__ = [
    "DEFAULT_NAMES",
    "IMPLICIT_BY_PROTO",
    "MODULES",
    "Names",
    "known_module",
    "loadable",
    "normalize_match",
    "option_arity",
    "port_range",
    "same_value",
    "strtoui",
    "value_mask",
]
