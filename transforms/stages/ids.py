"""Deterministic ids: new pairs' pair_id and every delta's delta_id (and the deltas' order)."""

from __future__ import annotations

import polars as pl

from transforms.digest import hex128, id128, id_digests
from transforms.stages.positions import position

_ID_SEEDS = (0x1DC0_FFEE_0001, 0x1DC0_FFEE_0101)


def hash_id_column(df: pl.DataFrame, cols: list[str], prefix: str) -> pl.Series:
    """Deterministic 128-bit ids (32 hex digits) of ``prefix`` + ``cols`` per row: two independent seeded
    digests of the same fields (``transforms.digest.id128``). Stable across processes and machines for the
    pinned polars version (as the digests of normalise); vectorised, so free of the GIL (sha1 in Python cost
    ~0.2 s a large run). Replay compares ids recomputed by the same code version; a polars upgrade that
    changed the hash would change them, and the pinned ids in tests/transforms/test_reconcile.py would
    say so. Nulls and empty strings give different ids. Collisions are checked by the callers."""
    return id128(df, _id_fields(cols, prefix), _ID_SEEDS)


def _id_fields(cols: list[str], prefix: str) -> list[pl.Expr]:
    return [pl.lit(prefix), *[pl.col(c).cast(pl.String) for c in cols]]


def check_unique_ids(ids: pl.Series, what: str) -> None:
    """Raise a clear error when generated ids repeat (a 128-bit collision, or rows that are not distinct)."""
    if ids.n_unique() != ids.len():
        dup = ids.filter(ids.is_duplicated()).head(1).item()
        raise ValueError(f"{what}: generated id {dup} is not unique; the rows it identifies repeat or the id hash collided")


def with_delta_ids(deltas: pl.DataFrame, user_keys: pl.Series) -> pl.DataFrame:
    """Each delta's ``delta_id`` (a digest of what it does), the deltas sorted by (user, op, delta_id).

    Sorted on the digests and the user's rank among ``user_keys``: they order as the hex ids and the user_keys
    do, and sort cheaper than 32-digit strings."""
    dig = id_digests(deltas, _id_fields(["user_key", "op", "target_side", "pair_id", "source_id", "target_id"], "delta"), _ID_SEEDS)
    rank = (user_keys.rank("ordinal") - 1).cast(pl.UInt32)
    deltas = deltas.hstack(dig).with_columns(
        rank.gather(deltas.select(position(pl.col("user_key"), user_keys)).to_series()).alias("_rank")
    ).sort(["_rank", "op", "h0", "h1"])
    deltas = deltas.with_columns(hex128(pl.col("h0"), pl.col("h1")).alias("delta_id")).drop("h0", "h1", "_rank")
    if dig["h0"].n_unique() != dig.height:  # (a repeat of half the digest only is no repeat: check the ids)
        check_unique_ids(deltas["delta_id"], "deltas")
    return deltas
