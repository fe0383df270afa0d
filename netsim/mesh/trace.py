"""The hook that lets ``netsim trace`` continue past 15001/15006 into the sidecar (issue 8 §2).

Owns: :func:`continue_trace`, which takes the kernel tracer's verdict for a connection
(``captured-outbound`` / ``captured-inbound``, from ``netsim.workload.hops.follow``) and its
original destination, and returns the Envoy steps that follow (listener, filter chain, route,
cluster, upstream TLS) as :class:`MeshContinuation`: text lines, a JSON object, one plain
sentence to end the trace with, and :class:`MeshUpstream`, the address Envoy connects to (the EDS
endpoint, the DNS target's address, the original destination for passthrough), which the tracer's
next hop goes to.

Never does: trace packets (``netsim.netfilter``), read files (``netsim.mesh.files.load_index`` builds
the index once), or import the tracer: the hand-off is plain values, so neither side depends on
the other's types.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from netsim.mesh.build import BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, ProxyIndex, resolve_target_port
from netsim.mesh.hop import Hop, hop
from netsim.mesh.model import Connection, Direction, Send, Verdict

# the tracer's Followed.verdict values after which a connection sits in a sidecar listener
_DIRECTIONS = {"captured-outbound": Direction.OUTBOUND, "captured-inbound": Direction.INBOUND}


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshStep:
    kind: str  # listener | filter_chain | route | cluster | upstream | verdict
    name: str | None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshUpstream:
    """Where Envoy connects: ``address`` None when it opens no connection (``what`` says why)."""

    address: str | None
    port: int
    what: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshContinuation:
    """What the sidecar does with the connection the kernel handed it."""

    hop: Hop
    steps: tuple[MeshStep, ...]
    istio: str
    upstream: MeshUpstream | None = None  # None: netsim has no more to say than the original destination

    @property
    def sentence(self) -> str:
        """One plain sentence: the hop's reason."""
        return self.hop.reason

    def final_sentence(self, kernel_summary: str) -> str:
        """The kernel's sentence followed by the sidecar's, as the trace's last line."""
        head = kernel_summary.rstrip().rstrip(".")
        return f"{head}. In the sidecar, under {self.istio}: {self.hop.reason}"

    def text_lines(self) -> list[str]:
        """Lines for the text trace, printed after the kernel's hops."""
        out = [f"== Envoy: {self.hop.direction}, {self.istio}"]
        out += [f"  {s.kind:<13} {s.name or '-'}" + (f"  ({s.detail})" if s.detail else "") for s in self.steps]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"istio": self.istio, **self.hop.to_json(),
                "steps": [{"kind": s.kind, "name": s.name, "detail": s.detail} for s in self.steps]}


def continue_trace(index: ProxyIndex, followed_verdict: str, *, dst_ip: str, dst_port: int, send: str = "tcp",
                   host: str | None = None, path: str = "/", sni: str | None = None) -> MeshContinuation | None:
    """The Envoy hop after the kernel's verdict ``followed_verdict`` for original destination ``dst_ip:dst_port``.

    Returns None when the connection never reached a sidecar listener (bypassed, dropped, DNS).
    ``index`` is built once for the pod being traced (``netsim.mesh.files.load_index``).
    """
    direction = _DIRECTIONS.get(followed_verdict)
    if direction is None:
        return None
    conn = Connection(direction=direction, dst_ip=dst_ip, dst_port=dst_port, send=Send(send), host=host, path=path,
                      sni=sni)
    h = hop(index, conn, assume_captured=True)
    return MeshContinuation(hop=h, steps=hop_steps(h), istio=index.profile.label,
                            upstream=upstream_of(index, h, conn) if direction is Direction.OUTBOUND else None)


def hop_steps(h: Hop) -> tuple[MeshStep, ...]:
    """The steps of hop ``h`` in Envoy's order (listener, filter chain, route, cluster, upstream TLS, verdict):
    ``trace --config``'s ``mesh.steps`` and the lanes of the pictures."""
    # a real listener names the object that made it; the virtual ones were made by no object
    made_by = h.evidence[0] if h.evidence and h.listener not in ("virtualOutbound", "virtualInbound") else ""
    steps = [MeshStep(kind="listener", name=h.listener, detail=made_by)]
    if h.filter_chain or h.filter_chain_match:
        steps.append(MeshStep(kind="filter_chain", name=h.filter_chain or "(unnamed)",
                              detail=h.filter_chain_match or ""))
    if h.route_config:
        steps.append(MeshStep(kind="route", name=h.virtual_host, detail=f"route config {h.route_config}"
                              + (f", route {h.route}" if h.route else "")))
    if h.cluster:
        steps.append(MeshStep(kind="cluster", name=h.cluster, detail=h.cluster_type or ""))
    if h.upstream_tls:
        steps.append(MeshStep(kind="upstream", name=h.upstream_tls))
    steps.append(MeshStep(kind="verdict", name=h.verdict.value))
    return tuple(steps)


# the hop verdicts after which Envoy opens no upstream connection (a reset or TLS error with a
# cluster happens at the server, after the client sidecar connected to the endpoint)
_NO_CONNECTION = (Verdict.BLACKHOLE, Verdict.DIRECT_502, Verdict.PROTOCOL_ERROR)


def upstream_of(index: ProxyIndex, h: Hop, conn: Connection) -> MeshUpstream | None:
    """The address Envoy's outbound connection goes to after hop ``h`` (None: the original destination).

    EDS: the endpoint the connection's own address is, else the first one (Envoy balances; netsim shows
    one), at its target port. STRICT_DNS/LOGICAL_DNS: the DNS target's address when a service in the
    objects has that name (an ExternalName to another Service), else no address. Passthrough
    (ORIGINAL_DST): the original destination.
    """
    if h.verdict in _NO_CONNECTION or (h.cluster is None and h.verdict in (Verdict.RESET, Verdict.TLS_ERROR)):
        return MeshUpstream(address=None, port=conn.dst_port, what=f"Envoy's verdict is {h.verdict.value}")
    if h.cluster is None or h.cluster in (PASSTHROUGH, INBOUND_PASSTHROUGH):
        return None
    if h.cluster == BLACKHOLE:
        return MeshUpstream(address=None, port=conn.dst_port, what="BlackHoleCluster drops it")
    cl = index.clusters.get(h.cluster)
    if cl is None:
        return MeshUpstream(address=None, port=conn.dst_port, what=f"cluster {h.cluster} does not exist (503 NR)")
    if cl.type == "ORIGINAL_DST":
        return None
    if cl.type == "EDS":
        if not cl.endpoints:
            return MeshUpstream(address=None, port=conn.dst_port,
                                what=f"cluster {cl.name} has no endpoints (503 UH, no healthy upstream)")
        e = next((x for x in cl.endpoints if x.address == conn.dst_ip), cl.endpoints[0])
        sp = cl.service_port
        port = dict(e.ports).get(sp.name) if sp is not None else None
        if port is None and sp is not None:
            port = resolve_target_port(sp, index.pods_by_ip.get(e.address)) or sp.port
        return MeshUpstream(address=e.address, port=port or conn.dst_port,
                            what=f"the endpoint ({e.workload or 'EDS'}) of {cl.name}")
    if cl.type in ("STRICT_DNS", "LOGICAL_DNS") and cl.target:
        host, _, port_text = cl.target.rpartition(":")
        port = int(port_text) if port_text.isdigit() else conn.dst_port
        try:
            return MeshUpstream(address=str(ipaddress.ip_address(host)), port=port, what=f"{cl.name}'s address")
        except ValueError:
            pass
        named = [s for s in index.objects.services if s.hostname == host.rstrip(".") and _ip(s.address)]
        if named:
            return MeshUpstream(address=named[0].address, port=port,
                                what=f"the DNS target {host} ({named[0].ref}) of {cl.name}")
        return MeshUpstream(address=None, port=port,
                            what=f"{cl.name} resolves {host} by DNS when it connects, an address netsim does not "
                                 "know offline")
    return None


def _ip(text: str) -> bool:
    try:
        return not ipaddress.ip_address(text).is_unspecified
    except ValueError:
        return False


__all__ = ["MeshContinuation", "MeshStep", "MeshUpstream", "continue_trace", "hop_steps", "upstream_of"]
