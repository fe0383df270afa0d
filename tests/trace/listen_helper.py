"""Listening sockets for the kernel-differential test (run as root inside the pod namespace).

Opens, for IPv4 and IPv6: TCP 15006 with IP_TRANSPARENT (what TPROXY needs, spec/netfilter.md
§1.7), TCP 15001 and 8080 (ordinary listeners), UDP 15053; prints "ready" and sleeps until killed.
The TCP listeners are ``netsim lab``'s own (:func:`netsim.lab.listeners.listen`).
"""

from __future__ import annotations

import socket
import sys
import time

from netsim.lab.listeners import listen

TCP_PORTS = {15006: True, 15001: False, 8080: False}
UDP_PORTS = (15053,)
BACKLOG = 1024  # the helper never accepts: room for every probe's connection


def main() -> None:
    keep = []
    for fam, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        keep += [listen(fam, port, transparent, BACKLOG) for port, transparent in TCP_PORTS.items()]
        for port in UDP_PORTS:
            u = socket.socket(fam, socket.SOCK_DGRAM)
            if fam == socket.AF_INET6:
                u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            u.bind((any_addr, port))
            keep.append(u)
    print("ready", flush=True)
    sys.stdout.close()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
