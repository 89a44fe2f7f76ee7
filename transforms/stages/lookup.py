"""Stage 2, ``look_up_pairs``: each stored pair's two events, found by id (R3: a pair is kept by ids, not by key),
and the pairs whose user switched mailbox (C17)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import polars as pl

from transforms.schema import PAIR_SCHEMA, conform
from transforms.stages.common import EM, SF
from transforms.stages.frames import Run, StoredPairs
from transforms.stages.positions import gather, id_hash, id_hashes, lookup_rid, position, second_id_hash

_USER_COLUMNS = {"mailbox": "_u_mailbox", "s2e": "s2e", "e2s": "e2s", "allow_mass_delete": "allow_mass_delete",
                 "sf_user_id": "sf_user_id"}


def look_up_pairs(run: Run, pairs: pl.DataFrame) -> StoredPairs:
    """R3, C17: the stored pairs of synced users with their events' positions (null: the event is gone), whether
    each side is in the window, its content hash now; the pairs of a previous mailbox apart.

    A native id belongs to at most one pair, and a side lists an event once (checked by the lookups for the
    events pairs refer to, and in the pool for the others). A violation is corrupt state or a connector bug,
    and the run stops rather than guess (ValueError naming the id)."""
    u = run.users
    p = conform(pairs, PAIR_SCHEMA)
    p = p.hstack([p.select(position(pl.col("user_key"), u["user_key"]).alias("uid")).to_series()])
    if p["uid"].null_count():
        p = p.filter(pl.col("uid").is_not_null())  # pairs of synced users only
    p = p.hstack(gather(u, p["uid"], _USER_COLUMNS))
    switched = pl.col("mailbox").is_not_null() & pl.col("_u_mailbox").is_not_null() & (pl.col("mailbox") != pl.col("_u_mailbox"))
    moved, active = (p.filter(switched), p.filter(~switched)) if p.select(switched.any()).item() else (p.clear(), p)
    h2 = second_id_hash(run.narrow)
    # the two sides' lookups side by side: independent, mostly single-threaded in polars (steady A/B against main: 1.05x without, 1.03x with)
    with ThreadPoolExecutor(max_workers=2) as ex:
        sf_rid, em_rid = ex.map(lambda side, id_col: _find(run, active, side, id_col, h2), (SF, EM), ("sf_id", "email_id"))
    nw = run.narrow
    active = active.hstack([
        sf_rid, em_rid,
        *gather(nw, sf_rid, {"in_window": "sf_in", "content_hash": "sf_now", "is_child": "sf_child"}),
        *gather(nw, em_rid, {"in_window": "em_in", "content_hash": "em_now"}),
    ]).with_columns(pl.col("sf_child").fill_null(False))
    return StoredPairs(active=active, moved=moved)


def _find(run: Run, active: pl.DataFrame, side: str, id_col: str, h2: pl.Series) -> pl.Series:
    """``{sf,em}_rid``: the position of each active pair's ``side`` event (null when gone or without an id)."""
    with_id = active.filter(pl.col(id_col).is_not_null()) if active[id_col].null_count() else active
    found = lookup_rid(with_id.select(*id_hashes("uid", id_col)), _side_table(run, side), h2,
                       _exact(run, active, side, id_col), (f"{side} events", f"stored pairs' {id_col}"))
    if with_id.height != active.height:
        found = pl.repeat(None, active.height, dtype=pl.UInt32, eager=True).scatter(active[id_col].is_not_null().arg_true(), found)
    return found.alias("sf_rid" if side == SF else "em_rid")


def _of_side(run: Run, side: str) -> pl.Expr:
    return (pl.col("side") == side) if run.all_synced else ((pl.col("side") == side) & run.synced_event)


def _side_table(run: Run, side: str) -> pl.DataFrame:
    """(rid, h) of ``side``'s events of synced users: what a pair's id is looked up in."""
    return run.narrow.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("rid"), id_hash(pl.col("uid"), pl.col("native_id")).alias("h"),
        _of_side(run, side).alias("_k"),
    ).filter("_k").drop("_k")


def _exact(run: Run, active: pl.DataFrame, side: str, id_col: str) -> Callable[[], tuple[pl.DataFrame, pl.DataFrame]]:
    """The rows of a side's lookup with their strings (for messages and the collision fallback)."""
    return lambda: (
        active.filter(pl.col(id_col).is_not_null()).select("user_key", pl.col(id_col).alias("native_id")),
        run.narrow.with_row_index("rid").filter(_of_side(run, side)).select("user_key", "native_id", "rid"),
    )
