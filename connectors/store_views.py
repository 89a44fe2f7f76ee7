"""SQL views over the store for analysts (docs/analysts.md shows queries over them)."""

from __future__ import annotations

import duckdb

VIEWS: dict[str, str] = {
    # One row per run with its headline counts.
    "v_runs": """
        SELECT r.run_id, r.mode, r.status, r.started_at, r.finished_at, r.today, r.replay_of,
               r.failed_stage, r.error, r.sf_api_calls, r.ews_api_calls,
               (SELECT count(*) FROM deltas d WHERE d.run_id = r.run_id) AS deltas,
               (SELECT count(*) FROM delta_outcomes o WHERE o.run_id = r.run_id AND o.status = 'applied') AS applied,
               (SELECT count(*) FROM delta_outcomes o WHERE o.run_id = r.run_id AND o.status = 'failed') AS failed,
               (SELECT count(*) FROM notes n WHERE n.run_id = r.run_id AND n.kind = 'conflict') AS conflicts,
               (SELECT count(*) FROM notes n WHERE n.run_id = r.run_id AND n.kind = 'duplicate') AS duplicates
        FROM runs r
    """,
    # Every delta with its latest outcome: what was written where, and how it went.
    "v_changes": """
        SELECT d.run_id, r.started_at, d.user_key, d.op, d.target_side, d.reason, d.pair_id,
               d.source_id, coalesce(d.target_id, o.new_id) AS target_id, d.subject, d.start, d."end",
               o.status, o.error, o.recorded_at
        FROM deltas d
        JOIN runs r USING (run_id)
        LEFT JOIN (
            SELECT * FROM delta_outcomes
            QUALIFY row_number() OVER (PARTITION BY run_id, delta_id ORDER BY recorded_at DESC) = 1
        ) o ON o.run_id = d.run_id AND o.delta_id = d.delta_id
    """,
    # The live pairs.
    "v_pairs": "SELECT * FROM pairs",
    # Failures, skips and conflicts by user and reason.
    "v_problems": """
        SELECT run_id, user_key, kind, reason, side, native_id, detail FROM notes
        WHERE kind IN ('conflict', 'skipped', 'refused', 'duplicate', 'truncated')
        UNION ALL
        SELECT o.run_id, d.user_key, 'failed' AS kind, split_part(o.error, ':', 1) AS reason,
               d.target_side AS side, coalesce(d.target_id, d.source_id) AS native_id, o.error AS detail
        FROM delta_outcomes o JOIN deltas d ON d.run_id = o.run_id AND d.delta_id = o.delta_id
        WHERE o.status = 'failed'
    """,
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
