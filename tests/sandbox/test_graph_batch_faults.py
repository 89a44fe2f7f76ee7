"""Graph sandbox: JSON $batch, throttling (concurrency, budget, injected), the other injected faults, call counts
and the control API."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import requests

from .conftest_graph import ANN, BOB, CAROL, WINDOW, _sb, control, error_of, graph, sb  # noqa: F401

JSON = {"Content-Type": "application/json"}


def _event(subject, day=3):
    return {"subject": subject, "start": {"dateTime": f"2026-12-{day:02d}T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"2026-12-{day:02d}T11:00:00", "timeZone": "UTC"}}


def _view_url(mailbox):
    return f"/users/{mailbox}/calendarView?startDateTime={WINDOW['startDateTime']}&endDateTime={WINDOW['endDateTime']}"


def test_batch_answers_each_request_with_its_own_status(sb, graph):
    existing = graph.create(ANN, "Old", "2026-12-02T10:00:00", "2026-12-02T11:00:00")
    stale = existing["@odata.etag"]
    graph("PATCH", f"/users/{ANN}/events/{existing['id']}", json={"subject": "Newer"})
    gone = graph.create(ANN, "Gone", "2026-12-02T10:00:00", "2026-12-02T11:00:00")["id"]
    graph("DELETE", f"/users/{ANN}/events/{gone}")
    r = graph("POST", "/$batch", json={"requests": [
        {"id": "1", "method": "POST", "url": f"/users/{ANN}/events", "headers": JSON, "body": _event("A")},
        {"id": "2", "method": "GET", "url": f"/users/{ANN}/events/{gone}"},
        {"id": "3", "method": "PATCH", "url": f"/users/{ANN}/events/{existing['id']}",
         "headers": {**JSON, "If-Match": stale}, "body": {"subject": "lost"}},
        {"id": "4", "method": "GET", "url": _view_url(CAROL)},
        {"id": "5", "method": "GET", "url": _view_url(ANN).lstrip("/") + "&$select=subject"},
    ]})
    assert r.status_code == 200
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert {k: v["status"] for k, v in by_id.items()} == {"1": 201, "2": 404, "3": 412, "4": 404, "5": 200}
    assert by_id["2"]["body"]["error"]["code"] == "ErrorItemNotFound"
    assert by_id["3"]["body"]["error"]["code"] == "ErrorIrresolvableConflict"
    assert by_id["4"]["body"]["error"]["code"] == "MailboxNotEnabledForRESTAPI"
    assert by_id["1"]["headers"]["Content-Type"].startswith("application/json")
    assert sorted(e["subject"] for e in by_id["5"]["body"]["value"]) == ["A", "Newer"]
    counts = control(sb, "GET", "calls")
    assert counts["calls_by_operation"]["$batch"] == 1 and counts["sub_requests"] == 5
    assert counts["batch_operations"] == {"createEvent": 1, "getEvent": 1, "updateEvent": 1, "calendarView": 2}


def test_batch_of_more_than_twenty_is_refused_whole(sb, graph):
    reqs = [{"id": str(i), "method": "GET", "url": f"/users/{ANN}"} for i in range(21)]
    r = graph("POST", "/$batch", json={"requests": reqs})
    assert error_of(r)[:2] == (400, "BadRequest")
    assert graph("POST", "/$batch", json={"requests": reqs[:20]}).status_code == 200
    r = graph("POST", "/$batch", json={"requests": [
        {"id": "1", "method": "POST", "url": f"/users/{ANN}/events", "body": _event("no content type")}]})
    assert error_of(r)[:2] == (400, "BadRequest")
    assert graph.view(ANN).json()["value"] == []


def test_depends_on_runs_in_order_and_fails_dependants_with_424(sb, graph):
    r = graph("POST", "/$batch", json={"requests": [
        {"id": "1", "method": "POST", "url": f"/users/{ANN}/events", "headers": JSON, "body": {"subject": "no times"}},
        {"id": "2", "dependsOn": ["1"], "method": "POST", "url": f"/users/{ANN}/events", "headers": JSON,
         "body": _event("B")},
        {"id": "3", "method": "POST", "url": f"/users/{ANN}/events", "headers": JSON, "body": _event("C")},
    ]})
    assert [x["status"] for x in r.json()["responses"]] == [400, 424, 201]


def test_five_parallel_requests_to_one_mailbox_get_one_429_with_retry_after(sb, graph):
    control(sb, "POST", "settings", {"latency_ms": 400})  # every request is in flight 0.4 s, so all five overlap
    results, barrier = [], threading.Barrier(5)

    def call():
        barrier.wait()
        results.append(graph.view(ANN))

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 200, 200, 200, 429]
    throttled = next(r for r in results if r.status_code == 429)
    assert int(throttled.headers["Retry-After"]) >= 1
    assert error_of(throttled) == (429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
    assert graph.view(BOB).status_code == 200  # other mailboxes are not affected


def test_batch_sub_requests_count_against_the_mailbox_concurrency(sb, graph):
    # Each sub-request holds its slot 0.3 s (the latency alone is once per $batch and holds no sub-request's slot).
    control(sb, "POST", "settings", {"service_time_ms": 300})
    out = {}
    t = threading.Thread(target=lambda: out.update(r=graph("POST", "/$batch", json={"requests": [
        {"id": str(i), "method": "GET", "url": _view_url(ANN)} for i in range(4)]})))
    t.start()
    import time
    time.sleep(0.1)
    alone = graph.view(ANN)  # the batch holds all four slots of Ann's mailbox
    t.join()
    assert alone.status_code == 429
    assert [x["status"] for x in out["r"].json()["responses"]] == [200] * 4


def test_mailbox_budget_per_ten_minutes_on_the_shared_clock(sb, graph):
    sb.graph.mailbox_budget = 3
    assert [graph.view(ANN).status_code for _ in range(4)] == [200, 200, 200, 429]
    r = graph.view(ANN)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 600
    sb.clock.advance(timedelta(minutes=10, seconds=1))
    assert graph.view(ANN).status_code == 200


def test_injected_throttle_and_503_on_a_graph_route(sb, graph):
    control(sb, "POST", "faults", {"kind": "throttle", "route": "/events", "backoff_ms": 2500})
    r = graph("POST", f"/users/{ANN}/events", json=_event("x"))
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json()["error"]["code"] == "ApplicationThrottled"
    assert graph.view(ANN).json()["value"] == []  # nothing was written
    sb.faults.add("http_503", route="calendarView")
    assert graph.view(ANN).status_code == 503
    assert graph("POST", f"/users/{ANN}/events", json=_event("y")).status_code == 201


def test_faults_inside_a_batch_are_per_request(sb, graph):
    sb.faults.add("throttle", route=f"/users/{BOB}/", backoff_ms=1000)
    r = graph("POST", "/$batch", json={"requests": [
        {"id": "a", "method": "POST", "url": f"/users/{ANN}/events", "headers": JSON, "body": _event("A")},
        {"id": "b", "method": "POST", "url": f"/users/{BOB}/events", "headers": JSON, "body": _event("B")}]})
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert r.status_code == 200 and by_id["a"]["status"] == 201 and by_id["b"]["status"] == 429
    assert by_id["b"]["headers"]["Retry-After"] == "1"


def test_drop_after_write_applies_the_write_then_drops_the_connection(sb, graph):
    sb.faults.add("drop_after_write", route="/events")
    with pytest.raises(requests.ConnectionError):
        graph("POST", f"/users/{ANN}/events", json=_event("applied"))
    assert [e["subject"] for e in graph.view(ANN).json()["value"]] == ["applied"]
    sb.faults.add("drop_after_write", route="/events")
    with pytest.raises(requests.ConnectionError):
        graph("POST", "/$batch", json={"requests": [
            {"id": "1", "method": "POST", "url": f"/users/{ANN}/events", "headers": JSON, "body": _event("in batch", 4)},
            {"id": "2", "method": "POST", "url": f"/users/{BOB}/calendar/events", "headers": JSON, "body": _event("b")}]})
    assert sorted(e["subject"] for e in graph.view(ANN).json()["value"]) == ["applied", "in batch"]
    assert [e["subject"] for e in graph.view(BOB).json()["value"]] == ["b"]


def test_timeout_fault_holds_then_closes_unanswered(sb, graph):
    sb.faults.add("timeout", route="calendarView", delay_s=0.2)
    with pytest.raises(requests.ConnectionError):
        graph.view(ANN)
    assert graph.view(ANN).status_code == 200


def test_calls_count_responses_and_the_control_api_reports_them(sb, graph):
    graph.view(ANN)
    graph("GET", f"/users/{ANN}")
    graph.create(ANN, "Counted", "2026-12-02T10:00:00", "2026-12-02T11:00:00",
                 attendees=[{"emailAddress": {"address": CAROL}}])
    assert sb.graph.calls() == 3
    assert sb.graph.calls_by_operation == {"calendarView": 1, "getUser": 1, "createEvent": 1}
    state = control(sb, "GET", "state")
    assert state["graph"]["counts"]["calls"] == 3 and state["mailboxes"][ANN]["kind"] == "graph"
    assert [i["recipient"] for i in control(sb, "GET", "invitations")] == [CAROL]
    assert control(sb, "POST", "mailboxes", {"email": "erin@example.com"})["kind"] == "graph"
    assert graph.view("erin@example.com").status_code == 200
    control(sb, "POST", "clock", {"advance_seconds": 60})
    assert control(sb, "GET", "clock")["now"].startswith("2026-11-20T08:01")
    control(sb, "POST", "reset")
    assert sb.graph.calls() == 0 and sb.org.mailboxes == {}
