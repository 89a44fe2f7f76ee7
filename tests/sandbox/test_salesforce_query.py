"""SOQL through simple-salesforce: select lists, relationships, filters, ordering, paging, errors."""

from __future__ import annotations

import pytest
from simple_salesforce import format_soql
from simple_salesforce.exceptions import SalesforceMalformedRequest

from .conftest_salesforce import T0, hours, people, sb, sf, sf_server  # noqa: F401


def _error(excinfo) -> dict:
    body = excinfo.value.content
    assert isinstance(body, list) and len(body) == 1
    return body[0]


@pytest.fixture
def meeting(sb, people):
    """Ann's group event: Carla (contact, also the Who), Lee (lead) and Bob (user) invited."""
    org = sb.org
    eid = org.add_event(people.ann, "Quarterly review", T0, T0 + hours(1), description="agenda",
                        invitee_ids=[people.carla, people.lee, people.bob], who_ids=[people.carla])
    org.set_relation_status(eid, people.carla, "Accepted")
    return eid


def test_select_parent_fields_and_child_subquery(sf, people, meeting):
    soql = ("SELECT Id, Subject, StartDateTime, EndDateTime, ActivityDate, DurationInMinutes, IsAllDayEvent, "
            "Owner.Email, Who.Email, Who.Type, IsChild, "
            "(SELECT RelationId, Relation.Email, Relation.Type, Status, RespondedDate, IsInvitee "
            "FROM EventRelations ORDER BY Relation.Email) "
            "FROM Event WHERE IsChild = false")
    res = sf.query_all(soql)
    assert res["totalSize"] == 1
    ev = res["records"][0]
    assert ev["attributes"] == {"type": "Event", "url": f"/services/data/v59.0/sobjects/Event/{meeting}"}
    assert ev["StartDateTime"] == "2026-11-24T09:00:00.000+0000"
    assert ev["EndDateTime"] == "2026-11-24T10:00:00.000+0000"
    assert ev["ActivityDate"] == "2026-11-24"
    assert ev["DurationInMinutes"] == 60 and ev["IsAllDayEvent"] is False
    assert ev["Owner"]["Email"] == "ann@example.com"
    assert ev["Who"]["attributes"]["type"] == "Name"
    assert ev["Who"]["attributes"]["url"].endswith(f"/sobjects/Contact/{people.carla}")
    assert (ev["Who"]["Email"], ev["Who"]["Type"]) == ("carla@customer.com", "Contact")
    rels = ev["EventRelations"]
    assert rels["totalSize"] == 3 and rels["done"] is True
    got = [(r["Relation"]["Email"], r["Relation"]["Type"], r["Status"]) for r in rels["records"]]
    assert got == [("bob@example.com", "User", "New"), ("carla@customer.com", "Contact", "Accepted"),
                   ("lee@prospect.com", "Lead", "New")]
    carla = rels["records"][1]
    assert carla["RespondedDate"] == "2026-11-20T08:00:00.000+0000"  # the sandbox clock
    assert all(r["IsInvitee"] for r in rels["records"])


def test_child_event_for_invited_user_and_empty_subquery_is_null(sf, people, meeting):
    res = sf.query_all("SELECT Id, OwnerId, IsChild, IsGroupEvent, GroupEventType, Subject, "
                       "(SELECT Id FROM EventRelations) FROM Event ORDER BY IsChild")
    parent, child = res["records"]
    assert (parent["IsChild"], child["IsChild"]) == (False, True)
    assert child["OwnerId"] == people.bob and child["Subject"] == "Quarterly review"
    assert parent["IsGroupEvent"] and child["IsGroupEvent"] and child["GroupEventType"] == "1"
    assert child["EventRelations"] is None  # relations always point at the parent


def test_where_boolean_logic_comparisons_in_like_null(sf, sb, people):
    org = sb.org
    a = org.add_event(people.ann, "Alpha call", T0, T0 + hours(1))
    b = org.add_event(people.ann, "beta Review", T0 + hours(2), T0 + hours(3), description="x")
    c = org.add_event(people.bob, "Gamma", T0 + hours(24), T0 + hours(25), who_id=people.dan)

    def ids(where: str) -> set[str]:
        return {r["Id"] for r in sf.query_all(f"SELECT Id FROM Event WHERE {where}")["records"]}

    assert ids("StartDateTime >= 2026-11-24T10:00:00Z") == {b, c}
    assert ids("StartDateTime < 2026-11-24T11:00:00.000+0000") == {a}
    assert ids("ActivityDate = 2026-11-25") == {c}
    assert ids("ActivityDate != 2026-11-25") == {a, b}
    assert ids("Subject LIKE 'BETA%'") == {b}  # LIKE is case-insensitive
    assert ids("Subject = 'alpha CALL'") == {a}  # so is =
    assert ids("Subject LIKE '_amma'") == {c}
    assert ids("WhoId = null") == {a, b}
    assert ids("WhoId != NULL") == {c}
    assert ids(f"OwnerId IN ('{people.ann}', '{people.bob[:15]}')") == {a, b, c}  # 15-char ids work too
    assert ids(f"OwnerId NOT IN ('{people.ann}')") == {c}
    assert ids("(Subject = 'Gamma' OR Subject LIKE 'Alpha%') AND NOT StartDateTime > 2026-11-24T12:00:00Z") == {a}
    assert ids("IsAllDayEvent = false AND IsPrivate = FALSE AND IsChild = false") == {a, b, c}
    assert ids("DurationInMinutes > 30") == {a, b, c}
    assert ids("Who.Email = 'DAN@customer.com' AND Owner.Email LIKE 'bob%'") == {c}


def test_mixing_and_or_without_parentheses_is_malformed(sf, sb):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Event WHERE Subject = 'a' AND Subject = 'b' OR Subject = 'c'")
    err = _error(exc)
    assert err["errorCode"] == "MALFORMED_QUERY"
    assert "unexpected token: OR" in err["message"]
    assert "ERROR at Row:1:Column:60" in err["message"]


def test_order_by_limit_offset(sf, sb, people):
    org = sb.org
    for i, subj in enumerate(["b", "A", "c", "D"]):
        org.add_event(people.ann, subj, T0 + hours(i), T0 + hours(i + 1), description=None if i % 2 else "d")
    rec = sf.query_all("SELECT Subject FROM Event ORDER BY Subject DESC")["records"]
    assert [r["Subject"] for r in rec] == ["D", "c", "b", "A"]  # case-insensitive sort
    rec = sf.query_all("SELECT Subject FROM Event ORDER BY Subject ASC LIMIT 2 OFFSET 1")["records"]
    assert [r["Subject"] for r in rec] == ["b", "c"]
    rec = sf.query_all("SELECT Subject, Location FROM Event ORDER BY Location NULLS LAST, StartDateTime DESC")["records"]
    assert [r["Subject"] for r in rec] == ["D", "c", "A", "b"]
    rec = sf.query_all("SELECT Subject, Owner.Name FROM Event ORDER BY Owner.Name, Subject LIMIT 1")["records"]
    assert rec[0]["Subject"] == "A" and rec[0]["Owner"]["Name"] == "Ann Archer"


def test_paging_at_2000_rows_and_query_all(sf, sb, people):
    org = sb.org
    for i in range(4100):
        org.add_event(people.ann, f"E{i:04d}", T0 + hours(i), T0 + hours(i) + hours(0.5))
    first = sf.query("SELECT Id, Subject FROM Event ORDER BY Subject")
    assert first["totalSize"] == 4100 and first["done"] is False and len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-2000")
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert second["records"][0]["Subject"] == "E2000" and second["done"] is False
    everything = sf.query_all("SELECT Id, Subject FROM Event ORDER BY Subject")
    assert everything["totalSize"] == 4100
    assert [r["Subject"] for r in everything["records"]] == [f"E{i:04d}" for i in range(4100)]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query_more("01gnonsense-2000")
    assert _error(exc)["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_query_all_sees_deleted_rows(sf, sb, people):
    keep = sb.org.add_event(people.ann, "keep", T0, T0 + hours(1))
    gone = sb.org.add_event(people.ann, "gone", T0, T0 + hours(1), invitee_ids=[people.carla])
    sf.Event.delete(gone)
    live = sf.query_all("SELECT Id FROM Event")["records"]
    assert [r["Id"] for r in live] == [keep]
    every = sf.query_all("SELECT Id, IsDeleted, (SELECT Id, IsDeleted FROM EventRelations) FROM Event "
                         "ORDER BY Subject", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in every] == [(gone, True), (keep, False)]
    assert every[0]["EventRelations"]["records"][0]["IsDeleted"] is True
    deleted_rels = sf.query_all("SELECT Id FROM EventRelation WHERE IsDeleted = true", include_deleted=True)
    assert deleted_rels["totalSize"] == 1


def test_count_and_format_soql_quoting(sf, sb, people):
    sb.org.add_event(people.ann, "O'Brien's kickoff", T0, T0 + hours(1))
    sb.org.add_event(people.ann, "Other", T0, T0 + hours(1))
    res = sf.query(format_soql("SELECT Id, Subject FROM Event WHERE Subject = {}", "O'Brien's kickoff"))
    assert [r["Subject"] for r in res["records"]] == ["O'Brien's kickoff"]
    counted = sf.query("SELECT COUNT() FROM Event")
    assert counted["totalSize"] == 2 and counted["records"] == []


@pytest.mark.parametrize(
    "soql, code, text",
    [
        ("SELECT Id FROM Meeting", "INVALID_TYPE",
         "sObject type 'Meeting' is not supported. If you are attempting to use a custom object, be sure to append "
         "the '__c' after the entity name."),
        ("SELECT Id, Colour FROM Event", "INVALID_FIELD",
         "No such column 'Colour' on entity 'Event'. If you are attempting to use a custom field, be sure to append "
         "the '__c' after the custom field name."),
        ("SELECT Id, Boss.Email FROM Event", "INVALID_FIELD", "Didn't understand relationship 'Boss' in field path."),
        ("SELECT Id, Who.Company FROM Event", "INVALID_FIELD", "No such column 'Company' on entity 'Name'."),
        ("SELECT Id, (SELECT Id FROM Attendees) FROM Event", "INVALID_TYPE",
         "Didn't understand relationship 'Attendees' in FROM part of query call."),
        ("SELECT Id Event", "MALFORMED_QUERY", "unexpected token: Event"),
        ("SELECT Id FROM Event WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT Id FROM Event WHERE Subject = 'open", "MALFORMED_QUERY", "no viable alternative at character"),
        ("SELECT Id FROM Event LIMIT 5 extra", "MALFORMED_QUERY", "unexpected token: extra"),
        ("SELECT Id, Subject, subject FROM Event", "MALFORMED_QUERY", "duplicate field selected: subject"),
        ("SELECT Id FROM Event WHERE StartDateTime > '2026-11-24'", "INVALID_FIELD",
         "value of filter criterion for field 'StartDateTime' must be of type dateTime and should not be enclosed in quotes"),
        ("SELECT Id FROM Event WHERE ActivityDate = 2026-11-24T00:00:00Z", "INVALID_FIELD",
         "must be of type date"),
        ("SELECT Id FROM Event WHERE IsChild = 'false'", "INVALID_FIELD", "must be of type boolean"),
        ("SELECT Id FROM Event WHERE OwnerId = 'not-an-id'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID field: not-an-id"),
        ("SELECT Id FROM Event WHERE Description = 'x'", "INVALID_FIELD",
         "field 'Description' can not be filtered in a query call"),
    ],
)
def test_query_errors(sf, soql, code, text):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(soql)
    err = _error(exc)
    assert exc.value.status == 400
    assert err["errorCode"] == code
    assert text in err["message"]
    assert "ERROR at Row:1:Column:" in err["message"]


def test_error_message_points_at_the_token(sf):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id, Colour FROM Event")
    msg = _error(exc)["message"]
    lines = msg.split("\n")
    assert lines[1] == "SELECT Id, Colour FROM Event"
    assert lines[2] == "           ^"
    assert lines[3] == "ERROR at Row:1:Column:12"


def test_shared_activities_on_exposes_who_relations(sf, sb, people):
    eid = sb.org.add_event(people.ann, "Demo", T0, T0 + hours(1), who_ids=[people.carla, people.dan],
                           invitee_ids=[people.dan])
    ev = sf.query_all("SELECT WhoId, EventWhoIds, (SELECT RelationId, Type FROM EventWhoRelations) "
                      f"FROM Event WHERE Id = '{eid}'")["records"][0]
    assert ev["WhoId"] == people.carla
    assert ev["EventWhoIds"] == [people.carla, people.dan]
    assert {r["RelationId"] for r in ev["EventWhoRelations"]["records"]} == {people.carla, people.dan}
    rows = sf.query_all("SELECT RelationId, IsParent, IsInvitee, IsWhat FROM EventRelation ORDER BY RelationId")
    flags = {r["RelationId"]: (r["IsParent"], r["IsInvitee"], r["IsWhat"]) for r in rows["records"]}
    assert flags == {people.carla: (True, False, False), people.dan: (True, True, False)}
    who = sf.query_all("SELECT EventId, Relation.Email, Type FROM EventWhoRelation ORDER BY Relation.Email")
    assert [(r["Relation"]["Email"], r["Type"]) for r in who["records"]] == [
        ("carla@customer.com", "Contact"), ("dan@customer.com", "Contact")]


@pytest.mark.parametrize(
    "soql, code",
    [
        ("SELECT Id FROM EventWhoRelation", "INVALID_TYPE"),
        ("SELECT Id, EventWhoIds FROM Event", "INVALID_FIELD"),
        ("SELECT Id, IsParent FROM EventRelation", "INVALID_FIELD"),
        ("SELECT Id, (SELECT Id FROM EventWhoRelations) FROM Event", "INVALID_TYPE"),
    ],
)
def test_shared_activities_off_hides_its_schema(sf, sb, soql, code):
    sb.org.set_shared_activities(False)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(soql)
    assert _error(exc)["errorCode"] == code
