"""The server's fast paths answer byte for byte what the core decides.

The running agent answers a query whose bytes after the ID it has answered before from its answer caches
(one for UDP, one for TCP), with the new ID patched in, and reads its UDP sockets in batches and its TCP
queries at an offset in the connection's buffer. None of that may change a byte: every query here goes to
a running agent twice (the second time from the cache) with different IDs, over UDP and over TCP
(pipelined on one connection), and each reply is compared with what :func:`resolve` (the slow path)
decides for the same bytes, the agent's random draws mirrored by a second counter. The queries are the
conformance vectors' (read in place) and seeded random ones: names of the table in mixed case, names it
does not know (forwarded; with no upstream, SERVFAIL), wildcard and search-domain names, names with
several addresses (shuffled, never cached), every query type and flag mix, EDNS sizes, oversized
datagrams, and broken messages.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from typing import Any

import pytest
from conftest import conformance_dir
from dns_helpers import RunningAgent, fake_upstream, fake_upstream_reply, fixture_lookup, load_dns_vectors

from netsim.dns.resolve import (
    UDP_READ_SIZE,
    CounterRNG,
    Drop,
    Forward,
    Lookup,
    Reply,
    Transport,
    build_lookup,
    finish_forward,
    make_query,
    name_to_wire,
    resolve,
    servfail,
)
from netsim.dns.table import NameInfo, NameTable

DATA = load_dns_vectors()
FIXTURES: dict[str, Any] = DATA["fixtures"]
QTYPES = (1, 28, 1, 28, 5, 16, 33, 255)  # A and AAAA most, then CNAME, TXT, SRV, ANY (forwarded)


def _expected(queries: list[bytes], lookup: Lookup, transport: Transport) -> list[bytes | None]:
    """What the agent must send for each query, in order (None: nothing), with no upstream configured."""
    rng = CounterRNG()  # the agent's draws, mirrored: they happen in query order, only on the slow path
    out: list[bytes | None] = []
    for q in queries:
        d = resolve(q, lookup, transport=transport, rng=rng)
        if isinstance(d, Reply):
            out.append(d.wire)
        elif isinstance(d, Forward):
            out.append(servfail(d))  # no upstream: every upstream failed
        else:
            assert isinstance(d, Drop)
            out.append(None)
    return out


def _over_udp(agent: RunningAgent, queries: list[bytes]) -> list[bytes | None]:
    out: list[bytes | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((agent.host, agent.port))
        for q in queries:
            s.send(q)
            s.settimeout(0.3 if _dropped(q) else 5)
            try:
                out.append(s.recv(65535))
            except TimeoutError:
                out.append(None)
    return out


def _dropped(q: bytes) -> bool:
    return isinstance(resolve(q, None, transport=Transport.UDP), Drop)


def _over_tcp(agent: RunningAgent, queries: list[bytes]) -> list[bytes]:
    """Every query pipelined on one connection (the agent's limit raised), the replies read in order."""
    with socket.create_connection((agent.host, agent.port), timeout=10) as s:
        s.sendall(b"".join(struct.pack("!H", len(q)) + q for q in queries))
        replies = []
        f = s.makefile("rb")
        for _ in range(sum(1 for q in queries if not _dropped_tcp(q))):
            n = struct.unpack("!H", f.read(2))[0]
            replies.append(f.read(n))
        return replies


def _dropped_tcp(q: bytes) -> bool:
    return isinstance(resolve(q, None, transport=Transport.TCP), Drop)


def _with_id(q: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + q[2:]


def _check(lookup: Lookup, queries: list[bytes]) -> int:
    """Each query twice (new IDs the second time) over UDP, then over TCP; returns the replies compared."""
    twice = [x for q in queries for x in (q, _with_id(q, (int.from_bytes(q[:2], "big") + 1) & 0xFFFF))]
    compared = 0
    with RunningAgent(lookup, uvloop=True, tcp_max_queries=1_000_000) as agent:
        udp = _over_udp(agent, twice)
        want_udp = _expected(twice, lookup, Transport.UDP)
        for q, got, want in zip(twice, udp, want_udp, strict=True):
            assert got == want, (q.hex(), got, want)
            compared += 1
        cached = agent.call(lambda: len(agent.server.answer_cache))
    assert cached > 0  # the second asks did come from the cache
    with RunningAgent(lookup, uvloop=True, tcp_max_queries=1_000_000) as agent:
        tcp = _over_tcp(agent, twice)
        want_tcp = [w for w in _expected(twice, lookup, Transport.TCP) if w is not None]
        assert len(tcp) == len(want_tcp)
        for got, want in zip(tcp, want_tcp, strict=True):
            assert got == want
            compared += 1
        assert agent.call(lambda: len(agent.server.tcp_answer_cache)) > 0
    return compared


def _random_case(rng: random.Random, wire: bytes) -> bytes:
    return bytes(b ^ 0x20 if 97 <= b <= 122 and rng.random() < 0.5 else b for b in wire)


def _query(rng: random.Random, name: str, qtype: int) -> bytes:
    """A query for ``name`` in random case, with random RD, opcode, AD/CD bits and EDNS size."""
    edns = rng.choice((None, None, 512, 1232, 4096, 100))
    q = bytearray(make_query(name, qtype, qid=rng.getrandbits(16), rd=rng.random() < 0.8, edns_size=edns))
    q[2] |= rng.choice((0, 0, 0, 0x10, 0x20, 0x08))  # opcode QUERY mostly, STATUS (2), NOTIFY (4), IQUERY (1)
    q[3] |= rng.choice((0, 0, 0x10, 0x20, 0x30))  # CD, AD
    n = len(name_to_wire(name))
    q[12:12 + n] = _random_case(rng, bytes(q[12:12 + n]))
    return bytes(q)


def _random_table(rng: random.Random) -> tuple[NameTable, list[str]]:
    entries: dict[str, NameInfo] = {}
    for i in range(150):
        label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(rng.randint(1, 20)))
        host = f"{label}{i}.{rng.choice(('svc.cluster.local', 'example.com', 'ns1.svc.cluster.local'))}"
        n4 = rng.choice((0, 1, 1, 1, 2, 3))
        n6 = rng.choice((0, 0, 1, 2)) if n4 else rng.choice((1, 2))
        ips = (*(f"10.{i}.{rng.randint(0, 255)}.{k}" for k in range(n4)), *(f"fd00::{i:x}:{k}" for k in range(n6)))
        entries[host] = NameInfo(ips=ips, registry=rng.choice(("Kubernetes", "External")), shortname=label + str(i),
                                 namespace="ns1")
    entries["*.wild.example.com"] = NameInfo(ips=("192.0.2.7",), registry="External")
    return NameTable(entries), list(entries)


def test_fast_paths_match_the_core_on_random_queries() -> None:
    rng = random.Random(2026)
    table, hosts = _random_table(rng)
    lookup = build_lookup(table, namespace="ns1", search=("ns1.svc.cluster.local", "svc.cluster.local"))
    names = [h.replace("*", "any") for h in hosts] + [f"x{i}.unknown.example" for i in range(20)]
    names += [h.split(".")[0] for h in hosts[:40]] + ["deep.er.wild.example.com", "a." * 60 + "long.example"]
    queries = [_query(rng, rng.choice(names), rng.choice(QTYPES)) for _ in range(500)]
    # oversized (a UDP read keeps 512 bytes), a response, too short, two questions, a compression loop
    queries += [make_query(hosts[0], 1, qid=9) + b"\x00" * 600, make_query("x.unknown.example", 1) + b"\x01" * 600]
    queries += [b"\x12\x34\x81\x00" + make_query("x.example", 1)[4:], b"\x00\x01\x00", make_query("a.example")[:5],
                make_query("a.b", 1, qid=3)[:4] + b"\x00\x02" + make_query("a.b")[6:] + b"\xc0\x0c\x00\x01\x00\x01",
                make_query("a.b", 1, qid=4)[:12] + b"\xc0\x0c\x00\x01\x00\x01"]
    assert sum(len(q) > UDP_READ_SIZE for q in queries) >= 1
    kinds = {type(resolve(q, lookup, rng=CounterRNG())).__name__ for q in queries}
    assert kinds == {"Reply", "Forward", "Drop"}  # every decision is among them
    shuffled = [q for q in queries if isinstance(d := resolve(q, lookup, rng=CounterRNG()), Reply) and not d.cacheable]
    assert shuffled  # answers that draw from the RNG are among them (never cached)
    assert _check(lookup, queries) >= 2 * len(queries)


AGENT_FIXTURES = sorted(k for k, f in FIXTURES.items() if "name_table" in f)  # the others are upstreams


@pytest.mark.parametrize("fixture", AGENT_FIXTURES or ["conformance-missing"])
def test_fast_paths_match_the_core_on_the_conformance_queries(fixture: str) -> None:
    conformance_dir("istio-dns")
    rng = random.Random(fixture)
    lookup = fixture_lookup(FIXTURES[fixture])
    queries = []
    for v in DATA["vectors"]:
        if v["kind"] == "query" and v["fixture"] == fixture:
            name = v["query"]["name"]
            qtype = {"A": 1, "AAAA": 28}.get(v["query"]["type"], 16)
            queries += [make_query(name, qtype, qid=4242), _query(rng, name, qtype)]
    for name in [*FIXTURES[fixture]["name_table"]][:30]:
        queries += [_query(rng, name, 1), _query(rng, name, 28), _query(rng, name.split(".")[0], 1)]
    assert queries
    assert _check(lookup, queries) >= 2 * len(queries)


def test_forwarded_repeats_match_the_core_with_an_upstream() -> None:
    """A forwarded query asked again skips the parse (the decision is reused with the new ID) and an upstream
    reply seen before skips the re-packing: every reply still equals the core's finish_forward of that
    upstream reply, over plain, EDNS and truncating (giant) answers, NXDOMAIN and a record."""
    lookup = build_lookup(NameTable({"known.example.com": NameInfo(ips=("192.0.2.1",), registry="External")}),
                          namespace="ns1")
    rng = random.Random(7)
    queries = []
    for name in ("www.bing.com", "WWW.Bing.com", "nx.unknown.example", "giant", "giant-tc", "x.giant"):
        for edns in (None, 1232, 4096):
            base = make_query(name, 1, qid=rng.getrandbits(16), edns_size=edns)
            queries += [_with_id(base, rng.getrandbits(16)) for _ in range(3)]  # the same bytes, new IDs
    with fake_upstream() as up, RunningAgent(lookup, uvloop=True, upstreams=(("127.0.0.1", up.port),),
                                             shuffle_upstreams=False, tcp_max_queries=1_000_000) as agent:
        got = _over_udp(agent, queries)
        memo = agent.call(lambda: (len(agent.server.forward_cache), len(agent.server.fit_memo)))
        got_tcp = _over_tcp(agent, queries)  # a new upstream connection per query, driven by callbacks
        memo_tcp = agent.call(lambda: (len(agent.server.tcp_forward_cache), len(agent.server.fit_memo)))
        assert up.queries == 2 * len(queries)  # every query went upstream, whatever was memoised
    for q, reply, reply_tcp in zip(queries, got, got_tcp, strict=True):
        d = resolve(q, lookup, transport=Transport.UDP, rng=CounterRNG())
        assert isinstance(d, Forward)
        want = finish_forward(d, fake_upstream_reply(d.query)) or servfail(d)  # too big for the read: SERVFAIL
        assert reply == want, (q.hex(), reply, want)
        t = resolve(q, lookup, transport=Transport.TCP, rng=CounterRNG())
        assert isinstance(t, Forward)
        want_tcp = finish_forward(t, fake_upstream_reply(t.query))
        assert reply_tcp == want_tcp, (q.hex(), reply_tcp, want_tcp)
    assert memo[0] == len(queries) // 3  # one decision per distinct query …
    assert memo[1] > 0  # … and the repeated upstream replies were re-packed from the memo
    assert memo_tcp[0] == len(queries) // 3  # the same over TCP (a memo of its own: other limits)
    assert memo_tcp[1] > memo[1]


@pytest.mark.parametrize("parallel", [False, True])
def test_tcp_forwards_by_address_by_name_and_in_parallel_mode_agree(parallel: bool) -> None:
    """An upstream given as an address is asked through the callback-driven exchange; one given by name (and
    parallel mode) through the task-driven one. Both send the same bytes for the same queries."""
    lookup = build_lookup(NameTable({"known.example.com": NameInfo(ips=("192.0.2.1",), registry="External")}),
                          namespace="ns1")
    queries = [make_query(n, 1, qid=i, edns_size=e) for i, (n, e) in enumerate(
        [("www.bing.com", None), ("nx.unknown.example", 1232), ("giant", None), ("known.example.com", None),
         ("giant-tc", 4096), ("www.bing.com", None)])]
    replies = []
    with fake_upstream() as up:
        for host in ("127.0.0.1", "localhost"):
            with RunningAgent(lookup, uvloop=True, upstreams=((host, up.port),), parallel=parallel) as agent:
                replies.append(_over_tcp(agent, queries))
                callback_driven = agent.call(lambda: agent.server._tcp_upstreams is not None)
                assert callback_driven == (host == "127.0.0.1")
    assert replies[0] == replies[1]
    for q, got in zip(queries, replies[0], strict=True):
        d = resolve(q, lookup, transport=Transport.TCP, rng=CounterRNG())
        want = d.wire if isinstance(d, Reply) else finish_forward(d, fake_upstream_reply(q)) if isinstance(
            d, Forward) else None
        assert got == want


def test_a_reused_forward_decision_carries_the_new_id_everywhere() -> None:
    """Forward.again (a repeated forward, not parsed again) equals the core's decision for the new bytes: its
    parsed query too, which servers built on the agent's shell answer from (the lab's cluster DNS)."""
    lookup = build_lookup(NameTable({"known.example.com": NameInfo(ips=("192.0.2.1",), registry="External")}),
                          namespace="ns1")
    for transport in Transport:
        first = resolve(make_query("x.unknown.example", 28, qid=1, edns_size=1232), lookup, transport=transport)
        assert isinstance(first, Forward)
        again_q = _with_id(first.query, 0xBEEF)
        want = resolve(again_q, lookup, transport=transport)
        assert first.again(again_q) == want
        assert servfail(first.again(again_q)) == servfail(want) and servfail(want)[:2] == b"\xbe\xef"


@pytest.mark.parametrize("mode", ["silent", "garbage", "refused"])
def test_repeated_forwards_that_fail_get_the_cores_servfail(mode: str) -> None:
    """A repeated forward is sent without a Forward of its own (the first one's decision, this query's bytes);
    when its upstream fails (times out, answers garbage, or is not there: ICMP port unreachable on the pooled
    socket) the SERVFAIL it gets is the core's for its own bytes, its ID included, at the same time as the
    first query's. Queries sent back to back are read in one batch, so their upstream sends are held
    together until it is read."""
    lookup = build_lookup(NameTable({"known.example.com": NameInfo(ips=("192.0.2.1",), registry="External")}),
                          namespace="ns1")
    rng = random.Random(mode)
    base = make_query("x.unknown.example", 28, qid=1, edns_size=1232)
    queries = [_with_id(base, rng.getrandbits(16)) for _ in range(4)]
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    with fake_upstream("silent" if mode == "refused" else mode) as up:
        port = dead_port if mode == "refused" else up.port
        with RunningAgent(lookup, uvloop=True, upstreams=(("127.0.0.1", port),), timeout=0.3) as agent:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((agent.host, agent.port))
                s.settimeout(3)
                t0 = time.monotonic()
                for q in queries:
                    s.send(q)
                got = {}
                for _ in queries:
                    r = s.recv(65535)
                    got[r[:2]] = r
                elapsed = time.monotonic() - t0
            if mode == "silent":
                assert 0.25 <= elapsed < 0.6  # each at the 0.3 s timeout
            else:
                assert elapsed < 0.25  # at once, not at the timeout
            assert agent.call(lambda: (len(agent.server.forward_cache), agent.server.inflight)) == (1, 0)
            time.sleep(0.4)  # past the timeout: the deadline timer has dropped the deadlines of answered queries
            assert agent.call(lambda: (len(agent.server._deadlines), agent.server._deadline_timer)) == (0, None)
    for q in queries:
        d = resolve(q, lookup, transport=Transport.UDP, rng=CounterRNG())
        assert isinstance(d, Forward)
        assert got[q[:2]] == servfail(d)


def test_a_server_that_answers_forwards_itself_gets_each_querys_own_forward() -> None:
    """A subclass that answers from ``spawn_udp`` (the lab's cluster DNS) is given a repeated query's own
    Forward, the core's decision for its bytes, not the first one's."""
    from netsim.dns.server import DNSServer, ServerConfig

    lookup = build_lookup(NameTable({}), namespace="ns1")
    given: list[Forward] = []

    class Answering(DNSServer):
        def spawn_udp(self, fwd: Forward, addr: Any, proto: Any) -> None:
            given.append(fwd)
            proto.transport.sendto(servfail(fwd), addr)

    queries = [_with_id(make_query("x.unknown.example", 1, edns_size=4096), qid) for qid in (5, 6, 0xABCD)]
    agent = RunningAgent(lookup)
    agent.server = Answering(ServerConfig(listen=(("127.0.0.1", 0),), reload_interval=0), lambda: lookup)
    with agent:
        got = _over_udp(agent, queries)
    assert given == [resolve(q, lookup, transport=Transport.UDP) for q in queries]
    assert got == [servfail(f) for f in given]
