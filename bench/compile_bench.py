"""Compile benchmark: cold start of ``netsim compile --pod`` and ``netsim trace --pod``, and pods compiled
per second in one process.

Targets (issues 2 and 11): each cold start <= 0.25 s (median of 10), >= 2,000 pods/s. The machine's own
start-up (``python -c pass``) is printed beside them: on a loaded machine compare against it.
Prints figures; asserts nothing.
Run: .venv/bin/python bench/compile_bench.py [POD_FILE]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POD = REPO / "rules" / "mtls-503" / "pod.yaml"


# the README's first trace: an inbound connection to the mtls-503 pod
TRACE_ARGS = ("--from", "10.1.2.3", "--dst", "10.244.0.5:80")


def cold_start(pod: Path, command: tuple[str, ...] = ("compile",), runs: int = 10) -> list[float]:
    netsim = Path(sys.executable).parent / "netsim"
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(netsim), *command[:1], "--pod", str(pod), *command[1:]], check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def python_start(runs: int = 10) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(pod: Path, count: int = 1000) -> float:
    from netsim.capture import compile_config
    from netsim.netfilter import render_save
    from netsim.spec import load_pod, resolve

    text = pod.read_text()
    start = time.perf_counter()
    for i in range(count):
        # a fresh manifest each time (a different name), so every pod is read, resolved and compiled;
        # parsed rules are shared between pods through capture.iptables' rule cache, as in any long run
        variant = text.replace("name: ", f"name: p{i}-", 1)
        config = resolve(pod=load_pod(str(pod), text=variant)).config
        assert config is not None
        compiled = compile_config(config)
        render_save(compiled.ruleset_v4)
    return count / (time.perf_counter() - start)


def main() -> None:
    pod = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_POD
    times = cold_start(pod)
    print(f"python -c pass:                  median {python_start() * 1000:.0f} ms")
    print(f"netsim compile --pod cold start: median {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; target <= 250 ms)")
    times = cold_start(pod, ("trace", *TRACE_ARGS))
    print(f"netsim trace --pod cold start:   median {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; target <= 250 ms)")
    rate = throughput(pod)
    print(f"in-process compile + render:     {rate:,.0f} pods/s (target >= 2,000)")


if __name__ == "__main__":
    main()
