"""Incremental mailbox reads (issue 12): a run fetches only the items whose version (change key) moved since the
mailbox's last trusted read, and takes the others' rows from that read's snapshot. What the reconcile sees must
be exactly what a full read would show, for both mailbox kinds; every state that cannot be trusted falls back to
a full read.

The equality checks run ``pipeline.extract`` twice on one store and one world (incrementally, then with
``full_read``), neither writing anything, and compare the normalised rows and the reconcile's deltas.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from connectors.store import Store
from flows import pipeline
from flows.config import load_config
from tests.flows.conftest import ALICE_, BOB_, MAILBOX_KINDS, at, one
from tests.flows.conftest import sf_with as _sf
from transforms.normalise import normalise
from transforms.reconcile import reconcile
from transforms.schema import INVITEE

pytestmark = pytest.mark.parametrize("mailbox_kind", MAILBOX_KINDS, indirect=True)

ALICE, BOB = ALICE_, BOB_


def _fetched(world) -> int:
    """Items the mailbox servers were asked for by id (EWS GetItem requests; Graph GETs of one event)."""
    ex = world.sb.exchange.org.calls_by_operation
    g = world.sb.graph.counts()
    return ex.get("GetItem", 0) + g["calls_by_operation"].get("getEvent", 0) + g["batch_operations"].get("getEvent", 0)


def _extract(world, **kw):
    cfg = load_config(world.config_path, env=world.env)
    conns = pipeline.connect(cfg)
    try:
        with Store(world.tmp / "calsync.duckdb") as store:
            before = _fetched(world)
            ex = pipeline.extract(cfg, conns, store, kw.pop("today", world.today), **kw)
            return ex, _fetched(world) - before
    finally:
        conns.close()


def _rows(ex) -> pl.DataFrame:
    """The normalised rows, private ones as a snapshot keeps them (no details, R9: an incremental read reuses
    them from the snapshot, with their digests)."""
    private = pl.col("is_private").fill_null(False)
    return normalise(ex.events).with_columns(
        pl.when(private).then(pl.lit("Private")).otherwise(pl.col("subject")).alias("subject"),
        pl.when(private).then(pl.lit("")).otherwise(pl.col("description")).alias("description"),
        pl.when(private).then(pl.lit([], dtype=pl.List(INVITEE))).otherwise(pl.col("invitees")).alias("invitees"),
    ).sort("side", "native_id")


def _plan(world, ex) -> pl.DataFrame:
    with Store(world.tmp / "calsync.duckdb") as store:
        pairs = pipeline.with_translated_hashes(store, normalise(ex.events), ex.pairs)
    result = reconcile(normalise(ex.events), pairs, ex.users, ex.directory, today=world.today,
                       settings=pipeline.settings_for(load_config(world.config_path, env=world.env), ex.org))
    return result.deltas.sort("delta_id")


def _same_as_a_full_read(world) -> tuple[int, int]:
    """Extract incrementally and in full; the rows and the planned deltas must be equal. Returns the items each
    fetched by id and asserts the incremental one really was incremental."""
    inc, inc_fetched = _extract(world)
    full, full_fetched = _extract(world, full_read=True)
    assert all(not full_ for _kind, full_ in inc.reads.values()), inc.reads
    assert all(full_ for _kind, full_ in full.reads.values()), full.reads
    a, b = _rows(inc), _rows(full)
    assert a.height == b.height and a.equals(b), (a.to_dicts(), b.to_dicts())
    assert _plan(world, inc).equals(_plan(world, full))
    return inc_fetched, full_fetched


def _start(event: dict) -> datetime:
    v = event["StartDateTime"]
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def _settled(world, *extra_items) -> None:
    world.configure()
    org = world.sb.salesforce.org
    org.add_event(world.ids[ALICE], "SF review", at(2, 9), at(2, 10), description="agenda")
    for n in range(3):
        world.sb.exchange.org.add_item(ALICE, f"Mail {n}", at(3 + n, 9), at(3 + n, 10), body=f"body {n}")
    world.sb.exchange.org.add_item(ALICE, "Weekly sync", at(1, 15), at(1, 16),
                                   recurrence={"pattern": "weekly", "occurrences": 4})
    world.sb.exchange.org.add_item(BOB, "Bob's own", at(4, 11), at(4, 12))
    for item in extra_items:
        world.sb.exchange.org.add_item(*item[:4], **(item[4] if len(item) > 4 else {}))
    for _ in range(2):  # the second run reads what the first wrote
        s = world.sync()
        assert s["status"] == "succeeded", s
    world.sb.clock.advance(timedelta(minutes=1))


def test_a_quiet_run_fetches_nothing_and_its_snapshot_is_complete(world):
    _settled(world)
    before = _fetched(world)
    s = world.sync()
    assert s["totals"]["deltas"] == 0, s
    assert _fetched(world) == before  # nothing changed: no item fetched by id
    runs = [r[0] for r in world.query("SELECT run_id FROM runs ORDER BY started_at")]
    # the quiet run's snapshot holds every mailbox row the full read before it held
    rows = world.query("SELECT run_id, native_id, version, subject FROM event_snapshots WHERE side = 'email'"
                       " AND run_id IN (?, ?) ORDER BY native_id", runs[-2:])
    last = {r[1:] for r in rows if r[0] == runs[-1]}
    previous = {r[1:] for r in rows if r[0] == runs[-2]}
    assert last == previous and len(last) >= 8
    reads = dict(world.query("SELECT mailbox, run_id FROM mailbox_reads"))
    assert reads == {ALICE: runs[-1], BOB: runs[-1]}


def test_rows_kept_from_the_last_read_are_the_same_fetched_in_parts(world, monkeypatch):
    # a big org fetches the kept rows in parts (pipeline.REUSED_PER_QUERY); here parts of 2 rows, with invitees
    _settled(world, (ALICE, "With invitees", at(5, 9), at(5, 10), {"required_attendees": [BOB, "guest@example.com"]}))
    monkeypatch.setattr(pipeline, "REUSED_PER_QUERY", 2)
    inc_fetched, _full = _same_as_a_full_read(world)
    assert inc_fetched == 0
    inc, _ = _extract(world)
    kept = inc.events.filter((pl.col("subject") == "With invitees") & (pl.col("side") == "email")
                             & (pl.col("user_key") == ALICE))
    assert kept.height == 1 and sorted(i["email"] for i in kept["invitees"][0]) == [BOB, "guest@example.com"]


def test_every_kind_of_change_is_read_again(world):
    _settled(world)
    alice = world.person(ALICE)
    org = world.sb.exchange.org
    edited = alice.item_id(subject="Mail 0")
    touched = alice.item_id(subject="Mail 1")
    deleted = alice.item_id(subject="Mail 2")
    alice.edit(edited, subject="Mail 0 (moved on)")
    new_key = org.edit_item(touched, body="body 1")  # same content, the change key moves
    alice.delete(deleted)
    alice.edit(alice.occurrence_id("Weekly sync", at(8, 15)), start=at(8, 17), end=at(8, 18))
    inc_fetched, _full = _same_as_a_full_read(world)
    assert inc_fetched > 0  # the changed items, by id (a full read on Graph takes them from the view instead)
    s = world.sync()
    assert s["status"] == "succeeded", s
    assert _sf(world, ALICE, "Mail 0 (moved on)") and not _sf(world, ALICE, "Mail 2")
    weekly = sorted(_start(e) for e in _sf(world, ALICE, "Weekly sync"))
    assert at(8, 17) in weekly and at(8, 15) not in weekly
    # the touched item was read again: the snapshot holds its new change key
    version = world.query("SELECT version FROM event_snapshots JOIN runs USING (run_id) WHERE native_id = ?"
                          " ORDER BY started_at DESC LIMIT 1",
                          [world.native_id(touched)])
    assert version and new_key in version[0][0]
    assert world.sync()["totals"]["deltas"] == 0


def test_an_item_moved_out_of_the_window_and_back_is_read_again(world):
    _settled(world)
    alice = world.person(ALICE)
    item = alice.item_id(subject="Mail 1")
    far = at(120, 9)  # past the window's end (two months ahead)
    alice.edit(item, start=far, end=far + timedelta(hours=1))
    _same_as_a_full_read(world)
    world.sync()
    world.sb.clock.advance(timedelta(minutes=1))
    alice.edit(item, start=at(5, 9), end=at(5, 10))
    _same_as_a_full_read(world)
    world.sync()
    assert [_start(e) for e in _sf(world, ALICE, "Mail 1")] == [at(5, 9)]
    assert world.sync()["totals"]["deltas"] == 0


def test_a_window_that_moves_onto_new_days_reads_what_it_had_not_seen(world):
    ahead = at(64, 9)  # past today's window (two months and a day: at most 63 days), inside a week later's
    _settled(world, (ALICE, "Far ahead", ahead, ahead + timedelta(hours=1)))
    assert not _sf(world, ALICE, "Far ahead")
    later = world.today + timedelta(days=7)
    inc, _ = _extract(world, today=later)
    full, _ = _extract(world, today=later, full_read=True)
    assert _rows(inc).equals(_rows(full))
    assert "Far ahead" in inc.events["subject"].to_list()


def test_each_untrusted_state_falls_back_to_a_full_read(world, monkeypatch):
    _settled(world)
    quiet, _ = _extract(world)
    assert quiet.reads == {ALICE: (world.kind, False), BOB: (world.kind, False)}
    # the safety net: a full read a day
    day_later, _ = _extract(world, now=datetime.now(timezone.utc) + pipeline.FULL_READ_EVERY + timedelta(minutes=1))
    assert all(full for _k, full in day_later.reads.values())
    # asked for
    assert all(full for _k, full in _extract(world, full_read=True)[0].reads.values())
    # rows kept in another format (a calsync upgrade that shapes rows differently)
    monkeypatch.setattr(pipeline, "ROW_FORMAT", pipeline.ROW_FORMAT + 1)
    assert all(full for _k, full in _extract(world)[0].reads.values())
    monkeypatch.undo()
    # the mailbox was last read through another kind (moved between Exchange Server and Exchange Online)
    other = "graph" if world.kind == "ews" else "ews"
    with Store(world.tmp / "calsync.duckdb") as store:
        store.con.execute("UPDATE mailbox_reads SET kind = ? WHERE mailbox = ?", [other, ALICE])
    moved, _ = _extract(world)
    assert moved.reads[ALICE][1] and not moved.reads[BOB][1]
    # the record of reads lost (or a store upgraded from before incremental reads)
    with Store(world.tmp / "calsync.duckdb") as store:
        store.con.execute("DELETE FROM mailbox_reads")
    lost, fetched = _extract(world)
    assert all(full for _k, full in lost.reads.values())
    assert fetched > 0 or world.kind == "graph"  # EWS fetched every item again (Graph reads the full view)


def test_a_full_run_resets_the_daily_safety_net(world):
    _settled(world)
    full_at = dict(world.query("SELECT mailbox, full_at FROM mailbox_reads"))
    world.sync()  # incremental: full_at stays
    assert dict(world.query("SELECT mailbox, full_at FROM mailbox_reads")) == full_at
    cfg = load_config(world.config_path, env=world.env)
    from flows.sync import run_sync

    run_sync(cfg, world.today, full_read=True)
    after = dict(world.query("SELECT mailbox, full_at FROM mailbox_reads"))
    assert all(after[m] > full_at[m] for m in full_at)


def test_a_private_item_is_reused_by_its_digests_and_never_kept_with_its_details(world):
    doctor = (ALICE, "Doctor", at(6, 8), at(6, 9), {"sensitivity": "Private", "body": "private note"})
    _settled(world, doctor)
    before = _fetched(world)
    inc, _ = _extract(world)
    assert _fetched(world) == before  # not fetched again: its snapshot row and digests stand for it
    row = one(inc.events.filter(pl.col("is_private")).to_dicts(), user_key=ALICE, side="email")
    assert row["subject"] == "Private" and row["content_hash"] is not None
    # an edit moves its change key: read again, and the change reaches Salesforce as a moved busy block
    alice = world.person(ALICE)
    alice.edit(alice.item_id(subject="Doctor"), start=at(6, 10), end=at(6, 11))
    _same_as_a_full_read(world)
    world.sync()
    blocks = [e for e in world.sf_events(ALICE) if e.get("IsPrivate") and not e.get("IsDeleted")]
    assert [_start(e) for e in blocks] == [at(6, 10)], blocks
    assert not world.query("SELECT 1 FROM event_snapshots WHERE subject = 'Doctor' OR description = 'private note'")
    assert world.sync()["totals"]["deltas"] == 0
