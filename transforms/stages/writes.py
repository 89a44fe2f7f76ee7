"""Stage 10, ``decide_writes``: which shaped rows are written (C7: only what changes the target as it will read
back), which are skipped (direction, child event, C19) and what is reported (C19 cuts, conflicts R7/C6, one-way
changes C6); ``pair_deltas`` and ``write_deltas`` turn them into DELTA_SCHEMA rows."""

from __future__ import annotations

import polars as pl

from transforms.schema import DESCRIPTION_MAX, SUBJECT_MAX
from transforms.stages.common import EM, SF, notes, other, side_lit
from transforms.stages.frames import Writes


def decide_writes(shaped: pl.DataFrame, sy: pl.DataFrame) -> Writes:
    """C7, C6, C15, C19, R7: a row is written when it creates, or its projected hash differs from the target's
    (so a second run plans nothing), the target is writable (direction, not a child event) and valid (C19)."""
    needs = shaped.filter((pl.col("kind") == "create") | pl.col("target_hash").ne_missing(pl.col("t_hash")))
    blocked = needs.filter(~pl.col("writable"))
    invalid = needs.filter(pl.col("writable") & pl.col("invalid").is_not_null())
    writes = needs.filter(pl.col("writable") & pl.col("invalid").is_null())
    source = other(pl.col("target_side"))
    reported = [
        notes(blocked, "skipped", pl.col("block_reason"),
              pl.format("change on {} not copied to {} ({})", pl.col("W"), pl.col("target_side"), pl.col("block_reason")),
              side="W", native_id="source_id"),
        notes(invalid.filter(pl.col("kind") != "create"), "skipped", pl.col("invalid"),
              pl.format("not copied: {} (C19); retried on later runs", pl.col("invalid")), side=source, native_id="source_id"),
        notes(writes.filter(pl.col("subject_cut")), "truncated", "subject_truncated",
              f"subject cut to {SUBJECT_MAX} characters for Salesforce (C19)", side=source, native_id="source_id"),
        notes(writes.filter(pl.col("description_cut")), "truncated", "description_truncated",
              f"description cut to {DESCRIPTION_MAX} characters for Salesforce (C19)", side=source, native_id="source_id"),
        notes(writes.filter(pl.col("subject_altered")), "altered", "subject_altered",
              "subject written to the mailbox with ? for control characters a mailbox cannot store (C19)",
              side=source, native_id="source_id"),
        notes(writes.filter(pl.col("description_altered")), "altered", "description_altered",
              "description written to the mailbox with ? for control characters a mailbox cannot store (C19)",
              side=source, native_id="source_id"),
        _conflict_notes(needs, sy),
        _direction_notes(sy),
    ]
    return Writes(writes=writes, invalid=invalid, notes=reported)


def _conflict_notes(needs: pl.DataFrame, sy: pl.DataFrame) -> pl.DataFrame:
    """R7/C6: a pair whose two sides changed and that is written, with the winner and why."""
    conflict_rows = sy.join(needs.filter(pl.col("both_changed")).select("pair_id").unique(), on="pair_id", how="semi")
    return notes(
        conflict_rows.with_columns(pl.when(pl.col("W") == SF).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("native_id")),
        "conflict", pl.format("{}_wins", pl.col("W")),
        pl.format("both sides changed; {} wins ({}) (R7/C6)", pl.col("W"), pl.col("win_why")), side="W",
    )


def _direction_notes(sy: pl.DataFrame) -> pl.DataFrame:
    """C6: a change on the side that may not be copied is recorded (and remembered: its pair is refreshed)."""
    return notes(
        sy.filter(pl.col("W").is_null() & ~pl.col("linked")).with_columns(
            pl.when(pl.col("s2e")).then(side_lit(EM)).otherwise(side_lit(SF)).alias("side"),
            pl.when(pl.col("s2e")).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("native_id"),
        ),
        "skipped", "direction", "change on the side this user's direction does not copy; kept, not undone (C6)",
    )


def pair_deltas(sy: pl.DataFrame) -> pl.DataFrame:
    """R3, C15: one ``pair`` delta per new pair (by key, or a group copy linked by meeting uid)."""
    sf_won = pl.col("W") == SF
    return sy.filter(pl.col("is_new")).select(
        "user_key", "pair_id",
        pl.lit("pair").alias("op"),
        pl.when(sf_won).then(side_lit(EM)).otherwise(side_lit(SF)).alias("target_side"),
        pl.when(sf_won).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("target_id"),
        pl.when(sf_won).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("source_id"),
        pl.when(sf_won).then(pl.col("em_version")).otherwise(pl.col("sf_version")).alias("target_version"),
        pl.when(pl.col("linked")).then(pl.lit("linked_group_copy")).otherwise(pl.lit("same_key")).alias("reason"),
        pl.when(sf_won).then(pl.col("sf_content_hash")).otherwise(pl.col("em_content_hash")).alias("source_hash"),
        pl.when(sf_won).then(pl.col("em_content_hash")).otherwise(pl.col("sf_content_hash")).alias("target_hash"),
        pl.col("origin_new").alias("private_origin"),
        "linked",
        pl.col("_u_mailbox").alias("mailbox"),
    )


def write_deltas(writes: pl.DataFrame) -> pl.DataFrame:
    """The ``update`` and ``create`` deltas (R7, C7, R14/C16), with their payload and the reason they are written."""
    return writes.select(
        "user_key", "pair_id",
        pl.col("kind").alias("op"),
        "target_side", "target_id", "source_id", "target_version",
        pl.when(pl.col("kind") == "create").then(pl.lit("new_event"))
        .when(pl.col("is_new")).then(pl.lit("settle_new_pair"))
        .when(pl.col("both_changed")).then(pl.lit("conflict"))
        .when(pl.col("regroup")).then(pl.lit("synced_invitee_added"))  # R13/C11
        .otherwise(pl.format("changed_on_{}", pl.col("W")))
        .alias("reason"),
        "mailbox",
        pl.when(pl.col("target_side") == SF).then(pl.col("sf_user_id")).otherwise(pl.col("mailbox")).alias("owner_id"),
        "subject", "start", "end", "is_all_day", "description", "is_private", "invitees", "who_ids",
        "source_hash", "target_hash", "private_origin",
        pl.lit(False).alias("linked"),
    )
