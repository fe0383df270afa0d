#!/usr/bin/env python3
"""The agent against dnsmasq (UDP, dnsperf) and unbound (TCP, pipelined) on the same 10,000 names and a pod-like mix.

One run starts, on loopback only:

- an upstream that answers NXDOMAIN for every forwarded name: unbound (``local-zone static`` with an SOA of
  TTL 0, so neither dnsmasq, run with ``--no-negcache``, nor unbound caches the answer and every forwarded
  query goes upstream for every server, as for pilot-agent, which caches nothing it forwards), or dnsmasq
  ``--local=/fwd.example/`` (``--upstream-server dnsmasq``; it forks a process per TCP connection, which
  every forwarded TCP query of the agent then pays: pilot-agent opens a connection per exchange);
- the agent (``netsim dns serve --name-table``), dnsmasq (``--addn-hosts``) and unbound (``local-data``)
  serving the same 10,000 names, each forwarding ``fwd.example`` to that upstream.

The query file mixes, seeded: 80 % A and 15 % AAAA for table names (one name in ten has an IPv6 address too),
5 % A for names under ``fwd.example`` that the agent must forward (NXDOMAIN from the upstream). Figures:

- saturation queries/s over UDP, dnsperf ``-c 4 -q 500``, median of 3 runs, agent / dnsmasq ratio;
- latency at a fixed 5,000 queries/s (p50, p99, max) for the agent and dnsmasq;
- TCP, pipelined, agent / unbound, through :func:`tcp_client` (4 connections, 32 queries outstanding on each;
  a connection the server ends is replaced at once and its unanswered queries sent again). dnsperf ``-m tcp``
  leaves those queries to its 2 s timeout instead, which against pilot-agent's 128 queries per connection
  measures the timeouts (``--dnsperf-tcp`` runs it as well).

    .venv/bin/python bench/dns_perf.py [--names 10000] [--seconds 10] [--runs 3] [--qps 5000]
                                       [--no-answer-cache] [--local-only | --forwarded-only]
                                       [--skip-udp | --skip-tcp] [--tcp-conns 4] [--tcp-window 32]

Needs dnsperf and dnsmasq (``./dev setup`` installs both); unbound is used when installed
(``apt-get install -y unbound``), else its figure is skipped with a note. Uses uvloop when installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netsim.dns.resolve import make_query  # noqa: E402

AGENT_HOST = "127.0.0.2"
DNSMASQ_HOST = "127.0.0.3"
UPSTREAM_HOST = "127.0.0.4"
UNBOUND_HOST = "127.0.0.6"
FORWARDED_ZONE = "fwd.example"
MIX = (("A", 0.80), ("AAAA", 0.15), ("forwarded", 0.05))


def tool(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
        return port


def table(n: int) -> list[tuple[str, str, str | None]]:
    """(name, IPv4, IPv6 or None): one name in ten is dual-stack."""
    return [(f"svc{i}.bench.example", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
             f"fd00::{i:x}" if i % 10 == 0 else None) for i in range(n)]


def query_lines(names: Sequence[tuple[str, str, str | None]], *, local_only: bool, forwarded_only: bool = False,
                seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    forwarded = [f"f{i}.{FORWARDED_ZONE}" for i in range(max(1, len(names) // 20))]
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    lines = []
    for i in range(len(names) * 2):
        kind = "A" if local_only else "forwarded" if forwarded_only else rng.choices(kinds, weights)[0]
        if kind == "forwarded":
            lines.append(f"{rng.choice(forwarded)} A")
        else:
            lines.append(f"{names[i % len(names)][0]} {kind}")
    return lines


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    qps: float
    lost: int
    cpu_us: float  # server CPU time per completed query, µs: less sensitive to a busy machine than q/s
    latencies: list[tuple[str, float]]  # (query name, seconds), with a fixed rate only


def dnsperf(host: str, port: int, queries: Path, seconds: float, *, pid: int, qps: int | None = None,
            tcp: bool = False) -> Run | None:
    """One dnsperf run against ``host:port`` (the server is process ``pid``); None when dnsperf itself failed."""
    cmd = ["dnsperf", "-s", host, "-p", str(port), "-d", str(queries), "-l", str(seconds), "-c", "4", "-T", "2",
           "-q", "500", "-t", "2"]
    if tcp:
        cmd += ["-m", "tcp"]
    if qps:
        cmd += ["-Q", str(qps), "-v"]
    cpu0 = cpu_seconds(pid)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    cpu = cpu_seconds(pid) - cpu0
    out = proc.stdout
    if proc.returncode and tcp and "Bad file descriptor" in out + proc.stderr:
        # dnsperf 2.10's TCP reconnect race (DNS-OARC/dnsperf#208, fixed by PR #218): after a server closes a
        # connection (the agent's 128 queries, miekg's rule) its receive thread may read the closed socket
        return None
    if proc.returncode:
        raise SystemExit(f"dnsperf failed ({proc.returncode}):\n{out}{proc.stderr}")
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    if not m or not done:
        raise SystemExit(f"cannot read dnsperf output:\n{out}")
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    lat = [(n, float(x)) for n, x in re.findall(r"^> \w+ (\S+) \S+ ([\d.]+)$", out, re.M)] if qps else []
    return Run(float(m[1]), int(lost[1]) if lost else 0, cpu * 1e6 / max(1, int(done[1])), lat)


def tcp_client(host: str, port: int, queries: Path, seconds: float, conns: int, window: int) -> dict[str, float]:
    """A pipelining TCP client that reconnects as a resolver does (one process, ``conns`` connections).

    Each connection keeps ``window`` queries outstanding (the next query goes out as a reply comes in).
    When the server ends a connection (FIN or RST), the client opens a new one at once and sends the
    queries the old one left unanswered again, first, with their IDs. dnsperf instead leaves such queries
    to its timeout (-t), holding its window meanwhile: against a server that closes after N queries, as
    pilot-agent does after 128 (miekg's MaxTCPQueries), it measures its own timeouts, not the server.
    Counts answers, connections, RSTs and re-sent queries; the server's reply content is not checked.
    """
    import selectors

    bodies = []
    for line in queries.read_text().split("\n"):
        if line.strip():
            name, qtype = line.split()
            q = make_query(name, {"A": 1, "AAAA": 28}[qtype], qid=0)
            bodies.append(q[2:])
    frames = [(len(b) + 2).to_bytes(2, "big") for b in bodies]  # length prefixes (the ID goes after them)
    sel = selectors.DefaultSelector()
    stats = {"answered": 0, "sent": 0, "resent": 0, "connections": 0, "resets": 0, "fins": 0}
    cursor = 0

    class Conn:
        def __init__(self) -> None:
            self.sock: socket.socket | None = None
            self.out: dict[int, int] = {}  # query ID -> index of its body
            self.next_id = 0
            self.rbuf = b""
            self.wbuf = b""

        def open(self) -> None:
            s = socket.create_connection((host, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            self.sock = s
            self.rbuf = b""
            self.wbuf = b""
            stats["connections"] += 1
            sel.register(s, selectors.EVENT_READ, self)
            again = list(self.out.items())
            stats["resent"] += len(again)
            self.send([frames[i] + qid.to_bytes(2, "big") + bodies[i] for qid, i in again])
            self.top_up()

        def top_up(self) -> None:
            nonlocal cursor
            parts = []
            while len(self.out) < window:
                i = cursor
                cursor = (cursor + 1) % len(bodies)
                qid = self.next_id
                self.next_id = (qid + 1) & 0xFFFF
                if qid in self.out:
                    break
                self.out[qid] = i
                parts.append(frames[i] + qid.to_bytes(2, "big") + bodies[i])
            stats["sent"] += len(parts)
            self.send(parts)

        def send(self, parts: list[bytes]) -> None:
            assert self.sock is not None
            data = self.wbuf + b"".join(parts)
            if not data:
                return
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.reopen(reset=True)
                return
            self.wbuf = data[n:]
            sel.modify(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.wbuf else 0), self)

        def reopen(self, *, reset: bool) -> None:
            stats["resets" if reset else "fins"] += 1
            if self.sock is not None:
                sel.unregister(self.sock)
                self.sock.close()
                self.sock = None
            self.open()

        def ready(self, mask: int) -> None:
            assert self.sock is not None
            if mask & selectors.EVENT_WRITE:
                self.send([])
                if self.sock is None:
                    return
            if not mask & selectors.EVENT_READ:
                return
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionResetError:
                self.reopen(reset=True)
                return
            if not data:
                self.reopen(reset=False)
                return
            buf = self.rbuf + data
            pos, size, done = 0, len(buf), 0
            out = self.out
            while size - pos >= 4:
                end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
                if end > size:
                    break
                if out.pop((buf[pos + 2] << 8) | buf[pos + 3], None) is not None:
                    done += 1
                pos = end
            self.rbuf = buf[pos:]
            stats["answered"] += done
            if done:
                self.top_up()

    clients = [Conn() for _ in range(conns)]
    for c in clients:
        c.open()
    t0 = time.monotonic()
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        for key, mask in sel.select(end - now):
            key.data.ready(mask)
    elapsed = time.monotonic() - t0
    for c in clients:
        if c.sock is not None:
            c.sock.close()
    return {**stats, "seconds": elapsed, "qps": stats["answered"] / elapsed}


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared: figures move with it)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def compare(servers: dict[str, tuple[str, int]], procs: dict[str, subprocess.Popen[str]], names: list[str],
            queries: Path, args: argparse.Namespace, *, tcp: bool) -> None:
    """Saturation q/s and CPU per query of ``names`` (the first against the others), median of interleaved runs."""
    mode = "TCP pipelined" if tcp else "UDP saturation"
    runs: dict[str, list[Run]] = {n: [] for n in names}
    for n in names:
        dnsperf(*servers[n], queries, 2, pid=procs[n].pid, tcp=tcp)  # warm-up (caches, answer cache)
    failed: dict[str, int] = dict.fromkeys(names, 0)
    for _ in range(args.runs):
        for n in names:  # interleaved, so drift on a shared machine hits all alike
            r = dnsperf(*servers[n], queries, args.seconds, pid=procs[n].pid, tcp=tcp)
            if r is None:
                failed[n] += 1
            else:
                runs[n].append(r)
    for n in names:
        if failed[n]:
            print(f"note: {n}: {failed[n]} of {args.runs} dnsperf runs ended in dnsperf's own TCP reconnect race "
                  "(DNS-OARC/dnsperf#208; 'Bad file descriptor'), left out")
    names = [n for n in names if runs[n]]
    runs = {n: runs[n] for n in names}
    if len(names) < 2:
        return
    med = {n: statistics.median(r.qps for r in rs) for n, rs in runs.items()}
    cpu = {n: statistics.median(r.cpu_us for r in rs) for n, rs in runs.items()}
    for n, rs in runs.items():
        print(f"{mode:15s} {n:14s} {med[n]:9.0f} q/s, {cpu[n]:5.1f} us CPU/query, lost {sum(r.lost for r in rs)}"
              f"  (runs: {', '.join(f'{r.qps:.0f}' for r in rs)})")
    ref = names[-1]  # dnsmasq or unbound; every agent variant is compared with it
    for n in names[:-1]:
        print(f"{mode} ratio {n}/{ref}: {med[n] / med[ref]:.2f} q/s" + (" (target >= 1.0)" if n == "agent" else "")
              + f"; CPU per query {cpu[n] / cpu[ref]:.2f}x")


def compare_tcp(servers: dict[str, tuple[str, int]], procs: dict[str, subprocess.Popen[str]], names: list[str],
                queries: Path, args: argparse.Namespace) -> None:
    """Pipelined TCP through :func:`tcp_client` (the same client for every server), median of interleaved runs."""
    print(f"TCP pipelined: the bench's own client, {args.tcp_conns} connections x {args.tcp_window} queries "
          "outstanding; when a server ends a connection it reconnects at once and sends the unanswered queries "
          "again (dnsperf would wait -t seconds for each: see --dnsperf-tcp)")
    runs: dict[str, list[tuple[float, float, dict[str, float]]]] = {n: [] for n in names}
    for n in names:
        tcp_client(*servers[n], queries, 1, args.tcp_conns, args.tcp_window)  # warm-up (answer caches)
    for _ in range(args.runs):
        for n in names:  # interleaved, so drift on a shared machine hits all alike
            cpu0 = cpu_seconds(procs[n].pid)
            r = tcp_client(*servers[n], queries, args.seconds, args.tcp_conns, args.tcp_window)
            cpu = cpu_seconds(procs[n].pid) - cpu0
            runs[n].append((r["qps"], cpu * 1e6 / max(1, r["answered"]), r))
    med = {n: statistics.median(q for q, _, _ in rs) for n, rs in runs.items()}
    cpu = {n: statistics.median(c for _, c, _ in rs) for n, rs in runs.items()}
    for n, rs in runs.items():
        last = rs[-1][2]
        print(f"TCP pipelined   {n:14s} {med[n]:9.0f} q/s, {cpu[n]:5.1f} us CPU/query  (runs: "
              f"{', '.join(f'{q:.0f}' for q, _, _ in rs)}; last run: {last['connections']:.0f} connections, "
              f"{last['fins']:.0f} ended by FIN and {last['resets']:.0f} by RST, {last['resent']:.0f} queries re-sent)")
    ref = names[-1]
    for n in names[:-1]:
        target = " (target >= 1.0)" if n == "agent" else ""
        print(f"TCP pipelined ratio {n}/{ref}: {med[n] / med[ref]:.2f} q/s{target}; "
              f"CPU per query {cpu[n] / cpu[ref]:.2f}x")


def upstream_conf(path: Path, port: int) -> None:
    """unbound as the upstream: NXDOMAIN (with an SOA of TTL 0) for every name under the forwarded zone, UDP and TCP."""
    path.write_text("\n".join([
        "server:", f"  interface: {UPSTREAM_HOST}", f"  port: {port}", "  do-daemonize: no", '  chroot: ""',
        '  username: ""', f'  directory: "{path.parent}"', '  pidfile: ""', "  use-syslog: no", '  logfile: ""',
        "  verbosity: 0", "  num-threads: 1", "  access-control: 127.0.0.0/8 allow", "  do-ip6: no",
        "  incoming-num-tcp: 256", '  module-config: "iterator"', f'  local-zone: "{FORWARDED_ZONE}." static',
        # a receive buffer and query list that a stall on the busy machine does not overflow (a dropped query
        # costs the server that forwarded it a full timeout)
        "  so-rcvbuf: 4m", "  num-queries-per-thread: 4096",
        # TTL and minimum 0: an NXDOMAIN nobody caches (unbound caches one without an SOA, whatever its settings)
        f'  local-data: "{FORWARDED_ZONE}. 0 IN SOA ns.{FORWARDED_ZONE}. host.{FORWARDED_ZONE}. 1 0 0 0 0"',
        "remote-control:", "  control-enable: no"]) + "\n")


def unbound_conf(path: Path, port: int, names: Sequence[tuple[str, str, str | None]], upstream: int) -> None:
    lines = ["server:", f"  interface: {UNBOUND_HOST}", f"  port: {port}", "  do-daemonize: no", '  chroot: ""',
             '  username: ""', f'  directory: "{path.parent}"', '  pidfile: ""', "  use-syslog: no",
             '  logfile: ""', "  verbosity: 0", "  num-threads: 1", "  access-control: 127.0.0.0/8 allow",
             "  do-not-query-localhost: no", '  module-config: "iterator"', "  do-ip6: no",
             '  local-zone: "bench.example." static']
    for name, v4, v6 in names:
        lines.append(f'  local-data: "{name}. 30 IN A {v4}"')
        if v6:
            lines.append(f'  local-data: "{name}. 30 IN AAAA {v6}"')
    lines += ["remote-control:", "  control-enable: no",
              "forward-zone:", f'  name: "{FORWARDED_ZONE}."', f"  forward-addr: {UPSTREAM_HOST}@{upstream}"]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--qps", type=int, default=5000)
    ap.add_argument("--no-answer-cache", action="store_true", help="run the agent with --no-answer-cache")
    ap.add_argument("--local-only", action="store_true", help="only A queries for table names (no forwards)")
    ap.add_argument("--forwarded-only", action="store_true", help="only A queries for forwarded names")
    ap.add_argument("--upstream-server", choices=("unbound", "dnsmasq"), default=None,
                    help="what answers the forwarded names (default unbound when installed: dnsmasq forks a "
                         "process per TCP connection, so with it every forwarded TCP query of the agent, which "
                         "opens a connection per exchange as pilot-agent does, also measures a fork)")
    ap.add_argument("--skip-tcp", action="store_true")
    ap.add_argument("--skip-udp", action="store_true", help="only the TCP comparison")
    ap.add_argument("--tcp-conns", type=int, default=4, help="TCP client connections (default 4, as dnsperf -c 4)")
    ap.add_argument("--tcp-window", type=int, default=32, help="queries outstanding per TCP connection (default 32)")
    ap.add_argument("--dnsperf-tcp", action="store_true", help="also run dnsperf -m tcp against the TCP servers")
    ap.add_argument("--agent-repo", type=Path, default=REPO,
                    help="run the agent of this checkout (e.g. an older one, for before/after figures)")
    ap.add_argument("--baseline-repo", type=Path, default=None,
                    help="also run the agent of this checkout as 'agent-base', interleaved with the others "
                         "in the same run (before/after figures under the same load)")
    args = ap.parse_args()
    dnsmasq_bin, unbound_bin = tool("dnsmasq"), tool("unbound")
    if tool("dnsperf") is None or dnsmasq_bin is None:
        raise SystemExit("dnsperf and dnsmasq are needed (./dev setup installs them)")
    names = table(args.names)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        nt = tmp / "ndsz.json"
        nt.write_text(json.dumps({"table": {n: {"ips": [v4, v6] if v6 else [v4], "registry": "External"}
                                            for n, v4, v6 in names}}))
        hosts = tmp / "hosts"
        hosts.write_text("".join(f"{v4} {n}\n" + (f"{v6} {n}\n" if v6 else "") for n, v4, v6 in names))
        queries = tmp / "queries"
        queries.write_text("\n".join(query_lines(names, local_only=args.local_only,
                                                 forwarded_only=args.forwarded_only)) + "\n")
        rc = tmp / "resolv.conf"
        rc.write_text(f"nameserver {UPSTREAM_HOST}\n")
        uport, aport, dport, bport = (free_port(UPSTREAM_HOST), free_port(AGENT_HOST), free_port(DNSMASQ_HOST),
                                      free_port(UNBOUND_HOST))
        dnsmasq_common = [dnsmasq_bin, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                          "--bind-interfaces", "--user=root", "--pid-file=", "--log-facility=-"]

        def agent_cmd(port: int, *extra: str) -> list[str]:
            return [sys.executable, "-m", "netsim", "dns", "serve", "--name-table", str(nt), "--resolv-conf",
                    str(rc), "--listen", f"{AGENT_HOST}:{port}", "--upstream", f"{UPSTREAM_HOST}:{uport}",
                    "--reload-interval", "0", *(["--no-answer-cache"] if args.no_answer_cache else []), *extra]

        upstream_kind = args.upstream_server or ("unbound" if unbound_bin is not None else "dnsmasq")
        if upstream_kind == "unbound":
            if unbound_bin is None:
                raise SystemExit("--upstream-server unbound: unbound is not installed")
            uconf = tmp / "upstream.conf"
            upstream_conf(uconf, uport)
            upstream_cmd = [unbound_bin, "-d", "-c", str(uconf)]
        else:
            upstream_cmd = [*dnsmasq_common, f"--listen-address={UPSTREAM_HOST}", f"--port={uport}",
                            f"--local=/{FORWARDED_ZONE}/"]
        procs: dict[str, subprocess.Popen[str]] = {
            "upstream": subprocess.Popen(upstream_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True),
            "agent": subprocess.Popen(agent_cmd(aport), cwd=args.agent_repo, stderr=subprocess.PIPE, text=True),
            "dnsmasq": subprocess.Popen([*dnsmasq_common, f"--listen-address={DNSMASQ_HOST}", f"--port={dport}",
                                         f"--addn-hosts={hosts}", "--cache-size=20000", "--local=/bench.example/",
                                         "--no-negcache",
                                         f"--server=/{FORWARDED_ZONE}/{UPSTREAM_HOST}#{uport}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True),
        }
        servers = {"agent": (AGENT_HOST, aport), "dnsmasq": (DNSMASQ_HOST, dport)}
        udp_names = ["agent", "dnsmasq"]
        if args.baseline_repo is not None:
            bport_base = free_port(AGENT_HOST)
            procs["agent-base"] = subprocess.Popen(
                agent_cmd(bport_base), cwd=args.baseline_repo,
                env={**os.environ, "PYTHONPATH": str(args.baseline_repo)}, stderr=subprocess.DEVNULL, text=True)
            servers["agent-base"] = (AGENT_HOST, bport_base)
            udp_names = ["agent", "agent-base", "dnsmasq"]
        if unbound_bin is not None and not args.skip_tcp:
            if args.agent_repo == REPO:  # older checkouts lack --tcp-max-queries
                # the same agent without miekg's 128 queries per TCP connection (unbound has no such cap)
                cport = free_port(AGENT_HOST)
                procs["agent-uncapped"] = subprocess.Popen(agent_cmd(cport, "--tcp-max-queries", "1000000"),
                                                           cwd=REPO, stderr=subprocess.DEVNULL, text=True)
                servers["agent-uncapped"] = (AGENT_HOST, cport)
            conf = tmp / "unbound.conf"
            unbound_conf(conf, bport, names, uport)
            procs["unbound"] = subprocess.Popen([unbound_bin, "-d", "-c", str(conf)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
            servers["unbound"] = (UNBOUND_HOST, bport)
        elif not args.skip_tcp:
            print("note: unbound is not installed (apt-get install -y unbound): no TCP comparison")
        try:
            for host, port in servers.values():
                wait_ready(host, port, names[-1][0])
            wait_ready(UPSTREAM_HOST, uport, f"x.{FORWARDED_ZONE}")
            share = {"A": 1.0} if args.local_only else {"forwarded": 1.0} if args.forwarded_only else dict(MIX)
            print(f"table: {len(names)} names; mix: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items())
                  + f"; dnsperf -c 4 -T 2 -q 500, {args.seconds:g} s per run, median of {args.runs} "
                  f"(runs interleaved); loopback only; upstream for forwarded names: {upstream_kind}"
                  + (" (its NXDOMAIN carries an SOA of TTL 0: unbound caches none, dnsmasq runs with --no-negcache, "
                     "so every forwarded query goes upstream for all, as for pilot-agent, which caches nothing)"
                     if upstream_kind == "unbound" else " (no SOA: unbound may cache its NXDOMAIN answers)"))
            print(f"load average at start: {load()}")
            if not args.skip_udp:
                compare(servers, procs, udp_names, queries, args, tcp=False)
            for name in [] if args.skip_udp else udp_names:
                run = dnsperf(*servers[name], queries, args.seconds, pid=procs[name].pid, qps=args.qps)
                assert run is not None  # UDP: dnsperf's TCP race cannot happen
                ms = [x * 1000 for _, x in run.latencies]
                local = [x * 1000 for n, x in run.latencies if not n.endswith(FORWARDED_ZONE)] or [0.0]
                fwd = [x * 1000 for n, x in run.latencies if n.endswith(FORWARDED_ZONE)] or [0.0]
                print(f"at {args.qps} q/s  {name:12s} achieved {run.qps:7.0f} q/s, lost {run.lost}; latency ms: "
                      f"avg {statistics.mean(ms):.3f} p50 {pct(ms, 50):.3f} p99 {pct(ms, 99):.3f} max {max(ms):.3f} "
                      f"(n={len(ms)}; target p99 < 0.3 ms for the agent); p99 of table names {pct(local, 99):.3f}, "
                      f"of forwarded {pct(fwd, 99):.3f}")
            if "unbound" in servers:
                tcp_names = [n for n in ("agent", "agent-uncapped", "agent-base", "unbound") if n in servers]
                compare_tcp(servers, procs, tcp_names, queries, args)
                if args.dnsperf_tcp:
                    print("dnsperf -m tcp (leaves a query the server did not answer before closing to its 2 s timeout,"
                          " holding its window meanwhile: against the agent's 128 queries per connection it measures "
                          "those timeouts)")
                    compare(servers, procs, tcp_names, queries, args, tcp=True)
            print(f"load average at end: {load()}")
        finally:
            for pr in procs.values():
                pr.terminate()
            for pr in procs.values():
                try:
                    pr.wait(10)
                except subprocess.TimeoutExpired:
                    pr.kill()
        agent = procs["agent"]
        err = agent.stderr.read() if agent.stderr else ""
        counters = [ln for ln in err.splitlines() if "counters (exit)" in ln]
        if counters:
            print(counters[-1].replace("netsim dns: ", "agent "))
        if "Traceback" in err:
            print(err, file=sys.stderr)


if __name__ == "__main__":
    main()
