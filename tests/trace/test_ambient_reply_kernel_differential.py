"""Kernel-differential test of the reply direction on istio-cni's ambient rules: the kernel's trace of each
connection's first reply equals netsim's (spec/istio-ambient-capture.md §7, §10 "Return path", "DNS").

``test_ambient_kernel_differential.py`` compares first packets; this file compares what comes back. Every kernel
read-back of Istio's ambient iptables goldens (v4 and v6) is loaded into the pod namespace of
``tests/trace/kernel_diff.py`` (with ambient's policy routing: ``ip rule fwmark 0x111/0xfff lookup 100``, table
100 ``local default dev lo``) and each probe's first packet is sent for real; the kernel's trace of the *reply*
(TRACE rules select a SYN-ACK or a datagram whose destination port is a probe's source port) is compared with
netsim's: the first packet traced, its conntrack entry (``netsim.netfilter.conntrack.entry_after``: zone,
connmark, NAT bindings), the reply built from it (``reply_packet``) and traced. The replies:

- ztunnel's connection to the app from the client's address (SO_MARK 0x539, IP_TRANSPARENT): the app's SYN-ACK gets
  the connection's mark 0x111 in mangle OUTPUT (rule 12), is re-routed by table 100 to ``lo`` and comes back in
  through PREROUTING to ztunnel's transparent socket, instead of leaving by ``eth0`` (the 0x111 return path);
- ztunnel's upstream DNS query (mark 0x539, conntrack zone 1 by raw rule 15): the server's answer (source port 53,
  no mark) is put in zone 1 by raw rule 16, where it finds the query's entry (ESTABLISHED); without DNS capture
  both live in zone 0;
- a kubelet probe from the SNAT address (rule 9: no capture): the app's SYN-ACK leaves by ``eth0``;
- remote → pod TCP (REDIRECT to 15006): the listener's SYN-ACK, its source NATed back;
- the app's outbound TCP (REDIRECT to 15001): the listener's SYN-ACK over ``lo``.

IPv4 is compared line for line (``xtables-monitor --trace``, PACKET lines included: addresses, ports, mark), IPv6 by
table, chain, rule position and verdict (``nft monitor trace``), as in the first-packet differential. Needs root,
iproute2, iptables-nft, nft and xtables-monitor; skipped with the reason otherwise.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require_root

from netsim.capture.ambient import MARK as ZTUNNEL_MARK
from netsim.lab.kerneltrace import monitor_noise, parse_monitor, parse_nft_monitor
from netsim.lab.verify import Probe
from netsim.lab.ztunnel import as_first_packets, reply_lines, reply_packet_of, turned_back
from netsim.netfilter import Family, Ruleset, parse_ruleset, render_save
from netsim.netfilter.engine import CompiledRuleset, compile_ruleset, trace
from netsim.netfilter.packet import Netns
from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID
from tests.trace.ambient_kernel import KERNEL, iptables_cases, nft_cases, snat_address
from tests.trace.kernel_diff import (
    NFT_MONITOR,
    PEER4,
    PEER6,
    POD4,
    POD6,
    SPORT_HI,
    SPORT_LO,
    XTABLES_MONITOR,
    Pair,
    _send,
    kernel_vs_netsim,
    monitored,
    namespaces,
    pod_handle_positions,
    pod_netns,
    sh,
    with_trace_rules,
)

pytestmark = pytest.mark.root

APP_UID = 1000
APP_PORT = 8080  # listen_helper.py's ordinary listener in the pod (it never accepts: the kernel answers the SYN)
# The peer's servers: a UDP echo on port 53 (the upstream DNS server) and a TCP listener on 80 that never accepts
# (the kernel answers a SYN: an uncaptured outbound connection gets its SYN-ACK from the peer).
PEER_SERVERS = """
import socket, sys
socks, keep = [], []
for fam, addr in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((addr, 53)); socks.append(s)
    t = socket.socket(fam, socket.SOCK_STREAM); t.bind((addr, 80)); t.listen(1024); keep.append(t)
print("ready", flush=True)
import select
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(512); s.sendto(data, peer)
"""
_SPORTS = itertools.count(SPORT_LO)
_START, _END = SPORT_HI, SPORT_HI - 1  # sentinel datagrams' destination ports: selected like a reply


def reply_probes(family: Family) -> list[Probe]:
    """The first packets whose replies are compared (module docstring)."""
    v4 = family is Family.IPV4
    pod, peer = (POD4, PEER4) if v4 else (POD6, PEER6)
    zt = {"uid": ZTUNNEL_UID, "gid": ZTUNNEL_GID, "mark": ZTUNNEL_MARK}

    def p(proto: str, src: str, dst: str, dport: int, **kw: object) -> Probe:
        return Probe(proto=proto, src=src, sport=next(_SPORTS), dst=dst, dport=dport, **kw)  # type: ignore[arg-type]

    return [
        p("tcp", peer, pod, APP_PORT, transparent=True, **zt),  # ztunnel → app from the client: the 0x111 path
        p("udp", pod, peer, 53, **zt),  # ztunnel's upstream DNS query: its answer in zone 1
        p("tcp", snat_address(family), pod, APP_PORT, inbound=True),  # kubelet's probe
        p("tcp", peer, pod, APP_PORT, inbound=True),  # remote → pod: 15006
        p("tcp", pod, peer, 80, uid=APP_UID, gid=APP_UID),  # the app's outbound: 15001
    ]


def with_reply_trace_rules(ruleset: Ruleset) -> Ruleset:
    """``ruleset`` plus TRACE rules selecting replies to probes: a SYN-ACK or a datagram whose destination port
    is in the probes' source-port range."""
    return with_trace_rules(ruleset, port="--dport", tcp_flags="SYN,ACK")


def _send_one_by_one(pair: Pair, probes: list[Probe]) -> None:
    # one at a time: each reply's traces come before the next probe's
    for p in probes:
        _send(pair.peer if p.inbound else pair.pod, [p])


def netsim_reply(crs: CompiledRuleset, probe: Probe, ns: Netns) -> list[str]:
    """netsim's trace of ``probe``'s reply (``netsim.lab.ztunnel.reply_lines``: the pod's root listener answers)."""
    return list(reply_lines(crs, probe, ns, packets=probe.version == 4))


def run_replies(pair: Pair, name: str, ruleset: Ruleset, probes: list[Probe]) -> list[str]:
    """Load ``ruleset`` (+ reply TRACE rules), send ``probes``, compare each reply's traces; the mismatches."""
    traced = with_reply_trace_rules(ruleset)
    v6 = ruleset.family is Family.IPV6
    sh("ip", "netns", "exec", pair.pod, "nft", "flush", "ruleset")
    sh("ip", "netns", "exec", pair.pod, "conntrack", "-F", check=False)
    sh("ip", "netns", "exec", pair.pod, "ip6tables-restore" if v6 else "iptables-restore", stdin=render_save(traced))
    positions = pod_handle_positions(pair.pod, ruleset.family)
    pod, peer = (POD6, PEER6) if v6 else (POD4, PEER4)
    mark = "dport {} " if v6 else "DPORT={} "
    sentinel = Probe(proto="udp", src=pod, sport=9, dst=peer, dport=_START)  # selected as a reply would be
    text = monitored(pair.pod, NFT_MONITOR if v6 else XTABLES_MONITOR, lambda: _send_one_by_one(pair, probes),
                     first=sentinel, last=replace(sentinel, dport=_END),
                     marks=(mark.format(_START), mark.format(_END)))
    turned = as_first_packets(text)
    kernel = turned_back(parse_nft_monitor(turned, positions) if v6 else parse_monitor(turned, positions, packets=True))
    crs = compile_ruleset(traced)
    ns = pod_netns(ambient=True)
    mismatches = []
    for p in probes:
        got, want = kernel.get(p.sport, []), netsim_reply(crs, p, ns)
        if got != want or not got:
            diff = kernel_vs_netsim(got, want)
            odd = [] if v6 else monitor_noise(text)[:3]
            mismatches.append(f"{name} reply to {p.describe()}:\n{diff}" + (f"\nmonitor said: {odd}" if odd else ""))
    return mismatches


def run_nft_replies(pair: Pair, name: str, text: str, probes: list[Probe]) -> tuple[list[str], int]:
    """The nft half of :func:`run_replies`: ``text`` loaded with ``nft -f``, replies selected by a trace table at
    priority -500, every line compared (packet lines on the fields netsim models). Returns the mismatches and how
    many replies the kernel traced."""
    from netsim.netfilter.nft import compile_nft, parse_nft
    from tests.netfilter.nft_kernel_diff import _positions, kernel_lines, nft_trace_as_monitored, trace_table

    sh("ip", "netns", "exec", pair.pod, "nft", "flush", "ruleset")
    sh("ip", "netns", "exec", pair.pod, "conntrack", "-F", check=False)
    sh("ip", "netns", "exec", pair.pod, "nft", "-f", "-", stdin=text)
    sh("ip", "netns", "exec", pair.pod, "nft", "-f", "-", stdin=trace_table(port="dport", tcp_flags="syn|ack"))
    positions = _positions(pair.pod)
    sentinel = Probe(proto="udp", src=POD4, sport=9, dst=PEER4, dport=_START)
    traced = monitored(pair.pod, NFT_MONITOR, lambda: _send_one_by_one(pair, probes), first=sentinel,
                       last=replace(sentinel, dport=_END), marks=(f"dport {_START} ", f"dport {_END} "))
    kernel = turned_back(kernel_lines(as_first_packets(traced), positions))
    rs = parse_nft(text)
    compiled = {f: compile_nft(rs, f) for f in Family}
    ns = pod_netns(ambient=True)
    mismatches = []
    for p in probes:
        crs = compiled[Family(p.version)]
        reply = reply_packet_of(crs, p, ns)
        want = nft_trace_as_monitored(trace(crs, reply, ns))
        got = kernel.get(p.sport, [])
        if got != want:
            mismatches.append(f"{name} reply to {p.describe()}:\n{kernel_vs_netsim(got, want)}")
    return mismatches, sum(1 for p in probes if kernel.get(p.sport))


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    require_root("iptables-restore", "ip6tables-restore", "nft", "xtables-monitor", "stdbuf")
    with namespaces(ambient=True, peer_addrs=tuple(snat_address(f) for f in Family)) as p:
        responder = subprocess.Popen(["ip", "netns", "exec", p.peer, sys.executable, "-c", PEER_SERVERS, PEER4,
                                      PEER6], stdout=subprocess.PIPE, text=True)
        try:
            assert responder.stdout is not None and responder.stdout.readline().strip() == "ready"
            yield p
        finally:
            responder.kill()
            responder.wait()


_CASES, _NFT = iptables_cases(), nft_cases()


@pytest.mark.parametrize(("name", "path"), _CASES, ids=[c[0] for c in _CASES])
def test_ambient_reply_kernel_trace_equals_netsim(pair: Pair, name: str, path: Path) -> None:
    family = Family.IPV6 if name.endswith(".ip6tables-save") else Family.IPV4
    ruleset = parse_ruleset(path.read_text(), family)
    probes = reply_probes(family)
    mismatches = run_replies(pair, name, ruleset, probes)
    print(f"{name}: {len(probes)} replies compared, {len(mismatches)} mismatches")
    assert not mismatches, "\n\n".join(mismatches)


@pytest.mark.parametrize(("name", "path"), _NFT, ids=[c[0] for c in _NFT])
def test_ambient_nft_reply_kernel_trace_equals_netsim(pair: Pair, name: str, path: Path) -> None:
    probes = [p for f in Family for p in reply_probes(f)]
    mismatches, traced = run_nft_replies(pair, name, path.read_text(), probes)
    print(f"{name}: {len(probes)} replies compared ({traced} traced by the kernel), {len(mismatches)} mismatches")
    assert not mismatches, "\n\n".join(mismatches)
    assert traced == len(probes), "the kernel traced too few replies: the monitor missed them"


@pytest.mark.parametrize("family", list(Family), ids=["v4", "v6"])
def test_ingress_mode_before_1_29_sends_the_apps_reply_out_of_eth0(pair: Pair, family: Family) -> None:
    """1.24–1.28's ingress mode dropped the connmark rule (§11): the app's SYN-ACK to ztunnel's spoofed connection
    gets no mark 0x111, so it is routed out of ``eth0`` to the client instead of back to ztunnel; kernel and netsim
    agree, and 1.29's rules (the read-back ``ingress``) bring it back through ``lo``."""
    from netsim.capture.ambient import PodOverrides, agent_defaults, compile_ambient

    v4, v6 = compile_ambient(agent_defaults((1, 28, 1)), PodOverrides(ingress_mode=True)).rulesets()
    ruleset = v4 if family is Family.IPV4 else v6
    assert ruleset is not None
    spoofed = reply_probes(family)[0]
    assert spoofed.transparent and spoofed.mark == ZTUNNEL_MARK
    mismatches = run_replies(pair, f"1.28 ingress v{family.value}", ruleset, [spoofed])
    assert not mismatches, "\n\n".join(mismatches)
    ns = pod_netns(ambient=True)
    old = netsim_reply(compile_ruleset(with_reply_trace_rules(ruleset)), spoofed, ns)
    fixed = netsim_reply(compile_ruleset(with_reply_trace_rules(parse_ruleset(
        (KERNEL / "iptables" / ("ingress.iptables-save" if family is Family.IPV4 else "ingress_ipv6.ip6tables-save")
         ).read_text(), family))), spoofed, ns)
    if family is Family.IPV4:  # the PACKET lines say where it went
        assert any("OUT=eth0" in ln for ln in old) and not any("IN=lo" in ln for ln in old)
        assert any("OUT=lo" in ln and "MARK=0x111" in ln for ln in fixed)
    else:  # heads only: the 1.29 reply passes PREROUTING again (re-entering on lo), the 1.28 one does not
        assert not any(":PREROUTING:" in ln for ln in old)
        assert any(":PREROUTING:" in ln for ln in fixed)
