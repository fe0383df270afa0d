"""Ambient compile benchmark: cold start of ``netsim compile --pod`` for an ambient pod (each format), of
``netsim trace --pod`` (one question, and ``--matrix``) and of ``netsim migrate``, and ambient pods compiled per
second in one process.

Target (issue 16, as for sidecars): cold start <= 0.25 s (median of 10). The machine's own start-up
(``python -c pass``) and each run's CPU time are printed beside them (on a loaded machine, compare those).
Prints figures; asserts nothing.
Run: .venv/bin/python bench/ambient_compile_bench.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_bench import _run, python_start

REPO = Path(__file__).resolve().parent.parent
POD = REPO / "rules" / "ambient" / "shop.yaml"


def cold(args: list[str], runs: int = 10) -> tuple[float, float]:
    """Median wall and CPU seconds; the commands' stderr notes ("ambient mode: …") are silenced."""
    netsim = Path(sys.executable).parent / "netsim"
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        results = [_run([str(netsim), *args]) for _ in range(runs)]
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
    return statistics.median(w for w, _ in results), statistics.median(c for _, c in results)


def throughput(count: int = 2000) -> float:
    """Pods per second: read the manifest, decide the mode, compile, render iptables-save."""
    from netsim.capture.ambient import compile_ambient
    from netsim.capture.ambient_render import render_iptables_save
    from netsim.spec.ambient import ambient_config, decide_mode, namespace_labels, pod_overrides
    from netsim.spec.pod import load_pod_with_objects

    start = time.perf_counter()
    for _ in range(count):
        pod, objects = load_pod_with_objects(str(POD))
        assert decide_mode(pod, namespace_labels(objects)).ambient
        render_iptables_save(compile_ambient(ambient_config(None), pod_overrides(pod.annotation_map)))
    return count / (time.perf_counter() - start)


def main() -> None:
    load = os.getloadavg()[0]
    wall, cpu = python_start()
    print(f"load average {load:.1f}; python -c pass: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU")
    for label, args in (("compile --pod (ambient, iptables-save)", ["compile", "--pod", str(POD)]),
                        ("compile --pod --format nft", ["compile", "--pod", str(POD), "--format", "nft"]),
                        ("compile --pod --format json", ["compile", "--pod", str(POD), "--format", "json"]),
                        ("compile --node --format golden", ["compile", "--node", "--format", "golden"]),
                        ("trace --pod --dst (ambient)", ["trace", "--pod", str(POD), "--dst", "10.96.0.10:80"]),
                        ("trace --pod --matrix (ambient)", ["trace", "--pod", str(POD), "--matrix"]),
                        ("migrate --pod --to ambient", ["migrate", "--pod", str(POD), "--to", "ambient"])):
        wall, cpu = cold(args)
        print(f"{label:<40} cold start median of 10: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU "
              "(target 250 ms)")
    print(f"ambient pods compiled per second (read, decide, compile, render): {throughput():,.0f}")


if __name__ == "__main__":
    main()
