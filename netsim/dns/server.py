"""The DNS agent's IO shell: asyncio UDP and TCP sockets, upstream forwarding, reload, signals.

Owns: binding the listen addresses (one UDP socket and one TCP listener each), reading queries,
calling the pure core (:func:`netsim.dns.resolve.resolve`) and sending what it decides, exchanging
forwarded queries with the upstreams (sequential or parallel, per-upstream timeout, SERVFAIL from
the core when all fail), limits (concurrent forwards, TCP connections, TCP idle time and queries per
connection), hot reload (SIGHUP and file changes; atomic swap, the old table kept on bad files),
counters (SIGUSR1 and exit) and clean shutdown (SIGTERM/SIGINT).

Never does: decide an answer itself, block the event loop, or talk to anything but the listen
addresses and the configured upstreams.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from netsim.dns.resolve import (
    RNG,
    UDP_READ_SIZE,
    Drop,
    Forward,
    Lookup,
    Outcome,
    Reply,
    Transport,
    finish_forward,
    resolve,
    servfail,
    shuffle,
    system_rng,
    upstream_id_matches,
)
from netsim.errors import NetsimError

# Limits, with their precedent
DEFAULT_TIMEOUT = 5.0  # DNS_FORWARD_TIMEOUT default (spec 2)
DEFAULT_MAX_INFLIGHT = 2048  # concurrent upstream exchanges; pilot-agent has no bound (one goroutine each)
DEFAULT_MAX_TCP = 512  # concurrent TCP connections; beyond this a new connection is closed at once
TCP_FIRST_READ = 2.0  # miekg: read timeout for the first query on a connection
TCP_IDLE = 8.0  # miekg: idle timeout between queries on a connection
TCP_MAX_QUERIES = 128  # miekg: queries per connection, then the server closes it
UPSTREAM_UDP_BUF = 65535
EPHEMERAL_BIND_ATTEMPTS = 20
ANSWER_CACHE_MAX = 100_000  # memoised local answers; cleared when full or when the table changes

Loader = Callable[[], Lookup]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 15053),)
    upstreams: tuple[tuple[str, int], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    parallel: bool = False
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_tcp: int = DEFAULT_MAX_TCP
    tcp_first_read: float = TCP_FIRST_READ
    tcp_idle: float = TCP_IDLE
    tcp_max_queries: int = TCP_MAX_QUERIES
    reload_interval: float = 1.0  # how often watched files are checked for changes (0: never)
    answer_cache: bool = True  # memoise deterministic local UDP answers (Reply.cacheable)
    shuffle_upstreams: bool = True  # 1.25+: sequential mode shuffles the upstream list per query


@dataclass(slots=True)
class Counters:
    queries: int = 0
    local: int = 0
    forwarded: int = 0
    failed: int = 0
    malformed: int = 0
    reloads: int = 0
    reload_errors: int = 0

    def reply(self, outcome: Outcome) -> None:
        """Count a reply the core produced (UDP and TCP count alike)."""
        if outcome is Outcome.LOCAL:
            self.local += 1
        elif outcome is Outcome.NOT_READY:
            self.failed += 1
        else:
            self.malformed += 1

    def line(self) -> str:
        return (f"queries={self.queries} local={self.local} forwarded={self.forwarded} failed={self.failed} "
                f"malformed={self.malformed} reloads={self.reloads} reload_errors={self.reload_errors}")


def _stderr(msg: str) -> None:
    print(f"netsim dns: {msg}", file=sys.stderr, flush=True)


def _stamp(paths: Sequence[Path]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out[str(p)] = (-1, -1, -1)
            continue
        out[str(p)] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        srv = self.server
        c = srv.counters
        c.queries += 1
        tr = self.transport
        hit = srv.answer_cache.get(data[2:])
        if hit is not None and tr is not None:
            c.local += 1
            tr.sendto(data[:2] + hit, addr)
            return
        d = resolve(data, srv.lookup, transport=Transport.UDP, rng=srv.rng)
        if type(d) is Reply:
            c.reply(d.outcome)
            if d.cacheable and d.outcome is Outcome.LOCAL and len(data) <= UDP_READ_SIZE and srv.config.answer_cache:
                srv.remember(data, d.wire)
            if tr is not None:
                tr.sendto(d.wire, addr)
        elif type(d) is Forward:
            srv.spawn_udp(d, addr, self)
        else:
            c.malformed += 1

    def error_received(self, exc: Exception) -> None:  # ICMP errors for replies: ignored (spec 5 step 7)
        pass


class DNSServer:
    """One agent: listens, answers from the current :class:`Lookup`, forwards the rest."""

    def __init__(self, config: ServerConfig, loader: Loader, *, watch: Callable[[], Sequence[Path]] = list,
                 rng: RNG = system_rng, log: Callable[[str], None] = _stderr) -> None:
        self.config = config
        self.loader = loader
        self.watch = watch
        self.rng = rng
        self.log = log
        self.counters = Counters()
        self.lookup: Lookup | None = None
        self.addresses: list[tuple[str, int]] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inflight = 0
        self._tcp_conns = 0
        self._stamps: dict[str, tuple[int, int, int]] = {}
        self._stopped = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        # query[2:] → reply[2:] for deterministic local UDP answers of the current lookup (see Reply.cacheable)
        self.answer_cache: dict[bytes, bytes] = {}
        self._reload_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the first table (errors propagate), then bind every listen address (udp, then tcp)."""
        self.lookup = self.loader()
        self._stamps = _stamp(self.watch())
        loop = asyncio.get_running_loop()
        for host, port in self.config.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # port 0: the kernel picks the UDP port; TCP must get the same one, so retry on a clash
            attempts = EPHEMERAL_BIND_ATTEMPTS if port == 0 else 1
            for attempt in range(attempts):
                tr, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), local_addr=(host, port),
                                                            family=family)
                bound_port = tr.get_extra_info("sockname")[1]
                try:
                    srv = await asyncio.start_server(self._tcp_client, host, bound_port, family=family,
                                                     reuse_address=True, backlog=1024)
                except OSError:
                    tr.close()
                    if attempt + 1 >= attempts:
                        raise
                    continue
                break
            self._udp.append(tr)
            self._tcp.append(srv)
            self.addresses.append((host, bound_port))
        if self.config.reload_interval > 0:
            self._watcher = asyncio.create_task(self._watch_files())

    async def stop(self) -> None:
        """Close the sockets, cancel in-flight work, and wait for it to finish."""
        for tr in self._udp:
            tr.close()
        for s in self._tcp:
            s.close()
        if self._watcher is not None:
            self._watcher.cancel()
        for t in list(self._tasks):
            t.cancel()
        pending = [t for t in (*self._tasks, self._watcher) if t is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for s in self._tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 1.0)
        self._udp.clear()
        self._tcp.clear()
        self._stopped.set()

    def request_stop(self) -> None:
        asyncio.get_running_loop().create_task(self.stop())

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    # -- reload ----------------------------------------------------------------------------
    def reload(self, reason: str = "SIGHUP") -> bool:
        """Rebuild the table now, in this thread; swap it in, or keep the old one if the files are invalid."""
        try:
            new = self.loader()
        except NetsimError as e:
            return self._reload_failed(reason, str(e))
        self._swap(new, reason)
        return True

    async def reload_async(self, reason: str) -> bool:
        """:meth:`reload` with the files read and the table built off the event loop (one at a time)."""
        async with self._reload_lock:
            try:
                new = await asyncio.get_running_loop().run_in_executor(None, self.loader)
            except NetsimError as e:
                return self._reload_failed(reason, str(e))
            except Exception as e:  # a bug in the loader must not stop the agent: keep serving
                return self._reload_failed(reason, f"internal error {type(e).__name__}: {e}")
            self._swap(new, reason)
            return True

    def spawn_reload(self, reason: str) -> None:
        self._track(self.reload_async(reason))

    def _reload_failed(self, reason: str, why: str) -> bool:
        self.counters.reload_errors += 1
        self.log(f"reload ({reason}) failed, keeping the previous table: {why}")
        return False

    def _swap(self, new: Lookup, reason: str) -> None:
        self.lookup = new  # one reference assignment: queries see the old table or the new, never a mix
        self.answer_cache = {}
        self.counters.reloads += 1
        self.log(f"reloaded ({reason}): {len(new.table)} names")

    async def _watch_files(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                paths = self.watch()
            except NetsimError as e:
                self.log(f"cannot list watched files: {e}")
                continue
            stamps = _stamp(paths)
            if stamps != self._stamps:
                self._stamps = stamps
                await self.reload_async("file change")

    def print_counters(self, when: str = "SIGUSR1") -> None:
        self.log(f"counters ({when}): {self.counters.line()}")

    def remember(self, query: bytes, reply: bytes) -> None:
        if len(self.answer_cache) >= ANSWER_CACHE_MAX:
            self.answer_cache.clear()
        self.answer_cache[query[2:]] = reply[2:]

    # -- forwarding ------------------------------------------------------------------------
    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn_udp(self, fwd: Forward, addr: Any, proto: _UDP) -> None:
        if self._inflight >= self.config.max_inflight:
            self.counters.failed += 1
            if proto.transport is not None:
                proto.transport.sendto(servfail(fwd), addr)
            return
        self._track(self._udp_forward(fwd, addr, proto))

    async def _udp_forward(self, fwd: Forward, addr: Any, proto: _UDP) -> None:
        wire = await self.forward(fwd)
        if proto.transport is not None and not proto.transport.is_closing():
            proto.transport.sendto(wire, addr)

    async def forward(self, fwd: Forward) -> bytes:
        """Exchange ``fwd`` with the upstreams; the reply to send (SERVFAIL if every upstream failed)."""
        self.counters.forwarded += 1
        self._inflight += 1
        try:
            servers = list(self.config.upstreams)
            reply: bytes | None = None
            if self.config.parallel:
                reply = await self._parallel(fwd, servers)
            else:
                if self.config.shuffle_upstreams:
                    shuffle(servers, self.rng)  # since 1.25 (spec 6)
                for server in servers:
                    reply = await self._exchange(server, fwd)
                    if reply is not None:
                        break
            if reply is None:
                self.counters.failed += 1
                return servfail(fwd)
            return reply
        finally:
            self._inflight -= 1

    async def _parallel(self, fwd: Forward, servers: list[tuple[str, int]]) -> bytes | None:
        if not servers:
            return None
        pending = {asyncio.ensure_future(self._exchange(s, fwd)) for s in servers}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if not t.cancelled() and t.exception() is None:
                        result = t.result()
                        if result is not None:
                            return result
            return None
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _exchange(self, server: tuple[str, int], fwd: Forward) -> bytes | None:
        try:
            if fwd.transport is Transport.UDP:
                return await asyncio.wait_for(self._udp_exchange(server, fwd), self.config.timeout)
            return await asyncio.wait_for(self._tcp_exchange(server, fwd), self.config.timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, UnicodeError):
            return None

    async def _udp_exchange(self, server: tuple[str, int], fwd: Forward) -> bytes | None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, server)
            await loop.sock_sendall(sock, fwd.query)
            while True:
                data = await loop.sock_recv(sock, UPSTREAM_UDP_BUF)
                if upstream_id_matches(fwd, data):  # others are skipped until the deadline (spec 6)
                    return finish_forward(fwd, data)
        finally:
            sock.close()

    async def _tcp_exchange(self, server: tuple[str, int], fwd: Forward) -> bytes | None:
        reader, writer = await asyncio.open_connection(server[0], server[1])
        try:
            writer.write(struct.pack("!H", len(fwd.query)) + fwd.query)
            await writer.drain()
            n = struct.unpack("!H", await reader.readexactly(2))[0]
            data = await reader.readexactly(n)
            return finish_forward(fwd, data)  # an ID mismatch is an error on TCP
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- TCP clients -----------------------------------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tcp_conns >= self.config.max_tcp:
            self.counters.failed += 1
            writer.close()
            return
        self._tcp_conns += 1
        cfg = self.config
        try:
            for i in range(cfg.tcp_max_queries):
                timeout = cfg.tcp_first_read if i == 0 else cfg.tcp_idle
                hdr = await asyncio.wait_for(reader.readexactly(2), timeout)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", hdr)[0]), timeout)
                self.counters.queries += 1
                d = resolve(data, self.lookup, transport=Transport.TCP, rng=self.rng)
                if isinstance(d, Drop):
                    self.counters.malformed += 1
                    continue
                if isinstance(d, Reply):
                    self.counters.reply(d.outcome)
                    wire = d.wire
                elif self._inflight >= cfg.max_inflight:
                    self.counters.failed += 1
                    wire = servfail(d)
                else:
                    wire = await self.forward(d)  # one query at a time per connection (spec 9)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._tcp_conns -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when it is installed (the ``fast`` extra), else None (asyncio's)."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve(server: DNSServer, *, on_ready: Callable[[DNSServer], None] | None = None) -> Counters:
    """Run ``server`` until SIGTERM/SIGINT; SIGHUP reloads, SIGUSR1 prints the counters."""
    loop = asyncio.get_running_loop()
    await server.start()
    handlers: dict[signal.Signals, Callable[[], object]] = {
                signal.SIGHUP: lambda: server.spawn_reload("SIGHUP"), signal.SIGUSR1: server.print_counters,
                signal.SIGTERM: server.request_stop, signal.SIGINT: server.request_stop}
    for sig, fn in handlers.items():
        loop.add_signal_handler(sig, fn)
    if on_ready is not None:
        on_ready(server)
    try:
        await server.wait_stopped()
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)
        server.print_counters("exit")
    return server.counters


def run(config: ServerConfig, loader: Loader, *, watch: Callable[[], Sequence[Path]] = list,
        on_ready: Callable[[DNSServer], None] | None = None) -> Counters:
    """Blocking entry point for the CLI: uvloop if available (no global policy change), then :func:`serve`."""

    async def main() -> Counters:
        return await serve(DNSServer(config, loader, watch=watch), on_ready=on_ready)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())


__all__ = ["Counters", "DNSServer", "ServerConfig", "loop_factory", "run", "serve"]
