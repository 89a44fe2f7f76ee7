"""The EWS connector's lxml path (connectors/ews_soap.py) held to exchangelib's object model (connectors/ews_reference.py).

Recorded replies (tests/data/ews, made by tests/data/ews/record.py from the EWS sandbox) are parsed both ways and
must give the same rows and problems; the same mailbox is read live both ways; the requests built here must be the
XML exchangelib builds for the same calls; and a sync addresses the calendar without a single GetFolder.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pytest
from exchangelib import BASIC, IMPERSONATION, Account, CalendarItem, Configuration, Credentials, EWSTimeZone, Version
from exchangelib.items import SEND_TO_ALL_AND_SAVE_COPY, SEND_TO_NONE
from exchangelib.properties import Attendee, Body, Mailbox
from exchangelib.services import CreateItem, DeleteItem, GetItem, UpdateItem
from exchangelib.version import EXCHANGE_2016
from lxml import etree

from connectors import ews_reference, ews_soap, exchange_fastparse
from connectors.exchange import ITEM_FIELDS, ExchangeConnector, ews_start_end
from sandbox.clock import Clock
from sandbox.exchange import ExchangeSandbox
from sandbox.faults import Faults
from tests.data.ews import record

DATA = Path(__file__).resolve().parents[1] / "data" / "ews"
ANN, BOB, CUST = record.ANN, record.BOB, record.CUST
UTC = dt.timezone.utc


class _Recorded:
    """A recorded reply as exchangelib's reader takes it (in chunks, marked as one of calsync's own replies)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        exchange_fastparse.mark_own(self)

    def iter_content(self, chunk_size: int | None = None):
        size = chunk_size or 1
        return (self.data[i: i + size] for i in range(0, len(self.data), size))

    def close(self) -> None:
        pass


def _offline_account() -> Account:
    """An Account that never connects: it carries the version, identity and zone a service parses with."""
    config = Configuration(service_endpoint="http://127.0.0.1:9/EWS/Exchange.asmx", credentials=Credentials("svc", "pw"),
                           auth_type=BASIC, version=Version(build=EXCHANGE_2016))
    return Account(ANN, config=config, autodiscover=False, access_type=IMPERSONATION,
                   default_timezone=EWSTimeZone("Europe/Berlin"))


def _reply_elements(service, data: bytes) -> list:
    """What a service hands back for a reply: exchangelib's objects (GetItem) or lxml elements (ews_soap)."""
    _, body = service._get_soap_parts(response=_Recorded(data))
    return list(service._elems_to_objs(service._get_elements_in_response(response=service._get_soap_messages(body=body))))


def _both_ways(name: str) -> tuple[list, list, list, list]:
    """(reference rows, reference problems, lxml rows, lxml problems) of a recorded GetItem reply."""
    data = (DATA / name).read_bytes()
    account = _offline_account()
    conn = ExchangeConnector(account.protocol.service_endpoint, "svc", "pw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unmappable time zone warns on both paths
        objects = _reply_elements(ews_reference.PerItemGetItem(account=account), data)
        raw = [e if isinstance(e, Exception) else ews_soap.parse_item(e)
               for e in _reply_elements(ews_soap._GetItem(account=account), data)]
    ref_problems: list = []
    new_problems: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = [ews_reference.shape(o, ANN, ANN, ref_problems) for o in objects]
        new = [conn._shape(r, ANN, ANN, new_problems) for r in raw]
    conn.close()
    return ref, ref_problems, new, new_problems


@pytest.mark.parametrize("name", ["get_item_read.xml", "get_item_by_id.xml"])
def test_recorded_get_item_replies_give_the_same_rows_both_ways(name):
    ref, ref_problems, new, new_problems = _both_ways(name)
    assert len(ref) == len(new) >= 14
    for a, b in zip(ref, new):
        assert a == b
    assert new_problems == ref_problems


def test_the_recording_covers_what_the_rows_are_made_of():
    listed, problems, _, _ = _both_ways("get_item_by_id.xml")
    rows = {r["subject"]: r for r in listed if r is not None}
    assert rows["Review"]["description"] == "Agenda\nline two"
    assert {i["email"]: i["response"] for i in rows["Review"]["invitees"]} == {
        BOB: "accepted", "y@customer.com": "none", CUST: "tentative", "cal@example.com": "declined"}
    assert (rows["Trade fair"]["start"], rows["Trade fair"]["end"], rows["Trade fair"]["is_all_day"]) == (
        dt.datetime(2024, 5, 10, tzinfo=UTC), dt.datetime(2024, 5, 12, tzinfo=UTC), True)
    assert rows["secret"]["is_private"] and rows["Confidential"]["is_private"] and not rows["Review"]["is_private"]
    occurrences = [r for r in listed if r is not None and r["meeting_uid"] and "/" in r["meeting_uid"]]
    assert len(occurrences) == 4 and "standup (lab)" in rows  # an edited occurrence (an Exception) among them
    assert rows["Bob's call"]["organizer_email"] == BOB
    odd = next(s for s in rows if s.startswith("Budget"))
    assert odd == "Budget\x0b2027\x00 R&D <review> \u00e9\u4e2d\U0001f600"
    assert rows[odd]["description"] == 'totals\x01\x1fdue & "Q&A" <b>bold</b>'
    assert rows["html body"]["description"] == "Hello\nthere"
    assert "" in rows  # an empty subject
    assert sorted(p[2].split(":")[0] for p in problems) == ["unknown_time_zone", "unreadable"]


def test_a_recorded_view_gives_the_same_ids_change_keys_and_starts_both_ways():
    data = (DATA / "find_item_view.xml").read_bytes()
    account = _offline_account()
    [root] = _reply_elements(ews_soap._FindItem(account=account), data)
    page = ews_soap.parse_view(root)
    items = root.find(f"{ews_soap.T}Items")
    objects = [CalendarItem.from_xml(e, account=account) for e in items]
    assert [(o.id, o.changekey, o.start) for o in objects] == page.items
    assert page.includes_last is True and page.calendar_id is not None and len(page.items) >= 14


# ----------------------------------------------------------------------------- live, against the sandbox


@pytest.fixture(scope="module")
def ex():
    clock = Clock()
    clock.set(record.NOW)
    with ExchangeSandbox(clock, Faults()) as server:
        yield server


@pytest.fixture
def world(ex):
    ex.org.reset()
    ex.faults.clear()
    return record.world(ex.org)


@pytest.fixture
def conn(ex, world):
    user, password = ex.service_account
    c = ExchangeConnector(ex.url, user, password, max_wait_s=2, time_zones={ANN: "Europe/Berlin"}, page_size=5,
                          batch_size=4)
    yield c
    c.close()


def test_a_live_read_gives_the_frame_exchangelibs_objects_give(conn, world):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = conn.read(ANN, ANN, *record.WINDOW)
        ref = ews_reference.read(conn, ANN, ANN, *record.WINDOW)
    assert new.events.height >= 13 and len(new.problems) == 1
    assert new.events.sort("native_id").equals(ref.events.sort("native_id"))
    assert new.problems == ref.problems
    known = dict(zip(new.events["native_id"], new.events["version"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_new = conn.read(ANN, ANN, *record.WINDOW, known=known)
        quiet_ref = ews_reference.read(conn, ANN, ANN, *record.WINDOW, known=known)
    assert sorted(quiet_new.unchanged) == sorted(quiet_ref.unchanged) == sorted(known)
    assert quiet_new.events.height == quiet_ref.events.height == 0


def test_a_sync_sends_no_get_folder(conn, ex, world):
    """Reads, confirms, finds and writes address the calendar by its distinguished id: 0 GetFolder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = conn.read(ANN, ANN, *record.WINDOW)
        review = got.events.filter(got.events["subject"] == "Review").to_dicts()[0]
        conn.confirm(ANN, ANN, [world["crosses"], review["native_id"], "gone"])
        conn.find_by_key(ANN, "Review", review["start"], review["end"], False)
    from tests.connectors.mail_builders import email_deltas

    out = conn.apply(email_deltas(
        {"delta_id": "c1", "op": "create", "subject": "new", "start": dt.datetime(2024, 5, 21, 9, tzinfo=UTC),
         "end": dt.datetime(2024, 5, 21, 10, tzinfo=UTC)},
        {"delta_id": "u1", "op": "update", "target_id": review["native_id"], "target_version": review["version"],
         "subject": "Review 2", "start": review["start"], "end": review["end"], "invitees": None},
        {"delta_id": "d1", "op": "delete", "target_id": world["empty"]},
    ))
    assert out["status"].to_list() == ["applied"] * 3, out["error"].to_list()
    calls = ex.org.calls_by_operation
    assert calls.get("GetFolder", 0) == 0 and calls["FindItem"] >= 2 and calls["GetItem"] >= 2
    assert conn.api_calls == ex.org.calls()


def test_confirm_without_a_view_looks_the_calendar_up_once(ex, world):
    user, password = ex.service_account
    with ExchangeConnector(ex.url, user, password, max_wait_s=2) as fresh:
        kept = fresh.confirm(ANN, ANN, [world["crosses"], world["Review"]])
        assert sorted(kept.events["subject"]) == ["Review", "crosses start"]
        fresh.confirm(ANN, ANN, [world["crosses"]])
    assert ex.org.calls_by_operation.get("GetFolder", 0) == 1


# ----------------------------------------------------------------------------- requests: as exchangelib builds them


def _c14n(elem) -> bytes:
    """An element as canonical XML (namespace prefixes and attribute order do not matter)."""
    return etree.tostring(etree.fromstring(etree.tostring(elem)), method="c14n")


def _calendar_item(account: Account, *, subject: str, start, end, is_all_day: bool, body: str, private: bool,
                   required=None, optional=None, item_id=None, changekey=None) -> CalendarItem:
    """The CalendarItem the connector built for exchangelib before the lxml path."""
    s, e = ews_start_end(start, end, is_all_day, account.default_timezone)
    return CalendarItem(account=account, folder=account.calendar, id=item_id, changekey=changekey, subject=subject,
                        start=s, end=e, is_all_day=is_all_day, body=Body(body), sensitivity="Private" if private else "Normal",
                        required_attendees=required, optional_attendees=optional)


def _delta(subject: str, start, end, is_all_day=False, private=False, body="") -> dict:
    return {"subject": subject, "start": start, "end": end, "is_all_day": is_all_day, "is_private": private,
            "description": body}


CONTENTS = [
    _delta("Kickoff R&D <x>", dt.datetime(2024, 5, 8, 9, tzinfo=UTC), dt.datetime(2024, 5, 8, 10, tzinfo=UTC),
           body="line\r\nctl\x0bchar \u00e9"),
    _delta("Holiday", dt.datetime(2024, 5, 9, tzinfo=UTC), dt.datetime(2024, 5, 11, tzinfo=UTC), is_all_day=True,
           private=True),
    _delta("", dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC), dt.datetime(2024, 10, 27, 1, 30, tzinfo=UTC)),  # DST end
]


@pytest.mark.parametrize("delta", CONTENTS, ids=["timed", "all-day", "empty-subject-dst"])
def test_create_payload_is_the_one_exchangelib_builds(conn, delta):
    account = conn.account(ANN)
    bob = Attendee(mailbox=Mailbox(email_address=BOB), response_type="Unknown")
    cust = Attendee(mailbox=Mailbox(email_address=CUST), response_type="Unknown")
    theirs = CreateItem(account=account).get_payload(
        items=[_calendar_item(account, **_args(delta), required=[bob], optional=[cust]),
               _calendar_item(account, **_args(delta))],
        folder=account.calendar, message_disposition="SaveOnly", send_meeting_invitations=SEND_TO_ALL_AND_SAVE_COPY)
    content = conn._content(ANN, delta)
    ours = ews_soap.create_item_payload(ANN, [ews_soap.NewItem(content, [ews_soap.Who(BOB)], [ews_soap.Who(CUST)]),
                                              ews_soap.NewItem(content)], SEND_TO_ALL_AND_SAVE_COPY)
    assert _c14n(ours) == _c14n(theirs)


def _args(delta: dict) -> dict:
    return {"subject": delta["subject"], "start": delta["start"], "end": delta["end"], "is_all_day": delta["is_all_day"],
            "body": delta["description"], "private": delta["is_private"]}


_NAMES = {"subject": "subject", "sensitivity": "sensitivity", "body": "body", "start": "start", "end": "end",
          "is_all_day": "is_all_day"}


@pytest.mark.parametrize("fields", [["subject"], ["body", "start", "end", "is_all_day"],
                                    ["subject", "sensitivity", "body", "start", "end", "is_all_day"], []])
@pytest.mark.parametrize("delta", CONTENTS[:2], ids=["timed", "all-day"])
def test_update_payload_is_the_one_exchangelib_builds(conn, world, fields, delta):
    account = conn.account(ANN)
    [current] = conn._get(account, [(world["Review"], None)], ews_soap.CURRENT_URIS)
    [theirs_item] = ews_reference.get_items(account, [(world["Review"], None)], ["required_attendees",
                                                                                   "optional_attendees"], 1)
    with_attendees = not fields
    names = list(fields) + (["required_attendees", "optional_attendees"] if with_attendees else [])
    # keep bob (as the item has him), drop the others, add a new one
    req_objs = [a for a in theirs_item.required_attendees if a.mailbox.email_address == BOB] + [
        Attendee(mailbox=Mailbox(email_address="new@customer.com"), response_type="Unknown")]
    item = _calendar_item(account, **_args(delta), item_id=world["Review"], changekey="CK",
                          required=req_objs if with_attendees else None, optional=None)
    theirs = UpdateItem(account=account).get_payload(
        items=[(item, names)], conflict_resolution="NeverOverwrite", message_disposition="SaveOnly",
        send_meeting_invitations_or_cancellations=SEND_TO_NONE, suppress_read_receipts=True)
    required = optional = None
    if with_attendees:
        from connectors.exchange import who_lists

        required, optional = who_lists([BOB, "new@customer.com"], current.required, [])
    change = ews_soap.Change(world["Review"], "CK", conn._content(ANN, delta), [_NAMES[f] for f in fields],
                             required, optional)
    assert _c14n(ews_soap.update_item_payload([change], SEND_TO_NONE)) == _c14n(theirs)


def test_delete_and_get_item_payloads_are_the_ones_exchangelib_builds(conn, world):
    account = conn.account(ANN)
    ids = [(world["Review"], "CK1"), (world["secret"], None)]
    theirs = DeleteItem(account=account).get_payload(
        items=ids, delete_type="MoveToDeletedItems", send_meeting_cancellations=SEND_TO_ALL_AND_SAVE_COPY,
        affected_task_occurrences="AllOccurrences", suppress_read_receipts=True)
    assert _c14n(ews_soap.delete_item_payload(ids, SEND_TO_ALL_AND_SAVE_COPY)) == _c14n(theirs)
    folder = account.calendar
    additional = {f for f in folder.normalize_fields(fields=list(ITEM_FIELDS)) if not f.field.is_attribute}
    theirs = GetItem(account=account).get_payload(items=ids, additional_fields=additional, shape="IdOnly")
    assert _c14n(ews_soap.get_item_payload(ids)) == _c14n(theirs)
