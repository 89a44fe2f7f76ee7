"""Derive the pairing key (C3) and the content hash (R1) of canonical events.

Both are 64-bit digests (UInt64, ``transforms.digest.combine`` of the fields) so that a snapshot can keep them
for private events without keeping the subject (R9). 64 bits suffice: a key is compared within one user's
few hundred events and a content hash with one stored hash. Python's hashlib would be stable across
libraries but costs ~2.5 s for the 2 million rows of a large run; polars' hash is stable within one polars
version, and polars is pinned. Should an upgrade change the digests, every pair looks changed on both
sides, the reconciler finds through its projection that nothing differs, and it only refreshes the stored
hashes (``ReconcileResult.pair_refresh``): no writes, no conflicts.
"""

from __future__ import annotations

import polars as pl

from transforms.digest import MIX, combine
from transforms.schema import DERIVED_SCHEMA, EVENT_SCHEMA

_KEY_SEED = 0x5EED_CA15
_CONTENT_SEED = 0x0DDB_A11C
_INVITEE_SEED = 0x1A7E_5EED


def clean_subject(expr: pl.Expr) -> pl.Expr:
    """C3: surrounding whitespace stripped, inner runs collapsed to one space, case kept."""
    # same result as replacing r"\s+" but 3x faster: only runs and non-space whitespace need rewriting
    return expr.str.replace_all(r"\s{2,}|[^\S ]", " ").str.strip_chars()


# Unicode White_Space (what the regex class \s matches) other than the plain space, a run of two spaces, or a
# leading or trailing space: a subject with none of these is already clean
_DIRTY = r"[\t-\r\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]|  |^ | $"


def clean_subject_series(subject: pl.Series) -> pl.Series:
    """``clean_subject`` of a Series, rewriting only the subjects that need it (most need nothing). Cheap tests
    first (a control character \\t-\\r, any non-ASCII character, two spaces, a space at either end: each a fast
    scan), then the exact class (``_DIRTY``) on the few they flag, then the rewrite of the dirty ones."""
    col = subject.name
    s = pl.col(col)
    maybe = subject.to_frame().select(
        (s.str.contains(r"[\t-\r]") | (s.str.len_bytes() != s.str.len_chars()) | s.str.contains("  ", literal=True)
         | s.str.starts_with(" ") | s.str.ends_with(" ")).fill_null(False)
    ).to_series()
    if not maybe.any():
        return subject
    idx = maybe.arg_true()
    cand = subject.gather(idx)
    dirty = cand.to_frame().select(s.str.contains(_DIRTY).fill_null(False)).to_series()
    if not dirty.any():
        return subject
    idx, cand = idx.filter(dirty), cand.filter(dirty)
    fixed = cand.to_frame().select(clean_subject(s)).to_series()
    return subject.scatter(idx, fixed)


def key_expr(subject: pl.Expr, is_all_day: pl.Expr, start: pl.Expr, end: pl.Expr, *, cleaned: bool = False) -> pl.Expr:
    """C3 key. Null when the subject is missing or blank, so such events never pair (null keys never join)."""
    subj = subject if cleaned else clean_subject(subject)
    return pl.when(subj.str.len_bytes() > 0).then(combine([subj, is_all_day.fill_null(False), start, end], _KEY_SEED))


def invitee_digest(invitees: pl.Expr) -> pl.Expr:
    """Order-independent digest of the invitees' (email, response): a wrapping sum of per-invitee hashes.
    Invitees without an address are ignored (C19); a missing response counts as "none"."""
    el = pl.element().struct
    one = (el.field("email").hash(_INVITEE_SEED) * pl.lit(MIX, dtype=pl.UInt64)).xor(
        el.field("response").fill_null("none").hash(_INVITEE_SEED + 1))
    return invitees.list.eval(one.filter(el.field("email").is_not_null())).list.sum().fill_null(0)


def content_hash_expr(
    subject: pl.Expr,
    start: pl.Expr,
    end: pl.Expr,
    description: pl.Expr,
    is_all_day: pl.Expr,
    is_private: pl.Expr,
    invitees: pl.Expr,
    *,
    cleaned: bool = False,
) -> pl.Expr:
    """R1: a digest of the synced fields only; never version or last_modified (Exchange bumps LastModified on reads)."""
    subj = subject if cleaned else clean_subject(subject)
    return combine(
        [
            subj.fill_null(""),
            start,
            end,
            description.fill_null(""),
            is_all_day.fill_null(False),
            is_private.fill_null(False),
            invitee_digest(invitees),
        ],
        _CONTENT_SEED,
    )


def normalise(events: pl.DataFrame) -> pl.DataFrame:
    """EVENT_SCHEMA frame -> the same plus ``key`` and ``content_hash`` (DERIVED_SCHEMA, UInt64 digests).

    Values already present are kept: a frame re-read from a snapshot holds private events without their
    subject, and only the stored digests still describe them.
    """
    subj = pl.col("_clean")
    key = key_expr(subj, pl.col("is_all_day"), pl.col("start"), pl.col("end"), cleaned=True)
    chash = content_hash_expr(
        subj, pl.col("start"), pl.col("end"), pl.col("description"), pl.col("is_all_day"), pl.col("is_private"),
        pl.col("invitees"), cleaned=True,
    )
    # a frame normalised before (the pipeline normalises at snapshot time) keeps its digests as they are:
    # coalescing complete columns would compute ~2 million digests only to throw them away
    done = {c: c in events.columns and events[c].null_count() == 0 for c in DERIVED_SCHEMA}
    # a column with some values given: the computed digests fill its gaps
    partial = {c: c in events.columns and not done[c] and events[c].null_count() < events.height for c in DERIVED_SCHEMA}
    given = {c: pl.col(c).cast(DERIVED_SCHEMA[c]) for c in DERIVED_SCHEMA}
    if done["key"]:
        key = given["key"]
    elif partial["key"]:
        key = pl.coalesce(given["key"], key)
    if done["content_hash"]:
        chash = given["content_hash"]
    elif partial["content_hash"]:
        chash = pl.coalesce(given["content_hash"], chash)
    cols = [c for c in EVENT_SCHEMA if c in events.columns]
    if not all(done.values()):
        events = events.with_columns(clean_subject_series(events["subject"]).alias("_clean"))
    return events.select(
        *[pl.col(c).cast(EVENT_SCHEMA[c]) for c in cols],
        key.alias("key"),
        chash.alias("content_hash"),
    )


# --- version-1 digests (stores written before transforms.digest): only to translate stored pair hashes -------


def _legacy_content_hash(events: pl.DataFrame) -> pl.Series:
    """The content hash as calsync computed it before store schema 2 (a polars hash of a struct of the fields)."""
    el = pl.element().struct
    one = pl.struct(el.field("email").alias("e"), el.field("response").fill_null("none").alias("r")).hash(_INVITEE_SEED)
    inv = pl.col("invitees").list.eval(one.filter(el.field("email").is_not_null())).list.sum().fill_null(0)
    fields = [
        clean_subject(pl.col("subject")).fill_null("").alias("s"), pl.col("start").alias("b"), pl.col("end").alias("e"),
        pl.col("description").fill_null("").alias("d"), pl.col("is_all_day").fill_null(False).alias("a"),
        pl.col("is_private").fill_null(False).alias("p"), inv.alias("i"),
    ]
    return events.select(pl.struct(fields).hash(_CONTENT_SEED)).to_series()


def translate_legacy_hashes(pairs: pl.DataFrame, events: pl.DataFrame, legacy: pl.Series) -> tuple[pl.DataFrame, pl.Series]:
    """Pairs whose stored hashes are version-1 digests (ids in ``legacy``), translated with the events just read
    (normalised, every field present): a side whose old digest still matches its stored hash is unchanged, so
    its stored hash becomes its new digest; a side that changed keeps its old digest, which no new digest
    equals, so the reconcile sees the change as before. Returns the pairs and the ids translated: those whose
    every side was read (the others wait for a run that reads them)."""
    if legacy.is_empty() or pairs.is_empty():
        return pairs, legacy.clear()
    now = events.select("side", "user_key", "native_id", "content_hash").with_columns(
        _legacy_content_hash(events).alias("old")
    ).unique(subset=["side", "user_key", "native_id"], keep="first")
    out = pairs.with_columns(pl.col("pair_id").is_in(legacy.implode()).alias("_legacy"))
    for side, id_col, hash_col in (("salesforce", "sf_id", "sf_hash"), ("email", "email_id", "email_hash")):
        side_now = now.filter(pl.col("side") == side).select(
            "user_key", pl.col("native_id").alias(id_col), pl.col("content_hash").alias("_new"), pl.col("old").alias("_old"),
            pl.lit(True).alias("_read"),
        )
        out = out.join(side_now, on=["user_key", id_col], how="left", maintain_order="left").with_columns(
            pl.when(pl.col("_legacy") & (pl.col("_old") == pl.col(hash_col))).then(pl.col("_new")).otherwise(pl.col(hash_col)).alias(hash_col),
            (pl.col("_read").fill_null(False) | pl.col(id_col).is_null()).alias(f"_read_{side}"),
        ).drop("_new", "_old", "_read")
    done = out.filter(pl.col("_legacy") & pl.col("_read_salesforce") & pl.col("_read_email"))["pair_id"]
    return out.select(pairs.columns), done
