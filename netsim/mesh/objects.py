"""Kubernetes/Istio objects → typed mesh objects (pure: text in, values out).

Owns: reading YAML text so that one broken document does not hide the others (:func:`parse_text`,
through :mod:`netsim.k8s`), converting :class:`~netsim.k8s.K8sObject` values into
:class:`~netsim.mesh.model.MeshObjects` (:func:`convert`: services, endpoints and pods through the
service registry, ``netsim.registry``, and the routing and security kinds with its field readers,
``netsim.registry.fields``), reading the mesh config
(:func:`parse_mesh_config`; its ``defaultConfig.proxyMetadata`` is overlaid by the pod's annotation in
``netsim.spec.pod.proxy_metadata``, read through ``netsim.workload.Workload``).

Never does: open files (``netsim.mesh.files`` does, then calls :func:`parse_text`), or build
listeners. Every bad object becomes one ConfigError located at file, document, kind ns/name and
field, and is skipped; the rest still load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from netsim.errors import ConfigError, NetsimError
from netsim.k8s import POD_TEMPLATE_PATHS, K8sObject, LoadResult, YAMLSyntaxError, load_yaml, parse_objects
from netsim.mesh.model import (
    ROOT_NAMESPACE,
    Destination,
    DestinationRule,
    EgressListener,
    HTTPRoute,
    L4Route,
    MeshConfig,
    MeshObjects,
    PeerAuthentication,
    Sidecar,
    Subset,
    TrafficTLS,
    VirtualService,
)
from netsim.registry import build_registry
from netsim.registry.convert import CLUSTER_DOMAIN
from netsim.registry.fields import guarded
from netsim.registry.fields import http_status as _direct_status
from netsim.registry.fields import items as _list
from netsim.registry.fields import labels as _labels
from netsim.registry.fields import mapping as _map
from netsim.registry.fields import one_of as _one_of
from netsim.registry.fields import port as _port
from netsim.registry.fields import strings as _strs

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


# ---------------------------------------------------------------------------------------------
# text → K8sObject

def parse_text(text: str, source: str, *, default_namespace: str = "default") -> LoadResult:
    """Every object in ``text`` (multi-document, ``List`` kinds), with the broken documents as errors.

    :func:`netsim.k8s.parse_objects` with ``keep_going``: one broken document does not hide the others.
    """
    return parse_objects(text, source, default_namespace=default_namespace, keep_going=True)


def fqdn(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """Istio's ResolveShortnameToFQDN: only dotless names are expanded."""
    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.svc.{domain}"


# ---------------------------------------------------------------------------------------------
# conversion

class _Converter:
    """Routing and security config: VirtualService, DestinationRule, PeerAuthentication, Sidecar."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.errors: list[NetsimError] = []

    def guard(self, obj: K8sObject, fn: Any) -> Any:
        return guarded(self.errors, obj, fn)

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
                              tcp=tuple(l4["tcp"]), tls=tuple(l4["tls"]), where=obj.where(), origin=obj.origin)

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
                               subsets=tuple(subsets), where=obj.where(), origin=obj.origin,
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
            name=obj.name, namespace=obj.namespace, where=obj.where(), origin=obj.origin,
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
        return PeerAuthentication(name=obj.name, namespace=ns, mode=mode, kind=obj.kind, where=obj.where(),
                                  origin=obj.origin)

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
                       origin=obj.origin,
                       outbound_policy=str(otp).upper() if otp else None,
                       selector=_labels(obj, _map(obj, sel, "spec.workloadSelector").get("labels"),
                                        "spec.workloadSelector.labels") if sel else None)


def convert(objects: Iterable[K8sObject], *, domain: str = CLUSTER_DOMAIN,
            errors: Sequence[NetsimError] = ()) -> MeshObjects:
    """Typed mesh objects from ``objects``; each bad or unknown object becomes an error and is skipped.

    Services, endpoints and pods come from the service registry (:func:`netsim.registry.build_registry`,
    the converter ``netsim dns`` uses too), in push-context order; the routing and security kinds are
    read here.
    """
    objs = list(objects)
    reg = build_registry(objs, domain=domain)
    c = _Converter(domain)
    vss: list[VirtualService] = []
    drs: list[DestinationRule] = []
    pas: list[PeerAuthentication] = []
    scs: list[Sidecar] = []
    readers: dict[str, tuple[Any, Any]] = {
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
    return MeshObjects(services=reg.services, virtual_services=tuple(vss), destination_rules=tuple(drs),
                       peer_authentications=tuple(pas), sidecars=tuple(scs), pods=reg.pods,
                       namespaces=reg.namespaces, errors=(*errors, *reg.errors, *c.errors))


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


__all__ = [
    "CLUSTER_DOMAIN",
    "convert",
    "fqdn",
    "parse_mesh_config",
    "parse_text",
]
