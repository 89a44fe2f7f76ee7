"""Reading calendars: CalendarView rules, paging, GetItem fields, time zones, recurrence."""

from __future__ import annotations

import warnings
from datetime import date, datetime

from exchangelib import EWSDate, EWSDateTime, EWSTimeZone
from exchangelib.items import CalendarItem
from lxml import etree

from .conftest_exchange import ANN, BOB, CAROL, NOW, UTC, _ex_server, connect, ex, raw_soap  # noqa: F401

TZ = EWSTimeZone("UTC")


def dt(*args):
    return datetime(*args, tzinfo=UTC)


def ews(*args):
    return EWSDateTime(*args, tzinfo=TZ)


def test_calendar_view_returns_only_overlapping_items(ex, connect):
    org = ex.org
    org.add_item(ANN, "ends at start", dt(2026, 12, 1, 8), dt(2026, 12, 1, 9))
    org.add_item(ANN, "overlaps start", dt(2026, 12, 1, 8), dt(2026, 12, 1, 9, 30))
    org.add_item(ANN, "inside", dt(2026, 12, 1, 10), dt(2026, 12, 1, 11))
    org.add_item(ANN, "overlaps end", dt(2026, 12, 1, 16, 30), dt(2026, 12, 1, 18))
    org.add_item(ANN, "starts at end", dt(2026, 12, 1, 17), dt(2026, 12, 1, 18))
    org.add_item(BOB, "other mailbox", dt(2026, 12, 1, 10), dt(2026, 12, 1, 11))
    items = list(connect(ANN).calendar.view(ews(2026, 12, 1, 9), ews(2026, 12, 1, 17)))
    assert [i.subject for i in items] == ["overlaps start", "inside", "overlaps end"]


def test_calendar_view_max_entries_and_indexed_paging(ex, connect):
    for n in range(7):
        ex.org.add_item(ANN, f"e{n}", dt(2026, 12, 1 + n, 9), dt(2026, 12, 1 + n, 10))
    account = connect(ANN)
    first = list(account.calendar.view(ews(2026, 12, 1), ews(2026, 12, 31), max_items=3))
    assert [i.subject for i in first] == ["e0", "e1", "e2"]
    # Raw: a truncated view says so (IncludesLastItemInRange="false", TotalItemsInView = all in range).
    folder_id = account.calendar.id
    r = raw_soap(ex, '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>'
                     '<m:CalendarView MaxEntriesReturned="3" StartDate="2026-12-01T00:00:00Z" EndDate="2026-12-31T00:00:00Z"/>'
                     f'<m:ParentFolderIds><t:FolderId Id="{folder_id}"/></m:ParentFolderIds></m:FindItem>',
                 headers=f"<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{ANN}"
                         "</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>")
    root = etree.fromstring(r.content)
    rf = root.find(".//{*}RootFolder")
    assert (rf.get("TotalItemsInView"), rf.get("IncludesLastItemInRange")) == ("7", "false")
    assert len(rf.findall(".//{*}CalendarItem")) == 3
    # IndexedPageItemView: exchangelib pages through with offsets.
    before = ex.org.calls_by_operation.get("FindItem", 0)
    qs = account.calendar.all().only("subject")
    qs.page_size = 2
    assert sorted(i.subject for i in qs) == [f"e{n}" for n in range(7)]
    assert ex.org.calls_by_operation["FindItem"] - before == 4


def test_get_item_returns_the_fields_calsync_reads(ex, connect):
    ex.clock.set(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))
    item_id = ex.org.add_item(
        ANN, "Quarterly review", dt(2026, 12, 3, 9), dt(2026, 12, 3, 10), body="Agenda", sensitivity="Private",
        required_attendees=["bob@example.com", "client@customer.org"], optional_attendees=["carol@example.com"],
    )
    ex.clock.set(datetime(2026, 11, 5, 7, 30, tzinfo=UTC))
    ex.org.set_response(ANN, item_id, "client@customer.org", "Accept")
    account = connect(ANN)
    [item] = list(account.calendar.view(ews(2026, 12, 3), ews(2026, 12, 4)))
    assert item.id == item_id and item.changekey
    assert (item.subject, item.body, item.sensitivity) == ("Quarterly review", "Agenda", "Private")
    assert (item.start, item.end, item.is_all_day) == (ews(2026, 12, 3, 9), ews(2026, 12, 3, 10), False)
    assert item.organizer.email_address == ANN
    assert item.is_meeting is True and item.my_response_type == "Organizer" and item.type == "Single"
    assert str(item._start_timezone) == "Europe/Berlin"
    assert len(item.uid) > 40
    responses = {a.mailbox.email_address: (a.response_type, a.last_response_time) for a in item.required_attendees}
    assert responses["client@customer.org"] == ("Accept", ews(2026, 11, 5, 7, 30))
    assert responses["bob@example.com"] == ("Unknown", None)
    assert [a.mailbox.email_address for a in item.optional_attendees] == [CAROL]
    # The response changed the organizer's copy: LastModifiedTime comes from the shared clock.
    assert item.last_modified_time == ews(2026, 11, 5, 7, 30)


def test_all_day_item_in_a_berlin_mailbox(ex, connect):
    ex.org.add_item(ANN, "Holiday", date(2026, 12, 1), date(2026, 12, 2), is_all_day=True)
    [stored] = ex.org.items(ANN)
    # On the wire: midnight Berlin in UTC, with the mailbox's Windows time zone.
    assert (stored["start"], stored["end"]) == ("2026-11-30T23:00:00Z", "2026-12-01T23:00:00Z")
    assert stored["start_time_zone"] == "W. Europe Standard Time"
    account = connect(ANN, tz="Europe/Berlin")
    [item] = list(account.calendar.view(ews(2026, 11, 30), ews(2026, 12, 3)))
    assert item.is_all_day and type(item.start) is EWSDate
    assert (item.start, item.end) == (EWSDate(2026, 12, 1), EWSDate(2026, 12, 1))  # exchangelib: inclusive end
    # Creating one through exchangelib lands the same way.
    new = CalendarItem(account=account, folder=account.calendar, subject="Offsite", is_all_day=True,
                       start=EWSDate(2026, 12, 10), end=EWSDate(2026, 12, 11))
    new.save(send_meeting_invitations="SendToNone")
    stored = next(i for i in ex.org.items(ANN) if i["subject"] == "Offsite")
    assert (stored["start"], stored["end"]) == ("2026-12-09T23:00:00Z", "2026-12-11T23:00:00Z")
    new.refresh()
    assert (new.start, new.end) == (EWSDate(2026, 12, 10), EWSDate(2026, 12, 11))
    # The raw StartTimeZone is a full TimeZoneDefinition, as Exchange 2010+ sends it.
    r = raw_soap(ex, '<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>'
                     '<t:FieldURI FieldURI="calendar:StartTimeZone"/></t:AdditionalProperties></m:ItemShape>'
                     f'<m:ItemIds><t:ItemId Id="{new.id}"/></m:ItemIds></m:GetItem>',
                 headers=f"<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{ANN}"
                         "</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>")
    stz = etree.fromstring(r.content).find(".//{*}StartTimeZone")
    assert stz.get("Id") == "W. Europe Standard Time"
    assert [p.get("Bias") for p in stz.findall(".//{*}Period")] == ["-PT1H", "-PT2H"]


def test_item_with_unknown_time_zone_can_be_seeded_and_read(ex, connect):
    ex.org.add_item(ANN, "Bad zone", dt(2026, 12, 1, 9), dt(2026, 12, 1, 10), time_zone="Mars/Olympus_Mons")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        [item] = list(connect(ANN).calendar.view(ews(2026, 12, 1), ews(2026, 12, 2)))
    assert item.subject == "Bad zone" and item._start_timezone is None
    assert item.start == ews(2026, 12, 1, 9)


def test_recurring_series_is_expanded_into_occurrences(ex, connect):
    master_id = ex.org.add_item(
        ANN, "Standup", datetime(2026, 12, 7, 9, 30, tzinfo=EWSTimeZone("Europe/Berlin")),
        datetime(2026, 12, 7, 9, 45, tzinfo=EWSTimeZone("Europe/Berlin")),
        recurrence={"pattern": "weekly", "interval": 1, "weekdays": ["Monday", "Thursday"], "occurrences": 5},
    )
    account = connect(ANN)
    occs = list(account.calendar.view(ews(2026, 12, 1), ews(2027, 1, 31)))
    assert [o.start for o in occs] == [ews(2026, 12, 7, 8, 30), ews(2026, 12, 10, 8, 30), ews(2026, 12, 14, 8, 30),
                                      ews(2026, 12, 17, 8, 30), ews(2026, 12, 21, 8, 30)]
    assert len({o.id for o in occs}) == 5 and master_id not in {o.id for o in occs}
    assert {o.uid for o in occs} == {occs[0].uid}
    assert all(o.type == "Occurrence" and o.recurrence_id == o.start for o in occs)
    # An occurrence id works with GetItem; the master shows the pattern.
    again = account.fetch(ids=[(occs[2].id, occs[2].changekey)])
    assert next(again).original_start == ews(2026, 12, 14, 8, 30)
    master = next(account.fetch(ids=[(master_id, None)]))
    assert master.type == "RecurringMaster" and master.recurrence.boundary.number == 5
    # Deleting one occurrence removes it from the view; editing one makes it an exception.
    occs[1].delete(send_meeting_cancellations="SendToNone")
    occs[3].subject = "Standup (moved)"
    occs[3].start, occs[3].end = ews(2026, 12, 17, 12), ews(2026, 12, 17, 12, 15)
    occs[3].save(update_fields=["subject", "start", "end"], send_meeting_invitations="SendToNone")
    view = list(account.calendar.view(ews(2026, 12, 1), ews(2027, 1, 31)))
    assert [(o.subject, o.type, o.start) for o in view] == [
        ("Standup", "Occurrence", ews(2026, 12, 7, 8, 30)),
        ("Standup", "Occurrence", ews(2026, 12, 14, 8, 30)),
        ("Standup (moved)", "Exception", ews(2026, 12, 17, 12)),
        ("Standup", "Occurrence", ews(2026, 12, 21, 8, 30)),
    ]


def test_filter_with_a_restriction(ex, connect):
    ex.org.add_item(ANN, "alpha", dt(2026, 12, 1, 9), dt(2026, 12, 1, 10))
    ex.org.add_item(ANN, "beta", dt(2026, 12, 2, 9), dt(2026, 12, 2, 10))
    ex.org.add_item(ANN, "alphabet", dt(2026, 12, 3, 9), dt(2026, 12, 3, 10))
    cal = connect(ANN).calendar
    assert [i.subject for i in cal.filter(subject="alpha")] == ["alpha"]
    assert sorted(i.subject for i in cal.filter(subject__startswith="alpha")) == ["alpha", "alphabet"]
    assert [i.subject for i in cal.filter(start__gte=ews(2026, 12, 2), start__lt=ews(2026, 12, 3))] == ["beta"]


def test_text_body_is_the_body_as_plain_text_on_request(ex, connect):
    # item:TextBody (Exchange 2013+): the body as plain text, HTML converted; only when asked for.
    # https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/textbody
    from exchangelib import HTMLBody

    account = connect(ANN)
    html = CalendarItem(account=account, folder=account.calendar, subject="html",
                        body=HTMLBody("<html><head><style>p {color: red}</style></head><body>"
                                      "<p>Agenda:&nbsp;<b>Q4</b> &amp; budget</p><ul><li>one</li><li>two</li></ul>"
                                      "<div>Dial-in<br>+1 555 0100</div></body></html>"),
                        start=ews(2026, 12, 1, 9), end=ews(2026, 12, 1, 10))
    text = CalendarItem(account=account, folder=account.calendar, subject="text", body="line 1\nline 2",
                        start=ews(2026, 12, 1, 11), end=ews(2026, 12, 1, 12))
    empty = CalendarItem(account=account, folder=account.calendar, subject="empty",
                         start=ews(2026, 12, 1, 13), end=ews(2026, 12, 1, 14))
    created, _, _ = account.bulk_create(folder=account.calendar, items=[html, text, empty],
                                        send_meeting_invitations="SendToNone")

    # Through a query (FindItem cannot return it, so exchangelib follows up with GetItem) ...
    got = {i.subject: i for i in account.calendar.view(ews(2026, 12, 1), ews(2026, 12, 2)).only("subject", "text_body")}
    assert got["html"].text_body == "Agenda: Q4 & budget\none\ntwo\nDial-in\n+1 555 0100"
    assert got["text"].text_body == "line 1\nline 2"
    assert got["empty"].text_body is None
    assert got["html"].body is None  # not requested, not returned
    # ... and by id, next to the HTML body it was made from.
    [item] = list(account.fetch(ids=[(created.id, created.changekey)], only_fields=["body", "text_body"]))
    assert item.body.startswith("<html>") and type(item.body).__name__ == "HTMLBody"
    assert item.text_body.startswith("Agenda: Q4")
    # A GetItem that does not ask for it does not get it.
    r = raw_soap(ex, '<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape>'
                     f'<m:ItemIds><t:ItemId Id="{created.id}"/></m:ItemIds></m:GetItem>',
                 headers=f'<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{ANN}'
                         '</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>')
    root = etree.fromstring(r.content)
    assert root.find(".//{*}Body") is not None and root.find(".//{*}TextBody") is None
