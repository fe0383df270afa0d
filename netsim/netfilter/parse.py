"""Reading ruleset text: ``iptables-save`` dumps, ``iptables-restore`` input and Istio's dry-run format.

Text becomes the typed model of ``model.py`` here, and nowhere else. Tokens are normalised the way
iptables normalises them before the kernel stores them (``matches.py``, ``targets.py``), so a parsed
rule renders back exactly as ``iptables-save`` prints it.

Errors are raised as :class:`RulesetError` with the line number and the offending text; the caller
adds the file name (``err.at(path)``). Nothing here does IO.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from netsim.errors import RulesetError
from netsim.netfilter.matches import (
    DEFAULT_NAMES,
    IMPLICIT_BY_PROTO,
    Names,
    known_module,
    loadable,
    normalize_match,
    option_arity,
    same_value,
    strtoui,
)
from netsim.netfilter.model import (
    BUILTIN_CHAINS,
    Chain,
    Family,
    MaskedIPv4Network,
    MaskedIPv6Network,
    Match,
    Network,
    Option,
    RestorePayload,
    Rule,
    RuleOp,
    Ruleset,
    Table,
    Target,
    gc_paused,
)
from netsim.netfilter.targets import TARGET_OPTIONS, VERDICTS, is_extension_target, normalize_target
from netsim.netfilter.validate import check_userspace, loads, rule_problem, table_problem

# Protocol numbers iptables-save prints by name (/etc/protocols names; "all" is printed as nothing).
PROTOCOLS = {
    "0": None, "all": None, "1": "icmp", "2": "igmp", "4": "ipencap", "6": "tcp", "17": "udp", "33": "dccp",
    "135": "mobility-header", "mh": "mobility-header", "ipv6-mh": "mobility-header",
    "41": "ipv6", "47": "gre", "50": "esp", "51": "ah", "58": "ipv6-icmp", "89": "ospf", "103": "pim",
    "112": "vrrp", "132": "sctp", "136": "udplite", "icmpv6": "ipv6-icmp",
}
KNOWN_PROTO_NAMES = {v for v in PROTOCOLS.values() if v} | {"mh", "dccp"}

# The order in which the nf_tables backend of iptables-save prints tables of a fresh ruleset.
TABLE_SAVE_ORDER = ("mangle", "raw", "filter", "nat", "security")
IFNAMSIZ = 16
MAX_CHAIN_NAME = 29  # XT_EXTENSION_MAXNAMELEN: names up to 28 characters


def tokenize(line: str) -> list[str]:
    """Split a rule line exactly as iptables-restore does (``add_param_to_argv``, iptables 1.8.9): on
    blanks, tabs and newlines; ``"`` opens a quote anywhere in a word and the closing ``"`` ends the word
    (so ``""`` is an empty word and ``"a b"c`` two words); inside quotes a backslash takes the next
    character literally, outside it is an ordinary character, as are ``'`` and ``\\r``. An unterminated
    quote is not an error: the rest of the line, its newline included, is the last word.

    Lines without a backslash (all of ``iptables-save``'s but the rare escaped comment) are cut with
    ``str.split`` on the quotes; the rest go character by character (``_tokenize_chars``)."""
    if "\\" in line:
        return _tokenize_chars(line)
    if '"' not in line:
        return _words(line)
    tokens: list[str] = []
    parts = line.split('"')
    last = len(parts) - 1
    prefix = ""  # the unquoted start of the word a quote opens (``a"b c"`` is one word)
    words_of = str.split if _OTHER_SPACE.search(line) is None else _words  # then str.split splits exactly there
    for k, part in enumerate(parts):
        if k % 2:  # inside quotes
            if k < last:
                tokens.append(prefix + part)  # the closing quote ends the word, empty or not
            elif prefix + part:
                tokens.append(prefix + part)  # unterminated: the rest of the line is the last word
            prefix = ""
            continue
        words = words_of(part)
        if k < last and part and part[-1] not in " \t\n":
            prefix = words.pop()  # the word goes on inside the quote
        tokens.extend(words)
    return tokens


def _words(text: str) -> list[str]:
    """``text`` split on blanks, tabs and newlines (only those: a ``\\r`` or ``\\v`` is part of a word)."""
    if _OTHER_SPACE.search(text) is None:  # then str.split splits exactly there
        return text.split()
    if "\t" in text or "\n" in text:
        text = text.replace("\t", " ").replace("\n", " ")
    return [w for w in text.split(" ") if w]


# what str.split() takes for whitespace besides blank, tab and newline
_OTHER_SPACE = re.compile("[\r\x0b\x0c\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _tokenize_chars(line: str) -> list[str]:
    """:func:`tokenize`, one character at a time (the reference; used for lines with a backslash)."""
    tokens: list[str] = []
    cur: list[str] = []
    in_quote = escaped = False
    for ch in line:
        if in_quote:
            if escaped:
                cur.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
                tokens.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        elif ch == '"':
            in_quote = True
        elif ch in " \t\n":
            if cur:
                tokens.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        tokens.append("".join(cur))
    return tokens


def _ipv4_numeric(text: str, is_mask: bool) -> int | None:
    """``__numeric_to_ipaddr``: up to four dotted numbers, each 0-255 in any C base; an address (not a
    mask) may stop early and the missing bytes are zero (``1.2.3`` is 1.2.3.0, not inet_aton's 1.2.0.3)."""
    parts = text.split(".")
    if len(parts) > 4 or (is_mask and len(parts) != 4):
        return None
    value = 0
    for part in parts:
        byte = strtoui(part, 255)
        if byte is None:
            return None
        value = value << 8 | byte
    return value << 8 * (4 - len(parts))


def _prefix(mask: int, bits: int) -> int | None:
    """The prefix length of a contiguous netmask, else None."""
    inverted = ~mask & ((1 << bits) - 1)
    return bits - inverted.bit_length() if inverted & (inverted + 1) == 0 else None


def _networks(text: str, family: Family) -> list[Network]:
    """An ``-s``/``-d`` value that may list several addresses (``a,b``: ``xtables_ipparse_multiple``, one rule
    per address, each with its own mask; an empty item is "host/network `' not found")."""
    if "," not in text:
        return [_network(text, family)]
    return [_network(item, family) for item in text.split(",")]


def _network(text: str, family: Family) -> Network:
    """One ``-s``/``-d`` address as ``xtables_ipparse_any``/``xtables_ip6parse_any`` read it: the mask after the
    last ``/`` (a length in any C base, or a dotted/colon mask, contiguous or not; none means a host), then a
    numeric address. Names: iptables resolves a host name when it loads the rules (getaddrinfo: /etc/hosts,
    then DNS); netsim reads rules offline, so it resolves only ``localhost`` (127.0.0.1, or ::1 for IPv6, as
    RFC 6761 §6.3 has it) and refuses any other name with a message asking for an address."""
    if family is Family.IPV4 and (plain := _PLAIN_V4.fullmatch(text)) is not None:
        # the common case, dotted decimal with a decimal prefix length: read without the general path
        a, b, c, d, plen = plain.groups()
        bytes_ = int(a), int(b), int(c), int(d)
        prefix4 = 32 if plen is None else int(plen)
        if max(bytes_) <= 255 and 0 < prefix4 <= 32:
            value = bytes_[0] << 24 | bytes_[1] << 16 | bytes_[2] << 8 | bytes_[3]
            return _v4_network(value & (0xFFFFFFFF << (32 - prefix4)) & 0xFFFFFFFF, prefix4)
    bits = 32 if family is Family.IPV4 else 128
    full = (1 << bits) - 1
    addr_text, sep, mask_text = text.rpartition("/")
    mask: int | None = None
    if not sep:
        addr_text, mask_text = text, ""
        prefix: int | None = bits
    elif family is Family.IPV4 and (dotted := _ipv4_numeric(mask_text, True)) is not None:
        mask = dotted
        prefix = _prefix(dotted, 32)
    elif family is Family.IPV6 and ":" in mask_text and (mask6 := _ipv6(mask_text)) is not None:
        mask = int(mask6)
        prefix = _prefix(mask, 128)
    else:
        prefix = strtoui(mask_text, bits)
        if prefix is None:
            hint = " (an IPv6 address in an IPv4 ruleset?)" if family is Family.IPV4 and ":" in addr_text else ""
            raise RulesetError(f"invalid mask `{_shown(mask_text)}' specified{hint}")
    if prefix == 0:  # "a null mask is given, the name is ignored, like in any/0"
        return ipaddress.IPv4Network((0, 0)) if family is Family.IPV4 else ipaddress.IPv6Network((0, 0))
    if family is Family.IPV4 and ":" in addr_text and (mapped := _ipv6(addr_text)) is not None \
            and mapped.ipv4_mapped:
        addr_text = str(mapped.ipv4_mapped)  # glibc's getaddrinfo(AF_INET) answers with the IPv4 address
    other = ":" in addr_text if family is Family.IPV4 else _ipv4_numeric(addr_text, True) is not None
    if other:
        raise RulesetError(f"`{_shown(text)}' is not an IPv{family.value} address (iptables-restore refuses "
                           f"the other family's addresses)")
    address: int | None
    if family is Family.IPV4:
        address = _ipv4_numeric(addr_text, False)
    else:
        v6 = _ipv6(addr_text)
        address = None if v6 is None else int(v6)
    if address is None and addr_text.lower() == "localhost":
        address = 0x7F000001 if family is Family.IPV4 else 1
    if address is None:
        if _HOST_NAME.fullmatch(addr_text):
            raise RulesetError(f"`{_shown(addr_text)}' is a host name: iptables-restore resolves names when it "
                               f"loads the rules, netsim reads them offline and resolves only localhost: write "
                               f"the address")
        raise RulesetError(f"host/network `{_shown(addr_text)}' not found")
    if prefix is None:  # a non-contiguous mask: kept as it is (spec: model.MaskedNetwork)
        assert mask is not None
        if family is Family.IPV4:
            return MaskedIPv4Network(address, mask)
        return MaskedIPv6Network(address, mask)
    address &= ~((1 << (bits - prefix)) - 1) & full
    if family is Family.IPV4:
        return ipaddress.IPv4Network((address, prefix))
    return ipaddress.IPv6Network((address, prefix))


_V4_MASKS = tuple(ipaddress.IPv4Network((0, p)).netmask for p in range(33))


def _v4_network(value: int, prefix: int) -> ipaddress.IPv4Network:
    """``IPv4Network((value, prefix))`` for a value without host bits, built as its constructor builds it but
    without reading its argument again (a third of a big dump's parse went there)."""
    net = ipaddress.IPv4Network.__new__(ipaddress.IPv4Network)
    fields = net.__dict__
    fields["network_address"] = address = ipaddress.IPv4Address(value)
    fields["netmask"] = _V4_MASKS[prefix]
    fields["_prefixlen"] = prefix
    if prefix == 31:
        fields["hosts"] = net.__iter__
    elif prefix == 32:
        fields["hosts"] = lambda: [address]
    return net


# a word that can only be a host name (a letter in it; numeric forms were tried first)
_HOST_NAME = re.compile(r"(?=[^/]*[A-Za-z_])[A-Za-z0-9_.-]+")
_DEC = r"(0|[1-9][0-9]{0,2})"  # a leading 0 is octal for iptables: left to the general path
_PLAIN_V4 = re.compile(rf"{_DEC}\.{_DEC}\.{_DEC}\.{_DEC}(?:/(0|[1-9][0-9]?))?")


def _ipv6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def _iface(text: str) -> str:
    if len(text) >= IFNAMSIZ:
        raise RulesetError(f"interface name `{text}' must be shorter than {IFNAMSIZ} chars")
    return text


def _proto(text: str) -> str | None:
    low = text.lower()
    if low in PROTOCOLS:
        return PROTOCOLS[low]
    if low in KNOWN_PROTO_NAMES or (low.isdigit() and int(low) <= 255):
        return low
    raise RulesetError(f"unknown protocol \"{text}\" specified")


# The fixed header's flags → the Rule field each sets (and the field of its ``!``).
_HEADER = {"-s": "src", "--source": "src", "--src": "src", "-d": "dst", "--destination": "dst",
           "--dst": "dst", "-i": "in_iface", "--in-interface": "in_iface", "-o": "out_iface",
           "--out-interface": "out_iface", "-p": "proto", "--protocol": "proto"}
_HEADER_NEG = {"src": "src_neg", "dst": "dst_neg", "in_iface": "in_neg", "out_iface": "out_neg",
               "proto": "proto_neg"}


@dataclass(slots=True)
class _MatchBuilder:
    module: str
    options: list[Option] = field(default_factory=list)


def parse_rule_args(args: Sequence[str], family: Family = Family.IPV4, names: Names = DEFAULT_NAMES) -> Rule:
    """Parse a rule's arguments (everything after ``-A CHAIN``) into a normalised :class:`Rule`.

    Options are dispatched as iptables does: to the match currently being written, else to an
    already loaded match that owns the option, else to the match the protocol loads implicitly
    (``-p tcp --dport 80`` gains ``-m tcp``). Raises RulesetError naming the bad token, and for an address
    list (``-s a,b``: several rules, see :func:`parse_rules_args`)."""
    rules = parse_rules_args(args, family, names)
    if len(rules) > 1:
        raise RulesetError("several addresses (-s/-d a,b) make several rules; write one rule each")
    return rules[0]


def parse_rules_args(args: Sequence[str], family: Family = Family.IPV4,
                     names: Names = DEFAULT_NAMES) -> tuple[Rule, ...]:
    """:func:`parse_rule_args` for a command that may list addresses: ``-s a,b -d c,d`` is one rule per
    source and destination, sources outermost (a,c a,d b,c b,d: what ``iptables-save`` shows after it;
    verified), and none of them may be negated ("! not allowed with multiple source or destination IP
    addresses")."""
    return _parse_args(args, family, names, None)


def _parse_args(args: Sequence[str], family: Family, names: Names,
                roles: dict[int, tuple[object, ...]] | None) -> tuple[Rule, ...]:
    """:func:`parse_rules_args`; ``roles``, when given, is filled with what each value word became (for
    :class:`_Shape`): ``("hdr", field)``, ``("jump",)``, ``("mopt", match, option, arg)``, ``("topt", option,
    arg)``, and ``roles[-1]`` with the parts the rule was built from."""
    fields: dict[str, object] = {}
    several: dict[str, list[Network | None]] = {}
    matches: list[_MatchBuilder] = []
    target_name: str | None = None
    target_goto = False
    target_opts: list[Option] = []
    counters: tuple[int, int] | None = None
    negate = False
    i = 0
    n = len(args)

    def take(count: int) -> tuple[str, ...]:
        if i + 1 + count > n:
            raise RulesetError(f"option \"{args[i]}\" requires {count} argument{'s' * (count != 1)}")
        return tuple(args[i + 1 : i + 1 + count])

    def greedy() -> tuple[str, ...]:
        j = i + 1
        while j < n and not args[j].startswith("-") and args[j] != "!":
            j += 1
        return tuple(args[i + 1 : j])

    while i < n:
        tok = args[i]
        if tok == "!":
            if negate:
                raise RulesetError("multiple `!' flags not allowed")
            negate = True
            i += 1
            continue
        header = _HEADER.get(tok)
        if header is not None:
            (value,) = take(1)
            if roles is not None:
                roles[i + 1] = ("hdr", header)
            if header in fields:
                raise RulesetError(f"multiple {tok} flags not allowed")
            if header in ("src", "dst"):
                nets = _networks(value, family)
                if len(nets) > 1:
                    several[header] = [None if net.prefixlen == 0 else net for net in nets]
                net = nets[0]
                if net.prefixlen == 0 and not negate:  # "any": the kernel stores no address match
                    i += 2
                    fields[header] = None
                    continue
                fields[header] = net
            elif header == "proto":
                fields[header] = _proto(value)
            else:
                fields[header] = _iface(value)
            fields[_HEADER_NEG[header]] = negate
            negate = False
            i += 2
            continue
        if tok in ("-f", "--fragment"):
            if family is Family.IPV6:
                raise RulesetError("-f is IPv4 only")
            fields["fragment"] = not negate
            negate = False
            i += 1
            continue
        if tok in ("-m", "--match"):
            (module,) = take(1)
            if negate:
                raise RulesetError("cannot negate a match module; negate its options")
            matches.append(_MatchBuilder(module))
            i += 2
            continue
        if tok in ("-j", "--jump", "-g", "--goto"):
            (name,) = take(1)
            if target_name is not None:
                raise RulesetError("multiple -j flags not allowed")
            if not name or len(name) >= MAX_CHAIN_NAME or name.split() != [name]:  # no whitespace in it
                raise RulesetError(f"Invalid target name `{_shown(name)}'")
            target_name, target_goto = name, tok in ("-g", "--goto")
            if roles is not None:
                roles[i + 1] = ("jump",)
            i += 2
            continue
        if tok in ("-c", "--set-counters"):
            pkts, byts = take(2)
            if not (pkts.isdigit() and byts.isdigit()):
                raise RulesetError(f"-c takes two numbers (packets, bytes), not `{pkts} {byts}'")
            counters = (int(pkts), int(byts))
            i += 3
            continue
        if not tok.startswith("-"):
            raise RulesetError(f"Bad argument `{tok}'")
        # an extension option
        values: tuple[str, ...]
        if target_name is not None:
            known = TARGET_OPTIONS.get(target_name)
            values = take(known[tok]) if known is not None and tok in known else greedy()
            if roles is not None:
                roles.update((i + 1 + k, ("topt", len(target_opts), k)) for k in range(len(values)))
            target_opts.append(Option(tok, values, negate))
        else:
            owner = _owner_of(tok, matches, fields.get("proto"), family)
            if owner is None:
                raise RulesetError(f"unknown option \"{tok}\"")
            arity = option_arity(owner.module, tok)
            values = greedy() if arity is None else take(arity)
            if roles is not None:
                at = matches.index(owner), len(owner.options)
                roles.update((i + 1 + k, ("mopt", *at, k)) for k in range(len(values)))
            owner.options.append(Option(tok, values, negate))
        negate = False
        i += 1 + len(values)
    if negate:
        raise RulesetError("`!' at the end of the rule")
    if "proto" in fields and fields["proto"] is None and fields["proto_neg"]:
        raise RulesetError("rule would never match protocol")
    if "proto" in fields and fields["proto"] is None:
        del fields["proto"], fields["proto_neg"]
    for b in matches:  # iptables-nft turns tcp/udp options into nft payload matches, checking -p first
        if b.module in ("tcp", "udp") and b.options and fields.get("proto") != b.module:
            raise RulesetError(f"{b.module.upper()} match requires '-p {b.module}'")
    finished = [_finish_match(b, family, names) for b in matches]
    built = tuple(m for m in finished if m is not None)
    target = _normalized_target(target_name, tuple(target_opts), family, target_goto) if target_name else None
    rule = Rule(matches=built, target=target, counters=counters, **fields)  # type: ignore[arg-type]
    if roles is not None:
        roles[-1] = (fields, [(b.module, list(b.options)) for b in matches], finished,
                     [_plain(b.module, b.options, m) for b, m in zip(matches, finished, strict=True)], target_name,
                     target_goto, target_opts, target, counters)
    if not several:
        return (rule,)
    if fields.get("src_neg") or fields.get("dst_neg"):
        raise RulesetError("! not allowed with multiple source or destination IP addresses")
    return tuple(replace(rule, src=src, dst=dst) for src in several.get("src", (rule.src,))
                 for dst in several.get("dst", (rule.dst,)))


def _plain(module: str, options: Sequence[Option], done: Match | None) -> bool:
    """Whether the match is one option that normalises to itself (``-m comment --comment TEXT``): a rule of
    the same shape gets the match with its own text, without normalising it again."""
    spec = known_module(module)
    if spec is None or len(options) != 1 or spec.rewrite is not None or module in ("tcp", "udp", "statistic"):
        return False
    ospec = spec.lookup(options[0].name)
    return ospec is not None and ospec.normalize is same_value and len(options[0].args) == 1 and done is not None \
        and done.options == (Option(ospec.name, options[0].args, options[0].negated),)


def _owner_of(option: str, matches: list[_MatchBuilder], proto: object, family: Family) -> _MatchBuilder | None:
    if matches:
        current = matches[-1]
        if known_module(current.module) is None or option_arity(current.module, option) is not None:
            return current
    for m in reversed(matches):
        if option_arity(m.module, option) is not None:
            return m
    implicit = IMPLICIT_BY_PROTO.get(proto) if isinstance(proto, str) else None
    if implicit is not None and loadable(implicit, family) and option_arity(implicit, option) is not None:
        builder = _MatchBuilder(implicit)
        matches.append(builder)
        return builder
    return None


def _finish_match(m: _MatchBuilder, family: Family, names: Names) -> Match | None:
    try:
        return _normalized_match(m.module, tuple(m.options), names, family)
    except RulesetError as e:
        raise RulesetError(f"-m {m.module}: {e.message}") from None


# Rules of big dumps repeat their matches and targets (kube-proxy writes ``-m tcp --dport 80`` and
# ``-j KUBE-MARK-MASQ`` thousands of times): each distinct one is normalised once and shared, which
# saves both the time and the memory of equal copies. Values are immutable; errors are not cached.
_normalized_match = functools.lru_cache(maxsize=4096)(normalize_match)
_normalized_target = functools.lru_cache(maxsize=4096)(normalize_target)


# ------------------------------------------------------------------ rules of the same shape

# The words after these flags are values that never change how the rest of the rule is read (an address, an
# interface, a comment, a port, a NAT destination, a user chain): two rules that differ only there have the
# same shape. kube-proxy writes tens of thousands of rules in a handful of shapes.
_VALUE_FLAGS = frozenset({"-s", "--source", "--src", "-d", "--destination", "--dst", "-i", "--in-interface",
                          "-o", "--out-interface", "--comment", "--dport", "--sport", "--destination-port",
                          "--source-port", "--to-destination", "--to-source", "-j", "--jump", "-g", "--goto"})
_JUMPS = frozenset({"-j", "--jump", "-g", "--goto"})


@dataclass(slots=True)
class _Shape:
    """What a rule of one shape was built from (``_parse_args``' ``roles``), and where its values go: parse
    the shape once, then each rule of that shape only reads its own values (:meth:`fill`). Exact: a value word
    is taken only where the full parse took it as that value, and any error falls back to the full parse,
    so the same error is raised."""

    header: list[tuple[int, str]]  # (word, Rule field)
    match_args: list[tuple[int, int, int, int]]  # (word, match, option, argument)
    target_args: list[tuple[int, int, int]]  # (word, option, argument)
    jump: int | None  # the word naming the user chain jumped to
    fields: dict[str, object]
    raw: list[tuple[str, list[Option]]]  # each match's module and options as written
    finished: list[Match | None]  # each match normalised
    plain: list[bool]  # whether a match is one option normalised as written (a comment): rebuilt directly
    target_name: str | None
    goto: bool
    target_opts: list[Option]
    target: Target | None
    counters: tuple[int, int] | None
    compiled: Callable[[Sequence[str]], Rule] | None = None

    def fill(self, args: Sequence[str], family: Family, names: Names) -> Rule:
        """The rule of this shape with ``args``' values (RulesetError or _Unshaped if one does not fit)."""
        if self.compiled is None:
            self.compiled = self._compile(family, names)
        return self.compiled(args)

    def _compile(self, family: Family, names: Names) -> Callable[[Sequence[str]], Rule]:
        """:meth:`fill` as straight-line code for this shape (a dump has a handful of shapes and tens of
        thousands of rules): each value read where it goes, everything else a constant."""
        consts: dict[str, object] = {"_network": _network, "_iface": _iface, "_Unshaped": _Unshaped,
                                     "_Rule": _new_rule, "_Match": _new_match, "_Option": _new_option,
                                     "_finish": _refinish, "_sub": _substitute, "_target": _normalized_target,
                                     "family": family, "names": names, "MAXNAME": MAX_CHAIN_NAME}
        body = []
        kwargs = {name: f"K_{name}" for name in self.fields}
        consts.update({f"K_{name}": value for name, value in self.fields.items()})
        for index, name in self.header:
            if name in ("src", "dst"):
                negated = bool(self.fields.get(_HEADER_NEG[name]))
                body += [f"v = args[{index}]", "if ',' in v: raise _Unshaped",
                         f"h_{name} = _network(v, family)"]
                if not negated:  # "any" stores no address
                    body.append(f"if h_{name}.prefixlen == 0: h_{name} = None")
            else:
                body.append(f"h_{name} = _iface(args[{index}])")
            kwargs[name] = f"h_{name}"
        by_match: dict[int, list[tuple[int, int, int]]] = {}
        for index, m, o, a in self.match_args:
            by_match.setdefault(m, []).append((index, o, a))
        parts = []
        general = False
        for m, done in enumerate(self.finished):
            slots = by_match.get(m)
            if slots is None:
                if done is not None:
                    consts[f"M{m}"] = done
                    parts.append(f"M{m}")
                continue
            if self.plain[m]:
                assert done is not None
                consts[f"MOD{m}"], consts[f"ON{m}"] = done.module, done.options[0].name
                parts.append(f"_Match(MOD{m}, (_Option(ON{m}, (args[{slots[0][0]}],), "
                             f"{done.options[0].negated}),))")
                continue
            general = True
            module, options = self.raw[m]
            consts[f"MOD{m}"] = module
            opts = []
            for o, opt in enumerate(options):
                consts[f"O{m}_{o}"] = opt
                expr = f"O{m}_{o}"
                for index, so, a in slots:
                    if so == o:
                        expr = f"_sub({expr}, {a}, args[{index}])"
                opts.append(expr)
            # the match normalised once per distinct set of values (``--dport 80`` ten thousand times): a
            # dict of this shape's own, its family and names fixed (an error is not kept: the next rule of
            # those values raises it again)
            consts[f"MC{m}"] = {}
            key = "".join(f"args[{index}], " for index, _, _ in slots)
            body += [f"k = ({key})", f"m{m} = MC{m}.get(k)", f"if m{m} is None:",
                     f"    m{m} = MC{m}[k] = _finish(MOD{m}, ({', '.join(opts)},), family, names)"]
            parts.append(f"m{m}")
        matches = f"({', '.join(parts)},)" if parts else "()"
        if general:
            matches = f"tuple([m for m in {matches} if m is not None])"
        consts["TARGET"], consts["COUNTERS"] = self.target, self.counters
        target = "TARGET"
        if self.jump is not None or self.target_args:
            name = "TNAME"
            consts["TNAME"] = self.target_name
            if self.jump is not None:
                body += [f"t = args[{self.jump}]", "if len(t) >= MAXNAME or t.split() != [t]: raise _Unshaped"]
                name = "t"
            if not self.target_args:  # a jump to a user chain: one shared Target per chain, as parse_rule_args
                # per chain name, the family, goto and options fixed (an error is not kept); the options as
                # written (``-j CHAIN --opt x`` kept them in the full parse and lost them here)
                consts["TC"], consts["TOPTS"] = {}, tuple(self.target_opts)
                body += [f"tt = TC.get({name})", "if tt is None:",
                         f"    tt = TC[{name}] = _target({name}, TOPTS, family, {self.goto})"]
                target = "tt"
            else:
                opts = []
                for o, opt in enumerate(self.target_opts):
                    consts[f"T{o}"] = opt
                    expr = f"T{o}"
                    for index, so, a in self.target_args:
                        if so == o:
                            expr = f"_sub({expr}, {a}, args[{index}])"
                    opts.append(expr)
                target = f"_target({name}, ({''.join(e + ', ' for e in opts)}), family, {self.goto})"
        kwargs.update(matches=matches, target=target, counters="COUNTERS")
        for name, default in _RULE_DEFAULTS.items():
            if name not in kwargs:
                consts[f"D_{name}"] = default
        body.append(f"return _Rule({', '.join(kwargs.get(name, f'D_{name}') for name in _RULE_DEFAULTS)})")
        source = "def fill(args):\n" + "".join(f"    {line}\n" for line in body)
        exec(source, consts)  # code generated above from this shape's own fields
        return consts["fill"]  # type: ignore[return-value]

    @classmethod
    def make(cls, free: Sequence[int], roles: dict[int, tuple[object, ...]]) -> _Shape | None:
        """The shape of the rule whose parse recorded ``roles``, or None if a free word was not a value."""
        shape = cls([], [], [], None, *roles[-1])  # type: ignore[arg-type]
        for index in free:
            role = roles.get(index)
            if role is None:
                return None
            if role[0] == "hdr" and role[1] != "proto":
                shape.header.append((index, role[1]))  # type: ignore[arg-type]
            elif role[0] == "mopt":
                shape.match_args.append((index, *role[1:]))  # type: ignore[arg-type]
            elif role[0] == "topt":
                shape.target_args.append((index, *role[1:]))  # type: ignore[arg-type]
            elif role[0] == "jump":
                shape.jump = index
            else:
                return None
        return shape


def _positional(cls: type[Any]) -> Callable[..., Any]:
    """``cls(*values)`` for a frozen slots dataclass (every field given, in order), each slot set directly: its
    ``__init__`` sets each field through ``object.__setattr__``, which was a fifth of a big dump's parse. The
    same object: ``cls`` has no ``__post_init__`` (checked)."""
    assert "__post_init__" not in vars(cls) and "__slots__" in vars(cls)
    names = [f.name for f in fields(cls)]
    consts: dict[str, object] = {"new": object.__new__, "cls": cls}
    consts.update({f"S{i}": getattr(cls, name).__set__ for i, name in enumerate(names)})
    exec(f"def make({', '.join(names)}):\n    o = new(cls)\n"  # code generated from the class's own fields
         + "".join(f"    S{i}(o, {name})\n" for i, name in enumerate(names)) + "    return o\n", consts)
    return consts["make"]  # type: ignore[return-value]


_new_rule, _new_match, _new_option, _new_chain = map(_positional, (Rule, Match, Option, Chain))
_RULE_DEFAULTS = {f.name: f.default for f in fields(Rule)}


def _substitute(option: Option, at: int, value: str) -> Option:
    """``option`` with its argument ``at`` replaced by ``value``."""
    if option.args[at] == value:
        return option
    return Option(option.name, (*option.args[:at], value, *option.args[at + 1:]), option.negated)


def _refinish(module: str, options: tuple[Option, ...], family: Family, names: Names) -> Match | None:
    return _finish_match(_MatchBuilder(module, list(options)), family, names)


class _Unshaped(Exception):
    """A value the shape cannot take as it is (a list of addresses, a bad chain name): parse the rule whole."""


# shape key → its _Shape, or None for a shape whose values are not all where expected (parsed whole each time)
_ShapeCache = dict[tuple[str | None, ...], "_Shape | None"]


def _shape_key(args: Sequence[str]) -> tuple[tuple[str | None, ...], list[int]]:
    """The rule's words with its free values blanked, and where they were (see :data:`_VALUE_FLAGS`)."""
    free = [i for i, (prev, word) in enumerate(itertools.pairwise(args), 1) if prev in _VALUE_FLAGS and word
            and word[0] not in "-!" and not (prev in _JUMPS and is_extension_target(word))]
    if not free:
        return (), free
    key: list[str | None] = list(args)
    for i in free:
        key[i] = None
    return tuple(key), free


def _parse_shaped(args: Sequence[str], family: Family, names: Names, cache: _ShapeCache) -> tuple[Rule, ...]:
    """:func:`parse_rules_args` through the shape cache (``cache`` is one ruleset's: rules are read with one
    family and one ``names``)."""
    key, free = _shape_key(args)
    if not free:
        return _parse_args(args, family, names, None)
    if key not in cache:
        roles: dict[int, tuple[object, ...]] = {}
        rules = _parse_args(args, family, names, roles)
        if len(rules) == 1:
            cache[key] = _Shape.make(free, roles)
        return rules
    shape = cache[key]
    if shape is None:
        return _parse_args(args, family, names, None)
    try:
        return (shape.fill(args, family, names),)
    except (_Unshaped, RulesetError):
        return _parse_args(args, family, names, None)  # the full parse raises the error, or reads the list


# ------------------------------------------------------------------ restore / save text


@dataclass(slots=True)
class _TableState:
    """A table being built: chain headers (name, policy, counters) and their rules as lists (so that
    adding a rule costs O(1))."""

    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    rules: dict[str, list[Rule]] = field(default_factory=dict)
    # the built-in chains iptables-nft has made (declared, written to or given a policy); -Z refuses the others
    made: set[str] = field(default_factory=set)
    # each built-in chain's policy as the block began (what the kernel holds until the commit; -Z puts it back)
    held: dict[str, str] = field(default_factory=dict)

    def declare(self, chain: Chain) -> None:
        self.chains[chain.name] = Chain(chain.name, chain.policy, (), chain.counters) if chain.rules else chain
        self.rules[chain.name] = list(chain.rules)

    def insert(self, chain: str, rule: Rule, position: int | None) -> None:
        rules = self.rules.get(chain)
        if rules is None:
            raise RulesetError(f"chain `{chain}' does not exist in table `{self.name}'")
        if position is not None and position < 1:
            raise RulesetError(f"rule positions start at 1, not {position}")
        if position is not None and position > len(rules) + 1:
            raise RulesetError(f"index of insertion too big ({position} in {chain} of {len(rules)} rules)")
        if position is None:
            rules.append(rule)
        else:
            rules.insert(position - 1, rule)

    @staticmethod
    def find(rules: Sequence[Rule], rule: Rule) -> int | None:
        """The index of the first rule equal to ``rule`` (counters aside), as -D and -C look one up."""
        if rule.counters is not None:
            rule = replace(rule, counters=None)
        for k, r in enumerate(rules):
            if (r if r.counters is None else replace(r, counters=None)) == rule:
                return k
        return None

    def referenced(self, chain: str) -> bool:
        """Whether a rule of the table jumps or goes to ``chain``."""
        return any(r.target is not None and r.target.name == chain for rules in self.rules.values() for r in rules)

    def copy(self) -> _TableState:
        return _TableState(self.name, dict(self.chains), {c: list(r) for c, r in self.rules.items()}, set(self.made),
                           self.held)

    def freeze(self) -> Table:
        builtin = [self.chains[c] for c in BUILTIN_CHAINS[self.name] if c in self.chains]
        user = sorted((c for c in self.chains.values() if not c.builtin), key=lambda c: c.name)
        return Table(self.name, tuple(_new_chain(c.name, c.policy, tuple(self.rules[c.name]), c.counters)
                                      for c in builtin + user))


def _empty_table(name: str) -> _TableState:
    if name not in BUILTIN_CHAINS:
        raise RulesetError(f"table `{name}' does not exist")
    state = _TableState(name)
    for chain in BUILTIN_CHAINS[name]:
        state.declare(Chain(chain, "ACCEPT"))
    return state


def _table_order(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda t: TABLE_SAVE_ORDER.index(t) if t in TABLE_SAVE_ORDER else 99)


def _freeze(tables: dict[str, _TableState], order: list[str], family: Family) -> Ruleset:
    return Ruleset(family, tuple(tables[name].freeze() for name in order))


def _thaw(ruleset: Ruleset | None) -> tuple[dict[str, _TableState], list[str]]:
    if ruleset is None:
        return {}, []
    tables: dict[str, _TableState] = {}
    for table in ruleset.tables:
        state = tables[table.name] = _TableState(table.name)
        for chain in table.chains:
            state.declare(chain)
        state.made = {c.name for c in table.chains if c.builtin}
    return tables, [t.name for t in ruleset.tables]


def apply_payload(payload: RestorePayload, base: Ruleset | None = None) -> Ruleset:
    """Apply an ``iptables-restore --noflush`` payload to ``base`` (default: a fresh namespace).

    ``-N`` is implied by the first use of a user chain (the payload declares its chains); inserts go
    where they are executed, above any rules the chain already had, as the kernel does. Checked as the
    kernel checks each rule and then each table (``validate``)."""
    tables, order = _thaw(base)
    for op in payload.ops:
        if op.table not in tables:
            tables[op.table] = _empty_table(op.table)
            order.append(op.table)
        state = tables[op.table]
        for name in (op.chain, op.rule.target.name if op.rule.target is not None else None):
            if name is not None and name not in state.chains and not is_extension_target(name):
                state.declare(Chain(name))
        check_userspace(op.table, op.chain, op.rule)
        problem = rule_problem(op.table, op.chain, op.rule)
        if problem is not None:
            raise RulesetError(problem)
        state.insert(op.chain, op.rule, op.position)
    for name in order:
        problem = table_problem(name, tables[name].rules)
        if problem is not None:
            raise RulesetError(f"table {name}: {problem}")
    if base is None:
        order = _table_order(order)
    return _freeze(tables, order, payload.family)


def _shown(text: str) -> str:
    """A line of input as an error quotes it: one line (``\\r`` and the like escaped), at most 80 chars."""
    text = text.rstrip("\n").encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


class _Located(RulesetError):
    """An error already located at the line the kernel names (not always the line being read)."""


def _at(number: int, text: str, message: str) -> _Located:
    message = re.sub(r"[\x00-\x1f\x7f]", lambda m: m.group().encode("unicode_escape").decode("ascii"), message)
    if len(message) > 160:  # a message quoting a huge value
        message = message[:157] + "..."
    return _Located(f"line {number}: {message}: {_shown(text)}" if text.strip() else f"line {number}: {message}")


def _strtok(text: str) -> list[str]:
    """C's ``strtok(…, " \\t\\n")`` run to the end: words between blanks, tabs and newlines (a ``\\r``
    stays part of its word)."""
    return _words(text)


def _sscanf_counters(text: str) -> tuple[int, int] | None:
    """``sscanf(text, "[%llu:%llu]")`` == 2 (trailing text ignored), as iptables reads chain counters."""
    if text == "[0:0]":
        return 0, 0
    m = re.match(r"\[\s*([+-]?\d+):\s*([+-]?\d+)", text)
    return (int(m.group(1)) % 2**64, int(m.group(2)) % 2**64) if m else None


def _rule_counters(buf: str) -> tuple[str, tuple[int, int] | None]:
    """``tokenize_rule_counters``: a rule line may start with ``[packets:bytes]``; iptables-restore only
    checks that a ``:`` and a ``]`` are there (without ``--counters`` it ignores the values, so
    ``[a:b]`` loads). Returns the rest of the line and the counters when they are numbers."""
    if not buf.startswith("["):
        return buf, None
    close = buf.find("]")
    if close < 0:
        raise RulesetError("bad counters: need ]")
    body = buf[1:]
    start = len(body) - len(body.lstrip(":"))
    if start == len(body):
        raise RulesetError("bad counters: need :")
    colon = body.find(":", start)
    after = colon + 1 + len(body[colon + 1 :]) - len(body[colon + 1 :].lstrip("]"))
    if colon < 0 or after == len(body):
        raise RulesetError("bad counters: need ]")
    bracket = body.find("]", after)
    pkts, byts = body[start:colon], body[after : bracket if bracket >= 0 else len(body)]
    numbers = (int(pkts), int(byts)) if pkts.isdigit() and byts.isdigit() else None
    # strtok wrote NULs at that ':' and ']': the rule is read from after the first ']' to the next NUL
    ends = [p + 1 for p in (colon, bracket) if p >= 0 and p + 1 > close]
    return buf[close + 1 : min(ends, default=len(buf))], numbers


def _valid_chain_name(name: str) -> None:
    """iptables' ``assert_valid_chain_name`` (and restore's length check)."""
    if len(name) >= MAX_CHAIN_NAME:
        raise RulesetError(f"chain name `{_shown(name)}' too long (must be under {MAX_CHAIN_NAME} chars)")
    if name[0] in "-!":
        raise RulesetError(f"chain name not allowed to start with `{name[0]}'")
    if name in TARGET_OPTIONS or name in VERDICTS:
        raise RulesetError("chain name may not clash with target name")
    if name.split() != [name]:  # whitespace in it
        raise RulesetError(f"Invalid chain name `{_shown(name)}'")


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__, and a dump
class _Cmd:                # makes one per line (never changed once made)
    """A command iptables-restore queues until COMMIT; ``line`` says where it was written (the reader keeps
    the lines' text). ``kind``: ``chain`` (``:CHAIN``; policy None for a user chain), ``new`` (-N), ``rule``
    (-A, or -I at ``position``), ``delete`` (-D with a rule), ``delete-num`` (-D N), ``replace`` (-R N),
    ``check`` (-C), ``flush`` (-F), ``delchain`` (-X), ``policy`` (-P), ``zero`` (-Z); a ``chain`` of None
    is every chain of the table (-F, -X, -Z without one)."""

    line: int
    kind: str
    chain: str | None
    policy: str | None = None
    counters: tuple[int, int] | None = None
    rule: Rule | None = None
    position: int | None = None


# The commands iptables-restore runs besides -A/-I/-N (do_commandx takes any iptables command in a restore
# file): long and short spellings → the _Cmd kind.
_OTHER_COMMANDS = {"-D": "delete", "--delete": "delete", "-R": "replace", "--replace": "replace",
                   "-C": "check", "--check": "check", "-F": "flush", "--flush": "flush", "-X": "delchain",
                   "--delete-chain": "delchain", "-P": "policy", "--policy": "policy", "-Z": "zero",
                   "--zero": "zero"}
# add_argv's MAX_ARGC (255) less the program name, -t and the table iptables-restore puts first, and
# add_param_to_argv's 1024-byte parameter buffer (verified: 251 words load, 252 do not; 1023 characters do,
# 1024 do not).
MAX_WORDS = 251
MAX_WORD = 1023
# fgets into iptables-restore's 10,240-byte buffer: a longer line is read as several lines, each counted.
MAX_LINE = 10239
_INT_MAX = 2**31 - 1


def _rule_number(text: str) -> int:
    """``parse_rulenumber``: 1 to INT_MAX in any C base."""
    number = strtoui(text, _INT_MAX)
    if number is None or number < 1:
        raise RulesetError(f"Invalid rule number `{_shown(text)}'")
    return number


def _operand(tokens: Sequence[str], i: int) -> str | None:
    """The optional argument of a command at ``tokens[i]`` (getopt's: a word not starting with - or !)."""
    return tokens[i] if i < len(tokens) and tokens[i][:1] not in ("-", "!") else None


def _command(tokens: list[str], table: str, family: Family, names: Names,
             counters: tuple[int, int] | None, number: int, shapes: _ShapeCache) -> list[_Cmd]:
    """One restore line's command (phase 1: what iptables checks while it reads the line)."""
    cmd = tokens[0]
    if cmd == "-A" and len(tokens) > 2 and tokens[1][:1] not in ("-", "!"):  # the common case, as below
        appended = []
        for rule in _parse_shaped(tokens[2:], family, names, shapes):
            if counters is not None:
                rule = replace(rule, counters=counters)
            check_userspace(table, tokens[1], rule)
            appended.append(_Cmd(number, "rule", tokens[1], rule=rule))
        return appended
    if cmd in ("-N", "--new-chain") and len(tokens) == 2:
        _valid_chain_name(tokens[1])
        return [_Cmd(number, "new", tokens[1])]
    kind = "rule" if cmd in _RULE_COMMANDS else _OTHER_COMMANDS.get(cmd)
    if kind is None:
        raise RulesetError("unknown command (expected -A, -I, -D, -R, -C, -N, -F, -X, -P, -Z, :CHAIN or COMMIT)")
    chain = _operand(tokens, 1)
    if kind in ("flush", "delchain", "zero", "policy"):
        rest = tokens[1 + (chain is not None):]
        position = None
        policy = None
        if kind == "policy":
            policy = _operand(tokens, 2)
            if chain is None or policy is None:
                raise RulesetError("-P requires a chain and a policy")
            rest = tokens[3:]
            if rest[:1] in (["-c"], ["--set-counters"]) and len(rest) == 3:
                rest = []  # "-P CHAIN POLICY -c P B" loads (the counters are not kept)
            if table == "nat" and policy == "DROP":
                raise RulesetError('the "nat" table is not intended for filtering, the use of DROP is therefore '
                                   'inhibited')
        elif kind == "zero" and chain is not None and _operand(tokens, 2) is not None:
            position = _rule_number(tokens[2])
            rest = tokens[3:]
        if rest:
            raise RulesetError(f"Bad argument `{_shown(rest[0])}'" if rest[0][:1] not in ("-", "!")
                               else f"Illegal option `{_shown(rest[0])}' with this command")
        return [_Cmd(number, kind, chain, policy=policy, position=position)]
    if chain is None:
        raise RulesetError(f"{cmd} needs a chain")
    args = tokens[2:]
    position = None
    if kind == "rule" and cmd in ("-I", "--insert"):
        position = 1
        if (text := _operand(tokens, 2)) is not None:
            position, args = _rule_number(text), tokens[3:]
    elif kind == "replace" or (kind == "delete" and _operand(tokens, 2) is not None):
        text = _operand(tokens, 2)
        if text is None:
            raise RulesetError(f"{cmd} needs a rule number")
        position, args = _rule_number(text), tokens[3:]
        if kind == "delete":
            if args:
                raise RulesetError(f"Illegal option `{_shown(args[0])}' with -D and a rule number")
            return [_Cmd(number, "delete-num", chain, position=position)]
    rules = _parse_shaped(args, family, names, shapes)
    if kind == "replace" and len(rules) > 1:
        raise RulesetError("Replacement rule does not specify a unique address")
    out = []
    for rule in rules:
        if counters is not None:
            rule = replace(rule, counters=counters)
        check_userspace(table, chain, rule)
        out.append(_Cmd(number, kind, chain, rule=rule, position=position))
    return out


def _apply(state: _TableState, cmd: _Cmd, line_of: Callable[[int], str], commit_line: int,
           noflush: bool) -> str | None:
    """Run one queued command on ``state`` as ``nft_prepare`` does (phase 2), raising a located error for
    what iptables refuses there; returns why the kernel's batch will refuse it (phase 3), if it will.

    ``-F`` without a chain in a restore without ``--noflush`` (whose table was flushed as the block began)
    leaves the rules: iptables-nft 1.8.9 flushes nothing more there, not even the rules the same block
    wrote before it (verified); with ``--noflush`` it empties every chain, and ``-F CHAIN`` always empties
    that chain. ``-Z`` of a built-in chain puts back the policy it had when the block began (iptables-nft
    re-sends the chain as it holds it: ``-P INPUT DROP`` then ``-Z`` leaves ACCEPT; verified).
    Not modelled: after such a ``-F`` or any ``-X``, iptables-restore 1.8.9 loses sight of the
    rules the block wrote before them (verified: a later ``-D``/``-C`` of one says "Bad rule", ``-D N`` and
    ``-R N`` say "No chain" or crash); netsim keeps seeing them, as the commands are documented."""

    chain = cmd.chain

    def fail(message: str, line: int = cmd.line) -> _Located:
        return _at(line, line_of(line), message)

    if chain is not None and cmd.kind in ("chain", "rule", "replace", "policy") and chain in state.chains:
        state.made.add(chain)
    if cmd.kind == "chain" and cmd.policy is not None:
        assert chain is not None
        if cmd.policy not in ("ACCEPT", "DROP", "-"):
            raise fail(f"bad policy `{_shown(cmd.policy)}' (Bad policy name)")
        old = state.chains[chain]
        policy = old.policy if cmd.policy == "-" else cmd.policy
        state.chains[chain] = replace(old, policy=policy, counters=cmd.counters or (0, 0))
        return None
    if cmd.kind == "chain":
        assert chain is not None
        if chain not in state.chains:
            state.declare(Chain(chain, None, (), cmd.counters or (0, 0)))
        return None
    if cmd.kind == "new":
        assert chain is not None
        if chain in state.chains:
            raise fail(f"chain `{chain}' already exists")
        state.declare(Chain(chain))
        return None
    if chain is not None and chain not in state.rules:
        raise fail(f"chain `{chain}' does not exist in table `{state.name}' (No chain/target/match by that name)")
    rules = state.rules[chain] if chain is not None else []
    if cmd.kind in ("rule", "replace"):
        assert cmd.rule is not None and chain is not None
        target = cmd.rule.target
        if target is not None and target.name not in state.chains and (
                target.goto or not is_extension_target(target.name)):
            raise fail(f"Chain '{target.name}' does not exist (the jump on line {cmd.line}; iptables-restore "
                       f"names the COMMIT line)", commit_line)
        if cmd.kind == "replace":
            assert cmd.position is not None
            if cmd.position > len(rules):
                raise fail(f"Index of replacement too big (rule {cmd.position} of {len(rules)} in {chain})")
            rules[cmd.position - 1] = cmd.rule
            return None
        try:
            state.insert(chain, cmd.rule, cmd.position)
        except RulesetError as e:
            raise fail(e.message) from None
    elif cmd.kind in ("delete", "check"):
        assert cmd.rule is not None
        found = state.find(rules, cmd.rule)
        if found is None:
            raise fail(f"Bad rule (does a matching rule exist in {chain}?)")
        if cmd.kind == "delete":
            del rules[found]
    elif cmd.kind == "delete-num":
        assert cmd.position is not None
        if cmd.position > len(rules):
            raise fail(f"Index of deletion too big (rule {cmd.position} of {len(rules)} in {chain})")
        del rules[cmd.position - 1]
    elif cmd.kind == "flush" and (chain is not None or noflush):
        for name in [chain] if chain is not None else list(state.rules):
            state.rules[name].clear()
    elif cmd.kind == "policy":
        assert chain is not None and cmd.policy is not None
        old = state.chains[chain]
        if old.policy is None:
            raise fail(f"Bad built-in chain name `{chain}' (-P sets the policy of a built-in chain)")
        if cmd.policy not in ("ACCEPT", "DROP"):
            raise fail(f"bad policy `{_shown(cmd.policy)}' (Bad policy name)")
        state.chains[chain] = replace(old, policy=cmd.policy)
    elif cmd.kind == "zero":
        if chain is not None and state.chains[chain].builtin and chain not in state.made:
            raise fail(f"chain `{chain}' does not exist in table `{state.name}' (iptables-nft makes a built-in "
                       f"chain when it is declared or written to; No chain/target/match by that name)")
        names = [chain] if chain is not None else list(state.rules)
        if cmd.position is not None and cmd.position > len(rules):
            raise fail(f"Index of rule too big (rule {cmd.position} of {len(rules)} in {chain})")
        for name in names:
            if cmd.position is None:
                state.chains[name] = replace(state.chains[name], counters=(0, 0))
                if state.chains[name].builtin:  # iptables-nft re-sends the chain with the policy it had
                    state.chains[name] = replace(state.chains[name], policy=state.held.get(name, "ACCEPT"))
            for k, rule in enumerate(state.rules[name]):
                if rule.counters is not None and (cmd.position is None or k == cmd.position - 1):
                    state.rules[name][k] = replace(rule, counters=(0, 0))
    elif cmd.kind == "delchain":
        # the kernel refuses to delete a chain that holds rules, is jumped to, or is built in (EBUSY, verified)
        busy = None
        for name in [chain] if chain is not None else [c for c, h in state.chains.items() if not h.builtin]:
            if busy is None and (state.rules[name] or state.chains[name].builtin or state.referenced(name)):
                busy = f"CHAIN_DEL failed (Device or resource busy): chain {name}"
            del state.chains[name], state.rules[name]
        return busy
    return None


def _first_kernel_failure(before: _TableState, batch: Sequence[tuple[_Cmd, str | None]], after: _TableState,
                          line_of: Callable[[int], str], commit_line: int, noflush: bool) -> tuple[_Cmd, str] | None:
    """The command the kernel names first (phase 3), with why. The batch adds the rules one by one and refuses
    those it cannot initialise on their own (wrong table, a built-in chain's own hook, …) and chain deletions
    it cannot do (busy); only a batch without such errors reaches the commit, where the table is validated,
    and on failure the batch is replayed validating after every rule, which names the first rule after which
    the table is invalid. (Verified: that holds in a namespace whose last commit succeeded; after a failed
    validation and until the next successful commit, the kernel validates from the start and names the
    earlier of the two.) Adding rules only makes validation worse, so without deletions in the batch the
    first failing prefix is found by bisection; with them, by trying each prefix in turn."""
    table = after.name
    if all(busy is None for _, busy in batch) and loads(table, after.rules):
        return None
    adds = []  # indexes in ``batch`` of the commands that add a rule
    for i, (cmd, busy) in enumerate(batch):
        if busy is not None:
            return cmd, busy
        if cmd.kind in ("rule", "replace"):
            assert cmd.rule is not None and cmd.chain is not None
            problem = rule_problem(table, cmd.chain, cmd.rule)
            if problem is not None:
                return cmd, problem
            adds.append(i)
    if table_problem(table, after.rules) is None:
        return None

    def prefix(k: int) -> _TableState:
        """The table after the batch up to its k-th added rule."""
        state = before.copy()
        for cmd, _ in batch[: adds[k - 1] + 1] if k else ():
            _apply(state, cmd, line_of, commit_line, noflush)
        return state

    if any(cmd.kind not in ("rule", "chain", "new", "check") for cmd, _ in batch):
        high = next(k for k in range(1, len(adds) + 1) if table_problem(table, prefix(k).rules) is not None)
    else:
        low, high = 0, len(adds)  # prefix(low) is valid, prefix(high) is not
        while high - low > 1:
            mid = (low + high) // 2
            if table_problem(table, prefix(mid).rules) is None:
                low = mid
            else:
                high = mid
    return batch[adds[high - 1]][0], table_problem(table, prefix(high).rules) or ""


@dataclass(slots=True)
class _Restore:
    """``xtables_restore_parse``: reads line by line and commits table by table, each phase naming the
    line iptables-restore names (``validate``'s docstring)."""

    tables: dict[str, _TableState]
    order: list[str]
    family: Family
    names: Names
    noflush: bool
    text: str  # the whole input, for errors naming a queued command's line
    current: str | None = None
    cmds: list[_Cmd] = field(default_factory=list)
    shapes: _ShapeCache = field(default_factory=dict)

    def line_text(self, number: int) -> str:
        for k, (_, chunk) in enumerate(_chunks(self.text), 1):
            if k == number:
                return chunk
        return ""

    def line(self, number: int, buf: str) -> None:
        if buf[:1] == "-" and self.current is not None:  # a rule line, most of a dump: as the last branch below
            self.rule_line(number, buf)
            return
        if buf.startswith("\n") or buf.startswith("#"):
            return
        if self.current is not None and buf.startswith("COMMIT") and buf[6:] in ("", "\n"):
            self.commit(number)
        elif buf.startswith("*") and self.current is None:
            words = _strtok(buf[1:])
            if not words:
                raise RulesetError("table name invalid")
            if words[0] not in BUILTIN_CHAINS:
                raise RulesetError(f"table name '{_shown(words[0])}' invalid")
            self.start(words[0])
        elif self.current is None:
            raise RulesetError("not in a table (a `*table' line must come first)")
        elif buf.startswith(":"):
            self.chain_line(number, buf)
        else:
            self.rule_line(number, buf)

    def start(self, name: str) -> None:
        if not (self.noflush and name in self.tables):
            if name not in self.tables:
                self.order.append(name)
            self.tables[name] = _empty_table(name)
        self.current = name
        state = self.tables[name]
        state.held = {c.name: c.policy for c in state.chains.values() if c.policy is not None}

    def chain_line(self, number: int, buf: str) -> None:
        words = _strtok(buf[1:])
        if not words:
            raise RulesetError("chain name invalid")
        _valid_chain_name(words[0])
        if len(words) < 2:
            raise RulesetError("policy invalid")
        assert self.current is not None
        builtin = words[0] in BUILTIN_CHAINS[self.current]
        counters = _sscanf_counters(words[2]) if len(words) > 2 else None
        # a user chain's policy and counters are ignored ("-" by convention, anything loads)
        self.cmds.append(_Cmd(number, "chain", words[0], words[1] if builtin else None, counters))

    def rule_line(self, number: int, buf: str) -> None:
        rest, counters = _rule_counters(buf)
        tokens = tokenize(rest)
        if not tokens:
            raise RulesetError("no command specified")
        if len(tokens) > MAX_WORDS:
            raise RulesetError(f"Parser cannot handle more arguments ({len(tokens)} words; iptables-restore "
                               f"reads at most {MAX_WORDS})")
        if len(rest) > MAX_WORD and max(map(len, tokens)) > MAX_WORD:
            raise RulesetError(f"Parameter too long! (a word of more than {MAX_WORD} characters)")
        if not tokens[0].startswith("-"):
            raise RulesetError(f"Bad argument `{_shown(tokens[0])}'")
        assert self.current is not None
        self.cmds += _command(tokens, self.current, self.family, self.names, counters, number, self.shapes)

    def commit(self, number: int) -> None:
        """Phase 2 (queued commands in order) and phase 3 (the kernel's batch) for the current table."""
        assert self.current is not None
        state = self.tables[self.current]
        before = state.copy()
        batch: list[tuple[_Cmd, str | None]] = []
        chains, rules_of, made = state.chains, state.rules, state.made
        for cmd in self.cmds:
            # the two commands most of a dump is, as _apply does them (inline: a call per line cost ~15 ms of 40,007)
            if cmd.kind == "rule" and cmd.position is None:  # -A into an existing chain, its target there
                rules = rules_of.get(cmd.chain)  # type: ignore[arg-type]
                target = cmd.rule.target  # type: ignore[union-attr]
                if rules is not None and (target is None or target.name in chains or (
                        not target.goto and is_extension_target(target.name))):
                    made.add(cmd.chain)  # type: ignore[arg-type]
                    rules.append(cmd.rule)  # type: ignore[arg-type]
                    batch.append((cmd, None))
                    continue
            elif cmd.kind == "chain" and cmd.policy is None and cmd.chain is not None and cmd.chain not in chains:
                chains[cmd.chain] = _new_chain(cmd.chain, None, (), cmd.counters or (0, 0))  # a new user chain
                rules_of[cmd.chain] = []
                batch.append((cmd, None))
                continue
            batch.append((cmd, _apply(state, cmd, self.line_text, number, self.noflush)))
        self.cmds = []
        self.current = None
        failed = _first_kernel_failure(before, batch, state, self.line_text, number, self.noflush)
        if failed is not None:
            cmd, problem = failed
            raise _at(cmd.line, self.line_text(cmd.line), problem)


def _chunks(text: str) -> Iterator[tuple[int, str]]:
    """The lines iptables-restore reads, each with its "\\n" (the last may have none): ``fgets`` into a
    10,240-byte buffer, so a line longer than :data:`MAX_LINE` is read as several, each counted (verified:
    the part after 10,239 characters is parsed as a line of its own). Yields (offset, line) lazily."""
    start = 0
    size = len(text)
    while start < size:
        end = text.find("\n", start) + 1 or size
        if end - start > MAX_LINE:
            end = start + MAX_LINE
        yield start, text[start:end]
        start = end


def parse_ruleset(text: str, family: Family | None = None, names: Names = DEFAULT_NAMES,
                  base: Ruleset | None = None, noflush: bool = False) -> Ruleset:
    """Parse ``iptables-save`` output (or any ``iptables-restore`` input) into a Ruleset, accepting exactly
    what ``iptables-restore`` (1.8.9, nf_tables) loads and naming the line it names (``validate``).

    ``family`` defaults to :func:`guess_family`. Without ``noflush`` every table named in the text starts
    empty, as ``iptables-restore`` does. Lines end at ``\\n`` only: a ``\\r`` before it is part of the line,
    as it is for iptables-restore. Raises RulesetError with ``line N: …`` and the offending text."""
    with gc_paused():
        return _parse_ruleset(text, family, names, base, noflush)


def _parse_ruleset(text: str, family: Family | None, names: Names, base: Ruleset | None,
                   noflush: bool) -> Ruleset:
    if family is None:
        family = guess_family(text)
    tables, order = _thaw(base)
    reader = _Restore(tables, order, family, names, noflush, text)
    number = 0
    for number, (_, buf) in enumerate(_chunks(text), 1):
        try:
            reader.line(number, buf)
        except _Located:
            raise
        except RulesetError as e:
            raise _at(number, buf, e.message) from None
    if reader.current is not None:
        raise RulesetError(f"line {number + 1}: COMMIT expected (table `{reader.current}' is not committed "
                           f"at the end of the input)")
    return _freeze(tables, order, family)


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: str


def _lines(text: str) -> Iterable[_Line]:
    """Non-blank lines, stripped (for Istio's dry-run payloads, which are not restore files)."""
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            yield _Line(number, stripped)


def guess_family(text: str) -> Family:
    """IPv6 for ``ip6tables-save`` output (its header comment says so) or when an ``-s``/``-d`` address in
    the text is IPv6; else IPv4. A dump without addresses and without its header is ambiguous: callers
    that know the family (an ``ip6tables-save`` file, ``--ipv6``) pass it instead of guessing."""
    if "ip6tables-" not in text and _V6_ADDRESS_FLAG.search(text) is None:
        return Family.IPV4  # neither can hold (the search is what the loop below looks for, loosened)
    for raw in text.splitlines():
        if raw.startswith("#"):
            if "ip6tables-save" in raw or "ip6tables-restore" in raw:
                return Family.IPV6
            continue
        toks = raw.split()
        for flag, value in itertools.pairwise(toks):
            if flag in ("-s", "-d", "--source", "--destination", "--src", "--dst") and ":" in value:
                return Family.IPV6
    return Family.IPV4


_V6_ADDRESS_FLAG = re.compile(r"(?:-s|-d|--source|--destination|--src|--dst)\s+\S*:")
_RULE_COMMANDS = frozenset({"-A", "--append", "-I", "--insert"})
_PROBES = {"iptables-save": Family.IPV4, "ip6tables-save": Family.IPV6}


def _rule_command(tokens: Sequence[str]) -> tuple[str, list[str], int | None]:
    """``-A CHAIN args…`` / ``-I CHAIN [n] args…`` → (chain, args, None or the 1-based position)."""
    if len(tokens) < 2:
        raise RulesetError(f"{tokens[0]} needs a chain")
    chain, rest = tokens[1], list(tokens[2:])
    if tokens[0] not in ("-I", "--insert"):
        return chain, rest, None
    if rest and rest[0].isdigit():
        return chain, rest[1:], int(rest[0])
    return chain, rest, 1


def parse_payload(text: str, family: Family, names: Names = DEFAULT_NAMES) -> RestorePayload:
    """Parse one ``iptables-restore --noflush`` payload (e.g. from Istio's dry-run output) into ops."""
    payloads = _parse_payloads(text, names, family)
    if len(payloads) > 1:
        raise RulesetError("more than one payload (a table name that does not increase starts another)")
    return payloads[0] if payloads else RestorePayload(family)


def parse_dry_run(text: str, names: Names = DEFAULT_NAMES) -> tuple[RestorePayload, RestorePayload | None]:
    """Parse Istio's dry-run format (its capture goldens): probe lines, the IPv4 restore payload, then the
    IPv6 one if IPv6 was on. As the conformance README says, a table name that does not come after the
    previous one alphabetically starts the next payload. Raises RulesetError with the line."""
    payloads = _parse_payloads(text, names, None)
    if len(payloads) > 2:
        raise RulesetError(f"{len(payloads)} restore payloads; Istio writes one per address family")
    v4 = payloads[0] if payloads else RestorePayload(Family.IPV4)
    return v4, payloads[1] if len(payloads) == 2 else None


def _parse_payloads(text: str, names: Names, family: Family | None) -> list[RestorePayload]:
    """Split restore text into payloads (probe lines skipped) and parse their rules; the n-th payload is
    IPv4 then IPv6 unless ``family`` fixes it."""
    blocks: list[list[tuple[str, list[tuple[int, str]]]]] = []  # payload → [(table, [(line no, text)])]
    table: str | None = None
    for line in _lines(text):
        try:
            if line.text in _PROBES and table is None:
                continue
            if line.text.startswith("*"):
                if table is not None:
                    raise RulesetError(f"table `{table}' was not committed")
                table = line.text[1:].strip()
                if not blocks or blocks[-1][-1][0] >= table:
                    blocks.append([])
                blocks[-1].append((table, []))
            elif table is None:
                raise RulesetError("no table given (a `* table' line must come first)")
            elif line.text == "COMMIT":
                table = None
            else:
                blocks[-1][-1][1].append((line.number, line.text))
        except RulesetError as e:
            raise RulesetError(f"line {line.number}: {e.message}: {line.text}") from None
    if table is not None:
        raise RulesetError(f"table `{table}' has no COMMIT at the end of the input")
    payloads = []
    for index, block in enumerate(blocks):
        fam = family or (Family.IPV4 if index == 0 else Family.IPV6)
        ops: list[RuleOp] = []
        for tname, lines in block:
            for number, line_text in lines:
                try:
                    tokens = tokenize(line_text)
                    if tokens and tokens[0] in ("-N", "--new-chain") and len(tokens) == 2:
                        continue  # declared by first use (model.RestorePayload)
                    if not tokens or tokens[0] not in _RULE_COMMANDS:
                        raise RulesetError("expected -N, -A or -I in a restore payload")
                    chain, rest, position = _rule_command(tokens)
                    ops.append(RuleOp(table=tname, chain=chain, args=tuple(rest),
                                      rule=parse_rule_args(rest, fam, names), position=position))
                except RulesetError as e:
                    raise RulesetError(f"line {number}: {e.message}: {line_text}") from None
        payloads.append(RestorePayload(fam, tuple(ops)))
    return payloads


_COMMAND_BINARIES = {"iptables": Family.IPV4, "ip6tables": Family.IPV6}
_CLEANUP_COMMANDS = frozenset({"-D", "--delete", "-F", "--flush", "-X", "--delete-chain", "-N", "--new-chain"})


def parse_command_log(text: str, names: Names = DEFAULT_NAMES) -> tuple[RestorePayload, RestorePayload | None]:
    """Parse a log of ``iptables``/``ip6tables`` commands (Istio's per-command goldens of 1.5–1.23 and the
    1.0–1.4 script's recorded run) into the IPv4 and, if any ``ip6tables`` rule is there, IPv6 payload.

    Each ``[ip6]tables [-t T] -A|-I CHAIN …`` is a rule op in log order; ``-N`` declares by first use
    (``model.RestorePayload``); ``-D``/``-F``/``-X`` are skipped: in these logs they are the cleanup run
    first on a namespace that has no ISTIO chains, or a flush of a chain that is still empty. Every other
    line (environment dump, ``ip`` commands, ``iptables-save``) is not a rule. RulesetError names the line.
    """
    ops: dict[Family, list[RuleOp]] = {Family.IPV4: [], Family.IPV6: []}
    for line in _lines(text):
        tokens = tokenize(line.text)
        if not tokens or tokens[0] not in _COMMAND_BINARIES:
            continue
        family = _COMMAND_BINARIES[tokens[0]]
        try:
            rest, table = tokens[1:], "filter"
            if len(rest) >= 2 and rest[0] in ("-t", "--table"):
                table, rest = rest[1], rest[2:]
            if not rest or rest[0] in _CLEANUP_COMMANDS:
                continue
            if rest[0] not in _RULE_COMMANDS:
                raise RulesetError(f"expected -N, -A, -I, -D, -F or -X, not {rest[0]}")
            chain, args, position = _rule_command(rest)
            ops[family].append(RuleOp(table=table, chain=chain, args=tuple(args),
                                      rule=parse_rule_args(args, family, names), position=position))
        except RulesetError as e:
            raise RulesetError(f"line {line.number}: {e.message}: {line.text}") from None
    v6 = RestorePayload(Family.IPV6, tuple(ops[Family.IPV6])) if ops[Family.IPV6] else None
    return RestorePayload(Family.IPV4, tuple(ops[Family.IPV4])), v6


__all__ = [
    "apply_payload",
    "guess_family",
    "parse_command_log",
    "parse_dry_run",
    "parse_payload",
    "parse_rule_args",
    "parse_rules_args",
    "parse_ruleset",
    "tokenize",
]
