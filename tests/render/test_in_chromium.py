"""Every picture opened in headless Chromium (one browser for all): no console error, the path's rules present
and marked in the DOM the browser built, readable on a phone (no sideways scrolling), usable with the
keyboard, legible without colour, a screenshot within a tolerance of its stored reference, no axe-core
violation, and no Nu Html Checker (vnu.jar) message.

Needs chromium (Debian), java and ``npm ci --prefix tests/render`` (``./dev setup`` does all three); each
test skips naming what is missing, except under ``CI=true``, where it fails. ``NETSIM_REFRESH_GOLDEN=1``
rewrites the reference screenshots in ``tests/render/refs``. The screenshots taken are kept in a
directory named at the end of the test output.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from picture_browser import CHROMIUM, Browser, Page
from picture_pages import HERE, PICTURES, REFS, SVGS, Picture, deciding_steps, json_traces

AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
VNU = HERE / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
SIZES = ((1280, 800), (390, 844))  # a laptop, and a phone
# a screenshot may differ from its reference in this share of pixels (font antialiasing); a moved line or
# a changed colour differs in far more
TOLERANCE = 0.01
REFRESH = os.environ.get("NETSIM_REFRESH_GOLDEN") == "1"


def _need(what: str, present: bool) -> None:
    if present:
        return
    reason = f"{what} is missing (./dev setup installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"picture test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Where the screenshots go; named in the test output at the end."""
    out = tmp_path_factory.mktemp("pictures")
    yield out
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    taken = sorted(p.name for p in out.glob("*.png"))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and taken:
        with capture.global_and_fixture_disabled():  # past pytest's capture: a line in the test output
            reporter.write_line(f"\npictures: {len(taken)} screenshots of netsim's pages in Chromium: {out}")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every page and SVG, written as ``--output`` writes them."""
    out = tmp_path_factory.mktemp("pages")
    for p in PICTURES:
        (out / f"{p.name}.html").write_text(p.render("html"), encoding="utf-8")
    for p in SVGS:
        (out / f"{p.name}.svg").write_text(p.render("svg"), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _need("chromium", CHROMIUM is not None)
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def _compare(png: bytes, name: str, shots: Path) -> None:
    from PIL import Image, ImageChops

    (shots / name).write_bytes(png)
    ref = REFS / name
    if REFRESH:
        REFS.mkdir(exist_ok=True)
        ref.write_bytes(png)
        return
    assert ref.is_file(), f"no reference screenshot {ref}: NETSIM_REFRESH_GOLDEN=1 writes it"
    got = Image.open(io.BytesIO(png)).convert("RGB")
    want = Image.open(ref).convert("RGB")
    assert got.size == want.size, f"{name}: {got.size} against the reference's {want.size}"
    diff = ImageChops.difference(got, want).convert("L")
    changed = sum(diff.histogram()[48:])
    share = changed / (got.size[0] * got.size[1])
    if share > TOLERANCE:
        diff.point(lambda v: 255 if v >= 48 else 0).save(shots / f"diff-{name}")
        pytest.fail(f"{name}: {share:.2%} of the pixels differ from {ref} (tolerance {TOLERANCE:.0%}); see "
                    f"{shots / name} and {shots / ('diff-' + name)}")


_STEPS_JS = """[...document.querySelectorAll('[data-step]')].map(el => {
  const part = el.closest('[data-part]');
  const r = el.getBoundingClientRect();
  return {hop: el.dataset.hop, step: +el.dataset.step, cls: el.className.baseVal ?? el.className,
          current: el.getAttribute('aria-current'), text: el.textContent, part: part ? part.dataset.part : null,
          visible: r.width > 0 && r.height > 0};
})"""


def _check_dom(page: Page, pic: Picture, js: Any) -> None:
    steps = page.evaluate(_STEPS_JS)
    for part, t in json_traces(pic, js):
        mine = {(s["hop"], s["step"]): s for s in steps if s["part"] == part}
        for i, h in enumerate(t["hops"]):
            for k, s in enumerate(h["steps"]):
                el = mine[(str(i), k)]
                assert el["visible"], (i, k)
                if s["kind"] == "rule":
                    assert s["rule"] in el["text"]
                    assert ("hit" in el["cls"].split()) is s["matched"]
        current = [s for s in steps if s["current"] == "step" and s["part"] == part]
        if t["decided_by"] is not None:
            assert len(current) == 1 and (current[0]["hop"], current[0]["step"]) in deciding_steps(t)
            assert t["decided_by"]["rule"] in current[0]["text"] and current[0]["visible"]


@pytest.mark.parametrize("pic", PICTURES, ids=lambda p: p.name)
def test_each_page_in_chromium(pic: Picture, browser: Browser, made: Path, shots: Path) -> None:
    js = pic.json()
    for width, height in SIZES:
        page = browser.open(made / f"{pic.name}.html", width, height, mobile=width < 600)
        try:
            assert page.errors == []
            if pic.kind in ("trace", "follow-up"):
                _check_dom(page, pic, js)
            elif pic.kind == "hop":
                cur = page.evaluate("document.querySelector('[aria-current=step]').textContent")
                decider = [s for s in js["steps"] if s["kind"] != "verdict"][-1]
                assert decider["name"] in cur
            elif pic.kind == "matrix":
                cells = page.evaluate("[...document.querySelectorAll('td[data-verdict]')].map(td => "
                                      "[td.dataset.verdict, td.firstChild.nextSibling.textContent.trim(), "
                                      "td.querySelector('small').textContent])")
                assert sorted(map(tuple, cells)) == sorted((r["verdict"], r["cell"], r["rule"]) for r in js)
            # readable on the viewport: nothing wider than it (the page reflows instead of scrolling sideways)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert page.evaluate("document.title") == page.evaluate("document.querySelector('title').textContent")
            _compare(page.screenshot(), f"{pic.name}-{width}x{height}.png", shots)
            assert page.errors == []
        finally:
            page.close()


@pytest.mark.parametrize("pic", SVGS, ids=lambda p: p.name)
def test_each_svg_in_chromium(pic: Picture, browser: Browser, made: Path, shots: Path) -> None:
    page = browser.open(made / f"{pic.name}.svg", 1280, 800)
    try:
        assert page.errors == []
        n = page.evaluate("document.querySelectorAll('g[data-step]').length")
        assert n > 0 and page.evaluate("document.querySelectorAll('[aria-current=step]').length") == 1
        _compare(page.screenshot(), f"{pic.name}-svg.png", shots)
    finally:
        page.close()


def test_the_hostile_page_runs_nothing(browser: Browser, made: Path) -> None:
    page = browser.open(made / "hostile.html")
    try:
        assert page.evaluate("document.title").startswith("netsim trace")
        assert page.evaluate("document.querySelectorAll('script, img, b').length") == 0
        assert page.evaluate("getComputedStyle(document.body).display") == "block"
        assert page.errors == []
    finally:
        page.close()


def test_the_path_is_told_without_colour(browser: Browser, made: Path) -> None:
    """On the path: bold and a solid bar; met but not matched: normal weight and a dashed bar; the deciding
    step: a double outline and words; each with its mark (✔/✘) as text."""
    page = browser.open(made / "inbound.html")
    try:
        style = page.evaluate("""(() => { const s = q => getComputedStyle(document.querySelector(q));
          return {hit: [s('li.hit').fontWeight, s('li.hit').borderLeftStyle],
                  miss: [s('li.miss').fontWeight, s('li.miss').borderLeftStyle],
                  decides: s('[aria-current=step]').outlineStyle,
                  marks: [document.querySelector('li.hit .mark').textContent,
                          document.querySelector('li.miss .mark').textContent]}; })()""")
        assert int(style["hit"][0]) >= 600 and int(style["miss"][0]) <= 400
        assert style["hit"][1] == "solid" and style["miss"][1] == "dashed"
        assert style["decides"] == "double"
        assert style["marks"] == ["\u2714", "\u2718"]
    finally:
        page.close()


def test_keyboard_reaches_the_deciding_rule(browser: Browser, made: Path) -> None:
    """Tab focuses the skip link first; Enter follows it to the deciding step."""
    page = browser.open(made / "inbound.html")
    try:
        for kind in ("rawKeyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", {"type": kind, "key": "Tab", "code": "Tab",
                                                    "windowsVirtualKeyCode": 9}, page.session)
        assert page.evaluate("document.activeElement.getAttribute('href')") == "#decides"
        browser.call("Input.dispatchKeyEvent", {"type": "rawKeyDown", "key": "Enter", "code": "Enter",
                                                "windowsVirtualKeyCode": 13}, page.session)
        browser.call("Input.dispatchKeyEvent", {"type": "char", "text": "\r"}, page.session)
        browser.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter",
                                                "windowsVirtualKeyCode": 13}, page.session)
        assert page.evaluate("location.hash") == "#decides"
        assert page.evaluate("document.querySelector(':target').getAttribute('aria-current')") == "step"
    finally:
        page.close()


@pytest.mark.parametrize("pic", PICTURES, ids=lambda p: p.name)
def test_axe_finds_no_violation(pic: Picture, browser: Browser, made: Path) -> None:
    _need("axe-core (npm ci --prefix tests/render)", AXE.is_file())
    page = browser.open(made / f"{pic.name}.html")
    try:
        page.evaluate(AXE.read_text(encoding="utf-8"))  # the DevTools protocol is not bound by the page's CSP
        found = page.evaluate("axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', "
                              "'wcag21aa', 'wcag22aa', 'best-practice']}}).then(r => r.violations.map(v => "
                              "({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map(n => n.target)})))")
        assert found == []
    finally:
        page.close()


def test_the_nu_html_checker_finds_nothing(made: Path) -> None:
    _need("java", shutil.which("java") is not None)
    _need("vnu.jar (npm ci --prefix tests/render)", VNU.is_file())
    files = sorted(str(p) for p in made.iterdir())
    r = subprocess.run(["java", "-jar", str(VNU), "--format", "json", "--also-check-svg", *files],
                       capture_output=True, text=True, timeout=300, check=False)
    messages = json.loads(r.stderr or r.stdout)["messages"]
    assert [(Path(m.get("url", "")).name, m.get("lastLine"), m["message"]) for m in messages] == []
    assert len(files) == len(PICTURES) + len(SVGS)
