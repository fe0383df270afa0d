"""The kernel-differential harness: send probes for real in throw-away namespaces, read the kernel's
``xtables-monitor --trace``, and compare it step for step with netsim's ``xtables-trace`` output.

Used by ``tests/trace/test_kernel_differential.py`` (bounded, seeded) and ``bench/`` (bigger runs).
Only namespaces this module creates are touched (a pod netns and a peer netns joined by a veth);
the host namespace's netfilter is never changed. See spec/netfilter.md §4 for the method.

The monitors' output is read by ``netsim.lab.kerneltrace`` (shared with ``netsim lab verify``), and the
probes are sent by ``python -m netsim.lab.probe``. IPv4 is compared line for line with ``xtables-monitor
--trace`` (PACKET and TRACE lines, rule text included). For IPv6 the pinned xtables-monitor (1.8.9) cannot
print rules with layer-4 matches and exits, so IPv6 uses ``nft -a monitor trace``: same events, handles and
verdicts, nft's rule syntax; there the comparison is by table, chain, rule position and verdict.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from netsim.lab.kerneltrace import (
    RETURN_AS_PRINTED,
    Positions,
    handle_positions,
    kernel_view,
    monitor_noise,
    parse_monitor,
    parse_nft_monitor,
)
from netsim.lab.verify import Probe
from netsim.netfilter import Family, Match, Option, Rule, Ruleset, Table, Target, render_save
from netsim.netfilter.engine import compile_ruleset, trace
from netsim.netfilter.model import BUILTIN_CHAINS, Chain
from netsim.netfilter.packet import FwmarkRoute, Interface, Listener, Netns, Proto
from netsim.netfilter.render_trace import render_xtables

LISTENER = Path(__file__).with_name("listen_helper.py")
TPROXY_MARK, TPROXY_TABLE = 0x539, 133  # Istio's (spec/istio-iptables.md §6)
POD4, PEER4, POD6, PEER6 = "10.244.0.5", "10.244.0.1", "fd00:244::5", "fd00:244::1"
# ambient (spec/istio-ambient-capture.md §7): ip rule fwmark 0x111/0xfff lookup 100 pref 32764, local default dev lo
AMBIENT_ROUTE = (0x111, 0xFFF, 100, 32764)
# a second device for ambient's virtual interfaces (§2.2, rule 7): its name comes from the caller
VIRT4, VPEER4, VIRT6, VPEER6 = "10.10.0.5", "10.10.0.1", "fd00:10::5", "fd00:10::1"
# Probes use source ports in this range, selected by the TRACE rules; destination ports are kept
# outside it so that replies (whose source port is the probe's destination port) are never traced.
SPORT_LO, SPORT_HI = 20000, 59999  # the two highest are the sentinels'
DEBUG = False
BATCH = 4
# How long to wait for the monitor to show a sentinel: at load 10+ on 2 cores subscribing took over 5 s.
MONITOR_WAIT_SECONDS = 20


def sh(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, text=True, capture_output=True, check=check)


@dataclass
class Pair:
    pod: str
    peer: str


@contextmanager
def namespaces(*, ambient: bool = False, peer_addrs: tuple[str, ...] = (), virtual: str | None = None
               ) -> Iterator[Pair]:
    """A pod netns (eth0 10.244.0.5/24, fd00:244::5/64, lo with ::6) and a peer netns over a veth.
    Always deleted afterwards.

    ``ambient``: the pod has istio-cni's policy routing (:data:`AMBIENT_ROUTE`) instead of TPROXY's;
    ``peer_addrs``: more addresses the peer may send from (ambient's probe SNAT addresses); ``virtual``: a
    second veth named so in the pod (VIRT4/VIRT6, the peer's end VPEER4/VPEER6)."""
    tag = uuid.uuid4().hex[:6]
    pair = Pair(f"nsim-pod-{tag}", f"nsim-peer-{tag}")
    try:
        sh("ip", "netns", "add", pair.pod)
        sh("ip", "netns", "add", pair.peer)
        for ns in (pair.pod, pair.peer):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"v0{tag}", "netns", pair.pod, "type", "veth", "peer", "name", "v1", "netns", pair.peer)
        sh("ip", "-n", pair.pod, "link", "set", f"v0{tag}", "name", "eth0")
        sh("ip", "-n", pair.pod, "addr", "add", f"{POD4}/24", "dev", "eth0")
        sh("ip", "-n", pair.pod, "addr", "add", f"{POD6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", pair.pod, "addr", "add", "::6/128", "dev", "lo", "nodad")
        sh("ip", "-n", pair.pod, "link", "set", "eth0", "up")
        sh("ip", "-n", pair.peer, "addr", "add", f"{PEER4}/24", "dev", "v1")
        sh("ip", "-n", pair.peer, "addr", "add", f"{PEER6}/64", "dev", "v1", "nodad")
        sh("ip", "-n", pair.peer, "link", "set", "v1", "up")
        # Permanent neighbour entries: a ruleset whose filter INPUT rejects ICMPv6 (the ip6tables lock-down of the
        # 1.0-1.4 script) would otherwise stop neighbour discovery, and inbound probes would depend on a cache
        # entry left over from the ruleset before.
        macs = {ns: json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", dev).stdout)[0]["address"]
                for ns, dev in ((pair.pod, "eth0"), (pair.peer, "v1"))}
        for ns, dev, addr, other in ((pair.peer, "v1", POD4, pair.pod), (pair.peer, "v1", POD6, pair.pod),
                                     (pair.pod, "eth0", PEER4, pair.peer), (pair.pod, "eth0", PEER6, pair.peer)):
            sh("ip", "-n", ns, "neigh", "replace", addr, "lladdr", macs[other], "dev", dev, "nud", "permanent")
        sh("ip", "-n", pair.pod, "route", "add", "default", "via", PEER4)
        sh("ip", "-n", pair.pod, "-6", "route", "add", "default", "via", PEER6)
        # The peer sends everything else to the pod, so inbound probes may carry any destination.
        sh("ip", "-n", pair.peer, "route", "add", "default", "via", POD4)
        sh("ip", "-n", pair.peer, "-6", "route", "add", "default", "via", POD6)
        # TPROXY's policy routing, as istio-iptables sets it up (spec/netfilter.md §1.7), or ambient's (§7).
        mark, mask, table, pref = AMBIENT_ROUTE if ambient else (TPROXY_MARK, 0xFFFFFFFF, TPROXY_TABLE, 0)
        for v in ("-4", "-6"):
            sh("ip", "-n", pair.pod, v, "rule", "add", "fwmark", f"{mark:#x}/{mask:#x}", "lookup", str(table),
               *(("pref", str(pref)) if pref else ()))
            sh("ip", "-n", pair.pod, v, "route", "add", "local", "0.0.0.0/0" if v == "-4" else "::/0", "dev", "lo",
               "table", str(table))
        for addr in peer_addrs:
            six = ":" in addr
            sh("ip", "-n", pair.peer, "addr", "add", f"{addr}/{128 if six else 32}", "dev", "v1",
               *(("nodad",) if six else ()))
        if virtual is not None:
            sh("ip", "link", "add", f"v2{tag}", "netns", pair.pod, "type", "veth", "peer", "name", "v2", "netns",
               pair.peer)
            sh("ip", "-n", pair.pod, "link", "set", f"v2{tag}", "name", virtual)
            for ns, dev, a4, a6 in ((pair.pod, virtual, VIRT4, VIRT6), (pair.peer, "v2", VPEER4, VPEER6)):
                sh("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev)
                sh("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad")
                sh("ip", "-n", ns, "link", "set", dev, "up")
        listener = subprocess.Popen(["ip", "netns", "exec", pair.pod, sys.executable, str(LISTENER)],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
            yield pair
        finally:
            listener.kill()
            listener.wait()
    finally:
        sh("ip", "netns", "del", pair.pod, check=False)
        sh("ip", "netns", "del", pair.peer, check=False)


def pod_netns(*, ambient: bool = False, virtual: str | None = None) -> Netns:
    """The pod namespace as :func:`namespaces` builds it, and listen_helper.py's sockets."""
    lo = Interface.of("lo", "127.0.0.1/8", "::1/128", "::6/128")
    eth = Interface.of("eth0", f"{POD4}/24", f"{POD6}/64")
    extra = (Interface.of(virtual, f"{VIRT4}/24", f"{VIRT6}/64"),) if virtual is not None else ()
    listeners = (Listener(port=15006, transparent=True), Listener(port=15001), Listener(port=8080),
                 Listener(port=15053, proto=Proto.UDP))
    mark, mask, table, _ = AMBIENT_ROUTE if ambient else (TPROXY_MARK, 0xFFFFFFFF, TPROXY_TABLE, 0)
    return Netns(interfaces=(lo, eth, *extra), default_iface="eth0", listeners=listeners,
                 fwmark_routes=(FwmarkRoute(mark=mark, mask=mask, table=table),))


def with_trace_rules(ruleset: Ruleset, *, port: str = "--sport", tcp_flags: str = "SYN") -> Ruleset:
    """``ruleset`` plus TRACE rules at the top of raw PREROUTING/OUTPUT selecting probe source ports (replies:
    ``port="--dport"``, ``tcp_flags="SYN,ACK"``)."""
    # TCP: the SYN only, so a completed handshake (a listener answered) adds no traced packets.
    syn = Option("--tcp-flags", ("FIN,SYN,RST,ACK", tcp_flags))
    rules = tuple(
        Rule(proto=p, matches=(Match(p, (Option(port, (f"{SPORT_LO}:{SPORT_HI}",)),
                                         *((syn,) if p == "tcp" else ()))),), target=Target("TRACE"))
        for p in ("tcp", "udp")
    )
    tables = list(ruleset.tables)
    raw = ruleset.table("raw")
    if raw is None:
        raw = Table("raw", tuple(Chain(c, "ACCEPT") for c in BUILTIN_CHAINS["raw"]))
        tables.append(raw)
    chains = tuple(replace(c, rules=rules + c.rules) if c.name in ("PREROUTING", "OUTPUT") else c for c in raw.chains)
    tables = [Table("raw", chains) if t.name == "raw" else t for t in tables]
    return Ruleset(ruleset.family, tuple(tables))


def _ports_of(ruleset: Ruleset) -> set[int]:
    out: set[int] = set()
    for t in ruleset.tables:
        for c in t.chains:
            for r in c.rules:
                opts = [o for m in r.matches for o in m.options] + list(r.target.options if r.target else ())
                for o in opts:
                    if o.name in ("--dport", "--dports", "--sport", "--to-ports", "--on-port"):
                        for item in o.args[0].split(","):
                            for part in re.split("[:-]", item):
                                if part.isdigit():
                                    out.add(int(part))
    return {p for p in out if not SPORT_LO <= p <= SPORT_HI and p > 0}


def _ids_of(ruleset: Ruleset) -> set[int]:
    out: set[int] = set()
    for t in ruleset.tables:
        for c in t.chains:
            for r in c.rules:
                for m in r.matches:
                    for o in m.options:
                        if o.name in ("--uid-owner", "--gid-owner"):
                            out.update(int(x) for x in o.args[0].split("-"))
    return out


def _addrs_of(ruleset: Ruleset, rng: random.Random) -> set[str]:
    out: set[str] = set()
    for t in ruleset.tables:
        for c in t.chains:
            for r in c.rules:
                for net in (r.src, r.dst):
                    if net is None:
                        continue
                    if net.num_addresses == 1:
                        out.add(str(net.network_address))
                    else:
                        span = min(net.num_addresses - 2, 1 << 16)
                        out.add(str(net.network_address + 1 + rng.randrange(max(span, 1))))
    return out


def make_probes(ruleset: Ruleset, seed: str, count: int, sports: Iterator[int]) -> list[Probe]:
    """``count`` seeded random probes: three in five locally generated (varied uid/gid, local and
    remote destinations), the rest arriving from the peer."""
    rng = random.Random(seed)
    v4 = ruleset.family is Family.IPV4
    pod, peer = (POD4, PEER4) if v4 else (POD6, PEER6)
    loopbacks = ["127.0.0.1", "127.0.0.6", "127.0.0.53"] if v4 else ["::1", "::6"]
    remote = ["10.0.0.5", "10.96.0.10", "1.1.1.1", peer] if v4 else ["fd00:abcd::5", "2001:db8::1", peer]
    rule_addrs = sorted(a for a in _addrs_of(ruleset, rng) if (":" in a) != v4)
    ports = sorted(_ports_of(ruleset) | {53, 80, 8080, 15001, 15006, 15008, 15020, 15053, 15090})
    ids = sorted(_ids_of(ruleset) | {0, 1337, 1000})
    probes: list[Probe] = []
    for i in range(count):
        proto = rng.choice(["tcp", "tcp", "udp"])
        dport = rng.choice(ports) if rng.random() < 0.8 else rng.choice([rng.randrange(1, SPORT_LO),
                                                                            rng.randrange(SPORT_HI + 1, 65536)])
        sport = next(sports)
        if i % 5 in (1, 3):
            dst = pod if rng.random() < 0.85 else rng.choice([a for a in rule_addrs if a not in loopbacks] or [pod])
            if v4 and ipaddress.ip_address(dst).is_loopback:
                dst = pod
            probes.append(Probe(proto=proto, src=peer, sport=sport, dst=dst, dport=dport, inbound=True))
            continue
        dst = rng.choice(loopbacks + [pod] * 2 + remote * 3 + rule_addrs)
        local = ipaddress.ip_address(dst).is_loopback or dst == pod
        if not local and ipaddress.ip_address(dst).is_loopback:
            local = True
        src = rng.choice([*loopbacks[:2], pod]) if local else pod
        uid, gid = rng.choice(ids), rng.choice(ids)
        probes.append(Probe(proto=proto, src=src, sport=sport, dst=dst, dport=dport, uid=uid, gid=gid))
    return probes


def pod_handle_positions(pod: str, family: Family) -> Positions:
    """nft rule handle → 1-based position in its chain, for every rule in the pod's ruleset."""
    out = sh("ip", "netns", "exec", pod, "nft", "-j", "-a", "list", "ruleset").stdout
    return handle_positions(out, "ip" if family is Family.IPV4 else "ip6")[0]


def _send(ns: str, batch: list[Probe]) -> None:
    sh("ip", "netns", "exec", ns, sys.executable, "-m", "netsim.lab.probe",
       stdin=json.dumps([p.wire() for p in batch]))


XTABLES_MONITOR = ("xtables-monitor", "--trace", "-4")
NFT_MONITOR = ("nft", "-a", "monitor", "trace")


@dataclass
class Monitor:
    """A trace monitor running in a namespace, and the lines it printed so far (read by a thread)."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def running(self) -> bool:
        return self.process.poll() is None

    def shows(self, mark: str, since: int = 0) -> bool:
        return any(mark in ln for ln in self.lines[since:])  # a copy: the reader thread appends meanwhile


@contextmanager
def monitoring(ns: str, cmd: Sequence[str]) -> Iterator[Monitor]:
    """``cmd`` (``XTABLES_MONITOR`` or ``NFT_MONITOR``) line-buffered in ``ns`` for the block, its stderr with
    its stdout; stopped after the block."""
    process = subprocess.Popen(["ip", "netns", "exec", ns, "stdbuf", "-oL", *cmd],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monitor = Monitor(process)
    reader = threading.Thread(target=lambda: monitor.lines.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        yield monitor
    finally:
        process.terminate()
        process.wait(timeout=5)
        reader.join(timeout=5)


def monitored(ns: str, cmd: Sequence[str], send: Callable[[], None], *, first: Probe, last: Probe,
              marks: tuple[str, str], quiet: float = 0.2) -> str:
    """What ``cmd`` prints in ``ns`` while ``send()`` sends the probes, between two sentinel probes sent from
    ``ns``: ``first`` again and again until the monitor shows ``marks[0]`` (it has subscribed: at load 10+ on
    2 cores that took over 5 s), ``last`` after the probes until it shows ``marks[1]`` (everything before it
    was printed), each wait bounded by :data:`MONITOR_WAIT_SECONDS`, with ``quiet`` seconds before and after
    ``last`` for the probes' last packets to be traced (the nft first-packet harness has always done without)."""
    with monitoring(ns, cmd) as monitor:
        deadline = time.monotonic() + MONITOR_WAIT_SECONDS
        while not monitor.shows(marks[0]) and time.monotonic() < deadline and monitor.running():
            _send(ns, [first])
            time.sleep(0.1)
        seen = len(monitor.lines)
        send()
        time.sleep(quiet)
        _send(ns, [last])
        deadline = time.monotonic() + MONITOR_WAIT_SECONDS
        while not monitor.shows(marks[1], seen) and time.monotonic() < deadline and monitor.running():
            time.sleep(0.05)
        time.sleep(quiet)
    return "".join(monitor.lines)


def kernel_vs_netsim(got: list[str], want: list[str]) -> str:
    """The unified diff of the kernel's trace lines and netsim's, for a mismatch's message."""
    return "\n".join(difflib.unified_diff(got, want, "kernel", "netsim", lineterm=""))


@dataclass
class Result:
    name: str
    probes: int = 0
    compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_ruleset(pair: Pair, name: str, ruleset: Ruleset, probes: list[Probe], netns: Netns | None = None
                ) -> Result:
    """Load ``ruleset`` (+ TRACE rules) into the pod, send ``probes``, compare kernel and netsim (the namespace
    modelled as ``netns``, default :func:`pod_netns`)."""
    res = Result(name, len(probes))
    traced = with_trace_rules(ruleset)
    family = ruleset.family
    sh("ip", "netns", "exec", pair.pod, "nft", "flush", "ruleset")
    restore = "iptables-restore" if family is Family.IPV4 else "ip6tables-restore"
    sh("ip", "netns", "exec", pair.pod, restore, stdin=render_save(traced))
    positions = pod_handle_positions(pair.pod, family)
    v6 = family is Family.IPV6
    pod_ip = POD4 if family is Family.IPV4 else POD6
    peer_ip = PEER4 if family is Family.IPV4 else PEER6
    sentinel = Probe(proto="udp", src=pod_ip, sport=SPORT_HI, dst=peer_ip, dport=9)
    mark = "sport {} " if v6 else "SPORT={} "
    local = [p for p in probes if not p.inbound]
    inbound = [p for p in probes if p.inbound]

    def send() -> None:
        # Small concurrent batches: a burst of traced packets overruns xtables-monitor's netlink
        # socket (ENOBUFS), after which it prints nothing more.
        for ns, group in ((pair.pod, local), (pair.peer, inbound)):
            for i in range(0, len(group), BATCH):
                _send(ns, group[i : i + BATCH])

    text = monitored(pair.pod, NFT_MONITOR if v6 else XTABLES_MONITOR, send, first=sentinel,
                     last=replace(sentinel, sport=SPORT_HI - 1),
                     marks=(mark.format(SPORT_HI), mark.format(SPORT_HI - 1)))
    kernel = parse_nft_monitor(text, positions) if v6 else parse_monitor(text, positions, packets=True)
    odd = [] if v6 else monitor_noise(text)
    if DEBUG:
        print(text[:3000], odd[:5], positions)
    crs = compile_ruleset(traced)
    ns = netns or pod_netns()
    for p in probes:
        got = kernel.get(p.sport, [])
        t = trace(crs, p.packet(), ns)
        # IPv6: nft prints rules in its own syntax, so table, chain, position and verdict are compared; the
        # iptables-save text of each position is netsim's own (tested against iptables-save).
        want = kernel_view(render_xtables(t, return_verdict=RETURN_AS_PRINTED, packets=not v6).splitlines(),
                           ruleset.family.value)
        res.compared += 1
        if got != want:
            diff = kernel_vs_netsim(got, want)
            res.mismatches.append(f"{name} {p}:\n{diff}" + (f"\nmonitor said: {odd[:3]}" if odd else ""))
    return res
