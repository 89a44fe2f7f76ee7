"""Graph sandbox reads: calendarView (window, paging, $select, Prefer headers, all-day, recurrences,
attendees), GET by id, its 404/400 codes and extended properties."""

from __future__ import annotations

from datetime import date, datetime

from .conftest_graph import ANN, BOB, UTC, WINDOW, _sb, error_of, graph, sb  # noqa: F401

EXT = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name calsyncKey"


def _seed_week(sb, n=7):
    for i in range(n):
        sb.org.add_item(ANN, f"Meeting {i}", datetime(2026, 12, 1 + i, 9, tzinfo=UTC),
                        datetime(2026, 12, 1 + i, 10, tzinfo=UTC), body=f"Line one {i}\nLine two")


def test_calendar_view_needs_its_window(sb, graph):
    r = graph("GET", f"/users/{ANN}/calendarView")
    assert error_of(r) == (400, "ErrorInvalidParameter", "This request requires a time window specified by the "
                                                         "query string parameters StartDateTime and EndDateTime.")


def test_calendar_view_returns_events_overlapping_the_window(sb, graph):
    sb.org.add_item(ANN, "before", datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC))
    sb.org.add_item(ANN, "inside", datetime(2026, 12, 1, 9, 30, tzinfo=UTC), datetime(2026, 12, 1, 10, tzinfo=UTC))
    sb.org.add_item(ANN, "after", datetime(2026, 12, 1, 11, tzinfo=UTC), datetime(2026, 12, 1, 12, tzinfo=UTC))
    # An offset in the value is honoured: 10:00+01:00 is 09:00Z.
    r = graph("GET", f"/users/{ANN}/calendarView",
              params={"startDateTime": "2026-12-01T10:00:00+01:00", "endDateTime": "2026-12-01T11:00:00"})
    assert [e["subject"] for e in r.json()["value"]] == ["inside"]


def test_paging_with_maxpagesize_and_next_link(sb, graph):
    _seed_week(sb)
    r = graph.view(ANN, headers={"Prefer": "odata.maxpagesize=3"})
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=3"
    subjects = [e["subject"] for e in r.json()["value"]]
    link = r.json()["@odata.nextLink"]
    assert "$skiptoken=" in link
    while link:
        page = graph("GET", link).json()
        subjects += [e["subject"] for e in page["value"]]
        link = page.get("@odata.nextLink")
    assert subjects == [f"Meeting {i}" for i in range(7)]


def test_top_sets_the_page_size_and_default_page_is_ten(sb, graph):
    _seed_week(sb, 12)
    assert len(graph.view(ANN).json()["value"]) == 10
    r = graph.view(ANN, **{"$top": "5"}).json()
    assert len(r["value"]) == 5 and "$top=5" in r["@odata.nextLink"]


def test_select_returns_only_the_named_properties_plus_id_and_etag(sb, graph):
    _seed_week(sb, 1)
    event = graph.view(ANN, **{"$select": "subject,start"}).json()["value"][0]
    assert set(event) == {"@odata.etag", "id", "subject", "start"}
    assert event["@odata.etag"].startswith('W/"')
    assert error_of(graph.view(ANN, **{"$select": "subject,nonsense"}))[:2] == (400, "RequestBroker--ParseUri")


def test_prefer_timezone_and_text_body_in_one_header_or_two(sb, graph):
    _seed_week(sb, 1)
    for headers in ({"Prefer": 'outlook.timezone="Pacific Standard Time", outlook.body-content-type="text"'},
                    [("Prefer", 'outlook.timezone="Pacific Standard Time"'),
                     ("Prefer", 'outlook.body-content-type="text"')]):
        if isinstance(headers, list):  # two Prefer headers: requests needs them joined; send raw via http.client
            import http.client
            import json
            import ssl
            ctx = ssl.create_default_context(cafile=str(sb.graph.ca_file))
            host, port = sb.graph.base_url.split("//")[1].split(":")
            conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
            conn.putrequest("GET", f"/v1.0/users/{ANN}/calendarView?startDateTime={WINDOW['startDateTime']}"
                                   f"&endDateTime={WINDOW['endDateTime']}")
            conn.putheader("Authorization", f"Bearer {graph.token}")
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            applied, body = resp.getheader("Preference-Applied"), json.loads(resp.read())
        else:
            r = graph.view(ANN, headers=headers)
            applied, body = r.headers["Preference-Applied"], r.json()
        event = body["value"][0]
        assert 'outlook.timezone="Pacific Standard Time"' in applied
        assert 'outlook.body-content-type="text"' in applied
        assert event["start"] == {"dateTime": "2026-12-01T01:00:00.0000000", "timeZone": "Pacific Standard Time"}
        assert event["body"] == {"contentType": "text", "content": "Line one 0\nLine two"}
    html = graph.view(ANN).json()["value"][0]
    assert html["start"] == {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "UTC"}
    assert html["body"]["contentType"] == "html" and "<body>" in html["body"]["content"]
    assert "Line one 0<br>" in html["body"]["content"] and html["bodyPreview"] == "Line one 0 Line two"


def test_all_day_events_are_floating_midnights_labelled_with_the_requested_zone(sb, graph):
    sb.org.add_item(ANN, "Offsite", date(2026, 12, 3), date(2026, 12, 5), is_all_day=True)  # Berlin mailbox
    for zone in ("UTC", "Pacific Standard Time", "Tokyo Standard Time"):
        headers = {} if zone == "UTC" else {"Prefer": f'outlook.timezone="{zone}"'}
        event = graph.view(ANN, headers=headers).json()["value"][0]
        assert event["isAllDay"] is True
        assert event["start"] == {"dateTime": "2026-12-03T00:00:00.0000000", "timeZone": zone}
        assert event["end"] == {"dateTime": "2026-12-05T00:00:00.0000000", "timeZone": zone}
        assert event["originalStartTimeZone"] == "W. Europe Standard Time"


def test_recurring_series_expand_into_occurrences_and_exceptions(sb, graph):
    master_id = sb.org.add_item(ANN, "Standup", datetime(2026, 12, 7, 8, tzinfo=UTC),
                                datetime(2026, 12, 7, 8, 15, tzinfo=UTC),
                                recurrence={"pattern": "daily", "occurrences": 3}, required_attendees=[BOB])
    master = sb.org.mailbox(ANN).items[master_id]
    second = datetime(2026, 12, 8, 8, tzinfo=UTC)
    master.modified_occurrences[second] = {"subject": "Standup (moved)", "start": second.replace(hour=9),
                                           "end": second.replace(hour=9, minute=15)}
    events = graph.view(ANN).json()["value"]
    assert [e["type"] for e in events] == ["occurrence", "exception", "occurrence"]
    assert [e["originalStart"] for e in events] == ["2026-12-07T08:00:00Z", "2026-12-08T08:00:00Z",
                                                    "2026-12-09T08:00:00Z"]
    assert events[1]["subject"] == "Standup (moved)" and events[1]["start"]["dateTime"].startswith("2026-12-08T09:00")
    assert len({e["seriesMasterId"] for e in events}) == 1
    assert len({e["uid"] for e in events}) == 1 and events[0]["uid"] == master.uid
    icals = [e["iCalUId"] for e in events]
    assert len(set(icals)) == 3 and all(i != master.uid for i in icals)
    assert icals[0][32:40] == "07EA0C07"  # Global Object Id bytes 16-19: 2026, December, 7th
    series = graph("GET", f"/users/{ANN}/events/{events[0]['seriesMasterId']}").json()
    assert series["type"] == "seriesMaster" and series["iCalUId"] == master.uid
    assert series["recurrence"]["pattern"]["type"] == "daily"
    assert series["recurrence"]["range"] == {"type": "numbered", "startDate": "2026-12-07", "endDate": "0001-01-01",
                                             "recurrenceTimeZone": "W. Europe Standard Time",
                                             "numberOfOccurrences": 3}
    occ = graph("GET", f"/users/{ANN}/events/{events[2]['id']}").json()
    assert occ["type"] == "occurrence" and occ["originalStart"] == "2026-12-09T08:00:00Z"


def test_attendees_and_their_responses(sb, graph):
    item_id = sb.org.add_item(ANN, "Review", datetime(2026, 12, 2, 9, tzinfo=UTC), datetime(2026, 12, 2, 10, tzinfo=UTC),
                              required_attendees=[BOB], optional_attendees=["x@customer.example"])
    sb.org.set_response(ANN, item_id, BOB, "Accept")
    event = graph.view(ANN).json()["value"][0]
    assert event["isOrganizer"] is True and event["responseStatus"]["response"] == "organizer"
    assert event["organizer"] == {"emailAddress": {"name": "Ann Archer", "address": ANN}}
    bob, ext = event["attendees"]
    assert bob["type"] == "required" and bob["status"]["response"] == "accepted"
    assert bob["status"]["time"] == "2026-11-20T08:00:00Z" and bob["emailAddress"]["address"] == BOB
    assert ext["type"] == "optional" and ext["status"] == {"response": "none", "time": "0001-01-01T00:00:00Z"}


def test_get_by_id_and_its_error_codes(sb, graph):
    item_id = sb.org.add_item(ANN, "One", datetime(2026, 12, 2, 9, tzinfo=UTC), datetime(2026, 12, 2, 10, tzinfo=UTC))
    listed = graph.view(ANN).json()["value"][0]
    assert "+" not in listed["id"] and "/" not in listed["id"]  # REST (URL-safe) form of the EWS id
    got = graph("GET", f"/users/{ANN}/events/{listed['id']}", params={"$select": "subject"}).json()
    assert got["subject"] == "One" and set(got) == {"@odata.context", "@odata.etag", "id", "subject"}
    assert listed["id"].replace("-", "/").replace("_", "+") == item_id
    assert error_of(graph("GET", f"/users/{ANN}/events/not-an-id!")) == (400, "ErrorInvalidIdMalformed",
                                                                         "Id is malformed.")
    assert graph("DELETE", f"/users/{ANN}/events/{listed['id']}").status_code == 204
    assert error_of(graph("GET", f"/users/{ANN}/events/{listed['id']}")) == (
        404, "ErrorItemNotFound", "The specified object was not found in the store.")
    # An id of another mailbox is not found in this one.
    bob_id = sb.org.add_item(BOB, "Bob's", datetime(2026, 12, 2, 9, tzinfo=UTC), datetime(2026, 12, 2, 10, tzinfo=UTC))
    assert graph("GET", f"/users/{ANN}/events/{bob_id.replace('/', '-').replace('+', '_')}").status_code == 404


def test_extended_properties_are_returned_only_when_expanded(sb, graph):
    created = graph.create(ANN, "Tagged", "2026-12-02T09:00:00", "2026-12-02T10:00:00",
                           singleValueExtendedProperties=[{"id": EXT, "value": "sf-00U1"}])
    assert "singleValueExtendedProperties" not in created
    expand = f"singleValueExtendedProperties($filter=id eq '{EXT}')"
    got = graph("GET", f"/users/{ANN}/events/{created['id']}", params={"$expand": expand}).json()
    assert got["singleValueExtendedProperties"] == [{"id": EXT, "value": "sf-00U1"}]
    listed = graph.view(ANN, **{"$expand": expand, "$select": "subject"}).json()["value"][0]
    assert listed["singleValueExtendedProperties"][0]["value"] == "sf-00U1"
    other = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name other"
    got = graph("GET", f"/users/{ANN}/events/{created['id']}",
                params={"$expand": f"singleValueExtendedProperties($filter=id eq '{other}')"}).json()
    assert "singleValueExtendedProperties" not in got
