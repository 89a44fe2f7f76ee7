"""The Prefect flow: extract -> snapshot -> reconcile -> load -> finish.

Tasks wrap the plain stage functions of ``flows.pipeline``. Only retriable errors (throttling, 5xx,
timeouts) are retried, and only on the read stage: a write is never blindly repeated (the load
records an outcome per delta, and a replay finishes what a failed load left).
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# signature, and a served run (which unpickles the flow) must be able to resolve `date`.
import dataclasses
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.errors import RetriableError
from flows import pipeline
from flows.config import Config, load_config
from flows.lock import RunInProgress
from flows.progress import TerminalProgress
from flows.runs import recorded_run
from flows.summary import render_markdown


def _retriable(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    try:
        state.result()
    except RetriableError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


# Only reads are retried, and only on retriable errors: a write is never blindly repeated.
_TASK_OPTIONS = {
    "extract": {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": _retriable},
}


def run_sync(
    cfg: Config,
    today: date | None = None,
    allow_deletes: bool = False,
    run_id: str | None = None,
    stage=None,
    lock_wait_s: float = 0.0,
    progress=None,
) -> dict:
    """One sync run for every enabled user. ``stage(name, fn, *args)`` runs a stage (Prefect tasks
    inside the flow, plain calls otherwise). Returns the summary with ``run_id`` and ``status``."""
    today = today or datetime.now(timezone.utc).date()
    run_id = run_id or pipeline.new_run_id()
    stage = stage or (lambda _name, fn, *args: fn(*args))
    with recorded_run(cfg, "sync", today, run_id, lock_wait_s) as run:
        store, conns = run.store, run.conns
        run.stage = "extract"
        ex = stage("extract", pipeline.extract, cfg, conns, store, today, progress)
        run.stage = "snapshot"
        events = stage("snapshot", pipeline.snapshot, store, run_id, ex)
        run.stage = "reconcile"
        settings = pipeline.settings_for(cfg, ex.org, allow_deletes)
        store.set_run_settings(run_id, dataclasses.asdict(settings))  # replay needs them
        result = stage("reconcile", pipeline.plan, store, run_id, events, ex, today, settings)
        run.stage = "load"
        outcomes, _pairs = stage(
            "load", pipeline.load, store, run_id, conns, ex.org, result.deltas, store.pairs(),
            ex.users, result.pair_refresh, progress,
        )
        pipeline.record_mailbox_kinds(store, conns, ex.users, run_id)
        return run.finish(result.deltas, outcomes)


@flow(name="calsync-sync", log_prints=True)
def sync_flow(config_path: str, today: date | None = None, allow_deletes: bool = False) -> dict:
    """Sync every enabled user of the config at ``config_path`` once."""
    cfg = load_config(Path(config_path))

    def stage(name, fn, *args):
        # Inputs are live connections and the store: nothing to cache or persist.
        return task(name=name, cache_policy=NO_CACHE, **_TASK_OPTIONS.get(name, {}))(fn)(*args)

    try:
        with TerminalProgress() as progress:
            summary = run_sync(cfg, today, allow_deletes, stage=stage, progress=progress)
    except RunInProgress as exc:
        # Skipping is the designed outcome, not a failure: the next scheduled run picks it up.
        get_run_logger().warning("skipped: %s", exc)
        return {"status": "skipped", "message": str(exc), "users": {}, "totals": {"deltas": 0}}
    _publish(summary)
    return summary


def _publish(summary: dict) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=render_markdown(summary), key="calsync-summary",
                                 description=f"calsync run {summary['run_id']}")
    except Exception:  # noqa: BLE001 - a summary artifact must never fail the run
        get_run_logger().warning("could not publish the summary artifact")
