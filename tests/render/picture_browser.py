"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no
websocket, no driver, no network. One browser serves every page of a test session.

``Browser.open(path, width, height)`` loads a local file in a fresh tab at that viewport and returns a
:class:`Page`: ``evaluate(js)`` (by value, promises awaited), ``screenshot()`` (PNG bytes of the
viewport) and ``errors`` (console errors, uncaught exceptions and the browser's own error log entries,
such as a Content-Security-Policy refusal, seen while the page loaded and ran).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# what keeps it from calling home in a closed network (those connections are refused here, and logged)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
         "--force-color-profile=srgb", "--font-render-hinting=none", "--disable-lcd-text")
TIMEOUT = 30.0


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self) -> None:
        if CHROMIUM is None:
            raise BrowserError("chromium is not installed (Debian package chromium; ./dev setup installs it)")
        self._dir = tempfile.mkdtemp(prefix="netsim-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def protocol_fds() -> None:
            """In the child: the protocol pipe as its fds 3 (commands) and 4 (replies and events)."""
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self._dir}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=protocol_fds)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []

    # -- the wire ------------------------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise BrowserError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed the protocol pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + TIMEOUT
        while True:
            msg = self._read(deadline)
            if msg.get("id") == wanted:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})  # type: ignore[no-any-return]
            if "method" in msg:
                self._events.append(msg)

    def wait_event(self, method: str, session: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for k, ev in enumerate(self._events):
            if ev["method"] == method and ev.get("sessionId") == session:
                return self._events.pop(k)
        while True:
            msg = self._read(deadline)
            if "method" in msg:
                if msg["method"] == method and msg.get("sessionId") == session:
                    return msg
                self._events.append(msg)

    def drain(self, session: str) -> list[dict[str, Any]]:
        mine = [ev for ev in self._events if ev.get("sessionId") == session]
        self._events = [ev for ev in self._events if ev.get("sessionId") != session]
        return mine

    # -- pages ---------------------------------------------------------------------------------------------
    def open(self, path: Path, width: int = 1280, height: int = 800, *, mobile: bool = False) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": mobile}, session)
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, target, session)

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._dir, ignore_errors=True)


class Page:
    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session

    def evaluate(self, expression: str) -> Any:
        r = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True}, self.session)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression[:60]}…: {r['exceptionDetails'].get('text')} "
                               f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r["result"].get("value")

    def screenshot(self) -> bytes:
        data = self.browser.call("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        return base64.b64decode(data)

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (a refused resource, a CSP violation)."""
        out = []
        for ev in self.browser.drain(self.session):
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif ev["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif ev["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('source')}: {p['entry'].get('text')}")
        return out

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})
