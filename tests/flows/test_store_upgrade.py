"""A store written before schema 2 (digests as old-style decimal strings) upgrades without losing an edit."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from tests.flows.conftest import at
from tests.flows.conftest import mail_with as _mail
from tests.flows.conftest import one as _one
from transforms.normalise import _legacy_content_hash

ALICE = "alice@example.com"


def _make_legacy(world) -> int:
    """Rewrite the stored pairs as a version-1 store left them: old digests of their events, listed for
    translation (what the schema 2 migration leaves behind)."""
    with world.store() as store:
        last = store.one("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0]
        events = store.read_snapshot(last)["events"]
        old = events.select("side", "native_id", _legacy_content_hash(events).alias("old"))
        store.con.register("_old", old.with_columns(pl.col("side").cast(pl.String)).to_arrow())
        store.con.execute("UPDATE pairs SET sf_hash = o.old FROM _old o WHERE o.side = 'salesforce' AND o.native_id = pairs.sf_id")
        store.con.execute("UPDATE pairs SET email_hash = o.old FROM _old o WHERE o.side = 'email' AND o.native_id = pairs.email_id")
        store.con.execute("INSERT INTO legacy_pair_hashes SELECT pair_id FROM pairs")
        return store.one("SELECT count(*) FROM legacy_pair_hashes")[0]


def test_upgraded_store_keeps_an_edit_made_before_a_newer_exchange_read(world):
    sb = world.sb
    sf_id = sb.salesforce.org.add_event(world.ids[ALICE], "Quarterly plan", at(2, 9), at(2, 10))
    sb.salesforce.org.add_event(world.ids[ALICE], "Hiring sync", at(3, 9), at(3, 10))
    world.sync()
    assert world.sync()["totals"]["deltas"] == 0  # both sides now in this run's snapshot
    assert _make_legacy(world) == 2

    # Salesforce is edited; later an Exchange client saves the mailbox copy unchanged (LastModified moves on)
    world.salesforce().Event.update(sf_id, {"Subject": "Quarterly plan v2"})
    sb.clock.advance(timedelta(minutes=5))
    acct = world.account(ALICE)
    item = next(i for i in acct.calendar.all() if i.subject == "Quarterly plan")
    item.save(update_fields=["subject"])

    summary = world.sync()
    assert summary["status"] == "succeeded", summary
    # the translated hashes show Salesforce alone changed: its edit reaches the mailbox, no conflict
    assert len(_mail(world, ALICE, "Quarterly plan v2")) == 1 and _mail(world, ALICE, "Quarterly plan") == []
    assert not summary["users"][ALICE]["conflicts"]
    assert _one(world.mail_items(ALICE), subject="Hiring sync")
    assert world.query("SELECT count(*) FROM legacy_pair_hashes")[0][0] == 0
    assert world.sync()["totals"]["deltas"] == 0
