"""Run a Python module with SO_MARK on every IP socket it creates: ztunnel's DNS proxy stand-in in an ambient lab.

``python -m netsim.lab.marked --mark 0x539 netsim dns serve …`` runs ``python -m netsim dns serve …`` with every
``AF_INET``/``AF_INET6`` socket it makes (its listeners and its upstream sockets) carrying the mark, as ztunnel's
socket factory marks every socket it opens in an ambient pod (spec/istio-ambient-capture.md §8). The pod's rules
tell ztunnel's traffic apart by that mark alone: an unmarked upstream query of the DNS proxy would be redirected
back to 15053 (§3 rule 13). The asyncio loop is Python's own here (uvloop creates sockets in C, out of reach of
the mark), and SO_MARK needs CAP_NET_ADMIN: the process keeps uid 0, as ztunnel does.

Standard library only, so it starts fast. Never does: change anything but the sockets of the process it runs.
"""

from __future__ import annotations

import argparse
import runpy
import socket
import sys
from collections.abc import Sequence
from typing import Any

SO_MARK = 36  # asm-generic/socket.h


def mark_sockets(mark: int) -> None:
    """From now on every IPv4/IPv6 socket this process creates carries ``mark`` (SO_MARK)."""
    base = socket.socket

    class MarkedSocket(base):  # type: ignore[misc, valid-type]
        def __init__(self, family: Any = -1, type: Any = -1, proto: Any = -1, fileno: Any = None) -> None:
            super().__init__(family, type, proto, fileno)
            if fileno is None and self.family in (socket.AF_INET, socket.AF_INET6):
                self.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)

    socket.socket = MarkedSocket  # type: ignore[misc]
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # import fails: asyncio's loop, whose sockets are Python's


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsim.lab.marked", description=__doc__.split("\n")[0])
    parser.add_argument("--mark", type=lambda t: int(t, 0), required=True, metavar="M")
    parser.add_argument("module")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    mark_sockets(args.mark)
    sys.argv = [args.module, *args.args]
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
