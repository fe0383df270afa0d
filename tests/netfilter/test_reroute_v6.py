"""IPv6 has no counterpart of the IPv4 re-routing drop (``test_reroute.py``): a locally generated packet with
source ::1 that nat OUTPUT sends off the host passes filter OUTPUT and POSTROUTING and leaves through eth0,
and it is the receiver that drops it (``ip6_rcv_core``: a loopback source on a device that is not lo counts
as a header error, before any netfilter hook).

Checked in a namespace pair (pod fd00::5/64 on a veth, peer fd00::1): connect() to [::1]:8081 with
``-t nat -A OUTPUT -d ::1/128 -p tcp --dport 8081 -j DNAT --to-destination [fd00::1]:8081``: the DNAT rule,
filter OUTPUT and nat POSTROUTING count the SYN, the peer's raw PREROUTING counts nothing and its
Ip6InHdrErrors grows."""

from __future__ import annotations

import subprocess
import time
from ipaddress import ip_address

import pytest
from test_reroute import veth_peer

from netsim.netfilter import Family, parse_ruleset
from netsim.netfilter.engine import trace
from netsim.netfilter.packet import Netns, Packet, Socket
from netsim.netfilter.trace import Kind, Outcome

TEXT = """*nat
-A OUTPUT -d ::1/128 -p tcp -m tcp --dport 8081 -j DNAT --to-destination [fd00::1]:8081
-A POSTROUTING -p tcp -m tcp --dport 8081 -j ACCEPT
COMMIT
*filter
-A OUTPUT -p tcp -m tcp --dport 8081 -j ACCEPT
COMMIT
"""
NS = Netns.pod("fd00::5/64", listeners=None)


def _trace(src: str = "::1") -> object:
    packet = Packet(family=Family.IPV6, src=ip_address(src), dst=ip_address("::1"), sport=40000, dport=8081,
                    socket=Socket(uid=1000, gid=1000))
    return trace(parse_ruleset(TEXT, Family.IPV6), packet, NS)


def test_a_v6_loopback_source_sent_off_the_host_by_nat_leaves_and_the_receiver_drops_it() -> None:
    t = _trace()
    assert t.outcome is Outcome.SENT  # type: ignore[attr-defined]
    assert "source ::1" in t.reason and "every receiver drops" in t.reason  # type: ignore[attr-defined]
    assert [s.table for s in t.steps if s.kind is Kind.RULE and s.matched] == ["nat", "filter", "nat"]  # type: ignore[attr-defined]


def test_a_pod_source_says_nothing_of_it() -> None:
    t = _trace("fd00::5")
    assert t.outcome is Outcome.SENT and "receiver" not in t.reason  # type: ignore[attr-defined]


def _save_c(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ip6tables-save", "-c"], capture_output=True, text=True,
                          check=True).stdout


def _hdr_errors(ns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp6"], capture_output=True, text=True,
                         check=True).stdout
    return int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Ip6InHdrErrors")))


@pytest.mark.root
def test_the_kernel_agrees(netns: str) -> None:
    with veth_peer(netns, "fd00::5/64", "fd00::1/64") as peer:
        subprocess.run(["ip", "netns", "exec", netns, "ip6tables-restore"], input=TEXT, text=True, check=True)
        subprocess.run(["ip", "netns", "exec", peer, "ip6tables-restore"], text=True, check=True,
                       input="*raw\n-A PREROUTING -p tcp -m tcp --dport 8081\nCOMMIT\n")
        errors_before = _hdr_errors(peer)
        subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                        "import socket\nc = socket.socket(socket.AF_INET6); c.settimeout(0.3)\n"
                        "try: c.connect(('::1', 8081))\nexcept OSError: pass\n"], check=True)
        ours = _save_c(netns)
        counted = {ln.split("] ", 1)[1].split(" -")[0][3:] + ln.split("-j ")[-1]: int(ln[1:].split(":")[0])
                   for ln in ours.splitlines() if ln.startswith("[") and "8081" in ln}
        assert counted["OUTPUTDNAT --to-destination [fd00::1]:8081"] >= 1
        assert counted["OUTPUTACCEPT"] >= 1 and counted["POSTROUTINGACCEPT"] >= 1  # not dropped at re-routing
        for _ in range(40):  # the SYN may wait for neighbour discovery
            if _hdr_errors(peer) > errors_before:
                break
            time.sleep(0.05)
        assert _hdr_errors(peer) > errors_before  # dropped on arrival ...
        assert "[0:0] -A PREROUTING" in _save_c(peer)  # ... before the peer's first hook
        assert _trace().outcome is Outcome.SENT  # type: ignore[attr-defined]
