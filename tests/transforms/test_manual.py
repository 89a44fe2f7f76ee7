"""R18/C21: transforms.manual.push_one, the pure planner of a manual sync of one event."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from tests.transforms.builders import ANN, BOB, T0, TODAY, directory, em, events, no_pairs, pairs_for, sf, user, users
from transforms.manual import push_one
from transforms.reconcile import Settings, reconcile
from transforms.schema import DELTA_SCHEMA, NOTE_SCHEMA, PRIVATE_SUBJECT, SUBJECT_MAX

FAR = T0 + timedelta(days=300)  # far outside the window of TODAY


def _ops(res):
    return sorted((r["op"], r["target_side"], r["target_id"], r["source_id"]) for r in res.deltas.iter_rows(named=True))


def _reasons(res):
    return sorted(((r["reason"], r["native_id"]) for r in res.notes.iter_rows(named=True)), key=str)


def test_creates_counterpart_ignoring_filter_direction_and_window():
    usrs = users(user(filter_mode="updates_only", direction="email_to_salesforce", start_date=TODAY + timedelta(days=400)))
    evs = events(sf("s1", "Renewal", start=FAR), em("e9", "Unrelated", start=FAR))
    res = push_one("salesforce", "s1", evs, no_pairs(), usrs, directory(), TODAY)
    assert _ops(res) == [("create", "email", None, "s1")]
    d = res.deltas.row(0, named=True)
    assert d["subject"] == "Renewal" and d["start"] == FAR and d["mailbox"] == ANN
    assert d["reason"] == "manual:new_event"
    assert res.deltas.schema == pl.Schema(DELTA_SCHEMA)
    assert res.notes.schema == pl.Schema(NOTE_SCHEMA)


def test_same_ids_as_the_sync_would_make():
    evs = events(em("e1", "Workshop"))
    mine = push_one("email", "e1", evs, no_pairs(), users(), directory(), TODAY)
    synced = reconcile(evs, no_pairs(), users(), directory(), today=TODAY)
    cols = ["delta_id", "pair_id", "op", "target_side", "subject", "target_hash", "source_hash"]
    assert mine.deltas.select(cols).to_dicts() == synced.deltas.select(cols).to_dicts()


def test_pairs_with_unique_counterpart_and_pushed_side_wins():
    evs = events(em("e1", "Review", description="mail text"), sf("s1", "Review", description="sf text"),
                 sf("s2", "Review", start=T0 + timedelta(hours=3)))
    res = push_one("email", "e1", evs, no_pairs(), users(), directory(), TODAY)
    assert ("pair", "salesforce", "s1", "e1") in _ops(res)
    upd = res.deltas.filter(pl.col("op") == "update").row(0, named=True)
    assert upd["target_id"] == "s1" and upd["description"] == "mail text"
    assert not res.deltas.filter(pl.col("op") == "create").height


def test_two_counterparts_with_the_key_create_nothing():
    evs = events(sf("s1", "Standup"), em("e1", "Standup"), em("e2", "Standup"))
    res = push_one("salesforce", "s1", evs, no_pairs(), users(), directory(), TODAY)
    assert res.deltas.is_empty()
    assert ("duplicate_key", "s1") in _reasons(res)


def test_already_paired_event_is_left_alone():
    evs = events(sf("s1", "Call"), em("e1", "Call"))
    prs = pairs_for(evs, [("s1", "e1")])
    res = push_one("salesforce", "s1", evs, prs, users(), directory(), TODAY)
    assert res.deltas.is_empty() and _reasons(res) == [("already_paired", "s1")]


def test_paired_counterpart_is_not_reused():
    evs = events(sf("s1", "Call"), em("e1", "Call"), sf("s0", "Call", user=ANN))
    prs = pairs_for(evs, [("s0", "e1")])
    res = push_one("salesforce", "s1", evs, prs, users(), directory(), TODAY)
    assert _ops(res) == [("create", "email", None, "s1")]


def test_required_field_blocks_email_to_salesforce_creation_only():
    evs = events(em("e1", "Mail born"))
    blocked = Settings(sf_create_blocked="Region__c")
    res = push_one("email", "e1", evs, no_pairs(), users(), directory(), TODAY, blocked)
    assert res.deltas.is_empty() and ("required_field", "e1") in _reasons(res)
    evs = events(sf("s1", "SF born"))
    assert _ops(push_one("salesforce", "s1", evs, no_pairs(), users(), directory(), TODAY, blocked)) == [
        ("create", "email", None, "s1")]


def test_limits_apply():
    evs = events(em("e1", "x" * 300), em("e2", "Roadshow", hours=24 * 15), em("e3", "   "))
    res = push_one("email", "e1", evs, no_pairs(), users(), directory(), TODAY)
    assert len(res.deltas["subject"][0]) == SUBJECT_MAX
    assert ("subject_truncated", "e1") in _reasons(res)
    res = push_one("email", "e2", evs, no_pairs(), users(), directory(), TODAY)
    assert res.deltas.is_empty() and ("too_long_event", "e2") in _reasons(res)
    res = push_one("email", "e3", evs, no_pairs(), users(), directory(), TODAY)
    assert res.deltas.is_empty() and ("no_subject", "e3") in _reasons(res)


def test_private_event_copy_is_busy_block():
    evs = events(sf("s1", "Dentist", is_private=True, description="root canal"))
    res = push_one("salesforce", "s1", evs, no_pairs(), users(), directory(), TODAY)
    d = res.deltas.row(0, named=True)
    assert d["subject"] == PRIVATE_SUBJECT and d["description"] == "" and d["is_private"] and d["private_origin"] == "salesforce"


def test_group_child_of_another_organizer_only_links():
    # Ann's event invites Bob (a synced user): Bob's child may not create a second meeting (C15).
    usrs = users(user(ANN), user(BOB))
    evs = events(sf("p1", "Joint", user=ANN), sf("c1", "Joint", user=BOB, is_child=True, organizer_email=ANN))
    res = push_one("salesforce", "c1", evs, no_pairs(), usrs, directory(), TODAY)
    assert res.deltas.is_empty() and ("child_event", "c1") in _reasons(res)
    # Once the meeting has been delivered to Bob's mailbox, the push links to it without writing.
    evs = events(sf("p1", "Joint", user=ANN), sf("c1", "Joint", user=BOB, is_child=True, organizer_email=ANN),
                 em("b1", "Joint", user=BOB, organizer_email=ANN))
    res = push_one("salesforce", "c1", evs, no_pairs(), usrs, directory(), TODAY)
    assert _ops(res) == [("pair", "email", "b1", "c1")] or _ops(res) == [("pair", "salesforce", "c1", "b1")]
    assert res.deltas["linked"].to_list() == [True]
    # The organizer's own push creates the meeting.
    res = push_one("salesforce", "p1", evs, no_pairs(), usrs, directory(), TODAY)
    assert _ops(res) == [("create", "email", None, "p1")]


def test_unknown_event_or_user():
    res = push_one("email", "nope", events(em("e1")), no_pairs(), users(), directory(), TODAY)
    assert res.deltas.is_empty() and _reasons(res) == [("not_found", "nope")]
    res = push_one("email", "e1", events(em("e1", user="zed@corp.example")), no_pairs(), users(), directory(), TODAY)
    assert _reasons(res) == [("not_synced", "e1")]
