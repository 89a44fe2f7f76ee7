"""The sandbox's replies held against response bodies quoted from Salesforce's documentation.

Ids differ, so each test swaps the documented ids for ours and compares the rest exactly (or, for
query pages, compares keys, key order and value formats).
"""

from __future__ import annotations

import json
import re

from .conftest_salesforce import T0, hours, people, sb, sf, sf_server  # noqa: F401

# "Query More Results", REST API Developer Guide, example response body (first record shown):
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api/resources_query_more_results.htm
QUERY_MORE_DOC = json.loads("""
{
  "totalSize": 3222,
  "done": false,
  "nextRecordsUrl": "/services/data/v67.0/query/01gRO0000016PIAYA2-500",
  "records": [
    {
      "attributes": {
        "type": "Contact",
        "url": "/services/data/v67.0/sobjects/Contact/003RO0000035WQgYAM"
      },
      "Id": "003RO0000035WQgYAM",
      "Name": "John Smith"
    }
  ]
}
""")

# "Update Records Using sObject Collections", example response body when some items failed and
# allOrNone is true:
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_update.htm
UPDATE_ROLLBACK_DOC = json.loads("""
[
   {
      "id" : "001RM000003oCprYAE",
      "success" : false,
      "errors" : [
         {
            "statusCode" : "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "message" : "Record rolled back because not all records were valid and the request was using AllOrNone header",
            "fields" : [ ]
         }
      ]
   },
   {
      "success" : false,
      "errors" : [
         {
            "statusCode" : "MALFORMED_ID",
            "message" : "Contact ID: id value of incorrect type: 001xx000003DGb2999",
            "fields" : [
               "Id"
            ]
         }
      ]
   }
]
""")

# "Delete Records Using sObject Collections", example response body:
# https://developer.salesforce.com/docs/atlas.en-us.212.0.api_rest.meta/api_rest/resources_composite_sobjects_collections_delete.htm
DELETE_DOC = json.loads("""
[
   {
       "id": "001xx000003DGb2AAG",
       "success": true,
       "errors": []
   },
   {
       "id": "003xx000004TmiQAAS",
       "success": true,
       "errors": []
   }
]
""")

# "Create a Record", REST API Developer Guide, example response body:
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_sobject_create.htm
CREATE_DOC = json.loads('{"id" : "001D000000IqhSLIAZ", "errors" : [ ], "success" : true}')

ID18 = re.compile(r"^[0-9A-Za-z]{18}$")


def test_query_page_matches_query_more_results_example(sf, sb):
    for i in range(250):
        sb.org.add_contact(f"john{i:03d}@example.com", f"Smith{i:03d}", "John")
    page = sf.query("SELECT Id, Name FROM Contact ORDER BY Email", headers={"Sforce-Query-Options": "batchSize=200"})
    assert list(page) == list(QUERY_MORE_DOC)  # same keys, same order
    assert page["totalSize"] == 250 and page["done"] is False
    doc_url, our_url = QUERY_MORE_DOC["nextRecordsUrl"], page["nextRecordsUrl"]
    shape = re.compile(r"^/services/data/v\d+\.\d/query/01g[0-9A-Za-z]{15}-\d+$")
    assert shape.match(doc_url) and shape.match(our_url)
    doc_rec, our_rec = QUERY_MORE_DOC["records"][0], page["records"][0]
    assert list(our_rec) == list(doc_rec)
    assert list(our_rec["attributes"]) == list(doc_rec["attributes"])
    assert our_rec["attributes"]["url"] == doc_rec["attributes"]["url"].replace(doc_rec["Id"], our_rec["Id"]).replace(
        "v67.0", "v59.0")
    assert ID18.match(our_rec["Id"]) and our_rec["Id"][:3] == doc_rec["Id"][:3] == "003"
    assert our_rec["Name"] == "John Smith000"


def test_collection_update_rollback_matches_example(sf, sb, people):
    event_id = sb.org.add_event(people.ann, "not a contact", T0, T0 + hours(1))
    res = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Contact"}, "id": people.carla, "Email": "carla.new@customer.com"},
        {"attributes": {"type": "Contact"}, "id": event_id, "Email": "nope@customer.com"},
    ]})
    expected = json.loads(json.dumps(UPDATE_ROLLBACK_DOC).replace("001RM000003oCprYAE", people.carla)
                          .replace("001xx000003DGb2999", event_id))
    assert res == expected
    assert sf.Contact.get(people.carla)["Email"] == "carla@customer.com"


def test_collection_delete_matches_example(sf, sb, people):
    a = sb.org.add_event(people.ann, "a", T0, T0 + hours(1))
    res = sf.restful("composite/sobjects", method="DELETE", params={"ids": f"{a},{people.dan}", "allOrNone": "false"})
    expected = json.loads(json.dumps(DELETE_DOC).replace("001xx000003DGb2AAG", a).replace("003xx000004TmiQAAS", people.dan))
    assert res == expected


def test_create_matches_example(sf, people):
    res = sf.Contact.create({"LastName": "Doc"})
    assert dict(res) == {**CREATE_DOC, "id": res["id"]}
    assert set(res) == set(CREATE_DOC) and ID18.match(res["id"])
