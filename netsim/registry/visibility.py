"""Which services a proxy in one namespace sees: ``exportTo``, then one definition per hostname.

Owns: :class:`HostRule` and :func:`host_rule` (how istiod's sidecar scope chooses among several
definitions of one hostname, by release), and :func:`visible`, the default sidecar scope's service
list for a namespace, with the reason each service was left out (:class:`Hidden`).

The rule, from ``pilot/pkg/model/sidecar.go`` (``DefaultSidecarScopeForNamespace``,
``appendSidecarServices``, ``selectServices``): services are taken in push-context order (oldest
first, then name, then namespace) among those exported to the proxy's namespace
(``istio_service.exported``); when a hostname is defined more than once (ServiceEntries in two
namespaces, two ServiceEntries in one, or a Service and a ServiceEntry) one definition is kept:

- :attr:`HostRule.LEGACY` (before 1.24): a Kubernetes Service before a ServiceEntry ("domain
  squatting" guard), otherwise the first, i.e. the oldest;
- :attr:`HostRule.UNIFIED` (1.24+, ``UNIFIED_SIDECAR_SCOPE``): the definition in the proxy's own
  namespace first, then a Kubernetes Service before a ServiceEntry (unless that would displace the
  proxy's own namespace), otherwise the oldest.

A definition is what one namespace says in one registry (``selectServices`` keeps every service of the
chosen namespace): a ServiceEntry with several ``addresses``, or two ServiceEntries of one namespace,
pass together, and the name table merges their addresses (1.18+) or keeps the first, as
``BuildNameTable`` does.

Never does: apply a Sidecar resource's egress hosts (``netsim.mesh.build`` does, on top of this).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from netsim.istio_service import EXPORT_TO_ANNOTATION, exported
from netsim.istio_version import IstioVersion, parse_istio_version
from netsim.registry.model import SERVICE, Service

UNIFIED_SINCE = IstioVersion(1, 24, 0)


class HostRule(enum.Enum):
    """How a proxy's sidecar scope picks one definition of a hostname."""

    LEGACY = "kubernetes-then-oldest"
    UNIFIED = "own-namespace-then-kubernetes-then-oldest"


def host_rule(version: str | IstioVersion | None) -> HostRule:
    """The rule of a release (``None``: Istio HEAD)."""
    v = version if isinstance(version, IstioVersion) else parse_istio_version(version)
    return HostRule.UNIFIED if v >= UNIFIED_SINCE else HostRule.LEGACY


@dataclass(frozen=True, slots=True)
class Hidden:
    """A service this proxy does not see, and why."""

    service: Service
    reason: str


@dataclass(frozen=True, slots=True)
class Visible:
    """The services a proxy sees (push-context order kept) and the ones it does not."""

    services: tuple[Service, ...]
    hidden: tuple[Hidden, ...]


def _key(s: Service) -> tuple[str, str]:
    """A definition: the services of one registry (Kubernetes or ServiceEntry) in one namespace."""
    return (s.kind, s.namespace)


def _prefer(new: Service, cur: Service, namespace: str, rule: HostRule) -> bool:
    """Whether ``new`` (later in push order) displaces ``cur`` as the definition of their hostname."""
    new_k8s, cur_k8s = new.kind == SERVICE, cur.kind == SERVICE
    if rule is HostRule.UNIFIED:
        if new.namespace == namespace and cur.namespace != namespace:
            return True
        return new_k8s and not cur_k8s and (new.namespace == namespace or cur.namespace != namespace)
    return new_k8s and not cur_k8s


def _why(winner: Service, namespace: str, rule: HostRule) -> str:
    if rule is HostRule.UNIFIED and winner.namespace == namespace:
        return f"{winner.ref} is in the proxy's namespace {namespace}"
    if winner.kind == SERVICE:
        return f"{winner.ref} is a Kubernetes Service"
    return f"{winner.ref} is older"


def visible(services: Iterable[Service], namespace: str, rule: HostRule) -> Visible:
    """The services (in push-context order) a proxy in ``namespace`` sees under ``rule``."""
    shown: list[Service] = []
    hidden: list[Hidden] = []
    winner: dict[str, Service] = {}
    for s in services:
        if not exported(s.export_to, s.namespace, namespace):
            field = (f"{EXPORT_TO_ANNOTATION}: {','.join(s.export_to)}" if s.kind == SERVICE
                     else f"spec.exportTo: {', '.join(s.export_to)}")
            hidden.append(Hidden(s, f"not exported to namespace {namespace} ({field})"))
            continue
        shown.append(s)
        cur = winner.get(s.hostname)
        if cur is None or (_key(s) != _key(cur) and _prefer(s, cur, namespace, rule)):
            winner[s.hostname] = s
    kept: list[Service] = []
    for s in shown:
        w = winner[s.hostname]
        if _key(s) == _key(w):
            kept.append(s)
        else:
            hidden.append(Hidden(s, f"hostname {s.hostname} is also defined by {w.ref}, which this proxy sees "
                                    f"instead ({_why(w, namespace, rule)}; Istio {rule.value} rule)"))
    return Visible(services=tuple(kept), hidden=tuple(hidden))


__all__ = ["UNIFIED_SINCE", "Hidden", "HostRule", "Visible", "host_rule", "visible"]
