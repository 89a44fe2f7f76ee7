"""Stage 11, ``finish``: the run's deltas with the mass-deletion guard applied (C9), the pairs to refresh, the
delta ids, and the notes, as one ReconcileResult."""

from __future__ import annotations

import polars as pl

from transforms.schema import DELTA_SCHEMA, NOTE_SCHEMA, PAIR_REFRESH_SCHEMA, Side, conform
from transforms.stages.frames import Run, Writes
from transforms.stages.ids import with_delta_ids

_NOTE_ORDER = ["user_key", "kind", "side", "native_id", "reason"]


def finish(run: Run, deltas: pl.DataFrame, refused: pl.DataFrame, sy: pl.DataFrame, writes: Writes,
           notes: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """C9, R7: (deltas, notes, pair_refresh). A refused user (``refused_users``) gets no delta, no note and no
    pair refresh, but one ``refused`` note naming the override. ``pair_refresh``: the settled pairs (``sy``) that
    changed but get no delta and no retriable C19 skip: their stored hashes are set to what the sides hold now, so
    the next run sees no change (a C6 one-way change is remembered, not reported again)."""
    deltas = deltas.join(refused, on="user_key", how="anti")
    touched = pl.concat([deltas.select("pair_id"), writes.invalid.select("pair_id")]).unique()
    pair_refresh = (
        sy.filter(~pl.col("is_new"))
        .join(touched, on="pair_id", how="anti")
        .join(refused, on="user_key", how="anti")
        .select("pair_id", pl.col("sf_content_hash").alias("sf_hash"), pl.col("em_content_hash").alias("email_hash"),
                pl.col("origin_new").alias("private_origin"))
    )
    pair_refresh = conform(pair_refresh, PAIR_REFRESH_SCHEMA).sort("pair_id")
    deltas = with_delta_ids(deltas, run.users["user_key"])
    note_frame = pl.concat([conform(n, NOTE_SCHEMA) for n in notes], how="vertical").join(refused, on="user_key", how="anti")
    note_frame = pl.concat([note_frame, conform(_refused_notes(refused), NOTE_SCHEMA)]).sort(_NOTE_ORDER, nulls_last=True)
    return conform(deltas, DELTA_SCHEMA), note_frame, pair_refresh


def _refused_notes(refused: pl.DataFrame) -> pl.DataFrame:
    """C9: one note per refused user, naming the override."""
    return refused.select(
        "user_key",
        pl.lit("refused").alias("kind"),
        pl.lit(None, dtype=Side).alias("side"),
        pl.lit(None, dtype=pl.String).alias("native_id"),
        pl.lit("mass_deletion").alias("reason"),
        pl.format(
            "MassDeletionRefused: {} of {} paired events would be deleted for {}; set allow_mass_delete for this user "
            "(or --allow-deletes) to proceed",
            pl.col("D"), pl.col("N"), pl.col("user_key"),
        ).alias("detail"),
    )
