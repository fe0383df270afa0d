"""The pure resolver beyond the vectors: header rules, malformed input, size limits, truncation."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from netsim.dns.resolve import (
    CounterRNG,
    Drop,
    Forward,
    Outcome,
    Reply,
    Transport,
    build_lookup,
    finish_forward,
    fit,
    make_query,
    resolve,
    servfail,
)
from netsim.dns.table import NameInfo, NameTable

MANY = tuple(f"10.0.0.{i}" for i in range(1, 60))
LOOKUP = build_lookup(NameTable({
    "multi.example.com": NameInfo(ips=MANY, registry="External"),
    "one.example.com": NameInfo(ips=("192.0.2.1",), registry="External"),
}), namespace="ns1", search=("ns1.svc.cluster.local",))


def reply(query: bytes, transport: Transport = Transport.UDP) -> dns.message.Message:
    d = resolve(query, LOOKUP, transport=transport, rng=CounterRNG())
    assert isinstance(d, Reply)
    return dns.message.from_wire(d.wire)


def test_local_reply_header_fields() -> None:
    q = bytearray(make_query("one.example.com.", qid=0xBEEF))
    q[3] |= 0x10 | 0x20  # CD and AD set by the client
    m = reply(bytes(q))
    assert m.id == 0xBEEF
    assert m.flags & dns.flags.QR and m.flags & dns.flags.AA and m.flags & dns.flags.RD
    assert m.flags & dns.flags.CD and not m.flags & dns.flags.AD and not m.flags & dns.flags.RA
    assert m.rcode() == dns.rcode.NOERROR and m.answer[0].ttl == 30


def test_edns_query_gets_no_opt_in_local_reply() -> None:
    m = reply(make_query("one.example.com.", edns_size=1232))
    assert m.edns == -1 and m.opt is None


def test_udp_truncation_keeps_whole_records_and_sets_tc() -> None:
    m = reply(make_query("multi.example.com."))
    d = resolve(make_query("multi.example.com."), LOOKUP, rng=CounterRNG())
    assert isinstance(d, Reply) and len(d.wire) <= 512
    # compressed: 12 header + 23 question, then 16 bytes per record (owner is a pointer) → 29 fit
    assert m.flags & dns.flags.TC and len(m.answer[0]) == 29
    big = reply(make_query("multi.example.com.", edns_size=4096))
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 59
    tcp = reply(make_query("multi.example.com."), Transport.TCP)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 59


def test_small_replies_are_not_compressed() -> None:
    d = resolve(make_query("one.example.com.ns1.svc.cluster.local."), LOOKUP)
    assert isinstance(d, Reply)
    q, t = len(b"one.example.com.ns1.svc.cluster.local.") + 1, len(b"one.example.com.") + 1  # wire lengths
    assert len(d.wire) == 12 + (q + 4) + (q + 10 + t) + (t + 10 + 4)  # CNAME + A repeat their names in full
    owners = [rr.name.to_text() for rr in dns.message.from_wire(d.wire).answer]
    assert owners == ["one.example.com.ns1.svc.cluster.local.", "one.example.com."]


def test_shuffle_only_when_several_addresses_and_cacheable_flag() -> None:
    one = resolve(make_query("one.example.com."), LOOKUP, rng=CounterRNG())
    many = resolve(make_query("multi.example.com.", edns_size=4096), LOOKUP, rng=CounterRNG(7))
    assert isinstance(one, Reply) and one.cacheable
    assert isinstance(many, Reply) and not many.cacheable
    again = resolve(make_query("multi.example.com.", edns_size=4096), LOOKUP, rng=CounterRNG(7))
    assert isinstance(again, Reply) and again.wire == many.wire  # same counter, same order
    got = [rd.address for rr in dns.message.from_wire(many.wire).answer for rd in rr]
    assert sorted(got) == sorted(MANY) and got != list(MANY)


@pytest.mark.parametrize(("packet", "why"), [
    (b"", "shorter"), (b"\x00" * 11, "shorter"),
    (struct.pack("!HHHHHH", 1, 0x8100, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01", "response"),
])
def test_dropped(packet: bytes, why: str) -> None:
    d = resolve(packet, LOOKUP)
    assert isinstance(d, Drop) and why in d.reason


def test_notimp_and_formerr() -> None:
    q = bytearray(make_query("one.example.com.", qid=3))
    q[2] = (q[2] & 0x87) | (5 << 3)  # opcode UPDATE
    d = resolve(bytes(q), LOOKUP)
    assert isinstance(d, Reply) and d.outcome is Outcome.NOTIMP
    assert dns.message.from_wire(d.wire).rcode() == dns.rcode.NOTIMP
    two = struct.pack("!HHHHHH", 4, 0x100, 2, 0, 0, 0) + make_query("a.")[12:] * 2
    d = resolve(two, LOOKUP)
    assert isinstance(d, Reply) and d.outcome is Outcome.FORMERR and len(d.wire) == 12
    broken = make_query("one.example.com.", qid=5)[:-2]
    d = resolve(broken, LOOKUP)
    assert isinstance(d, Reply) and d.outcome is Outcome.FORMERR
    loop = struct.pack("!HHHHHH", 6, 0x100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    d = resolve(loop, LOOKUP)
    assert isinstance(d, Reply) and d.outcome is Outcome.FORMERR


def test_notify_is_answered_like_a_query_without_rd() -> None:
    q = bytearray(make_query("one.example.com.", qid=3))
    q[2] = (q[2] & 0x87) | (4 << 3)
    d = resolve(bytes(q), LOOKUP)
    assert isinstance(d, Reply) and d.outcome is Outcome.LOCAL
    assert not dns.message.from_wire(d.wire).flags & dns.flags.RD


def test_no_table_yet_is_servfail() -> None:
    d = resolve(make_query("one.example.com."), None)
    assert isinstance(d, Reply) and d.outcome is Outcome.NOT_READY
    assert dns.message.from_wire(d.wire).rcode() == dns.rcode.SERVFAIL


def test_forward_limits_and_upstream_reply_checks() -> None:
    f = resolve(make_query("www.example.org.", qid=9), LOOKUP)
    assert isinstance(f, Forward) and f.limit == 512 and f.read_size == 512
    e = resolve(make_query("www.example.org.", qid=9, edns_size=300), LOOKUP)
    assert isinstance(e, Forward) and e.limit == 512 and e.read_size == 512  # below 512 counts as 512
    t = resolve(make_query("one.example.com.", 15, qid=9), LOOKUP, transport=Transport.TCP)
    assert isinstance(t, Forward) and t.limit == 65535  # MX of a known name goes upstream too
    up = dns.message.make_response(dns.message.from_wire(f.query))
    up.flags |= dns.flags.RA
    wire = up.to_wire()
    assert finish_forward(f, wire) == wire
    assert finish_forward(f, b"\x00\x01" + wire[2:]) is None  # another ID
    assert finish_forward(f, wire[:2] + b"\x81") is None  # does not unpack
    sf = dns.message.from_wire(servfail(f))
    assert sf.rcode() == dns.rcode.SERVFAIL and not sf.flags & dns.flags.AA and sf.id == 9


def test_fit_recompresses_large_upstream_reply() -> None:
    q = dns.message.make_query("big.example.", "A")
    r = dns.message.make_response(q)
    rrset = r.find_rrset(r.answer, q.question[0].name, 1, dns.rdatatype.A, create=True)
    for i in range(100):
        rrset.add(dns.rdata.from_text(1, 1, f"10.1.0.{i}"), 30)
    out = fit(r.to_wire(), 512)
    m = dns.message.from_wire(out)
    assert len(out) <= 512 and m.flags & dns.flags.TC and 0 < len(m.answer[0]) < 100


def test_fit_without_question() -> None:
    rr = b"\x00" + struct.pack("!HHIH", 1, 1, 30, 4) + b"\x01\x02\x03\x04"
    msg = struct.pack("!HHHHHH", 1, 0x8000, 0, 40, 0, 0) + rr * 40
    out = fit(msg, 512)
    m = dns.message.from_wire(out)
    assert len(out) <= 512 and m.flags & dns.flags.TC and not m.question and len(m.answer[0]) == 1
    assert struct.unpack("!H", out[6:8])[0] == (512 - 12) // len(rr)


def test_fast_path_builds_the_same_bytes_as_the_general_path() -> None:
    from netsim.dns.resolve import ParsedQuery, _answer

    table = NameTable({"one.example.com": NameInfo(ips=("192.0.2.1",), registry="External"),
                       "v6.example.com": NameInfo(ips=("fd00::1",), registry="External")})
    lookup = build_lookup(table, namespace="ns1")
    for name in ("one.example.com.", "ONE.Example.com.", "v6.example.com."):
        for qtype in (1, 28):
            for flags in (0x0000, 0x0100, 0x0110, 0x2100, 0x0130, 0x0300):
                q = bytearray(make_query(name, qtype, qid=77))
                q[2:4] = struct.pack("!H", flags)
                d = resolve(bytes(q), lookup, rng=CounterRNG())
                assert isinstance(d, Reply) and d.outcome is Outcome.LOCAL and d.cacheable
                qname = bytes(q[12:-4])
                parsed = ParsedQuery(id=77, flags=flags, qname=qname, qtype=qtype, qclass=1, edns_size=None,
                                     question_wire=bytes(q[12:]))
                node = lookup.nodes[qname.lower()]
                assert d.wire == _answer(parsed, qname.lower(), node, 512, CounterRNG(), False)
