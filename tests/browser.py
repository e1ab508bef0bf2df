"""A real headless browser for the report tests: Chromium driven over the DevTools protocol
on a pipe (``--remote-debugging-pipe``: commands on fd 3, replies on fd 4, JSON messages
ending in a NUL byte), with nothing but the standard library.

``render(path)`` loads a local page and returns its screenshot (PNG bytes), the console
errors and uncaught exceptions, and every URL the page requested.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from funnelsim.report import chromium_command


@dataclass
class Page:
    screenshot: bytes
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class _Pipe:
    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int):
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive(timeout=60)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while time.monotonic() < deadline:
            message = self.receive(deadline - time.monotonic())
            if message.get("method") == method:
                return message
        raise TimeoutError(f"no {method} from Chromium")


def render(path: Path, *, width: int = 1100, height: int = 1400) -> Page:
    """Load ``path`` in headless Chromium; its screenshot, console errors and requests."""
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def wire() -> None:  # in the child: fd 3 reads commands, fd 4 writes replies
        commands, replies = os.dup(to_browser_r), os.dup(from_browser_w)  # out of the way
        os.dup2(commands, 3)  # inheritable: kept across exec
        os.dup2(replies, 4)

    with tempfile.TemporaryDirectory(prefix="funnelsim-browser-") as profile:
        command = chromium_command(f"--user-data-dir={profile}", "--remote-debugging-pipe")
        process = subprocess.Popen(
            command,
            close_fds=False,  # keep the fds 3 and 4 that wire() makes (others close on exec)
            preexec_fn=wire,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _Pipe(process, to_browser_w, from_browser_r)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
            page = Page(screenshot=base64.b64decode(shot["data"]))
            for event in pipe.events:
                method, params = event["method"], event.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in (
                    "error",
                    "assert",
                ):
                    args = params.get("args", [])
                    page.console_errors.append(" ".join(str(a.get("value", "")) for a in args))
                elif method == "Runtime.exceptionThrown":
                    page.console_errors.append(str(params["exceptionDetails"].get("text")))
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    page.console_errors.append(params["entry"].get("text", ""))
                elif method == "Network.requestWillBeSent":
                    page.requests.append(params["request"]["url"])
            return page
        finally:
            try:
                pipe.send("Browser.close")
            except (RuntimeError, TimeoutError, OSError):
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(to_browser_w)
            os.close(from_browser_r)
