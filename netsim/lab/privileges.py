"""Dropping root for the lab's own processes: the DNS agent's stand-ins, the relays and the probe sender.

They start as root so that they can import netsim from wherever it is installed (a virtualenv in a mode-700
home directory is unreadable to uid 1337) and bind what they need, then become the proxy's uid/gid before they
handle any traffic: the kernel's owner match (xt_owner reads the credentials a socket was created with,
spec/netfilter.md §1.6) must see the proxy, exactly as it sees Envoy and pilot-agent.
Standard library only: the processes that use it start fast.
"""

from __future__ import annotations

import os


def drop(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups, for good (real, effective and saved ids).

    The order matters: setgroups and setgid need privilege, which setuid gives away. What the caller would
    load lazily must be loaded before: the interpreter itself may live where only root can read (pyenv in a
    mode-700 home); the idna codec, which getaddrinfo loads on first use, is loaded here.
    """
    import encodings.idna  # noqa: F401

    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


__all__ = ["drop"]
