"""Derive the pairing key (C3) and the content hash (R1) of canonical events.

Both are 128-bit digests (two seeded 64-bit polars hashes, as 40 decimal digits) so that a snapshot can
keep them for private events without keeping the subject (R9). Python's hashlib would be stable across
libraries but costs ~2.5 s for the 2 million rows of a large run; polars' hash is stable within one polars
version, and polars is pinned. Should an upgrade change the digests, every pair looks changed on both
sides, the reconciler finds through its projection that nothing differs, and it only refreshes the stored
hashes (``ReconcileResult.pair_refresh``): no writes, no conflicts.
"""

from __future__ import annotations

import polars as pl

from transforms.schema import DERIVED_SCHEMA, EVENT_SCHEMA

_SEEDS = (0x5EED_CA15, 0x0DDB_A11C)
_SEP = "\x1f"


def digest(expr: pl.Expr) -> pl.Expr:
    """A 40-character digest of a string expression (null stays null)."""
    parts = [expr.hash(seed).cast(pl.String).str.zfill(20) for seed in _SEEDS]
    return pl.when(expr.is_not_null()).then(pl.concat_str(parts))


def clean_subject(expr: pl.Expr) -> pl.Expr:
    """C3: surrounding whitespace stripped, inner runs collapsed to one space, case kept."""
    return expr.str.replace_all(r"\s+", " ").str.strip_chars()


def _stamp(expr: pl.Expr) -> pl.Expr:
    return expr.dt.epoch("us").cast(pl.String)


def key_expr(subject: pl.Expr, is_all_day: pl.Expr, start: pl.Expr, end: pl.Expr) -> pl.Expr:
    """C3 key. Null when the subject is missing or blank, so such events never pair (null keys never join)."""
    subj = clean_subject(subject)
    raw = pl.concat_str(
        [subj, is_all_day.cast(pl.Int8).cast(pl.String), _stamp(start), _stamp(end)], separator=_SEP
    )
    return pl.when(subj.str.len_bytes() > 0).then(digest(raw))


def invitee_text(invitees: pl.Expr) -> pl.Expr:
    """Sorted ``email:response`` of the invitees with an address (C19 ignores the others)."""
    el = pl.element()
    return invitees.list.eval(
        pl.concat_str([el.struct.field("email"), el.struct.field("response").fill_null("none")], separator=":")
        .drop_nulls()
        .sort()
    ).list.join(",")


def content_hash_expr(
    subject: pl.Expr,
    start: pl.Expr,
    end: pl.Expr,
    description: pl.Expr,
    is_all_day: pl.Expr,
    is_private: pl.Expr,
    invitees: pl.Expr,
) -> pl.Expr:
    """R1: a digest of the synced fields only; never version or last_modified (Exchange bumps LastModified on reads)."""
    raw = pl.concat_str(
        [
            clean_subject(subject).fill_null(""),
            _stamp(start).fill_null(""),
            _stamp(end).fill_null(""),
            description.fill_null(""),
            is_all_day.fill_null(False).cast(pl.Int8).cast(pl.String),
            is_private.fill_null(False).cast(pl.Int8).cast(pl.String),
            invitee_text(invitees).fill_null(""),
        ],
        separator=_SEP,
    )
    return digest(raw)


def content_hash_of(df: pl.DataFrame | pl.LazyFrame) -> pl.Expr:
    """The content hash of a frame with the canonical column names."""
    return content_hash_expr(
        pl.col("subject"),
        pl.col("start"),
        pl.col("end"),
        pl.col("description"),
        pl.col("is_all_day"),
        pl.col("is_private"),
        pl.col("invitees"),
    )


def normalise(events: pl.DataFrame) -> pl.DataFrame:
    """EVENT_SCHEMA frame -> the same plus ``key`` and ``content_hash`` (DERIVED_SCHEMA).

    Values already present are kept: a frame re-read from a snapshot holds private events without their
    subject, and only the stored digests still describe them.
    """
    key = key_expr(pl.col("subject"), pl.col("is_all_day"), pl.col("start"), pl.col("end"))
    chash = content_hash_of(events)
    if "key" in events.columns:
        key = pl.coalesce(pl.col("key"), key)
    if "content_hash" in events.columns:
        chash = pl.coalesce(pl.col("content_hash"), chash)
    cols = [c for c in EVENT_SCHEMA if c in events.columns]
    return events.select(
        *[pl.col(c).cast(EVENT_SCHEMA[c]) for c in cols],
        key.cast(DERIVED_SCHEMA["key"]).alias("key"),
        chash.cast(DERIVED_SCHEMA["content_hash"]).alias("content_hash"),
    )
