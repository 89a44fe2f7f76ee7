"""Addressing rows by position: the planner's speed devices, each kept because the benchmark shows it pays.

The planner works on a narrow frame of the events (ids, digests, flags, times) and addresses an event by its row
position, ``rid``; a user by theirs, ``uid``. The wide columns (subject, description, invitees) are gathered by
position only for the few rows a run writes (``Rows``).
"""

from __future__ import annotations

from typing import Callable

import polars as pl

from transforms.digest import combine

_ID_SEED, _ID_SEED2 = 0x1D5E_ED01, 0x1D5E_ED11
WIDE = ["subject", "description", "invitees", "organizer_email"]


def position(expr: pl.Expr, values: pl.Series) -> pl.Expr:
    """The position (UInt32) of ``expr``'s value in ``values`` (distinct, non-null strings), or null: a cast to the
    Enum of ``values``, ~2x cheaper than ``replace_strict`` over two million strings."""
    return expr.cast(pl.Enum(values), strict=False).to_physical().cast(pl.UInt32)


def gather(frame: pl.DataFrame, rid: pl.Series, cols: dict[str, str]) -> list[pl.Series]:
    """``frame``'s (narrow) columns at positions ``rid`` (null where rid is null), renamed {column: alias}.
    One select: the columns are gathered in parallel."""
    if len(cols) == 1:
        return [frame[c].gather(rid).alias(a) for c, a in cols.items()]
    return frame.select(pl.col(c).gather(rid).alias(a) for c, a in cols.items()).get_columns()


def id_hash(uid: pl.Expr, native_id: pl.Expr, seed: int = _ID_SEED) -> pl.Expr:
    """A transient 64-bit digest of (user position ``uid``, native id): joins on it are much cheaper than on two
    strings. Never stored; a match is confirmed by a second digest (``id_hashes``, ``lookup_rid``)."""
    return combine([uid, native_id], seed)


def id_hashes(uid: str, native_id: str) -> list[pl.Expr]:
    """``h`` and ``h2``: the two digests ``lookup_rid`` matches on."""
    return [id_hash(pl.col(uid), pl.col(native_id)).alias("h"), id_hash(pl.col(uid), pl.col(native_id), _ID_SEED2).alias("h2")]


def second_id_hash(frame: pl.DataFrame) -> pl.Series:
    """``h2`` of every row of ``frame`` (uid, native_id), by position."""
    return frame.select(id_hash(pl.col("uid"), pl.col("native_id"), _ID_SEED2)).to_series()


def raise_duplicates(df: pl.DataFrame, cols: list[str], what: str) -> None:
    """The exact (slow) check behind a failed cheap one: raise a ValueError naming a repeated id, if any."""
    dup = df.select(cols).drop_nulls().group_by(cols).len().filter(pl.col("len") > 1).sort(cols)
    if dup.height:
        first = dup.row(0, named=True)
        more = f" ({dup.height - 1} more repeated)" if dup.height > 1 else ""
        ids = ", ".join(f"{c}={first[c]!r}" for c in cols)
        raise ValueError(f"{what}: {ids} appears {first['len']} times{more}; each must be unique")


def lookup_rid(query: pl.DataFrame, table: pl.DataFrame, h2: pl.Series,
               exact: Callable[[], tuple[pl.DataFrame, pl.DataFrame]], what: tuple[str, str]) -> pl.Series:
    """``rid`` of each row of ``query`` (h, h2: a stored pair side) in ``table`` (rid, h: one side's events of synced
    users), aligned with ``query``; null when absent. ``h`` and ``h2`` are two independent digests of (user
    position, native id) (``id_hash``; ``h2`` of every event, by rid): the join is on ``h``, and a match stands
    only when ``h2`` agrees too (a 128-bit match). The frames carry no strings: ``exact()`` gives the same rows with
    user_key and native_id (table with rid), only needed when something repeats.

    Checked on the way, from the join itself: an event listed twice by its side that a pair refers to (a query
    matched twice), an event two pairs refer to (a rid matched twice), and two pairs referring to the same
    missing event (repeated unmatched ids). ``what``: (events, pair ids) for the messages. A digest collision
    falls back to joining the strings."""
    m = query.select("h").with_row_index("q").join(table, on="h", how="inner")
    m = m.filter(h2.gather(m["rid"]) == query["h2"].gather(m["q"]))
    matched = pl.zeros(query.height, pl.Boolean, eager=True).scatter(m["q"], True)
    unmatched_h = query["h"].filter(~matched)
    if (matched.sum() != m.height  # a query matched twice
            or pl.zeros(h2.len(), pl.Boolean, eager=True).scatter(m["rid"], True).sum() != m.height  # a rid twice
            or unmatched_h.n_unique() != unmatched_h.len()):
        q_ids, t_ids = exact()
        raise_duplicates(t_ids, ["user_key", "native_id"], what[0])
        raise_duplicates(q_ids, ["user_key", "native_id"], what[1])
        # a digest collision (never seen): join on the strings
        return q_ids.join(t_ids, on=["user_key", "native_id"], how="left", maintain_order="left")["rid"].alias("rid")
    return pl.repeat(None, query.height, dtype=pl.UInt32, eager=True).scatter(m["q"], m["rid"]).alias("rid")


class Rows:
    """The wide columns (``WIDE``: long strings, lists of structs) of the events a run may read, copied once.

    Gathering those straight from a many-chunk frame costs ~2-4 us a row in polars, so the rows needed are
    filtered out in one ordered pass into a single-chunk copy, and ``take`` gathers from that copy by position.
    """

    def __init__(self, frame: pl.DataFrame, *rids: pl.Series) -> None:
        mask = pl.zeros(frame.height, pl.Boolean, eager=True).scatter(
            pl.concat([r.cast(pl.UInt32) for r in rids]).drop_nulls(), True)
        self._mask = mask
        self._pos_of = (mask.cum_sum() - 1).cast(pl.UInt32)  # a kept row's position in the copy
        self._sub = frame.select(WIDE).filter(mask).rechunk()

    def take(self, cols: list[str], *rids: pl.Series) -> list[pl.DataFrame]:
        """``cols`` at the event positions of each of ``rids`` (null where the rid is null); every rid must be
        among those the copy was made for."""
        rid = pl.concat([r.cast(pl.UInt32) for r in rids])
        if not self._mask.gather(rid.drop_nulls()).all():
            raise AssertionError("Rows.take: a row outside the copy was asked for")
        # one gather for all (the columns side by side), then a zero-copy slice per rid series
        got = self._sub.select(pl.col(c).gather(self._pos_of.gather(rid)) for c in cols)
        starts = [0]
        for r in rids:
            starts.append(starts[-1] + r.len())
        return [got.slice(a, b - a) for a, b in zip(starts, starts[1:])]


def take(frame: pl.DataFrame, cols: list[str], *rids: pl.Series) -> list[pl.DataFrame]:
    """``frame[cols]`` at the positions of each of ``rids`` (null where the rid is null), for one use."""
    return Rows(frame, *rids).take(cols, *rids)
