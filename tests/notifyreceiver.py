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
    address: str = "127.0.0.1"  # where it listens: a test host's container reaches this machine's bridge address
    status: int = 200  # what it answers: 500 makes every send fail
    received: list[dict[str, Any]] = field(default_factory=list)  # the JSON bodies, with "path" added
    # Each request as it came: method, path, headers in their order (Host's port aside), the body's bytes.
    requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "hook") -> str:
        return f"json://{self.address}:{self.port}/{path}"

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
def receiving(status: int = 200, address: str = "127.0.0.1") -> Iterator[Receiver]:
    receiver = Receiver(status=status, address=address)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            body = json.loads(raw or b"{}")
            body["path"] = self.path
            headers = list(self.headers.items())
            with receiver.lock:
                receiver.received.append(body)
                receiver.requests.append((self.command, self.path, headers, raw))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_PATCH = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows what the test asserts

    server = ThreadingHTTPServer((address, 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
