"""Fault injection shared by the sandbox servers.

A fault is armed for the next ``count`` calls whose route matches (``route`` is a substring of the
request path, or of the SOAP operation name for Exchange; ``None`` matches every call), after letting
the first ``after`` matching calls through (so a test can fail a load after k writes). Kinds:

- ``http_503``: answer 503 Service Unavailable without touching state.
- ``timeout``: hold the request for ``delay_s`` seconds and then close it unanswered.
- ``throttle``: the server's own throttling reply (Salesforce: 403 REQUEST_LIMIT_EXCEEDED;
  Exchange: ErrorServerBusy with BackOffMilliseconds = ``backoff_ms``).
- ``drop_after_write``: apply the request, then drop the connection before replying.
- Junk a proxy or a sick server answers with (Exchange only): ``html_page`` (HTTP 200, a ``text/html``
  sign-in page), ``truncated_xml`` (HTTP 200, the real SOAP reply cut off half-way; the request is
  applied), ``http_500_empty`` (HTTP 500 with no body and no content type).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

KINDS = ("http_503", "timeout", "throttle", "drop_after_write", "html_page", "truncated_xml", "http_500_empty")


@dataclass
class Fault:
    kind: str
    count: int = 1
    route: str | None = None
    backoff_ms: int = 500
    delay_s: float = 2.0
    after: int = 0
    fired: int = 0
    passed: int = 0

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "count": self.count,
            "route": self.route,
            "backoff_ms": self.backoff_ms,
            "delay_s": self.delay_s,
            "after": self.after,
            "fired": self.fired,
        }


@dataclass
class Faults:
    """Armed faults, consumed in the order they were added."""

    _armed: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        kind: str,
        count: int = 1,
        route: str | None = None,
        backoff_ms: int = 500,
        delay_s: float = 2.0,
        after: int = 0,
    ) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        if count < 1:
            raise ValueError("fault count must be at least 1")
        if after < 0:
            raise ValueError("fault 'after' must be 0 or more")
        fault = Fault(kind, count, route, backoff_ms, delay_s, after)
        with self._lock:
            self._armed.append(fault)
        return fault

    def take(self, route: str) -> Fault | None:
        """The fault to apply to a call on ``route``, if one is armed (and count it as fired)."""
        with self._lock:
            for fault in self._armed:
                if fault.route is None or fault.route in route:
                    if fault.passed < fault.after:
                        fault.passed += 1
                        return None
                    fault.fired += 1
                    if fault.fired >= fault.count:
                        self._armed.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def to_json(self) -> list[dict]:
        with self._lock:
            return [f.to_json() for f in self._armed]
