"""The re-routing after nat OUTPUT (ip_route_me_harder): a locally generated IPv4 packet with a loopback
source that nat sends to a non-local address is dropped unless route_localnet is on (Netns.route_localnet).

Checked in a namespace pair (pod 10.244.0.5/24 on a veth, peer 10.244.0.1): connect() to 127.0.0.1:8081 with
``-t nat -A OUTPUT -d 127.0.0.1/32 -p tcp --dport 8081 -j DNAT --to-destination 10.244.0.1:8081``: the DNAT
rule counts the SYN, filter OUTPUT and mangle POSTROUTING count nothing; after
``sysctl net.ipv4.conf.eth0.route_localnet=1`` both count it and it is sent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address

import pytest

from netsim.netfilter import parse_ruleset
from netsim.netfilter.engine import trace
from netsim.netfilter.packet import Netns, Packet, Socket
from netsim.netfilter.trace import Kind, Outcome

RULES = parse_ruleset("""*nat
-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 10.244.0.1:8081
COMMIT
*filter
-A OUTPUT -p tcp -m tcp --dport 8081
COMMIT
""")
NS = Netns.pod("10.244.0.5/24", listeners=None)


def _packet(src: str = "127.0.0.1") -> Packet:
    return Packet(src=ip_address(src), dst=ip_address("127.0.0.1"), sport=40000, dport=8081,
                  socket=Socket(uid=1000, gid=1000))


def _filter_rules(t: object) -> list[object]:
    return [s for s in t.steps if s.kind is Kind.RULE and s.table == "filter"]  # type: ignore[attr-defined]


def test_a_loopback_source_sent_off_the_host_by_nat_is_dropped_at_rerouting() -> None:
    t = trace(RULES, _packet(), NS)
    assert t.outcome is Outcome.DROPPED
    assert "re-routing" in t.reason and "route_localnet" in t.reason
    assert not _filter_rules(t)  # dropped between nat OUTPUT and filter OUTPUT


def test_route_localnet_lets_it_leave() -> None:
    t = trace(RULES, _packet(), replace(NS, route_localnet=True))
    assert t.outcome is Outcome.SENT and _filter_rules(t)


def test_a_pod_source_is_not_affected() -> None:
    t = trace(RULES, _packet("10.244.0.5"), NS)
    assert t.outcome is Outcome.SENT


def _counts(ns: str) -> dict[str, int]:
    import subprocess

    out = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-c"], capture_output=True, text=True,
                         check=True).stdout
    counts = {}
    for line in out.splitlines():
        if "8081" in line and line.startswith("["):
            counts[line.split("] ", 1)[1].split()[1] + " " + line.split("-j ")[-1][:4]] = int(line[1:].split(":")[0])
    return counts


@contextlib.contextmanager
def veth_peer(netns: str, pod: str, peer: str) -> Iterator[str]:
    """A peer namespace on a veth pair with ``netns`` (each side's device named eth0, addresses ``pod`` and
    ``peer`` with their prefix, IPv6 without duplicate address detection); deleted on the way out."""
    import subprocess
    import uuid

    name = f"nstest-{uuid.uuid4().hex[:8]}"
    veth = f"v{uuid.uuid4().hex[:8]}"
    nodad = ["nodad"] if ":" in pod else []

    def run(*cmd: str) -> None:
        subprocess.run(list(cmd), check=True)

    run("ip", "netns", "add", name)
    try:
        run("ip", "link", "add", veth, "netns", netns, "type", "veth", "peer", "name", "eth0", "netns", name)
        run("ip", "-n", netns, "link", "set", veth, "name", "eth0")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        run("ip", "-n", netns, "addr", "add", pod, "dev", "eth0", *nodad)
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", name, "addr", "add", peer, "dev", "eth0", *nodad)
        run("ip", "-n", name, "link", "set", "eth0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.root
@pytest.mark.parametrize("localnet", [False, True])
def test_the_kernel_agrees(netns: str, localnet: bool) -> None:
    import subprocess

    with veth_peer(netns, "10.244.0.5/24", "10.244.0.1/24"):
        if localnet:
            subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
                           check=True)
        rules = ("*nat\n-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 8081 -j DNAT --to-destination "
                 "10.244.0.1:8081\nCOMMIT\n*filter\n-A OUTPUT -p tcp -m tcp --dport 8081 -j ACCEPT\nCOMMIT\n")
        subprocess.run(["ip", "netns", "exec", netns, "iptables-restore"], input=rules, text=True, check=True)
        subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                        "import socket\nc = socket.socket(); c.settimeout(0.3)\n"
                        "try: c.connect(('127.0.0.1', 8081))\nexcept OSError: pass\n"], check=True)
        counts = _counts(netns)
        assert counts["OUTPUT DNAT"] >= 1
        assert (counts["OUTPUT ACCE"] > 0) == localnet
        ours = trace(RULES, _packet(), replace(NS, route_localnet=localnet))
        assert (ours.outcome is Outcome.SENT) == localnet
