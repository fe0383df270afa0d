"""Netlink for the lab, through pyroute2: namespaces, veth pairs, addresses, routes and policy rules.

Owns: carrying out the lab's netlink commands (``runner.NetnsAdd`` … ``runner.RuleAdd``) — pod and node
namespaces, the veth pair between them, IPv4/IPv6 addresses (``::6/128`` on ``lo`` for IPv6, spec
istio-iptables.md §1 step 6), routes, and TPROXY's ``fwmark → table`` rule with its local default route
(§6, netfilter.md §1.7). This is the only module of netsim that imports pyroute2.

Never does: touch the host namespace. A veth pair is created inside the node namespace with its peer
placed straight into the pod namespace, so no link ever exists outside the lab's namespaces; every
IPRoute handle is opened with ``netns=`` a lab namespace.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from netsim.errors import LabError
from netsim.lab.runner import (
    AddrAdd,
    Command,
    LinkUp,
    NetnsAdd,
    NetnsDel,
    NetnsInode,
    Outcome,
    RouteAdd,
    RuleAdd,
    VethAdd,
    netns_inode,
)

IFA_F_NODAD = 0x02  # linux/if_addr.h
RTN_UNICAST, RTN_LOCAL = 1, 2  # linux/rtnetlink.h route types
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254


def _index(ipr: Any, ifname: str, where: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"{where}: no link {ifname}")
    return int(found[0])


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def apply(command: Command) -> Outcome:
    """Carry out one netlink command; one-line LabError on failure (``ignore_exists`` honoured)."""
    try:
        return _apply(command)
    except NetlinkError as e:
        if e.code == errno.EEXIST and getattr(command, "ignore_exists", False):
            return Outcome()
        raise LabError(f"{_describe(command)}: {os.strerror(e.code)}") from None
    except OSError as e:
        raise LabError(f"{_describe(command)}: {e.strerror or e}") from None


def _describe(c: Command) -> str:
    match c:
        case NetnsAdd(name):
            return f"ip netns add {name}"
        case NetnsDel(name):
            return f"ip netns del {name}"
        case VethAdd():
            return f"veth {c.netns}/{c.ifname} <-> {c.peer_netns}/{c.peer_ifname}"
        case LinkUp(ns, ifname):
            return f"ip -n {ns} link set {ifname} up"
        case AddrAdd():
            return f"ip -n {c.netns} addr add {c.address} dev {c.ifname}"
        case RouteAdd():
            return f"ip -n {c.netns} route add {'local ' if c.local else ''}{c.dst}"
        case RuleAdd():
            mask = "" if c.fwmask is None else f"/{c.fwmask:#x}"
            return f"ip -n {c.netns} rule add fwmark {c.fwmark:#x}{mask} lookup {c.table}"
    return type(c).__name__


def _apply(command: Command) -> Outcome:
    match command:
        case NetnsAdd(name):
            if netns_inode(name) is not None:
                raise LabError(f"network namespace {name} already exists")
            netns.create(name)
            return Outcome(inode=netns_inode(name))
        case NetnsDel(name, inode):
            current = netns_inode(name)
            if current is not None and (inode is None or current == inode):
                netns.remove(name)
            return Outcome()
        case NetnsInode(name):
            return Outcome(inode=netns_inode(name))
        case VethAdd():
            with IPRoute(netns=command.netns) as ipr:
                ipr.link("add", ifname=command.ifname, kind="veth",
                         peer={"ifname": command.peer_ifname, "net_ns_fd": command.peer_netns})
            return Outcome()
        case LinkUp(ns, ifname):
            with IPRoute(netns=ns) as ipr:
                ipr.link("set", index=_index(ipr, ifname, ns), state="up")
            return Outcome()
        case AddrAdd():
            a = command.address
            with IPRoute(netns=command.netns) as ipr:
                extra: dict[str, Any] = {"flags": IFA_F_NODAD} if a.version == 6 and command.nodad else {}
                ipr.addr("add", index=_index(ipr, command.ifname, command.netns), address=str(a.ip),
                         prefixlen=a.network.prefixlen, family=_family(a.version), **extra)
            return Outcome()
        case RouteAdd():
            return _route(command)
        case RuleAdd():
            extra = {k: v for k, v in (("fwmask", command.fwmask), ("priority", command.priority)) if v is not None}
            with IPRoute(netns=command.netns) as ipr:
                ipr.rule("add", family=_family(command.family.value), fwmark=command.fwmark, table=command.table,
                         **extra)
            return Outcome()
    raise AssertionError(command)  # pragma: no cover


def _route(c: RouteAdd) -> Outcome:
    # pyroute2 0.9 refuses "0.0.0.0/0" as one string: pass address, length and family apart.
    spec: dict[str, Any] = {
        "dst": str(c.dst.network_address),
        "dst_len": c.dst.prefixlen,
        "family": _family(c.dst.version),
        "type": RTN_LOCAL if c.local else RTN_UNICAST,
    }
    if c.table is not None:
        spec["table"] = c.table
    with IPRoute(netns=c.netns) as ipr:
        if c.dev is not None:
            spec["oif"] = _index(ipr, c.dev, c.netns)
        if c.gateway is not None:
            spec["gateway"] = str(c.gateway)
        spec["scope"] = RT_SCOPE_HOST if c.local else (RT_SCOPE_UNIVERSE if c.gateway else RT_SCOPE_LINK)
        ipr.route("add", **spec)
    return Outcome()


__all__ = ["apply"]
