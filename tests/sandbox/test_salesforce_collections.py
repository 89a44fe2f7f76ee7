"""sObject Collections (composite/sobjects) through simple-salesforce's restful(): create, update, delete."""

from __future__ import annotations

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from .conftest_salesforce import T0, hours, iso, people, sb, sf, sf_server  # noqa: F401

ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}


def event(i: int, owner: str, **extra) -> dict:
    return {"attributes": {"type": "Event"}, "Subject": f"Batch {i}", "OwnerId": owner,
            "StartDateTime": iso(T0 + hours(i)), "EndDateTime": iso(T0 + hours(i) + hours(0.5)), **extra}


def post(sf, records, all_or_none=False):
    return sf.restful("composite/sobjects", method="POST", json={"allOrNone": all_or_none, "records": records})


def count(sf, soql="SELECT COUNT() FROM Event") -> int:
    return sf.query(soql)["totalSize"]


def test_create_200_in_one_call_and_refuse_201(sf, people):
    res = post(sf, [event(i, people.ann) for i in range(200)])
    assert len(res) == 200 and all(r["success"] and r["errors"] == [] for r in res)
    assert len({r["id"] for r in res}) == 200
    subjects = {r["Id"]: r["Subject"] for r in sf.query_all("SELECT Id, Subject FROM Event")["records"]}
    assert [subjects[r["id"]] for r in res[:3]] == ["Batch 0", "Batch 1", "Batch 2"]  # results in request order
    with pytest.raises(SalesforceMalformedRequest) as exc:
        post(sf, [event(i, people.ann) for i in range(201)])
    assert exc.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert count(sf) == 200


def test_partial_success_without_all_or_none(sf, people):
    res = post(sf, [event(0, people.ann), event(1, people.ann, Subject="x" * 300), event(2, people.ann)])
    assert [r["success"] for r in res] == [True, False, True]
    bad = res[1]
    assert "id" not in bad
    assert bad["errors"] == [{"statusCode": "STRING_TOO_LONG",
                              "message": f"Subject: data value too large: {'x' * 300} (max length=255)",
                              "fields": ["Subject"]}]
    assert count(sf) == 2


def test_all_or_none_rolls_everything_back(sf, sb, people):
    records = [event(0, people.ann), event(1, people.ann, DurationInMinutes=5), event(2, people.ann)]
    records.append({"attributes": {"type": "EventRelation"}, "EventId": "00U000000000000EAA",
                    "RelationId": people.carla})
    res = post(sf, records, all_or_none=True)
    assert res[0] == {"success": False, "errors": [ROLLED_BACK]}
    assert res[1]["errors"][0]["statusCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert res[2] == {"success": False, "errors": [ROLLED_BACK]}
    assert res[3]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert count(sf) == 0 and sb.org.events(include_deleted=True) == []


def test_mixed_types_and_invitees_in_one_call(sf, people):
    eid = post(sf, [event(0, people.ann)])[0]["id"]
    res = post(sf, [
        {"attributes": {"type": "EventRelation"}, "EventId": eid, "RelationId": people.bob},
        {"attributes": {"type": "EventRelation"}, "EventId": eid, "RelationId": people.lee, "Status": "Accepted"},
        {"attributes": {"type": "Contact"}, "LastName": "Fresh", "Email": "fresh@x.com"},
    ])
    assert [r["success"] for r in res] == [True, True, True]
    assert [r["id"][:3] for r in res] == ["0RE", "0RE", "003"]
    assert count(sf, "SELECT COUNT() FROM Event WHERE IsChild = true") == 1


def test_update_collection(sf, people):
    ids = [r["id"] for r in post(sf, [event(i, people.ann) for i in range(3)])]
    res = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Event"}, "id": ids[0], "Subject": "renamed"},
        {"attributes": {"type": "Event"}, "Subject": "no id"},
        {"attributes": {"type": "Event"}, "id": ids[2], "IsAllDayEvent": True},
    ]})
    assert res[0] == {"id": ids[0], "success": True, "errors": []}
    assert res[1] == {"success": False, "errors": [{"statusCode": "MISSING_ARGUMENT",
                                                    "message": "Id not specified in an update call", "fields": []}]}
    assert res[2]["success"] is True
    assert sf.Event.get(ids[0])["Subject"] == "renamed"
    # allOrNone: the good update is undone
    res = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Event"}, "id": ids[0], "Subject": "again"},
        {"attributes": {"type": "Event"}, "id": ids[1], "ShowAs": "Sleeping"},
    ]})
    assert res[0] == {"id": ids[0], "success": False, "errors": [ROLLED_BACK]}
    assert "id" not in res[1] and res[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert sf.Event.get(ids[0])["Subject"] == "renamed"


def test_delete_collection(sf, sb, people):
    ids = [r["id"] for r in post(sf, [event(i, people.ann) for i in range(3)])]
    res = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids[:2]), "allOrNone": "false"})
    assert res == [{"id": ids[0], "success": True, "errors": []}, {"id": ids[1], "success": True, "errors": []}]
    res = sf.restful("composite/sobjects", method="DELETE",
                     params={"ids": f"{ids[2]},{ids[0]},garbage", "allOrNone": "true"})
    assert res[0] == {"id": ids[2], "success": False, "errors": [ROLLED_BACK]}
    assert res[1]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert res[2]["errors"][0] == {"statusCode": "MALFORMED_ID", "message": "malformed id garbage", "fields": []}
    assert count(sf) == 1  # the rolled-back delete left ids[2] alive
    child_parent = sb.org.add_event(people.ann, "group", T0, T0 + hours(1), invitee_ids=[people.bob])
    child = sf.query("SELECT Id FROM Event WHERE IsChild = true")["records"][0]["Id"]
    res = sf.restful("composite/sobjects", method="DELETE", params={"ids": f"{child},{child_parent}"})
    assert res[0]["errors"][0]["statusCode"] == "DELETE_FAILED" and res[1]["success"] is True
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join([ids[2]] * 201)})
    assert exc.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_records_need_a_type(sf, people):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="POST", json={"records": [{"Subject": "typeless"}]})
    assert exc.value.content[0]["errorCode"] == "INVALID_TYPE"
