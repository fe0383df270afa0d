"""``netsim diagnose``: one workload checked for the known capture pitfalls, each with evidence and a fix.

Owns: the checks (issue 8 §4, spec/istio-mesh-hops.md section 6) as pure functions over a
:class:`~netsim.mesh.build.ProxyIndex` built for the workload's own sidecar, the :class:`Finding` and
:class:`Report` values, and their text/JSON renderers.

Checks, in order (ids are stable, for scripts):
``inbound-port-not-captured``, ``annotations-on-workload-metadata``, ``wildcard-tcp-listener``,
``mtls-to-pod-without-sidecar``, ``headless-mixed-sidecars``, ``strict-mtls-callers-without-sidecar``,
``serviceentry-host-unresolvable``, ``dns-not-captured``.

Never does: IO, or guess: a check that needs what the files do not say stays silent.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netsim.k8s import POD_TEMPLATE_PATHS
from netsim.mesh.build import BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, ProxyIndex, peer_mode, resolve_target_port
from netsim.mesh.hop import capture_resolution, port_captured
from netsim.mesh.model import UNSPECIFIED, MeshService, PodInfo, Protocol, Resolution, selects

ISTIO_PREFIXES = ("sidecar.istio.io/", "traffic.sidecar.istio.io/", "proxy.istio.io/", "status.sidecar.istio.io/",
                  "readiness.status.sidecar.istio.io/", "istio.io/rev")
_PUBLIC_TLD = re.compile(r"\.(com|org|net|io|dev|cloud|app|co|edu|gov|info|biz|[a-z]{2})$")
_IP_RE = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b")


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    id: str
    severity: str  # error | warning
    summary: str  # one sentence
    evidence: tuple[str, ...]
    fix: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "summary": self.summary, "evidence": list(self.evidence),
                "fix": self.fix}


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    pod: str
    istio: str
    findings: tuple[Finding, ...]
    checks: tuple[str, ...]


def _selecting_services(index: ProxyIndex, pod: PodInfo) -> list[MeshService]:
    labels = pod.label_map
    out = []
    for s in index.objects.services:
        k8s = s.kind == "Service" and s.namespace == pod.namespace and selects(s.selector, labels)
        se = s.kind == "ServiceEntry" and (any(e.address in pod.ips for e in s.endpoints) or (
            s.namespace == pod.namespace and selects(s.selector, labels)))
        if k8s or se:
            out.append(s)
    return out


def _inbound_ports(index: ProxyIndex, pod: PodInfo) -> dict[int, str]:
    """Ports the workload serves → what declares them."""
    out: dict[int, str] = {}
    for s in _selecting_services(index, pod):
        for sp in s.ports:
            if sp.protocol is Protocol.UDP:
                continue
            tp = resolve_target_port(sp, pod)
            if tp is not None:
                out.setdefault(tp, f"{s.ref} port {sp.name or sp.port} ({sp.port} → {tp})")
    for cp in pod.container_ports:
        out.setdefault(cp.port, f"{pod.ref} containerPort {cp.port}")
    return out


def check_inbound_ports(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
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
        out.append(Finding(id="inbound-port-not-captured", severity="error",
                           summary=(f"inbound capture misses it: {why}; a client sidecar that "
                                    "sends Istio mTLS (auto mTLS or an ISTIO_MUTUAL DestinationRule) reaches the app "
                                    "with TLS bytes → 503 connection failure, and STRICT mTLS is not enforced"),
                           evidence=(decl, pod.where), fix=fix))
    return out


def check_workload_annotations(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
    if pod.kind == "Pod":
        return []
    template = pod.annotation_map
    out = []
    for k, v in pod.owner_annotations:
        if k.startswith(ISTIO_PREFIXES) and template.get(k) != v:
            out.append(Finding(
                id="annotations-on-workload-metadata", severity="error",
                summary=(f"annotation {k}: {v!r} is on the {pod.kind}'s own metadata; the injector reads only the "
                         "pod template's annotations, so it has no effect"
                         + (f" (the template says {template[k]!r})" if k in template else "")),
                evidence=(f"{pod.where}: metadata.annotations.{k}",),
                fix=f"move {k} to spec.template.metadata.annotations"))
    return out


def _used_ports(index: ProxyIndex, pod: PodInfo) -> dict[int, str]:
    used = {p: f"the workload's own port {p} ({d})" for p, d in _inbound_ports(index, pod).items()}
    for (addr, port), ln in index.exact.items():
        used.setdefault(port, f"port {port} of {', '.join(ln.origins[:2])} ({addr})")
    return used


def check_wildcard_listeners(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
    out = []
    used = _used_ports(index, pod)
    for port, ln in sorted(index.wildcard.items()):
        catch = ln.default_chain if ln.default_chain is not None else (
            ln.chains[0] if len(ln.chains) == 1 and ln.chains[0].match_all else None)
        if catch is None or catch.is_http or catch.cluster in (PASSTHROUGH, BLACKHOLE, INBOUND_PASSTHROUGH, None):
            continue
        if port not in used:
            continue
        cl = index.clusters.get(catch.cluster)
        svc = cl.service if cl is not None else None
        if svc is None:
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
        out.append(Finding(
            id="wildcard-tcp-listener", severity="error",
            summary=(f"0.0.0.0_{port} has a match-all TCP chain → {catch.cluster} ({typ}), created by {how}: every "
                     f"connection from this pod to any IP on port {port} without its own ip_{port} listener (pod IPs, "
                     "external IPs) is hijacked to that service"),
            evidence=(*ln.origins, f"listener 0.0.0.0_{port}: {catch.match_text()} → {catch.destination_text()}",
                      used[port], svc.where),
            fix=fix))
    return out


def check_mtls_targets(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
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
            ok, why = port_captured(epod, port or (cl.port or 0), index.profile)
            if not ok:
                bad.append(f"{e.address}:{port}: {why}")
        key = f"{cl.fqdn}:{cl.port}"
        if not bad or key in seen:
            continue
        seen.add(key)
        out.append(Finding(
            id="mtls-to-pod-without-sidecar", severity="error",
            summary=(f"{cl.name} ({cl.type}) originates Istio mTLS ({cl.tls_reason}) but "
                     f"{'; '.join(bad[:3])} → the TLS handshake to a plaintext app fails (503 UF,URX)"),
            evidence=(cl.service.where, *(f"endpoint {b}" for b in bad[:5])),
            fix=("set the DestinationRule tls.mode DISABLE for that host, inject the server pods (or capture the "
                 "port)" + (", or upgrade to Istio ≥1.6.6 (no forced mTLS on ORIGINAL_DST clusters)"
                            if index.profile.orig_dst_forced_mtls and cl.type == "ORIGINAL_DST" else ""))))
    return out


def check_headless_mixed(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
    out = []
    for s in index.objects.services:
        if not (s.headless or s.resolution is Resolution.PASSTHROUGH) or len(s.endpoints) < 2:
            continue
        with_sc = [e for e in s.endpoints if e.sidecar]
        without = [e for e in s.endpoints if not e.sidecar]
        if not with_sc or not without:
            continue
        out.append(Finding(
            id="headless-mixed-sidecars", severity="warning",
            summary=(f"headless {s.ref} mixes endpoints with a sidecar ({', '.join(e.address for e in with_sc[:3])}) "
                     f"and without ({', '.join(e.address for e in without[:3])}): its ORIGINAL_DST cluster has one "
                     "TLS mode for all of them, so auto mTLS falls back to plaintext (1.10+) or breaks the "
                     "plaintext ones (1.5.0-1.6.5)"),
            evidence=(s.where, *(f"{e.address}: {e.workload or 'endpoint'} tlsMode={e.tls_mode}"
                                 for e in s.endpoints[:6])),
            fix="inject every pod behind the service, or split the service; set DestinationRule tls.mode explicitly"))
    return out


def check_strict_callers(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
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
    callers = [p for p in index.objects.pods if p.kind == "Pod" and not p.sidecar and p.name != pod.name]
    if not callers:
        return []
    return [Finding(
        id="strict-mtls-callers-without-sidecar", severity="warning",
        summary=(f"{pod.ref} requires mTLS ({where}) on port(s) {', '.join(str(p) for p in strict if p)}; "
                 f"{len(callers)} pod(s) without a sidecar cannot call it (connection reset / 503 UC): "
                 f"{', '.join(c.ref for c in callers[:3])}"),
        evidence=(where, *(f"{c.ref}: {c.sidecar_why}" for c in callers[:5])),
        fix="inject the callers, or set PERMISSIVE for these ports (PeerAuthentication portLevelMtls)")]


def check_serviceentry_dns(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
    out = []
    proxy = index.proxy
    seen: set[str] = set()
    for s in index.objects.services:
        if s.kind != "ServiceEntry" or s.address != UNSPECIFIED or s.hostname.startswith("*"):
            continue
        if s.resolution is Resolution.DNS_LB and _PUBLIC_TLD.search(s.hostname) and not s.endpoints:
            continue  # a public name: kube-dns forwards it upstream
        visible = any(v.hostname == s.hostname and v.auto_ipv4 for v in _visible(index))
        if visible or s.hostname in seen:
            continue
        seen.add(s.hostname)
        off = []
        if not proxy.dns_capture:
            off.append("DNS capture (ISTIO_META_DNS_CAPTURE) is off")
        if not proxy.dns_auto_allocate and index.profile.version < (1, 25, 0):
            off.append("auto-allocation (ISTIO_META_DNS_AUTO_ALLOCATE) is off")
        if not index.profile.autoalloc:
            off.append(f"{index.profile.label} has no auto-allocation (1.7+)")
        if not off:
            continue
        out.append(Finding(
            id="serviceentry-host-unresolvable", severity="warning",
            summary=(f"{s.ref} has no addresses and {' and '.join(off)}: the app's lookup of {s.hostname} goes to "
                     "kube-dns, which does not know it (NXDOMAIN) unless a real DNS record exists"),
            evidence=(s.where, proxy.metadata_origin or "proxyMetadata: not set (mesh defaultConfig or pod "
                                                       "proxy.istio.io/config)"),
            fix=("set proxyMetadata ISTIO_META_DNS_CAPTURE: \"true\" and ISTIO_META_DNS_AUTO_ALLOCATE: \"true\" "
                 "(pod annotation proxy.istio.io/config or mesh defaultConfig), or give the ServiceEntry addresses "
                 "and a DNS record")))
    return out


def _visible(index: ProxyIndex) -> list[MeshService]:
    return [c.service for c in index.clusters.values() if c.service is not None]


def check_dns_capture(index: ProxyIndex, pod: PodInfo) -> list[Finding]:
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
        out.append(Finding(
            id="dns-not-captured", severity="error",
            summary=("DNS capture is on but istio-iptables redirects no nameserver (it only redirects the "
                     "resolv.conf nameservers without CAPTURE_ALL_DNS): the app's DNS bypasses the agent"),
            evidence=(pod.where, *(w for w in res.warnings if "DNS" in w or "dns" in w)),
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
                    out.append(Finding(
                        id="dns-not-captured", severity="error",
                        summary=(f"container {c.get('name')} queries nameserver {ip}, which is not among the "
                                 f"redirected ones ({', '.join(sorted(redirected))}): its DNS bypasses the agent, so "
                                 "ServiceEntry hosts and auto-allocated VIPs do not resolve"),
                        evidence=(f"{pod.where}: container {c.get('name')}: {t}",
                                  f"istio-iptables DNS_SERVERS_V4={','.join(cfg.dns_servers_v4)}"),
                        fix=(f"point the app at {sorted(redirected)[0]} (the pod's resolv.conf), or set proxyMetadata "
                             "CAPTURE_ALL_DNS: \"true\" so every port-53 query is captured")))
    return out


# (id, check) in report order; the ids are the ones each check's findings carry
_CHECKS = (("inbound-port-not-captured", check_inbound_ports),
           ("annotations-on-workload-metadata", check_workload_annotations),
           ("wildcard-tcp-listener", check_wildcard_listeners),
           ("mtls-to-pod-without-sidecar", check_mtls_targets),
           ("headless-mixed-sidecars", check_headless_mixed),
           ("strict-mtls-callers-without-sidecar", check_strict_callers),
           ("serviceentry-host-unresolvable", check_serviceentry_dns),
           ("dns-not-captured", check_dns_capture))
CHECKS = tuple(check_id for check_id, _ in _CHECKS)


def diagnose(index: ProxyIndex, pod: PodInfo) -> Report:
    """Run every check for ``pod`` whose sidecar ``index`` was built for."""
    findings = [f for _id, check in _CHECKS for f in check(index, pod)]
    return Report(pod=pod.ref, istio=index.profile.label, findings=tuple(findings), checks=CHECKS)


def render_text(report: Report) -> str:
    if not report.findings:
        return f"{report.pod} ({report.istio}): none of the {len(report.checks)} known capture pitfalls found."
    lines = [f"{report.pod} ({report.istio}): {len(report.findings)} finding(s)"]
    for f in report.findings:
        lines.append("")
        lines.append(f"[{f.severity}] {f.id}: {f.summary}.")
        for e in f.evidence:
            lines.append(f"  evidence: {e}")
        lines.append(f"  fix: {f.fix}.")
    return "\n".join(lines)


def render_json(report: Report) -> dict[str, Any]:
    return {"pod": report.pod, "istio": report.istio, "checks": list(report.checks),
            "findings": [f.to_json() for f in report.findings]}


__all__ = ["CHECKS", "Finding", "Report", "diagnose", "render_json", "render_text"]
