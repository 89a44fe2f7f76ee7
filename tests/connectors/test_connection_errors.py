"""Issue 11: errors that say what to do. Exchange answering junk, and servers that cannot be reached, through
the real clients (exchangelib, simple-salesforce) over HTTP against the sandbox (or a port nothing listens on).
Also: exchangelib's DEBUG dumps carry no credentials and no private event details."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import socket

import polars as pl
import pytest

from connectors.errors import FatalError, RetriableError
from connectors.exchange import ExchangeConnector
from connectors.mailbox import Mailboxes, MailboxRead
from connectors.salesforce import SalesforceConnector
from sandbox import Sandbox
from transforms.schema import DELTA_SCHEMA, conform

UTC = dt.timezone.utc
ANN = "ann@example.com"
WS, WE = dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 4, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sb():
    with Sandbox() as sandbox:
        sandbox.exchange.org.add_mailbox(ANN)
        yield sandbox


@pytest.fixture
def ews(sb):
    sb.faults.clear()
    user, password = sb.exchange.service_account
    connector = ExchangeConnector(sb.exchange.url, user, password, auth_type="ntlm", max_wait_s=1)
    yield connector
    connector.close()
    sb.faults.clear()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _create(subject: str = "Quarterly review") -> pl.DataFrame:
    return conform(pl.DataFrame([{
        "delta_id": "d1", "op": "create", "target_side": "email", "mailbox": ANN, "user_key": ANN,
        "subject": subject, "start": dt.datetime(2026, 3, 2, 9, tzinfo=UTC), "end": dt.datetime(2026, 3, 2, 10, tzinfo=UTC),
        "is_all_day": False, "description": "", "is_private": False,
    }], strict=False), DELTA_SCHEMA)


JUNK = [
    ("html_page", r"answered HTTP 200 with text/html; charset=utf-8 \(\d+ bytes\), not an EWS reply"),
    ("truncated_xml", r"answered HTTP 200 with text/xml; charset=utf-8 \(\d+ bytes\), not an EWS reply"),
    ("http_500_empty", r"answered HTTP 500 with no content type \(no body\), not an EWS reply"),
]


@pytest.mark.parametrize(("kind", "what"), JUNK)
def test_junk_while_reading_is_a_retriable_error_naming_mailbox_status_and_type(sb, ews, kind, what):
    sb.faults.add(kind, count=20, route="FindItem")
    with pytest.raises(RetriableError, match=what) as info:
        ews.read(ANN, ANN, WS, WE)
    message = str(info.value)
    assert f"Exchange at {sb.exchange.url}" in message and f"while reading mailbox {ANN}" in message
    assert "retry" in message and "\n" not in message


@pytest.mark.parametrize(("kind", "what"), JUNK)
def test_junk_while_writing_fails_the_delta_retriable_with_retry_or_replay(sb, ews, kind, what):
    sb.faults.add(kind, count=20, route="CreateItem")
    (outcome,) = ews.apply(_create()).to_dicts()
    assert outcome["status"] == "failed" and outcome["retriable"] is True
    import re

    assert re.search(what, outcome["error"]) and f"while writing to {ANN}; retry or replay the run" in outcome["error"]


def test_connection_failures_are_told_apart_and_name_the_url(sb):
    refused_url = f"http://127.0.0.1:{_closed_port()}/EWS/Exchange.asmx"
    cases = [
        (refused_url, RetriableError, "refused the connection", "check that the server is running"),
        ("http://calsync-nowhere.invalid/EWS/Exchange.asmx", RetriableError, "is unreachable: its host name does not"
                                                                            " resolve", "check the host in [exchange] endpoint"),
        # The Salesforce sandbox speaks TLS with its own certificate, which nothing here trusts.
        (sb.salesforce.instance_url + "/EWS/Exchange.asmx", FatalError, "TLS certificate", "failed verification"),
    ]
    kinds = []
    for url, error, said, check in cases:
        connector = ExchangeConnector(url, "svc@example.com", "pw", auth_type="ntlm", max_wait_s=1)
        try:
            with pytest.raises(error) as info:
                connector.read(ANN, ANN, WS, WE)
        finally:
            connector.close()
        message = str(info.value)
        assert url in message and said in message and check in message and f"mailbox {ANN}" in message, message
        kinds.append(info.value.kind)
    assert kinds == ["refused", "unreachable", "certificate"]


def test_a_refused_connection_while_writing_fails_every_delta_retriable(sb):
    connector = ExchangeConnector(f"http://127.0.0.1:{_closed_port()}/EWS/Exchange.asmx", "svc@example.com", "pw",
                                  auth_type="ntlm", max_wait_s=1)
    try:
        (outcome,) = connector.apply(_create()).to_dicts()
    finally:
        connector.close()
    assert outcome["status"] == "failed" and outcome["retriable"]
    assert "refused the connection" in outcome["error"] and "retry or replay the run" in outcome["error"]


def test_salesforce_connection_failures_name_the_url(sb):
    import requests

    url = f"https://127.0.0.1:{_closed_port()}"
    refused = SalesforceConnector.from_session(url, "00Dsecret!session", session=sb.salesforce.client_session())
    with pytest.raises(RetriableError, match="refused the connection") as info:
        refused.org_info()
    assert url in str(info.value) and "describe Event" in str(info.value) and "retry the run" in str(info.value)
    assert "00Dsecret" not in str(info.value)
    strict = requests.Session()
    strict.trust_env = False  # the system's CAs only: the sandbox's own certificate is not among them
    untrusted = SalesforceConnector.from_session(sb.salesforce.instance_url, sb.salesforce.session_id, session=strict)
    with pytest.raises(FatalError, match="TLS certificate of Salesforce at https://127.0.0.1:.* failed verification"):
        untrusted.org_info()


class _Broken:
    """A mailbox connector of some future kind that lets a raw exception escape (a contract breach)."""

    kind = "ews"
    api_calls = 0

    def read(self, user_key, mailbox, window_start, window_end, known=None) -> MailboxRead:
        raise KeyError("ChangeKey")

    def close(self) -> None:
        pass


def test_the_router_holds_every_kind_to_the_contract(sb):
    mail = Mailboxes({"ews": _Broken()}, {ANN: "ews"})
    with pytest.raises(RetriableError, match=rf"the Exchange connector failed reading mailbox {ANN} \(KeyError"):
        mail.read(ANN, ANN, WS, WE)
    # A real connector's connection failure passes through, already told apart.
    real = ExchangeConnector(f"http://127.0.0.1:{_closed_port()}/EWS/Exchange.asmx", "svc@example.com", "pw",
                             auth_type="ntlm", max_wait_s=1)
    with pytest.raises(RetriableError, match="refused the connection"):
        Mailboxes({"ews": real}, {ANN: "ews"}).read(ANN, ANN, WS, WE)
    real.close()


def test_debug_logs_of_exchangelib_carry_no_credentials_and_no_private_details(sb, caplog):
    """At DEBUG exchangelib dumps headers and XML; the connector's filter redacts them (as snapshots keep
    private events: no subject, body or attendees), and the Authorization header always."""
    org = sb.exchange.org
    org.add_item(ANN, "Dentist: root canal", dt.datetime(2026, 3, 3, 8, tzinfo=UTC), dt.datetime(2026, 3, 3, 9, tzinfo=UTC),
                 body="the molar, left", sensitivity="Private", required_attendees=["dr.smile@clinic.example"])
    org.add_item(ANN, "Board meeting", dt.datetime(2026, 3, 4, 8, tzinfo=UTC), dt.datetime(2026, 3, 4, 9, tzinfo=UTC))
    user, password = sb.exchange.service_account
    connector = ExchangeConnector(sb.exchange.url, user, password, auth_type="basic", max_wait_s=1)
    private_write = _create("Lawyer: divorce papers").with_columns(pl.lit(True).alias("is_private"))
    try:
        with caplog.at_level(logging.DEBUG):
            rows = connector.read(ANN, ANN, WS, WE).events
            connector.apply(private_write)
    finally:
        connector.close()
    assert {"Dentist: root canal", "Board meeting"} <= set(rows["subject"].to_list())  # the read itself is whole
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("exchangelib"))
    assert "Board meeting" in text and "[redacted]" in text  # the dumps are there, and redacted
    for secret in ("Dentist", "root canal", "the molar", "dr.smile@clinic.example", "Lawyer", "divorce",
                   password, base64.b64encode(f"{user}:{password}".encode()).decode()):
        assert secret not in text, f"{secret!r} is in exchangelib's DEBUG log"
