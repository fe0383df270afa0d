"""The agent under hostile conditions: half-written config files, bad numbers, slow TCP clients, stopping.

Each test here failed on the agent before issue 13: an empty file on reload emptied the table, ``--timeout nan``
was accepted, 512 slow TCP clients kept every slot, and SIGTERM printed a traceback per TCP client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
from dns_helpers import FakeUpstream, RunningAgent
from test_dns_cli import error_line, run
from test_dns_server import SE, _a, _ask, _closed, _recv, _small_lookup, _strict_loader

from netsim.dns.resolve import make_query
from netsim.dns.server import TCP_PRESSURE_FLOOR, ServerConfig
from netsim.errors import NetsimError

REPO = Path(__file__).resolve().parents[2]

def _wait(cond: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


# --------------------------------------------------------------------------------------------
# Reload: an empty or shrinking file is a write in progress until it stays so

@pytest.fixture
def reloading(tmp_path: Path) -> Iterator[tuple[RunningAgent, Path]]:
    cfg = tmp_path / "se.yaml"
    cfg.write_text(SE.format(host="one.example.com", ip="192.0.2.1"))
    with RunningAgent(_strict_loader(cfg), reload_interval=0.05, reload_settle=0.5, watch=lambda: [cfg]) as a:
        yield a, cfg


def test_empty_file_on_reload_keeps_the_table_until_the_write_completes(reloading: tuple[RunningAgent, Path]) -> None:
    a, cfg = reloading
    assert _a(_ask(a, "one.example.com.")) == ["192.0.2.1"]
    cfg.write_text("")  # the editor truncated the file; the new content comes a moment later
    assert _wait(lambda: any("is empty, perhaps a write in progress" in ln for ln in a.logs))
    assert _a(_ask(a, "one.example.com.")) == ["192.0.2.1"]  # still answered from the old table
    cfg.write_text(SE.format(host="two.example.com", ip="192.0.2.2"))
    assert _wait(lambda: a.server.counters.reloads == 1)
    assert _a(_ask(a, "two.example.com.")) == ["192.0.2.2"]
    assert not any("taking it as written" in ln for ln in a.logs)
    assert any("keeping the previous table" in ln and str(cfg) in ln for ln in a.logs)


def test_a_file_that_stays_empty_across_two_reads_is_taken(reloading: tuple[RunningAgent, Path]) -> None:
    a, cfg = reloading
    cfg.write_text("")
    assert _wait(lambda: a.server.counters.reloads == 1)
    assert any(f"{cfg} is empty still, so taking it as written" in ln for ln in a.logs)
    assert _ask(a, "one.example.com.").rcode() == dns.rcode.SERVFAIL  # gone: forwarded, no upstream


def test_a_shrinking_file_is_read_again_before_it_is_taken(reloading: tuple[RunningAgent, Path]) -> None:
    a, cfg = reloading
    full = cfg.read_text()
    cut = full[: len(full) // 2]  # half-written: still valid YAML up to the cut? either way not taken at once
    t0 = time.monotonic()
    cfg.write_text(SE.format(host="t.example.com", ip="192.0.2.3")[: len(cut)])
    assert _wait(lambda: any("shrank from" in ln for ln in a.logs))
    assert _a(_ask(a, "one.example.com.")) == ["192.0.2.1"]
    assert _wait(lambda: a.server.counters.reloads + a.server.counters.reload_errors == 1)
    assert time.monotonic() - t0 >= 0.5  # read again only after the settle time


def test_sighup_on_an_empty_file_also_waits(reloading: tuple[RunningAgent, Path]) -> None:
    a, cfg = reloading
    a.call(a.server.spawn_reload, "SIGHUP")
    assert _wait(lambda: a.server.counters.reloads == 1)  # an unchanged file reloads at once
    cfg.write_text("")
    a.call(a.server.spawn_reload, "SIGHUP")
    assert _wait(lambda: any("reload (SIGHUP):" in ln and "is empty" in ln for ln in a.logs))
    assert _a(_ask(a, "one.example.com.")) == ["192.0.2.1"]


# --------------------------------------------------------------------------------------------
# Numeric options

@pytest.mark.parametrize("option", ["--timeout", "--reload-interval", "--max-tcp", "--max-inflight",
                                    "--tcp-max-queries"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e400", "99999999", "-inf", "NaN"])
def test_numeric_serve_options_refuse_non_finite_negative_and_huge(option: str, value: str) -> None:
    line = error_line(run("serve", "--config", "does-not-matter.yaml", option, value))
    assert line.startswith(f"Error: Invalid value for '{option}': ")


def test_timeout_zero_is_refused_and_reload_interval_zero_means_off() -> None:
    assert "--timeout" in error_line(run("serve", "--config", "x.yaml", "--timeout", "0"))
    # 0 is a valid --reload-interval: the error is about the missing file, not the number
    assert "x.yaml" in error_line(run("serve", "--config", "x.yaml", "--reload-interval", "0"))


@pytest.mark.parametrize("field,value", [("timeout", float("nan")), ("timeout", float("inf")), ("max_tcp", 0),
                                         ("tcp_idle", -1.0), ("reload_interval", float("nan"))])
def test_server_config_refuses_what_the_cli_refuses(field: str, value: float) -> None:
    with pytest.raises(NetsimError, match=field):
        ServerConfig(**{field: value})


# --------------------------------------------------------------------------------------------
# TCP slots: per-query read deadline, pressure, the slot of the longest waiter

def _frame(name: str = "productpage.", qid: int = 7) -> bytes:
    q = make_query(name, qid=qid)
    return struct.pack("!H", len(q)) + q


def _reply(s: socket.socket, timeout: float = 2) -> bytes:
    s.settimeout(timeout)
    return _recv(s, struct.unpack("!H", _recv(s, 2))[0])


def test_a_query_must_arrive_whole_within_the_read_deadline() -> None:
    """miekg sets one deadline for length and body: a late length prefix does not restart the clock."""
    with RunningAgent(_small_lookup(), tcp_first_read=1.0, max_tcp=100) as a:
        s = socket.create_connection((a.host, a.port), timeout=5)
        frame = _frame()
        t0 = time.monotonic()
        time.sleep(0.7)
        s.sendall(frame[:2])  # in time for the length
        closed_at = None
        for b in frame[2:]:  # the body a byte at a time, finishing well after the 1 s deadline
            time.sleep(0.03)
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed_at = time.monotonic() - t0
                break
        assert _closed(s, 2)
        assert closed_at is None or closed_at < 1.6
        assert a.server.counters.queries == 0
        s.close()


def test_replies_pipelined_on_one_connection_come_back_in_order() -> None:
    with RunningAgent(_small_lookup()) as a:
        s = socket.create_connection((a.host, a.port), timeout=5)
        s.sendall(b"".join(_frame("productpage.", qid=i) for i in range(50)))
        ids = [struct.unpack("!H", _reply(s)[:2])[0] for _ in range(50)]
        assert ids == list(range(50))
        s.close()


def _ending(s: socket.socket) -> str:
    """How the server ended the connection after the replies read so far: "FIN", "RST" or "open"."""
    s.settimeout(2)
    try:
        return "FIN" if s.recv(1) == b"" else "more data"
    except ConnectionResetError:
        return "RST"
    except TimeoutError:
        return "open"


def _cap_endings(host: str, port: int) -> list[object]:
    """Against a server closing after 3 queries: the reply IDs and the ending with exactly 3 queries sent,
    then with 5 pipelined (two past the cap)."""
    out: list[object] = []
    for sent in (3, 5):
        c = socket.create_connection((host, port), timeout=5)
        c.sendall(b"".join(_frame(qid=i) for i in range(sent)))
        time.sleep(0.3)  # the replies and the end have arrived: the replies are still read first
        out += [[struct.unpack("!H", _reply(c)[:2])[0] for _ in range(3)], _ending(c)]
        c.close()
    return out


def _miekg_like_server(listener: socket.socket, cap: int) -> None:
    """miekg's serveTCPConn, with blocking sockets: read one whole query (length, then exactly that many
    bytes), write its reply, and close after ``cap`` of them; pipelined bytes past them stay unread."""
    for _ in range(2):
        conn, _ = listener.accept()
        with conn:
            for _ in range(cap):
                n = struct.unpack("!H", _recv(conn, 2))[0]
                q = _recv(conn, n)
                reply = q[:2] + bytes([q[2] | 0x80]) + q[3:]
                conn.sendall(struct.pack("!H", len(reply)) + reply)


@pytest.mark.parametrize("uvloop", [False, True])
def test_at_the_query_cap_the_connection_ends_as_miekgs_does(uvloop: bool) -> None:
    """miekg answers MaxTCPQueries queries, reading one whole query at a time, then closes. What the client
    sees is the kernel's doing, so it is taken from a server that reads and closes as miekg does: with
    nothing more sent, a FIN; with queries pipelined past the cap unread in the socket, a reset (RST).
    Either way the replies to the queries within the cap arrive first. The agent ends both alike."""
    listener = socket.create_server(("127.0.0.1", 0))
    ref = threading.Thread(target=_miekg_like_server, args=(listener, 3), daemon=True)
    ref.start()
    want = _cap_endings(*listener.getsockname()[:2])
    ref.join(5)
    listener.close()
    assert want == [[0, 1, 2], "FIN", [0, 1, 2], "RST"]  # this kernel's behaviour, which miekg inherits
    with RunningAgent(_small_lookup(), uvloop=uvloop, tcp_max_queries=3) as a:
        assert _cap_endings(a.host, a.port) == want
        assert a.server.counters.queries == 6


def test_full_slots_go_to_a_new_connection_at_the_expense_of_the_longest_waiter() -> None:
    with RunningAgent(_small_lookup(), max_tcp=2, tcp_first_read=30, tcp_idle=30) as a:
        c1 = socket.create_connection((a.host, a.port), timeout=5)
        time.sleep(0.05)
        c2 = socket.create_connection((a.host, a.port), timeout=5)
        c2.sendall(_frame())
        assert _reply(c2)  # c2 answered after c1 connected: c1 has waited longest
        c3 = socket.create_connection((a.host, a.port), timeout=5)
        c3.sendall(_frame())
        assert _reply(c3)
        assert _closed(c1, 0.5)
        assert a.server.counters.tcp_shed >= 1
        for c in (c1, c2, c3):
            c.close()


def test_idle_connections_are_shed_under_pressure_like_unbound() -> None:
    """Below 50 % free slots the wait for a query drops to 1 % of itself, never below 200 ms."""
    with RunningAgent(_small_lookup(), max_tcp=10, tcp_first_read=20, tcp_idle=20) as a:
        few = [socket.create_connection((a.host, a.port), timeout=5) for _ in range(4)]  # 60 % free
        assert not any(_closed(c, 0.6) for c in few[:1])
        assert a.call(lambda: a.server.tcp_connections) == 4
        more = [socket.create_connection((a.host, a.port), timeout=5) for _ in range(3)]  # 30 % free
        t0 = time.monotonic()
        assert all(_closed(c, 2) for c in few)  # waited past 200 ms: shed
        assert time.monotonic() - t0 < 1.0
        assert not any(_closed(c, 0.5) for c in more)  # 70 % free again: back to the full 20 s
        assert a.call(lambda: a.server.tcp_wait_limit(True)) == 20
        assert TCP_PRESSURE_FLOOR == 0.2
        for c in few + more:
            c.close()


SLOW_CLIENTS = r"""
import asyncio, sys
host, port, n, frame = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
connected = 0

async def slow(chunk, pause):  # a query in pieces of `chunk` bytes, `pause` s apart; reconnects when closed
    global connected
    while True:
        try:
            r, w = await asyncio.open_connection(host, port)
            connected += 1
            while True:
                for i in range(0, len(frame), chunk):
                    w.write(frame[i:i + chunk])
                    await w.drain()
                    await asyncio.sleep(pause)
        except Exception:
            await asyncio.sleep(0.05)

async def main():
    # half send a whole query every 2 s, half a byte every 0.5 s
    tasks = [asyncio.create_task(slow(len(frame), 2) if i % 2 else slow(1, 0.5)) for i in range(n)]
    while connected < n:
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await asyncio.gather(*tasks)

asyncio.run(main())
"""


def test_600_slow_tcp_clients_leave_room_for_a_new_one_and_udp_keeps_working() -> None:
    with RunningAgent(_small_lookup(), uvloop=True) as a:
        # The slots held are sampled in the agent's loop every 20 ms. Sampled from this thread at a few
        # instants (as before), the peak could read 0: the 600 clients start together with the same periods,
        # so once shed together under pressure they come back in waves (300 connections held ~0.3 s, then
        # none for ~0.8 s), and eight samples 0.5 s apart could all fall between two waves.
        peak = [0]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], a.server.tcp_connections)
                await asyncio.sleep(0.02)

        sampler = a.call(lambda: a.loop.create_task(sample()))
        frame = _frame()
        slow = subprocess.Popen([sys.executable, "-c", SLOW_CLIENTS, a.host, str(a.port), "600", frame.hex()],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert slow.stdout is not None
            assert slow.stdout.readline().strip() == "ready", slow.stderr.read() if slow.stderr else ""
            for _ in range(8):
                time.sleep(0.5)
                t0 = time.monotonic()
                assert _a(_ask(a, "productpage.", tcp=True, timeout=1)) == ["9.9.9.9"]
                assert time.monotonic() - t0 < 1.0
                t0 = time.monotonic()
                assert _a(_ask(a, "productpage.", timeout=1)) == ["9.9.9.9"]
                assert time.monotonic() - t0 < 1.0
            assert a.call(lambda: peak[0]) >= 100  # the clients did hold many slots …
            assert a.server.counters.tcp_shed >= 300  # … and were shed again and again under pressure
        finally:
            a.call(sampler.cancel)
            slow.kill()
            slow.wait()


# --------------------------------------------------------------------------------------------
# Stopping with clients connected and queries in flight

def _serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    nt = tmp_path / "ndsz.json"
    nt.write_text('{"table": {"productpage.ns1.svc.cluster.local": {"ips": ["9.9.9.9"], "registry": "External"}}}')
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\n")
    proc = subprocess.Popen([sys.executable, "-m", "netsim", "dns", "serve", "--name-table", str(nt),
                             "--resolv-conf", str(rc), "--listen", "127.0.0.1:0", "--reload-interval", "0", *extra],
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "serving" in line, line + proc.stderr.read()
    return proc, int(line.split(" on 127.0.0.1:")[1].split(" ")[0])


def _stop(proc: subprocess.Popen[str]) -> str:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 3
    assert "Traceback" not in err and "Exception" not in err, err
    return err


def test_sigterm_with_100_tcp_clients_connected_exits_0_without_a_traceback(tmp_path: Path) -> None:
    proc, port = _serve(tmp_path)
    clients = []
    try:
        for i in range(100):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 3 == 0:
                c.sendall(_frame("productpage.ns1.svc.cluster.local.", qid=i))
                assert _reply(c)
            elif i % 3 == 1:
                c.sendall(_frame()[:7])  # half a query
            clients.append(c)
        err = _stop(proc)
        assert "counters (exit): queries=34 " in err
        assert all(_closed(c, 2) for c in clients)
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()


def test_sigterm_while_queries_are_being_forwarded(tmp_path: Path) -> None:
    with FakeUpstream(mode="silent") as up:
        proc, port = _serve(tmp_path, "--upstream", f"127.0.0.1:{up.port}", "--timeout", "5")
        clients = []
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(20):
                u.sendto(make_query(f"q{i}.example.org.", qid=i), ("127.0.0.1", port))
            for i in range(5):
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(_frame(f"t{i}.example.org.", qid=i) + _frame("productpage.", qid=100 + i))
                clients.append(c)
            assert _wait(lambda: up.queries >= 25)
            err = _stop(proc)
            assert "forwarded=25 " in err
            u.close()
        finally:
            for c in clients:
                c.close()
            if proc.poll() is None:
                proc.kill()
