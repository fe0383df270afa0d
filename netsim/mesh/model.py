"""Typed mesh objects: what istiod reads (services, routing and security config) and what netsim asks.

Owns: the immutable values every other ``netsim.mesh`` module works on: VirtualServices,
DestinationRules, PeerAuthentications, Sidecars, the mesh config, the deciding proxy and the
connection, and the :class:`MeshObjects` bundle. Services, their ports and endpoints, protocols and
pods are the service registry's (``netsim.registry.model``), re-exported here under the names the
mesh has always used (``MeshService`` is ``netsim.registry.Service``).

Never does: read files or YAML (``netsim.mesh.objects`` converts parsed objects), build listeners
(``netsim.mesh.build``) or decide a hop (``netsim.mesh.hop``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from netsim.errors import NetsimError
from netsim.istio_service import EXPORT_TO_ANNOTATION, Resolution
from netsim.k8s import Origin
from netsim.registry.model import (
    TLS_MODE_LABEL,
    UNSPECIFIED,
    ContainerPort,
    Endpoint,
    Labels,
    PodInfo,
    Protocol,
    ServicePort,
    is_ip,
    selects,
)
from netsim.registry.model import Service as MeshService

ROOT_NAMESPACE = "istio-system"


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
    origin: Origin | None = field(default=None, compare=False)  # where it was read, as data

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
    origin: Origin | None = field(default=None, compare=False)  # where it was read, as data


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
    origin: Origin | None = field(default=None, compare=False)  # where it was read, as data


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
    origin: Origin | None = field(default=None, compare=False)  # where it was read, as data


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
    """Everything read from ``--config``: the registry's services in push-context order (oldest first)
    and pods, the rest as read."""

    services: tuple[MeshService, ...] = ()
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    sidecars: tuple[Sidecar, ...] = ()
    pods: tuple[PodInfo, ...] = ()
    namespaces: tuple[tuple[str, Labels], ...] = ()
    errors: tuple[NetsimError, ...] = ()
    not_objects: tuple[str, ...] = ()  # documents skipped as no Kubernetes object at all (a Helm values file)


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
