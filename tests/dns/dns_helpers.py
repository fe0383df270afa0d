"""Shared test helpers for the DNS agent: the conformance fixtures and a fake upstream (dnslib)."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from conftest import CONFORMANCE
from dnslib import QTYPE, RCODE, RR, A, DNSHeader, DNSRecord

from netsim.cli import main
from netsim.dns.resolve import Lookup, build_lookup
from netsim.dns.table import NameInfo, NameTable

DNS_VECTORS = CONFORMANCE / "istio-dns" / "dns-vectors.yaml"


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None  # always None: anything but SystemExit escapes and fails the test

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_main(*argv: str) -> Result:
    """``netsim ARGV`` in-process through ``netsim.cli.main``, exactly as the console script runs it."""
    with CliRunner().isolation() as (out, err, _):
        code: int | str | None = 0
        try:
            main(list(argv))
        except SystemExit as e:
            code = e.code
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    assert isinstance(code, int) or code is None, code
    return Result(code or 0, stdout, stderr)


def load_dns_vectors() -> dict[str, Any]:
    """The parsed dns-vectors.yaml (empty lists when the conformance folder is absent)."""
    if not DNS_VECTORS.is_file():
        return {"vectors": [], "fixtures": {}}
    data: dict[str, Any] = yaml.safe_load(DNS_VECTORS.read_text())
    return data


DATA_VECTORS: dict[str, Any] = {}


def fixture_table(fixture: dict[str, Any]) -> NameTable:
    return NameTable({host: NameInfo(ips=tuple(str(i) for i in info["ips"]), registry=info["registry"],
                                     shortname=info.get("shortname", ""), namespace=info.get("namespace", ""),
                                     alt_hosts=tuple(info.get("alt_hosts", ())))
                      for host, info in fixture["name_table"].items()})


def fixture_lookup(fixture: dict[str, Any]) -> Lookup:
    return build_lookup(fixture_table(fixture), namespace=fixture["proxy_namespace"],
                        domain=fixture["proxy_domain_arg"], search=fixture["resolv_conf"]["search"])


def write_agent_config(fixture: dict[str, Any], directory: Path, upstream_port: int) -> tuple[Path, Path]:
    """The fixture as the files ``netsim dns serve`` reads: an ndsz JSON and a resolv.conf."""
    import json

    table = {h: {k: v for k, v in info.items()} for h, info in fixture["name_table"].items()}
    for info in table.values():
        if "alt_hosts" in info:
            info["altHosts"] = info.pop("alt_hosts")
    nt = directory / "ndsz.json"
    nt.write_text(json.dumps({"table": table}))
    rc = directory / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\nsearch " + " ".join(fixture["resolv_conf"]["search"]) + "\n")
    return nt, rc


# --------------------------------------------------------------------------------------------
# The fake upstream of the conformance README: UDP and TCP on one port of 127.0.0.1

def _giant_records(count: int) -> list[RR]:
    return [RR("aaaaaaaaaaaa.aaaaaa.", QTYPE.A, ttl=30, rdata=A(f"240.0.0.{i}")) for i in range(count)]


def _plain_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def fake_upstream_reply(query: bytes) -> bytes:
    q = DNSRecord.parse(query)
    name = str(q.q.qname).lower()
    hdr = DNSHeader(id=q.header.id, qr=1, rd=q.header.rd, aa=0, ra=0)
    reply = DNSRecord(hdr, q=q.q)
    if name == "www.bing.com." or name.endswith(".www.bing.com."):
        reply.add_answer(RR("www.bing.com.", QTYPE.A, ttl=30, rdata=A("1.1.1.1")))
        return reply.pack()
    if name == "giant-tc." or name.endswith(".giant-tc."):
        recs = _giant_records(64)
        reply.header.tc = 0
        for rr in recs:  # dnslib compresses; keep records while the message stays within 512 bytes
            reply.add_answer(rr)
            if len(reply.pack()) > 512:
                reply.rr.pop()
                reply.header.tc = 1
                break
        return reply.pack()
    if name == "giant." or name.endswith(".giant."):
        # uncompressed, never truncated; packed by hand: dnslib always compresses
        qwire = _plain_name(str(q.q.qname)) + struct.pack("!HH", q.q.qtype, q.q.qclass)
        rrs = b"".join(_plain_name("aaaaaaaaaaaa.aaaaaa.") + struct.pack("!HHIH", 1, 1, 30, 4)
                       + socket.inet_aton(f"240.0.0.{i}") for i in range(64))
        flags = 0x8000 | (0x0100 if q.header.rd else 0)
        return struct.pack("!HHHHHH", q.header.id, flags, 1, 64, 0, 0) + qwire + rrs
    reply.header.rcode = RCODE.NXDOMAIN
    return reply.pack()


class FakeUpstream:
    """Serves :func:`fake_upstream_reply` (or a fault) on 127.0.0.1 UDP+TCP, one port (``port``, or a free one)."""

    def __init__(self, host: str = "127.0.0.1", mode: str = "ok", delay: float = 0.6, port: int = 0) -> None:
        self.mode = mode  # ok | silent | garbage | slow (answers correctly after ``delay`` seconds)
        self.delay = delay
        self.queries = 0
        outer = self

        class UDP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                outer.queries += 1
                reply = outer.reply(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class TCP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                sock.settimeout(5)
                try:
                    while True:
                        hdr = _recv_exact(sock, 2)
                        if hdr is None:
                            return
                        data = _recv_exact(sock, struct.unpack("!H", hdr)[0])
                        if data is None:
                            return
                        outer.queries += 1
                        reply = outer.reply(data)
                        if reply is None:
                            continue
                        sock.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return

        class UServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
            daemon_threads = True

        class TServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):  # UDP picks the port; TCP must get the same one
            self.udp = UServer((host, port), UDP)
            self.port = self.udp.server_address[1]
            try:
                self.tcp = TServer((host, self.port), TCP)
                break
            except OSError:
                self.udp.server_close()
                if attempt == attempts - 1:
                    raise
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.udp, self.tcp)]

    def reply(self, data: bytes) -> bytes | None:
        if self.mode == "silent":
            return None
        if self.mode == "slow":
            import time

            time.sleep(self.delay)
        if self.mode == "garbage":
            return data[:2] + b"\xff\xff\x00\x09garbage"
        try:
            return fake_upstream_reply(data)
        except Exception:  # a query dnslib cannot read: no reply, like a broken server
            return None

    def __enter__(self) -> FakeUpstream:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.udp, self.tcp):
            s.shutdown()
            s.server_close()


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


@contextmanager
def fake_upstream(mode: str = "ok") -> Iterator[FakeUpstream]:
    with FakeUpstream(mode=mode) as up:
        yield up


# --------------------------------------------------------------------------------------------
# The agent, running in a background thread with its own event loop

class RunningAgent:
    """A :class:`netsim.dns.server.DNSServer` served from a thread; ``call`` runs code in its loop."""

    def __init__(self, lookup_or_loader: Any, **config: Any) -> None:
        import asyncio

        from netsim.dns.resolve import CounterRNG
        from netsim.dns.server import DNSServer, ServerConfig

        self.rng = CounterRNG()
        loader = lookup_or_loader if callable(lookup_or_loader) else (lambda: lookup_or_loader)
        watch = config.pop("watch", list)
        use_uvloop = config.pop("uvloop", False)
        config.setdefault("listen", (("127.0.0.1", 0),))
        config.setdefault("reload_interval", 0)
        self.logs: list[str] = []
        if use_uvloop:
            from netsim.dns.server import loop_factory

            factory = loop_factory()  # without uvloop installed, asyncio's loop (what serve falls back to)
            self.loop = factory() if factory is not None else asyncio.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.server = DNSServer(ServerConfig(**config), loader, watch=watch, rng=self.rng, log=self.logs.append)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RunningAgent:
        import asyncio

        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def host(self) -> str:
        return self.server.addresses[0][0]

    @property
    def port(self) -> int:
        return self.server.addresses[0][1]

    def call(self, fn: Any, *args: Any) -> Any:
        import asyncio
        import concurrent.futures

        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except Exception as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        del asyncio
        return fut.result(10)

    def task_count(self) -> int:
        import asyncio

        return int(self.call(lambda: len(asyncio.all_tasks(self.loop))))


def open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


DATA_VECTORS.update(load_dns_vectors())
