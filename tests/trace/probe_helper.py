"""Send probe packets for the kernel-differential test (run as root inside a test namespace).

Reads a JSON list of probes on stdin: {"proto", "family", "src", "sport", "dst", "dport", "uid", "gid"}.
Every probe is sent from its own forked child, which drops to the probe's gid and uid *before*
creating the socket (xt_owner compares the socket file's credentials at creation, spec §1.6), so
all probes run concurrently and each is identified by its unique source port.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys


def send(p: dict[str, object]) -> None:
    os.setgroups([])
    os.setgid(int(p["gid"]))  # type: ignore[arg-type]
    os.setuid(int(p["uid"]))  # type: ignore[arg-type]
    fam = socket.AF_INET if p["family"] == 4 else socket.AF_INET6
    kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(fam, kind)
    s.bind((str(p["src"]), int(p["sport"])))  # type: ignore[arg-type]
    if p["proto"] == "tcp":
        s.settimeout(0.3)  # below the first SYN retransmission (1 s): one SYN per probe
        with contextlib.suppress(OSError):
            s.connect((str(p["dst"]), int(p["dport"])))  # type: ignore[arg-type]
    else:
        with contextlib.suppress(OSError):
            s.sendto(b"probe", (str(p["dst"]), int(p["dport"])))  # type: ignore[arg-type]
    s.close()


def main() -> None:
    probes = json.load(sys.stdin)
    children = []
    for p in probes:
        pid = os.fork()
        if pid == 0:
            try:
                send(p)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
