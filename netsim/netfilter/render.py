"""Printing rulesets exactly as ``iptables-save`` (iptables 1.8.9, nf_tables backend) prints them.

Fixed header order ``-s -d -i -o -p -f``, then matches in their order with each module's options in
save order, then ``-j``/``-g``; a ``!`` precedes what it negates; strings are quoted the way
``xtables_save_string`` quotes them. Parsing (``parse.py``) and rendering round-trip: the text of any
``iptables-save`` dump comes back unchanged (comment lines aside). Never parses, never does IO.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from netsim.netfilter.model import Chain, MaskedNetwork, Match, Network, Option, Rule, Ruleset, Table, Target

_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Options whose argument iptables prints through xtables_save_string.
_STRING_OPTIONS = frozenset({"--comment", "--log-prefix", "--nflog-prefix"})


def save_string(value: str) -> str:
    """Quote like ``xtables_save_string``: bare if only ``[A-Za-z0-9_-]``, else in double quotes
    with ``"``, ``\\`` and ``'`` escaped by a backslash."""
    if value and all(ch in _NO_QUOTE for ch in value):
        return value
    escaped = "".join("\\" + ch if ch in "\"\\'" else ch for ch in value)
    return f'"{escaped}"'


def inet_ntop(address: IPv4Address | IPv6Address) -> str:
    """An address as glibc's ``inet_ntop`` prints it (which iptables uses): like Python's text except
    that IPv4-compatible and IPv4-mapped IPv6 addresses end in dotted quad (``::127.0.0.53``)."""
    if isinstance(address, IPv4Address):
        return str(address)
    packed = address.packed
    if packed[:10] == bytes(10):
        if packed[10:12] == b"\xff\xff":
            return "::ffff:" + str(IPv4Address(packed[12:]))
        if packed[10:12] == bytes(2) and packed[12:14] != bytes(2):
            return "::" + str(IPv4Address(packed[12:]))
    return str(address)


def format_network(net: Network) -> str:
    if isinstance(net, MaskedNetwork):  # a non-contiguous mask is printed as a mask, not a length
        return f"{inet_ntop(net.network_address)}/{inet_ntop(net.netmask)}"
    return f"{inet_ntop(net.network_address)}/{net.prefixlen}"


def _option(opt: Option) -> list[str]:
    out = ["!"] if opt.negated else []
    out.append(opt.name)
    if opt.name in _STRING_OPTIONS:
        out.extend(save_string(a) for a in opt.args)
    else:
        out.extend(opt.args)
    return out


def match_tokens(match: Match) -> list[str]:
    out = ["-m", match.module]
    for opt in match.options:
        out.extend(_option(opt))
    return out


def target_tokens(target: Target) -> list[str]:
    out = ["-g" if target.goto else "-j", target.name]
    for opt in target.options:
        out.extend(_option(opt))
    return out


def rule_tokens(rule: Rule) -> list[str]:
    """The rule's arguments as iptables-save prints them (without ``-A CHAIN``)."""
    out: list[str] = []
    for flag, value, neg in (("-s", rule.src, rule.src_neg), ("-d", rule.dst, rule.dst_neg),
                             ("-i", rule.in_iface, rule.in_neg), ("-o", rule.out_iface, rule.out_neg),
                             ("-p", rule.proto, rule.proto_neg)):
        if value is not None:
            text = format_network(value) if isinstance(value, IPv4Network | IPv6Network) else str(value)
            out.extend(["!", flag, text] if neg else [flag, text])
    if rule.fragment is not None:
        out.extend(["-f"] if rule.fragment else ["!", "-f"])
    for match in rule.matches:
        out.extend(match_tokens(match))
    if rule.target is not None:
        out.extend(target_tokens(rule.target))
    return out


def render_rule(chain: str, rule: Rule, counters: bool = False) -> str:
    """One ``-A CHAIN …`` line; with ``counters`` prefixed by ``[packets:bytes]`` like ``iptables-save -c``."""
    line = " ".join(["-A", chain, *rule_tokens(rule)])
    if counters:
        pkts, byts = rule.counters or (0, 0)
        line = f"[{pkts}:{byts}] {line}"
    return line


def _chain_header(chain: Chain) -> str:
    pkts, byts = chain.counters
    return f":{chain.name} {chain.policy or '-'} [{pkts}:{byts}]"


def render_table(table: Table, counters: bool = False) -> str:
    lines = [f"*{table.name}"]
    lines.extend(_chain_header(c) for c in table.chains)
    for chain in table.chains:
        lines.extend(render_rule(chain.name, r, counters) for r in chain.rules)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_save(ruleset: Ruleset, counters: bool = False) -> str:
    """The whole ruleset as ``iptables-save`` prints it (without its ``#`` comment lines)."""
    return "".join(render_table(t, counters) for t in ruleset.tables)


__all__ = [
    "format_network",
    "inet_ntop",
    "match_tokens",
    "render_rule",
    "render_save",
    "render_table",
    "rule_tokens",
    "save_string",
    "target_tokens",
]
