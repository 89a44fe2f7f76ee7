"""Group events across several synced users (R13, R14, C15, C16) and the pair state after a load."""

import polars as pl

from tests.transforms.builders import ANN, BOB, World, em, events, inv, notes, ops, pairs_for, run, sf, user, users, utc
from transforms.reconcile import apply_outcomes
from transforms.schema import OUTCOME_SCHEMA

CAT = "cat@corp.example"


def _group(owner_synced: bool = True) -> pl.DataFrame:
    invitees = [inv(BOB, "none", "005BOB", "user"), inv(CAT, "none", "005CAT", "user"), inv("x@client.example", "none", "003X", "contact")]
    rows = [
        sf("C_BOB", "Kickoff", user=BOB, is_child=True, organizer_email=ANN, invitees=invitees),
        sf("C_CAT", "Kickoff", user=CAT, is_child=True, organizer_email=ANN, invitees=invitees),
    ]
    if owner_synced:
        rows.append(sf("P_ANN", "Kickoff", user=ANN, organizer_email=ANN, invitees=invitees))
    return events(*rows)


def test_r13_one_email_copy_within_one_run_by_the_organizer():
    res = run(_group(), usrs=users(user(ANN), user(BOB), user(CAT)))
    creates = res.deltas.filter(pl.col("op") == "create")
    assert creates.select("user_key", "target_side", "source_id").rows() == [(ANN, "email", "P_ANN")]
    assert [(i["email"], i["record_type"]) for i in creates["invitees"][0]] == [
        (BOB, "user"), (CAT, "user"), ("x@client.example", "contact")]
    assert sorted(res.notes.filter(pl.col("reason") == "child_event")["native_id"].to_list()) == ["C_BOB", "C_CAT"]


def test_c15_first_synced_invitee_organizes_when_the_owner_is_not_synced():
    res = run(_group(owner_synced=False), usrs=users(user(BOB), user(CAT)))
    assert res.deltas.select("op", "user_key", "source_id").rows() == [("create", BOB, "C_BOB")]
    assert [i["email"] for i in res.deltas["invitees"][0]] == [CAT, "x@client.example"]


def test_c15_children_link_to_the_delivered_copy_next_run():
    usrs = users(user(ANN), user(BOB), user(CAT))
    w = World(_group(), usrs=usrs)
    w.sync()
    ann_copy = next(r for r in w.on("email") if r["user_key"] == ANN)
    for who in (BOB, CAT):  # Exchange delivers the meeting to the attendees' mailboxes
        w.rows[("email", f"D_{who}")] = ann_copy | {"native_id": f"D_{who}", "user_key": who, "mailbox": who,
                                                     "organizer_email": ANN, "meeting_uid": "UID1"}
    res = w.sync()
    assert sorted(res.deltas.select("op", "user_key", "linked").rows()) == [("pair", BOB, True), ("pair", CAT, True)]
    assert w.sync().deltas.is_empty()
    # an attendee's edit of a linked copy is never written into the child
    w.edit("email", f"D_{BOB}", description="my notes", last_modified=utc(2025, 6, 15, 16))
    assert w.sync().deltas.is_empty()


def test_r13_a_user_who_starts_syncing_later_is_added_to_the_organizers_copy():
    # Ann's copy was written while Bob was not synced; once he is, her pair is re-projected (no hash changed)
    invitees = [inv(BOB, "none", "005BOB", "user"), inv("x@client.example", "none", "003X", "contact")]
    w = World(events(sf("P_ANN", "Kickoff", organizer_email=ANN, invitees=invitees),
                     sf("C_BOB", "Kickoff", user=BOB, is_child=True, organizer_email=ANN, invitees=invitees)),
              usrs=users(user(ANN)))
    w.sync()
    ann_copy = next(r for r in w.on("email") if r["user_key"] == ANN)
    assert [i["email"] for i in ann_copy["invitees"]] == ["x@client.example"]
    assert w.sync().deltas.is_empty()
    w.users = users(user(ANN), user(BOB))
    res = w.sync()
    assert res.deltas.select("op", "user_key", "target_side", "reason").rows() == [
        ("update", ANN, "email", "synced_invitee_added")]
    assert [i["email"] for i in res.deltas["invitees"][0]] == [BOB, "x@client.example"]
    assert [n[1] for n in notes(res, "skipped")] == ["child_event"]  # Bob's child waits for the delivered copy
    ann_copy = next(r for r in w.on("email") if r["user_key"] == ANN)
    w.rows[("email", "D_BOB")] = ann_copy | {"native_id": "D_BOB", "user_key": BOB, "mailbox": BOB, "organizer_email": ANN}
    assert w.sync().deltas.select("op", "user_key", "linked").rows() == [("pair", BOB, True)]
    assert w.sync().deltas.is_empty()


def test_r13_no_re_projection_for_private_or_one_way_or_already_invited():
    invitees = [inv(BOB, "none", "005BOB", "user")]
    for kw, ann in (({"is_private": True}, user(ANN)), ({}, user(ANN, direction="email_to_salesforce"))):
        base = events(sf("P", "Kickoff", organizer_email=ANN, invitees=invitees, **kw), em("E", "Kickoff", **kw))
        w = World(base, pairs_for(base, [("P", "E")]), usrs=users(ann, user(BOB)))
        assert w.sync().deltas.is_empty(), kw
    base = events(sf("P", "Kickoff", organizer_email=ANN, invitees=invitees), em("E", "Kickoff", invitees=[inv(BOB)]))
    assert run(base, pairs_for(base, [("P", "E")]), users(user(ANN), user(BOB))).deltas.is_empty()


def test_r14_email_meeting_in_several_mailboxes_gives_each_user_a_salesforce_copy():
    meeting = dict(organizer_email="ext@else.example", meeting_uid="U", invitees=[inv(ANN), inv(BOB)])
    res = run(events(em("EA", "Offsite", user=ANN, **meeting), em("EB", "Offsite", user=BOB, **meeting)),
              usrs=users(user(ANN), user(BOB)))
    got = res.deltas.select("op", "target_side", "owner_id", "invitees").rows()
    assert got == [("create", "salesforce", "005ANN", []), ("create", "salesforce", "005BOB", [])]


def test_c23_recurring_occurrences_are_separate_stable_events():
    occ = [em(f"E{d}", "Weekly", start=utc(2025, 6, d, 9), meeting_uid="SERIES") for d in (16, 23, 30)]
    w = World(events(*occ))
    assert [o for o, _, _ in ops(w.sync())] == ["create"] * 3
    assert w.sync().deltas.is_empty()


def test_apply_outcomes_failed_deltas_are_planned_again():
    base = events(sf("S1", "A"), em("E1", "A"))
    w = World(base, pairs_for(base, [("S1", "E1")]))
    w.edit("salesforce", "S1", subject="A2", last_modified=utc(2025, 6, 14))
    w.rows[("salesforce", "S2")] = sf("S2", "New")
    first = w.sync(fail={"update:email", "create:email"})
    assert sorted(o for o, _, _ in ops(first)) == ["create", "update"]
    assert w.pairs.height == 1  # nothing applied: the old state stays
    assert sorted(o for o, _, _ in ops(w.sync())) == ["create", "update"]
    assert w.sync().deltas.is_empty()


def test_apply_outcomes_new_pair_whose_settling_update_failed_is_resettled():
    w = World(events(sf("S1", "A", description="sf", modified=utc(2025, 6, 2)), em("E1", "A", description="mail")))
    res = w.sync(fail={"update:email"})
    assert ops(res) == [("pair", "email", "E1"), ("update", "email", "E1")]
    assert w.pairs.height == 1 and w.pairs["sf_hash"][0] is None
    assert ops(w.sync()) == [("update", "email", "E1")]
    assert w.sync().deltas.is_empty()


def test_apply_outcomes_create_records_ids_and_hashes():
    res = run(events(sf("S1", "A")))
    d = res.deltas.row(0, named=True)
    out = pl.DataFrame([{"delta_id": d["delta_id"], "status": "applied", "new_id": "E9"}], schema=OUTCOME_SCHEMA)
    p = apply_outcomes(pairs_for(events(), []), res.deltas, out, "run1").row(0, named=True)
    assert (p["sf_id"], p["email_id"], p["pair_id"], p["created_run"]) == ("S1", "E9", d["pair_id"], "run1")
    assert (p["sf_hash"], p["email_hash"]) == (d["source_hash"], d["target_hash"])


def test_c15_children_link_by_meeting_uid_when_the_delivered_copy_lags_behind():
    # The organizer's event moves after the meeting was delivered, before the invitees' next sync: the children
    # moved with it in Salesforce, the delivered copies still show the old time until the update arrives.
    usrs = users(user(ANN), user(BOB), user(CAT))
    w = World(_group(), usrs=usrs)
    w.sync()
    ann_copy = next(r for r in w.on("email") if r["user_key"] == ANN)
    assert ann_copy["meeting_uid"]
    for who in (BOB, CAT):
        w.rows[("email", f"D_{who}")] = ann_copy | {"native_id": f"D_{who}", "user_key": who, "mailbox": who,
                                                     "organizer_email": ANN}
    for nid in ("P_ANN", "C_BOB", "C_CAT"):
        w.edit("salesforce", nid, start=utc(2025, 6, 20, 14), end=utc(2025, 6, 20, 15), last_modified=utc(2025, 6, 15, 13))
    res = w.sync()
    assert sorted(res.deltas.select("op", "user_key", "target_side", "linked").rows()) == [
        ("pair", BOB, "salesforce", True), ("pair", CAT, "salesforce", True), ("update", ANN, "email", False)]
    assert not res.deltas.filter(pl.col("op") == "create").height  # no standalone copy for an invitee (R14/C16)
    # the organizer's update reaches the copies; the links hold, nothing is written
    ann_copy = w.get("email", ann_copy["native_id"])
    for who in (BOB, CAT):
        w.edit("email", f"D_{who}", start=ann_copy["start"], end=ann_copy["end"])
    assert w.sync().deltas.filter(pl.col("op") != "pair").is_empty()
    assert w.sync().deltas.is_empty()


def test_c15_a_copy_of_another_meeting_with_the_same_key_is_not_linked_by_uid():
    w = World(_group(), usrs=users(user(ANN), user(BOB)))
    w.sync()
    # Bob holds an unrelated meeting (its own uid) with the child's new key, and the real copy at the old time
    ann_copy = next(r for r in w.on("email") if r["user_key"] == ANN)
    w.rows[("email", "D_BOB")] = ann_copy | {"native_id": "D_BOB", "user_key": BOB, "mailbox": BOB, "organizer_email": ANN}
    for nid in ("P_ANN", "C_BOB", "C_CAT"):
        w.edit("salesforce", nid, start=utc(2025, 6, 20, 14), end=utc(2025, 6, 20, 15), last_modified=utc(2025, 6, 15, 13))
    w.rows[("email", "OTHER")] = em("OTHER", "Kickoff", user=BOB, start=utc(2025, 6, 20, 14), organizer_email="x@else.example",
                                     meeting_uid="UID-OTHER")
    w.sync()
    linked = {(r["sf_id"], r["email_id"]) for r in w.pairs.iter_rows(named=True) if r["linked"]}
    assert linked == {("C_BOB", "D_BOB")}  # the unrelated meeting gets Bob's own event (R14), not his child
