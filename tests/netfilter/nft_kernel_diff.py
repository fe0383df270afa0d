"""The nftables kernel-differential harness: load a ruleset with ``nft -f`` into the pod namespace of
``tests/trace/kernel_diff.py``, send probes for real, read ``nft -a monitor trace``, and compare it with
netsim's ``--format nft-trace`` line for line.

The probes are selected by a table of this harness (``inet nsim-trace``, priority -500, before everything)
whose chains set ``meta nftrace`` on the probes' first packets; its own lines are left out. Packet lines are
compared on the fields netsim models (devices, addresses, protocol, ports: :func:`packet_fields`); rule
lines whole, with the kernel's handle turned into the rule's position (netsim's, as the input had none).
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from netsim.lab.kerneltrace import nft_trace_lines, packet_fields
from netsim.lab.probe import WARMUP_SPORT
from netsim.lab.verify import Probe
from netsim.netfilter.engine import combine, compile_ruleset, trace, trace_branches
from netsim.netfilter.matches import Names
from netsim.netfilter.model import Family
from netsim.netfilter.nft import compile_nft, parse_nft
from netsim.netfilter.nft.model import Elements, Match, NftRuleset
from netsim.netfilter.packet import Netns
from netsim.netfilter.parse import parse_ruleset
from netsim.netfilter.render_trace import render_nft_trace
from netsim.netfilter.trace import Kind, Trace
from tests.trace.kernel_diff import (
    NFT_MONITOR,
    PEER4,
    PEER6,
    POD4,
    POD6,
    SPORT_HI,
    SPORT_LO,
    Pair,
    Result,
    _send,
    kernel_vs_netsim,
    monitored,
    pod_netns,
    sh,
)

TRACE_TABLE = "nsim-trace"
# nft resolves skuid/skgid names with this machine's databases when it loads a ruleset: netsim does the same
# when it is compared with that kernel (elsewhere tests keep the host out of their results)
SYSTEM_NAMES = Names(system=True)


def trace_table(port: str = "sport", tcp_flags: str = "syn") -> str:
    """The table that sets ``meta nftrace`` on probes' first packets, before everything (priority -500): those
    whose source port is a probe's (replies: ``port="dport"``, ``tcp_flags="syn|ack"``)."""
    rules = (f"    tcp {port} {SPORT_LO}-{SPORT_HI} tcp flags & (fin|syn|rst|ack) == {tcp_flags} meta nftrace set 1\n"
             f"    udp {port} {SPORT_LO}-{SPORT_HI} meta nftrace set 1\n")
    return (f"table inet {TRACE_TABLE} {{\n"
            f"  chain pre {{ type filter hook prerouting priority -500; policy accept;\n{rules}  }}\n"
            f"  chain out {{ type filter hook output priority -500; policy accept;\n{rules}  }}\n"
            "}\n")


TRACE_RULES = trace_table()
def _ports(rs: NftRuleset) -> set[int]:
    out: set[int] = set()
    for m in _matches(rs):
        if isinstance(m.value, Elements) and any(f.endswith("port") for f in m.fields):
            for e in m.value.items:
                for a in e:
                    if isinstance(a, tuple):
                        out.update({a[0], a[1]})
    return {p for p in out if 0 < p < SPORT_LO or p > SPORT_HI}


def _ids(rs: NftRuleset) -> set[int]:
    return {a[0] for m in _matches(rs) if m.fields[0] in ("meta skuid", "meta skgid") and isinstance(m.value, Elements)
            for e in m.value.items for a in e if isinstance(a, tuple)}


def _addrs(rs: NftRuleset, rng: random.Random) -> set[str]:
    from ipaddress import ip_address

    out: set[str] = set()
    for m in _matches(rs):
        if m.fields[0] in ("ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr") and isinstance(m.value, Elements):
            for e in m.value.items:
                lo, hi = e[0]  # type: ignore[misc]
                out.add(str(ip_address(lo if lo == hi else lo + 1 + rng.randrange(max(min(hi - lo - 1, 1 << 16), 1)))))
    return out


def _matches(rs: NftRuleset) -> list[Match]:
    return [e for t in rs.tables for c in t.chains for r in c.rules for e in r.exprs if isinstance(e, Match)]


def make_nft_probes(rs: NftRuleset, family: Family, seed: str, count: int, sports: object) -> list[Probe]:
    """Seeded probes as tests/trace/kernel_diff.make_probes makes them, from the nft ruleset's ports, ids
    and addresses."""
    rng = random.Random(seed)
    v4 = family is Family.IPV4
    pod, peer = (POD4, PEER4) if v4 else (POD6, PEER6)
    loopbacks = ["127.0.0.1", "127.0.0.6", "127.0.0.53"] if v4 else ["::1", "::6"]
    remote = ["10.0.0.5", "10.96.0.10", "1.1.1.1", peer] if v4 else ["fd00:abcd::5", "2001:db8::1", peer]
    rule_addrs = sorted(a for a in _addrs(rs, rng) if (":" in a) != v4)
    ports = sorted(_ports(rs) | {53, 80, 8080, 15001, 15006, 15008, 15053})
    ids = sorted(_ids(rs) | {0, 1337, 1000})
    probes: list[Probe] = []
    for i in range(count):
        proto = rng.choice(["tcp", "tcp", "udp"])
        dport = rng.choice(ports) if rng.random() < 0.8 else rng.randrange(1, SPORT_LO)
        sport = next(sports)  # type: ignore[call-overload]
        if i % 5 in (1, 3):
            dst = pod if rng.random() < 0.85 else rng.choice([a for a in rule_addrs if a not in loopbacks
                                                              and not a.startswith("127.")] or [pod])
            probes.append(Probe(proto=proto, src=peer, sport=sport, dst=dst, dport=dport, inbound=True))
            continue
        dst = rng.choice(loopbacks + [pod] * 2 + remote * 3 + rule_addrs)
        local = dst in loopbacks or dst == pod or dst.startswith("127.")
        src = rng.choice([*loopbacks[:2], pod]) if local else pod
        probes.append(Probe(proto=proto, src=src, sport=sport, dst=dst, dport=dport, uid=rng.choice(ids),
                            gid=rng.choice(ids)))
    return probes


def kernel_lines(text: str, positions: dict[tuple[str, str, str, int], int]) -> dict[int, list[str]]:
    """``nft -a monitor trace`` output → per probe source port, its lines as netsim prints them
    (``netsim.lab.kerneltrace.nft_trace_lines``, shared with ``lab verify``), the trace table's left out."""
    return nft_trace_lines(text, positions, sports=(SPORT_LO, SPORT_HI), skip_table=TRACE_TABLE)


def nft_trace_as_monitored(t: Trace) -> list[str]:
    """netsim's ``--format nft-trace`` lines of ``t`` as :func:`kernel_lines` gives the kernel's: packet lines
    on the fields netsim models."""
    out = []
    for ln in render_nft_trace(t).splitlines():
        head, packet, fields = ln.partition(" packet: ")
        out.append(f"{head} packet: {packet_fields(fields)}" if packet else ln)
    return out


def _positions(pod: str) -> dict[tuple[str, str, str, int], int]:
    listing = sh("ip", "netns", "exec", pod, "nft", "-a", "list", "ruleset").stdout
    rs = parse_nft(listing)
    return {(t.family.value, t.name, c.name, r.handle): i for t in rs.tables for c in t.chains
            for i, r in enumerate(c.rules, 1) if r.handle is not None}


_COUNTED = re.compile(r"^\[(\d+):\d+\] -A (\S+) ")


def legacy_nat_hits(pod: str) -> list[tuple[str, int]]:
    """The legacy nat rules whose packet counters moved since they were last zeroed: (chain, position);
    zeroes them. nat is consulted for a connection's first packet only, so a probe counts once there."""
    out = sh("ip", "netns", "exec", pod, "iptables-legacy-save", "-c", "-t", "nat").stdout
    sh("ip", "netns", "exec", pod, "iptables-legacy", "-t", "nat", "-Z")
    hits: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for ln in out.splitlines():
        m = _COUNTED.match(ln)
        if m is None:
            continue
        chain = m.group(2)
        seen[chain] = seen.get(chain, 0) + 1
        if int(m.group(1)):
            hits.append((chain, seen[chain]))
    return hits


def _legacy_hits(t: Trace) -> set[str]:
    return {f"legacy nat {s.chain} rule {s.position} matched" for s in t.steps
            if s.base is not None and s.base.backend == "iptables-legacy" and s.table == "nat"
            and s.kind is Kind.RULE and s.matched}


def run_nft_ruleset(pair: Pair, name: str, text: str, probes: list[Probe], iptables: str | None = None,
                    netns: Netns | None = None, legacy: str | None = None) -> tuple[Result, int]:
    """Load ``text`` (+ the trace table) into the pod, send ``probes`` (both families), compare kernel and
    netsim. Owner names resolve through this machine's groups and users, as ``nft -f`` resolves them here.
    The probes go in one batch per namespace: nft's monitor keeps up with a few dozen packets. Returns the
    result and how many probes the kernel traced at all (a ruleset without chains on a probe's path traces
    nothing, on both sides).

    ``iptables``: an ``iptables-save`` (IPv4) restored with iptables-nft first, so the namespace holds both
    backends; every line is compared, the iptables-nft chains' in nft's wording of their rules.

    ``legacy``: an ``iptables-save`` (IPv4) restored with iptables-legacy first (legacy x_tables, which the
    kernel's nft trace never shows): the nft lines are compared as always, and for the legacy side which nat
    rules each probe matched (their packet counters, read after each probe, sent one at a time)."""
    res = Result(name, len(probes))
    sh("ip", "netns", "exec", pair.pod, "nft", "flush", "ruleset")
    if legacy is not None:
        sh("ip", "netns", "exec", pair.pod, "iptables-legacy-restore", stdin=legacy)
        sh("ip", "netns", "exec", pair.pod, "iptables-legacy", "-t", "nat", "-Z")
    if iptables is not None:
        sh("ip", "netns", "exec", pair.pod, "iptables-restore", stdin=iptables)
    sh("ip", "netns", "exec", pair.pod, "nft", "-f", "-", stdin=text)
    sh("ip", "netns", "exec", pair.pod, "nft", "-f", "-", stdin=TRACE_RULES)
    positions = _positions(pair.pod)
    sentinel = Probe(proto="udp", src=POD4, sport=SPORT_HI, dst=PEER4, dport=9)
    legacy_hits: dict[int, list[tuple[str, int]]] = {}

    def send() -> None:
        if legacy is not None:
            for p in probes:
                _send(pair.peer if p.inbound else pair.pod, [p])
                legacy_hits[p.sport] = legacy_nat_hits(pair.pod)
        else:
            for ns, group in ((pair.pod, [p for p in probes if not p.inbound]),
                              (pair.peer, [p for p in probes if p.inbound])):
                if group:
                    _send(ns, group)

    traced = monitored(pair.pod, NFT_MONITOR, send, first=sentinel, last=replace(sentinel, sport=SPORT_HI - 1),
                     marks=(f"sport {SPORT_HI} ", f"sport {SPORT_HI - 1} "), quiet=0.0)
    kernel = kernel_lines(traced, positions)
    rs = parse_nft(text, SYSTEM_NAMES)
    compiled = {f: compile_nft(rs, f) for f in Family}
    parts = [compile_ruleset(parse_ruleset(legacy), backend="iptables-legacy")] if legacy is not None else []
    if iptables is not None:
        parts.append(compile_ruleset(parse_ruleset(iptables)))
    if parts:
        compiled[Family.IPV4] = combine([*parts, compiled[Family.IPV4]])

    ns = netns or pod_netns()
    for p in probes:
        got = kernel.get(p.sport, [])
        # a random draw (numgen) is one trace per value: the kernel's must be one of them
        wants = []
        warm: set[str] = set()
        if legacy is not None:
            got = [*got, *sorted({f"legacy nat {c} rule {n} matched" for c, n in legacy_hits.get(p.sport, [])})]
            # the probe tool's untraced warm-up datagram (uid 0, same addresses) passes the legacy nat chains too
            w = replace(p, proto="udp", sport=WARMUP_SPORT, uid=0, gid=0)
            warm = _legacy_hits(trace(compiled[Family(p.version)], w.packet(), ns))
        for t in trace_branches(compiled[Family(p.version)], p.packet(), ns):
            want = nft_trace_as_monitored(t)
            if legacy is not None:  # the warm-up is not NEW when an earlier one went to the same address
                wants.append(want + sorted(_legacy_hits(t)))
                want = want + sorted(_legacy_hits(t) | warm)
            wants.append(want)
        want = next((w for w in wants if w == got), wants[0])
        res.compared += 1
        if got != want:
            res.mismatches.append(f"{name} {p.describe()}:\n{kernel_vs_netsim(got, want)}")
    return res, sum(1 for p in probes if kernel.get(p.sport))
