"""SQL views over the store for analysts (docs/analysts.md shows queries over them)."""

from __future__ import annotations

import duckdb

VIEWS: dict[str, str] = {
    # One row per run with its headline counts.
    "v_runs": """
        SELECT r.run_id, r.mode, r.status, r.started_at, r.finished_at, r.today, r.replay_of,
               r.failed_stage, r.error, r.sf_api_calls, r.ews_api_calls, r.graph_api_calls,
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
        WITH latest AS (  -- by the run's start: run ids of runs in one second do not sort by time
            SELECT s.* FROM event_snapshots s JOIN runs r USING (run_id)
            QUALIFY row_number() OVER (PARTITION BY s.side, s.native_id ORDER BY r.started_at DESC, s.run_id DESC) = 1
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
    # Salesforce API calls, EWS requests and Microsoft Graph requests spent per run, with the deltas they
    # carried (calls_per_applied_delta counts the Salesforce calls).
    "v_api_calls": """
        SELECT run_id, mode, started_at, sf_api_calls, ews_api_calls, graph_api_calls, deltas, applied,
               round(sf_api_calls / greatest(applied, 1), 2) AS calls_per_applied_delta
        FROM v_runs ORDER BY started_at DESC
    """,
    # Each synced user's state: how their latest sync run went for them, when they last synced cleanly, since
    # when they are refused (or not synced) and why, and the failed deltas still pending. Sync runs only (a
    # push writes one event). outcome: synced, partial (deltas failed), refused (the mass-deletion guard),
    # not_synced (mailbox unreadable, no Salesforce User), failed (the run stopped), running.
    "v_user_status": """
        WITH latest_outcome AS (
            SELECT * FROM delta_outcomes
            QUALIFY row_number() OVER (PARTITION BY run_id, delta_id ORDER BY recorded_at DESC) = 1
        ),
        failed AS (
            SELECT d.run_id, d.user_key, count(*) AS n
            FROM deltas d LEFT JOIN latest_outcome o ON o.run_id = d.run_id AND o.delta_id = d.delta_id
            WHERE coalesce(o.status, 'failed') = 'failed'
            GROUP BY ALL
        ),
        refusal AS (
            SELECT run_id, user_key, min(reason) AS reason, min(detail) AS detail
            FROM notes WHERE kind = 'refused' GROUP BY ALL
        ),
        per_run AS (
            SELECT u.user_key, u.mailbox, u.mailbox_kind, r.run_id, r.started_at, r.planned_at, r.error,
                   n.reason AS refused_reason, n.detail AS refused_detail, coalesce(f.n, 0) AS failed_deltas,
                   CASE WHEN n.reason = 'mass_deletion' THEN 'refused'
                        WHEN n.reason IS NOT NULL THEN 'not_synced'
                        WHEN r.status = 'running' THEN 'running'
                        WHEN r.status IN ('failed', 'interrupted') THEN 'failed'
                        WHEN coalesce(f.n, 0) > 0 THEN 'partial'
                        ELSE 'synced' END AS outcome
            FROM run_users u JOIN runs r USING (run_id)
            LEFT JOIN refusal n ON n.run_id = u.run_id AND n.user_key = u.user_key
            LEFT JOIN failed f ON f.run_id = u.run_id AND f.user_key = u.user_key
            WHERE r.mode = 'sync'
        ),
        marks AS (
            SELECT user_key,
                   max(started_at) FILTER (WHERE outcome = 'synced') AS last_synced_at,
                   max(started_at) FILTER (WHERE outcome IN ('synced', 'partial')) AS last_written_at,
                   arg_max(failed_deltas, started_at) FILTER (WHERE planned_at IS NOT NULL) AS pending_failed_deltas
            FROM per_run GROUP BY user_key
        ),
        latest AS (
            SELECT * FROM per_run QUALIFY row_number() OVER (PARTITION BY user_key ORDER BY started_at DESC) = 1
        )
        SELECT l.user_key, l.mailbox, l.mailbox_kind, l.run_id AS last_run_id, l.started_at AS last_run_at,
               l.outcome AS last_outcome, m.last_synced_at,
               CASE WHEN l.outcome IN ('refused', 'not_synced') THEN
                   (SELECT min(p.started_at) FROM per_run p WHERE p.user_key = l.user_key AND p.outcome = l.outcome
                    AND p.started_at > coalesce(m.last_written_at, '-infinity'::TIMESTAMPTZ)) END AS refused_since,
               l.refused_reason, l.refused_detail,
               CASE WHEN l.outcome = 'failed' THEN l.error END AS last_error,
               coalesce(m.pending_failed_deltas, 0) AS pending_failed_deltas
        FROM latest l JOIN marks m USING (user_key)
    """,
    # Every failed write ever recorded (not only the latest outcome), with what fixed it later: a replay of the
    # run (the same delta applied), or a later run that applied a change to the same pair or event.
    "v_failures": """
        WITH outcomes AS (
            SELECT o.*, r.started_at FROM delta_outcomes o JOIN runs r USING (run_id)
        ),
        applied AS (
            SELECT d.run_id, d.delta_id, d.user_key, d.op, d.target_side, d.pair_id, d.source_id, d.target_id,
                   o.recorded_at, r.started_at
            FROM deltas d JOIN delta_outcomes o ON o.run_id = d.run_id AND o.delta_id = d.delta_id
            JOIN runs r ON r.run_id = d.run_id
            WHERE o.status = 'applied'
        )
        SELECT o.run_id, o.started_at AS run_started_at, o.recorded_at AS failed_at, d.user_key, d.op,
               d.target_side, d.reason, d.source_id, d.target_id, split_part(o.error, ':', 1) AS error_code,
               o.error, o.retriable,
               coalesce(rp.run_id, later.run_id) AS fixed_by_run,
               coalesce(rp.recorded_at, later.recorded_at) AS fixed_at,
               CASE WHEN rp.run_id IS NOT NULL THEN 'replay'
                    WHEN later.run_id IS NOT NULL THEN 'later run' END AS fixed_how
        FROM outcomes o
        JOIN deltas d ON d.run_id = o.run_id AND d.delta_id = o.delta_id
        LEFT JOIN LATERAL (
            SELECT rr.run_id, a.recorded_at FROM delta_outcomes a
            JOIN runs rr ON rr.replay_of = a.run_id AND a.recorded_at BETWEEN rr.started_at AND coalesce(rr.finished_at, now())
            WHERE a.run_id = o.run_id AND a.delta_id = o.delta_id AND a.status = 'applied' AND a.recorded_at > o.recorded_at
            ORDER BY a.recorded_at LIMIT 1
        ) rp ON true
        LEFT JOIN LATERAL (
            SELECT a.run_id, a.recorded_at FROM applied a
            WHERE a.started_at > o.started_at AND a.user_key = d.user_key AND a.target_side = d.target_side
              AND a.op = d.op
              AND ((d.pair_id IS NOT NULL AND a.pair_id = d.pair_id) OR (d.target_id IS NOT NULL AND a.target_id = d.target_id)
                   OR (d.op = 'create' AND a.source_id = d.source_id))
            ORDER BY a.started_at LIMIT 1
        ) later ON true
        WHERE o.status = 'failed'
    """,
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
