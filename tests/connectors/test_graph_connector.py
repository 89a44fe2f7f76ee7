"""GraphConnector: the pure shaping and planning (no server). The connector against the Graph sandbox is
covered by the mailbox contract suite (tests/connectors/test_mailbox_contract.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from connectors.graph import (
    EXTERNALS_PROPERTY,
    ItemProblem,
    changed_fields,
    content_of,
    error_of,
    event_to_row,
    externals_of,
    graph_instant,
    graph_start_end,
    meeting_uid_of,
    split_invitees,
)

UTC = timezone.utc
ANN = "ann@example.com"


def _event(**over) -> dict:
    # Shaped like the calendarView response example of
    # https://learn.microsoft.com/en-us/graph/api/user-list-calendarview (Prefer: outlook.timezone="UTC").
    ev = {
        "@odata.etag": 'W/"ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="',
        "id": "AAMkAGI2TG93AAA=",
        "changeKey": "ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw==",
        "subject": "Review",
        "body": {"contentType": "text", "content": "Agenda\r\nitems\r\n"},
        "start": {"dateTime": "2026-12-03T10:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-03T11:30:00.0000000", "timeZone": "UTC"},
        "isAllDay": False,
        "sensitivity": "normal",
        "organizer": {"emailAddress": {"name": "Ann", "address": "Ann@Example.com"}},
        "attendees": [
            {"type": "required", "status": {"response": "tentativelyAccepted", "time": "2026-12-01T10:00:00Z"},
             "emailAddress": {"name": "Carol", "address": "carol@customer.example"}},
            {"type": "optional", "status": {"response": "notResponded", "time": "0001-01-01T00:00:00Z"},
             "emailAddress": {"name": "Ann", "address": "ann@example.com"}},
        ],
        "lastModifiedDateTime": "2026-12-01T09:15:27.6232305Z",
        "iCalUId": "040000008200E00074C5B7101A82E00800000000D939773EA578D801000000000000000010000000",
        "uid": "040000008200E00074C5B7101A82E00800000000D939773EA578D801000000000000000010000000",
        "type": "singleInstance",
    }
    ev.update(over)
    return ev


def test_timed_event_becomes_a_canonical_row():
    row = event_to_row(_event(), user_key="Ann@Example.com", mailbox="ann@example.com")
    assert row["start"] == datetime(2026, 12, 3, 10, tzinfo=UTC) and row["end"] == datetime(2026, 12, 3, 11, 30, tzinfo=UTC)
    assert row["user_key"] == ANN and row["version"] == "ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="
    assert row["description"] == "Agenda\nitems"  # line ends normalised, trailing break dropped
    assert row["organizer_email"] == ANN
    # the organizer is not an invitee of her own meeting; responses map to the canonical vocabulary
    assert row["invitees"] == [{"email": "carol@customer.example", "response": "tentative", "record_id": None,
                                "record_type": "none"}]
    assert row["last_modified"] == datetime(2026, 12, 1, 9, 15, 27, 623230, tzinfo=UTC)
    assert row["meeting_uid"].startswith("040000008200E000") and not row["is_private"]


def test_all_day_dates_are_taken_as_they_come_whatever_the_zone_label():
    # Graph returns all-day events as midnight of their dates, labelled with the requested zone.
    ev = _event(isAllDay=True, start={"dateTime": "2026-12-24T00:00:00.0000000", "timeZone": "UTC"},
                end={"dateTime": "2026-12-26T00:00:00.0000000", "timeZone": "UTC"})
    row = event_to_row(ev, user_key=ANN, mailbox=ANN)
    assert (row["start"], row["end"]) == (datetime(2026, 12, 24, tzinfo=UTC), datetime(2026, 12, 26, tzinfo=UTC))
    ev["start"]["timeZone"] = ev["end"]["timeZone"] = "Pacific Standard Time"
    assert event_to_row(ev, user_key=ANN, mailbox=ANN)["start"] == datetime(2026, 12, 24, tzinfo=UTC)


def test_a_zone_other_than_utc_is_converted():
    assert graph_instant({"dateTime": "2026-07-01T09:00:00.0000000", "timeZone": "W. Europe Standard Time"},
                         "start") == datetime(2026, 7, 1, 7, tzinfo=UTC)
    assert graph_instant({"dateTime": "2026-01-01T09:00:00", "timeZone": "America/New_York"},
                         "start") == datetime(2026, 1, 1, 14, tzinfo=UTC)
    with pytest.raises(ItemProblem, match="unknown_time_zone"):
        graph_instant({"dateTime": "2026-01-01T09:00:00", "timeZone": "Mars/Olympus"}, "start")
    with pytest.raises(ItemProblem, match="no_start"):
        event_to_row(_event(start=None), user_key=ANN, mailbox=ANN)


def test_private_and_confidential_are_private():
    for s, private in (("private", True), ("confidential", True), ("personal", False), ("normal", False)):
        assert event_to_row(_event(sensitivity=s), user_key=ANN, mailbox=ANN)["is_private"] is private


def test_occurrence_uid_matches_what_ews_builds():
    ev = _event(type="occurrence", iCalUId="040000008200E00074C5B7101A82E00807EA0C03D939", seriesMasterId="AAMkMaster",
                originalStart="2026-12-03T10:00:00Z")
    assert meeting_uid_of(ev) == f"{ev['uid']}/2026-12-03T10:00:00Z"
    # without the series uid, the per-occurrence iCalUId still keeps occurrences apart
    assert meeting_uid_of({**ev, "uid": None}) == ev["iCalUId"]
    assert meeting_uid_of(_event()) == _event()["uid"]


def test_recorded_externals_are_invitees_without_a_response():
    ev = _event(singleValueExtendedProperties=[{"id": EXTERNALS_PROPERTY, "value": json.dumps(["frank@prospect.example",
                                                                                               "carol@customer.example"])}])
    assert externals_of(ev) == ["frank@prospect.example", "carol@customer.example"]
    emails = [(i["email"], i["response"]) for i in event_to_row(ev, user_key=ANN, mailbox=ANN)["invitees"]]
    # carol is an attendee already (her response kept), frank only recorded
    assert emails == [("carol@customer.example", "tentative"), ("frank@prospect.example", "none")]
    assert externals_of(_event(singleValueExtendedProperties=[{"id": EXTERNALS_PROPERTY, "value": "not json"}])) == []


def test_split_invitees_follows_c24():
    emails = ["bob@example.com", "carol@customer.example", "dan@partner.example"]
    internal = {"bob@example.com"}
    assert split_invitees(emails, internal, False) == (["bob@example.com"], ["carol@customer.example",
                                                                             "dan@partner.example"])
    assert split_invitees(emails, internal, True) == (emails, [])
    # an external a person already made an attendee stays one; calsync never adds one without the opt-in
    assert split_invitees(emails, internal, False, attendees_now=["dan@partner.example"]) == (
        ["bob@example.com", "dan@partner.example"], ["carol@customer.example"])


def test_writes_carry_the_mailbox_zone_and_exclusive_all_day_ends():
    start, end = datetime(2026, 7, 1, 7, tzinfo=UTC), datetime(2026, 7, 1, 8, tzinfo=UTC)
    assert graph_start_end(start, end, False, "Europe/Berlin") == (
        {"dateTime": "2026-07-01T09:00:00", "timeZone": "Europe/Berlin"},
        {"dateTime": "2026-07-01T10:00:00", "timeZone": "Europe/Berlin"})
    day = datetime(2026, 12, 24, tzinfo=UTC)
    assert graph_start_end(day, day + timedelta(days=2), True, "America/New_York") == (
        {"dateTime": "2026-12-24T00:00:00", "timeZone": "America/New_York"},
        {"dateTime": "2026-12-26T00:00:00", "timeZone": "America/New_York"})
    with pytest.raises(ValueError, match="end_before_start"):
        graph_start_end(day, day, True, "UTC")
    with pytest.raises(ValueError, match="end_before_start"):
        graph_start_end(end, start, False, "UTC")


def test_only_the_fields_that_differ_are_written():
    row = event_to_row(_event(), user_key=ANN, mailbox=ANN)
    delta = {"subject": "Review", "start": row["start"], "end": row["end"], "is_all_day": False,
             "description": "Agenda\nitems  \n", "is_private": False}
    assert changed_fields(row, delta) == []  # trailing whitespace is not a difference
    assert changed_fields(row, {**delta, "subject": "Review!"}) == ["subject"]
    assert changed_fields(row, {**delta, "end": row["end"] + timedelta(minutes=15)}) == ["start", "end", "isAllDay"]
    assert changed_fields(row, {**delta, "is_private": True}) == ["sensitivity"]
    body = content_of({**delta, "is_private": True}, "UTC")
    assert body["sensitivity"] == "private" and body["body"] == {"contentType": "text", "content": "Agenda\nitems  \n"}


def test_error_bodies_are_read_from_responses_and_batch_answers():
    # The error shape of https://learn.microsoft.com/en-us/graph/errors
    answer = {"id": "1", "status": 404, "body": {"error": {"code": "ErrorItemNotFound",
                                                            "message": "The specified object was not found in the store."}}}
    assert error_of(answer) == (404, "ErrorItemNotFound", "The specified object was not found in the store.")
    assert error_of({"id": "2", "status": 502, "body": None}) == (502, "HTTP502", "")



# --------------------------------------------------------------------------- against the Graph sandbox


from connectors.errors import FatalError, RetriableError  # noqa: E402
from connectors.graph import GraphConnector  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from tests.connectors.mail_builders import email_deltas, inv  # noqa: E402

BOB, CAL, CUST = "bob@example.com", "cal@example.com", "carol@customer.example"
WS, WE = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC)


def u(*parts):
    return datetime(*parts, tzinfo=UTC)


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    with Sandbox(tmp_path_factory.mktemp("graph")) as box:
        yield box


@pytest.fixture
def org(sb):
    sb.reset()
    sb.graph.reset_settings()
    sb.clock.set(u(2024, 5, 2, 12))
    for m in (ANN, BOB, CAL):
        sb.org.add_mailbox(m, time_zone="Europe/Berlin" if m == ANN else "UTC", kind="graph")
    return sb.org


def connector(sb, **kw):
    g = sb.graph
    kw.setdefault("certificate_pem", g.certificate_file.read_text())
    kw.setdefault("max_wait_s", 2)
    kw.setdefault("ca_file", str(g.ca_file))
    return GraphConnector(g.tenant_id, g.client_id, authority_host=g.login_url, graph_url=g.graph_url,
                          internal_domains=["example.com"], **kw)


@pytest.fixture
def conn(sb, org):
    c = connector(sb)
    yield c
    c.close()




def test_a_client_secret_works_too(sb, org):
    org.add_item(ANN, "Hello", u(2024, 5, 6, 9), u(2024, 5, 6, 10))
    with connector(sb, certificate_pem=None, client_secret=sb.graph.client_secret) as c:
        assert c.read(ANN, ANN, WS, WE).events["subject"].to_list() == ["Hello"]


def test_a_refused_credential_is_fatal_and_never_echoes_the_secret(sb, org):
    with connector(sb, certificate_pem=None, client_secret="not-the-secret~x") as c:
        with pytest.raises(FatalError) as err:
            c.read(ANN, ANN, WS, WE)
    text = str(err.value)
    assert "AADSTS7000215" in text and sb.graph.client_id in text and sb.graph.tenant_id in text
    assert "not-the-secret" not in text


def test_an_expired_token_is_renewed_without_failing_the_run(sb, org, conn):
    org.add_item(ANN, "Hello", u(2024, 5, 6, 9), u(2024, 5, 6, 10))
    assert conn.read(ANN, ANN, WS, WE).events.height == 1
    first = len(sb.graph.identity.token_requests)
    sb.clock.advance(timedelta(hours=2))  # the sandbox judges tokens on its own clock: this one is expired
    assert conn.read(ANN, ANN, WS, WE).events.height == 1
    assert len(sb.graph.identity.token_requests) == first + 1  # one 401, one fresh token, the read goes on


def test_a_mailbox_outside_the_apps_scope_is_refused_alone(sb, org, conn):
    org.add_item(BOB, "Bob's", u(2024, 5, 6, 9), u(2024, 5, 6, 10))
    sb.graph.set_mailbox_scope([BOB])
    with pytest.raises(FatalError, match=f"may not open mailbox {ANN}.*scope"):
        conn.read(ANN, ANN, WS, WE)
    assert conn.read(BOB, BOB, WS, WE).events["subject"].to_list() == ["Bob's"]
    out = conn.apply(email_deltas({"delta_id": "c", "op": "create", "subject": "x", "start": u(2024, 5, 7, 9),
                             "end": u(2024, 5, 7, 10)}))
    assert out["status"].to_list() == ["failed"] and out["error"][0].startswith("mailbox_access")


def test_an_on_premises_mailbox_says_to_use_ews(sb, org, conn):
    org.add_mailbox("onprem@example.com", kind="ews")
    with pytest.raises(FatalError, match='mailbox_kind = "ews"'):
        conn.read("onprem@example.com", "onprem@example.com", WS, WE)


def test_an_unreachable_graph_is_retriable_and_names_the_url(sb, org):
    c = connector(sb)
    c.http.base = "https://127.0.0.1:1/v1.0"  # nothing listens there
    with pytest.raises(RetriableError, match=r"127\.0\.0\.1:1.*refused the connection") as err:
        c.read(ANN, ANN, WS, WE)
    assert "replay" not in str(err.value)  # a failed read has nothing to replay


def test_a_certificate_that_fails_verification_is_fatal_and_says_what_to_check(sb, org):
    with connector(sb, ca_file=None) as c:  # the system's CAs do not know the sandbox's certificate
        with pytest.raises(FatalError, match="TLS certificate.*failed verification.*authority_host"):
            c.read(ANN, ANN, WS, WE)


def test_c24_externals_follow_salesforce_on_updates_without_being_mailed(sb, org, conn):
    created = conn.apply(email_deltas({"delta_id": "c", "op": "create", "subject": "Renewal", "start": u(2024, 5, 8, 9),
                                 "end": u(2024, 5, 8, 10), "invitees": [inv(BOB, "user"), inv(CUST)]}))
    item_id = created["new_id"][0]
    [row] = conn.read(ANN, ANN, WS, WE).events.to_dicts()
    assert sorted(i["email"] for i in row["invitees"]) == [BOB, CUST]
    assert [i["recipient"] for i in org.invitations()] == [BOB]
    # a second external is added in Salesforce, the first removed: the record follows, nobody external mailed
    out = conn.apply(email_deltas({"delta_id": "u", "op": "update", "target_id": item_id, "target_version": row["version"],
                             "subject": "Renewal", "start": row["start"], "end": row["end"],
                             "invitees": [inv(BOB, "user"), inv("dan@partner.example")]}))
    assert out["status"].to_list() == ["applied"], out
    [after] = conn.read(ANN, ANN, WS, WE).events.to_dicts()
    assert sorted(i["email"] for i in after["invitees"]) == [BOB, "dan@partner.example"]
    assert {i["recipient"] for i in org.invitations()} == {BOB}
    [raw] = org.items(ANN)
    assert [a["email"] for a in raw["required_attendees"]] == [BOB]


def test_a_replayed_create_makes_no_second_event(sb, org, conn):
    """A lost reply: the same delta is applied again (its transactionId is the delta id)."""
    d = email_deltas({"delta_id": "0123abcd", "op": "create", "subject": "Once", "start": u(2024, 5, 8, 9),
                "end": u(2024, 5, 8, 10), "invitees": [inv(BOB, "user")]})
    sb.faults.add("drop_after_write", count=1, route="POST /v1.0/users")
    lost = conn.apply(d)
    assert lost["status"].to_list() == ["failed"] and lost["retriable"][0]
    again = conn.apply(d)
    assert again["status"].to_list() == ["applied"]
    assert [i["subject"] for i in org.items(ANN)] == ["Once"]
    assert [i["recipient"] for i in org.invitations()] == [BOB]  # and Bob was invited once


def test_a_batch_is_one_call_and_twenty_requests_at_most(sb, org, conn):
    before = sb.graph.calls()
    out = conn.apply(email_deltas(*({"delta_id": f"c{i:02d}", "op": "create", "subject": f"E{i}", "start": u(2024, 5, 8, 9),
                               "end": u(2024, 5, 8, 10)} for i in range(25))))
    assert out["status"].to_list() == ["applied"] * 25
    assert sb.graph.calls() - before == 2 == conn.api_calls  # two $batch calls (20 + 5); tokens not counted
    assert len(org.items(ANN)) == 25


def test_one_connector_never_exceeds_graphs_concurrency_per_mailbox(sb, org, conn):
    """Eight threads reading one mailbox through one connector are never throttled for concurrency; eight
    connectors doing the same are (the sandbox enforces the 4 concurrent requests per mailbox)."""
    from concurrent.futures import ThreadPoolExecutor

    org.add_item(ANN, "Busy", u(2024, 5, 6, 9), u(2024, 5, 6, 10))
    sb.graph.latency_s = 0.3  # every request takes a while, so requests overlap
    with ThreadPoolExecutor(8) as pool:
        heights = list(pool.map(lambda _: conn.read(ANN, ANN, WS, WE).events.height, range(8)))
    assert heights == [1] * 8 and sb.graph.throttle.throttled == 0
    others = [connector(sb, max_wait_s=0) for _ in range(8)]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: c.read(ANN, ANN, WS, WE), others))
    except RetriableError:
        pass  # some of them were refused (429) and had no patience left
    finally:
        for c in others:
            c.close()
    assert sb.graph.throttle.throttled > 0


def test_an_unknown_tenant_is_fatal_and_names_it(sb, org):
    g = sb.graph
    with GraphConnector("no-such-tenant.example", g.client_id, client_secret=g.client_secret,
                        authority_host=g.login_url, graph_url=g.graph_url, ca_file=str(g.ca_file)) as c:
        with pytest.raises(FatalError, match="tenant no-such-tenant.example.*tenant_id"):
            c.read(ANN, ANN, WS, WE)


def test_debug_logs_carry_no_credentials_tokens_or_private_details(sb, org, caplog):
    """Everything a Graph sync logs at DEBUG (the connector, msal, urllib3): no secret, no token, nothing of a
    private event but its id."""
    import logging

    org.add_item(ANN, "Dentist: root canal", u(2024, 5, 6, 8), u(2024, 5, 6, 9), body="the molar, left",
                 sensitivity="Private", required_attendees=["dr.smile@clinic.example"])
    with caplog.at_level(logging.DEBUG):
        with connector(sb, certificate_pem=None, client_secret=sb.graph.client_secret) as c:
            rows = c.read(ANN, ANN, WS, WE).events
            c.apply(email_deltas({"delta_id": "p", "op": "create", "subject": "Lawyer: divorce papers",
                                  "description": "custody", "is_private": True, "start": u(2024, 5, 9, 9),
                                  "end": u(2024, 5, 9, 10)}))
            token = c.http.token()
    assert "Dentist: root canal" in rows["subject"].to_list()  # the read itself is whole
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "calendarView" in text  # the requests are logged...
    for secret in ("Dentist", "root canal", "the molar", "dr.smile@clinic.example", "Lawyer", "divorce", "custody",
                   sb.graph.client_secret, token):
        assert secret not in text, f"{secret[:12]!r} is in the DEBUG log"  # ...and nothing else
