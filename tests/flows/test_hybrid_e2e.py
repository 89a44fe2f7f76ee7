"""A hybrid organisation: Alice's mailbox on Exchange Server (EWS), Bob's in Exchange Online (Graph), synced
in one run; and a mailbox that moves from one kind to the other."""

from __future__ import annotations

from tests.flows.conftest import at, user_block
from tests.flows.conftest import one as _one
from tests.flows.conftest import sf_with as _sf

ALICE, BOB = "alice@example.com", "bob@example.com"
CAROL = "carol@customer.example"


def _mail(world, mailbox, subject):
    return [i for i in world.mail_items(mailbox) if i["subject"] == subject]


def _hybrid_config(world, **bob):
    return world.configure(user_block(ALICE, time_zone="Europe/Berlin", mailbox_kind="ews"),
                           user_block(BOB, time_zone="America/New_York", mailbox_kind="graph", **bob))


def test_one_run_syncs_ews_and_graph_users_with_their_own_api_calls(hybrid):
    _hybrid_config(hybrid)
    hybrid.sb.salesforce.org.add_event(hybrid.ids[ALICE], "Alice SF call", at(1, 9), at(1, 10))
    hybrid.sb.salesforce.org.add_event(hybrid.ids[BOB], "Bob SF call", at(1, 11), at(1, 12))
    hybrid.sb.exchange.org.add_item(BOB, "Bob mail call", at(2, 9), at(2, 10))
    s = hybrid.sync()
    assert s["status"] == "succeeded", s
    assert len(_mail(hybrid, ALICE, "Alice SF call")) == 1 and len(_mail(hybrid, BOB, "Bob SF call")) == 1
    assert len(_sf(hybrid, BOB, "Bob mail call")) == 1
    ews, graph = hybrid.query("SELECT ews_api_calls, graph_api_calls FROM runs")[0]
    assert ews > 0 and graph > 0
    # the Graph call count is the Graph server's own count of what it answered
    assert graph == hybrid.sb.graph.calls()
    assert hybrid.sync()["totals"]["deltas"] == 0


def test_salesforce_meeting_between_an_ews_and_a_graph_user_syncs_once(hybrid):
    """R13/C15: Alice (EWS) organizes; Bob (Graph) is an invited User with a child event; Carol a Contact."""
    _hybrid_config(hybrid)
    org = hybrid.sb.salesforce.org
    org.add_event(hybrid.ids[ALICE], "Joint pitch", at(3, 14), at(3, 15),
                  invitee_ids=[hybrid.ids[BOB], hybrid.ids[CAROL]])
    s = hybrid.sync()
    assert s["status"] == "succeeded", s
    alice_copy = _one(hybrid.mail_items(ALICE), subject="Joint pitch")
    bob_copy = _one(hybrid.mail_items(BOB), subject="Joint pitch")  # delivered across, same meeting
    assert bob_copy["uid"] == alice_copy["uid"] and bob_copy["organizer"] == ALICE
    assert hybrid.mail_invitees(alice_copy) == [BOB, CAROL]
    # nothing twice: one Salesforce event each (Bob's is the child), one copy in each mailbox
    assert len(_sf(hybrid, ALICE, "Joint pitch")) == 1 and len(_sf(hybrid, BOB, "Joint pitch")) == 1
    assert _one(hybrid.sf_events(BOB), Subject="Joint pitch")["IsChild"]
    assert not any(i["recipient"] == CAROL for i in hybrid.sb.exchange.org.invitations())  # C20
    # Bob's next sync links his child to the copy delivered to his Graph mailbox (C15), writing nothing
    link = hybrid.sync()
    assert (link["totals"]["created"], link["totals"]["updated"], link["totals"]["deleted"]) == (0, 0, 0), link
    assert len(hybrid.query("SELECT pair_id FROM pairs WHERE user_key = ? AND linked", [BOB])) == 1
    assert hybrid.sync()["totals"]["deltas"] == 0


def test_outlook_meeting_from_a_graph_user_to_an_ews_user_gives_each_their_own_event(hybrid):
    """R14/C16: Bob (Exchange Online) organizes in Outlook and invites Alice (on premises) and Carol."""
    _hybrid_config(hybrid)
    hybrid.person(BOB).invite("Partner sync", at(4, 15), at(4, 16), [ALICE, CAROL])
    assert len(_mail(hybrid, ALICE, "Partner sync")) == 1  # delivered to the EWS mailbox by Exchange
    sent_before = len(hybrid.sb.exchange.org.invitations())
    s = hybrid.sync()
    assert s["status"] == "succeeded", s
    bob_ev, alice_ev = _one(hybrid.sf_events(BOB), Subject="Partner sync"), _one(hybrid.sf_events(ALICE), Subject="Partner sync")
    assert not bob_ev["IsChild"] and not alice_ev["IsChild"] and bob_ev["Id"] != alice_ev["Id"]
    assert len(_mail(hybrid, BOB, "Partner sync")) == 1 and len(_mail(hybrid, ALICE, "Partner sync")) == 1
    assert len(hybrid.sb.exchange.org.invitations()) == sent_before  # the sync mailed nobody
    assert hybrid.sync()["totals"]["deltas"] == 0


def test_a_graph_users_external_invitees_are_recorded_not_mailed_and_survive_edits(hybrid):
    """C24 on a Graph mailbox: Carol (a Contact) is recorded on Bob's meeting, never an attendee or mailed;
    Salesforce keeps her relation; a later edit keeps her recorded and still mails her nothing."""
    _hybrid_config(hybrid)
    sf = hybrid.sb.salesforce.org
    ev = sf.add_event(hybrid.ids[BOB], "Renewal", at(5, 10), at(5, 11), invitee_ids=[hybrid.ids[CAROL]])
    s = hybrid.sync()
    assert s["status"] == "succeeded", s
    copy = _one(hybrid.mail_items(BOB), subject="Renewal")
    assert copy["required_attendees"] + copy["optional_attendees"] == []
    assert hybrid.mail_invitees(copy) == [CAROL]
    assert hybrid.sb.exchange.org.invitations() == []
    hybrid.salesforce().Event.update(ev, {"Subject": "Renewal (moved)", "StartDateTime": at(5, 12).isoformat(),
                                          "EndDateTime": at(5, 13).isoformat()})
    s2 = hybrid.sync()
    assert s2["status"] == "succeeded", s2
    moved = _one(hybrid.mail_items(BOB), subject="Renewal (moved)")
    assert hybrid.mail_invitees(moved) == [CAROL] and hybrid.sb.exchange.org.invitations() == []
    assert {r["RelationId"] for r in sf.relations(ev) if r["IsInvitee"]} == {hybrid.ids[CAROL]}
    assert hybrid.sync()["totals"]["deltas"] == 0

    # Opting in makes Carol an attendee, and Graph mails her the change.
    _hybrid_config(hybrid, send_external_invites=True)
    hybrid.salesforce().Event.update(ev, {"Description": "Agenda attached"})
    hybrid.sync()
    assert CAROL in {a["email"] for a in _one(hybrid.mail_items(BOB), subject="Renewal (moved)")["required_attendees"]}
    assert any(i["recipient"] == CAROL for i in hybrid.sb.exchange.org.invitations())


def test_a_mailbox_moved_to_exchange_online_starts_afresh_without_duplicates(hybrid):
    """C17: Alice's mailbox moves from Exchange Server to Exchange Online. Her pairs hold EWS item ids, so they
    are dropped (mailbox_changed); her events, on both sides already, pair again by key: nothing is created,
    deleted or written twice, and EWS is not asked about her again."""
    _hybrid_config(hybrid)
    sf = hybrid.sb.salesforce.org
    sf.add_event(hybrid.ids[ALICE], "Board prep", at(2, 9), at(2, 10))
    hybrid.sb.exchange.org.add_item(ALICE, "Dentist", at(3, 9), at(3, 10))
    assert hybrid.sync()["status"] == "succeeded"
    before_sf = sorted(e["Subject"] for e in hybrid.sf_events(ALICE))
    before_mail = sorted(i["subject"] for i in hybrid.mail_items(ALICE))

    hybrid.sb.exchange.org.mailbox(ALICE).kind = "graph"  # the move: same address, now in Exchange Online
    hybrid.configure(user_block(ALICE, time_zone="Europe/Berlin", mailbox_kind="graph"),
                     user_block(BOB, time_zone="America/New_York", mailbox_kind="graph"))
    s = hybrid.sync()
    assert s["status"] == "succeeded", s
    assert s["totals"]["created"] == 0 and s["totals"]["deleted"] == 0, s
    assert hybrid.query("SELECT count(*) FROM deltas WHERE reason = 'mailbox_changed'")[0][0] == 2
    assert sorted(e["Subject"] for e in hybrid.sf_events(ALICE)) == before_sf
    assert sorted(i["subject"] for i in hybrid.mail_items(ALICE)) == before_mail
    pairs = hybrid.query("SELECT email_id FROM pairs WHERE user_key = ?", [ALICE])
    assert len(pairs) == 2 and all("/" not in p[0] and "+" not in p[0] for p in pairs)  # Graph's REST ids
    assert hybrid.query("SELECT ews_api_calls FROM runs ORDER BY started_at DESC LIMIT 1")[0][0] is None
    assert hybrid.sync()["totals"]["deltas"] == 0
