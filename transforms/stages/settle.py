"""Stage 8, ``settle_changes``: for every pair that changed and every new pair, the side it is settled to (the
winner, R7, C6, C7), the private origin (R9/C10), and ``update_work``: one write row per side to update."""

from __future__ import annotations

import polars as pl

from transforms.schema import Side
from transforms.stages.common import EM, PFX, SF, side_lit
from transforms.stages.frames import Run, Settled
from transforms.stages.ids import hash_id_column
from transforms.stages.positions import gather

_SETTLE_COLUMNS = ["pair_id", "user_key", "sf_id", "email_id", "sf_hash", "email_hash", "private_origin", "linked",
                   "sf_changed", "em_changed", "s2e", "e2s", "_u_mailbox", "sf_user_id", "sf_rid", "em_rid", "is_new", "regroup"]
_SIDE_COLUMNS = ["content_hash", "last_modified", "is_private", "is_child", "version", "start", "end", "is_all_day"]
_EPOCH = pl.datetime(1970, 1, 1, time_zone="UTC")


def settle_changes(run: Run, settled: Settled, key_pairs: pl.DataFrame) -> pl.DataFrame:
    """R7, C6, C7, C10, C15: the pairs to settle (stored pairs with action sync; new pairs, with their pair_id, both
    sides counted as changed so that C7 settles them like a conflict), each side's columns, and

    - ``W``, the winner: null for a linked copy (C15: the organizer's pair keeps it) or when the one-way
      direction's source did not change (C6); else the one-way source (C6), the changed side, or with both
      changed the newer ``last_modified``, Salesforce winning ties (R7);
    - ``both_changed`` (a conflict to report, R7/C6; not for new pairs, C7) and ``win_why``;
    - ``origin_new``, the private origin (C10): kept while the origin stays private; else the only private side.
    """
    stored = settled.acting.filter(pl.col("action") == "sync").with_columns(
        pl.col("linked").fill_null(False), pl.lit(False).alias("is_new")
    ).select(_SETTLE_COLUMNS)
    new = key_pairs.with_columns(
        pl.lit(True).alias("is_new"),
        pl.lit(False).alias("regroup"),
        pl.col("sf_is_child").fill_null(False).alias("linked"),
        pl.lit(True).alias("sf_changed"),
        pl.lit(True).alias("em_changed"),
        pl.lit(None, dtype=Side).alias("private_origin"),
        pl.lit(None, dtype=pl.UInt64).alias("sf_hash"),
        pl.lit(None, dtype=pl.UInt64).alias("email_hash"),
    )
    new = new.with_columns(hash_id_column(new, ["user_key", "sf_id", "email_id"], "pair").alias("pair_id"))
    sy = pl.concat([stored, new.select(_SETTLE_COLUMNS)], how="vertical_relaxed")
    sy = sy.hstack([
        *gather(run.narrow, sy["sf_rid"], {c: "sf_" + c for c in _SIDE_COLUMNS}),
        *gather(run.narrow, sy["em_rid"], {c: "em_" + c for c in _SIDE_COLUMNS}),
    ])
    return sy.with_columns(_winner().alias("W"), (pl.col("sf_changed") & pl.col("em_changed") & ~pl.col("is_new")).alias("both_changed"),
                           _why().alias("win_why")).with_columns(_private_origin().alias("origin_new"))


def _one_way_source() -> pl.Expr:
    return pl.when(pl.col("s2e") & ~pl.col("e2s")).then(side_lit(SF)).when(pl.col("e2s") & ~pl.col("s2e")).then(side_lit(EM))


def _winner() -> pl.Expr:
    """R7, C6, C15: the side a pair is settled to (see ``settle_changes``)."""
    newer = pl.when(pl.col("em_last_modified").fill_null(_EPOCH) > pl.col("sf_last_modified").fill_null(_EPOCH)).then(side_lit(EM)).otherwise(side_lit(SF))
    one_way = _one_way_source()
    source_changed = pl.when(one_way == SF).then(pl.col("sf_changed")).otherwise(pl.col("em_changed"))
    return (
        pl.when(pl.col("linked")).then(pl.lit(None, dtype=Side))  # C15: linked copies are kept by the organizer's pair
        .when(one_way.is_not_null()).then(pl.when(source_changed).then(one_way))  # C6
        .when(pl.col("sf_changed") & pl.col("em_changed")).then(newer)
        .when(pl.col("sf_changed")).then(side_lit(SF))
        .otherwise(side_lit(EM))
    )


def _why() -> pl.Expr:
    return (
        pl.when(_one_way_source().is_not_null()).then(pl.lit("source of the one-way direction"))
        .when(pl.col("em_last_modified") > pl.col("sf_last_modified")).then(pl.lit("newer last_modified"))
        .when(pl.col("em_last_modified") == pl.col("sf_last_modified")).then(pl.lit("same last_modified: Salesforce wins ties"))
        .otherwise(pl.lit("newer last_modified"))
    )


def _private_origin() -> pl.Expr:
    """R9/C10: the side a private pair came from, kept while that side stays private."""
    origin = pl.col("private_origin")
    origin_private = pl.when(origin == SF).then(pl.col("sf_is_private")).otherwise(pl.col("em_is_private"))
    return (
        pl.when(origin.is_not_null()).then(pl.when(origin_private.fill_null(False)).then(origin))
        .when(pl.col("sf_is_private") & ~pl.col("em_is_private")).then(side_lit(SF))
        .when(pl.col("em_is_private") & ~pl.col("sf_is_private")).then(side_lit(EM))
        .cast(Side)
    )


def update_work(sy: pl.DataFrame) -> list[pl.DataFrame]:
    """R7, C6, C10, C15: per target side, one update row per settled pair the winner's content must reach, with its
    ``body_mode``: ``own`` (the target keeps its body: it is the private origin, or both are private, or it won),
    ``private`` (the busy copy of a private origin, C10) or ``cross`` (the winner's body). ``writable``: the
    direction allows writing the target, which is no Salesforce child event (C15)."""
    parts = []
    origin_old = pl.col("private_origin")
    for x, y in ((SF, EM), (EM, SF)):
        t, o = PFX[x], PFX[y]
        mode = (
            pl.when(pl.col("origin_new").is_not_null()).then(pl.when(pl.col("origin_new") == x).then(pl.lit("own")).otherwise(pl.lit("private")))
            .when(origin_old.is_not_null()).then(pl.when(origin_old == x).then(pl.lit("own")).otherwise(pl.lit("cross")))
            .when(pl.col("sf_is_private") & pl.col("em_is_private")).then(pl.lit("own"))  # C10: both private keep their own
            .when(pl.col("W") == x).then(pl.lit("own"))
            .otherwise(pl.lit("cross"))
        )
        times = [pl.when(pl.col("W") == SF).then(pl.col("sf_" + c)).otherwise(pl.col("em_" + c)).alias(c) for c in ("start", "end", "is_all_day")]
        writable = (pl.col("e2s") & ~pl.col("sf_is_child").fill_null(False)) if x == SF else pl.col("s2e")
        parts.append(
            # a target that won and keeps its own body would be written what it already holds (its own
            # times and body: the projected hash is its hash): no row, no shaping (a third of the updates)
            sy.filter(pl.col("W").is_not_null() & ~((mode == "own") & (pl.col("W") == x))).select(
                "pair_id", "user_key", "is_new", "linked", "both_changed", "W", "win_why", "regroup",
                pl.lit("update").alias("kind"),
                side_lit(x).alias("target_side"),
                pl.col("sf_id" if x == SF else "email_id").alias("target_id"),
                pl.col(t + "version").alias("target_version"),
                pl.col(t + "is_private").alias("t_is_private"),
                pl.col(t + "content_hash").alias("t_hash"),
                pl.col("sf_id" if y == SF else "email_id").alias("source_id"),
                pl.col(o + "content_hash").alias("source_hash"),
                *times,
                mode.alias("body_mode"),
                pl.col(o + "is_private").alias("b_is_private"),
                writable.alias("writable"),
                pl.when(pl.lit(x == SF) & pl.col("sf_is_child").fill_null(False)).then(pl.lit("child_event")).otherwise(pl.lit("direction")).alias("block_reason"),
                pl.col("origin_new").alias("private_origin"),
                pl.col("_u_mailbox").alias("mailbox"),
                "sf_user_id",
                pl.col("sf_rid" if x == SF else "em_rid").alias("t_rid"),
                pl.col("sf_rid" if y == SF else "em_rid").alias("b_rid"),
            )
        )
    return parts
