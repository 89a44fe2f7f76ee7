"""A threaded HTTP(S) server on a free loopback port, started and stopped in-process."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LoopbackServer:
    """Serve ``handler_class`` on 127.0.0.1 at a free port, in a background thread.

    ``handler_class.server.app`` is set to ``app`` so handlers reach the state they serve.
    With ``tls=(cert, key)`` the socket speaks HTTPS.
    """

    def __init__(
        self,
        handler_class: type[BaseHTTPRequestHandler],
        app: object,
        tls: tuple[Path, Path] | None = None,
        port: int = 0,
    ) -> None:
        self._httpd = _Server(("127.0.0.1", port), handler_class)
        self._httpd.app = app  # type: ignore[attr-defined]
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> "LoopbackServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
