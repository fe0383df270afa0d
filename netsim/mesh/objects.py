"""Kubernetes/Istio objects → typed mesh objects (pure: text in, values out).

Owns: reading YAML text so that one broken document does not hide the others (:func:`parse_text`,
through :mod:`netsim.k8s`), converting :class:`~netsim.k8s.K8sObject` values into
:class:`~netsim.mesh.model.MeshObjects` (:func:`convert`), reading the mesh config
(:func:`parse_mesh_config`) and the proxy's DNS metadata (:func:`proxy_metadata`).

Never does: open files (``netsim.mesh.files`` does, then calls :func:`parse_text`), or build
listeners. Every bad object becomes one ConfigError located at file, document, kind ns/name and
field, and is skipped; the rest still load.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from netsim.errors import ConfigError, NetsimError
from netsim.istio_service import annotation_export_to, se_resolution
from netsim.k8s import POD_TEMPLATE_PATHS, K8sObject, LoadResult, YAMLSyntaxError, load_yaml, parse_objects
from netsim.mesh.model import (
    ROOT_NAMESPACE,
    TLS_MODE_LABEL,
    UNSPECIFIED,
    ContainerPort,
    Destination,
    DestinationRule,
    EgressListener,
    Endpoint,
    HTTPRoute,
    L4Route,
    Labels,
    MeshConfig,
    MeshObjects,
    MeshService,
    PeerAuthentication,
    PodInfo,
    Protocol,
    Resolution,
    ServicePort,
    Sidecar,
    Subset,
    TrafficTLS,
    VirtualService,
    is_ip,
    selects,
)

CLUSTER_DOMAIN = "cluster.local"
# kinds read but without effect on a hop
IGNORED_KINDS = frozenset({"Namespace", "ConfigMap", "Secret", "ServiceAccount", "Gateway", "EnvoyFilter",
                           "AuthorizationPolicy", "RequestAuthentication", "WorkloadGroup", "Telemetry",
                           "ProxyConfig", "WasmPlugin", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                           "Ingress", "NetworkPolicy", "ClusterRole", "ClusterRoleBinding", "Role",
                           "RoleBinding", "IstioOperator", "CustomResourceDefinition"})
MESH_KINDS = frozenset({"Service", "Endpoints", "EndpointSlice", "ServiceEntry", "WorkloadEntry", "VirtualService",
                        "DestinationRule", "PeerAuthentication", "Sidecar", "MeshPolicy", "Policy",
                        *POD_TEMPLATE_PATHS})
_PA_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
_TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
_PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "grpc": Protocol.GRPC, "grpc-web": Protocol.GRPC_WEB,
              "http": Protocol.HTTP, "http_proxy": Protocol.HTTP_PROXY, "http2": Protocol.HTTP2,
              "https": Protocol.HTTPS, "tls": Protocol.TLS, "mongo": Protocol.MONGO, "redis": Protocol.REDIS,
              "mysql": Protocol.MYSQL}
# ports that default to TCP instead of sniffing (server-first protocols), ConvertProtocol
_WELL_KNOWN_TCP = frozenset({25, 53, 3306, 27017})
DNS_CAPTURE = "ISTIO_META_DNS_CAPTURE"
DNS_AUTO_ALLOCATE = "ISTIO_META_DNS_AUTO_ALLOCATE"
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"


# ---------------------------------------------------------------------------------------------
# text → K8sObject

def parse_text(text: str, source: str, *, default_namespace: str = "default") -> LoadResult:
    """Every object in ``text`` (multi-document, ``List`` kinds), with the broken documents as errors.

    :func:`netsim.k8s.parse_objects` with ``keep_going``: one broken document does not hide the others.
    """
    return parse_objects(text, source, default_namespace=default_namespace, keep_going=True)


# ---------------------------------------------------------------------------------------------
# small field readers (each raises obj.error(field, ...))

def _map(obj: K8sObject, data: Any, path: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise obj.error(path, f"must be a mapping, got {type(data).__name__}")
    return data


def _list(obj: K8sObject, data: Any, path: str) -> list[Any]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise obj.error(path, f"must be a list, got {type(data).__name__}")
    return data


def _strs(obj: K8sObject, data: Any, path: str) -> tuple[str, ...]:
    items = _list(obj, data, path)
    for i, v in enumerate(items):
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise obj.error(f"{path}[{i}]", f"must be a string, got {v!r}")
    return tuple(str(v) for v in items)


def _labels(obj: K8sObject, data: Any, path: str) -> Labels:
    m = _map(obj, data, path)
    return tuple((str(k), str(v)) for k, v in m.items())


def _port(obj: K8sObject, value: Any, path: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise obj.error(path, f"must be a port number 1-65535, got {value!r}")
    return value


def _direct_status(obj: K8sObject, value: Any, path: str) -> int | None:
    """A VirtualService directResponse status: 200-599, as Istio's validation (validateHTTPDirectResponse)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 200 <= value <= 599:
        raise obj.error(path, f"must be an HTTP status 200-599, got {value!r}")
    return value


def _one_of(obj: K8sObject, value: Any, path: str, choices: tuple[str, ...]) -> str:
    """``value`` upper-cased, if it is one of ``choices`` (an Istio enum field)."""
    v = str(value).upper()
    if v not in choices:
        raise obj.error(path, f"must be one of {', '.join(choices)}, got {value!r}")
    return v


def _annotations(obj: K8sObject) -> Mapping[str, Any]:
    return _map(obj, (obj.body.get("metadata") or {}).get("annotations"), "metadata.annotations")


def fqdn(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """Istio's ResolveShortnameToFQDN: only dotless names are expanded."""
    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.svc.{domain}"


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


# ---------------------------------------------------------------------------------------------
# conversion

class _Converter:
    def __init__(self, objects: Sequence[K8sObject], domain: str) -> None:
        self.domain = domain
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
            owner = str(o.labels.get("kubernetes.io/service-name", ""))
            self.slices.setdefault((o.namespace, owner), []).append(o)
        self.endpoints_objs: dict[tuple[str, str], K8sObject] = {
            (o.namespace, o.name): o for o in self.by_kind.get("Endpoints", [])}

    def guard(self, obj: K8sObject, fn: Any) -> Any:
        try:
            return fn(obj)
        except NetsimError as e:
            self.errors.append(e if e.where else e.at(obj.where()))
            return None

    # -- pods ---------------------------------------------------------------------------------
    def pod(self, obj: K8sObject) -> PodInfo:
        path = POD_TEMPLATE_PATHS[obj.kind]
        tpl: Any = obj.body
        for key in path:
            tpl = tpl.get(key) if isinstance(tpl, Mapping) else None
        prefix = ".".join(path)
        tpl = _map(obj, tpl, prefix or "(object)")
        meta = _map(obj, tpl.get("metadata"), f"{prefix}.metadata" if prefix else "metadata")
        labels = _labels(obj, meta.get("labels"), "metadata.labels")
        ann = _labels(obj, meta.get("annotations"), "metadata.annotations")
        owner: Labels = ()
        if obj.kind != "Pod":
            owner = _labels(obj, (obj.body.get("metadata") or {}).get("annotations"), "metadata.annotations")
        spec = _map(obj, tpl.get("spec"), f"{prefix}.spec" if prefix else "spec")
        ports: list[ContainerPort] = []
        names: list[str] = []
        for i, c in enumerate(_list(obj, spec.get("containers"), "spec.containers")):
            c = _map(obj, c, f"spec.containers[{i}]")
            names.append(str(c.get("name", "")))
            for j, p in enumerate(_list(obj, c.get("ports"), f"spec.containers[{i}].ports")):
                p = _map(obj, p, f"spec.containers[{i}].ports[{j}]")
                if str(p.get("protocol", "TCP")).upper() == "UDP":
                    continue
                ports.append(ContainerPort(name=str(p.get("name", "")),
                                           port=_port(obj, p.get("containerPort"),
                                                      f"spec.containers[{i}].ports[{j}].containerPort")))
        ips: list[str] = []
        if obj.kind == "Pod":
            status = _map(obj, obj.body.get("status"), "status")
            for i, e in enumerate(_list(obj, status.get("podIPs"), "status.podIPs")):
                ip = e.get("ip") if isinstance(e, Mapping) else None
                if not isinstance(ip, str) or not is_ip(ip):
                    raise obj.error(f"status.podIPs[{i}].ip", f"not an IP address: {ip!r}")
                ips.append(ip)
            if not ips and status.get("podIP") is not None:
                ip = status.get("podIP")
                if not isinstance(ip, str) or not is_ip(ip):
                    raise obj.error("status.podIP", f"not an IP address: {ip!r}")
                ips.append(ip)
        sidecar, why = self.has_sidecar(obj.namespace, dict(labels), dict(ann), names)
        return PodInfo(name=obj.name, namespace=obj.namespace, kind=obj.kind, ips=tuple(ips), labels=labels,
                       annotations=ann, owner_annotations=owner, container_ports=tuple(ports), sidecar=sidecar,
                       sidecar_why=why, source=obj.source, where=obj.where(), body=obj.body)

    def has_sidecar(self, ns: str, labels: Mapping[str, str], ann: Mapping[str, str],
                    containers: Sequence[str]) -> tuple[bool, str]:
        mode = labels.get(TLS_MODE_LABEL)
        if mode is not None:
            return mode == "istio", f"label {TLS_MODE_LABEL}={mode}"
        if "istio-proxy" in containers:
            return True, "has an istio-proxy container"
        for src, m in (("label", labels), ("annotation", ann)):
            v = m.get("sidecar.istio.io/inject")
            if v is not None:
                return v.lower() == "true", f"{src} sidecar.istio.io/inject={v}"
        if "sidecar.istio.io/status" in ann:
            return True, "annotation sidecar.istio.io/status (injected)"
        nsl = self.ns_labels.get(ns)
        if nsl is not None:
            if nsl.get("istio-injection") == "enabled" or "istio.io/rev" in nsl:
                return True, f"namespace {ns} has injection enabled"
            return False, f"namespace {ns} has no injection label"
        return True, "assumed injected (no sidecar.istio.io/inject=false, no tlsMode label)"

    def endpoint_for(self, ip: str, where: str, extra: Labels = ()) -> Endpoint:
        pod = self.pod_by_ip.get(ip)
        if pod is None:
            return Endpoint(address=ip, labels=extra, workload=where)
        labels = dict(pod.labels)
        if pod.sidecar:
            labels.setdefault(TLS_MODE_LABEL, "istio")
        else:
            labels.pop(TLS_MODE_LABEL, None)
        return Endpoint(address=ip, labels=tuple(labels.items()), workload=f"Pod {pod.namespace}/{pod.name}")

    # -- Kubernetes Service -------------------------------------------------------------------
    def service(self, obj: K8sObject) -> list[MeshService]:
        spec = _map(obj, obj.body.get("spec"), "spec")
        ann = _annotations(obj)
        export = annotation_export_to(ann)
        ports = []
        for i, p in enumerate(_list(obj, spec.get("ports"), "spec.ports")):
            p = _map(obj, p, f"spec.ports[{i}]")
            num = _port(obj, p.get("port"), f"spec.ports[{i}].port")
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
                target = _port(obj, tp, f"spec.ports[{i}].targetPort")
            elif isinstance(tp, str):
                target = int(tp) if tp.isdigit() else tp
            else:
                raise obj.error(f"spec.ports[{i}].targetPort", f"must be a port number or name, got {tp!r}")
            ports.append(ServicePort(name=name, port=num, target_port=target,
                                     protocol=k8s_port_protocol(num, name, proto,
                                                                None if app is None else str(app))))
        hostname = f"{obj.name}.{obj.namespace}.svc.{self.domain}"
        selector = _labels(obj, spec.get("selector"), "spec.selector") or None
        base = dict(hostname=hostname, namespace=obj.namespace, name=obj.name, kind="Service",
                    ports=tuple(ports), creation=obj.created(), export_to=export, selector=selector,
                    where=obj.where())
        stype = spec.get("type", "ClusterIP")
        if stype == "ExternalName":
            ext = spec.get("externalName")
            if not isinstance(ext, str) or not ext:
                raise obj.error("spec.externalName", "missing (a type ExternalName Service needs it)")
            return [MeshService(resolution=Resolution.DNS_LB, external_name=ext.rstrip("."), mesh_external=True,
                                **base)]  # type: ignore[arg-type]
        eps = tuple(self.k8s_endpoints(obj, selector))
        cip = spec.get("clusterIP")
        if cip == "None":
            return [MeshService(resolution=Resolution.PASSTHROUGH, headless=True, endpoints=eps,
                                **base)]  # type: ignore[arg-type]
        cips = _strs(obj, spec.get("clusterIPs"), "spec.clusterIPs") or ((str(cip),) if cip else ())
        if not cips:
            raise obj.error("spec.clusterIP", "missing (set the ClusterIP, or None for a headless Service)")
        for i, ip in enumerate(cips):
            if not is_ip(ip):
                raise obj.error(f"spec.clusterIPs[{i}]" if spec.get("clusterIPs") else "spec.clusterIP",
                                f"not an IP address: {ip!r}")
        return [MeshService(resolution=Resolution.CLIENT_SIDE_LB, address=cips[0], endpoints=eps,
                            **base)]  # type: ignore[arg-type]

    def k8s_endpoints(self, obj: K8sObject, selector: Labels | None) -> list[Endpoint]:
        out: list[Endpoint] = []
        seen: set[str] = set()
        slices = self.slices.get((obj.namespace, obj.name), [])
        for sl in slices:
            for i, e in enumerate(_list(sl, sl.body.get("endpoints"), "endpoints")):
                e = _map(sl, e, f"endpoints[{i}]")
                cond = e.get("conditions") or {}
                if isinstance(cond, Mapping) and cond.get("ready", True) is False:
                    continue
                for a in _strs(sl, e.get("addresses"), f"endpoints[{i}].addresses")[:1]:
                    if a not in seen:
                        seen.add(a)
                        out.append(self.endpoint_for(a, f"EndpointSlice {sl.namespace}/{sl.name}"))
        eo = self.endpoints_objs.get((obj.namespace, obj.name))
        if eo is not None:
            for i, subset in enumerate(_list(eo, eo.body.get("subsets"), "subsets")):
                subset = _map(eo, subset, f"subsets[{i}]")
                for j, a in enumerate(_list(eo, subset.get("addresses"), f"subsets[{i}].addresses")):
                    ip = str(_map(eo, a, f"subsets[{i}].addresses[{j}]").get("ip", ""))
                    if ip and ip not in seen:
                        seen.add(ip)
                        out.append(self.endpoint_for(ip, f"Endpoints {eo.namespace}/{eo.name}"))
        if slices or eo is not None:
            return out
        if selector:
            for pod in self.pods_by_ns.get(obj.namespace, []):
                if selects(selector, pod.label_map) and pod.ips and pod.ips[0] not in seen:
                    seen.add(pod.ips[0])
                    out.append(self.endpoint_for(pod.ips[0], ""))
        return out

    # -- Istio --------------------------------------------------------------------------------
    def service_entry(self, obj: K8sObject) -> list[MeshService]:
        spec = _map(obj, obj.body.get("spec"), "spec")
        hosts = _strs(obj, spec.get("hosts"), "spec.hosts")
        if not hosts:
            raise obj.error("spec.hosts", "a ServiceEntry needs at least one host")
        addresses = _strs(obj, spec.get("addresses"), "spec.addresses")
        for i, a in enumerate(addresses):
            try:
                ipaddress.ip_network(a, strict=False)
            except ValueError:
                raise obj.error(f"spec.addresses[{i}]", f"not an IP address or CIDR: {a!r}") from None
        resolution = se_resolution(obj, spec)
        location = str(spec.get("location") or "MESH_EXTERNAL").upper()
        if location not in ("MESH_EXTERNAL", "MESH_INTERNAL"):
            raise obj.error("spec.location", f"must be MESH_EXTERNAL or MESH_INTERNAL, got {location!r}")
        ports = []
        for i, p in enumerate(_list(obj, spec.get("ports"), "spec.ports")):
            p = _map(obj, p, f"spec.ports[{i}]")
            num = _port(obj, p.get("number"), f"spec.ports[{i}].number")
            tp = p.get("targetPort")
            ports.append(ServicePort(name=str(p.get("name") or ""), port=num,
                                     protocol=parse_protocol(str(p.get("protocol") or "")),
                                     target_port=_port(obj, tp, f"spec.ports[{i}].targetPort") if tp else None))
        eps: list[Endpoint] = []
        for i, e in enumerate(_list(obj, spec.get("endpoints"), "spec.endpoints")):
            e = _map(obj, e, f"spec.endpoints[{i}]")
            addr = e.get("address")
            if not isinstance(addr, str) or not addr:
                raise obj.error(f"spec.endpoints[{i}].address", "missing")
            eports = tuple((str(k), _port(obj, v, f"spec.endpoints[{i}].ports.{k}"))
                           for k, v in _map(obj, e.get("ports"), f"spec.endpoints[{i}].ports").items())
            labels = _labels(obj, e.get("labels"), f"spec.endpoints[{i}].labels")
            ep = self.endpoint_for(addr, f"ServiceEntry {obj.namespace}/{obj.name} endpoint", labels)
            eps.append(Endpoint(address=ep.address, labels=ep.labels, workload=ep.workload, ports=eports))
        sel_raw = spec.get("workloadSelector")
        selector: Labels | None = None
        if sel_raw is not None:
            selector = _labels(obj, _map(obj, sel_raw, "spec.workloadSelector").get("labels"),
                               "spec.workloadSelector.labels")
            eps.extend(self.selected_workloads(obj, selector))
        export = _strs(obj, spec.get("exportTo"), "spec.exportTo")
        out = []
        creation = obj.created()
        for h in hosts:
            for a in addresses or (UNSPECIFIED,):
                out.append(MeshService(hostname=h, namespace=obj.namespace, name=obj.name, kind="ServiceEntry",
                                       resolution=resolution, address=a, ports=tuple(ports),
                                       endpoints=tuple(eps), creation=creation, export_to=export,
                                       mesh_external=location == "MESH_EXTERNAL", selector=selector,
                                       where=obj.where()))
        return out

    def selected_workloads(self, obj: K8sObject, selector: Labels) -> list[Endpoint]:
        out: list[Endpoint] = []
        for we in self.by_kind.get("WorkloadEntry", []):
            if we.namespace != obj.namespace:
                continue
            spec = _map(we, we.body.get("spec"), "spec")
            labels = _labels(we, spec.get("labels"), "spec.labels") or tuple(we.labels.items())
            addr = spec.get("address")
            if selects(selector, dict(labels)) and isinstance(addr, str) and addr:
                eports = tuple((str(k), _port(we, v, f"spec.ports.{k}"))
                               for k, v in _map(we, spec.get("ports"), "spec.ports").items())
                out.append(Endpoint(address=addr, labels=labels, workload=f"WorkloadEntry {we.namespace}/{we.name}",
                                    ports=eports))
        for pod in self.pods_by_ns.get(obj.namespace, []):
            if selects(selector, pod.label_map) and pod.ips:
                out.append(self.endpoint_for(pod.ips[0], ""))
        return out

    def virtual_service(self, obj: K8sObject) -> VirtualService:
        spec = _map(obj, obj.body.get("spec"), "spec")
        hosts = tuple(fqdn(h, obj.namespace, self.domain) for h in _strs(obj, spec.get("hosts"), "spec.hosts"))
        if not hosts:
            raise obj.error("spec.hosts", "a VirtualService needs at least one host")

        def dest(d: Any, path: str) -> Destination:
            d = _map(obj, d, path)
            host = d.get("host")
            if not isinstance(host, str) or not host:
                raise obj.error(f"{path}.host", "missing")
            port = _map(obj, d.get("port"), f"{path}.port").get("number")
            return Destination(host=fqdn(host, obj.namespace, self.domain), subset=str(d.get("subset") or ""),
                               port=_port(obj, port, f"{path}.port.number") if port is not None else None)

        http = []
        for i, r in enumerate(_list(obj, spec.get("http"), "spec.http")):
            r = _map(obj, r, f"spec.http[{i}]")
            matches: list[tuple[str, str]] = []
            mports: list[int] = []
            for j, m in enumerate(_list(obj, r.get("match"), f"spec.http[{i}].match")):
                m = _map(obj, m, f"spec.http[{i}].match[{j}]")
                uri = _map(obj, m.get("uri"), f"spec.http[{i}].match[{j}].uri")
                for kind in ("prefix", "exact", "regex"):
                    if kind in uri:
                        matches.append((kind, str(uri[kind])))
                if not uri:
                    matches.append(("prefix", "/"))
                if m.get("port") is not None:
                    mports.append(_port(obj, m.get("port"), f"spec.http[{i}].match[{j}].port"))
            routes = _list(obj, r.get("route"), f"spec.http[{i}].route")
            direct = _map(obj, r.get("directResponse"), f"spec.http[{i}].directResponse").get("status")
            http.append(HTTPRoute(name=str(r.get("name") or ""), matches=tuple(matches), ports=tuple(mports),
                                  destination=dest(_map(obj, routes[0], f"spec.http[{i}].route[0]").get(
                                      "destination"), f"spec.http[{i}].route[0].destination") if routes else None,
                                  direct_status=_direct_status(obj, direct, f"spec.http[{i}].directResponse.status")))
        l4: dict[str, list[L4Route]] = {"tcp": [], "tls": []}
        for key in ("tcp", "tls"):
            for i, r in enumerate(_list(obj, spec.get(key), f"spec.{key}")):
                r = _map(obj, r, f"spec.{key}[{i}]")
                ports: list[int] = []
                sni: list[str] = []
                for j, m in enumerate(_list(obj, r.get("match"), f"spec.{key}[{i}].match")):
                    m = _map(obj, m, f"spec.{key}[{i}].match[{j}]")
                    if m.get("port") is not None:
                        ports.append(_port(obj, m["port"], f"spec.{key}[{i}].match[{j}].port"))
                    sni.extend(_strs(obj, m.get("sniHosts"), f"spec.{key}[{i}].match[{j}].sniHosts"))
                routes = _list(obj, r.get("route"), f"spec.{key}[{i}].route")
                if not routes:
                    raise obj.error(f"spec.{key}[{i}].route", "needs at least one destination")
                l4[key].append(L4Route(ports=tuple(ports), sni=tuple(sni), destination=dest(
                    _map(obj, routes[0], f"spec.{key}[{i}].route[0]").get("destination"),
                    f"spec.{key}[{i}].route[0].destination")))
        return VirtualService(name=obj.name, namespace=obj.namespace, hosts=hosts,
                              gateways=_strs(obj, spec.get("gateways"), "spec.gateways"),
                              export_to=_strs(obj, spec.get("exportTo"), "spec.exportTo"), http=tuple(http),
                              tcp=tuple(l4["tcp"]), tls=tuple(l4["tls"]), where=obj.where())

    def traffic_tls(self, obj: K8sObject, tp: Any, path: str) -> TrafficTLS:
        tp = _map(obj, tp, path)
        mode = self.tls_mode(obj, _map(obj, tp.get("tls"), f"{path}.tls").get("mode"), f"{path}.tls.mode")
        ports = []
        for i, pls in enumerate(_list(obj, tp.get("portLevelSettings"), f"{path}.portLevelSettings")):
            pls = _map(obj, pls, f"{path}.portLevelSettings[{i}]")
            num = _map(obj, pls.get("port"), f"{path}.portLevelSettings[{i}].port").get("number")
            pm = self.tls_mode(obj, _map(obj, pls.get("tls"), f"{path}.portLevelSettings[{i}].tls").get("mode"),
                               f"{path}.portLevelSettings[{i}].tls.mode")
            if pm is not None:
                ports.append((_port(obj, num, f"{path}.portLevelSettings[{i}].port.number"), pm))
        lb = _map(obj, tp.get("loadBalancer"), f"{path}.loadBalancer")
        return TrafficTLS(mode=mode, ports=tuple(ports), passthrough_lb=str(lb.get("simple", "")) == "PASSTHROUGH")

    def tls_mode(self, obj: K8sObject, value: Any, path: str) -> str | None:
        return None if value is None else _one_of(obj, value, path, _TLS_MODES)

    def destination_rule(self, obj: K8sObject) -> DestinationRule:
        spec = _map(obj, obj.body.get("spec"), "spec")
        host = spec.get("host")
        if not isinstance(host, str) or not host:
            raise obj.error("spec.host", "missing")
        subsets = []
        for i, s in enumerate(_list(obj, spec.get("subsets"), "spec.subsets")):
            s = _map(obj, s, f"spec.subsets[{i}]")
            subsets.append(Subset(name=str(s.get("name") or ""), labels=_labels(obj, s.get("labels"),
                                                                                 f"spec.subsets[{i}].labels"),
                                  tls=self.traffic_tls(obj, s.get("trafficPolicy"),
                                                       f"spec.subsets[{i}].trafficPolicy")))
        sel = spec.get("workloadSelector")
        return DestinationRule(name=obj.name, namespace=obj.namespace, host=fqdn(host, obj.namespace, self.domain),
                               export_to=_strs(obj, spec.get("exportTo"), "spec.exportTo"),
                               tls=self.traffic_tls(obj, spec.get("trafficPolicy"), "spec.trafficPolicy"),
                               subsets=tuple(subsets), where=obj.where(),
                               selector=_labels(obj, _map(obj, sel, "spec.workloadSelector").get("matchLabels"),
                                                "spec.workloadSelector.matchLabels") if sel else None)

    def pa_mode(self, obj: K8sObject, value: Any, path: str) -> str:
        return _one_of(obj, value or "UNSET", path, _PA_MODES)

    def peer_authentication(self, obj: K8sObject) -> PeerAuthentication:
        spec = _map(obj, obj.body.get("spec"), "spec")
        sel = spec.get("selector")
        ports = []
        for k, v in _map(obj, spec.get("portLevelMtls"), "spec.portLevelMtls").items():
            ports.append((_port(obj, k, f"spec.portLevelMtls.{k}"),
                          self.pa_mode(obj, _map(obj, v, f"spec.portLevelMtls.{k}").get("mode"),
                                       f"spec.portLevelMtls.{k}.mode")))
        return PeerAuthentication(
            name=obj.name, namespace=obj.namespace, where=obj.where(),
            selector=_labels(obj, _map(obj, sel, "spec.selector").get("matchLabels"),
                             "spec.selector.matchLabels") or None if sel else None,
            mode=self.pa_mode(obj, _map(obj, spec.get("mtls"), "spec.mtls").get("mode"), "spec.mtls.mode"),
            ports=tuple(ports))

    def legacy_policy(self, obj: K8sObject) -> PeerAuthentication:
        """authentication.istio.io/v1alpha1 MeshPolicy/Policy (≤1.4): peers[].mtls → STRICT/PERMISSIVE."""
        spec = _map(obj, obj.body.get("spec"), "spec")
        mode = "DISABLE"
        for i, p in enumerate(_list(obj, spec.get("peers"), "spec.peers")):
            p = _map(obj, p, f"spec.peers[{i}]")
            if "mtls" in p:
                m = _map(obj, p.get("mtls"), f"spec.peers[{i}].mtls")
                mode = "PERMISSIVE" if str(m.get("mode", "STRICT")).upper() == "PERMISSIVE" else "STRICT"
        if spec.get("targets"):
            raise obj.error("spec.targets", "service-targeted Policies are not modelled; use a namespace Policy")
        ns = obj.namespace
        if obj.kind == "MeshPolicy":
            ns = ""  # cluster scoped: the mesh-wide policy
        return PeerAuthentication(name=obj.name, namespace=ns, mode=mode, kind=obj.kind, where=obj.where())

    def sidecar(self, obj: K8sObject) -> Sidecar:
        spec = _map(obj, obj.body.get("spec"), "spec")
        egress = []
        for i, e in enumerate(_list(obj, spec.get("egress"), "spec.egress")):
            e = _map(obj, e, f"spec.egress[{i}]")
            port = _map(obj, e.get("port"), f"spec.egress[{i}].port")
            hosts = _strs(obj, e.get("hosts"), f"spec.egress[{i}].hosts")
            if not hosts:
                raise obj.error(f"spec.egress[{i}].hosts", "needs at least one namespace/host")
            egress.append(EgressListener(port=_port(obj, port["number"], f"spec.egress[{i}].port.number")
                                         if port.get("number") is not None else None,
                                         protocol=str(port.get("protocol") or ""), hosts=hosts))
        otp = _map(obj, spec.get("outboundTrafficPolicy"), "spec.outboundTrafficPolicy").get("mode")
        sel = spec.get("workloadSelector")
        return Sidecar(name=obj.name, namespace=obj.namespace, egress=tuple(egress), where=obj.where(),
                       outbound_policy=str(otp).upper() if otp else None,
                       selector=_labels(obj, _map(obj, sel, "spec.workloadSelector").get("labels"),
                                        "spec.workloadSelector.labels") if sel else None)


def convert(objects: Iterable[K8sObject], *, domain: str = CLUSTER_DOMAIN,
            errors: Sequence[NetsimError] = ()) -> MeshObjects:
    """Typed mesh objects from ``objects``; each bad or unknown object becomes an error and is skipped.

    Services come out in push-context order: creation time, then hostname, then namespace
    (``SortServicesByCreationTime``).
    """
    objs = list(objects)
    c = _Converter(objs, domain)
    services: list[MeshService] = []
    vss: list[VirtualService] = []
    drs: list[DestinationRule] = []
    pas: list[PeerAuthentication] = []
    scs: list[Sidecar] = []
    # kind -> (reader, where its value goes); Service and ServiceEntry give several services each
    readers: dict[str, tuple[Any, Any]] = {
        "Service": (c.service, services.extend), "ServiceEntry": (c.service_entry, services.extend),
        "VirtualService": (c.virtual_service, vss.append), "DestinationRule": (c.destination_rule, drs.append),
        "PeerAuthentication": (c.peer_authentication, pas.append), "Sidecar": (c.sidecar, scs.append)}
    for o in objs:
        k = o.kind
        if k in ("MeshPolicy", "Policy") and o.group == "authentication.istio.io":
            read, keep = c.legacy_policy, pas.append
        elif k in readers:
            read, keep = readers[k]
        elif k in MESH_KINDS or k in IGNORED_KINDS:
            continue
        else:
            c.errors.append(ConfigError(
                f"kind: {k!r} is not a kind netsim mesh reads (Service, EndpointSlice, Pod or a workload, "
                "ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication, Sidecar); "
                "skipped", where=o.where()))
            continue
        value = c.guard(o, read)
        if value is not None:
            keep(value)
    services.sort(key=lambda s: (int(s.creation), s.hostname, s.namespace))
    return MeshObjects(services=tuple(services), virtual_services=tuple(vss), destination_rules=tuple(drs),
                       peer_authentications=tuple(pas), sidecars=tuple(scs), pods=tuple(c.pods),
                       namespaces=tuple((n, tuple(lbl.items())) for n, lbl in c.ns_labels.items()),
                       errors=(*errors, *c.errors),
                       alloc_inputs=tuple(o for o in objs if o.kind in ("ServiceEntry", "WorkloadEntry")))


# ---------------------------------------------------------------------------------------------
# mesh config and proxy metadata

def parse_mesh_config(data: Any, source: str) -> MeshConfig:
    """MeshConfig from a parsed YAML value: the MeshConfig itself, a ConfigMap with ``data.mesh``, or an
    IstioOperator (``spec.meshConfig``). Raises ConfigError naming the field."""
    if data is None:
        return MeshConfig(source=source)
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mesh config mapping", where=source)
    if data.get("kind") == "ConfigMap":
        text = (data.get("data") or {}).get("mesh")
        if not isinstance(text, str):
            raise ConfigError("field data.mesh: missing (expected the istio ConfigMap)", where=source)
        try:
            data = load_yaml(text) or {}
        except YAMLSyntaxError as e:
            raise ConfigError(f"field data.mesh: invalid YAML: {e.problem}", where=source) from None
    elif data.get("kind") == "IstioOperator":
        data = (data.get("spec") or {}).get("meshConfig") or {}
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mesh config mapping", where=source)
    otp = data.get("outboundTrafficPolicy") or {}
    if not isinstance(otp, Mapping):
        raise ConfigError("field outboundTrafficPolicy: must be a mapping", where=source)
    mode = str(otp.get("mode") or "ALLOW_ANY").upper()
    if mode not in ("ALLOW_ANY", "REGISTRY_ONLY"):
        raise ConfigError(f"field outboundTrafficPolicy.mode: must be ALLOW_ANY or REGISTRY_ONLY, got {mode!r}",
                          where=source)
    auto = data.get("enableAutoMtls")
    if auto is not None and not isinstance(auto, bool):
        raise ConfigError(f"field enableAutoMtls: must be true or false, got {auto!r}", where=source)
    dc = data.get("defaultConfig") or {}
    if not isinstance(dc, Mapping):
        raise ConfigError("field defaultConfig: must be a mapping", where=source)
    pm = dc.get("proxyMetadata") or {}
    if not isinstance(pm, Mapping):
        raise ConfigError("field defaultConfig.proxyMetadata: must be a mapping", where=source)
    return MeshConfig(outbound_policy=mode, enable_auto_mtls=auto,
                      root_namespace=str(data.get("rootNamespace") or ROOT_NAMESPACE),
                      proxy_metadata=tuple((str(k), str(v)) for k, v in pm.items()), source=source)


def proxy_metadata(mesh: MeshConfig, pod: PodInfo | None) -> tuple[dict[str, str], str]:
    """The proxy's metadata: mesh ``defaultConfig.proxyMetadata`` overlaid by the pod's
    ``proxy.istio.io/config`` annotation. Returns (metadata, where each came from)."""
    md = dict(mesh.proxy_metadata)
    origin = f"{mesh.source} defaultConfig.proxyMetadata" if md else ""
    if pod is not None:
        raw = pod.annotation_map.get(PROXY_CONFIG_ANNOTATION)
        if raw:
            try:
                pc = load_yaml(raw)
            except YAMLSyntaxError as e:
                raise ConfigError(f"annotation {PROXY_CONFIG_ANNOTATION}: invalid YAML: {e.problem}",
                                  where=pod.where) from None
            meta = pc.get("proxyMetadata") if isinstance(pc, Mapping) else None
            if isinstance(meta, Mapping) and meta:
                md.update({str(k): str(v) for k, v in meta.items()})
                origin = f"{pod.ref} annotation {PROXY_CONFIG_ANNOTATION}" + (f" over {origin}" if origin else "")
    return md, origin


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1", "yes", "on")


__all__ = [
    "CLUSTER_DOMAIN",
    "DNS_AUTO_ALLOCATE",
    "DNS_CAPTURE",
    "PROXY_CONFIG_ANNOTATION",
    "convert",
    "fqdn",
    "k8s_port_protocol",
    "parse_mesh_config",
    "parse_protocol",
    "parse_text",
    "proxy_metadata",
    "truthy",
]
