"""Property: over every conformance ruleset and random packets, the verdict value, the sentence, the
matrix cell and the JSON say the same thing as the trace's steps."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest
from conftest import CONFORMANCE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsim.netfilter.packet import Origin, Packet, Proto, Socket
from netsim.netfilter.trace import Kind, Outcome, Trace
from netsim.workload import Verdict, Workload
from netsim.workload.hops import Followed, _row

KERNEL = CONFORMANCE / "istio-iptables" / "kernel"
DUMPS = sorted(KERNEL.glob("*.v4.iptables-save")) + sorted(KERNEL.glob("*.v6.ip6tables-save"))
# istio-cni's ambient in-pod rules, traced with ztunnel as the proxy (--mode ambient)
AMBIENT = CONFORMANCE / "istio-ambient" / "kernel"
AMBIENT_DUMPS = sorted((AMBIENT / "iptables").glob("*.iptables-save")) + \
    sorted((AMBIENT / "iptables").glob("*.ip6tables-save")) + sorted((AMBIENT / "nftables").glob("*.nft-list"))
POD = {4: "10.244.0.5", 6: "fd00:10:244::5"}
ADDRESSES = {4: ("10.244.0.5", "10.96.0.10", "127.0.0.1", "127.0.0.6", "10.1.2.3", "8.8.8.8"),
             6: ("fd00:10:244::5", "fd00:96::10", "::1", "::6", "fd00:1::3", "2001:db8::8")}
PORTS = (22, 53, 80, 443, 3306, 5701, 8080, 9000, 15001, 15006, 15008, 15020, 15021, 15053, 15090)


def _version(path: Path) -> int:
    return 6 if path.name.endswith(".ip6tables-save") else 4


def _workload(path: Path) -> Workload:
    if path.suffix == ".nft-list":
        return Workload.from_rules([], nft_paths=[str(path)], pod_ips=[POD[4], POD[6]]).as_ambient()
    w = Workload.from_rules([str(path)], pod_ips=[POD[_version(path)]])
    return w.as_ambient() if AMBIENT in path.parents else w


_CACHE: dict[Path, Workload] = {}


@st.composite
def packets(draw: st.DrawFn, version: int) -> tuple[Packet, str]:
    from netsim.netfilter.model import Family

    fam = Family.IPV4 if version == 4 else Family.IPV6
    proto = draw(st.sampled_from((Proto.TCP, Proto.UDP)))
    dport = draw(st.one_of(st.sampled_from(PORTS), st.integers(1, 65535)))
    dst = ip_address(draw(st.sampled_from(ADDRESSES[version])))
    if draw(st.booleans()):  # arriving from a peer
        src = ip_address(draw(st.sampled_from(ADDRESSES[version][3:])))
        return (Packet(family=fam, proto=proto, src=src, dst=dst, sport=40000, dport=dport, origin=Origin.ARRIVING,
                       in_iface=draw(st.sampled_from(("eth0", "lo"))), socket=None), "peer")
    uid = draw(st.sampled_from((0, 1000, 1337)))
    gid = draw(st.sampled_from((uid, 1337, 5)))
    mark = draw(st.sampled_from((0, 0, 0x539, 0x111)))  # the socket's SO_MARK (ztunnel's, ambient's connmark)
    src = dst if dst.is_loopback else ip_address(POD[version])
    return (Packet(family=fam, proto=proto, src=src, dst=dst, sport=40000, dport=dport,
                   socket=Socket(uid=uid, gid=gid), mark=mark), "app")


def _delivered(t: Trace) -> int | None:
    return t.local_port if t.outcome is Outcome.DELIVERED or t.transparent_socket else None


def check(w: Workload, f: Followed) -> None:
    d = f.decision
    decider = f.hops[d.hop].trace
    capture_ports = w.sidecar.receiving_ports
    port = _delivered(decider)
    # the verdict follows from the deciding hop's steps
    if d.verdict.captured:
        assert d.hop == 0 and port in capture_ports and d.listener is not None and d.listener.port == port
        assert d.listener.owner == w.sidecar.owner
    elif d.verdict is Verdict.LOOPED:
        assert d.hop >= 1 and port in capture_ports and d.listener is None
    elif d.verdict is Verdict.DROPPED:
        assert d.hop == 0 and decider.outcome is Outcome.DROPPED
    elif d.verdict is Verdict.BYPASSED:
        assert d.hop == 0 and decider.outcome is not Outcome.DROPPED and port not in capture_ports
    else:
        assert d.verdict is Verdict.UNCERTAIN and decider.outcome is Outcome.QUEUED
    if not d.verdict.captured:
        assert d.listener is None
    # decided_by is a rule the deciding hop's packet matched
    if d.decided_by is not None:
        assert any(d.decided_by.is_step(s) and s.matched for s in decider.steps if s.kind is Kind.RULE)
        if d.verdict is not Verdict.DROPPED:
            assert d.decided_by.ref in f.summary
    else:
        assert d.basis != "rule" and d.reason
    # the sentence
    start = {Verdict.BYPASSED: f"Bypasses {w.sidecar.name}", Verdict.DROPPED: "Dropped", Verdict.UNCERTAIN: "Uncertain"}
    if d.verdict.captured:
        name = {Verdict.CAPTURED_OUTBOUND: "outbound listener", Verdict.CAPTURED_INBOUND: "inbound listener",
                Verdict.CAPTURED_DNS: "DNS proxy on port"}[d.verdict]
        assert f"{name} {port}" in f.summary.split(";")[0]
        captured = f"Captured by {w.sidecar.possessive}" if w.sidecar.ambient else "Captured by the"
        assert f.summary.startswith((captured, f"Delivered to {w.sidecar.possessive}"))
    elif d.verdict is Verdict.LOOPED:
        assert f.summary.endswith(": a loop.")
    else:
        assert f.summary.startswith(start[d.verdict])
    # the JSON and the matrix cell
    j = f.to_json()
    assert j["verdict"] == d.verdict.value == f.verdict
    assert j["decided_by"] == (None if d.decided_by is None else d.decided_by.to_json())
    assert (j["listener"] is None) == (d.listener is None)
    row = _row("x", f.hops[0].trace.packet.proto, f.hops[0].trace.packet.dport, "x", f)
    cell = row.to_json()
    assert {k: cell[k] for k in ("verdict", "decided_by", "listener")} == \
        {k: j[k] for k in ("verdict", "decided_by", "listener")}
    assert cell["cell"].rstrip("?") == ("captured (dns)" if d.verdict is Verdict.CAPTURED_DNS else
                                        "captured" if d.verdict.captured else d.verdict.value)
    if d.decided_by is not None:
        assert cell["rule"] == f"{d.decided_by.table} {d.decided_by.chain} #{d.decided_by.position}"


@pytest.mark.parametrize("dump", DUMPS + AMBIENT_DUMPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_verdict_sentence_json_and_matrix_agree_with_the_steps(dump: Path) -> None:
    if not KERNEL.is_dir():
        pytest.skip(f"conformance data not found at {KERNEL} (set NETSIM_CONFORMANCE)")
    w = _CACHE.setdefault(dump, _workload(dump))
    version = _version(dump)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(packets(version))
    def prop(question: tuple[Packet, str]) -> None:
        packet, who = question
        check(w, w.follow(packet, who))

    prop()


def test_the_property_sees_every_verdict_kind() -> None:
    """The random packets above reach captured, bypassed and dropped answers (else the property is idle)."""
    seen = set()
    for dump in DUMPS:
        w = _CACHE.setdefault(dump, _workload(dump))
        version = 6 if ".v6." in dump.name else 4
        pod, remote = POD[version], ADDRESSES[version][1]
        for question in ({"dst": f"[{remote}]:80" if version == 6 else f"{remote}:80"},
                         {"dst": f"[{pod}]:80" if version == 6 else f"{pod}:80",
                          "from_": ADDRESSES[version][4]},
                         {"dst": f"[{remote}]:80" if version == 6 else f"{remote}:80", "uid": 1337}):
            f = w.trace(**question)  # type: ignore[arg-type]
            check(w, f)
            seen.add(f.decision.verdict)
    assert {Verdict.CAPTURED_OUTBOUND, Verdict.CAPTURED_INBOUND, Verdict.BYPASSED} <= seen
