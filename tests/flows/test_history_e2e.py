"""Issue 11: history and housekeeping. `calsync history` reads as a table and exports timestamps as timestamps;
`calsync history --failed` keeps every failure with what fixed it; retention thins old snapshots but keeps
what replay and the analyst views need."""

from __future__ import annotations

import re
from datetime import date, timedelta

import polars as pl
import pytest

from flows.cli import main
from flows.config import load_config
from flows.history import prune, show_history
from flows.replay import NotReplayable, replay
from tests.flows.conftest import ALICE_, BOB_, at

ALICE, BOB = ALICE_, BOB_


def _fail_email_creates(world, n: int = 2, prefix: str = "Will fail") -> dict:
    for i in range(n):
        world.sb.salesforce.org.add_event(world.ids[ALICE], f"{prefix} {i}", at(i + 1, 9), at(i + 1, 10))
    world.sb.faults.add("http_503", count=100, route="CreateItem")
    summary = world.sync()
    world.sb.faults.clear()
    assert summary["status"] == "partial", summary
    return summary


def test_history_is_a_readable_table_and_parquet_keeps_timestamps(world, tmp_path, capsys):
    world.configure()
    failed = _fail_email_creates(world)
    world.sync()
    assert show_history(world.tmp / "calsync.duckdb") == 0
    out = capsys.readouterr().out
    assert not re.search(r"[┌┐│╞═]|\bstr\b|datetime\[|\bi64\b|…", out), out  # no polars frame, nothing cut off
    lines = out.splitlines()
    assert lines[0] == "== runs" and lines[1].split()[:4] == ["started_at", "run_id", "mode", "status"]
    row = next(x for x in lines if failed["run_id"] in x)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", row) and row.endswith("2 deltas failed")
    assert show_history(world.tmp / "calsync.duckdb", run_id=failed["run_id"]) == 0
    detail = capsys.readouterr().out
    assert "status:           partial" in detail and "== changes" in detail
    assert "retry or replay the run" in detail  # the whole error, on its row
    out_dir = tmp_path / "export"
    assert show_history(world.tmp / "calsync.duckdb", out=out_dir, fmt="parquet") == 0
    runs = pl.read_parquet(out_dir / "runs.parquet")
    assert isinstance(runs.schema["started_at"], pl.Datetime) and runs.height == 2
    assert show_history(world.tmp / "calsync.duckdb", out=out_dir, fmt="csv") == 0
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", (out_dir / "runs.csv").read_text())


def test_history_failed_lists_every_failure_and_what_fixed_it(world, capsys):
    world.configure(extra="batch_size = 1")
    cfg = load_config(world.config_path, env=world.env)
    first = _fail_email_creates(world, 2, "Replayed later")
    replay(cfg, first["run_id"])  # fixes both of them
    world.sb.exchange.org.add_item(BOB, "Bob's, re-planned", at(3, 9), at(3, 10))
    world.sb.faults.add("http_503", count=100, route="composite/sobjects")
    second = world.sync()
    world.sb.faults.clear()
    assert second["status"] == "partial"
    world.sync()  # re-plans Bob's create and writes it
    with world.store() as store:
        rows = store.con.execute("SELECT user_key, op, fixed_how, fixed_by_run, error FROM v_failures"
                                 " ORDER BY user_key, failed_at").fetchall()
        replay_id = store.one("SELECT run_id FROM runs WHERE mode = 'replay'")[0]
        third = store.one("SELECT run_id FROM runs WHERE mode = 'sync' ORDER BY started_at DESC LIMIT 1")[0]
    alice = [r for r in rows if r[0] == ALICE]
    bob = [r for r in rows if r[0] == BOB]
    assert [r[2:4] for r in alice] == [("replay", replay_id)] * 2
    assert [r[1:4] for r in bob] == [("create", "later run", third)]
    assert all("unavailable" in r[4] for r in rows)
    # The views keep only the latest outcome: the failures would be gone without --failed.
    assert world.query("SELECT count(*) FROM v_problems WHERE kind = 'failed' AND user_key = ?", [ALICE]) == [(0,)]
    assert main(["history", "--config", str(world.config_path), "--failed", "--user", ALICE.upper()]) == 0
    out = capsys.readouterr().out
    assert out.count(f" {ALICE} ") == 2 and BOB not in out and "replay" in out
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    assert main(["history", "--config", str(world.config_path), "--failed", "--since", tomorrow]) == 0
    assert capsys.readouterr().out.count("(none)") == 2


def test_retention_thins_old_snapshots_and_keeps_what_replay_and_the_views_need(world, capsys):
    world.configure()
    sf_id = world.sb.salesforce.org.add_event(world.ids[ALICE], "Kept history", at(1, 9), at(1, 10))
    world.sb.exchange.org.add_item(BOB, "Bob unchanged", at(2, 9), at(2, 10))
    world.sync()
    world.salesforce().Event.update(sf_id, {"Subject": "Kept history v2"})
    world.sync()
    world.sync()
    latest = world.sync()["run_id"]
    old = [r[0] for r in world.query("SELECT run_id FROM runs WHERE run_id <> ? ORDER BY started_at", [latest])]
    world.query("UPDATE runs SET started_at = started_at - INTERVAL 100 DAY WHERE run_id <> ?", [latest])
    views = {
        "history": "SELECT run_id, side, native_id, change, before_subject, after_subject FROM v_event_history ORDER BY ALL",
        "pairs": "SELECT pair_id, sf_subject, email_subject, in_step FROM v_pairs ORDER BY ALL",
        "changes": "SELECT run_id, op, before_subject, after_subject, status FROM v_changes ORDER BY ALL",
        "users": "SELECT user_key, last_outcome, last_synced_at FROM v_user_status ORDER BY ALL",
    }
    before = {name: world.query(sql) for name, sql in views.items()}
    rows_before = world.query("SELECT count(*) FROM event_snapshots")[0][0]
    cfg = load_config(world.config_path, env=world.env)

    assert prune(cfg.store_path, 90, dry_run=True) == 0
    said = capsys.readouterr().out
    assert said.startswith("prune: 3 runs older than 90 days") and "would drop" in said
    assert world.query("SELECT count(*) FROM event_snapshots")[0][0] == rows_before
    assert main(["prune", "--config", str(world.config_path), "--days", "90"]) == 0
    dropped = int(re.search(r"dropped (\d+) event_snapshots", capsys.readouterr().out).group(1))
    # Runs 2 and 3 read Bob's event unchanged, run 3 Alice's too: those rows go; versions and targets stay.
    assert dropped > 0 and world.query("SELECT count(*) FROM event_snapshots")[0][0] == rows_before - dropped
    assert {name: world.query(sql) for name, sql in views.items()} == before
    assert world.query("SELECT count(*) FROM user_snapshots WHERE run_id <> ?", [latest]) == [(0,)]
    assert [r[0] for r in world.query("SELECT run_id FROM runs WHERE pruned_at IS NOT NULL ORDER BY started_at")] == old
    world.query("UPDATE runs SET status = 'partial' WHERE run_id = ?", [old[0]])  # as if a write had failed
    with pytest.raises(NotReplayable, match="snapshots were pruned .* run a new sync"):
        replay(cfg, old[0])
    world.query("UPDATE runs SET status = 'succeeded' WHERE run_id = ?", [old[0]])
    # The latest run keeps its snapshot whole (replay may still want it), and syncing goes on as before.
    assert world.query("SELECT count(*) FROM user_snapshots WHERE run_id = ?", [latest])[0][0] == 2
    assert world.sync()["totals"]["deltas"] == 0

    # A sync prunes by itself once a day: made due (last prune two days ago, the latest run old).
    world.query("UPDATE runs SET pruned_at = pruned_at - INTERVAL 2 DAY WHERE pruned_at IS NOT NULL")
    world.query("UPDATE runs SET started_at = started_at - INTERVAL 100 DAY WHERE run_id = ?", [latest])
    world.sync()
    assert world.query("SELECT pruned_at IS NOT NULL FROM runs WHERE run_id = ?", [latest]) == [(True,)]
