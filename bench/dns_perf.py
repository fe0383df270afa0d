#!/usr/bin/env python3
"""dnsperf against ``netsim dns serve`` and against dnsmasq, serving the same 10,000-name table.

Prints, for both servers: queries/s at saturation, their ratio (netsim / dnsmasq), and latency
(average, p50, p99, max) at a fixed 5,000 queries/s. Only loopback addresses are used.

    .venv/bin/python bench/dns_perf.py [--names 10000] [--seconds 10] [--qps 5000]

Needs dnsperf and dnsmasq (``./dev setup`` installs both); uses uvloop when it is installed
(``pip install -e '.[fast]'``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netsim.dns.resolve import make_query  # noqa: E402

NETSIM_HOST = "127.0.0.2"
DNSMASQ_HOST = "127.0.0.3"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def names(n: int) -> list[tuple[str, str]]:
    return [(f"svc{i}.bench.example", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}") for i in range(n)]


def wait_ready(host: str, port: int, name: str, timeout: float = 30) -> None:
    q = make_query(name, qid=0x1234)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(q, (host, port))
            try:
                if s.recv(512)[:2] == q[:2]:
                    return
            except TimeoutError:
                continue
    raise SystemExit(f"server on {host}:{port} did not answer {name}")


def dnsperf(host: str, port: int, queries: Path, seconds: float, qps: int | None) -> tuple[float, list[float]]:
    cmd = ["dnsperf", "-s", host, "-p", str(port), "-d", str(queries), "-l", str(seconds), "-c", "1", "-T", "1",
           "-q", "500", "-t", "2"]
    if qps:
        cmd += ["-Q", str(qps), "-v"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"cannot read dnsperf output:\n{out}")
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if lost and int(lost[1]) > 0 and qps:
        print(f"  note: dnsperf lost {lost[1]} queries at {qps} q/s", file=sys.stderr)
    lat = [float(x) for x in re.findall(r"^> NOERROR .* ([\d.]+)$", out, re.M)] if qps else []
    return float(m[1]), lat


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--qps", type=int, default=5000)
    args = ap.parse_args()
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (./dev setup installs it)")
    table = names(args.names)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        nt = tmp / "ndsz.json"
        nt.write_text(json.dumps({"table": {n: {"ips": [ip], "registry": "External"} for n, ip in table}}))
        hosts = tmp / "hosts"
        hosts.write_text("".join(f"{ip} {n}\n" for n, ip in table))
        queries = tmp / "queries"
        queries.write_text("".join(f"{n} A\n" for n, _ in table))
        rc = tmp / "resolv.conf"
        rc.write_text("nameserver 127.0.0.9\n")
        nport, dport, uport = free_port(NETSIM_HOST), free_port(DNSMASQ_HOST), free_port(NETSIM_HOST)
        dnsmasq_bin = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        procs = [
            subprocess.Popen([sys.executable, "-m", "netsim", "dns", "serve", "--name-table", str(nt),
                              "--resolv-conf", str(rc), "--listen", f"{NETSIM_HOST}:{nport}",
                              "--reload-interval", "0"], cwd=REPO, stderr=subprocess.PIPE, text=True),
            subprocess.Popen([sys.executable, "-m", "netsim", "dns", "serve", "--name-table", str(nt),
                              "--resolv-conf", str(rc), "--listen", f"{NETSIM_HOST}:{uport}",
                              "--reload-interval", "0", "--no-answer-cache"], cwd=REPO, stderr=subprocess.DEVNULL),
            subprocess.Popen([dnsmasq_bin, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                              "--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={DNSMASQ_HOST}",
                              "--bind-interfaces", f"--port={dport}", "--user=root", "--pid-file=",
                              "--cache-size=20000", "--log-facility=-"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            wait_ready(NETSIM_HOST, nport, table[-1][0])
            wait_ready(DNSMASQ_HOST, dport, table[-1][0])
            wait_ready(NETSIM_HOST, uport, table[-1][0])
            servers = {"netsim": (NETSIM_HOST, nport), "dnsmasq": (DNSMASQ_HOST, dport),
                       "netsim-nocache": (NETSIM_HOST, uport)}
            print(f"table: {len(table)} names; dnsperf -c 1 -T 1 -q 500, {args.seconds:g} s per run; loopback only")
            qps: dict[str, float] = {}
            for name, (h, p) in servers.items():
                dnsperf(h, p, queries, 2, None)  # warm-up
                qps[name], _ = dnsperf(h, p, queries, args.seconds, None)
                print(f"saturation  {name:14s} {qps[name]:10.0f} queries/s")
            print(f"ratio netsim/dnsmasq: {qps['netsim'] / qps['dnsmasq']:.2f} (target >= 0.6); without the "
                  f"answer cache: {qps['netsim-nocache'] / qps['dnsmasq']:.2f}")
            for name, (h, p) in list(servers.items())[:2]:
                got, lat = dnsperf(h, p, queries, args.seconds, args.qps)
                ms = [x * 1000 for x in lat]
                print(f"at {args.qps} q/s {name:8s} achieved {got:7.0f} q/s; latency ms: avg {statistics.mean(ms):.3f} "
                      f"p50 {pct(ms, 50):.3f} p99 {pct(ms, 99):.3f} max {max(ms):.3f} (n={len(ms)})")
        finally:
            for pr in procs:
                pr.terminate()
                pr.wait(10)
        err = procs[0].stderr.read() if procs[0].stderr else ""
        counters = [ln for ln in err.splitlines() if "counters (exit)" in ln]
        if counters:
            print(counters[-1].replace("netsim dns: ", "netsim "))


if __name__ == "__main__":
    main()
