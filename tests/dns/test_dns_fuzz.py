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
from dns_helpers import FakeUpstream, RunningAgent, open_fds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsim.dns.resolve import (
    Drop,
    Forward,
    Reply,
    Transport,
    build_lookup,
    finish_forward,
    fit,
    make_query,
    resolve,
)
from netsim.dns.table import NameInfo, NameTable

TABLE = NameTable({
    "productpage.ns1.svc.cluster.local": NameInfo(ips=("9.9.9.9",), registry="Kubernetes", shortname="productpage",
                                                  namespace="ns1"),
    "multi.example.com": NameInfo(ips=tuple(f"10.0.0.{i}" for i in range(1, 60)), registry="External"),
    "*.wild.example": NameInfo(ips=("10.9.9.9", "fd00::9"), registry="External"),
})
LOOKUP = build_lookup(TABLE, namespace="ns1", search=("ns1.svc.cluster.local", "svc.cluster.local"))
SEEDS = [
    make_query("productpage.", 1, qid=7),
    make_query("a.b.wild.example.ns1.svc.cluster.local.", 1, qid=8, edns_size=1232),
    make_query("multi.example.com.", 1, qid=9),
    make_query("www.example.org.", 15, qid=10),
    make_query("Multi.Example.COM.", 28, qid=11, edns_size=4096),
]


def _hdr(qd: int, an: int, ns: int, ar: int, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", 0x4242, flags, qd, an, ns, ar)


CRAFTED = [
    b"",
    b"\x00",
    _hdr(1, 0, 0, 0)[:11],  # truncated header
    _hdr(1, 0, 0, 0),  # header only, question missing
    _hdr(1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # label loop: pointer to itself
    _hdr(1, 0, 0, 0) + b"\x01a\xc0\x0c\x00\x01\x00\x01",  # loop through a label
    _hdr(1, 0, 0, 0) + b"\xc3\xff\x00\x01\x00\x01",  # pointer out of range
    _hdr(1, 65535, 65535, 65535) + SEEDS[0][12:],  # huge counts
    _hdr(1, 1, 0, 0) + SEEDS[0][12:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\xff\xff",  # rdlength past end
    _hdr(1, 0, 0, 1) + SEEDS[0][12:] + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x08\x00\x08\x00\xff",  # bad opt
    _hdr(0, 0, 0, 0),  # no question
    _hdr(2, 0, 0, 0) + SEEDS[0][12:] * 2,
    _hdr(1, 0, 0, 0, flags=0x8000) + SEEDS[0][12:],  # a response
    _hdr(1, 0, 0, 0, flags=0x2800) + SEEDS[0][12:],  # opcode UPDATE
    _hdr(1, 0, 0, 0) + b"\x40abc\x00\x00\x01\x00\x01",  # reserved label type
    _hdr(1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # name > 255 octets
    SEEDS[0] + b"trailing garbage",
    SEEDS[0] * 40,  # > 512 bytes over UDP
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(SEEDS + CRAFTED)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "count", "pointer"]))
        if op == "flip" and base:
            i = draw(st.integers(0, len(base) - 1))
            base[i] = draw(st.integers(0, 255))
        elif op == "cut" and base:
            del base[draw(st.integers(0, len(base) - 1)):]
        elif op == "insert":
            i = draw(st.integers(0, len(base)))
            base[i:i] = draw(st.binary(max_size=8))
        elif op == "count" and len(base) >= 12:
            i = draw(st.sampled_from([4, 6, 8, 10]))
            base[i:i + 2] = struct.pack("!H", draw(st.integers(0, 65535)))
        elif op == "pointer" and len(base) > 13:
            i = draw(st.integers(12, len(base) - 2))
            base[i:i + 2] = struct.pack("!H", 0xC000 | draw(st.integers(0, 0x3FFF)))
    return bytes(base)


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
