"""The pair state after a load (pure): ``apply_outcomes`` folds a run's deltas, their outcomes and the pair
refresh into the stored pairs (R3: pairs are kept by ids; R7: the stored hashes are what each side holds)."""

from __future__ import annotations

import polars as pl

from transforms.schema import DELTA_SCHEMA, OUTCOME_SCHEMA, PAIR_REFRESH_SCHEMA, PAIR_SCHEMA, conform
from transforms.stages.common import EM, SF, other


def apply_outcomes(
    pairs: pl.DataFrame,
    deltas: pl.DataFrame,
    outcomes: pl.DataFrame,
    run_id: str,
    refresh: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The pair state after a load (pure). Only applied deltas change pairs; failed or skipped ones leave the
    old state so the next run (or a replay) plans them again. ``refresh`` (``ReconcileResult.pair_refresh``)
    is applied whatever the outcomes: it only concerns pairs without deltas.

    create -> new pair (ids from the source and ``outcome.new_id``; hashes source_hash / target_hash);
    update -> the target's stored hash becomes target_hash and the other side's source_hash (unless that
    side is itself the target of a not-applied update); delete/unpair -> pair removed; pair -> new pair.
    A new pair whose settling update did not apply keeps a null hash on its winning side, so the next run
    sees that side changed and plans the update again.
    """
    pairs = conform(pairs, PAIR_SCHEMA)
    d = conform(deltas, DELTA_SCHEMA).join(
        conform(outcomes, OUTCOME_SCHEMA).select("delta_id", "status", "new_id"), on="delta_id", how="left", validate="1:1"
    ).with_columns((pl.col("status") == "applied").fill_null(False).alias("applied"))
    ok = d.filter(pl.col("applied"))
    if refresh is not None and not refresh.is_empty():
        pairs = _refreshed(pairs, conform(refresh, PAIR_REFRESH_SCHEMA), run_id)
    removed = ok.filter(pl.col("op").is_in(["delete", "unpair"])).select("pair_id")
    state = pl.concat([pairs.join(removed, on="pair_id", how="anti"), conform(_new_pairs(ok, run_id), PAIR_SCHEMA)])
    upd = d.filter(pl.col("op") == "update")
    if not upd.is_empty():
        state = _forget_unsettled(_updated(state, upd, run_id), d, ok)
    return conform(state, PAIR_SCHEMA).sort("pair_id")


def _refreshed(pairs: pl.DataFrame, r: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """The pair refresh: stored hashes and private origin set to the refresh's values."""
    return pairs.join(r, on="pair_id", how="left", suffix="_r", validate="1:1").with_columns(
        pl.when(pl.col("sf_hash_r").is_not_null() | pl.col("email_hash_r").is_not_null())
        .then(pl.struct(pl.col("sf_hash_r").alias("a"), pl.col("email_hash_r").alias("b"), pl.col("private_origin_r").alias("c"), pl.lit(run_id).alias("d")))
        .alias("_r")
    ).with_columns(
        pl.when(pl.col("_r").is_not_null()).then(pl.col("_r").struct.field("a")).otherwise(pl.col("sf_hash")).alias("sf_hash"),
        pl.when(pl.col("_r").is_not_null()).then(pl.col("_r").struct.field("b")).otherwise(pl.col("email_hash")).alias("email_hash"),
        pl.when(pl.col("_r").is_not_null()).then(pl.col("_r").struct.field("c")).otherwise(pl.col("private_origin")).alias("private_origin"),
        pl.when(pl.col("_r").is_not_null()).then(pl.lit(run_id)).otherwise(pl.col("last_run")).alias("last_run"),
    ).select(list(PAIR_SCHEMA))


def _new_pairs(ok: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """Applied create and pair deltas as new pairs."""
    tgt_is_sf = pl.col("target_side") == SF
    target_new_id = pl.coalesce(pl.col("new_id"), pl.col("target_id"))
    return ok.filter(pl.col("op").is_in(["create", "pair"])).select(
        "pair_id",
        "user_key",
        "mailbox",
        pl.when(tgt_is_sf).then(target_new_id).otherwise(pl.col("source_id")).alias("sf_id"),
        pl.when(tgt_is_sf).then(pl.col("source_id")).otherwise(target_new_id).alias("email_id"),
        pl.when(tgt_is_sf).then(pl.col("target_hash")).otherwise(pl.col("source_hash")).alias("sf_hash"),
        pl.when(tgt_is_sf).then(pl.col("source_hash")).otherwise(pl.col("target_hash")).alias("email_hash"),
        "private_origin",
        pl.col("linked").fill_null(False),
        pl.lit(run_id).alias("created_run"),
        pl.lit(run_id).alias("last_run"),
    )


def _updated(state: pl.DataFrame, upd: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """Per (pair, side): applied target -> target_hash; not-applied target -> keep; untargeted side of a pair with
    an applied update -> that update's source_hash."""
    tgt = upd.select("pair_id", pl.col("target_side").alias("side"), "applied", pl.col("target_hash").alias("h"),
                     pl.lit(2).alias("prio"), "private_origin")
    src = upd.filter(pl.col("applied")).select("pair_id", other(pl.col("target_side")).alias("side"), "applied",
                                               pl.col("source_hash").alias("h"), pl.lit(1).alias("prio"), "private_origin")
    assign = (
        pl.concat([tgt, src]).sort(["pair_id", "side", "prio"], descending=[False, False, True])
        .unique(subset=["pair_id", "side"], keep="first", maintain_order=True)
        .filter(pl.col("applied"))
    )
    wide = assign.group_by("pair_id").agg(
        pl.col("h").filter(pl.col("side") == SF).first().alias("_sf"),
        pl.col("h").filter(pl.col("side") == EM).first().alias("_em"),
        (pl.col("side") == SF).any().alias("_has_sf"),
        (pl.col("side") == EM).any().alias("_has_em"),
        pl.col("private_origin").first().alias("_po"),
    )
    has_sf, has_em = pl.col("_has_sf").fill_null(False), pl.col("_has_em").fill_null(False)
    return state.join(wide, on="pair_id", how="left", validate="1:1").with_columns(
        pl.when(has_sf).then(pl.col("_sf")).otherwise(pl.col("sf_hash")).alias("sf_hash"),
        pl.when(has_em).then(pl.col("_em")).otherwise(pl.col("email_hash")).alias("email_hash"),
        pl.when(has_sf | has_em).then(pl.col("_po")).otherwise(pl.col("private_origin")).alias("private_origin"),
        pl.when(has_sf | has_em).then(pl.lit(run_id)).otherwise(pl.col("last_run")).alias("last_run"),
    ).select(list(PAIR_SCHEMA))


def _forget_unsettled(state: pl.DataFrame, d: pl.DataFrame, ok: pl.DataFrame) -> pl.DataFrame:
    """A new pair whose settling update did not apply: forget its winner's hash so the update is replanned."""
    unsettled = (
        d.filter((pl.col("op") == "update") & ~pl.col("applied"))
        .join(ok.filter(pl.col("op") == "pair").select("pair_id", pl.col("target_side").alias("_pt")), on="pair_id", how="inner")
        .select("pair_id", other(pl.col("_pt")).alias("_winner"))
        .unique(subset=["pair_id"], keep="first", maintain_order=True)
    )
    if unsettled.is_empty():
        return state
    return state.join(unsettled, on="pair_id", how="left", validate="1:1").with_columns(
        pl.when(pl.col("_winner") == SF).then(None).otherwise(pl.col("sf_hash")).alias("sf_hash"),
        pl.when(pl.col("_winner") == EM).then(None).otherwise(pl.col("email_hash")).alias("email_hash"),
    ).select(list(PAIR_SCHEMA))
