"""The typed service registry: what istiod's push context holds, read once from Kubernetes/Istio objects.

Owns: the immutable values both views work on: :class:`Protocol` (``pkg/config/protocol``),
:class:`ServicePort`, :class:`Endpoint` (a pod, an EndpointSlice/Endpoints address, a ServiceEntry
endpoint or a WorkloadEntry, with its health), :class:`Service` (a Kubernetes Service, or one
(host, address) of a ServiceEntry, as istiod's ``model.Service``), :class:`PodInfo` and the
:class:`Registry` bundle with the errors of the objects that were skipped.

Invariants: every value is frozen; IP text in ``Service.address``, ``cluster_vips`` and
``Endpoint.ips`` has been checked to parse (the converter refuses the object otherwise), except a
ServiceEntry endpoint's ``address``, which may be a DNS name; ``Registry.services`` is in
push-context order (:func:`push_order`).

Never does: decide what a proxy sees (``netsim.registry.visibility``), allocate VIPs
(``netsim.dns.allocate``), or build a name table or listeners (the views in ``netsim.dns.table`` and
``netsim.mesh.build``).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from netsim.errors import NetsimError
from netsim.istio_service import Resolution
from netsim.k8s import Origin

Labels = tuple[tuple[str, str], ...]

UNSPECIFIED = "0.0.0.0"  # istiod's "no address" (a headless Service, a ServiceEntry without addresses)
TLS_MODE_LABEL = "security.istio.io/tlsMode"
KUBERNETES = "Kubernetes"  # istiod's provider.Kubernetes (NameInfo.registry)
EXTERNAL = "External"  # provider.External: ServiceEntries
SERVICE = "Service"
SERVICE_ENTRY = "ServiceEntry"


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


class Health(enum.Enum):
    """Endpoint health as istiod sees it (``model.HealthStatus``)."""

    HEALTHY = "Healthy"
    UNHEALTHY = "UnHealthy"
    TERMINATING = "Terminating"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    name: str = ""
    port: int
    protocol: Protocol = Protocol.UNSUPPORTED
    target_port: int | str | None = None  # Kubernetes targetPort (number or container port name), SE targetPort


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One workload instance behind a service; ``ips[0]`` is its key (``address``)."""

    ips: tuple[str, ...]
    labels: Labels = ()
    workload: str = ""  # "Pod ns/name", "WorkloadEntry ns/name", "EndpointSlice ns/name", ...
    ports: tuple[tuple[str, int], ...] = ()  # port name -> endpoint port (SE endpoints, WorkloadEntries)
    hostname: str = ""  # per-pod DNS name (pod spec.hostname, or the Endpoints/EndpointSlice hostname)
    subdomain: str = ""
    network: str = ""
    cluster: str = ""
    health: Health = Health.HEALTHY
    port: int | None = None  # None: the endpoint serves every port of the service

    @property
    def address(self) -> str:
        return self.ips[0] if self.ips else ""

    @property
    def tls_mode(self) -> str:
        return dict(self.labels).get(TLS_MODE_LABEL, "disabled")

    @property
    def sidecar(self) -> bool:
        return self.tls_mode == "istio"

    @property
    def healthy(self) -> bool:
        return self.health is Health.HEALTHY


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """One service of the registry: a Kubernetes Service, or one (host, address) of a ServiceEntry."""

    hostname: str
    namespace: str
    name: str  # the object's name
    kind: str = SERVICE  # SERVICE | SERVICE_ENTRY
    resolution: Resolution = Resolution.CLIENT_SIDE_LB
    address: str = UNSPECIFIED  # ClusterIP, SE address (IP or CIDR), or UNSPECIFIED
    cluster_vips: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # cluster ID -> spec.clusterIPs
    ports: tuple[ServicePort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    creation: float = 0.0
    export_to: tuple[str, ...] = ()
    mesh_external: bool = False
    external_name: str = ""  # ExternalName target
    selector: Labels | None = None  # Service selector / SE workloadSelector
    headless: bool = False  # Kubernetes clusterIP: None
    publish_not_ready: bool = False
    object_labels: Labels = ()  # the object's metadata.labels (auto-allocation opt-out)
    status_addresses: tuple[tuple[str, str], ...] = ()  # SE status.addresses (host, value) as read
    where: str = ""
    origin: Origin | None = field(default=None, compare=False)  # where it was read, as data (None: not from a file)
    auto_ipv4: str | None = None  # auto-allocated VIPs (ServiceEntries without addresses), set by a view
    auto_ipv6: str | None = None
    allocator: str | None = None  # the generation that allocated them
    seq: int = 0  # position in the order read (object order, then host and address order inside one)

    @property
    def registry(self) -> str:
        return KUBERNETES if self.kind == SERVICE else EXTERNAL

    @property
    def default_address(self) -> str:
        return self.address

    @property
    def attr_name(self) -> str:
        """istiod's ``Attributes.Name``: the Service's name, a ServiceEntry's host."""
        return self.name if self.kind == SERVICE else self.hostname

    @property
    def ref(self) -> str:
        """``Service app/app-ext`` or ``ServiceEntry default/se (host x)``."""
        base = f"{self.kind} {self.namespace}/{self.name}"
        return base if self.kind == SERVICE else f"{base} (host {self.hostname})"

    @property
    def port_numbers(self) -> tuple[int, ...]:
        return tuple(p.port for p in self.ports)


def push_order(s: Service) -> tuple[int, str, str]:
    """istiod's ``SortServicesByCreationTime``: creation second, then ``Attributes.Name``, then namespace."""
    return (int(s.creation), s.attr_name, s.namespace)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPort:
    name: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PodInfo:
    """A Pod, or the pod template of a workload, as the registry and the mesh need it."""

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
    ambient: bool = False  # enrolled in ambient: ztunnel captures its traffic (then sidecar is False)
    ambient_why: str = ""  # why it is (or is not) enrolled
    containers: tuple[str, ...] = ()  # the containers' names (an istio-proxy one is an injected sidecar)
    hostname: str = ""  # spec.hostname
    subdomain: str = ""  # spec.subdomain
    ready: bool = True  # status condition Ready (True when the pod has no conditions)
    source: str = ""  # file it came from
    where: str = ""
    origin: Origin | None = field(default=None, compare=False)  # where it was read, as data (None: not from a file)
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
class Registry:
    """Every service (push-context order), pod and namespace read, and the objects skipped (errors)."""

    services: tuple[Service, ...] = ()
    pods: tuple[PodInfo, ...] = ()
    namespaces: tuple[tuple[str, Labels], ...] = ()
    errors: tuple[NetsimError, ...] = ()


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
    "EXTERNAL",
    "KUBERNETES",
    "SERVICE",
    "SERVICE_ENTRY",
    "TLS_MODE_LABEL",
    "UNSPECIFIED",
    "ContainerPort",
    "Endpoint",
    "Health",
    "Labels",
    "PodInfo",
    "Protocol",
    "Registry",
    "Service",
    "ServicePort",
    "is_ip",
    "push_order",
    "selects",
]
