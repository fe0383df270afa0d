"""Compile benchmark: cold start of ``netsim compile --pod`` and ``netsim trace --pod``, and pods compiled
per second in one process.

Targets (issues 2 and 11): each cold start <= 0.25 s (median of 10), >= 2,000 pods/s. The machine's own
start-up (``python -c pass``) is printed beside them, and each run's CPU time (on a loaded machine, compare
those).
Prints figures; asserts nothing.
Run: .venv/bin/python bench/compile_bench.py [POD_FILE]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POD = REPO / "rules" / "mtls-503" / "pod.yaml"


# the README's first trace: an inbound connection to the mtls-503 pod
TRACE_ARGS = ("--from", "10.1.2.3", "--dst", "10.244.0.5:80")


def _run(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU of the child) seconds of one run: CPU time shows netsim's own cost on a loaded machine."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(argv)}: exit status {status}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def cold_start(pod: Path, command: tuple[str, ...] = ("compile",), runs: int = 10) -> tuple[list[float], list[float]]:
    netsim = Path(sys.executable).parent / "netsim"
    runs_ = [_run([str(netsim), *command[:1], "--pod", str(pod), *command[1:]]) for _ in range(runs)]
    return [w for w, _ in runs_], [c for _, c in runs_]


def python_start(runs: int = 10) -> tuple[float, float]:
    runs_ = [_run([sys.executable, "-c", "pass"]) for _ in range(runs)]
    return statistics.median(w for w, _ in runs_), statistics.median(c for _, c in runs_)


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
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set: every run compiles netsim's sources again (an installed "
              "netsim has its bytecode); unset it for the figure users get")
    wall, cpu = python_start()
    print(f"python -c pass:                  median {wall * 1000:.0f} ms (CPU {cpu * 1000:.0f} ms)")
    for name, command in (("compile", ("compile",)), ("trace", ("trace", *TRACE_ARGS))):
        times, cpus = cold_start(pod, command)
        print(f"netsim {name + ' --pod cold start:':<25}median {statistics.median(times) * 1000:.0f} ms "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; CPU median "
              f"{statistics.median(cpus) * 1000:.0f} ms; target <= 250 ms)")
    rate = throughput(pod)
    print(f"in-process compile + render:     {rate:,.0f} pods/s (target >= 2,000)")


if __name__ == "__main__":
    main()
