"""``calsync history``: recent runs as a table, one run in detail, every failure ever recorded, or any of them
written as CSV/Parquet; and ``calsync prune`` (retention)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from connectors.store import Store

# "Which writes failed for this user last week, and why, and what fixed them?" (docs/analysts.md shows it)
FAILURES_SQL = """
SELECT failed_at, user_key, op, target_side, coalesce(target_id, source_id) AS event, error_code, error,
       fixed_how, fixed_by_run, fixed_at, run_id
FROM v_failures
WHERE (? IS NULL OR user_key = ?) AND (? IS NULL OR failed_at >= ?)
ORDER BY failed_at DESC
"""
FAILED_RUNS_SQL = """
SELECT r.started_at, r.run_id, r.mode, r.status, r.failed_stage, r.error,
       (SELECT min(n.run_id) FROM runs n WHERE n.mode = r.mode AND n.started_at > r.started_at
        AND n.status = 'succeeded') AS next_success
FROM runs r
WHERE r.status IN ('failed', 'interrupted') AND (? IS NULL OR r.started_at >= ?)
  AND (? IS NULL OR r.run_id IN (SELECT run_id FROM run_users WHERE user_key = ?))
ORDER BY r.started_at DESC
"""


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:g}"
    return " ".join(str(value).split())  # one line per row, whatever the text held


def render(frame: pl.DataFrame) -> str:
    """A plain-text table: a header, one line per row, columns padded, the last column never cut (errors
    go last, so they read whole), times in UTC to the second."""
    if frame.height == 0:
        return "(none)"
    rows = [list(frame.columns)] + [[_cell(v) for v in row] for row in frame.iter_rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(frame.columns))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def history_frames(store: Store, run_id: str | None = None, limit: int = 20) -> dict[str, pl.DataFrame]:
    if run_id is None:
        return {"runs": store._frame(
            "SELECT started_at, run_id, mode, status, deltas, applied, failed, conflicts, duplicates, sf_api_calls,"
            " ews_api_calls, graph_api_calls, finished_at, failed_stage, error FROM v_runs ORDER BY started_at DESC"
            f" LIMIT {int(limit)}")}
    return {
        "run": store._frame("SELECT * FROM v_runs WHERE run_id = ?", [run_id]),
        "changes": store._frame(
            "SELECT user_key, op, target_side, reason, source_id, target_id, before_subject, after_subject,"
            " after_start, status, error"
            " FROM v_changes WHERE run_id = ? ORDER BY user_key, op", [run_id]),
        "notes": store._frame(
            "SELECT user_key, kind, reason, side, native_id, detail FROM notes WHERE run_id = ?"
            " ORDER BY user_key, kind", [run_id]),
    }


def failure_frames(store: Store, user: str | None = None, since: date | None = None) -> dict[str, pl.DataFrame]:
    user = user.strip().lower() if user else None
    start = datetime(since.year, since.month, since.day, tzinfo=timezone.utc) if since else None
    return {
        "failed_runs": store._frame(FAILED_RUNS_SQL, [start, start, user, user]),
        "failed_writes": store._frame(FAILURES_SQL, [user, user, start, start]),
    }


def _write(frames: dict[str, pl.DataFrame], out: Path, fmt: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        target = out / f"{name}.{fmt}"
        if fmt == "csv":  # CSV has no timestamp type: ISO strings; Parquet keeps them as timestamps
            frame.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z")).write_csv(target)
        else:
            frame.write_parquet(target)
        print(f"wrote {target} ({frame.height} rows)")


def _print(frames: dict[str, pl.DataFrame]) -> None:
    for name, frame in frames.items():
        if name == "run" and frame.height == 1:
            print("== run")
            for key, value in frame.row(0, named=True).items():
                print(f"{key + ':':<17} {_cell(value)}")
            continue
        print(f"== {name}")
        print(render(frame))


def _open(path: Path) -> Store | None:
    if not Path(path).exists():
        print(f"no store at {path}: nothing has run yet (or pass --store / --config)")
        return None
    return Store(path, read_only=True)


def show_history(path: Path, run_id: str | None = None, limit: int = 20, out: Path | None = None,
                 fmt: str = "csv") -> int:
    store = _open(path)
    if store is None:
        return 1
    with store:
        frames = history_frames(store, run_id, limit)
    if run_id is not None and frames["run"].height == 0:
        print(f"no run {run_id} in {path}")
        return 1
    if out is not None:
        _write(frames, out, fmt)
    else:
        _print(frames)
    return 0


def show_failures(path: Path, user: str | None = None, since: date | None = None, out: Path | None = None,
                  fmt: str = "csv") -> int:
    """``calsync history --failed``: every failed run and failed write ever recorded, newest first, each
    with what fixed it later (a replay, a later run) or nothing yet."""
    store = _open(path)
    if store is None:
        return 1
    with store:
        frames = failure_frames(store, user, since)
    if out is not None:
        _write(frames, out, fmt)
    else:
        _print(frames)
    return 0


def prune(store_path: Path, days: int, dry_run: bool = False, quiet: bool = False) -> int:
    """``calsync prune``: thin the snapshots of runs older than ``days`` ([store] retention_days)."""
    from flows.lock import run_lock

    if days <= 0:
        print("retention_days is 0: every snapshot is kept; nothing to prune")
        return 0
    if not Path(store_path).exists():
        print(f"no store at {store_path}: nothing to prune")
        return 0
    before = datetime.now(timezone.utc) - timedelta(days=days)
    with run_lock(store_path, "prune"), Store(store_path) as store:
        counts = store.prune(before, dry_run=dry_run)
    if not quiet:
        verb = "would drop" if dry_run else "dropped"
        rows = ", ".join(f"{n} {t}" for t, n in counts.items() if t != "runs")
        print(f"prune: {counts['runs']} runs older than {days} days ({before:%Y-%m-%d %H:%M} UTC): {verb} {rows}")
    return 0
