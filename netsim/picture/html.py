"""The HTML pages: one self-contained file per answer (no script, no network, one inline stylesheet).

Owns: :func:`trace_page` (``trace``, also with ``--config``), :func:`follow_up_page` (``trace
--follow-up``), :func:`matrix_page` (``trace --matrix``), :func:`hop_page` (``mesh hop``) and
:func:`diagnose_page` (``diagnose``).

Contract (issue 17): every step of a trace is an element with ``data-hop`` (its hop's position in the
JSON's ``hops``, or ``mesh`` for the JSON's ``mesh.steps``) and ``data-step`` (its position in that
hop's ``steps``); the steps the packet took have the class ``hit`` (✔), the rules it met but did not
match ``miss`` (✘, with the condition that failed); the deciding step has ``aria-current="step"`` and
the id ``decides`` (one per page; ``--follow-up``'s two packets: ``decides`` and ``decides-2``).

Never does: compute anything: every value comes from :mod:`netsim.picture.view` or the core's values.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from netsim.picture.style import CSP, CSS
from netsim.picture.view import ChainBlock, LaneView, MeshLane, MeshStepView, StepView, TraceView

if TYPE_CHECKING:
    from netsim.k8s import Origin
    from netsim.mesh.build import ProxyIndex
    from netsim.mesh.diagnose import Report

# verdict → (class, mark): the mark says it without colour
_MARK = "<span class=\"mark\" role=\"img\" aria-label=\""  # a step's ✔/✘, named for screen readers
_VERDICT_MARKS = {"captured": "\u2714", "bypassed": "\u21b7", "dropped": "\u2715", "looped": "\u21bb",
                  "uncertain": "?"}


def e(text: object) -> str:
    """Escape ``text`` for HTML/XML text and attribute values."""
    return escape(str(text), quote=True)


def verdict_class(verdict: str) -> str:
    """``captured-inbound`` → ``captured``; a mesh verdict → what it means for the connection."""
    if verdict.startswith("captured") or verdict in ("passthrough",):
        return "captured"
    if verdict in ("bypassed", "bypass"):
        return "bypassed"
    if verdict in ("dropped", "blackhole", "direct-502", "reset-no-filter-chain", "tls-error", "protocol-error"):
        return "dropped"
    if verdict == "looped":
        return "looped"
    return "uncertain"


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{e(CSP)}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"generator\" content=\"netsim\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _verdict_box(verdict: str, label: str, lines: Iterable[str]) -> str:
    cls = verdict_class(verdict)
    inner = "".join(f"<p>{line}</p>" for line in lines)
    return (f"<section class=\"verdict v-{cls}\" aria-label=\"{e(label)}\"><div class=\"big\">"
            f"<span aria-hidden=\"true\">{_VERDICT_MARKS[cls]}</span> {e(label)}: {e(verdict.upper())}</div>"
            f"{inner}</section>")


# ----------------------------------------------------------------------------------------------------------
# one trace


def _sid(prefix: str, hop: int | str, index: int) -> str:
    return f"{prefix}h{hop}-s{index}"


def _step_li(s: StepView, hop: int, prefix: str, decides_id: str) -> str:
    js = s.json
    kind = js["kind"]
    attrs = f" id=\"{decides_id if s.decides else _sid(prefix, hop, s.index)}\" data-hop=\"{hop}\" " \
            f"data-step=\"{s.index}\" data-kind=\"{e(kind)}\""
    if s.decides:
        attrs += " aria-current=\"step\""
    dec = " decides" if s.decides else ""
    flag = "<span class=\"flag\">\u25c6 decides the verdict</span>" if s.decides else ""
    if kind == "rule":
        where = f"<span class=\"mono\">{e(js['chain'])} #{e(js['position'])}</span>"
        if js["matched"]:
            verb = {"JUMP": f"\u2192 {js['target']}", "GOTO": f"\u21e2 {js['target']}"}.get(js["verdict"] or "",
                                                                                           js["verdict"] or "")
            extra = f"<span class=\"rw\">NAT: {e(s.rewrite)}</span>" if s.rewrite else ""
            unc = f"<span class=\"why\">uncertain: {e(js['uncertain'])}</span>" if js.get("uncertain") else ""
            return (f"<li class=\"hit{dec}\"{attrs}>{_MARK}matched\">\u2714</span>{where}"
                    f"<code>{e(js['rule'])}</code><span class=\"why verb\">then {e(verb)}</span>{extra}{unc}{flag}"
                    "</li>")
        failed = js.get("failed") or {}
        why = f"failed: <code>{e(failed.get('condition', ''))}</code>: {e(failed.get('why', ''))}" if failed else \
            "did not match"
        unc = f"<span class=\"why\">uncertain: {e(js['uncertain'])}</span>" if js.get("uncertain") else ""
        return (f"<li class=\"miss{dec}\"{attrs}>{_MARK}not matched\">\u2718</span>{where}"
                f"<code>{e(js['rule'])}</code><span class=\"why\">{why}</span>{unc}{flag}</li>")
    if kind == "policy":
        return (f"<li class=\"hit{dec}\"{attrs}>{_MARK}policy\">\u2714</span>"
                f"<span class=\"mono\">{e(js['chain'])} policy</span><code>{e(js['verdict'])}</code>{flag}</li>")
    if kind == "skipped":
        failed = js.get("failed") or {}
        return (f"<li class=\"skipped\"{attrs}>{_MARK}skipped\">\u2718</span>"
                f"<span class=\"mono\">{e(js['chain'])} #{e(js['position'])}\u2013{e(js['end'])}</span>"
                f"<span>skipped: none is for this destination"
                f"{' (' + e(failed.get('condition', '')) + ')' if failed else ''}</span></li>")
    if kind == "conntrack":
        return (f"<li class=\"hit{dec}\"{attrs}>{_MARK}conntrack\">\u21c4</span>"
                f"<span class=\"mono\">conntrack</span><span>{e(js['text'])}</span>{flag}</li>")
    return (f"<li class=\"note{dec}\"{attrs}><span class=\"mark\" aria-hidden=\"true\">\u00b7</span>"
            f"<span class=\"mono\">kernel</span><span>{e(js.get('text', ''))}</span>{flag}</li>")


def _lane_html(lane: LaneView, prefix: str, decides_id: str) -> str:
    out = [f"<div class=\"lane{' decided' if lane.decided else ''}\" role=\"group\" "
           f"aria-labelledby=\"{prefix}lane{lane.index}\">",
           f"<div class=\"lane-head\"><h2 id=\"{prefix}lane{lane.index}\">Hop {lane.index + 1}: {e(lane.who)}</h2>"
           f"<span class=\"meta\">{e(lane.packet)}</span></div>", "<div class=\"hooks\">"]
    for h in lane.hooks:
        again = " <span class=\"pass\">(after loopback re-entry)</span>" if h.pass_no else ""
        out.append(f"<div class=\"hook\"><h3>{e(h.hook)}{again}</h3>")
        loose: list[str] = []

        def flush(loose: list[str] = loose) -> None:
            if loose:
                out.append("<ol class=\"steps\">" + "".join(loose) + "</ol>")
                loose.clear()

        for p in h.parts:
            if isinstance(p, ChainBlock):
                flush()
                out.append(f"<div class=\"chain\"><strong>{e(p.title)}</strong> "
                           f"<span class=\"meta\">{e(p.detail)}</span><span class=\"pkt mono\">{e(p.packet)}</span>"
                           "</div>")
                out.append("<ol class=\"steps\">" + "".join(_step_li(s, lane.index, prefix, decides_id)
                                                           for s in p.steps) + "</ol>")
            else:
                loose.append(_step_li(p, lane.index, prefix, decides_id))
        flush()
        out.append("</div>")
    out.append("</div>")
    out.append(f"<p class=\"outcome\"><strong>Result ({e(lane.outcome)}):</strong> {e(lane.result)}</p>")
    if lane.original_dst:
        out.append(f"<p class=\"meta\">Original destination (SO_ORIGINAL_DST): <code>{e(lane.original_dst)}</code></p>")
    out += [f"<p class=\"meta\">Uncertain: {e(u)}</p>" for u in lane.uncertain]
    out.append("</div>")
    return "\n".join(out)


def _mesh_html(m: MeshLane, prefix: str, decides_id: str | None) -> str:
    def box(s: MeshStepView) -> str:
        dec = s.decides and decides_id is not None
        ident = decides_id if dec else f"{prefix}hmesh-s{s.index}"
        cur = " aria-current=\"step\"" if dec else ""
        detail = f"<span class=\"detail\">{e(s.detail)}</span>" if s.detail else ""
        flag = "<span class=\"flag\">\u25c6 decides</span>" if dec else ""
        return (f"<li id=\"{ident}\" data-hop=\"mesh\" data-step=\"{s.index}\"{cur}><div class=\"box hit"
                f"{' decides' if dec else ''}\"><span class=\"kind\">{e(s.kind.replace('_', ' '))}</span>"
                f"<code>{e(s.name)}</code>{detail}{flag}</div></li>")

    out = [f"<div class=\"lane\" role=\"group\" aria-labelledby=\"{prefix}lane-mesh\">",
           f"<div class=\"lane-head\"><h2 id=\"{prefix}lane-mesh\">{e(m.title)}</h2>"
           f"<span class=\"meta\">verdict {e(m.verdict)}</span></div>",
           "<ol class=\"envoy\">" + "".join(box(s) for s in m.steps) + "</ol>",
           f"<p class=\"outcome\">{e(m.reason)}</p>"]
    out += [f"<p class=\"meta\">Note: {e(n)}</p>" for n in m.notes]
    out.append("</div>")
    return "\n".join(out)


def _overview(v: TraceView, prefix: str, decides_id: str, heading: str) -> str:
    """The path at a glance: each lane and the steps the packet took in it, linked to their place below."""
    rows: list[str] = []
    items: list[str] = []

    def row() -> None:
        rows.append(f"<ol class=\"overview\">{''.join(items)}</ol>")
        items.clear()

    def lane_items(lane: LaneView) -> None:
        items.append(f"<li><a class=\"lane-chip\" href=\"#{prefix}lane{lane.index}\">{e(lane.who)}</a></li>")
        for s in lane.steps():
            js = s.json
            if not s.on_path or js["kind"] == "note":
                continue
            if js["kind"] == "rule":
                label = f"{js['table']} {js['chain']} #{js['position']}"
                if js["verdict"] in ("JUMP", "GOTO"):
                    label += f" \u2192 {js['target']}"
                elif js["verdict"]:
                    label += f" {js['verdict']}"
            elif js["kind"] == "policy":
                label = f"{js['table']} {js['chain']} policy {js['verdict']}"
            else:
                label = f"conntrack {js.get('binding') or ''}".strip()
            href = decides_id if s.decides else _sid(prefix, lane.index, s.index)
            cls = " class=\"decides\"" if s.decides else ""
            diamond = "\u25c6 " if s.decides else ""
            items.append(f"<li><a{cls} href=\"#{href}\">{diamond}{e(label)}</a></li>")
        items.append(f"<li><span>{e(lane.outcome)}</span></li>")
        row()

    for lane in v.lanes:
        lane_items(lane)
        if lane.index == 0 and v.mesh is not None:
            items.append(f"<li><a class=\"lane-chip\" href=\"#{prefix}lane-mesh\">Envoy</a></li>")
            items.extend(f"<li><a href=\"#{prefix}hmesh-s{s.index}\">{e(s.kind.replace('_', ' '))}: {e(s.name)}</a>"
                         "</li>" for s in v.mesh.steps if s.kind != "verdict")
            items.append(f"<li><span>{e(v.mesh.verdict)}</span></li>")
            row()
    return f"<nav aria-label=\"{e(heading)}: the path at a glance\">{''.join(rows)}</nav>"


def _trace_body(v: TraceView, prefix: str, decides_id: str, heading: str) -> str:
    d = v.decided_by
    lines = [e(v.summary)]
    if d is not None:
        lines.append(f"Decided by <a href=\"#{decides_id}\">{e(d['table'])} {e(d['chain'])} rule {e(d['position'])}"
                     f"</a>: <code>{e(d['rule'])}</code>")
    else:
        why = "" if v.reason in v.summary else f": {e(v.reason)}"
        step = f" (<a href=\"#{decides_id}\">the deciding step</a>)" if v.deciding() is not None else ""
        lines.append(f"No rule decided it{why}{step}.")
    if v.listener is not None:
        lines.append(f"Listener: <code>{e(v.listener['address'])}:{e(v.listener['port'])}</code> "
                     f"({e(v.listener['owner'])})")
    out = [_verdict_box(v.verdict, heading, lines)]
    if v.notes:
        out.append("<ul class=\"notes\" aria-label=\"Notes\">" + "".join(f"<li>Note: {e(n)}</li>" for n in v.notes)
                   + "</ul>")
    out.append(_overview(v, prefix, decides_id, heading))
    for lane in v.lanes:
        out.append(_lane_html(lane, prefix, decides_id))
        if lane.index == 0 and v.mesh is not None:
            # the Envoy hop decides the page's verdict only when no kernel step does
            out.append(_mesh_html(v.mesh, prefix, None))
    return "\n".join(out)


def _legend() -> str:
    return ("<p class=\"meta\">\u2714 on the path (bold, solid bar) \u00b7 \u2718 met, not matched (dashed bar), "
            "with the condition that failed \u00b7 \u21c4 conntrack \u00b7 \u25c6 the step that decides "
            "(double outline) \u00b7 NAT: what a rule rewrote</p>")


def trace_page(v: TraceView, *, title: str = "netsim trace") -> str:
    """``netsim trace --format html`` (with or without ``--config``)."""
    body = ["<a class=\"skip\" href=\"#decides\">Skip to the deciding step</a>" if v.deciding() else "",
            "<main>", f"<h1>{e(title)}</h1>", _trace_body(v, "", "decides", "Verdict"), _legend(), "</main>"]
    return _page(title, "\n".join(b for b in body if b))


def follow_up_page(first: TraceView, second: TraceView | None, entry: str | None, second_label: str, *,
                   title: str = "netsim trace --follow-up") -> str:
    """``netsim trace --follow-up --format html``: the first packet, then the second finding its entry."""
    body = ["<main>", f"<h1>{e(title)}</h1>",
            "<section data-part=\"first\" aria-labelledby=\"first-h\">",
            "<h2 id=\"first-h\">The connection's first packet (conntrack NEW: nat is consulted)</h2>",
            _trace_body(first, "a-", "decides", "First packet"), "</section>"]
    if second is not None:
        body += ["<section data-part=\"second\" aria-labelledby=\"second-h\">",
                 f"<h2 id=\"second-h\">Then {e(second_label)}, finding the entry the first packet left"
                 f"{' (' + e(entry) + ')' if entry else ''}</h2>",
                 _trace_body(second, "b-", "decides-2", "Second packet"), "</section>"]
    body += [_legend(), "</main>"]
    return _page(title, "\n".join(body))


# ----------------------------------------------------------------------------------------------------------
# the capture matrix


def matrix_page(rows: Sequence[dict[str, Any]], *, title: str = "netsim trace --matrix") -> str:
    """``netsim trace --matrix --format html``: per family a table, a row per port, a column per direction,
    sender and protocol; each cell its verdict (colour, mark and word) and the deciding rule. ``rows``: the
    JSON the matrix prints (``{"family", **MatrixRow.to_json()}``)."""
    out = ["<main>", f"<h1>{e(title)}</h1>",
           "<p>For each port, direction, sender and protocol: what happens to a connection's first packet, and "
           "the rule that decides it.</p>",
           "<ul class=\"legend\" aria-label=\"Legend\">"
           + "".join(f"<li class=\"c-{c}\">{_VERDICT_MARKS[c]} {c}</li>" for c in _VERDICT_MARKS)
           + "<li>? rests on an assumption</li></ul>"]
    families = list(dict.fromkeys(r["family"] for r in rows))
    for fam in families:
        frs = [r for r in rows if r["family"] == fam]
        cols = list(dict.fromkeys((r["direction"], r["who"], r["proto"]) for r in frs))
        ports = list(dict.fromkeys(r["port"] for r in frs))
        cell = {(r["port"], r["direction"], r["who"], r["proto"]): r for r in frs}
        out.append(f"<h2 id=\"ipv{e(fam)}\">IPv{e(fam)}</h2>")
        out.append(f"<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-labelledby=\"ipv{e(fam)}\">"
                   f"<table><caption class=\"meta\">IPv{e(fam)}: rows are ports</caption><thead><tr>"
                   "<th scope=\"col\">port</th>"
                   + "".join(f"<th scope=\"col\">{e(d)}<br>{e(w)} {e(p)}</th>" for d, w, p in cols)
                   + "</tr></thead><tbody>")
        for port in ports:
            tds = []
            for d, w, p in cols:
                r = cell.get((port, d, w, p))
                if r is None:
                    tds.append("<td></td>")
                    continue
                c = verdict_class(r["verdict"])
                tds.append(f"<td class=\"cell c-{c}\" data-verdict=\"{e(r['verdict'])}\">"
                           f"<span aria-hidden=\"true\">{_VERDICT_MARKS[c]}</span> {e(r['cell'])}"
                           f"<small>{e(r['rule'])}</small></td>")
            out.append(f"<tr><th scope=\"row\">{e(port)}</th>{''.join(tds)}</tr>")
        out.append("</tbody></table></div>")
    out.append("</main>")
    return _page(title, "\n".join(out))


# ----------------------------------------------------------------------------------------------------------
# mesh hop


def hop_page(m: MeshLane, *, title: str = "netsim mesh hop", notes: Sequence[str] = ()) -> str:
    """``netsim mesh hop --format html``: the verdict, and the Envoy lane with its deciding step."""
    body = ["<a class=\"skip\" href=\"#decides\">Skip to the deciding step</a>", "<main>", f"<h1>{e(title)}</h1>",
            _verdict_box(m.verdict, "Envoy's verdict", [e(m.reason)])]
    if notes:
        body.append("<ul class=\"notes\">" + "".join(f"<li>Note: {e(n)}</li>" for n in notes) + "</ul>")
    body += [_mesh_html(m, "", "decides"), "</main>"]
    return _page(title, "\n".join(body))


# ----------------------------------------------------------------------------------------------------------
# diagnose


def _obj_id(file: str, document: int) -> str:
    return f"obj-{hashlib.sha1(file.encode()).hexdigest()[:10]}-{document}"


_LISTENER = re.compile(r"\blistener (\S+?)[:,]?(?:\s|$)")
_CLUSTER = re.compile(r"\bcluster (\S+?)[:,)]?(?:\s|$)")


def _name_id(kind: str, name: str) -> str:
    return f"{kind}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def diagnose_page(report: Report, index: ProxyIndex, *, title: str = "netsim diagnose") -> str:
    """``netsim diagnose --format html``: the findings, each piece of evidence linked to its place in the
    picture of the workload's sidecar below (the objects read, by file and document; its listeners; its
    clusters)."""
    from netsim.mesh.render import clusters_json, listeners_json

    objects: dict[str, list[tuple[int, str]]] = {}
    o = index.objects
    everything: list[Any] = [*o.services, *o.pods, *o.virtual_services, *o.destination_rules,
                             *o.peer_authentications, *o.sidecars]
    for obj in everything:
        origin: Origin | None = obj.origin
        if origin is None:  # not read from a file (a default, a generated object): nothing to link to
            continue
        ref = getattr(obj, "ref", None) or f"{type(obj).__name__} {obj.namespace}/{obj.name}"
        objects.setdefault(origin.source, []).append((origin.document, ref))
    object_ids = {_obj_id(f, d) for f, docs in objects.items() for d, _ in docs}
    listeners = listeners_json(index)
    clusters = clusters_json(index)
    listener_ids = {ln["name"]: _name_id("ln", ln["name"]) for ln in listeners}
    cluster_ids = {c["name"]: _name_id("cl", c["name"]) for c in clusters}

    def evidence(ev: Any) -> str:
        links = []
        if ev.file is not None and ev.document is not None and _obj_id(ev.file, ev.document) in object_ids:
            links.append(f"<a href=\"#{_obj_id(ev.file, ev.document)}\">{e(ev.file)}, document {e(ev.document)}</a>")
        for rx, ids, word in ((_LISTENER, listener_ids, "listener"), (_CLUSTER, cluster_ids, "cluster")):
            for name in rx.findall(ev.what):
                if name in ids:
                    links.append(f"<a href=\"#{ids[name]}\">{word} {e(name)}</a>")
        where = f" \u2192 {', '.join(links)}" if links else \
            (f" ({e(ev.file)}, document {e(ev.document)})" if ev.file else "")
        return f"<li>{e(ev.what)}{where}</li>"

    n = len(report.findings)
    worst = "dropped" if any(f.severity == "error" for f in report.findings) else "bypassed" if n else "captured"
    head = f"{n} finding(s)" if n else f"none of the {len(report.checks)} known capture pitfalls found"
    body = ["<main>", f"<h1>{e(title)}: {e(report.pod)}</h1>",
            f"<section class=\"verdict v-{worst}\" aria-label=\"Summary\"><div class=\"big\">"
            f"<span aria-hidden=\"true\">{_VERDICT_MARKS[worst]}</span> {e(report.pod)} ({e(report.istio)}): "
            f"{e(head)}</div></section>"]
    for k, f in enumerate(report.findings, 1):
        mark = "\u2715" if f.severity == "error" else "!"
        body.append(f"<article class=\"finding sev-{e(f.severity)}\" id=\"finding-{k}\" aria-labelledby=\"fh-{k}\">"
                    f"<h2 id=\"fh-{k}\"><span aria-hidden=\"true\">{mark}</span> <span class=\"sev\">{e(f.severity)}"
                    f"</span> {e(f.check)} {e(f.name)}</h2><p>{e(f.message)}.</p><h3>Evidence</h3><ul>"
                    + "".join(evidence(ev) for ev in f.evidence) + f"</ul><p><strong>Fix:</strong> {e(f.fix)}.</p>"
                    "</article>")
    if report.notes:
        body.append("<ul class=\"notes\">" + "".join(f"<li>Note: {e(x)}</li>" for x in report.notes) + "</ul>")
    body.append("<h2 id=\"objects\">Objects read</h2>")
    for file, docs in objects.items():
        body.append(f"<h3 class=\"mono\">{e(file)}</h3><ol class=\"objects\">"
                    + "".join(f"<li id=\"{_obj_id(file, d)}\" value=\"{d}\">document {d}: {e(ref)}</li>"
                              for d, ref in sorted(set(docs))) + "</ol>")
    body.append("<h2 id=\"listeners\">The sidecar's listeners</h2><div class=\"table-wrap\" tabindex=\"0\" "
                "role=\"region\" aria-labelledby=\"listeners\"><table><thead><tr><th scope=\"col\">listener</th>"
                "<th scope=\"col\">filter chain match</th><th scope=\"col\">destination</th>"
                "<th scope=\"col\">from</th></tr></thead><tbody>")
    for ln in listeners:
        for k, c in enumerate(ln["filter_chains"]):
            ident = f" id=\"{listener_ids[ln['name']]}\"" if k == 0 else ""
            body.append(f"<tr><th scope=\"row\"{ident}>"
                        f"<code>{e(ln['name'])}</code></th><td><code>{e(c['match'])}</code></td>"
                        f"<td><code>{e(c['destination'])}</code></td><td>{e(c['origin'] or '')}</td></tr>")
        if not ln["filter_chains"]:
            body.append(f"<tr><th scope=\"row\" id=\"{listener_ids[ln['name']]}\"><code>{e(ln['name'])}</code></th>"
                        "<td></td><td></td><td></td></tr>")
    body.append("</tbody></table></div>")
    body.append("<h2 id=\"clusters\">The sidecar's clusters</h2><div class=\"table-wrap\" tabindex=\"0\" "
                "role=\"region\" aria-labelledby=\"clusters\"><table><thead><tr><th scope=\"col\">cluster</th>"
                "<th scope=\"col\">type</th><th scope=\"col\">upstream TLS</th><th scope=\"col\">endpoints</th>"
                "</tr></thead><tbody>")
    for c in clusters:
        body.append(f"<tr><th scope=\"row\" id=\"{cluster_ids[c['name']]}\"><code>{e(c['name'])}</code></th>"
                    f"<td>{e(c['type'])}</td><td>{e(c['upstream_tls'] or '')}</td>"
                    f"<td><code>{e(', '.join(c['endpoints']))}</code></td></tr>")
    body += ["</tbody></table></div>", "</main>"]
    return _page(f"{title}: {report.pod}", "\n".join(body))


__all__ = ["diagnose_page", "e", "follow_up_page", "hop_page", "matrix_page", "trace_page", "verdict_class"]
