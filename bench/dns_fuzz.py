#!/usr/bin/env python3
"""Long fuzz run of the DNS agent: ≥ 1,000,000 random and mutated packets.

Phase 1 feeds every packet to the pure core (``resolve``, and ``finish_forward`` with mutated
upstream replies) and counts exceptions (must be 0). Phase 2 sends the same number of packets over
UDP to a running ``netsim dns serve`` (plus TCP connections with arbitrary length prefixes), probing
with a well-formed query after every batch; it reports unanswered probes, the server's counters,
and its open file descriptors and memory before and after. Loopback only.

    .venv/bin/python bench/dns_fuzz.py [--packets 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests" / "dns")]

from dns_fuzzing import LOOKUP, TABLE, packet  # noqa: E402  (shared with tests/dns/test_dns_fuzz.py)

from netsim.dns.resolve import Forward, Reply, Transport, finish_forward, make_query, resolve  # noqa: E402

HOST = "127.0.0.5"


def phase_core(n: int, seed: int) -> None:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    t0 = time.perf_counter()
    for i in range(n):
        p = packet(rng)
        try:
            d = resolve(p, LOOKUP, transport=Transport.TCP if i & 1 else Transport.UDP, rng=lambda: rng.getrandbits(16))
            if isinstance(d, Reply):
                outcomes[d.outcome.name] += 1
            elif isinstance(d, Forward):
                outcomes["FORWARD"] += 1
                out = finish_forward(d, d.query[:2] + packet(rng)[2:])
                outcomes["upstream-ok" if out is not None else "upstream-transport-error"] += 1
            else:
                outcomes["DROP"] += 1
        except Exception as e:  # the invariant under test: nothing may escape
            errors[f"{type(e).__name__}: {e}"] += 1
    dt = time.perf_counter() - t0
    print(f"core: {n} packets in {dt:.1f} s ({n / dt:,.0f}/s); exceptions: {sum(errors.values())}")
    print("core outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    for msg, count in errors.most_common(5):
        print(f"  EXCEPTION x{count}: {msg}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def probe(sock: socket.socket, port: int, qid: int) -> float | None:
    q = make_query("productpage.ns1.svc.cluster.local.", 1, qid=qid)
    t0 = time.perf_counter()
    sock.sendto(q, (HOST, port))
    deadline = t0 + 2
    while time.perf_counter() < deadline:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        if data[:2] == q[:2] and len(data) > 12:
            return time.perf_counter() - t0
    return None


def phase_server(n: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        nt = tmp / "ndsz.json"
        nt.write_text(json.dumps({"table": {h: info.proto_dict() for h, info in TABLE.entries.items()}}))
        rc = tmp / "resolv.conf"
        rc.write_text("nameserver 127.0.0.9\nsearch ns1.svc.cluster.local\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "netsim", "dns", "serve", "--name-table", str(nt), "-n", "ns1",
                                 "--resolv-conf", str(rc), "--listen", f"{HOST}:{port}", "--timeout", "0.2",
                                 "--reload-interval", "0"], cwd=REPO, stderr=subprocess.PIPE, text=True)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(0.5)
            for _ in range(100):
                if probe(sock, port, 1) is not None:
                    break
                time.sleep(0.1)
            fd0, rss0 = fds(proc.pid), rss_kb(proc.pid)
            fuzz = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            batch = 200
            sent = tcp_conns = 0
            missed = 0
            worst = 0.0
            t0 = time.perf_counter()
            qid = 2
            while sent < n:
                for _ in range(min(batch, n - sent)):
                    fuzz.sendto(packet(rng), (HOST, port))
                    sent += 1
                if (sent // batch) % 50 == 0:  # now and then: a TCP connection with an arbitrary prefix
                    with socket.create_connection((HOST, port), timeout=2) as c:
                        c.sendall(struct.pack("!H", rng.randrange(65536)) + packet(rng))
                    tcp_conns += 1
                qid = (qid + 1) & 0xFFFF
                lat = probe(sock, port, qid)
                if lat is None:
                    missed += 1
                else:
                    worst = max(worst, lat)
            dt = time.perf_counter() - t0
            time.sleep(2.5)  # let TCP read timeouts (2 s) and forwards (0.2 s) finish
            fd1, rss1 = fds(proc.pid), rss_kb(proc.pid)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        counters = [ln for ln in err.splitlines() if "counters (exit)" in ln]
        tracebacks = err.count("Traceback")
        print(f"server: {sent} UDP packets + {tcp_conns} TCP connections in {dt:.1f} s ({sent / dt:,.0f}/s sent); "
              f"probes unanswered: {missed} of {sent // batch + (1 if sent % batch else 0)}; "
              f"slowest probe {worst * 1000:.1f} ms")
        print(f"server: open fds {fd0} -> {fd1}; RSS {rss0} -> {rss1} kB; tracebacks on stderr: {tracebacks}; "
              f"exit status {proc.returncode}")
        if counters:
            print("server " + counters[-1].replace("netsim dns: ", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-server", action="store_true")
    args = ap.parse_args()
    phase_core(args.packets, args.seed)
    if not args.skip_server:
        phase_server(args.packets, args.seed)


if __name__ == "__main__":
    main()
