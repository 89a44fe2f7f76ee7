"""Salesforce sandbox counts (``counts()``, control ``GET /_sandbox/calls``): calls by operation, SOQL queries,
pages and rows per sObject, records written per operation and sObject. The end-to-end benchmark's ideal counts
are computed from them."""

from __future__ import annotations

import requests

from sandbox.salesforce.server import soql_object

from .conftest_salesforce import T0, client, hours, iso, people, sb, sf, sf_server  # noqa: F401


def _control(sb, method: str, route: str) -> dict:
    s = requests.Session()
    s.trust_env, s.verify = False, str(sb.ca_file)
    return s.request(method, f"{sb.instance_url}/_sandbox/{route}", timeout=10).json()


def _event(owner: str, subject: str, n: int = 0) -> dict:
    return {"attributes": {"type": "Event"}, "OwnerId": owner, "Subject": subject,
            "StartDateTime": iso(T0 + hours(n)), "EndDateTime": iso(T0 + hours(n + 1))}


def test_calls_are_counted_by_operation_and_queries_by_sobject(sb, sf, people):
    for i in range(250):
        sb.org.add_contact(f"c{i:03d}@customer.com", f"Person{i}")
    sb.reset_counts()
    s = sb.client_session()
    headers = {"Authorization": f"Bearer {sb.session_id}", "Sforce-Query-Options": "batchSize=200"}
    first = s.get(f"{sb.instance_url}/services/data/v59.0/query", params={"q": "SELECT Id, Email FROM Contact"},
                  headers=headers, timeout=10).json()
    assert first["totalSize"] == 252 and not first["done"]
    s.get(sb.instance_url + first["nextRecordsUrl"], headers=headers, timeout=10)
    sf.query("SELECT Id FROM Lead WHERE Email = 'nobody@nowhere.example'")  # no rows: still one query, one page
    sf.Event.describe()
    counts = sb.counts()
    assert counts["calls"] == 4
    assert counts["calls_by_operation"] == {"query": 2, "queryMore": 1, "describe": 1}
    assert counts["queries"] == {"Contact": {"queries": 1, "pages": 2, "rows": 252},
                                 "Lead": {"queries": 1, "pages": 1, "rows": 0}}
    assert _control(sb, "GET", "calls") == counts


def test_records_written_per_operation_and_sobject(sb, sf, people):
    sb.reset_counts()
    created = sf.restful("composite/sobjects", method="POST", json={
        "allOrNone": False, "records": [_event(people.ann, f"E{i}", i) for i in range(3)]})
    ids = [r["id"] for r in created]
    sf.Event.create({k: v for k, v in _event(people.bob, "single").items() if k != "attributes"})
    sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Event"}, "id": ids[0], "Subject": "moved"}]})
    sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids[1:])})
    counts = sb.counts()
    assert counts["records_written"] == {"create Event": 4, "update Event": 1, "delete Event": 2}
    assert counts["calls_by_operation"] == {"collection create": 1, "create": 1, "collection update": 1,
                                            "collection delete": 1}
    _control(sb, "POST", "reset")
    assert sb.counts() == {"calls": 0, "calls_by_operation": {}, "queries": {}, "records_written": {}}


def test_a_query_is_counted_under_its_outer_from():
    assert soql_object("SELECT Id, (SELECT RelationId FROM EventRelations) FROM Event WHERE Id != null") == "Event"
    assert soql_object("select EventId, Event.Subject from EventRelation where IsInvitee = true") == "EventRelation"
