"""Infer benchmark: ``netsim infer`` per dump, on every golden of today's corpus and the history corpus and on
random compiled option sets, cold (every release's layout compiled for the first time) and warm (compiles
memoised, as in a long run over a fleet, where a few hundred option sets repeat), plus the command's cold
start.

Target (issue 14): cheap enough that ``netsim drift`` reaches >= 1,000 dumps/s over a fleet whose identical
rulesets are computed once; i.e. a distinct dump well under 5 ms once warm. Prints figures; asserts nothing.
Run: .venv/bin/python bench/infer_bench.py [COUNT]
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = Path(os.environ.get("NETSIM_CONFORMANCE", REPO.parent / "shared" / "conformance"))


def goldens() -> list[str]:
    files = sorted((CONFORMANCE / "istio-iptables").glob("*.iptables.golden"))
    files += sorted((CONFORMANCE / "istio-iptables-history").glob("*/*.golden"))
    return [f.read_text() for f in files]


def fleet(count: int, seed: int = 14) -> list[str]:
    """``count`` iptables-save dumps of random option sets and releases (what pods of a fleet hold)."""
    from netsim.capture.compiled import compile_config
    from netsim.capture.config import CURRENT_LAYOUT, LAYOUT_FLOOR, WILDCARD, CaptureConfig, CidrList
    from netsim.netfilter import render_save
    from netsim.spec.options import parse_cidr_list

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        release = (1, rng.randint(LAYOUT_FLOOR[1], CURRENT_LAYOUT[1]))
        config = CaptureConfig(
            inbound_ports=rng.choice([(WILDCARD,), ("8080",), ("80", "443")]),
            inbound_ports_exclude=rng.choice([("15090", "15021", "15020"), ("15090", "15021", "8081", "15020")]),
            outbound_cidrs=rng.choice([CidrList(wildcard=True), parse_cidr_list("-i", "10.0.0.0/8,172.16.0.0/12")]),
            outbound_ports_exclude=rng.choice([(), ("3306",)]), redirect_dns=rng.random() < 0.5,
            dns_servers_v4=("10.96.0.10",), drop_invalid=rng.random() < 0.3,
            release=None if release >= CURRENT_LAYOUT else release)
        out.append(render_save(compile_config(config).ruleset_v4))
    return out


def per_dump(texts: list[str]) -> tuple[float, float]:
    """(cold, warm) mean seconds per dump through ``infer_text`` (reading included)."""
    from netsim.infer import infer_text
    from netsim.infer.sidecar import expected
    from netsim.netfilter import Names

    names = Names(groups=(("root", 0), ("java", 5001), ("ftp", 5002)))
    expected.cache_clear()
    start = time.perf_counter()
    for text in texts:
        infer_text(text, names)
    cold = (time.perf_counter() - start) / len(texts)
    start = time.perf_counter()
    for text in texts:
        infer_text(text, names)
    return cold, (time.perf_counter() - start) / len(texts)


def cold_start(path: Path, runs: int = 5) -> float:
    netsim = Path(sys.executable).parent / "netsim"
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(netsim), "infer", "--rules", str(path)], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    texts = goldens()
    if texts:
        cold, warm = per_dump(texts)
        print(f"infer per golden ({len(texts)} goldens):     cold {cold * 1000:.1f} ms, warm {warm * 1000:.1f} ms")
    dumps = fleet(count)
    cold, warm = per_dump(dumps)
    print(f"infer per dump ({count} random pods):   cold {cold * 1000:.1f} ms, warm {warm * 1000:.1f} ms "
          f"({1 / warm:,.0f} dumps/s warm)")
    sample = CONFORMANCE / "istio-iptables" / "kernel" / "tproxy.v4.iptables-save"
    if sample.exists():
        print(f"netsim infer --rules cold start:        median {cold_start(sample) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
