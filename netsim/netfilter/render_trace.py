"""Printing a :class:`Trace`: human text, JSON, and the kernel's own ``xtables-monitor --trace`` lines.

``xtables-trace`` (DESIGN.md contract): one line per event, as iptables 1.8.9's ``xtables-monitor
--trace`` prints it without the trace id and the ``-4 -t TABLE`` prefix of the rule text::

    PACKET: OUT=eth0 SRC=10.244.0.5 DST=10.0.0.5 SPORT=40000 DPORT=80
    TRACE: nat:MY_OUTPUT:rule:9:JUMP:MY_REDIRECT  -A MY_OUTPUT -d 10.0.0.0/8 -j MY_REDIRECT
    TRACE: nat:OUTPUT:policy:ACCEPT

``rule:N`` is the rule's 1-based position in its chain (the kernel prints the nft handle; map
handles to positions to diff). Only matched rules and policies appear, as in the kernel. Verdicts:
CONTINUE (non-terminating targets), ACCEPT (also NAT targets), DROP (also REJECT), RETURN (the
pinned xtables-monitor prints ``0xfffffffb``; pass ``return_verdict`` to reproduce it), JUMP:X,
GOTO:X. PACKET lines carry IN/OUT, LOOPBACK, SRC, DST, SPORT, DPORT and MARK (when non-zero).

``nft-trace``: the lines ``nft -a monitor trace`` prints, from ``trace id`` on, with the id as ``ID``::

    trace id ID inet t output packet: oif "eth0" ip saddr 10.0.0.5 ip daddr 10.0.0.9 ip protocol tcp tcp …
    trace id ID inet t output rule tcp dport 80 counter packets 0 bytes 0 jump redir # handle 2 (verdict jump redir)
    trace id ID inet t output policy accept meta mark 0x00000007

one ``packet:`` line per base chain entered (with the fields netsim models: devices, addresses, protocol,
ports; the kernel adds header fields such as ``ip ttl``), one line per rule that matched, in nft's listing
wording, counters 0, ``# handle N`` the input's handle (``nft -a list ruleset``) or else the rule's position,
NAT statements as ``verdict accept``, reject as ``verdict drop``; ``policy`` lines with a non-zero mark; no
line when a regular chain simply ends. Rules of iptables-nft print in the words nft lists them with
(``nft/xlate.py``: ``skuid 7``, ``xt target CT``); legacy x_tables never appear.

JSON schema (``--format json``), one object::

    {"packet": {family, proto, src, sport, dst, dport, origin, in_iface, out_iface, uid, gid, mark,
                ctstate, "ct": {zone, mark, reply, dnat_to, snat_to ("ip:port" | null)}},
     "steps": [{"pass": 0|1, "hook", "table", "chain", "backend": "nft"|"iptables-nft", "family": "ip"|"ip6"|"inet",
                "priority" (the base chain's; rule, policy and skipped steps),
                "kind": "rule"|"policy"|"skipped"|"note"|"conntrack",
                "position", "end" (skipped only), "rule" (iptables-save text), "matched", "verdict",
                "target", "failed": {"condition", "why"} | null, "uncertain": str | null,
                "text" (note, conntrack), "binding": "DNAT"|"SNAT", "rewrites": "dst"|"src" (conntrack:
                a NAT binding applied from the packet's existing conntrack entry, not from a rule)}],
     "verdict": "delivered"|"refused"|"sent"|"dropped"|"queued", "reason": str,
     "final": {"src", "sport", "dst", "dport", "in_iface", "out_iface", "mark", "zone", "ctstate",
               "ctmark", "looped", "local_port", "transparent_socket"},
     "original_dst": "ip:port" | null, "decided_by": step | null,
     "uncertain": [str], "branches": [{"table", "chain", "position", "rule", "taken"}]}

Never evaluates rules, never does IO.
"""

from __future__ import annotations

import functools
import json
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from netsim.netfilter.engine import describe_failure
from netsim.netfilter.model import Family
from netsim.netfilter.packet import Address, Conntrack
from netsim.netfilter.render import inet_ntop
from netsim.netfilter.trace import BaseChain, Endpoint, Kind, Step, Trace


def _ep(ep: Endpoint | None) -> str | None:
    if ep is None:
        return None
    addr = inet_ntop(ep.addr)
    return f"[{addr}]:{ep.port}" if ep.addr.version == 6 else f"{addr}:{ep.port}"


def _packet_line(snapshot: tuple[object, ...]) -> str:
    in_iface, out_iface, loopback, src_i, dst_i, sport, dport, mark, proto, version = snapshot
    conv = IPv4Address if version == 4 else IPv6Address
    src, dst = inet_ntop(conv(src_i)), inet_ntop(conv(dst_i))
    parts = ["PACKET:"]
    if in_iface:
        parts.append(f"IN={in_iface}")
        if loopback:
            parts.append("LOOPBACK")
    if out_iface:
        parts.append(f"OUT={out_iface}")
    parts += [f"SRC={src}", f"DST={dst}"]
    if proto in ("tcp", "udp", "sctp"):
        parts += [f"SPORT={sport}", f"DPORT={dport}"]
    if mark:
        parts.append(f"MARK={mark:#x}")
    return " ".join(parts)


packet_line = _packet_line  # the PACKET: line of a step's packet snapshot (the text trace and pictures use it)


def _verdict(step: Step, return_verdict: str) -> str:
    if step.verdict in ("JUMP", "GOTO"):
        return f"{step.verdict}:{step.target}"
    if step.verdict == "RETURN":
        return return_verdict
    return step.verdict


def render_xtables(trace: Trace, *, return_verdict: str = "RETURN", packets: bool = True) -> str:
    """The trace as ``xtables-monitor --trace`` lines (see the module docstring)."""
    lines: list[str] = []
    for s in trace.steps:
        if s.base is not None and s.base.backend == "nft":
            continue  # native nftables chains: --format nft-trace
        if s.kind is Kind.TABLE:
            if packets:
                lines.append(_packet_line(s.packet))
        elif s.kind is Kind.POLICY:
            lines.append(f"TRACE: {s.table}:{s.chain}:policy:{s.verdict}")
        elif s.kind is Kind.RULE and s.matched:
            lines.append(f"TRACE: {s.table}:{s.chain}:rule:{s.position}:{_verdict(s, return_verdict)}  {s.text}")
    return "\n".join(lines) + "\n"


_NFT_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return", "CONTINUE": "continue", "QUEUE": "queue"}


def _nft_packet_line(snapshot: tuple[object, ...], family: str) -> str:
    """nft's packet line: in an ip/ip6 table the transport header implies the protocol, which nft's
    dependency elimination then leaves out (an inet table prints it)."""
    in_iface, out_iface, _loopback, src_i, dst_i, sport, dport, _mark, proto, version = snapshot
    conv = IPv4Address if version == 4 else IPv6Address
    parts = []
    if in_iface:
        parts.append(f'iif "{in_iface}"')
    if out_iface:
        parts.append(f'oif "{out_iface}"')
    l3 = "ip" if version == 4 else "ip6"
    parts += [f"{l3} saddr {inet_ntop(conv(src_i))}", f"{l3} daddr {inet_ntop(conv(dst_i))}"]
    l4 = proto in ("tcp", "udp", "sctp")
    if family == "inet" or not l4:
        parts.append(f"{l3} {'protocol' if version == 4 else 'nexthdr'} {proto}")
    if l4:
        parts += [f"{proto} sport {sport}", f"{proto} dport {dport}"]
    return " ".join(parts)


@functools.lru_cache(maxsize=1024)
def _iptables_nft_text(save_text: str, family: str) -> str:
    """An iptables-nft rule (``-A CHAIN …`` as the step shows it) in the words nft prints for it."""
    from netsim.netfilter.nft.xlate import iptables_nft_text
    from netsim.netfilter.parse import parse_rule_args, tokenize

    return iptables_nft_text(parse_rule_args(tokenize(save_text)[2:], Family.IPV4 if family == "ip" else Family.IPV6))


def render_nft_trace(trace: Trace) -> str:
    """The trace as ``nft -a monitor trace`` lines (see the module docstring)."""
    lines: list[str] = []
    for s in trace.steps:
        b = s.base
        if b is None or b.backend == "iptables-legacy":
            continue  # legacy x_tables never appear in nft's trace
        if s.kind is Kind.TABLE:
            lines.append(f"trace id ID {b.family} {b.table} {b.chain} packet: {_nft_packet_line(s.packet, b.family)}")
        elif s.kind is Kind.POLICY:
            mark = s.packet[7] if s.packet else 0
            extra = f" meta mark 0x{mark:08x}" if mark else ""
            lines.append(f"trace id ID {b.family} {b.table} {b.chain} policy {s.verdict.lower()}{extra}")
        elif s.kind is Kind.RULE and s.matched:
            verdict = f"{s.verdict.lower()} {s.target}" if s.verdict in ("JUMP", "GOTO") else \
                _NFT_VERDICTS.get(s.verdict, s.verdict.lower())
            text = s.text if b.backend == "nft" else _iptables_nft_text(s.text, b.family)
            lines.append(f"trace id ID {b.family} {b.table} {s.chain} rule {text} # handle {s.position} "
                         f"(verdict {verdict})")
    return "\n".join(lines) + "\n" if lines else ""


def _step_json(s: Step, trace: Trace) -> dict[str, Any]:
    failed = None
    if s.failed is not None:
        failed = {"condition": s.failed[0], "why": describe_failure(s, trace.packet.family).partition(": ")[2]}
    out: dict[str, Any] = {
        "pass": s.pass_no,
        "hook": s.hook,
        "table": s.table or None,
        "chain": s.chain or None,
        "kind": s.kind.value,
    }
    if s.base is not None:
        out.update(backend=s.base.written_by, family=s.base.family)
        if s.kind is not Kind.TABLE:
            out["priority"] = s.base.priority
    if s.kind is Kind.RULE:
        out.update(position=s.position, rule=s.text, matched=s.matched, verdict=s.verdict or None,
                   target=s.target or None, failed=failed, uncertain=s.uncertain or None)
    elif s.kind is Kind.POLICY:
        out.update(verdict=s.verdict)
    elif s.kind is Kind.SKIPPED:
        out.update(position=s.position, end=s.end, failed=failed)
    elif s.kind is Kind.NOTE:
        out.update(text=s.text)
    elif s.kind is Kind.CONNTRACK:
        out.update(text=s.text, binding=s.target, rewrites=s.verdict)
    return out


def _binding(b: tuple[Address, int] | None) -> str | None:
    return None if b is None else _ep(Endpoint(b[0], b[1]))


def _ct_json(ct: Conntrack) -> dict[str, Any]:
    return {"zone": ct.zone, "mark": ct.mark, "reply": ct.reply, "dnat_to": _binding(ct.dnat_to),
            "snat_to": _binding(ct.snat_to)}


def trace_json(trace: Trace) -> dict[str, Any]:
    """The trace as a JSON-ready dict (schema in the module docstring)."""
    p = trace.packet
    return {
        "packet": {
            "family": p.family.value,
            "proto": p.proto.value,
            "src": inet_ntop(p.src),
            "sport": p.sport,
            "dst": inet_ntop(p.dst),
            "dport": p.dport,
            "origin": p.origin.value,
            "in_iface": p.in_iface,
            "out_iface": p.out_iface,
            "uid": p.socket.uid if p.socket else None,
            "gid": p.socket.gid if p.socket else None,
            "mark": p.mark,
            "ctstate": p.ct.state.value,
            "ct": _ct_json(p.ct),
        },
        "steps": [_step_json(s, trace) for s in trace.steps if s.kind is not Kind.TABLE],
        "verdict": trace.outcome.value,
        "reason": trace.reason,
        "final": {
            "src": inet_ntop(trace.src.addr),
            "sport": trace.src.port,
            "dst": inet_ntop(trace.dst.addr),
            "dport": trace.dst.port,
            "in_iface": trace.in_iface,
            "out_iface": trace.out_iface,
            "mark": trace.mark,
            "zone": trace.zone,
            "ctstate": trace.ctstate,
            "ctmark": trace.ctmark,
            "looped": trace.looped,
            "local_port": trace.local_port,
            "transparent_socket": trace.transparent_socket,
        },
        "original_dst": _ep(trace.original_dst),
        "decided_by": _step_json(trace.decided_by, trace) if trace.decided_by else None,
        "uncertain": list(trace.uncertain),
        "branches": [
            {"table": b.table, "chain": b.chain, "position": b.position, "rule": b.text, "taken": b.taken}
            for b in trace.branches
        ],
    }


def render_json(trace: Trace) -> str:
    return json.dumps(trace_json(trace), indent=2)


def describe_packet(trace: Trace) -> str:
    p = trace.packet
    src, dst = _ep(Endpoint(p.src, p.sport)), _ep(Endpoint(p.dst, p.dport))
    if p.origin.value == "local":
        who = f"uid {p.socket.uid} gid {p.socket.gid}" if p.socket else "no socket"
        origin = f"locally generated ({who})"
    else:
        origin = f"arriving on {p.in_iface}"
    ct = p.ct
    extra = [f"zone {ct.zone}"] if ct.zone else []
    extra += [f"mark {ct.mark:#x}"] if ct.mark else []
    extra += [f"DNAT to {_binding(ct.dnat_to)}"] if ct.dnat_to else []
    extra += [f"SNAT to {_binding(ct.snat_to)}"] if ct.snat_to else []
    extra += ["reply direction"] if ct.reply else []
    entry = f" ({', '.join(extra)})" if extra else ""
    return f"{p.proto.value} {src} → {dst}, {origin}, conntrack {ct.state.value}{entry}"


def backend_label(b: BaseChain) -> str:
    """Who wrote a base chain, as the text trace (and the pictures) name it: the detected writer of a table
    an nft listing shows (``iptables-nft, as nft lists it``), else its backend."""
    return f"{b.writer}, as nft lists it" if b.writer else b.backend


def _base_name(b: BaseChain) -> str:
    return f"{b.family} {b.table} {b.chain} ({backend_label(b)}, priority {b.priority})"


def _why_this_backend(trace: Trace) -> list[str]:
    """In a namespace several backends wrote: which base chain's rule decided, and the base chains of its hook
    that ran before it and let the packet on (so a reader sees why that backend's rule, not another's)."""
    d = trace.decided_by
    if d is None or d.base is None:
        return []
    i = trace.steps.index(d)
    before = []
    for s in trace.steps[:i]:
        if s.kind is Kind.TABLE and s.base is not None and (s.pass_no, s.hook) == (d.pass_no, d.hook) \
                and s.base != d.base:
            before.append(_base_name(s.base))
    b = d.base
    line = f"Decided by: {b.written_by} {b.family} {d.table} {d.chain} rule {d.position}, in {_base_name(b)}"
    if before:
        line += (f"; before it on {d.hook}: {', '.join(before)}, which let the packet on (a hook's base chains run "
                 "by priority, of equal priorities the one loaded later first; nat chains run inside nf_nat's hook, "
                 "the first to bind a connection ending nat for it)")
    return [line]


def render_text(trace: Trace, *, all_rules: bool = True) -> str:
    """Human text: each hook and table, every rule evaluated (iptables-save text), and for a rule
    that did not match the first condition that failed and why."""
    lines = [f"Packet: {describe_packet(trace)}"]
    fam = trace.packet.family
    # which backend wrote a base chain is said once several did (an iptables-only trace reads as before)
    mixed = any(s.base is not None and s.base.backend != "iptables-nft" for s in trace.steps)
    hook = None
    for s in trace.steps:
        if s.hook and (s.pass_no, s.hook) != hook:
            hook = (s.pass_no, s.hook)
            lines.append(f"{s.hook}{' (after loopback re-entry)' if s.pass_no else ''}")
        if s.kind is Kind.TABLE:
            base = s.base
            who = f"{base.family} {s.table} {s.chain} ({backend_label(base)}, priority {base.priority})" \
                if mixed and base else f"{s.table} {s.chain}"
            lines.append(f"  {who}   [{_packet_line(s.packet).removeprefix('PACKET: ')}]")
        elif s.kind is Kind.NOTE:
            lines.append(f"  · {s.text}")
        elif s.kind is Kind.CONNTRACK:
            lines.append(f"    ⇄ {s.text}")
        elif s.kind is Kind.POLICY:
            lines.append(f"    policy {s.verdict} ({s.table} {s.chain})")
        elif s.kind is Kind.SKIPPED:
            lines.append(f"    rules {s.position}-{s.end} of {s.chain} skipped: none is for this destination")
        elif s.matched:
            arrow = {"JUMP": f"→ {s.target}", "GOTO": f"⇢ {s.target}"}.get(s.verdict, s.verdict)
            lines.append(f"    ✔ {s.chain} #{s.position}: {s.text}   {arrow}")
            if s.uncertain:
                lines.append(f"        uncertain: {s.uncertain}")
        elif all_rules:
            lines.append(f"    ✘ {s.chain} #{s.position}: {s.text}")
            lines.append(f"        {describe_failure(s, fam)}")
            if s.uncertain:
                lines.append(f"        uncertain: {s.uncertain}")
    lines.append(f"Result: {trace.reason}")
    if mixed:
        lines += _why_this_backend(trace)
    if trace.original_dst is not None and trace.original_dst != trace.dst:
        lines.append(f"Original destination (SO_ORIGINAL_DST): {_ep(trace.original_dst)}")
    for u in trace.uncertain:
        lines.append(f"Uncertain: {u}")
    for b in trace.branches:
        lines.append(f"Branch: {b.table} {b.chain} #{b.position} ({b.text}) assumed "
                     f"{'matched' if b.taken else 'not matched'}")
    return "\n".join(lines) + "\n"


__all__ = ["backend_label", "describe_packet", "packet_line", "render_json", "render_nft_trace", "render_text",
           "render_xtables", "trace_json"]
