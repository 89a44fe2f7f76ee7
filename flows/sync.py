"""The Prefect flow: extract -> snapshot -> reconcile -> load -> finish.

Tasks wrap the plain stage functions of ``flows.pipeline``. Only retriable errors (throttling, 5xx,
timeouts) are retried, and only on the read stage: a write is never blindly repeated (the load
records an outcome per delta, and a replay finishes what a failed load left).

The flow ends Failed when deltas failed (or the run stopped), Completed named "Refused" when a user got no
change, else Completed (``flows.summary.verdict``); the summary artifact is published either way, and the
state hooks send the notifications (``flows.notify``). ``run_flow`` is what the CLI and the demo call: it
finds (or starts) the Prefect API first (``flows.prefect_api``).
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from the
# signature, and a served run (which unpickles the flow) must be able to resolve `date`.
import dataclasses
from datetime import date, datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.errors import RetriableError
from flows import logs, notify, pipeline, prefect_api
from flows.config import Config, load_config
from flows.lock import RunInProgress
from flows.progress import TerminalProgress
from flows.runs import recorded_run
from flows.summary import headline, render_markdown, verdict


def _retriable(task, task_run, state) -> bool:  # Prefect's signature
    try:
        state.result()
    except RetriableError:
        return True
    except Exception:
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
    full_read: bool = False,
) -> dict:
    """One sync run for every enabled user. ``stage(name, fn, *args)`` runs a stage (Prefect tasks
    inside the flow, plain calls otherwise). ``full_read`` reads every mailbox in full (not incrementally).
    Returns the summary with ``run_id`` and ``status``."""
    today = today or datetime.now(timezone.utc).date()
    run_id = run_id or pipeline.new_run_id()
    stage = stage or (lambda _name, fn, *args: fn(*args))
    with recorded_run(cfg, "sync", today, run_id, lock_wait_s) as run:
        store, conns = run.store, run.conns
        run.stage = "extract"
        ex = stage("extract", pipeline.extract, cfg, conns, store, today, progress, full_read)
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
        summary = run.finish(result.deltas, outcomes)
        pipeline.retention(cfg, store)
        return summary


def _final_state(summary: dict):
    """The flow's final state: Failed when deltas failed, a Completed state named "Refused" when a user got no
    change (the mass-deletion guard, an unreadable mailbox, no Salesforce User), else Completed. The summary is
    the state's data either way, so ``calsync sync`` and the hooks read it."""
    from prefect.states import Completed, Failed

    v = verdict(summary)
    if v.state == "FAILED":
        return Failed(message=v.headline, data=summary)
    if v.state_name != "Completed":
        return Completed(name=v.state_name, message=v.headline, data=summary)
    return Completed(message=v.headline, data=summary)


@flow(name="calsync-sync", log_prints=True, on_failure=[notify.state_hook], on_completion=[notify.state_hook],
      on_crashed=[notify.state_hook])
def sync_flow(config_path: str, today: date | None = None, allow_deletes: bool = False, full_read: bool = False):
    """Sync every enabled user of the config at ``config_path`` once. Ends Failed when deltas failed (or the
    run stopped), Completed named "Refused" when a user got no change, else Completed; the summary is the
    result of all three."""
    cfg = load_config(Path(config_path))
    logs.configure(cfg)  # served runs start here, not in the CLI

    def stage(name, fn, *args):
        # Inputs are live connections and the store: nothing to cache or persist.
        return task(name=name, cache_policy=NO_CACHE, **_TASK_OPTIONS.get(name, {}))(fn)(*args)

    try:
        with TerminalProgress() as progress:
            summary = run_sync(cfg, today, allow_deletes, stage=stage, progress=progress, full_read=full_read)
    except RunInProgress as exc:
        # Skipping is the designed outcome, not a failure: the next scheduled run picks it up.
        get_run_logger().warning("skipped: %s", exc)
        return {"status": "skipped", "message": str(exc), "users": {}, "totals": {"deltas": 0}}
    except Exception as exc:
        _publish_failure(exc)
        raise
    _publish(summary)
    state = _final_state(summary)
    if state.is_failed() or state.name != "Completed":
        get_run_logger().warning("%s", headline(summary))
    return state


def run_flow(config_path: str | Path, today: date | None = None, allow_deletes: bool = False,
             full_read: bool = False) -> dict:
    """``sync_flow`` against the Prefect API ``flows.prefect_api`` finds (or starts); returns the summary.
    A run that stopped raises its error (``PrefectUnavailable`` when no API could be had)."""
    with prefect_api.connected():
        state = sync_flow(str(config_path), today, allow_deletes, full_read, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result


def _publish(summary: dict) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=render_markdown(summary), key="calsync-summary",
                                 description=f"calsync run {summary['run_id']}")
    except Exception:  # a summary artifact must never fail the run
        get_run_logger().warning("could not publish the summary artifact")


def _publish_failure(exc: BaseException) -> None:
    """A run that stopped still leaves an artifact saying where and why (one line each)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        subject, body = notify.for_error(exc)
        run_id = getattr(exc, "run_id", None) or "?"
        create_markdown_artifact(markdown=f"# {subject}\n\n{body}\n", key="calsync-summary",
                                 description=f"calsync run {run_id}")
    except Exception:
        get_run_logger().warning("could not publish the failure artifact")
