"""A local Salesforce REST server that simple-salesforce talks to (docs/sandbox.md).

    from sandbox.salesforce import SalesforceSandbox
    with SalesforceSandbox(clock, faults, workdir) as sf:
        client = Salesforce(instance_url=sf.instance_url, session_id=sf.session_id,
                            session=sf.client_session(), version="59.0")

The server is an independent stand-in: standard library, cryptography and pyjwt only (requests only
for the client-side helpers ``client_session`` and ``route_login``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..clock import Clock
from ..faults import Faults
from ..httpbase import Latency, LoopbackServer
from ..tls import make_self_signed
from .org import Org, SfError
from .server import Handler

__all__ = ["SalesforceSandbox", "Org", "SfError"]


class SalesforceSandbox(Latency):
    """HTTPS Salesforce REST API on a free loopback port, with its org state in memory.

    ``latency_ms`` (settings key ``latency_ms``) is slept once per API request, outside the org's lock.
    ``counts()`` (control ``GET /_sandbox/calls``) says what the API was asked since the last reset: calls by
    operation, the SOQL queries, pages and rows per sObject read, and the records written per operation and
    sObject (what the sObject Collections calls held, or one per single-record call).
    """

    def __init__(
        self,
        clock: Clock,
        faults: Faults,
        workdir: Path,
        *,
        shared_activities: bool = True,
        required_custom_field: str | None = None,
        daily_api_limit: int = 100_000,
        session_id: str | None = None,
        latency_ms: float = 0,
    ) -> None:
        self.latency_ms = latency_ms
        self.clock = clock
        self.faults = faults
        self.workdir = Path(workdir)
        self.org = Org(
            clock,
            shared_activities=shared_activities,
            required_custom_field=required_custom_field,
            daily_api_limit=daily_api_limit,
            session_id=session_id,
        )
        self._cert, self._key = make_self_signed(self.workdir / "salesforce-tls")
        self._server: LoopbackServer | None = None
        self._count_lock = threading.Lock()
        self.reset_counts()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "SalesforceSandbox":
        if self._server is None:
            self._server = LoopbackServer(Handler, self, tls=(self._cert, self._key))
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "SalesforceSandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ counts
    def reset_counts(self) -> None:
        with self._count_lock:
            self._calls = 0
            self.calls_by_operation: dict[str, int] = {}
            self.queries: dict[str, dict[str, int]] = {}  # sObject -> queries, pages, rows
            self.records_written: dict[str, int] = {}  # "create Event" -> records

    def count_call(self, operation: str) -> None:
        """One API request answered (any status; a dropped connection is not counted)."""
        with self._count_lock:
            self._calls += 1
            self.calls_by_operation[operation] = self.calls_by_operation.get(operation, 0) + 1

    def count_query(self, sobject: str, rows: int) -> None:
        with self._count_lock:
            q = self.queries.setdefault(sobject, {"queries": 0, "pages": 0, "rows": 0})
            q["queries"] += 1
            q["rows"] += rows

    def count_page(self, sobject: str) -> None:
        with self._count_lock:
            q = self.queries.setdefault(sobject, {"queries": 0, "pages": 0, "rows": 0})
            q["pages"] += 1

    def count_written(self, verb: str, sobject: str, records: int = 1) -> None:
        with self._count_lock:
            key = f"{verb} {sobject}"
            self.records_written[key] = self.records_written.get(key, 0) + records

    def calls(self) -> int:
        with self._count_lock:
            return self._calls

    def counts(self) -> dict:
        with self._count_lock:
            return {"calls": self._calls, "calls_by_operation": dict(self.calls_by_operation),
                    "queries": {k: dict(v) for k, v in self.queries.items()},
                    "records_written": dict(self.records_written)}

    # ------------------------------------------------------------------ connection details
    @property
    def instance_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Salesforce sandbox is not started")
        return self._server.url

    @property
    def session_id(self) -> str:
        return self.org.session_id

    @property
    def ca_file(self) -> Path:
        return self._cert

    def client_session(self) -> Any:
        """A ``requests.Session`` that trusts the sandbox certificate and ignores REQUESTS_CA_BUNDLE."""
        import requests

        session = requests.Session()
        session.verify = str(self._cert)
        session.trust_env = False
        return session

    def route_login(self, session: Any, domain: str = "login") -> Any:
        """Send ``https://<domain>.salesforce.com/...`` (the OAuth token URL simple-salesforce builds)
        from ``session`` to this sandbox; returns the session."""
        import requests

        sandbox = self

        class _ToSandbox(requests.adapters.HTTPAdapter):
            def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                prefix = f"https://{domain}.salesforce.com"
                if request.url.startswith(prefix):
                    request.url = sandbox.instance_url + request.url[len(prefix):]
                kwargs["verify"] = str(sandbox.ca_file)
                return super().send(request, **kwargs)

        session.mount(f"https://{domain}.salesforce.com", _ToSandbox())
        return session

    def info(self) -> dict:
        """What ``python -m sandbox`` prints for this server."""
        return {
            "instance_url": self.instance_url,
            "session_id": self.session_id,
            "ca_file": str(self.ca_file),
            "api_version": "59.0",
            "control": f"{self.instance_url}/_sandbox/",
        }
