"""What istiod's service model says in both the DNS table and the mesh hop: one definition each.

Owns: the sidecar-injection choice of a pod or template (``sidecar.istio.io/inject``, label then
annotation, read as the injector reads it: :func:`injection_choice`), ambient enrolment (the
``istio.io/dataplane-mode`` label of a pod or its namespace, read as istio-cni's node agent reads it:
:func:`dataplane_choice`), :class:`Resolution` (istiod's
internal service resolution) and the ServiceEntry
``spec.resolution`` table that maps onto it (:func:`se_resolution`), and the ``exportTo`` visibility
rule, read from a Service's ``networking.istio.io/exportTo`` annotation (:func:`annotation_export_to`)
or a config object's ``spec.exportTo`` and checked by :func:`exported`.

Never does: build services (``netsim.registry`` converts Services and ServiceEntries once, for the DNS
name table and the mesh hop alike, and reads these pieces from here).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from netsim.k8s import K8sObject

EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
INJECT = "sidecar.istio.io/inject"
DATAPLANE_MODE = "istio.io/dataplane-mode"  # label on a pod or its namespace: ambient | none
INJECT_YES = frozenset({"y", "yes", "true", "on"})  # the injector's "http://yaml.org/type/bool.html" spellings


def injection_choice(labels: Mapping[str, str], annotations: Mapping[str, str]) -> tuple[bool, str] | None:
    """What a workload's own ``sidecar.istio.io/inject`` says, as the injector's ``injectRequired`` reads it:
    (inject?, where it was read), or None when it says nothing and the defaults decide (namespace label,
    injector policy).

    The label wins when present ("the label is the new API; if both are present we prefer the label"),
    else the annotation. The value, lower-cased, injects when it is ``y``, ``yes``, ``true`` or ``on``; an
    empty value leaves it to the defaults; anything else (``false``, ``no``, ``off``, ``0``, a typo)
    disables injection.
    """
    if INJECT in labels:
        where, value = "label", labels[INJECT]
    elif INJECT in annotations:
        where, value = "annotation", annotations[INJECT]
    else:
        return None
    value = str(value)
    if value == "":
        return None
    return value.lower() in INJECT_YES, f"{where} {INJECT}={value}"


def dataplane_choice(namespace: str, labels: Mapping[str, str], ns_labels: Mapping[str, str] | None,
                     runs_sidecar: bool) -> tuple[str, str, bool]:
    """Whether istio-cni's node agent enrols a pod in ambient: (``"ambient"`` or ``"sidecar"``, why, opted
    out). Ambient when the pod's own ``istio.io/dataplane-mode`` label or its namespace's (``ns_labels``;
    None when the Namespace was not read) says ``ambient``, unless the pod's label says ``none`` (opted out)
    or it ``runs_sidecar`` (the agent skips pods with a sidecar). "sidecar" means "not ambient": whether a
    sidecar is injected is :func:`injection_choice`'s and the namespace's to say."""
    own = labels.get(DATAPLANE_MODE)
    if own == "none":
        return "sidecar", f"the pod's label {DATAPLANE_MODE}=none opts it out of ambient", True
    if own == "ambient":
        where = f"the pod's label {DATAPLANE_MODE}=ambient"
    elif ns_labels is not None and ns_labels.get(DATAPLANE_MODE) == "ambient":
        where = f"namespace {namespace}'s label {DATAPLANE_MODE}=ambient"
    else:
        ns = f"namespace {namespace}" + ("" if ns_labels is not None else " (no Namespace object given)")
        why = f"not enrolled in ambient: neither the pod nor {ns} has the label {DATAPLANE_MODE}=ambient"
        return "sidecar", why, False
    if runs_sidecar:
        return "sidecar", f"{where}, but the pod runs a sidecar: the ambient agent skips pods with sidecars", \
            False
    return "ambient", where, False


class Resolution(enum.Enum):
    """Istio's internal service resolution (ServiceEntry names in brackets)."""

    CLIENT_SIDE_LB = "ClientSideLB"  # STATIC, or a ClusterIP Service
    DNS_LB = "DNSLB"  # DNS, or an ExternalName Service
    DNS_ROUND_ROBIN_LB = "DNSRoundRobinLB"  # DNS_ROUND_ROBIN
    PASSTHROUGH = "Passthrough"  # NONE, or a headless Service
    DYNAMIC_DNS = "DynamicDNS"  # DYNAMIC_DNS
    ALIAS = "Alias"  # an ExternalName Service from 1.21 (the mesh hop only; no ServiceEntry spelling)

    @property
    def se_name(self) -> str:
        """The ServiceEntry ``spec.resolution`` spelling; KeyError for ALIAS, which has none."""
        return _SE_NAME[self]


SE_RESOLUTION: Mapping[str, Resolution] = {
    "NONE": Resolution.PASSTHROUGH, "STATIC": Resolution.CLIENT_SIDE_LB, "DNS": Resolution.DNS_LB,
    "DNS_ROUND_ROBIN": Resolution.DNS_ROUND_ROBIN_LB, "DYNAMIC_DNS": Resolution.DYNAMIC_DNS,
}
_SE_NAME = {v: k for k, v in SE_RESOLUTION.items()}


def se_resolution(obj: K8sObject, spec: Mapping[str, Any]) -> Resolution:
    """A ServiceEntry's ``spec.resolution`` (NONE when absent, any letter case).

    Raises ConfigError located at ``obj``'s ``spec.resolution``, quoting the value as written.
    """
    text = str(spec.get("resolution") or "NONE")
    try:
        return SE_RESOLUTION[text.upper()]
    except KeyError:
        raise obj.error("spec.resolution", f"{text!r} is not one of {', '.join(SE_RESOLUTION)}") from None


def annotation_export_to(annotations: Mapping[str, Any]) -> tuple[str, ...]:
    """A Service's ``networking.istio.io/exportTo`` annotation as a list (comma-separated, blanks dropped)."""
    return tuple(e.strip() for e in str(annotations.get(EXPORT_TO_ANNOTATION, "")).split(",") if e.strip())


def exported(export_to: Sequence[str], owner_ns: str, client_ns: str) -> bool:
    """Whether an object of ``owner_ns`` with ``export_to`` is visible in ``client_ns``.

    Empty is everywhere (the mesh default), ``*`` everywhere, ``.`` the owner's own namespace, and any
    other entry the namespace of that name.
    """
    if not export_to:
        return True
    return any(e == "*" or e == client_ns or (e == "." and owner_ns == client_ns) for e in export_to)


__all__ = [
    "DATAPLANE_MODE",
    "EXPORT_TO_ANNOTATION",
    "INJECT",
    "INJECT_YES",
    "SE_RESOLUTION",
    "Resolution",
    "annotation_export_to",
    "dataplane_choice",
    "exported",
    "injection_choice",
    "se_resolution",
]
