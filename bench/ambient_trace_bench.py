"""Benchmark ambient traces: probes/s through istio-cni's in-pod rules with ztunnel as the proxy.

    .venv/bin/python bench/ambient_trace_bench.py

Target (issue 16, as for sidecars): ≥ 50,000 probes/s. For each backend (the iptables-nft read-back and the
``nft list ruleset`` read-back of Istio's ``default_ipv6`` ambient golden, ../shared/conformance/istio-ambient)
and for the pod manifest ``rules/ambient/shop.yaml`` compiled by netsim (``Workload.from_pod`` →
``from_ambient_pod``: the iptables restore loaded as iptables-nft does, only the base chains it uses) it
prints the engine's rate (one kernel trace per probe, ``explain=False`` as the differential runs it, and with
explanations as ``netsim trace`` prints them) and the front door's (``Workload.follow``: the verdict and
ztunnel's hop, what ``--matrix`` computes per cell). Probes: the rows of spec §10 at random (the app's TCP and
DNS, ztunnel's marked traffic, 0x111-marked connections, inbound TCP/UDP, 15008, the probe SNAT source).
Rates are per second of this process's CPU time, best of five windows (the machine is shared: wall time
counts other processes' turns; ``--wall`` rates by wall time as trace_bench.py does).
Prints figures, asserts nothing.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


from netsim.netfilter.engine import CompiledRuleset, trace  # noqa: E402
from netsim.netfilter.model import Family  # noqa: E402
from netsim.netfilter.packet import Netns, Origin, Packet, Proto, Socket  # noqa: E402
from netsim.workload import Workload  # noqa: E402

KERNEL = Path(os.environ.get("NETSIM_CONFORMANCE", REPO.parent / "shared" / "conformance")) / "istio-ambient" / "kernel"
SHOP = REPO / "rules" / "ambient" / "shop.yaml"
POD, PEER, REMOTE, SNAT = (IPv4Address(a) for a in ("10.244.0.5", "10.1.2.3", "10.96.0.10", "169.254.7.127"))


def probes(rng: random.Random, n: int) -> list[Packet]:
    out = []
    for _ in range(n):
        proto = rng.choice([Proto.TCP, Proto.TCP, Proto.UDP])
        port = rng.choice([53, 80, 443, 8080, 15001, 15006, 15008, 15053, rng.randrange(1, 65536)])
        if rng.random() < 0.5:
            mark = rng.choice([0, 0, 0x539, 0x111])
            dst = rng.choice([REMOTE, POD, IPv4Address("127.0.0.1"), SNAT])
            src = dst if dst.is_loopback else POD
            out.append(Packet(proto=proto, src=src, dst=dst, sport=40000, dport=port, mark=mark,
                              socket=Socket(uid=1000, gid=1000)))
        else:
            src = rng.choice([PEER, PEER, SNAT])
            out.append(Packet(proto=proto, src=src, dst=POD, sport=40000, dport=port, origin=Origin.ARRIVING,
                              in_iface="eth0", socket=None))
    return out


CLOCK = time.process_time


def best_rate(one: Callable[[Packet], object], packets: list[Packet], seconds: float = 2.0) -> float:
    """Probes per second of :data:`CLOCK`, best of five windows of ``seconds / 5`` each."""
    best = 0.0
    for _ in range(5):
        done, start = 0, CLOCK()
        while True:
            for p in packets:
                one(p)
            done += len(packets)
            elapsed = CLOCK() - start
            if elapsed >= seconds / 5:
                break
        best = max(best, done / elapsed)
    return best


def _trace(crs: CompiledRuleset, ns: Netns, explain: bool, p: Packet) -> object:
    return trace(crs, p, ns, explain=explain)


def follow_rate(w: Workload, packets: list[Packet], seconds: float = 2.0) -> float:
    ns = w.netns()
    return best_rate(lambda p: w.follow(p, "app", netns=ns), packets, seconds)


def main() -> None:
    global CLOCK
    if "--wall" in sys.argv[1:]:
        CLOCK = time.perf_counter
    if not KERNEL.is_dir():
        sys.exit(f"conformance data not found at {KERNEL} (set NETSIM_CONFORMANCE)")
    pk = probes(random.Random(16), 2000)
    ipt = Workload.from_rules([str(KERNEL / "iptables" / "default_ipv6.iptables-save")], pod_ips=[str(POD)])
    nft = Workload.from_rules([], nft_paths=[str(KERNEL / "nftables" / "default_ipv6.nft-list")], pod_ips=[str(POD)])
    pod = Workload.from_pod(str(SHOP), pod_ips=[str(POD)])
    assert pod.ambient is not None
    clock = "wall" if CLOCK is time.perf_counter else "CPU"
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; 2,000 random §10 probes (IPv4); "
          f"probes per {clock} second")
    for name, w in (("iptables-nft", ipt.as_ambient()), ("nftables", nft.as_ambient()), ("shop.yaml", pod)):
        crs, ns = w.rules(Family.IPV4), w.netns()
        fast = best_rate(functools.partial(_trace, crs, ns, False), pk)
        full = best_rate(functools.partial(_trace, crs, ns, True), pk)
        front = follow_rate(w, pk)
        print(f"{name:>12}: engine {fast:>9,.0f} probes/s (explain off), {full:>9,.0f} (explain on); "
              f"Workload.follow (verdict + ztunnel's hop) {front:>8,.0f} probes/s   [target ≥ 50,000]")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
