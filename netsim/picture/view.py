"""A trace as a picture's parts: lanes (hops), hooks, base chains entered, and the steps in them.

Owns: :func:`trace_view` (a :class:`~netsim.workload.hops.Followed`, with the Envoy hop of ``trace
--config`` when there is one → :class:`TraceView`) and :func:`mesh_lane`. Every step keeps its JSON
form (``netsim.netfilter.render_trace.trace_json``'s, the object ``--format json`` prints under
``hops[i].steps``) and its index there, so the HTML and the SVG name the same step the JSON does
(``data-step``). The deciding step is the :class:`~netsim.workload.verdict.Decision`'s: its rule
(``decided_by``) in the hop that decided; without a rule, that hop's conntrack binding (basis
``conntrack``), the step the kernel's trace says decided (a DROP policy), or for a bypass by policy the
policy of its nat chain that let the packet through unchanged; else none.

Never does: print, escape or lay out (``html``, ``svg``), or decide anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netsim.mesh.hop import Hop
    from netsim.mesh.trace import MeshContinuation
    from netsim.netfilter.trace import Trace
    from netsim.workload.hops import Followed


@dataclass(frozen=True, slots=True)
class StepView:
    """One step of a hop: ``index`` is its position in the JSON's ``hops[hop].steps``."""

    index: int
    json: dict[str, Any]
    decides: bool = False
    rewrite: str = ""  # a NAT rule's rewrite of the packet ("destination 10.0.0.5:80 → 127.0.0.1:15001")

    @property
    def kind(self) -> str:
        return str(self.json["kind"])

    @property
    def on_path(self) -> bool:
        """Whether the packet took this step: a matched rule, a policy, a conntrack binding or a kernel note
        (a rule that did not match, or a skipped run, is only met)."""
        return self.kind in ("policy", "conntrack", "note") or (self.kind == "rule" and bool(self.json["matched"]))


@dataclass(frozen=True, slots=True)
class ChainBlock:
    """A base chain entered at a hook (the kernel's PACKET: line) and the steps of its traversal."""

    title: str  # "nat PREROUTING"
    detail: str  # "nft, inet, priority -100" (who wrote it as the text trace says: render_trace.backend_label)
    packet: str  # the packet as the chain saw it: "IN=eth0 SRC=… DST=… SPORT=… DPORT=…"
    steps: tuple[StepView, ...]


@dataclass(frozen=True, slots=True)
class HookView:
    """One hook the packet crossed (a second pass is the loopback re-entry): its kernel notes and chains, in
    order (a :class:`StepView` is a note outside any chain)."""

    pass_no: int
    hook: str
    parts: tuple[StepView | ChainBlock, ...]


@dataclass(frozen=True, slots=True)
class LaneView:
    """A hop: who sends, the packet, the hooks crossed, where it ended."""

    index: int  # the hop's position in the JSON's ``hops``
    who: str
    packet: str
    hooks: tuple[HookView, ...]
    result: str  # the kernel's outcome sentence
    outcome: str  # delivered | refused | sent | dropped | queued
    original_dst: str | None
    uncertain: tuple[str, ...]
    decided: bool  # this hop decided the verdict

    def steps(self) -> list[StepView]:
        out: list[StepView] = []
        for h in self.hooks:
            for p in h.parts:
                out.extend(p.steps if isinstance(p, ChainBlock) else (p,))
        return out


@dataclass(frozen=True, slots=True)
class MeshStepView:
    """One Envoy step (``mesh.steps[index]`` in the JSON): listener, filter chain, route, cluster, upstream TLS,
    verdict."""

    index: int
    kind: str
    name: str
    detail: str
    decides: bool = False


@dataclass(frozen=True, slots=True)
class MeshLane:
    title: str  # "Envoy, outbound, Istio 1.5"
    steps: tuple[MeshStepView, ...]
    verdict: str
    reason: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TraceView:
    verdict: str
    captured: bool
    summary: str
    reason: str
    decided_by: dict[str, Any] | None
    listener: dict[str, Any] | None
    lanes: tuple[LaneView, ...]
    mesh: MeshLane | None  # the sidecar's Envoy hop, drawn after the first lane
    notes: tuple[str, ...]

    def deciding(self) -> StepView | None:
        for lane in self.lanes:
            for s in lane.steps():
                if s.decides:
                    return s
        return None

    def deciding_lane(self) -> int | None:
        return next((ln.index for ln in self.lanes if ln.decided), None)


def _packet_text(snapshot: tuple[object, ...]) -> str:
    from netsim.netfilter.render_trace import packet_line

    return packet_line(snapshot).removeprefix("PACKET: ")


def _endpoint(snapshot: tuple[object, ...]) -> tuple[str, str]:
    """(source, destination) as ``ip:port`` from a step's packet snapshot."""
    _i, _o, _lo, src_i, dst_i, sport, dport, _m, proto, version = snapshot
    conv = IPv4Address if version == 4 else IPv6Address

    def ep(addr: object, port: object) -> str:
        a = conv(addr)
        text = f"[{a}]" if version == 6 else str(a)
        return f"{text}:{port}" if proto in ("tcp", "udp", "sctp") else text

    return ep(src_i, sport), ep(dst_i, dport)


def _final(t: Trace) -> tuple[str, str]:
    def ep(e: Any) -> str:
        return f"[{e.addr}]:{e.port}" if e.addr.version == 6 else f"{e.addr}:{e.port}"

    return ep(t.src), ep(t.dst)


def _is_deciding(js: dict[str, Any], decided_by: dict[str, Any] | None) -> bool:
    return decided_by is not None and js["kind"] == "rule" and (js["table"], js["chain"], js["position"], js["rule"]) \
        == (decided_by["table"], decided_by["chain"], decided_by["position"], decided_by["rule"])


def _lane(i: int, who: str, t: Trace, decided: bool, decided_by: dict[str, Any] | None, basis: str) -> LaneView:
    from netsim.netfilter.render_trace import backend_label, describe_packet, trace_json
    from netsim.netfilter.trace import Kind

    js = trace_json(t)
    steps_json: list[dict[str, Any]] = js["steps"]
    # the JSON's steps are the trace's steps without the TABLE entries, in order
    indexed: list[tuple[Any, int | None]] = []
    n = 0
    for s in t.steps:
        if s.kind is Kind.TABLE:
            indexed.append((s, None))
        else:
            indexed.append((s, n))
            n += 1
    assert n == len(steps_json)
    # which JSON step decides: the rule, else (no rule) the conntrack binding or the kernel's deciding step
    pick: int | None = None
    if decided:
        pick = next((k for k, sj in enumerate(steps_json) if _is_deciding(sj, decided_by)), None)
        if pick is None and decided_by is None:
            if basis == "conntrack":
                pick = next((k for k, sj in enumerate(steps_json) if sj["kind"] == "conntrack"), None)
            if pick is None and t.decided_by is not None:
                pick = next((k for (s, k) in indexed if k is not None and s is t.decided_by), None)
            if pick is None and basis == "policy":  # the capture table's chain ended: its policy let it through
                pick = next((k for k in range(len(steps_json) - 1, -1, -1) if steps_json[k]["kind"] == "policy"
                             and steps_json[k]["table"] == "nat" and steps_json[k]["pass"] == 0), None)
    # snapshots of each TABLE entry, to tell what a NAT rule rewrote
    entries = [(pos, s.packet) for pos, (s, k) in enumerate(indexed) if k is None]
    hooks: list[HookView] = []
    cur_key: tuple[int, str] | None = None
    parts: list[StepView | ChainBlock] = []
    block: tuple[str, str, str, list[StepView], int] | None = None

    def close_block() -> None:
        nonlocal block
        if block is not None:
            parts.append(ChainBlock(block[0], block[1], block[2], tuple(block[3])))
            block = None

    def close_hook() -> None:
        close_block()
        if cur_key is not None:
            hooks.append(HookView(cur_key[0], cur_key[1], tuple(parts)))
        parts.clear()

    for pos, (s, k) in enumerate(indexed):
        key = (s.pass_no, s.hook)
        if key != cur_key:
            close_hook()
            cur_key = key
        if k is None:
            close_block()
            b = s.base
            detail = f"{backend_label(b)}, {b.family}, priority {b.priority}" if b is not None else ""
            block = (f"{s.table} {s.chain}", detail, _packet_text(s.packet), [], pos)
            continue
        sj = steps_json[k]
        rewrite = ""
        if sj["kind"] == "rule" and sj["matched"] and sj.get("verdict") == "ACCEPT" and \
                (s.table == "nat" or (s.base is not None and s.base.nat)) and block is not None:
            before = _endpoint(indexed[block[4]][0].packet)
            nxt = next((p for (q, p) in entries if q > pos), None)
            after = _endpoint(nxt) if nxt is not None else _final(t)
            changed = [f"{name} {a} → {b}" for name, a, b in (("source", before[0], after[0]),
                                                               ("destination", before[1], after[1])) if a != b]
            rewrite = "; ".join(changed)
        view = StepView(k, sj, decides=pick == k, rewrite=rewrite)
        if block is not None and sj["kind"] in ("rule", "policy", "skipped"):
            block[3].append(view)
        else:
            close_block()
            parts.append(view)
    close_hook()
    od = js["original_dst"]
    return LaneView(index=i, who=who, packet=describe_packet(t), hooks=tuple(hooks), result=t.reason,
                    outcome=t.outcome.value, original_dst=od, uncertain=tuple(t.uncertain), decided=decided)


def mesh_lane(h: Hop, istio: str, steps: Any) -> MeshLane:
    """The Envoy lane of hop ``h`` (``steps``: its ``MeshStep`` values, as ``mesh.steps`` in the JSON). The
    step that decides is the last one before the verdict: the one whose outcome Envoy acts on."""
    n = len(steps)
    deciding = max((k for k, s in enumerate(steps) if s.kind != "verdict"), default=n - 1)
    views = tuple(MeshStepView(k, s.kind, s.name or "-", s.detail, decides=k == deciding) for k, s in enumerate(steps))
    return MeshLane(title=f"Envoy, {h.direction}, {istio}", steps=views, verdict=h.verdict.value, reason=h.reason,
                    notes=tuple(h.notes))


def trace_view(f: Followed, *, summary: str | None = None, notes: tuple[str, ...] | list[str] = (),
               mesh: MeshContinuation | None = None) -> TraceView:
    """The picture's parts of ``f`` (``summary``: the last sentence when ``--config`` extended it)."""
    d = f.decision
    dj = d.to_json()
    lanes = tuple(_lane(i, h.who, h.trace, i == d.hop, dj["decided_by"], d.basis) for i, h in enumerate(f.hops))
    ml = mesh_lane(mesh.hop, mesh.istio, mesh.steps) if mesh is not None else None
    return TraceView(verdict=d.verdict.value, captured=d.verdict.captured, summary=summary or f.summary,
                     reason=d.reason, decided_by=dj["decided_by"], listener=dj["listener"], lanes=lanes, mesh=ml,
                     notes=tuple(notes))


__all__ = ["ChainBlock", "HookView", "LaneView", "MeshLane", "MeshStepView", "StepView", "TraceView", "mesh_lane",
           "trace_view"]
