"""Stage 5, the pool: in-window events of synced users that belong to no pair once deletions are settled; the
only events that can pair by key (R3) or be created. ``build_pool`` blocks the keys held twice on a side (R4,
C4) and applies the user's filter (R5, C5); ``pair_by_key`` pairs the rest by key, after group links (C15)."""

from __future__ import annotations

import polars as pl

from transforms import invitees as inv
from transforms.digest import combine
from transforms.stages.common import EM, SF, notes, validity
from transforms.stages.frames import Pool, Run, Settled, StoredPairs
from transforms.stages.groups import links_by_meeting_uid
from transforms.stages.positions import Rows, gather, raise_duplicates

_POOL_ID_SEED = 0x1D5E_ED01


def build_pool(run: Run, stored: StoredPairs, settled: Settled) -> Pool:
    """R3, R4/C4, R5/C5, C15, C19: the unpaired in-window events of synced users, less the group children linked
    to their delivered copies by meeting uid (identity first, so a copy whose times or subject lag behind
    Salesforce still links); per event whether its key is held twice on its side (``dup``) or on either side
    (``blocked``: left alone on both sides), whether it passes its user's filter, and whether it is valid."""
    nw = run.narrow
    in_pool = nw["in_window"].fill_null(False)
    if not run.all_synced:
        in_pool = in_pool & run.synced_event
    pool = nw.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("rid")).filter(in_pool & ~settled.bound)
    # a side lists an event once: the lookups checked the events pairs refer to, this the ones that may be written
    pool_ids = pool.select(combine([pl.col("uid"), pl.col("side"), pl.col("native_id")], _POOL_ID_SEED)).to_series()
    if pool_ids.n_unique() != pool_ids.len():
        for name in (SF, EM):
            raise_duplicates(pool.filter(pl.col("side") == name), ["user_key", "native_id"], f"{name} events")
    links = links_by_meeting_uid(pool, stored.active, nw, run.events["meeting_uid"])
    if links.height:
        pool = pool.filter(~pl.col("rid").is_in(pl.concat([links["sf_rid"], links["em_rid"]]).implode()))
    pool = pool.with_columns(
        (pl.len().over("uid", "side", "key") >= 2).and_(pl.col("key").is_not_null()).alias("dup"),
    ).with_columns(pl.col("dup").any().over("uid", "key").and_(pl.col("key").is_not_null()).alias("blocked"))
    pool = pool.hstack(gather(run.users, pool["uid"], {"filter_mode": "filter_mode", "s2e": "s2e", "e2s": "e2s", "mailbox": "_u_mailbox"}))
    # the wide columns of every event this run may still read: the pool (filters, creates) and both sides of
    # the pairs to settle; one ordered pass over all events
    to_sync = settled.acting.filter(pl.col("action") == "sync")
    rows = Rows(run.events, pool["rid"], to_sync["sf_rid"], to_sync["em_rid"])
    pool = pool.hstack([passes(pool, rows, run.directory)]).with_columns(
        # a snapshot keeps no subject for private events but keeps their key: the key says whether there was one
        validity(pl.col("start"), pl.col("end"), pl.col("key").is_null()).alias("invalid"),
        pl.when(pl.col("side") == SF).then(pl.col("s2e")).otherwise(pl.col("e2s")).alias("source_ok"),
        pl.col("is_child").fill_null(False),
    )
    duplicate_notes = [
        notes(pool.filter(pl.col("dup")), "duplicate", "duplicate_key",
              pl.format("{} unpaired events of this user on {} share this key; left alone on both sides this run (C4)",
                        pl.len().over("user_key", "side", "key"), pl.col("side"))),
        notes(pool.filter(pl.col("blocked") & ~pl.col("dup")), "skipped", "duplicate_key",
              "the other side holds duplicates of this key; neither paired nor copied this run (C4)"),
    ]
    return Pool(events=pool, links=links, rows=rows, notes=duplicate_notes)


def pair_by_key(run: Run, pool: Pool) -> pl.DataFrame:
    """R3, C5, C15: new pairs (sf_rid, em_rid, ids, the user's settings): the group links, then each valid
    unblocked Salesforce event with the email event of its user and key (unique per side: blocked keys are out,
    null keys never match). Outside a group, one of the two must pass the user's filter (C5), and
    ``updates_only`` pairs nothing by key."""
    ok = pool.events.filter(~pl.col("blocked") & pl.col("invalid").is_null())
    key_pairs = ok.filter(pl.col("side") == SF).select(
        "user_key", "uid", "key", pl.col("rid").alias("sf_rid"), pl.col("native_id").alias("sf_id"),
        pl.col("passes").alias("sf_passes"), pl.col("is_child").alias("sf_is_child"),
    ).join(
        ok.filter(pl.col("side") == EM).select(
            "user_key", "key", pl.col("rid").alias("em_rid"), pl.col("native_id").alias("email_id"), pl.col("passes").alias("em_passes"),
        ),
        on=["user_key", "key"], how="inner", maintain_order="left",
    )
    links, nw = pool.links, run.narrow
    if links.height:
        key_pairs = pl.concat([
            links.select(
                *gather(nw, links["sf_rid"], {"user_key": "user_key", "uid": "uid", "key": "key"}),
                "sf_rid", nw["native_id"].gather(links["sf_rid"]).alias("sf_id"), pl.lit(True).alias("sf_passes"),
                pl.lit(True).alias("sf_is_child"), "em_rid", nw["native_id"].gather(links["em_rid"]).alias("email_id"),
                pl.lit(True).alias("em_passes"),
            ),
            key_pairs,
        ], how="vertical_relaxed")
    return key_pairs.hstack(
        gather(run.users, key_pairs["uid"], {"filter_mode": "filter_mode", "s2e": "s2e", "e2s": "e2s", "mailbox": "_u_mailbox", "sf_user_id": "sf_user_id"})
    ).filter(
        # C15: a child links to the delivered copy whatever the filter; C5: otherwise a pass on either side
        pl.col("sf_is_child").fill_null(False)
        | ((pl.col("filter_mode") != "updates_only") & (pl.col("sf_passes") | pl.col("em_passes")))
    )


def passes(pool: pl.DataFrame, rows: Rows, directory: pl.DataFrame) -> pl.Series:
    """R5/C5 ``passes`` per pool row (needs side, user_key, organizer_email, mailbox, filter_mode, rid into
    ``events``). Only the invitee modes look at invitees, so only their rows gather and explode them."""
    mode = pool["filter_mode"]
    passes = (mode == "all").fill_null(False).alias("passes")
    need = mode.is_in(["with_invitee", "with_contact_or_lead"]).fill_null(False)
    if not need.any():
        return passes
    sub = pool.filter(need).select("side", "user_key", "organizer_email", "mailbox", "filter_mode", "rid")
    sub = sub.hstack(rows.take(["invitees"], sub["rid"])[0]).with_row_index("i")
    el = pl.col("email")
    # C5: a Salesforce invitee is an IsInvitee relation (what the connector lists); an email invitee is an
    # attendee with an address other than the organizer (and the mailbox owner).
    att = (
        sub.select("i", "side", "user_key", pl.col("organizer_email").str.to_lowercase().fill_null("").alias("_org"),
                   pl.col("mailbox").str.to_lowercase().fill_null("").alias("_mb"), "invitees")
        .explode("invitees", empty_as_null=False, keep_nulls=False)
        .unnest("invitees")
        .with_columns(el.str.to_lowercase())
    )
    em_att = el.is_not_null() & (el != pl.col("_org")) & (el != pl.col("user_key")) & (el != pl.col("_mb"))
    att = att.select(
        "i",
        pl.when(pl.col("side") == SF).then(el.is_not_null() | pl.col("record_id").is_not_null()).otherwise(em_att).fill_null(False).alias("_inv"),
        pl.when(pl.col("side") == SF).then(pl.col("record_type").is_in(inv.REPRESENTABLE_TYPES))
        .otherwise(em_att & el.is_in(directory["email"].unique().implode())).fill_null(False).alias("_cl"),
    )
    flags = att.group_by("i").agg(pl.col("_inv").any(), pl.col("_cl").any())
    got = sub.select("i", "filter_mode").join(flags, on="i", how="left", maintain_order="left").select(
        pl.when(pl.col("filter_mode") == "with_invitee").then(pl.col("_inv")).otherwise(pl.col("_cl")).fill_null(False)
    ).to_series()
    return passes.scatter(need.arg_true(), got)

