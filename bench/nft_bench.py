"""Benchmark the nftables tracer: parse of a kube-proxy nftables-mode ruleset of 10,000 Services, probes/s
through Istio's nft ruleset and through that one, the whole ``netsim trace --nft BIG`` command cold; and
(``--rules`` too) the whole ``netsim trace --rules`` command on the 40,007-rule kube-proxy iptables dump.

    .venv/bin/python bench/nft_bench.py            # every figure
    .venv/bin/python bench/nft_bench.py --quick    # in-process figures only

Targets (issue 15): ≥ 50,000 probes/s on Istio's nft ruleset; per-probe cost on the 10,000-Service
kube-proxy ruleset ≤ 3× Istio's (verdict-map and set lookups indexed, not scanned); its parse ≤ 1 s (as a listing
and as kube-proxy's ``nft -f`` transaction);
``netsim trace --rules`` on the 40,000-rule iptables dump ≤ 1 s wall and ≤ 100 MB. Prints figures only;
the machine is shared, so each rate is the best of five windows and each command the best of three runs.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "netfilter"))
sys.path.insert(0, str(REPO / "bench"))

from kube_proxy_nft import NODE_IP, cluster_ip, kube_proxy_nft, kube_proxy_nft_transaction, node_port  # noqa: E402
from trace_bench import (  # noqa: E402
    drop_pycache,
    istio_probes,
    istio_ruleset_text,
    kube_proxy_text,
    rate,
    timed_process,
)

from netsim.netfilter.model import Family  # noqa: E402
from netsim.netfilter.nft import compile_nft, parse_nft  # noqa: E402
from netsim.netfilter.packet import Netns, Origin, Packet, Socket  # noqa: E402

SERVICES = 10_000
POD = IPv4Address("10.244.0.5")
# rates by this process's CPU time (the machine is shared: wall time would count the other jobs' turns), after
# one untimed pass (rules compile when first met)
CPU_RATE: dict[str, Any] = {"clock": time.process_time, "warm": True}
ISTIO = REPO.parent / "shared" / "conformance" / "istio-iptables" / "inbound-ports-include.nftables.golden"


def kube_probes(rng: random.Random, n: int) -> list[Packet]:
    """90 % to a Service's cluster IP (hits of service-ips), the rest to a NodePort of the node or an
    unallocated cluster IP; half from the node, half arriving."""
    out = []
    for _ in range(n):
        i = rng.randrange(SERVICES)
        r = rng.random()
        dst, dport = IPv4Address(cluster_ip(i)), 80
        if r > 0.95:
            dst, dport = IPv4Address(NODE_IP), node_port(i - i % 10) or 30000
        elif r > 0.9:
            dst = IPv4Address(f"172.30.250.{i % 250 + 1}")
        if rng.random() < 0.5:
            out.append(Packet(src=POD, dst=dst, sport=40000, dport=dport, socket=Socket(uid=1000, gid=1000)))
        else:
            out.append(Packet(src=IPv4Address("10.1.2.3"), dst=dst, sport=40000, dport=dport,
                              origin=Origin.ARRIVING, in_iface="eth0", socket=None))
    return out


def command(args: list[str], runs: int = 3, cached: bool = False) -> tuple[float, float, float]:
    """(best wall s, its CPU s, peak RSS MB) of ``netsim ARGS`` in a new process, best of ``runs``. Without
    ``cached`` every run compiles netsim's sources (this environment's ``PYTHONDONTWRITEBYTECODE``; the
    ``__pycache__`` other runs may have left in the sources is removed first, Python's own library keeps its
    bytecode); with it, as an installed netsim runs, Python's bytecode cache lives in a directory of this call's
    own (``PYTHONPYCACHEPREFIX``), written by one untimed run first."""
    cmd = [str(REPO / ".venv" / "bin" / "netsim"), *args]
    with tempfile.TemporaryDirectory() as pycache:
        env = dict(os.environ)
        if cached:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = pycache
            subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=False)
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        best, cpu, rss = float("inf"), 0.0, 0.0
        for _ in range(runs):
            if not cached:
                drop_pycache()
            wall, used, peak = timed_process(cmd, env)
            rss = max(rss, peak)
            if wall < best:
                best, cpu = wall, used
    return best, cpu, rss


def cold(text: str) -> None:
    """The whole commands in new processes: ``trace --nft`` on the generated ruleset, ``trace --rules`` on
    trace_bench's 40,007-rule iptables dump."""
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "kube-proxy.nft"
        big.write_text(text)
        dump = Path(tmp) / "kube-proxy.iptables-save"
        dump.write_text(kube_proxy_text())
        for cached in (False, True):
            how = "bytecode cached" if cached else "no bytecode cache"
            wall, cpu, rss = command(["trace", "--nft", str(big), "--dst", f"{cluster_ip(3)}:80", "--src", str(POD)],
                                     cached=cached)
            print(f"cold `netsim trace --nft` on the {SERVICES:,}-Service ruleset ({how}, best of 3): {wall:.2f} s "
                  f"wall, {cpu:.2f} s CPU, peak RSS {rss:.0f} MB")
            wall, cpu, rss = command(["trace", "--rules", str(dump), "--dst", "10.96.3.4:80", "--src", str(POD)],
                                     cached=cached)
            print(f"cold `netsim trace --rules` on the 40,007-rule kube-proxy iptables dump ({how}, best of 3): "
                  f"{wall:.2f} s wall, {cpu:.2f} s CPU, peak RSS {rss:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="in-process figures only")
    args = ap.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    rng = random.Random(5)
    netns = Netns.pod(f"{POD}/24", listeners=None)
    text = kube_proxy_nft(SERVICES)
    if not args.quick:  # first: a child forked from a parent holding a big ruleset inherits its peak RSS
        cold(text)
    times = []
    for _ in range(3):
        t0 = time.process_time()
        rs = parse_nft(text)
        times.append(time.process_time() - t0)
    nrules = sum(len(c.rules) for t in rs.tables for c in t.chains)
    nchains = sum(len(t.chains) for t in rs.tables)
    nelems = sum(len(s.elements.items) for t in rs.tables for s in t.sets)
    t0 = time.process_time()
    kube = compile_nft(rs, Family.IPV4)
    compile_s = time.process_time() - t0
    print(f"kube-proxy nftables ruleset, {SERVICES:,} Services: {text.count(chr(10)):,} lines, {nchains:,} chains, "
          f"{nrules:,} rules, {nelems:,} set/map elements; parse {min(times):.2f} s CPU (best of 3), "
          f"compile {compile_s:.2f} s")
    tx = kube_proxy_nft_transaction(SERVICES)
    times = []
    for _ in range(3):
        t0 = time.process_time()
        parse_nft(tx)
        times.append(time.process_time() - t0)
    print(f"the same ruleset as kube-proxy's `nft -f` transaction ({tx.count(chr(10)):,} add commands, one element a "
          f"line): parse {min(times):.2f} s CPU (best of 3)")
    istio = compile_nft(parse_nft(ISTIO.read_text()), Family.IPV4)
    ip, kp = istio_probes(rng, 2000), kube_probes(rng, 2000)
    for explain in (True, False):
        a = rate(istio, ip, netns, explain, args.seconds, **CPU_RATE)
        b = rate(kube, kp, netns, explain, args.seconds, **CPU_RATE)
        label = "full explanation" if explain else "matched rules only"
        print(f"[{label}] Istio's nft ruleset ({ISTIO.name}): {a:,.0f} probes/s; kube-proxy nft "
              f"{SERVICES:,} Services: {b:,.0f} probes/s; per-probe cost ratio {a / b:.2f}x")
    from netsim.netfilter import parse_ruleset
    from netsim.netfilter.engine import compile_ruleset

    ipt = rate(compile_ruleset(parse_ruleset(istio_ruleset_text())), ip, netns, True, args.seconds,
               **CPU_RATE)
    print(f"for scale, the same Istio probes through its iptables rules (trace_bench's), same run: {ipt:,.0f} probes/s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
