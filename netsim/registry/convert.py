"""Kubernetes/Istio objects → the typed :class:`~netsim.registry.model.Registry`: the one converter.

Owns: reading Services (ClusterIP, headless, ExternalName), their endpoints (EndpointSlices, then
Endpoints, else the Pods their selector picks), ServiceEntries (every resolution, with and without
addresses, spec endpoints and ``workloadSelector`` over WorkloadEntries and Pods), WorkloadEntries,
Pods and workload templates (with the sidecar-injection decision), and Namespaces, as istiod's
Kubernetes and ServiceEntry registries convert them (``kube/conversion.go``,
``serviceentry/conversion.go``). Port protocols follow ``kube.ConvertProtocol`` (spec 2.3).

Invariants: every field is read through :mod:`netsim.registry.fields`; a bad object becomes one
ConfigError located at file, document, kind ns/name and field, and is skipped while the rest load;
endpoints keep their health (ready, not ready, terminating) so that each view states its own policy;
nothing here depends on the proxy that looks (that is ``netsim.registry.visibility``) or on the
release (auto-allocation is ``netsim.dns.table.auto_allocate``, a view).

Never does: open files (``netsim.k8s``), allocate VIPs, or decide visibility.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from netsim.errors import NetsimError
from netsim.istio_service import Resolution, annotation_export_to, dataplane_choice, injection_choice, se_resolution
from netsim.k8s import POD_TEMPLATE_PATHS, K8sObject
from netsim.registry import fields as f
from netsim.registry.model import (
    SERVICE,
    SERVICE_ENTRY,
    TLS_MODE_LABEL,
    UNSPECIFIED,
    ContainerPort,
    Endpoint,
    Health,
    Labels,
    PodInfo,
    Protocol,
    Registry,
    Service,
    ServicePort,
    push_order,
    selects,
)

CLUSTER_DOMAIN = "cluster.local"
KUBE_CLUSTER = "Kubernetes"  # istiod's default cluster ID (the key of a Service's cluster VIPs)
ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "grpc": Protocol.GRPC, "grpc-web": Protocol.GRPC_WEB,
              "http": Protocol.HTTP, "http_proxy": Protocol.HTTP_PROXY, "http2": Protocol.HTTP2,
              "https": Protocol.HTTPS, "tls": Protocol.TLS, "mongo": Protocol.MONGO, "redis": Protocol.REDIS,
              "mysql": Protocol.MYSQL}
# ports that default to TCP instead of sniffing (server-first protocols), ConvertProtocol
_WELL_KNOWN_TCP = frozenset({25, 53, 3306, 27017})
_LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")


def parse_protocol(name: str) -> Protocol:
    """``protocol.Parse``: case-insensitive; anything else is auto (UnsupportedProtocol)."""
    return _PROTOCOLS.get(name.lower(), Protocol.UNSUPPORTED)


def k8s_port_protocol(port: int, name: str, proto: str, app_protocol: str | None) -> Protocol:
    """``kube.ConvertProtocol`` (spec 2.3): UDP, appProtocol, grpc-web prefix, name prefix, well-known ports."""
    if proto.upper() == "UDP":
        return Protocol.UDP
    text = name
    if app_protocol is not None:
        text = app_protocol
        special = {"kubernetes.io/h2c": Protocol.HTTP2, "kubernetes.io/ws": Protocol.HTTP,
                   "kubernetes.io/wss": Protocol.HTTPS}
        if text in special:
            return special[text]
    if text.lower().startswith("grpc-web"):
        return Protocol.GRPC_WEB
    p = parse_protocol(text.split("-", 1)[0])
    if p is Protocol.UNSUPPORTED and port in _WELL_KNOWN_TCP:
        return Protocol.TCP
    return p


def check_istio_api(obj: K8sObject) -> None:
    """Raise a located ConfigError unless ``obj`` is ``networking.istio.io/v1|v1beta1|v1alpha3``."""
    if obj.group != ISTIO_GROUP or obj.api_version.split("/")[-1] not in ISTIO_VERSIONS:
        raise obj.error("apiVersion", f"{obj.api_version!r} is not {ISTIO_GROUP}/{'|'.join(ISTIO_VERSIONS)}")


def is_core_service(obj: K8sObject) -> bool:
    """A Kubernetes ``v1`` Service (not, say, a Knative ``serving.knative.dev`` one)."""
    return obj.kind == "Service" and obj.api_version in ("v1", "")


def sidecar_injected(ns: str, labels: Mapping[str, str], ann: Mapping[str, str], containers: Sequence[str],
                     ns_labels: Mapping[str, str] | None) -> tuple[bool, str]:
    """Whether a pod (or template) in namespace ``ns`` runs a sidecar, and why: its ``security.istio.io/tlsMode``
    label, an istio-proxy container, ``sidecar.istio.io/inject`` (:func:`netsim.istio_service.injection_choice`),
    the injected status annotation, then its namespace's labels (``ns_labels``; None when the Namespace was not
    read)."""
    mode = labels.get(TLS_MODE_LABEL)
    if mode is not None:
        return mode == "istio", f"label {TLS_MODE_LABEL}={mode}"
    if "istio-proxy" in containers:
        return True, "has an istio-proxy container"
    chosen = injection_choice(labels, ann)
    if chosen is not None:
        return chosen
    if "sidecar.istio.io/status" in ann:
        return True, "annotation sidecar.istio.io/status (injected)"
    if ns_labels is not None:
        if ns_labels.get("istio-injection") == "enabled" or "istio.io/rev" in ns_labels:
            return True, f"namespace {ns} has injection enabled"
        return False, f"namespace {ns} has no injection label"
    return True, ASSUMED_INJECTED


ASSUMED_INJECTED = "assumed injected (no sidecar.istio.io/inject=false, no tlsMode label)"


def capture_of(ns: str, labels: Mapping[str, str], ann: Mapping[str, str], containers: Sequence[str],
               ns_labels: Mapping[str, str] | None) -> tuple[bool, str, bool, str]:
    """(sidecar, why, ambient, why): :func:`sidecar_injected`, then ambient enrolment
    (:func:`netsim.istio_service.dataplane_choice`). A pod enrolled in ambient whose sidecar was only
    assumed has none: ztunnel captures its traffic."""
    sidecar, why = sidecar_injected(ns, labels, ann, containers, ns_labels)
    mode, ambient_why, _ = dataplane_choice(ns, labels, ns_labels, sidecar and why != ASSUMED_INJECTED)
    if mode == "ambient":
        return False, f"enrolled in ambient: {ambient_why}", True, ambient_why
    return sidecar, why, False, ambient_why


def with_namespace(pod: PodInfo, ns_labels: Mapping[str, str]) -> PodInfo:
    """``pod`` (read from a file without its Namespace object) with its sidecar and ambient enrolment decided
    again by its namespace's labels ``ns_labels`` (read from another file)."""
    sidecar, why, ambient, ambient_why = capture_of(pod.namespace, pod.label_map, pod.annotation_map,
                                                    pod.containers, ns_labels)
    return replace(pod, sidecar=sidecar, sidecar_why=why, ambient=ambient, ambient_why=ambient_why)


class _Converter:
    def __init__(self, objects: Sequence[K8sObject], domain: str) -> None:
        self.domain = domain
        self.seq = 0
        self.errors: list[NetsimError] = []
        self.by_kind: dict[str, list[K8sObject]] = {}
        for o in objects:
            self.by_kind.setdefault(o.kind, []).append(o)
        self.ns_labels: dict[str, dict[str, str]] = {
            o.name: dict(o.labels) for o in self.by_kind.get("Namespace", [])}
        self.pods: list[PodInfo] = []
        for o in objects:
            if o.kind in POD_TEMPLATE_PATHS:
                p = self.guard(o, self.pod)
                if p is not None:
                    self.pods.append(p)
        self.pod_by_ip: dict[str, PodInfo] = {}
        self.pods_by_ns: dict[str, list[PodInfo]] = {}
        for p in self.pods:
            if p.kind == "Pod":
                for ip in p.ips:
                    self.pod_by_ip.setdefault(ip, p)
                self.pods_by_ns.setdefault(p.namespace, []).append(p)
        self.slices: dict[tuple[str, str], list[K8sObject]] = {}
        for o in self.by_kind.get("EndpointSlice", []):
            self.slices.setdefault((o.namespace, o.labels.get(SERVICE_NAME_LABEL, "")), []).append(o)
        self.endpoints_objs: dict[tuple[str, str], K8sObject] = {
            (o.namespace, o.name): o for o in self.by_kind.get("Endpoints", [])}
        self.workload_entries: dict[str, list[tuple[Labels, Endpoint]]] = {}
        for o in self.by_kind.get("WorkloadEntry", []):
            we = self.guard(o, self.workload_entry)
            if we is not None:
                self.workload_entries.setdefault(o.namespace, []).append(we)

    def tick(self) -> int:
        """The next position in the order read (``Service.seq``)."""
        self.seq += 1
        return self.seq

    def guard(self, obj: K8sObject, fn: Any) -> Any:
        return f.guarded(self.errors, obj, fn)

    # -- pods ---------------------------------------------------------------------------------
    def pod(self, obj: K8sObject) -> PodInfo:
        path = POD_TEMPLATE_PATHS[obj.kind]
        tpl: Any = obj.body
        for key in path:
            tpl = tpl.get(key) if isinstance(tpl, Mapping) else None
        prefix = ".".join(path)
        tpl = f.mapping(obj, tpl, prefix or "(object)")
        meta = f.mapping(obj, tpl.get("metadata"), f"{prefix}.metadata" if prefix else "metadata")
        labels = f.labels(obj, meta.get("labels"), "metadata.labels")
        ann = f.labels(obj, meta.get("annotations"), "metadata.annotations")
        owner: Labels = ()
        if obj.kind != "Pod":
            owner = f.labels(obj, (obj.body.get("metadata") or {}).get("annotations"), "metadata.annotations")
        spec = f.mapping(obj, tpl.get("spec"), f"{prefix}.spec" if prefix else "spec")
        ports: list[ContainerPort] = []
        names: list[str] = []
        for i, c in enumerate(f.items(obj, spec.get("containers"), "spec.containers")):
            c = f.mapping(obj, c, f"spec.containers[{i}]")
            names.append(str(c.get("name", "")))
            for j, p in enumerate(f.items(obj, c.get("ports"), f"spec.containers[{i}].ports")):
                p = f.mapping(obj, p, f"spec.containers[{i}].ports[{j}]")
                if str(p.get("protocol", "TCP")).upper() == "UDP":
                    continue
                ports.append(ContainerPort(name=str(p.get("name", "")),
                                           port=f.port(obj, p.get("containerPort"),
                                                       f"spec.containers[{i}].ports[{j}].containerPort")))
        ips: list[str] = []
        ready = True
        if obj.kind == "Pod":
            status = f.mapping(obj, obj.body.get("status"), "status")
            for i, e in enumerate(f.items(obj, status.get("podIPs"), "status.podIPs")):
                ips.append(f.ip(obj, e.get("ip") if isinstance(e, Mapping) else None, f"status.podIPs[{i}].ip"))
            if not ips and status.get("podIP") is not None:
                ips.append(f.ip(obj, status.get("podIP"), "status.podIP"))
            conditions = f.items(obj, status.get("conditions"), "status.conditions")
            ready = not conditions or any(isinstance(c, Mapping) and c.get("type") == "Ready"
                                          and str(c.get("status")) == "True" for c in conditions)
        sidecar, why, ambient, ambient_why = capture_of(obj.namespace, dict(labels), dict(ann), names,
                                                        self.ns_labels.get(obj.namespace))
        return PodInfo(name=obj.name, namespace=obj.namespace, kind=obj.kind, ips=tuple(ips), labels=labels,
                       annotations=ann, owner_annotations=owner, container_ports=tuple(ports), sidecar=sidecar,
                       sidecar_why=why, ambient=ambient, ambient_why=ambient_why, containers=tuple(names),
                       hostname=str(spec.get("hostname") or ""), subdomain=str(spec.get("subdomain") or ""),
                       ready=ready, source=obj.source, where=obj.where(), origin=obj.origin, body=obj.body)


    def endpoint(self, ips: tuple[str, ...], workload: str, extra: Labels = (), **kw: Any) -> Endpoint:
        """An endpoint at ``ips``; a pod's labels (with its tlsMode) when ``ips[0]`` is a pod's IP."""
        pod = self.pod_by_ip.get(ips[0]) if ips else None
        if pod is None:
            return Endpoint(ips=ips, labels=extra, workload=workload, **kw)
        labels = dict(pod.labels)
        if pod.sidecar:
            labels.setdefault(TLS_MODE_LABEL, "istio")
        else:
            labels.pop(TLS_MODE_LABEL, None)
        return Endpoint(ips=ips, labels=tuple(labels.items()), workload=f"Pod {pod.namespace}/{pod.name}", **kw)

    # -- Kubernetes Service -------------------------------------------------------------------
    def service(self, obj: K8sObject) -> list[Service]:
        spec = f.mapping(obj, obj.body.get("spec"), "spec")
        export = annotation_export_to(f.annotations_of(obj))
        ports = []
        for i, p in enumerate(f.items(obj, spec.get("ports"), "spec.ports")):
            p = f.mapping(obj, p, f"spec.ports[{i}]")
            num = f.port(obj, p.get("port"), f"spec.ports[{i}].port")
            name = p.get("name") or ""
            if not isinstance(name, str):
                raise obj.error(f"spec.ports[{i}].name", f"must be a string, got {name!r}")
            proto = str(p.get("protocol") or "TCP")
            if proto.upper() not in ("TCP", "UDP", "SCTP"):
                raise obj.error(f"spec.ports[{i}].protocol", f"must be TCP, UDP or SCTP, got {proto!r}")
            app = p.get("appProtocol")
            tp = p.get("targetPort")
            target: int | str | None
            if tp is None:
                target = num
            elif isinstance(tp, int) and not isinstance(tp, bool):
                target = f.port(obj, tp, f"spec.ports[{i}].targetPort")
            elif isinstance(tp, str):
                target = int(tp) if tp.isdigit() else tp
            else:
                raise obj.error(f"spec.ports[{i}].targetPort", f"must be a port number or name, got {tp!r}")
            ports.append(ServicePort(name=name, port=num, target_port=target,
                                     protocol=k8s_port_protocol(num, name, proto,
                                                                None if app is None else str(app))))
        selector = f.labels(obj, spec.get("selector"), "spec.selector") or None
        base: dict[str, Any] = dict(
            hostname=f"{obj.name}.{obj.namespace}.svc.{self.domain}", namespace=obj.namespace, name=obj.name,
            kind=SERVICE, ports=tuple(ports), creation=obj.created(), export_to=export, selector=selector,
            object_labels=tuple(obj.labels.items()), where=obj.where(), origin=obj.origin, seq=self.tick())
        stype = spec.get("type", "ClusterIP")
        if stype == "ExternalName":
            ext = spec.get("externalName")
            if not isinstance(ext, str) or not ext:
                raise obj.error("spec.externalName", "missing (a type ExternalName Service needs it)")
            return [Service(resolution=Resolution.DNS_LB, external_name=ext.rstrip("."), mesh_external=True,
                            **base)]
        eps = tuple(self.k8s_endpoints(obj, selector))
        cip = spec.get("clusterIP")
        if cip == "None":
            return [Service(resolution=Resolution.PASSTHROUGH, headless=True, endpoints=eps,
                            publish_not_ready=bool(spec.get("publishNotReadyAddresses")), **base)]
        cips = f.strings(obj, spec.get("clusterIPs"), "spec.clusterIPs") or ((str(cip),) if cip else ())
        if not cips:
            raise obj.error("spec.clusterIP", "missing (set the ClusterIP, or None for a headless Service)")
        for i, ip in enumerate(cips):
            f.ip(obj, ip, f"spec.clusterIPs[{i}]" if spec.get("clusterIPs") else "spec.clusterIP")
        return [Service(resolution=Resolution.CLIENT_SIDE_LB, address=cips[0], endpoints=eps,
                        cluster_vips={KUBE_CLUSTER: cips}, **base)]

    def k8s_endpoints(self, obj: K8sObject, selector: Labels | None) -> list[Endpoint]:
        """EndpointSlices and Endpoints of the Service, else the Pods its selector picks; by first address,
        the healthiest record of an address kept."""
        out: dict[str, Endpoint] = {}

        def add(ep: Endpoint) -> None:
            cur = out.get(ep.address)
            if cur is None or (not cur.healthy and ep.healthy):
                out[ep.address] = ep

        slices = self.slices.get((obj.namespace, obj.name), [])
        for sl in slices:
            for i, e in enumerate(f.items(sl, sl.body.get("endpoints"), "endpoints")):
                e = f.mapping(sl, e, f"endpoints[{i}]")
                cond = f.mapping(sl, e.get("conditions"), f"endpoints[{i}].conditions")
                if cond.get("ready", True) is not False:
                    health = Health.HEALTHY
                else:
                    health = Health.TERMINATING if cond.get("terminating") else Health.UNHEALTHY
                ips = f.strings(sl, e.get("addresses"), f"endpoints[{i}].addresses")
                if not ips:
                    continue
                hn = str(e.get("hostname") or "")
                add(self.endpoint(ips, f"EndpointSlice {sl.namespace}/{sl.name}", hostname=hn,
                                  subdomain=obj.name if hn else "", health=health))
        eo = self.endpoints_objs.get((obj.namespace, obj.name))
        if eo is not None:
            for i, subset in enumerate(f.items(eo, eo.body.get("subsets"), "subsets")):
                subset = f.mapping(eo, subset, f"subsets[{i}]")
                for key, health in (("addresses", Health.HEALTHY), ("notReadyAddresses", Health.UNHEALTHY)):
                    for j, a in enumerate(f.items(eo, subset.get(key), f"subsets[{i}].{key}")):
                        a = f.mapping(eo, a, f"subsets[{i}].{key}[{j}]")
                        ip = str(a.get("ip") or "")
                        if not ip:
                            continue
                        hn = str(a.get("hostname") or "")
                        add(self.endpoint((ip,), f"Endpoints {eo.namespace}/{eo.name}", hostname=hn,
                                          subdomain=obj.name if hn else "", health=health))
        if slices or eo is not None:
            return list(out.values())
        if selector:
            for pod in self.pods_by_ns.get(obj.namespace, []):
                if selects(selector, pod.label_map) and pod.ips:
                    add(self.endpoint(pod.ips, "", hostname=pod.hostname or pod.name, subdomain=pod.subdomain,
                                      health=Health.HEALTHY if pod.ready else Health.UNHEALTHY))
        return list(out.values())

    # -- Istio --------------------------------------------------------------------------------
    def workload_entry(self, obj: K8sObject) -> tuple[Labels, Endpoint]:
        """A WorkloadEntry: its labels (``spec.labels``, else the object's) and the endpoint it makes."""
        check_istio_api(obj)
        spec = f.mapping(obj, obj.body.get("spec"), "spec")
        labels = f.labels(obj, spec.get("labels"), "spec.labels") or tuple(obj.labels.items())
        addr = spec.get("address")
        eports = tuple((str(k), f.port(obj, v, f"spec.ports.{k}"))
                       for k, v in f.mapping(obj, spec.get("ports"), "spec.ports").items())
        return labels, Endpoint(ips=(str(addr),) if addr else (), labels=labels, ports=eports,
                                workload=f"WorkloadEntry {obj.namespace}/{obj.name}",
                                network=str(spec.get("network") or ""))

    def service_entry(self, obj: K8sObject) -> list[Service]:
        check_istio_api(obj)
        spec = f.mapping(obj, obj.body.get("spec"), "spec")
        hosts = f.strings(obj, spec.get("hosts"), "spec.hosts")
        if not hosts:
            raise obj.error("spec.hosts", "a ServiceEntry needs at least one host")
        addresses = f.strings(obj, spec.get("addresses"), "spec.addresses")
        for i, a in enumerate(addresses):
            f.ip_or_cidr(obj, a, f"spec.addresses[{i}]")
        resolution = se_resolution(obj, spec)
        location = str(spec.get("location") or "MESH_EXTERNAL").upper()
        if location not in _LOCATIONS:
            raise obj.error("spec.location", f"must be MESH_EXTERNAL or MESH_INTERNAL, got {location!r}")
        ports = []
        for i, p in enumerate(f.items(obj, spec.get("ports"), "spec.ports")):
            p = f.mapping(obj, p, f"spec.ports[{i}]")
            num = f.port(obj, p.get("number"), f"spec.ports[{i}].number")
            tp = p.get("targetPort")
            ports.append(ServicePort(name=str(p.get("name") or ""), port=num,
                                     protocol=parse_protocol(str(p.get("protocol") or "")),
                                     target_port=f.port(obj, tp, f"spec.ports[{i}].targetPort") if tp else None))
        eps: list[Endpoint] = []
        for i, e in enumerate(f.items(obj, spec.get("endpoints"), "spec.endpoints")):
            e = f.mapping(obj, e, f"spec.endpoints[{i}]")
            addr = e.get("address")
            if not isinstance(addr, str) or not addr:
                raise obj.error(f"spec.endpoints[{i}].address", "missing")
            eports = tuple((str(k), f.port(obj, v, f"spec.endpoints[{i}].ports.{k}"))
                           for k, v in f.mapping(obj, e.get("ports"), f"spec.endpoints[{i}].ports").items())
            labels = f.labels(obj, e.get("labels"), f"spec.endpoints[{i}].labels")
            eps.append(self.endpoint((addr,), f"ServiceEntry {obj.namespace}/{obj.name} endpoint", labels,
                                     ports=eports, network=str(e.get("network") or "")))
        sel_raw = spec.get("workloadSelector")
        selector: Labels | None = None
        if sel_raw is not None:
            selector = f.labels(obj, f.mapping(obj, sel_raw, "spec.workloadSelector").get("labels"),
                                "spec.workloadSelector.labels")
            eps.extend(self.selected_workloads(obj.namespace, selector))
        status = f.mapping(obj, obj.body.get("status"), "status")
        st = tuple((str(a.get("host") or ""), str(a["value"]))
                   for a in f.items(obj, status.get("addresses"), "status.addresses")
                   if isinstance(a, Mapping) and a.get("value"))
        base: dict[str, Any] = dict(
            namespace=obj.namespace, name=obj.name, kind=SERVICE_ENTRY, resolution=resolution, ports=tuple(ports),
            endpoints=tuple(eps), creation=obj.created(),
            export_to=f.strings(obj, spec.get("exportTo"), "spec.exportTo"), mesh_external=location == "MESH_EXTERNAL",
            selector=selector, object_labels=tuple(obj.labels.items()), status_addresses=st, where=obj.where(),
            origin=obj.origin)
        return [Service(hostname=h, address=a, seq=self.tick(), **base) for h in hosts
                for a in addresses or (UNSPECIFIED,)]

    def selected_workloads(self, namespace: str, selector: Labels) -> list[Endpoint]:
        out = [ep for labels, ep in self.workload_entries.get(namespace, ())
               if ep.ips and selects(selector, dict(labels))]
        for pod in self.pods_by_ns.get(namespace, []):
            if selects(selector, pod.label_map) and pod.ips:
                out.append(self.endpoint(pod.ips[:1], "", health=Health.HEALTHY if pod.ready else Health.UNHEALTHY))
        return out


def build_registry(objects: Iterable[K8sObject], *, domain: str = CLUSTER_DOMAIN) -> Registry:
    """The registry of ``objects``: services in push-context order, pods, namespaces, and the skipped
    objects as located errors (pods and WorkloadEntries first, then services in the order read).

    Reads ``v1`` Services (+ their EndpointSlices, Endpoints or Pods), ServiceEntries and WorkloadEntries
    (``networking.istio.io`` v1, v1beta1, v1alpha3), Pods and workload templates, and Namespaces;
    every other kind is left to the caller.
    """
    objs = list(objects)
    c = _Converter(objs, domain)
    services: list[Service] = []
    for o in objs:
        if is_core_service(o):
            read = c.service
        elif o.kind == "ServiceEntry":
            read = c.service_entry
        else:
            continue
        got = c.guard(o, read)
        services.extend(got or ())
    services.sort(key=push_order)
    return Registry(services=tuple(services), pods=tuple(c.pods),
                    namespaces=tuple((n, tuple(lbl.items())) for n, lbl in c.ns_labels.items()),
                    errors=tuple(c.errors))


__all__ = [
    "CLUSTER_DOMAIN",
    "KUBE_CLUSTER",
    "build_registry",
    "capture_of",
    "check_istio_api",
    "is_core_service",
    "k8s_port_protocol",
    "parse_protocol",
    "sidecar_injected",
]
