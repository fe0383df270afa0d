"""The service registry: one typed model of Services, endpoints, ServiceEntries and WorkloadEntries.

Layer 2 (STYLE.md §9): imports only ``errors``, ``istio_version``, ``k8s`` and ``istio_service``;
``netsim.dns`` and ``netsim.mesh`` import it, never the reverse.

- :mod:`netsim.registry.model`: the values (:class:`Service`, :class:`Endpoint`, :class:`PodInfo`, ...).
- :mod:`netsim.registry.fields`: the one set of field readers, each raising a located error.
- :mod:`netsim.registry.convert`: :func:`build_registry`, the one converter from objects.
- :mod:`netsim.registry.visibility`: :func:`visible`, what a proxy's namespace sees (exportTo and
  istiod's one-definition-per-hostname rule by release).

The two views: ``netsim.dns.table.build_from_objects`` (the NameTable istiod sends the agent) and
``netsim.mesh.build.build_index`` (the listeners and clusters of one proxy). Auto-allocated VIPs are
added by ``netsim.dns.table.auto_allocate`` (once per view), policy differences are named there:
``netsim.dns.table`` keeps unready endpoints per ``IstiodFlags.unhealthy_excluded`` and
``publishNotReadyAddresses``; ``netsim.mesh.build`` gives Envoy only healthy ones (``envoy_endpoints``).
"""

from netsim.registry.convert import CLUSTER_DOMAIN, KUBE_CLUSTER, build_registry, k8s_port_protocol, parse_protocol
from netsim.registry.model import (
    EXTERNAL,
    KUBERNETES,
    SERVICE,
    SERVICE_ENTRY,
    UNSPECIFIED,
    Endpoint,
    Health,
    PodInfo,
    Protocol,
    Registry,
    Service,
    ServicePort,
)
from netsim.registry.visibility import Hidden, HostRule, Visible, host_rule, visible

__all__ = [
    "CLUSTER_DOMAIN",
    "EXTERNAL",
    "KUBERNETES",
    "KUBE_CLUSTER",
    "SERVICE",
    "SERVICE_ENTRY",
    "UNSPECIFIED",
    "Endpoint",
    "Health",
    "Hidden",
    "HostRule",
    "PodInfo",
    "Protocol",
    "Registry",
    "Service",
    "ServicePort",
    "Visible",
    "build_registry",
    "host_rule",
    "k8s_port_protocol",
    "parse_protocol",
    "visible",
]
