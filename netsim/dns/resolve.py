"""What pilot-agent's DNS proxy answers: query bytes + lookup table → reply bytes, or "forward".

Theory of operation (spec/istio-dns.md sections 4–8):

* :func:`build_lookup` turns a :class:`~netsim.dns.table.NameTable` into a :class:`Lookup` once per
  table: the alternate names of every entry, its A/AAAA records and the first-search-domain CNAME
  shortcuts, all pre-encoded as wire bytes keyed by the lower-cased wire name. Nothing is parsed or
  formatted at query time.
* :func:`resolve` is a pure function of the query bytes, the transport, the lookup and a 16-bit
  random source (the hook Istio's tests replace with a counter: :class:`CounterRNG`). It returns a
  :class:`Reply` (bytes to send), a :class:`Forward` (send the query upstream, then call
  :func:`finish_forward` with the upstream's bytes, or :func:`servfail` when every upstream failed)
  or a :class:`Drop` (miekg/dns sends nothing: header unreadable, or a response).
* Every reply goes through miekg's truncation rule: uncompressed if it fits, otherwise compressed
  and cut at a record boundary with TC set (:func:`fit`).

Never does: IO of any kind (no sockets, no clocks, no files), logging, or asyncio. Importing this
module is cheap; the server shell lives in ``netsim.dns.server``.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import random
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from netsim.dns.table import KUBERNETES, NameInfo, NameTable
from netsim.errors import DNSWireError

TTL = 30  # every locally built record (spec 4 step 3)
UDP_READ_SIZE = 512  # miekg's default UDP read buffer for incoming queries (spec 7)
MIN_UDP_SIZE = 512  # RFC 6891: anything smaller counts as 512
TCP_MAX = 65535
MAX_NAME_WIRE = 255  # miekg maxDomainNameWireOctets
MAX_POINTERS = 126  # miekg maxCompressionPointers: stops label loops

QTYPE_A = 1
QTYPE_CNAME = 5
QTYPE_OPT = 41
QTYPE_AAAA = 28
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NOTIMP = 4

OPCODE_QUERY = 0
OPCODE_NOTIFY = 4

_HDR = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")

RNG = Callable[[], int]
_T = TypeVar("_T")


class Transport(enum.Enum):
    """How the query arrived (and how it is forwarded): decides size limits (spec 6, 7)."""

    UDP = "udp"
    TCP = "tcp"


class CounterRNG:
    """Istio's test hook for miekg's ``dns.Id``: each draw returns the previous value + 1 (16 bits)."""

    __slots__ = ("value",)

    def __init__(self, start: int = 0) -> None:
        self.value = start & 0xFFFF

    def set(self, value: int) -> None:
        """Set the counter; the next draw returns ``value + 1``."""
        self.value = value & 0xFFFF

    def __call__(self) -> int:
        self.value = (self.value + 1) & 0xFFFF
        return self.value


def system_rng() -> int:
    """A random 16-bit draw (what miekg's ``dns.Id`` gives outside tests)."""
    return random.getrandbits(16)


def shuffle(items: list[_T], rng: RNG) -> None:
    """miekg-style shuffle driven by 16-bit draws, in place (spec 5.4).

    Two items: swap when a draw is even. Three or more: ``j = 0, 1, …`` while ``j < n × (R() mod 4 + 1)``
    (drawn again at every test), each pass swapping positions ``R() mod n`` and ``R() mod n`` (the
    second bumped by one when equal).
    """
    n = len(items)
    if n < 2:
        return
    if n == 2:
        if rng() % 2 == 0:
            items[0], items[1] = items[1], items[0]
        return
    j = 0
    while j < n * (rng() % 4 + 1):
        q = rng() % n
        p = rng() % n
        if q == p:
            p = (p + 1) % n
        items[q], items[p] = items[p], items[q]
        j += 1


# --------------------------------------------------------------------------------------------
# Names

def name_to_wire(name: str) -> bytes:
    """``"a.b."`` → ``b"\\x01a\\x01b\\x00"`` (lower-casing is the caller's business)."""
    text = name[:-1] if name.endswith(".") else name
    out = bytearray()
    if text:
        for label in text.split("."):
            raw = label.encode("utf-8")
            if not raw or len(raw) > 63:
                raise DNSWireError(f"name {name!r}: empty or over-long label")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > MAX_NAME_WIRE:
        raise DNSWireError(f"name {name!r} is longer than 255 octets")
    return bytes(out)


def _read_name(data: bytes, off: int) -> tuple[bytes, int]:
    """Decode a possibly compressed name at ``off``: (uncompressed wire, offset after it).

    Follows miekg's UnpackDomainName limits: at most 126 pointers, 255 octets, no 0x40/0x80 labels.
    """
    out = bytearray()
    end = -1
    pointers = 0
    n_data = len(data)
    while True:
        if off >= n_data:
            raise DNSWireError("name runs past the end of the message")
        c = data[off]
        kind = c & 0xC0
        if kind == 0:
            if c == 0:
                out.append(0)
                if len(out) > MAX_NAME_WIRE:
                    raise DNSWireError("name longer than 255 octets")
                return bytes(out), (off + 1 if end < 0 else end)
            if off + 1 + c > n_data:
                raise DNSWireError("label runs past the end of the message")
            out += data[off:off + 1 + c]
            if len(out) > MAX_NAME_WIRE:
                raise DNSWireError("name longer than 255 octets")
            off += 1 + c
        elif kind == 0xC0:
            if off + 2 > n_data:
                raise DNSWireError("truncated compression pointer")
            if end < 0:
                end = off + 2
            pointers += 1
            if pointers > MAX_POINTERS:
                raise DNSWireError("too many compression pointers (label loop)")
            off = ((c & 0x3F) << 8) | data[off + 1]
        else:
            raise DNSWireError(f"bad label type 0x{kind:02x}")


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """What the agent reads from a query: the first question and the EDNS UDP size."""

    id: int
    flags: int
    qname: bytes  # uncompressed wire, original case
    qtype: int
    qclass: int
    edns_size: int | None
    question_wire: bytes  # the question as it will be echoed (uncompressed, original case)


def _read_rr(data: bytes, off: int) -> tuple[bytes, int, int, int, int, int]:
    """One resource record at ``off``: (uncompressed owner, type, class, TTL, rdata offset, offset after).

    Checks what miekg checks for every record: the header and rdata lie inside the message, and
    A/AAAA rdata is 4/16 octets.
    """
    owner, off = _read_name(data, off)
    if off + 10 > len(data):
        raise DNSWireError("record header runs past the end of the message")
    rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, off)
    rd = off + 10
    end = rd + rdlen
    if end > len(data):
        raise DNSWireError("record data runs past the end of the message")
    if (rtype == QTYPE_A and rdlen != 4) or (rtype == QTYPE_AAAA and rdlen != 16):
        raise DNSWireError("bad address record length")
    return owner, rtype, rclass, ttl, rd, end


def _skip_rr(data: bytes, off: int) -> tuple[int, int, int, int]:
    """Skip one resource record of a query: (offset after, type, class, rdata offset); EDNS options checked."""
    _, rtype, rclass, _ttl, rd, end = _read_rr(data, off)
    if rtype == QTYPE_OPT:
        o = rd
        while o < end:
            if o + 4 > end:
                raise DNSWireError("truncated EDNS option")
            olen = struct.unpack_from("!H", data, o + 2)[0]
            o += 4 + olen
            if o > end:
                raise DNSWireError("EDNS option runs past its record")
    return end, rtype, rclass, rd


def parse_query(data: bytes) -> ParsedQuery:
    """Parse a query the way the agent needs it; raises DNSWireError (miekg would answer FORMERR).

    Assumes the header is readable and QDCOUNT == 1 (see :func:`resolve` for the header rules).
    """
    qid, flags, _qd, an, ns, ar = _HDR.unpack_from(data, 0)
    qname, off = _read_name(data, 12)
    if off + 4 > len(data):
        raise _PartialQuestion("question type/class missing")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    off += 4
    edns: int | None = None
    for i in range(an + ns + ar):
        off, rtype, rclass, _rd = _skip_rr(data, off)
        if rtype == QTYPE_OPT and i >= an + ns:
            edns = rclass
    return ParsedQuery(id=qid, flags=flags, qname=qname, qtype=qtype, qclass=qclass, edns_size=edns,
                       question_wire=qname + struct.pack("!HH", qtype, qclass))


class _PartialQuestion(DNSWireError):
    pass


# --------------------------------------------------------------------------------------------
# The lookup table (spec 4)

def effective_domain(domain: str, namespace: str) -> str:
    """``proxyDomain``: the --domain value without its first label when that label is the namespace."""
    d = domain.strip(".")
    first, _, rest = d.partition(".")
    return rest if first == namespace and rest else d


def alternate_names(host: str, info: NameInfo, namespace: str, proxy_domain: str, *,
                    se_trailing_dot: bool = True) -> list[str]:
    """The names pilot-agent answers for one table entry (spec 4 step 1), with trailing dots.

    ``se_trailing_dot=False`` (before 1.13) doubles the dot of a non-Kubernetes host that has one.
    """
    if info.registry != KUBERNETES:
        return [host if host.endswith(".") and se_trailing_dot else host + "."]
    if host.endswith("."):
        return []
    names = [host + "."]
    if proxy_domain and host.endswith(proxy_domain):
        first = proxy_domain.split(".")[0]
        names.append(f"{info.shortname}.{info.namespace}.")
        names.append(f"{info.shortname}.{info.namespace}.{first}.")
        names.extend(a + "." for a in info.alt_hosts)
        if info.namespace == namespace:
            names.append(f"{info.shortname}.")
    return names


@dataclass(frozen=True, slots=True)
class _Node:
    """One known lookup name: its records (suffixes after the owner) or the CNAME it points to."""

    name: bytes  # lower-cased wire
    a: tuple[bytes, ...] = ()
    aaaa: tuple[bytes, ...] = ()
    cname_target: bytes | None = None  # lower-cased wire of the target, for search-domain shortcuts
    cname_rr: bytes = b""  # suffix of the CNAME record (type … rdata)


def _addr_suffix(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    packed = ip.packed
    rtype = QTYPE_A if ip.version == 4 else QTYPE_AAAA
    return _RR_FIXED.pack(rtype, CLASS_IN, TTL, len(packed)) + packed


@dataclass(frozen=True, slots=True)
class Lookup:
    """The agent's precomputed answers for one NameTable (spec 4). Build with :func:`build_lookup`."""

    nodes: Mapping[bytes, _Node]
    namespace: str
    proxy_domain: str
    search: tuple[str, ...]
    table: NameTable = field(repr=False, compare=False)


def build_lookup(table: NameTable, *, namespace: str, domain: str = "", search: Iterable[str] = (),
                 se_trailing_dot: bool = True, skip_s0_cname: bool = True) -> Lookup:
    """Precompute everything the agent answers from ``table`` (spec 4).

    ``namespace`` is the proxy's namespace, ``domain`` the agent's ``--domain`` value (default
    ``<namespace>.svc.cluster.local``), ``search`` the resolv.conf search list (only the first
    domain is used, for the CNAME shortcuts). The two switches reproduce older releases
    (see :mod:`netsim.dns.profile`): before 1.13 a ServiceEntry host's trailing dot was doubled;
    before 1.27 names already ending in the first search domain also got a CNAME shortcut.
    """
    dom = domain or f"{namespace}.svc.cluster.local"
    pdomain = effective_domain(dom, namespace)
    search_t = tuple(search)
    s0 = search_t[0].lower() if search_t else ""
    if s0 and not s0.endswith("."):
        s0 += "."
    nodes: dict[bytes, _Node] = {}
    cnames: list[tuple[bytes, bytes]] = []
    for host, info in table.entries.items():
        names = [n.lower() for n in alternate_names(host, info, namespace, pdomain,
                                                    se_trailing_dot=se_trailing_dot)]
        v4: list[bytes] = []
        v6: list[bytes] = []
        for raw in info.ips:
            try:
                ip = ipaddress.ip_address(raw)
            except ValueError:
                continue
            (v4 if ip.version == 4 else v6).append(_addr_suffix(ip))
        if not v4 and not v6:
            continue
        for n in names:
            try:
                key = name_to_wire(n)
            except DNSWireError:
                continue
            nodes[key] = _Node(name=key, a=tuple(v4), aaaa=tuple(v6))
            if s0 and (not n.endswith(s0) or not skip_s0_cname):
                expanded = n + s0
                if expanded not in names:
                    with contextlib.suppress(DNSWireError):
                        cnames.append((name_to_wire(expanded), key))
    for key, target in cnames:
        t = nodes[target]
        nodes[key] = _Node(name=key, a=t.a, aaaa=t.aaaa, cname_target=target,
                           cname_rr=_RR_FIXED.pack(QTYPE_CNAME, CLASS_IN, TTL, len(target)) + target)
    return Lookup(nodes=nodes, namespace=namespace, proxy_domain=pdomain, search=search_t, table=table)


def lookup_keys(table: NameTable, *, namespace: str, domain: str = "") -> set[str]:
    """Istio's ``TestBuildAlternateHosts`` view: table keys ∪ generated names (no CNAME shortcuts)."""
    pdomain = effective_domain(domain or f"{namespace}.svc.cluster.local", namespace)
    out = set(table.entries)
    for host, info in table.entries.items():
        out.update(alternate_names(host, info, namespace, pdomain))
    return out


# --------------------------------------------------------------------------------------------
# Decisions

class Outcome(enum.Enum):
    """Why a :class:`Reply` was produced (the server counts them)."""

    LOCAL = "answered locally"
    FORMERR = "malformed query (FORMERR)"
    NOTIMP = "opcode not implemented (NOTIMP)"
    NOT_READY = "no name table yet (SERVFAIL)"


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``wire`` back to the client.

    ``cacheable``: the reply is a function of the query bytes after the ID alone (no random draw
    was made), so a shell may memoise ``query[2:] → wire[2:]`` for the lifetime of the lookup.
    """

    wire: bytes
    outcome: Outcome
    cacheable: bool = False


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``query`` (the request itself) to the upstreams over ``transport``.

    ``read_size`` is the UDP read buffer for the upstream reply (a bigger datagram is a transport
    error), ``limit`` the size the reply to the client is truncated to.
    """

    query: bytes
    parsed: ParsedQuery
    transport: Transport
    limit: int
    read_size: int

    @property
    def id(self) -> int:
        return self.parsed.id

    def again(self, query: bytes) -> Forward:
        """This decision for ``query``, which has the same bytes after the ID as this one's (resolve is pure):
        no parse, ``parsed`` copied with the new ID (servers built on the agent's shell, such as the lab's
        cluster DNS, answer from ``parsed``)."""
        q = self.parsed
        parsed = ParsedQuery((query[0] << 8) | query[1], q.flags, q.qname, q.qtype, q.qclass, q.edns_size,
                             q.question_wire)
        return Forward(query, parsed, self.transport, self.limit, self.read_size)


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing (miekg drops it): ``reason`` says why."""

    reason: str


Decision = Reply | Forward | Drop


def _header(qid: int, flags: int, qd: int, an: int, ns: int = 0, ar: int = 0) -> bytes:
    return _HDR.pack(qid, flags, qd, an, ns, ar)


def _reply_flags(req_flags: int, *, aa: bool, rcode: int) -> int:
    opcode = (req_flags >> 11) & 0xF
    flags = 0x8000 | (opcode << 11) | rcode
    if aa:
        flags |= 0x0400
    if opcode == OPCODE_QUERY:
        flags |= req_flags & 0x0100  # RD
        flags |= req_flags & 0x0010  # CD
    return flags


def _formerr(data: bytes, question: bytes = b"") -> bytes:
    qid, flags = struct.unpack_from("!HH", data, 0)
    # header echoed with QR set, AA cleared, opcode QUERY, rcode FORMERR
    out_flags = (flags & ~(0x7800 | 0x0400 | 0x000F)) | 0x8000 | RCODE_FORMERR
    return _header(qid, out_flags, 1 if question else 0, 0) + question


def _limit(parsed: ParsedQuery, transport: Transport) -> int:
    if transport is Transport.TCP:
        return TCP_MAX
    if parsed.edns_size is not None:
        return max(parsed.edns_size, MIN_UDP_SIZE)
    return MIN_UDP_SIZE


def resolve(query: bytes, lookup: Lookup | None, *, transport: Transport = Transport.UDP,
            rng: RNG = system_rng) -> Decision:
    """Decide what pilot-agent does with ``query`` (spec 5 and 8). Never raises for any input.

    ``lookup`` is ``None`` before the first table (→ SERVFAIL). ``rng`` is the 16-bit random source
    of the answer shuffle (a :class:`CounterRNG` reproduces Istio's tests).
    """
    if transport is Transport.UDP and len(query) > UDP_READ_SIZE:
        query = query[:UDP_READ_SIZE]
    if len(query) < 12:
        return Drop("shorter than a DNS header")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(query, 0)
    if flags & 0x8000:
        return Drop("a response, not a query")
    opcode = (flags >> 11) & 0xF
    if opcode not in (OPCODE_QUERY, OPCODE_NOTIFY):
        out_flags = (flags & ~0x000F) | 0x8000 | RCODE_NOTIMP
        return Reply(_header(qid, out_flags, 0, 0), Outcome.NOTIMP)
    if qd != 1 or an > 1 or ns > 1 or ar > 2:
        return Reply(_formerr(query), Outcome.FORMERR)

    # fast path: one plain question, nothing else (what dnsperf and most stub resolvers send)
    parsed: ParsedQuery | None = None
    if an == 0 and ns == 0 and ar == 0:
        off = 12
        n = len(query)
        while off < n:
            c = query[off]
            if c == 0 or c > 63:
                break
            off += 1 + c
        if off < n and query[off] == 0 and off + 5 <= n and off - 11 <= MAX_NAME_WIRE:
            qname = query[12:off + 1]
            qtype, qclass = struct.unpack_from("!HH", query, off + 1)
            if lookup is not None and qtype in (QTYPE_A, QTYPE_AAAA):
                # the commonest answer (an exact name with at most one address) without building values:
                # the same bytes _answer builds, with no draw of the RNG
                key = qname.lower()
                node = lookup.nodes.get(key)
                if node is not None and node.cname_target is None:
                    recs = node.a if qtype == QTYPE_A else node.aaaa
                    if len(recs) < 2 and off + 5 + (len(key) + len(recs[0]) if recs else 0) <= MIN_UDP_SIZE:
                        out_flags = 0x8400 | (flags & 0x7800) | ((flags & 0x0110) if opcode == OPCODE_QUERY else 0)
                        if recs:
                            wire = _HDR.pack(qid, out_flags, 1, 1, 0, 0) + query[12:off + 5] + key + recs[0]
                        else:
                            wire = _HDR.pack(qid, out_flags, 1, 0, 0, 0) + query[12:off + 5]
                        return Reply(wire, Outcome.LOCAL, cacheable=True)
            parsed = ParsedQuery(id=qid, flags=flags, qname=qname, qtype=qtype, qclass=qclass, edns_size=None,
                                 question_wire=query[12:off + 5])
    if parsed is None:
        try:
            parsed = parse_query(query)
        except _PartialQuestion:
            return Reply(_formerr(query), Outcome.FORMERR)
        except DNSWireError:
            try:
                qname, off = _read_name(query, 12)
                question = qname + query[off:off + 4] if off + 4 <= len(query) else b""
            except DNSWireError:
                question = b""
            return Reply(_formerr(query, question), Outcome.FORMERR)

    limit = _limit(parsed, transport)
    if lookup is None:
        return Reply(_servfail_wire(parsed), Outcome.NOT_READY)
    if parsed.qtype != QTYPE_A and parsed.qtype != QTYPE_AAAA:
        return _forward(query, parsed, transport, limit)
    key = parsed.qname.lower()
    node = lookup.nodes.get(key)
    wildcard = False
    if node is None:
        rest = key
        while rest[0]:
            rest = rest[1 + rest[0]:]
            if not rest[0]:
                break
            node = lookup.nodes.get(b"\x01*" + rest)
            if node is not None:
                wildcard = True
                break
        if node is None:
            return _forward(query, parsed, transport, limit)
    recs = node.a if parsed.qtype == QTYPE_A else node.aaaa
    return Reply(_answer(parsed, key, node, limit, rng, wildcard), Outcome.LOCAL, cacheable=len(recs) < 2)


def _forward(query: bytes, parsed: ParsedQuery, transport: Transport, limit: int) -> Forward:
    read = max(parsed.edns_size or 0, MIN_UDP_SIZE) if transport is Transport.UDP else TCP_MAX
    return Forward(query=query, parsed=parsed, transport=transport, limit=limit, read_size=read)


def _answer(parsed: ParsedQuery, key: bytes, node: _Node, limit: int, rng: RNG, wildcard: bool) -> bytes:
    recs = node.a if parsed.qtype == QTYPE_A else node.aaaa
    flags = _reply_flags(parsed.flags, aa=True, rcode=RCODE_NOERROR)
    if not recs:
        return _header(parsed.id, flags, 1, 0) + parsed.question_wire
    order = list(recs)
    shuffle(order, rng)
    if node.cname_target is not None:
        owner = node.cname_target
        body = [key + node.cname_rr] + [owner + r for r in order]
    else:
        body = [key + r for r in order]
    size = 12 + len(parsed.question_wire) + sum(map(len, body))
    if size <= limit:
        return _header(parsed.id, flags, 1, len(body)) + parsed.question_wire + b"".join(body)
    return _truncate(parsed.id, flags, parsed.question_wire, [(b, 0) for b in body], limit)


# --------------------------------------------------------------------------------------------
# Truncation (spec 7) and upstream replies

def _split_rrs(data: bytes, off: int, count: int) -> tuple[list[tuple[bytes, int, int]], int]:
    """Records as (uncompressed wire, type, section-relative index); rdata names decompressed."""
    out = []
    for _ in range(count):
        owner, rtype, rclass, ttl, rd_start, end = _read_rr(data, off)
        rdata = _plain_rdata(data, rtype, rd_start, end)
        out.append((owner + _RR_FIXED.pack(rtype, rclass, ttl, len(rdata)) + rdata, rtype, 0))
        off = end
    return out, off


# rdata layouts with names miekg may compress: (leading fixed bytes, number of names, trailing)
_NAME_RDATA: dict[int, tuple[int, int]] = {2: (0, 1), 5: (0, 1), 12: (0, 1), 39: (0, 1), 15: (2, 1),
                                           6: (0, 2), 33: (6, 1)}


def _plain_rdata(data: bytes, rtype: int, start: int, end: int) -> bytes:
    layout = _NAME_RDATA.get(rtype)
    if layout is None:
        return data[start:end]
    fixed, names = layout
    out = bytearray(data[start:start + fixed])
    off = start + fixed
    for _ in range(names):
        name, off = _read_name(data, off)
        out += name
    if off > end:
        raise DNSWireError("record data overruns its length")
    out += data[off:end]
    return bytes(out)


def _compress_into(buf: bytearray, names: dict[bytes, int], wire: bytes) -> None:
    """Append uncompressed name ``wire`` to ``buf``, compressed against earlier names (case-sensitive)."""
    i = 0
    while wire[i]:
        suffix = wire[i:]
        ptr = names.get(suffix)
        if ptr is not None:
            buf += struct.pack("!H", 0xC000 | ptr)
            return
        if len(buf) < 0x4000:
            names[suffix] = len(buf)
        n = wire[i]
        buf += wire[i:i + 1 + n]
        i += 1 + n
    buf.append(0)


def _compressed_rr(buf: bytearray, names: dict[bytes, int], rr: bytes) -> None:
    owner, off = _read_name(rr, 0)
    _compress_into(buf, names, owner)
    rtype, _rclass, _ttl, rdlen = _RR_FIXED.unpack_from(rr, off)
    rdata = rr[off + 10:off + 10 + rdlen]
    layout = _NAME_RDATA.get(rtype)
    if layout is None or rtype not in (2, 5, 12, 15, 6):  # miekg compresses NS, CNAME, PTR, MX, SOA
        buf += rr[off:off + 10] + rdata
        return
    len_at = len(buf) + 8
    buf += rr[off:off + 10]
    start = len(buf)
    fixed, count = layout
    buf += rdata[:fixed]
    o = fixed
    for _ in range(count):
        name, o = _read_name(rdata, o)
        _compress_into(buf, names, name)
    buf += rdata[o:]
    struct.pack_into("!H", buf, len_at, len(buf) - start)


def _truncate(qid: int, flags: int, question: bytes, records: list[tuple[bytes, int]], limit: int,
              counts: tuple[int, int, int] | None = None, opt: bytes = b"") -> bytes:
    """miekg ``Msg.Truncate`` for a reply that does not fit uncompressed (spec 7)."""
    an, ns, ar = counts if counts is not None else (len(records), 0, 0)
    size = max(limit, MIN_UDP_SIZE) - len(opt)
    buf = bytearray(12)
    names: dict[bytes, int] = {}
    if question:
        qname, _ = _read_name(question, 0)
        _compress_into(buf, names, qname)
        buf += question[len(qname):]
    kept = 0
    if len(buf) < size:
        for rr, _sect in records:
            before = len(buf)
            _compressed_rr(buf, names, rr)
            if len(buf) > size:
                del buf[before:]
                break
            kept += 1
            if len(buf) == size:
                break
    kept_an = min(kept, an)
    kept_ns = min(max(kept - an, 0), ns)
    kept_ar = min(max(kept - an - ns, 0), ar)
    truncated = kept < len(records) or bool(flags & 0x0200)
    if truncated:
        flags |= 0x0200
    buf += opt
    struct.pack_into("!HHHHHH", buf, 0, qid, flags, 1 if question else 0, kept_an, kept_ns,
                     kept_ar + (1 if opt else 0))
    return bytes(buf)


def fit(message: bytes, limit: int) -> bytes:
    """Re-pack a whole message with miekg's truncation rule; raises DNSWireError if it does not parse.

    Uncompressed when that fits ``limit``; otherwise compressed and cut at a record boundary (answer,
    then authority, then additional; an OPT record set aside and re-added), TC set if anything was cut.
    """
    if len(message) < 12:
        raise DNSWireError("shorter than a DNS header")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(message, 0)
    off = 12
    questions = []
    for _ in range(qd):
        qn, off = _read_name(message, off)
        if off + 4 > len(message):
            raise DNSWireError("question runs past the end of the message")
        questions.append(qn + message[off:off + 4])
        off += 4
    rrs, off = _split_rrs(message, off, an + ns + ar)
    opt = b""
    records: list[tuple[bytes, int]] = []
    for i, (rr, rtype, _) in enumerate(rrs):
        if rtype == QTYPE_OPT and i >= an + ns and not opt:
            opt = rr
            continue
        records.append((rr, 0))
    n_ar = ar - (1 if opt else 0)
    plain = _header(qid, flags, qd, an, ns, ar) + b"".join(questions) + b"".join(r for r, _ in records) + opt
    if len(plain) <= max(limit, MIN_UDP_SIZE):
        return plain
    # miekg keeps every question; netsim only forwards single-question queries, so more is rare
    return _truncate(qid, flags, questions[0] if questions else b"", records, limit, (an, ns, n_ar), opt)


def upstream_id_matches(forward: Forward, reply: bytes) -> bool:
    """Whether ``reply`` carries the query's ID (a UDP reply that does not is skipped, spec 6)."""
    return len(reply) >= 2 and struct.unpack_from("!H", reply, 0)[0] == forward.id


def finish_forward(forward: Forward, reply: bytes) -> bytes | None:
    """The bytes to send the client for an upstream ``reply``, or ``None`` if it is a transport error.

    A UDP reply larger than the read buffer, one that does not unpack, or one with another ID is a
    transport error (the next upstream is tried). Otherwise the reply goes back as is, only
    re-truncated to the client's limit (spec 6, 7).
    """
    if forward.transport is Transport.UDP and len(reply) > forward.read_size:
        return None
    if not upstream_id_matches(forward, reply):
        return None
    try:
        return fit(reply, forward.limit)
    except (DNSWireError, IndexError, struct.error):
        return None


def _servfail_wire(parsed: ParsedQuery) -> bytes:
    flags = _reply_flags(parsed.flags, aa=False, rcode=RCODE_SERVFAIL)
    return _header(parsed.id, flags, 1, 0) + parsed.question_wire


def servfail(forward: Forward) -> bytes:
    """The reply when every upstream failed: SERVFAIL, AA=0, the question, no records (spec 6)."""
    return _servfail_wire(forward.parsed)


def record(owner: bytes, rtype: int, rdata: bytes, ttl: int = TTL) -> bytes:
    """One whole resource record, uncompressed: ``owner`` (wire name), ``rtype``, class IN, ``ttl``, ``rdata``."""
    return owner + _RR_FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


def local_reply(parsed: ParsedQuery, limit: int, *, rcode: int = RCODE_NOERROR, aa: bool = True,
                answer: Sequence[bytes] = (), authority: Sequence[bytes] = ()) -> bytes:
    """A reply to ``parsed`` made of whole records (:func:`record`), cut to ``limit`` by miekg's truncation rule
    (spec 7). For answers that are not the agent's own (the lab's cluster DNS stand-in)."""
    flags = _reply_flags(parsed.flags, aa=aa, rcode=rcode)
    body = [*answer, *authority]
    wire = _header(parsed.id, flags, 1, len(answer), len(authority)) + parsed.question_wire + b"".join(body)
    if len(wire) <= limit:
        return wire
    return _truncate(parsed.id, flags, parsed.question_wire, [(rr, 0) for rr in body], limit,
                     (len(answer), len(authority), 0))


def make_query(name: str, qtype: int = QTYPE_A, *, qid: int = 0, rd: bool = True,
               edns_size: int | None = None) -> bytes:
    """A plain query for ``name`` (for the CLI and tests)."""
    flags = 0x0100 if rd else 0
    opt = b""
    if edns_size is not None:
        opt = b"\x00" + _RR_FIXED.pack(QTYPE_OPT, edns_size, 0, 0)
    return _header(qid, flags, 1, 0, 0, 1 if opt else 0) + name_to_wire(name) + struct.pack("!HH", qtype,
                                                                                              CLASS_IN) + opt


__all__ = [
    "TTL",
    "CounterRNG",
    "Decision",
    "Drop",
    "Forward",
    "Lookup",
    "Outcome",
    "ParsedQuery",
    "Reply",
    "Transport",
    "alternate_names",
    "build_lookup",
    "effective_domain",
    "finish_forward",
    "fit",
    "local_reply",
    "lookup_keys",
    "make_query",
    "name_to_wire",
    "parse_query",
    "record",
    "resolve",
    "servfail",
    "shuffle",
    "system_rng",
]
