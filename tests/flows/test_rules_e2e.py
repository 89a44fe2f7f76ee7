"""Every sync rule (docs/rules.md: R5-R18, C1-C24), end to end.

Each test seeds the sandbox, runs the whole pipeline through the real client libraries and checks what a
user would see on both calendars (and, where it matters, what the DuckDB store kept). Test names carry the
rule they prove.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.flows.conftest import MAILBOX_KINDS, at, user_block
from tests.flows.conftest import mail_with as _mail
from tests.flows.conftest import one as _one
from tests.flows.conftest import sf_with as _sf

# Every rule holds for mailboxes on Exchange Server (EWS) and on Exchange Online (Microsoft Graph) alike.
pytestmark = pytest.mark.parametrize("mailbox_kind", MAILBOX_KINDS, indirect=True)

ALICE, BOB = "alice@example.com", "bob@example.com"
CAROL, FRANK = "carol@customer.example", "frank@prospect.example"
UTC = timezone.utc





def _rels(world, event_id, invitee=True):
    return [r for r in world.sb.salesforce.org.relations(event_id) if bool(r["IsInvitee"]) == invitee]


def _attendees(world, item):
    """Whom the mail item lists for the meeting (on Exchange Online with external invitees recorded, C24)."""
    return world.mail_invitees(item)


def _reasons(summary, user):
    return [s["reason"] for s in summary["users"].get(user, {}).get("skipped", [])]


def _utc(d: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC)


def _pairs(world, user=None):
    sql = "SELECT pair_id, user_key, mailbox, sf_id, email_id FROM pairs"
    rows = world.query(sql)
    return [r for r in rows if user is None or r[1] == user]


# ------------------------------------------------------------------------------------------------ R5


def test_r5_filter_updates_only_creates_nothing(world):
    world.configure(user_block(ALICE, filter="updates_only"))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    org.add_event(world.ids[ALICE], "SF only", at(1, 9), at(1, 10), invitee_ids=[world.ids[CAROL]])
    ex.add_item(ALICE, "Mail only", at(1, 11), at(1, 12), required_attendees=[FRANK], organizer=ALICE)
    # Same key on both sides: C5 says updates-only makes no new pairs by key either.
    org.add_event(world.ids[ALICE], "On both", at(2, 9), at(2, 10))
    ex.add_item(ALICE, "On both", at(2, 9), at(2, 10))
    s = world.sync()
    assert s["status"] == "succeeded", s
    assert _mail(world, ALICE, "SF only") == []
    assert _sf(world, ALICE, "Mail only") == []
    assert len(_mail(world, ALICE, "On both")) == 1 and len(_sf(world, ALICE, "On both")) == 1
    assert _pairs(world) == []
    assert s["totals"]["deltas"] == 0
    filtered = [x for x in s["users"][ALICE]["skipped"] if x["reason"] == "filter"]
    assert filtered and "updates_only" in filtered[0]["detail"]


def test_r5_filter_with_invitee(world):
    world.configure(user_block(ALICE, filter="with_invitee"))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    org.add_event(world.ids[ALICE], "SF with contact", at(1, 9), at(1, 10), invitee_ids=[world.ids[CAROL]])
    org.add_event(world.ids[ALICE], "SF alone", at(1, 11), at(1, 12))
    # An attendee that matches no Salesforce record still counts as an invitee (R5 c).
    ex.add_item(ALICE, "Mail with stranger", at(2, 9), at(2, 10), required_attendees=["x@stranger.example"],
                organizer=ALICE)
    ex.add_item(ALICE, "Mail alone", at(2, 11), at(2, 12))
    # The organizer is not an invitee of their own meeting (C5).
    ex.add_item(ALICE, "Mail organizer only", at(2, 13), at(2, 14), required_attendees=[ALICE], organizer=ALICE)
    s = world.sync()
    assert s["status"] == "succeeded", s
    assert len(_mail(world, ALICE, "SF with contact")) == 1
    assert _mail(world, ALICE, "SF alone") == []
    assert len(_sf(world, ALICE, "Mail with stranger")) == 1
    assert _sf(world, ALICE, "Mail alone") == []
    assert _sf(world, ALICE, "Mail organizer only") == []


def test_r5_filter_with_contact_or_lead(world):
    world.configure(user_block(ALICE, filter="with_contact_or_lead"))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    org.add_event(world.ids[ALICE], "SF with contact", at(1, 9), at(1, 10), invitee_ids=[world.ids[CAROL]])
    org.add_event(world.ids[ALICE], "SF with lead", at(1, 11), at(1, 12), invitee_ids=[world.ids[FRANK]])
    org.add_event(world.ids[ALICE], "SF alone", at(1, 13), at(1, 14))
    ex.add_item(ALICE, "Mail with lead", at(2, 9), at(2, 10), required_attendees=["FRANK@prospect.example"],
                organizer=ALICE)
    ex.add_item(ALICE, "Mail with stranger", at(2, 11), at(2, 12), required_attendees=["x@stranger.example"],
                organizer=ALICE)
    s = world.sync()
    assert s["status"] == "succeeded", s
    assert len(_mail(world, ALICE, "SF with contact")) == 1
    assert len(_mail(world, ALICE, "SF with lead")) == 1
    assert _mail(world, ALICE, "SF alone") == []
    assert len(_sf(world, ALICE, "Mail with lead")) == 1
    assert _sf(world, ALICE, "Mail with stranger") == []
    # Pairing by key needs one of the two events to pass (C5): a same-key pair without Contacts stays apart.
    org.add_event(world.ids[ALICE], "Internal", at(3, 9), at(3, 10))
    ex.add_item(ALICE, "Internal", at(3, 9), at(3, 10))
    world.sync()
    assert len(_pairs(world, ALICE)) == 3


# ------------------------------------------------------------------------------------------------ R6


def test_r6_window_edges_and_start_date(world):
    # today 2026-03-31: the window is [2026-02-28 00:00Z, 2026-06-01 00:00Z) (C1: 31 Mar - 1 month = 28 Feb).
    today = date(2026, 3, 31)
    lo, hi = date(2026, 2, 28), date(2026, 6, 1)
    world.configure(user_block(ALICE), user_block(BOB, start_date=date(2026, 3, 15)))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    a = world.ids[ALICE]
    org.add_event(a, "crosses start", _utc(lo) - timedelta(hours=1), _utc(lo) + timedelta(hours=1))
    org.add_event(a, "ends at start", _utc(lo) - timedelta(hours=1), _utc(lo))
    org.add_event(a, "crosses end", _utc(hi) - timedelta(hours=1), _utc(hi) + timedelta(hours=1))
    org.add_event(a, "starts at end", _utc(hi), _utc(hi) + timedelta(hours=1))
    # All-day events at the edges, in Alice's Berlin mailbox: their dates count, not Berlin's midnight.
    ex.add_item(ALICE, "all-day before", lo - timedelta(days=1), lo, is_all_day=True)
    ex.add_item(ALICE, "all-day first day", lo, lo + timedelta(days=1), is_all_day=True)
    ex.add_item(ALICE, "all-day last day", hi - timedelta(days=1), hi, is_all_day=True)
    ex.add_item(ALICE, "all-day after", hi, hi + timedelta(days=1), is_all_day=True)
    # Bob starts syncing on 15 March: nothing before it.
    ex.add_item(BOB, "before start date", _utc(date(2026, 3, 14), 15), _utc(date(2026, 3, 14), 16))
    ex.add_item(BOB, "on start date", _utc(date(2026, 3, 15), 15), _utc(date(2026, 3, 15), 16))
    s = world.sync(today=today)
    assert s["status"] == "succeeded", s
    for subject in ("crosses start", "crosses end"):
        assert len(_mail(world, ALICE, subject)) == 1, subject
    for subject in ("ends at start", "starts at end"):
        assert _mail(world, ALICE, subject) == [], subject
    for subject in ("all-day first day", "all-day last day"):
        assert len(_sf(world, ALICE, subject)) == 1, subject
    for subject in ("all-day before", "all-day after"):
        assert _sf(world, ALICE, subject) == [], subject
    first = _sf(world, ALICE, "all-day first day")[0]
    assert first["IsAllDayEvent"] and first["ActivityDate"] in (lo, lo.isoformat())
    assert _sf(world, BOB, "before start date") == []
    assert len(_sf(world, BOB, "on start date")) == 1
    # An event that leaves the window is neither changed nor deleted (R6), even when edited.
    sf = world.salesforce()
    far = org.add_event(a, "far away", _utc(date(2026, 3, 2), 9), _utc(date(2026, 3, 2), 10))
    world.sync(today=today)
    assert len(_mail(world, ALICE, "far away")) == 1
    sf.Event.update(far, {"Subject": "far away (edited)"})
    later = world.sync(today=date(2026, 4, 30))  # window now starts 30 March
    assert later["totals"]["deleted"] == 0 and later["totals"]["updated"] == 0, later
    assert len(_mail(world, ALICE, "far away")) == 1 and _mail(world, ALICE, "far away (edited)") == []


# ------------------------------------------------------------------------------------------------ R9


def test_r9_private_copy_is_busy_block(world):
    world.configure(user_block(ALICE))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    sf_id = org.add_event(world.ids[ALICE], "Doctor appointment", at(2, 8), at(2, 9), is_private=True,
                          description="blood test results", invitee_ids=[world.ids[CAROL]])
    em_id = ex.add_item(ALICE, "Therapy session", at(3, 8), at(3, 9), sensitivity="Private",
                        body="room 12", required_attendees=[FRANK], organizer=ALICE)
    s = world.sync()
    assert s["status"] == "succeeded", s
    copy = _one(world.mail_items(ALICE), subject="Private")
    assert copy["start"] == at(2, 8) and copy["end"] == at(2, 9)
    assert not (copy["body"] or "").strip() and _attendees(world, copy) == []
    assert copy["sensitivity"] == "Private"
    sf_copy = _one(world.sf_events(ALICE), Subject="Private")
    assert sf_copy["IsPrivate"] and not (sf_copy["Description"] or "") and _rels(world, sf_copy["Id"]) == []
    assert world.sb.exchange.org.invitations() == []  # nothing about a private event is sent to anyone

    # Someone renames and moves the "Private" copy: the time flows back, the subject never does.
    alice = world.person(ALICE)
    alice.edit(alice.item_id(subject="Private", start=at(2, 8)), subject="Lunch with Dan", start=at(2, 10),
               end=at(2, 11))
    world.sb.clock.advance(timedelta(minutes=1))
    s2 = world.sync()
    assert s2["status"] == "succeeded", s2
    ev = world.sb.salesforce.org.record(sf_id)
    assert ev["Subject"] == "Doctor appointment" and ev["Description"] == "blood test results"
    assert datetime.fromisoformat(str(ev["StartDateTime"]).replace("Z", "+00:00")) == at(2, 10)
    assert [i for i in world.mail_items(ALICE) if i["subject"] == "Lunch with Dan"] == []
    assert world.sync()["totals"]["deltas"] == 0

    # Private details are never stored in the snapshots (R9; docs/analysts.md).
    leaks = world.query(
        "SELECT count(*) FROM event_snapshots WHERE subject IN ('Doctor appointment', 'Therapy session', 'Lunch with Dan')"
        " OR description LIKE '%blood test%' OR description LIKE '%room 12%'")
    assert leaks[0][0] == 0
    inv = world.query("SELECT count(*) FROM invitee_snapshots WHERE native_id IN (?, ?)", [sf_id, world.native_id(em_id)])
    assert inv[0][0] == 0
    kept = world.query("SELECT count(*) FROM event_snapshots WHERE native_id = ? AND content_hash IS NOT NULL", [sf_id])
    assert kept[0][0] >= 1  # but the digests the sync needs are kept


# ------------------------------------------------------------------------------------------------ R10


def test_r10_salesforce_contacts_and_leads_with_email_become_attendees(world):
    world.configure(user_block(ALICE), user_block(BOB))
    org = world.sb.salesforce.org
    no_mail = org.add_contact(None, "Nomail")
    nobody = org.add_user("nobody@example.com", name="Not Synced")  # a User who is not synced
    org.add_event(world.ids[ALICE], "Account plan", at(4, 9), at(4, 10),
                  invitee_ids=[world.ids[CAROL], world.ids[FRANK], no_mail, nobody])
    s = world.sync()
    assert s["status"] == "succeeded", s
    item = _one(world.mail_items(ALICE), subject="Account plan")
    assert _attendees(world, item) == [CAROL, FRANK]
    # A Contact added later in Salesforce is added to the meeting; an attendee added in the mailbox that
    # Salesforce cannot represent stays (C11).
    dave = org.add_contact("dave@customer.example", "Dave", owner_id=world.ids[ALICE])
    ev = _one(world.sf_events(ALICE), Subject="Account plan")
    world.salesforce().EventRelation.create({"EventId": ev["Id"], "RelationId": dave, "IsInvitee": True})
    s2 = world.sync()
    assert s2["status"] == "succeeded", s2
    assert _attendees(world, _one(world.mail_items(ALICE), subject="Account plan")) == [CAROL, "dave@customer.example", FRANK]


# ------------------------------------------------------------------------------------------------ R11


def test_r11_attendees_matched_case_insensitive(world):
    world.configure(user_block(BOB))
    org = world.sb.salesforce.org
    # C12: one address, several records -> Leads first, then Contacts owned by the syncing user, then id.
    twin_alice = org.add_contact("twin@shared.example", "TwinA", owner_id=world.ids[ALICE])
    twin_bob = org.add_contact("twin@shared.example", "TwinB", owner_id=world.ids[BOB])
    lead_contact = org.add_contact("both@shared.example", "BothContact", owner_id=world.ids[BOB])
    lead = org.add_lead("both@shared.example", "BothLead", owner_id=world.ids[ALICE])
    world.sb.exchange.org.add_item(
        BOB, "Matching", at(3, 13), at(3, 14), organizer=BOB,
        required_attendees=["CAROL@Customer.EXAMPLE", "Frank@prospect.example", "nobody@else.example",
                            "Twin@Shared.example", "both@SHARED.example"])
    s = world.sync()
    assert s["status"] == "succeeded", s
    ev = _one(world.sf_events(BOB), Subject="Matching")
    related = {r["RelationId"] for r in _rels(world, ev["Id"])}
    assert related == {world.ids[CAROL], world.ids[FRANK], twin_bob, lead}
    assert twin_alice not in related and lead_contact not in related


def test_r11_responses_written_when_organizer(world):
    world.configure(user_block(BOB))
    ex = world.sb.exchange.org
    mine = ex.add_item(BOB, "Bob's meeting", at(3, 9), at(3, 10), organizer=BOB,
                       required_attendees=[CAROL, FRANK, "dave@customer.example"])
    world.sb.salesforce.org.add_contact("dave@customer.example", "Dave", owner_id=world.ids[BOB])
    ex.set_response(BOB, mine, CAROL, "Accept")
    ex.set_response(BOB, mine, FRANK, "Tentative")  # Salesforce has no tentative: New (C13)
    # Bob is only an attendee here: his copy cannot see the others' responses.
    theirs = ex.add_item(BOB, "Partner's meeting", at(4, 9), at(4, 10), organizer="pat@partner.example",
                         required_attendees=[BOB, (CAROL, "Accept")])
    s = world.sync()
    assert s["status"] == "succeeded", s
    ev = _one(world.sf_events(BOB), Subject="Bob's meeting")
    status = {r["RelationId"]: r["Status"] for r in _rels(world, ev["Id"])}
    assert status[world.ids[CAROL]] == "Accepted"
    assert status[world.ids[FRANK]] == "New"
    assert len(status) == 3
    other = _one(world.sf_events(BOB), Subject="Partner's meeting")
    assert {r["Status"] for r in _rels(world, other["Id"])} == {"New"}
    # A later answer flows on the next run; Salesforce's status never flows to email.
    world.sb.salesforce.org.set_relation_status(ev["Id"], world.ids[FRANK], "Accepted")
    world.sb.clock.advance(timedelta(minutes=1))
    ex.set_response(BOB, mine, CAROL, "Decline")  # newer than the Salesforce edit: the mailbox wins
    world.sync()
    status = {r["RelationId"]: r["Status"] for r in _rels(world, ev["Id"])}
    assert status[world.ids[CAROL]] == "Declined" and status[world.ids[FRANK]] == "New"
    item = _one(world.mail_items(BOB), subject="Bob's meeting")
    frank = next(a for a in item["required_attendees"] if a["email"] == FRANK)
    assert frank["response"] == "Tentative"
    assert theirs  # seeded


# ------------------------------------------------------------------------------------------------ R12


def _whos(world, ev):
    rec = world.sb.salesforce.org.record(ev["Id"])
    return rec.get("EventWhoIds"), rec.get("WhoId")


def test_r12_who_selection_shared_activities_on(world):
    world.configure(user_block(BOB))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    c = [org.add_contact(f"c{i}@customer.example", f"C{i}", owner_id=world.ids[ALICE]) for i in range(3)]
    ex.add_item(BOB, "With a lead", at(2, 9), at(2, 10), organizer=BOB,
                required_attendees=[CAROL, FRANK, "c0@customer.example"])
    ex.add_item(BOB, "Contacts only", at(2, 11), at(2, 12), organizer=BOB,
                required_attendees=[CAROL, "c0@customer.example", "c1@customer.example", "c2@customer.example"])
    s = world.sync()
    assert s["status"] == "succeeded", s
    whos, _ = _whos(world, _one(world.sf_events(BOB), Subject="With a lead"))
    assert whos == [world.ids[FRANK]]  # up to 1 Lead: the Lead alone
    whos, _ = _whos(world, _one(world.sf_events(BOB), Subject="Contacts only"))
    assert sorted(whos) == sorted([world.ids[CAROL], *c])  # up to 50 Contacts: all of them


def test_r12_who_selection_shared_activities_off(world):
    world.sb.salesforce.org.set_shared_activities(False)
    world.configure(user_block(BOB))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    a_contact = org.add_contact("aaa@customer.example", "Aaa", owner_id=world.ids[ALICE])
    bobs = org.add_contact("zzz@customer.example", "Zzz", owner_id=world.ids[BOB])
    ex.add_item(BOB, "Lead first", at(2, 9), at(2, 10), organizer=BOB,
                required_attendees=["aaa@customer.example", FRANK, "zzz@customer.example"])
    ex.add_item(BOB, "Owned first", at(2, 11), at(2, 12), organizer=BOB,
                required_attendees=["aaa@customer.example", "zzz@customer.example"])
    ex.add_item(BOB, "Email order", at(2, 13), at(2, 14), organizer=BOB,
                required_attendees=[CAROL, "aaa@customer.example"])
    s = world.sync()
    assert s["status"] == "succeeded", s
    assert _whos(world, _one(world.sf_events(BOB), Subject="Lead first"))[1] == world.ids[FRANK]
    assert _whos(world, _one(world.sf_events(BOB), Subject="Owned first"))[1] == bobs
    assert _whos(world, _one(world.sf_events(BOB), Subject="Email order"))[1] == a_contact
    ev = _one(world.sf_events(BOB), Subject="Owned first")
    assert {r["RelationId"] for r in _rels(world, ev["Id"])} == {a_contact, bobs}  # all invitees stay invitees


# ------------------------------------------------------------------------------------------------ R13/R14


def test_r13_first_user_becomes_organizer_no_second_copy(world):
    # Both users are synced in one run: both snapshots are taken before either write.
    world.configure(user_block(ALICE), user_block(BOB))
    org = world.sb.salesforce.org
    org.add_event(world.ids[ALICE], "Joint customer visit", at(5, 13), at(5, 15),
                  invitee_ids=[world.ids[BOB], world.ids[CAROL]])
    assert len(_sf(world, BOB, "Joint customer visit")) == 1  # Bob's child event
    s = world.sync()
    assert s["status"] == "succeeded", s
    alice_copy = _one(world.mail_items(ALICE), subject="Joint customer visit")
    assert alice_copy["organizer"] == ALICE
    assert _attendees(world, alice_copy) == [BOB, CAROL]
    bob_copy = _one(world.mail_items(BOB), subject="Joint customer visit")  # delivered, not a second meeting
    assert bob_copy["uid"] == alice_copy["uid"] and bob_copy["organizer"] == ALICE
    assert len(_sf(world, ALICE, "Joint customer visit")) == 1 and len(_sf(world, BOB, "Joint customer visit")) == 1
    for _ in range(2):
        again = world.sync()
        assert again["totals"]["created"] == 0, again
    assert len(_mail(world, BOB, "Joint customer visit")) == 1
    assert len(_mail(world, ALICE, "Joint customer visit")) == 1
    assert len(_pairs(world, BOB)) == 1  # Bob's child is linked to his delivered copy


def _olga_invites_alice_and_bob(world):
    # The owner is not synced: the first synced invited user (by address) writes the meeting (C15).
    world.configure(user_block(ALICE), user_block(BOB))
    olga = world.sb.salesforce.org.add_user("olga@example.com", name="Olga Owner")
    world.sb.salesforce.org.add_event(olga, "Team offsite planning", at(7, 9), at(7, 11),
                                      invitee_ids=[world.ids[ALICE], world.ids[BOB]])
    s = world.sync()
    assert s["status"] == "succeeded", s
    return s


def test_r13_unsynced_owner_first_synced_invitee_organizes(world):
    s = _olga_invites_alice_and_bob(world)
    assert "child_event" in _reasons(s, BOB)  # Bob's child waits for the meeting Alice's sync writes
    world.sync()
    meetings = [i for mb in (ALICE, BOB) for i in world.mail_items(mb) if i["subject"] == "Team offsite planning"]
    # one meeting, never one per invitee: Alice's, and the copy Exchange delivered to Bob
    assert [i["organizer"] for i in meetings] == [ALICE, ALICE] and len({i["uid"] for i in meetings}) == 1
    assert world.sync()["totals"]["created"] == 0


def test_r13_unsynced_owner_meeting_reaches_other_invitees(world):
    _olga_invites_alice_and_bob(world)
    world.sync()
    assert len(_mail(world, BOB, "Team offsite planning")) == 1 and len(_pairs(world, BOB)) == 1
    assert _attendees(world, _one(world.mail_items(ALICE), subject="Team offsite planning")) == [BOB]
    assert world.sync()["totals"]["deltas"] == 0


def _alice_then_bob(world):
    # Alice syncs alone first; Bob starts syncing later.
    world.configure(user_block(ALICE))
    world.sb.salesforce.org.add_event(world.ids[ALICE], "Board prep", at(6, 9), at(6, 10),
                                      invitee_ids=[world.ids[BOB]])
    world.sync()
    world.configure(user_block(ALICE), user_block(BOB))
    s = world.sync()
    assert s["status"] == "succeeded", s
    return s


def test_r13_later_user_creates_no_second_copy(world):
    s = _alice_then_bob(world)
    assert s["totals"]["created"] == 0, s
    assert [i for i in world.mail_items(BOB) if i["organizer"] == BOB] == []
    assert "child_event" in _reasons(s, BOB)


def test_r13_later_user_receives_the_meeting(world):
    s = _alice_then_bob(world)
    assert world.query("SELECT count(*) FROM deltas WHERE reason = 'synced_invitee_added'")[0][0] == 1
    assert "child_event" in _reasons(s, BOB)  # Bob's child waits for the delivered copy ...
    world.sync()
    assert _attendees(world, _one(world.mail_items(ALICE), subject="Board prep")) == [BOB]
    assert len(_mail(world, BOB, "Board prep")) == 1 and len(_pairs(world, BOB)) == 1  # ... and links to it (C15)
    assert [e["IsChild"] for e in _sf(world, BOB, "Board prep")] == [True]
    assert world.sync()["totals"]["deltas"] == 0


def test_r14_email_meeting_gives_each_user_own_copy(world):
    world.configure(user_block(ALICE), user_block(BOB))
    ex = world.sb.exchange.org
    uid = ex.new_uid()
    ex.add_item(ALICE, "Design review", at(3, 15), at(3, 16), organizer=ALICE, uid=uid,
                required_attendees=[BOB, CAROL])
    ex.add_item(BOB, "Design review", at(3, 15), at(3, 16), organizer=ALICE, uid=uid,
                required_attendees=[BOB, CAROL])
    s = world.sync()
    assert s["status"] == "succeeded", s
    a = _one(world.sf_events(ALICE), Subject="Design review")
    b = _one(world.sf_events(BOB), Subject="Design review")
    assert a["Id"] != b["Id"] and not a["IsChild"] and not b["IsChild"]
    for ev in (a, b):
        assert not any(r["RelationId"].startswith("005") for r in _rels(world, ev["Id"]))  # no User relations
        assert world.ids[CAROL] in {r["RelationId"] for r in _rels(world, ev["Id"])}
    assert world.sync()["totals"]["created"] == 0


# ------------------------------------------------------------------------------------------------ R15


def test_r15_mailbox_switch_drops_old_pairs(world):
    new_box = "alice.new@example.com"
    world.add_mailbox(new_box, time_zone="Europe/Berlin")
    world.configure(user_block(ALICE))
    sf_id = world.sb.salesforce.org.add_event(world.ids[ALICE], "Forecast call", at(2, 9), at(2, 10))
    world.sync()
    old_copy = _one(world.mail_items(ALICE), subject="Forecast call")
    world.configure(user_block(ALICE, mailbox=new_box))
    s = world.sync()
    assert s["status"] == "succeeded", s
    assert world.query("SELECT count(*) FROM deltas WHERE reason = 'mailbox_changed'")[0][0] == 1
    assert all(p[2] == new_box for p in _pairs(world, ALICE))
    assert len(_mail(world, new_box, "Forecast call")) == 1
    # The old mailbox is never touched again: a Salesforce edit reaches only the new one.
    world.salesforce().Event.update(sf_id, {"Subject": "Forecast call (moved)"})
    world.sync()
    assert _one(world.mail_items(ALICE), id=old_copy["id"])["subject"] == "Forecast call"
    assert len(_mail(world, new_box, "Forecast call (moved)")) == 1
    assert len(_sf(world, ALICE, "Forecast call (moved)")) == 1


# ------------------------------------------------------------------------------------------------ R16


def test_r16_required_custom_field_skips_creates_only(world):
    world.sb.salesforce.org.set_required_custom_field("Region__c")
    world.configure(user_block(ALICE))
    ex = world.sb.exchange.org
    # A pair made from Salesforce (its event has the field filled, as Salesforce users must).
    world.sb.salesforce.org.add_event(world.ids[ALICE], "Paired before", at(2, 9), at(2, 10))
    world.sync()
    assert len(_mail(world, ALICE, "Paired before")) == 1
    alice = world.person(ALICE)
    alice.edit(alice.item_id(subject="Paired before"), subject="Paired before (edited)")
    new_mail = ex.add_item(ALICE, "New in mail", at(3, 9), at(3, 10))
    world.sb.salesforce.org.add_event(world.ids[ALICE], "New in SF", at(3, 11), at(3, 12))
    s = world.sync()
    assert any("Region__c" in n for n in s["notices"]), s["notices"]
    assert _sf(world, ALICE, "New in mail") == []
    skipped = [x for x in s["users"][ALICE]["skipped"] if x["native_id"] == world.native_id(new_mail)]
    assert [x["reason"] for x in skipped] == ["required_field"]
    assert len(_sf(world, ALICE, "Paired before (edited)")) == 1  # updates go on
    assert len(_mail(world, ALICE, "New in SF")) == 1  # Salesforce -> email goes on
    assert s["totals"]["failed"] == 0, s


# ------------------------------------------------------------------------------------------------ R18


def test_r18_push_one_event(world):
    from flows.config import load_config
    from flows.push import push

    world.configure(user_block(ALICE, filter="updates_only", direction="email_to_salesforce"))
    cfg = load_config(world.config_path, env=world.env)
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    far = world.today + timedelta(days=200)  # outside the window: a manual push ignores it (C21)
    sf_id = org.add_event(world.ids[ALICE], "Pushed from SF", _utc(far, 9), _utc(far, 10),
                          invitee_ids=[world.ids[CAROL]])
    s = push(cfg, "salesforce", sf_id, today=world.today)
    assert s["status"] == "succeeded", s
    item = _one(world.mail_items(ALICE), subject="Pushed from SF")
    assert _attendees(world, item) == [CAROL]
    em_id = ex.add_item(ALICE, "Pushed from mail", at(4, 9), at(4, 10))
    same_key_sf = org.add_event(world.ids[ALICE], "Pushed from mail", at(4, 9), at(4, 10), description="SF text")
    s2 = push(cfg, "email", world.native_id(em_id), today=world.today, user=ALICE)
    assert s2["status"] == "succeeded", s2
    assert _sf(world, ALICE, "Pushed from mail")[0]["Id"] == same_key_sf  # paired, not created twice
    assert len(_sf(world, ALICE, "Pushed from mail")) == 1
    assert (world.sb.salesforce.org.record(same_key_sf)["Description"] or "") == ""  # the pushed side wins
    assert {(p[3], p[4]) for p in _pairs(world, ALICE)} >= {(sf_id, world.native_id(item["id"])), (same_key_sf, world.native_id(em_id))}
    assert world.query("SELECT count(*) FROM runs WHERE mode = 'push'")[0][0] == 2
    # Pushing an already paired event changes nothing.
    s3 = push(cfg, "salesforce", sf_id, today=world.today)
    assert s3["totals"]["deltas"] == 0 and any(x["reason"] == "already_paired" for x in s3["users"][ALICE]["skipped"])


# ------------------------------------------------------------------------------------------------ C20


def test_invitations_not_sent_to_externals(world):
    world.configure(user_block(ALICE), user_block(BOB))
    org, ex = world.sb.salesforce.org, world.sb.exchange.org
    org.add_event(world.ids[ALICE], "Kick-off", at(2, 9), at(2, 10), invitee_ids=[world.ids[CAROL], world.ids[BOB]])
    world.sync()
    sent = {(i["recipient"], i["subject"]) for i in ex.invitations()}
    assert (BOB, "Kick-off") in sent  # a synced user gets the meeting so it lands on his calendar
    assert not any(r == CAROL for r, _ in sent)
    # An update (new time) also reaches Bob, not Carol.
    ev = _one(world.sf_events(ALICE), Subject="Kick-off")
    world.salesforce().Event.update(ev["Id"], {"StartDateTime": at(2, 11).isoformat(), "EndDateTime": at(2, 12).isoformat()})
    world.sync()
    assert not any(i["recipient"] == CAROL for i in ex.invitations())
    assert sum(1 for i in ex.invitations() if i["recipient"] == BOB) >= 2
    # With send_external_invites the customer is invited too.
    world.configure(user_block(ALICE, send_external_invites=True), user_block(BOB))
    org.add_event(world.ids[ALICE], "Customer demo", at(3, 9), at(3, 10), invitee_ids=[world.ids[CAROL]])
    world.sync()
    assert (CAROL, "Customer demo") in {(i["recipient"], i["subject"]) for i in ex.invitations()}


# ------------------------------------------------------------------------------------------------ time


def test_all_day_same_dates_any_time_zone(world):
    world.configure(user_block(ALICE), user_block(BOB))  # Berlin (UTC+1) and New York (UTC-5)
    day = TODAY_PLUS(10)
    world.sb.exchange.org.add_item(BOB, "Conference", day, day + timedelta(days=2), is_all_day=True)
    world.sb.exchange.org.add_item(ALICE, "Holiday", day, day + timedelta(days=1), is_all_day=True)
    # Salesforce keeps the last day (inclusive): days +12 and +13.
    world.sb.salesforce.org.add_event(world.ids[BOB], "Trade fair", _utc(day + timedelta(days=2)),
                                      _utc(day + timedelta(days=3)), is_all_day=True)
    s = world.sync()
    assert s["status"] == "succeeded", s
    conf = _one(world.sf_events(BOB), Subject="Conference")
    assert conf["IsAllDayEvent"] and str(conf["ActivityDate"]) == day.isoformat()
    assert conf["DurationInMinutes"] == 2 * 1440
    hol = _one(world.sf_events(ALICE), Subject="Holiday")
    assert str(hol["ActivityDate"]) == day.isoformat() and hol["DurationInMinutes"] == 1440
    fair = _one(world.mail_items(BOB), subject="Trade fair")
    ny = ZoneInfo("America/New_York")
    assert fair["is_all_day"]
    assert fair["start"].astimezone(ny).date() == day + timedelta(days=2)
    assert fair["end"].astimezone(ny).date() == day + timedelta(days=4)  # exclusive
    assert world.sync()["totals"]["deltas"] == 0


def TODAY_PLUS(n: int) -> date:  # reads like a constant in the tests
    return at(n).date()


def test_timed_event_keeps_instant_across_dst(world):
    # 2026-03-08 the US moves to summer time, 2026-03-29 Europe does.
    today = date(2026, 3, 1)
    world.configure(user_block(ALICE), user_block(BOB))
    ex, org = world.sb.exchange.org, world.sb.salesforce.org
    ny = ZoneInfo("America/New_York")
    before = datetime(2026, 3, 6, 9, 0, tzinfo=ny)
    after = datetime(2026, 3, 13, 9, 0, tzinfo=ny)
    ex.add_item(BOB, "NY morning before", before, before + timedelta(hours=1), time_zone="America/New_York")
    ex.add_item(BOB, "NY morning after", after, after + timedelta(hours=1), time_zone="America/New_York")
    org.add_event(world.ids[ALICE], "Across EU change", _utc(date(2026, 3, 30), 8), _utc(date(2026, 3, 30), 9))
    s = world.sync(today=today)
    assert s["status"] == "succeeded", s

    def sf_start(owner, subject):
        ev = _one(world.sf_events(owner), Subject=subject)
        return datetime.fromisoformat(str(ev["StartDateTime"]).replace("Z", "+00:00"))

    assert sf_start(BOB, "NY morning before") == _utc(date(2026, 3, 6), 14)  # EST: UTC-5
    assert sf_start(BOB, "NY morning after") == _utc(date(2026, 3, 13), 13)  # EDT: UTC-4
    item = _one(world.mail_items(ALICE), subject="Across EU change")
    assert item["start"] == _utc(date(2026, 3, 30), 8)
    assert item["start"].astimezone(ZoneInfo("Europe/Berlin")).hour == 10  # CEST
    assert world.sync(today=today)["totals"]["deltas"] == 0


# ------------------------------------------------------------------------------------------------ C23


def test_recurring_occurrences_sync_stably(world):
    today = date(2026, 3, 1)
    world.configure(user_block(BOB))
    ex = world.sb.exchange.org
    ny = ZoneInfo("America/New_York")
    first = datetime(2026, 3, 2, 9, 0, tzinfo=ny)
    ex.add_item(BOB, "Weekly standup", first, first + timedelta(minutes=30), time_zone="America/New_York",
                recurrence={"pattern": "weekly", "weekdays": ["Monday"], "occurrences": 6})
    # An endless daily series: only what lies inside the window is synced.
    ex.add_item(BOB, "Daily check", _utc(date(2026, 3, 2), 7), _utc(date(2026, 3, 2), 7, 15),
                recurrence={"pattern": "daily"}, time_zone="UTC")
    s1 = world.sync(today=today)
    assert s1["status"] == "succeeded", s1
    weekly = sorted(_sf(world, BOB, "Weekly standup"), key=lambda e: e["StartDateTime"])
    assert len(weekly) == 6
    starts = [datetime.fromisoformat(str(e["StartDateTime"]).replace("Z", "+00:00")) for e in weekly]
    assert all(s.astimezone(ny).hour == 9 for s in starts)  # each keeps its wall time across DST
    daily = _sf(world, BOB, "Daily check")
    # window end: 2 May + 1 day -> occurrences 2 Mar .. 1 May (inclusive) = 61
    assert len(daily) == 61
    for _ in range(2):
        again = world.sync(today=today)
        assert again["totals"]["created"] == 0 and again["totals"]["deltas"] == 0, again
    assert len(_sf(world, BOB, "Weekly standup")) == 6
    # The window moves on a week: new occurrences come in, old ones are not deleted or duplicated.
    later = world.sync(today=today + timedelta(days=7))
    assert later["totals"]["deleted"] == 0
    assert len(_sf(world, BOB, "Daily check")) == 68
    assert len(_sf(world, BOB, "Weekly standup")) == 6


# ------------------------------------------------------------------------------------------------ C19


def test_bad_data_each_gets_an_outcome(world):
    world.configure(user_block(ALICE))
    ex, org = world.sb.exchange.org, world.sb.salesforce.org
    ids = {
        "no_subject": ex.add_item(ALICE, "", at(1, 9), at(1, 10)),
        "zero_length": ex.add_item(ALICE, "Zero length", at(1, 11), at(1, 11)),
        "backwards": ex.add_item(ALICE, "Backwards", at(1, 13), at(1, 14)),
        "long_subject": ex.add_item(ALICE, "S" * 300, at(2, 9), at(2, 10)),
        "long_body": ex.add_item(ALICE, "Long body", at(2, 11), at(2, 12), body="d" * 40_000),
        "too_long": ex.add_item(ALICE, "Roadshow", at(3, 9), at(18, 9)),
        "no_address": ex.add_item(ALICE, "Nameless attendee", at(4, 9), at(4, 10), organizer=ALICE,
                                  required_attendees=[{"email": "", "name": "Somebody"}, CAROL]),
        "bad_zone": ex.add_item(ALICE, "Mars time", at(5, 0).date(), at(6, 0).date(), is_all_day=True,
                                time_zone="Mars/Olympus_Mons"),
        "fine": ex.add_item(ALICE, "Normal meeting", at(6, 9), at(6, 10)),
    }
    # end before start cannot be seeded through EWS: set it in the store as a broken client would.
    item = ex.mailbox(ALICE).items[ids["backwards"]]
    item.start, item.end = at(1, 14), at(1, 13)
    sf_blank = org.add_event(world.ids[ALICE], "placeholder", at(7, 9), at(7, 10))
    world.salesforce().Event.update(sf_blank, {"Subject": None})
    s = world.sync()
    assert s["status"] in ("succeeded", "partial"), s
    notes = {x["native_id"]: x["reason"] for x in s["users"][ALICE]["skipped"]}
    ids = {k: world.native_id(v) for k, v in ids.items()}
    assert notes.get(ids["no_subject"]) == "no_subject"
    assert notes.get(ids["zero_length"]) == "end_before_start"
    assert notes.get(ids["backwards"]) == "end_before_start"
    assert notes.get(ids["too_long"]) == "too_long_event"
    assert notes.get(ids["long_subject"]) == "subject_truncated"
    assert notes.get(ids["long_body"]) == "description_truncated"
    if world.kind == "ews":
        assert "time_zone" in (notes.get(ids["bad_zone"]) or ""), notes
    else:  # Graph serves all-day events as floating dates: there is no zone to map
        assert _one(world.sf_events(ALICE), Subject="Mars time")["IsAllDayEvent"]
    assert notes.get(sf_blank) == "no_subject"
    subj = _one(world.sf_events(ALICE), Subject="S" * 255)
    assert subj
    assert len(_one(world.sf_events(ALICE), Subject="Long body")["Description"]) == 32_000
    nameless = _one(world.sf_events(ALICE), Subject="Nameless attendee")
    assert {r["RelationId"] for r in _rels(world, nameless["Id"])} == {world.ids[CAROL]}
    assert len(_sf(world, ALICE, "Normal meeting")) == 1
    # The cut is not a change when copied back: the next run writes nothing, the mailbox keeps its text.
    again = world.sync()
    assert again["totals"]["deltas"] == 0, again
    assert len(_one(world.mail_items(ALICE), subject="S" * 300)["subject"]) == 300
    assert len(_one(world.mail_items(ALICE), subject="Long body")["body"]) == 40_000


def _linked_pairs(world, user):
    return world.query("SELECT sf_id, email_id FROM pairs WHERE user_key = ? AND linked", [user])


def test_r13_child_links_by_meeting_uid_after_the_meeting_moved(world):
    # The organizer's event moves after the meeting was delivered and before the invitee's child is linked:
    # the child moved with it in Salesforce, the delivered copy keeps the old time until the update arrives.
    world.configure(user_block(ALICE), user_block(BOB))
    ev = world.sb.salesforce.org.add_event(world.ids[ALICE], "Account review", at(5, 13), at(5, 14),
                                           invitee_ids=[world.ids[BOB]])
    world.sync()
    assert len(_mail(world, BOB, "Account review")) == 1  # delivered
    world.salesforce().Event.update(ev, {"StartDateTime": at(5, 15).isoformat(), "EndDateTime": at(5, 16).isoformat()})
    world.sb.clock.advance(timedelta(minutes=1))
    s = world.sync()
    assert s["totals"]["created"] == 0, s  # no standalone Salesforce copy for Bob (R14/C16)
    world.sync()
    child = _one(world.sf_events(BOB), Subject="Account review")
    assert child["IsChild"]
    copy = _one(world.mail_items(BOB), subject="Account review")
    assert copy["start"] == at(5, 15)
    assert _linked_pairs(world, BOB) == [(child["Id"], copy["id"])]
    assert "child_event" not in _reasons(world.sync(), BOB)
    assert world.sync()["totals"]["deltas"] == 0


def test_r13_group_meeting_edits_settle_into_quiet_runs(world):
    # Alice's meeting with Bob (synced) and Carol (Contact): edits on both sides, some before Bob's child is linked.
    world.configure(user_block(ALICE), user_block(BOB))
    sf = world.salesforce()
    ev = world.sb.salesforce.org.add_event(world.ids[ALICE], "Quarterly review", at(5, 13), at(5, 14),
                                           invitee_ids=[world.ids[BOB], world.ids[CAROL]])
    world.sync()
    edits = [
        {"Subject": "Quarterly review (room 4)"},
        {"StartDateTime": at(5, 14).isoformat(), "EndDateTime": at(5, 15).isoformat()},
        {"Description": "agenda attached"},
        {"Subject": "Quarterly review (final)", "StartDateTime": at(6, 9).isoformat(), "EndDateTime": at(6, 10).isoformat()},
    ]
    for change in edits:
        sf.Event.update(ev, change)
        world.sb.clock.advance(timedelta(minutes=1))
        world.sync()
    alice = world.person(ALICE)
    alice.edit(alice.item_id(subject="Quarterly review (final)"), send=True, subject="Quarterly review (Outlook)")
    world.sb.clock.advance(timedelta(minutes=1))
    world.sync()  # copies the organizer's edit to Salesforce
    world.sync()  # settles what that write sent on
    for _ in range(2):
        quiet = world.sync()
        assert quiet["totals"]["deltas"] == 0, quiet
    assert [e["IsChild"] for e in world.sf_events(BOB)] == [True]  # one event on Bob's calendar: his child
    assert len(world.sf_events(ALICE)) == 1
    assert [i["subject"] for i in world.mail_items(BOB)] == ["Quarterly review (Outlook)"]
    assert world.sf_events(BOB)[0]["Subject"] == "Quarterly review (Outlook)"
    assert len(_linked_pairs(world, BOB)) == 1


# ------------------------------------------------------------------------------------------------ R7/C19 text


def test_r7_a_round_trip_through_the_mailbox_keeps_the_salesforce_original(world):
    # A mailbox keeps neither a body's trailing whitespace nor the control characters XML cannot carry ("?"):
    # the copy's stored form is not an edit, and the Salesforce originals are never rewritten.
    world.configure(user_block(ALICE))
    org, a = world.sb.salesforce.org, world.ids[ALICE]
    originals = {
        org.add_event(a, "Trailing spaces", at(2, 9), at(2, 10), description="notes   "): None,
        org.add_event(a, "Trailing newline", at(2, 11), at(2, 12), description="line one\nline two\n"): None,
        org.add_event(a, "Long text", at(2, 13), at(2, 14), description="x" * 31_990 + " " * 10): None,
        org.add_event(a, "Nul\x00inside", at(3, 9), at(3, 10)): None,
        org.add_event(a, "Vertical\x0btab", at(3, 11), at(3, 12), description="a\x0bb & <c>"): None,
    }
    for sf_id in originals:
        originals[sf_id] = {k: org.record(sf_id)[k] for k in ("Subject", "Description")}
    first = world.sync()
    assert first["totals"]["created"] == 5, first
    assert sorted(_reasons(first, ALICE)) == ["description_altered", "subject_altered", "subject_altered"]
    assert sorted(i["subject"] for i in world.mail_items(ALICE)) == [
        "Long text", "Nul?inside", "Trailing newline", "Trailing spaces", "Vertical?tab"]
    settle = world.sync()
    assert settle["totals"]["deltas"] == 0, settle
    # a person moves every copy in Outlook: the times flow back, the texts stay as their owner wrote them
    alice = world.person(ALICE)
    for item in world.mail_items(ALICE):
        alice.edit(item["id"], start=item["start"] + timedelta(days=1), end=item["end"] + timedelta(days=1))
    world.sb.clock.advance(timedelta(minutes=1))
    back = world.sync()
    assert back["totals"]["updated"] == 5, back
    for sf_id, texts in originals.items():
        now = org.record(sf_id)
        assert {k: now[k] for k in texts} == texts
    assert world.sync()["totals"]["deltas"] == 0


def test_c19_control_characters_in_outlook_reach_salesforce_without_harm_to_other_items(world):
    world.configure(user_block(ALICE))
    ex = world.sb.exchange.org
    ex.add_item(ALICE, "Budget\x0b2027", at(2, 9), at(2, 10), body="totals\x01due")
    ex.add_item(ALICE, "R&D <review>", at(3, 9), at(3, 10), body='Q&A "quoted"')
    world.sync()
    assert sorted((e["Subject"], e["Description"]) for e in world.sf_events(ALICE)) == [
        ("Budget\x0b2027", "totals\x01due"), ("R&D <review>", 'Q&A "quoted"')]
    assert world.sync()["totals"]["deltas"] == 0
    # a Salesforce edit of the time is written back without touching the Outlook subject
    ev = _one(world.sf_events(ALICE), Subject="Budget\x0b2027")
    world.salesforce().Event.update(ev["Id"], {"StartDateTime": at(2, 15).isoformat(), "EndDateTime": at(2, 16).isoformat()})
    world.sb.clock.advance(timedelta(minutes=1))
    world.sync()
    item = _one(world.mail_items(ALICE), start=at(2, 15))
    assert item["subject"] == "Budget\x0b2027"
    assert world.sync()["totals"]["deltas"] == 0


# ------------------------------------------------------------------------------------------------ C23 Salesforce series


def test_c23_salesforce_series_sync_their_occurrences_never_their_masters(world):
    # A Classic weekly series and a Lightning Experience event series in Salesforce: every occurrence is an event of
    # its own (C23); the Classic master and the series' pattern record are not events and reach no mailbox.
    world.configure(user_block(ALICE))
    org, sf = world.sb.salesforce.org, world.salesforce()
    first = at(1, 9).date()
    master = org.add_event(world.ids[ALICE], "Weekly 1:1", at(1, 9), at(1, 9, 30), IsRecurrence=True,
                           RecurrenceType="RecursWeekly", RecurrenceDayOfWeekMask=[2, 4, 8, 16, 32, 64, 1][first.weekday()],
                           RecurrenceEndDateOnly=first + timedelta(weeks=5), RecurrenceTimeZoneSidKey="Europe/Berlin")
    daily = sf.Event.create({"Subject": "Standup", "OwnerId": world.ids[ALICE], "StartDateTime": at(2, 8).isoformat(),
                             "DurationInMinutes": 15, "IsRecurrence2": True,
                             "Recurrence2PatternText": "RRULE:FREQ=DAILY;INTERVAL=1;COUNT=5"})["id"]
    s = world.sync()
    assert s["status"] == "succeeded", s
    weekly_items = sorted(i["start"] for i in _mail(world, ALICE, "Weekly 1:1"))
    assert weekly_items == [at(1 + 7 * n, 9) for n in range(6)]  # the occurrences, not the master
    assert sorted(i["start"] for i in _mail(world, ALICE, "Standup")) == [at(2 + n, 8) for n in range(5)]
    assert world.sync()["totals"]["deltas"] == 0
    rows = sf.query_all(f"SELECT Id, StartDateTime FROM Event WHERE RecurrenceActivityId = '{master}' ORDER BY StartDateTime")
    occ = [r["Id"] for r in rows["records"]]
    assert master not in {p[3] for p in _pairs(world, ALICE)} and set(occ) <= {p[3] for p in _pairs(world, ALICE)}

    # an occurrence edited in Salesforce reaches its own copy; a deleted one takes its copy with it
    sf.Event.update(occ[1], {"Subject": "Weekly 1:1 (offsite)"})
    sf.Event.delete(occ[2])
    sf.Event.update(daily, {"Description": "first of the week"})
    world.sb.clock.advance(timedelta(minutes=1))
    s = world.sync()
    assert (s["totals"]["updated"], s["totals"]["deleted"]) == (2, 1), s
    assert [i["start"] for i in _mail(world, ALICE, "Weekly 1:1 (offsite)")] == [at(8, 9)]
    assert sorted(i["start"] for i in _mail(world, ALICE, "Weekly 1:1")) == [at(1 + 7 * n, 9) for n in (0, 3, 4, 5)]
    assert [i["body"] for i in _mail(world, ALICE, "Standup") if i["start"] == at(2, 8)] == ["first of the week"]

    # an Outlook edit of one occurrence's copy reaches that occurrence's row, and no other
    alice = world.person(ALICE)
    alice.edit(alice.occurrence_id("Weekly 1:1", at(22, 9)), start=at(22, 11), end=at(22, 11, 30))
    world.sb.clock.advance(timedelta(minutes=1))
    s = world.sync()
    assert s["totals"]["updated"] == 1, s
    moved = org.record(occ[3])
    assert datetime.fromisoformat(str(moved["StartDateTime"]).replace("Z", "+00:00")) == at(22, 11)
    starts = sorted(datetime.fromisoformat(str(org.record(i)["StartDateTime"]).replace("Z", "+00:00"))
                    for i in occ if i != occ[2])
    assert starts == [at(1, 9), at(8, 9), at(22, 11), at(29, 9), at(36, 9)]
    assert org.record(master)["IsRecurrence"] is True and not org.record(master)["IsDeleted"]
    assert world.sync()["totals"]["deltas"] == 0
