"""The life of one recorded run (sync or push): lock, store, connections, run row, failure record.

    with recorded_run(cfg, "sync", today, run_id) as run:
        run.stage = "extract"
        ...
        summary = run.finish(deltas, outcomes)

A failure anywhere marks the run failed with the stage it happened in and the reason (never a
secret: connector errors carry none), and is raised again carrying ``run_id`` and ``failed_stage``. A run
left ``running`` by a process that died is marked ``interrupted`` by the next one (which holds the lock, so
nothing else can be running).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Iterator

import polars as pl

from connectors.errors import ApiLimitExceeded
from connectors.store import Store
from flows import pipeline
from flows.config import Config
from flows.lock import run_lock
from flows.summary import summarise

log = logging.getLogger("calsync")

@dataclass
class RecordedRun:
    cfg: Config
    store: Store
    run_id: str
    today: date
    conns: pipeline.Connections | None = None
    stage: str = "connect"

    def api_calls(self) -> dict[str, int | None]:
        """The Salesforce HTTP calls and EWS SOAP requests made so far (None before connecting)."""
        if self.conns is None:
            return {"sf_api_calls": None, "ews_api_calls": None, "graph_api_calls": None}
        return self.conns.api_calls()

    def finish(self, deltas: pl.DataFrame, outcomes: pl.DataFrame, **extra) -> dict:
        """Summarise, mark the run succeeded (or partial when a delta failed), return the summary."""
        self.stage = "finish"
        summary = summarise(deltas, outcomes, self.store.notes(self.run_id))
        failed = summary["totals"]["failed"]
        status = "succeeded" if failed == 0 else "partial"
        self.store.finish_run(self.run_id, status, summary["totals"],
                              error=f"{failed} deltas failed" if failed else None, **self.api_calls())
        summary.update(run_id=self.run_id, status=status, store=str(self.cfg.store_path),
                       today=self.today.isoformat(), **extra)
        return summary


def failure_reason(exc: BaseException) -> str:
    prefix = "api_limit: " if isinstance(exc, ApiLimitExceeded) else ""
    return f"{prefix}{type(exc).__name__}: {exc}"


@contextmanager
def recorded_run(cfg: Config, mode: str, today: date, run_id: str,
                 lock_wait_s: float = 0.0) -> Iterator[RecordedRun]:
    with run_lock(cfg.store_path, run_id, wait_s=lock_wait_s):
        store = Store(cfg.store_path)
        run = RecordedRun(cfg, store, run_id, today)
        try:
            for dead, planned in store.mark_interrupted():
                log.warning("run %s was interrupted %s; marked interrupted", dead,
                            f"while writing: `calsync replay {dead}` finishes it" if planned
                            else "before planning: nothing was written")
            store.start_run(run_id, mode, today,
                            users=[(u.email, u.mailbox, u.mailbox_kind) for u in cfg.enabled_users])
            run.conns = pipeline.connect(cfg)
            try:
                yield run
            finally:
                run.conns.close()
        except Exception as exc:
            store.finish_run(run_id, "failed", error=failure_reason(exc), failed_stage=run.stage,
                             **run.api_calls())
            exc.run_id, exc.failed_stage = run_id, run.stage  # the CLI and notifications name them
            raise
        finally:
            store.close()
