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
    # Every delta with its latest outcome: what was written where, the target before, and how it went.
    "v_changes": """
        SELECT d.run_id, r.started_at, d.user_key, d.op, d.target_side, d.reason, d.pair_id,
               d.source_id, coalesce(d.target_id, o.new_id) AS target_id,
               t.subject AS before_subject, d.subject AS after_subject,
               t.start AS before_start, d.start AS after_start,
               t."end" AS before_end, d."end" AS after_end,
               o.status, o.error, o.recorded_at
        FROM deltas d
        JOIN runs r USING (run_id)
        LEFT JOIN (
            SELECT * FROM delta_outcomes
            QUALIFY row_number() OVER (PARTITION BY run_id, delta_id ORDER BY recorded_at DESC) = 1
        ) o ON o.run_id = d.run_id AND o.delta_id = d.delta_id
        LEFT JOIN event_snapshots t
          ON t.run_id = d.run_id AND t.side = d.target_side AND t.native_id = d.target_id
    """,
    # Every version of every event the runs have seen: one row per run in which its synced content
    # differed from the run before (or it was first seen), with the values before and after.
    "v_event_history": """
        WITH seen AS (
            SELECT s.*, r.started_at,
                   lag(s.content_hash) OVER w AS before_hash,
                   lag(s.subject) OVER w AS before_subject,
                   lag(s.start) OVER w AS before_start,
                   lag(s."end") OVER w AS before_end,
                   lag(s.description) OVER w AS before_description
            FROM event_snapshots s JOIN runs r USING (run_id)
            WINDOW w AS (PARTITION BY s.side, s.native_id ORDER BY r.started_at)
        )
        SELECT run_id, started_at, user_key, side, native_id,
               CASE WHEN before_hash IS NULL THEN 'first_seen' ELSE 'changed' END AS change,
               before_subject, subject AS after_subject, before_start, start AS after_start,
               before_end, "end" AS after_end, before_description, description AS after_description,
               last_modified
        FROM seen
        WHERE before_hash IS NULL OR before_hash <> content_hash
    """,
    # The live pairs with what each side looked like the last time it was read.
    "v_pairs": """
        WITH latest AS (
            SELECT * FROM event_snapshots
            QUALIFY row_number() OVER (PARTITION BY side, native_id ORDER BY run_id DESC) = 1
        )
        SELECT p.pair_id, p.user_key, p.mailbox, p.sf_id, p.email_id, p.private_origin, p.linked,
               p.created_run, p.last_run, s.subject AS sf_subject, s.start AS sf_start,
               e.subject AS email_subject, e.start AS email_start,
               (s.content_hash IS NOT NULL AND s.content_hash = p.sf_hash
                AND e.content_hash IS NOT NULL AND e.content_hash = p.email_hash) AS in_step
        FROM pairs p
        LEFT JOIN latest s ON s.side = 'salesforce' AND s.native_id = p.sf_id
        LEFT JOIN latest e ON e.side = 'email' AND e.native_id = p.email_id
    """,
    # Failures, skips and conflicts by user and reason.
    "v_problems": """
        SELECT run_id, user_key, kind, reason, side, native_id, detail FROM notes
        WHERE kind IN ('conflict', 'skipped', 'refused', 'duplicate', 'truncated', 'altered')
        UNION ALL
        SELECT o.run_id, d.user_key, 'failed' AS kind, split_part(o.error, ':', 1) AS reason,
               d.target_side AS side, coalesce(d.target_id, d.source_id) AS native_id, o.error AS detail
        FROM delta_outcomes o JOIN deltas d ON d.run_id = o.run_id AND d.delta_id = o.delta_id
        WHERE o.status = 'failed'
          AND o.recorded_at = (SELECT max(o2.recorded_at) FROM delta_outcomes o2
                               WHERE o2.run_id = o.run_id AND o2.delta_id = o.delta_id)
    """,
    # Problems counted by user, kind and reason.
    "v_problem_counts": """
        SELECT user_key, kind, reason, count(*) AS n, count(DISTINCT run_id) AS runs
        FROM v_problems GROUP BY ALL ORDER BY n DESC
    """,
    # Salesforce API calls and EWS requests spent per run, with the deltas they carried
    # (calls_per_applied_delta counts the Salesforce calls).
    "v_api_calls": """
        SELECT run_id, mode, started_at, sf_api_calls, ews_api_calls, deltas, applied,
               round(sf_api_calls / greatest(applied, 1), 2) AS calls_per_applied_delta
        FROM v_runs ORDER BY started_at DESC
    """,
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
