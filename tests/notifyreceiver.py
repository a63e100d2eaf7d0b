"""A real HTTP receiver on loopback for apprise's json:// notifications (http.server in a thread)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    port: int = 0
    status: int = 200  # what it answers: 500 makes every send fail
    received: list[dict[str, Any]] = field(default_factory=list)  # the JSON bodies, with "path" added
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def events(self, path: str | None = None) -> list[str]:
        """The `event: NAME` line of each message received (on path, or any), in arrival order."""
        with self.lock:
            bodies = [body for body in self.received if path is None or body["path"] == f"/{path}"]
        return [_event_line(body.get("message") or "") for body in bodies]


def _event_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("event: "):
            return line[len("event: ") :]
    return "(no event line)"


@contextmanager
def receiving(status: int = 200) -> Iterator[Receiver]:
    receiver = Receiver(status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            body["path"] = self.path
            with receiver.lock:
                receiver.received.append(body)
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows what the test asserts

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
