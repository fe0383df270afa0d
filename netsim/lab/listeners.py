"""The lab's stand-ins for Envoy's 15001 and 15006 listeners: log each connection's original destination
and relay it, so real clients in the pod work end to end.

Run as ``python -m netsim.lab.listeners --port 15001 --dial original`` (outbound: dial the original
destination; the process drops to the proxy uid/gid once its sockets are bound, so ISTIO_OUTPUT's owner
rule lets the dial out uncaptured) or ``--port 15006 --dial app`` (inbound: dial the original destination
from 127.0.0.6 / ::6, the source ISTIO_OUTPUT returns early for, spec/netfilter.md §1.11). Before Istio 1.3
one listener, 15001, took both directions and Envoy told them apart by the original destination:
``--dial by-destination --local POD_IP…`` relays a connection to one of the pod's own addresses to the app on
loopback (127.0.0.1 / ::1, as the inbound clusters of those releases did) and any other one to its original
destination.

For an ambient pod the same module stands in for ztunnel's sockets inside the pod (spec/istio-ambient-capture.md
§8): ``--ztunnel`` listens with IP_TRANSPARENT (as ztunnel's listeners try to) and reads the original destination
with SO_ORIGINAL_DST, falling back to the socket's own address when the connection was not NATed (TPROXY, or
HBONE's 15008, which no rule redirects); ``--mark M`` gives every socket it creates SO_MARK M (ztunnel's 0x539, so
the pod's rules leave its own traffic alone); ``--dial spoof`` (plaintext inbound, 15006) connects to the app from
the client's own address (IP_TRANSPARENT, bound to the client's IP), unless client and destination are the same
address, so the app's replies take the connmark 0x111 / table 100 return path; ``--dial none`` (HBONE, 15008)
accepts and logs the connection and closes it (HBONE's mTLS tunnel is not modelled).

Each connection is two JSON lines on stdout (the lab points stdout at ``<run dir>/listener-<port>.log``):
``"stage": "accept"`` the moment it is accepted (original destination, peer, time), then ``"stage": "dial"``
with the result of the dial to the original destination (which may take up to DIAL_TIMEOUT_SECONDS); both
carry the same ``conn`` number. A peer whose source port is in ``--probe-sports`` is one of ``lab verify``'s
probes: its records say ``"probe": true`` so that ``lab status`` does not show them as the user's connections.

Owns: reading the original destination — ``getsockopt(SOL_IP, SO_ORIGINAL_DST=80)`` (a ``sockaddr_in``),
``getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST=80)`` (a ``sockaddr_in6``), or with ``--transparent`` (TPROXY)
simply ``getsockname()`` (netfilter.md §1.5, §1.7) — and the relay.
Never does: decide what the mesh would do with the connection (``netsim.mesh`` models Envoy), or import
anything of netsim beyond the standard library and ``netsim.lab.privileges``, so it starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any

from netsim.lab.privileges import drop

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, at SOL_IP
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h, at SOL_IPV6
IP_TRANSPARENT = 19  # linux/in.h
IPV6_TRANSPARENT = 75  # linux/in6.h
SOL_IPV6 = socket.IPPROTO_IPV6  # 41; the socket module has no SOL_IPV6 name
SO_MARK = 36  # asm-generic/socket.h
INBOUND_SOURCE = {socket.AF_INET: "127.0.0.6", socket.AF_INET6: "::6"}  # "6 is the magical number for inbound"
APP_LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}  # where inbound went before 1.3
DIAL_TIMEOUT_SECONDS = 5.0
BUFFER = 65536
BACKLOG = 128

_log_lock = threading.Lock()
_conn_ids = itertools.count(1)


def emit(record: dict[str, Any]) -> None:
    """Write one JSON line to stdout, whole, and flush it (the lab and tests tail the file)."""
    line = json.dumps({"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"), **record},
                      sort_keys=True)
    with _log_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def endpoint(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_original_dst(family: int, raw: bytes) -> tuple[str, int]:
    """Decode the ``sockaddr_in``/``sockaddr_in6`` that SO_ORIGINAL_DST returns (port in network order)."""
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port


def original_dst(conn: socket.socket, transparent: bool, shared_port: int | None = None,
                 fallback: bool = False) -> tuple[str, int]:
    """Where the client meant to connect. Raises OSError (ENOENT: no conntrack NAT entry) if unknown.

    On a transparent socket a TPROXY'd connection keeps its original destination as its own address. When
    the socket also takes REDIRECTed connections (``shared_port``, before 1.3), one whose own address has that
    port was REDIRECTed to it and has a NAT entry. ``fallback`` (ztunnel): SO_ORIGINAL_DST, else (no NAT entry)
    the socket's own address."""
    if fallback:
        try:
            return original_dst(conn, False)
        except OSError:
            local = conn.getsockname()
            return local[0], local[1]
    if transparent:
        local = conn.getsockname()
        if local[1] != shared_port:
            return local[0], local[1]
    if conn.family == socket.AF_INET:
        return parse_original_dst(conn.family, conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
    return parse_original_dst(conn.family, conn.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28))


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _ztunnel_socket(family: int, mark: int) -> socket.socket:
    """A TCP socket as ztunnel's socket factory makes them in the pod: SO_MARK ``mark`` (when not 0)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    if mark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    return sock


def _set_transparent(sock: socket.socket) -> None:
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    else:
        sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)


def handle(conn: socket.socket, listen_port: int, dial: str, transparent: bool,
           probe_sports: range = range(0), local: frozenset[str] = frozenset(), mark: int = 0,
           ztunnel: bool = False) -> None:
    peer = conn.getpeername()
    record: dict[str, Any] = {"conn": next(_conn_ids), "listener": listen_port, "peer": endpoint(peer),
                              "local": endpoint(conn.getsockname())}
    if peer[1] in probe_sports:
        record["probe"] = True
    upstream: socket.socket | None = None
    try:
        try:
            host, port = original_dst(conn, transparent, listen_port if dial == "by-destination" else None,
                                      fallback=ztunnel)
        except OSError as e:
            record["original_dst"] = None
            emit({**record, "stage": "accept"})
            record.update(result=f"no original destination: {e.strerror}")
            return
        record["original_dst"] = endpoint((host, port))
        emit({**record, "stage": "accept"})  # at once: the dial below may take DIAL_TIMEOUT_SECONDS
        if dial == "none":
            record["result"] = "accepted: HBONE is not modelled, closed"
            return
        # TPROXY's inbound relay: a connection to the pod's own 15006 would be relayed to the pod's 15006 again
        if port == listen_port and (not transparent or dial == "app"):
            record["result"] = "refused: the original destination is this listener (would loop)"
            return
        upstream = _ztunnel_socket(conn.family, mark)
        upstream.settimeout(DIAL_TIMEOUT_SECONDS)
        if dial == "app":
            upstream.bind((INBOUND_SOURCE[conn.family], 0))
        elif dial == "spoof" and peer[0] != host:  # ztunnel's freebind_connect: the client's address (§8)
            _set_transparent(upstream)
            upstream.bind((peer[0], 0))
        elif dial == "by-destination" and host in local:  # inbound, before 1.3: the app on loopback
            host = APP_LOOPBACK[conn.family]
        try:
            upstream.connect((host, port))
        except OSError as e:
            record.update(upstream=endpoint((host, port)), result=f"dial failed: {e.strerror or e}")
            return
        upstream.settimeout(None)
        record.update(upstream=endpoint((host, port)), source=endpoint(upstream.getsockname()), result="relayed")
        emit({**record, "stage": "dial"})
        record = {}
        back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
        back.start()
        _pump(conn, upstream)
        back.join()
    finally:
        if record:
            emit({**record, "stage": "dial"})
        for s in (upstream, conn):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()


def serve(sock: socket.socket, port: int, dial: str, transparent: bool, probe_sports: range = range(0),
          local: frozenset[str] = frozenset(), mark: int = 0, ztunnel: bool = False) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handle, args=(conn, port, dial, transparent, probe_sports, local, mark, ztunnel),
                         daemon=True).start()


def listen(family: int, port: int, transparent: bool, backlog: int = BACKLOG, mark: int = 0) -> socket.socket:
    """A TCP listener on every address of ``family`` (IPv6 only for AF_INET6), IP_TRANSPARENT for TPROXY (and
    for ztunnel's), SO_MARK ``mark`` when not 0."""
    sock = _ztunnel_socket(family, mark)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if transparent:
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        else:
            sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
    sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", port))
    sock.listen(backlog)
    return sock


def port_range(text: str) -> range:
    """``"20000-29999"`` → ``range(20000, 30000)``."""
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsim.lab.listeners", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dial", choices=("original", "app", "by-destination", "spoof", "none"), required=True,
                        help="spoof: ztunnel's plaintext inbound (from the client's address); none: accept and close")
    parser.add_argument("--local", action="append", default=[], metavar="ADDR",
                        help="with --dial by-destination: the pod's own addresses (inbound); repeat per address")
    parser.add_argument("--ipv6", action="store_true", help="also listen on IPv6")
    parser.add_argument("--transparent", action="store_true", help="IP_TRANSPARENT (TPROXY): no SO_ORIGINAL_DST")
    parser.add_argument("--ztunnel", action="store_true",
                        help="ztunnel's listener: IP_TRANSPARENT, SO_ORIGINAL_DST else the socket's own address")
    parser.add_argument("--mark", type=lambda t: int(t, 0), default=0, metavar="M",
                        help="SO_MARK of every socket this process creates (ztunnel's 0x539)")
    parser.add_argument("--user", type=int, default=None, help="uid to become once the sockets are bound")
    parser.add_argument("--group", type=int, default=None, help="gid to become (supplementary groups cleared)")
    parser.add_argument("--probe-sports", type=port_range, default=range(0), metavar="LO-HI",
                        help="peers with a source port in this range are lab verify's probes")
    args = parser.parse_args(argv)
    families = [socket.AF_INET] + ([socket.AF_INET6] if args.ipv6 else [])
    try:
        socks = [listen(f, args.port, args.transparent or args.ztunnel, mark=args.mark) for f in families]
        if args.user is not None or args.group is not None:
            drop(os.getuid() if args.user is None else args.user, os.getgid() if args.group is None else args.group)
    except OSError as e:
        emit({"event": "error", "listener": args.port, "error": f"cannot listen: {e.strerror or e}"})
        return 2
    emit({"event": "listening", "listener": args.port, "dial": args.dial, "transparent": args.transparent,
          "ztunnel": args.ztunnel, "mark": args.mark,
          "addresses": [endpoint(s.getsockname()) for s in socks], "uid": os.getuid(), "gid": os.getgid()})
    threads = [threading.Thread(target=serve, args=(s, args.port, args.dial, args.transparent, args.probe_sports,
                                                          frozenset(args.local), args.mark, args.ztunnel),
                                daemon=True) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
