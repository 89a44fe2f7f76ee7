"""The Graph sandbox's responses held against JSON published by Microsoft.

The bodies below are quoted verbatim from Microsoft's reference pages (the URL above each). A response
"matches" when every property of the documented body is present in ours with a value of the same JSON type,
recursively (ids, change keys and times naturally differ), and the values that are part of the contract
(enums, formats, codes) agree where the test says so.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from .conftest_graph import ANN, SCOPE, _sb, graph, msal_app, new_session, sb  # noqa: F401


def assert_shape(doc, ours, path="$"):
    if isinstance(doc, dict):
        assert isinstance(ours, dict), f"{path}: expected an object, got {ours!r}"
        for key, value in doc.items():
            assert key in ours, f"{path}.{key} missing (have {sorted(ours)})"
            assert_shape(value, ours[key], f"{path}.{key}")
    elif isinstance(doc, list):
        assert isinstance(ours, list), f"{path}: expected an array, got {ours!r}"
        if doc and ours:
            assert_shape(doc[0], ours[0], f"{path}[0]")
    elif doc is None:
        pass  # a documented null may be a value elsewhere (e.g. recurrence on a series master)
    else:
        assert type(ours) is type(doc), f"{path}: {type(doc).__name__} expected, got {ours!r}"


# https://learn.microsoft.com/en-us/graph/api/user-post-events?view=graph-rest-1.0 ("Request 1")
DOC_CREATE_REQUEST = """{
  "subject": "Let's go for lunch",
  "body": {
    "contentType": "HTML",
    "content": "Does late morning work for you?"
  },
  "start": {
      "dateTime": "2017-04-15T12:00:00",
      "timeZone": "Pacific Standard Time"
  },
  "end": {
      "dateTime": "2017-04-15T14:00:00",
      "timeZone": "Pacific Standard Time"
  },
  "location":{
      "displayName":"Harry's Bar"
  },
  "attendees": [
    {
      "emailAddress": {
        "address":"samanthab@contoso.onmicrosoft.com",
        "name": "Samantha Booth"
      },
      "type": "required"
    }
  ]
}"""

# Same page, "Response 1".
DOC_CREATE_RESPONSE = """{
    "@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users('cd209b0b-3f83-4c35-82d2-d88a61820480')/events/$entity",
    "@odata.etag":"W/\\"ZlnW4RIAV06KYYwlrfNZvQAALfZeRQ==\\"",
    "id":"AAMkAGI1AAAt9AHjAAA=",
    "createdDateTime":"2017-04-15T03:00:50.7579581Z",
    "lastModifiedDateTime":"2017-04-15T03:00:51.245372Z",
    "changeKey":"ZlnW4RIAV06KYYwlrfNZvQAALfZeRQ==",
    "categories":[

    ],
    "originalStartTimeZone":"Pacific Standard Time",
    "originalEndTimeZone":"Pacific Standard Time",
    "iCalUId":"040000008200E00074C5B7101A82E00800000000DA2B357D94B5D201000000000000000010000000EC4597557F0CB34EA4CC2887EA7B17C3",
    "reminderMinutesBeforeStart":15,
    "isReminderOn":true,
    "hasAttachments":false,
    "subject":"Let's go brunch",
    "bodyPreview":"Does late morning work for you?",
    "importance":"normal",
    "sensitivity":"normal",
    "isAllDay":false,
    "isCancelled":false,
    "isOrganizer":true,
    "responseRequested":true,
    "seriesMasterId":null,
    "showAs":"busy",
    "type":"singleInstance",
    "webLink":"https://outlook.office365.com/owa/?itemid=AAMkAGI1AAAt9AHjAAA%3D&exvsurl=1&path=/calendar/item",
    "onlineMeetingUrl":null,
    "responseStatus":{
        "response":"organizer",
        "time":"0001-01-01T00:00:00Z"
    },
    "body":{
        "contentType":"html",
        "content":"<html><head></head><body>Does late morning work for you?</body></html>"
    },
    "start":{
        "dateTime":"2017-04-15T11:00:00.0000000",
        "timeZone":"Pacific Standard Time"
    },
    "end":{
        "dateTime":"2017-04-15T12:00:00.0000000",
        "timeZone":"Pacific Standard Time"
    },
    "location": {
        "displayName": "Harry's Bar",
        "locationType": "default",
        "uniqueId": "Harry's Bar",
        "uniqueIdType": "private"
    },
    "locations": [
        {
            "displayName": "Harry's Bar",
            "locationType": "default",
            "uniqueIdType": "unknown"
        }
    ],
    "recurrence":null,
    "attendees":[
        {
            "type":"required",
            "status":{
                "response":"none",
                "time":"0001-01-01T00:00:00Z"
            },
            "emailAddress":{
                "name":"Samantha Booth",
                "address":"samanthab@contoso.onmicrosoft.com"
            }
        }
    ],
    "organizer":{
        "emailAddress":{
            "name":"Dana Swope",
            "address":"danas@contoso.onmicrosoft.com"
        }
    }
}"""

# https://learn.microsoft.com/en-us/graph/api/user-list-calendarview?view=graph-rest-1.0 (the example response;
# "might be shortened for readability")
DOC_CALENDAR_VIEW_RESPONSE = """{
  "value": [
    {
      "originalStartTimeZone": "Pacific Standard Time",
      "originalEndTimeZone": "Pacific Standard Time",
      "responseStatus": {
        "response": "accepted",
        "time": "2016-10-19T10:37:00Z"
      },
      "iCalUId": "040000008200E00074C5B7101A82E00800000000D3D70B8A6A17D70100000000000000001000000074665914A06C3F49BB4B7D7EEE4304DA",
      "reminderMinutesBeforeStart": 15,
      "isReminderOn": true
    }
  ]
}"""

# https://learn.microsoft.com/en-us/graph/json-batching ("Example JSON batch response", the entry for id 3)
DOC_BATCH_RESPONSE_ENTRY = """{
            "id": "3",
            "status": 403,
            "headers": {
                "Cache-Control": "no-cache",
                "x-ms-resource-unit": "1",
                "Content-Type": "application/json"
            },
            "body": {
                "error": {
                    "code": "Authorization_RequestDenied",
                    "message": "Insufficient privileges to complete the operation.",
                    "innerError": {
                        "date": "2025-02-13T10:17:06",
                        "request-id": "93b6f17e-c05d-4f45-ad2a-6665c708d8a0",
                        "client-request-id": "e70c5c1b-8b47-68c0-3171-3d22f5e0bd54"
                    }
                }
            }
        }"""

# https://learn.microsoft.com/en-us/graph/errors ("an example of a full JSON error body")
DOC_ERROR = """{
  "error": {
    "code": "invalidRange",
    "message": "Uploaded fragment overlaps with existing data.",
    "innerError": {
      "request-id": "request-id",
      "date": "date-time"
    }
  }
}"""

# The service's answer to a calendarView without its window, as quoted in
# https://github.com/microsoftgraph/microsoft-graph-docs/issues/57 (which got the reference page fixed).
REAL_CALENDAR_VIEW_WITHOUT_WINDOW = """{
  "error": {
    "code": "ErrorInvalidParameter",
    "message": "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
    "innerError": {
      "request-id": "<request_id>",
      "date": "2015-12-02T05:39:51"
    }
  }
}"""

# https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
# ("Successful response" and "Error response")
DOC_TOKEN_RESPONSE = """{
  "token_type": "Bearer",
  "expires_in": 3599,
  "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik1uQ19WWmNBVGZNNXBP..."
}"""

DOC_TOKEN_ERROR = """{
  "error": "invalid_scope",
  "error_description": "AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope https://foo.microsoft.com/.default is not valid.\\r\\nTrace ID: 255d1aef-8c98-452f-ac51-23d051240864\\r\\nCorrelation ID: fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7\\r\\nTimestamp: 2016-01-09 02:02:12Z",
  "error_codes": [
    70011
  ],
  "timestamp": "YYYY-MM-DD HH:MM:SSZ",
  "trace_id": "255d1aef-8c98-452f-ac51-23d051240864",
  "correlation_id": "fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7"
}"""


def test_create_event_answers_the_documented_shape(sb, graph):
    r = graph("POST", f"/users/{ANN}/events", data=DOC_CREATE_REQUEST,
              headers={"Prefer": 'outlook.timezone="Pacific Standard Time"', "Content-Type": "application/json"})
    assert r.status_code == 201
    ours, doc = r.json(), json.loads(DOC_CREATE_RESPONSE)
    assert_shape(doc, ours)
    for key in ("type", "responseStatus", "importance", "sensitivity", "showAs", "isOrganizer", "isAllDay",
                "originalStartTimeZone", "location", "recurrence", "seriesMasterId", "onlineMeetingUrl"):
        assert ours[key] == doc[key], key
    assert ours["start"] == {"dateTime": "2017-04-15T12:00:00.0000000", "timeZone": "Pacific Standard Time"}
    assert ours["attendees"][0] == doc["attendees"][0]
    assert ours["@odata.etag"] == f'W/"{ours["changeKey"]}"'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", ours["createdDateTime"])
    assert ours["body"]["contentType"] == "html" and "Does late morning work for you?" in ours["body"]["content"]
    assert ours["bodyPreview"] == doc["bodyPreview"]
    assert ours["iCalUId"].startswith("040000008200E00074C5B7101A82E008")  # a Global Object Id, as documented


def test_calendar_view_answers_the_documented_shape(sb, graph):
    item = sb.org.add_item(ANN, "Sync", datetime(2026, 12, 1, 9, tzinfo=timezone.utc),
                           datetime(2026, 12, 1, 10, tzinfo=timezone.utc),
                           organizer="bob@example.com", time_zone="Pacific Standard Time")
    sb.org.mailbox(ANN).items[item].my_response = "Accept"
    ours = graph.view(ANN).json()
    assert_shape(json.loads(DOC_CALENDAR_VIEW_RESPONSE), ours)
    assert ours["value"][0]["responseStatus"]["response"] == "accepted"
    assert ours["value"][0]["originalStartTimeZone"] == "Pacific Standard Time"


def test_errors_and_batch_entries_answer_the_documented_shape(sb, graph):
    r = graph("GET", f"/users/{ANN}/calendarView")
    assert_shape(json.loads(DOC_ERROR), r.json())
    real = json.loads(REAL_CALENDAR_VIEW_WITHOUT_WINDOW)
    assert_shape(real, r.json())
    assert (r.json()["error"]["code"], r.json()["error"]["message"]) == (real["error"]["code"], real["error"]["message"])
    r = graph("POST", "/$batch", json={"requests": [{"id": "3", "method": "GET", "url": f"/users/{ANN}/calendarView"}]})
    entry = r.json()["responses"][0]
    doc = json.loads(DOC_BATCH_RESPONSE_ENTRY)
    doc["headers"].pop("x-ms-resource-unit")  # a directory-objects header; Outlook resources do not send it
    doc["headers"].pop("Cache-Control")
    assert_shape(doc, entry)
    assert entry["status"] == 400 and entry["body"]["error"]["code"] == "ErrorInvalidParameter"


def test_token_responses_answer_the_documented_shape(sb):
    ok = new_session(sb).post(f"{sb.graph.authority}/oauth2/v2.0/token", timeout=10, data={
        "client_id": sb.graph.client_id, "scope": SCOPE[0], "client_secret": sb.graph.client_secret,
        "grant_type": "client_credentials"})
    assert ok.status_code == 200
    assert_shape(json.loads(DOC_TOKEN_RESPONSE), ok.json())
    bad = new_session(sb).post(f"{sb.graph.authority}/oauth2/v2.0/token", timeout=10, data={
        "client_id": sb.graph.client_id, "scope": "https://foo.microsoft.com/.default",
        "client_secret": sb.graph.client_secret, "grant_type": "client_credentials"})
    doc = json.loads(DOC_TOKEN_ERROR)
    assert bad.status_code == 400
    assert_shape(doc, bad.json())
    assert bad.json()["error"] == doc["error"] and bad.json()["error_codes"] == doc["error_codes"]
    assert bad.json()["error_description"].split("\r\n")[0] == doc["error_description"].split("\r\n")[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", bad.json()["timestamp"])
    # msal reads the same shape (it surfaces error/error_description/error_codes to the caller).
    result = msal_app(sb).acquire_token_for_client(["https://foo.microsoft.com/.default"])
    assert result["error"] == "invalid_scope" and result["error_codes"] == [70011]
