"""Issue 3, end to end: the whole pipeline against the sandbox servers, through the real clients."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.flows.conftest import at, user_block
from tests.flows.conftest import mail_with as _mail
from tests.flows.conftest import one as _one
from tests.flows.conftest import sf_with as _sf

ALICE, BOB = "alice@example.com", "bob@example.com"





def test_r1_salesforce_event_appears_in_mailbox_with_all_six_fields(world):
    sb = world.sb
    carol = world.ids["carol@customer.example"]
    sb.salesforce.org.add_event(world.ids[ALICE], "Pipeline review", at(2, 14), at(2, 15),
                                description="Q1 opportunities", invitee_ids=[carol])
    # Salesforce keeps an all-day event's end on its last day: days 5 and 6.
    sb.salesforce.org.add_event(world.ids[ALICE], "Trade show", at(5, 0), at(6, 0), is_all_day=True)
    summary = world.sync()
    assert summary["status"] == "succeeded", summary
    item = _one(world.mail_items(ALICE), subject="Pipeline review")
    assert item["start"] == at(2, 14) and item["end"] == at(2, 15)
    assert "Q1 opportunities" in (item["body"] or "")
    assert [a["email"] for a in item["required_attendees"]] == ["carol@customer.example"]
    assert not item["is_all_day"]
    allday = _one(world.mail_items(ALICE), subject="Trade show")
    assert allday["is_all_day"]
    # Alice's mailbox is in Berlin: the all-day event keeps its dates (days 5 and 6) there.
    berlin = ZoneInfo("Europe/Berlin")
    assert allday["start"].astimezone(berlin).date() == at(5, 0).date()
    assert allday["end"].astimezone(berlin).date() == at(7, 0).date()  # Exchange: exclusive end
    assert len(summary["users"][ALICE]["created"]["email"]) == 2


def test_r1_email_event_appears_in_salesforce_with_invitee_relation(world):
    world.sb.exchange.org.add_item(BOB, "Architecture workshop", at(3, 13), at(3, 15), body="Integration options",
                                   required_attendees=["Carol@Customer.example"], organizer=BOB)
    summary = world.sync()
    assert summary["status"] == "succeeded", summary
    ev = _one(world.sf_events(BOB), Subject="Architecture workshop")
    assert ev["Description"] == "Integration options" and ev["IsAllDayEvent"] is False
    rels = world.sb.salesforce.org.relations(ev["Id"])
    assert world.ids["carol@customer.example"] in {r["RelationId"] for r in rels if r["IsInvitee"]}


def test_r2_one_way_direction_copies_only_from_its_source(world):
    world.configure(user_block(ALICE, direction="salesforce_to_email"), user_block(BOB, direction="email_to_salesforce"))
    world.sb.exchange.org.add_item(ALICE, "Alice private-side idea", at(1, 9), at(1, 10))
    world.sb.salesforce.org.add_event(world.ids[ALICE], "Alice SF call", at(1, 11), at(1, 12))
    world.sb.salesforce.org.add_event(world.ids[BOB], "Bob SF call", at(1, 11), at(1, 12))
    world.sb.exchange.org.add_item(BOB, "Bob mail call", at(1, 13), at(1, 14))
    world.sync()
    assert _sf(world, ALICE, "Alice private-side idea") == []
    assert len(_mail(world, ALICE, "Alice SF call")) == 1
    assert _mail(world, BOB, "Bob SF call") == []
    assert len(_sf(world, BOB, "Bob mail call")) == 1


def test_edits_propagate_both_ways_and_conflicts_resolve_to_newer(world):
    sb = world.sb
    sf_id = sb.salesforce.org.add_event(world.ids[ALICE], "Weekly sync", at(1, 9), at(1, 10))
    sb.exchange.org.add_item(ALICE, "Demo prep", at(2, 9), at(2, 10))
    world.sync()
    sf = world.salesforce()
    # Edit in Salesforce: moves an hour later.
    sf.Event.update(sf_id, {"StartDateTime": at(1, 10).isoformat(), "EndDateTime": at(1, 11).isoformat()})
    # Edit in the mailbox: new subject.
    acct = world.account(ALICE)
    item = next(i for i in acct.calendar.all() if i.subject == "Demo prep")
    item.subject = "Demo prep (final)"
    item.save(update_fields=["subject"])
    s2 = world.sync()
    assert s2["status"] == "succeeded", s2
    assert _one(world.mail_items(ALICE), subject="Weekly sync")["start"] == at(1, 10)
    assert len(_sf(world, ALICE, "Demo prep (final)")) == 1 and _sf(world, ALICE, "Demo prep") == []

    # Both sides edit the same pair; the mailbox edit is a minute newer and wins.
    sf.Event.update(sf_id, {"Subject": "Weekly sync (SF)"})
    sb.clock.advance(timedelta(minutes=1))
    item = next(i for i in acct.calendar.all() if i.subject == "Weekly sync")
    item.subject = "Weekly sync (mail)"
    item.save(update_fields=["subject"])
    s3 = world.sync()
    assert len(_sf(world, ALICE, "Weekly sync (mail)")) == 1
    assert [c for c in s3["users"][ALICE]["conflicts"]], s3
    assert world.query("SELECT count(*) FROM notes WHERE kind = 'conflict'")[0][0] == 1
    assert world.sync()["totals"]["deltas"] == 0


def test_touched_but_unchanged_item_is_not_a_change(world):
    world.sb.exchange.org.add_item(ALICE, "Quarterly plan", at(4, 9), at(4, 10))
    world.sync()
    acct = world.account(ALICE)
    item = next(i for i in acct.calendar.all() if i.subject == "Quarterly plan")
    world.sb.clock.advance(timedelta(minutes=5))
    item.save(update_fields=["subject"])  # same subject: LastModifiedTime and ChangeKey move, content not
    s2 = world.sync()
    assert s2["totals"]["deltas"] == 0, s2


def test_deletes_propagate_but_leaving_the_window_is_not_a_delete(world):
    sb = world.sb
    keep = sb.salesforce.org.add_event(world.ids[ALICE], "Moves far ahead", at(3, 9), at(3, 10))
    gone = sb.salesforce.org.add_event(world.ids[ALICE], "Cancelled", at(3, 11), at(3, 12))
    sb.exchange.org.add_item(ALICE, "Dropped in mail", at(3, 13), at(3, 14))
    world.sync()
    sf = world.salesforce()
    sf.Event.delete(gone)
    acct = world.account(ALICE)
    next(i for i in acct.calendar.all() if i.subject == "Dropped in mail").delete()
    s2 = world.sync()
    assert s2["status"] == "succeeded", s2
    assert _mail(world, ALICE, "Cancelled") == []
    assert _sf(world, ALICE, "Dropped in mail") == []
    # The window moves on by four months: nothing of the old pairs is deleted anywhere.
    later = world.today + timedelta(days=120)
    s3 = world.sync(today=later)
    assert s3["totals"]["deleted"] == 0, s3
    assert len(_mail(world, ALICE, "Moves far ahead")) == 1
    assert keep in {e["Id"] for e in world.sf_events(ALICE)}


def test_an_item_moved_just_past_the_window_edge_is_not_a_deletion(world):
    """C2: the pair stays in scope through its Salesforce side, so the move is copied; the moved item is
    confirmed by id even though the calendar view (read with a day of slack) saw it outside the window."""
    from transforms.window import window_bounds

    _, w_end = window_bounds(world.today)
    sf_id = world.sb.salesforce.org.add_event(world.ids[ALICE], "Edge case", w_end - timedelta(hours=5),
                                              w_end - timedelta(hours=4))
    world.sync()
    item = next(i for i in world.account(ALICE).calendar.all() if i.subject == "Edge case")
    item.start, item.end = w_end + timedelta(hours=3), w_end + timedelta(hours=4)
    item.save(update_fields=["start", "end"])
    s2 = world.sync()
    assert s2["status"] == "succeeded", s2
    assert s2["totals"]["deleted"] == 0, s2
    ev = world.sb.salesforce.org.record(sf_id)
    assert ev and not ev.get("IsDeleted"), "the Salesforce event was deleted"
    assert datetime.fromisoformat(str(ev["StartDateTime"]).replace("Z", "+00:00")) == w_end + timedelta(hours=3)
    assert world.sync()["totals"]["deltas"] == 0


def test_mass_deletion_guard_stops_a_wipe(world):
    for n in range(6):
        world.sb.salesforce.org.add_event(world.ids[ALICE], f"Customer call {n}", at(n + 1, 9), at(n + 1, 10))
    world.sync()
    assert len([i for i in world.mail_items(ALICE) if i["subject"].startswith("Customer call")]) == 6
    sf = world.salesforce()
    for ev in _sf(world, ALICE, "Customer call 0") + [e for e in world.sf_events(ALICE) if e["Subject"].startswith("Customer call")]:
        try:
            sf.Event.delete(ev["Id"])
        except Exception:  # already deleted in this loop
            pass
    s2 = world.sync()
    assert s2["users"][ALICE]["refused"] and "allow" in s2["users"][ALICE]["refused"].lower()
    assert len([i for i in world.mail_items(ALICE) if i["subject"].startswith("Customer call")]) == 6
    s3 = world.sync(allow_deletes=True)
    assert len([i for i in world.mail_items(ALICE) if i["subject"].startswith("Customer call")]) == 0, s3


def test_duplicates_are_left_alone_and_recorded(world):
    for _ in range(2):
        world.sb.exchange.org.add_item(BOB, "Standup", at(1, 9), at(1, 9, 15))
    s1 = world.sync()
    assert _sf(world, BOB, "Standup") == []
    assert s1["users"][BOB]["duplicates"] >= 1
    assert world.query("SELECT count(*) FROM notes WHERE kind = 'duplicate' AND user_key = ?", [BOB])[0][0] >= 1


def test_second_run_plans_zero_deltas(world):
    org = world.sb.salesforce.org
    org.add_event(world.ids[ALICE], "Kick-off", at(1, 9), at(1, 10), invitee_ids=[world.ids["carol@customer.example"]])
    org.add_event(world.ids[BOB], "Offsite", at(8, 0), at(9, 0), is_all_day=True)
    org.add_event(world.ids[ALICE], "Doctor", at(2, 8), at(2, 9), is_private=True, description="check-up")
    world.sb.exchange.org.add_item(BOB, "Roadmap", at(2, 13), at(2, 14), required_attendees=["frank@prospect.example"],
                                   organizer=BOB)
    first = world.sync()
    assert first["totals"]["deltas"] > 0
    second = world.sync()
    assert second["totals"]["deltas"] == 0, second


def test_every_delta_has_an_outcome_and_a_bad_event_does_not_stop_the_rest(world):
    world.sb.exchange.org.add_item(ALICE, "Two-week roadshow", at(1, 9), at(16, 9))  # 15 days: Salesforce rejects
    world.sb.exchange.org.add_item(ALICE, "Normal meeting", at(2, 9), at(2, 10))
    s = world.sync()
    assert len(_sf(world, ALICE, "Normal meeting")) == 1
    assert _sf(world, ALICE, "Two-week roadshow") == []
    missing = world.query(
        "SELECT count(*) FROM deltas d LEFT JOIN delta_outcomes o USING (run_id, delta_id) WHERE o.delta_id IS NULL")
    assert missing[0][0] == 0
    reasons = [x["reason"] for x in s["users"][ALICE]["skipped"]] + [f["error"] for f in s["users"][ALICE]["failed"]]
    assert any("too_long" in (r or "") or "14" in (r or "") for r in reasons), s


@pytest.mark.prefect
def test_flow_runs_under_prefect_and_publishes_summary(world, prefect_harness, monkeypatch):
    from flows.sync import sync_flow

    world.sb.salesforce.org.add_event(world.ids[ALICE], "Prefect-run meeting", at(1, 9), at(1, 10))
    world.configure()
    for k, v in world.env.items():
        monkeypatch.setenv(k, v)
    summary = sync_flow(str(world.config_path), world.today)
    assert summary["status"] == "succeeded"
    assert len(_mail(world, ALICE, "Prefect-run meeting")) == 1

    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def latest():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["calsync-summary"])))
            return [a for a in found if summary["run_id"] in (a.description or "")]

    (artifact,) = asyncio.run(latest())
    assert f"| {ALICE} | 0 | 0 | 0 | 1 |" in artifact.data


@pytest.mark.prefect
def test_flow_retries_extract_on_retriable_errors_only(world, prefect_harness, monkeypatch):
    from connectors.errors import FatalError
    from flows.sync import sync_flow

    world.sb.salesforce.org.add_event(world.ids[ALICE], "After a 503", at(1, 9), at(1, 10))
    world.configure()
    for k, v in world.env.items():
        monkeypatch.setenv(k, v)
    world.sb.faults.add("http_503", count=1, route="/query")
    summary = sync_flow(str(world.config_path), world.today)
    assert summary["status"] == "succeeded"  # the extract task was retried after the 503
    assert len(_mail(world, ALICE, "After a 503")) == 1

    monkeypatch.setenv("CALSYNC_SF_SESSION_ID", "00Dwrong!session")
    calls = world.sb.salesforce.org.api_calls()
    with pytest.raises(FatalError, match="re-authenticate|session"):
        sync_flow(str(world.config_path), world.today)
    # One refused call, no retries of a fatal error.
    assert world.sb.salesforce.org.api_calls() - calls <= 1
    assert "00Dwrong" not in str(world.query("SELECT error FROM runs"))
