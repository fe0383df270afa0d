"""An iptables rule as ``nft list ruleset`` (and so ``nft monitor trace``) prints it when iptables-nft wrote it.

iptables-nft (1.8.9) turns the fixed header and the matches it knows into native expressions and keeps the
rest as ``xt match NAME`` / ``xt target NAME``; nft then lists them in its own words, with quirks of their
own: interfaces first, ``meta l4proto`` before the addresses unless a ``-m tcp``/``-m udp`` port makes it
implicit, owner matches as ``skuid``/``skgid`` without ``meta``, a ``--set-xmark`` mark unpadded, a
``--mark`` match padded and a connmark match not, ``ct state`` in the rule's own order, and a counter on
every rule. Checked against the kernel's listing of every Istio dump in the conformance corpus
(tests/netfilter/test_nft_kernel_differential.py). What this module does not know prints as iptables'
own ``xt`` wording, which is what nft prints for an extension it does not translate.

Never does IO; knows no Istio name.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

from netsim.netfilter.model import Match, Rule, Target
from netsim.netfilter.render import inet_ntop

_FULL = 0xFFFFFFFF
# targets iptables-nft writes as native statements
_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return", "QUEUE": "queue"}


def _net(net: IPv4Network | IPv6Network) -> str:
    addr = inet_ntop(net.network_address)
    return addr if net.prefixlen == net.max_prefixlen else f"{addr}/{net.prefixlen}"


def _neg(neg: bool) -> str:
    return "!= " if neg else ""


def _ports(text: str) -> str:
    return text.replace(":", "-")


def _value_mask(text: str) -> tuple[int, int]:
    value, _, mask = text.partition("/")
    return int(value, 0), int(mask, 0) if mask else _FULL


def _match(m: Match, proto: str | None) -> list[str] | None:
    """A match's words, or None when iptables-nft keeps it as ``xt match``."""
    out: list[str] = []
    for o in m.options:
        arg = o.args[0] if o.args else ""
        if m.module in ("tcp", "udp") and o.name in ("--dport", "--sport"):
            out.append(f"{m.module} {o.name[2:]} {_neg(o.negated)}{_ports(arg)}")
        elif m.module == "multiport" and o.name in ("--dports", "--sports") and proto in ("tcp", "udp"):
            ports = [_ports(p) for p in arg.split(",")]
            listed = ports[0] if len(ports) == 1 else "{ " + ", ".join(ports) + " }"
            out.append(f"{proto} {o.name[2:-1]} {_neg(o.negated)}{listed}")
        elif m.module == "owner" and o.name in ("--uid-owner", "--gid-owner"):
            out.append(f"{'skuid' if o.name == '--uid-owner' else 'skgid'} {_neg(o.negated)}{_ports(arg)}")
        elif m.module == "mark" and o.name == "--mark":
            value, mask = _value_mask(arg)
            if mask != _FULL:
                return None
            out.append(f"meta mark {_neg(o.negated)}0x{value:08x}")
        elif m.module == "connmark" and o.name == "--mark":
            value, mask = _value_mask(arg)
            if mask != _FULL:
                return None
            out.append(f"ct mark {_neg(o.negated)}{value:#x}")
        elif m.module in ("conntrack", "state") and o.name in ("--ctstate", "--state"):
            out.append(f"ct state {_neg(o.negated)}{arg.lower()}")
        elif m.module == "comment":
            continue
        else:
            return None
    return out


def _target(t: Target | None) -> str:
    if t is None:
        return ""
    if t.name in _VERDICTS:
        return _VERDICTS[t.name]
    if t.name == "REJECT":
        return "xt target REJECT"
    opt = t.option("--to-ports")
    if t.name == "REDIRECT":
        return f"redirect to :{_ports(opt.args[0])}" if opt is not None else "redirect"
    if t.name == "MASQUERADE":
        return f"masquerade to :{_ports(opt.args[0])}" if opt is not None else "masquerade"
    if t.name == "MARK" and t.options and t.options[0].name == "--set-xmark":
        value, mask = _value_mask(t.options[0].args[0])
        if mask == _FULL:
            return f"meta mark set {value:#x}"
    if t.name == "CONNMARK" and t.options and t.options[0].name in ("--restore-mark", "--save-mark"):
        masks = {o.name: int(o.args[0], 0) for o in t.options[1:] if o.args}
        if all(v == _FULL for v in masks.values()):
            return "meta mark set ct mark" if t.options[0].name == "--restore-mark" else "ct mark set mark"
    from netsim.netfilter.targets import is_extension_target

    if not is_extension_target(t.name):
        return f"{'goto' if t.goto else 'jump'} {t.name}"
    return f"xt target {t.name}"


def iptables_nft_text(rule: Rule) -> str:
    """``rule`` as nft lists it after iptables-nft (or iptables-restore of the nft variant) loaded it."""
    words: list[str] = []
    if rule.in_iface is not None:
        words.append(f'iifname {_neg(rule.in_neg)}"{rule.in_iface.replace("+", "*")}"')
    if rule.out_iface is not None:
        words.append(f'oifname {_neg(rule.out_neg)}"{rule.out_iface.replace("+", "*")}"')
    proto = rule.proto
    implicit = proto is not None and not rule.proto_neg and any(
        m.module == proto and any(o.name in ("--dport", "--sport") for o in m.options) for m in rule.matches)
    if proto is not None and not implicit:
        words.append(f"meta l4proto {_neg(rule.proto_neg)}{proto}")
    v6 = isinstance(rule.src or rule.dst, IPv6Network)
    l3 = "ip6" if v6 else "ip"
    if rule.src is not None:
        words.append(f"{l3} saddr {_neg(rule.src_neg)}{_net(rule.src)}")
    if rule.dst is not None:
        words.append(f"{l3} daddr {_neg(rule.dst_neg)}{_net(rule.dst)}")
    for m in rule.matches:
        got = _match(m, proto)
        words += got if got is not None else [f"xt match {m.module}"]
    words.append("counter packets 0 bytes 0")
    target = _target(rule.target)
    if target:
        words.append(target)
    return " ".join(words)


__all__ = ["iptables_nft_text"]
