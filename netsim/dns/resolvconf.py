"""resolv.conf and ``host:port`` parsing for the DNS agent (spec/istio-dns.md section 2).

Owns: miekg's resolv.conf rules (``nameserver`` appended verbatim, the last ``search``/``domain``
wins, ``options`` ignored, port always 53), the order in which a pod's stub resolver asks the search
list (:func:`search_names`) and the listen/upstream address syntax.

Never does: open sockets or resolve host names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netsim.errors import SpecError
from netsim.reader import read_text

DNS_PORT = 53


@dataclass(frozen=True, slots=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()

    def upstreams(self) -> tuple[tuple[str, int], ...]:
        return tuple((ns, DNS_PORT) for ns in self.nameservers)


def parse_resolv_conf(text: str) -> ResolvConf:
    """Parse resolv.conf text the way miekg/dns ``ClientConfigFromReader`` does."""
    servers: list[str] = []
    search: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        key, rest = fields[0], fields[1:]
        if key == "nameserver" and rest:
            servers.append(rest[0])
        elif key == "search":
            search = list(rest)
        elif key == "domain" and rest:
            search = [rest[0]]
    return ResolvConf(nameservers=tuple(servers), search=tuple(search))


def read_resolv_conf(path: str | Path) -> ResolvConf:
    """Read and parse ``path``; an unreadable file is an error (the agent stops on it too)."""
    return parse_resolv_conf(read_text(path, what="resolv.conf"))


# kubelet writes ``options ndots:5`` into a ClusterFirst pod's resolv.conf (the agent itself ignores options)
KUBELET_NDOTS = 5


def search_names(name: str, search: Sequence[str], ndots: int = KUBELET_NDOTS) -> tuple[str, ...]:
    """The absolute names a pod's stub resolver asks, in order, when the app resolves ``name``
    (glibc ``res_search``, musl alike): an absolute name (trailing dot) as it is; a name with fewer
    than ``ndots`` dots each search domain first, then the name itself; else the name first, then
    the search domains. The agent answers only the absolute names it knows (spec/istio-dns.md §5)."""
    if name.endswith("."):
        return (name,)
    expanded = tuple(f"{name}.{d.strip('.')}." for d in search if d.strip("."))
    return (f"{name}.", *expanded) if name.count(".") >= ndots else (*expanded, f"{name}.")


def parse_hostport(text: str, *, default_port: int, option: str = "address") -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:53``, ``[::1]:53``, ``::1``, ``localhost:15053`` → (host, port)."""
    t = text.strip()
    host, port_s = t, ""
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise SpecError(f"{option} {text!r}: missing ']'")
        host, rest = t[1:end], t[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise SpecError(f"{option} {text!r}: expected [IPv6]:PORT")
            port_s = rest[1:]
    elif t.count(":") == 1:
        host, port_s = t.split(":")
    if port_s:
        if not port_s.isdigit() or not 0 <= int(port_s) < 65536:
            raise SpecError(f"{option} {text!r}: port must be 0-65535")
        port = int(port_s)
    else:
        port = default_port
    if not host:
        raise SpecError(f"{option} {text!r}: missing host")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SpecError(f"{option} {text!r}: {host!r} is not an IP address (or localhost)") from None
    return host, port


def expand_localhost(listen: tuple[str, int], resolv: ResolvConf, *,
                     both_families: bool = True) -> list[tuple[str, int]]:
    """Spec 2 rule 3: ``localhost`` binds 127.0.0.1 and/or ::1 after the nameservers' families.

    ``both_families=False`` (before 1.23) binds one address only, IPv4 first.
    """
    host, port = listen
    if host != "localhost":
        return [listen]
    fams = set()
    for ns in resolv.nameservers:
        try:
            fams.add(ipaddress.ip_address(ns).version)
        except ValueError:
            continue
    if not fams:
        return [("127.0.0.1", port)]
    out = []
    if 4 in fams:
        out.append(("127.0.0.1", port))
    if 6 in fams:
        out.append(("::1", port))
    return out if both_families else out[:1]


__all__ = ["DNS_PORT", "KUBELET_NDOTS", "ResolvConf", "expand_localhost", "parse_hostport", "parse_resolv_conf",
           "read_resolv_conf", "search_names"]
