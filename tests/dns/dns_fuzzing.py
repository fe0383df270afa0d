"""Fuzzing material of the DNS agent, shared by tests/dns/test_dns_fuzz.py and bench/dns_fuzz.py.

A small name table, well-formed seed queries, hand-crafted hostile packets and the mutations applied
to them. Imports only netsim's pure core, so the bench can load it without pytest.
"""

from __future__ import annotations

import random
import struct

from netsim.dns.resolve import build_lookup, make_query
from netsim.dns.table import NameInfo, NameTable

NAMESPACE = "ns1"
SEARCH = ("ns1.svc.cluster.local", "svc.cluster.local")
TABLE = NameTable({
    "productpage.ns1.svc.cluster.local": NameInfo(ips=("9.9.9.9",), registry="Kubernetes", shortname="productpage",
                                                  namespace="ns1"),
    "multi.example.com": NameInfo(ips=tuple(f"10.0.0.{i}" for i in range(1, 60)), registry="External"),
    "*.wild.example": NameInfo(ips=("10.9.9.9", "fd00::9"), registry="External"),
})
LOOKUP = build_lookup(TABLE, namespace=NAMESPACE, search=SEARCH)
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


def mutate(base: bytes, rng: random.Random) -> bytes:
    """Up to six mutations of ``base``: flip a byte, cut the tail, insert bytes, set a section count,
    or write a compression pointer after the header. ``rng`` may be Hypothesis's, so examples shrink."""
    b = bytearray(base)
    for _ in range(rng.randrange(7)):
        op = rng.randrange(5)
        if op == 0 and b:  # flip
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:  # cut
            del b[rng.randrange(len(b)):]
        elif op == 2:  # insert
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randrange(9))
        elif op == 3 and len(b) >= 12:  # count
            i = rng.choice((4, 6, 8, 10))
            b[i:i + 2] = struct.pack("!H", rng.randrange(65536))
        elif op == 4 and len(b) > 13:  # pointer
            i = rng.randrange(12, len(b) - 1)
            b[i:i + 2] = struct.pack("!H", 0xC000 | rng.randrange(0x4000))
    return bytes(b)


def packet(rng: random.Random) -> bytes:
    """One fuzz packet: random bytes (one in five), else a mutated seed or crafted packet."""
    if rng.random() < 0.2:
        return rng.randbytes(rng.randrange(600))
    return mutate(rng.choice(SEEDS + CRAFTED), rng)
