"""Names and small expressions every stage of the planner uses: the two sides, notes, the C19 validity check."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from transforms.schema import INVITEE, MAX_EVENT_DAYS, Side

SF, EM = "salesforce", "email"
PFX = {SF: "sf_", EM: "em_"}
EMPTY_INVITEES = pl.lit([], dtype=pl.List(INVITEE))


def other(side: pl.Expr) -> pl.Expr:
    """The other side's name."""
    return pl.when(side == SF).then(pl.lit(EM)).when(side == EM).then(pl.lit(SF)).cast(Side)


def side_lit(name: str) -> pl.Expr:
    return pl.lit(name, dtype=Side)


def notes(df: pl.DataFrame, kind: str, reason: pl.Expr | str, detail: pl.Expr | str, side: pl.Expr | str = "side",
          native_id: str = "native_id") -> pl.DataFrame:
    """NOTE_SCHEMA rows, one per row of ``df``. A string names a column of ``df`` (side, native_id) or is a literal
    (reason, detail, or a side that is no column)."""
    def as_expr(v: pl.Expr | str) -> pl.Expr:
        return pl.col(v) if isinstance(v, str) and v in df.columns else (pl.lit(v) if isinstance(v, str) else v)

    return df.select(
        pl.col("user_key"),
        pl.lit(kind).alias("kind"),
        as_expr(side).cast(Side).alias("side"),
        pl.col(native_id).alias("native_id"),
        (pl.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
        (pl.lit(detail) if isinstance(detail, str) else detail).alias("detail"),
    )


def validity(start: pl.Expr, end: pl.Expr, subject_missing: pl.Expr) -> pl.Expr:
    """C19: the reason code an event cannot be written, or null."""
    return (
        pl.when(subject_missing).then(pl.lit("no_subject"))
        .when(end <= start).then(pl.lit("end_before_start"))
        .when(end - start > timedelta(days=MAX_EVENT_DAYS)).then(pl.lit("too_long_event"))
    )
