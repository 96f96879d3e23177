"""A real HTTP server on 127.0.0.1 standing in for Telegram's Bot API and for a webhook receiver.

Each POST is recorded (path, headers, body, arrival time). What it answers is scripted: a list of
``(status, headers, delay_seconds)`` consumed one per request, then ``default`` for the rest, so a
test injects 429s with ``Retry-After``, 5xx answers and answers slower than the client's timeout.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """The server's script and what it received."""

    script: list[tuple[int, dict[str, str], float]] = field(default_factory=list)
    default: tuple[int, dict[str, str], float] = (200, {}, 0.0)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def accepted(self, path_part: str = "") -> list[Received]:
        """The requests answered 2xx whose path contains ``path_part``."""
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300 and path_part in r.path]

    def texts(self, path_part: str = "") -> list[str]:
        """The ``text`` of every accepted JSON body (Telegram's and livetrader's webhook shape)."""
        return [r.json().get("text", "") for r in self.accepted(path_part)]

    def close(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def serve(script: list[tuple[int, dict[str, str], float]] | None = None,
          default: tuple[int, dict[str, str], float] = (200, {}, 0.0)) -> Receiver:
    """Start a receiver on a free port of 127.0.0.1 (a daemon thread); ``close()`` it at the end."""
    receiver = Receiver(list(script or []), default)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                status, headers, delay = receiver.script.pop(0) if receiver.script else receiver.default
                receiver.received.append(Received(self.path, dict(self.headers), body, time.monotonic(), status))
            if delay:
                receiver.release.wait(delay)  # a slow or hanging endpoint; released at close
            payload = b'{"ok":true}' if status < 400 else json.dumps(
                {"ok": False, "parameters": {"retry_after": 0}} if status == 429 else {"ok": False}).encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (its timeout): that is what a delay tests

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Handler.disable_nagle_algorithm = True  # else +44 ms per request (docs: DESIGN facts)
    receiver.server = server
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return receiver
