"""The hook that lets ``netsim trace`` continue past 15001/15006 into the sidecar (issue 8 §2).

Owns: :func:`continue_trace`, which takes the kernel tracer's verdict for a connection
(``captured-outbound`` / ``captured-inbound``, from ``netsim.workload.hops.follow``) and its
original destination, and returns the Envoy steps that follow (listener, filter chain, route,
cluster, upstream TLS) as :class:`MeshContinuation`: text lines, a JSON object and one plain
sentence to end the trace with.

Never does: trace packets (``netsim.netfilter``), read files (``netsim.mesh.files.load_index`` builds
the index once), or import the tracer: the hand-off is plain values, so neither side depends on
the other's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netsim.mesh.build import ProxyIndex
from netsim.mesh.hop import Hop, hop
from netsim.mesh.model import Connection, Direction, Send

# the tracer's Followed.verdict values after which a connection sits in a sidecar listener
_DIRECTIONS = {"captured-outbound": Direction.OUTBOUND, "captured-inbound": Direction.INBOUND}


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshStep:
    kind: str  # listener | filter_chain | route | cluster | upstream | verdict
    name: str | None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshContinuation:
    """What the sidecar does with the connection the kernel handed it."""

    hop: Hop
    steps: tuple[MeshStep, ...]
    istio: str

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
    return MeshContinuation(hop=h, steps=tuple(steps), istio=index.profile.label)


__all__ = ["MeshContinuation", "MeshStep", "continue_trace"]
