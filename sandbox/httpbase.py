"""A threaded HTTP(S) server on a free loopback port, started and stopped in-process; the fixed latency every
sandbox server can add to the requests it answers."""

from __future__ import annotations

import ssl
import threading
import time
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


class Latency:
    """A fixed latency per HTTP request, as a real server's round trip adds one: ``latency_ms`` (settings key
    ``latency_ms`` of every server's control API). ``pause()`` sleeps it; servers call it once per API request they
    answer (never for the control API), outside every lock of their state, so concurrent requests overlap."""

    _latency_ms: float = 0

    @property
    def latency_ms(self) -> float:
        return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, ms: float) -> None:
        value = check_latency_ms(ms)
        self._latency_ms = int(value) if value == int(value) else value

    @property
    def latency_s(self) -> float:
        return self._latency_ms / 1000

    @latency_s.setter
    def latency_s(self, seconds: float) -> None:
        self.latency_ms = check_latency_ms(seconds) * 1000

    def pause(self) -> None:
        if self.latency_s > 0:
            time.sleep(self.latency_s)


def check_latency_ms(ms: object) -> float:
    """``ms`` as a latency in milliseconds (a number, 0 or more), or ValueError."""
    if isinstance(ms, bool):
        raise ValueError("latency_ms must be a number of milliseconds, 0 or more")
    try:
        value = float(ms)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError("latency_ms must be a number of milliseconds, 0 or more") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("latency_ms must be a number of milliseconds, 0 or more")
    return value
