"""Fixtures for the Exchange sandbox tests (imported by tests/sandbox/test_exchange_*.py).

The server is driven only through unmodified exchangelib (plus raw HTTP for the control API and the
documentation-shape tests).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import pytest
import requests
from exchangelib import BASIC, DELEGATE, IMPERSONATION, NTLM, Account, Configuration, Credentials, EWSTimeZone, Version
from exchangelib.protocol import FailFast, close_connections
from exchangelib.version import EXCHANGE_2016

from sandbox.clock import Clock
from sandbox.exchange import ExchangeSandbox
from sandbox.faults import Faults

UTC = timezone.utc
ANN, BOB, CAROL = "ann@example.com", "bob@example.com", "carol@example.com"
ANN_PASSWORD = "ann-Passw0rd"
NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def _ex_server():
    # One server per module (stopping one costs the 0.5 s poll interval); state is reset for every test.
    with ExchangeSandbox(Clock(), Faults()) as sandbox:
        yield sandbox


@pytest.fixture
def ex(_ex_server):
    sandbox = _ex_server
    sandbox.org.reset()
    sandbox.org.immutable_ids = False
    sandbox.auth_methods = ("ntlm", "basic")
    sandbox.faults.clear()
    sandbox.clock.set(NOW)
    sandbox.org.add_mailbox(ANN, time_zone="Europe/Berlin", password=ANN_PASSWORD)
    sandbox.org.add_mailbox(BOB, time_zone="UTC")
    sandbox.org.add_mailbox(CAROL, time_zone="America/New_York")
    yield sandbox
    close_connections()


@pytest.fixture
def connect(ex):
    """connect(mailbox, credentials=None, access_type=IMPERSONATION, tz="UTC", auth_type=BASIC) -> exchangelib Account."""

    def _connect(mailbox=ANN, credentials=None, access_type=IMPERSONATION, tz="UTC", auth_type=BASIC):
        creds = Credentials(*(credentials or ex.service_account))
        config = Configuration(
            service_endpoint=ex.url,
            credentials=creds,
            auth_type=auth_type,
            version=Version(build=EXCHANGE_2016),
            retry_policy=FailFast(),
        )
        return Account(
            primary_smtp_address=mailbox,
            config=config,
            autodiscover=False,
            access_type=access_type,
            default_timezone=EWSTimeZone(tz),
        )

    yield _connect
    close_connections()


def control(ex, method: str, route: str, payload=None):
    """Call the /_sandbox/ control API as another process would."""
    session = requests.Session()
    session.trust_env = False
    r = session.request(method, f"{ex.control_url}/{route}", json=payload, timeout=10)
    r.raise_for_status()
    return r.json()


def raw_soap(ex, body: str, credentials=None, headers: str = "") -> requests.Response:
    """POST a SOAP envelope as-is (for comparing with Microsoft's documented bodies)."""
    session = requests.Session()
    session.trust_env = False
    envelope = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" '
        'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">'
        f'<soap:Header><t:RequestServerVersion Version="Exchange2016"/>{headers}</soap:Header>'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )
    return session.post(ex.url, data=envelope.encode(), auth=credentials or ex.service_account,
                        headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=10)


__all__ = ["_ex_server", "ex", "connect", "control", "raw_soap", "ANN", "BOB", "CAROL", "ANN_PASSWORD", "NOW", "UTC",
           "BASIC", "DELEGATE", "IMPERSONATION", "NTLM", "warnings"]
