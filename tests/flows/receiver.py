"""A local webhook receiver for notification tests: an HTTP server on a free loopback port that keeps every
POST it gets (a Slack or Teams webhook stand-in)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.posts.append({"path": self.path, "headers": dict(self.headers),
                                           "json": json.loads(body or b"null")})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/calsync"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, n: int = 1, timeout: float = 10.0) -> list[dict]:
        """The JSON bodies once at least ``n`` have come (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.posts) >= n:
                    return [p["json"] for p in self.posts]
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} notifications, got {len(self.posts)}: {self.posts}")
            time.sleep(0.05)

    def clear(self) -> None:
        with self._lock:
            self.posts.clear()


def closed_port() -> int:
    """A loopback port nothing listens on (a refused connection)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
