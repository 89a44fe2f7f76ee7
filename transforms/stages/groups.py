"""Stage 6, group events (R13, C15): a Salesforce event inviting other synced Users is written to email once, by
the designated organizer; each invitee's child event links to the copy Exchange delivered to them.

``links_by_meeting_uid`` links children to delivered copies (before any pairing by key), ``wait_for_groups``
holds back every pool event of a group but the designated organizer's, ``missing_synced_attendees`` finds the
organizer's copies a newly synced User must be added to (R13/C11).
"""

from __future__ import annotations

import polars as pl

from transforms.stages.common import EM, SF
from transforms.stages.frames import Pool, Run, Settled, StoredPairs
from transforms.stages.positions import gather, take

_NO_GROUPS = {"org": pl.String, "key": pl.UInt64, "designated": pl.String, "delivered": pl.Boolean}
_NO_LINKS = {"sf_rid": pl.UInt32, "em_rid": pl.UInt32}


def wait_for_groups(run: Run, stored: StoredPairs, settled: Settled, pool: Pool, key_pairs: pl.DataFrame) -> pl.DataFrame:
    """R13/C15: the pool events left unpaired (``rest``), each with ``group_wait``: it belongs to a group whose
    meeting was delivered already, or it is a child event of a user other than the designated organizer. Only
    the designated organizer's sync creates the meeting, once; the others wait to link."""
    nw = run.narrow
    if nw.select(((pl.col("side") == SF) & pl.col("is_child").fill_null(False) & pl.col("key").is_not_null()).any()).item():
        st = stored.active
        bound_sf = st.filter(pl.col("sf_in").is_not_null()).join(settled.released, on="pair_id", how="anti").select(
            "user_key", pl.col("sf_id").alias("native_id"))
        groups = group_designation(nw.filter((pl.col("side") == SF) & run.synced_event), bound_sf, run.users)
    else:  # C15 concerns only groups with a child event
        groups = pl.DataFrame(schema=_NO_GROUPS)
    rest = pool.events.join(
        pl.concat([key_pairs.select(pl.col("sf_rid").alias("rid")), key_pairs.select(pl.col("em_rid").alias("rid"))]),
        on="rid", how="anti", maintain_order="left",
    ).with_columns(pl.col("organizer_email").str.to_lowercase().alias("org"))
    if groups.is_empty():
        rest = rest.with_columns(pl.lit(None, dtype=pl.String).alias("designated"), pl.lit(None, dtype=pl.Boolean).alias("delivered"))
    else:
        rest = rest.join(groups, on=["org", "key"], how="left", validate="m:1", maintain_order="left")
    return rest.with_columns(
        (
            pl.col("delivered").fill_null(False)
            | (pl.col("is_child") & pl.col("designated").ne_missing(pl.col("user_key")))
        ).alias("group_wait")
    )


def group_designation(ev_sf: pl.DataFrame, bound_sf: pl.DataFrame, users: pl.DataFrame) -> pl.DataFrame:
    """C15 for Salesforce group events, keyed (organizer_email, key): the designated organizer and whether a
    copy was already delivered (some event of the group is paired). Only groups with a child event matter."""
    children = ev_sf.filter(pl.col("is_child") & pl.col("key").is_not_null()).select(
        pl.col("organizer_email").str.to_lowercase().alias("org"), "key"
    ).unique()
    if children.is_empty():
        return pl.DataFrame(schema=_NO_GROUPS)
    members = (
        ev_sf.with_columns(pl.col("organizer_email").str.to_lowercase().alias("org"))
        .join(children, on=["org", "key"], how="semi")
        .join(bound_sf.with_columns(pl.lit(True).alias("_bound")), on=["user_key", "native_id"], how="left", validate="1:1")
        .join(users.select("user_key", "s2e"), on="user_key", how="left", validate="m:1")
    )
    return members.group_by("org", "key").agg(
        pl.coalesce(
            # the parent owner, when synced and allowed to write email ...
            pl.col("user_key").filter(~pl.col("is_child") & (pl.col("user_key") == pl.col("org")) & pl.col("s2e")).first(),
            # ... else the first synced invited user (by address) allowed to.
            pl.col("user_key").filter(pl.col("is_child") & pl.col("s2e")).min(),
        ).alias("designated"),
        pl.col("_bound").fill_null(False).any().alias("delivered"),
    )


def links_by_meeting_uid(pool: pl.DataFrame, st: pl.DataFrame, nw: pl.DataFrame, meeting_uid: pl.Series) -> pl.DataFrame:
    """C15 (sf_rid, em_rid): each unpaired Salesforce child event linked to the copy of its group's meeting in its
    owner's mailbox, by meeting uid (for an occurrence of a series, uid plus original start: the connectors build
    ``meeting_uid`` so). A group (organizer, key: Salesforce keeps parent and children on the same subject and
    times) knows its meeting uid from the email side of any stored pair of the group (the organizer's copy, or an
    invitee's linked copy); the delivered copies carry the same uid whatever their times or subject, which may
    lag behind Salesforce until the organizer's update arrives. A child or a copy that would link twice is left
    to the key (R3). ``pool`` needs rid, uid, side, is_child, organizer_email, key; ``meeting_uid`` is the
    events' column (by rid)."""
    none = pl.DataFrame(schema=_NO_LINKS)
    children = pool.filter((pl.col("side") == SF) & pl.col("is_child").fill_null(False) & pl.col("key").is_not_null())
    if children.is_empty():
        return none
    children = children.select(pl.col("rid").alias("sf_rid"), "uid", pl.col("organizer_email").str.to_lowercase().alias("org"), "key")
    bound = st.filter(pl.col("sf_rid").is_not_null() & pl.col("em_rid").is_not_null())
    groups = bound.select(
        *gather(nw, bound["sf_rid"], {"organizer_email": "org", "key": "key"}),
        meeting_uid.gather(bound["em_rid"]).alias("meeting_uid"),
    ).with_columns(pl.col("org").str.to_lowercase()).drop_nulls().join(
        children.select("org", "key").unique(), on=["org", "key"], how="semi").unique()
    if groups.is_empty():
        return none
    em_pool = pool.filter((pl.col("side") == EM) & pl.col("uid").is_in(children["uid"].unique().implode()))
    em_pool = em_pool.select(pl.col("rid").alias("em_rid"), "uid", meeting_uid.gather(em_pool["rid"]).alias("meeting_uid"))
    links = (
        children.join(groups, on=["org", "key"], how="inner")
        .join(em_pool.drop_nulls(), on=["uid", "meeting_uid"], how="inner")
        .select("sf_rid", "em_rid").unique()
    )
    one = (pl.len().over("sf_rid") == 1) & (pl.len().over("em_rid") == 1)
    return links.filter(one).sort("sf_rid")


def missing_synced_attendees(st: pl.DataFrame, nw: pl.DataFrame, events: pl.DataFrame, synced: pl.DataFrame) -> pl.Series:
    """R13/C11/C15 ``regroup`` per stored pair (aligned with ``st``): its Salesforce side invites a synced User
    (other than the pair's user) who is not an attendee of its email side, while that side is the user's own
    meeting that Salesforce -> email may write. Happens when that User started syncing after the copy was
    written: their hashes did not change, yet the copy must now reach them (only the organizer's copy can).
    Private events are left out (their copies carry no attendees, C10), as are linked copies (C15)."""
    false = pl.repeat(False, st.height, dtype=pl.Boolean, eager=True).alias("regroup")
    if st.is_empty():
        return false
    # cheap test first: most runs have no Salesforce event inviting a User at all
    has_user = events.select(
        (pl.col("side") == SF)
        & pl.col("invitees").list.eval(pl.element().struct.field("record_type") == "user").list.any().fill_null(False)
    ).to_series()
    if not has_user.any():
        return false
    em_org = nw["organizer_email"].gather(st["em_rid"]).str.to_lowercase()
    cand = st.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("i"), "user_key", "sf_rid", "em_rid",
        (
            pl.col("sf_rid").is_not_null() & pl.col("em_rid").is_not_null() & pl.col("s2e").fill_null(False)
            & ~pl.col("linked").fill_null(False)
            & has_user.gather(st["sf_rid"]).fill_null(False)
            & ~nw["is_private"].gather(st["sf_rid"]).fill_null(False)
            & ~nw["is_private"].gather(st["em_rid"]).fill_null(False)
            & (em_org.is_null() | (em_org == pl.col("user_key")) | (em_org == pl.col("_u_mailbox").str.to_lowercase()))
        ).alias("_c"),
    ).filter("_c")
    if cand.is_empty():
        return false
    sf_inv, em_inv = take(events, ["invitees"], cand["sf_rid"], cand["em_rid"])
    synced_emails = synced.select(pl.col("user_key").alias("email"))
    want = (
        cand.select("i", "user_key").hstack(sf_inv).explode("invitees", empty_as_null=False, keep_nulls=False)
        .unnest("invitees").with_columns(pl.col("email").str.to_lowercase())
        .filter((pl.col("record_type") == "user") & pl.col("email").is_not_null() & (pl.col("email") != pl.col("user_key")))
        .join(synced_emails, on="email", how="semi")
        .select("i", "email")
    )
    have = (
        cand.select("i").hstack(em_inv).explode("invitees", empty_as_null=False, keep_nulls=False)
        .unnest("invitees").select("i", pl.col("email").str.to_lowercase())
    )
    missing = want.join(have, on=["i", "email"], how="anti")["i"].unique()
    return false.scatter(missing, True) if missing.len() else false


