"""Stage 4, ``settle_deletions``: what each stored pair does this run, decided by one table (C2, R6, R8, C8,
C15), the unpair and delete deltas that follow (R8, C17), and the mass-deletion guard (C9).

The decision table, per pair (the survivor is the side still present):

| Salesforce side | email side | condition                                   | action              | delta  |
| --------------- | ---------- | ------------------------------------------- | ------------------- | ------ |
| present         | present    | neither in the window (C2)                  | keep                |        |
| present         | present    | a side changed (R7)                         | sync                | (later stages) |
| present         | present    | otherwise                                   | keep                |        |
| gone            | gone       |                                             | gone                | unpair |
| one gone        |            | survivor outside the window (R6)            | keep                |        |
| one gone        |            | the pair is a linked group copy (C15)       | unlink              | unpair |
| one gone        |            | the survivor changed (C8: the change wins)  | release_changed     | unpair |
| one gone        |            | the direction may delete the survivor (R8)  | delete              | delete |
| one gone        |            | otherwise (C8: one-way source stays)        | release_direction   | unpair |

A released survivor is unpaired again: it joins the pool and may be copied anew (``build_pool``). A Salesforce
child event is never deleted (C15: Salesforce forbids it); a pair whose user switched mailbox is unpaired (C17).
"""

from __future__ import annotations

import polars as pl

from transforms.schema import DELTA_SCHEMA, conform
from transforms.stages.common import EM, SF, other, side_lit
from transforms.stages.frames import Run, Settled, StoredPairs
from transforms.stages.positions import position

_ACTION = (
    pl.when(pl.col("sf_in").is_null() & pl.col("em_in").is_null()).then(pl.lit("gone"))
    .when(pl.col("sf_in").is_not_null() & pl.col("em_in").is_not_null())
    .then(
        pl.when(~(pl.col("sf_in") | pl.col("em_in"))).then(pl.lit("keep"))  # C2
        .when(pl.col("sf_changed") | pl.col("em_changed")).then(pl.lit("sync"))
        .otherwise(pl.lit("keep"))
    )
    .when(~pl.when(pl.col("sf_in").is_not_null()).then(pl.col("sf_in")).otherwise(pl.col("em_in"))).then(pl.lit("keep"))  # R6
    .when(pl.col("linked").fill_null(False)).then(pl.lit("unlink"))  # C15
    .when(pl.when(pl.col("sf_in").is_not_null()).then(pl.col("sf_changed")).otherwise(pl.col("em_changed")))
    .then(pl.lit("release_changed"))  # C8: the change wins
    .when(pl.when(pl.col("sf_in").is_not_null()).then(pl.col("e2s") & ~pl.col("sf_child")).otherwise(pl.col("s2e")))
    .then(pl.lit("delete"))  # R8, as the direction allows
    .otherwise(pl.lit("release_direction"))  # C8: one-way source stays authoritative
)


def settle_deletions(run: Run, stored: StoredPairs) -> Settled:
    """R6, R8, C2, C8, C15, C17: each stored pair's action (the table above) and the unpair and delete deltas."""
    st = stored.active
    sf_here, em_here = pl.col("sf_in").is_not_null(), pl.col("em_in").is_not_null()
    # most pairs have both sides, unchanged or out of the window (C2): "keep", decided by one cheap test; the
    # table runs on the others only
    quiet = sf_here & em_here & (~(pl.col("sf_in") | pl.col("em_in")) | ~(pl.col("sf_changed") | pl.col("em_changed")))
    acting = st.filter(~quiet).with_columns(
        pl.when(sf_here).then(side_lit(SF)).otherwise(side_lit(EM)).alias("survivor"), _ACTION.alias("action"),
    ).filter(pl.col("action") != "keep")
    nw = run.narrow
    acting = acting.hstack([nw["version"].gather(acting["sf_rid"]).alias("sf_version"),
                            nw["version"].gather(acting["em_rid"]).alias("em_version")])
    released = acting.filter(pl.col("action").is_in(["release_changed", "release_direction"])).select("pair_id", "sf_rid", "em_rid")
    # the events still bound to a pair: every stored pair's sides but those of released pairs (a rid belongs to
    # one pair at most)
    bound = (
        pl.zeros(nw.height, pl.Boolean, eager=True)
        .scatter(pl.concat([st["sf_rid"], st["em_rid"]]).drop_nulls(), True)
        .scatter(pl.concat([released["sf_rid"], released["em_rid"]]).drop_nulls(), False)
    )
    return Settled(acting=acting, released=released, bound=bound,
                   deltas=pl.concat([conform(_unpairs(stored.moved, acting), DELTA_SCHEMA), conform(_deletes(acting), DELTA_SCHEMA)]))


def _unpairs(moved: pl.DataFrame, acting: pl.DataFrame) -> pl.DataFrame:
    """Unpair deltas: mailbox switch (C17), both sides gone, released survivors (C8), linked copies that lost
    a side (C15)."""
    gone, survivor_sf = pl.col("action") == "gone", pl.col("survivor") == SF
    return pl.concat([
        moved.select("user_key", "pair_id", side_lit(EM).alias("target_side"), pl.col("email_id").alias("target_id"),
                     pl.col("sf_id").alias("source_id"), pl.lit("mailbox_changed").alias("reason"), "mailbox"),
        acting.filter(pl.col("action").is_in(["gone", "unlink", "release_changed", "release_direction"])).select(
            "user_key",
            "pair_id",
            pl.when(gone).then(side_lit(SF)).otherwise(other(pl.col("survivor"))).alias("target_side"),
            pl.when(gone).then(pl.col("sf_id")).when(survivor_sf).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("target_id"),
            pl.when(gone).then(pl.col("email_id")).when(survivor_sf).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("source_id"),
            pl.when(gone).then(pl.lit("deleted_on_both_sides"))
            .when(pl.col("action") == "unlink").then(pl.lit("linked_side_deleted"))
            .when(pl.col("action") == "release_changed").then(pl.lit("survivor_changed"))
            .when(survivor_sf).then(pl.when(pl.col("sf_child")).then(pl.lit("child_event")).otherwise(pl.lit("direction")))
            .otherwise(pl.lit("direction"))
            .alias("reason"),
            pl.col("_u_mailbox").alias("mailbox"),
        ),
    ]).with_columns(pl.lit("unpair").alias("op"))


def _deletes(acting: pl.DataFrame) -> pl.DataFrame:
    """R8: delete the survivor of a pair whose other side is gone."""
    sf = pl.col("survivor") == SF
    return acting.filter(pl.col("action") == "delete").select(
        "user_key",
        "pair_id",
        pl.lit("delete").alias("op"),
        pl.col("survivor").alias("target_side"),
        pl.when(sf).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("target_id"),
        pl.when(sf).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("source_id"),
        pl.when(sf).then(pl.col("sf_version")).otherwise(pl.col("em_version")).alias("target_version"),
        pl.when(sf).then(pl.lit("deleted_on_email")).otherwise(pl.lit("deleted_on_salesforce")).alias("reason"),
        pl.col("_u_mailbox").alias("mailbox"),
        "private_origin",
    )


def refused_users(run: Run, stored: StoredPairs, deltas: pl.DataFrame) -> pl.DataFrame:
    """C9, the mass-deletion guard: the users (user_key, D deletions, N active pairs) for whom this run would delete
    more than ``mass_delete_share`` of N >= ``mass_delete_min`` pairs and who do not allow it. They get no delta,
    note or pair refresh this run but one ``refused`` note (``transforms.stages.finish``)."""
    u, settings = run.users, run.settings
    n_del = deltas.filter(pl.col("op") == "delete").group_by("user_key").agg(pl.len().alias("D"))
    # N: the active pairs of the users with deletions only, counted by user position
    del_uid = n_del.select(position(pl.col("user_key"), u["user_key"])).to_series()
    pair_uid = stored.active["uid"]
    n_pairs = pair_uid.filter(pair_uid.is_in(del_uid.implode())).value_counts(name="N")
    n_pairs = n_pairs.select(u["user_key"].gather(n_pairs["uid"]).alias("user_key"), pl.col("N").cast(pl.UInt32))
    return (
        n_del.join(n_pairs, on="user_key", how="left", validate="1:1")
        .join(u.select("user_key", "allow_mass_delete"), on="user_key", validate="1:1")
        .filter(
            (pl.col("N") >= settings.mass_delete_min)
            & (pl.col("D") > settings.mass_delete_share * pl.col("N"))
            & ~pl.col("allow_mass_delete")
        )
    )
