"""docs/analysts.md: every example query runs against a store a real sync filled, and says something."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from flows.history import show_history
from tests.flows.conftest import at

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
ALICE, BOB = "alice@example.com", "bob@example.com"


def _queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_documented_query_runs_and_returns_rows(world, tmp_path, capsys):
    org = world.sb.salesforce.org
    sf_id = org.add_event(world.ids[ALICE], "Board prep", at(1, 9), at(1, 10))
    world.sb.exchange.org.add_item(BOB, "Partner call", at(2, 9), at(2, 10))
    for _ in range(2):
        world.sb.exchange.org.add_item(BOB, "Dup", at(3, 9), at(3, 10))
    # A write that fails in the first run (Bob's mailbox is the second written: one mailbox at a time, so the
    # fault after the first create always hits Bob's) and the second run makes.
    world.configure(exchange="max_retry_wait_s = 2\nmax_parallel_mailboxes = 1")
    org.add_event(world.ids[BOB], "Flaky", at(4, 9), at(4, 10))
    world.sb.faults.add("http_503", count=50, route="CreateItem", after=1)
    assert world.sync()["status"] == "partial"
    world.sb.faults.clear()
    sf = world.salesforce()
    sf.Event.update(sf_id, {"Subject": "Board prep v2"})
    # A conflict: both sides of Bob's pair edited, the mailbox a minute later.
    copy = next(e for e in world.sf_events(BOB) if e["Subject"] == "Partner call")
    sf.Event.update(copy["Id"], {"Subject": "Partner call (sf)"})
    world.sb.clock.advance(timedelta(minutes=1))
    item = next(i for i in world.account(BOB).calendar.all() if i.subject == "Partner call")
    item.subject = "Partner call (mail)"
    item.save(update_fields=["subject"])
    assert world.sync()["status"] == "succeeded"

    queries = _queries()
    assert len(queries) >= 6
    with world.store() as store:
        for sql in queries:
            rows = store.con.execute(sql).fetchall()
            assert rows, f"documented query returned nothing:\n{sql}"
        history = store.con.execute(
            "SELECT change, before_subject, after_subject FROM v_event_history WHERE native_id = ? ORDER BY started_at",
            [sf_id]).fetchall()
        assert history == [("first_seen", None, "Board prep"), ("changed", "Board prep", "Board prep v2")]
        writes = store.con.execute(
            "SELECT before_subject, after_subject FROM v_changes WHERE op = 'update'").fetchall()
        assert ("Board prep", "Board prep v2") in writes
        calls = store.con.execute("SELECT sf_api_calls FROM v_runs").fetchall()
        assert all(c[0] and c[0] > 0 for c in calls)
        calls = store.con.execute("SELECT sf_api_calls, ews_api_calls FROM v_api_calls").fetchall()
        assert len(calls) == 2 and all(sf and sf > 0 and ews and ews > 0 for sf, ews in calls)
        second = store.one("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0]
        assert store.con.execute("SELECT user_key, op, fixed_how, fixed_by_run FROM v_failures").fetchall() == [
            (BOB, "create", "later run", second)]
        assert store.con.execute("SELECT user_key, last_outcome, pending_failed_deltas FROM v_user_status"
                                 " ORDER BY user_key").fetchall() == [(ALICE, "synced", 0), (BOB, "synced", 0)]

    assert show_history(world.tmp / "calsync.duckdb") == 0
    out = tmp_path / "export"
    assert show_history(world.tmp / "calsync.duckdb", out=out, fmt="parquet") == 0
    assert (out / "runs.parquet").exists()
    run_id = world.query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]
    assert show_history(world.tmp / "calsync.duckdb", run_id=run_id, out=out, fmt="csv") == 0
    assert "Board prep v2" in (out / "changes.csv").read_text()
