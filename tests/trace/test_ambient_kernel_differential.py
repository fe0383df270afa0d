"""Kernel-differential test on istio-cni's ambient in-pod rules: the kernel's trace equals netsim's.

Every kernel read-back of Istio's ambient goldens (../shared/conformance/istio-ambient/kernel: iptables-nft dumps of
both families, ``nft list ruleset`` listings) is loaded into a pod namespace that has ambient's policy routing
(``ip rule fwmark 0x111/0xfff lookup 100``, table 100 ``local default dev lo``, spec/istio-ambient-capture.md §7), a
peer that may send from the probe SNAT addresses, and a second device named as the virtual-interface cases name
theirs. Probes cover every row of the spec's §10 table, IPv4 and IPv6: the app's TCP to a remote address, to its own
address and to loopback; ztunnel's own traffic (socket mark 0x539: TCP, UDP and TCP DNS); the app's UDP and TCP DNS;
the app's TCP to the SNAT address; a new connection marked 0x111 (rule 17, delivered by table 100); ztunnel's spoofed
connection to the app (IP_TRANSPARENT from the client's address, mark 0x539: rule 18, then connmark 0x111 on lo);
other UDP; inbound TCP (15006), to 15008 (HBONE), from the SNAT address (kubelet probes), inbound UDP, and TCP arriving
on the virtual interface; plus seeded random probes. Ingress mode and DNS on/off are the cases themselves.
The same harnesses as the sidecar differentials (tests/trace/kernel_diff.py, tests/netfilter/nft_kernel_diff.py).
Needs root, iproute2, iptables-nft, nft and xtables-monitor; skipped with the reason otherwise.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import require_root

from netsim.capture.ambient import CONN as AMBIENT_CONNMARK
from netsim.capture.ambient import MARK as ZTUNNEL_MARK
from netsim.lab.verify import Probe
from netsim.netfilter import Family, parse_ruleset
from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID
from tests.trace.ambient_kernel import AMBIENT, iptables_cases, nft_cases, snat_address
from tests.trace.kernel_diff import (
    PEER4,
    PEER6,
    POD4,
    POD6,
    SPORT_LO,
    VIRT4,
    VIRT6,
    VPEER4,
    VPEER6,
    Pair,
    make_probes,
    namespaces,
    pod_netns,
    run_ruleset,
)

pytestmark = pytest.mark.root

RANDOM = int(os.environ.get("NETSIM_AMBIENT_DIFF_PROBES", "6"))  # seeded random probes per ruleset and family
APP_UID = 1000
_SPORTS = itertools.count(SPORT_LO)


def _virtual() -> str:
    doc = yaml.safe_load((AMBIENT / "iptables" / "virtual_interfaces.yaml").read_text())
    return str(doc["pod_overrides"]["VirtualInterfaces"][0])


def table_probes(family: Family) -> list[Probe]:
    """One probe per row of spec §10 (and a few around them) for ``family``."""
    v4 = family is Family.IPV4
    pod, peer, lo = (POD4, PEER4, "127.0.0.1") if v4 else (POD6, PEER6, "::1")
    remote, snat = ("10.96.0.10" if v4 else "fd00:96::10"), snat_address(family)
    virt, vpeer = (VIRT4, VPEER4) if v4 else (VIRT6, VPEER6)
    app = {"uid": APP_UID, "gid": APP_UID}
    zt = {"uid": ZTUNNEL_UID, "gid": ZTUNNEL_GID, "mark": ZTUNNEL_MARK}

    def p(proto: str, src: str, dst: str, dport: int, **kw: object) -> Probe:
        return Probe(proto=proto, src=src, sport=next(_SPORTS), dst=dst, dport=dport, **kw)  # type: ignore[arg-type]

    probes = [
        p("tcp", pod, remote, 80, **app),  # app → remote TCP: 15001
        p("tcp", pod, pod, 8080, **app),  # app → own address: via lo, rule 18
        p("tcp", lo, lo, 80, **app),  # app → loopback
        p("tcp", pod, remote, 80, **zt),  # ztunnel's own TCP
        p("udp", pod, remote, 53, **zt),  # ztunnel's upstream DNS: CT zone 1 (rule 15)
        p("tcp", pod, remote, 53, **zt),
        p("udp", pod, remote, 53, **app),  # app DNS: 15053
        p("tcp", pod, remote, 53, **app),
        p("tcp", pod, snat, 80, **app),  # app → the SNAT address (rule 10)
        p("tcp", pod, remote, 80, uid=0, gid=0, mark=AMBIENT_CONNMARK),  # rule 17, table 100
        p("tcp", peer, pod, 8080, transparent=True, **zt),  # ztunnel → app from the client: rule 18, connmark
        p("udp", pod, remote, 5000, **app),  # other UDP
        p("tcp", peer, pod, 8080, inbound=True),  # inbound: 15006
        p("tcp", peer, pod, 15008, inbound=True),  # HBONE: no rule
        p("tcp", snat, pod, 8080, inbound=True),  # kubelet probe (rule 9)
        p("udp", peer, pod, 5000, inbound=True),
        p("tcp", vpeer, virt, 8080, inbound=True, in_iface=_virtual()),  # virtual interface (rule 7)
    ]
    if v4:
        probes.append(p("udp", "127.0.0.1", "127.0.0.53", 53, **app))  # a resolver via lo: UDP not captured
        probes.append(p("tcp", "127.0.0.1", "127.0.0.53", 53, **app))  # ... TCP is (rule 14)
    return probes


def _sendable(probes: list[Probe]) -> list[Probe]:
    """The random probes the pair can send: the peer owns the SNAT addresses (it sends the kubelet-probe rows from
    them), so a probe it sends *to* one is delivered to itself and never reaches the pod."""
    own = {snat_address(f) for f in Family}
    return [p for p in probes if not (p.inbound and p.dst in own)]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    require_root("iptables-restore", "ip6tables-restore", "nft", "xtables-monitor", "stdbuf")
    with namespaces(ambient=True, peer_addrs=tuple(snat_address(f) for f in Family), virtual=_virtual()) as p:
        yield p


_IPT, _NFT = iptables_cases(), nft_cases()


@pytest.mark.parametrize(("name", "path"), _IPT, ids=[c[0] for c in _IPT])
def test_ambient_iptables_kernel_trace_equals_netsim(pair: Pair, name: str, path: Path) -> None:
    family = Family.IPV6 if name.endswith(".ip6tables-save") else Family.IPV4
    ruleset = parse_ruleset(path.read_text(), family)
    probes = table_probes(family) + _sendable(make_probes(ruleset, name, RANDOM, _SPORTS))
    result = run_ruleset(pair, name, ruleset, probes, netns=pod_netns(ambient=True, virtual=_virtual()))
    print(f"{name}: {result.compared}/{result.probes} probes compared, {len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert result.compared == result.probes


@pytest.mark.parametrize(("name", "path"), _NFT, ids=[c[0] for c in _NFT])
def test_ambient_nft_kernel_trace_equals_netsim(pair: Pair, name: str, path: Path) -> None:
    from netsim.netfilter.nft import parse_nft
    from tests.netfilter.nft_kernel_diff import make_nft_probes, run_nft_ruleset

    text = path.read_text()
    rs = parse_nft(text)
    probes = [p for f in Family
              for p in table_probes(f) + _sendable(make_nft_probes(rs, f, f"{name}.v{f.value}", RANDOM, _SPORTS))]
    result, traced = run_nft_ruleset(pair, name, text, probes, netns=pod_netns(ambient=True, virtual=_virtual()))
    print(f"{name}: {result.compared}/{result.probes} probes compared ({traced} traced by the kernel), "
          f"{len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert result.compared == result.probes
    assert traced >= len(probes) * 3 // 4, "the kernel traced too few probes: the monitor missed them"
