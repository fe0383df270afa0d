"""The DNS view of the service registry: the NameTable istiod sends a proxy (spec/istio-dns.md 3, 3.1–3.3).

Owns: the proxy and istiod settings of the table (:class:`Proxy`, :class:`IstiodFlags`), per-proxy
address selection (:func:`service_addresses`, ``GetAllAddressesForProxy``), ``BuildNameTable``
(:func:`build_name_table`) with the DNS endpoint policy (:func:`dns_endpoint_ok`), auto-allocation
of ServiceEntry VIPs over the registry (:func:`auto_allocate`, the generations of
``netsim.dns.allocate``), the whole view from objects (:func:`build_from_objects`: registry, then
allocation, then the namespace's visible services, then the table), and reading istiod's
``/debug/ndsz`` dump (:func:`load_ndsz`).

Invariants: the services come from ``netsim.registry`` (one converter for DNS and the mesh), so a
field reads, and an object is refused, the same way in ``dns table`` and ``mesh hop``; auto-allocation
runs once per build over every ServiceEntry; visibility is ``netsim.registry.visible``.

Never does: convert objects (``netsim.registry``), answer queries or compute lookup names
(``netsim.dns.resolve``), or any IO except reading the files it is given in :func:`load_config` and
:func:`load_ndsz`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netsim.dns.allocate import (
    UNSPECIFIED,
    Allocation,
    AllocService,
    Generation,
    ServiceEntryState,
    StatusAddress,
    allocate,
    allocate_v2_fresh,
    consume_status,
    generation_for_version,
    sequential_by_hostname,
    sequential_order,
)
from netsim.dns.profile import Profile, profile_for_version
from netsim.errors import ConfigError, NetsimError
from netsim.istio_service import Resolution
from netsim.k8s import K8sObject, YAMLSyntaxError, load_json, load_yaml, read_objects, read_text
from netsim.registry import (
    EXTERNAL,
    KUBE_CLUSTER,
    KUBERNETES,
    SERVICE_ENTRY,
    Endpoint,
    Health,
    Service,
    build_registry,
    host_rule,
    visible,
)
from netsim.registry.model import is_ip

_CLUSTERSET = ".svc.clusterset.local"


class IPMode(enum.Enum):
    """A proxy's IP family mode, from its own pod IPs."""

    IPV4 = "IPv4"
    IPV6 = "IPv6"
    DUAL = "Dual"


@dataclass(frozen=True, slots=True)
class Proxy:
    """The client sidecar: its IPs give its IP mode; metadata decides whether it sees auto VIPs."""

    ips: tuple[str, ...] = ("10.0.0.1",)
    namespace: str = "default"
    cluster: str = ""
    network: str = ""
    dns_capture: bool = True
    dns_auto_allocate: bool = True
    waypoint: bool = False

    @property
    def ip_mode(self) -> IPMode:
        fams = {ipaddress.ip_address(ip).version for ip in self.ips}
        if fams == {6}:
            return IPMode.IPV6
        return IPMode.DUAL if fams == {4, 6} else IPMode.IPV4


@dataclass(frozen=True, slots=True)
class IstiodFlags:
    """istiod settings that change the table (defaults: Istio HEAD)."""

    dual_stack: bool = False  # ISTIO_DUAL_STACK
    ambient: bool = False  # PILOT_ENABLE_AMBIENT
    ip_autoallocate: bool = True  # PILOT_ENABLE_IP_AUTOALLOCATE (default on from 1.25)
    multicluster_headless: bool = True  # ENABLE_MULTICLUSTER_HEADLESS
    single_auto_vip: bool = False  # before 1.23.1: one auto VIP per proxy, IPv4 preferred
    merge_same_host: bool = True  # 1.18+: services sharing a hostname merge their IPs (before: first wins)
    unhealthy_excluded: bool = True  # 1.24+: only healthy endpoints (unless publishNotReadyAddresses)
    all_pod_ips: bool = True  # 1.29+: every IP of a multi-IP pod (before: its first)
    all_ports: bool = True  # after 1.30: endpoints of every port (before: the first port's)


@dataclass(frozen=True, slots=True)
class NameInfo:
    """One NameTable entry (nds.proto ``NameInfo``) plus netsim's provenance fields."""

    ips: tuple[str, ...]
    registry: str = KUBERNETES
    shortname: str = ""
    namespace: str = ""
    alt_hosts: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    allocator: str | None = None

    def proto_dict(self) -> dict[str, Any]:
        """The fields istiod sends (what ``/debug/ndsz`` prints)."""
        d: dict[str, Any] = {"ips": list(self.ips), "registry": self.registry}
        if self.shortname:
            d["shortname"] = self.shortname
        if self.namespace:
            d["namespace"] = self.namespace
        if self.alt_hosts:
            d["altHosts"] = list(self.alt_hosts)
        return d


@dataclass(frozen=True, slots=True)
class NameTable:
    """hostname → :class:`NameInfo`, in istiod's order. Immutable."""

    entries: Mapping[str, NameInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    def __len__(self) -> int:
        return len(self.entries)


# --------------------------------------------------------------------------------------------
# Section 3.1: which addresses a service has for a proxy

def _family(addr: str) -> int | None:
    """4 or 6 for an IP or a CIDR (by its prefix address); ``::ffff:a.b.c.d`` counts as IPv6."""
    try:
        return ipaddress.ip_address(addr.split("/")[0]).version
    except ValueError:
        return None


def _family_filter(addrs: Sequence[str], proxy: Proxy, flags: IstiodFlags) -> list[str]:
    mode = proxy.ip_mode
    if mode is IPMode.DUAL and (flags.dual_stack or flags.ambient):
        return list(addrs)
    if mode is IPMode.IPV4:
        want = 4
    elif mode is IPMode.IPV6:
        want = 6
    else:
        if not addrs:
            return []
        want = _family(addrs[0]) or 4
    return [a for a in addrs if _family(a) == want]


def consumes_auto_vips(proxy: Proxy, flags: IstiodFlags) -> bool:
    """(DNS_AUTO_ALLOCATE or PILOT_ENABLE_IP_AUTOALLOCATE) and (DNS_CAPTURE or waypoint), 1.23.1+."""
    if flags.single_auto_vip:  # 1.9 – 1.23.0: proxy metadata only
        return proxy.dns_capture and proxy.dns_auto_allocate
    return (proxy.dns_auto_allocate or flags.ip_autoallocate) and (proxy.dns_capture or proxy.waypoint)


def service_addresses(svc: Service, proxy: Proxy, flags: IstiodFlags) -> tuple[str, ...]:
    """``GetAllAddressesForProxy``: the addresses ``svc`` has for ``proxy``, possibly none."""
    addrs: list[str] = list(svc.cluster_vips.get(proxy.cluster, ())) if proxy.cluster else []
    if not addrs and consumes_auto_vips(proxy, flags):
        autos = [a for a in (svc.auto_ipv4, svc.auto_ipv6) if a]
        if flags.single_auto_vip and autos:
            v4 = svc.auto_ipv4 if any(_family(ip) == 4 for ip in proxy.ips) else None
            autos = [v4 or svc.auto_ipv6 or ""] if (v4 or svc.auto_ipv6) else []
            return tuple(autos)
        addrs = autos
    addrs = _family_filter(addrs, proxy, flags)
    if addrs:
        return tuple(addrs)
    if svc.cluster_vips:
        return tuple(_family_filter([svc.default_address], proxy, flags))
    return (svc.default_address,)


# --------------------------------------------------------------------------------------------
# Section 3: BuildNameTable

def dns_endpoint_ok(ep: Endpoint, svc: Service, flags: IstiodFlags) -> bool:
    """The DNS view's endpoint policy (spec 3 step 2): only IP addresses, and healthy unless the Service
    has ``publishNotReadyAddresses`` or the release still counted unready endpoints (before 1.24).
    Envoy's policy differs: ``netsim.mesh.build.envoy_endpoints``."""
    if not ep.ips or not all(is_ip(ip) for ip in ep.ips):
        return False
    return svc.publish_not_ready or not flags.unhealthy_excluded or ep.health is Health.HEALTHY


def build_name_table(services: Iterable[Service], proxy: Proxy, flags: IstiodFlags = IstiodFlags()) -> NameTable:
    """istiod's ``BuildNameTable`` for ``proxy`` over ``services`` (push-context order)."""
    table: dict[str, NameInfo] = {}
    for svc in services:
        addrs = service_addresses(svc, proxy, flags)
        headless = False
        ips: list[str] = []
        for a in addrs:
            if a == UNSPECIFIED:
                headless = True
                break
            if is_ip(a):
                ips.append(a)
        if headless:
            if svc.resolution is not Resolution.PASSTHROUGH or not svc.ports:
                continue
            ips = _headless(svc, proxy, flags, table)
        if not ips:
            continue
        auto = svc.allocator if (svc.auto_ipv4 in ips or svc.auto_ipv6 in ips) else None
        cur = table.get(svc.hostname)
        if cur is None:
            k8s = svc.registry == KUBERNETES and not svc.hostname.endswith(_CLUSTERSET)
            table[svc.hostname] = NameInfo(ips=tuple(ips), registry=svc.registry,
                                           shortname=svc.name if k8s else "",
                                           namespace=svc.namespace if k8s else "",
                                           sources=(svc.where,) if svc.where else (), allocator=auto)
        elif cur.registry != KUBERNETES:
            if svc.registry == KUBERNETES:
                table[svc.hostname] = NameInfo(ips=tuple(ips), registry=KUBERNETES, shortname=svc.name,
                                               namespace=svc.namespace,
                                               sources=(*cur.sources, svc.where) if svc.where else cur.sources,
                                               allocator=auto)
            elif flags.merge_same_host:
                table[svc.hostname] = replace(cur, ips=cur.ips + tuple(ips),
                                              sources=(*cur.sources, svc.where) if svc.where else cur.sources,
                                              allocator=cur.allocator or auto)
    return NameTable(table)


def _headless(svc: Service, proxy: Proxy, flags: IstiodFlags, table: dict[str, NameInfo]) -> list[str]:
    ips: list[str] = []
    seen: set[str] = set()
    local: dict[str, list[str]] = {}
    remote: dict[str, list[str]] = {}
    shortnames: dict[str, str] = {}
    parent = svc.hostname.split(".", 1)[1] if "." in svc.hostname else ""
    nums = svc.port_numbers
    ports: list[int | None] = [*(nums if flags.all_ports else nums[:1]), None]
    for port in ports:  # every port's endpoints (since 2026-07-30), deduplicated by first address
        for ep in svc.endpoints:
            if ep.port != port or not dns_endpoint_ok(ep, svc, flags) or ep.ips[0] in seen:
                continue
            seen.add(ep.ips[0])
            ep_ips = ep.ips if flags.all_pod_ips else ep.ips[:1]
            same_net = not ep.network or not proxy.network or ep.network == proxy.network
            same_cluster = not ep.cluster or not proxy.cluster or ep.cluster == proxy.cluster
            if ep.subdomain and same_net:
                host = f"{ep.hostname}.{ep.subdomain}.{parent}"
                shortnames[host] = f"{ep.hostname}.{ep.subdomain}"
                (local if same_cluster else remote).setdefault(host, []).extend(ep_ips)
            if same_net and (same_cluster or flags.multicluster_headless):
                ips.extend(ep_ips)
    src = (svc.where,) if svc.where else ()
    remote_only = {host: hips for host, hips in remote.items() if host not in local}  # local names win
    for host, hips in (local | remote_only).items():
        table[host] = NameInfo(ips=tuple(hips), registry=svc.registry, shortname=shortnames[host],
                               namespace=svc.namespace, sources=src)
    return ips


# --------------------------------------------------------------------------------------------
# Kubernetes / Istio objects → services

@dataclass(frozen=True, slots=True)
class BuildOptions:
    """How to turn objects into a table for one client pod."""

    namespace: str = "default"
    cluster_domain: str = "cluster.local"
    generation: Generation = Generation.V2
    istio_version: str | None = None
    proxy: Proxy | None = None
    flags: IstiodFlags | None = None


@dataclass(frozen=True, slots=True)
class BuildResult:
    """A built table, the services it came from, the objects skipped (errors), the allocator used,
    and why the hosts that got no entry have none (their queries are forwarded upstream)."""

    table: NameTable
    services: tuple[Service, ...]
    errors: tuple[NetsimError, ...]
    generation: Generation
    unresolved: tuple[Unresolved, ...] = ()
    # documents that are no Kubernetes object at all (a Helm values file in a manifests directory): skipped
    not_objects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A host of the configuration that is not in the table, and why (spec 3.2, 3.3)."""

    hostname: str
    source: str
    reason: str


def explain_unresolved(services: Iterable[Service], table: NameTable, proxy: Proxy,
                       flags: IstiodFlags) -> list[Unresolved]:
    """For every service host missing from ``table``, the rule of spec 3 that left it out."""
    out: dict[str, Unresolved] = {}
    for svc in services:
        if svc.hostname in table.entries or svc.hostname in out:
            continue
        addrs = service_addresses(svc, proxy, flags)
        if svc.registry == KUBERNETES and svc.resolution is Resolution.DNS_LB:
            why = "ExternalName Service: never in the table; the agent forwards it (kube-dns answers the CNAME)"
        elif UNSPECIFIED in addrs and svc.resolution is Resolution.PASSTHROUGH:
            why = ("headless without ports" if not svc.ports else
                   "headless/NONE without a usable endpoint (healthy, with IP addresses, same network)")
        elif UNSPECIFIED in addrs:
            if svc.hostname.startswith("*"):
                why = "wildcard host without addresses: never auto-allocated"
            elif not consumes_auto_vips(proxy, flags):
                why = "no address, and this proxy does not consume auto-allocated VIPs"
            else:
                why = ("no addresses and no auto-allocated VIP (allocator off, opted out with "
                       "networking.istio.io/enable-autoallocate-ip=false, or pool exhausted)")
        elif not addrs:
            why = f"its addresses are of another IP family than this {proxy.ip_mode.value} proxy"
        else:
            why = f"no usable IP address ({', '.join(addrs)}: CIDRs and names are dropped)"
        out[svc.hostname] = Unresolved(svc.hostname, svc.where, why)
    return list(out.values())


# --------------------------------------------------------------------------------------------
# auto-allocation: a view of the registry, once per build (spec/istio-autoalloc.md)

def auto_allocate(services: Sequence[Service], generation: Generation, *, istio_version: str | None = None,
                  enabled: bool = True) -> tuple[Service, ...]:
    """``services`` with the VIPs ``generation`` auto-allocates to ServiceEntry hosts without addresses.

    Runs over every ServiceEntry of the registry (istiod allocates cluster-wide, whoever looks).
    ``v2`` keeps existing ``status.addresses`` and allocates the rest as the controller would on a
    leader start, handing them out only when ``enabled`` (``PILOT_ENABLE_IP_AUTOALLOCATE``); the legacy
    generations allocate over the ServiceEntry services oldest first, then by name, in the order read.
    """
    se = [s for s in services if s.kind == SERVICE_ENTRY]
    if not se:
        return tuple(services)
    auto: dict[int, Allocation] = {}  # by Service.seq
    if generation is Generation.V2:
        by_object: dict[tuple[str, str], list[Service]] = {}
        for s in sorted(se, key=lambda s: s.seq):
            by_object.setdefault((s.namespace, s.name), []).append(s)
        states = sorted((_se_state(group) for group in by_object.values()),
                        key=lambda st: (st.creation, st.namespace, st.name))
        done = {st.key: st for st in allocate_v2_fresh(states)}
        for (ns, name), group in by_object.items():
            per_host = consume_status(done[f"{ns}/{name}"], enabled=enabled)
            for s in group:
                if s.address == UNSPECIFIED and s.hostname in per_host:
                    auto[s.seq] = per_host[s.hostname]
    else:
        ordered_se = sorted(se, key=lambda s: (s.creation, s.name, s.seq))
        flat = [(s, AllocService(hostname=s.hostname, namespace=s.namespace, resolution=s.resolution.se_name,
                                 address=s.address, creation=s.creation, se_name=s.name)) for s in ordered_se]
        if generation.is_sequential:
            order = sequential_order([a for _, a in flat], by_hostname=sequential_by_hostname(istio_version))
            index = {id(a): s for s, a in flat}
            flat = [(index[id(a)], a) for a in order]
        for (s, _a), alloc in zip(flat, allocate([a for _, a in flat], generation), strict=True):
            auto[s.seq] = alloc
    out = []
    for s in services:
        a = auto.get(s.seq) if s.kind == SERVICE_ENTRY else None
        if a is not None and (a.ipv4 or a.ipv6):
            s = replace(s, auto_ipv4=a.ipv4, auto_ipv6=a.ipv6, allocator=generation.value)
        out.append(s)
    return tuple(out)


def _se_state(group: Sequence[Service]) -> ServiceEntryState:
    """The allocator's view of one ServiceEntry, from its services (hosts and addresses in written order)."""
    first = group[0]
    hosts = tuple(dict.fromkeys(s.hostname for s in group))
    addresses = tuple(dict.fromkeys(s.address for s in group if s.address != UNSPECIFIED))
    return ServiceEntryState(namespace=first.namespace, name=first.name, hosts=hosts, addresses=addresses,
                             resolution=first.resolution.se_name, labels=dict(first.object_labels),
                             creation=first.creation,
                             status_addresses=tuple(StatusAddress(h, v) for h, v in first.status_addresses))


# --------------------------------------------------------------------------------------------
# the DNS view of the registry

def build_from_objects(objects: Sequence[K8sObject], opts: BuildOptions = BuildOptions()) -> BuildResult:
    """The NameTable istiod would send a sidecar in ``opts.namespace``, from Kubernetes/Istio objects.

    The registry (:func:`netsim.registry.build_registry`) reads the objects; a bad object is reported in
    ``errors`` (located at its file, document, kind/name and field) and skipped; the rest load. Then,
    once: auto-allocation with ``opts.generation`` (:func:`auto_allocate`), what the proxy's namespace
    sees (:func:`netsim.registry.visible`: exportTo, one definition per hostname by release), and
    ``BuildNameTable`` over that.
    """
    reg = build_registry(objects, domain=opts.cluster_domain)
    return build_from_registry(reg.services, opts, errors=reg.errors)


def build_from_registry(services: Sequence[Service], opts: BuildOptions = BuildOptions(), *,
                        errors: Sequence[NetsimError] = ()) -> BuildResult:
    """:func:`build_from_objects` after the conversion: allocate, select the visible services, build."""
    version = opts.istio_version
    gen = opts.generation
    flags = opts.flags or istiod_flags(profile_for_version(version, gen))
    proxy = opts.proxy or Proxy(namespace=opts.namespace, cluster=KUBE_CLUSTER)
    allocated = auto_allocate(services, gen, istio_version=version, enabled=flags.ip_autoallocate)
    seen = visible(allocated, opts.namespace, host_rule(version))
    table = build_name_table(seen.services, proxy, flags)
    unresolved = [*explain_unresolved(seen.services, table, proxy, flags)]
    listed = {u.hostname for u in unresolved}
    for h in seen.hidden:
        if h.service.hostname not in table.entries and h.service.hostname not in listed:
            listed.add(h.service.hostname)
            unresolved.append(Unresolved(h.service.hostname, h.service.where, h.reason))
    return BuildResult(table=table, services=seen.services, errors=tuple(errors), generation=gen,
                       unresolved=tuple(unresolved))


def istiod_flags(profile: Profile) -> IstiodFlags:
    """The istiod settings a version profile implies."""
    return IstiodFlags(ip_autoallocate=profile.ip_autoallocate, single_auto_vip=profile.single_auto_vip,
                       merge_same_host=profile.merge_same_host, unhealthy_excluded=profile.unhealthy_excluded,
                       all_pod_ips=profile.all_pod_ips, all_ports=profile.all_ports)


def cluster_domain_of(domain: str, namespace: str) -> str:
    """``ns.svc.cluster.local`` → ``cluster.local`` (the agent's --domain → the cluster domain)."""
    labels = domain.strip(".").split(".")
    if labels and labels[0] == namespace:
        labels = labels[1:]
    if labels and labels[0] == "svc":
        labels = labels[1:]
    return ".".join(labels) or "cluster.local"


def load_config(paths: Iterable[str | Path], *, namespace: str = "default", domain: str | None = None,
                generation: Generation | None = None, istio_version: str | None = None,
                proxy: Proxy | None = None) -> BuildResult:
    """Read ``paths`` (files or directories) and build the table for a pod in ``namespace``.

    ``generation`` defaults to the one of ``istio_version``, else ``v2`` (Istio HEAD).
    Raises ConfigError for missing or unreadable files; bad objects, and documents that are not
    valid YAML, end up in ``errors`` while the rest load; documents that are no Kubernetes object at all
    (:func:`netsim.k8s.not_an_object`) are skipped and listed in ``not_objects``, as every ``--config`` reader does.
    """
    # a broken document: reported; a Helm values file beside the manifests: skipped
    loaded = read_objects(paths, default_namespace=namespace, keep_going=True, skip_non_objects=True)
    gen = generation or (generation_for_version(istio_version) if istio_version else Generation.V2)
    dom = domain or f"{namespace}.svc.cluster.local"
    res = build_from_objects(loaded.objects, BuildOptions(namespace=namespace,
                                                          cluster_domain=cluster_domain_of(dom, namespace),
                                                          generation=gen, istio_version=istio_version,
                                                          proxy=proxy))
    return replace(res, errors=loaded.errors + res.errors, not_objects=loaded.skipped)


# --------------------------------------------------------------------------------------------
# istiod's /debug/ndsz

def parse_ndsz(data: Any, where: str = "name table") -> NameTable:
    """A NameTable from istiod's ``/debug/ndsz`` JSON (``{"table": {host: NameInfo}}``, or the map).

    Accepts proto JSON names (``altHosts``) and proto field names (``alt_hosts``).
    Raises ConfigError naming the host and field at fault.
    """
    if isinstance(data, Mapping) and isinstance(data.get("table"), Mapping):
        data = data["table"]
    if not isinstance(data, Mapping):
        raise ConfigError("expected a NameTable: a mapping of hostname to {ips, registry, ...}", where=where)
    out: dict[str, NameInfo] = {}
    for host, info in data.items():
        at = f"{where}: {host}"
        if not isinstance(info, Mapping):
            raise ConfigError("expected a mapping with ips, registry, shortname, namespace", where=at)
        ips = info.get("ips") or []
        if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
            raise ConfigError("field ips: must be a list of strings", where=at)
        alt = info.get("altHosts", info.get("alt_hosts")) or []
        if not isinstance(alt, list):
            raise ConfigError("field altHosts: must be a list of strings", where=at)
        out[str(host)] = NameInfo(ips=tuple(ips), registry=str(info.get("registry") or ""),
                                  shortname=str(info.get("shortname") or ""),
                                  namespace=str(info.get("namespace") or ""),
                                  alt_hosts=tuple(str(a) for a in alt), sources=(where,))
    return NameTable(out)


def load_ndsz(path: str | Path) -> NameTable:
    """Read a NameTable dump (JSON or YAML) from ``path``."""
    p = Path(path)
    text = read_text(p)
    try:
        data = load_json(text)
    except ValueError:
        try:
            data = load_yaml(text)
        except YAMLSyntaxError as e:
            line = f"line {e.line}: " if e.line is not None else ""
            raise ConfigError(f"{line}neither JSON nor YAML: {e.problem}", where=str(p)) from None
    return parse_ndsz(data, str(p))


__all__ = [
    "EXTERNAL",
    "KUBERNETES",
    "KUBE_CLUSTER",
    "BuildOptions",
    "BuildResult",
    "Endpoint",
    "Health",
    "IPMode",
    "IstiodFlags",
    "NameInfo",
    "NameTable",
    "Proxy",
    "Resolution",
    "Service",
    "Unresolved",
    "auto_allocate",
    "build_from_objects",
    "build_from_registry",
    "build_name_table",
    "cluster_domain_of",
    "consumes_auto_vips",
    "dns_endpoint_ok",
    "explain_unresolved",
    "istiod_flags",
    "load_config",
    "load_ndsz",
    "parse_ndsz",
    "service_addresses",
]
