"""The DuckDB store: migrations, snapshots without private details, atomic outcome + pair writes."""

from __future__ import annotations

from datetime import date, datetime, timezone

import duckdb
import polars as pl
import pytest

from connectors.store import SCHEMA_VERSION, Store
from transforms.schema import (
    DERIVED_SCHEMA,
    DIRECTORY_SCHEMA,
    EVENT_SCHEMA,
    OUTCOME_SCHEMA,
    PAIR_SCHEMA,
    USER_SCHEMA,
    conform,
    empty,
)

T0 = datetime(2026, 11, 25, 10, tzinfo=timezone.utc)


def _events() -> pl.DataFrame:
    inv = [{"email": "carol@c.example", "response": "accepted", "record_id": "003A", "record_type": "contact"}]
    return conform(pl.DataFrame({
        "side": ["salesforce", "email"], "user_key": ["a@x.com"] * 2, "native_id": ["00U1", "AAMk1"],
        "subject": ["Board meeting", "Dentist"], "description": ["agenda", "root canal"],
        "is_private": [False, True], "start": [T0, T0], "end": [T0, T0], "invitees": [inv, inv],
        "key": [11, 12], "content_hash": [2**64 - 1, 2],
    }), EVENT_SCHEMA | DERIVED_SCHEMA)


def test_tables_created_and_versioned(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"runs", "event_snapshots", "invitee_snapshots", "pairs", "deltas", "delta_outcomes"} <= tables
    with Store(tmp_path / "s.duckdb") as store:  # reopening migrates nothing twice
        assert store.one("SELECT count(*), max(version) FROM schema_version") == (1, SCHEMA_VERSION)


def test_version_1_store_migrates_digests_exactly_and_marks_pairs_for_translation(tmp_path):
    """Schema 1 kept digests as decimal strings; 2 keeps UBIGINT (the same numbers) and lists the stored pairs
    whose hashes are old digests until a sync translates them."""
    from connectors.store import _TABLES

    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER)")
    con.execute("INSERT INTO schema_version VALUES (1)")
    for name, cols in _TABLES.items():  # version 1: the same tables with the digests as VARCHAR
        if name != "legacy_pair_hashes":
            con.execute(f"CREATE TABLE {name} ({cols.replace('UBIGINT', 'VARCHAR')})")
    con.execute("INSERT INTO pairs (pair_id, user_key, sf_id, email_id, sf_hash, email_hash)"
                " VALUES ('p1', 'a@x.com', '00U1', 'AAMk1', '18446744073709551615', '7')")
    con.execute("INSERT INTO event_snapshots (run_id, side, native_id, key, content_hash)"
                " VALUES ('r0', 'email', 'AAMk1', '12', '7')")
    con.close()
    with Store(path) as store:
        assert store.one("SELECT max(version) FROM schema_version") == (SCHEMA_VERSION,)
        p = store.pairs().row(0, named=True)
        assert (p["sf_hash"], p["email_hash"]) == (2**64 - 1, 7)
        assert store.one("SELECT key, content_hash FROM event_snapshots") == (12, 7)
        assert store.legacy_pair_hashes().to_list() == ["p1"]
        store.translate_pair_hashes(store.pairs().with_columns(pl.lit(5, dtype=pl.UInt64).alias("sf_hash")),
                                    pl.Series(["p1"]))
        assert store.legacy_pair_hashes().is_empty() and store.pairs()["sf_hash"].to_list() == [5]
    with Store(path) as store:  # migrated once
        assert store.one("SELECT count(*) FROM schema_version WHERE version = 2") == (1,)


def test_version_2_store_gains_graph_calls_and_remembers_its_mailboxes_were_ews(tmp_path):
    """Schema 3: runs.graph_api_calls, and mailbox_kinds, which a version-2 store fills with 'ews' for every
    mailbox it has pairs with (before Graph, every mailbox was reached through EWS)."""
    from connectors.store import _TABLES

    path = tmp_path / "v2.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER)")
    con.execute("INSERT INTO schema_version VALUES (1), (2)")
    for name, cols in _TABLES.items():
        if name == "runs":
            cols = cols.replace(",\n        graph_api_calls BIGINT", "")
        if name != "mailbox_kinds":
            con.execute(f"CREATE TABLE {name} ({cols})")
    assert "graph_api_calls" not in [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
    con.execute("INSERT INTO pairs (pair_id, user_key, mailbox, sf_id, email_id) VALUES"
                " ('p1', 'a@x.com', 'a@x.com', '00U1', 'AAMk1'), ('p2', 'a@x.com', 'a@x.com', '00U2', 'AAMk2')")
    con.close()
    with Store(path) as store:
        assert store.one("SELECT max(version) FROM schema_version") == (SCHEMA_VERSION,)
        assert store.mailbox_kinds() == {"a@x.com": "ews"}
        store.start_run("r1", "sync", date(2026, 12, 2))
        store.finish_run("r1", "succeeded", graph_api_calls=7)
        assert store.one("SELECT graph_api_calls FROM v_api_calls") == (7,)
        store.set_mailbox_kinds({"a@x.com": "graph", "b@x.com": "ews"}, "r1")
        assert store.mailbox_kinds() == {"a@x.com": "graph", "b@x.com": "ews"}


def test_snapshot_keeps_no_private_details(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.start_run("r1", "sync", date(2026, 11, 24))
        store.write_snapshot("r1", _events(), empty(PAIR_SCHEMA), empty(USER_SCHEMA), empty(DIRECTORY_SCHEMA))
        dump = str(store.con.execute("SELECT * FROM event_snapshots").fetchall())
        dump += str(store.con.execute("SELECT * FROM invitee_snapshots").fetchall())
        assert "Dentist" not in dump and "root canal" not in dump
        assert "Board meeting" in dump
        back = store.read_snapshot("r1")["events"].sort("native_id")
        private = back.filter(pl.col("is_private")).row(0, named=True)
        assert private["subject"] == "Private" and private["description"] == ""
        assert private["invitees"] == [] and private["key"] == 12
        public = back.filter(~pl.col("is_private")).row(0, named=True)
        assert public["invitees"][0]["email"] == "carol@c.example" and public["content_hash"] == 2**64 - 1


def test_outcomes_and_pairs_commit_together(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.start_run("r1", "sync", date(2026, 11, 24))
        pairs = conform(pl.DataFrame({"pair_id": ["p1"], "user_key": ["a@x.com"], "sf_id": ["00U1"]}), PAIR_SCHEMA)
        outcomes = conform(pl.DataFrame({"delta_id": ["d1"], "status": ["applied"]}), OUTCOME_SCHEMA)
        store.record_outcomes("r1", outcomes, pairs)
        assert store.pairs()["pair_id"].to_list() == ["p1"]
        bad_pairs = conform(pl.DataFrame({"pair_id": ["p2", "p2"], "user_key": ["a", "a"]}), PAIR_SCHEMA)
        with pytest.raises(duckdb.Error):  # duplicate pair ids violate the key: nothing is written
            store.record_outcomes("r1", outcomes, bad_pairs)
        assert store.pairs()["pair_id"].to_list() == ["p1"]
        assert store.outcomes("r1").height == 1


def test_second_writer_gets_a_clear_message(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path):
        import subprocess
        import sys
        code = ("import sys; sys.path.insert(0, '.'); from connectors.store import Store, StoreError\n"
                f"try:\n    Store({str(path)!r})\nexcept StoreError as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "Another calsync process may hold it" in out.stdout, out.stderr


def test_version_3_store_learns_when_runs_planned_and_whom_they_were_for(tmp_path):
    """Schema 4: runs.planned_at (a run interrupted before planning has nothing to replay), runs.pruned_at, and
    run_users; a version-3 store fills them from what it kept."""
    path = tmp_path / "v3.duckdb"
    with Store(path) as store:  # today's tables, then taken back to what version 3 had
        store.con.execute("DROP TABLE run_users")
        store.con.execute("ALTER TABLE runs DROP COLUMN planned_at")
        store.con.execute("ALTER TABLE runs DROP COLUMN pruned_at")
        store.con.execute("DELETE FROM schema_version")
        store.con.execute("INSERT INTO schema_version VALUES (1), (2), (3)")
        store.con.execute("INSERT INTO runs (run_id, mode, status, started_at) VALUES"
                          " ('r1', 'sync', 'succeeded', now()), ('r2', 'sync', 'running', now())")
        store.con.execute("INSERT INTO user_snapshots (run_id, user_key, mailbox) VALUES ('r1', 'a@x.com', 'a@x.com')")
        store.con.execute("INSERT INTO notes (run_id, user_key, kind, reason) VALUES ('r1', 'b@x.com', 'refused',"
                          " 'mailbox_unreadable')")
    with Store(path) as store:
        assert store.one("SELECT max(version) FROM schema_version") == (SCHEMA_VERSION,)
        planned = dict(store.con.execute("SELECT run_id, planned_at IS NOT NULL FROM runs").fetchall())
        assert planned == {"r1": True, "r2": False}
        assert sorted(store.con.execute("SELECT run_id, user_key FROM run_users").fetchall()) == [
            ("r1", "a@x.com"), ("r1", "b@x.com")]
        assert store.mark_interrupted() == [("r2", False)]
        assert store.one("SELECT status, failed_stage FROM runs WHERE run_id = 'r2'") == ("interrupted", "before planning")
