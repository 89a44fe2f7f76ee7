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

