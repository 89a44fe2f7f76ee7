"""Stage 7, ``plan_creations``: which unpaired pool events are copied to the other side (R5, R14/C16, C15, C18,
C19), and the notes about the ones that are not; ``create_work`` turns them into write rows for shaping."""

from __future__ import annotations

import polars as pl

from transforms.schema import Side
from transforms.stages.common import EM, SF, notes, other
from transforms.stages.frames import Creations, Run
from transforms.stages.ids import hash_id_column
from transforms.stages.positions import gather


def plan_creations(run: Run, rest: pl.DataFrame) -> Creations:
    """R5/C5, R14/C16, C15, C18, C19: an unpaired pool event (``rest``, from ``wait_for_groups``) is created on
    the other side when its key is not blocked (C4), its user's direction copies its side (R2), its filter passes
    it (R5), it waits for no group (C15), it is valid (C19) and, for email -> Salesforce, no required custom field
    blocks creation (C18). Each user's own copy of a shared meeting is created for that user (R14/C16)."""
    settings = run.settings
    wanted = (pl.col("filter_mode") != "updates_only") & pl.col("passes")
    creatable = ~pl.col("blocked") & pl.col("source_ok") & wanted
    candidates = rest.filter(creatable & ~pl.col("group_wait"))
    sf_blocked = (pl.col("side") == EM) & pl.lit(settings.sf_create_blocked is not None)
    skipped = [
        notes(candidates.filter(pl.col("invalid").is_not_null()), "skipped", pl.col("invalid"),
              pl.format("not copied: {} (C19); retried on later runs", pl.col("invalid"))),
        _filter_notes(rest.filter(~pl.col("blocked") & pl.col("source_ok") & ~wanted)),
        notes(rest.filter(creatable & pl.col("group_wait")), "skipped", "child_event",
              "group event: the designated organizer's sync writes the meeting; this copy links to it (C15)"),
        notes(candidates.filter(pl.col("invalid").is_null() & sf_blocked), "skipped", "required_field",
              f"Salesforce requires custom field {settings.sf_create_blocked} on Event; email -> Salesforce creation is off (C18)"),
    ]
    if settings.sf_create_blocked is not None:
        skipped.append(
            run.users.select("user_key", pl.lit("notice").alias("kind"), pl.lit(None, dtype=Side).alias("side"),
                             pl.lit(None, dtype=pl.String).alias("native_id"), pl.lit("required_field").alias("reason"),
                             pl.lit(f"Event.{settings.sf_create_blocked} is required in Salesforce: email -> Salesforce creation is skipped; "
                                    "updates, deletions and Salesforce -> email go on (C18)").alias("detail")).head(1)
            .with_columns(pl.lit(None, dtype=pl.String).alias("user_key"))
        )
    return Creations(sources=candidates.filter(pl.col("invalid").is_null() & ~sf_blocked), notes=skipped)


def _filter_notes(filtered: pl.DataFrame) -> pl.DataFrame:
    """R5: events a user's filter does not create are many and the same every run: one note per user."""
    return filtered.group_by("user_key").agg(
        pl.col("filter_mode").first(), pl.len().alias("n"),
        (pl.col("side") == SF).sum().alias("n_sf"), (pl.col("side") == EM).sum().alias("n_em"),
    ).select(
        "user_key",
        pl.lit("skipped").alias("kind"),
        pl.lit(None, dtype=Side).alias("side"),
        pl.lit(None, dtype=pl.String).alias("native_id"),
        pl.lit("filter").alias("reason"),
        pl.format("filter mode {} does not create {} unpaired events ({} on salesforce, {} on email) (R5)",
                  pl.col("filter_mode"), pl.col("n"), pl.col("n_sf"), pl.col("n_em")).alias("detail"),
    )


def create_work(run: Run, creations: Creations) -> pl.DataFrame:
    """One write row per creation: the source's times and body (a private source gives the busy copy, C10), and
    the new pair's id."""
    src = creations.sources
    work = src.hstack(gather(run.users, src["uid"], {"sf_user_id": "sf_user_id"})).select(
        pl.lit(None, dtype=pl.String).alias("pair_id"),
        "user_key",
        pl.lit(True).alias("is_new"),
        pl.lit(False).alias("linked"),
        pl.lit(False).alias("both_changed"),
        pl.col("side").alias("W"),
        pl.lit(None, dtype=pl.String).alias("win_why"),
        pl.lit(False).alias("regroup"),
        pl.lit("create").alias("kind"),
        other(pl.col("side")).alias("target_side"),
        pl.lit(None, dtype=pl.String).alias("target_id"),
        pl.lit(None, dtype=pl.String).alias("target_version"),
        pl.lit(None, dtype=pl.Boolean).alias("t_is_private"),
        pl.lit(None, dtype=pl.UInt64).alias("t_hash"),
        pl.col("native_id").alias("source_id"),
        pl.col("content_hash").alias("source_hash"),
        "start", "end", "is_all_day",
        pl.when(pl.col("is_private")).then(pl.lit("private")).otherwise(pl.lit("cross")).alias("body_mode"),
        pl.col("is_private").alias("b_is_private"),
        pl.lit(True).alias("writable"),
        pl.lit(None, dtype=pl.String).alias("block_reason"),
        pl.when(pl.col("is_private")).then(pl.col("side")).cast(Side).alias("private_origin"),
        pl.col("_u_mailbox").alias("mailbox"),
        "sf_user_id",
        pl.lit(None, dtype=pl.UInt32).alias("t_rid"),
        pl.col("rid").alias("b_rid"),
    )
    return work.with_columns(hash_id_column(work, ["user_key", "W", "source_id"], "pair").alias("pair_id"))
