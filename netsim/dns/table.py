"""The NameTable istiod sends a proxy, and how it is built (spec/istio-dns.md sections 3, 3.1–3.3).

Owns: the istiod-side model (:class:`Service`, :class:`Endpoint`, :class:`Proxy`,
:class:`IstiodFlags`), per-proxy address selection (:func:`service_addresses`), ``BuildNameTable``
(:func:`build_name_table`), the conversion of Kubernetes Services / Endpoints / EndpointSlices / Pods
and Istio ServiceEntries / WorkloadEntries into that model with auto-allocation
(:func:`build_from_objects`), and reading istiod's ``/debug/ndsz`` dump (:func:`load_ndsz`).

Never does: answer queries or compute lookup names (``netsim.dns.resolve``), or any IO except
reading the files it is given in :func:`load_config` and :func:`load_ndsz`.
"""

from __future__ import annotations

import enum
import ipaddress
import json
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
from netsim.istio_service import EXPORT_TO_ANNOTATION, Resolution, annotation_export_to, exported, se_resolution
from netsim.k8s import K8sObject, YAMLSyntaxError, load_yaml, read_objects, read_text

KUBERNETES = "Kubernetes"
EXTERNAL = "External"
KUBE_CLUSTER = "Kubernetes"  # istiod's default cluster ID
_CLUSTERSET = ".svc.clusterset.local"
_ISTIO_GROUP = "networking.istio.io"
_SE_VERSIONS = ("v1", "v1beta1", "v1alpha3")



class Health(enum.Enum):
    """Endpoint health as istiod sees it; only Healthy ones count unless publishNotReadyAddresses."""

    HEALTHY = "Healthy"
    UNHEALTHY = "UnHealthy"
    TERMINATING = "Terminating"


class IPMode(enum.Enum):
    """A proxy's IP family mode, from its own pod IPs."""

    IPV4 = "IPv4"
    IPV6 = "IPv6"
    DUAL = "Dual"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a service: a pod or workload's IPs (first one is its key)."""

    ips: tuple[str, ...]
    hostname: str = ""
    subdomain: str = ""
    network: str = ""
    cluster: str = ""
    health: Health = Health.HEALTHY
    port: int | None = None  # None: the endpoint serves every port


@dataclass(frozen=True, slots=True)
class Service:
    """A service as istiod's push context holds it (one per ServiceEntry host and address)."""

    hostname: str
    namespace: str
    name: str
    registry: str = KUBERNETES
    resolution: Resolution = Resolution.CLIENT_SIDE_LB
    default_address: str = UNSPECIFIED
    ports: tuple[int, ...] = ()
    cluster_vips: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    auto_ipv4: str | None = None
    auto_ipv6: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    publish_not_ready: bool = False
    source: str = ""
    allocator: str | None = None


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

def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _endpoint_ok(ep: Endpoint, svc: Service, flags: IstiodFlags) -> bool:
    if not ep.ips or not all(_is_ip(ip) for ip in ep.ips):
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
            if _is_ip(a):
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
                                           sources=(svc.source,) if svc.source else (), allocator=auto)
        elif cur.registry != KUBERNETES:
            if svc.registry == KUBERNETES:
                table[svc.hostname] = NameInfo(ips=tuple(ips), registry=KUBERNETES, shortname=svc.name,
                                               namespace=svc.namespace,
                                               sources=(*cur.sources, svc.source) if svc.source else cur.sources,
                                               allocator=auto)
            elif flags.merge_same_host:
                table[svc.hostname] = replace(cur, ips=cur.ips + tuple(ips),
                                              sources=(*cur.sources, svc.source) if svc.source else cur.sources,
                                              allocator=cur.allocator or auto)
    return NameTable(table)


def _headless(svc: Service, proxy: Proxy, flags: IstiodFlags, table: dict[str, NameInfo]) -> list[str]:
    ips: list[str] = []
    seen: set[str] = set()
    local: dict[str, list[str]] = {}
    remote: dict[str, list[str]] = {}
    shortnames: dict[str, str] = {}
    parent = svc.hostname.split(".", 1)[1] if "." in svc.hostname else ""
    ports: list[int | None] = [*(svc.ports if flags.all_ports else svc.ports[:1]), None]
    for port in ports:  # every port's endpoints (since 2026-07-30), deduplicated by first address
        for ep in svc.endpoints:
            if ep.port != port or not _endpoint_ok(ep, svc, flags) or ep.ips[0] in seen:
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
    src = (svc.source,) if svc.source else ()
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
        out[svc.hostname] = Unresolved(svc.hostname, svc.source, why)
    return list(out.values())


def _str_list(obj: K8sObject, data: Mapping[str, Any], key: str, path: str) -> list[str]:
    val = data.get(key)
    if val is None:
        return []
    if not isinstance(val, list) or not all(isinstance(v, str | int | float) for v in val):
        raise obj.error(f"{path}.{key}" if path else key, "must be a list of strings")
    return [str(v) for v in val]


def _mapping(obj: K8sObject, data: Any, path: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise obj.error(path, "must be a mapping")
    return data


def _ports(obj: K8sObject, spec: Mapping[str, Any], name_key: str) -> tuple[int, ...]:
    raw = spec.get("ports") or []
    if not isinstance(raw, list):
        raise obj.error("spec.ports", "must be a list")
    out = []
    for i, p in enumerate(raw):
        if not isinstance(p, Mapping):
            raise obj.error(f"spec.ports[{i}]", "must be a mapping")
        num = p.get(name_key)
        if not isinstance(num, int) or not 0 < num < 65536:
            raise obj.error(f"spec.ports[{i}].{name_key}", f"must be a port number 1-65535, got {num!r}")
        out.append(num)
    return tuple(out)


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(str(k)) == str(v) for k, v in selector.items())


class _Builder:
    def __init__(self, objects: Sequence[K8sObject], opts: BuildOptions) -> None:
        self.opts = opts
        self.errors: list[NetsimError] = []
        self.hidden: list[Unresolved] = []
        self.by_kind: dict[str, list[K8sObject]] = {}
        for o in objects:
            self.by_kind.setdefault(o.kind, []).append(o)

    def kind(self, kind: str) -> list[K8sObject]:
        return self.by_kind.get(kind, [])

    def guarded(self, obj: K8sObject, fn: Any) -> list[Service]:
        try:
            result: list[Service] = fn(obj)
        except NetsimError as e:
            self.errors.append(e if e.where else e.at(obj.where()))
            return []
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
            # a field of an unexpected shape somewhere in this object or the ones it reads
            # (Endpoints, EndpointSlices, Pods, WorkloadEntries): reported, never a traceback
            self.errors.append(ConfigError(f"unreadable object: {type(e).__name__}: {e}", where=obj.where()))
            return []
        return result

    # -- Kubernetes ------------------------------------------------------------------------
    def pod_endpoints(self, svc_obj: K8sObject, selector: Mapping[str, Any]) -> list[Endpoint]:
        out = []
        for pod in self.kind("Pod"):
            if pod.namespace != svc_obj.namespace or not _selects(selector, pod.labels):
                continue
            spec = pod.body.get("spec") or {}
            status = pod.body.get("status") or {}
            raw_ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, Mapping)] or \
                [status.get("podIP")]
            ips = [str(i) for i in raw_ips if i]
            ready = any(c.get("type") == "Ready" and str(c.get("status")) == "True"
                        for c in status.get("conditions") or [] if isinstance(c, Mapping)) \
                or not status.get("conditions")
            out.append(Endpoint(ips=tuple(ips), hostname=str(spec.get("hostname") or pod.name),
                                subdomain=str(spec.get("subdomain") or ""),
                                health=Health.HEALTHY if ready else Health.UNHEALTHY))
        return out

    def listed_endpoints(self, svc_obj: K8sObject) -> list[Endpoint] | None:
        found = False
        out: list[Endpoint] = []
        for eps in self.kind("Endpoints"):
            if eps.namespace != svc_obj.namespace or eps.name != svc_obj.name:
                continue
            found = True
            for subset in eps.body.get("subsets") or []:
                for key, health in (("addresses", Health.HEALTHY), ("notReadyAddresses", Health.UNHEALTHY)):
                    for a in subset.get(key) or []:
                        hn = str(a.get("hostname") or "")
                        out.append(Endpoint(ips=(str(a.get("ip")),), hostname=hn,
                                            subdomain=svc_obj.name if hn else "", health=health))
        for sl in self.kind("EndpointSlice"):
            owner = (sl.body.get("metadata") or {}).get("labels", {}).get("kubernetes.io/service-name")
            if sl.namespace != svc_obj.namespace or owner != svc_obj.name:
                continue
            found = True
            for e in sl.body.get("endpoints") or []:
                cond = e.get("conditions") or {}
                if cond.get("ready", True) is not False:
                    health = Health.HEALTHY
                else:
                    health = Health.TERMINATING if cond.get("terminating") else Health.UNHEALTHY
                hn = str(e.get("hostname") or "")
                out.append(Endpoint(ips=tuple(str(a) for a in e.get("addresses") or []), hostname=hn,
                                    subdomain=svc_obj.name if hn else "", health=health))
        return out if found else None

    def k8s_service(self, obj: K8sObject) -> list[Service]:
        spec = _mapping(obj, obj.body.get("spec"), "spec")
        ann = _mapping(obj, (obj.body.get("metadata") or {}).get("annotations"), "metadata.annotations")
        export = annotation_export_to(ann)
        hostname = f"{obj.name}.{obj.namespace}.svc.{self.opts.cluster_domain}"
        if not exported(export, obj.namespace, self.opts.namespace):
            self.hidden.append(Unresolved(hostname, obj.where(), f"not exported to namespace {self.opts.namespace} "
                                          f"({EXPORT_TO_ANNOTATION}: {','.join(export)})"))
            return []
        ports = _ports(obj, spec, "port")
        base = Service(hostname=hostname, namespace=obj.namespace, name=obj.name, registry=KUBERNETES,
                       ports=ports, source=obj.where())
        stype = spec.get("type", "ClusterIP")
        if stype == "ExternalName":
            return [replace(base, resolution=Resolution.DNS_LB)]
        cip = spec.get("clusterIP")
        if cip == "None":
            eps = self.listed_endpoints(obj)
            if eps is None:
                eps = self.pod_endpoints(obj, _mapping(obj, spec.get("selector"), "spec.selector"))
            return [replace(base, resolution=Resolution.PASSTHROUGH, endpoints=tuple(eps),
                            publish_not_ready=bool(spec.get("publishNotReadyAddresses")))]
        cips = _str_list(obj, spec, "clusterIPs", "spec") or ([str(cip)] if cip else [])
        if not cips:
            raise obj.error("spec.clusterIP", "missing (set an IP, or None for a headless Service)")
        for i, ip in enumerate(cips):
            if not _is_ip(ip):
                raise obj.error(f"spec.clusterIPs[{i}]" if spec.get("clusterIPs") else "spec.clusterIP",
                                f"not an IP address: {ip!r}")
        return [replace(base, resolution=Resolution.CLIENT_SIDE_LB, default_address=cips[0],
                        cluster_vips={KUBE_CLUSTER: tuple(cips)})]

    # -- Istio -----------------------------------------------------------------------------
    def istio_version_ok(self, obj: K8sObject) -> None:
        if obj.group != _ISTIO_GROUP or obj.api_version.split("/")[-1] not in _SE_VERSIONS:
            raise obj.error("apiVersion", f"{obj.api_version!r} is not {_ISTIO_GROUP}/"
                            f"{'|'.join(_SE_VERSIONS)}")

    def workload_endpoints(self, obj: K8sObject, selector: Mapping[str, Any]) -> list[Endpoint]:
        out = []
        for we in self.kind("WorkloadEntry"):
            if we.namespace != obj.namespace:
                continue
            spec = we.body.get("spec") or {}
            labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()} or dict(we.labels)
            if _selects(selector, labels) and spec.get("address"):
                out.append(Endpoint(ips=(str(spec["address"]),), network=str(spec.get("network") or "")))
        return out

    def service_entry(self, obj: K8sObject) -> list[Service]:
        self.istio_version_ok(obj)
        spec = _mapping(obj, obj.body.get("spec"), "spec")
        hosts = _str_list(obj, spec, "hosts", "spec")
        if not hosts:
            raise obj.error("spec.hosts", "a ServiceEntry needs at least one host")
        addresses = _str_list(obj, spec, "addresses", "spec")
        export = _str_list(obj, spec, "exportTo", "spec")
        if not exported(export, obj.namespace, self.opts.namespace):
            for h in hosts:
                self.hidden.append(Unresolved(h, obj.where(), f"not exported to namespace {self.opts.namespace} "
                                              f"(spec.exportTo: {', '.join(export)})"))
            return []
        resolution = se_resolution(obj, spec)
        ports = _ports(obj, spec, "number")
        eps: list[Endpoint] = []
        for i, e in enumerate(spec.get("endpoints") or []):
            if not isinstance(e, Mapping) or not e.get("address"):
                raise obj.error(f"spec.endpoints[{i}].address", "missing")
            eps.append(Endpoint(ips=(str(e["address"]),), network=str(e.get("network") or "")))
        sel = spec.get("workloadSelector")
        if sel is not None:
            labels = _mapping(obj, _mapping(obj, sel, "spec.workloadSelector").get("labels"),
                              "spec.workloadSelector.labels")
            eps.extend(self.workload_endpoints(obj, labels))
        out = []
        for h in hosts:
            for a in addresses or [UNSPECIFIED]:
                out.append(Service(hostname=h, namespace=obj.namespace,
                                   name=h, registry=EXTERNAL, resolution=resolution, default_address=a,
                                   ports=ports, endpoints=tuple(eps), source=obj.where()))
        return out


def _se_state(obj: K8sObject, creation: float) -> ServiceEntryState:
    spec = obj.body.get("spec") or {}
    status = obj.body.get("status") or {}
    st = []
    for a in status.get("addresses") or []:
        if isinstance(a, Mapping) and a.get("value"):
            st.append(StatusAddress(str(a.get("host") or ""), str(a["value"])))
    return ServiceEntryState(namespace=obj.namespace, name=obj.name, hosts=tuple(spec.get("hosts") or ()),
                             addresses=tuple(str(a) for a in spec.get("addresses") or ()),
                             resolution=str(spec.get("resolution") or "NONE"), labels=dict(obj.labels),
                             creation=creation, status_addresses=tuple(st))


def build_from_objects(objects: Sequence[K8sObject], opts: BuildOptions = BuildOptions()) -> BuildResult:
    """The NameTable istiod would send a sidecar in ``opts.namespace``, from Kubernetes/Istio objects.

    Reads Service (+ Endpoints, EndpointSlice, Pod for headless ones), ServiceEntry
    (networking.istio.io v1, v1beta1, v1alpha3) and WorkloadEntry. A bad object is reported in
    ``errors`` (located at its file, document, kind/name and field) and skipped; the rest load.
    Auto-allocation uses ``opts.generation`` (legacy generations run over every ServiceEntry
    service; ``v2`` keeps existing ``status.addresses`` and allocates the rest as the controller
    would on a leader start).
    """
    b = _Builder(objects, opts)
    version = opts.istio_version
    gen = opts.generation
    flags = opts.flags or istiod_flags(profile_for_version(version, gen))
    proxy = opts.proxy or Proxy(namespace=opts.namespace, cluster=KUBE_CLUSTER)

    items: list[tuple[float, str, K8sObject, list[Service]]] = []
    for obj in objects:
        if obj.kind == "Service" and obj.api_version == "v1":
            conv = b.k8s_service
        elif obj.kind == "ServiceEntry":
            conv = b.service_entry
        elif obj.kind == "WorkloadEntry":
            try:
                b.istio_version_ok(obj)
            except NetsimError as e:
                b.errors.append(e)
            continue
        else:
            continue
        try:
            ts = obj.created()
        except NetsimError as e:
            b.errors.append(e)
            continue
        svcs = b.guarded(obj, conv)
        if svcs:
            items.append((ts, obj.name, obj, svcs))
    items.sort(key=lambda t: (t[0], t[1]))  # push-context order: creation time, then name

    # auto-allocation
    se_items = [(ts, obj, svcs) for ts, _n, obj, svcs in items if obj.kind == "ServiceEntry"]
    auto: dict[int, Allocation] = {}
    if gen is Generation.V2:
        states = [_se_state(obj, ts) for ts, obj, _ in sorted(se_items, key=lambda t: (t[0], t[1].namespace,
                                                                                          t[1].name))]
        done = {s.key: s for s in allocate_v2_fresh(states)}
        for _ts, obj, svcs in se_items:
            per_host = consume_status(done[f"{obj.namespace}/{obj.name}"], enabled=flags.ip_autoallocate)
            for s in svcs:
                if s.default_address == UNSPECIFIED and s.name in per_host:
                    auto[id(s)] = per_host[s.name]
    else:
        flat = [(s, AllocService(hostname=s.hostname, namespace=s.namespace, resolution=s.resolution.se_name,
                                 address=s.default_address, creation=ts, se_name=obj.name))
                for ts, obj, svcs in se_items for s in svcs]
        if gen.is_sequential:
            order = sequential_order([a for _, a in flat], by_hostname=sequential_by_hostname(version))
            index = {id(a): s for s, a in flat}
            ordered = [(index[id(a)], a) for a in order]
        else:
            ordered = flat
        for (s, _a), alloc in zip(ordered, allocate([a for _, a in ordered], gen), strict=True):
            auto[id(s)] = alloc

    services: list[Service] = []
    for _ts, _n, _obj, svcs in items:
        for s in svcs:
            a = auto.get(id(s))
            if a is not None and (a.ipv4 or a.ipv6):
                s = replace(s, auto_ipv4=a.ipv4, auto_ipv6=a.ipv6, allocator=gen.value)
            services.append(s)
    table = build_name_table(services, proxy, flags)
    unresolved = [*explain_unresolved(services, table, proxy, flags),
                  *(u for u in b.hidden if u.hostname not in table.entries)]
    return BuildResult(table=table, services=tuple(services), errors=tuple(b.errors), generation=gen,
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
    valid YAML, end up in ``errors`` while the rest load.
    """
    loaded = read_objects(paths, default_namespace=namespace, keep_going=True)  # a broken document: reported
    gen = generation or (generation_for_version(istio_version) if istio_version else Generation.V2)
    dom = domain or f"{namespace}.svc.cluster.local"
    res = build_from_objects(loaded.objects, BuildOptions(namespace=namespace,
                                                          cluster_domain=cluster_domain_of(dom, namespace),
                                                          generation=gen, istio_version=istio_version,
                                                          proxy=proxy))
    return replace(res, errors=loaded.errors + res.errors)


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
        data = json.loads(text)
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
    "build_from_objects",
    "build_name_table",
    "cluster_domain_of",
    "consumes_auto_vips",
    "explain_unresolved",
    "istiod_flags",
    "load_config",
    "load_ndsz",
    "parse_ndsz",
    "service_addresses",
]
