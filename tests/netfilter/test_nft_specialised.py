"""The nft compiler's one-call forms (evaluate.SPECIALISE: single-value and set checks read straight off the
walker's state, a value under a mask, the protocol, an interface's name, ``ct state`` bits, exact verdict maps,
a concatenated key in one expression, constant verdicts, no ``meta nfproto`` dependency in a table of that
family) trace exactly as the general forms do: seeded random rulesets and packets, every step compared, with and
without the full explanation."""

from __future__ import annotations

import random
from collections.abc import Iterator
from ipaddress import ip_address

import pytest
from conftest import CONFORMANCE
from kube_proxy_nft import cluster_ip, kube_proxy_nft

from netsim.netfilter.engine import trace
from netsim.netfilter.model import Family
from netsim.netfilter.nft import compile_nft, evaluate, parse_nft
from netsim.netfilter.packet import Conntrack, CtState, Listener, Netns, Origin, Packet, Proto, Socket

NS = Netns.pod("10.0.0.5/24", "fd00::5/64", listeners=(Listener(port=8080),))
V4 = ["10.0.0.5", "10.0.0.9", "10.1.2.3", "127.0.0.1", "172.30.0.1", "192.168.0.2"]
V6 = ["fd00::5", "fd00::9", "::1", "fd01::3"]
PORTS = [22, 53, 80, 443, 8080, 15001]


def _v4(rng: random.Random) -> str:
    a = rng.choice(V4)
    return a if rng.random() < 0.6 else f"{a.rsplit('.', 1)[0]}.0/{rng.choice([8, 16, 24])}"


def _match(rng: random.Random, fam: str, jumps: bool) -> str:
    """One match; ``jumps``: verdict maps too (they jump to chain x: not in x or y themselves)."""
    neg = "!= " if rng.random() < 0.3 else ""
    choices = [
        lambda: f"tcp dport {neg}{rng.choice(PORTS)}",
        lambda: f"udp sport {neg}{rng.choice(PORTS)}",
        lambda: f"th dport {neg}{{ {rng.choice(PORTS)}, {rng.choice(PORTS)} }}",
        lambda: f"tcp dport {neg}{(lo := rng.choice(PORTS))}-{lo + rng.choice([0, 100, 30000])}",
        lambda: f"meta mark {neg}0x{rng.choice([0, 1, 0x539, 0x4000]):x}",
        lambda: f"ct state {neg}{rng.choice(['new', 'established', 'related', 'invalid', 'untracked'])}",
        lambda: f"ct state {neg}{{ established, related }}",
        lambda: f"meta l4proto {neg}{rng.choice(['tcp', 'udp', 'icmp'])}",
        lambda: f"oifname {neg}{rng.choice(['lo', 'eth0'])}",
        lambda: f"iifname {neg}{rng.choice(['lo', 'eth0', 'eth*'])}",
        lambda: f"meta mark & 0x{rng.choice([0xfff, 0x539, 0xffffffff]):08x} {neg}0x{rng.choice([0, 0x111, 0x539]):x}",
        lambda: f"meta l4proto {neg}{{ {rng.choice(['tcp', 'udp', 'icmp'])}, {rng.choice(['tcp', 'sctp'])} }}",
        lambda: f"skuid {neg}{rng.choice([0, 1000, 1337])}",
    ]
    if jumps:
        choices.append(lambda: f"meta l4proto . th dport vmap {{ tcp . {rng.choice(PORTS)} : jump x, udp . 53 : drop }}"
                       if rng.random() < 0.5 else "meta l4proto . th dport vmap { tcp . 80 : goto y }")
    if fam in ("ip", "inet"):
        choices += [
            lambda: f"ip daddr {neg}{_v4(rng)}",
            lambda: f"ip saddr {neg}{_v4(rng)}",
            lambda: f"ip daddr {neg}{{ {rng.choice(V4)}, {rng.choice(V4)} }}",
            lambda: f"ip daddr {neg}{{ {rng.choice(V4)}, {_v4(rng)} }}",
            lambda: f"ip daddr {neg}@s4",
            lambda: f"ip daddr . tcp dport {neg}{{ {rng.choice(V4)} . {rng.choice(PORTS)} }}",
        ]
        if jumps:
            choices.append(lambda: "ip daddr . meta l4proto . th dport vmap @m4")
    if fam in ("ip6", "inet"):
        choices += [
            lambda: f"ip6 daddr {neg}{rng.choice(V6)}",
            lambda: f"ip6 saddr {neg}fd00::/64",
            lambda: f"ip6 daddr {neg}{{ {rng.choice(V6)}, {rng.choice(V6)} }}",
        ]
    return rng.choice(choices)()


def _rule(rng: random.Random, fam: str, verdicts: list[str]) -> str:
    jumps = "jump x" in verdicts
    parts = [_match(rng, fam, jumps) for _ in range(rng.randint(0, 3))]
    if not any("vmap" in p for p in parts):
        parts.append(rng.choice(verdicts))
    return " ".join(parts)


def _ruleset(rng: random.Random) -> str:
    out = []
    for fam, name in (("ip", "t4"), ("ip6", "t6"), ("inet", "ti")):
        sets = ""
        if fam in ("ip", "inet"):
            sets = (f"  set s4 {{ type ipv4_addr; elements = {{ {', '.join(rng.sample(V4, 3))} }} }}\n"
                    "  map m4 { type ipv4_addr . inet_proto . inet_service : verdict; "
                    f"elements = {{ {rng.choice(V4)} . tcp . {rng.choice(PORTS)} : jump x, "
                    f"{rng.choice(V4)} . udp . 53 : drop }} }}\n")
        final = ["accept", "drop", "return", "counter", "meta mark set 0x7"]
        body = "".join(f"   {_rule(rng, fam, final)}\n" for _ in range(rng.randint(1, 4)))
        chains = f"  chain x {{\n{body}  }}\n  chain y {{\n   {_rule(rng, fam, final)}\n  }}\n"
        for hook in ("output", "prerouting", "input"):
            rules = "".join(f"   {_rule(rng, fam, [*final, 'jump x', 'goto y'])}\n" for _ in range(rng.randint(1, 5)))
            chains += (f"  chain {hook} {{\n   type filter hook {hook} priority {rng.choice([-150, 0, 10])}; "
                       f"policy {rng.choice(['accept', 'accept', 'drop'])};\n{rules}  }}\n")
        out.append(f"table {fam} {name} {{\n{sets}{chains}}}\n")
    return "".join(out)


def _packets(rng: random.Random, n: int) -> Iterator[Packet]:
    for _ in range(n):
        v6 = rng.random() < 0.35
        proto = rng.choice([Proto.TCP, Proto.TCP, Proto.UDP, Proto.ICMP])
        ct = Conntrack(state=rng.choice([CtState.NEW, CtState.NEW, CtState.ESTABLISHED]))
        dst = ip_address(rng.choice(V6 if v6 else V4))
        port = rng.choice(PORTS) if proto is not Proto.ICMP else 0
        if rng.random() < 0.5:
            src = ip_address("fd00::5" if v6 else "10.0.0.5")
            uid = rng.choice([0, 1000, 1337])
            mark = rng.choice([0, 0, 0x539, 0x111, 0x1539])
            yield Packet(family=Family.IPV6 if v6 else Family.IPV4, proto=proto, src=src, dst=dst, sport=40000,
                         dport=port, socket=Socket(uid=uid, gid=uid), mark=mark, ct=ct)
        else:
            src = ip_address(rng.choice(["fd01::3", "fd00::9"] if v6 else ["10.1.2.3", "10.0.0.9"]))
            yield Packet(family=Family.IPV6 if v6 else Family.IPV4, proto=proto, src=src,
                         dst=ip_address("fd00::5" if v6 else "10.0.0.5") if rng.random() < 0.7 else dst, sport=40000,
                         dport=port, origin=Origin.ARRIVING, in_iface="eth0", ct=ct)


def _same(text: str, packets: list[Packet], monkeypatch: pytest.MonkeyPatch) -> int:
    rs = parse_nft(text)
    compared = 0
    for explain in (True, False):
        traces = {}
        for specialise in (True, False):  # rules compile when a trace first meets them: trace under each setting
            monkeypatch.setattr(evaluate, "SPECIALISE", specialise)
            compiled = {f: compile_nft(rs, f) for f in Family}
            traces[specialise] = [trace(compiled[p.family], p, NS, explain=explain) for p in packets]
        for p, fast, general in zip(packets, traces[True], traces[False], strict=True):
            assert fast == general, (text, p)
            compared += 1
    return compared


@pytest.mark.parametrize("seed", range(12))
def test_random_rulesets_trace_the_same_specialised_or_not(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    for _ in range(4):
        assert _same(_ruleset(rng), list(_packets(rng, 60)), monkeypatch) == 120


def test_kube_proxy_and_istio_rulesets_trace_the_same_specialised_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    packets = [Packet(src=ip_address(rng.choice(["10.0.0.5", "10.1.2.3"])), dst=ip_address(cluster_ip(i)),
                      sport=40000, dport=rng.choice([80, 81]), socket=Socket(uid=1000, gid=1000)) for i in range(60)]
    _same(kube_proxy_nft(60), packets, monkeypatch)
    istio = (CONFORMANCE / "istio-iptables" / "inbound-ports-include.nftables.golden").read_text()
    _same(istio, list(_packets(rng, 300)), monkeypatch)
