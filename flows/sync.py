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

from connectors.errors import ApiLimitExceeded, RetriableError
from connectors.store import Store
from flows import pipeline
from flows.config import Config, load_config
from flows.lock import RunInProgress, run_lock
from flows.progress import TerminalProgress
from flows.summary import render_markdown, summarise


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
    with run_lock(cfg.store_path, run_id, wait_s=lock_wait_s):
        return _run_locked(cfg, today, allow_deletes, run_id, stage, progress)


def _run_locked(cfg: Config, today: date, allow_deletes: bool, run_id: str, stage, progress) -> dict:
    store = Store(cfg.store_path)
    current = "connect"
    try:
        store.start_run(run_id, "sync", today)
        conns = pipeline.connect(cfg)
        try:
            current = "extract"
            ex = stage("extract", pipeline.extract, cfg, conns, store, today, progress)
            current = "snapshot"
            events = stage("snapshot", pipeline.snapshot, store, run_id, ex)
            current = "reconcile"
            settings = pipeline.settings_for(cfg, ex.org, allow_deletes)
            store.set_run_settings(run_id, dataclasses.asdict(settings))  # replay needs them
            result = stage("reconcile", pipeline.plan, store, run_id, events, ex, today, settings)
            current = "load"
            outcomes, _pairs = stage(
                "load", pipeline.load, store, run_id, conns, ex.org, result.deltas, store.pairs(),
                ex.users, result.pair_refresh, progress,
            )
            current = "finish"
            summary = summarise(result.deltas, outcomes, store.notes(run_id))
            failed = summary["totals"]["failed"]
            status = "succeeded" if failed == 0 else "partial"
            store.finish_run(run_id, status, summary["totals"],
                             error=f"{failed} deltas failed" if failed else None,
                             sf_api_calls=_api_calls(conns))
        finally:
            conns.close()
    except Exception as exc:
        reason = _reason(exc)
        try:
            store.finish_run(run_id, "failed", error=reason, failed_stage=current)
        finally:
            store.close()
        raise
    store.close()
    summary.update(run_id=run_id, status=status, store=str(cfg.store_path), today=today.isoformat())
    return summary


def _api_calls(conns: pipeline.Connections) -> int:
    return conns.sf_calls[0]


def _reason(exc: BaseException) -> str:
    prefix = "api_limit: " if isinstance(exc, ApiLimitExceeded) else ""
    return f"{prefix}{type(exc).__name__}: {exc}"


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
