"""Fuzzing: random and mutated packets never make the core raise, nor the server stop answering.

The long run (≥ 1,000,000 packets) is bench/dns_fuzz.py; these keep the suite fast.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest
from dns_fuzzing import CRAFTED, LOOKUP, SEEDS, mutate
from dns_helpers import FakeUpstream, RunningAgent, open_fds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsim.dns.resolve import Drop, Forward, Reply, Transport, finish_forward, fit, resolve


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw(st.sampled_from(SEEDS + CRAFTED)), draw(st.randoms(use_true_random=False)))


PACKETS = st.one_of(st.binary(max_size=600), mutated())


def _udp_limit(packet: bytes) -> int:
    """The client's UDP limit, read by dnspython (an independent parser): EDNS size or 512."""
    try:
        msg = dns.message.from_wire(packet)
    except Exception:  # unreadable: the agent can only answer a header (+ question)
        return 512
    return max(512, msg.payload) if msg.edns >= 0 else 512


@settings(max_examples=3000, deadline=None)
@given(PACKETS, st.sampled_from(list(Transport)))
def test_core_never_raises_and_replies_are_wellformed(packet: bytes, transport: Transport) -> None:
    d = resolve(packet, LOOKUP, transport=transport)
    assert isinstance(d, Reply | Forward | Drop)
    if isinstance(d, Reply):
        assert len(d.wire) >= 12 and d.wire[:2] == packet[:2]
        msg_flags = struct.unpack("!H", d.wire[2:4])[0]
        assert msg_flags & 0x8000
        if transport is Transport.UDP:
            assert len(d.wire) <= _udp_limit(packet[:512])
        dns.message.from_wire(d.wire, question_only=True)  # an independent parser reads it


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=700), mutated()), st.sampled_from(SEEDS))
def test_upstream_replies_never_raise(reply: bytes, query: bytes) -> None:
    d = resolve(query, LOOKUP)
    if isinstance(d, Forward):
        out = finish_forward(d, d.query[:2] + reply[2:])
        assert out is None or len(out) <= d.limit
    try:
        fit(reply, 512)
    except Exception as e:  # only the family's error is allowed
        from netsim.errors import DNSWireError
        assert isinstance(e, DNSWireError)


# --------------------------------------------------------------------------------------------
# The running server

@pytest.fixture(scope="module")
def agent() -> Iterator[RunningAgent]:
    with FakeUpstream() as up, RunningAgent(LOOKUP, upstreams=(("127.0.0.1", up.port),), timeout=0.3,
                                            tcp_first_read=0.5, tcp_idle=0.5, uvloop=True) as a:
        yield a


def _check_alive(a: RunningAgent) -> None:
    for tcp in (False, True):
        q = dns.message.make_query("productpage.ns1.svc.cluster.local.", "A")
        r = (dns.query.tcp if tcp else dns.query.udp)(q, a.host, port=a.port, timeout=5)
        assert r.rcode() == dns.rcode.NOERROR and [rd.address for rs in r.answer for rd in rs] == ["9.9.9.9"]


_STATE: dict[str, int] = {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PACKETS, min_size=1, max_size=20), st.lists(st.tuples(st.integers(0, 65535), PACKETS), max_size=3))
def test_server_survives_fuzz(agent: RunningAgent, udp: list[bytes], tcp: list[tuple[int, bytes]]) -> None:
    if not _STATE:
        _check_alive(agent)
        _STATE["fds"] = open_fds()
        _STATE["tasks"] = agent.task_count()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in udp:
            s.sendto(p, (agent.host, agent.port))
    for length, body in tcp:  # arbitrary (often oversized or zero) length prefixes
        with socket.create_connection((agent.host, agent.port), timeout=2) as c:
            c.sendall(struct.pack("!H", length) + body)
    _check_alive(agent)


def test_server_fds_and_tasks_flat_after_fuzz(agent: RunningAgent) -> None:
    if not _STATE:
        pytest.skip("runs after test_server_survives_fuzz")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if agent.task_count() <= _STATE["tasks"] and open_fds() <= _STATE["fds"]:
            break
        time.sleep(0.05)
    assert agent.task_count() <= _STATE["tasks"]
    assert open_fds() <= _STATE["fds"]
    c = agent.server.counters
    assert c.queries > 0 and c.malformed > 0 and c.local > 0
