"""Reading ruleset text: ``iptables-save`` dumps, ``iptables-restore`` input and Istio's dry-run format.

Text becomes the typed model of ``model.py`` here, and nowhere else. Tokens are normalised the way
iptables normalises them before the kernel stores them (``matches.py``, ``targets.py``), so a parsed
rule renders back exactly as ``iptables-save`` prints it.

Errors are raised as :class:`RulesetError` with the line number and the offending text; the caller
adds the file name (``err.at(path)``). Nothing here does IO.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from netsim.errors import RulesetError
from netsim.netfilter.matches import (
    DEFAULT_NAMES,
    IMPLICIT_BY_PROTO,
    Names,
    known_module,
    normalize_match,
    option_arity,
)
from netsim.netfilter.model import (
    BUILTIN_CHAINS,
    Chain,
    Family,
    Match,
    Network,
    Option,
    RestorePayload,
    Rule,
    RuleOp,
    Ruleset,
    Table,
)
from netsim.netfilter.targets import TARGET_OPTIONS, is_extension_target, normalize_target
from netsim.netfilter.validate import check_rule, hooks_of, reach

# Protocol numbers iptables-save prints by name (/etc/protocols names; "all" is printed as nothing).
PROTOCOLS = {
    "0": None, "all": None, "1": "icmp", "2": "igmp", "4": "ipencap", "6": "tcp", "17": "udp",
    "41": "ipv6", "47": "gre", "50": "esp", "51": "ah", "58": "ipv6-icmp", "89": "ospf", "103": "pim",
    "112": "vrrp", "132": "sctp", "136": "udplite", "icmpv6": "ipv6-icmp",
}
KNOWN_PROTO_NAMES = {v for v in PROTOCOLS.values() if v} | {"mh", "dccp"}

# The order in which the nf_tables backend of iptables-save prints tables of a fresh ruleset.
TABLE_SAVE_ORDER = ("mangle", "raw", "filter", "nat", "security")
IFNAMSIZ = 16


def tokenize(line: str) -> list[str]:
    """Split a rule line like iptables-restore: on blanks, with ``"…"`` quoting and ``\\"``/``\\\\``
    escapes inside quotes. Single quotes are not special (iptables-restore rejects them later)."""
    tokens: list[str] = []
    cur: list[str] = []
    in_quote = False
    have = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_quote:
            if ch == "\\" and i + 1 < len(line) and line[i + 1] in '"\\\'':
                cur.append(line[i + 1])
                i += 1
            elif ch == '"':
                in_quote = False
            else:
                cur.append(ch)
        elif ch == '"':
            in_quote = have = True
        elif ch in " \t\r\n":
            if have:
                tokens.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(ch)
            have = True
        i += 1
    if in_quote:
        raise RulesetError("unterminated quoted string")
    if have:
        tokens.append("".join(cur))
    return tokens


def _network(text: str, family: Family) -> Network:
    if "," in text:
        raise RulesetError(f"several addresses (`{text}') make several rules; write one rule each")
    addr, sep, plen = text.partition("/")
    try:
        if sep and "." in plen:  # dotted netmask, e.g. 10.0.0.0/255.255.0.0
            net: Network = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
        else:
            net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise RulesetError(f"host/network `{text}' not found") from None
    if (net.version == 4) != (family is Family.IPV4):
        raise RulesetError(f"`{text}' is not an IPv{family.value} address")
    return net


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


@dataclass(slots=True)
class _MatchBuilder:
    module: str
    options: list[Option] = field(default_factory=list)


def parse_rule_args(args: Sequence[str], family: Family = Family.IPV4, names: Names = DEFAULT_NAMES) -> Rule:
    """Parse a rule's arguments (everything after ``-A CHAIN``) into a normalised :class:`Rule`.

    Options are dispatched as iptables does: to the match currently being written, else to an
    already loaded match that owns the option, else to the match the protocol loads implicitly
    (``-p tcp --dport 80`` gains ``-m tcp``). Raises RulesetError naming the bad token."""
    fields: dict[str, object] = {}
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
        header = {"-s": "src", "--source": "src", "--src": "src", "-d": "dst", "--destination": "dst",
                  "--dst": "dst", "-i": "in_iface", "--in-interface": "in_iface", "-o": "out_iface",
                  "--out-interface": "out_iface", "-p": "proto", "--protocol": "proto"}.get(tok)
        if header is not None:
            (value,) = take(1)
            if header in fields:
                raise RulesetError(f"multiple {tok} flags not allowed")
            if header in ("src", "dst"):
                fields[header] = _network(value, family)
            elif header == "proto":
                fields[header] = _proto(value)
            else:
                fields[header] = _iface(value)
            fields[f"{header.split('_')[0]}_neg" if header.endswith("iface") else f"{header}_neg"] = negate
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
            target_name, target_goto = name, tok in ("-g", "--goto")
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
            target_opts.append(Option(tok, values, negate))
        else:
            owner = _owner_of(tok, matches, fields.get("proto"))
            if owner is None:
                raise RulesetError(f"unknown option \"{tok}\"")
            arity = option_arity(owner.module, tok)
            values = greedy() if arity is None else take(arity)
            owner.options.append(Option(tok, values, negate))
        negate = False
        i += 1 + len(values)
    if negate:
        raise RulesetError("`!' at the end of the rule")
    if "proto" in fields and fields["proto"] is None:
        del fields["proto"], fields["proto_neg"]
    built = tuple(m for m in (_finish_match(b, family, names) for b in matches) if m is not None)
    target = normalize_target(target_name, target_opts, family, target_goto) if target_name else None
    return Rule(matches=built, target=target, counters=counters, **fields)  # type: ignore[arg-type]


def _owner_of(option: str, matches: list[_MatchBuilder], proto: object) -> _MatchBuilder | None:
    if matches:
        current = matches[-1]
        if known_module(current.module) is None or option_arity(current.module, option) is not None:
            return current
    for m in reversed(matches):
        if option_arity(m.module, option) is not None:
            return m
    implicit = IMPLICIT_BY_PROTO.get(proto) if isinstance(proto, str) else None
    if implicit is not None and option_arity(implicit, option) is not None:
        builder = _MatchBuilder(implicit)
        matches.append(builder)
        return builder
    return None


def _finish_match(m: _MatchBuilder, family: Family, names: Names) -> Match | None:
    try:
        return normalize_match(m.module, m.options, names, family)
    except RulesetError as e:
        raise RulesetError(f"-m {m.module}: {e.message}") from None


# ------------------------------------------------------------------ restore / save text


@dataclass(slots=True)
class _TableState:
    """A table being built: chain headers (name, policy, counters), their rules as lists (so that adding a
    rule costs O(1)), and which hooks each user chain is reachable from (for ``validate``)."""

    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    rules: dict[str, list[Rule]] = field(default_factory=dict)
    known: dict[str, frozenset[str]] = field(default_factory=dict)

    def declare(self, chain: Chain) -> None:
        self.chains[chain.name] = replace(chain, rules=())
        self.rules[chain.name] = list(chain.rules)

    def insert(self, chain: str, rule: Rule, position: int | None) -> None:
        rules = self.rules.get(chain)
        if rules is None:
            raise RulesetError(f"chain `{chain}' does not exist in table `{self.name}'")
        if position is not None and position < 1:
            raise RulesetError(f"rule positions start at 1, not {position}")
        if position is not None and position > len(rules) + 1:
            raise RulesetError(f"index of insertion too big ({position} in {chain} of {len(rules)} rules)")
        check_rule(self.name, chain, rule, hooks_of(self.name, chain, self.known))
        if position is None:
            rules.append(rule)
        else:
            rules.insert(position - 1, rule)
        self.follow(chain, rule)

    def follow(self, chain: str, rule: Rule) -> None:
        """A jump makes its target reachable from the hooks its chain is reachable from."""
        if rule.target is not None and rule.target.name in self.rules:
            hooks = hooks_of(self.name, chain, self.known)
            if hooks:
                reach(self.name, self.rules, rule.target.name, hooks, self.known)

    def freeze(self) -> Table:
        builtin = [self.chains[c] for c in BUILTIN_CHAINS[self.name] if c in self.chains]
        user = sorted((c for c in self.chains.values() if not c.builtin), key=lambda c: c.name)
        return Table(self.name, tuple(replace(c, rules=tuple(self.rules[c.name])) for c in builtin + user))


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
        for chain in table.chains:
            if chain.builtin:
                for rule in chain.rules:
                    state.follow(chain.name, rule)
    return tables, [t.name for t in ruleset.tables]


def _check_targets(tables: dict[str, _TableState]) -> None:
    for tname, state in tables.items():
        for rules in state.rules.values():
            for rule in rules:
                t = rule.target
                if t is None or t.name in state.chains or (not t.goto and is_extension_target(t.name)):
                    continue
                raise RulesetError(f"Couldn't load target `{t.name}': no such chain in table `{tname}'")


def apply_payload(payload: RestorePayload, base: Ruleset | None = None) -> Ruleset:
    """Apply an ``iptables-restore --noflush`` payload to ``base`` (default: a fresh namespace).

    ``-N`` is implied by the first use of a user chain (the payload declares its chains); inserts go
    where they are executed, above any rules the chain already had, as the kernel does."""
    tables, order = _thaw(base)
    for op in payload.ops:
        if op.table not in tables:
            tables[op.table] = _empty_table(op.table)
            order.append(op.table)
        state = tables[op.table]
        for name in (op.chain, op.rule.target.name if op.rule.target is not None else None):
            if name is not None and name not in state.chains and not is_extension_target(name):
                state.declare(Chain(name))
        state.insert(op.chain, op.rule, op.position)
    if base is None:
        order = _table_order(order)
    return _freeze(tables, order, payload.family)


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: str


def _lines(text: str) -> Iterable[_Line]:
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            yield _Line(number, stripped)


def _counters(text: str) -> tuple[int, int]:
    if not (text.startswith("[") and text.endswith("]") and ":" in text):
        raise RulesetError(f"bad counters `{text}'")
    pkts, _, byts = text[1:-1].partition(":")
    try:
        return int(pkts), int(byts)
    except ValueError:
        raise RulesetError(f"bad counters `{text}'") from None


def parse_ruleset(text: str, family: Family | None = None, names: Names = DEFAULT_NAMES,
                  base: Ruleset | None = None, noflush: bool = False) -> Ruleset:
    """Parse ``iptables-save`` output (or any ``iptables-restore`` input) into a Ruleset.

    ``family`` defaults to the one the addresses in the text use (IPv4 if none). Without
    ``noflush`` every table named in the text starts empty, as ``iptables-restore`` does.
    Raises RulesetError with ``line N: …`` and the offending text."""
    if family is None:
        family = guess_family(text)
    tables, order = _thaw(base)
    current: str | None = None
    for line in _lines(text):
        try:
            current = _apply_line(line.text, current, tables, order, family, names, noflush)
        except RulesetError as e:
            raise RulesetError(f"line {line.number}: {e.message}: {line.text}") from None
    if current is not None:
        raise RulesetError(f"table `{current}' has no COMMIT at the end of the input")
    try:
        _check_targets(tables)
    except RulesetError as e:
        raise RulesetError(e.message) from None
    return _freeze(tables, order, family)


def _apply_line(text: str, current: str | None, tables: dict[str, _TableState], order: list[str],
                family: Family, names: Names, noflush: bool) -> str | None:
    if text.startswith("*"):
        if current is not None:
            raise RulesetError(f"table `{current}' was not committed")
        name = text[1:].strip()
        if noflush and name in tables:
            return name
        fresh = _empty_table(name)
        if name not in tables:
            order.append(name)
        tables[name] = fresh
        return name
    if text == "COMMIT":
        if current is None:
            raise RulesetError("COMMIT outside a table")
        return None
    if current is None:
        raise RulesetError("no table given (a `*table' line must come first)")
    state = tables[current]
    if text.startswith(":"):
        parts = text[1:].split()
        if len(parts) not in (2, 3):
            raise RulesetError("bad chain line, expected `:CHAIN POLICY [packets:bytes]'")
        name, policy = parts[0], parts[1]
        chain_counters = _counters(parts[2]) if len(parts) == 3 else (0, 0)
        if name in BUILTIN_CHAINS[current]:
            if policy not in ("ACCEPT", "DROP"):
                raise RulesetError(f"bad policy `{policy}' for built-in chain {name}")
            old = state.chains.get(name, Chain(name, policy))
            state.chains[name] = replace(old, policy=policy, counters=chain_counters)
        else:
            if policy != "-":
                raise RulesetError(f"user chain {name} cannot have a policy")
            state.declare(Chain(name, None, (), chain_counters))
        return current
    counters: tuple[int, int] | None = None
    if text.startswith("["):
        head, _, text = text.partition(" ")
        counters = _counters(head)
    tokens = tokenize(text)
    cmd = tokens[0] if tokens else ""
    if cmd in ("-N", "--new-chain") and len(tokens) == 2:
        if tokens[1] in state.chains:
            raise RulesetError(f"chain `{tokens[1]}' already exists")
        state.declare(Chain(tokens[1]))
        return current
    if cmd in _RULE_COMMANDS:
        chain, rest, position = _rule_command(tokens)
        rule = parse_rule_args(rest, family, names)
        if counters is not None:
            rule = replace(rule, counters=counters)
        state.insert(chain, rule, position)
        return current
    raise RulesetError("unknown command (expected -A, -I, -N, :CHAIN or COMMIT)")


def guess_family(text: str) -> Family:
    """IPv6 if any ``-s``/``-d`` address in the text is IPv6, else IPv4."""
    for line in _lines(text):
        toks = line.text.split()
        for flag, value in itertools.pairwise(toks):
            if flag in ("-s", "-d", "--source", "--destination") and ":" in value:
                return Family.IPV6
    return Family.IPV4


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


__all__ = [
    "apply_payload",
    "guess_family",
    "parse_dry_run",
    "parse_payload",
    "parse_rule_args",
    "parse_ruleset",
    "tokenize",
]
