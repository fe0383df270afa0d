"""The pictures' contract without a browser: every JSON step is in the page under ``data-hop``/``data-step``,
marked as the JSON says (matched ✔ ``hit``, not matched ✘ ``miss``), the deciding rule has
``aria-current="step"``; the SVG holds the path's steps; nothing loads from outside; input is text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from picture_pages import BY_NAME, PICTURES, SVGS, Picture, deciding_steps, json_traces, run


class _Elements(HTMLParser):
    """Every element with a ``data-step`` (its attributes and the text inside it), and every tag and id seen."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, Any]] = []
        self.open: list[tuple[str, dict[str, Any] | None]] = []
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.section_part: list[str | None] = [None]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if a.get("href"):
            self.hrefs.append(str(a["href"]))
        if tag == "section" and "data-part" in a:
            self.section_part.append(a["data-part"])
        rec = None
        if "data-step" in a:
            rec = {**a, "text": "", "part": self.section_part[-1]}
            self.steps.append(rec)
        if tag not in ("meta", "br", "img", "link", "input"):
            self.open.append((tag, rec))

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            t, _ = self.open.pop()
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, rec in self.open:
            if rec is not None:
                rec["text"] += data


def _parse(html: str) -> _Elements:
    p = _Elements()
    p.feed(html)
    p.close()
    return p


TRACES = [p for p in PICTURES if p.kind in ("trace", "follow-up")]


@pytest.mark.parametrize("pic", TRACES, ids=lambda p: p.name)
def test_every_json_step_is_in_the_page_marked_as_the_json_says(pic: Picture) -> None:
    page = _parse(pic.render("html"))
    js = pic.json()
    for part, t in json_traces(pic, js):
        mine = {(s["data-hop"], int(s["data-step"])): s for s in page.steps if s["part"] == part}
        kernel = {k: v for k, v in mine.items() if k[0] != "mesh"}
        expected = {(str(i), k) for i, h in enumerate(t["hops"]) for k in range(len(h["steps"]))}
        assert set(kernel) == expected
        for i, h in enumerate(t["hops"]):
            for k, s in enumerate(h["steps"]):
                el = mine[(str(i), k)]
                cls = el.get("class") or ""
                if s["kind"] == "rule":
                    assert s["rule"] in el["text"].replace("\n", "")
                    assert ("hit" in cls.split()) is s["matched"], (i, k, cls)
                    assert ("miss" in cls.split()) is (not s["matched"]), (i, k, cls)
                    mark = "\u2714" if s["matched"] else "\u2718"
                    assert el["text"].lstrip().startswith(mark)
                    if s["failed"]:
                        assert s["failed"]["condition"] in el["text"] and s["failed"]["why"] in el["text"]
                elif s["kind"] in ("policy", "conntrack"):
                    assert "hit" in cls.split()
        current = [(s["data-hop"], int(s["data-step"])) for s in page.steps
                   if s.get("aria-current") == "step" and s["part"] == part]
        if t["decided_by"] is not None:
            assert len(current) == 1 and current[0] in deciding_steps(t)
        else:  # no rule decided: at most the step that did (a policy, a conntrack binding), never a rule
            assert len(current) <= 1
            for hop, k in current:
                assert t["hops"][int(hop)]["steps"][k]["kind"] != "rule"
        if "mesh" in (js if part is None else {}) and js["mesh"] is not None:
            envoy = sorted(k for (h, k) in mine if h == "mesh")
            assert envoy == list(range(len(js["mesh"]["steps"])))
            for k, s in enumerate(js["mesh"]["steps"]):
                assert (s["name"] or "-") in mine[("mesh", k)]["text"]


def test_the_inbound_trace_marks_the_redirect_and_shows_the_rewrite() -> None:
    html = BY_NAME["inbound"].render("html")
    page = _parse(html)
    (cur,) = [s for s in page.steps if s.get("aria-current") == "step"]
    assert "REDIRECT --to-ports 15006" in cur["text"]
    assert "NAT: destination 10.244.0.5:80 \u2192 10.244.0.5:15006" in cur["text"]
    assert "\u25c6 decides" in cur["text"]


def test_the_mesh_hop_page_and_its_json_name_the_same_steps() -> None:
    pic = BY_NAME["hop"]
    js = pic.json()
    page = _parse(pic.render("html"))
    assert [int(s["data-step"]) for s in page.steps] == list(range(len(js["steps"])))
    assert [s["kind"] for s in js["steps"]][-1] == "verdict" and js["steps"][-1]["name"] == js["verdict"]
    (cur,) = [s for s in page.steps if s.get("aria-current") == "step"]
    assert js["steps"][int(cur["data-step"])]["kind"] != "verdict"


@pytest.mark.parametrize("pic", SVGS, ids=lambda p: p.name)
def test_the_svg_is_the_path(pic: Picture) -> None:
    svg = pic.render("svg")
    root = ET.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    groups = [g for g in root.iter(f"{ns}g") if "data-step" in g.attrib]
    got = {(g.attrib["data-hop"], int(g.attrib["data-step"])) for g in groups}
    js = pic.json()
    if pic.kind == "hop":
        assert got == {("mesh", k) for k in range(len(js["steps"]))}
        return
    on_path = {(str(i), k) for i, h in enumerate(js["hops"]) for k, s in enumerate(h["steps"])
               if s["kind"] in ("policy", "conntrack", "note") or (s["kind"] == "rule" and s["matched"])}
    if js.get("mesh"):
        on_path |= {("mesh", k) for k in range(len(js["mesh"]["steps"]))}
    assert got == on_path
    current = [(g.attrib["data-hop"], int(g.attrib["data-step"])) for g in groups
               if g.attrib.get("aria-current") == "step"]
    if js["decided_by"] is not None:
        assert len(current) == 1 and current[0] in deciding_steps(js)


@pytest.mark.parametrize(("pic", "fmt"), [*((p, "html") for p in PICTURES), *((p, "svg") for p in SVGS)],
                         ids=lambda x: x.name if isinstance(x, Picture) else x)
def test_self_contained(pic: Picture, fmt: str) -> None:
    text = pic.render(fmt)
    page = _parse(text)
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert "iframe" not in page.tags and "object" not in page.tags
    for needle in ("url(", "@import", "http://", "https://"):
        assert needle not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), needle
    for href in page.hrefs:  # in-page links only, each to an element that exists
        assert href.startswith("#") and href[1:] in page.ids, href
    if fmt == "html":
        assert "Content-Security-Policy" in text and "default-src 'none'" in unescape(text)


def test_markup_in_rule_comments_is_text() -> None:
    pic = BY_NAME["hostile"]
    for fmt in ("html", "svg"):
        text = pic.render(fmt)
        page = _parse(text)
        assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
        assert page.tags.count("style") == (1 if fmt == "html" else 0)
        assert "&lt;script&gt;document.title=\\&#x27;pwned\\&#x27;&lt;/script&gt;" in text
        assert "&lt;/style&gt;&lt;style&gt;body{display:none}&lt;/style&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in text
        steps = " ".join(s["text"] for s in page.steps)
        assert "<script>document.title=\\'pwned\\'</script>" in steps  # shown as the text it is
        if fmt == "html":  # a rule not matched: in the page, not on the SVG's path
            assert '\\"><img src=x onerror=alert(1)>' in steps


def test_output_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "trace.html"
    r = run([*BY_NAME["inbound"].args, "--format", "html", "--output", str(out)])
    assert r.code == 0 and r.stdout == ""
    assert out.read_text(encoding="utf-8") == BY_NAME["inbound"].render("html")


@pytest.mark.parametrize(("extra", "message"), [
    (["--format", "text", "--output", "x.html"], "--output writes a picture"),
    (["--matrix", "--format", "svg"], "--format svg draws one packet's path"),
    (["--follow-up", "--format", "svg"], "--format svg draws one packet's path"),
    (["--format", "html", "--output", "/nonexistent-dir/x.html"], "--output '/nonexistent-dir/x.html'"),
])
def test_bad_picture_options_are_one_line(extra: list[str], message: str) -> None:
    r = run(["trace", "--pod", "rules/mtls-503/pod.yaml", "--dst", "10.96.0.10:53", "--proto", "udp", *extra])
    assert r.code == 2
    assert len(r.stderr.splitlines()) == 1 and message in r.stderr, r.stderr


def test_diagnose_evidence_links_to_the_picture() -> None:
    page = _parse(BY_NAME["diagnose"].render("html"))
    html = BY_NAME["diagnose"].render("html")
    # NS0003's evidence names the listener and the Service's document: both are linked, and both targets exist
    assert "NS0003" in html
    linked = [h for h in page.hrefs if h.startswith("#ln-") or h.startswith("#obj-")]
    assert any(h.startswith("#ln-") for h in linked) and any(h.startswith("#obj-") for h in linked)
    assert all(h[1:] in page.ids for h in linked)


# an ``nft list ruleset`` pasted from a namespace where iptables-nft left a nat table (its layout: only the
# built-in chains as base chains, on their own hooks and priorities) beside Istio's native nft table
_PASTED = """table ip nat {
\tchain OUTPUT {
\t\ttype nat hook output priority -100; policy accept;
\t\tcounter packets 0 bytes 0 jump ISTIO_REDIRECT
\t}
\tchain ISTIO_REDIRECT {
\t\tmeta l4proto tcp counter packets 0 bytes 0 redirect to :15001
\t}
}
table inet istio-proxy-nat {
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta skuid 1337 counter packets 0 bytes 0 return
\t}
}
"""


def test_a_detected_iptables_nft_table_is_named_as_the_text_trace_names_it(tmp_path: Path) -> None:
    f = tmp_path / "pasted.nft"
    f.write_text(_PASTED)
    args = ["trace", "--nft", str(f), "--dst", "10.1.2.3:80", "--uid", "1000"]
    text = run(args)
    assert text.code == 0, text.stderr
    # the text trace names each base chain's writer; the picture's chain blocks use the same words
    named = {ln.split("(", 1)[1].split(", priority")[0] for ln in text.stdout.splitlines()
             if ln.startswith("  ") and ", priority -100)" in ln}
    assert named == {"iptables-nft, as nft lists it", "nft"}
    page = run([*args, "--format", "html"])
    assert page.code == 0, page.stderr
    body = unescape(page.stdout)
    assert "iptables-nft, as nft lists it, ip, priority -100" in body
    assert "nft, inet, priority -100" in body
    assert "nft, ip, priority -100" not in body  # the raw backend of the iptables-nft table
