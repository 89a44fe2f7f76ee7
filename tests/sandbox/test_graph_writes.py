"""Graph sandbox writes: create/update/delete, transactionId, If-Match, meeting messages (Graph always sends),
and delivery across the hybrid organisation (Graph <-> EWS, one UID)."""

from __future__ import annotations

from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone
from exchangelib.properties import Attendee, Mailbox

from .conftest_graph import ANN, BOB, CAROL, _sb, error_of, ews_account, graph, sb  # noqa: F401


def _meeting(graph, attendees=(BOB, CAROL), **extra):
    return graph.create(ANN, "Kick-off", "2026-12-03T10:00:00", "2026-12-03T11:00:00", "W. Europe Standard Time",
                        attendees=[{"emailAddress": {"address": a}, "type": "required"} for a in attendees], **extra)


def _log(sb):
    return [(i["recipient"], i["kind"], i["via"]) for i in sb.org.invitations()]


def test_create_sends_every_attendee_a_request_and_delivers_across_protocols(sb, graph):
    created = _meeting(graph, attendees=(BOB, CAROL, "x@customer.example"))
    assert created["start"] == {"dateTime": "2026-12-03T09:00:00.0000000", "timeZone": "UTC"}
    assert created["originalStartTimeZone"] == "W. Europe Standard Time" and created["isOrganizer"] is True
    assert _log(sb) == [(BOB, "request", "graph"), (CAROL, "request", "graph"), ("x@customer.example", "request", "graph")]
    # Bob (Exchange Online) sees it over Graph, Carol (on premises) over EWS: the same UID on both.
    bobs = graph.view(BOB).json()["value"]
    assert [(e["subject"], e["iCalUId"], e["isOrganizer"]) for e in bobs] == [("Kick-off", created["iCalUId"], False)]
    assert bobs[0]["responseStatus"]["response"] == "notResponded"
    carols = list(ews_account(sb, CAROL).calendar.all())
    assert [(i.subject, i.uid) for i in carols] == [("Kick-off", created["uid"])]


def test_a_meeting_created_over_ews_reaches_a_graph_mailbox_with_the_same_uid(sb, graph):
    account = ews_account(sb, CAROL)
    tz = EWSTimeZone("UTC")
    item = CalendarItem(account=account, folder=account.calendar, subject="From on-prem",
                        start=EWSDateTime(2026, 12, 4, 14, tzinfo=tz), end=EWSDateTime(2026, 12, 4, 15, tzinfo=tz),
                        required_attendees=[Attendee(mailbox=Mailbox(email_address=ANN))])
    item.save(send_meeting_invitations="SendToAllAndSaveCopy")
    item.refresh()
    anns = graph.view(ANN).json()["value"]
    assert [(e["subject"], e["uid"], e["organizer"]["emailAddress"]["address"]) for e in anns] == [
        ("From on-prem", item.uid, CAROL)]
    assert _log(sb) == [(ANN, "request", "ews")]


def test_transaction_id_makes_a_retried_post_idempotent(sb, graph):
    first = _meeting(graph, transactionId="tx-1")
    again = _meeting(graph, transactionId="tx-1")
    assert again["id"] == first["id"] and again["transactionId"] == "tx-1"
    assert len(graph.view(ANN).json()["value"]) == 1
    assert len(_log(sb)) == 2  # the retry sent nothing
    r = graph("POST", f"/users/{ANN}/events", json={
        "subject": "Something else", "transactionId": "tx-1",
        "start": {"dateTime": "2026-12-05T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-05T11:00:00", "timeZone": "UTC"}})
    assert error_of(r)[:2] == (400, "ErrorDuplicateTransactionId")


def test_patch_honours_if_match_and_answers_412_on_a_stale_etag(sb, graph):
    created = graph.create(ANN, "Solo", "2026-12-03T10:00:00", "2026-12-03T11:00:00")
    etag = created["@odata.etag"]
    r = graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"subject": "Solo v2"}, headers={"If-Match": etag})
    assert r.status_code == 200 and r.json()["subject"] == "Solo v2" and r.json()["@odata.etag"] != etag
    assert r.json()["changeKey"] != created["changeKey"]
    r = graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"subject": "lost"}, headers={"If-Match": etag})
    assert error_of(r) == (412, "ErrorIrresolvableConflict",
                           "The send or update operation could not be performed because the change key passed in the "
                           "request does not match the current change key for the item.")
    assert graph("GET", f"/users/{ANN}/events/{created['id']}").json()["subject"] == "Solo v2"


def test_patch_partial_update_keeps_other_fields_and_validates(sb, graph):
    created = graph.create(ANN, "Keep", "2026-12-03T10:00:00", "2026-12-03T11:00:00",
                           body={"contentType": "text", "content": "agenda"}, sensitivity="private")
    r = graph("PATCH", f"/users/{ANN}/events/{created['id']}",
              json={"end": {"dateTime": "2026-12-03T12:00:00", "timeZone": "UTC"}})
    got = r.json()
    assert got["subject"] == "Keep" and got["sensitivity"] == "private" and got["end"]["dateTime"].startswith("2026-12-03T12")
    assert graph("GET", f"/users/{ANN}/events/{created['id']}",
                 headers={"Prefer": 'outlook.body-content-type="text"'}).json()["body"]["content"] == "agenda"
    r = graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"colour": "red"})
    assert error_of(r)[:2] == (400, "RequestBodyRead")
    r = graph("PATCH", f"/users/{ANN}/events/{created['id']}",
              json={"end": {"dateTime": "2026-12-03T08:00:00", "timeZone": "UTC"}})
    assert error_of(r)[:2] == (400, "ErrorCalendarEndDateIsEarlierThanStartDate")


def test_an_update_goes_to_all_attendees_an_attendees_only_update_to_the_changed_ones(sb, graph):
    created = _meeting(graph, attendees=(BOB,))
    graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"body": {"contentType": "text", "content": "new"}})
    assert _log(sb)[1:] == [(BOB, "update", "graph")]
    # "An event update that includes only the attendees property ... sends a meeting update to only the
    # attendees that have changed" (event-update page).
    graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"attendees": [
        {"emailAddress": {"address": BOB}, "type": "required"}, {"emailAddress": {"address": CAROL}, "type": "required"}]})
    assert _log(sb)[2:] == [(CAROL, "request", "graph")]
    graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"attendees": [
        {"emailAddress": {"address": CAROL}, "type": "required"}]})
    assert _log(sb)[3:] == [(BOB, "cancellation", "graph")]
    assert graph.view(BOB).json()["value"] == []
    graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"subject": "Renamed", "attendees": [
        {"emailAddress": {"address": CAROL}, "type": "required"}, {"emailAddress": {"address": BOB}}]})
    assert _log(sb)[4:] == [(BOB, "request", "graph"), (CAROL, "update", "graph")]
    graph("PATCH", f"/users/{ANN}/events/{created['id']}", json={"categories": ["Red"]})  # personal: nothing sent
    assert len(_log(sb)) == 6


def test_delete_of_an_organizers_meeting_cancels_it_for_every_attendee(sb, graph):
    created = _meeting(graph)
    r = graph("DELETE", f"/users/{ANN}/events/{created['id']}")
    assert r.status_code == 204 and r.content == b""
    assert _log(sb)[2:] == [(BOB, "cancellation", "graph"), (CAROL, "cancellation", "graph")]
    assert graph.view(ANN).json()["value"] == [] and graph.view(BOB).json()["value"] == []
    assert list(ews_account(sb, CAROL).calendar.all()) == []
    assert sb.org.items(ANN, "deleteditems")[0]["subject"] == "Kick-off"  # moved to Deleted Items


def test_patch_and_delete_on_an_occurrence_touch_only_that_occurrence(sb, graph):
    series = _meeting(graph, attendees=(BOB,), recurrence={
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": "2026-12-03", "numberOfOccurrences": 3}})
    assert series["type"] == "seriesMaster"
    occs = graph.view(ANN).json()["value"]
    assert [o["type"] for o in occs] == ["occurrence"] * 3
    r = graph("PATCH", f"/users/{ANN}/events/{occs[1]['id']}", json={"subject": "Only Thursday"})
    assert r.status_code == 200 and r.json()["type"] == "exception"
    # An occurrence may not be moved onto or past the day of its neighbours (event-update page).
    r = graph("PATCH", f"/users/{ANN}/events/{occs[1]['id']}", json={
        "start": {"dateTime": "2026-12-05T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-05T11:00:00", "timeZone": "UTC"}})
    assert error_of(r) == (400, "ErrorOccurrenceCrossingBoundary",
                           "Modified occurrence is crossing or overlapping adjacent occurrence.")
    assert graph("DELETE", f"/users/{ANN}/events/{occs[2]['id']}").status_code == 204
    after = graph.view(ANN).json()["value"]
    assert [(o["subject"], o["type"]) for o in after] == [("Kick-off", "occurrence"), ("Only Thursday", "exception")]
    bobs = graph.view(BOB).json()["value"]
    assert [o["subject"] for o in bobs] == ["Kick-off", "Only Thursday"]
    assert _log(sb) == [(BOB, "request", "graph"), (BOB, "update", "graph"), (BOB, "cancellation", "graph")]
    # Updating the series master sends "one for the master series and one per instance that has been updated".
    graph("PATCH", f"/users/{ANN}/events/{series['id']}", json={"location": {"displayName": "Room 2"}})
    assert _log(sb)[3:] == [(BOB, "update", "graph"), (BOB, "update", "graph")]


def test_all_day_create_needs_midnights(sb, graph):
    r = graph("POST", f"/users/{ANN}/events", json={
        "subject": "Holiday", "isAllDay": True, "start": {"dateTime": "2026-12-24T00:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-26T00:00:00", "timeZone": "UTC"}})
    assert r.status_code == 201 and r.json()["isAllDay"] is True
    assert r.json()["end"] == {"dateTime": "2026-12-26T00:00:00.0000000", "timeZone": "UTC"}
    r = graph("POST", f"/users/{ANN}/events", json={
        "subject": "Bad", "isAllDay": True, "start": {"dateTime": "2026-12-24T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-25T00:00:00", "timeZone": "UTC"}})
    assert r.status_code == 400


def test_unknown_time_zone_is_refused(sb, graph):
    r = graph("POST", f"/users/{ANN}/events", json={
        "subject": "?", "start": {"dateTime": "2026-12-24T09:00:00", "timeZone": "Mars/Olympus"},
        "end": {"dateTime": "2026-12-24T10:00:00", "timeZone": "Mars/Olympus"}})
    assert error_of(r)[:2] == (400, "TimeZoneNotSupportedException")



