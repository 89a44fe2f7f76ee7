"""sObject rows and describe through simple-salesforce: Event rules, invitees, Who relations, switches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from .conftest_salesforce import NOW, T0, client, hours, iso, people, sb, sf, sf_server  # noqa: F401


def _error(excinfo) -> dict:
    body = excinfo.value.content
    assert isinstance(body, list) and len(body) == 1
    return body[0]


def _create_fails(sf: Salesforce, body: dict, code: str, obj: str = "Event") -> dict:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        getattr(sf, obj).create(body)
    err = _error(exc)
    assert err["errorCode"] == code, err
    return err


def timed(owner: str, start=T0, minutes: int | None = 60, **extra) -> dict:
    body = {"Subject": "Sync", "StartDateTime": iso(start), "OwnerId": owner, **extra}
    if minutes is not None:
        body["DurationInMinutes"] = minutes
    return body


def test_event_round_trip_and_clock_stamps(sf, sb, people):
    res = sf.Event.create(timed(people.ann, Description="notes", IsPrivate=True, Location="Room 1"))
    assert res["success"] is True and res["errors"] == [] and res["id"].startswith("00U") and len(res["id"]) == 18
    ev = sf.Event.get(res["id"])
    assert ev["attributes"]["type"] == "Event"
    assert (ev["Subject"], ev["Description"], ev["IsPrivate"], ev["Location"]) == ("Sync", "notes", True, "Room 1")
    assert ev["EndDateTime"] == "2026-11-24T10:00:00.000+0000"
    assert ev["ActivityDateTime"] == ev["StartDateTime"] == "2026-11-24T09:00:00.000+0000"
    assert ev["CreatedDate"] == ev["LastModifiedDate"] == ev["SystemModstamp"] == iso(NOW)
    assert ev["ShowAs"] == "Busy" and ev["IsChild"] is False and ev["IsDeleted"] is False
    sb.clock.advance(timedelta(minutes=5))
    assert sf.Event.update(res["id"], {"Subject": "Sync v2", "StartDateTime": iso(T0 + hours(2))}) == 204
    ev = sf.Event.get(res["id"])
    assert ev["Subject"] == "Sync v2"
    assert ev["EndDateTime"] == iso(T0 + hours(3))  # the duration is kept when only the start moves
    assert ev["LastModifiedDate"] == ev["SystemModstamp"] == iso(NOW + timedelta(minutes=5))
    assert ev["CreatedDate"] == iso(NOW)
    part = sf.Event.get(res["id"][:15] + "?fields=Subject,DurationInMinutes")  # 15-char ids work
    assert set(part) == {"attributes", "Subject", "DurationInMinutes"}
    assert sf.Event.delete(res["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Event.get(res["id"])
    assert _error(exc)["errorCode"] == "NOT_FOUND"
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Event.delete(res["id"])
    assert _error(exc)["errorCode"] == "ENTITY_IS_DELETED"


def test_owner_defaults_to_the_session_user(sf, sb, people):
    eid = sf.Event.create({"Subject": "mine", "StartDateTime": iso(T0), "EndDateTime": iso(T0 + hours(1))})["id"]
    assert sf.Event.get(eid)["OwnerId"] == sb.org.api_user_id


def test_field_lengths(sf, people):
    err = _create_fails(sf, timed(people.ann, Subject="x" * 256), "STRING_TOO_LONG")
    assert err["fields"] == ["Subject"]
    assert err["message"] == f"Subject: data value too large: {'x' * 256} (max length=255)"
    assert sf.Event.create(timed(people.ann, Subject="x" * 255))["success"]
    err = _create_fails(sf, timed(people.ann, Description="d" * 32001), "STRING_TOO_LONG")
    assert err["fields"] == ["Description"] and err["message"].endswith("(max length=32000)")
    eid = sf.Event.create(timed(people.ann, Description="d" * 32000))["id"]
    assert len(sf.Event.get(eid)["Description"]) == 32000


def test_duration_rules(sf, people):
    two_weeks = 14 * 24 * 60
    assert sf.Event.create(timed(people.ann, minutes=two_weeks))["success"]
    err = _create_fails(sf, timed(people.ann, minutes=two_weeks + 1), "FIELD_INTEGRITY_EXCEPTION")
    assert err["fields"] == ["DurationInMinutes"]
    assert err["message"].startswith("Duration must be between 0 and 20160 minutes")
    err = _create_fails(sf, timed(people.ann, minutes=None, EndDateTime=iso(T0 - hours(1))),
                        "FIELD_INTEGRITY_EXCEPTION")
    assert err["fields"] == ["DurationInMinutes"]
    _create_fails(sf, timed(people.ann, minutes=None, EndDateTime=iso(T0 + timedelta(days=15))),
                  "FIELD_INTEGRITY_EXCEPTION")
    err = _create_fails(sf, timed(people.ann, minutes=30, EndDateTime=iso(T0 + hours(1))), "FIELD_INTEGRITY_EXCEPTION")
    assert set(err["fields"]) == {"DurationInMinutes", "EndDateTime"}
    assert sf.Event.create(timed(people.ann, minutes=60, EndDateTime=iso(T0 + hours(1))))["success"]
    err = _create_fails(sf, timed(people.ann, minutes=None), "REQUIRED_FIELD_MISSING")
    assert err["message"] == "Required fields are missing: [DurationInMinutes]"
    err = _create_fails(sf, {"Subject": "no start", "DurationInMinutes": 30}, "REQUIRED_FIELD_MISSING")
    assert err["fields"] == ["StartDateTime"]
    eid = sf.Event.create(timed(people.ann))["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Event.update(eid, {"DurationInMinutes": 20161})
    assert _error(exc)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert sf.Event.get(eid)["DurationInMinutes"] == 60  # nothing written


def test_all_day_events(sf, sb, people):
    one = sf.Event.create({"Subject": "Offsite", "IsAllDayEvent": True, "ActivityDate": "2026-11-24"})["id"]
    ev = sf.Event.get(one)
    assert ev["StartDateTime"] == ev["EndDateTime"] == "2026-11-24T00:00:00.000+0000"  # inclusive end
    assert (ev["DurationInMinutes"], ev["ActivityDate"], ev["IsAllDayEvent"]) == (1440, "2026-11-24", True)
    two = sf.Event.create({"Subject": "Trade fair", "IsAllDayEvent": True, "ActivityDate": "2026-11-24",
                           "DurationInMinutes": 2880})["id"]
    ev = sf.Event.get(two)
    assert ev["EndDateTime"] == "2026-11-25T00:00:00.000+0000" and ev["EndDate"] == "2026-11-25"
    three = sf.Event.create({"Subject": "Holiday", "IsAllDayEvent": True, "StartDateTime": "2026-11-24T00:00:00Z",
                             "EndDateTime": "2026-11-26T00:00:00Z"})["id"]
    assert sf.Event.get(three)["DurationInMinutes"] == 3 * 1440
    err = _create_fails(sf, {"Subject": "x", "IsAllDayEvent": True, "ActivityDate": "2026-11-24",
                             "DurationInMinutes": 90}, "FIELD_INTEGRITY_EXCEPTION")
    assert err["fields"] == ["DurationInMinutes"]
    _create_fails(sf, {"Subject": "x", "IsAllDayEvent": True, "ActivityDate": "2026-11-24",
                       "StartDateTime": "2026-11-25T00:00:00Z"}, "FIELD_INTEGRITY_EXCEPTION")
    _create_fails(sf, {"Subject": "x", "IsAllDayEvent": True, "ActivityDate": "2026-11-24",
                       "DurationInMinutes": 15 * 1440}, "FIELD_INTEGRITY_EXCEPTION")
    _create_fails(sf, {"Subject": "x", "IsAllDayEvent": True}, "REQUIRED_FIELD_MISSING")
    # switching a timed event to all-day snaps it to midnight GMT of its date
    eid = sf.Event.create(timed(people.ann, start=T0 + hours(14)))["id"]
    sf.Event.update(eid, {"IsAllDayEvent": True})
    ev = sf.Event.get(eid)
    assert (ev["StartDateTime"], ev["DurationInMinutes"]) == ("2026-11-24T00:00:00.000+0000", 1440)
    day = T0.replace(hour=0)
    one = sb.org.add_event(people.ann, "seed 1d", day, day, is_all_day=True)
    two = sb.org.add_event(people.ann, "seed 2d", day, day + timedelta(days=1), is_all_day=True)
    assert [sf.Event.get(i)["DurationInMinutes"] for i in (one, two)] == [1440, 2880]


@pytest.mark.parametrize(
    "extra, code, fields",
    [
        ({"Colour": "red"}, "INVALID_FIELD", ["Colour"]),
        ({"IsChild": True}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["IsChild"]),
        ({"CreatedDate": "2026-01-01T00:00:00Z", "IsGroupEvent": True}, "INVALID_FIELD_FOR_INSERT_UPDATE",
         ["CreatedDate", "IsGroupEvent"]),
        ({"StartDateTime": "tomorrow"}, "JSON_PARSER_ERROR", ["StartDateTime"]),
        ({"ShowAs": "Maybe"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["ShowAs"]),
        ({"WhoId": "nonsense"}, "MALFORMED_ID", ["WhoId"]),
        ({"OwnerId": "005000000000000AAA"}, "INVALID_CROSS_REFERENCE_KEY", ["OwnerId"]),
        ({"Id": "00U000000000000AAA"}, "INVALID_FIELD", ["Id"]),
    ],
)
def test_rejected_fields(sf, people, extra, code, fields):
    err = _create_fails(sf, timed(people.ann, **extra), code)
    assert err["fields"] == fields


def test_who_must_be_contact_or_lead(sf, people):
    err = _create_fails(sf, timed(people.ann, WhoId=people.bob), "FIELD_INTEGRITY_EXCEPTION")
    assert err["message"] == f"Name ID: id value of incorrect type: {people.bob}"
    eid = sf.Event.create(timed(people.ann, WhoId=people.lee))["id"]
    assert sf.Event.get(eid)["WhoId"] == people.lee


def test_unknown_object_and_read_only_object(sf, people):
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Meeting.create({"Name": "x"})
    assert _error(exc)["errorCode"] == "NOT_FOUND"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.EventWhoRelation.create({"EventId": "00U000000000000AAA", "RelationId": people.carla})
    assert _error(exc)["errorCode"] == "INVALID_TYPE_FOR_OPERATION"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Event.get("nonsense")


def test_api_versions_before_59_are_not_served(sb):
    old = client(sb, version="58.0")
    with pytest.raises(SalesforceResourceNotFound):
        old.query("SELECT Id FROM Event")
    assert client(sb, version="62.0").query("SELECT Id FROM Event")["totalSize"] == 0


def test_invitees_through_event_relation(sf, sb, people):
    eid = sf.Event.create(timed(people.ann))["id"]
    rel_user = sf.EventRelation.create({"EventId": eid, "RelationId": people.bob, "IsInvitee": True})["id"]
    assert rel_user.startswith("0RE")
    rel_contact = sf.EventRelation.create({"EventId": eid, "RelationId": people.carla})["id"]
    rows = sf.query_all("SELECT Id, OwnerId, IsChild FROM Event ORDER BY IsChild")["records"]
    assert [(r["OwnerId"], r["IsChild"]) for r in rows] == [(people.ann, False), (people.bob, True)]
    child = rows[1]["Id"]
    assert sf.Event.get(eid)["IsGroupEvent"] is True
    # duplicates, child events and bad statuses are refused
    err = _create_fails(sf, {"EventId": eid, "RelationId": people.carla}, "DUPLICATE_VALUE", "EventRelation")
    assert rel_contact in err["message"]
    _create_fails(sf, {"EventId": child, "RelationId": people.dan}, "FIELD_INTEGRITY_EXCEPTION", "EventRelation")
    err = _create_fails(sf, {"EventId": eid, "RelationId": people.dan, "Status": "Maybe"},
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "EventRelation")
    assert err["message"] == "Status: bad value for restricted picklist field: Maybe"
    # a response stamps RespondedDate from the clock
    sb.clock.advance(timedelta(hours=1))
    sf.EventRelation.update(rel_contact, {"Status": "Declined", "Response": "busy"})
    rel = sf.EventRelation.get(rel_contact)
    assert (rel["Status"], rel["Response"], rel["RespondedDate"]) == ("Declined", "busy", iso(NOW + hours(1)))
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.EventRelation.update(rel_contact, {"EventId": eid})
    assert _error(exc)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    # removing the user invitee removes their copy
    sf.EventRelation.delete(rel_user)
    assert [r["Id"] for r in sf.query_all("SELECT Id FROM Event")["records"]] == [eid]


def test_child_events_follow_the_parent_and_cannot_be_edited(sf, sb, people):
    eid = sb.org.add_event(people.ann, "Planning", T0, T0 + hours(1), invitee_ids=[people.bob, people.carla])
    child = sf.query_all("SELECT Id FROM Event WHERE IsChild = true")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Event.update(child, {"Subject": "mine now"})
    err = _error(exc)
    assert err["errorCode"] == "FIELD_INTEGRITY_EXCEPTION" and err["fields"] == ["Subject"]
    assert sf.Event.update(child, {"IsReminderSet": True, "ReminderDateTime": iso(T0 - hours(1))}) == 204
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Event.delete(child)
    assert _error(exc)["errorCode"] == "DELETE_FAILED"
    sf.Event.update(eid, {"Subject": "Planning (moved)", "StartDateTime": iso(T0 + hours(4))})
    c = sf.Event.get(child)
    assert (c["Subject"], c["StartDateTime"], c["IsReminderSet"]) == ("Planning (moved)", iso(T0 + hours(4)), True)
    sf.Event.delete(eid)
    left = sf.query_all("SELECT Id FROM Event")["totalSize"] + sf.query_all("SELECT Id FROM EventRelation")["totalSize"]
    assert left == 0
    gone = sf.query_all("SELECT Id FROM Event WHERE IsDeleted = true", include_deleted=True)["totalSize"]
    assert gone == 2


def test_shared_activities_who_limits(sf, sb, people):
    org = sb.org
    contacts = [org.add_contact(f"c{i}@x.com", f"C{i}") for i in range(51)]
    eid = sf.Event.create(timed(people.ann, EventWhoIds=contacts[:50]))["id"]
    ev = sf.Event.get(eid)
    assert ev["WhoId"] == contacts[0] and len(ev["EventWhoIds"]) == 50
    err = _create_fails(sf, timed(people.ann, EventWhoIds=contacts), "FIELD_INTEGRITY_EXCEPTION")
    assert err["fields"] == ["EventWhoIds"]
    _create_fails(sf, timed(people.ann, EventWhoIds=[people.lee, people.carla]), "FIELD_INTEGRITY_EXCEPTION")
    lead2 = org.add_lead("l2@x.com", "L2")
    _create_fails(sf, timed(people.ann, EventWhoIds=[people.lee, lead2]), "FIELD_INTEGRITY_EXCEPTION")
    # relating a contact with IsParent through EventRelation
    solo = sf.Event.create(timed(people.ann))["id"]
    sf.EventRelation.create({"EventId": solo, "RelationId": people.dan, "IsParent": True})
    ev = sf.Event.get(solo)
    assert ev["WhoId"] == people.dan and ev["EventWhoIds"] == [people.dan]
    rel = sf.query_all(f"SELECT IsInvitee, IsParent FROM EventRelation WHERE EventId = '{solo}'")["records"][0]
    assert (rel["IsInvitee"], rel["IsParent"]) == (False, True)
    # replacing the Who set through EventWhoIds
    sf.Event.update(solo, {"EventWhoIds": [people.carla]})
    ev = sf.Event.get(solo)
    assert ev["WhoId"] == people.carla and ev["EventWhoIds"] == [people.carla]


def test_shared_activities_off(sf, sb, people):
    sb.org.set_shared_activities(False)
    err = _create_fails(sf, timed(people.ann, EventWhoIds=[people.carla]), "INVALID_FIELD")
    assert err["message"] == "No such column 'EventWhoIds' on sobject of type Event"
    eid = sf.Event.create(timed(people.ann, WhoId=people.carla))["id"]
    assert sf.Event.get(eid)["WhoId"] == people.carla
    _create_fails(sf, {"EventId": eid, "RelationId": people.dan, "IsParent": True}, "INVALID_FIELD", "EventRelation")
    assert "EventWhoIds" not in {f["name"] for f in sf.Event.describe()["fields"]}
    with pytest.raises(SalesforceResourceNotFound):
        sf.EventWhoRelation.describe()


def test_required_custom_field_switch(sf, sb, people):
    sb.org.set_required_custom_field("Region")
    err = _create_fails(sf, timed(people.ann), "REQUIRED_FIELD_MISSING")
    assert err == {"message": "Required fields are missing: [Region__c]", "errorCode": "REQUIRED_FIELD_MISSING",
                   "fields": ["Region__c"]}
    eid = sf.Event.create(timed(people.ann, Region__c="EMEA"))["id"]
    assert sf.Event.get(eid)["Region__c"] == "EMEA"
    field = next(f for f in sf.Event.describe()["fields"] if f["name"] == "Region__c")
    assert (field["nillable"], field["createable"], field["custom"], field["defaultedOnCreate"]) == (
        False, True, True, False)


def test_describe(sf):
    d = sf.Event.describe()
    assert (d["name"], d["keyPrefix"], d["createable"], d["queryable"]) == ("Event", "00U", True, True)
    f = {x["name"]: x for x in d["fields"]}
    assert (f["Subject"]["type"], f["Subject"]["length"]) == ("string", 255)
    assert (f["Description"]["type"], f["Description"]["length"]) == ("textarea", 32000)
    assert f["IsChild"]["createable"] is False and f["IsChild"]["updateable"] is False
    assert f["WhoId"]["referenceTo"] == ["Contact", "Lead"] and f["WhoId"]["relationshipName"] == "Who"
    assert f["WhoId"]["polymorphicForeignKey"] is True
    assert "EventWhoIds" in f and "Region__c" not in f
    assert {c["relationshipName"] for c in d["childRelationships"]} == {"EventRelations", "EventWhoRelations"}
    er = {x["name"]: x for x in sf.EventRelation.describe()["fields"]}
    status = er["Status"]
    assert [p["value"] for p in status["picklistValues"]] == ["New", "Declined", "Accepted"]
    assert [p["value"] for p in status["picklistValues"] if p["defaultValue"]] == ["New"]
    assert status["restrictedPicklist"] is True
    assert {"IsParent", "IsWhat", "IsInvitee", "RespondedDate", "Response"} <= er.keys()
    ewr = sf.EventWhoRelation.describe()
    assert ewr["createable"] is False and ewr["keyPrefix"] == "0RE"
    glob = sf.describe()
    assert {o["name"] for o in glob["sobjects"]} == {"Event", "EventRelation", "EventWhoRelation", "Contact",
                                                    "Lead", "User"}
    for obj, prefix in (("Contact", "003"), ("Lead", "00Q"), ("User", "005")):
        assert getattr(sf, obj).describe()["keyPrefix"] == prefix


def test_contacts_leads_users_are_queryable(sf, people):
    rows = sf.query_all("SELECT Id, Name, FirstName, LastName, Email, Owner.Email FROM Contact ORDER BY Email")
    assert [(r["Name"], r["Email"]) for r in rows["records"]] == [
        ("Carla Cruz", "carla@customer.com"), ("Dan Diaz", "dan@customer.com")]
    assert rows["records"][0]["Owner"]["Email"] == "ann@example.com"
    lead = sf.query_all("SELECT Company, Email FROM Lead")["records"][0]
    assert (lead["Company"], lead["Email"]) == ("Prospect Inc", "lee@prospect.com")
    users = sf.query_all("SELECT Id, Email, IsActive FROM User WHERE Email LIKE '%@example.com' ORDER BY Email")
    assert [u["Email"] for u in users["records"]] == ["ann@example.com", "bob@example.com"]
    c = sf.Contact.create({"LastName": "New", "Email": "new@x.com"})["id"]
    assert c.startswith("003")
    _create_fails(sf, {"Email": "nolast@x.com"}, "REQUIRED_FIELD_MISSING", "Contact")
