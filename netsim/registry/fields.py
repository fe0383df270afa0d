"""The field readers of every Kubernetes/Istio object netsim converts: each raises one located error.

Owns: reading a field of a :class:`~netsim.k8s.K8sObject` body as a mapping, a list, strings,
labels, a port number, an HTTP status, an enum value or an IP, and turning a wrong shape into
``obj.error(field, ...)`` (``file: document N: Kind ns/name: field: message``). The registry
converter and ``netsim.mesh.objects`` both use these, so a field reads the same everywhere.

A port written as a string of digits (``number: "80"``) is read as that number, everywhere: the
proto3 JSON mapping that istiod and istioctl use to read configuration files accepts a JSON string
for a 32-bit integer field (ServiceEntry ``ports[].number`` is a uint32), so a file istiod can load is
not refused here. Note that the API server would refuse it (the CRD schema says ``type: integer``,
and a Service's ``port`` is an int32), so ``kubectl apply`` of the same file fails. Anything else
that is not an integer 1-65535 is refused with the value quoted.

Never does: interpret a field's meaning (the converters do).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from netsim.errors import NetsimError
from netsim.k8s import K8sObject
from netsim.registry.model import Labels

T = TypeVar("T")


def guarded(errors: list[NetsimError], obj: K8sObject, read: Callable[[K8sObject], T]) -> T | None:
    """``read(obj)``, or None with its error (located at ``obj`` when it has no location) put in ``errors``."""
    try:
        return read(obj)
    except NetsimError as e:
        errors.append(e if e.where else e.at(obj.where()))
        return None


def mapping(obj: K8sObject, data: Any, path: str) -> Mapping[str, Any]:
    """``data`` as a mapping ({} when absent)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise obj.error(path, f"must be a mapping, got {type(data).__name__}")
    return data


def items(obj: K8sObject, data: Any, path: str) -> list[Any]:
    """``data`` as a list ([] when absent)."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise obj.error(path, f"must be a list, got {type(data).__name__}")
    return data


def strings(obj: K8sObject, data: Any, path: str) -> tuple[str, ...]:
    """A list of strings; a number is taken as its text (YAML reads an unquoted ``80`` as a number)."""
    values = items(obj, data, path)
    for i, v in enumerate(values):
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise obj.error(f"{path}[{i}]", f"must be a string, got {v!r}")
    return tuple(str(v) for v in values)


def labels(obj: K8sObject, data: Any, path: str) -> Labels:
    """A string map (labels, annotations, a selector) as pairs in written order."""
    return tuple((str(k), str(v)) for k, v in mapping(obj, data, path).items())


def annotations_of(obj: K8sObject) -> Mapping[str, Any]:
    return mapping(obj, (obj.body.get("metadata") or {}).get("annotations"), "metadata.annotations")


def port(obj: K8sObject, value: Any, path: str) -> int:
    """A port number 1-65535; a string of digits counts as its number (see the module header)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise obj.error(path, f"must be a port number 1-65535, got {value!r}")
    return value


def http_status(obj: K8sObject, value: Any, path: str) -> int | None:
    """A VirtualService directResponse status: 200-599, as Istio's validation (validateHTTPDirectResponse)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 200 <= value <= 599:
        raise obj.error(path, f"must be an HTTP status 200-599, got {value!r}")
    return value


def one_of(obj: K8sObject, value: Any, path: str, choices: tuple[str, ...]) -> str:
    """``value`` upper-cased, if it is one of ``choices`` (an Istio enum field)."""
    v = str(value).upper()
    if v not in choices:
        raise obj.error(path, f"must be one of {', '.join(choices)}, got {value!r}")
    return v


def ip(obj: K8sObject, value: Any, path: str) -> str:
    """An IPv4/IPv6 address, as written."""
    if not isinstance(value, str):
        raise obj.error(path, f"not an IP address: {value!r}")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise obj.error(path, f"not an IP address: {value!r}") from None
    return value


def ip_or_cidr(obj: K8sObject, value: str, path: str) -> str:
    """An IP address or a CIDR, as written (ServiceEntry ``spec.addresses``)."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise obj.error(path, f"not an IP address or CIDR: {value!r}") from None
    return value


__all__ = ["annotations_of", "guarded", "http_status", "ip", "ip_or_cidr", "items", "labels", "mapping", "one_of",
           "port", "strings"]
