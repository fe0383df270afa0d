"""The per-proxy Envoy config istiod would generate, as an index built once (spec sections 2-4).

Owns: :func:`build_index`, which turns :class:`~netsim.mesh.model.MeshObjects` + the deciding proxy +
a release profile into a :class:`ProxyIndex`: outbound listeners keyed by ``(ip, port)`` and by port
(wildcard), ``virtualOutbound``, ``virtualInbound`` (or the 1.0-1.2 ``podIP_port`` inbound listeners),
route configs with a domain index, and clusters with their type and upstream TLS. It follows
``listener.go :: buildSidecarOutboundListeners / buildSidecarOutboundListener`` (services oldest
first, conflicts merged or dropped), ``listener_inbound.go`` and ``cluster_tls.go``.

Never does: decide a connection (``netsim.mesh.hop``), read files, or scan services per decision:
everything a hop needs is a dictionary lookup in the index.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from netsim.errors import NetsimError
from netsim.istio_service import exported
from netsim.mesh.model import (
    ROOT_NAMESPACE,
    UNSPECIFIED,
    DestinationRule,
    Endpoint,
    MeshConfig,
    MeshObjects,
    MeshService,
    PeerAuthentication,
    PodInfo,
    Protocol,
    Proxy,
    Resolution,
    ServicePort,
    Sidecar,
    VirtualService,
    is_ip,
    selects,
)
from netsim.mesh.versions import MeshProfile
from netsim.registry import Hidden, host_rule, visible

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
PASSTHROUGH_CHAIN = "PassthroughFilterChain"
WILDCARD = "0.0.0.0"
PROXY_PORT = 15001
INBOUND_PORT = 15006
# ALPN sets (listener.go)
HTTP_ALPNS = ("http/1.1", "h2c")
MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
MTLS_TCP_ALPNS = ("istio-peer-exchange", "istio")
ALL_MTLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")


_NO_CLASS = object()


class _Class:
    HTTP = "HTTP"
    TCP = "TCP"
    AUTO = "AUTO"


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterChain:
    """One Envoy filter chain: its match, its TLS termination, and where it sends the connection."""

    name: str | None = None
    dst_port: int | None = None
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    sni: tuple[str, ...] = ()
    transport: str = ""  # "tls" | "raw_buffer" | "" (any)
    alpn: tuple[str, ...] = ()
    tls_context: str = ""  # "" (none) | "istio-mtls" (terminates Istio mTLS)
    cluster: str | None = None  # tcp_proxy
    rds: str | None = None  # HCM with this RDS route config
    http_cluster: str | None = None  # HCM with an inline route to this cluster (inbound)
    origin: str = ""  # the object that made this chain

    @property
    def is_http(self) -> bool:
        return self.rds is not None or self.http_cluster is not None

    @property
    def match_all(self) -> bool:
        return not (self.dst_port or self.cidrs or self.sni or self.transport or self.alpn)

    def match_key(self) -> tuple[Any, ...]:
        return (self.dst_port, self.transport, frozenset(self.alpn), frozenset(s for s in self.sni if s != "*"),
                frozenset(c for c in self.cidrs if str(c) != "0.0.0.0/0"), self.is_http)

    def match_text(self) -> str:
        """``istioctl proxy-config listeners`` MATCH column."""
        parts = []
        if self.sni:
            parts.append("SNI: " + ",".join(self.sni))
        if self.transport:
            parts.append("Trans: " + self.transport)
        if self.alpn:
            parts.append("App: " + ",".join(self.alpn))
        if self.cidrs or self.dst_port:
            addr = ",".join(str(c) for c in self.cidrs) or "*"
            parts.append(f"Addr: {addr}" + (f":{self.dst_port}" if self.dst_port else ""))
        return "; ".join(parts) or "ALL"

    def destination_text(self) -> str:
        """``istioctl proxy-config listeners`` DESTINATION column."""
        if self.rds is not None:
            return f"Route: {self.rds}"
        if self.http_cluster is not None:
            return "Inline Route: /*"
        if self.name in ("virtualOutbound-blackhole", "virtualInbound-blackhole"):
            return "Non-HTTP/Non-TCP"
        if self.cluster in (PASSTHROUGH, BLACKHOLE, INBOUND_PASSTHROUGH):
            return self.cluster or ""
        return f"Cluster: {self.cluster}" if self.cluster else "Non-HTTP/Non-TCP"


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    name: str
    address: str
    port: int
    chains: tuple[FilterChain, ...]
    default_chain: FilterChain | None = None
    tls_inspector: bool = False
    http_inspector: bool = False
    origins: tuple[str, ...] = ()  # objects that made it, oldest first
    direction: str = "outbound"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    name: str = ""
    matches: tuple[tuple[str, str], ...] = ()
    cluster: str | None = None
    direct_status: int | None = None
    origin: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    origin: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig:
    """A route configuration with its domain index (exact, then ``*.suffix`` longest first, then ``*``)."""

    name: str
    vhosts: tuple[VirtualHost, ...]
    exact: Mapping[str, VirtualHost] = field(default_factory=dict)
    suffixes: tuple[tuple[str, VirtualHost], ...] = ()
    prefixes: tuple[tuple[str, VirtualHost], ...] = ()
    catch_all: VirtualHost | None = None

    def match(self, host: str) -> VirtualHost | None:
        vh = self.exact.get(host)
        if vh is not None:
            return vh
        for suffix, vh in self.suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                return vh
        for prefix, vh in self.prefixes:
            if host.startswith(prefix):
                return vh
        return self.catch_all


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    name: str
    type: str  # EDS, STRICT_DNS, LOGICAL_DNS, ORIGINAL_DST, STATIC
    direction: str = "outbound"  # outbound | inbound | "" (special clusters)
    fqdn: str = ""
    port: int | None = None
    subset: str = ""
    destination_rule: str = ""  # "name.namespace"
    tls: str = "plaintext"  # istio-mtls | plaintext | tls | auto (per endpoint label) | none
    tls_reason: str = ""
    endpoints: tuple[Endpoint, ...] = ()
    target: str = ""  # STRICT_DNS/LOGICAL_DNS target, STATIC address
    service: MeshService | None = None
    service_port: ServicePort | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyIndex:
    """Everything one proxy's Envoy would hold, indexed for hop decisions."""

    proxy: Proxy
    profile: MeshProfile
    mesh: MeshConfig
    policy: str  # effective outbound policy: ALLOW_ANY | REGISTRY_ONLY
    policy_origin: str
    auto_mtls: bool
    exact: Mapping[tuple[str, int], Listener]
    wildcard: Mapping[int, Listener]
    virtual_outbound: Listener
    virtual_inbound: Listener | None
    inbound_exact: Mapping[tuple[str, int], Listener]  # 1.0-1.2: podIP_port inbound listeners
    routes: Mapping[str, RouteConfig]
    clusters: Mapping[str, Cluster]
    objects: MeshObjects
    pods_by_ip: Mapping[str, PodInfo]
    conflicts: tuple[str, ...] = ()
    errors: tuple[NetsimError, ...] = ()
    hidden: tuple[Hidden, ...] = ()  # services this proxy does not see (exportTo, a hostname defined twice)

    def listeners(self) -> list[Listener]:
        """Every listener, as istioctl lists them (outbound by port and address, then the virtual ones)."""
        out = list(self.exact.values()) + list(self.wildcard.values()) + list(self.inbound_exact.values())
        out.sort(key=lambda ln: (ln.port, ln.address))
        out.append(self.virtual_outbound)
        if self.virtual_inbound is not None:
            out.append(self.virtual_inbound)
        return out


class _LazyRoutes(Mapping[str, RouteConfig]):
    """The route configurations by name, each built when first read: a proxy of a large mesh has a virtual
    host per service port in each, and a hop reads one (``netsim check`` builds many indexes and reads few)."""

    def __init__(self, names: Sequence[str], make: Any) -> None:
        self._names = tuple(names)
        self._known = frozenset(names)
        self._make = make
        self._built: dict[str, RouteConfig] = {}

    def __getitem__(self, name: str) -> RouteConfig:
        rc = self._built.get(name)
        if rc is None:
            if name not in self._known:
                raise KeyError(name)
            rc = self._built[name] = self._make(name)
        return rc

    def __iter__(self) -> Any:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


# -------------------------------------------------------------------------------------------------
# policy lookups (shared with hop and diagnose)

def host_matches(pattern: str, host: str) -> bool:
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*") and host.endswith(pattern[1:])


def sidecar_for(objects: MeshObjects, proxy: Proxy, root_ns: str) -> Sidecar | None:
    labels = proxy.label_map
    in_ns = [s for s in objects.sidecars if s.namespace == proxy.namespace]
    for s in in_ns:
        if s.selector and selects(s.selector, labels):
            return s
    for s in in_ns:
        if not s.selector:
            return s
    for s in objects.sidecars:
        if s.namespace == root_ns and not s.selector:
            return s
    return None


def peer_mode(objects: MeshObjects, root_ns: str, namespace: str, labels: Mapping[str, str] | None,
              port: int | None) -> tuple[str, str]:
    """Effective PeerAuthentication mode and the object deciding it (``labels`` None: namespace level only)."""
    mesh_level = [p for p in objects.peer_authentications
                  if (p.namespace == root_ns or p.namespace == "") and not p.selector]
    ns_level = [p for p in objects.peer_authentications if p.namespace == namespace and not p.selector]
    wl: list[PeerAuthentication] = []
    if labels is not None:
        wl = [p for p in objects.peer_authentications
              if p.namespace == namespace and p.selector and selects(p.selector, labels)]
    for group in (wl, ns_level, mesh_level):
        for p in group:
            if port is not None and group is wl:
                for pp, mode in p.ports:
                    if pp == port and mode != "UNSET":
                        return mode, f"{p.kind} {p.namespace or '(mesh)'}/{p.name} portLevelMtls {port}"
            if p.mode != "UNSET":
                return p.mode, f"{p.kind} {p.namespace or '(mesh)'}/{p.name}"
    return "PERMISSIVE", "default (no PeerAuthentication)"


def destination_rule_for(objects: MeshObjects, proxy: Proxy, root_ns: str, svc: MeshService
                         ) -> DestinationRule | None:
    """The DestinationRule that applies to ``svc`` for ``proxy`` (see :func:`_pick_destination_rule`)."""
    return _pick_destination_rule((dr for dr in objects.destination_rules if host_matches(dr.host, svc.hostname)),
                                  proxy, None, root_ns, svc)


def envoy_endpoints(s: MeshService) -> tuple[Endpoint, ...]:
    """The Envoy view's endpoint policy: only healthy endpoints are load-balanced to (an unready pod, a
    ``notReadyAddresses`` entry or a not-ready EndpointSlice endpoint gets no traffic), whatever
    ``publishNotReadyAddresses`` says for DNS (``netsim.dns.table.dns_endpoint_ok``)."""
    return tuple(e for e in s.endpoints if e.healthy)


def resolve_target_port(sp: ServicePort, pod: PodInfo | None) -> int | None:
    t = sp.target_port
    if t is None:
        return sp.port
    if isinstance(t, int):
        return t
    if pod is not None:
        for cp in pod.container_ports:
            if cp.name == t:
                return cp.port
    return None


# -------------------------------------------------------------------------------------------------
# build

@dataclass(slots=True)
class _Entry:
    bind: str
    port: int
    protocol: str  # listener class
    port_protocol: Protocol
    chains: list[FilterChain]
    origins: list[str]
    locked: bool = False


class ViewCache:
    """What the views (:class:`ProxyIndex`) of many proxies over the same objects, release and mesh config
    share, so that each view is built from what differs for its proxy (``netsim check`` builds one per
    namespace that sees its own config).

    Every entry is a pure function of its key: the services a namespace sees (exportTo, one definition per
    hostname, the Sidecar's egress), the DestinationRules that may apply to a hostname, a service's clusters
    under a given DestinationRule, and whole components (the outbound listeners; the outbound clusters)
    keyed by everything they read, so a proxy whose inputs equal an earlier one's gets the same values. A
    view built through a cache equals the view built without one (``build_index`` without ``cache`` uses a
    fresh one). Lists of services are interned by content, and the cache holds every object whose ``id`` is
    part of a key, so an id is never reused while it is cached."""

    def __init__(self, objects: MeshObjects, profile: MeshProfile, mesh: MeshConfig) -> None:
        self.objects = objects
        self.profile = profile
        self.mesh = mesh
        root = mesh.root_namespace or ROOT_NAMESPACE
        self.pods_by_ip = MappingProxyType({ip: p for p in objects.pods if p.kind == "Pod" for ip in p.ips})
        self.endpoint_ips = frozenset(e.address for s in objects.services for e in s.endpoints)
        self._position = {id(dr): i for i, dr in enumerate(objects.destination_rules)}
        # by host: exact ones by host; "*.suffix" ones by ".suffix" (host_matches is host.endswith(".suffix")
        # for them, or the host itself); other wildcards ("*", "*suffix") tried one by one
        self._dr_exact: dict[str, list[DestinationRule]] = {}
        self._dr_suffix: dict[str, list[DestinationRule]] = {}
        self._dr_wild: list[DestinationRule] = []
        for dr in objects.destination_rules:
            if dr.host.startswith("*."):
                self._dr_suffix.setdefault(dr.host[1:], []).append(dr)
            elif dr.host.startswith("*"):
                self._dr_wild.append(dr)
            else:
                self._dr_exact.setdefault(dr.host, []).append(dr)
        self._dr_candidates: dict[str, tuple[DestinationRule, ...]] = {}
        self._dr_sets: dict[tuple[int, ...], tuple[DestinationRule, ...]] = {}
        self._dr_choice: dict[tuple[Any, ...], DestinationRule | None] = {}
        self.ns_modes: dict[str, tuple[str, str]] = {}
        self.classes: dict[tuple[int, bool], object] = {}
        self.root = root
        self.auto_allocated: dict[tuple[Any, ...], Sequence[MeshService]] = {}
        self._sensitive: dict[int, bool] = {}
        self.visible: dict[tuple[Any, ...], tuple[list[MeshService], tuple[Hidden, ...]]] = {}
        self.envoy: dict[int, tuple[MeshService, MeshService]] = {}
        self.interned: dict[tuple[int, ...], list[MeshService]] = {}
        self.outbound: dict[tuple[Any, ...], tuple[dict[tuple[str, int], Listener], dict[int, Listener],
                                                   tuple[str, ...], frozenset[str]]] = {}
        self.clusters: dict[tuple[Any, ...], dict[str, Cluster]] = {}
        self.service_clusters: dict[tuple[int, int], tuple[Any, list[tuple[str, Cluster]]]] = {}
        self.route_inputs: dict[int, tuple[dict[int, list[tuple[MeshService, ServicePort]]],
                                           dict[str, tuple[MeshService, ServicePort]]]] = {}

    def matches(self, objects: MeshObjects, profile: MeshProfile, mesh: MeshConfig) -> bool:
        return objects is self.objects and profile is self.profile and mesh is self.mesh

    def dr_candidates(self, hostname: str) -> tuple[DestinationRule, ...]:
        """The DestinationRules whose host matches ``hostname``, in the order read (:func:`destination_rule_for`
        then picks by exportTo, selector and rank)."""
        found = self._dr_candidates.get(hostname)
        if found is None:
            hits = [dr for dr in self._dr_wild if host_matches(dr.host, hostname)]
            hits += self._dr_exact.get(hostname, ())
            if self._dr_suffix:
                at = hostname.find(".")
                while at >= 0:
                    hits += self._dr_suffix.get(hostname[at:], ())
                    at = hostname.find(".", at + 1)
            if len(hits) > 1:
                hits.sort(key=lambda dr: self._position[id(dr)])
            # one tuple per set of rules, so that choices among them are memoised (:meth:`pick`)
            found = self._dr_candidates[hostname] = self._dr_sets.setdefault(tuple(map(id, hits)), tuple(hits))
        return found

    def pick(self, proxy: Proxy, labels: Mapping[str, str], svc: MeshService) -> DestinationRule | None:
        """:func:`_pick_destination_rule` among :meth:`dr_candidates` of ``svc``: memoised by what the choice
        reads (the candidates, the proxy's namespace, the service's, whether a candidate's host is the
        service's hostname, and the proxy's labels when a candidate has a workload selector)."""
        candidates = self.dr_candidates(svc.hostname)
        if not candidates:
            return None
        exact = any(dr.host == svc.hostname for dr in candidates)
        selecting = any(dr.selector for dr in candidates)
        key = (id(candidates), proxy.namespace, svc.namespace, svc.hostname if exact else None,
               proxy.labels if selecting else None)
        try:
            return self._dr_choice[key]
        except KeyError:
            found = self._dr_choice[key] = _pick_destination_rule(candidates, proxy, labels, self.root, svc)
            return found

    def namespace_sensitive(self, services: Sequence[MeshService]) -> bool:
        """Whether :func:`netsim.registry.visible` may give proxies of two namespaces different views of
        ``services``: an ``exportTo`` that is not everywhere, or a hostname with definitions of two
        (kind, namespace) pairs. Once per sequence (which the cache holds)."""
        found = self._sensitive.get(id(services))
        if found is None:
            owner: dict[str, tuple[str, str]] = {}
            found = False
            for s in services:
                if s.export_to and "*" not in s.export_to:
                    found = True
                    break
                if owner.setdefault(s.hostname, (s.kind, s.namespace)) != (s.kind, s.namespace):
                    found = True
                    break
            self._sensitive[id(services)] = found
        return found

    def intern(self, services: list[MeshService]) -> list[MeshService]:
        """One list object per content (by identity of its services), so components key on its ``id``."""
        return self.interned.setdefault(tuple(map(id, services)), services)


def _pick_destination_rule(candidates: Iterable[DestinationRule], proxy: Proxy, labels: Mapping[str, str] | None,
                           root_ns: str, svc: MeshService) -> DestinationRule | None:
    """istiod's choice among the DestinationRules whose host matches ``svc``'s: exported to the proxy's
    namespace and selecting it; the proxy's own namespace first, then the service's, then the root
    namespace's, then any other; the exact host before the longest wildcard; the first read on a tie."""
    best: tuple[int, int, DestinationRule] | None = None
    for dr in candidates:
        if not exported(dr.export_to, dr.namespace, proxy.namespace):
            continue
        if dr.selector and not selects(dr.selector, labels if labels is not None else proxy.label_map):
            continue
        if dr.namespace == proxy.namespace:
            rank = 0
        elif dr.namespace == svc.namespace:
            rank = 1
        elif dr.namespace == root_ns:
            rank = 2
        else:
            rank = 3
        spec = 0 if dr.host == svc.hostname else 10_000 - len(dr.host)
        if best is None or (rank, spec) < best[:2]:
            best = (rank, spec, dr)
    return best[2] if best else None


class _Builder:
    def __init__(self, objects: MeshObjects, proxy: Proxy, profile: MeshProfile, mesh: MeshConfig,
                 cache: ViewCache | None = None) -> None:
        if cache is None:
            cache = ViewCache(objects, profile, mesh)
        elif not cache.matches(objects, profile, mesh):
            raise ValueError("a ViewCache serves the objects, release profile and mesh config it was made for")
        self.cache = cache
        self.o = objects
        self.proxy = proxy
        self.profile = profile
        self.mesh = mesh
        self.root = mesh.root_namespace or ROOT_NAMESPACE
        self.conflicts: list[str] = []
        self.errors: list[NetsimError] = []
        self.hidden: tuple[Hidden, ...] = ()
        self._ns_modes = cache.ns_modes
        self._classes = cache.classes
        self._labels = proxy.label_map
        self.sidecar = sidecar_for(objects, proxy, self.root)
        if self.sidecar is not None and self.sidecar.outbound_policy:
            self.policy = self.sidecar.outbound_policy
            self.policy_origin = f"Sidecar {self.sidecar.namespace}/{self.sidecar.name} outboundTrafficPolicy"
        else:
            self.policy = mesh.outbound_policy
            self.policy_origin = f"mesh config outboundTrafficPolicy ({mesh.source})"
        self.catch_all_cluster = PASSTHROUGH if self.policy != "REGISTRY_ONLY" else BLACKHOLE
        self.auto_mtls = mesh.enable_auto_mtls if mesh.enable_auto_mtls is not None else profile.auto_mtls_default
        if profile.version < (1, 4, 0):
            self.auto_mtls = False
        self.vss = [v for v in objects.virtual_services
                    if v.applies_to_mesh and exported(v.export_to, v.namespace, proxy.namespace)]
        self.pods_by_ip = cache.pods_by_ip
        self.services = self.visible_services()
        self.aliases: dict[str, list[MeshService]] = {}
        for s in self.services:
            if s.resolution is Resolution.ALIAS:
                self.aliases.setdefault(s.external_name, []).append(s)
        self.vs_by_host: dict[str, list[VirtualService]] = {}
        self.vs_wild: list[tuple[str, VirtualService]] = []
        for v in self.vss:
            for h in v.hosts:
                if h.startswith("*"):
                    self.vs_wild.append((h, v))
                else:
                    self.vs_by_host.setdefault(h, []).append(v)

    # -- visibility ----------------------------------------------------------------------------
    def visible_services(self) -> list[MeshService]:
        """The registry's services this proxy sees: auto VIPs added once, then the namespace's view
        (``netsim.registry.visible``: exportTo, one definition per hostname by release), then the Sidecar's
        egress hosts; each with the endpoints Envoy gets (:func:`envoy_endpoints`)."""
        allocated = self.auto_allocated(self.o.services)
        # the namespace matters only where an exportTo limits a service, a hostname has definitions in two
        # registries or namespaces (which one a namespace sees), or a Sidecar's egress names hosts
        ns = self.proxy.namespace \
            if self.sidecar is not None or self.cache.namespace_sensitive(allocated) else None
        key = (id(allocated), ns, id(self.sidecar))
        found = self.cache.visible.get(key)
        if found is None:
            found = self.cache.visible[key] = self._visible_services(allocated)
        self.hidden = found[1]
        return found[0]

    def _visible_services(self, allocated: Sequence[MeshService]) -> tuple[list[MeshService], tuple[Hidden, ...]]:
        seen = visible(allocated, self.proxy.namespace, host_rule(self.profile.version))
        out = []
        egress = self.sidecar.egress if self.sidecar is not None else ()
        catch_all_hosts = next((e.hosts for e in egress if e.port is None), None) if egress else None
        for s in seen.services:
            if egress and catch_all_hosts is not None and not self.egress_allows(catch_all_hosts, s) \
                    and not any(e.port is not None and self.egress_allows(e.hosts, s) for e in egress):
                continue
            if egress and catch_all_hosts is None and not any(self.egress_allows(e.hosts, s) for e in egress):
                continue
            out.append(self.envoy_service(s))
        return self.cache.intern(out), seen.hidden

    def envoy_service(self, s: MeshService) -> MeshService:
        """``s`` as Envoy gets it: an ExternalName Service as an alias (when the release makes one), and only
        the endpoints Envoy load-balances to (:func:`envoy_endpoints`); once per service."""
        found = self.cache.envoy.get(id(s))
        if found is not None:
            return found[1]
        orig = s
        if s.kind == "Service" and s.external_name and self.profile.externalname_alias:
            s = replace(s, resolution=Resolution.ALIAS)
        eps = envoy_endpoints(s)
        if len(eps) != len(s.endpoints):
            s = replace(s, endpoints=eps)
        self.cache.envoy[id(orig)] = (orig, s)
        return s

    def egress_allows(self, hosts: Iterable[str], s: MeshService) -> bool:
        for h in hosts:
            ns, _, host = h.partition("/")
            if ns == "~":
                continue
            if ns == "." and s.namespace != self.proxy.namespace:
                continue
            if ns not in ("*", ".") and ns != s.namespace:
                continue
            if host_matches(host, s.hostname):
                return True
        return False

    def auto_allocated(self, services: Sequence[MeshService]) -> Sequence[MeshService]:
        """``services`` with the auto-allocated VIPs this proxy sees (``netsim.dns.table.auto_allocate``
        over the registry, once per index; the objects are not read again)."""
        if not self.profile.autoalloc or not any(s.kind == "ServiceEntry" for s in services):
            return services
        from netsim.dns.allocate import Generation, generation_for_version
        from netsim.dns.table import IstiodFlags, auto_allocate, consumes_auto_vips
        from netsim.dns.table import Proxy as DNSProxy

        version = self.profile.dns_version
        gen = generation_for_version(version) if version else Generation.V2
        flags = IstiodFlags(ip_autoallocate=gen is Generation.V2,
                            single_auto_vip=version is not None and self.profile.version < (1, 23, 1)
                            and gen is not Generation.V2)
        dproxy = DNSProxy(ips=self.proxy.ips, namespace=self.proxy.namespace, dns_capture=self.proxy.dns_capture,
                          dns_auto_allocate=self.proxy.dns_auto_allocate)
        if not consumes_auto_vips(dproxy, flags):
            return services
        if services is not self.o.services:
            return auto_allocate(services, gen, istio_version=version, enabled=flags.ip_autoallocate)
        key = (gen, flags)
        found = self.cache.auto_allocated.get(key)
        if found is None:
            found = self.cache.auto_allocated[key] = auto_allocate(services, gen, istio_version=version,
                                                                   enabled=flags.ip_autoallocate)
        return found

    # -- helpers -------------------------------------------------------------------------------
    def namespace_peer_mode(self, namespace: str) -> tuple[str, str]:
        """:func:`peer_mode` of a namespace (no workload selector), once per namespace."""
        found = self._ns_modes.get(namespace)
        if found is None:
            found = self._ns_modes[namespace] = peer_mode(self.o, self.root, namespace, None, None)
        return found

    def listener_class(self, p: Protocol, *, inbound: bool = False) -> str | None:
        """The listener class of a port protocol (HTTP, TCP, AUTO when sniffed, None for UDP); memoised per
        protocol member (by identity: an Enum's hash is a Python call)."""
        key = (id(p), inbound)
        found = self._classes.get(key, _NO_CLASS)
        if found is _NO_CLASS:
            found = self._classes[key] = self._listener_class(p, inbound=inbound)
        return found  # type: ignore[return-value]

    def _listener_class(self, p: Protocol, *, inbound: bool = False) -> str | None:
        if p is Protocol.UDP:
            return None
        if p.is_http:
            return _Class.HTTP
        if p.is_tcp:
            return _Class.TCP
        sniff = self.profile.inbound_sniffing if inbound else self.profile.outbound_sniffing
        return _Class.AUTO if sniff else _Class.TCP

    def service_address(self, s: MeshService) -> str:
        if s.auto_ipv4 and s.address == UNSPECIFIED:
            return s.auto_ipv4
        return s.address

    def vs_for(self, host: str) -> list[VirtualService]:
        out = list(self.vs_by_host.get(host, ()))
        out += [v for pat, v in self.vs_wild if host_matches(pat, host)]
        return out

    @staticmethod
    def cluster_name(port: int, subset: str, host: str) -> str:
        return f"outbound|{port}|{subset}|{host}"

    # -- outbound listeners --------------------------------------------------------------------
    def tcp_chains(self, s: MeshService, sp: ServicePort, cidr: str | None, bind: str) -> list[FilterChain]:
        """tls.go :: buildSidecarOutboundTLSFilterChainOpts (TLS/HTTPS ports) or ...TCPFilterChainOpts."""
        cidrs = (ipaddress.ip_network(cidr, strict=False),) if cidr else ()
        out: list[FilterChain] = []
        vss = self.vs_for(s.hostname)
        default_cluster = self.cluster_name(sp.port, "", s.hostname)
        if sp.protocol in (Protocol.TLS, Protocol.HTTPS):
            seen: set[tuple[str, ...]] = set()
            for v in vss:
                for r in v.tls:
                    if r.ports and sp.port not in r.ports:
                        continue
                    if r.sni in seen:
                        continue
                    seen.add(r.sni)
                    d = r.destination
                    out.append(FilterChain(sni=r.sni, cidrs=cidrs,
                                           cluster=self.cluster_name(d.port or sp.port, d.subset, d.host),
                                           origin=f"VirtualService {v.namespace}/{v.name} tls route"))
            if not out:
                # SNI is the only way to tell services apart on a wildcard (or CIDR) listener
                addr = self.service_address(s)
                sni: tuple[str, ...] = ()
                if cidrs or (addr == UNSPECIFIED and bind == WILDCARD):
                    sni = (s.hostname, *(a.hostname for a in self.aliases.get(s.hostname, ())))
                out.append(FilterChain(sni=sni, cidrs=cidrs, cluster=default_cluster, origin=s.ref))
            return out
        for v in vss:
            for r in v.tcp:
                if r.ports and sp.port not in r.ports:
                    continue
                d = r.destination
                out.append(FilterChain(cidrs=cidrs, cluster=self.cluster_name(d.port or sp.port, d.subset, d.host),
                                       origin=f"VirtualService {v.namespace}/{v.name} tcp route"))
                return out
        out.append(FilterChain(cidrs=cidrs, cluster=default_cluster, origin=s.ref))
        return out

    def outbound_listeners(self) -> tuple[dict[tuple[str, int], Listener], dict[int, Listener], tuple[str, ...],
                                          frozenset[str]]:
        """The outbound listeners by (address, port) and wildcard ones by port, the conflicts met building
        them, and the route configuration names they use. Keyed by everything they read: the services
        seen, the Sidecar (egress, policy), the VirtualServices seen, the proxy's namespace when the
        Sidecar's egress names ``.``, and its IP only where a listener depends on it (a headless
        service's endpoint, the 1.3-1.5 pod-IP BlackHole chain)."""
        sc = self.sidecar
        if self.profile.pod_ip_blackhole:
            ips: Any = self.proxy.ips
        else:
            ips = self.proxy.ip if self.proxy.ip in self.cache.endpoint_ips else None
        key = (id(self.services), id(sc), self.proxy.namespace if sc is not None and sc.egress else None,
               tuple(map(id, self.vss)), ips)
        found = self.cache.outbound.get(key)
        if found is None:
            lmap = self.build_outbound()
            exact: dict[tuple[str, int], Listener] = {}
            wildcard: dict[int, Listener] = {}
            for (bind, port), entry in lmap.items():
                ln = self.finalize(entry)
                if bind == WILDCARD:
                    wildcard[port] = ln
                else:
                    exact[(bind, port)] = ln
            names = frozenset(c.rds for ln in (*exact.values(), *wildcard.values())
                              for c in (*ln.chains, *((ln.default_chain,) if ln.default_chain else ()))
                              if c.rds is not None)
            found = self.cache.outbound[key] = (exact, wildcard, tuple(c for c in self.conflicts if c), names)
        return found

    def build_outbound(self) -> dict[tuple[str, int], _Entry]:
        lmap: dict[tuple[str, int], _Entry] = {}
        egress = self.sidecar.egress if self.sidecar is not None else ()
        for e in egress:
            if e.port is None:
                continue
            for s in self.services:
                if not self.egress_allows(e.hosts, s):
                    continue
                for sp in s.ports:
                    if sp.port == e.port:
                        self.one_port(lmap, s, sp)
        for entry in lmap.values():
            entry.locked = True
        for s in self.services:
            if s.resolution is Resolution.ALIAS:
                continue
            for sp in s.ports:
                cls = self.listener_class(sp.protocol)
                headless_ok = (cls == _Class.TCP and self.profile.headless_pod_listeners_tcp) or \
                              (cls == _Class.AUTO and self.profile.headless_pod_listeners_auto)
                if s.resolution is Resolution.PASSTHROUGH and self.service_address(s) == UNSPECIFIED and headless_ok:
                    instances = s.endpoints
                    if s.kind != "Service" and not instances and s.selector is None:
                        self.one_port(lmap, s, sp)
                        continue
                    for ep in instances:
                        if not is_ip(ep.address) or ep.address == self.proxy.ip:
                            continue
                        self.one_port(lmap, s, sp, bind=ep.address)
                else:
                    self.one_port(lmap, s, sp)
        return lmap

    def one_port(self, lmap: dict[tuple[str, int], _Entry], s: MeshService, sp: ServicePort,
                 bind: str | None = None) -> None:
        cls = self.listener_class(sp.protocol)
        if cls is None:
            return
        cidr: str | None = None
        if cls in (_Class.TCP, _Class.AUTO):
            if bind is None:
                addr = self.service_address(s)
                if "/" in addr:
                    net = ipaddress.ip_network(addr, strict=False)
                    if net.prefixlen == net.max_prefixlen:
                        bind = str(net.network_address)
                    else:
                        bind, cidr = WILDCARD, addr
                else:
                    bind = addr
        else:
            bind = bind or WILDCARD
        key = (bind, sp.port)
        cur = lmap.get(key)
        if cur is not None and cur.locked:
            return
        origin = s.ref
        conflict = "none"
        listener_proto = cls
        if cls == _Class.HTTP:
            if cur is not None:
                if cur.protocol == _Class.TCP:
                    conflict = "HTTPOverTCP"
                else:
                    return
            rds = str(sp.port)
            chain = FilterChain(rds=rds, origin=origin)
            if bind == WILDCARD:
                chain = replace(chain, alpn=HTTP_ALPNS, transport="raw_buffer")
                listener_proto = _Class.AUTO
            opts = [chain]
        elif cls == _Class.TCP:
            opts = self.tcp_chains(s, sp, cidr, bind)
            if cur is not None:
                conflict = {"HTTP": "TCPOverHTTP", "TCP": "TCPOverTCP"}.get(cur.protocol, "TCPOverAuto")
        else:
            if cur is not None:
                if cur.protocol == _Class.HTTP:
                    conflict = "AutoOverHTTP"
                elif cur.protocol == _Class.TCP:
                    conflict = "AutoOverTCP"
                else:
                    return
            rds = str(sp.port) if bind == WILDCARD else f"{s.hostname}:{sp.port}"
            opts = [*self.tcp_chains(s, sp, cidr, bind),
                    FilterChain(rds=rds, alpn=HTTP_ALPNS, transport="raw_buffer", origin=origin)]
        name = f"{bind}_{sp.port}"
        if cur is not None and conflict != "none":
            wk = (Protocol.MONGO, Protocol.MYSQL)
            if (sp.protocol in wk or cur.port_protocol in wk) and sp.protocol is not cur.port_protocol:
                self.conflicts.append(f"{name}: {origin} ({sp.protocol.value}) dropped: {cur.port_protocol.value} "
                                      f"on a well-known port cannot share it (kept {cur.origins[0]})")
                return
        if conflict in ("none", "AutoOverHTTP"):
            if conflict == "AutoOverHTTP":
                self.conflicts.append(f"{name}: {origin} (auto) replaced HTTP {', '.join(cur.origins)}"
                                      if cur else "")
            lmap[key] = _Entry(bind=bind, port=sp.port, protocol=listener_proto, port_protocol=sp.protocol,
                               chains=opts, origins=[origin])
            return
        assert cur is not None
        self.merge(cur, opts, name, origin)
        if conflict in ("HTTPOverTCP", "TCPOverHTTP", "AutoOverTCP"):
            cur.protocol = _Class.AUTO

    def merge(self, cur: _Entry, incoming: list[FilterChain], name: str, origin: str) -> None:
        added = False
        for fc in incoming:
            clash = next((c for c in cur.chains if c.match_key() == fc.match_key()), None)
            if clash is not None:
                self.conflicts.append(f"{name}: {fc.origin or origin} lost to {clash.origin} (same filter chain "
                                      f"match {fc.match_text()}; the oldest service wins)")
                continue
            cur.chains.append(fc)
            added = True
        if added and origin not in cur.origins:
            cur.origins.append(origin)

    def finalize(self, e: _Entry) -> Listener:
        chains = list(e.chains)
        if self.profile.pod_ip_blackhole and e.bind == WILDCARD:
            chains.insert(0, FilterChain(cidrs=tuple(ipaddress.ip_network(ip) for ip in self.proxy.ips),
                                         cluster=BLACKHOLE,
                                         origin="PILOT_RESTRICT_POD_UP_TRAFFIC_LOOP (1.3-1.5): the proxy's own IP"))
        default: FilterChain | None = None
        regular: list[FilterChain] = []
        for c in chains:
            if c.match_all:
                default = c
            else:
                regular.append(c)
        if default is not None and not regular:
            regular, default = [default], None
        elif default is None:
            default = FilterChain(name=PASSTHROUGH_CHAIN, cluster=self.catch_all_cluster,
                                  origin=f"catch-all ({self.policy})")
        tls_i = any(c.sni or c.transport == "tls" for c in regular)
        http_i = any(c.alpn for c in regular)
        return Listener(name=f"{e.bind}_{e.port}", address=e.bind, port=e.port, chains=tuple(regular),
                        default_chain=default, tls_inspector=tls_i or http_i, http_inspector=http_i,
                        origins=tuple(e.origins))

    def virtual_outbound(self) -> Listener:
        return Listener(name=VIRTUAL_OUTBOUND, address=WILDCARD, port=PROXY_PORT, chains=(
            FilterChain(name="virtualOutbound-blackhole", dst_port=PROXY_PORT, cluster=BLACKHOLE,
                        origin="a direct connection to 15001 would loop"),
            FilterChain(name="virtualOutbound-catchall-tcp", cluster=self.catch_all_cluster,
                        origin=f"{self.policy} ({self.policy_origin})"),
        ))

    # -- routes --------------------------------------------------------------------------------
    def domains(self, s: MeshService, port: int) -> list[str]:
        out = [s.hostname]
        suffix = ".svc.cluster.local"
        if s.kind == "Service" and s.hostname.endswith(suffix):
            short = s.hostname[: -len(".cluster.local")]  # name.ns.svc
            name_ns = short[: -len(".svc")]
            out += [short, name_ns] + ([s.name] if s.namespace == self.proxy.namespace else [])
        if s.headless and s.kind == "Service":
            out.append("*." + s.hostname)
        addr = self.service_address(s)
        if addr != UNSPECIFIED and "/" not in addr:
            out.append(addr)
        for a in self.aliases.get(s.hostname, ()):
            out.append(a.hostname)
            if a.namespace == self.proxy.namespace:
                out.append(a.name)
            out += [f"{a.name}.{a.namespace}", f"{a.name}.{a.namespace}.svc"]
        return out

    def vhost(self, s: MeshService, sp: ServicePort) -> VirtualHost:
        routes: list[Route] = []
        for v in self.vs_for(s.hostname):
            for r in v.http:
                if r.ports and sp.port not in r.ports:
                    continue
                d = r.destination
                routes.append(Route(name=r.name, matches=r.matches, direct_status=r.direct_status,
                                    cluster=self.cluster_name(d.port or sp.port, d.subset, d.host) if d else None,
                                    origin=f"VirtualService {v.namespace}/{v.name}"))
            if routes:
                break
        if not routes:
            routes.append(Route(name="default", cluster=self.cluster_name(sp.port, "", s.hostname), origin=s.ref))
        return VirtualHost(name=f"{s.hostname}:{sp.port}", domains=tuple(self.domains(s, sp.port)),
                           routes=tuple(routes), origin=s.ref)

    def catch_all_vhost(self) -> VirtualHost:
        if self.policy == "REGISTRY_ONLY":
            return VirtualHost(name="block_all", domains=("*",), origin=self.policy_origin,
                               routes=(Route(name="block_all", direct_status=502, origin=self.policy_origin),))
        return VirtualHost(name="allow_any", domains=("*",), origin=self.policy_origin,
                           routes=(Route(name="allow_any", cluster=PASSTHROUGH, origin=self.policy_origin),))

    def route_config(self, name: str, ports_services: Sequence[tuple[MeshService, ServicePort]]) -> RouteConfig:
        vhosts: list[VirtualHost] = []
        seen: set[str] = set()
        for s, sp in ports_services:
            vh = self.vhost(s, sp)
            if vh.name in seen:
                continue
            seen.add(vh.name)
            vhosts.append(vh)
        catch = self.catch_all_vhost()
        exact: dict[str, VirtualHost] = {}
        suffixes: list[tuple[str, VirtualHost]] = []
        prefixes: list[tuple[str, VirtualHost]] = []
        for vh in vhosts:
            for d in vh.domains:
                d = d.lower()
                if d.startswith("*") and d != "*":
                    suffixes.append((d[1:], vh))
                elif d.endswith("*") and d != "*":
                    prefixes.append((d[:-1], vh))
                else:
                    exact.setdefault(d, vh)
        suffixes.sort(key=lambda t: -len(t[0]))
        prefixes.sort(key=lambda t: -len(t[0]))
        return RouteConfig(name=name, vhosts=(*vhosts, catch), exact=MappingProxyType(exact),
                           suffixes=tuple(suffixes), prefixes=tuple(prefixes), catch_all=catch)

    def build_routes(self, names: Iterable[str]) -> Mapping[str, RouteConfig]:
        """The route configurations ``names`` (the RDS names of the outbound listeners), built when read."""
        found = self.cache.route_inputs.get(id(self.services))
        if found is None:
            found = self.cache.route_inputs[id(self.services)] = self._route_inputs()
        by_port, by_host = found

        def make(n: str) -> RouteConfig:
            return self.route_config(n, by_port.get(int(n), []) if n.isdigit() else [by_host[n]])

        return _LazyRoutes(sorted(n for n in names if n.isdigit() or n in by_host), make)

    def _route_inputs(self) -> tuple[dict[int, list[tuple[MeshService, ServicePort]]],
                                     dict[str, tuple[MeshService, ServicePort]]]:
        """The HTTP (and sniffed) service ports of this view by port and by ``host:port``."""
        by_port: dict[int, list[tuple[MeshService, ServicePort]]] = {}
        by_host: dict[str, tuple[MeshService, ServicePort]] = {}
        for s in self.services:
            if s.resolution is Resolution.ALIAS:
                continue
            for sp in s.ports:
                cls = self.listener_class(sp.protocol)
                if cls in (_Class.HTTP, _Class.AUTO):
                    by_port.setdefault(sp.port, []).append((s, sp))
                    by_host.setdefault(f"{s.hostname}:{sp.port}", (s, sp))
        return by_port, by_host

    # -- clusters ------------------------------------------------------------------------------
    def upstream_tls(self, s: MeshService, sp: ServicePort, subset: str, dr: DestinationRule | None,
                     ctype: str) -> tuple[str, str]:
        if dr is not None:
            mode: str | None = None
            if subset:
                sub = next((x for x in dr.subsets if x.name == subset), None)
                if sub is not None:
                    mode = sub.tls.for_port(sp.port)
            mode = mode or dr.tls.for_port(sp.port)
            if mode is not None:
                where = f"DestinationRule {dr.namespace}/{dr.name} tls.mode {mode}"
                return {"DISABLE": "plaintext", "ISTIO_MUTUAL": "istio-mtls"}.get(mode, "tls"), where
        if s.mesh_external:
            return "plaintext", f"{s.ref} is MESH_EXTERNAL: no auto mTLS"
        if not self.auto_mtls:
            return "plaintext", (f"auto mTLS is off in {self.profile.label} ({self.mesh.source}) and no "
                                 "DestinationRule sets TLS")
        ns_mode, ns_where = self.namespace_peer_mode(s.namespace)
        if ctype == "ORIGINAL_DST":
            if self.profile.orig_dst_forced_mtls:
                if ns_mode == "DISABLE":
                    return "plaintext", f"{ns_where} is DISABLE"
                return "istio-mtls", (f"{self.profile.label}: auto mTLS puts Istio mTLS on every ORIGINAL_DST cluster "
                                      "(istio/istio#21964, fixed in 1.6.6), whatever the endpoints")
            if self.profile.orig_dst_no_auto_mtls:
                return "plaintext", f"{self.profile.label}: auto mTLS is skipped for ORIGINAL_DST clusters"
            if not s.endpoints:
                return "plaintext", "auto mTLS: the service has no endpoints"
            bare = [e for e in s.endpoints if not e.sidecar]
            if bare:
                return "plaintext", (f"auto mTLS: endpoint {bare[0].address} has no "
                                     "security.istio.io/tlsMode=istio label (no sidecar)")
            if ns_mode == "DISABLE":
                return "plaintext", f"auto mTLS: {ns_where} is DISABLE"
            return "istio-mtls", "auto mTLS: every endpoint has a sidecar (tlsMode=istio)"
        if ns_mode == "DISABLE":
            return "plaintext", f"auto mTLS: {ns_where} is DISABLE"
        return "auto", ("auto mTLS: Istio mTLS to endpoints labelled security.istio.io/tlsMode=istio, "
                        "plaintext to the rest")

    def build_clusters(self) -> dict[str, Cluster]:
        """The outbound clusters (a new dict: the inbound ones are added to it). The DestinationRule of each
        service is chosen for this proxy; the clusters of the same services under the same rules are
        the same values whichever proxy asks (:class:`ViewCache`)."""
        services = [s for s in self.services if s.resolution is not Resolution.ALIAS]
        pick, proxy, labels = self.cache.pick, self.proxy, self._labels
        drs = [pick(proxy, labels, s) for s in services]
        key = (id(self.services), tuple(map(id, drs)))
        out = self.cache.clusters.get(key)
        if out is None:
            out = {}
            for s, dr in zip(services, drs, strict=True):
                for name, cluster in self.service_clusters(s, dr):
                    if name not in out:
                        out[name] = cluster
            for name, ctype in ((BLACKHOLE, "STATIC"), (PASSTHROUGH, "ORIGINAL_DST"),
                                (INBOUND_PASSTHROUGH, "ORIGINAL_DST")):
                out[name] = Cluster(name=name, type=ctype, direction="",
                                    tls="none" if name == BLACKHOLE else "plaintext")
            self.cache.clusters[key] = out
        return dict(out)

    def service_clusters(self, s: MeshService, dr: DestinationRule | None) -> list[tuple[str, Cluster]]:
        """The clusters of ``s`` under ``dr`` (a port and each subset), each name once; once per pair."""
        found = self.cache.service_clusters.get((id(s), id(dr)))
        if found is not None:
            return found[1]
        out: dict[str, Cluster] = {}
        ctype = {Resolution.CLIENT_SIDE_LB: "EDS", Resolution.DNS_LB: "STRICT_DNS",
                 Resolution.DNS_ROUND_ROBIN_LB: "LOGICAL_DNS", Resolution.PASSTHROUGH: "ORIGINAL_DST",
                 Resolution.DYNAMIC_DNS: "DYNAMIC_FORWARD_PROXY"}[s.resolution]
        if dr is not None and dr.tls.passthrough_lb:
            ctype = "ORIGINAL_DST"
        for sp in s.ports:
            if sp.protocol is Protocol.UDP:
                continue
            for subset in ("", *(x.name for x in (dr.subsets if dr else ()))):
                name = self.cluster_name(sp.port, subset, s.hostname)
                if name in out:
                    continue
                tls, why = self.upstream_tls(s, sp, subset, dr, ctype)
                target = ""
                if ctype in ("STRICT_DNS", "LOGICAL_DNS"):
                    target = f"{s.external_name or s.hostname}:{sp.port}"
                eps = s.endpoints
                if subset and dr is not None:
                    sub = next(x for x in dr.subsets if x.name == subset)
                    eps = tuple(e for e in eps if all(dict(e.labels).get(k) == v for k, v in sub.labels))
                out[name] = Cluster(name=name, type=ctype, fqdn=s.hostname, port=sp.port, subset=subset,
                                    destination_rule=f"{dr.name}.{dr.namespace}" if dr else "", tls=tls,
                                    tls_reason=why, endpoints=eps, target=target, service=s, service_port=sp)
        made = list(out.items())
        self.cache.service_clusters[(id(s), id(dr))] = ((s, dr), made)
        return made

    # -- inbound -------------------------------------------------------------------------------
    def inbound_ports(self) -> list[tuple[int, ServicePort, MeshService]]:
        """Declared (target port, service port, service) for the proxy, oldest service first, deduplicated."""
        labels = self.proxy.label_map
        pod = self.proxy.pod
        out: list[tuple[int, ServicePort, MeshService]] = []
        seen: set[int] = set()
        for s in self.o.services:
            if s.namespace != self.proxy.namespace and s.kind == "Service":
                continue
            mine = False
            ep_ports: dict[str, int] = {}
            if s.kind == "Service":
                mine = s.selector is not None and selects(s.selector, labels) if labels else False
                if not mine:
                    mine = any(e.address in self.proxy.ips for e in s.endpoints) and not s.external_name
            else:
                for e in s.endpoints:
                    if e.address in self.proxy.ips:
                        mine, ep_ports = True, dict(e.ports)
                        break
                if not mine and s.selector and s.namespace == self.proxy.namespace and selects(s.selector, labels):
                    mine = True
            if not mine:
                continue
            for sp in s.ports:
                if sp.protocol is Protocol.UDP:
                    continue
                tp = ep_ports.get(sp.name) or resolve_target_port(sp, pod)
                if tp is None or tp in seen:
                    continue
                seen.add(tp)
                out.append((tp, sp, s))
        return out

    def inbound_chains(self, cls: str, mode: str, *, cluster: str, port: int | None, name: str,
                       http_name: str | None = None, origin: str = "") -> list[FilterChain]:
        hn = http_name or name
        base = FilterChain(name=name, dst_port=port, origin=origin)
        tcp = replace(base, cluster=cluster)
        http = replace(base, name=hn, http_cluster=cluster)
        m = "istio-mtls"
        if mode == "STRICT":
            if cls == _Class.HTTP:
                return [replace(http, transport="tls", tls_context=m)]
            if cls == _Class.TCP:
                return [replace(tcp, transport="tls", tls_context=m)]
            return [replace(http, transport="tls", alpn=MTLS_HTTP_ALPNS, tls_context=m),
                    replace(tcp, transport="tls", tls_context=m)]
        if mode == "DISABLE":  # filterchain_options.go: inboundPlainText*FilterChainMatchOptions
            if cls == _Class.HTTP:
                return [replace(http, transport="raw_buffer")]
            if cls == _Class.TCP:
                return [replace(tcp, transport="raw_buffer")]
            return [replace(http, transport="raw_buffer", alpn=HTTP_ALPNS), replace(tcp, transport="raw_buffer")]
        # PERMISSIVE
        if cls == _Class.HTTP:
            return [replace(http, transport="tls", alpn=ALL_MTLS_ALPNS, tls_context=m),
                    replace(http, transport="raw_buffer")]
        if cls == _Class.TCP:
            return [replace(tcp, transport="tls", alpn=ALL_MTLS_ALPNS, tls_context=m),
                    replace(tcp, transport="tls"), replace(tcp, transport="raw_buffer")]
        return [replace(http, transport="tls", alpn=MTLS_HTTP_ALPNS, tls_context=m),
                replace(http, transport="raw_buffer", alpn=HTTP_ALPNS),
                replace(tcp, transport="tls", alpn=MTLS_TCP_ALPNS, tls_context=m),
                replace(tcp, transport="raw_buffer"), replace(tcp, transport="tls")]

    def inbound_cluster_name(self, tp: int, sp: ServicePort, s: MeshService) -> str:
        if self.profile.inbound_passthrough:
            return f"inbound|{tp}||"
        return f"inbound|{sp.port}|{sp.name}|{s.hostname}"

    def build_inbound(self, clusters: dict[str, Cluster]) -> tuple[Listener | None, dict[tuple[str, int], Listener]]:
        labels = self.proxy.label_map
        declared = self.inbound_ports()
        chains: list[FilterChain] = []
        exact: dict[tuple[str, int], Listener] = {}
        for tp, sp, s in declared:
            cls = self.listener_class(sp.protocol, inbound=True) or _Class.TCP
            mode, mwhere = peer_mode(self.o, self.root, self.proxy.namespace, labels, tp)
            cname = self.inbound_cluster_name(tp, sp, s)
            origin = (f"{s.ref} port {sp.port}" + (f" (targetPort {tp})" if tp != sp.port else "")
                      + f"; mTLS {mode} from {mwhere}")
            if self.profile.inbound_passthrough:
                clusters[cname] = Cluster(name=cname, type="ORIGINAL_DST", direction="inbound", port=tp,
                                          target=f"{self.proxy.ip}:{tp} from 127.0.0.6", tls="plaintext")
            else:
                clusters[cname] = Cluster(name=cname, type="STATIC", direction="inbound", fqdn=s.hostname,
                                          port=sp.port, target=f"127.0.0.1:{tp}", tls="plaintext")
            if self.profile.inbound_via_15001:
                fcs = self.inbound_chains(cls, mode, cluster=cname, port=None, name="", origin=origin)
                fcs = [replace(c, name=None) for c in fcs]
                default = next((c for c in fcs if c.match_all), None)
                regular = tuple(c for c in fcs if not c.match_all)
                exact[(self.proxy.ip, tp)] = Listener(
                    name=f"{self.proxy.ip}_{tp}", address=self.proxy.ip, port=tp, direction="inbound",
                    chains=regular or ((default,) if default else ()), default_chain=default if regular else None,
                    tls_inspector=any(c.transport == "tls" for c in fcs), http_inspector=any(c.alpn for c in fcs),
                    origins=(s.ref,))
            else:
                chains += self.inbound_chains(cls, mode, cluster=cname, port=tp, name=f"0.0.0.0_{tp}", origin=origin)
        if self.profile.inbound_via_15001:
            return None, exact
        mode, mwhere = peer_mode(self.o, self.root, self.proxy.namespace, labels, None)
        passthrough = self.inbound_chains(_Class.AUTO if self.profile.inbound_sniffing else _Class.TCP, mode,
                                          cluster=INBOUND_PASSTHROUGH, port=None, name=VIRTUAL_INBOUND,
                                          http_name="virtualInbound-catchall-http",
                                          origin=f"undeclared port; mTLS {mode} from {mwhere}")
        all_chains = [FilterChain(name="virtualInbound-blackhole", dst_port=INBOUND_PORT, cluster=BLACKHOLE,
                                  origin="a direct connection to 15006 would loop"), *passthrough, *chains]
        return Listener(name=VIRTUAL_INBOUND, address=WILDCARD, port=INBOUND_PORT, chains=tuple(all_chains),
                        tls_inspector=True, http_inspector=True, direction="inbound",
                        origins=tuple(dict.fromkeys(s.ref for _, _, s in declared))), exact


def build_index(objects: MeshObjects, proxy: Proxy, profile: MeshProfile, mesh: MeshConfig, *,
                cache: ViewCache | None = None) -> ProxyIndex:
    """Build the Envoy config istiod would send ``proxy`` under ``profile``, indexed for :func:`hop`.

    Pure and deterministic; cost is linear in services × ports (+ endpoints of headless services).
    ``cache``: shared with other proxies' builds over the same objects, profile and mesh config (the
    result is the same; what they share is computed once).
    """
    b = _Builder(objects, proxy, profile, mesh, cache)
    exact, wildcard, conflicts, rds = b.outbound_listeners()
    clusters = b.build_clusters()
    vin, inbound_exact = b.build_inbound(clusters)
    routes = b.build_routes(rds)
    return ProxyIndex(proxy=proxy, profile=profile, mesh=mesh, policy=b.policy, policy_origin=b.policy_origin,
                      auto_mtls=b.auto_mtls, exact=MappingProxyType(exact), wildcard=MappingProxyType(wildcard),
                      virtual_outbound=b.virtual_outbound(), virtual_inbound=vin,
                      inbound_exact=MappingProxyType(inbound_exact), routes=routes,
                      clusters=MappingProxyType(clusters), objects=objects,
                      pods_by_ip=b.pods_by_ip, conflicts=conflicts, errors=tuple(b.errors), hidden=b.hidden)


__all__ = [
    "BLACKHOLE",
    "HTTP_ALPNS",
    "INBOUND_PASSTHROUGH",
    "PASSTHROUGH",
    "VIRTUAL_INBOUND",
    "VIRTUAL_OUTBOUND",
    "Cluster",
    "FilterChain",
    "Listener",
    "ProxyIndex",
    "Route",
    "RouteConfig",
    "ViewCache",
    "VirtualHost",
    "build_index",
    "destination_rule_for",
    "envoy_endpoints",
    "exported",
    "host_matches",
    "peer_mode",
    "resolve_target_port",
    "sidecar_for",
]
