"""Send ``lab verify``'s probe packets: run as root inside a lab namespace, probes as JSON on stdin.

Each probe ``{"proto", "family", "src", "sport", "dst", "dport", "uid", "gid"}`` (optional ``"mark"``: the
socket's SO_MARK, ``"transparent"``: IP_TRANSPARENT) is sent from its own forked child, which drops to the
probe's gid and uid *before* creating the socket (xt_owner compares the socket file's credentials at creation,
spec/netfilter.md §1.6), binds the probe's unique source port (the TRACE rules select it) and sends one SYN or
one datagram. Prints ``{"unsent": [source ports]}`` for the probes whose packet never left (socket or bind
failure). Standard library only (and ``netsim.lab.privileges``), so it starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time

from netsim.lab.privileges import drop

# Probe source ports: below the ephemeral range (32768-60999), so the listeners' and the agent's own
# dials never use them; the TRACE rules of ``lab verify`` select them, and the relays mark a peer from them
# as a probe in their logs (``--probe-sports``).
SPORT_LO, SPORT_HI = 20000, 29999
WARMUP_SPORT = 19999  # just below lab verify's traced source ports
WARMUP_SECONDS = 0.05
SYN_WAIT_SECONDS = 0.3
# Between two probes: xtables-monitor looks each traced rule up before printing it and is slow; a burst of
# probes overflows its netlink socket (ENOBUFS) and it exits.
PACE_SECONDS = 0.005  # below the first SYN retransmission (1 s): exactly one SYN per TCP probe
SO_MARK, IP_TRANSPARENT, IPV6_TRANSPARENT = 36, 19, 75  # <asm-generic/socket.h>, <linux/in.h>, <linux/in6.h>


def send(p: dict[str, object]) -> None:
    drop(int(str(p["uid"])), int(str(p["gid"])))
    fam = socket.AF_INET if p["family"] == 4 else socket.AF_INET6
    kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
    with socket.socket(fam, kind) as s:
        # a previous run's connection from this port may still be in TIME_WAIT
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # ztunnel's sockets: SO_MARK, and IP_TRANSPARENT to bind a client's address (both need CAP_NET_ADMIN: uid 0)
        if int(str(p.get("mark", 0))):
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, int(str(p["mark"])))
        if p.get("transparent"):
            if fam == socket.AF_INET:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        s.bind((str(p["src"]), int(str(p["sport"]))))
        dst = (str(p["dst"]), int(str(p["dport"])))
        with contextlib.suppress(OSError):
            if p["proto"] == "tcp":
                s.settimeout(SYN_WAIT_SECONDS)
                s.connect(dst)
            else:
                s.sendto(b"netsim-probe", dst)


def main() -> int:
    probes = json.load(sys.stdin)
    if probes:
        # One untraced datagram first (source port 1 below the traced range) resolves the neighbour: dozens of
        # first SYNs queued behind one ARP resolution would overflow the neighbour queue and be dropped.
        warm = {**probes[0], "proto": "udp", "sport": WARMUP_SPORT, "uid": 0, "gid": 0}
        pid = os.fork()
        if pid == 0:
            try:
                send(warm)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(WARMUP_SECONDS)
    children = []
    for p in probes:
        time.sleep(PACE_SECONDS)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                send(p)
                code = 0
            finally:
                os._exit(code)
        children.append((pid, p))
    unsent = []
    for pid, p in children:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            unsent.append(p["sport"])
    # the source ports of probes that could not be sent (their socket could not be bound): nothing to compare
    print(json.dumps({"unsent": unsent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
