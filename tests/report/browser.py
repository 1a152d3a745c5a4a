"""Drive headless Chromium over the DevTools protocol (``--remote-debugging-pipe``) with the standard library only.

``open_page`` loads a file, optionally runs a script in it, takes a screenshot, and returns every sign of
trouble the browser reported: uncaught exceptions, ``console.error``/``console.assert``, browser log errors
(failed loads, CSP), JavaScript dialogs (``alert`` — an executed XSS payload), and any network request to a
scheme other than ``file:``/``data:``/``about:`` (an external resource).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome-error:", "devtools:")


def find_chromium() -> str | None:
    env = os.environ.get("YOCO_CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # anything that must not happen
    warnings: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    value: object = None  # result of the script, if one was run
    screenshot: Path | None = None


class Chromium:
    """One headless browser process; use as a context manager."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="yoco-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_chrome_r, 100)
            os.dup2(from_chrome_w, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)

        args = [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close", wait=False)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                    raise RuntimeError(f"Chromium closed the pipe: {err}")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, wait: bool = True) -> dict:
        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        if not wait:
            return {}
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._take(reply)

    def _take(self, event: dict) -> None:
        """Keep an event; a dialog blocks the page until answered, so dismiss it at once."""
        self._events.append(event)
        if event.get("method") == "Page.javascriptDialogOpening":
            self.send("Page.handleJavaScriptDialog", {"accept": True}, session=event.get("sessionId"), wait=False)

    def _wait_event(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, e in enumerate(self._events):
                if e.get("method") == method and e.get("sessionId") == session:
                    del self._events[i]
                    return
            self._take(self._read(deadline))

    def open_page(
        self,
        path: Path,
        script: str | None = None,
        screenshot: Path | None = None,
        width: int = 1400,
        height: int = 900,
        full_page: bool = True,
    ) -> PageResult:
        """Load ``path`` (a local file), run ``script`` (an expression; may return a promise), screenshot it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self._events.clear()
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        self._wait_event("Page.loadEventFired", session)
        result = PageResult()
        if script:
            r = self.send(
                "Runtime.evaluate", {"expression": script, "awaitPromise": True, "returnByValue": True}, session=session
            )
            if "exceptionDetails" in r:
                d = r["exceptionDetails"]
                result.errors.append(
                    "script failed: " + str(d.get("exception", {}).get("description") or d.get("text"))
                )
            else:
                result.value = r.get("result", {}).get("value")
        if screenshot is not None:
            clip = None
            if full_page:
                m = self.send("Page.getLayoutMetrics", session=session)
                size = m.get("cssContentSize") or m["contentSize"]
                clip = {
                    "x": 0,
                    "y": 0,
                    "width": max(width, size["width"]),
                    "height": min(size["height"], 8000),
                    "scale": 1,
                }
            params = {"format": "png", "captureBeyondViewport": full_page}
            if clip:
                params["clip"] = clip
            shot = self.send("Page.captureScreenshot", params, session=session)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            result.screenshot = screenshot
        self.send("Runtime.evaluate", {"expression": "0"}, session=session)  # flush pending events
        for e in self._events:
            if e.get("sessionId") != session:
                continue
            self._classify(e, result)
        self._events.clear()
        self.send("Target.closeTarget", {"targetId": target})
        return result

    @staticmethod
    def _classify(e: dict, out: PageResult) -> None:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.errors.append("uncaught: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            if p.get("type") in ("error", "assert"):
                out.errors.append(f"console.{p['type']}: {text}")
            elif p.get("type") == "warning":
                out.warnings.append(f"console.warn: {text}")
        elif method == "Log.entryAdded":
            entry = p.get("entry", {})
            line = f"log {entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
            (out.errors if entry.get("level") == "error" else out.warnings).append(line)
        elif method == "Page.javascriptDialogOpening":
            out.errors.append(f"dialog ({p.get('type')}): {p.get('message')}")
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            out.requests.append(url)
            if not url.startswith(LOCAL_SCHEMES):
                out.errors.append(f"external request: {url}")
