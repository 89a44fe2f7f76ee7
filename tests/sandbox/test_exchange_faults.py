"""Throttling, injected faults, call counting and the /_sandbox/ control API."""

from __future__ import annotations

from datetime import datetime

import pytest
from exchangelib import EWSDateTime, EWSTimeZone
from exchangelib.errors import ErrorServerBusy, TransportError
from exchangelib.items import CalendarItem
from lxml import etree

from .conftest_exchange import ANN, BOB, UTC, _ex_server, connect, control, ex, raw_soap  # noqa: F401

TZ = EWSTimeZone("UTC")


def test_throttle_is_error_server_busy_with_back_off(ex, connect):
    account = connect(ANN)
    account.calendar  # noqa: B018 - warm up
    ex.faults.add("throttle", route="FindItem", backoff_ms=1234)
    with pytest.raises(ErrorServerBusy) as info:
        list(account.calendar.all())
    assert info.value.back_off == pytest.approx(1.234)
    # Raw: HTTP 500 with the SOAP fault.
    ex.faults.add("throttle", route="GetFolder", backoff_ms=30000)
    r = raw_soap(ex, '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>'
                     '<m:FolderIds><t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>')
    assert r.status_code == 500
    assert etree.fromstring(r.content).find(".//{*}Value").text == "30000"


def test_http_503_and_timeout_surface_with_fail_fast(ex, connect):
    account = connect(ANN)
    ex.faults.add("http_503", route="GetFolder")
    with pytest.raises(ErrorServerBusy):  # exchangelib re-raises the transient 503 as busy
        account.calendar  # noqa: B018
    ex.faults.add("timeout", route="FindItem", delay_s=0.2)
    with pytest.raises((ErrorServerBusy, TransportError)):
        list(account.calendar.all())
    assert list(account.calendar.all()) == []  # faults are used up


def test_drop_after_write_applies_the_write(ex, connect):
    account = connect(ANN)
    account.calendar  # noqa: B018
    ex.faults.add("drop_after_write", route="CreateItem")
    item = CalendarItem(account=account, folder=account.calendar, subject="written",
                        start=EWSDateTime(2026, 12, 1, 9, tzinfo=TZ), end=EWSDateTime(2026, 12, 1, 10, tzinfo=TZ))
    with pytest.raises((ErrorServerBusy, TransportError)):
        item.save(send_meeting_invitations="SendToNone")
    assert [i["subject"] for i in ex.org.items(ANN)] == ["written"]


def test_every_soap_call_is_counted(ex, connect):
    account = connect(ANN)
    account.calendar  # noqa: B018
    n = ex.org.calls()
    list(account.calendar.all())
    assert ex.org.calls() == n + 1
    control(ex, "GET", "state")  # control calls are not counted
    assert ex.org.calls() == n + 1


def test_control_api(ex, connect):
    assert control(ex, "POST", "clock", {"set": "2027-01-02T03:04:05Z"})["now"].startswith("2027-01-02T03:04:05")
    assert control(ex, "POST", "clock", {"advance_seconds": 60})["now"].startswith("2027-01-02T03:05:05")
    control(ex, "POST", "mailboxes", {"email": "dave@example.com", "time_zone": "Asia/Tokyo"})
    created = control(ex, "POST", "items", {"mailbox": "dave@example.com", "subject": "seeded remotely",
                                            "start": "2027-01-05T09:00:00Z", "end": "2027-01-05T10:00:00Z",
                                            "required_attendees": [BOB]})
    state = control(ex, "GET", "state")
    dave = state["mailboxes"]["dave@example.com"]
    assert dave["windows_time_zone"] == "Tokyo Standard Time"
    assert dave["items"][0]["id"] == created["id"] and dave["items"][0]["last_modified"] == "2027-01-02T03:05:05Z"
    fault = control(ex, "POST", "faults", {"kind": "throttle", "count": 2, "route": "GetItem", "backoff_ms": 10})
    assert fault["count"] == 2 and control(ex, "GET", "state")["faults"][0]["route"] == "GetItem"
    control(ex, "DELETE", "faults")
    assert control(ex, "GET", "state")["faults"] == []
    account = connect(ANN)
    item = CalendarItem(account=account, folder=account.calendar, subject="invite", required_attendees=[BOB],
                        start=EWSDateTime(2027, 1, 6, 9, tzinfo=TZ), end=EWSDateTime(2027, 1, 6, 10, tzinfo=TZ))
    item.save(send_meeting_invitations="SendToAllAndSaveCopy")
    invitations = control(ex, "GET", "invitations")
    assert [(i["organizer"], i["recipient"], i["kind"]) for i in invitations] == [(ANN, BOB, "request")]
    control(ex, "POST", "reset")
    state = control(ex, "GET", "state")
    assert state["mailboxes"] == {} and state["invitations"] == [] and state["calls"] == 0
    control(ex, "POST", "clock", {"reset": True})
    assert abs((ex.clock.now() - datetime.now(UTC)).total_seconds()) < 5
