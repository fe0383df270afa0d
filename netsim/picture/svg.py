"""The path alone as one SVG (``--format svg``), to paste into documents.

Owns: :func:`trace_svg` and :func:`hop_svg`. The verdict on top, then per hop (lane) the steps the
packet took (matched rules, policies, conntrack bindings, the kernel's notes), the hook each is at,
and the Envoy steps of ``trace --config`` / ``mesh hop``. Each step is a ``<g>`` with ``data-hop`` and
``data-step`` as in the HTML (their positions in the JSON); the deciding one has ``aria-current="step"``,
a double border and the words "decides". No script, no external font or image: the viewer's sans-serif
and monospace fonts; a rule text longer than a row is cut with … and given whole in its ``<title>``.

Never does: compute anything (:mod:`netsim.picture.view` does).
"""

from __future__ import annotations

from netsim.picture.html import e, verdict_class
from netsim.picture.view import ChainBlock, MeshLane, StepView, TraceView

WIDTH = 960
ROW = 24
_COLOURS = {"captured": ("#1a7f37", "#e3f4e6"), "bypassed": ("#8a5a00", "#fdf1d8"), "dropped": ("#b3261e", "#fce4e2"),
            "looped": ("#6a3fb5", "#efe7fb"), "uncertain": ("#505050", "#ececec")}
_MARKS = {"captured": "\u2714", "bypassed": "\u21b7", "dropped": "\u2715", "looped": "\u21bb", "uncertain": "?"}
_MONO = "DejaVu Sans Mono, Liberation Mono, monospace"
_SANS = "DejaVu Sans, Liberation Sans, Arial, sans-serif"


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    return [*lines, cur] if cur else lines


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


class _Canvas:
    def __init__(self) -> None:
        self.y = 0
        self.parts: list[str] = []

    def text(self, x: int, text: str, *, size: int = 13, bold: bool = False, mono: bool = False,
             fill: str = "#1b1b1b") -> None:
        self.y += size + 6
        weight = " font-weight=\"700\"" if bold else ""
        family = _MONO if mono else _SANS
        self.parts.append(f"<text x=\"{x}\" y=\"{self.y}\" font-size=\"{size}\" font-family=\"{family}\"{weight} "
                          f"fill=\"{fill}\">{e(text)}</text>")


def _verdict_head(c: _Canvas, verdict: str, label: str, sentence: str) -> None:
    cls = verdict_class(verdict)
    stroke, fill = _COLOURS[cls]
    lines = _wrap(sentence, 128)
    h = 36 + 18 * len(lines)
    dash = {"bypassed": " stroke-dasharray=\"8 4\"", "looped": " stroke-dasharray=\"2 3\"",
            "uncertain": " stroke-dasharray=\"2 3\""}.get(cls, "")
    c.parts.append(f"<rect x=\"2\" y=\"{c.y + 2}\" width=\"{WIDTH - 4}\" height=\"{h}\" rx=\"6\" fill=\"{fill}\" "
                   f"stroke=\"{stroke}\" stroke-width=\"{5 if cls == 'dropped' else 3}\"{dash}/>")
    top = c.y
    c.y += 4
    c.text(14, f"{_MARKS[cls]} {label}: {verdict.upper()}", size=17, bold=True)
    for line in lines:
        c.y -= 1
        c.text(14, line, size=13)
    c.y = top + h + 12


def _row(c: _Canvas, hop: int | str, index: int, decides: bool, mark: str, where: str, text: str,
         tail: str = "", sub: str = "") -> None:
    """One step on the path: a box with the mark, where it is, its text and what it did; ``sub`` a second line
    (what a NAT rule rewrote, an Envoy step's detail)."""
    y = c.y
    height = ROW + (16 if sub else 0)
    cur = " aria-current=\"step\"" if decides else ""
    label = f"{where}: {text}{(' ' + tail) if tail else ''}{('; ' + sub) if sub else ''}"
    c.parts.append(f"<g data-hop=\"{hop}\" data-step=\"{index}\"{cur} class=\"step{' decides' if decides else ''}\">"
                   f"<title>{e(label)}</title>")
    sw = 3 if decides else 1.5
    c.parts.append(f"<rect x=\"40\" y=\"{y + 2}\" width=\"{WIDTH - 60}\" height=\"{height - 4}\" rx=\"4\" "
                   f"fill=\"#e7f5ea\" stroke=\"#1b1b1b\" stroke-width=\"{sw}\"/>")
    if decides:
        c.parts.append(f"<rect x=\"35\" y=\"{y - 3}\" width=\"{WIDTH - 50}\" height=\"{height + 6}\" rx=\"6\" "
                       "fill=\"none\" stroke=\"#1b1b1b\" stroke-width=\"1.5\"/>")
    flag = "  \u25c6 decides" if decides else ""
    room = 122 - len(where) - len(tail) - len(flag)
    body = f"{mark} {where}  {_cut(text, max(room, 24))}{('  ' + tail) if tail else ''}{flag}"
    bold = " font-weight=\"700\"" if decides else ""
    c.parts.append(f"<text x=\"48\" y=\"{y + 16}\" font-size=\"12\" font-family=\"{_MONO}\"{bold}>{e(body)}</text>")
    if sub:
        c.parts.append(f"<text x=\"66\" y=\"{y + 32}\" font-size=\"12\" font-family=\"{_MONO}\">"
                       f"{e(_cut(sub, 118))}</text>")
    c.parts.append("</g>")
    c.parts.append(f"<line x1=\"28\" y1=\"{y}\" x2=\"28\" y2=\"{y + height}\" stroke=\"#1b1b1b\" stroke-width=\"3\"/>")
    c.y += height


def _step_row(c: _Canvas, hop: int, s: StepView) -> None:
    js = s.json
    k = js["kind"]
    if k == "rule":
        verb = {"JUMP": f"\u2192 {js['target']}", "GOTO": f"\u21e2 {js['target']}"}.get(js["verdict"] or "",
                                                                                       js["verdict"] or "")
        _row(c, hop, s.index, s.decides, "\u2714", f"{js['table']} {js['chain']} #{js['position']}", js["rule"], verb,
             f"NAT: {s.rewrite}" if s.rewrite else "")
    elif k == "policy":
        _row(c, hop, s.index, s.decides, "\u2714", f"{js['table']} {js['chain']}", f"policy {js['verdict']}")
    elif k == "conntrack":
        _row(c, hop, s.index, s.decides, "\u21c4", "conntrack", js["text"])
    else:  # a kernel note: on the path, drawn as text
        cur = " aria-current=\"step\"" if s.decides else ""
        c.parts.append(f"<g data-hop=\"{hop}\" data-step=\"{s.index}\"{cur} class=\"note\">")
        c.y -= 2
        c.text(48, f"\u00b7 {_cut(js['text'], 125)}", size=11, fill="#505050")
        c.parts.append("</g>")
        c.y += 4


def _mesh_rows(c: _Canvas, m: MeshLane, decides: bool) -> None:
    c.text(8, m.title, size=14, bold=True)
    c.y += 4
    for s in m.steps:
        _row(c, "mesh", s.index, decides and s.decides, "\u2714", s.kind.replace("_", " "), s.name, sub=s.detail)


def _svg(c: _Canvas, title: str, desc: str) -> str:
    h = c.y + 10
    return (f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h}\" viewBox=\"0 0 {WIDTH} {h}\" "
            f"role=\"img\" aria-labelledby=\"svg-title svg-desc\"><title id=\"svg-title\">{e(title)}</title>"
            f"<desc id=\"svg-desc\">{e(desc)}</desc><rect width=\"{WIDTH}\" height=\"{h}\" fill=\"#ffffff\"/>"
            + "".join(c.parts) + "</svg>\n")


def trace_svg(v: TraceView, *, title: str = "netsim trace") -> str:
    """The path of one trace: the verdict, each hop's steps taken, the Envoy hop."""
    c = _Canvas()
    _verdict_head(c, v.verdict, "Verdict", v.summary)
    for lane in v.lanes:
        c.text(8, f"Hop {lane.index + 1}: {lane.who}", size=14, bold=True)
        c.text(8, lane.packet, size=11, fill="#505050")
        c.y += 4
        for h in lane.hooks:
            steps = [s for p in h.parts for s in (p.steps if isinstance(p, ChainBlock) else (p,))]
            path = [s for s in steps if s.on_path]
            if not path:
                continue
            c.text(8, f"{h.hook}{' (after loopback re-entry)' if h.pass_no else ''}", size=12, bold=True)
            for s in path:
                _step_row(c, lane.index, s)
        c.text(8, f"\u2192 {lane.outcome}: {_cut(lane.result, 120)}", size=12)
        c.y += 8
        if lane.index == 0 and v.mesh is not None:
            _mesh_rows(c, v.mesh, decides=False)
            c.text(8, f"\u2192 {_cut(v.mesh.reason, 125)}", size=12)
            c.y += 8
    return _svg(c, title, v.summary)


def hop_svg(m: MeshLane, *, title: str = "netsim mesh hop") -> str:
    """``mesh hop --format svg``: the verdict and the Envoy steps."""
    c = _Canvas()
    _verdict_head(c, m.verdict, "Envoy's verdict", m.reason)
    _mesh_rows(c, m, decides=True)
    return _svg(c, title, m.reason)


__all__ = ["hop_svg", "trace_svg"]
