"""The lab's cluster DNS: a kube-dns stand-in at the address the pod's resolv.conf names, in the node namespace.

Why: a pod's stub resolver asks for the search-list names first (``ndots:5``), the DNS agent forwards every name
it does not know to the pod's nameservers, and without anything there each of those queries waits for the
agent's upstream timeout: ``getent hosts se.example.com`` took 15-20 s. A cluster has kube-dns (CoreDNS) there;
the lab has this.

What it answers, as CoreDNS's ``kubernetes`` plugin does for the ``--services`` files of ``lab up``:

1. ``<svc>.<ns>.svc.<domain>`` A/AAAA: the ClusterIPs; for a headless Service its ready endpoints' addresses
   (all of them with ``publishNotReadyAddresses``).
2. ``<hostname>.<svc>.<ns>.svc.<domain>`` A/AAAA: a headless Service's endpoint with a hostname (a pod whose
   ``spec.subdomain`` is the Service, or an Endpoints/EndpointSlice ``hostname``); an endpoint without one is
   ``<a-b-c-d>.<svc>.<ns>.svc.<domain>`` (its address, dashed), the name its SRV records point to.
3. ``_<port name>._<protocol>.<svc>.<ns>.svc.<domain>`` SRV, for each named port: ``0 100 <port> <svc name>``
   for a ClusterIP Service, one record per ready endpoint (its name from 2., the target port) for a headless one.
4. Any other name in ``<domain>``: NXDOMAIN with the zone's SOA (an ancestor of a known name, or a known name of
   another type: NOERROR without records). Names outside ``<domain>``: REFUSED at once. Nothing is forwarded,
   ever: the lab reaches nothing outside itself.

Owns: the kube-dns view of the Services (pure: :func:`kube_dns_view`, :func:`answer`) and the process that
serves it (``python -m netsim.lab.clusterdns``), which binds port 53 as root and then drops to nobody.
Never does: encode DNS itself (the agent's codec in ``netsim.dns.resolve`` does: A/AAAA through its own lookup,
the rest through ``record``/``local_reply``), read Kubernetes objects itself (``netsim.k8s`` and
``netsim.dns.table`` do), or run an event loop of its own (``netsim.dns.server``'s shell does).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netsim.dns.resolve import (
    RCODE_NOERROR,
    Forward,
    Lookup,
    build_lookup,
    local_reply,
    name_to_wire,
    record,
)
from netsim.dns.server import DNSServer, ServerConfig, loop_factory, serve
from netsim.dns.table import KUBE_CLUSTER, KUBERNETES, BuildOptions, Health, NameInfo, NameTable, build_from_objects
from netsim.errors import NetsimError
from netsim.istio_service import Resolution
from netsim.k8s import K8sObject, read_objects
from netsim.lab.privileges import drop

DOMAIN = "cluster.local"
QTYPE_SRV, QTYPE_SOA = 33, 6
RCODE_NXDOMAIN, RCODE_REFUSED = 3, 5
SOA_TIMERS = (7200, 1800, 86400, 30)  # CoreDNS's refresh, retry, expire, minimum (negative TTL)
NOBODY = 65534
QTYPE_NAMES = {1: "A", 28: "AAAA", 33: "SRV", 5: "CNAME", 12: "PTR", 6: "SOA", 16: "TXT", 15: "MX", 255: "ANY"}


@dataclass(frozen=True, slots=True)
class View:
    """What the stand-in answers: ``lookup`` for A/AAAA (the agent's precomputed answers, exact names only),
    ``srv`` records by lower-cased wire name, every name that exists (``names``, ancestors included), and the
    zone apex and its SOA record."""

    lookup: Lookup
    srv: Mapping[bytes, tuple[bytes, ...]]
    names: frozenset[bytes]
    zone: bytes
    soa: bytes


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _named_ports(obj: K8sObject) -> list[tuple[str, str, int, int]]:
    """(name, protocol, port, target port) of each named port of a Service object; target = port when named."""
    spec = obj.body.get("spec")
    ports = spec.get("ports") if isinstance(spec, Mapping) else None
    out = []
    for p in ports if isinstance(ports, list) else []:
        if not isinstance(p, Mapping) or not p.get("name") or not isinstance(p.get("port"), int):
            continue
        target = p.get("targetPort")
        out.append((str(p["name"]), str(p.get("protocol") or "TCP").lower(), int(p["port"]),
                    target if isinstance(target, int) else int(p["port"])))
    return out


def _ancestors(fqdn: str, zone: str) -> Iterable[str]:
    labels = fqdn.split(".")
    for i in range(len(labels)):
        name = ".".join(labels[i:])
        yield name
        if name == zone:
            return


def kube_dns_view(objects: Sequence[K8sObject], domain: str = DOMAIN) -> View:
    """The names kube-dns serves for the Services among ``objects`` (module docstring, 1-4). Every Service
    counts, whatever its ``networking.istio.io/exportTo`` says: that is Istio's, not the cluster DNS's."""
    services = {(o.namespace, o.name): o for o in objects if o.kind == "Service" and o.api_version == "v1"}
    addresses: dict[str, list[str]] = {}
    srv: dict[str, list[tuple[int, str]]] = {}
    for ns in sorted({ns for ns, _ in services}):
        built = build_from_objects(objects, BuildOptions(namespace=ns, cluster_domain=domain))
        for svc in built.services:
            obj = services.get((svc.namespace, svc.name))
            if svc.registry != KUBERNETES or svc.namespace != ns or obj is None:
                continue
            fqdn = svc.hostname.lower()
            addresses.setdefault(fqdn, [])
            ports = _named_ports(obj)
            if svc.resolution is Resolution.PASSTHROUGH:
                for ep in svc.endpoints:
                    if not ep.ips or (ep.health is not Health.HEALTHY and not svc.publish_not_ready):
                        continue
                    host = ep.hostname if ep.hostname and ep.subdomain == svc.name else _dashed(ep.ips[0])
                    target = f"{host.lower()}.{fqdn}"
                    addresses[fqdn] += ep.ips
                    addresses.setdefault(target, []).extend(ep.ips)
                    for name, proto, _port, tport in ports:
                        srv.setdefault(f"_{name}._{proto}.{fqdn}", []).append((tport, target))
            else:
                addresses[fqdn] += svc.cluster_vips.get(KUBE_CLUSTER, ())
                for name, proto, port, _tport in ports:
                    srv.setdefault(f"_{name}._{proto}.{fqdn}", []).append((port, fqdn))
    table = NameTable({name: NameInfo(ips=tuple(dict.fromkeys(ips)), registry="kube-dns")
                       for name, ips in addresses.items()})
    srv_records: dict[bytes, tuple[bytes, ...]] = {}
    for name, targets in srv.items():
        owner = name_to_wire(name)
        weight = 100 // len(targets)
        srv_records[owner] = tuple(record(owner, QTYPE_SRV, struct.pack("!HHH", 0, weight, port) + name_to_wire(t))
                                   for port, t in targets)
    names = frozenset(name_to_wire(a) for n in (*addresses, *srv) for a in _ancestors(n, domain))
    zone = name_to_wire(domain)
    soa = record(zone, QTYPE_SOA, name_to_wire(f"ns.dns.{domain}") + name_to_wire(f"hostmaster.{domain}")
                 + struct.pack("!IIIII", 1, *SOA_TIMERS), ttl=SOA_TIMERS[-1])
    return View(lookup=build_lookup(table, namespace="", domain=domain), srv=srv_records, names=names | {zone},
                zone=zone, soa=soa)


def _in_zone(name: bytes, zone: bytes) -> bool:
    off = 0
    while off < len(name):
        if name[off:] == zone:
            return True
        if name[off] == 0:
            return False
        off += 1 + name[off]
    return False


def answer(view: View, query: Forward) -> tuple[bytes, int]:
    """(reply, rcode) for a query the A/AAAA lookup did not answer (module docstring, 3-4)."""
    q = query.parsed
    name = q.qname.lower()
    if not _in_zone(name, view.zone):
        return local_reply(q, query.limit, rcode=RCODE_REFUSED, aa=False), RCODE_REFUSED
    if q.qtype == QTYPE_SRV and name in view.srv:
        return local_reply(q, query.limit, answer=view.srv[name]), RCODE_NOERROR
    if q.qtype == QTYPE_SOA and name == view.zone:
        return local_reply(q, query.limit, answer=(view.soa,)), RCODE_NOERROR
    if name in view.names:
        return local_reply(q, query.limit, authority=(view.soa,)), RCODE_NOERROR
    return local_reply(q, query.limit, rcode=RCODE_NXDOMAIN, authority=(view.soa,)), RCODE_NXDOMAIN


def _emit(record_: dict[str, Any]) -> None:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    sys.stdout.write(json.dumps({"time": stamp, **record_}, sort_keys=True) + "\n")
    sys.stdout.flush()


def _text_name(wire: bytes) -> str:
    labels, off = [], 0
    while off < len(wire) and wire[off]:
        labels.append(wire[off + 1:off + 1 + wire[off]].decode("utf-8", "replace"))
        off += 1 + wire[off]
    return ".".join(labels) + "."


class ClusterDNS(DNSServer):
    """The agent's server shell with a kube-dns view: A/AAAA of known names come from its lookup as in the
    agent; what the agent would forward is answered here instead (:func:`answer`) and logged."""

    view: View

    def reply(self, query: Forward, peer: str) -> bytes:
        wire, rcode = answer(self.view, query)
        _emit({"peer": peer, "name": _text_name(query.parsed.qname),
               "type": QTYPE_NAMES.get(query.parsed.qtype, str(query.parsed.qtype)),
               "rcode": {0: "NOERROR", 3: "NXDOMAIN", 5: "REFUSED"}.get(rcode, str(rcode))})
        return wire

    def spawn_udp(self, fwd: Forward, addr: Any, proto: Any) -> None:
        if proto.transport is not None:
            proto.transport.sendto(self.reply(fwd, f"{addr[0]}:{addr[1]}"), addr)

    async def forward(self, fwd: Forward) -> bytes:
        return self.reply(fwd, "tcp")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsim.lab.clusterdns", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="FILE|DIR", help="Services (repeatable)")
    parser.add_argument("--namespace", default="default", help="namespace of objects that name none")
    parser.add_argument("--domain", default=DOMAIN)
    parser.add_argument("--listen", action="append", required=True, metavar="IP", help="address (port 53)")
    parser.add_argument("--user", type=int, default=NOBODY, help="uid to become once port 53 is bound")
    parser.add_argument("--group", type=int, default=NOBODY)
    args = parser.parse_args(argv)
    loaded = read_objects(args.config, default_namespace=args.namespace, keep_going=True)
    view = kube_dns_view(loaded.objects, args.domain)
    listen = tuple((str(ipaddress.ip_address(a)), 53) for a in args.listen)
    server = ClusterDNS(ServerConfig(listen=listen, reload_interval=0), lambda: view.lookup)
    server.view = view

    def ready(srv: DNSServer) -> None:
        drop(args.user, args.group)
        _emit({"event": "listening", "addresses": [f"{h}:{p}" for h, p in srv.addresses], "domain": args.domain,
               "names": len(view.names), "uid": args.user})

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(server, on_ready=ready))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, NetsimError) as e:
        _emit({"event": "error", "error": str(e)})
        sys.exit(2)
