"""One connection through the deciding sidecar: listener → filter chain → route → cluster → upstream TLS.

Owns: :func:`hop`, which mirrors ``pilot/pkg/simulation/traffic.go :: Simulation.Run`` over a
:class:`~netsim.mesh.build.ProxyIndex` (exact ``ip_port`` listener, then ``0.0.0.0_port``, then the
virtual listener; Envoy's filter-chain sieve; virtual host by Host; first matching route), then
adds what the simulator leaves out: the cluster's type and upstream TLS, the server side of an mTLS
hop where the server pod is known (no sidecar, or a port not captured), and a one-sentence reason.

Never does: build config (``netsim.mesh.build``), IO, or scan services: every step is a lookup.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any

from netsim.mesh.build import (
    BLACKHOLE,
    HTTP_ALPNS,
    INBOUND_PASSTHROUGH,
    INBOUND_PORT,
    PASSTHROUGH,
    Cluster,
    FilterChain,
    Listener,
    ProxyIndex,
    host_matches,
    peer_mode,
    resolve_target_port,
)
from netsim.mesh.model import Connection, Direction, PodInfo, Send, Verdict
from netsim.mesh.versions import MeshProfile


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """The decision for one connection, with Istio's names."""

    direction: str
    verdict: Verdict
    reason: str
    listener: str | None = None
    filter_chain: str | None = None
    filter_chain_match: str | None = None
    route_config: str | None = None
    virtual_host: str | None = None
    route: str | None = None
    cluster: str | None = None
    cluster_type: str | None = None
    upstream_tls: str | None = None  # istio-mtls | plaintext | tls | None
    evidence: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"direction": self.direction, "listener": self.listener, "filter_chain": self.filter_chain,
                "filter_chain_match": self.filter_chain_match, "route_config": self.route_config,
                "virtual_host": self.virtual_host, "route": self.route, "cluster": self.cluster,
                "cluster_type": self.cluster_type, "upstream_tls": self.upstream_tls,
                "verdict": self.verdict.value, "reason": self.reason, "evidence": list(self.evidence),
                "notes": list(self.notes)}


# -------------------------------------------------------------------------------------------------
# the Envoy filter-chain sieve (traffic.go :: matchFilterChain / filter)

def _sieve(chains: tuple[FilterChain, ...] | list[FilterChain], has: Any, ok: Any) -> list[FilterChain]:
    if not any(has(c) for c in chains):
        return list(chains)
    res = [c for c in chains if has(c) and ok(c)]
    return res or [c for c in chains if not has(c)]


def match_chain(ln: Listener, conn: Connection) -> tuple[FilterChain | None, str]:
    """The chain Envoy picks for ``conn`` on ``ln``, or (None, why)."""
    tls = conn.send in (Send.TLS, Send.MTLS)
    tls_inspector, http_inspector = ln.tls_inspector, ln.http_inspector
    if ln.direction == "inbound" and ln.name == "virtualInbound":
        # listener filters are disabled per destination port when no chain of that port needs them
        mine = [c for c in ln.chains if c.dst_port == conn.dst_port] or [c for c in ln.chains if c.dst_port is None]
        tls_inspector = any(c.transport == "tls" or c.sni for c in mine)
        http_inspector = any(a in HTTP_ALPNS for c in mine for a in c.alpn)
    alpn = ""
    if tls and tls_inspector:
        alpn = conn.alpn
    if not tls and conn.is_http and http_inspector:
        alpn = "http/1.1"
    ip = ipaddress.ip_address(conn.dst_ip)
    sni = conn.sni or (conn.host if conn.send is Send.TLS else None) or ""
    chains: list[FilterChain] = list(ln.chains)
    chains = _sieve(chains, lambda c: c.dst_port is not None, lambda c: c.dst_port == conn.dst_port)
    chains = _sieve(chains, lambda c: bool(c.cidrs), lambda c: any(ip in n for n in c.cidrs))
    chains = _sieve(chains, lambda c: bool(c.sni), lambda c: any(host_matches(s, sni) for s in c.sni))
    if tls_inspector:
        chains = _sieve(chains, lambda c: bool(c.transport),
                        lambda c: (c.transport == "tls") == tls)
    else:
        chains = _sieve(chains, lambda c: bool(c.transport), lambda c: c.transport == "raw_buffer")
    chains = _sieve(chains, lambda c: bool(c.alpn), lambda c: alpn in c.alpn)
    if len(chains) > 1:
        return chains[0], "several filter chains matched (netsim takes the first)"
    if chains:
        return chains[0], ""
    if ln.default_chain is not None:
        return ln.default_chain, ""
    return None, "no filter chain matched"


_PORT_RE = re.compile(r":\d+$")


def _host(conn: Connection) -> str:
    h = (conn.host or conn.dst_ip).strip().lower()
    if not h.startswith("["):
        h = _PORT_RE.sub("", h)
    return h.rstrip(".")


def _route_ok(matches: tuple[tuple[str, str], ...], path: str) -> bool:
    if not matches:
        return True
    for kind, value in matches:
        if (kind == "prefix" and path.startswith(value)) or (kind == "exact" and path == value) or \
                (kind == "regex" and re.fullmatch(value, path)):
            return True
    return False


# -------------------------------------------------------------------------------------------------
# the server side, where the server pod is known (section 4's failure table)

def capture_resolution(pod: PodInfo, version_name: str) -> tuple[Any, str]:
    """The capture options of ``pod`` under a release (its :class:`~netsim.workload.Workload`'s
    Resolution: the injector's istio-iptables arguments), or (None, why they could not be derived).
    Computed once per distinct pod template (:func:`template_key`): the replicas of a fleet, and
    workloads stamped from one chart, share it."""
    key = (template_key(pod), version_name)
    found = _RESOLUTIONS.get(key)
    if found is None:
        if len(_RESOLUTIONS) >= 65536:
            _RESOLUTIONS.clear()
        found = _RESOLUTIONS[key] = _capture_resolution(pod, version_name)
    return found


def _capture_resolution(pod: PodInfo, version_name: str) -> tuple[Any, str]:
    from netsim.workload.model import Workload

    w = Workload.from_pod_info(pod, istio_version=None if version_name == "current" else version_name)
    return w.resolution, w.capture_error


_RESOLUTIONS: dict[tuple[str, str], tuple[Any, str]] = {}


_KEYS: dict[int, tuple[Any, str]] = {}


def template_key(pod: PodInfo) -> str:
    """A digest of what a pod's capture options depend on: its kind, namespace, IPs, and its pod template's
    annotations and spec (not the object's name or labels, nor the workload's other fields), as
    ``netsim.drift.fleet`` keys pod specs."""
    hit = _KEYS.get(id(pod))
    if hit is not None and hit[0] is pod:
        return hit[1]
    import hashlib
    import json

    from netsim.k8s import POD_TEMPLATE_PATHS

    body: Any = pod.body
    for k in POD_TEMPLATE_PATHS.get(pod.kind, ()):
        body = body.get(k) if isinstance(body, dict) else None
    body = body if isinstance(body, dict) else {}
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    what = [pod.kind, pod.namespace, list(pod.ips), pod.sidecar, meta.get("annotations"), body.get("spec"),
            pod.body.get("status") if pod.kind == "Pod" else None]
    text = json.dumps(what, sort_keys=True, default=str, separators=(",", ":"))
    key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    if len(_KEYS) >= 65536:
        _KEYS.clear()
    _KEYS[id(pod)] = (pod, key)
    return key


def inbound_capture(pod: PodInfo, version_name: str) -> tuple[bool | None, frozenset[int] | None,
                                                              frozenset[int], str]:
    """(sidecar capture on?, captured ports or None for all, excluded ports, how it was decided)."""
    res, err = capture_resolution(pod, version_name)
    if res is None:
        return None, None, frozenset(), err
    if not res.capture or res.config is None:
        return False, frozenset(), frozenset(), res.no_capture_reason or "no capture"
    cfg = res.config
    excl = frozenset(int(p) for p in cfg.inbound_ports_exclude if p.isdigit())
    if cfg.inbound_ports == ("*",):
        return True, None, excl, f"-b * -d {','.join(cfg.inbound_ports_exclude) or '(none)'}"
    ports = frozenset(int(p) for p in cfg.inbound_ports if p.isdigit())
    return True, ports, frozenset(), f"-b {','.join(cfg.inbound_ports) or '(empty)'}"


def port_captured(pod: PodInfo, port: int, profile: MeshProfile) -> tuple[bool, str]:
    """Whether inbound ``port`` of ``pod`` reaches its sidecar, and why (one clause)."""
    if not pod.sidecar:
        return False, f"{pod.ref} has no sidecar ({pod.sidecar_why})"
    on, ports, excl, how = inbound_capture(pod, profile.name)
    if on is None:
        return True, how
    if not on:
        return False, f"{pod.ref} has no inbound capture ({how})"
    if ports is None:
        if port in excl:
            return False, f"port {port} of {pod.ref} is excluded from inbound capture ({how})"
        return True, f"inbound capture {how}"
    if port not in ports:
        why = "containerPorts" if profile.version < (1, 3, 0) else "includeInboundPorts"
        return False, (f"port {port} of {pod.ref} is not in the inbound capture list ({how}, from {why})")
    return True, f"inbound capture {how}"


def _server_check(idx: ProxyIndex, cl: Cluster, conn: Connection, tls: str) -> tuple[Verdict | None, str]:
    """Look at the server pods behind ``cl``: does what the client sidecar sends work there?"""
    if cl.type == "ORIGINAL_DST":
        targets = [(conn.dst_ip, conn.dst_port)]
    else:
        sp = cl.service_port
        targets = []
        for e in cl.endpoints:
            pod = idx.pods_by_ip.get(e.address)
            port = dict(e.ports).get(sp.name) if sp else None
            if port is None and sp is not None:
                port = resolve_target_port(sp, pod) or sp.port
            targets.append((e.address, port or conn.dst_port))
    if not targets:
        return None, ""
    fails: list[str] = []
    strict: list[str] = []
    known = 0
    for ip, port in targets:
        pod = idx.pods_by_ip.get(ip)
        if pod is None:
            continue
        known += 1
        captured, why = port_captured(pod, port, idx.profile)
        mtls_here = tls == "istio-mtls" or (tls == "auto" and pod.sidecar)
        if mtls_here and not captured:
            fails.append(f"{ip}:{port}: {why}")
        elif tls in ("plaintext", "auto") and not mtls_here and captured and pod.sidecar:
            mode, where = peer_mode(idx.objects, idx.mesh.root_namespace, pod.namespace, pod.label_map, port)
            if mode == "STRICT":
                strict.append(f"{ip}:{port}: {pod.ref} requires mTLS ({where})")
    if fails and len(fails) == len(targets):
        return Verdict.TLS_ERROR, ("the client sidecar originates Istio mTLS but " + "; ".join(fails[:3]) +
                                   " → the app reads a TLS ClientHello, the handshake fails (503 UF,URX)")
    if strict and len(strict) == len(targets):
        return Verdict.RESET, ("the client sidecar sends plaintext but " + "; ".join(strict[:3]) +
                               " → the server sidecar resets the connection (503 UC / connection reset)")
    if fails or strict:
        return None, f"some endpoints will fail: {'; '.join((fails + strict)[:3])}"
    return None, ""


def _endpoint_tls(idx: ProxyIndex, cl: Cluster, conn: Connection) -> tuple[str | None, str]:
    if cl.tls == "none":
        return None, ""
    if cl.tls != "auto":
        return cl.tls, cl.tls_reason
    eps = cl.endpoints
    chosen = next((e for e in eps if e.address == conn.dst_ip), None)
    if chosen is not None:
        return ("istio-mtls" if chosen.sidecar else "plaintext"), f"{cl.tls_reason}; endpoint {chosen.address}"
    if not eps:
        return "istio-mtls", f"{cl.tls_reason}; no endpoints known (an injected endpoint would get mTLS)"
    modes = {e.sidecar for e in eps}
    if modes == {True}:
        return "istio-mtls", f"{cl.tls_reason}; every endpoint has a sidecar"
    if modes == {False}:
        return "plaintext", f"{cl.tls_reason}; no endpoint has a sidecar"
    n = sum(e.sidecar for e in eps)
    first = eps[0]
    return ("istio-mtls" if first.sidecar else "plaintext"), (
        f"{cl.tls_reason}; per endpoint: {n} of {len(eps)} endpoints get mTLS (shown: {first.address})")


def no_endpoints_note(cl: Cluster) -> str:
    """What an EDS/STATIC cluster without endpoints means (the same sentence for ``mesh hop`` and ``diagnose``)."""
    svc = cl.service
    src = f" ({svc.where or svc.ref})" if svc is not None else ""
    return (f"cluster {cl.name} has no endpoints{src}: no EndpointSlice, Endpoints or selected Pod/WorkloadEntry "
            "among the objects read; if the cluster has none either, Envoy answers 503 UH (no healthy upstream) "
            "or resets the TCP connection")


def _hijack(idx: ProxyIndex, ln: Listener, fc: FilterChain, cl: Cluster, conn: Connection) -> str:
    """Why a match-all TCP chain on a wildcard listener sends this connection somewhere else."""
    s = cl.service
    if s is None or ln.address != "0.0.0.0" or fc.is_http or not fc.match_all:
        return ""
    if any(e.address == conn.dst_ip for e in cl.endpoints):
        return ""
    pod = idx.pods_by_ip.get(conn.dst_ip)
    owner = f"{conn.dst_ip} is {pod.ref}" if pod is not None else f"{conn.dst_ip} is not one of its endpoints"
    out = (f"{owner}, but every connection on port {conn.dst_port} without its own listener is hijacked by "
           f"{s.ref}")
    if cl.type in ("STRICT_DNS", "LOGICAL_DNS"):
        out += f": Envoy resolves {cl.target} and connects there, whatever IP the app dialled"
        host = s.external_name or s.hostname
        target = next((t for t in idx.objects.services if t.hostname == host), None)
        if target is not None and cl.port is not None and all(p.port != cl.port for p in target.ports):
            out += f" ({target.ref} has no port {cl.port}: connection failure, UF,URX)"
    return out


# -------------------------------------------------------------------------------------------------

def _pick_listener(idx: ProxyIndex, conn: Connection) -> Listener:
    if conn.direction is Direction.INBOUND:
        if idx.virtual_inbound is not None:
            return idx.virtual_inbound
        ln = idx.inbound_exact.get((conn.dst_ip, conn.dst_port))
        return ln if ln is not None else idx.virtual_outbound
    ln = idx.exact.get((conn.dst_ip, conn.dst_port))
    if ln is None:
        ln = idx.wildcard.get(conn.dst_port)
    return ln if ln is not None else idx.virtual_outbound


def _listener_why(idx: ProxyIndex, ln: Listener, conn: Connection) -> str:
    dst = f"{conn.dst_ip}:{conn.dst_port}"
    if ln.name == "virtualOutbound":
        return f"{dst} matched no {conn.dst_ip}_{conn.dst_port} or 0.0.0.0_{conn.dst_port} listener → virtualOutbound"
    if ln.name == "virtualInbound":
        return f"inbound {dst} → virtualInbound"
    by = ", ".join(ln.origins[:2]) + (" …" if len(ln.origins) > 2 else "")
    what = "exact listener" if ln.address != "0.0.0.0" else "wildcard listener"
    return f"{dst} matched {what} {ln.name} (from {by})"


def _loop_guard(idx: ProxyIndex, conn: Connection) -> tuple[bool, str]:
    """Whether an outbound connection sent on unchanged to ``dst:15006`` ends in the destination sidecar's
    loop guard: ``virtualInbound``'s first chain, ``virtualInbound-blackhole`` (destination port 15006 →
    BlackHoleCluster, ``listener_builder.go``; spec/istio-mesh-hops.md §3). Whether the server's inbound
    capture redirects the port to 15006 or not, Envoy's 15006 listener (bound to 0.0.0.0) gets it with
    original destination port 15006. Returns (caught?, why or a note when the server is unknown)."""
    if conn.direction is not Direction.OUTBOUND or conn.dst_port != INBOUND_PORT:
        return False, ""
    own = conn.dst_ip in idx.proxy.ips
    pod = idx.proxy.pod if own and idx.proxy.pod is not None else idx.pods_by_ip.get(conn.dst_ip)
    if idx.profile.inbound_via_15001:
        return False, ""  # 1.0-1.2: no 15006 listener at all
    if own or (pod is not None and pod.sidecar):
        who = "this sidecar's own" if own else f"{pod.ref}'s sidecar's" if pod is not None else ""
        return True, (f"{conn.dst_ip}:{INBOUND_PORT} is {who} inbound listener: virtualInbound's loop guard "
                      f"(chain virtualInbound-blackhole, destination port {INBOUND_PORT} → {BLACKHOLE}) drops it")
    if pod is None:
        return False, (f"{conn.dst_ip} is no pod among the objects read: if it runs a sidecar, its loop guard "
                       f"(virtualInbound-blackhole, destination port {INBOUND_PORT}) drops this connection")
    return False, ""


def hop(idx: ProxyIndex, conn: Connection, *, assume_captured: bool = False) -> Hop:
    """Decide ``conn`` on the proxy ``idx`` was built for. Never raises for a well-formed connection.

    For inbound, the server pod (found among the Pods read, by IP) first decides whether the port
    reaches the sidecar at all (verdict ``bypass``); ``assume_captured`` skips that check (the
    packet tracer already knows the kernel redirected it).
    """
    direction = conn.direction.value
    if conn.direction is Direction.INBOUND and not assume_captured:
        pod = idx.proxy.pod if idx.proxy.pod is not None and conn.dst_ip in idx.proxy.pod.ips \
            else idx.pods_by_ip.get(conn.dst_ip)
        if pod is not None:
            captured, why = port_captured(pod, conn.dst_port, idx.profile)
            if not captured:
                tail = {Send.MTLS: " The app reads the client sidecar's Istio mTLS bytes raw (TLS handshake "
                                   "failure, 503 UF,URX at the client).",
                        Send.TLS: " The app gets the TLS bytes directly."}.get(conn.send, "")
                return Hop(direction=direction, verdict=Verdict.BYPASS,
                           reason=f"{conn.dst_ip}:{conn.dst_port} bypasses the sidecar: {why}.{tail}",
                           evidence=(pod.where,))
    ln = _pick_listener(idx, conn)
    why_l = _listener_why(idx, ln, conn)
    fc, err = match_chain(ln, conn)
    if fc is None:
        hint = ""
        if conn.send not in (Send.MTLS,) and conn.direction is Direction.INBOUND:
            hint = " (the port requires mTLS: a plaintext or non-Istio TLS client is reset)"
        return Hop(direction=direction, listener=ln.name, verdict=Verdict.RESET,
                   reason=f"{why_l}; {err}{hint} → Envoy closes the connection.", evidence=ln.origins)
    base = Hop(direction=direction, verdict=Verdict.CAPTURED, reason="", listener=ln.name, filter_chain=fc.name,
               filter_chain_match=fc.match_text())
    evidence = tuple(dict.fromkeys((*ln.origins, fc.origin)))
    notes = (err,) if err else ()
    # downstream TLS termination checks (traffic.go: ErrTLSError / ErrMTLSError)
    if fc.tls_context and conn.send not in (Send.TLS, Send.MTLS):
        return replace(base, verdict=Verdict.TLS_ERROR, evidence=evidence, notes=notes,
                   reason=f"{why_l}; chain {fc.name or fc.match_text()} terminates TLS but the client sent plaintext.")
    if fc.tls_context == "istio-mtls" and conn.send is not Send.MTLS:
        return replace(base, verdict=Verdict.TLS_ERROR, evidence=evidence, notes=notes,
                   reason=f"{why_l}; chain {fc.name or fc.match_text()} requires Istio mTLS (a client "
                          "certificate); plain TLS fails the handshake.")
    route_config = vhost_name = route_name = None
    cluster_name: str | None
    direct: int | None = None
    if fc.is_http:
        if conn.send in (Send.TLS, Send.MTLS) and not fc.tls_context:
            return replace(base, route_config=fc.rds, verdict=Verdict.PROTOCOL_ERROR, evidence=evidence,
                           notes=notes,
                           reason=f"{why_l}; chain {fc.name or fc.match_text()} is an HTTP connection manager that "
                                  "does not terminate TLS: the TLS bytes are not HTTP.")
        if not conn.is_http and not (conn.send is Send.MTLS and conn.alpn.startswith("istio-h")):
            return replace(base, route_config=fc.rds, verdict=Verdict.PROTOCOL_ERROR, evidence=evidence,
                           notes=notes,
                           reason=f"{why_l}; chain {fc.name or fc.match_text()} only speaks HTTP (declared HTTP port) "
                                  "and the client sent raw TCP: the HTTP codec rejects it.")
        if fc.rds is not None:
            rc = idx.routes.get(fc.rds)
            route_config = fc.rds
            vh = rc.match(_host(conn)) if rc is not None else None
            if vh is None:
                return replace(base, route_config=route_config, verdict=Verdict.DIRECT_502, evidence=evidence,
                               notes=notes, reason=f"{why_l}; no virtual host in route {fc.rds} → 404/502.")
            vhost_name = vh.name
            r = next((x for x in vh.routes if _route_ok(x.matches, conn.path)), None)
            if r is None:
                return replace(base, route_config=route_config, virtual_host=vhost_name,
                               verdict=Verdict.DIRECT_502, evidence=evidence, notes=notes,
                               reason=f"{why_l}; no route of {vh.name} matches path {conn.path} → 404.")
            route_name = r.name
            cluster_name, direct = r.cluster, r.direct_status
            evidence = tuple(dict.fromkeys((*evidence, vh.origin, r.origin)))
        else:
            cluster_name = fc.http_cluster
    else:
        cluster_name = fc.cluster
    hop_head = replace(base, route_config=route_config, virtual_host=vhost_name, route=route_name)
    via = f"route {route_config}, virtual host {vhost_name}" if vhost_name else f"chain {fc.name or fc.match_text()}"
    if cluster_name is None:
        status = direct or 502
        return replace(hop_head, verdict=Verdict.DIRECT_502,
                   evidence=evidence, notes=notes,
                   reason=f"{why_l}; {via} answers {status} itself ({idx.policy}: the Host "
                          f"{_host(conn)!r} is not in the registry).")
    cl = idx.clusters.get(cluster_name)
    ctype = cl.type if cl is not None else None
    if cluster_name == BLACKHOLE:
        return replace(hop_head, cluster=cluster_name, cluster_type=ctype or "STATIC", verdict=Verdict.BLACKHOLE,
                       evidence=evidence, notes=notes,
                       reason=f"{why_l}; {via} → BlackHoleCluster ({fc.origin}): the connection is dropped.")
    caught, loop = _loop_guard(idx, conn) if cluster_name == PASSTHROUGH or ctype == "ORIGINAL_DST" else (False, "")
    if caught:
        return replace(hop_head, cluster=cluster_name, cluster_type=ctype or "ORIGINAL_DST", verdict=Verdict.BLACKHOLE,
                       evidence=(*evidence, "virtualInbound-blackhole: a direct connection to 15006 would loop"),
                       notes=notes, reason=f"{why_l}; {via} → {cluster_name} sends it on unchanged, but {loop}.")
    if loop:
        notes = (*notes, loop)
    if cluster_name == PASSTHROUGH:
        # plaintext to the original destination: a known server pod decides what it does with it (section 4)
        v, why = _server_check(idx, Cluster(name=PASSTHROUGH, type="ORIGINAL_DST"), conn, "plaintext")
        if v is not None:
            return replace(hop_head, cluster=cluster_name, cluster_type="ORIGINAL_DST", upstream_tls="plaintext",
                           verdict=v, evidence=evidence, notes=notes,
                           reason=f"{why_l}; {via} → {cluster_name} ({fc.origin}): {why}.")
    if cluster_name in (PASSTHROUGH, INBOUND_PASSTHROUGH):
        where = "to the original destination" if cluster_name == PASSTHROUGH else "to the app on the original port"
        return replace(hop_head, cluster=cluster_name, cluster_type="ORIGINAL_DST", upstream_tls="plaintext",
                   verdict=Verdict.PASSTHROUGH, evidence=evidence, notes=notes,
                   reason=f"{why_l}; {via} → {cluster_name}: bytes go unchanged {where} ({fc.origin}).")
    if cl is None:
        return replace(hop_head, cluster=cluster_name, verdict=Verdict.CAPTURED, evidence=evidence,
                       notes=(*notes, "cluster not built: the destination service is unknown"),
                       reason=f"{why_l}; {via} → {cluster_name}, a cluster this proxy does not have (503 NR/UH).")
    if conn.direction is Direction.INBOUND or cl.direction == "inbound":
        target = cl.target or f"{conn.dst_ip}:{conn.dst_port}"
        return replace(hop_head, cluster=cluster_name, cluster_type=ctype, upstream_tls="plaintext",
                   verdict=Verdict.CAPTURED, evidence=evidence, notes=notes,
                   reason=f"{why_l}; {via} → {cluster_name} ({ctype} {target}), plaintext to the app.")
    if cl.type in ("EDS", "STATIC") and not cl.endpoints and cl.service is not None:
        notes = (*notes, no_endpoints_note(cl))
    tls, tls_why = _endpoint_tls(idx, cl, conn)
    verdict = Verdict.CAPTURED
    what = f"{cl.type}" + (f" {cl.target}" if cl.target else "")
    reason = f"{why_l}; {via} → {cluster_name} ({what}), upstream {tls} ({tls_why})."
    if cl.tls in ("istio-mtls", "auto", "plaintext"):
        v, why = _server_check(idx, cl, conn, cl.tls)
        if v is not None:
            verdict, reason = v, f"{why_l}; {via} → {cluster_name} ({what}): {why}."
        elif why:
            notes = (*notes, why)
    hijack = _hijack(idx, ln, fc, cl, conn)
    if hijack:
        reason = f"{reason[:-1]}; {hijack}."
    return replace(hop_head, cluster=cluster_name, cluster_type=ctype, upstream_tls=tls, verdict=verdict,
               evidence=evidence, notes=notes, reason=reason)


__all__ = ["Hop", "capture_resolution", "hop", "inbound_capture", "match_chain", "no_endpoints_note", "port_captured",
           "template_key"]
