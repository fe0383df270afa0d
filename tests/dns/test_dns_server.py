"""The agent over real sockets: conformance vectors with dnspython, dig, faults, limits, reload."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from conftest import conformance_dir
from dns_helpers import (
    DATA_VECTORS,
    FakeUpstream,
    RunningAgent,
    fixture_lookup,
    open_fds,
)
from test_dns_conformance import FIXTURES, check_reply, client_edns

from netsim.dns.resolve import build_lookup
from netsim.dns.table import NameInfo, NameTable, load_config

QUERY_VECTORS = [v for v in DATA_VECTORS["vectors"] if v["kind"] == "query"]
TIMEOUT_VECTORS = [v for v in DATA_VECTORS["vectors"] if v["kind"] == "upstream_timeout"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module", params=["sequential-asyncio", "parallel-uvloop"])
def agent(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[RunningAgent]:
    """Both forwarding modes, and both event loops the server runs on (uvloop is what serve uses)."""
    conformance_dir("istio-dns")
    lookup = fixture_lookup(FIXTURES["agent_test_table"])
    mode, loop = request.param.split("-")
    with RunningAgent(lookup, upstreams=(("127.0.0.1", upstream.port),), timeout=5.0,
                      parallel=mode == "parallel", uvloop=loop == "uvloop") as a:
        yield a


def _dns_query(v: dict[str, Any]) -> dns.message.Message:
    edns = client_edns(v)
    return dns.message.make_query(v["query"]["name"], v["query"]["type"], use_edns=0 if edns else False,
                                  payload=edns, want_dnssec=False)


@pytest.mark.parametrize("v", [pytest.param(v, id=v["id"]) for v in QUERY_VECTORS]
                         or [pytest.param(None, id="conformance-missing")])
def test_query_vector_over_udp_and_tcp(agent: RunningAgent, v: dict[str, Any] | None) -> None:
    assert v is not None
    for transport in v["transports"]:
        if "rng" in v:
            agent.call(agent.rng.set, v["rng"]["set_to"])
        q = _dns_query(v)
        # dnspython sends and checks the reply; the raw bytes are kept for exact record order
        raw = _raw_exchange(q.to_wire(), agent.host, agent.port, tcp=transport == "tcp")
        reply = dns.message.from_wire(raw)
        assert q.is_response(reply)
        check_reply(raw, v, v["query"]["name"])


def _raw_exchange(wire: bytes, host: str, port: int, *, tcp: bool, timeout: float = 10) -> bytes:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if tcp:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
            s.sendall(struct.pack("!H", len(wire)) + wire)
            n = struct.unpack("!H", _recv(s, 2))[0]
            return _recv(s, n)
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, (host, port))
        return s.recv(65535)  # the client can read 65535-byte datagrams (README)


@pytest.mark.parametrize("v", [pytest.param(v, id=v["id"]) for v in TIMEOUT_VECTORS]
                         or [pytest.param(None, id="conformance-missing")])
def test_upstream_timeout_vector(v: dict[str, Any] | None) -> None:
    conformance_dir("istio-dns")
    assert v is not None
    agent_cfg = v["agent"]
    empty = build_lookup(NameTable({}), namespace=agent_cfg["proxy_namespace"],
                         domain=agent_cfg["proxy_domain_arg"])
    with FakeUpstream(mode="silent") as up, RunningAgent(
            empty, upstreams=(("127.0.0.1", up.port),), timeout=agent_cfg["upstream_timeout_ms"] / 1000,
            parallel=agent_cfg["forward_mode"] == "parallel") as a:
        q = dns.message.make_query(v["query"]["name"], v["query"]["type"])
        t0 = time.monotonic()
        r = dns.query.udp(q, a.host, port=a.port, timeout=5)
        elapsed = (time.monotonic() - t0) * 1000
    assert dns.rcode.to_text(r.rcode()) == v["expect"]["rcode"]
    assert list(r.answer) == v["expect"]["answer"]
    assert v["expect"]["elapsed_ms_min"] <= elapsed <= v["expect"]["elapsed_ms_max"], elapsed


# --------------------------------------------------------------------------------------------
# dnsmasq as a real upstream on loopback, and upstream faults

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


class Dnsmasq:
    def __init__(self, tmp: Path, hosts: dict[str, str], host: str = "127.0.0.3") -> None:
        if DNSMASQ is None:
            pytest.skip("dnsmasq is not installed (./dev setup installs it)")
        self.host = host
        self.port = _free_port(host)
        hf = tmp / "dnsmasq.hosts"
        hf.write_text("".join(f"{ip} {name}\n" for name, ip in hosts.items()))
        self.cmd = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                    "--local=/corp.example/",
                    f"--addn-hosts={hf}", f"--listen-address={host}", "--bind-interfaces",
                    f"--port={self.port}", "--user=root", "--pid-file=", "--log-facility=-"]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dnsmasq:
        for _attempt in range(5):  # the free UDP port may be taken for TCP: dnsmasq then exits, try another
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:  # ready when it answers
                try:
                    dns.query.udp(dns.message.make_query("ready.test.", "A"), self.host, port=self.port,
                                  timeout=0.2)
                    return self
                except (dns.exception.Timeout, OSError):
                    time.sleep(0.05)
            self.stop()
            old = self.port
            self.port = _free_port(self.host)
            self.cmd = [c.replace(f"--port={old}", f"--port={self.port}") for c in self.cmd]
        raise AssertionError("dnsmasq did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _small_lookup() -> Any:
    table = NameTable({"productpage.ns1.svc.cluster.local": NameInfo(ips=("9.9.9.9",), registry="Kubernetes",
                                                                      shortname="productpage", namespace="ns1")})
    return build_lookup(table, namespace="ns1", search=("ns1.svc.cluster.local",))


def _ask(a: RunningAgent, name: str, tcp: bool = False, timeout: float = 5) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    if tcp:
        return dns.query.tcp(q, a.host, port=a.port, timeout=timeout)
    return dns.query.udp(q, a.host, port=a.port, timeout=timeout)


def _a(msg: dns.message.Message) -> list[str]:
    return [rd.address for rrset in msg.answer for rd in rrset]


def test_forwards_to_dnsmasq_over_udp_and_tcp(tmp_path: Path) -> None:
    with Dnsmasq(tmp_path, {"db.corp.example": "192.0.2.44"}) as up, \
            RunningAgent(_small_lookup(), upstreams=((up.host, up.port),), timeout=2) as a:
        for tcp in (False, True):
            r = _ask(a, "db.corp.example.", tcp=tcp)
            assert r.rcode() == dns.rcode.NOERROR and _a(r) == ["192.0.2.44"]
            assert r.flags & dns.flags.RA  # dnsmasq's own flags pass through (the agent never sets RA)
            local = _ask(a, "productpage.", tcp=tcp)
            assert _a(local) == ["9.9.9.9"] and local.flags & dns.flags.AA
            assert _ask(a, "nope.corp.example.", tcp=tcp).rcode() == dns.rcode.NXDOMAIN
        counters = a.server.counters
        assert counters.forwarded == 4 and counters.local == 2 and counters.failed == 0


def test_upstream_down_gives_servfail_and_sequential_failover(tmp_path: Path) -> None:
    with Dnsmasq(tmp_path, {"db.corp.example": "192.0.2.44"}) as up:
        dead = ("127.0.0.4", _free_port("127.0.0.4"))  # nothing listens: ICMP port unreachable
        with RunningAgent(_small_lookup(), upstreams=(dead, (up.host, up.port)), timeout=1) as a:
            for _ in range(4):  # whatever the shuffled order, the live upstream answers
                assert _a(_ask(a, "db.corp.example.")) == ["192.0.2.44"]
        up.stop()
        with RunningAgent(_small_lookup(), upstreams=((up.host, up.port),), timeout=1) as a:
            t0 = time.monotonic()
            for tcp in (False, True):
                r = _ask(a, "db.corp.example.", tcp=tcp)
                assert r.rcode() == dns.rcode.SERVFAIL and not r.answer and not r.flags & dns.flags.AA
            assert time.monotonic() - t0 < 1.5  # refused at once, not a timeout
            assert _a(_ask(a, "productpage.")) == ["9.9.9.9"]  # local names still answered
            assert a.server.counters.failed == 2


@pytest.mark.parametrize("mode", ["silent", "slow", "garbage"])
def test_slow_or_garbage_upstream_gives_servfail(mode: str) -> None:
    with FakeUpstream(mode=mode) as up, RunningAgent(_small_lookup(), upstreams=(("127.0.0.1", up.port),),
                                                     timeout=0.3) as a:
        for tcp in (False, True):
            t0 = time.monotonic()
            r = _ask(a, "www.example.org.", tcp=tcp)
            elapsed = time.monotonic() - t0
            assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
            if mode != "garbage":
                assert 0.25 <= elapsed < 0.6  # SERVFAIL at the 0.3 s timeout, before the slow answer
        assert up.queries >= 2
        assert a.server.counters.failed == 2
        time.sleep(0.4 if mode == "slow" else 0)  # the late answers arrive at closed sockets: harmless
        assert _a(_ask(a, "productpage.")) == ["9.9.9.9"] and a.server.task_count == 0


def test_dig_as_client(tmp_path: Path) -> None:
    dig = shutil.which("dig")
    if dig is None:
        pytest.skip("dig is not installed (./dev setup installs dnsutils)")
    with Dnsmasq(tmp_path, {"db.corp.example": "192.0.2.44"}) as up, \
            RunningAgent(_small_lookup(), upstreams=((up.host, up.port),), timeout=2) as a:
        for extra in ([], ["+tcp"]):
            out = subprocess.run([dig, f"@{a.host}", "-p", str(a.port), "productpage.ns1.", "A", "+nocookie",
                                  "+tries=1", "+time=3", *extra], capture_output=True, text=True, timeout=10).stdout
            assert "status: NOERROR" in out and " aa" in out.split("flags:")[1].split(";")[0]
            assert "productpage.ns1.\t\t30\tIN\tA\t9.9.9.9" in out.replace("  ", "\t") or \
                "9.9.9.9" in out.split("ANSWER SECTION:")[1]
            out = subprocess.run([dig, f"@{a.host}", "-p", str(a.port), "db.corp.example", "+tries=1", "+time=3",
                                  *extra], capture_output=True, text=True, timeout=10).stdout
            assert "192.0.2.44" in out.split("ANSWER SECTION:")[1]


def test_ipv6_listen_address() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with RunningAgent(_small_lookup(), listen=(("::1", 0), ("127.0.0.1", 0))) as a:
        assert [h for h, _ in a.server.addresses] == ["::1", "127.0.0.1"]
        port6 = a.server.addresses[0][1]
        q = dns.message.make_query("productpage.ns1.svc.cluster.local.", "A")
        assert _a(dns.query.udp(q, "::1", port=port6, timeout=5)) == ["9.9.9.9"]
        assert _a(dns.query.tcp(q, "::1", port=port6, timeout=5)) == ["9.9.9.9"]


# --------------------------------------------------------------------------------------------
# Limits

def _tcp_conn(a: RunningAgent) -> socket.socket:
    s = socket.create_connection((a.host, a.port), timeout=5)
    return s


def _tcp_roundtrip(s: socket.socket, wire: bytes) -> bytes:
    s.sendall(struct.pack("!H", len(wire)) + wire)
    n = struct.unpack("!H", _recv(s, 2))[0]
    return _recv(s, n)


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _closed(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_tcp_connection_limit_and_idle_timeout_and_query_cap() -> None:
    q = dns.message.make_query("productpage.", "A").to_wire()
    with RunningAgent(_small_lookup(), max_tcp=2, tcp_first_read=0.3, tcp_idle=0.3, tcp_max_queries=3) as a:
        c1, c2 = _tcp_conn(a), _tcp_conn(a)
        assert _tcp_roundtrip(c1, q) and _tcp_roundtrip(c2, q)
        c3 = _tcp_conn(a)
        assert _tcp_roundtrip(c3, q)  # over the limit: it takes the slot of the longest waiter (c1)
        assert _closed(c1, 0.25)
        assert _closed(c2, 2) and _closed(c3, 2)  # idle past 0.3 s: closed
        c4 = _tcp_conn(a)
        for _ in range(3):
            assert _tcp_roundtrip(c4, q)
        assert _closed(c4, 2)  # at most tcp_max_queries per connection
        c5 = _tcp_conn(a)
        c5.sendall(b"\xff\xff" + b"\x00" * 10)  # a length prefix promising more than is sent
        assert _closed(c5, 2)
        for c in (c1, c2, c3, c4, c5):
            c.close()


def test_bounded_concurrency_answers_servfail_when_full() -> None:
    with FakeUpstream(mode="silent") as up, RunningAgent(_small_lookup(), upstreams=(("127.0.0.1", up.port),),
                                                         timeout=1.0, max_inflight=1) as a:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        q1 = dns.message.make_query("a.example.org.", "A")
        q2 = dns.message.make_query("b.example.org.", "A")
        s.sendto(q1.to_wire(), (a.host, a.port))
        time.sleep(0.1)
        t0 = time.monotonic()
        s.sendto(q2.to_wire(), (a.host, a.port))
        first = dns.message.from_wire(s.recv(512))
        assert first.id == q2.id and first.rcode() == dns.rcode.SERVFAIL  # immediate: no slot free
        assert time.monotonic() - t0 < 0.5
        second = dns.message.from_wire(s.recv(512))
        assert second.id == q1.id and second.rcode() == dns.rcode.SERVFAIL  # after the 1 s timeout
        s.close()


# --------------------------------------------------------------------------------------------
# Hot reload

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: default}}
spec:
  hosts: [{host}]
  addresses: [{ip}]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
"""


def _strict_loader(cfg: Path) -> Any:
    """A loader of ``cfg`` that fails on any bad object (as serve's reload does)."""

    def loader() -> Any:
        res = load_config([cfg])
        if res.errors:
            raise res.errors[0]
        return build_lookup(res.table, namespace="default")

    return loader


def test_reload_on_file_change_and_keeps_old_table_on_bad_files(tmp_path: Path) -> None:
    cfg = tmp_path / "se.yaml"
    cfg.write_text(SE.format(host="one.example.com", ip="192.0.2.1"))
    with RunningAgent(_strict_loader(cfg), reload_interval=0.05, watch=lambda: [cfg]) as a:
        assert _a(_ask(a, "one.example.com.")) == ["192.0.2.1"]
        cfg.write_text(SE.format(host="two.example.com", ip="192.0.2.2"))
        deadline = time.monotonic() + 5
        while a.server.counters.reloads < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _a(_ask(a, "two.example.com.")) == ["192.0.2.2"]
        assert _ask(a, "one.example.com.").rcode() == dns.rcode.SERVFAIL  # gone: forwarded, no upstream
        cfg.write_text("kind: ServiceEntry\n  : [broken")  # invalid YAML: keep the old table
        deadline = time.monotonic() + 5
        while a.server.counters.reload_errors < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.server.counters.reload_errors == 1
        assert _a(_ask(a, "two.example.com.")) == ["192.0.2.2"]
        assert any("keeping the previous table" in line and str(cfg) in line for line in a.logs)
        cfg.write_text(SE.format(host="three.example.com", ip="not-an-ip").replace("addresses: [not-an-ip]",
                                                                                   "addresses: 7"))
        deadline = time.monotonic() + 5
        while a.server.counters.reload_errors < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any("spec.addresses" in line for line in a.logs)
        assert _a(_ask(a, "two.example.com.")) == ["192.0.2.2"]
        assert a.call(a.server.reload, "SIGHUP") is False  # explicit reload of the same bad file


def test_stop_leaves_no_tasks_or_fds() -> None:
    before = open_fds()
    with FakeUpstream(mode="silent") as up:
        with RunningAgent(_small_lookup(), upstreams=(("127.0.0.1", up.port),), timeout=5) as a:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(dns.message.make_query("pending.example.", "A").to_wire(), (a.host, a.port))
            time.sleep(0.2)
            assert a.server.task_count == 1  # the pending forward
            s.close()
        assert a.server.task_count == 0
    assert open_fds() <= before


def test_upstream_truncated_reply_passes_through_with_tc(upstream: FakeUpstream) -> None:
    # the fixture's giant-tc rule: the upstream itself cuts to 512 bytes (29 records, TC)
    with RunningAgent(_small_lookup(), upstreams=(("127.0.0.1", upstream.port),)) as a:
        for tcp in (False, True):
            q = dns.message.make_query("giant-tc.", "A")
            raw = _raw_exchange(q.to_wire(), a.host, a.port, tcp=tcp)
            m = dns.message.from_wire(raw)
            assert m.flags & dns.flags.TC and sum(len(rs) for rs in m.answer) == 29
            assert len(raw) <= 512 or tcp
        q = dns.message.make_query("giant.", "A")  # over TCP without EDNS: all 64 records
        m = dns.message.from_wire(_raw_exchange(q.to_wire(), a.host, a.port, tcp=True))
        assert sum(len(rs) for rs in m.answer) == 64 and not m.flags & dns.flags.TC


def test_parallel_forwarding_first_good_reply_wins(tmp_path: Path) -> None:
    with Dnsmasq(tmp_path, {"db.corp.example": "192.0.2.44"}) as up, FakeUpstream(mode="silent") as slow:
        ups = (("127.0.0.1", slow.port), (up.host, up.port), ("127.0.0.4", _free_port("127.0.0.4")))
        with RunningAgent(_small_lookup(), upstreams=ups, timeout=2, parallel=True) as a:
            t0 = time.monotonic()
            assert _a(_ask(a, "db.corp.example.")) == ["192.0.2.44"]
            assert time.monotonic() - t0 < 1  # not waiting for the silent one
        with RunningAgent(_small_lookup(), upstreams=ups[::2], timeout=0.3, parallel=True) as a:
            assert _ask(a, "db.corp.example.").rcode() == dns.rcode.SERVFAIL
            assert a.server.counters.failed == 1
