"""``netsim.workload.packets`` without click: the entry a packet finds, the reply, a follow-up, a capture file."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest
from conftest import REPO

from netsim.errors import NetsimError, SpecError
from netsim.netfilter.packet import CtState, Origin
from netsim.workload import Workload, conntrack_entry, follow_up, reply_to, trace_capture, with_entry

MTLS = REPO / "rules" / "mtls-503"


def _pod() -> Workload:
    return Workload.from_pod(str(MTLS / "pod.yaml"), pod_ips=["10.244.0.5"])


def test_the_reply_to_a_redirected_inbound_connection_comes_from_the_sidecar() -> None:
    w = _pod()
    packet, _ = w.packet("10.244.0.5:80", from_="10.1.2.3")
    entry = conntrack_entry(packet, dnat=(ip_address("10.244.0.5"), 15006), reply=True)
    reply, who = reply_to(w, packet, entry, w.netns())
    assert entry.state is CtState.ESTABLISHED
    assert (who, reply.socket is not None and reply.socket.uid) == ("reply from the sidecar (uid 1337)", 1337)
    # as the listener's socket sends it: conntrack undoes the binding on the way out
    assert (reply.src, reply.sport, reply.dst) == (ip_address("10.244.0.5"), 15006, ip_address("10.1.2.3"))


def test_the_reply_to_an_app_connection_arrives_from_the_peer() -> None:
    w = _pod()
    packet, _ = w.packet("10.96.0.10:443", uid=1337)  # the proxy's own connection: not redirected
    reply, who = reply_to(w, packet, conntrack_entry(packet, reply=True), w.netns())
    assert reply.origin is Origin.ARRIVING and who == "reply from 10.96.0.10"


def test_an_entry_of_the_other_ip_version_is_refused() -> None:
    packet, _ = _pod().packet("10.96.0.10:443")
    with pytest.raises(SpecError, match="--ct-dnat and --dst must be the same IP version"):
        conntrack_entry(packet, state="ESTABLISHED", dnat=(ip_address("fd00::1"), 80))


def test_an_existing_entry_turns_a_syn_into_an_ack() -> None:
    packet, _ = _pod().packet("10.96.0.10:443")
    assert with_entry(packet, conntrack_entry(packet, state="established")).tcp_flags == frozenset({"ACK"})
    assert with_entry(packet, conntrack_entry(packet)).tcp_flags == packet.tcp_flags  # NEW keeps its flags


def test_follow_up_reuses_the_first_packets_binding_and_says_when_there_is_none() -> None:
    w = _pod()
    ns = w.netns()
    packet, who = w.packet("10.96.0.10:443")
    fu = follow_up(w, packet, who, ns)
    assert fu.entry is not None and fu.entry.dnat_to is not None and fu.entry.dnat_to[1] == 15001
    assert fu.second is not None and fu.second.hops[0].trace.ctstate == "ESTABLISHED" and fu.note is None
    drop = Workload.from_rules(["drop"], texts={"drop": "*filter\n-A INPUT -j DROP\nCOMMIT\n"}, pod_ips=["10.244.0.5"])
    dropped, dwho = drop.packet("10.244.0.5:80", from_="10.1.2.3")
    none = follow_up(drop, dropped, dwho, drop.netns())
    assert none.entry is None and none.second is None
    assert none.note == ("--follow-up: no second packet: the first one leaves no conntrack entry "
                         "(dropped, conntrack NEW)")


def test_a_capture_file_is_traced_packet_by_packet(tmp_path: Path) -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import wrpcap

    path = tmp_path / "c.pcap"
    wrpcap(str(path), [IP(src="10.244.0.5", dst="10.0.0.5") / TCP(sport=40000, dport=80, flags="S"),
                       IP(src="10.1.2.3", dst="10.244.0.5") / UDP(sport=1, dport=53)])
    w = _pod()
    rows = trace_capture(w, str(path), w.netns(), uid=1337)
    assert [(r.no, r.packet.origin, r.packet.socket and r.packet.socket.uid) for r in rows] == [
        (1, Origin.LOCAL, 1337), (2, Origin.ARRIVING, None)]
    assert rows[0].followed.decision.verdict.value == "bypassed"  # the proxy's own uid RETURNs
    path.write_bytes(b"not a capture")
    with pytest.raises(NetsimError, match=f"^{path}: cannot read capture"):
        trace_capture(w, str(path), w.netns())
