"""Replay a failed (or partly failed) run from its snapshots.

The deltas are recomputed from the run's stored snapshot, pairs, users and directory; they must equal
the deltas the run stored (else the store or the code changed under it, and replaying is refused).
Only deltas without an applied outcome are applied. A create first looks for an existing counterpart
with the same key on the target side, so a write that reached the server but whose reply was lost is
recorded, not made twice.
"""

from __future__ import annotations

import json
from datetime import date

import polars as pl

from connectors.errors import CalsyncError
from connectors.store import Store
from flows import pipeline
from flows.config import Config
from flows.lock import run_lock
from flows.summary import summarise
from transforms.reconcile import Settings, apply_outcomes, reconcile
from transforms.schema import DELTA_SCHEMA, OUTCOME_SCHEMA, conform, empty


class NotReplayable(CalsyncError):
    """This run cannot be replayed; the message says why and what to do instead."""


def _comparable(deltas: pl.DataFrame) -> pl.DataFrame:
    return conform(deltas, DELTA_SCHEMA).with_columns(pl.col(pl.Enum).cast(pl.String)).sort("delta_id")


def check_replayable(store: Store, run_id: str) -> dict:
    run = store.run(run_id)
    if run is None:
        raise NotReplayable(f"no run {run_id} in {store.path}; `calsync history` lists the runs")
    if run["mode"] not in ("sync", "push"):
        raise NotReplayable(f"run {run_id} is a {run['mode']}; replay the run it replayed ({run['replay_of']})")
    if run["status"] == "succeeded":
        raise NotReplayable(f"run {run_id} succeeded: every delta is applied, there is nothing to replay")
    if run["status"] in ("running", "interrupted") and run["planned_at"] is None:
        raise NotReplayable(
            f"run {run_id} was interrupted before planning (the process stopped before any delta was planned):"
            " nothing was written and there is nothing to replay; run a new sync")
    if run["pruned_at"] is not None:
        raise NotReplayable(
            f"run {run_id}'s snapshots were pruned (older than [store] retention_days): it cannot be recomputed;"
            " run a new sync (it picks up whatever is left)")
    if not store.has_snapshot(run_id) or run["settings"] is None:
        stage = run["failed_stage"] or "an early stage"
        raise NotReplayable(
            f"run {run_id} failed in {stage}, before its snapshot and plan were stored: nothing it did"
            " can be replayed, and nothing was written. Fix the cause (error: "
            f"{run['error'] or 'unknown'}) and run a new sync."
        )
    later = store.one(
        "SELECT run_id FROM runs WHERE mode = 'sync' AND started_at > ? AND run_id <> ?"
        " ORDER BY started_at LIMIT 1",
        [run["started_at"], run_id],
    )
    if later:
        raise NotReplayable(
            f"run {later[0]} started after {run_id} and planned from newer state: replaying the older"
            " run could undo it. Run a new sync instead (it picks up whatever is left)."
        )
    return run


def recompute(store: Store, run_id: str, run: dict) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The run's stored deltas, checked against a recomputation from its snapshot (also returned)."""
    snap = store.read_snapshot(run_id)
    settings = Settings(**json.loads(run["settings"]))
    today = run["today"] if isinstance(run["today"], date) else date.fromisoformat(str(run["today"]))
    result = reconcile(snap["events"], snap["pairs"], snap["users"], snap["directory"], today=today,
                       settings=settings)
    stored = store.deltas(run_id)
    if not _comparable(result.deltas).equals(_comparable(stored)):
        raise NotReplayable(
            f"recomputing run {run_id} from its snapshots gives {result.deltas.height} deltas, not the"
            f" {stored.height} it stored (calsync or the store changed since). Run a new sync instead."
        )
    return stored, snap


def _already_there(conns: pipeline.Connections, creates: pl.DataFrame) -> pl.DataFrame:
    """Outcomes for creates whose counterpart already exists on the target (a lost reply)."""
    found = []
    for d in creates.iter_rows(named=True):
        if d["target_side"] == "salesforce":
            ids = conns.salesforce.find_by_key(d["owner_id"], d["subject"], d["start"], d["end"], d["is_all_day"])
        else:
            ids = conns.mail.find_by_key(d["mailbox"], d["subject"], d["start"], d["end"], d["is_all_day"])
        if len(ids) == 1:
            found.append({"delta_id": d["delta_id"], "status": "applied", "new_id": ids[0],
                          "error": "found_existing: created by the failed run, reply lost"})
    return conform(pl.DataFrame(found), OUTCOME_SCHEMA) if found else empty(OUTCOME_SCHEMA)


def replay(cfg: Config, run_id: str) -> dict:
    """Apply what ``run_id`` left undone. Returns a summary of the replay."""
    replay_id = pipeline.new_run_id()
    with run_lock(cfg.store_path, replay_id), Store(cfg.store_path) as store:
        store.mark_interrupted()  # we hold the lock: a run still "running" is dead
        run = check_replayable(store, run_id)
        deltas, snap = recompute(store, run_id, run)
        done = store.outcomes(run_id).filter(pl.col("status") == "applied")["delta_id"]
        pending = deltas.filter(~pl.col("delta_id").is_in(done.implode()))
        store.start_run(replay_id, "replay", run["today"], replay_of=run_id)
        try:
            conns = pipeline.connect(cfg)
        except Exception as exc:
            # Nothing was written: the failed run stays as it was, replayable once the service answers.
            store.finish_run(replay_id, "failed", error=f"{type(exc).__name__}: {exc}", failed_stage="connect")
            exc.run_id, exc.failed_stage, exc.replay_of = replay_id, "connect", run_id
            raise
        try:
            org = conns.salesforce.org_info()
            creates = pending.filter(pl.col("op").cast(pl.String) == "create").with_columns(
                pl.col(pl.Enum).cast(pl.String))
            existing = _already_there(conns, creates)
            pairs = apply_outcomes(store.pairs(), pending, existing, run_id)
            store.record_outcomes(run_id, existing, pairs)
            rest = pending.filter(~pl.col("delta_id").is_in(existing["delta_id"].implode()))
            outcomes, _ = pipeline.load(store, run_id, conns, org, rest, pairs, snap["users"])
        except Exception as exc:
            store.finish_run(replay_id, "failed", error=f"{type(exc).__name__}: {exc}", failed_stage="load",
                             **conns.api_calls())
            exc.run_id, exc.failed_stage, exc.replay_of = replay_id, "load", run_id
            raise
        finally:
            conns.close()
        all_outcomes = store.outcomes(run_id)
        left = deltas.height - all_outcomes.filter(pl.col("status") == "applied").height
        summary = summarise(pending, pl.concat([existing, outcomes]), store.notes(run_id).head(0))
        store.finish_run(replay_id, "succeeded" if left == 0 else "partial", summary["totals"],
                         **conns.api_calls())
        if left == 0:
            store.con.execute("UPDATE runs SET status = 'succeeded', error = NULL WHERE run_id = ?", [run_id])
        summary.update(run_id=replay_id, replay_of=run_id, status="succeeded" if left == 0 else "partial",
                       pending_before=pending.height, found_existing=existing.height, left=left)
        return summary
