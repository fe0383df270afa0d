"""``lab verify``: random probes in a running lab, the kernel's own trace against netsim's trace of the same
rules, line by line (DESIGN.md: "netsim trace --format xtables-trace").

Method (spec/netfilter.md §4), per address family: insert TRACE rules at the top of raw PREROUTING/OUTPUT that
select a source-port range only probes use (TCP: pure SYNs); read back what the kernel holds
(``iptables-save``/``ip6tables-save``) and the nft handle of every rule; run the monitor; send each probe from
its own process (as its uid/gid, from the pod, or from the node side for inbound ones); then trace the same
packets with ``netsim.netfilter.engine`` through the ruleset parsed from that same dump, in a model of the lab's
namespace (its addresses and the sockets that really listen there), and compare. IPv4 uses
``xtables-monitor --trace`` and compares whole lines (rule text included); IPv6 uses ``nft monitor trace``
(xtables-monitor 1.8.9 cannot print IPv6 rules with layer-4 matches, §4) and compares each event's
``table:chain:rule:N:VERDICT`` head. The TRACE rules are removed afterwards; the monitor is recorded in the
lab's state while it runs, so ``down`` cleans it up even if verify is killed.

An nft lab (``lab up --backend nft``, Istio's native nftables rules) is traced the way the nftables
kernel-differential test does it (``tests/netfilter/nft_kernel_diff.py``): a table of verify's own
(``inet netsim-verify``, priority -500, before everything) sets ``meta nftrace`` on the probes' first packets;
``nft -a monitor trace`` is read for both families, and each probe's lines are compared whole with netsim's
``--format nft-trace`` through the ruleset ``nft list ruleset`` lists (``packet:`` lines on the fields netsim
models, rule handles as positions, the trace table's own lines left out). The table is deleted afterwards.

Owns: probe generation (seeded, pure), the comparison and its report. Reading the monitors' output is
``netsim.lab.kerneltrace``'s, shared with the tracer's kernel-differential test (``tests/trace/kernel_diff.py``).
Never does: change the lab's rules beyond the TRACE rules it removes again.
"""

from __future__ import annotations

import difflib
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsim.errors import LabError
from netsim.lab import state as st
from netsim.lab.control import LOADED_RULES
from netsim.lab.kerneltrace import (
    RETURN_AS_PRINTED,
    handle_positions,
    kernel_view,
    monitor_noise,
    nft_positions,
    nft_trace_lines,
    packet_fields,
    parse_monitor,
    parse_nft_monitor,
)
from netsim.lab.probe import SPORT_HI, SPORT_LO
from netsim.lab.runner import Exec, Kill, RemovePath, Runner, Spawn
from netsim.netfilter.model import Family

if TYPE_CHECKING:
    from netsim.netfilter.packet import Netns, Packet

# Probe source ports (netsim.lab.probe): below the ephemeral range, so the listeners' and the agent's own
# dials are never selected by the TRACE rules; probe destination ports avoid the range, so replies
# (whose source port is a probe's destination port) are not selected either.
SETTLE_SECONDS = 0.4  # for the monitor to subscribe, and for the last probe's events to be printed
# Two traced datagrams that bracket the probes: the monitor is listening once it prints the first, and has
# printed everything before the second once it prints that (events of one namespace arrive in order).
SENTINELS = {"start": SPORT_LO, "end": SPORT_LO + 1}
SENTINEL_TIMEOUT_SECONDS = 10.0
# Probes go out in batches, each followed by the end marker: a few hundred at once overflow the monitor's
# netlink socket (it prints ENOBUFS and exits), so the next batch waits until the monitor caught up.
BATCH = 25
WELL_KNOWN_PORTS = (53, 80, 443, 8080, 15001, 15006, 15008, 15020, 15021, 15053, 15090)
VERIFY_TOOLS = (("xtables-monitor", "iptables"), ("nft", "nftables"), ("stdbuf", "coreutils"))
TRACE_RULES = tuple((chain, proto) for chain in ("PREROUTING", "OUTPUT") for proto in ("tcp", "udp"))
NFT_VERIFY_TOOLS = (("nft", "nftables"), ("stdbuf", "coreutils"))
NFT_TRACE_TABLE = "netsim-verify"
# An nft lab's trace selector, as the nftables kernel-differential test's: TCP pure SYNs and UDP from the probes'
# source ports, at priority -500 (before every other base chain on those hooks).
_NFT_SELECT = (f"tcp sport {SPORT_LO}-{SPORT_HI} tcp flags & (fin|syn|rst|ack) == syn meta nftrace set 1\n"
               f"    udp sport {SPORT_LO}-{SPORT_HI} meta nftrace set 1")
NFT_TRACE_DROP = f"add table inet {NFT_TRACE_TABLE}\ndelete table inet {NFT_TRACE_TABLE}\n"
NFT_TRACE_RULES = f"""table inet {NFT_TRACE_TABLE} {{
  chain pre {{ type filter hook prerouting priority -500; policy accept;
    {_NFT_SELECT}
  }}
  chain out {{ type filter hook output priority -500; policy accept;
    {_NFT_SELECT}
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class _Fam:
    """What differs between the two families' runs."""

    version: int
    iptables: str
    nft_family: str
    monitor: tuple[str, ...]
    loopback: str
    inbound_loopback: str  # Istio's inbound source (netfilter.md §1.11)

    @property
    def xtables(self) -> bool:
        """Whether the monitor is xtables-monitor (else nft's)."""
        return self.monitor[0] == "xtables-monitor"

    def mark(self, sport: int) -> str:
        """How the monitor prints a packet's source port (to find the sentinels)."""
        return f"SPORT={sport} " if self.xtables else f"sport {sport} "

    def is_packet_line(self, line: str) -> bool:
        return line.startswith("PACKET:") if self.xtables else " packet: " in line


FAMILIES = {
    4: _Fam(4, "iptables", "ip", ("xtables-monitor", "--trace", "-4"), "127.0.0.1", "127.0.0.6"),
    6: _Fam(6, "ip6tables", "ip6", ("nft", "-a", "monitor", "trace"), "::1", "::6"),
}
# An nft lab: nft's monitor for both families.
NFT_FAMILIES = {v: replace(f, monitor=("nft", "-a", "monitor", "trace")) for v, f in FAMILIES.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    uid: int = 0
    gid: int = 0
    inbound: bool = False
    mark: int = 0  # SO_MARK of a local probe's socket (ztunnel's 0x539, spec/istio-ambient-capture.md §8)
    # a local probe's socket binds its (non-local) source with IP_TRANSPARENT, as ztunnel's connections to the app do
    transparent: bool = False
    in_iface: str = "eth0"  # the device an inbound probe arrives on
    answered: bool = False  # a socket answers it: its first reply is compared too (ambient labs, netsim.lab.ztunnel)
    reply: bool = False  # this result is about the probe's first reply, not its first packet

    @property
    def version(self) -> int:
        return ip_address(self.src).version

    def describe(self) -> str:
        who = "from the node" if self.inbound else f"uid {self.uid} gid {self.gid}" + \
            (f" mark {self.mark:#x}" if self.mark else "") + (" transparent" if self.transparent else "")
        src = f"[{self.src}]" if self.version == 6 else self.src
        dst = f"[{self.dst}]" if self.version == 6 else self.dst
        return ("reply to " if self.reply else "") + f"{self.proto} {src}:{self.sport} -> {dst}:{self.dport} ({who})"

    def wire(self) -> dict[str, object]:
        """The probe as ``python -m netsim.lab.probe`` reads it."""
        return {"proto": self.proto, "family": self.version, "src": self.src, "sport": self.sport,
                "dst": self.dst, "dport": self.dport, "uid": self.uid, "gid": self.gid, "mark": self.mark,
                "transparent": self.transparent}

    def packet(self) -> Packet:
        """The probe's first packet as netsim's tracer takes it: an inbound one arrives on ``eth0``, any other
        leaves a local socket of the probe's uid/gid."""
        from netsim.netfilter.packet import Origin, Packet, Proto, Socket

        return Packet(family=Family(self.version), proto=Proto.parse(self.proto), src=ip_address(self.src),
                      dst=ip_address(self.dst), sport=self.sport, dport=self.dport,
                      origin=Origin.ARRIVING if self.inbound else Origin.LOCAL,
                      in_iface=self.in_iface if self.inbound else None,
                      socket=None if self.inbound else Socket(uid=self.uid, gid=self.gid),
                      mark=0 if self.inbound else self.mark)


def _rule_addresses(rules_text: str, version: int) -> list[str]:
    """Single addresses, and the first address of each network, that a rule names with -s/-d (iptables) or
    ``ip[6] saddr|daddr`` (nftables)."""
    out: set[str] = set()
    for m in re.finditer(r"(?:(?:^|\s)-[sd]|\bip6? [sd]addr(?: !=)?) ([0-9a-fA-F.:]+)(?:/(\d+))?", rules_text):
        try:
            net = ip_network(f"{m.group(1)}/{m.group(2) or (32 if version == 4 else 128)}", strict=False)
        except ValueError:
            continue
        if net.version == version:
            out.add(str(net.network_address if net.num_addresses == 1 else net.network_address + 1))
    return sorted(out)


def _rule_ports(rules_text: str) -> list[int]:
    out: set[int] = set()
    for m in re.finditer(r"--(?:dports?|sports?|to-ports?|on-port) (\S+)|"  # iptables, then nftables:
                         r"\b(?:th|tcp|udp) [sd]port (?:!= )?(\{[^}]*\}|\S+)|\b(?:redirect|tproxy(?: ip6?)?) to :(\d+)",
                         rules_text):
        text = next(g for g in m.groups() if g is not None)
        for part in re.split("[,:-]", text):
            part = part.strip(" {}")
            if part.isdigit() and 0 < int(part) < 65536:
                out.add(int(part))
    return sorted(p for p in out if not SPORT_LO <= p <= SPORT_HI)


def lab_families(info: dict[str, Any]) -> tuple[int, ...]:
    """The families a lab can be verified in: those its pod has an address of (and, for IPv6 with iptables,
    rules; an nft lab's inet tables hold both families')."""
    versions = {ip_interface(i).version for i in info.get("pod_ips", [])}
    nft = info.get("backend") == "nft"
    return tuple(v for v in (4, 6) if v in versions and (v == 4 or nft or info.get("rules_v6") is not None))


def _rules_text(info: dict[str, Any], version: int) -> str:
    """The rules ``up`` loaded that probes are drawn from: the family's iptables text, or the nft transaction."""
    if info.get("backend") == "nft":
        return str(info.get("rules_nft") or "")
    return str(info.get("rules_v4" if version == 4 else "rules_v6") or "")


def make_probes(info: dict[str, Any], count: int, seed: int, sport_rng: random.Random | None = None,
                avoid: frozenset[int] = frozenset(), version: int = 4) -> tuple[Probe, ...]:
    """``count`` seeded probes of one family: about two thirds sent from the pod (app, proxy and root
    uids/gids; loopback, pod, node and cluster destinations), the rest arriving from the node side. Only the
    lab's own addresses and loopback are used."""
    rng = random.Random(seed * 10 + version)
    fam = FAMILIES[version]
    pod_if = next(ip_interface(i) for i in info["pod_ips"] if ip_interface(i).version == version)
    pod = str(pod_if.ip)
    node = next(str(ip_interface(i).ip) for i in info["node_ips"] if ip_interface(i).version == version)
    rules = _rules_text(info, version)
    if version == 4:
        lab_nets: tuple[IPv4Network | IPv6Network, ...] = (IPv4Network("10.96.0.0/16"), pod_if.network,
                                                           IPv4Network("127.0.0.0/8"))
        cluster = [f"10.96.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(3)]
        cluster.append("10.96.0.10")
    else:
        lab_nets = (pod_if.network, IPv6Network("::1/128"), IPv6Network("::6/128"))
        cluster = [str(pod_if.network.network_address + rng.randrange(0x100, 0xFFFF)) for _ in range(3)]
    rule_addrs = [a for a in _rule_addresses(rules, version) if any(ip_address(a) in n for n in lab_nets)]
    remote = [node, *cluster, *[a for a in rule_addrs if not ip_address(a).is_loopback and a != pod]]
    loopback = [fam.loopback, fam.inbound_loopback, *[a for a in rule_addrs if ip_address(a).is_loopback]]
    ports = sorted(set(_rule_ports(rules)) | set(WELL_KNOWN_PORTS))
    ids = sorted({int(info.get("app_uid", 1000)), int(info.get("proxy_uid", 1337)), int(info.get("proxy_gid", 1337)),
                  0})
    # Source ports are drawn apart from the seed: a rerun with the same seed must not meet the conntrack
    # entries (UDP lives 30 s unreplied) its previous run left, or nat would rightly be skipped.
    # ``avoid``: ports that conntrack still holds. A new connection whose NATed tuple clashes with an old one
    # gets its source port remapped by the kernel (nf_nat_used_tuple), which netsim cannot know about.
    free = [p for p in range(SPORT_LO + len(SENTINELS), SPORT_HI + 1) if p not in avoid]
    table = _ambient_table(info, version)
    if len(free) < count + len(table):
        raise LabError(f"only {len(free)} probe source ports are free of conntrack entries; use fewer --probes")
    sports = (sport_rng or random.SystemRandom()).sample(free, count + len(table))
    probes: list[Probe] = [replace(p, sport=s) for p, s in zip(table, sports[count:], strict=True)]
    for i, sport in enumerate(sports[:count]):
        proto = rng.choice(("tcp", "tcp", "udp"))
        dport = rng.choice(ports) if rng.random() < 0.8 else rng.choice(
            (rng.randrange(1, SPORT_LO), rng.randrange(SPORT_HI + 1, 65536)))
        if i % 3 == 2:
            probes.append(Probe(proto=proto, src=node, sport=sport, dst=pod, dport=dport, inbound=True))
            continue
        dst = rng.choice([*loopback, pod, pod, *remote])
        local = dst == pod or ip_address(dst).is_loopback or dst == fam.inbound_loopback
        src = rng.choice((fam.loopback, fam.inbound_loopback, pod)) if local else pod
        probes.append(Probe(proto=proto, src=src, sport=sport, dst=dst, dport=dport, uid=rng.choice(ids),
                            gid=rng.choice(ids)))
    return tuple(probes)


def _ambient_table(info: dict[str, Any], version: int) -> list[Probe]:
    """An ambient lab's fixed probes, one per row of its spec's §10 table (``netsim.lab.ztunnel``)."""
    if info.get("mode") != "ambient":
        return []
    from netsim.lab.ztunnel import table_probes

    return table_probes(info, version)


def conntrack_ports(text: str) -> frozenset[int]:
    """Every port in ``/proc/net/nf_conntrack`` lines (both tuples), within the probes' source-port range."""
    return frozenset(p for m in re.finditer(r"\b(?:sport|dport)=(\d+)", text)
                     if SPORT_LO <= (p := int(m.group(1))) <= SPORT_HI)


def listeners_from_ss(text: str, version: int = 4) -> list[tuple[str, str | None, int]]:
    """``ss -Hlntu`` → (proto, address or None for the wildcard, port) of each socket of one family."""
    out: list[tuple[str, str | None, int]] = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 5 or cols[0] not in ("tcp", "udp"):
            continue
        host, _, port = cols[4].rpartition(":")
        host = host.split("%")[0]
        if not port.isdigit() or host.startswith("[") != (version == 6):
            continue
        host = host.strip("[]")
        out.append((cols[0], None if host in ("0.0.0.0", "*", "::") else host, int(port)))
    return out


@dataclass(frozen=True, slots=True)
class ProbeResult:
    probe: Probe
    kernel: tuple[str, ...]
    netsim: tuple[str, ...]

    @property
    def agreed(self) -> bool:
        return self.kernel == self.netsim


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    seed: int
    results: tuple[ProbeResult, ...] = field(default_factory=tuple)
    unsent: tuple[Probe, ...] = ()  # probes whose socket could not be bound: nothing was sent, nothing compared
    backend: str = "iptables"  # the lab's: which monitor read the kernel's trace

    @property
    def agreed(self) -> bool:
        return all(r.agreed for r in self.results)

    def lines(self, *, verbose: bool = False) -> list[str]:
        ok = sum(r.agreed for r in self.results)
        per = []
        hows = ((4, "nft monitor trace"), (6, "nft monitor trace")) if self.backend == "nft" else (
            (4, "xtables-monitor --trace"), (6, "nft monitor trace, verdicts only"))
        for v, how in hows:
            mine = [r for r in self.results if r.probe.version == v]
            if mine:
                per.append(f"IPv{v} {sum(r.agreed for r in mine)}/{len(mine)} ({how})")
        out = [f"lab {self.name}: {len(self.results)} probes (seed {self.seed}), the kernel's trace vs netsim trace "
               f"of the same rules: " + "; ".join(per)]
        for r in self.results:
            if r.agreed and not verbose:
                continue
            out.append(f"{'agree' if r.agreed else 'DIFFER'}: {r.probe.describe()}")
            if r.agreed:
                out += [f"    {ln}" for ln in r.kernel]
            else:
                out += [f"    {ln}" for ln in difflib.unified_diff(r.kernel, r.netsim, "kernel", "netsim",
                                                                    lineterm="")]
        out += [f"not sent: {p.describe()}" for p in self.unsent]
        out.append(f"agreement: {ok}/{len(self.results)} probes" + ("" if ok == len(self.results) else
                                                                    f" ({len(self.results) - ok} differ)")
                   + (f"; {len(self.unsent)} could not be sent" if self.unsent else ""))
        return out

    def to_json(self) -> dict[str, Any]:
        """The report for tools (``lab verify --format json``): counts per family and every probe's traces."""
        families = {f"ipv{v}": {"probes": len(mine), "agreed": sum(r.agreed for r in mine)}
                    for v in (4, 6) if (mine := [r for r in self.results if r.probe.version == v])}
        return {"name": self.name, "seed": self.seed, "backend": self.backend, "agreed": self.agreed,
                "probes": len(self.results),
                "agreeing": sum(r.agreed for r in self.results), "families": families,
                "results": [{"probe": r.probe.describe(), **r.probe.wire(), "inbound": r.probe.inbound,
                             "agreed": r.agreed, "kernel": list(r.kernel), "netsim": list(r.netsim)}
                            for r in self.results],
                "unsent": [p.describe() for p in self.unsent]}


def netsim_lines(rules_dump: str, bases: set[tuple[str, str]], info: dict[str, Any],
                 sockets: Sequence[tuple[str, str | None, int]], probes: Sequence[Probe],
                 version: int = 4) -> list[tuple[str, ...]]:
    """netsim's xtables-trace lines for each probe, through ``rules_dump`` in a model of the lab's pod
    (IPv6: each line's head only, as :func:`parse_nft_monitor` gives the kernel's)."""
    from netsim.netfilter.engine import compile_ruleset, trace
    from netsim.netfilter.parse import parse_ruleset
    from netsim.netfilter.render_trace import render_xtables

    family = Family.IPV4 if version == 4 else Family.IPV6
    ruleset = parse_ruleset(rules_dump, family)
    crs = compile_ruleset(ruleset, base_chains=bases)
    ns = lab_netns(info, sockets)
    out: list[tuple[str, ...]] = []
    for p in probes:
        lines = render_xtables(trace(crs, p.packet(), ns, explain=False), return_verdict=RETURN_AS_PRINTED,
                               packets=False).splitlines()
        out.append(tuple(kernel_view(lines, version)))
    return out


def netsim_nft_lines(listing: str, info: dict[str, Any], sockets: Sequence[tuple[str, str | None, int]],
                     probes: Sequence[Probe], version: int = 4) -> list[tuple[str, ...]]:
    """netsim's ``--format nft-trace`` lines for each probe, through ``listing`` (``nft list ruleset``, so each
    rule's handle is its position) in a model of the lab's pod; ``packet:`` lines reduced as
    :func:`~netsim.lab.kerneltrace.nft_trace_lines` reduces the kernel's."""
    from netsim.netfilter.engine import trace
    from netsim.netfilter.nft import compile_nft, parse_nft
    from netsim.netfilter.render_trace import render_nft_trace

    crs = compile_nft(parse_nft(listing), Family(version))
    ns = lab_netns(info, sockets)
    out: list[tuple[str, ...]] = []
    for p in probes:
        lines = render_nft_trace(trace(crs, p.packet(), ns, explain=False)).splitlines()
        out.append(tuple(f"{head} packet: {packet_fields(rest)}" if sep else head
                         for head, sep, rest in (ln.partition(" packet: ") for ln in lines)))
    return out


def lab_netns(info: dict[str, Any], sockets: Sequence[tuple[str, str | None, int]]) -> Netns:
    """The lab's pod namespace as netsim's tracer models it: ``lo`` and ``eth0`` with the pod's addresses, the
    sockets that really listen there (``sockets``, from ``ss``), the policy routes ``up`` added."""
    from netsim.netfilter.packet import FwmarkRoute, Interface, Listener, Netns, Proto

    v6_pod = any(ip_interface(i).version == 6 for i in info["pod_ips"])
    ambient = info.get("mode") == "ambient"  # an ambient pod's lo has no ::6 (no sidecar's inbound source)
    lo = Interface.of("lo", "127.0.0.1/8", "::1/128", *(("::6/128",) if v6_pod and not ambient else ()))
    eth = Interface.of("eth0", *info["pod_ips"])
    tproxy = int(info.get("tproxy_port") or 0)
    transparent = {tproxy, *info.get("transparent_ports", ())}  # TPROXY's listener, ztunnel's (IP_TRANSPARENT)
    listeners = tuple(Listener(port=port, proto=Proto.parse(proto), addr=ip_address(addr) if addr else None,
                               transparent=port in transparent) for proto, addr, port in sockets)
    routes = tuple(FwmarkRoute(mark=r[0], table=r[1], mask=r[2] if len(r) > 2 else 0xFFFFFFFF)
                   for r in info.get("fwmark_routes", []))
    return Netns(interfaces=(lo, eth), default_iface="eth0", listeners=listeners, fwmark_routes=routes)


def _sentinel(runner: Runner, pod: str, log: Path, fam: _Fam, which: str, *, repeat: bool) -> None:
    """Send the ``which`` marker datagram and wait until the monitor printed it once more than before."""
    sport = SENTINELS[which]
    wire = Probe(proto="udp", src=fam.loopback, sport=sport, dst=fam.loopback, dport=9).wire()
    mark = fam.mark(sport)

    def seen() -> int:
        try:
            return sum(1 for line in log.read_text(errors="replace").splitlines()
                       if fam.is_packet_line(line) and mark in line)
        except OSError:
            return 0

    before = seen()
    deadline = time.monotonic() + SENTINEL_TIMEOUT_SECONDS
    sent = False
    while True:
        if repeat or not sent:
            runner.run(Exec(netns=pod, argv=(sys.executable, "-m", "netsim.lab.probe"), stdin=json.dumps([wire])))
            sent = True
        time.sleep(SETTLE_SECONDS / 8)
        if seen() > before:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{fam.monitor[0]} printed no {which} marker within {SENTINEL_TIMEOUT_SECONDS:g}s: "
                           f"{_monitor_error(log)}")


def _monitor_error(log: Path) -> str:
    try:
        odd = monitor_noise(log.read_text(errors="replace"))
    except OSError:
        odd = []
    return odd[-1] if odd else "it stopped printing; the kernel trace is incomplete"


Progress = Callable[[int, int], None]  # (probes sent so far, probes in all)


def verify(runner: Runner, state: st.LabState, *, probes: int, seed: int | None,
           families: Sequence[int] = (), progress: Progress | None = None) -> Report:
    """Run ``probes`` probes per family (default: every family the lab has) in lab ``state`` and compare (see
    the module docstring); ``progress`` is told after every batch. Raises LabError when a tool is missing or
    fails."""
    available = lab_families(state.info)
    chosen_families = tuple(families) or available
    if not chosen_families or any(v not in available for v in chosen_families):
        have = ", ".join(f"IPv{v}" for v in available) or "none"
        raise LabError(f"lab {state.name} cannot be verified in "
                       f"{', '.join(f'IPv{v}' for v in chosen_families) or 'any family'} (it has: {have})")
    nft = state.backend == "nft"
    for tool, package in NFT_VERIFY_TOOLS if nft else VERIFY_TOOLS:
        if shutil.which(tool) is None:
            raise LabError(f"lab verify needs {tool}: install the {package} package")
    seed = random.randrange(1 << 31) if seed is None else seed
    results: list[ProbeResult] = []
    unsent: list[Probe] = []
    total = probes * len(chosen_families)
    for i, version in enumerate(chosen_families):
        def told(sent: int, before: int = i * probes) -> None:
            if progress is not None:
                progress(before + sent, total)

        run = _verify_family_nft if nft else _verify_family
        got, missed = run(runner, state, probes, seed, version, told)
        results += got
        unsent += missed
    return Report(state.name, seed, tuple(results), tuple(unsent), backend=state.backend)


def _chosen(runner: Runner, state: st.LabState, count: int, seed: int, version: int) -> tuple[Probe, ...]:
    held = runner.run(Exec(netns=state.name, argv=("cat", "/proc/net/nf_conntrack"), check=False)).stdout
    return make_probes(state.info, count, seed, avoid=conntrack_ports(held), version=version)


def _verify_family(runner: Runner, state: st.LabState, count: int, seed: int, version: int,
                   progress: Callable[[int], None]) -> tuple[list[ProbeResult], list[Probe]]:
    fam = FAMILIES[version]
    pod = state.name
    chosen = _chosen(runner, state, count, seed, version)
    span = f"{SPORT_LO}:{SPORT_HI}"

    def trace_rule(op: str, chain: str, proto: str) -> Exec:
        # TCP: pure SYNs only. A probe is its first packet; where a listener accepted it, the handshake's ACK
        # and the FIN would follow from the same port and only flood the monitor.
        syn = ("--tcp-flags", "FIN,SYN,RST,ACK", "SYN") if proto == "tcp" else ()
        argv = (fam.iptables, "-t", "raw", op, chain, *(("1",) if op == "-I" else ()), "-p", proto, "-m", proto,
                "--sport", span, *syn, "-j", "TRACE")
        return Exec(netns=pod, argv=argv)

    for chain, proto in reversed(TRACE_RULES):
        runner.run(trace_rule("-I", chain, proto))
    # an ambient lab's answered probes: their first replies are traced too (netsim.lab.ztunnel)
    replies = _reply_trace(span) if state.info.get("mode") == "ambient" else ()
    for chain, args in replies:
        runner.run(Exec(netns=pod, argv=(fam.iptables, "-t", "raw", "-I", chain, "1", *args)))
    try:
        dump = runner.run(Exec(netns=pod, argv=(Family(fam.version).save_command,))).stdout
        nft = runner.run(Exec(netns=pod, argv=("nft", "-j", "-a", "list", "ruleset"))).stdout
        positions, bases = handle_positions(nft, fam.nft_family)
        sockets = listeners_from_ss(runner.run(Exec(netns=pod, argv=("ss", "-Hlntu"))).stdout, fam.version)
        text, unsent = _traced(runner, state, fam, chosen, progress)
    finally:
        for chain, proto in TRACE_RULES:
            runner.run(trace_rule("-D", chain, proto))
        for chain, args in replies:
            runner.run(Exec(netns=pod, argv=(fam.iptables, "-t", "raw", "-D", chain, *args)))
        if "*raw\n" not in str(state.info.get(LOADED_RULES[Family(fam.version)], "")):
            # the TRACE rules made the raw table: it goes with them, or status sees rules up did not load
            runner.run(Exec(netns=pod, argv=("nft", "delete", "table", fam.nft_family, "raw"), check=False))
    kernel = parse_monitor(text, positions) if fam.version == 4 else parse_nft_monitor(text, positions)
    ours = netsim_lines(dump, bases, state.info, sockets, chosen, fam.version)
    results, missed = _compared(chosen, kernel, ours, unsent)
    if replies:
        from netsim.lab.ztunnel import compare_replies

        results += compare_replies(text, positions, dump, bases, state.info, sockets,
                                   [p for p in chosen if p.answered and p.sport not in unsent], fam.version)
    return results, missed


def _reply_trace(span: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    from netsim.lab.ztunnel import reply_trace

    return tuple((chain, args) for chain in ("PREROUTING", "OUTPUT") for args in reply_trace(span))


def _verify_family_nft(runner: Runner, state: st.LabState, count: int, seed: int, version: int,
                       progress: Callable[[int], None]) -> tuple[list[ProbeResult], list[Probe]]:
    """One family of an nft lab: the ruleset as listed before verify's trace table is added (netsim's input, and
    the rules' positions), ``nft monitor trace`` compared whole."""
    fam = NFT_FAMILIES[version]
    pod = state.name
    chosen = _chosen(runner, state, count, seed, version)
    # a table left by a verify that was killed goes first (adding a table, then deleting it, works either way)
    runner.run(Exec(netns=pod, argv=("nft", "-f", "-"), stdin=NFT_TRACE_DROP))
    listing = runner.run(Exec(netns=pod, argv=("nft", "list", "ruleset"))).stdout
    positions = nft_positions(runner.run(Exec(netns=pod, argv=("nft", "-j", "-a", "list", "ruleset"))).stdout)
    sockets = listeners_from_ss(runner.run(Exec(netns=pod, argv=("ss", "-Hlntu"))).stdout, fam.version)
    runner.run(Exec(netns=pod, argv=("nft", "-f", "-"), stdin=NFT_TRACE_RULES))
    ambient = state.info.get("mode") == "ambient"
    if ambient:  # an ambient lab's answered probes: their first replies are traced too (netsim.lab.ztunnel)
        from netsim.lab.ztunnel import nft_reply_trace

        runner.run(Exec(netns=pod, argv=("nft", "-f", "-"), stdin=nft_reply_trace(NFT_TRACE_TABLE)))
    try:
        text, unsent = _traced(runner, state, fam, chosen, progress)
    finally:
        runner.run(Exec(netns=pod, argv=("nft", "delete", "table", "inet", NFT_TRACE_TABLE)))
    kernel = nft_trace_lines(text, positions, sports=(SPORT_LO, SPORT_HI), skip_table=NFT_TRACE_TABLE)
    ours = netsim_nft_lines(listing, state.info, sockets, chosen, fam.version)
    results, missed = _compared(chosen, kernel, ours, unsent)
    if ambient:
        from netsim.lab.ztunnel import compare_nft_replies

        results += compare_nft_replies(text, positions, listing, state.info, sockets,
                                       [p for p in chosen if p.answered and p.sport not in unsent], fam.version,
                                       skip_table=NFT_TRACE_TABLE)
    return results, missed


def _compared(chosen: Sequence[Probe], kernel: dict[int, list[str]], ours: Sequence[tuple[str, ...]],
              unsent: set[int]) -> tuple[list[ProbeResult], list[Probe]]:
    results = [ProbeResult(p, tuple(kernel.get(p.sport, [])), mine) for p, mine in zip(chosen, ours, strict=True)
               if p.sport not in unsent]
    return results, [p for p in chosen if p.sport in unsent]


def _traced(runner: Runner, state: st.LabState, fam: _Fam, chosen: Sequence[Probe],
            progress: Callable[[int], None]) -> tuple[str, set[int]]:
    """Run the family's monitor in the pod (recorded in the lab's state while it runs), send ``chosen`` in
    batches between sentinels, and return what the monitor printed and the source ports of the probes that
    could not be sent."""
    pod, node = state.name, str(state.info["node_netns"])
    log = st.run_dir(pod) / f"verify-monitor-{fam.version}.log"
    monitor: st.Process | None = None
    unsent: set[int] = set()
    try:
        state = state.adding(st.File(str(log)))
        st.save(state)
        spawned = runner.run(Spawn(netns=pod, argv=("stdbuf", "-oL", *fam.monitor), log=log))
        assert spawned.pid is not None and spawned.start_time is not None
        monitor = st.Process(f"verify-monitor-{fam.version}", spawned.pid, spawned.start_time, pod, str(log))
        state = state.adding(monitor)
        st.save(state)
        _sentinel(runner, pod, log, fam, "start", repeat=True)
        sent_so_far = 0
        for ns, group in ((pod, [p for p in chosen if not p.inbound]), (node, [p for p in chosen if p.inbound])):
            for i in range(0, len(group), BATCH):
                sent = runner.run(Exec(netns=ns, argv=(sys.executable, "-m", "netsim.lab.probe"),
                                       stdin=json.dumps([p.wire() for p in group[i:i + BATCH]])))
                unsent.update(_unsent(sent.stdout))
                # wait for the monitor to print this batch before the next: its socket overflows otherwise
                _sentinel(runner, pod, log, fam, "end", repeat=False)
                sent_so_far += len(group[i:i + BATCH])
                progress(sent_so_far)
    finally:
        if monitor is not None:
            runner.run(Kill(monitor.pid, monitor.start_time))
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = ""
        runner.run(RemovePath(log))
        st.save(replace(state, resources=tuple(r for r in state.resources if r not in (monitor, st.File(str(log))))))
    return text, unsent


def _unsent(stdout: str) -> list[int]:
    for line in stdout.splitlines():
        try:
            return [int(x) for x in json.loads(line)["unsent"]]
        except (ValueError, KeyError, TypeError):
            continue
    return []


__all__ = [
    "FAMILIES",
    "NFT_TRACE_RULES",
    "Probe",
    "ProbeResult",
    "Report",
    "conntrack_ports",
    "lab_families",
    "lab_netns",
    "listeners_from_ss",
    "make_probes",
    "netsim_lines",
    "netsim_nft_lines",
    "verify",
]
