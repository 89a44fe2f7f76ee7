"""One test per sync rule (R*/C* as docs/rules.md defines them), on small hand-written frames."""


import polars as pl
import pytest

from tests.transforms.builders import (
    ANN,
    BOB,
    World,
    directory,
    em,
    events,
    inv,
    notes,
    ops,
    pairs_for,
    run,
    sf,
    user,
    users,
    utc,
)
from transforms.reconcile import Settings


def test_r3_pairs_by_key_without_write():
    evs = events(sf("S1", "Kickoff"), em("E1", " Kickoff "))
    res = run(evs)
    assert ops(res) == [("pair", "email", "E1")]
    assert res.deltas["source_id"].to_list() == ["S1"]


def test_r3_paired_events_keep_syncing_after_key_changes():
    evs = events(sf("S1", "Kickoff"), em("E1", "Kickoff"))
    p = pairs_for(evs, [("S1", "E1")])
    res = run(events(sf("S1", "Kickoff moved", start=utc(2025, 6, 21, 10), modified=utc(2025, 6, 14)), em("E1", "Kickoff")), p)
    assert ops(res) == [("update", "email", "E1")]
    d = res.deltas.row(0, named=True)
    assert d["subject"] == "Kickoff moved" and d["start"] == utc(2025, 6, 21, 10)


def test_r4_duplicates_block_key_on_both_sides():
    evs = events(em("E1", "Standup"), em("E2", "Standup"), sf("S1", "Standup"), sf("S2", "Other"))
    res = run(evs)
    assert ops(res) == [("create", "email", None)]  # only "Other"
    assert notes(res) == [("duplicate", "duplicate_key", "E1"), ("duplicate", "duplicate_key", "E2"),
                          ("skipped", "duplicate_key", "S1")]
    # once the duplicate is gone the key pairs normally
    assert ops(run(events(em("E1", "Standup"), sf("S1", "Standup")))) == [("pair", "email", "E1")]


def test_r5_updates_only_creates_nothing_and_pairs_nothing_by_key():
    evs = events(sf("S1", "A"), em("E1", "B"), sf("S2", "C"), em("E2", "C"))
    res = run(evs, usrs=users(user(filter_mode="updates_only")))
    assert ops(res) == []
    # the events a filter does not create are reported as one note per user, with the count
    assert notes(res) == [("skipped", "filter", None)]
    note = res.notes.row(0, named=True)
    assert note["side"] is None
    assert note["detail"] == "filter mode updates_only does not create 4 unpaired events (2 on salesforce, 2 on email) (R5)"


def test_r5_filter_notes_one_per_user_other_skips_stay_per_event():
    evs = events(
        sf("S1", "A"), sf("S2", "B"), em("E9", "Z", start=utc(2025, 6, 20, 10), hours=24 * 15),  # ann: too long
        sf("S3", "A", user=BOB), em("E3", "C", user=BOB),
    )
    usrs = users(user(filter_mode="with_contact_or_lead"), user(BOB, filter_mode="updates_only"))
    res = run(evs, usrs=usrs)
    filt = res.notes.filter(pl.col("reason") == "filter").sort("user_key")
    assert filt["user_key"].to_list() == [ANN, BOB]
    assert filt["detail"].to_list() == [
        "filter mode with_contact_or_lead does not create 3 unpaired events (2 on salesforce, 1 on email) (R5)",
        "filter mode updates_only does not create 2 unpaired events (1 on salesforce, 1 on email) (R5)",
    ]
    assert filt["native_id"].to_list() == [None, None]


def test_r5_updates_only_still_updates_existing_pairs():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    res = run(events(sf("S1", "A2", modified=utc(2025, 6, 14)), em("E1", "A")), p, users(user(filter_mode="updates_only")))
    assert ops(res) == [("update", "email", "E1")]


def test_r5_with_invitee_and_with_contact_or_lead_filters():
    evs = events(
        sf("none", "a"),
        sf("user_only", "b", invitees=[inv("bob@corp.example", record_id="005B", record_type="user")]),
        sf("contact", "c", invitees=[inv("x@client.example", record_id="003X", record_type="contact")]),
        em("att_unknown", "d", invitees=[inv("z@else.example")]),
        em("att_contact", "e", invitees=[inv("x@client.example")]),
        em("organizer_only", "f", invitees=[inv(ANN)]),
    )
    dirx = directory(("003X", "contact", "x@client.example", None))

    def src(mode: str) -> list[str]:
        return sorted(run(evs, usrs=users(user(filter_mode=mode)), dirx=dirx).deltas["source_id"].to_list())

    assert src("with_invitee") == ["att_contact", "att_unknown", "contact", "user_only"]
    assert src("with_contact_or_lead") == ["att_contact", "contact"]


def test_c5_key_pairing_in_invitee_mode_needs_one_side_to_pass():
    dirx = directory(("003X", "contact", "x@client.example", None))
    evs = events(sf("S1", "A", invitees=[inv("x@client.example", record_id="003X", record_type="contact")]), em("E1", "A"),
                 sf("S2", "B"), em("E2", "B"))
    res = run(evs, usrs=users(user(filter_mode="with_contact_or_lead")), dirx=dirx)
    # S1 passes, so the pair is made and settled (C7: the invitee flows to E1); S2/E2 pass neither way
    assert ops(res) == [("pair", "email", "E1"), ("update", "email", "E1")]


def test_r2_one_way_direction_creates_only_towards_its_target():
    evs = events(sf("S1", "A"), em("E1", "B"))
    assert [(o, s) for o, s, _ in ops(run(evs, usrs=users(user(direction="salesforce_to_email"))))] == [("create", "email")]
    assert [(o, s) for o, s, _ in ops(run(evs, usrs=users(user(direction="email_to_salesforce"))))] == [("create", "salesforce")]


def test_c6_one_way_change_on_target_side_is_skipped_and_hash_refreshed():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    now = events(sf("S1", "A"), em("E1", "A edited in Outlook", modified=utc(2025, 6, 14)))
    res = run(now, p, users(user(direction="salesforce_to_email")))
    assert ops(res) == []
    assert notes(res) == [("skipped", "direction", "E1")]
    assert res.pair_refresh["pair_id"].to_list() == ["p-S1-E1"]
    assert res.pair_refresh["email_hash"].to_list() != p["email_hash"].to_list()


def test_c6_one_way_source_wins_when_both_changed():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    now = events(sf("S1", "A from SF", modified=utc(2025, 6, 10)), em("E1", "A from mail", modified=utc(2025, 6, 14)))
    res = run(now, p, users(user(direction="salesforce_to_email")))
    assert ops(res) == [("update", "email", "E1")]
    assert res.deltas["subject"].to_list() == ["A from SF"]


def test_r7_exchange_last_modified_bump_is_not_a_change():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    res = run(events(sf("S1", "A"), em("E1", "A", modified=utc(2025, 6, 14), version="v7")), p)
    assert ops(res) == [] and res.notes.is_empty() and res.pair_refresh.is_empty()


def test_r7_conflict_newer_last_modified_wins_and_is_recorded():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    now = events(sf("S1", "A sf", modified=utc(2025, 6, 14, 9)), em("E1", "A mail", modified=utc(2025, 6, 14, 10)))
    res = run(now, p)
    assert ops(res) == [("update", "salesforce", "S1")]
    assert res.deltas["subject"].to_list() == ["A mail"]
    c = res.notes.filter(pl.col("kind") == "conflict").row(0, named=True)
    assert (c["side"], c["native_id"], c["reason"]) == ("email", "E1", "email_wins")


def test_r7_conflict_tie_goes_to_salesforce():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    now = events(sf("S1", "A sf", modified=utc(2025, 6, 14)), em("E1", "A mail", modified=utc(2025, 6, 14)))
    res = run(now, p)
    assert ops(res) == [("update", "email", "E1")]
    assert notes(res, "conflict") == [("conflict", "salesforce_wins", "S1")]


def test_c7_both_changed_to_same_content_no_write_no_conflict():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    now = events(sf("S1", "B", modified=utc(2025, 6, 14)), em("E1", "B", modified=utc(2025, 6, 13)))
    res = run(now, p)
    assert ops(res) == [] and res.notes.is_empty()
    assert res.pair_refresh.height == 1


def test_c7_new_key_pair_with_different_content_is_settled_not_a_conflict():
    evs = events(sf("S1", "A", description="old", modified=utc(2025, 6, 1)),
                 em("E1", "A", description="new", modified=utc(2025, 6, 2)))
    res = run(evs)
    assert ops(res) == [("pair", "salesforce", "S1"), ("update", "salesforce", "S1")]
    assert res.deltas.filter(pl.col("op") == "update")["description"].to_list() == ["new"]
    assert notes(res, "conflict") == []


def test_c7_second_run_plans_zero_deltas():
    dirx = directory(("003X", "contact", "x@client.example", "005ANN"), ("00QL", "lead", "l@client.example", None))
    w = World(events(
        sf("S1", "Long " + "x" * 300, description="d" * 40_000,
           invitees=[inv("x@client.example", "accepted", "003X", "contact"), inv("u@corp.example", "none", "005U", "user")]),
        em("E1", "Mail meeting", invitees=[inv("X@client.example", "tentative"), inv("l@client.example", "declined"),
                                             inv("stranger@else.example", "accepted")]),
        em("E2", "Secret", is_private=True, description="hidden"),
        sf("S3", "All day", start=utc(2025, 6, 25), hours=24, is_all_day=True),
    ), dirx=dirx)
    first = w.sync()
    assert first.deltas.filter(pl.col("op") == "create").height == 4
    assert w.sync().deltas.is_empty()
    # an edit on one side syncs once, then nothing again
    long_copy = next(r for r in w.on("email") if r["subject"].startswith("Long"))
    w.edit("email", long_copy["native_id"], start=utc(2025, 6, 20, 11), end=utc(2025, 6, 20, 12), last_modified=utc(2025, 6, 15, 13))
    third = w.sync()
    assert ops(third) == [("update", "salesforce", "S1")]
    assert third.deltas["subject"].to_list() == ["Long " + "x" * 250]
    assert w.sync().deltas.is_empty()
    assert w.get("email", long_copy["native_id"])["subject"] == "Long " + "x" * 300  # the cut never flows back


def test_r8_deletion_propagates_to_the_other_side():
    base = events(*(sf(f"S{i}", f"M{i}") for i in range(5)), *(em(f"E{i}", f"M{i}") for i in range(5)))
    p = pairs_for(base, [(f"S{i}", f"E{i}") for i in range(5)])
    now = base.filter(pl.col("native_id") != "S0")
    res = run(now, p)
    assert ops(res) == [("delete", "email", "E0")]
    assert res.deltas["reason"].to_list() == ["deleted_on_salesforce"]


def test_r8_event_that_left_the_window_is_not_deleted():
    base = events(sf("S1", "A"), em("E1", "A", start=utc(2025, 9, 30, 10)))  # email copy out of the window
    p = pairs_for(base, [("S1", "E1")])
    res = run(events(em("E1", "A", start=utc(2025, 9, 30, 10))), p)
    assert ops(res) == []


def test_c8_survivor_changed_wins_over_deletion():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    res = run(events(em("E1", "A edited", modified=utc(2025, 6, 14))), p)
    assert [(o, s) for o, s, _ in ops(res)] == [("create", "salesforce"), ("unpair", "salesforce")]


def test_c8_one_way_forbids_delete_so_pair_dropped_and_source_recreated():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    res = run(events(sf("S1", "A")), p, users(user(direction="salesforce_to_email")))
    assert [(o, s) for o, s, _ in ops(res)] == [("create", "email"), ("unpair", "email")]
    assert res.deltas.filter(pl.col("op") == "unpair")["reason"].to_list() == ["direction"]


def test_c9_mass_deletion_guard_refuses_user_with_override():
    base = events(*(sf(f"S{i}", f"M{i}") for i in range(6)), *(em(f"E{i}", f"M{i}") for i in range(6)))
    p = pairs_for(base, [(f"S{i}", f"E{i}") for i in range(6)])
    now = pl.concat([base.filter(pl.col("side") == "salesforce"), events(sf("NEW", "new"))])  # the mailbox came back empty
    res = run(now, p)
    assert res.deltas.is_empty() and res.pair_refresh.is_empty()
    r = res.notes.row(0, named=True)
    assert (r["kind"], r["reason"]) == ("refused", "mass_deletion") and res.notes.height == 1
    assert r["detail"].startswith("MassDeletionRefused: 6 of 6 paired events would be deleted for ann@corp.example")
    assert "allow_mass_delete" in r["detail"]
    ok = run(now, p, users(user(allow_mass_delete=True)))
    assert ok.deltas.filter(pl.col("op") == "delete").height == 6


def test_c9_guard_allows_deletions_up_to_the_share():
    base = events(*(sf(f"S{i}", f"M{i}") for i in range(4)), *(em(f"E{i}", f"M{i}") for i in range(4)))
    p = pairs_for(base, [(f"S{i}", f"E{i}") for i in range(4)])
    res = run(base.filter(~pl.col("native_id").is_in(["E0", "E1"])), p)  # D = 2 = 0.5 N: allowed
    assert [o for o, _, _ in ops(res)] == ["delete", "delete"]


def test_r9_private_event_copy_is_a_busy_block():
    res = run(events(em("E1", "Doctor", is_private=True, description="x", invitees=[inv("d@else.example")])))
    d = res.deltas.row(0, named=True)
    assert (d["subject"], d["description"], d["invitees"], d["is_private"], d["private_origin"]) == (
        "Private", "", [], True, "email")


def test_c10_private_copy_edits_flow_back_only_as_times():
    w = World(events(sf("S1", "Doctor", is_private=True, description="secret")))
    w.sync()
    copy = w.on("email")[0]
    w.edit("email", copy["native_id"], subject="I renamed it", start=utc(2025, 6, 20, 12), end=utc(2025, 6, 20, 13),
           last_modified=utc(2025, 6, 15, 14))
    res = w.sync()
    got = {r["target_side"]: r for r in res.deltas.iter_rows(named=True)}
    assert got["salesforce"]["subject"] == "Doctor" and got["salesforce"]["start"] == utc(2025, 6, 20, 12)
    assert got["email"]["subject"] == "Private"
    assert w.sync().deltas.is_empty()
    # the origin stops being private: the copy gets the full content
    w.edit("salesforce", "S1", is_private=False, last_modified=utc(2025, 6, 15, 15))
    res = w.sync()
    assert res.deltas["subject"].to_list() == ["Doctor"] and res.deltas["description"].to_list() == ["secret"]
    assert w.sync().deltas.is_empty()


def test_c10_two_private_events_paired_by_key_keep_their_subjects():
    base = events(sf("S1", "Lunch", is_private=True, description="a"), em("E1", "Lunch", is_private=True, description="b"))
    res = run(base)
    assert ops(res) == [("pair", "email", "E1")]


def test_c19_limits_truncate_with_note_and_skip_bad_events():
    evs = events(
        em("long", "s" * 300, description="d" * 33_000),
        em("toolong", "Trip", hours=15 * 24),
        em("backwards", "Oops", hours=-1),
        em("nosubject", "  "),
    )
    res = run(evs)
    d = res.deltas.row(0, named=True)
    assert res.deltas.height == 1 and len(d["subject"]) == 255 and len(d["description"]) == 32_000
    assert notes(res) == [
        ("skipped", "end_before_start", "backwards"), ("skipped", "no_subject", "nosubject"),
        ("skipped", "too_long_event", "toolong"),
        ("truncated", "description_truncated", "long"), ("truncated", "subject_truncated", "long"),
    ]


def test_r11_email_attendees_match_contacts_and_leads_case_insensitively():
    dirx = directory(
        ("003A", "contact", "a@client.example", None),
        ("00QB", "lead", "b@client.example", None),
        ("005U", "user", "u@corp.example", None),
    )
    evs = events(em("E1", "M", invitees=[inv("A@Client.Example", "accepted"), inv("b@client.example"),
                                         inv("u@corp.example"), inv("nobody@else.example"), inv(None)]))
    got = run(evs, dirx=dirx).deltas.row(0, named=True)["invitees"]
    assert [(i["email"], i["record_id"], i["record_type"]) for i in got] == [
        ("a@client.example", "003A", "contact"), ("b@client.example", "00QB", "lead")]


def test_c12_address_matching_several_records_takes_r12_order():
    dirx = directory(
        ("003C2", "contact", "dup@client.example", "005OTHER"),
        ("003C1", "contact", "dup@client.example", "005ANN"),   # owned by the syncing user
        ("003C0", "contact", "dup@client.example", "005OTHER"),
        ("003K", "contact", "two@client.example", None),
        ("00QK", "lead", "two@client.example", None),           # Leads first
    )
    evs = events(em("E1", "M", invitees=[inv("dup@client.example"), inv("two@client.example")]))
    got = run(evs, dirx=dirx).deltas.row(0, named=True)["invitees"]
    assert [i["record_id"] for i in got] == ["003C1", "00QK"]
    evs2 = events(em("E1", "M", invitees=[inv("dup@client.example")]))
    assert run(evs2, usrs=users(user(sf_user_id="005X")), dirx=dirx).deltas.row(0, named=True)["invitees"][0]["record_id"] == "003C0"


def test_c13_responses_flow_only_when_the_mailbox_organized():
    dirx = directory(("003A", "contact", "a@client.example", None))
    mine = events(em("E1", "M", invitees=[inv("a@client.example", "accepted")]))
    theirs = events(em("E1", "M", organizer_email="boss@corp.example", invitees=[inv("a@client.example", "accepted")]))
    assert run(mine, dirx=dirx).deltas.row(0, named=True)["invitees"][0]["response"] == "accepted"
    assert run(theirs, dirx=dirx).deltas.row(0, named=True)["invitees"][0]["response"] == "none"


def test_r10_salesforce_invitees_become_attendees_with_synced_users():
    evs = events(sf("S1", "M", invitees=[
        inv("a@client.example", "accepted", "003A", "contact"),
        inv("l@client.example", "declined", "00QL", "lead"),
        inv(BOB, "none", "005B", "user"),
        inv("other@corp.example", "none", "005O", "user"),  # not a synced user
        inv(None, "none", "003N", "contact"),  # no address
    ]))
    got = run(evs, usrs=users(user(), user(BOB))).deltas.filter(pl.col("user_key") == ANN).row(0, named=True)["invitees"]
    assert [(i["email"], i["response"], i["record_type"]) for i in got] == [
        ("a@client.example", "none", "contact"), (BOB, "none", "user"), ("l@client.example", "none", "lead")]


def test_c11_email_keeps_attendees_salesforce_cannot_represent():
    dirx = directory(("003A", "contact", "a@client.example", None))
    base = events(sf("S1", "M", invitees=[inv("a@client.example", "none", "003A", "contact")]),
                  em("E1", "M", invitees=[inv("a@client.example", "accepted"), inv("ext@else.example", "declined")]))
    p = pairs_for(base, [("S1", "E1")])
    now = base.with_columns(pl.when(pl.col("side") == "salesforce").then(pl.lit("M2")).otherwise(pl.col("subject")).alias("subject"),
                            pl.when(pl.col("side") == "salesforce").then(utc(2025, 6, 14)).otherwise(pl.col("last_modified")).alias("last_modified"))
    got = run(now, p, dirx=dirx).deltas.row(0, named=True)
    assert [(i["email"], i["response"]) for i in got["invitees"]] == [("a@client.example", "accepted"), ("ext@else.example", "declined")]


def test_r12_who_selection_shared_activities_on():
    dirx = directory(*[(f"003{i:02}", "contact", f"c{i:02}@client.example", None) for i in range(60)],
                     ("00QL", "lead", "lead@client.example", None))
    contacts = events(em("E1", "M", invitees=[inv(f"c{i:02}@client.example") for i in range(60)]))
    who = run(contacts, dirx=dirx).deltas.row(0, named=True)["who_ids"]
    assert who == [f"003{i:02}" for i in range(50)]
    with_lead = events(em("E1", "M", invitees=[inv("c01@client.example"), inv("lead@client.example")]))
    assert run(with_lead, dirx=dirx).deltas.row(0, named=True)["who_ids"] == ["00QL"]


def test_r12_who_selection_shared_activities_off():
    dirx = directory(("003B", "contact", "b@client.example", None), ("003A", "contact", "z@client.example", "005ANN"),
                     ("00QL", "lead", "y@client.example", None))
    off = Settings(shared_activities=False)
    evs = events(em("E1", "M", invitees=[inv("b@client.example"), inv("z@client.example")]))
    assert run(evs, dirx=dirx, settings=off).deltas.row(0, named=True)["who_ids"] == ["003A"]  # owned first
    evs = events(em("E1", "M", invitees=[inv("b@client.example"), inv("y@client.example")]))
    assert run(evs, dirx=dirx, settings=off).deltas.row(0, named=True)["who_ids"] == ["00QL"]  # Leads first


def test_c17_mailbox_switch_drops_old_pairs_and_never_touches_old_mailbox():
    base = events(sf("S1", "A"), em("E1", "A"))
    p = pairs_for(base, [("S1", "E1")])
    now = events(sf("S1", "A"), em("E1", "A", mailbox=ANN), em("N1", "A", mailbox="ann@new.example"))
    res = run(now, p, users(user(mailbox="ann@new.example")))
    assert ops(res) == [("pair", "email", "N1"), ("unpair", "email", "E1")]
    assert res.deltas.filter(pl.col("op") == "unpair")["reason"].to_list() == ["mailbox_changed"]


def test_c18_required_field_skips_email_to_salesforce_creation_only():
    evs = events(em("E1", "A"), sf("S1", "B"))
    res = run(evs, settings=Settings(sf_create_blocked="Region__c"))
    assert ops(res) == [("create", "email", None)]
    assert ("skipped", "required_field", "E1") in notes(res)
    notice = res.notes.filter(pl.col("kind") == "notice")
    assert notice.height == 1 and "Region__c" in notice["detail"][0]


def test_users_not_in_users_frame_are_not_touched():
    base = events(sf("S1", "A", user=BOB), em("E1", "A", user=BOB))
    p = pairs_for(base, [("S1", "E1")], user_key=BOB)
    res = run(events(sf("X", "new", user=BOB)), p)  # Bob's extraction failed; he is not in users
    assert res.deltas.is_empty() and res.pair_refresh.is_empty()


def test_deltas_are_deterministic():
    evs = events(sf("S1", "A"), em("E1", "B"), sf("S2", "C"), em("E2", "C", description="x"))
    a, b = run(evs), run(evs.reverse())
    assert a.deltas.equals(b.deltas)
    assert a.deltas["delta_id"].n_unique() == a.deltas.height


def test_duplicate_event_id_is_a_clear_error():
    evs = events(sf("S1", "A"), sf("S1", "B"), em("E1", "A"))
    with pytest.raises(ValueError, match=r"salesforce events: user_key='ann@corp.example', native_id='S1' appears 2 times"):
        run(evs)
    # the same id for two users, or on both sides, is fine
    assert ops(run(events(sf("X1", "A"), em("X1", "A"), sf("S1", "B", user=BOB)), usrs=users(user(), user(BOB))))


def test_event_in_two_stored_pairs_is_a_clear_error():
    evs = events(sf("S1", "A"), em("E1", "A"), em("E2", "A"))
    p = pairs_for(evs, [("S1", "E1"), ("S1", "E2")])
    with pytest.raises(ValueError, match=r"stored pairs' sf_id: user_key='ann@corp.example', native_id='S1' appears 2 times"):
        run(evs, p)


def test_generated_ids_are_fixed_width_hex_pinned_and_checked_for_collisions():
    """Delta and new pair ids: two seeded polars hashes (128 bits) as 32 hex digits. Pinned: replay compares ids
    recomputed in another process, so a polars upgrade that changed them must show up here."""
    import pytest

    from transforms.digest import hex64
    from transforms.stages.ids import check_unique_ids as _check_unique_ids
    from transforms.stages.ids import hash_id_column as _hash_id_column

    df = pl.DataFrame({"user_key": ["a@x.example"] * 3, "sf_id": ["00U1", None, ""], "email_id": ["E1"] * 3})
    assert _hash_id_column(df, ["user_key", "sf_id", "email_id"], "pair").to_list() == [
        "a855b94169755ab5996c0abdba613458", "f2143df046430e25480c7ffb7618b82c", "38de8481baf678cf8b262d73561c95ca",
    ]  # a null and an empty id differ
    h = pl.DataFrame({"h": pl.Series([0, 1, 2**64 - 1, 0x0123456789ABCDEF], dtype=pl.UInt64)})
    assert h.select(pl.concat_str(hex64(pl.col("h")))).to_series().to_list() == [f"{v:016x}" for v in h["h"]]
    _check_unique_ids(pl.Series(["a", "b"]), "deltas")
    with pytest.raises(ValueError, match="deltas: generated id a is not unique"):
        _check_unique_ids(pl.Series(["a", "b", "a"]), "deltas")


def test_store_upgrade_translates_old_digests_so_only_real_edits_count():
    """Pairs stored before schema 2 hold the old digests. Translating them with the events read keeps an edit made
    in between: here Salesforce was edited earlier than an Exchange read bumped the mailbox copy's LastModified;
    with untranslated (all "changed") hashes the newer email side would win and undo the Salesforce edit."""
    from transforms.normalise import _legacy_content_hash, normalise, translate_legacy_hashes

    before = normalise(events(sf("S1", "A"), em("E1", "A"), sf("S2", "B"), em("E2", "B")))
    old = dict(zip(before["native_id"].to_list(), _legacy_content_hash(before).to_list()))
    p = pairs_for(before, [("S1", "E1"), ("S2", "E2")]).with_columns(
        pl.col("sf_id").replace_strict(old, return_dtype=pl.UInt64).alias("sf_hash"),
        pl.col("email_id").replace_strict(old, return_dtype=pl.UInt64).alias("email_hash"),
    )
    now = events(sf("S1", "A edited", modified=utc(2025, 6, 14, 9)), em("E1", "A", modified=utc(2025, 6, 14, 10)),
                 sf("S2", "B"), em("E2", "B"))
    untranslated = run(now, p)
    assert ops(untranslated) == [("update", "salesforce", "S1")]  # the hazard: email's "A" would overwrite the edit
    translated, done = translate_legacy_hashes(p, normalise(now), p["pair_id"])
    assert sorted(done.to_list()) == sorted(p["pair_id"].to_list())
    res = run(now, translated)
    assert ops(res) == [("update", "email", "E1")] and res.deltas["subject"].to_list() == ["A edited"]
    assert notes(res, "conflict") == [] and res.pair_refresh.is_empty()
    # a pair whose email side was not read stays marked, to be translated by a later run
    _, partial = translate_legacy_hashes(p, normalise(now.filter(pl.col("native_id") != "E2")), p["pair_id"])
    assert partial.to_list() == ["p-S1-E1"]
