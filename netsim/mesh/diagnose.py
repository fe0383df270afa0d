"""``netsim diagnose``: one workload checked for the known capture pitfalls, each with evidence and a fix.

Owns: the checks (issue 8 §4, issue 11 §6, spec/istio-mesh-hops.md section 6) as pure functions over a
:class:`~netsim.mesh.build.ProxyIndex` built for the workload's own sidecar, the :class:`Finding`,
:class:`Evidence` and :class:`Report` values, and their text/JSON renderers. Checks that are about a
connection ask :func:`netsim.mesh.hop.hop` (``netsim mesh hop``'s own decision), never a second model.

Checks, in report order. The codes are stable, for scripts (as ``istioctl analyze``'s IST codes); a
code is never reused for another check:

| code   | name                                | sev.    | what |
|--------|-------------------------------------|---------|------|
| NS0001 | inbound-port-not-captured           | error   | a port the workload serves bypasses its sidecar |
| NS0002 | annotations-on-workload-metadata    | error   | Istio annotations on the workload, not its template |
| NS0003 | wildcard-tcp-listener               | error   | match-all 0.0.0.0_PORT TCP chain on a used port |
| NS0004 | mtls-to-pod-without-sidecar         | error   | Istio mTLS to a pod (port) without a sidecar |
| NS0005 | headless-mixed-sidecars             | warning | headless endpoints with and without a sidecar |
| NS0006 | strict-mtls-callers-without-sidecar | warning | the workload is STRICT and pods without a sidecar exist |
| NS0007 | serviceentry-host-unresolvable      | warning | a ServiceEntry host without addresses is NXDOMAIN here |
| NS0008 | dns-not-captured                    | error   | the app's nameserver is not redirected |
| NS0009 | plaintext-to-strict-peer            | error   | passthrough/ORIGINAL_DST plaintext to a STRICT peer (reset) |
| NS0010 | serviceentry-host-in-two-namespaces | warning | one host defined in two namespaces, both visible here |
| NS0011 | cluster-without-endpoints           | warning | an EDS cluster with no endpoint among the objects read |
| NS0012 | sidecar-capture-setting-in-ambient  | warning | a sidecar capture setting on a pod enrolled in ambient |

Never does: IO, or guess: a check that needs what the files do not say stays silent.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netsim.istio_service import exported
from netsim.k8s import POD_TEMPLATE_PATHS, Origin
from netsim.mesh.build import BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, ProxyIndex, peer_mode, resolve_target_port
from netsim.mesh.hop import capture_resolution, hop, no_endpoints_note, port_captured
from netsim.mesh.model import (
    UNSPECIFIED,
    Connection,
    Direction,
    MeshService,
    PodInfo,
    Protocol,
    Resolution,
    Send,
    Verdict,
    selects,
)
from netsim.spec.ambient import ANN_REROUTE as REROUTE_VIRTUAL_INTERFACES
from netsim.workload.identity import DNS_PORT, INBOUND_PORT, OTHER_PORTS, OUTBOUND_PORT, TUNNEL_PORT

ISTIO_PREFIXES = ("sidecar.istio.io/", "traffic.sidecar.istio.io/", "proxy.istio.io/", "status.sidecar.istio.io/",
                  "readiness.status.sidecar.istio.io/", "istio.io/rev")
_PUBLIC_TLD = re.compile(r"\.(com|org|net|io|dev|cloud|app|co|edu|gov|info|biz|[a-z]{2})$")
_IP_RE = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b")
# the hops a check asks mesh hop about, at most, per check (a StatefulSet of 500 pods needs no 500 hops)
MAX_HOPS_PER_CHECK = 64

# name → stable code, in report order (the table above)
CODES: dict[str, str] = {
    "inbound-port-not-captured": "NS0001",
    "annotations-on-workload-metadata": "NS0002",
    "wildcard-tcp-listener": "NS0003",
    "mtls-to-pod-without-sidecar": "NS0004",
    "headless-mixed-sidecars": "NS0005",
    "strict-mtls-callers-without-sidecar": "NS0006",
    "serviceentry-host-unresolvable": "NS0007",
    "dns-not-captured": "NS0008",
    "plaintext-to-strict-peer": "NS0009",
    "serviceentry-host-in-two-namespaces": "NS0010",
    "cluster-without-endpoints": "NS0011",
    "sidecar-capture-setting-in-ambient": "NS0012",
}
# name → what it finds, one line (the table above; SARIF's rule descriptions)
SUMMARIES: dict[str, str] = {
    "inbound-port-not-captured": "a port the workload serves bypasses its sidecar",
    "annotations-on-workload-metadata": "Istio annotations on the workload's own metadata, not its pod template",
    "wildcard-tcp-listener": "a match-all 0.0.0.0_PORT TCP chain takes every connection on a port in use",
    "mtls-to-pod-without-sidecar": "a cluster sends Istio mTLS to a pod (or port) without a sidecar",
    "headless-mixed-sidecars": "a headless service mixes endpoints with and without a sidecar",
    "strict-mtls-callers-without-sidecar": "the workload is STRICT and workloads without a sidecar exist",
    "serviceentry-host-unresolvable": "a ServiceEntry host without addresses is NXDOMAIN for this workload",
    "dns-not-captured": "DNS capture is on but the app's nameserver is not redirected",
    "plaintext-to-strict-peer": "plaintext (passthrough or ORIGINAL_DST) to a STRICT peer is reset",
    "serviceentry-host-in-two-namespaces": "one host defined in two namespaces, both visible to this workload",
    "cluster-without-endpoints": "an EDS cluster without an endpoint among the objects read",
    "sidecar-capture-setting-in-ambient": "a pod enrolled in ambient carries a sidecar capture setting it ignores",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """One object, rule or listener a finding rests on, and the file, document and line it came from (None
    for what netsim derived: a listener, an iptables argument), taken from the object's
    :class:`~netsim.k8s.Origin`."""

    what: str
    file: str | None = None
    document: int | None = None
    item: int | None = None  # the item of a ``List`` document
    line: int | None = None  # the line where the object's document (or its item) starts

    @classmethod
    def at(cls, origin: Origin, what: str) -> Evidence:
        return cls(what=what, file=origin.source, document=origin.document, item=origin.item, line=origin.line)

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "file": self.file, "document": self.document}

    def __str__(self) -> str:
        return f"{self.what} ({self.file}: document {self.document})" if self.file else self.what


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    check: str  # the stable code, NS0001...
    name: str  # the check's name, e.g. wildcard-tcp-listener
    severity: str  # error | warning
    message: str  # one sentence
    evidence: tuple[Evidence, ...]
    fix: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "name": self.name, "severity": self.severity, "message": self.message,
                "evidence": [e.to_json() for e in self.evidence], "fix": self.fix}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Draft:
    """A finding as a check writes it: evidence about an object read as :class:`Evidence` (:func:`_at`), the
    rest as text, located by :func:`diagnose` from the first object it names."""

    name: str
    severity: str
    message: str
    evidence: tuple[str | Evidence, ...]
    fix: str


def _at(obj: Any, detail: str = "") -> str | Evidence:
    """Evidence that is ``obj`` itself (a pod, a service, ...), or ``detail`` of it, located by the
    :class:`~netsim.k8s.Origin` it was read with; its ``where`` text when it was not read from a file."""
    origin: Origin | None = obj.origin
    if origin is None:
        return f"{obj.where}{detail}"
    return Evidence.at(origin, f"{origin.object}{detail}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    pod: str
    istio: str
    findings: tuple[Finding, ...]
    checks: tuple[str, ...]
    notes: tuple[str, ...] = ()


# the ports the sidecar itself listens on (Envoy admin 15000, the capture and tunnel listeners, pilot-agent's
# DNS, merged Prometheus, health and Envoy's stats): never the app's, though the injected istio-proxy container
# declares some of them (15090) and a metrics Service may target them
SIDECAR_PORTS = frozenset({15000, OUTBOUND_PORT, INBOUND_PORT, TUNNEL_PORT, DNS_PORT, *OTHER_PORTS})


def app_ports(pod: PodInfo) -> list[int]:
    """The TCP container ports of ``pod``'s app: its containerPorts without the sidecar's own."""
    return [cp.port for cp in pod.container_ports if cp.port not in SIDECAR_PORTS]


@dataclass(frozen=True, slots=True)
class _MeshFacts:
    """What the checks ask of every object read, computed once per :class:`MeshObjects` (a whole mesh's
    worth of workloads is diagnosed against one)."""

    owners: Mapping[tuple[str, str, str], PodInfo]  # (namespace, kind, name) → its top-level controller
    workloads: tuple[PodInfo, ...]  # controllers without an owner among the objects, and bare Pods
    used_ports: Mapping[int, str]  # a port the app of some workload serves → which workload (the first)
    without_sidecar: tuple[PodInfo, ...]  # workloads without a sidecar
    without_sidecar_keys: frozenset[tuple[str, str, str]]  # their (namespace, kind, name)
    services_by_ns: Mapping[str, tuple[MeshService, ...]]
    se_by_endpoint: Mapping[str, tuple[MeshService, ...]]
    position: Mapping[int, int]  # id(service) → its place in push-context order
    by_selector: Mapping[tuple[str, str, str], tuple[MeshService, ...]]  # (ns, k, v) of a selector's first pair


_FACTS: dict[int, tuple[Any, _MeshFacts]] = {}


def _owner_refs(pod: PodInfo) -> list[tuple[str, str]]:
    meta = pod.body.get("metadata") if isinstance(pod.body, Mapping) else None
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    return [(str(r.get("kind")), str(r.get("name"))) for r in refs or () if isinstance(r, Mapping)] \
        if isinstance(refs, list) else []


def top_level(pods: Iterable[PodInfo]) -> dict[tuple[str, str, str], PodInfo]:
    """Each pod or workload → the controller it is reported under: the first of its ``ownerReferences``
    found among ``pods`` (a Pod → its ReplicaSet → its Deployment; a Job → its CronJob), else itself."""
    pods = list(pods)
    by_key = {(p.namespace, p.kind, p.name): p for p in pods}
    out: dict[tuple[str, str, str], PodInfo] = {}
    for p in pods:
        cur, seen = p, {(p.namespace, p.kind, p.name)}
        while True:
            parent = next((by_key[(cur.namespace, k, n)] for k, n in _owner_refs(cur)
                           if (cur.namespace, k, n) in by_key), None)
            if parent is None or (parent.namespace, parent.kind, parent.name) in seen:
                break
            seen.add((parent.namespace, parent.kind, parent.name))
            cur = parent
        out[(p.namespace, p.kind, p.name)] = cur
    return out


def mesh_facts(objects: Any) -> _MeshFacts:
    """:class:`_MeshFacts` of ``objects`` (a :class:`~netsim.mesh.model.MeshObjects`), memoised."""
    hit = _FACTS.get(id(objects))
    if hit is not None and hit[0] is objects:
        return hit[1]
    owners = top_level(objects.pods)
    workloads = tuple(p for p in objects.pods if owners[(p.namespace, p.kind, p.name)] is p)
    used: dict[int, str] = {}
    for p in workloads:
        for port in app_ports(p):
            used.setdefault(port, f"port {port} of {p.ref}")
    by_ns: dict[str, list[MeshService]] = {}
    by_ep: dict[str, list[MeshService]] = {}
    by_sel: dict[tuple[str, str, str], list[MeshService]] = {}
    for s in objects.services:
        if s.selector:
            k, v = s.selector[0]
            by_sel.setdefault((s.namespace, k, v), []).append(s)
        by_ns.setdefault(s.namespace, []).append(s)
        if s.kind == "ServiceEntry":
            for e in s.endpoints:
                by_ep.setdefault(e.address, []).append(s)
    without = tuple(p for p in workloads if not p.sidecar)
    facts = _MeshFacts(owners=owners, workloads=workloads, used_ports=used, without_sidecar=without,
                       without_sidecar_keys=frozenset((p.namespace, p.kind, p.name) for p in without),
                       services_by_ns={k: tuple(v) for k, v in by_ns.items()},
                       se_by_endpoint={k: tuple(v) for k, v in by_ep.items()},
                       position={id(s): i for i, s in enumerate(objects.services)},
                       by_selector={k: tuple(v) for k, v in by_sel.items()})
    if len(_FACTS) >= 8:
        _FACTS.clear()
    _FACTS[id(objects)] = (objects, facts)
    return facts


_OBJECT_MEMO: dict[tuple[int, str], tuple[Any, Any]] = {}


def _per_objects(name: str, objects: Any, compute: Any) -> Any:
    """``compute()`` once per :class:`MeshObjects` (what depends on the objects read alone)."""
    key = (id(objects), name)
    hit = _OBJECT_MEMO.get(key)
    if hit is not None and hit[0] is objects:
        return hit[1]
    value = compute()
    if len(_OBJECT_MEMO) >= 64:
        _OBJECT_MEMO.clear()
    _OBJECT_MEMO[key] = (objects, value)
    return value


# drafts of the checks that depend on the proxy's view (its listeners and clusters), not on the pod: computed
# once per index, which workloads seeing the same config share (``netsim.check``), keyed by its clusters
_VIEW_DRAFTS: dict[tuple[int, str], tuple[Any, Any]] = {}


def _per_view(name: str, index: ProxyIndex, compute: Any) -> Any:
    key = (id(index.clusters), name)
    hit = _VIEW_DRAFTS.get(key)
    if hit is not None and hit[0] is index.clusters:
        return hit[1]
    drafts = compute()
    if len(_VIEW_DRAFTS) >= 4096:
        _VIEW_DRAFTS.clear()
    _VIEW_DRAFTS[key] = (index.clusters, drafts)
    return drafts


_REF = re.compile(r"(?P<kind>[A-Z][A-Za-z]+) (?P<name>(?:\(mesh\)|[a-z0-9][a-z0-9.-]*)/[a-z0-9][a-z0-9.-]*)")


def _locator(index: ProxyIndex) -> Any:
    """Evidence → :class:`Evidence`: text that names an object read (``Service shop/web port http``,
    ``listener 0.0.0.0_80 (from Service app/x)``) gets the file, document and line of the first object
    it names, from its :class:`~netsim.k8s.Origin`."""
    refs: dict[str, Origin | None] = {}
    o = index.objects
    for s in o.services:
        refs.setdefault(s.ref, s.origin)
        refs.setdefault(f"{s.kind} {s.namespace}/{s.name}", s.origin)
    for p in o.pods:
        refs.setdefault(p.ref, p.origin)
    for pa in o.peer_authentications:
        refs.setdefault(f"{pa.kind} {pa.namespace or '(mesh)'}/{pa.name}", pa.origin)

    def locate(item: str | Evidence) -> Evidence:
        if isinstance(item, Evidence):
            return item
        # the first object the text names ("Service app/app-ext port 80", "listener … (from Service x/y)")
        for named in _REF.finditer(item):
            ref = f"{named['kind']} {named['name']}"
            origin = refs.get(ref) or refs.get(ref.rstrip(".-"))
            if origin is not None:
                return Evidence.at(origin, item)
        return Evidence(what=item)

    return locate


def _selecting_services(index: ProxyIndex, pod: PodInfo) -> list[MeshService]:
    """The Services of the pod's namespace whose selector picks it, and the ServiceEntries that select it
    (workloadSelector) or list its address, in push-context order."""
    labels = pod.label_map
    facts = mesh_facts(index.objects)
    found = {id(s): s for k, v in pod.labels for s in facts.by_selector.get((pod.namespace, k, v), ())
             if selects(s.selector, labels)}
    for ip in pod.ips:
        found.update((id(s), s) for s in facts.se_by_endpoint.get(ip, ()))
    return sorted(found.values(), key=lambda s: facts.position[id(s)]) if len(found) > 1 else list(found.values())


_LAST_DECLARED: list[tuple[Any, PodInfo, dict[int, str]]] = []


def _declared_ports(index: ProxyIndex, pod: PodInfo) -> dict[int, str]:
    """The workload's TCP ports that a Service (or ServiceEntry) selecting it declares → which port declares
    them (not to be changed: the last pod's answer is kept for the other checks that ask)."""
    if _LAST_DECLARED and _LAST_DECLARED[0][0] is index.objects and _LAST_DECLARED[0][1] is pod:
        return _LAST_DECLARED[0][2]
    out: dict[int, str] = {}
    for s in _selecting_services(index, pod):
        for sp in s.ports:
            if sp.protocol is Protocol.UDP:
                continue
            tp = resolve_target_port(sp, pod)
            if tp is not None and tp not in SIDECAR_PORTS:
                out.setdefault(tp, f"{s.ref} port {sp.name or sp.port} ({sp.port} → {tp})")
    _LAST_DECLARED[:] = [(index.objects, pod, out)]
    return out


def _inbound_ports(index: ProxyIndex, pod: PodInfo) -> dict[int, str]:
    """Ports the workload serves → what declares them."""
    out = dict(_declared_ports(index, pod))
    for port in app_ports(pod):
        out.setdefault(port, f"{pod.ref} containerPort {port}")
    return out


def check_inbound_ports(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    if not pod.sidecar:
        return []
    out = []
    profile = index.profile
    for port, decl in sorted(_inbound_ports(index, pod).items()):
        ok, why = port_captured(pod, port, profile)
        if ok:
            continue
        ann = pod.annotation_map
        if "traffic.sidecar.istio.io/excludeInboundPorts" in ann and f"{port}" in \
                ann["traffic.sidecar.istio.io/excludeInboundPorts"].replace(" ", "").split(","):
            fix = f"remove {port} from the traffic.sidecar.istio.io/excludeInboundPorts annotation"
        elif "traffic.sidecar.istio.io/includeInboundPorts" in ann:
            fix = f"add {port} to the traffic.sidecar.istio.io/includeInboundPorts annotation (or set it to \"*\")"
        elif profile.version < (1, 3, 0):
            fix = (f"declare containerPort {port} in the pod template, or annotate "
                   f"traffic.sidecar.istio.io/includeInboundPorts: \"{port}\" (or upgrade: 1.3+ captures all ports)")
        else:
            fix = f"make sure port {port} is in the inbound capture list"
        out.append(_Draft(name="inbound-port-not-captured", severity="error",
                           message=(f"inbound capture misses it: {why}; a client sidecar that "
                                    "sends Istio mTLS (auto mTLS or an ISTIO_MUTUAL DestinationRule) reaches the app "
                                    "with TLS bytes → 503 connection failure, and STRICT mTLS is not enforced"),
                           evidence=(decl, _at(pod)), fix=fix))
    return out


def check_workload_annotations(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    if pod.kind == "Pod":
        return []
    template = pod.annotation_map
    out = []
    for k, v in pod.owner_annotations:
        if k.startswith(ISTIO_PREFIXES) and template.get(k) != v:
            out.append(_Draft(
                name="annotations-on-workload-metadata", severity="error",
                message=(f"annotation {k}: {v!r} is on the {pod.kind}'s own metadata; the injector reads only the "
                         "pod template's annotations, so it has no effect"
                         + (f" (the template says {template[k]!r})" if k in template else "")),
                evidence=(_at(pod, f": metadata.annotations.{k}"),),
                fix=f"move {k} to spec.template.metadata.annotations"))
    return out


def _used_port(index: ProxyIndex, pod: PodInfo, port: int) -> str | None:
    """Why ``port`` is one this pod connects to or serves: its own port, a port with its own ``ip_PORT``
    listener here, or a port some workload in the mesh serves (None: none of these)."""
    own = _inbound_ports(index, pod).get(port)
    if own is not None:
        return f"the workload's own port {port} ({own})"

    def exact() -> dict[int, str]:
        out: dict[int, str] = {}
        for (addr, p), ln in index.exact.items():
            out.setdefault(p, f"port {p} of {', '.join(ln.origins[:2])} ({addr})")
        return out

    found: str | None = _per_view("exact-ports", index, exact).get(port)
    if found is None:
        found = mesh_facts(index.objects).used_ports.get(port)
    return found


def _wildcard_catches(index: ProxyIndex) -> list[tuple[int, Any, Any, Any, MeshService]]:
    out = []
    for port, ln in sorted(index.wildcard.items()):
        catch = ln.default_chain if ln.default_chain is not None else (
            ln.chains[0] if len(ln.chains) == 1 and ln.chains[0].match_all else None)
        if catch is None or catch.is_http or catch.cluster in (PASSTHROUGH, BLACKHOLE, INBOUND_PASSTHROUGH, None):
            continue
        cl = index.clusters.get(catch.cluster)
        svc = cl.service if cl is not None else None
        if svc is None:
            continue
        out.append((port, ln, catch, cl, svc))
    return out


def check_wildcard_listeners(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    """A match-all TCP chain on ``0.0.0.0_PORT`` (a service without a VIP, an ExternalName before 1.21) on a
    port this workload serves or connects to, or that any workload in the mesh serves: its connections to
    any address on that port without an ``ip_PORT`` listener go to that one service."""
    out: list[_Draft] = []
    for port, ln, catch, cl, svc in _per_view("wildcard", index, lambda: _wildcard_catches(index)):
        used = _used_port(index, pod, port)
        if used is None:
            continue
        if svc.kind == "Service" and svc.external_name:
            how = f"ExternalName Service {svc.namespace}/{svc.name} → {svc.external_name}"
            fix = (f"drop port {port} from Service {svc.namespace}/{svc.name}, or annotate it "
                   "networking.istio.io/exportTo: \".\" so other namespaces do not get the listener, or upgrade to "
                   "Istio ≥1.21 (ExternalName becomes an alias: no listener)")
        else:
            how = f"{svc.ref} without a VIP (resolution {svc.resolution.value})"
            fix = (f"give {svc.kind} {svc.namespace}/{svc.name} addresses, or declare port {port} as HTTP (routed by "
                   "Host), or turn on DNS capture and auto-allocation (ISTIO_META_DNS_CAPTURE, "
                   "ISTIO_META_DNS_AUTO_ALLOCATE) so it gets a VIP listener, or limit it with exportTo")
        typ = f"{cl.type} {cl.target}".strip() if cl is not None else ""
        out.append(_Draft(
            name="wildcard-tcp-listener", severity="error",
            message=(f"0.0.0.0_{port} has a match-all TCP chain → {catch.cluster} ({typ}), created by {how}: every "
                     f"connection from this pod to any IP on port {port} without its own ip_{port} listener (pod IPs, "
                     "external IPs) is hijacked to that service"),
            evidence=(_at(svc), *ln.origins, f"listener 0.0.0.0_{port}: {catch.match_text()} → "
                      f"{catch.destination_text()} (from {svc.ref})", used),
            fix=fix))
    return out


def check_mtls_targets(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    return _per_view("mtls-targets", index, lambda: _mtls_targets(index))  # type: ignore[no-any-return]


def _mtls_targets(index: ProxyIndex) -> list[_Draft]:
    out = []
    seen: set[str] = set()
    for cl in index.clusters.values():
        if cl.service is None or cl.tls not in ("istio-mtls", "auto") or cl.subset:
            continue
        sp = cl.service_port
        bad: list[str] = []
        for e in cl.endpoints:
            epod = index.pods_by_ip.get(e.address)
            if epod is None:
                if cl.tls == "istio-mtls" and not e.sidecar:
                    bad.append(f"{e.address} ({e.workload or 'endpoint'}: no security.istio.io/tlsMode=istio)")
                continue
            if cl.tls == "auto" and not epod.sidecar:
                continue  # auto mTLS sends plaintext there
            port = resolve_target_port(sp, epod) if sp else None
            if (port or cl.port) in SIDECAR_PORTS:
                continue  # the sidecar's own listener (15090 for a metrics Service), not the app's port
            ok, why = port_captured(epod, port or (cl.port or 0), index.profile)
            if not ok:
                bad.append(f"{e.address}:{port}: {why}")
        key = f"{cl.fqdn}:{cl.port}"
        if not bad or key in seen:
            continue
        seen.add(key)
        out.append(_Draft(
            name="mtls-to-pod-without-sidecar", severity="error",
            message=(f"{cl.name} ({cl.type}) originates Istio mTLS ({cl.tls_reason}) but "
                     f"{'; '.join(bad[:3])} → the TLS handshake to a plaintext app fails (503 UF,URX)"),
            evidence=(_at(cl.service), *(f"endpoint {b}" for b in bad[:5])),
            fix=("set the DestinationRule tls.mode DISABLE for that host, inject the server pods (or capture the "
                 "port)" + (", or upgrade to Istio ≥1.6.6 (no forced mTLS on ORIGINAL_DST clusters)"
                            if index.profile.orig_dst_forced_mtls and cl.type == "ORIGINAL_DST" else ""))))
    return out


def check_headless_mixed(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    """Headless services this proxy sees (exportTo, its Sidecar) with endpoints with and without a sidecar."""
    return _per_view("headless-mixed", index, lambda: _headless_mixed(index))  # type: ignore[no-any-return]


def _headless_mixed(index: ProxyIndex) -> list[_Draft]:
    out = []
    for s in _visible(index):
        if not (s.headless or s.resolution is Resolution.PASSTHROUGH) or len(s.endpoints) < 2:
            continue
        with_sc = [e for e in s.endpoints if e.sidecar]
        without = [e for e in s.endpoints if not e.sidecar]
        if not with_sc or not without:
            continue
        out.append(_Draft(
            name="headless-mixed-sidecars", severity="warning",
            message=(f"headless {s.ref} mixes endpoints with a sidecar ({', '.join(e.address for e in with_sc[:3])}) "
                     f"and without ({', '.join(e.address for e in without[:3])}): its ORIGINAL_DST cluster has one "
                     "TLS mode for all of them, so auto mTLS falls back to plaintext (1.10+) or breaks the "
                     "plaintext ones (1.5.0-1.6.5)"),
            evidence=(_at(s), *(f"{e.address}: {e.workload or 'endpoint'} tlsMode={e.tls_mode}"
                                 for e in s.endpoints[:6])),
            fix="inject every pod behind the service, or split the service; set DestinationRule tls.mode explicitly"))
    return out


def check_strict_callers(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    if not pod.sidecar:
        return []
    root = index.mesh.root_namespace
    ports: list[int | None] = [*sorted(_inbound_ports(index, pod))] or [None]
    strict = []
    where = ""
    for p in ports:
        mode, w = peer_mode(index.objects, root, pod.namespace, pod.label_map, p)
        if mode == "STRICT":
            strict.append(p)
            where = w
    if not strict:
        return []
    # workloads without a sidecar anywhere in the mesh: a controller's pods once, under it (the first six
    # are enough for the message and the evidence; the count comes from the set of their keys)
    facts = mesh_facts(index.objects)
    me = (pod.namespace, pod.kind, pod.name)
    count = len(facts.without_sidecar) - (me in facts.without_sidecar_keys)
    if not count:
        return []
    callers = [p for p in facts.without_sidecar[:6] if (p.namespace, p.kind, p.name) != me]
    return [_Draft(
        name="strict-mtls-callers-without-sidecar", severity="warning",
        message=(f"{pod.ref} requires mTLS ({where}) on "
                 f"{'port(s) ' + ', '.join(str(p) for p in strict if p) if any(strict) else 'every port'}; "
                 f"{count} pod(s) without a sidecar cannot call it (connection reset / 503 UC): "
                 f"{', '.join(c.ref for c in callers[:3])}"),
        evidence=(where, *(f"{c.ref}: {c.sidecar_why}" for c in callers[:5])),
        fix="inject the callers, or set PERMISSIVE for these ports (PeerAuthentication portLevelMtls)")]


def check_serviceentry_dns(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    """ServiceEntry hosts without addresses, exported to this proxy's namespace, that its agent does not answer."""
    out = []
    proxy = index.proxy
    off = []
    if not proxy.dns_capture:
        off.append("DNS capture (ISTIO_META_DNS_CAPTURE) is off")
    if not proxy.dns_auto_allocate and index.profile.version < (1, 25, 0):
        off.append("auto-allocation (ISTIO_META_DNS_AUTO_ALLOCATE) is off")
    if not index.profile.autoalloc:
        off.append(f"{index.profile.label} has no auto-allocation (1.7+)")
    if not off:
        return []
    for s in _per_view("se-dns", index, lambda: _unanswered_hosts(index)):
        out.append(_Draft(
            name="serviceentry-host-unresolvable", severity="warning",
            message=(f"{s.ref} has no addresses and {' and '.join(off)}: the app's lookup of {s.hostname} goes to "
                     "kube-dns, which does not know it (NXDOMAIN) unless a real DNS record exists"),
            evidence=(_at(s), proxy.metadata_origin or "proxyMetadata: not set (mesh defaultConfig or pod "
                                                       "proxy.istio.io/config)"),
            fix=("set proxyMetadata ISTIO_META_DNS_CAPTURE: \"true\" and ISTIO_META_DNS_AUTO_ALLOCATE: \"true\" "
                 "(pod annotation proxy.istio.io/config or mesh defaultConfig), or give the ServiceEntry addresses "
                 "and a DNS record")))
    return out


def _unanswered_hosts(index: ProxyIndex) -> list[MeshService]:
    """The ServiceEntries without addresses exported to this proxy's namespace whose host it has no VIP for
    (one per host; public names kube-dns forwards upstream left out)."""
    out = []
    seen: set[str] = set()
    visible = {v.hostname for v in _visible(index) if v.auto_ipv4}
    for s in index.objects.services:
        if s.kind != "ServiceEntry" or s.address != UNSPECIFIED or s.hostname.startswith("*"):
            continue
        if not exported(s.export_to, s.namespace, index.proxy.namespace):
            continue
        if s.resolution is Resolution.DNS_LB and _PUBLIC_TLD.search(s.hostname) and not s.endpoints:
            continue  # a public name: kube-dns forwards it upstream
        if s.hostname in visible or s.hostname in seen:
            continue
        seen.add(s.hostname)
        out.append(s)
    return out


def _visible(index: ProxyIndex) -> list[MeshService]:
    """The services this proxy has clusters for (what it sees: exportTo, one definition per host, its
    Sidecar), each once."""
    def compute() -> list[MeshService]:
        return list({id(c.service): c.service for c in index.clusters.values() if c.service is not None}.values())

    return _per_view("visible", index, compute)  # type: ignore[no-any-return]


def check_dns_capture(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    if not pod.sidecar or not index.proxy.dns_capture:
        return []
    res, _err = capture_resolution(pod, index.profile.name)
    if res is None or res.config is None:
        return []
    cfg = res.config
    if not cfg.redirect_dns or cfg.capture_all_dns:
        return []
    redirected = set(cfg.dns_servers_v4) | set(cfg.dns_servers_v6)
    out = []
    if not redirected:
        out.append(_Draft(
            name="dns-not-captured", severity="error",
            message=("DNS capture is on but istio-iptables redirects no nameserver (it only redirects the "
                     "resolv.conf nameservers without CAPTURE_ALL_DNS): the app's DNS bypasses the agent"),
            evidence=(_at(pod), *(w for w in res.warnings if "DNS" in w or "dns" in w)),
            fix="set proxyMetadata CAPTURE_ALL_DNS: \"true\" (every port-53 query is captured), or give the pod "
                "a resolv.conf nameserver (dnsPolicy ClusterFirst)"))
        return out
    body: Any = pod.body
    for key in (*POD_TEMPLATE_PATHS.get(pod.kind, ()), "spec"):
        body = body.get(key) if isinstance(body, Mapping) else None
    containers = body.get("containers") if isinstance(body, Mapping) else None
    for c in containers or []:
        if not isinstance(c, dict):
            continue
        texts = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
        texts += [str(e.get("value", "")) for e in c.get("env") or [] if isinstance(e, dict)]
        for t in texts:
            if not re.search(r"resolver|nameserver|dns", t, re.I):
                continue
            for ip in _IP_RE.findall(t):
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    continue
                if ip not in redirected:
                    out.append(_Draft(
                        name="dns-not-captured", severity="error",
                        message=(f"container {c.get('name')} queries nameserver {ip}, which is not among the "
                                 f"redirected ones ({', '.join(sorted(redirected))}): its DNS bypasses the agent, so "
                                 "ServiceEntry hosts and auto-allocated VIPs do not resolve"),
                        evidence=(_at(pod, f": container {c.get('name')}: {t}"),
                                  f"istio-iptables DNS_SERVERS_V4={','.join(cfg.dns_servers_v4)}"),
                        fix=(f"point the app at {sorted(redirected)[0]} (the pod's resolv.conf), or set proxyMetadata "
                             "CAPTURE_ALL_DNS: \"true\" so every port-53 query is captured")))
    return out


def _hop_tcp(index: ProxyIndex, ip: str, port: int) -> Any:
    return hop(index, Connection(direction=Direction.OUTBOUND, dst_ip=ip, dst_port=port, send=Send.TCP))


def _peers(index: ProxyIndex, pod: PodInfo) -> list[PodInfo]:
    """The other Pods of the same workload (its labels a subset of theirs), with an IP."""
    labels = pod.label_map
    own = set(index.proxy.ips)
    return [p for p in index.objects.pods if p.kind == "Pod" and p.ips and labels and p.namespace == pod.namespace
            and selects(pod.labels, p.label_map) and not own & set(p.ips)]


def check_plaintext_to_strict(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    """Plaintext that ``mesh hop`` shows reset by a STRICT peer: ORIGINAL_DST clusters (headless services)
    to their endpoints, and the workload's own ports that no Service declares, to its other replicas
    (sent through PassthroughCluster)."""
    if not pod.sidecar:
        return []
    own = set(index.proxy.ips)
    # (dst ip, port, what the client uses, fix)
    probes: list[tuple[str, int, str, str]] = []
    orig_dst = _per_view("original-dst", index, lambda: [
        cl for cl in index.clusters.values()
        if cl.type == "ORIGINAL_DST" and cl.direction == "outbound" and cl.service is not None and cl.port is not None])
    for cl in orig_dst:
        if all(e.sidecar for e in cl.endpoints):
            fix = (f"let {cl.fqdn} get Istio mTLS: a DestinationRule with tls.mode ISTIO_MUTUAL for it, or Istio "
                   "1.10+ (mTLS inferred for an ORIGINAL_DST cluster whose endpoints all have a sidecar); or set "
                   f"portLevelMtls {cl.port}: PERMISSIVE on the server's PeerAuthentication")
        else:
            fix = (f"inject every pod behind {cl.fqdn} (auto mTLS then picks mTLS, 1.10+), or split the service, or "
                   f"set portLevelMtls {cl.port}: PERMISSIVE on the server's PeerAuthentication")
        probes += [(e.address, cl.port, f"{cl.service.ref} port {cl.port}", fix)
                   for e in cl.endpoints if e.address not in own]
    declared = set(_declared_ports(index, pod))
    for port in app_ports(pod):
        if port in declared:
            continue
        fix = (f"declare port {port} in a Service that selects {pod.ref} (e.g. its headless Service, named "
               f"tcp-...), so the client sidecar has a cluster with mTLS for it, or set portLevelMtls {port}: "
               "PERMISSIVE on the PeerAuthentication")
        probes += [(p.ips[0], port, f"{pod.ref} containerPort {port} (in no Service)", fix)
                   for p in _peers(index, pod)]
    groups: dict[str, tuple[list[str], list[str | Evidence], str, set[str]]] = {}
    for ip, port, what, fix in probes[:MAX_HOPS_PER_CHECK]:
        h = _hop_tcp(index, ip, port)
        if h.verdict is not Verdict.RESET or h.cluster is None:
            continue
        server = index.pods_by_ip.get(ip)
        if server is None:
            continue
        _mode, pa = peer_mode(index.objects, index.mesh.root_namespace, server.namespace, server.label_map, port)
        key = f"{h.cluster} {port}"
        ips, ev, _fix, pas = groups.setdefault(key, ([], [what, f"listener {h.listener}, chain "
                                                        f"{h.filter_chain or h.filter_chain_match} → {h.cluster} "
                                                        f"({h.cluster_type}, upstream {h.upstream_tls})"], fix, set()))
        ips.append(f"{ip}:{port} ({server.ref})")
        ev.append(_at(server))
        pas.add(pa)
    out = []
    for key, (ips, ev, fix, pas) in groups.items():
        cluster = key.rsplit(" ", 1)[0]
        how = "passthrough" if cluster == PASSTHROUGH else "ORIGINAL_DST"
        out.append(_Draft(
            name="plaintext-to-strict-peer", severity="error",
            message=(f"this sidecar sends plaintext ({how}, {cluster}) to {', '.join(ips[:3])}"
                     f"{' …' if len(ips) > 3 else ''}, where mTLS is required ({', '.join(sorted(pas))}): "
                     "`netsim mesh hop` shows the connection reset by the server's sidecar (503 UC / connection "
                     "reset)"),
            evidence=tuple(dict.fromkeys((*ev[:6], *sorted(pas)))), fix=fix))
    return out


def check_host_in_two_namespaces(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    """A hostname with ServiceEntries (or a Service and a ServiceEntry) in two namespaces, both visible
    from this proxy's namespace (exportTo)."""
    ns = index.proxy.namespace
    out = []
    for host, svcs in _per_view("host-twice", index, lambda: _hosts_in_two_namespaces(index)):
        refs = ", ".join(f"{s.kind} {s.namespace}/{s.name}" for s in svcs)
        out.append(_Draft(
            name="serviceentry-host-in-two-namespaces", severity="warning",
            message=(f"host {host} is defined in {len({s.namespace for s in svcs})} namespaces ({refs}), all "
                     f"exported to {ns}: istiod gives this proxy one definition (a Kubernetes Service before a "
                     "ServiceEntry; since 1.24 the proxy's own namespace first; otherwise the oldest), so the "
                     "others' addresses, ports and endpoints are unused here while pods elsewhere may see another"),
            evidence=tuple(_at(s) for s in svcs),
            fix=("keep one definition per host: exportTo: [\".\"] on the namespace-local ones, or delete the "
                 "duplicate, or give them distinct hosts")))
    return out


def _hosts_in_two_namespaces(index: ProxyIndex) -> list[tuple[str, list[MeshService]]]:
    """The hostnames defined in two namespaces (one definition at least a ServiceEntry) among the services
    exported to the proxy's namespace, with those definitions, in the order first met."""
    ns = index.proxy.namespace
    found = []
    for services in _per_objects("shared-hosts", index.objects, lambda: _shared_hosts(index.objects.services)):
        defs: dict[tuple[str, str, str], MeshService] = {}
        first = -1
        for i, s in services:
            if exported(s.export_to, s.namespace, ns):
                defs.setdefault((s.kind, s.namespace, s.name), s)
                first = i if first < 0 else first
        svcs = list(defs.values())
        if len({s.namespace for s in svcs}) >= 2 and any(s.kind == "ServiceEntry" for s in svcs):
            found.append((first, svcs[0].hostname, svcs))
    found.sort(key=lambda t: t[0])
    return [(host, svcs) for _first, host, svcs in found]


def _shared_hosts(services: Iterable[MeshService]) -> list[list[tuple[int, MeshService]]]:
    """The services (with their place in push-context order) of each hostname that has definitions in two
    namespaces and a ServiceEntry among them: what :func:`_hosts_in_two_namespaces` narrows by exportTo."""
    by_host: dict[str, list[tuple[int, MeshService]]] = {}
    for i, s in enumerate(services):
        by_host.setdefault(s.hostname, []).append((i, s))
    return [group for group in by_host.values()
            if len({s.namespace for _, s in group}) >= 2 and any(s.kind == "ServiceEntry" for _, s in group)]


def check_clusters_without_endpoints(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    """EDS clusters of this proxy with no endpoint among the objects read. Silent for a service whose
    namespace has no Pod and no endpoint of any service among the objects: then the files say nothing
    about that namespace's endpoints."""
    def empty() -> tuple[dict[str, int], set[str], dict[str, list[Any]]]:
        pods_in: dict[str, int] = {}
        for p in index.objects.pods:
            if p.kind == "Pod":
                pods_in[p.namespace] = pods_in.get(p.namespace, 0) + 1
        with_endpoints = {s.namespace for s in index.objects.services if s.endpoints}
        by_ns: dict[str, list[Any]] = {}
        for cl in index.clusters.values():
            if cl.direction == "outbound" and cl.service is not None and cl.type == "EDS" and not cl.endpoints \
                    and not cl.subset and (cl.service.namespace in with_endpoints or cl.service.namespace in pods_in):
                by_ns.setdefault(cl.service.namespace, []).append(cl)
        return pods_in, with_endpoints, by_ns

    pods_in, with_endpoints, by_ns = _per_view("no-endpoints", index, empty)
    if not by_ns:
        return []
    own = 1 if pod.kind == "Pod" else 0  # the diagnosed pod says nothing about the others
    out = []
    # the services of the workload diagnosed: its pods are what the template would make
    seen = {f"{s.kind} {s.namespace}/{s.name}" for s in _selecting_services(index, pod)}
    for cl in (cl for ns, cls in by_ns.items() for cl in cls
               if ns in with_endpoints or pods_in.get(ns, 0) - (own if ns == pod.namespace else 0) > 0):
        svc = cl.service
        key = f"{svc.kind} {svc.namespace}/{svc.name}"
        if key in seen:
            continue
        seen.add(key)
        out.append(_Draft(
            name="cluster-without-endpoints", severity="warning", message=no_endpoints_note(cl),
            evidence=(_at(svc), f"cluster {cl.name} (EDS)"),
            fix=(f"make {svc.kind} {svc.namespace}/{svc.name} select running pods (its selector against the pods' "
                 "labels; kubectl get endpointslices -l kubernetes.io/service-name=" + svc.name + "), or add the "
                 "EndpointSlices / Pods / WorkloadEntries to --config")))
    return out


def check_ambient_ignores_sidecar_settings(index: ProxyIndex, pod: PodInfo) -> list[_Draft]:
    """A pod enrolled in ambient still carrying what istio-init would have read (a ``traffic.sidecar.istio.io/*``
    annotation, a capture key of ``proxy.istio.io/config``'s proxyMetadata): istio-cni's ambient agent reads
    none of them (spec/istio-ambient-capture.md §2.2), so what they excluded is captured by ztunnel."""
    if not pod.ambient:
        return []
    res, _err = capture_resolution(pod, index.profile.name)
    if res is None:
        return []
    template = ".".join((*POD_TEMPLATE_PATHS.get(pod.kind, ()), "metadata", "annotations"))
    out = []
    for f in res.findings:
        if not f.used or f.key == REROUTE_VIRTUAL_INTERFACES:  # read in both modes (§2.2)
            continue
        if f.key.startswith("proxyMetadata."):
            what = f"proxy.istio.io/config proxyMetadata {f.key.split('.', 1)[1]}={f.value}"
            where = _at(pod, f": {template}.proxy.istio.io/config")
        else:
            what, where = f"annotation {f.key}={f.value}", _at(pod, f": {template}.{f.key}")
        out.append(_Draft(
            name="sidecar-capture-setting-in-ambient", severity="warning",
            message=(f"{what}: the pod is enrolled in ambient ({pod.ambient_why}) and istio-cni's ambient agent "
                     f"ignores it (a sidecar's istio-init would have read it: {f.reason})"),
            evidence=(where,),
            fix=("remove it; `netsim migrate --pod FILE --to ambient` shows the traffic it no longer excludes "
                 "(ambient bypasses capture per pod with istio.io/dataplane-mode=none, or inbound only with "
                 "ambient.istio.io/bypass-inbound-capture)")))
    return out


# (name, check) in report order; each check's findings carry its name and CODES[name]
_CHECKS = (("inbound-port-not-captured", check_inbound_ports),
           ("annotations-on-workload-metadata", check_workload_annotations),
           ("wildcard-tcp-listener", check_wildcard_listeners),
           ("mtls-to-pod-without-sidecar", check_mtls_targets),
           ("headless-mixed-sidecars", check_headless_mixed),
           ("strict-mtls-callers-without-sidecar", check_strict_callers),
           ("serviceentry-host-unresolvable", check_serviceentry_dns),
           ("dns-not-captured", check_dns_capture),
           ("plaintext-to-strict-peer", check_plaintext_to_strict),
           ("serviceentry-host-in-two-namespaces", check_host_in_two_namespaces),
           ("cluster-without-endpoints", check_clusters_without_endpoints),
           ("sidecar-capture-setting-in-ambient", check_ambient_ignores_sidecar_settings))
CHECKS = tuple(CODES[name] for name, _ in _CHECKS)


def diagnose(index: ProxyIndex, pod: PodInfo, *, notes: Iterable[str] = ()) -> Report:
    """Run every check for ``pod`` whose sidecar ``index`` was built for. ``notes``: what the answer rests
    on (objects ignored, documents skipped), carried into the report."""
    locate = _per_objects("locator", index.objects, lambda: _locator(index))
    findings = [Finding(check=CODES[d.name], name=d.name, severity=d.severity, message=d.message,
                        evidence=tuple(dict.fromkeys(locate(e) for e in d.evidence if e)), fix=d.fix)
                for _name, check in _CHECKS for d in check(index, pod)]
    notes = tuple(notes)
    if pod.sidecar:
        _res, err = capture_resolution(pod, index.profile.name)
        if err:  # what `netsim trace --pod` and `compile` refuse: say it rather than answer "none found"
            notes += (f"{err}: the checks that read the pod's capture rules (NS0001, NS0008) "
                      "could not run",)
    return Report(pod=pod.ref, istio=index.profile.label, findings=tuple(findings), checks=CHECKS, notes=notes)


def render_text(report: Report) -> str:
    if not report.findings:
        lines = [f"{report.pod} ({report.istio}): none of the {len(report.checks)} known capture pitfalls found."]
    else:
        lines = [f"{report.pod} ({report.istio}): {len(report.findings)} finding(s)"]
    for f in report.findings:
        lines.append("")
        lines.append(f"[{f.severity}] {f.check} {f.name}: {f.message}.")
        for e in f.evidence:
            lines.append(f"  evidence: {e}")
        lines.append(f"  fix: {f.fix}.")
    if report.notes:
        lines.append("")
        lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def render_json(report: Report) -> dict[str, Any]:
    return {"pod": report.pod, "istio": report.istio, "checks": list(report.checks),
            "findings": [f.to_json() for f in report.findings], "notes": list(report.notes)}


__all__ = [
    "CHECKS",
    "CODES",
    "MAX_HOPS_PER_CHECK",
    "SIDECAR_PORTS",
    "SUMMARIES",
    "Evidence",
    "Finding",
    "Report",
    "app_ports",
    "diagnose",
    "mesh_facts",
    "render_json",
    "render_text",
    "top_level",
]
