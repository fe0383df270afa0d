"""Typed mesh objects: what istiod reads (services, routing and security config) and what netsim asks.

Owns: the immutable values every other ``netsim.mesh`` module works on: protocols, services with
their ports and endpoints, VirtualServices, DestinationRules, PeerAuthentications, Sidecars, the mesh
config, pods, the deciding proxy and the connection, and the :class:`MeshObjects` bundle.

Never does: read files or YAML (``netsim.mesh.objects`` converts parsed objects), build listeners
(``netsim.mesh.build``) or decide a hop (``netsim.mesh.hop``).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from netsim.errors import NetsimError
from netsim.istio_service import EXPORT_TO_ANNOTATION, Resolution
from netsim.k8s import K8sObject

Labels = tuple[tuple[str, str], ...]

UNSPECIFIED = "0.0.0.0"
ROOT_NAMESPACE = "istio-system"
TLS_MODE_LABEL = "security.istio.io/tlsMode"


class Protocol(enum.Enum):
    """Istio's protocol instances (``pkg/config/protocol``)."""

    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    HTTP_PROXY = "HTTP_PROXY"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    TCP = "TCP"
    HTTPS = "HTTPS"
    TLS = "TLS"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"
    UDP = "UDP"
    UNSUPPORTED = "UnsupportedProtocol"

    @property
    def is_http(self) -> bool:
        return self in _HTTP_LIKE

    @property
    def is_tcp(self) -> bool:
        return self in _TCP_LIKE

    @property
    def is_auto(self) -> bool:
        return self is Protocol.UNSUPPORTED


_HTTP_LIKE = frozenset({Protocol.HTTP, Protocol.HTTP2, Protocol.HTTP_PROXY, Protocol.GRPC, Protocol.GRPC_WEB})
_TCP_LIKE = frozenset({Protocol.TCP, Protocol.HTTPS, Protocol.TLS, Protocol.MONGO, Protocol.REDIS, Protocol.MYSQL})


class Direction(enum.Enum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class Send(enum.Enum):
    """What the client sends first."""

    TCP = "tcp"
    HTTP = "http"
    TLS = "tls"
    MTLS = "mtls"


class Verdict(enum.Enum):
    CAPTURED = "captured"
    PASSTHROUGH = "passthrough"
    BLACKHOLE = "blackhole"
    DIRECT_502 = "direct-502"
    RESET = "reset-no-filter-chain"
    TLS_ERROR = "tls-error"
    PROTOCOL_ERROR = "protocol-error"
    BYPASS = "bypass"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    target_port: int | str | None = None  # Kubernetes targetPort (number or container port name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One workload behind a service: a pod, a WorkloadEntry, an SE endpoint or an EndpointSlice address."""

    address: str
    labels: Labels = ()
    workload: str = ""  # "Pod ns/name", "WorkloadEntry ns/name", "EndpointSlice ns/name"
    ports: tuple[tuple[str, int], ...] = ()  # port name -> endpoint port (SE endpoints, WorkloadEntries)

    @property
    def tls_mode(self) -> str:
        return dict(self.labels).get(TLS_MODE_LABEL, "disabled")

    @property
    def sidecar(self) -> bool:
        return self.tls_mode == "istio"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshService:
    """One internal service: a Kubernetes Service, or one (host, address) of a ServiceEntry."""

    hostname: str
    namespace: str
    name: str  # the object's name
    kind: str  # "Service" | "ServiceEntry"
    resolution: Resolution
    address: str = UNSPECIFIED  # ClusterIP, SE address (IP or CIDR), or 0.0.0.0
    ports: tuple[ServicePort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    creation: float = 0.0
    export_to: tuple[str, ...] = ()
    mesh_external: bool = False
    external_name: str = ""  # ExternalName target
    selector: Labels | None = None  # Service selector / SE workloadSelector
    headless: bool = False  # Kubernetes clusterIP: None
    where: str = ""
    auto_ipv4: str | None = None  # auto-allocated VIP (ServiceEntries without addresses)

    @property
    def registry(self) -> str:
        return "Kubernetes" if self.kind == "Service" else "External"

    @property
    def ref(self) -> str:
        """``Service app/app-ext`` or ``ServiceEntry default/se (host x)``."""
        base = f"{self.kind} {self.namespace}/{self.name}"
        return base if self.kind == "Service" else f"{base} (host {self.hostname})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    host: str
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRoute:
    name: str = ""
    # (kind, value): kind is "prefix", "exact" or "regex"; () matches everything
    matches: tuple[tuple[str, str], ...] = ()
    ports: tuple[int, ...] = ()  # match[].port
    destination: Destination | None = None
    direct_status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class L4Route:
    """A VirtualService tcp (or tls, with ``sni``) route: its first destination."""

    ports: tuple[int, ...] = ()
    sni: tuple[str, ...] = ()
    destination: Destination


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualService:
    name: str
    namespace: str
    hosts: tuple[str, ...]  # expanded against the VS namespace
    gateways: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[L4Route, ...] = ()
    tls: tuple[L4Route, ...] = ()
    where: str = ""

    @property
    def applies_to_mesh(self) -> bool:
        return not self.gateways or "mesh" in self.gateways


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficTLS:
    """A DestinationRule traffic policy's TLS: the top-level mode and port-level overrides."""

    mode: str | None = None  # DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL
    ports: tuple[tuple[int, str], ...] = ()
    passthrough_lb: bool = False

    def for_port(self, port: int) -> str | None:
        for p, mode in self.ports:
            if p == port:
                return mode
        return self.mode


@dataclass(frozen=True, slots=True, kw_only=True)
class Subset:
    name: str
    labels: Labels = ()
    tls: TrafficTLS = field(default_factory=TrafficTLS)


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationRule:
    name: str
    namespace: str
    host: str
    export_to: tuple[str, ...] = ()
    tls: TrafficTLS = field(default_factory=TrafficTLS)
    subsets: tuple[Subset, ...] = ()
    selector: Labels | None = None
    where: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAuthentication:
    """PeerAuthentication (1.5+), or a v1alpha1 MeshPolicy/Policy read as one."""

    name: str
    namespace: str
    selector: Labels | None = None
    mode: str = "UNSET"  # STRICT, PERMISSIVE, DISABLE, UNSET
    ports: tuple[tuple[int, str], ...] = ()
    kind: str = "PeerAuthentication"
    where: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressListener:
    port: int | None = None
    protocol: str = ""
    hosts: tuple[str, ...] = ("*/*",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sidecar:
    name: str
    namespace: str
    selector: Labels | None = None
    egress: tuple[EgressListener, ...] = ()
    outbound_policy: str | None = None
    where: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPort:
    name: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PodInfo:
    """A Pod, or the pod template of a workload, as the mesh needs it."""

    name: str
    namespace: str
    kind: str  # Pod, Deployment, ...
    ips: tuple[str, ...] = ()
    labels: Labels = ()
    annotations: Labels = ()
    owner_annotations: Labels = ()
    container_ports: tuple[ContainerPort, ...] = ()
    sidecar: bool = True
    sidecar_why: str = ""
    source: str = ""  # file it came from
    where: str = ""
    body: Mapping[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def annotation_map(self) -> dict[str, str]:
        return dict(self.annotations)

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshConfig:
    """The mesh config fields that change a hop."""

    outbound_policy: str = "ALLOW_ANY"
    enable_auto_mtls: bool | None = None  # None: the release's default
    root_namespace: str = ROOT_NAMESPACE
    proxy_metadata: Labels = ()
    source: str = "default mesh config"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshObjects:
    """Everything read from ``--config``: services in push-context order (oldest first), the rest as read."""

    services: tuple[MeshService, ...] = ()
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    sidecars: tuple[Sidecar, ...] = ()
    pods: tuple[PodInfo, ...] = ()
    namespaces: tuple[tuple[str, Labels], ...] = ()
    errors: tuple[NetsimError, ...] = ()
    # the ServiceEntry/WorkloadEntry objects as read, for netsim.dns's auto-allocation
    alloc_inputs: tuple[K8sObject, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    """The deciding sidecar."""

    ips: tuple[str, ...]
    namespace: str
    labels: Labels = ()
    dns_capture: bool = False
    dns_auto_allocate: bool = False
    pod: PodInfo | None = None
    metadata_origin: str = ""

    @property
    def ip(self) -> str:
        return self.ips[0]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    direction: Direction
    dst_ip: str
    dst_port: int
    send: Send = Send.TCP
    host: str | None = None
    path: str = "/"
    sni: str | None = None

    @property
    def is_http(self) -> bool:
        return self.send is Send.HTTP

    @property
    def alpn(self) -> str:
        """The ALPN the client offers (TLS) or the HTTP inspector sets (plaintext HTTP)."""
        if self.send is Send.MTLS:
            return "istio-http/1.1" if (self.host or self.path != "/") else "istio"
        if self.send is Send.HTTP:
            return "http/1.1"
        return ""


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (not a CIDR, not a hostname)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def selects(selector: Labels | None, labels: Mapping[str, str]) -> bool:
    """A label selector (all pairs equal); an empty selector selects nothing."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector or ())


__all__ = [
    "EXPORT_TO_ANNOTATION",
    "ROOT_NAMESPACE",
    "TLS_MODE_LABEL",
    "UNSPECIFIED",
    "Connection",
    "ContainerPort",
    "Destination",
    "DestinationRule",
    "Direction",
    "EgressListener",
    "Endpoint",
    "HTTPRoute",
    "L4Route",
    "Labels",
    "MeshConfig",
    "MeshObjects",
    "MeshService",
    "PeerAuthentication",
    "PodInfo",
    "Protocol",
    "Proxy",
    "Resolution",
    "Send",
    "ServicePort",
    "Sidecar",
    "Subset",
    "TrafficTLS",
    "Verdict",
    "VirtualService",
    "is_ip",
    "selects",
]
