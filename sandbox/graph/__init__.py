"""A local Microsoft Graph v1.0 server (calendar events) with its identity platform, for tests and the demo.

Exchange Online mailboxes of a hybrid organisation: the Graph sandbox serves the mailboxes of kind "graph" of
the same ``Org`` the EWS sandbox serves (kind "ews"), so meetings are delivered across with one UID, one
invitation log, one clock and one fault injector.

    from sandbox.graph import GraphSandbox
    with GraphSandbox(clock, faults, workdir, org=org) as g:
        g.org.add_mailbox("ann@example.com", time_zone="Europe/Berlin", kind="graph")
        session = requests.Session(); session.trust_env = False; session.verify = g.ca_file
        app = msal.ConfidentialClientApplication(g.client_id, authority=g.authority, client_credential=g.client_secret,
                                                 http_client=session, instance_discovery=False)
        token = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
        session.get(f"{g.graph_url}/users/ann@example.com/calendarView", params=..., headers={"Authorization": ...})

Server side: standard library, cryptography and pyjwt only; it shares nothing with the connectors it stands in
for (requests only in the client-side helper ``client_session``).
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from ..exchange.server import DEFAULT_PASSWORD
from ..exchange.store import Org
from ..httpbase import Latency, LoopbackServer, check_latency_ms
from ..tls import make_self_signed
from .events import GraphError
from .identity import DEFAULT_TOKEN_LIFETIME, Identity
from .server import Gateway, GraphHandler, LoginHandler
from .service import Service

__all__ = ["GraphSandbox", "GraphError"]

DEFAULT_BUDGET = 10_000  # requests per mailbox per 10 minutes (Outlook service limits)
DEFAULT_CONCURRENCY = 4  # concurrent requests per mailbox (Outlook service limits)
WINDOW_S = 600


class Throttle:
    """Per-mailbox concurrency (requests in flight, across connections and $batch sub-requests) and a request
    budget per 10 minutes judged on the shared clock."""

    def __init__(self, app) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.inflight: dict[str, int] = {}
            self._window: dict[str, deque] = {}
            self.throttled = 0

    def admit(self, mailbox: str) -> str:
        """Take a slot for ``mailbox`` (returned, to release) or raise the 429."""
        app = self.app
        with self._lock:
            now = app.clock.now().timestamp()
            window = self._window.setdefault(mailbox, deque())
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if app.max_concurrency is not None and self.inflight.get(mailbox, 0) >= app.max_concurrency:
                self.throttled += 1
                raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                                 {"Retry-After": str(app.concurrency_retry_after)})
            if app.mailbox_budget is not None and len(window) >= app.mailbox_budget:
                self.throttled += 1
                wait = max(1, math.ceil(window[0] + WINDOW_S - now))
                # Believed wording (the limit is "10,000 API requests in a 10 minute period" per app per mailbox).
                raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxRequests limit.",
                                 {"Retry-After": str(wait)})
            window.append(now)
            self.inflight[mailbox] = self.inflight.get(mailbox, 0) + 1
            return mailbox

    def release(self, mailbox: str) -> None:
        with self._lock:
            self.inflight[mailbox] = max(0, self.inflight.get(mailbox, 0) - 1)


class GraphSandbox(Latency):
    """The login server (https, like login.microsoftonline.com) and the Graph server (https, /v1.0), one CA.

    ``latency_ms`` (settings ``latency_ms``) is slept once per HTTP request either server answers (a $batch once);
    ``service_time_s`` (settings ``service_time_ms``) is how long each request and each $batch sub-request holds its
    mailbox's concurrency slot, so a test can make them overlap."""

    def __init__(self, clock, faults, workdir: Path, *, org: Org | None = None, domain: str = "example.com",
                 tenant_id: str | None = None, client_id: str | None = None, client_secret: str | None = None,
                 latency_ms: float = 0) -> None:
        self.latency_ms = latency_ms
        self.clock = clock
        self.faults = faults
        self.workdir = Path(workdir)
        self.org = org if org is not None else Org(clock, domain=domain,
                                                   service_account=(f"svc-calsync@{domain}", DEFAULT_PASSWORD))
        self.identity = Identity(clock, self.workdir / "graph-app", domain=self.org.domain, tenant_id=tenant_id,
                                 client_id=client_id, client_secret=client_secret)
        # One self-signed certificate for 127.0.0.1 serves both servers: trust ``ca_file`` and both verify.
        self._cert, self._key = make_self_signed(self.workdir / "graph-tls")
        self.mailbox_scope: set[str] | None = None  # None: the app reaches every mailbox
        self.mailbox_budget: int | None = DEFAULT_BUDGET
        self.max_concurrency: int | None = DEFAULT_CONCURRENCY
        self.concurrency_retry_after = 1  # seconds (believed: the service suggests a short wait)
        self.service_time_s = 0.0  # work per request and per $batch sub-request, holding the mailbox's slot
        self._count_lock = threading.Lock()
        self.throttle = Throttle(self)
        self.service = Service(self)
        self.gateway = Gateway(self)
        self.reset_counts()
        self._login: LoopbackServer | None = None
        self._graph: LoopbackServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "GraphSandbox":
        if self._graph is None:
            self._login = LoopbackServer(LoginHandler, self, tls=(self._cert, self._key)).start()
            self._graph = LoopbackServer(GraphHandler, self, tls=(self._cert, self._key)).start()
        return self

    def stop(self) -> None:
        for server in (self._graph, self._login):
            if server is not None:
                server.stop()
        self._graph = self._login = None

    def __enter__(self) -> "GraphSandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses and credentials
    def _need(self, server):
        if server is None:
            raise RuntimeError("the Graph sandbox is not started")
        return server.url

    @property
    def login_url(self) -> str:
        return self._need(self._login)

    @property
    def base_url(self) -> str:
        return self._need(self._graph)

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_sandbox"

    @property
    def authority(self) -> str:
        return f"{self.login_url}/{self.tenant_id}"

    @property
    def ca_file(self) -> Path:
        return self._cert

    tenant_id = property(lambda self: self.identity.tenant_id)
    client_id = property(lambda self: self.identity.client_id)
    client_secret = property(lambda self: self.identity.client_secret)
    certificate_file = property(lambda self: self.identity.certificate_file)
    certificate_thumbprint = property(lambda self: self.identity.certificate_thumbprint)
    certificate_pem = property(lambda self: self.identity.certificate_pem)
    private_key_pem = property(lambda self: self.identity.private_key_pem)

    @property
    def token_lifetime(self) -> int:
        return self.identity.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        if int(seconds) < 1:
            raise ValueError("token_lifetime must be at least 1 second")
        self.identity.token_lifetime = int(seconds)

    def set_mailbox_scope(self, mailboxes) -> None:
        """The mailboxes the app may reach (RBAC for Applications / application access policy); None = all."""
        self.mailbox_scope = None if mailboxes is None else {m.strip().lower() for m in mailboxes}

    def info(self) -> dict:
        """What a client needs (``connection_info()["graph"]``): the sandbox's own throw-away credentials."""
        return {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "certificate_file": str(self.certificate_file),
            "certificate_thumbprint": self.certificate_thumbprint,
            "authority": self.authority,
            "graph_url": self.graph_url,
            "ca_file": str(self.ca_file),
            "control": f"{self.control_url}/",
        }

    def client_session(self) -> Any:
        """A ``requests.Session`` that trusts the sandbox CA and ignores REQUESTS_CA_BUNDLE (for msal's
        ``http_client=`` and for Graph calls)."""
        import requests

        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.ca_file)
        return session

    # ------------------------------------------------------------------ the directory
    @staticmethod
    def user_id(email: str) -> str:
        """The user's object id (a stable GUID per address)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"calsync-sandbox-user:{email.strip().lower()}"))

    def user_email(self, ref: str) -> str | None:
        """The mailbox address a /users/{id | userPrincipalName} segment names (any kind), or None."""
        ref_l = ref.strip().lower()
        with self.org.lock:
            if ref_l in self.org.mailboxes:
                return ref_l
            for email in self.org.mailboxes:
                if self.user_id(email) == ref_l:
                    return email
        return None

    def user_json(self, email: str) -> dict:
        mbx = self.org.mailbox(email)
        return {"@odata.context": f"{self.graph_url}/$metadata#users/$entity", "businessPhones": [],
                "displayName": mbx.name, "givenName": None, "jobTitle": None, "mail": mbx.email,
                "mobilePhone": None, "officeLocation": None, "preferredLanguage": None, "surname": None,
                "userPrincipalName": mbx.email, "id": self.user_id(mbx.email)}

    # ------------------------------------------------------------------ counts
    def reset_counts(self) -> None:
        with self._count_lock:
            self._calls = 0
            self._sub_requests = 0
            self._dropped = 0
            self.calls_by_operation: dict[str, int] = {}
            self.batch_operations: dict[str, int] = {}
        self.throttle.reset()

    def count_call(self, operation: str) -> None:
        with self._count_lock:
            self._calls += 1
            self.calls_by_operation[operation] = self.calls_by_operation.get(operation, 0) + 1

    def count_sub(self, operation: str) -> None:
        with self._count_lock:
            self._sub_requests += 1
            self.batch_operations[operation] = self.batch_operations.get(operation, 0) + 1

    def count_dropped(self, operation: str | None = None) -> None:
        with self._count_lock:
            self._dropped += 1

    def calls(self) -> int:
        """HTTP requests to the Graph API that got a response (a $batch is one)."""
        with self._count_lock:
            return self._calls

    def sub_requests(self) -> int:
        with self._count_lock:
            return self._sub_requests

    def counts(self) -> dict:
        with self._count_lock:
            return {"calls": self._calls, "calls_by_operation": dict(self.calls_by_operation),
                    "sub_requests": self._sub_requests, "batch_operations": dict(self.batch_operations),
                    "dropped": self._dropped, "throttled": self.throttle.throttled,
                    "tokens_issued": self.identity.tokens_issued}

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict:
        return {"token_lifetime": self.token_lifetime,
                "mailbox_scope": None if self.mailbox_scope is None else sorted(self.mailbox_scope),
                "mailbox_budget": self.mailbox_budget, "max_concurrency": self.max_concurrency,
                "concurrency_retry_after": self.concurrency_retry_after, "latency_ms": self.latency_ms,
                "service_time_ms": self.service_time_s * 1000}

    def apply_settings(self, p: dict) -> None:
        # Checked before anything changes: a refused value leaves every setting as it was.
        latency = check_latency_ms(p["latency_ms"]) if "latency_ms" in p else None
        service = check_latency_ms(p["service_time_ms"]) if "service_time_ms" in p else None
        if "token_lifetime" in p:
            self.token_lifetime = int(p["token_lifetime"])
        if "mailbox_scope" in p:
            self.set_mailbox_scope(p["mailbox_scope"])
        if "mailbox_budget" in p:
            self.mailbox_budget = None if p["mailbox_budget"] is None else int(p["mailbox_budget"])
        if "max_concurrency" in p:
            self.max_concurrency = None if p["max_concurrency"] is None else int(p["max_concurrency"])
        if "concurrency_retry_after" in p:
            self.concurrency_retry_after = int(p["concurrency_retry_after"])
        if latency is not None:
            self.latency_ms = latency
        if service is not None:
            self.service_time_s = service / 1000

    def reset_settings(self) -> None:
        self.identity.token_lifetime = DEFAULT_TOKEN_LIFETIME
        self.mailbox_scope = None
        self.mailbox_budget = DEFAULT_BUDGET
        self.max_concurrency = DEFAULT_CONCURRENCY
        self.concurrency_retry_after = 1
        self.latency_s = 0.0
        self.service_time_s = 0.0

    def state(self) -> dict:
        return {"graph_url": self.graph_url, "authority": self.authority, "settings": self.settings(),
                "counts": self.counts(),
                "users": {e: self.user_id(e) for e, m in self.org.mailboxes.items()}}
