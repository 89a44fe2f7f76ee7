"""Salesforce connector: pure record shaping (no server), then the connector against the sandbox.

The integration tests drive ``SalesforceConnector`` through the real simple-salesforce client against
``sandbox.salesforce.SalesforceSandbox`` (a local server speaking the REST protocol).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest
import requests

from connectors.salesforce_records import (
    OrgInfo,
    error_text,
    event_bounds,
    event_fields,
    event_row,
    invitee_from_relation,
    is_record_id,
    org_info_from_describe,
    plan_relations,
    timing_fields,
    window_soql,
)
from transforms.schema import EVENT_SCHEMA

UTC = timezone.utc


def dt(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


SA_ON = OrgInfo(shared_activities=True, relation_flags=("IsInvitee", "IsParent"))
SA_OFF = OrgInfo(shared_activities=False, relation_flags=("IsInvitee",))


# --- all-day and timed bounds ------------------------------------------------------------------


def test_timed_event_bounds_are_the_utc_instants():
    rec = {"IsAllDayEvent": False, "StartDateTime": "2025-03-10T09:30:00.000+0000", "EndDateTime": "2025-03-10T10:00:00.000+0000"}
    assert event_bounds(rec) == (dt(2025, 3, 10, 9, 30), dt(2025, 3, 10, 10))


def test_two_day_all_day_event_reads_with_an_exclusive_end():
    # Salesforce: ActivityDate = first day, DurationInMinutes = 2880, EndDateTime = last day 00:00Z (inclusive).
    rec = {
        "IsAllDayEvent": True,
        "ActivityDate": "2025-03-10",
        "StartDateTime": "2025-03-10T00:00:00.000+0000",
        "EndDateTime": "2025-03-11T00:00:00.000+0000",
        "DurationInMinutes": 2880,
    }
    assert event_bounds(rec) == (dt(2025, 3, 10), dt(2025, 3, 12))


def test_one_day_all_day_event_without_duration_uses_the_inclusive_end_date():
    rec = {"IsAllDayEvent": True, "ActivityDate": "2025-03-10", "EndDateTime": "2025-03-10T00:00:00.000+0000"}
    assert event_bounds(rec) == (dt(2025, 3, 10), dt(2025, 3, 11))


def test_all_day_write_sends_first_date_and_whole_days():
    assert timing_fields(dt(2025, 3, 10), dt(2025, 3, 12), True) == {
        "IsAllDayEvent": True,
        "ActivityDate": "2025-03-10",
        "DurationInMinutes": 2880,
    }
    assert timing_fields(dt(2025, 3, 10, 9), dt(2025, 3, 10, 9, 45), False) == {
        "IsAllDayEvent": False,
        "StartDateTime": "2025-03-10T09:00:00.000+0000",
        "EndDateTime": "2025-03-10T09:45:00.000+0000",
    }


def test_all_day_round_trip_keeps_dates():
    fields = timing_fields(dt(2025, 12, 30), dt(2026, 1, 2), True)
    assert event_bounds(fields) == (dt(2025, 12, 30), dt(2026, 1, 2))


# --- relations and rows ------------------------------------------------------------------------


def rel(rid, rtype, email, status="New", invitee=True, parent=False, rel_id=None):
    return {
        "Id": rel_id or "0RE" + rid[3:],
        "RelationId": rid,
        "Relation": {"Type": rtype, "Email": email},
        "Status": status,
        "IsInvitee": invitee,
        "IsParent": parent,
    }


@pytest.mark.parametrize(
    ("status", "response"), [("Accepted", "accepted"), ("Declined", "declined"), ("New", "none"), (None, "none")]
)
def test_relation_status_maps_to_response(status, response):
    inv = invitee_from_relation(rel("003A", "Contact", "Ann@X.com", status=status))
    assert inv == {"email": "ann@x.com", "response": response, "record_id": "003A", "record_type": "contact"}


def test_non_invitee_and_resource_relations_are_not_invitees():
    assert invitee_from_relation(rel("003A", "Contact", "a@x.com", invitee=False, parent=True)) is None
    assert invitee_from_relation(rel("023R", "Calendar", None)) is None
    assert invitee_from_relation(rel("00QL", "Lead", "l@x.com"))["record_type"] == "lead"
    assert invitee_from_relation(rel("005U", "User", "u@x.com"))["record_type"] == "user"


def test_event_row_shapes_every_canonical_column():
    rec = {
        "Id": "00U1",
        "OwnerId": "0051",
        "Subject": "Review",
        "StartDateTime": "2025-03-10T09:00:00.000+0000",
        "EndDateTime": "2025-03-10T10:00:00.000+0000",
        "IsAllDayEvent": False,
        "Description": None,
        "IsPrivate": True,
        "IsChild": False,
        "LastModifiedDate": "2025-03-01T08:00:00.000+0000",
        "SystemModstamp": "2025-03-01T08:00:01.000+0000",
        "EventRelations": {
            "done": True,
            "records": [rel("003B", "Contact", "b@x.com", "Accepted"), rel("003A", "Contact", "a@x.com", invitee=False)],
        },
    }
    row = event_row(rec, "owner@x.com")
    assert set(row) == set(EVENT_SCHEMA)
    assert row["side"] == "salesforce" and row["native_id"] == "00U1" and row["user_key"] == "owner@x.com"
    assert row["version"] == "2025-03-01T08:00:01+00:00"
    assert row["last_modified"] == dt(2025, 3, 1, 8)
    assert row["description"] == "" and row["is_private"] is True and row["is_child"] is False
    assert row["organizer_email"] == "owner@x.com" and row["meeting_uid"] is None and row["mailbox"] is None
    assert row["invitees"] == [{"email": "b@x.com", "response": "accepted", "record_id": "003B", "record_type": "contact"}]
    pl.DataFrame([row], schema=EVENT_SCHEMA)  # fits the canonical schema


# --- describe ----------------------------------------------------------------------------------


def field(name, custom=False, createable=True, nillable=True, defaulted=False):
    return {"name": name, "custom": custom, "createable": createable, "nillable": nillable, "defaultedOnCreate": defaulted}


def test_org_info_reads_shared_activities_and_required_custom_fields():
    event = {
        "fields": [
            field("Subject"),
            field("OwnerId", nillable=False, defaulted=True),
            field("EventWhoIds"),
            field("Region__c", custom=True, nillable=False),
            field("Flag__c", custom=True, nillable=False, defaulted=True),
            field("Note__c", custom=True),
            field("Calc__c", custom=True, createable=False, nillable=False),
            field("IsRecurrence", createable=True, nillable=False, defaulted=True),
        ]
    }
    relation = {"fields": [field("IsInvitee"), field("IsParent"), field("Status")]}
    info = org_info_from_describe(event, relation)
    assert info == OrgInfo(
        shared_activities=True, required_fields=("Region__c",), relation_flags=("IsInvitee", "IsParent"), recurrence_masters=True
    )
    lightning = org_info_from_describe({"fields": [field("IsRecurrence"), field("IsRecurrence2")]}, relation)
    assert lightning.recurrence_masters and lightning.event_series
    assert not info.can_create_events
    off = org_info_from_describe({"fields": [field("Subject")]}, {"fields": [field("IsInvitee")]})
    assert off.shared_activities is False and off.required_fields == () and off.can_create_events


# --- SOQL --------------------------------------------------------------------------------------


def test_window_soql_quotes_values_and_widens_for_all_day_ends():
    soql = window_soql(["005A", "005'B"], dt(2025, 2, 1), dt(2025, 5, 2), SA_OFF)
    assert soql == (
        "SELECT Id, OwnerId, Subject, StartDateTime, EndDateTime, IsAllDayEvent, ActivityDate, DurationInMinutes,"
        " Description, IsPrivate, IsChild, LastModifiedDate, SystemModstamp,"
        " (SELECT RelationId, Relation.Type, Relation.Email, Status, RespondedDate, IsInvitee FROM EventRelations)"
        " FROM Event WHERE OwnerId IN ('005A','005\\'B') AND StartDateTime < 2025-05-02T00:00:00+00:00"
        " AND (EndDateTime > 2025-02-01T00:00:00+00:00"
        " OR (IsAllDayEvent = true AND EndDateTime > 2025-01-31T00:00:00+00:00))"
    )
    classic = OrgInfo(shared_activities=False, recurrence_masters=True)
    assert window_soql(["005A"], dt(2025, 2, 1), dt(2025, 5, 2), classic).endswith(" AND IsRecurrence = false")
    both = OrgInfo(shared_activities=False, recurrence_masters=True, event_series=True)
    assert window_soql(["005A"], dt(2025, 2, 1), dt(2025, 5, 2), both).endswith(
        " AND IsRecurrence = false AND GroupEventType != '3'")


# --- writing -----------------------------------------------------------------------------------


def delta(**kw):
    base = {
        "owner_id": "005O",
        "subject": "Plan",
        "start": dt(2025, 3, 10, 9),
        "end": dt(2025, 3, 10, 10),
        "is_all_day": False,
        "description": "",
        "is_private": False,
        "invitees": None,
        "who_ids": None,
    }
    base.update(kw)
    return base


def test_event_fields_for_create_and_update():
    create = event_fields(delta(who_ids=["003A", "003B"], description="notes"), SA_OFF, "create")
    assert create == {
        "Subject": "Plan",
        "Description": "notes",
        "IsPrivate": False,
        "IsAllDayEvent": False,
        "StartDateTime": "2025-03-10T09:00:00.000+0000",
        "EndDateTime": "2025-03-10T10:00:00.000+0000",
        "OwnerId": "005O",
        "WhoId": "003A",
    }
    update = event_fields(delta(who_ids=[]), SA_OFF, "update")
    assert "OwnerId" not in update and update["WhoId"] is None and update["Description"] is None
    # With Shared Activities the Who travels on the relations, never as WhoId.
    assert "WhoId" not in event_fields(delta(who_ids=["003A"]), SA_ON, "create")
    assert "WhoId" not in event_fields(delta(), SA_OFF, "update")  # who_ids null: leave the Who alone


def inv(rid, rtype="contact", response="none", email=None):
    return {"email": email or f"{rid}@x.com", "response": response, "record_id": rid, "record_type": rtype}


def test_plan_relations_on_create_merges_who_and_invitee_flags():
    plan = plan_relations("00UE", [inv("003A", response="accepted"), inv("00QL", "lead")], ["003A", "003C"], [], SA_ON)
    assert plan.create == [
        {"EventId": "00UE", "RelationId": "003A", "Status": "Accepted", "IsInvitee": True, "IsParent": True},
        {"EventId": "00UE", "RelationId": "00QL", "Status": "New", "IsInvitee": True, "IsParent": False},
        {"EventId": "00UE", "RelationId": "003C", "IsParent": True, "IsInvitee": False},
    ]
    assert not plan.update and not plan.delete
    off = plan_relations("00UE", [inv("003A", response="declined"), inv("005U", "user"), inv(None)], ["003A"], [], SA_OFF)
    assert off.create == [{"EventId": "00UE", "RelationId": "003A", "Status": "Declined", "IsInvitee": True}]


def test_plan_relations_on_update_adds_updates_removes_and_keeps_what_email_cannot_represent():
    existing = [
        rel("003A", "Contact", "a@x.com", "New"),  # still invited, now accepted
        rel("003B", "Contact", "b@x.com"),  # no longer invited: removed
        rel("005U", "User", "u@x.com"),  # a User: kept (C11)
        rel("003N", "Contact", None),  # a contact without email: kept (C11)
        rel("003T", "Contact", "t@x.com", "Accepted"),  # response unknown (null): status left alone
    ]
    wanted = [inv("003A", response="accepted"), inv("00QL", "lead", response="tentative"), inv("003T", response=None)]
    plan = plan_relations("00UE", wanted, None, existing, SA_OFF)
    assert plan.update == [{"Id": "0REA", "Status": "Accepted"}]
    assert plan.delete == ["0REB"]
    assert plan.create == [{"EventId": "00UE", "RelationId": "00QL", "Status": "New", "IsInvitee": True}]
    # invitees null: relations left alone entirely
    assert not plan_relations("00UE", None, None, existing, SA_OFF)


def test_plan_relations_shared_activities_toggles_flags_instead_of_duplicating():
    existing = [
        rel("003A", "Contact", "a@x.com", invitee=False, parent=True),  # Who, now also invited
        rel("003B", "Contact", "b@x.com", invitee=True, parent=True),  # stays invitee, no longer the Who
        rel("003C", "Contact", "c@x.com", invitee=False, parent=True),  # Who dropped, not invited: removed
    ]
    plan = plan_relations("00UE", [inv("003A"), inv("003B")], ["003A"], existing, SA_ON)
    assert plan.update == [{"Id": "0REA", "IsInvitee": True}, {"Id": "0REB", "IsParent": False}]
    assert plan.delete == ["0REC"]
    assert plan.create == []


def test_record_ids_are_checked_before_they_go_into_soql():
    assert is_record_id("001D000000IqhSL") and is_record_id("001D000000IqhSLIAZ")
    assert not is_record_id("001D000000IqhSLAAA") and not is_record_id("00U-bad") and not is_record_id(None)


def sf_error(cls_name, status, code, message):
    from simple_salesforce import exceptions

    return getattr(exceptions, cls_name)("https://x/services/data/v59.0/query", status, "query", [{"errorCode": code, "message": message}])


def test_errors_are_grouped_by_what_happens_next():
    from connectors.errors import ApiLimitExceeded, FatalError, RetriableError
    from connectors.salesforce import classify_error

    daily = classify_error(sf_error("SalesforceRefusedRequest", 403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), "read Events", 60, (10, 10))
    assert isinstance(daily, ApiLimitExceeded) and "10/10" in str(daily)
    busy = classify_error(sf_error("SalesforceRefusedRequest", 403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."), "read Events", 60, (5, 10))
    assert type(busy) is RetriableError
    assert type(classify_error(sf_error("SalesforceGeneralError", 503, "SERVER_UNAVAILABLE", "down"), "x", 60, None)) is RetriableError
    expired = classify_error(sf_error("SalesforceExpiredSession", 401, "INVALID_SESSION_ID", "Session expired or invalid"), "read Events", 60, None)
    assert type(expired) is FatalError and "re-authenticate" in str(expired)
    denied = classify_error(sf_error("SalesforceRefusedRequest", 403, "INSUFFICIENT_ACCESS", "no"), "read Events", 60, None)
    assert type(denied) is FatalError and "permissions" in str(denied)
    assert type(classify_error(requests.ReadTimeout(), "x", 5, None)) is RetriableError
    assert type(classify_error(requests.ConnectionError(), "x", 5, None)) is RetriableError


def test_error_text_uses_collections_status_codes():
    assert error_text([{"statusCode": "STRING_TOO_LONG", "message": "Subject: data value too large", "fields": ["Subject"]}]) == (
        "STRING_TOO_LONG: Subject: data value too large (Subject)"
    )
    assert error_text([{"errorCode": "NOT_FOUND", "message": "gone"}]) == "NOT_FOUND: gone"


# =================================================================================================
# Against the sandbox, through simple-salesforce
# =================================================================================================

from connectors.errors import ApiLimitExceeded, FatalError, RetriableError  # noqa: E402
from connectors.salesforce import SalesforceConnector  # noqa: E402
from sandbox.clock import Clock  # noqa: E402
from sandbox.faults import Faults  # noqa: E402
from sandbox.salesforce import SalesforceSandbox  # noqa: E402
from transforms.schema import DELTA_SCHEMA, DIRECTORY_SCHEMA, OUTCOME_SCHEMA  # noqa: E402

WINDOW = (dt(2025, 2, 1), dt(2025, 5, 1))


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory):
    # One server for the module (stopping one costs ~0.5 s); each test gets an emptied org.
    with SalesforceSandbox(Clock(), Faults(), tmp_path_factory.mktemp("sf-sandbox")) as server:
        yield server


@pytest.fixture
def sb(sandbox_server):
    sandbox_server.faults.clear()
    sandbox_server.org.reset()  # no data, calls uncounted, Shared Activities on, no required field
    return sandbox_server


def connect(sb, timeout=10.0):
    return SalesforceConnector.from_session(sb.instance_url, sb.session_id, session=sb.client_session(), timeout=timeout)


def deltas(rows):
    full = []
    for i, row in enumerate(rows):
        base = {"delta_id": f"d{i:04d}", "user_key": "ann@example.com", "target_side": "salesforce", "reason": "test"}
        base.update(row)
        full.append(base)
    return pl.DataFrame(full, schema=DELTA_SCHEMA)


def create_row(owner, subject, start, end, **kw):
    return {"op": "create", "owner_id": owner, "subject": subject, "start": start, "end": end, "is_all_day": False,
            "description": "", "is_private": False, **kw}


def test_extract_one_paged_query_with_relations_all_day_private_and_children(sb):
    org = sb.org
    ann, bob, carl = org.add_user("Ann@Example.com"), org.add_user("bob@example.com"), org.add_user("carl@example.com")
    con = org.add_contact("Con@X.com", "Con")
    lead = org.add_lead("lead@x.com", "Lead")
    for i in range(2050):  # more than one 2,000-row page
        s = dt(2025, 3, 1) + timedelta(minutes=30 * i)
        org.add_event(ann, f"E{i}", s, s + timedelta(minutes=30))
    org.add_event(ann, "Too late", dt(2025, 5, 1), dt(2025, 5, 1, 1))  # starts at the window end: out
    org.add_event(ann, "Ends at start", dt(2025, 1, 31, 23), dt(2025, 2, 1))  # ends at the window start: out
    # All-day events as the API keeps them: EndDateTime is 00:00Z of the last day.
    org.add_event(bob, "Day before", dt(2025, 1, 31), dt(2025, 1, 31), is_all_day=True)  # out
    edge = org.add_event(bob, "First day", dt(2025, 2, 1), dt(2025, 2, 1), is_all_day=True)
    offsite = org.add_event(bob, "Offsite", dt(2025, 3, 10), dt(2025, 3, 11), is_all_day=True)
    secret = org.add_event(bob, "Salary talk", dt(2025, 3, 12, 9), dt(2025, 3, 12, 10), is_private=True, description="raise")
    meeting = org.add_event(bob, "Review", dt(2025, 3, 13, 9), dt(2025, 3, 13, 10), invitee_ids=[con, lead, carl, ann])
    org.set_relation_status(meeting, con, "Accepted")
    org.set_relation_status(meeting, lead, "Declined")

    sf = connect(sb)
    info = sf.org_info()
    calls = org.api_calls()
    frame = sf.extract({"ann@example.com": ann, "bob@example.com": bob}, *WINDOW)
    assert org.api_calls() - calls == 2  # one query, two pages (the org info was read before)

    assert frame.schema == pl.Schema(EVENT_SCHEMA)
    by_user = dict(frame.group_by("user_key").len().iter_rows())
    assert by_user == {"ann@example.com": 2050 + 1, "bob@example.com": 4}  # ann also holds her child copy
    rows = {r["native_id"]: r for r in frame.iter_rows(named=True)}
    assert (rows[edge]["start"], rows[edge]["end"]) == (dt(2025, 2, 1), dt(2025, 2, 2))
    assert (rows[offsite]["start"], rows[offsite]["end"], rows[offsite]["is_all_day"]) == (dt(2025, 3, 10), dt(2025, 3, 12), True)
    assert rows[secret]["is_private"] is True and rows[secret]["description"] == "raise"
    review = rows[meeting]
    assert review["organizer_email"] == "bob@example.com" and review["is_child"] is False
    assert {(i["email"], i["response"], i["record_type"]) for i in review["invitees"]} == {
        ("con@x.com", "accepted", "contact"),
        ("lead@x.com", "declined", "lead"),
        ("carl@example.com", "none", "user"),
        ("ann@example.com", "none", "user"),
    }
    child = frame.filter(pl.col("is_child") & (pl.col("user_key") == "ann@example.com")).row(0, named=True)
    # R13/C15: a child carries its parent's invitees (no relation points at a child) and organizer, read
    # without another query since the parent is among the events read
    assert child["subject"] == "Review" and child["organizer_email"] == "bob@example.com"
    assert sorted(child["invitees"], key=lambda i: i["email"]) == sorted(review["invitees"], key=lambda i: i["email"])
    assert info.shared_activities is True
    used, allowed = sf.api_usage()
    assert used == org.api_calls() and allowed == 100_000


def test_extract_reads_the_occurrences_of_both_kinds_of_series_never_their_masters(sb):
    # C23: a Classic series master (IsRecurrence) and the record of a Lightning series' pattern (GroupEventType 3)
    # are not events; each occurrence is
    org = sb.org
    ann = org.add_user("ann@example.com")
    master = org.add_event(ann, "Weekly", dt(2025, 3, 3, 9), dt(2025, 3, 3, 10), IsRecurrence=True,
                           RecurrenceType="RecursWeekly", RecurrenceDayOfWeekMask=2, RecurrenceEndDateOnly=date(2025, 3, 24))
    first = org.add_event(ann, "Daily", dt(2025, 3, 4, 8), dt(2025, 3, 4, 8, 15), IsRecurrence2=True,
                          Recurrence2PatternText="RRULE:FREQ=DAILY;INTERVAL=1;COUNT=3")
    sf = connect(sb)
    info = sf.org_info()
    assert info.recurrence_masters and info.event_series
    frame = sf.extract({"ann@example.com": ann}, *WINDOW)
    rows = sorted((r["subject"], r["start"]) for r in frame.to_dicts())
    assert rows == [("Daily", dt(2025, 3, 4 + n, 8)) for n in range(3)] + [("Weekly", dt(2025, 3, 3 + 7 * n, 9)) for n in range(4)]
    assert master not in frame["native_id"].to_list() and first in frame["native_id"].to_list()
    pattern_rows = [e for e in org.events() if e["GroupEventType"] == "3"]
    assert len(pattern_rows) == 1 and pattern_rows[0]["Id"] not in frame["native_id"].to_list()


def test_extract_children_of_an_unsynced_owner_get_the_parents_organizer_and_invitees(sb):
    # R13/C15: the parent is not among the events read (its owner is not synced): one query finds the parent,
    # one reads its relations, and each child carries the parent's organizer and invitees.
    org = sb.org
    ann, bob, olga = org.add_user("ann@example.com"), org.add_user("bob@example.com"), org.add_user("olga@example.com")
    con = org.add_contact("con@x.com", "Con")
    org.add_event(olga, "Offsite", dt(2025, 3, 13, 9), dt(2025, 3, 13, 10), invitee_ids=[ann, bob, con])
    sf = connect(sb)
    sf.org_info()
    calls = org.api_calls()
    frame = sf.extract({"ann@example.com": ann, "bob@example.com": bob}, *WINDOW)
    assert org.api_calls() - calls == 3
    assert frame.height == 2 and frame["is_child"].all()
    for row in frame.iter_rows(named=True):
        assert row["organizer_email"] == "olga@example.com"
        assert {(i["email"], i["record_type"]) for i in row["invitees"]} == {
            ("ann@example.com", "user"), ("bob@example.com", "user"), ("con@x.com", "contact")}


def test_extract_confirms_paired_ids_outside_the_window_and_drops_deleted_ones(sb):
    org = sb.org
    ann, other = org.add_user("ann@example.com"), org.add_user("other@example.com")
    moved = org.add_event(ann, "Moved away", dt(2025, 8, 1, 9), dt(2025, 8, 1, 10))
    gone = org.add_event(ann, "Gone", dt(2025, 3, 1, 9), dt(2025, 3, 1, 10))
    foreign = org.add_event(other, "Not ours", dt(2025, 8, 2, 9), dt(2025, 8, 2, 10))
    sf = connect(sb)
    out = sf.apply(deltas([{"op": "delete", "target_id": gone}]), sf.org_info())
    assert out["status"].to_list() == ["applied"]
    frame = sf.extract({"ann@example.com": ann}, *WINDOW, confirm_ids=[moved, gone, foreign, "00U000000000000AAA", "00U5g0000000ZZZAAA"])
    assert frame["native_id"].to_list() == [moved]


def test_directory_matches_emails_case_insensitively_in_chunks(sb):
    org = sb.org
    owner = org.add_user("owner@example.com")
    con = org.add_contact("Mixed.Case@X.com", "Mixed", owner_id=owner)
    lead = org.add_lead("o'brien@x.com", "O'Brien")
    org.add_contact("someone.else@x.com", "Else")
    user = org.add_user("Colleague@Example.com")
    emails = [f"nobody{i}@x.com" for i in range(450)] + ["mixed.case@x.com", "O'Brien@X.com", "colleague@example.com"]
    frame = connect(sb).directory(emails)
    assert frame.schema == pl.Schema(DIRECTORY_SCHEMA)
    assert sorted(frame.iter_rows()) == sorted(
        [
            (con, "contact", "mixed.case@x.com", owner),
            (lead, "lead", "o'brien@x.com", org.api_user_id),
            (user, "user", "colleague@example.com", None),
        ]
    )
    assert connect(sb).user_ids(["COLLEAGUE@example.com", "missing@x.com"]) == {"colleague@example.com": user}


def test_apply_create_update_delete_with_per_record_errors(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    carl = org.add_user("carl@example.com")
    c1, c2 = org.add_contact("c1@x.com", "One"), org.add_contact("c2@x.com", "Two")
    no_mail = org.add_contact(None, "NoMail")
    lead = org.add_lead("lead@x.com", "Lead")
    existing = org.add_event(ann, "Old", dt(2025, 3, 20, 9), dt(2025, 3, 20, 10), invitee_ids=[c1, no_mail, carl])
    doomed = org.add_event(ann, "Doomed", dt(2025, 3, 21, 9), dt(2025, 3, 21, 10))
    already = org.add_event(ann, "Already gone", dt(2025, 3, 22, 9), dt(2025, 3, 22, 10))
    org.delete("Event", already, org.api_user_id)

    sf = connect(sb)
    info = sf.org_info()
    batch = deltas(
        [
            create_row(ann, "Kickoff", dt(2025, 3, 10, 9), dt(2025, 3, 10, 10), description="agenda",
                       invitees=[inv(c1, response="accepted", email="c1@x.com"), inv(lead, "lead", email="lead@x.com")],
                       who_ids=[c1]),
            create_row(ann, "Offsite", dt(2025, 3, 11), dt(2025, 3, 13), is_all_day=True),
            create_row(ann, "Private", dt(2025, 3, 14, 9), dt(2025, 3, 14, 10), is_private=True),
            create_row(ann, "Sabbatical", dt(2025, 3, 1), dt(2025, 3, 16), is_all_day=True),  # 15 days: rejected
            create_row(ann, "x" * 256, dt(2025, 3, 15, 9), dt(2025, 3, 15, 10)),  # too long: rejected
            {"op": "update", "target_id": existing, "subject": "New", "start": dt(2025, 3, 20, 11), "end": dt(2025, 3, 20, 12),
             "is_all_day": False, "description": "moved", "is_private": False,
             "invitees": [inv(c2, response="declined", email="c2@x.com")]},
            {"op": "delete", "target_id": doomed},
            {"op": "delete", "target_id": already},
            {"op": "pair", "target_id": "00Upaired", "source_id": "AAMkAD="},
            {"op": "unpair", "target_id": "00Uunpaired"},
            {"op": "update", "target_id": None, "subject": "Nowhere", "start": dt(2025, 3, 1), "end": dt(2025, 3, 2)},
        ]
    )
    seen = []
    out = sf.apply(batch, info, progress=lambda done, total: seen.append((done, total)))
    assert out.schema == pl.Schema(OUTCOME_SCHEMA)
    assert out["delta_id"].to_list() == batch["delta_id"].to_list()
    result = {r["delta_id"]: r for r in out.iter_rows(named=True)}
    assert [result[f"d{i:04d}"]["status"] for i in range(11)] == [
        "applied", "applied", "applied", "failed", "failed", "applied", "applied", "applied", "applied", "applied", "failed"
    ]
    assert result["d0010"]["error"].startswith("MALFORMED_ID: ")
    assert result["d0003"]["error"].startswith("FIELD_INTEGRITY_EXCEPTION: ")
    assert result["d0004"]["error"].startswith("STRING_TOO_LONG: ")
    assert not any(out["retriable"])
    assert result["d0000"]["error"] is None
    assert seen[-1] == (11, 11)

    kickoff, offsite, private = (result[f"d{i:04d}"]["new_id"] for i in range(3))
    rels = {r["RelationId"]: r for r in org.relations(kickoff)}
    assert rels[c1]["IsInvitee"] and rels[c1]["IsParent"] and rels[c1]["Status"] == "Accepted"
    assert rels[lead]["IsInvitee"] and not rels[lead]["IsParent"]
    assert org.record(kickoff)["WhoId"] == c1

    frame = sf.extract({"ann@example.com": ann}, *WINDOW)
    rows = {r["native_id"]: r for r in frame.iter_rows(named=True)}
    assert (rows[offsite]["start"], rows[offsite]["end"], rows[offsite]["is_all_day"]) == (dt(2025, 3, 11), dt(2025, 3, 13), True)
    assert org.record(offsite)["DurationInMinutes"] == 2880
    assert rows[private]["is_private"] is True
    assert rows[kickoff]["description"] == "agenda"
    assert {(i["record_id"], i["response"]) for i in rows[kickoff]["invitees"]} == {(c1, "accepted"), (lead, "none")}
    updated = rows[existing]
    assert (updated["subject"], updated["start"], updated["description"]) == ("New", dt(2025, 3, 20, 11), "moved")
    # c1 removed; c2 added as declined; the User and the contact without email kept (C11).
    assert {(i["record_id"], i["response"]) for i in updated["invitees"]} == {(c2, "declined"), (no_mail, "none"), (carl, "none")}
    assert doomed not in rows and org.record(doomed)["IsDeleted"] is True

    # Replay idempotency: the created event is found by its key, case-sensitively.
    assert sf.find_by_key(ann, "Kickoff", dt(2025, 3, 10, 9), dt(2025, 3, 10, 10), False) == [kickoff]
    assert sf.find_by_key(ann, "kickoff", dt(2025, 3, 10, 9), dt(2025, 3, 10, 10), False) == []
    assert sf.find_by_key(ann, "Offsite", dt(2025, 3, 11), dt(2025, 3, 13), True) == [offsite]
    assert sf.find_by_key(ann, "Offsite", dt(2025, 3, 11), dt(2025, 3, 12), True) == []


def test_apply_shared_activities_off_writes_one_who_and_invitee_relations(sb):
    org = sb.org
    org.set_shared_activities(False)
    ann = org.add_user("ann@example.com")
    c1, c2 = org.add_contact("c1@x.com", "One"), org.add_contact("c2@x.com", "Two")
    sf = connect(sb)
    info = sf.org_info()
    assert info == OrgInfo(shared_activities=False, required_fields=(), relation_flags=("IsInvitee",),
                           recurrence_masters=True, event_series=True)
    out = sf.apply(
        deltas([create_row(ann, "Demo", dt(2025, 3, 10, 9), dt(2025, 3, 10, 10),
                           invitees=[inv(c1, email="c1@x.com"), inv(c2, email="c2@x.com")], who_ids=[c2, c1])]),
        info,
    )
    assert out["status"].to_list() == ["applied"], out["error"].to_list()
    event = out["new_id"][0]
    assert org.record(event)["WhoId"] == c2
    assert sorted(r["RelationId"] for r in org.relations(event)) == sorted([c1, c2])
    frame = sf.extract({"ann@example.com": ann}, *WINDOW)
    assert len(frame["invitees"][0]) == 2

    # An invitee record gone meanwhile: the event is written (applied) and the relation error is kept.
    gone = org.add_contact("gone@x.com", "Gone")
    org.delete("Contact", gone, org.api_user_id)
    out = sf.apply(deltas([create_row(ann, "Demo 2", dt(2025, 3, 11, 9), dt(2025, 3, 11, 10),
                                      invitees=[inv(gone, email="gone@x.com"), inv(c1, email="c1@x.com")])]), info)
    row = out.row(0, named=True)
    assert row["status"] == "applied" and row["new_id"]
    assert row["error"].startswith("relations: "), row["error"]
    assert [r["RelationId"] for r in org.relations(row["new_id"])] == [c1]


def test_update_moves_the_who_with_shared_activities_on(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    c1, c2 = org.add_contact("c1@x.com", "One"), org.add_contact("c2@x.com", "Two")
    event = org.add_event(ann, "Call", dt(2025, 3, 5, 9), dt(2025, 3, 5, 10), who_ids=[c1])
    sf = connect(sb)
    out = sf.apply(
        deltas([{"op": "update", "target_id": event, "subject": "Call", "start": dt(2025, 3, 5, 9), "end": dt(2025, 3, 5, 10),
                 "is_all_day": False, "description": "", "is_private": False,
                 "invitees": [inv(c1, response="accepted", email="c1@x.com")], "who_ids": [c2]}]),
        sf.org_info(),
    )
    assert out["status"].to_list() == ["applied"], out["error"].to_list()
    assert out["error"][0] is None
    rels = {r["RelationId"]: (r["IsInvitee"], r["IsParent"], r["Status"]) for r in org.relations(event)}
    assert rels == {c1: (True, False, "Accepted"), c2: (False, True, "New")}
    assert org.record(event)["WhoId"] == c2


def test_apply_batches_200_records_a_call_and_reports_progress(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    sf = connect(sb)
    info = sf.org_info()
    rows = [create_row(ann, f"Slot {i}", dt(2025, 3, 1) + timedelta(hours=i), dt(2025, 3, 1) + timedelta(hours=i, minutes=30))
            for i in range(450)]
    seen = []
    calls = org.api_calls()
    out = sf.apply(deltas(rows), info, progress=lambda done, total: seen.append((done, total)))
    assert org.api_calls() - calls == 3
    assert seen == [(200, 450), (400, 450), (450, 450)]
    assert out["status"].unique().to_list() == ["applied"] and out["new_id"].n_unique() == 450


def test_a_503_mid_apply_keeps_what_was_done_and_marks_the_rest_retriable(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    sf = connect(sb)
    info = sf.org_info()
    rows = [create_row(ann, f"Slot {i}", dt(2025, 3, 1) + timedelta(hours=i), dt(2025, 3, 1) + timedelta(hours=i, minutes=30))
            for i in range(450)]

    def arm_after_first_batch(done, total):
        if done == 200:
            sb.faults.add("http_503", route="composite/sobjects")

    out = sf.apply(deltas(rows), info, progress=arm_after_first_batch)
    assert out.height == 450
    assert out["status"].value_counts().sort("status").rows() == [("applied", 200), ("failed", 250)]
    failed = out.filter(pl.col("status") == "failed")
    assert failed["retriable"].all()
    assert failed["error"][0].startswith("write_failed: Salesforce is unavailable (SERVER_UNAVAILABLE")
    assert failed["error"][-1].startswith("not_written: ")
    assert len([e for e in org.events() if e["Subject"].startswith("Slot")]) == 200


def test_reads_raise_retriable_on_503_and_timeouts(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    sf = connect(sb, timeout=0.3)
    sf.org_info()
    sb.faults.add("http_503", route="/query")
    with pytest.raises(RetriableError, match="unavailable"):
        sf.extract({"ann@example.com": ann}, *WINDOW)
    sb.faults.add("timeout", route="/query", delay_s=0.6)
    with pytest.raises(RetriableError, match="did not answer"):
        sf.extract({"ann@example.com": ann}, *WINDOW)
    assert sf.extract({"ann@example.com": ann}, *WINDOW).height == 0


def test_daily_limit_stops_apply_with_api_limit_exceeded_and_outcomes_for_every_delta(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    sf = connect(sb)
    info = sf.org_info()
    rows = [create_row(ann, f"Slot {i}", dt(2025, 3, 1) + timedelta(hours=i), dt(2025, 3, 1) + timedelta(hours=i, minutes=30))
            for i in range(300)]
    org.set_daily_limit(org.api_calls() + 1)  # room for one more call: the first batch
    with pytest.raises(ApiLimitExceeded, match="daily API request limit is used up") as caught:
        sf.apply(deltas(rows), info)
    out = caught.value.outcomes
    assert out.height == 300
    assert out["status"].value_counts().sort("status").rows() == [("applied", 200), ("failed", 100)]
    assert out.filter(pl.col("status") == "failed")["retriable"].all()
    with pytest.raises(ApiLimitExceeded):
        sf.extract({"ann@example.com": ann}, *WINDOW)


def test_throttling_is_retriable_but_the_daily_limit_is_not(sb):
    # Throttling (the concurrent-request limit) and the daily allocation share REQUEST_LIMIT_EXCEEDED;
    # only the daily one ("TotalRequests") stops the run, throttling is retried.
    ann = sb.org.add_user("ann@example.com")
    sf = connect(sb)
    sf.org_info()
    sb.faults.add("throttle", route="/query")
    with pytest.raises(RetriableError) as exc:
        sf.extract({"ann@example.com": ann}, *WINDOW)
    assert not isinstance(exc.value, ApiLimitExceeded)
    sb.org.set_daily_limit(sb.org.api_calls())
    with pytest.raises(ApiLimitExceeded):
        sf.extract({"ann@example.com": ann}, *WINDOW)


def test_a_create_whose_reply_was_lost_is_retriable_and_found_by_key_on_replay(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    sf = connect(sb)
    info = sf.org_info()
    sb.faults.add("drop_after_write", route="composite/sobjects")
    out = sf.apply(deltas([create_row(ann, "Lost reply", dt(2025, 3, 3, 9), dt(2025, 3, 3, 10))]), info)
    row = out.row(0, named=True)
    assert (row["status"], row["retriable"]) == ("failed", True)
    assert "find_by_key" in row["error"]
    # The write did reach the server: a replay must pair with it rather than create it again.
    assert len(sf.find_by_key(ann, "Lost reply", dt(2025, 3, 3, 9), dt(2025, 3, 3, 10), False)) == 1


def test_a_rejected_session_is_fatal_and_the_message_has_no_secret(sb):
    ann = sb.org.add_user("ann@example.com")
    sf = SalesforceConnector.from_session(sb.instance_url, "00Dbogus!" + "s3cr3t" * 8, session=sb.client_session())
    with pytest.raises(FatalError, match="re-authenticate") as caught:
        sf.extract({"ann@example.com": ann}, *WINDOW)
    assert "s3cr3t" not in str(caught.value) and sb.session_id not in str(caught.value)
    sb.org.expire_session(sb.session_id)
    with pytest.raises(FatalError, match="rejected the session"):
        connect(sb).org_info()


def test_required_custom_field_is_detected_and_creation_skipped(sb):
    org = sb.org
    org.set_required_custom_field("Region")
    ann = org.add_user("ann@example.com")
    existing = org.add_event(ann, "Seeded", dt(2025, 3, 1, 9), dt(2025, 3, 1, 10))
    sf = connect(sb)
    info = sf.org_info()
    assert info.required_fields == ("Region__c",)
    out = sf.apply(
        deltas([create_row(ann, "New", dt(2025, 3, 2, 9), dt(2025, 3, 2, 10)),
                {"op": "update", "target_id": existing, "subject": "Renamed", "start": dt(2025, 3, 1, 9),
                 "end": dt(2025, 3, 1, 10), "is_all_day": False, "description": "", "is_private": False}]),
        info,
    )
    assert out["status"].to_list() == ["skipped", "applied"]
    assert out["error"][0].startswith("required_custom_field: the Event object requires Region__c")
    org.set_required_custom_field(None)
    assert sf.org_info().required_fields == ()


def test_production_logins_jwt_bearer_and_client_credentials(sb):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "calsync")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    sb.org.configure_jwt("jwt-app", cert.public_bytes(serialization.Encoding.PEM), "integration@calsync.sandbox")
    sb.org.configure_client_credentials("cc-app", "cc-secret", "integration@calsync.sandbox")

    jwt_sf = SalesforceConnector.from_jwt(
        "integration@calsync.sandbox", "jwt-app", pem, "login", session=sb.route_login(sb.client_session())
    )
    assert jwt_sf.org_info().shared_activities is True
    cc_sf = SalesforceConnector.from_client_credentials(
        "cc-app", "cc-secret", "acme.my", session=sb.route_login(sb.client_session(), domain="acme.my")
    )
    assert cc_sf.user_ids(["integration@calsync.sandbox"])
    with pytest.raises(FatalError, match="client credentials login at acme.my failed") as caught:
        SalesforceConnector.from_client_credentials(
            "cc-app", "wrong-secret", "acme.my", session=sb.route_login(sb.client_session(), domain="acme.my")
        )
    assert "wrong-secret" not in str(caught.value)
