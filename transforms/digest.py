"""Seeded 64-bit digests of several columns, and 128-bit ids as hex, all vectorised in polars.

A digest of fields f0..fn is ``h = hash(f0, s); h = h * MIX ^ hash(fi, s + i)`` with wrapping UInt64
arithmetic: each field hashed on its own (cheap, parallel) and folded in order, so swapping two fields or
moving a value from one field to the next changes the digest. Hashing a ``pl.struct`` of the same fields
gives the same guarantees but row-encodes every row first, which cost ~3x more for two million events.

Values are stable for the pinned polars version only (polars' hash is not a stable format): see
``transforms.normalise`` for what an upgrade that changes them costs.
"""

from __future__ import annotations

import polars as pl

# the 64-bit golden-ratio constant: odd, so multiplying by it is a bijection on UInt64
MIX = 0x9E37_79B9_7F4A_7C15
_MIX = pl.lit(MIX, dtype=pl.UInt64)


def combine(fields: list[pl.Expr], seed: int) -> pl.Expr:
    """The UInt64 digest of ``fields`` (in order) for ``seed``. A null field hashes to its own value, distinct
    from an empty string or False."""
    h: pl.Expr | None = None
    for i, field in enumerate(fields):
        x = field.hash(seed + i)
        h = x if h is None else (h * _MIX).xor(x)
    if h is None:
        raise ValueError("combine needs at least one field")
    return h


_HEX16 = pl.Series([f"{v:04x}" for v in range(1 << 16)], dtype=pl.String)


def hex64(h: pl.Expr) -> list[pl.Expr]:
    """A UInt64 as four 4-digit pieces (big-endian) for ``pl.concat_str``: table lookups, no Python per row."""
    return [pl.lit(_HEX16).gather(((h // (1 << (16 * k))) % (1 << 16)).cast(pl.UInt32)) for k in range(3, -1, -1)]


def id_digests(df: pl.DataFrame, fields: list[pl.Expr], seeds: tuple[int, int]) -> pl.DataFrame:
    """Two independent digests (``h0``, ``h1``) of ``fields`` per row of ``df``: a 128-bit id before formatting.
    Sorting by (h0, h1) orders rows as their ``hex128`` strings would sort."""
    return df.select(combine(fields, seed).alias(f"h{i}") for i, seed in enumerate(seeds))


def hex128(h0: pl.Expr, h1: pl.Expr) -> pl.Expr:
    """The 32 lower-case hex digits of (h0, h1)."""
    return pl.concat_str([*hex64(h0), *hex64(h1)])


def id128(df: pl.DataFrame, fields: list[pl.Expr], seeds: tuple[int, int]) -> pl.Series:
    """Deterministic 128-bit ids of ``fields`` per row of ``df``, as 32 lower-case hex digits. The digests are
    computed first (eager selects share no subexpressions), then formatted."""
    return id_digests(df, fields, seeds).select(hex128(pl.col("h0"), pl.col("h1")).alias("id")).to_series()
