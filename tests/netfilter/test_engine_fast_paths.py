"""The trace engine's shortcuts give what the plain code gives (issue 16's ambient speed work).

Each shortcut is checked against the straightforward code it replaces, on seeded random probes through the
ambient rulesets (Istio's ambient golden read back from iptables-nft and nft, and ``rules/ambient/shop.yaml``
compiled) and a sidecar's (``rules/mtls-503``): the per-namespace listener index (``_NsInfo.listen``) against a
scan of ``Netns.listeners`` in order, a plain verdict's constant (``_CRule.const``) against calling its action, and
the per-namespace primary addresses (``_NsInfo.primary``) against ``Netns.primary_address``.
"""

from __future__ import annotations

import dataclasses
import random
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from conftest import CONFORMANCE

from netsim.netfilter import engine
from netsim.netfilter.model import Family
from netsim.netfilter.packet import Interface, Listener, Netns, Origin, Packet, Proto, Socket
from netsim.workload import Workload

REPO = Path(__file__).resolve().parent.parent.parent
KERNEL = CONFORMANCE / "istio-ambient" / "kernel"
POD, PEER, REMOTE, SNAT = (IPv4Address(a) for a in ("10.244.0.5", "10.1.2.3", "10.96.0.10", "169.254.7.127"))
PORTS = [53, 80, 443, 8080, 15001, 15006, 15008, 15053, 15090]


def _workloads() -> dict[str, Workload]:
    if not KERNEL.is_dir():
        pytest.skip(f"conformance data not found at {KERNEL} (set NETSIM_CONFORMANCE)")
    pod = [str(POD)]
    return {
        "ambient iptables-nft": Workload.from_rules([str(KERNEL / "iptables" / "default_ipv6.iptables-save")],
                                                    pod_ips=pod).as_ambient(),
        "ambient nft": Workload.from_rules([], nft_paths=[str(KERNEL / "nftables" / "default_ipv6.nft-list")],
                                           pod_ips=pod).as_ambient(),
        "ambient shop.yaml": Workload.from_pod(str(REPO / "rules" / "ambient" / "shop.yaml"), pod_ips=pod),
        "sidecar": Workload.from_rules([str(REPO / "rules" / "mtls-503" / "current.iptables-save")], pod_ips=pod),
    }


def _probes(rng: random.Random, n: int) -> list[Packet]:
    out = []
    for _ in range(n):
        proto = rng.choice([Proto.TCP, Proto.TCP, Proto.UDP])
        port = rng.choice([*PORTS, rng.randrange(1, 65536)])
        if rng.random() < 0.5:
            mark = rng.choice([0, 0, 0x539, 0x111])
            dst = rng.choice([REMOTE, POD, IPv4Address("127.0.0.1"), SNAT])
            src = dst if dst.is_loopback else POD
            out.append(Packet(proto=proto, src=src, dst=dst, sport=40000, dport=port, mark=mark,
                              socket=Socket(uid=rng.choice([0, 1000, 1337]), gid=1000)))
        else:
            out.append(Packet(proto=proto, src=rng.choice([PEER, PEER, SNAT]), dst=POD, sport=40000, dport=port,
                              origin=Origin.ARRIVING, in_iface="eth0", socket=None))
    return out


def _scan(st: engine._State, addr: int, port: int, proto: str) -> Listener | bool | None:
    """The listener lookup as a plain scan of ``Netns.listeners`` in order (what the index must equal)."""
    listeners = st.netns.listeners
    if listeners is None:
        return True
    for lst in listeners:
        if lst.port == port and lst.proto.value == proto and (lst.addr is None or int(lst.addr) == addr):
            return lst
    if st.netns.other_ports_listen:
        return Listener(port=port, proto=Proto(proto))
    return None


def _netnses(w: Workload) -> list[Netns]:
    """The workload's namespace, one with listeners that share ports (a bound and a wildcard one, TCP and UDP,
    transparent or not), one where every other port listens, and one whose listeners are unknown."""
    shared = (Listener(port=15008, addr=POD), Listener(port=15008, transparent=True),
              Listener(port=15006, proto=Proto.UDP), Listener(port=15006, addr=IPv4Address("127.0.0.1")),
              Listener(port=15001, transparent=True), Listener(port=15053, proto=Proto.UDP, transparent=True),
              Listener(port=15053, transparent=True), Listener(port=80))
    base = w.netns()
    return [base, Netns.pod(f"{POD}/24", listeners=shared),
            dataclasses.replace(Netns.pod(f"{POD}/24", listeners=shared[:3]), other_ports_listen=True),
            Netns.pod(f"{POD}/24", listeners=None)]


def test_listener_index_traces_as_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1616)
    probes = _probes(rng, 600)
    seen_outcomes = set()
    for name, w in _workloads().items():
        crs = w.rules(Family.IPV4)
        for ns in _netnses(w):
            fast = [engine.trace(crs, p, ns, explain=explain) for p in probes for explain in (True, False)]
            with monkeypatch.context() as m:
                m.setattr(engine, "_listener_for", _scan)
                slow = [engine.trace(crs, p, ns, explain=explain) for p in probes for explain in (True, False)]
            for f, s in zip(fast, slow, strict=True):
                assert f == s, (name, ns, f.packet)
                seen_outcomes.add(f.outcome)
    assert len(seen_outcomes) >= 3  # delivered, refused and sent at least: the probes reach the lookups


def test_listener_index_answers_as_the_scan() -> None:
    rng = random.Random(16)
    for w in list(_workloads().values())[:1]:
        for ns in _netnses(w):
            st = engine._State(Packet(src=POD, dst=POD, sport=1, dport=2), ns, engine._nsinfo(ns), (), True)
            for _ in range(3000):
                addr = int(rng.choice([POD, PEER, IPv4Address("127.0.0.1"), SNAT]))
                port = rng.choice([*PORTS, rng.randrange(1, 65536)])
                proto = rng.choice(["tcp", "udp", "sctp"])
                assert engine._listener_for(st, addr, port, proto) == _scan(st, addr, port, proto)


def test_plain_verdict_constant_is_what_its_action_returns() -> None:
    checked = 0
    for w in _workloads().values():
        crs = w.rules(Family.IPV4)
        for chains in crs.tables.values():
            for chain in chains.values():
                for r in chain.rules:
                    if r.const:
                        assert r.act(None) == r.const  # type: ignore[arg-type]  # a plain verdict reads nothing
                        checked += 1
    assert checked >= 10


def test_primary_address_table_answers_as_the_namespace() -> None:
    """``_NsInfo.primary`` (REDIRECT at PREROUTING, MASQUERADE, TPROXY without an address) against
    ``Netns.primary_address``: devices with several addresses of each family, a repeated name, none."""
    ns = Netns(interfaces=(Interface.of("lo", "127.0.0.1/8", "::1/128"),
                           Interface.of("eth0", "fd00::5/64", "10.244.0.5/24", "10.244.0.6/24"),
                           Interface.of("eth0", "192.168.0.1/24"), Interface.of("eth1", "fd01::1/64")))
    for netns in (ns, Netns.pod(f"{POD}/24"), *(w.netns() for w in _workloads().values())):
        for family in Family:
            st = engine._State(Packet(family=family, src=POD if family is Family.IPV4 else IPv6Address("::1"),
                                      dst=POD if family is Family.IPV4 else IPv6Address("::1")),
                               netns, engine._nsinfo(netns), (), True)
            for name in (None, "lo", "eth0", "eth1", "eth9", *(i.name for i in netns.interfaces)):
                want = netns.primary_address(name, family)
                assert st.primary(name) == (None if want is None else int(want)), (netns, family, name)
