"""The DuckDB store: run ledger, snapshots, pairs, deltas and their outcomes.

Glossary
--------
run         one execution of the sync (or a replay, or a manual push), with its id and status.
snapshot    what extract read for a run: ``event_snapshots`` / ``invitee_snapshots`` (private events
            keep no subject, description or invitees: R9), plus the pairs, users and directory the
            reconcile saw (``pair_snapshots``, ``user_snapshots``, ``directory_snapshots``), so a run can
            be recomputed from the store alone.
pairs       the live pair state; it only advances in the transaction that records the outcomes that
            justify it, so a crash leaves the old state or the new, never half.

Tables are created and migrated here (``schema_version``). Every write is one transaction.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb
import polars as pl

from transforms.schema import (
    DELTA_SCHEMA,
    DERIVED_SCHEMA,
    DIRECTORY_SCHEMA,
    EVENT_SCHEMA,
    INVITEE,
    NOTE_SCHEMA,
    OUTCOME_SCHEMA,
    PAIR_SCHEMA,
    PRIVATE_SUBJECT,
    USER_SCHEMA,
    conform,
    empty,
)

SCHEMA_VERSION = 5

# Version 2 keeps the digests (event key and content hash, pair and delta hashes) as UBIGINT, not as their
# decimal strings, and computes them differently (transforms.digest). The stored pair hashes of a version-1
# store are translated on the next sync that reads both sides (``legacy_pair_hashes``).
_DIGEST_COLUMNS = {
    "event_snapshots": ["key", "content_hash"],
    "pair_snapshots": ["sf_hash", "email_hash"],
    "pairs": ["sf_hash", "email_hash"],
    "deltas": ["source_hash", "target_hash"],
}

_DUCK_TYPES = {
    pl.String: "VARCHAR",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
    pl.Int64: "BIGINT",
    pl.UInt64: "UBIGINT",
    pl.Float64: "DOUBLE",
}


def _duck_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ"
    if isinstance(dtype, pl.Enum):
        return "VARCHAR"
    if isinstance(dtype, pl.List):
        return _duck_type(dtype.inner) + "[]"
    if isinstance(dtype, pl.Struct):
        inner = ", ".join(f'"{f.name}" {_duck_type(f.dtype)}' for f in dtype.fields)
        return f"STRUCT({inner})"
    for pl_type, duck in _DUCK_TYPES.items():
        if dtype == pl_type:
            return duck
    raise TypeError(f"no DuckDB type for {dtype}")


def _columns(schema: dict[str, pl.DataType]) -> str:
    return ", ".join(f'"{name}" {_duck_type(dtype)}' for name, dtype in schema.items())


_SNAPSHOT_EVENT = {k: v for k, v in EVENT_SCHEMA.items() if k != "invitees"} | DERIVED_SCHEMA
_INVITEE_ROW = {"side": pl.String, "native_id": pl.String} | {
    f.name: f.dtype for f in INVITEE.fields
}
_DELTA_ROW = DELTA_SCHEMA  # invitees kept as a list of structs: DuckDB stores them natively
_OUTCOME_ROW = OUTCOME_SCHEMA | {"recorded_at": pl.Datetime("us", "UTC")}

_TABLES: dict[str, str] = {
    "runs": """
        run_id VARCHAR PRIMARY KEY,
        mode VARCHAR NOT NULL,            -- sync, replay, push
        status VARCHAR NOT NULL,          -- running, succeeded, failed, partial
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        today DATE,
        replay_of VARCHAR,
        failed_stage VARCHAR,             -- extract, snapshot, reconcile, load, finish
        error VARCHAR,
        counts JSON,
        settings JSON,                    -- what the reconcile was given besides the snapshot
        sf_api_calls BIGINT,
        ews_api_calls BIGINT,
        graph_api_calls BIGINT,
        planned_at TIMESTAMPTZ,           -- when its deltas and notes were stored (NULL: never planned)
        pruned_at TIMESTAMPTZ             -- when retention dropped its snapshots (NULL: kept whole)
    """,
    "event_snapshots": "run_id VARCHAR NOT NULL, " + _columns(_SNAPSHOT_EVENT),
    "invitee_snapshots": "run_id VARCHAR NOT NULL, " + _columns(_INVITEE_ROW),
    "pair_snapshots": "run_id VARCHAR NOT NULL, " + _columns(PAIR_SCHEMA),
    "user_snapshots": "run_id VARCHAR NOT NULL, " + _columns(USER_SCHEMA),
    "directory_snapshots": "run_id VARCHAR NOT NULL, " + _columns(DIRECTORY_SCHEMA),
    "pairs": _columns(PAIR_SCHEMA) + ", PRIMARY KEY (pair_id)",
    "deltas": "run_id VARCHAR NOT NULL, " + _columns(_DELTA_ROW),
    "delta_outcomes": "run_id VARCHAR NOT NULL, " + _columns(_OUTCOME_ROW),
    "notes": "run_id VARCHAR NOT NULL, " + _columns(NOTE_SCHEMA),
    # pairs whose stored hashes are version-1 digests, until a sync translates them
    "legacy_pair_hashes": "pair_id VARCHAR PRIMARY KEY",
    # the kind (ews, graph) each mailbox was reached through when its pairs were last written: item ids
    # belong to one protocol, so a mailbox that moved to the other kind starts afresh (C17)
    "mailbox_kinds": "mailbox VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, since_run VARCHAR",
    # the last read of each mailbox: which run's snapshot holds its rows, read through which kind and in which
    # row format, and when it was last read in full (incremental reads take unchanged items from that snapshot)
    "mailbox_reads": "mailbox VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, run_id VARCHAR NOT NULL,"
                     " format VARCHAR NOT NULL, read_at TIMESTAMPTZ NOT NULL, full_at TIMESTAMPTZ NOT NULL",
    # the users a run was for (written when it starts, so a run that fails before reading anything still
    # counts for them in v_user_status)
    "run_users": "run_id VARCHAR NOT NULL, user_key VARCHAR NOT NULL, mailbox VARCHAR, mailbox_kind VARCHAR",
}


class StoreError(Exception):
    """The store cannot be opened or is of an unknown version."""


class _Closed:
    """Stands in for the connection of a closed Store."""

    def close(self) -> None:
        pass

    def __getattr__(self, name: str):
        raise StoreError("the store is closed; open a new Store")


_CLOSED = _Closed()


class Store:
    """The calsync DuckDB file. One writer at a time (DuckDB locks the file)."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(
                f"cannot open the store {self.path}: {exc}. Another calsync process may hold it;"
                " wait for it to finish or point [store] path elsewhere."
            ) from exc
        try:
            self.con.execute("SET TimeZone = 'UTC'")
            if not read_only:
                self._migrate()
        except BaseException:
            self.close()  # a store of a newer version, say: never leave the file open
            raise

    def close(self) -> None:
        """Close the connection and let go of it: an exception's traceback may keep this Store alive (Prefect
        keeps a failed run's exception), and a live DuckDB connection object at exit is a leak (nanobind)."""
        con, self.con = self.con, _CLOSED
        con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.transaction():
            self.con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            row = self.one("SELECT max(version) FROM schema_version")
            current = row[0] if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the store {self.path} has schema version {current}, newer than this calsync"
                    f" ({SCHEMA_VERSION}); upgrade calsync"
                )
            if current < 1:
                for name, cols in _TABLES.items():
                    self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
                self.con.execute(f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION})")
            if 1 <= current < 2:
                # decimal strings -> UBIGINT (exact); the pairs' hashes are old digests until translated
                for table, cols in _DIGEST_COLUMNS.items():
                    for col in cols:
                        self.con.execute(f'ALTER TABLE {table} ALTER COLUMN "{col}" TYPE UBIGINT USING TRY_CAST("{col}" AS UBIGINT)')
                self.con.execute(f"CREATE TABLE IF NOT EXISTS legacy_pair_hashes ({_TABLES['legacy_pair_hashes']})")
                self.con.execute("INSERT INTO legacy_pair_hashes SELECT pair_id FROM pairs")
                self.con.execute("INSERT INTO schema_version VALUES (2)")
            if 1 <= current < 3:
                # Microsoft Graph mailboxes: their own call count; every mailbox so far was reached through EWS
                self.con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS graph_api_calls BIGINT")
                self.con.execute(f"CREATE TABLE IF NOT EXISTS mailbox_kinds ({_TABLES['mailbox_kinds']})")
                self.con.execute("INSERT INTO mailbox_kinds SELECT DISTINCT mailbox, 'ews', NULL FROM pairs"
                                 " WHERE mailbox IS NOT NULL ON CONFLICT DO NOTHING")
                self.con.execute("INSERT INTO schema_version VALUES (3)")
            if 1 <= current < 4:
                # Runs know when they planned (an interrupted run before planning has nothing to replay) and
                # whether retention pruned them; run_users says which users each run was for.
                self.con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS planned_at TIMESTAMPTZ")
                self.con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS pruned_at TIMESTAMPTZ")
                self.con.execute(
                    "UPDATE runs SET planned_at = coalesce(finished_at, started_at) WHERE status IN ('succeeded', 'partial')"
                    " OR run_id IN (SELECT run_id FROM deltas) OR run_id IN (SELECT run_id FROM notes)")
                self.con.execute(f"CREATE TABLE IF NOT EXISTS run_users ({_TABLES['run_users']})")
                self.con.execute(
                    "INSERT INTO run_users SELECT DISTINCT run_id, user_key, mailbox, NULL FROM ("
                    " SELECT run_id, user_key, mailbox FROM user_snapshots UNION ALL"
                    " SELECT run_id, user_key, NULL FROM notes WHERE kind = 'refused' AND user_key IS NOT NULL"
                    " AND user_key NOT IN (SELECT user_key FROM user_snapshots s WHERE s.run_id = notes.run_id))")
                self.con.execute("INSERT INTO schema_version VALUES (4)")
            if 1 <= current < 5:
                # Incremental reads: nothing recorded yet, so every mailbox's next read is a full one.
                self.con.execute(f"CREATE TABLE IF NOT EXISTS mailbox_reads ({_TABLES['mailbox_reads']})")
                self.con.execute("INSERT INTO schema_version VALUES (5)")
            # Future migrations: `if 1 <= current < 6: ...` then insert 6.
        from connectors.store_views import create_views  # views live beside the store

        create_views(self.con)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    def _insert(self, table: str, frame: pl.DataFrame, run_id: str | None = None) -> None:
        if frame.height == 0:
            return
        frame = frame.with_columns(pl.col(pl.Enum).cast(pl.String))
        if run_id is not None:
            frame = frame.select(pl.lit(run_id).alias("run_id"), pl.all())
        cols = ", ".join(f'"{c}"' for c in frame.columns)
        self.con.register("_frame", frame.to_arrow())
        try:
            self.con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _frame")
        finally:
            self.con.unregister("_frame")

    def one(self, sql: str, params: list | None = None) -> tuple | None:
        """The first row of a query (read whole: DuckDB 2 refuses other work on a half-read result)."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def _frame(self, sql: str, params: list | None = None, schema: dict | None = None) -> pl.DataFrame:
        result = self.con.sql(sql, params=params or None).pl()
        if schema is not None:
            if result.height == 0:
                return empty(schema)
            result = conform(result, schema)
        return result

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, run_id: str, mode: str, today: date, replay_of: str | None = None,
                  users: list[tuple[str, str | None, str | None]] = ()) -> None:
        """Record a run as running; ``users``: (user_key, mailbox, mailbox_kind) of the users it is for."""
        with self.transaction():
            self.con.execute(
                "INSERT INTO runs (run_id, mode, status, started_at, today, replay_of)"
                " VALUES (?, ?, 'running', ?, ?, ?)",
                [run_id, mode, datetime.now(timezone.utc), today, replay_of],
            )
            if users:
                self.con.executemany("INSERT INTO run_users VALUES (?, ?, ?, ?)",
                                     [[run_id, *u] for u in users])

    def mark_interrupted(self) -> list[tuple[str, bool]]:
        """Runs still ``running`` are dead (the caller holds the run lock): mark them ``interrupted``, saying
        whether they stopped before planning (nothing written; run a new sync) or while writing (replay it).
        Returns (run_id, planned) of each."""
        rows = self.con.execute("SELECT run_id, planned_at IS NOT NULL FROM runs WHERE status = 'running'"
                                " ORDER BY started_at").fetchall()
        now = datetime.now(timezone.utc)
        with self.transaction():
            for run_id, planned in rows:
                if planned:
                    stage, error = "load", (f"interrupted while writing (the process stopped): `calsync replay {run_id}`"
                                            " finishes what it left undone")
                else:
                    stage, error = "before planning", ("interrupted before planning (the process stopped after"
                                                       " starting, before any delta was planned): nothing was"
                                                       " written; the next sync starts afresh")
                self.con.execute("UPDATE runs SET status = 'interrupted', finished_at = ?, failed_stage = ?,"
                                 " error = ? WHERE run_id = ?", [now, stage, error, run_id])
        return [(r, bool(p)) for r, p in rows]

    def set_run_settings(self, run_id: str, settings: dict) -> None:
        with self.transaction():
            self.con.execute("UPDATE runs SET settings = ? WHERE run_id = ?", [json.dumps(settings), run_id])

    def finish_run(
        self,
        run_id: str,
        status: str,
        counts: dict | None = None,
        error: str | None = None,
        failed_stage: str | None = None,
        sf_api_calls: int | None = None,
        ews_api_calls: int | None = None,
        graph_api_calls: int | None = None,
    ) -> None:
        with self.transaction():
            self.con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, counts = ?, error = ?, failed_stage = ?,"
                " sf_api_calls = ?, ews_api_calls = ?, graph_api_calls = ? WHERE run_id = ?",
                [
                    status,
                    datetime.now(timezone.utc),
                    json.dumps(counts or {}, default=str),
                    error,
                    failed_stage,
                    sf_api_calls,
                    ews_api_calls,
                    graph_api_calls,
                    run_id,
                ],
            )

    def run(self, run_id: str) -> dict | None:
        cur = self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        rows = cur.fetchall()  # fetch everything: DuckDB 2 keeps a half-read result open
        row = rows[0] if rows else None
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row))

    def runs(self, limit: int = 20) -> pl.DataFrame:
        return self._frame(f"SELECT * FROM runs ORDER BY started_at DESC LIMIT {int(limit)}")

    # -- snapshots ----------------------------------------------------------------------------

    def write_snapshot(
        self,
        run_id: str,
        events: pl.DataFrame,
        pairs: pl.DataFrame,
        users: pl.DataFrame,
        directory: pl.DataFrame,
    ) -> None:
        """Keep what this run read, in one transaction. ``events`` carries key and content_hash.

        Private events keep no subject, description or invitees (R9): the subject is kept as
        "Private" (what their copies show), and their key and content hash, computed before this,
        are all the sync needs of them.
        """
        private = pl.col("is_private").fill_null(False)
        kept = events.with_columns(
            pl.when(private).then(pl.lit(PRIVATE_SUBJECT)).otherwise(pl.col("subject")).alias("subject"),
            pl.when(private).then(pl.lit("")).otherwise(pl.col("description")).alias("description"),
            pl.when(private).then(None).otherwise(pl.col("invitees")).alias("invitees"),
        )
        invitees = (
            kept.select("side", "native_id", "invitees")
            .explode("invitees")
            .drop_nulls("invitees")
            .unnest("invitees")
        )
        with self.transaction():
            self._insert("event_snapshots", conform(kept, _SNAPSHOT_EVENT), run_id)
            self._insert("invitee_snapshots", conform(invitees, _INVITEE_ROW), run_id)
            self._insert("pair_snapshots", conform(pairs, PAIR_SCHEMA), run_id)
            self._insert("user_snapshots", conform(users, USER_SCHEMA), run_id)
            self._insert("directory_snapshots", conform(directory, DIRECTORY_SCHEMA), run_id)

    def _snapshot_events(self, where: str, params: list) -> pl.DataFrame:
        """Snapshot event rows (``where`` over ``event_snapshots s``) with their invitees, as EVENT_SCHEMA plus
        the stored digests."""
        events = self._frame(f"SELECT s.* FROM event_snapshots s WHERE {where}", params)
        if not events.height:
            return empty(EVENT_SCHEMA | DERIVED_SCHEMA)
        # flat rows, put in lists by polars (DuckDB's list aggregation holds several times the result meanwhile)
        invitees = self._frame(
            "SELECT i.run_id, i.side, i.native_id, i.email, i.response, i.record_id, i.record_type"
            f" FROM invitee_snapshots i SEMI JOIN (SELECT s.run_id, s.side, s.native_id"
            f" FROM event_snapshots s WHERE {where}) k ON k.run_id = i.run_id AND k.side = i.side"
            " AND k.native_id = i.native_id",
            params,
        )
        if invitees.height:
            invitees = invitees.sort("email", nulls_last=True, maintain_order=True).group_by(
                "run_id", "side", "native_id").agg(
                pl.struct("email", "response", "record_id", "record_type").alias("invitees"))
            events = events.join(invitees.with_columns(pl.col("side").cast(pl.String)),
                                 on=["run_id", "side", "native_id"], how="left")
        return conform(events, EVENT_SCHEMA | DERIVED_SCHEMA).with_columns(
            pl.col("invitees").fill_null(pl.lit([], dtype=pl.List(INVITEE))))

    def read_snapshot(self, run_id: str) -> dict[str, pl.DataFrame]:
        """The frames a run's reconcile saw, as ``write_snapshot`` kept them."""
        events = self._snapshot_events("s.run_id = ?", [run_id])
        return {
            "events": events,
            "pairs": self._frame(
                "SELECT * EXCLUDE (run_id) FROM pair_snapshots WHERE run_id = ?", [run_id], PAIR_SCHEMA
            ),
            "users": self._frame(
                "SELECT * EXCLUDE (run_id) FROM user_snapshots WHERE run_id = ?", [run_id], USER_SCHEMA
            ),
            "directory": self._frame(
                "SELECT * EXCLUDE (run_id) FROM directory_snapshots WHERE run_id = ?",
                [run_id],
                DIRECTORY_SCHEMA,
            ),
        }

    def has_snapshot(self, run_id: str) -> bool:
        row = self.one("SELECT count(*) FROM user_snapshots WHERE run_id = ?", [run_id])
        return bool(row and row[0])

    # -- pairs, deltas, outcomes ----------------------------------------------------------------

    def pairs(self) -> pl.DataFrame:
        return self._frame("SELECT * FROM pairs ORDER BY pair_id", schema=PAIR_SCHEMA)

    def write_plan(self, run_id: str, deltas: pl.DataFrame, notes: pl.DataFrame) -> None:
        with self.transaction():
            self._insert("deltas", conform(deltas, DELTA_SCHEMA), run_id)
            self._insert("notes", conform(notes, NOTE_SCHEMA), run_id)
            self.con.execute("UPDATE runs SET planned_at = ? WHERE run_id = ?", [datetime.now(timezone.utc), run_id])

    def add_notes(self, run_id: str, notes: pl.DataFrame) -> None:
        with self.transaction():
            self._insert("notes", conform(notes, NOTE_SCHEMA), run_id)

    def deltas(self, run_id: str) -> pl.DataFrame:
        return self._frame(
            "SELECT * EXCLUDE (run_id) FROM deltas WHERE run_id = ? ORDER BY delta_id",
            [run_id],
            DELTA_SCHEMA,
        )

    def notes(self, run_id: str) -> pl.DataFrame:
        return self._frame(
            "SELECT * EXCLUDE (run_id) FROM notes WHERE run_id = ?", [run_id], NOTE_SCHEMA
        )

    def outcomes(self, run_id: str) -> pl.DataFrame:
        """The latest outcome of each delta of ``run_id`` (a replay adds newer ones)."""
        return self._frame(
            "SELECT * EXCLUDE (run_id, recorded_at) FROM delta_outcomes WHERE run_id = ?"
            " QUALIFY row_number() OVER (PARTITION BY delta_id ORDER BY recorded_at DESC) = 1"
            " ORDER BY delta_id",
            [run_id],
            OUTCOME_SCHEMA,
        )

    def record_outcomes(self, run_id: str, outcomes: pl.DataFrame, new_pairs: pl.DataFrame) -> None:
        """Record what the load did and the pair state it justifies, in one transaction."""
        stamped = conform(outcomes, OUTCOME_SCHEMA).with_columns(
            pl.lit(datetime.now(timezone.utc)).cast(pl.Datetime("us", "UTC")).alias("recorded_at")
        )
        with self.transaction():
            self._insert("delta_outcomes", stamped, run_id)
            self._write_pairs(new_pairs)

    def _write_pairs(self, new_pairs: pl.DataFrame) -> None:
        """Replace the live pairs (inside the caller's transaction)."""
        self.con.execute("DELETE FROM pairs")
        self._insert("pairs", conform(new_pairs, PAIR_SCHEMA))

    def replace_pairs(self, new_pairs: pl.DataFrame) -> None:
        with self.transaction():
            self._write_pairs(new_pairs)

    def known_versions(self, kinds: dict[str, str], fmt: str, full_since: datetime) -> tuple[pl.DataFrame, dict[str, str]]:
        """For incremental reads (``kinds``: mailbox -> the kind it is read through now): the mailboxes whose last
        read can be trusted (read through that kind, in row format ``fmt``, and read in full at or after
        ``full_since``) as mailbox -> the run whose snapshot holds their rows, and what a read needs to know of
        those rows: (user_key, mailbox, native_id, version, start, end), sorted by mailbox. The rows
        themselves are fetched afterwards, only those a read kept (``reused_rows``): never the whole org twice."""
        slim = {"user_key": pl.String, "mailbox": pl.String, "native_id": pl.String, "version": pl.String,
                "start": EVENT_SCHEMA["start"], "end": EVENT_SCHEMA["end"]}
        trusted = self._trusted_reads(kinds, fmt, full_since)
        if not trusted:
            return empty(slim), {}
        rows = self._frame(
            "SELECT s.user_key, s.mailbox, s.native_id, s.version, s.start, s.\"end\" FROM event_snapshots s"
            " WHERE s.side = 'email' AND (s.mailbox, s.run_id) IN (SELECT unnest(?), unnest(?))"
            " ORDER BY s.mailbox, s.native_id",
            [list(trusted), list(trusted.values())], slim)
        return rows, trusted

    def _trusted_reads(self, kinds: dict[str, str], fmt: str, full_since: datetime) -> dict[str, str]:
        if not kinds:
            return {}
        want = pl.DataFrame({"mailbox": list(kinds), "kind": list(kinds.values())})
        self.con.register("_want", want.to_arrow())
        try:
            return dict(self.con.execute(
                "SELECT m.mailbox, m.run_id FROM mailbox_reads m JOIN _want w ON w.mailbox = m.mailbox"
                " AND w.kind = m.kind WHERE m.format = ? AND m.full_at >= ?", [fmt, full_since]).fetchall())
        finally:
            self.con.unregister("_want")

    def reused_rows(self, reused: pl.DataFrame) -> pl.DataFrame:
        """The snapshot rows an incremental read kept (``reused``: mailbox, run_id, native_id), with their stored
        digests (a private event's row keeps no subject, description or invitees, R9: its digests are all the
        sync needs of it)."""
        if not reused.height:
            return empty(EVENT_SCHEMA | DERIVED_SCHEMA)
        self.con.register("_reused", reused.select("mailbox", "run_id", "native_id").to_arrow())
        try:
            return self._snapshot_events(
                "s.side = 'email' AND (s.mailbox, s.run_id, s.native_id) IN"
                " (SELECT mailbox, run_id, native_id FROM _reused)", [])
        finally:
            self.con.unregister("_reused")

    def record_mailbox_reads(self, run_id: str, reads: dict[str, tuple[str, bool]], fmt: int,
                             now: datetime | None = None) -> None:
        """The run read these mailboxes (mailbox -> (kind, read in full?)) and its snapshot holds their rows."""
        now = now or datetime.now(timezone.utc)
        with self.transaction():
            for mailbox, (kind, full) in reads.items():
                self.con.execute(
                    "INSERT INTO mailbox_reads VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (mailbox) DO UPDATE SET"
                    " kind = excluded.kind, run_id = excluded.run_id, format = excluded.format,"
                    " read_at = excluded.read_at,"
                    " full_at = CASE WHEN ? THEN excluded.read_at ELSE mailbox_reads.full_at END",
                    [mailbox, kind, run_id, fmt, now, now, full],
                )

    def mailbox_kinds(self) -> dict[str, str]:
        """mailbox address -> the kind its pairs' item ids belong to."""
        return dict(self.con.execute("SELECT mailbox, kind FROM mailbox_kinds").fetchall())

    def set_mailbox_kinds(self, kinds: dict[str, str], run_id: str) -> None:
        """Record the kind each of these mailboxes is now reached through (kept when unchanged)."""
        if not kinds:
            return
        with self.transaction():
            for mailbox, kind in kinds.items():
                self.con.execute(
                    "INSERT INTO mailbox_kinds VALUES (?, ?, ?) ON CONFLICT (mailbox) DO UPDATE SET"
                    " kind = excluded.kind, since_run = excluded.since_run WHERE mailbox_kinds.kind <> excluded.kind",
                    [mailbox, kind, run_id],
                )

    def legacy_pair_hashes(self) -> pl.Series:
        """The ids of pairs whose stored hashes are version-1 digests (empty once all are translated)."""
        return self._frame("SELECT pair_id FROM legacy_pair_hashes ORDER BY pair_id", schema={"pair_id": pl.String})["pair_id"]

    def translate_pair_hashes(self, new_pairs: pl.DataFrame, translated: pl.Series) -> None:
        """Replace the pairs (with translated hashes) and forget the translated ids, in one transaction."""
        with self.transaction():
            self._write_pairs(new_pairs)
            if translated.len():
                self.con.register("_done", translated.to_frame("pair_id").to_arrow())
                try:
                    self.con.execute("DELETE FROM legacy_pair_hashes WHERE pair_id IN (SELECT pair_id FROM _done)")
                finally:
                    self.con.unregister("_done")

    # -- retention ----------------------------------------------------------------------------------

    _PRUNABLE = """
        SELECT run_id FROM runs
        WHERE started_at < ? AND pruned_at IS NULL AND status <> 'running'
          -- replay takes only runs no sync started after: those keep their snapshots whole
          AND started_at < (SELECT coalesce(max(started_at), 'infinity'::TIMESTAMPTZ) FROM runs WHERE mode = 'sync')
    """

    def prunable_runs(self, before: datetime) -> list[str]:
        """Runs started before ``before`` whose snapshots ``prune`` would thin (none replay can still take)."""
        return [r[0] for r in self.con.execute(self._PRUNABLE + " ORDER BY started_at", [before]).fetchall()]

    def last_pruned(self) -> datetime | None:
        row = self.one("SELECT max(pruned_at) FROM runs")
        return row[0] if row else None

    def prune(self, before: datetime, dry_run: bool = False) -> dict[str, int]:
        """Thin the snapshots of runs started before ``before`` (retention), keeping what replay and the analyst
        views need, in one transaction. Returns the rows dropped (or that would be, ``dry_run``) per table.

        Kept: every snapshot of the runs replay can still take (started at or after the latest sync); of older
        runs, each event row that is a new version of its event (first seen, or content changed: the versions
        of ``v_event_history``), the latest row of each event (``v_pairs``), and the rows a delta of the same
        run targets (the before values of ``v_changes``), with their invitees. Dropped: every other event and
        invitee row of those runs (an unchanged event read again), and their pair, user and directory snapshots
        (only replay reads them). Runs, deltas, outcomes and notes are never dropped; the runs are marked
        ``pruned_at``."""
        runs = self.prunable_runs(before)
        counts = {t: 0 for t in ("event_snapshots", "invitee_snapshots", "pair_snapshots", "user_snapshots",
                                 "directory_snapshots")}
        if not runs:
            return {"runs": 0, **counts}
        self.con.register("_prune", pl.DataFrame({"run_id": runs}).to_arrow())
        try:
            with self.transaction():
                self.con.execute("""
                    CREATE OR REPLACE TEMP TABLE _drop AS
                    WITH ordered AS (
                        SELECT s.rowid AS rid, s.run_id, s.side, s.native_id, s.content_hash,
                               lag(s.content_hash) OVER w AS prev_hash, lead(s.run_id) OVER w AS next_run
                        FROM event_snapshots s JOIN runs r USING (run_id)
                        WINDOW w AS (PARTITION BY s.side, s.native_id ORDER BY r.started_at, s.run_id)
                    )
                    SELECT o.rid, o.run_id, o.side, o.native_id FROM ordered o
                    WHERE o.run_id IN (SELECT run_id FROM _prune)
                      AND o.prev_hash IS NOT NULL AND o.prev_hash = o.content_hash
                      AND o.next_run IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM deltas d WHERE d.run_id = o.run_id
                                      AND d.target_side = o.side AND d.target_id = o.native_id)
                """)
                counts["event_snapshots"] = self.one("SELECT count(*) FROM _drop")[0]
                counts["invitee_snapshots"] = self.one(
                    "SELECT count(*) FROM invitee_snapshots i SEMI JOIN _drop d"
                    " ON i.run_id = d.run_id AND i.side = d.side AND i.native_id = d.native_id")[0]
                for table in ("pair_snapshots", "user_snapshots", "directory_snapshots"):
                    counts[table] = self.one(f"SELECT count(*) FROM {table} WHERE run_id IN (SELECT run_id FROM _prune)")[0]
                if not dry_run:
                    self.con.execute("DELETE FROM invitee_snapshots i USING _drop d WHERE i.run_id = d.run_id"
                                     " AND i.side = d.side AND i.native_id = d.native_id")
                    self.con.execute("DELETE FROM event_snapshots WHERE rowid IN (SELECT rid FROM _drop)")
                    for table in ("pair_snapshots", "user_snapshots", "directory_snapshots"):
                        self.con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM _prune)")
                    self.con.execute("UPDATE runs SET pruned_at = ? WHERE run_id IN (SELECT run_id FROM _prune)",
                                     [datetime.now(timezone.utc)])
                self.con.execute("DROP TABLE _drop")
        finally:
            self.con.unregister("_prune")
        return {"runs": len(runs), **counts}
