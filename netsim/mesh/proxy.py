"""The deciding sidecar: from ``--proxy-ip``/``--namespace``/``--labels`` or a pod, to a :class:`Proxy`.

Owns: :func:`make_proxy` (finds the proxy's pod among the Pods read, takes its labels when none are
given, and reads DNS capture / auto-allocation from the mesh config's ``defaultConfig.proxyMetadata``
overlaid by the pod's ``proxy.istio.io/config`` annotation, ``netsim.spec.pod.proxy_metadata``),
:func:`proxy_for_workload` (the sidecar of a pod read through ``netsim.workload.Workload``), and
picking the pod of a ``--pod`` file (:func:`pick_pod`, :func:`with_pods`).

Never does: IO, or build listeners.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import TYPE_CHECKING

from netsim.errors import SpecError
from netsim.mesh.model import Labels, MeshConfig, MeshObjects, PodInfo, Proxy
from netsim.spec.pod import DNS_AUTO_ALLOCATE, DNS_CAPTURE, proxy_metadata, truthy

if TYPE_CHECKING:
    from netsim.workload.model import Workload


def make_proxy(objects: MeshObjects, mesh: MeshConfig, *, ips: tuple[str, ...], namespace: str | None,
               labels: Labels | None = None, pod: PodInfo | None = None) -> Proxy:
    """The proxy with IPs ``ips``; its pod (if among ``objects.pods``) supplies labels and annotations.

    Raises SpecError for an IP that is not an address.
    """
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SpecError(f"--proxy-ip {ip!r}: not an IP address") from None
    if pod is None:
        pod = next((p for p in objects.pods if p.kind == "Pod" and any(ip in p.ips for ip in ips)), None)
    ns = namespace or (pod.namespace if pod is not None else "default")
    if labels is None:
        labels = pod.labels if pod is not None else ()
    md, origin = proxy_metadata(pod.annotation_map if pod is not None else {}, where=pod.where if pod else "",
                                ref=pod.ref if pod else "", defaults=mesh.proxy_metadata, defaults_source=mesh.source)
    return Proxy(ips=ips, namespace=ns, labels=labels, pod=pod, metadata_origin=origin,
                 dns_capture=truthy(md.get(DNS_CAPTURE)), dns_auto_allocate=truthy(md.get(DNS_AUTO_ALLOCATE)))


# the sidecar IP assumed for a workload template (it has no status) or a pod without an IP
PLACEHOLDER_IP = "10.255.255.254"


def proxy_for_workload(w: Workload, mesh: MeshConfig, *, namespace: str | None = None,
                       labels: Labels | None = None) -> Proxy:
    """The sidecar of ``w`` (read with :meth:`~netsim.workload.Workload.from_pod_info`): its addresses (a
    placeholder IP for a workload template or a pod without one), namespace, labels and the proxyMetadata
    ``mesh``'s ``defaultConfig`` and the pod's annotation give it; ``namespace``/``labels`` override."""
    w = w.with_mesh_defaults(mesh.proxy_metadata, mesh.source)
    ips = (PLACEHOLDER_IP,) if w.addresses_assumed else tuple(str(a) for a in w.addresses)
    return Proxy(ips=ips, namespace=namespace or w.namespace,
                 labels=labels if labels is not None else tuple(w.labels.items()), pod=w.pod_info,
                 metadata_origin=w.metadata_origin, dns_capture=w.dns_capture, dns_auto_allocate=w.dns_auto_allocate)


def pod_from_file(pod_objects: MeshObjects, objects: MeshObjects, name: str | None = None) -> PodInfo | None:
    """The pod a ``--pod`` file means (:func:`pick_pod` of ``pod_objects``, the file's objects), its sidecar
    and ambient enrolment decided by its Namespace among ``objects`` (``--config``) when the pod file does
    not hold that Namespace itself."""
    from netsim.registry.convert import with_namespace

    pod = pick_pod(pod_objects.pods, name)
    if pod is None or pod.namespace in dict(pod_objects.namespaces):
        return pod
    labels = dict(objects.namespaces).get(pod.namespace)
    return pod if labels is None else with_namespace(pod, dict(labels))


def pick_pod(pods: tuple[PodInfo, ...], name: str | None = None) -> PodInfo | None:
    """The pod a ``--pod`` file means: the first Pod named ``name`` (any name when None), else the
    first workload of that name."""
    named = [p for p in pods if name is None or p.name == name]
    return min(named, key=lambda p: p.kind != "Pod", default=None)


def with_pods(objects: MeshObjects, extra: MeshObjects) -> MeshObjects:
    """``objects`` plus the pods of ``extra`` it does not already hold (a pod file next to its Service)."""
    known = {(p.namespace, p.name, p.kind) for p in objects.pods}
    return replace(objects, pods=objects.pods + tuple(p for p in extra.pods
                                                      if (p.namespace, p.name, p.kind) not in known))


def parse_labels(text: str | None) -> Labels | None:
    """``k=v,k2=v2`` → pairs; None stays None. Raises SpecError on an item without ``=``."""
    if text is None:
        return None
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SpecError(f"--labels {text!r}: expected k=v[,k=v...], got {item!r}")
        out.append((k.strip(), v.strip()))
    return tuple(out)


__all__ = ["PLACEHOLDER_IP", "make_proxy", "parse_labels", "pick_pod", "pod_from_file", "proxy_for_workload",
           "with_pods"]
