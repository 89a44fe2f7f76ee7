"""Fixtures for the Graph sandbox tests (imported by tests/sandbox/test_graph_*.py).

The server is driven only through unmodified msal and plain requests (exchangelib for the EWS side of the
hybrid organisation), never through calsync's code.
"""

from __future__ import annotations

from datetime import datetime, timezone

import msal
import pytest
import requests
from exchangelib import BASIC, IMPERSONATION, Account, Configuration, Credentials, EWSTimeZone, Version
from exchangelib.protocol import FailFast, close_connections
from exchangelib.version import EXCHANGE_2016

from sandbox import Sandbox

UTC = timezone.utc
ANN, BOB = "ann@example.com", "bob@example.com"  # Exchange Online (Graph)
CAROL, DAVE = "carol@example.com", "dave@example.com"  # on premises (EWS)
NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SCOPE = ["https://graph.microsoft.com/.default"]
WINDOW = {"startDateTime": "2026-11-01T00:00:00Z", "endDateTime": "2027-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def _sb(tmp_path_factory):
    with Sandbox(tmp_path_factory.mktemp("graph-sandbox")) as sb:
        yield sb


@pytest.fixture
def sb(_sb):
    _sb.reset()
    _sb.graph.reset_settings()
    _sb.org.immutable_ids = False
    _sb.clock.set(NOW)
    _sb.org.add_mailbox(ANN, time_zone="Europe/Berlin", kind="graph", name="Ann Archer")
    _sb.org.add_mailbox(BOB, time_zone="UTC", kind="graph", name="Bob Baker")
    _sb.org.add_mailbox(CAROL, time_zone="America/New_York", name="Carol Cole")
    _sb.org.add_mailbox(DAVE, time_zone="UTC", name="Dave Dunn")
    yield _sb
    close_connections()


def new_session(sb) -> requests.Session:
    """What a client does: trust the sandbox CA; REQUESTS_CA_BUNDLE must not win (trust_env off)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = str(sb.graph.ca_file)
    return s


def msal_app(sb, credential=None, session=None, tenant=None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sb.graph.client_id,
        authority=f"{sb.graph.login_url}/{tenant or sb.graph.tenant_id}",
        client_credential=credential if credential is not None else sb.graph.client_secret,
        http_client=session or new_session(sb),
        instance_discovery=False,
    )


class Graph:
    """Plain requests against the sandbox's Graph endpoint with an msal-acquired token."""

    def __init__(self, sb, token: str) -> None:
        self.sb = sb
        self.base = sb.graph.graph_url
        self.token = token
        self.session = new_session(sb)

    def __call__(self, method: str, path: str, *, headers=None, **kw) -> requests.Response:
        h = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        url = path if path.startswith("http") else self.base + path
        return self.session.request(method, url, headers=h, timeout=20, **kw)

    def create(self, mailbox: str, subject: str, start: str, end: str, tz: str = "UTC", **extra) -> dict:
        body = {"subject": subject, "start": {"dateTime": start, "timeZone": tz},
                "end": {"dateTime": end, "timeZone": tz}, **extra}
        r = self("POST", f"/users/{mailbox}/events", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def view(self, mailbox: str, headers=None, **params) -> requests.Response:
        return self("GET", f"/users/{mailbox}/calendarView", params={**WINDOW, **params}, headers=headers)


@pytest.fixture
def graph(sb):
    result = msal_app(sb).acquire_token_for_client(SCOPE)
    assert "access_token" in result, result
    return Graph(sb, result["access_token"])


def ews_account(sb, mailbox: str, tz: str = "UTC") -> Account:
    config = Configuration(service_endpoint=sb.exchange.url, credentials=Credentials(*sb.exchange.service_account),
                           auth_type=BASIC, version=Version(build=EXCHANGE_2016), retry_policy=FailFast())
    return Account(primary_smtp_address=mailbox, config=config, autodiscover=False, access_type=IMPERSONATION,
                   default_timezone=EWSTimeZone(tz))


def control(sb, method: str, route: str, payload=None):
    """The Graph server's /_sandbox/ control API, as another process would call it."""
    r = new_session(sb).request(method, f"{sb.graph.control_url}/{route}", json=payload, timeout=10)
    r.raise_for_status()
    return r.json()


def error_of(r: requests.Response) -> tuple[int, str, str]:
    e = r.json()["error"]
    return r.status_code, e["code"], e["message"]


__all__ = ["_sb", "sb", "graph", "Graph", "new_session", "msal_app", "ews_account", "control", "error_of",
           "ANN", "BOB", "CAROL", "DAVE", "NOW", "UTC", "SCOPE", "WINDOW"]
