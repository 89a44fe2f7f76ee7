"""``calsync history``: recent runs as a table, one run in detail, or both written as CSV/Parquet."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from connectors.store import Store


def history_frames(store: Store, run_id: str | None = None, limit: int = 20) -> dict[str, pl.DataFrame]:
    if run_id is None:
        return {"runs": store._frame(
            "SELECT run_id, mode, status, started_at, finished_at, deltas, applied, failed, conflicts,"
            f" duplicates, sf_api_calls, ews_api_calls, graph_api_calls, error FROM v_runs ORDER BY started_at DESC LIMIT {int(limit)}")}
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


def show_history(path: Path, run_id: str | None = None, limit: int = 20, out: Path | None = None,
                 fmt: str = "csv") -> int:
    if not Path(path).exists():
        print(f"no store at {path}: nothing has run yet (or pass --store / --config)")
        return 1
    with Store(path, read_only=True) as store:
        frames = history_frames(store, run_id, limit)
    if run_id is not None and frames["run"].height == 0:
        print(f"no run {run_id} in {path}")
        return 1
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            target = out / f"{name}.{fmt}"
            frame = frame.with_columns(pl.col(pl.Datetime).dt.to_string())
            frame.write_csv(target) if fmt == "csv" else frame.write_parquet(target)
            print(f"wrote {target} ({frame.height} rows)")
        return 0
    with pl.Config(tbl_rows=200, tbl_cols=20, fmt_str_lengths=60, tbl_width_chars=200):
        for name, frame in frames.items():
            print(f"== {name}")
            print(frame)
    return 0
