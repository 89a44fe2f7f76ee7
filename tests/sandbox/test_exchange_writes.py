"""CreateItem / UpdateItem / DeleteItem in batches, change keys, conflicts, meeting delivery."""

from __future__ import annotations

from datetime import datetime

import pytest
from exchangelib import Attendee, EWSDateTime, EWSTimeZone, Mailbox
from exchangelib.errors import ErrorIrresolvableConflict, ErrorItemNotFound
from exchangelib.items import CalendarItem

from .conftest_exchange import ANN, BOB, CAROL, UTC, _ex_server, connect, control, ex  # noqa: F401

TZ = EWSTimeZone("UTC")


def ews(*args):
    return EWSDateTime(*args, tzinfo=TZ)


def meeting(account, subject, day, attendees=(), optional=()):
    return CalendarItem(
        account=account, folder=account.calendar, subject=subject, body="details",
        start=ews(2026, 12, day, 9), end=ews(2026, 12, day, 10),
        required_attendees=[Attendee(mailbox=Mailbox(email_address=a), response_type="Accept") for a in attendees] or None,
        optional_attendees=[Attendee(mailbox=Mailbox(email_address=a)) for a in optional] or None,
    )


def test_bulk_create_update_delete_one_response_per_item_in_order(ex, connect):
    account = connect(ANN)
    items = [meeting(account, f"m{n}", 1 + n) for n in range(5)]
    before = ex.org.calls_by_operation.get("CreateItem", 0)
    results = account.bulk_create(folder=account.calendar, items=items, send_meeting_invitations="SendToNone")
    assert ex.org.calls_by_operation["CreateItem"] - before == 1  # one request, five items
    stored = {i["id"]: i["subject"] for i in ex.org.items(ANN)}
    assert [stored[r.id] for r in results] == ["m0", "m1", "m2", "m3", "m4"]

    fetched = list(account.fetch(ids=[(r.id, r.changekey) for r in results]))
    for f in fetched:
        f.subject = f.subject.upper()
    updated = account.bulk_update(items=[(f, ["subject"]) for f in fetched], send_meeting_invitations_or_cancellations="SendToNone")
    assert [u[0] for u in updated] == [r.id for r in results]
    assert all(u[1] != r.changekey for u, r in zip(updated, results))
    assert sorted(i["subject"] for i in ex.org.items(ANN)) == ["M0", "M1", "M2", "M3", "M4"]

    account.bulk_delete(ids=[results[1], results[3]], send_meeting_cancellations="SendToNone")
    # A batch mixing a deleted id and a live one answers each in order.
    out = account.bulk_delete(ids=[results[1], results[0]], send_meeting_cancellations="SendToNone")
    assert isinstance(out[0], ErrorItemNotFound) and out[1] is True
    assert sorted(i["subject"] for i in ex.org.items(ANN)) == ["M2", "M4"]


def test_change_key_and_last_modified_change_on_every_write(ex, connect):
    account = connect(ANN)
    item = meeting(account, "v1", 2)
    item.save(send_meeting_invitations="SendToNone")
    key1 = item.changekey
    ex.clock.set(datetime(2026, 11, 21, 15, 0, tzinfo=UTC))
    item.subject = "v2"
    item.save(update_fields=["subject"], send_meeting_invitations="SendToNone")
    assert item.changekey != key1
    item.refresh()
    assert item.last_modified_time == ews(2026, 11, 21, 15, 0)
    item.body = None  # DeleteItemField
    item.save(update_fields=["body"], send_meeting_invitations="SendToNone")
    item.refresh()
    assert item.body is None and item.subject == "v2"


def test_stale_change_key_fails_only_under_never_overwrite(ex, connect):
    account = connect(ANN)
    item = meeting(account, "original", 3)
    item.save(send_meeting_invitations="SendToNone")
    stale = next(account.fetch(ids=[(item.id, item.changekey)]))
    item.subject = "first writer"
    item.save(update_fields=["subject"], send_meeting_invitations="SendToNone")

    stale.subject = "second writer"
    with pytest.raises(ErrorIrresolvableConflict):
        stale.save(update_fields=["subject"], conflict_resolution="NeverOverwrite", send_meeting_invitations="SendToNone")
    assert ex.org.items(ANN)[0]["subject"] == "first writer"
    stale.save(update_fields=["subject"], send_meeting_invitations="SendToNone")  # exchangelib default: AutoResolve
    assert ex.org.items(ANN)[0]["subject"] == "second writer"


def test_deleted_or_unknown_id_is_error_item_not_found(ex, connect):
    account = connect(ANN)
    item = meeting(account, "gone", 4)
    item.save(send_meeting_invitations="SendToNone")
    item_id, key = item.id, item.changekey
    item.delete(send_meeting_cancellations="SendToNone")
    [result] = list(account.fetch(ids=[(item_id, key)]))
    assert isinstance(result, ErrorItemNotFound)
    ghost = CalendarItem(account=account, folder=account.calendar, id=item_id, changekey=key, subject="x",
                         start=ews(2026, 12, 4, 9), end=ews(2026, 12, 4, 10))
    with pytest.raises(ErrorItemNotFound):
        ghost.save(update_fields=["subject"], send_meeting_invitations="SendToNone")


def test_invitations_deliver_to_internal_mailboxes_only(ex, connect):
    account = connect(ANN)
    quiet = meeting(account, "not sent", 5, attendees=[BOB])
    quiet.save(send_meeting_invitations="SendToNone")
    assert ex.org.invitations() == [] and ex.org.items(BOB) == []

    item = meeting(account, "Kick-off", 6, attendees=[BOB, "client@customer.org"], optional=[CAROL])
    item.save(send_meeting_invitations="SendToAllAndSaveCopy")
    sent = {(i["recipient"], i["kind"]) for i in ex.org.invitations()}
    assert sent == {(BOB, "request"), ("client@customer.org", "request"), (CAROL, "request")}
    # The organizer's copy: the server set every ResponseType to Unknown, whatever the client sent.
    item.refresh()
    assert all(i["meeting_uid"] == item.uid and i["organizer"] == ANN for i in ex.org.invitations())
    assert {a.response_type for a in item.required_attendees + item.optional_attendees} == {"Unknown"}
    assert item.meeting_request_was_sent is True
    # Bob's calendar has the delivered meeting.
    [copy] = list(connect(BOB).calendar.view(ews(2026, 12, 6), ews(2026, 12, 7)))
    assert (copy.uid, copy.subject, copy.is_meeting, copy.my_response_type) == (item.uid, "Kick-off", True, "NoResponseReceived")
    assert copy.organizer.email_address == ANN
    assert len(ex.org.items(CAROL)) == 1

    # Bob accepts: the organizer's copy shows it, Bob's copy too.
    ex.org.set_response(ANN, item.uid, BOB, "Accept")
    item.refresh()
    assert {a.mailbox.email_address: a.response_type for a in item.required_attendees}[BOB] == "Accept"
    copy.refresh()
    assert copy.my_response_type == "Accept"


def test_meeting_updates_and_cancellations(ex, connect):
    account = connect(ANN)
    item = meeting(account, "Planning", 8, attendees=[BOB])
    item.save(send_meeting_invitations="SendOnlyToAll")
    # Update to all: Bob's copy follows.
    item.start, item.end = ews(2026, 12, 8, 13), ews(2026, 12, 8, 14)
    item.save(update_fields=["start", "end"], send_meeting_invitations="SendToAllAndSaveCopy")
    assert ex.org.items(BOB)[0]["start"] == "2026-12-08T13:00:00Z"
    # Update to changed only: adding Carol and retitling sends only to Carol; Bob's copy stays as it was.
    item.subject = "Planning v2"
    item.required_attendees = [Attendee(mailbox=Mailbox(email_address=BOB)), Attendee(mailbox=Mailbox(email_address=CAROL))]
    item.save(update_fields=["subject", "required_attendees"], send_meeting_invitations="SendToChangedAndSaveCopy")
    kinds = [(i["recipient"], i["kind"]) for i in ex.org.invitations()]
    assert kinds[-1] == (CAROL, "request") and (BOB, "update") == kinds[1] and len(kinds) == 3
    assert ex.org.items(BOB)[0]["subject"] == "Planning"
    assert ex.org.items(CAROL)[0]["subject"] == "Planning v2"
    # Removing Bob (to changed): he gets a cancellation and the meeting leaves his calendar.
    item.required_attendees = [Attendee(mailbox=Mailbox(email_address=CAROL))]
    item.save(update_fields=["required_attendees"], send_meeting_invitations="SendOnlyToChanged")
    assert ex.org.invitations()[-1]["recipient"] == BOB and ex.org.invitations()[-1]["kind"] == "cancellation"
    assert ex.org.items(BOB) == []
    # Deleting without cancellations leaves Carol's copy; with them removes it.
    other = meeting(account, "Other", 9, attendees=[CAROL])
    other.save(send_meeting_invitations="SendToAllAndSaveCopy")
    other.delete(send_meeting_cancellations="SendToNone")
    assert {i["subject"] for i in ex.org.items(CAROL)} == {"Planning v2", "Other"}
    item.delete(send_meeting_cancellations="SendToAllAndSaveCopy")
    assert {i["subject"] for i in ex.org.items(CAROL)} == {"Other"}
    assert ex.org.invitations()[-1]["kind"] == "cancellation"


def _window(account):
    return list(account.calendar.view(ews(2026, 12, 1), ews(2026, 12, 31)))


def test_move_to_deleted_items_leaves_the_calendar_and_changes_the_id(ex, connect):
    account = connect(ANN)
    item = meeting(account, "binned", 10)
    item.save(send_meeting_invitations="SendToNone")
    old_id, old_key = item.id, item.changekey
    item.move_to_trash(send_meeting_cancellations="SendToNone")  # DeleteType="MoveToDeletedItems"

    assert _window(account) == []
    # The item now sits in Deleted Items under a new id (ids change when an item changes folder);
    # the id the client had no longer resolves.
    [result] = list(account.fetch(ids=[(old_id, old_key)]))
    assert isinstance(result, ErrorItemNotFound)
    trash = account.trash  # GetFolder DistinguishedFolderId="deleteditems"
    assert (trash.name, trash.total_count) == ("Deleted Items", 1)
    [binned] = list(trash.all())
    assert binned.subject == "binned" and binned.id != old_id
    assert binned.parent_folder_id.id == trash.id != account.calendar.id
    assert [i["subject"] for i in ex.org.items(ANN, "deleteditems")] == ["binned"]
    # Deleting it from Deleted Items with MoveToDeletedItems soft-deletes it, into Recoverable Items.
    binned_id = binned.id
    binned.move_to_trash(send_meeting_cancellations="SendToNone")  # exchangelib forgets the id
    assert list(account.trash.all()) == []
    assert isinstance(next(account.fetch(ids=[(binned_id, None)])), ErrorItemNotFound)
    assert [i["subject"] for i in ex.org.items(ANN, "recoverableitemsdeletions")] == ["binned"]


def test_move_to_deleted_items_with_immutable_ids_keeps_the_id(ex, connect):
    assert control(ex, "POST", "settings", {"immutable_ids": True})["immutable_ids"] is True
    account = connect(ANN)
    item = meeting(account, "binned", 11)
    item.save(send_meeting_invitations="SendToNone")
    item_id = item.id
    item.move_to_trash(send_meeting_cancellations="SendToNone")
    assert _window(account) == []
    [found] = list(account.fetch(ids=[(item_id, None)]))
    assert found.subject == "binned"
    assert found.parent_folder_id.id == account.trash.id != account.calendar.id


@pytest.mark.parametrize("how", ["soft_delete", "delete"])  # DeleteType SoftDelete / HardDelete
def test_soft_and_hard_delete_make_the_item_not_found(ex, connect, how):
    account = connect(ANN)
    item = meeting(account, "removed", 12)
    item.save(send_meeting_invitations="SendToNone")
    item_id = item.id
    getattr(item, how)(send_meeting_cancellations="SendToNone")
    assert _window(account) == []
    assert isinstance(next(account.fetch(ids=[(item_id, None)])), ErrorItemNotFound)
    assert list(account.trash.all()) == []
    # SoftDelete: in the dumpster (Recoverable Items > Deletions), which EWS can still list.
    dumpster = list(account.recoverable_items_deletions.all())
    assert [i.subject for i in dumpster] == (["removed"] if how == "soft_delete" else [])
    assert all(i.parent_folder_id.id == account.recoverable_items_deletions.id for i in dumpster)


def test_a_text_body_does_not_keep_trailing_whitespace(ex, connect):
    # Exchange converts bodies to and from its stored formats, which do not keep whitespace (PidTagBody)
    account = connect(ANN)
    item = meeting(account, "Notes", 3)
    item.body = "first line\nsecond line  \n\n"
    item.save(send_meeting_invitations="SendToNone")
    assert ex.org.items(ANN)[0]["body"] == "first line\nsecond line"
    item.body = "edited \t"
    item.save(update_fields=["body"], send_meeting_invitations="SendToNone")
    fetched = list(account.fetch(ids=[(item.id, item.changekey)]))[0]
    assert str(fetched.body) == "edited"
    ex.org.add_item(BOB, "Seeded", datetime(2026, 12, 4, 9, tzinfo=UTC), datetime(2026, 12, 4, 10, tzinfo=UTC), body="x \n")
    assert ex.org.items(BOB)[0]["body"] == "x"


def test_characters_xml_cannot_carry_come_back_as_character_references(ex, connect):
    # A subject or body holding a control character (put there by another client) is written into the reply as
    # a numeric character reference, as EWS does; exchangelib's forgiving parser keeps all but NUL (and, from the
    # first one on, drops &amp; and the like: see connectors/exchange_fastparse.py).
    ex.org.add_item(ANN, "Vertical\x0btab\x1f", datetime(2026, 12, 4, 9, tzinfo=UTC), datetime(2026, 12, 4, 10, tzinfo=UTC),
                    body="a\x01b")
    account = connect(ANN)
    item = next(iter(account.calendar.all()))
    assert item.subject == "Vertical\x0btab\x1f" and str(item.body) == "a\x01b"
    # what a client sends: exchangelib puts "?" for what XML cannot carry
    item.subject = "Nul\x00and\x0bvt"
    item.save(update_fields=["subject"], send_meeting_invitations="SendToNone")
    assert ex.org.items(ANN)[0]["subject"] == "Nul?and?vt"


def test_raw_reply_carries_the_character_reference(ex):
    from .conftest_exchange import raw_soap

    ex.org.add_item(ANN, "A\x1aB", datetime(2026, 12, 4, 9, tzinfo=UTC), datetime(2026, 12, 4, 10, tzinfo=UTC))
    item_id = ex.org.items(ANN)[0]["id"]
    r = raw_soap(ex, '<m:GetItem><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape>'
                     f'<m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>',
                 headers=f'<t:ExchangeImpersonation><t:ConnectingSID><t:SmtpAddress>{ANN}</t:SmtpAddress>'
                         '</t:ConnectingSID></t:ExchangeImpersonation>')
    assert r.status_code == 200, r.text
    assert b"<t:Subject>A&#x1A;B</t:Subject>" in r.content and b"\x1a" not in r.content
