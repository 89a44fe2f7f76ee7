"""ExchangeConnector: pure shaping/planning tests (no server), then integration tests against the
EWS sandbox through the real exchangelib (skipped until ``sandbox.exchange`` exposes ExchangeSandbox)."""

from __future__ import annotations

import datetime as dt
import warnings
from types import SimpleNamespace

import pytest
from exchangelib import CalendarItem, EWSDate, EWSDateTime, EWSTimeZone, Version
from exchangelib.items import SEND_TO_ALL_AND_SAVE_COPY, SEND_TO_CHANGED_AND_SAVE_COPY, SEND_TO_NONE
from exchangelib.properties import Attendee, Body, HTMLBody, Mailbox
from exchangelib.util import xml_to_str
from exchangelib.version import EXCHANGE_2016
from lxml import etree

from connectors.exchange import (
    ItemProblem,
    Step,
    attendee_lists,
    ews_start_end,
    item_to_row,
    meeting_uid_of,
    normalise_subject,
    overlaps,
    plan_create,
    plan_delete_send,
    plan_update,
    response_of,
    rows_to_frame,
    text_of,
)
from transforms.schema import EVENT_SCHEMA

UTC = dt.timezone.utc
T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
BERLIN = EWSTimeZone("Europe/Berlin")


def parse(inner: str) -> CalendarItem:
    """A CalendarItem exactly as exchangelib builds it from an EWS GetItem response."""
    xml = f'<t:CalendarItem xmlns:t="{T_NS}"><t:ItemId Id="ID1" ChangeKey="CK1"/>{inner}</t:CalendarItem>'
    return CalendarItem.from_xml(etree.fromstring(xml), account=None)


def att(email: str, response: str = "Unknown") -> Attendee:
    return Attendee(mailbox=Mailbox(email_address=email), response_type=response)


def u(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# ----------------------------------------------------------------------------- reading


def test_timed_item_becomes_a_canonical_row_with_invitees_and_responses():
    item = parse(
        "<t:Subject>Review</t:Subject><t:Sensitivity>Normal</t:Sensitivity>"
        "<t:Body BodyType=\"Text\">Agenda\r\nline two\r\n</t:Body>"
        "<t:LastModifiedTime>2024-05-01T08:00:00Z</t:LastModifiedTime>"
        "<t:UID>UID-1</t:UID><t:Start>2024-05-10T09:00:00Z</t:Start><t:End>2024-05-10T10:00:00Z</t:End>"
        "<t:IsAllDayEvent>false</t:IsAllDayEvent><t:CalendarItemType>Single</t:CalendarItemType>"
        "<t:Organizer><t:Mailbox><t:EmailAddress>Alice@Example.com</t:EmailAddress></t:Mailbox></t:Organizer>"
        "<t:RequiredAttendees>"
        "<t:Attendee><t:Mailbox><t:EmailAddress>alice@example.com</t:EmailAddress></t:Mailbox><t:ResponseType>Organizer</t:ResponseType></t:Attendee>"
        "<t:Attendee><t:Mailbox><t:EmailAddress>Bob@Customer.com</t:EmailAddress></t:Mailbox><t:ResponseType>Accept</t:ResponseType></t:Attendee>"
        "<t:Attendee><t:Mailbox><t:EmailAddress>carol@example.com</t:EmailAddress></t:Mailbox><t:ResponseType>Decline</t:ResponseType></t:Attendee>"
        "</t:RequiredAttendees><t:OptionalAttendees>"
        "<t:Attendee><t:Mailbox><t:EmailAddress>dan@customer.com</t:EmailAddress></t:Mailbox><t:ResponseType>Tentative</t:ResponseType></t:Attendee>"
        "<t:Attendee><t:Mailbox><t:EmailAddress>erin@customer.com</t:EmailAddress></t:Mailbox><t:ResponseType>NoResponseReceived</t:ResponseType></t:Attendee>"
        "</t:OptionalAttendees>"
    )
    row = item_to_row(item, user_key="Alice@Example.com", mailbox="alice@example.com")
    assert row["side"] == "email" and row["user_key"] == "alice@example.com"
    assert (row["native_id"], row["version"]) == ("ID1", "CK1")
    assert (row["start"], row["end"], row["is_all_day"]) == (u(2024, 5, 10, 9), u(2024, 5, 10, 10), False)
    assert row["description"] == "Agenda\nline two"
    assert row["organizer_email"] == "alice@example.com"
    assert row["last_modified"] == u(2024, 5, 1, 8)
    assert [(i["email"], i["response"]) for i in row["invitees"]] == [
        ("bob@customer.com", "accepted"),
        ("carol@example.com", "declined"),
        ("dan@customer.com", "tentative"),
        ("erin@customer.com", "none"),
    ]
    assert all(i["record_id"] is None and i["record_type"] == "none" for i in row["invitees"])
    assert row["meeting_uid"] == "UID-1" and row["is_child"] is False and row["is_private"] is False
    frame = rows_to_frame([row])
    assert frame.schema == EVENT_SCHEMA and frame.height == 1


def test_all_day_item_in_a_berlin_mailbox_keeps_its_dates_with_exclusive_end():
    # Exchange stores a 10-11 May all-day event in Berlin as 9 May 22:00Z .. 11 May 22:00Z.
    item = parse(
        "<t:Subject>Trade fair</t:Subject><t:Start>2024-05-09T22:00:00Z</t:Start><t:End>2024-05-11T22:00:00Z</t:End>"
        '<t:IsAllDayEvent>true</t:IsAllDayEvent><t:StartTimeZone Id="W. Europe Standard Time"/>'
        '<t:EndTimeZone Id="W. Europe Standard Time"/>'
    )
    row = item_to_row(item, user_key="a@example.com", mailbox="a@example.com")
    assert (row["start"], row["end"], row["is_all_day"]) == (u(2024, 5, 10), u(2024, 5, 12), True)


def test_all_day_item_with_an_unknown_time_zone_is_a_problem_not_a_guess():
    with pytest.warns(UserWarning):
        item = parse(
            "<t:Start>2024-05-09T22:00:00Z</t:Start><t:End>2024-05-10T22:00:00Z</t:End>"
            '<t:IsAllDayEvent>true</t:IsAllDayEvent><t:StartTimeZone Id="Mars Standard Time"/>'
        )
    with pytest.raises(ItemProblem, match="unknown_time_zone"):
        item_to_row(item, user_key="a@example.com", mailbox="a@example.com")


def test_item_without_start_is_a_problem():
    with pytest.raises(ItemProblem, match="no_start"):
        item_to_row(parse("<t:Subject>x</t:Subject>"), user_key="a@x.com", mailbox="a@x.com")


@pytest.mark.parametrize("sensitivity,private", [("Private", True), ("Confidential", True), ("Personal", False), ("Normal", False)])
def test_private_means_sensitivity_private_or_confidential(sensitivity, private):
    item = parse(
        f"<t:Sensitivity>{sensitivity}</t:Sensitivity><t:Start>2024-05-10T09:00:00Z</t:Start><t:End>2024-05-10T10:00:00Z</t:End>"
    )
    assert item_to_row(item, user_key="a@x.com", mailbox="a@x.com")["is_private"] is private


def test_occurrences_of_a_series_get_distinct_meeting_uids():
    occ = parse(
        "<t:UID>SERIES</t:UID><t:Start>2024-05-10T09:00:00Z</t:Start><t:End>2024-05-10T10:00:00Z</t:End>"
        "<t:OriginalStart>2024-05-10T09:00:00Z</t:OriginalStart><t:CalendarItemType>Occurrence</t:CalendarItemType>"
    )
    assert meeting_uid_of(occ) == "SERIES/2024-05-10T09:00:00Z"
    moved = parse(
        "<t:UID>SERIES</t:UID><t:Start>2024-05-17T15:00:00Z</t:Start><t:End>2024-05-17T16:00:00Z</t:End>"
        "<t:OriginalStart>2024-05-17T09:00:00Z</t:OriginalStart><t:CalendarItemType>Exception</t:CalendarItemType>"
    )
    assert meeting_uid_of(moved) == "SERIES/2024-05-17T09:00:00Z"  # stable although the time moved


def test_response_mapping_and_body_text():
    assert [response_of(r) for r in ("Accept", "Decline", "Tentative", "Unknown", "NoResponseReceived", "Organizer", None)] == [
        "accepted", "declined", "tentative", "none", "none", "none", "none"
    ]
    assert text_of(SimpleNamespace(text_body=None, body=HTMLBody("<p>Hi</p><p>there<br/>you</p>"))) == "Hi\nthere\nyou"
    assert text_of(SimpleNamespace(text_body=None, body=None)) == ""
    assert text_of(SimpleNamespace(text_body="a\r\nb \r\n", body=Body("ignored"))) == "a\nb"


def test_window_overlap_is_strict_at_both_edges():
    ws, we = u(2024, 5, 1), u(2024, 6, 1)
    assert not overlaps({"start": u(2024, 4, 30, 23), "end": ws}, ws, we)  # ends exactly at the start
    assert overlaps({"start": u(2024, 4, 30, 23), "end": u(2024, 5, 1, 0, 1)}, ws, we)
    assert not overlaps({"start": we, "end": u(2024, 6, 1, 1)}, ws, we)  # starts exactly at the end
    assert overlaps({"start": u(2024, 4, 30), "end": ws + dt.timedelta(days=1)}, ws, we)


def test_subject_normalisation_follows_c3():
    assert normalise_subject("  Big   deal \t review ") == "Big deal review"


# ----------------------------------------------------------------------------- writing


def test_all_day_write_uses_inclusive_end_date_for_exchangelib():
    start, end = ews_start_end(u(2024, 5, 10), u(2024, 5, 12), True, BERLIN)
    assert (start, end) == (EWSDate(2024, 5, 10), EWSDate(2024, 5, 11))
    # ... which exchangelib sends as local midnights with an exclusive end, in the mailbox's zone.
    version = Version(build=EXCHANGE_2016)
    item = CalendarItem(subject="x", start=start, end=end, is_all_day=True)
    item.account = SimpleNamespace(default_timezone=BERLIN, version=version)  # exchangelib's account attributes
    xml = xml_to_str(item.to_xml(version=version))
    assert "<t:Start>2024-05-10T00:00:00+02:00</t:Start>" in xml
    assert "<t:End>2024-05-12T00:00:00+02:00</t:End>" in xml
    assert 'StartTimeZone Id="W. Europe Standard Time"' in xml


def test_timed_write_keeps_the_instant_in_the_mailbox_zone():
    start, end = ews_start_end(u(2024, 3, 31, 0, 30), u(2024, 3, 31, 1, 30), False, BERLIN)  # across the DST switch
    assert isinstance(start, EWSDateTime) and start.tzinfo == BERLIN
    assert start.timestamp() == u(2024, 3, 31, 0, 30).timestamp() and end.timestamp() == u(2024, 3, 31, 1, 30).timestamp()
    assert (start.hour, end.hour) == (1, 3)


def test_attendee_lists_keep_existing_objects_and_optional_membership():
    kept = att("bob@c.com", "Accept")
    opt = att("dan@c.com", "Tentative")
    required, optional = attendee_lists(["bob@c.com", "new@c.com", "dan@c.com"], [kept], [opt])
    assert required[0] is kept and required[1].mailbox.email_address == "new@c.com"
    assert optional == [opt]


INTERNAL = {"bea@example.com", "cal@example.com"}


def test_plan_create_sends_only_to_internal_attendees():
    assert plan_create([], INTERNAL, False) == [Step((), True, SEND_TO_NONE)]
    assert plan_create(["x@cust.com"], INTERNAL, False) == [Step(("x@cust.com",), True, SEND_TO_NONE)]
    assert plan_create(["bea@example.com"], INTERNAL, False) == [Step(("bea@example.com",), True, SEND_TO_ALL_AND_SAVE_COPY)]
    assert plan_create(["x@cust.com", "bea@example.com"], INTERNAL, False) == [
        Step(("bea@example.com",), True, SEND_TO_ALL_AND_SAVE_COPY),
        Step(("x@cust.com", "bea@example.com"), False, SEND_TO_NONE),
    ]
    assert plan_create(["x@cust.com", "bea@example.com"], INTERNAL, True) == [
        Step(("x@cust.com", "bea@example.com"), True, SEND_TO_ALL_AND_SAVE_COPY)
    ]


def test_plan_update_reaches_internal_attendees_without_mailing_externals():
    cur = ["x@cust.com", "bea@example.com"]
    # a content change on a mixed meeting: strip externals silently, send to internals, re-add silently
    assert plan_update(cur, None, INTERNAL, False, True) == [
        Step(("bea@example.com",), False, SEND_TO_NONE),
        Step(("bea@example.com",), True, SEND_TO_ALL_AND_SAVE_COPY),
        Step(tuple(cur), False, SEND_TO_NONE),
    ]
    # external-only meeting: one silent write
    assert plan_update(["x@cust.com"], ["x@cust.com", "y@cust.com"], INTERNAL, False, True) == [
        Step(("x@cust.com", "y@cust.com"), True, SEND_TO_NONE)
    ]
    # adding an internal attendee without a content change: only the changed attendees hear of it
    assert plan_update(["bea@example.com"], ["bea@example.com", "cal@example.com"], INTERNAL, False, False) == [
        Step(("bea@example.com", "cal@example.com"), True, SEND_TO_CHANGED_AND_SAVE_COPY)
    ]
    # opted in: everyone gets the update in one call
    assert plan_update(cur, None, INTERNAL, True, True) == [Step(None, True, SEND_TO_ALL_AND_SAVE_COPY)]


def test_plan_delete_cancels_for_internal_attendees_only():
    assert plan_delete_send([], INTERNAL, False, True) == (False, SEND_TO_NONE)
    assert plan_delete_send(["x@cust.com"], INTERNAL, False, True) == (False, SEND_TO_NONE)
    assert plan_delete_send(["bea@example.com"], INTERNAL, False, True) == (False, SEND_TO_ALL_AND_SAVE_COPY)
    assert plan_delete_send(["x@cust.com", "bea@example.com"], INTERNAL, False, True) == (True, SEND_TO_ALL_AND_SAVE_COPY)
    assert plan_delete_send(["x@cust.com"], INTERNAL, True, True) == (False, SEND_TO_ALL_AND_SAVE_COPY)
    assert plan_delete_send(["bea@example.com"], INTERNAL, False, False) == (False, SEND_TO_NONE)  # not ours to cancel


# ============================================================================= against the EWS sandbox

import time  # noqa: E402

import polars as pl  # noqa: E402

from connectors.errors import FatalError  # noqa: E402
from connectors.exchange import ExchangeConnector  # noqa: E402
from tests.connectors.mail_builders import by_subject, email_deltas, inv  # noqa: E402
from transforms.schema import DELTA_SCHEMA, OUTCOME_SCHEMA, conform  # noqa: E402

sandbox_exchange = pytest.importorskip("sandbox.exchange")
from sandbox.clock import Clock  # noqa: E402
from sandbox.faults import Faults  # noqa: E402

ANN, BOB, CAL = "ann@example.com", "bob@example.com", "cal@example.com"
CUST, CUST2 = "x@customer.com", "y@customer.com"
WS, WE = u(2024, 5, 1), u(2024, 7, 1)


@pytest.fixture(scope="module")
def ex():
    clock, faults = Clock(), Faults()
    clock.set(u(2024, 5, 2, 12))
    with sandbox_exchange.ExchangeSandbox(clock, faults) as server:
        yield server


@pytest.fixture
def org(ex):
    ex.org.reset()
    ex.faults.clear()
    ex.org.add_mailbox(ANN, time_zone="Europe/Berlin")
    ex.org.add_mailbox(BOB)
    ex.org.add_mailbox(CAL)
    return ex.org


@pytest.fixture
def conn(ex, org):
    user, password = ex.service_account
    c = ExchangeConnector(ex.url, user, password, max_wait_s=2, time_zones={ANN: "Europe/Berlin"})
    yield c
    c.close()


def extract(conn, confirm=None, **kw):
    return conn.extract({ANN: ANN}, WS, WE, confirm_ids=confirm, **kw)





def test_extract_window_edges_all_day_private_and_responses(conn, org):
    org.add_item(ANN, "ends at window start", u(2024, 4, 30, 23), WS)
    org.add_item(ANN, "starts at window end", WE, u(2024, 7, 1, 1))
    org.add_item(ANN, "crosses start", u(2024, 4, 30, 23), u(2024, 5, 1, 1))
    org.add_item(ANN, "crosses end", u(2024, 6, 30, 23), u(2024, 7, 1, 1))
    # Berlin dates: 30 Apr is outside (its UTC span still touches 1 May 00:00-ish), 1 May is inside.
    org.add_item(ANN, "all-day 30 Apr", dt.date(2024, 4, 30), dt.date(2024, 5, 1), is_all_day=True)
    org.add_item(ANN, "all-day 1-2 May", dt.date(2024, 5, 1), dt.date(2024, 5, 3), is_all_day=True)
    org.add_item(ANN, "secret", u(2024, 5, 6, 9), u(2024, 5, 6, 10), sensitivity="Private", body="hush")
    mid = org.add_item(ANN, "meeting", u(2024, 5, 7, 9), u(2024, 5, 7, 10), body="Agenda",
                       required_attendees=[BOB, "Y@Customer.com"], optional_attendees=[CUST])
    org.set_response(ANN, mid, BOB, "Accept")
    org.set_response(ANN, mid, CUST, "Tentative")
    rows = by_subject(extract(conn))
    assert set(rows) == {"crosses start", "crosses end", "all-day 1-2 May", "secret", "meeting"}
    assert (rows["all-day 1-2 May"]["start"], rows["all-day 1-2 May"]["end"]) == (u(2024, 5, 1), u(2024, 5, 3))
    assert rows["secret"]["is_private"] is True and rows["secret"]["description"] == "hush"
    m = rows["meeting"]
    assert m["organizer_email"] == ANN and m["mailbox"] == ANN and m["side"] == "email"
    assert {i["email"]: i["response"] for i in m["invitees"]} == {BOB: "accepted", CUST2: "none", CUST: "tentative"}
    assert conn.last_problems == []


def test_extract_keeps_control_characters_and_every_other_item_intact(conn, org):
    # EWS writes a control character as a character reference; libxml2's recovering parser then drops every
    # &amp;/&lt; of the rest of the reply -- "R&D" became "RD" in the other items of the same GetItem batch
    org.add_item(ANN, "Budget\x0b2027\x00", u(2024, 5, 6, 9), u(2024, 5, 6, 10), body="totals\x01\x1fdue")
    org.add_item(ANN, "R&D <review>", u(2024, 5, 7, 9), u(2024, 5, 7, 10), body='Q&A "quoted" & <b>bold</b>')
    rows = by_subject(extract(conn))
    assert set(rows) == {"Budget\x0b2027\x00", "R&D <review>"}
    assert rows["Budget\x0b2027\x00"]["description"] == "totals\x01\x1fdue"
    assert rows["R&D <review>"]["description"] == 'Q&A "quoted" & <b>bold</b>'


def test_extract_recurring_occurrences_confirm_ids_and_paging(ex, org):
    user, password = ex.service_account
    conn = ExchangeConnector(ex.url, user, password, max_wait_s=2, page_size=5, batch_size=4)
    try:
        series = org.add_item(ANN, "standup", u(2024, 5, 6, 8), u(2024, 5, 6, 8, 15),
                              recurrence={"pattern": "daily", "occurrences": 10}, required_attendees=[BOB])
        for day in range(8):
            org.add_item(ANN, f"single {day}", u(2024, 5, 6 + day, 12), u(2024, 5, 6 + day, 13))
        outside = org.add_item(ANN, "moved away", u(2024, 9, 1, 9), u(2024, 9, 1, 10))
        gone = org.add_item(ANN, "deleted", u(2024, 5, 20, 9), u(2024, 5, 20, 10))
        with org.lock:
            del org.mailboxes[ANN].items[gone]
        calls_before = org.calls()
        frame = extract(conn, confirm={ANN: [outside, gone]})
        assert org.calls() - calls_before > 3  # several view pages and GetItem chunks
        subjects = frame["subject"].to_list()
        assert subjects.count("standup") == 10 and sum(s.startswith("single") for s in subjects) == 8
        assert "moved away" in subjects and "deleted" not in subjects
        assert frame["native_id"].n_unique() == frame.height
        uids = frame.filter(pl.col("subject") == "standup")["meeting_uid"].to_list()
        assert len(set(uids)) == 10 and all("/2024-05-" in x for x in uids)
        assert series not in frame["native_id"].to_list()  # the master itself is not an event
    finally:
        conn.close()


def test_extract_reports_a_bad_item_and_keeps_the_others(conn, org):
    org.add_item(ANN, "good", u(2024, 5, 6, 9), u(2024, 5, 6, 10))
    bad = org.add_item(ANN, "odd zone", dt.date(2024, 5, 8), dt.date(2024, 5, 9), is_all_day=True,
                       time_zone="Mars Standard Time")
    with warnings.catch_warnings():  # exchangelib may warn of the unknown zone (once per process): not the point
        warnings.simplefilter("ignore")
        frame = extract(conn)
    assert frame["subject"].to_list() == ["good"]
    assert [(p[0], p[1], p[2].split(":")[0]) for p in conn.last_problems] == [(ANN, bad, "unknown_time_zone")]


def test_apply_create_update_delete_in_bulk_with_per_item_errors(conn, org):
    keep = org.add_item(ANN, "old title", u(2024, 5, 6, 9), u(2024, 5, 6, 10), body="old")
    doomed = org.add_item(ANN, "to delete", u(2024, 5, 7, 9), u(2024, 5, 7, 10))
    versions = dict(zip(extract(conn)["native_id"], extract(conn)["version"]))
    seen = []
    out = conn.apply(
        email_deltas(
            {"delta_id": "c1", "op": "create", "subject": "New timed", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10),
             "description": "made by sync"},
            {"delta_id": "c2", "op": "create", "subject": "Holiday", "start": u(2024, 5, 9), "end": u(2024, 5, 11),
             "is_all_day": True},
            {"delta_id": "c3", "op": "create", "subject": "Private", "start": u(2024, 5, 10, 9), "end": u(2024, 5, 10, 10),
             "is_private": True},
            {"delta_id": "u1", "op": "update", "target_id": keep, "target_version": versions[keep], "subject": "new title",
             "start": u(2024, 5, 6, 9), "end": u(2024, 5, 6, 11), "description": "new"},
            {"delta_id": "u2", "op": "update", "target_id": doomed + "x", "subject": "nope", "start": u(2024, 5, 6, 9),
             "end": u(2024, 5, 6, 10)},
            {"delta_id": "d1", "op": "delete", "target_id": doomed, "target_version": versions[doomed]},
            {"delta_id": "d2", "op": "delete", "target_id": doomed},  # gone by then: counts as applied
            {"delta_id": "p1", "op": "pair", "target_id": keep},
        ),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert out.schema == OUTCOME_SCHEMA and out["delta_id"].to_list() == ["c1", "c2", "c3", "u1", "u2", "d1", "d2", "p1"]
    status = {r["delta_id"]: r for r in out.to_dicts()}
    assert {k: v["status"] for k, v in status.items()} == {
        "c1": "applied", "c2": "applied", "c3": "applied", "u1": "applied", "u2": "failed",
        "d1": "applied", "d2": "applied", "p1": "applied",
    }
    assert status["u2"]["error"].startswith("Error") and status["u2"]["retriable"] is False
    assert seen[-1] == (8, 8) and len(seen) >= 3
    rows = by_subject(extract(conn))
    assert set(rows) == {"New timed", "Holiday", "Private", "new title"}
    assert rows["New timed"]["native_id"] == status["c1"]["new_id"]
    assert rows["New timed"]["version"] == status["c1"]["new_version"]
    assert rows["New timed"]["description"] == "made by sync"
    assert (rows["Holiday"]["start"], rows["Holiday"]["end"], rows["Holiday"]["is_all_day"]) == (u(2024, 5, 9), u(2024, 5, 11), True)
    raw = {i["subject"]: i for i in org.items(ANN)}
    assert raw["Holiday"]["start"] == "2024-05-08T22:00:00Z"  # local midnight in Berlin
    assert raw["Private"]["sensitivity"] == "Private"
    assert (rows["new title"]["end"], rows["new title"]["description"]) == (u(2024, 5, 6, 11), "new")
    assert rows["new title"]["version"] == status["u1"]["new_version"]


def test_invitations_reach_internal_mailboxes_only_unless_opted_in(conn, org):
    meeting = {"op": "create", "subject": "Kickoff", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10),
               "invitees": [inv(BOB, "user"), inv(CUST), inv(CAL, "none")]}
    out = conn.apply(email_deltas({"delta_id": "c1", **meeting}), internal={CAL})
    assert out["status"].to_list() == ["applied"]
    assert sorted((i["recipient"], i["kind"]) for i in org.invitations()) == [(BOB, "request"), (CAL, "request")]
    assert [i["subject"] for i in org.items(BOB)] == ["Kickoff"]  # on the colleague's calendar
    organizer_copy = by_subject(extract(conn))["Kickoff"]
    assert sorted(i["email"] for i in organizer_copy["invitees"]) == [BOB, CAL, CUST]  # customer kept, not mailed

    org.reset()
    org.add_mailbox(ANN, time_zone="Europe/Berlin")
    org.add_mailbox(BOB)
    out = conn.apply(email_deltas({"delta_id": "c2", **meeting}), send_external={ANN})
    assert sorted(i["recipient"] for i in org.invitations()) == [BOB, CAL, CUST]


def test_external_only_meeting_sends_nothing(conn, org):
    conn.apply(email_deltas({"delta_id": "c1", "op": "create", "subject": "Call", "start": u(2024, 5, 8, 9),
                       "end": u(2024, 5, 8, 10), "invitees": [inv(CUST), inv(CUST2, "lead")]}))
    assert org.invitations() == []
    assert sorted(i["email"] for i in by_subject(extract(conn))["Call"]["invitees"]) == [CUST, CUST2]


def test_update_and_delete_of_a_mixed_meeting_notify_internal_attendees_only(conn, org):
    mid = org.add_item(ANN, "Review", u(2024, 5, 8, 9), u(2024, 5, 8, 10), required_attendees=[BOB, CUST])
    org.deliver(org.find_item(mid), [BOB], "request")  # bob holds a copy, as after a real send
    org.set_response(ANN, mid, BOB, "Accept")
    before = len(org.invitations())
    row = by_subject(extract(conn))["Review"]
    out = conn.apply(email_deltas({"delta_id": "u1", "op": "update", "target_id": mid, "target_version": row["version"],
                             "subject": "Review (moved)", "start": u(2024, 5, 8, 14), "end": u(2024, 5, 8, 15),
                             "invitees": [inv(BOB, "user"), inv(CUST)]}))
    assert out["status"].to_list() == ["applied"], out["error"].to_list()
    sent = org.invitations()[before:]
    assert {i["recipient"] for i in sent} == {BOB} and {i["kind"] for i in sent} == {"update"}
    assert [(i["subject"], i["start"]) for i in org.items(BOB)] == [("Review (moved)", "2024-05-08T14:00:00Z")]
    row = by_subject(extract(conn))["Review (moved)"]
    assert {i["email"]: i["response"] for i in row["invitees"]} == {BOB: "accepted", CUST: "none"}  # response kept

    before = len(org.invitations())
    out = conn.apply(email_deltas({"delta_id": "d1", "op": "delete", "target_id": mid, "target_version": row["version"]}))
    assert out["status"].to_list() == ["applied"]
    assert [(i["recipient"], i["kind"]) for i in org.invitations()[before:]] == [(BOB, "cancellation")]
    assert org.items(BOB) == [] and org.items(ANN) == []


def test_update_keeps_attendees_salesforce_cannot_represent(conn, org):
    mid = org.add_item(ANN, "Sync", u(2024, 5, 8, 9), u(2024, 5, 8, 10), required_attendees=[CUST, "stranger@else.org"])
    row = by_subject(extract(conn))["Sync"]
    out = conn.apply(email_deltas({"delta_id": "u1", "op": "update", "target_id": mid, "target_version": row["version"],
                             "subject": "Sync", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10),
                             "invitees": [inv(CUST2)]}),
                     directory_emails={CUST, CUST2})
    assert out["status"].to_list() == ["applied"]
    emails = sorted(i["email"] for i in by_subject(extract(conn))["Sync"]["invitees"])
    assert emails == ["stranger@else.org", CUST2]  # the removed Contact goes, the unknown address stays
    assert org.invitations() == []


def test_update_of_an_item_edited_since_extract_fails_as_changed_since_extract(conn, org):
    mid = org.add_item(ANN, "Plan", u(2024, 5, 8, 9), u(2024, 5, 8, 10), required_attendees=[BOB])
    stale = by_subject(extract(conn))["Plan"]["version"]
    org.set_response(ANN, mid, BOB, "Decline")  # the item changes on the server after extract
    out = conn.apply(email_deltas(
        {"delta_id": "u1", "op": "update", "target_id": mid, "target_version": stale, "subject": "Plan B",
         "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10)},
        {"delta_id": "d1", "op": "delete", "target_id": mid, "target_version": stale},
    ))
    assert out["status"].to_list() == ["failed", "failed"], out["error"].to_list()
    assert all(e.startswith("changed_since_extract") for e in out["error"].to_list()), out["error"].to_list()
    assert [i["subject"] for i in org.items(ANN)] == ["Plan"]


def test_throttled_write_waits_and_succeeds(conn, ex, org):
    ex.faults.add("throttle", count=1, route="CreateItem", backoff_ms=300)
    t0 = time.monotonic()
    out = conn.apply(email_deltas({"delta_id": "c1", "op": "create", "subject": "Busy day", "start": u(2024, 5, 8, 9),
                             "end": u(2024, 5, 8, 10)}))
    assert out["status"].to_list() == ["applied"]
    assert time.monotonic() - t0 >= 0.3
    assert [i["subject"] for i in org.items(ANN)] == ["Busy day"]


def test_throttling_beyond_max_wait_fails_the_rest_retriable(conn, ex, org):
    ex.faults.add("throttle", count=100, route="CreateItem", backoff_ms=800)  # 0.8 s each, max_wait_s=2
    t0 = time.monotonic()
    out = conn.apply(email_deltas(
        {"delta_id": "p1", "op": "pair", "target_id": "x"},
        *({"delta_id": f"c{i}", "op": "create", "subject": f"E{i}", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10)}
          for i in range(3)),
    ))
    assert time.monotonic() - t0 < 5
    rows = {r["delta_id"]: r for r in out.to_dicts()}
    assert rows["p1"]["status"] == "applied"
    assert all(rows[f"c{i}"]["status"] == "failed" and rows[f"c{i}"]["retriable"] for i in range(3))
    assert org.items(ANN) == []


def test_bad_credentials_raise_fatal_error_naming_the_account_not_the_password(ex, org):
    user, _ = ex.service_account
    conn = ExchangeConnector(ex.url, user, "wrong-Pa55word", max_wait_s=2)
    try:
        with pytest.raises(FatalError) as err:
            extract(conn)
        assert user in str(err.value) and "wrong-Pa55word" not in str(err.value)
        assert "impersonation" in str(err.value).lower()
        with pytest.raises(FatalError):
            conn.apply(email_deltas({"delta_id": "c1", "op": "create", "subject": "x", "start": u(2024, 5, 8, 9),
                               "end": u(2024, 5, 8, 10)}))
    finally:
        conn.close()


def test_missing_impersonation_right_is_fatal(conn, ex, org):
    org.revoke_impersonation(ex.service_account[0])
    with pytest.raises(FatalError, match="ApplicationImpersonation"):
        extract(conn)


def test_find_by_key_finds_a_create_that_was_never_recorded(conn, ex, org):
    ex.faults.add("drop_after_write", count=1, route="CreateItem")
    out = conn.apply(email_deltas({"delta_id": "c1", "op": "create", "subject": "Lost  reply", "start": u(2024, 5, 8, 9),
                             "end": u(2024, 5, 8, 10)}))
    assert out["status"].to_list() == ["failed"] and out["retriable"].to_list() == [True]
    ids = conn.find_by_key(ANN, " Lost reply ", u(2024, 5, 8, 9), u(2024, 5, 8, 10), False)
    assert ids == [i["id"] for i in org.items(ANN)]
    assert conn.find_by_key(ANN, "Lost reply", u(2024, 5, 8, 9), u(2024, 5, 8, 11), False) == []


def test_empty_deltas_give_an_empty_outcome_frame(conn):
    out = conn.apply(conform(pl.DataFrame(schema=DELTA_SCHEMA), DELTA_SCHEMA))
    assert out.schema == OUTCOME_SCHEMA and out.height == 0


def test_credentials_failing_mid_run_keep_the_outcomes_already_written(conn, ex, org):
    org.add_mailbox("dora@example.com")
    rows = [
        {"delta_id": "a1", "op": "create", "subject": "first", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10)},
        {"delta_id": "b1", "op": "create", "mailbox": "dora@example.com", "subject": "second",
         "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10)},
    ]
    user = ex.service_account[0]
    original = org.passwords[user]
    calls = []

    def rotate_password(done, total):
        calls.append(done)
        if done == 1:  # the service account's password is changed after the first mailbox
            org.passwords[user] = "rotated"

    try:
        with pytest.raises(FatalError) as err:
            conn.apply(email_deltas(*rows), progress=rotate_password)
    finally:
        org.passwords[user] = original
    outcomes = {r["delta_id"]: r["status"] for r in err.value.outcomes.to_dicts()}
    assert outcomes == {"a1": "applied", "b1": "failed"}
    assert [i["subject"] for i in org.items(ANN)] == ["first"]


def test_a_conflict_in_the_middle_of_a_batch_fails_only_that_delta(conn, org):
    # exchangelib raises (rather than returns) most per-item errors, which would hide the other items'
    # results; the connector must report each item of the request on its own.
    ids = [org.add_item(ANN, f"item {i}", u(2024, 5, 8, 9 + i), u(2024, 5, 8, 10 + i)) for i in range(3)]
    versions = dict(zip(*extract(conn).select("native_id", "version").to_dict(as_series=False).values()))
    # the middle item is then edited on the server:
    with org.lock:
        org.touch(org.find_item(ids[1]))
    out = conn.apply(email_deltas(*(
        {"delta_id": f"u{i}", "op": "update", "target_id": ids[i], "target_version": versions[ids[i]],
         "subject": f"renamed {i}", "start": u(2024, 5, 8, 9 + i), "end": u(2024, 5, 8, 10 + i)} for i in range(3)
    ), {"delta_id": "c1", "op": "create", "subject": "backwards", "start": u(2024, 5, 9, 10), "end": u(2024, 5, 9, 9)},
        {"delta_id": "c2", "op": "create", "subject": "fine", "start": u(2024, 5, 9, 10), "end": u(2024, 5, 9, 11)}))
    rows = {r["delta_id"]: r for r in out.to_dicts()}
    assert [rows[k]["status"] for k in ("u0", "u1", "u2", "c1", "c2")] == ["applied", "failed", "applied", "failed", "applied"]
    assert rows["u1"]["error"].startswith("changed_since_extract: ErrorIrresolvableConflict")
    assert rows["c1"]["error"].startswith(("Error", "bad_payload"))
    assert sorted(i["subject"] for i in org.items(ANN)) == ["fine", "item 1", "renamed 0", "renamed 2"]


def test_close_drops_the_cached_connection_and_the_mailbox(conn, org):
    from exchangelib.protocol import Protocol

    extract(conn)
    assert Protocol._cache_key(conn._config) in Protocol._protocol_cache
    first = conn.account(ANN)
    assert conn.account(BOB) is not first  # switching mailbox drops the old Account (R15)
    conn.close()
    assert Protocol._cache_key(conn._config) not in Protocol._protocol_cache
    assert extract(conn).height == 0  # usable again: reconnects on demand


def test_write_payloads_that_ews_would_reject_are_caught_before_sending():
    with pytest.raises(ValueError, match="end_before_start"):
        ews_start_end(u(2024, 5, 10, 10), u(2024, 5, 10, 9), False, BERLIN)
    with pytest.raises(ValueError, match="end_before_start"):
        ews_start_end(u(2024, 5, 10), u(2024, 5, 10), True, BERLIN)


# ----------------------------------------------------------------------------- counting EWS requests


def _create(i: int) -> dict:
    return {"delta_id": f"c{i}", "op": "create", "subject": f"Counted {i}", "start": u(2024, 5, 8, 9 + i),
            "end": u(2024, 5, 8, 10 + i)}


@pytest.mark.parametrize("auth_type", ["basic", "ntlm"])
def test_api_calls_are_the_soap_requests_the_server_answered(ex, org, auth_type):
    # The sandbox counts every authenticated EWS request (not the 401 legs of an NTLM handshake), as
    # the connector does: the two counts must agree exactly.
    user, password = ex.service_account
    with ExchangeConnector(ex.url, user, password, auth_type=auth_type, max_wait_s=2, batch_size=2) as conn:
        assert conn.api_calls == 0
        extract(conn)
        after_read = conn.api_calls
        assert after_read == org.calls() > 0
        conn.apply(email_deltas(*(_create(i) for i in range(5))))  # 3 CreateItem batches at least
        assert conn.api_calls == org.calls() >= after_read + 3
        if auth_type == "ntlm":
            assert any(logon["scheme"] == "ntlm" and logon["ok"] for logon in org.logons)
    assert conn.api_calls == org.calls()  # close() keeps the count


def test_api_calls_count_every_attempt_of_a_throttled_request(conn, ex, org):
    ex.faults.add("throttle", count=2, route="CreateItem", backoff_ms=100)
    conn.apply(email_deltas(_create(0)))
    assert org.calls_by_operation["CreateItem"] == 3
    assert conn.api_calls == org.calls()


def test_connectors_with_the_same_account_count_only_their_own_requests(conn, ex, org):
    user, password = ex.service_account
    other = ExchangeConnector(ex.url, user, password, max_wait_s=2)
    try:
        extract(conn)
        mine = conn.api_calls
        extract(other)
        other.apply(email_deltas(_create(0)))
        assert conn.api_calls == mine  # the other connector's requests are not ours
        assert other.api_calls > 0 and conn.api_calls + other.api_calls == org.calls()
        assert conn.account(ANN).protocol is not other.account(ANN).protocol
        # exchangelib's own clients with the same account do not count either (nor share our sessions).
        from exchangelib import BASIC, IMPERSONATION, Account, Configuration, Credentials

        plain = Account(primary_smtp_address=ANN, autodiscover=False, access_type=IMPERSONATION,
                        config=Configuration(service_endpoint=ex.url, credentials=Credentials(user, password),
                                             auth_type=BASIC, version=Version(build=EXCHANGE_2016)))
        theirs, before = other.api_calls, org.calls()
        plain.calendar.all().count()
        assert org.calls() > before and (conn.api_calls, other.api_calls) == (mine, theirs)
    finally:
        other.close()


def test_api_calls_are_counted_exactly_from_many_threads(conn, ex, org):
    from concurrent.futures import ThreadPoolExecutor

    for i in range(3):
        org.add_item(ANN, f"Threaded {i}", u(2024, 5, 8, 9 + i), u(2024, 5, 8, 10 + i))
    # One Account whose Protocol pools up to 4 sessions (exchangelib's default is one), so that
    # requests really go out in parallel on different sessions, each carrying the counting hook.
    conn.account(ANN).protocol.max_connections = 4

    def look(i: int) -> list[str]:
        return conn.find_by_key(ANN, f"Threaded {i % 3}", u(2024, 5, 8, 9 + i % 3), u(2024, 5, 8, 10 + i % 3), False)

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(look, range(40)))
    assert all(len(ids) == 1 for ids in found)
    assert conn.api_calls == org.calls() >= 40
    assert conn.account(ANN).protocol._session_pool_size > 1  # the requests really went in parallel


def test_an_unclosed_connector_releases_its_protocol_when_collected(ex, org):
    import gc

    from exchangelib.protocol import Protocol

    user, password = ex.service_account
    c = ExchangeConnector(ex.url, user, password, max_wait_s=2)
    extract(c)
    key = Protocol._cache_key(c._config)
    assert key in Protocol._protocol_cache
    del c
    gc.collect()
    assert key not in Protocol._protocol_cache
