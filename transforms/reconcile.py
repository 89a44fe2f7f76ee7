"""The reconciler: a pure planner from both sides' events and the stored pairs to a frame of deltas.

Everything is columnar over all users at once (DESIGN.md R1-R18, C1-C23; rule ids are cited inline).

Glossary
--------
side            ``salesforce`` or ``email``; frames prefix a side's columns ``sf_`` / ``em_``.
pair            a Salesforce event and an email event of one user known to be the same meeting (R3).
active pair     a stored pair of a synced user whose mailbox is still the user's mailbox (C17).
in scope        a pair with at least one existing side inside the user's window (C2).
changed         a side whose content hash differs from the hash stored with its pair (R7).
winner (W)      the side whose times (and usually body) a pair is settled to: the changed side, the
                newer one in a conflict (tie: Salesforce), or the source of a one-way direction (C6/C7).
body            subject, description, privacy and invitees; ``times`` are start, end and the all-day flag.
private origin  the side a private event came from; the other side is a "Private" busy copy (C10).
pool            in-window events of synced users that belong to no pair after deletions are settled:
                the only events that can pair by key (R3) or be created.
blocked key     a key held by two or more pool events of one user on one side (R4/C4); left alone on
                both sides.
projection      how a planned body looks on the target once written and read back (truncated subject,
                kept attendees, Salesforce responses); an update is planned only when the projected
                content hash differs from the target's current hash (C7), so a second run plans nothing.
pair_refresh    stored hashes to write for pairs that changed but need no write (see ReconcileResult).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from transforms import invitees as inv
from transforms.normalise import clean_subject, content_hash_expr, normalise
from transforms.schema import (
    DELTA_SCHEMA,
    DERIVED_SCHEMA,
    DESCRIPTION_MAX,
    EVENT_SCHEMA,
    INVITEE,
    MAX_EVENT_DAYS,
    NOTE_SCHEMA,
    OUTCOME_SCHEMA,
    PAIR_REFRESH_SCHEMA,
    PAIR_SCHEMA,
    PRIVATE_SUBJECT,
    SUBJECT_MAX,
    USER_SCHEMA,
    UTC_US,
    Side,
    conform,
    empty,
)
from transforms.window import window_bounds

SF, EM = "salesforce", "email"
PFX = {SF: "sf_", EM: "em_"}
_EMPTY_INV = pl.lit([], dtype=pl.List(INVITEE))
_EVENT_COLS = [*EVENT_SCHEMA, *DERIVED_SCHEMA, "in_window"]


@dataclass(frozen=True)
class Settings:
    """Run settings. ``sf_create_blocked``: the required custom field on Event that blocks email -> Salesforce
    creation (C18), or None."""

    mass_delete_share: float = 0.5
    mass_delete_min: int = 4
    shared_activities: bool = True
    sf_create_blocked: str | None = None


@dataclass(frozen=True)
class ReconcileResult:
    """What a run plans.

    deltas        DELTA_SCHEMA, sorted; ids are deterministic.
    notes         NOTE_SCHEMA: duplicates, conflicts, skips, truncations, refused users, notices.
    events        the normalised events (EVENT_SCHEMA + key, content_hash, in_window).
    pair_refresh  PAIR_REFRESH_SCHEMA: pairs with no delta whose stored hashes (and private origin) must be
                  set to these values whatever the load does, so the next run sees no change. Pass it to
                  ``apply_outcomes(..., refresh=...)``.
    """

    deltas: pl.DataFrame
    notes: pl.DataFrame
    events: pl.DataFrame
    pair_refresh: pl.DataFrame


# --------------------------------------------------------------------------------------------- helpers


def _other(side: pl.Expr) -> pl.Expr:
    return pl.when(side == SF).then(pl.lit(EM)).when(side == EM).then(pl.lit(SF)).cast(Side)


def _side(name: str) -> pl.Expr:
    return pl.lit(name, dtype=Side)


def _sha1_column(df: pl.DataFrame, cols: list[str], prefix: str) -> pl.Series:
    # sha1 (not polars' hash) because pair and delta ids are stored and compared across machines and
    # polars versions by replay; it runs over the planned rows only, which are few.
    joined = df.select(pl.concat_str([pl.lit(prefix), *[pl.col(c).cast(pl.String).fill_null("") for c in cols]], separator="|"))
    return pl.Series([hashlib.sha1(s.encode()).hexdigest() for s in joined.to_series().to_list()], dtype=pl.String)


def _notes(df: pl.DataFrame, kind: str, reason: pl.Expr | str, detail: pl.Expr | str, side: pl.Expr | str = "side",
           native_id: str = "native_id") -> pl.DataFrame:
    as_expr = lambda v: pl.lit(v) if isinstance(v, str) and v not in df.columns else (pl.col(v) if isinstance(v, str) else v)  # noqa: E731
    return df.select(
        pl.col("user_key"),
        pl.lit(kind).alias("kind"),
        as_expr(side).cast(Side).alias("side"),
        pl.col(native_id).alias("native_id"),
        (pl.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
        (pl.lit(detail) if isinstance(detail, str) else detail).alias("detail"),
    )


def prepare_users(users: pl.DataFrame, today: date) -> pl.DataFrame:
    """USER_SCHEMA + per-user window (C1: the later of today - 1 month and start_date) and direction flags."""
    start, end = window_bounds(today)
    start_date = pl.col("start_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return conform(users, USER_SCHEMA).with_columns(
        pl.max_horizontal(pl.lit(start, dtype=UTC_US), start_date).alias("win_start"),
        pl.lit(end, dtype=UTC_US).alias("win_end"),
        pl.col("direction").is_in(["both", "salesforce_to_email"]).alias("s2e"),
        pl.col("direction").is_in(["both", "email_to_salesforce"]).alias("e2s"),
        pl.col("allow_mass_delete").fill_null(False),
    )


def _filter_flags(pool: pl.DataFrame, users: pl.DataFrame, directory: pl.DataFrame) -> pl.DataFrame:
    """R5/C5 per pool event: has_invitee, has_contact_lead, passes (the user's filter mode)."""
    el = pl.element().struct
    # C5: a Salesforce invitee is an IsInvitee relation (what the connector lists); an email invitee is an
    # attendee with an address other than the organizer (and the mailbox owner).
    inv_count = pl.col("invitees").list.eval(
        (el.field("email").is_not_null() | el.field("record_id").is_not_null()).cast(pl.Int32)
    ).list.sum()
    exploded = inv.explode_invitees(pool.with_row_index("wid"), "invitees").filter(pl.col("email").is_not_null())
    with_idx = pool.with_row_index("wid")
    em_att = exploded.join(with_idx.select("wid", "side", "user_key", "organizer_email", "mailbox"), on="wid", validate="m:1").filter(
        (pl.col("side") == EM)
        & (pl.col("email") != pl.col("organizer_email").str.to_lowercase().fill_null(""))
        & (pl.col("email") != pl.col("user_key"))
        & (pl.col("email") != pl.col("mailbox").str.to_lowercase().fill_null(""))
    )
    em_invitee = em_att.select("wid").unique().with_columns(pl.lit(True).alias("_em_inv"))
    em_cl = em_att.join(directory.select("email").unique(), on="email", how="semi").select("wid").unique().with_columns(
        pl.lit(True).alias("_em_cl")
    )
    out = (
        with_idx.join(em_invitee, on="wid", how="left", validate="1:1")
        .join(em_cl, on="wid", how="left", validate="1:1")
        .with_columns(
            pl.when(pl.col("side") == SF)
            .then(inv_count.fill_null(0) > 0)
            .otherwise(pl.col("_em_inv").fill_null(False))
            .alias("has_invitee"),
            pl.when(pl.col("side") == SF)
            .then(pl.col("invitees").list.eval(el.field("record_type").is_in(inv.REPRESENTABLE_TYPES)).list.any().fill_null(False))
            .otherwise(pl.col("_em_cl").fill_null(False))
            .alias("has_contact_lead"),
        )
        .join(users.select("user_key", "filter_mode"), on="user_key", how="left", validate="m:1")
        .with_columns(
            pl.when(pl.col("filter_mode") == "all").then(True)
            .when(pl.col("filter_mode") == "with_invitee").then(pl.col("has_invitee"))
            .when(pl.col("filter_mode") == "with_contact_or_lead").then(pl.col("has_contact_lead"))
            .otherwise(False)
            .alias("passes")
        )
        .drop("wid", "_em_inv", "_em_cl", "filter_mode")
    )
    return out


def _validity(start: pl.Expr, end: pl.Expr, subject_missing: pl.Expr) -> pl.Expr:
    """C19 reason code an event cannot be written, or null."""
    return (
        pl.when(subject_missing).then(pl.lit("no_subject"))
        .when(end <= start).then(pl.lit("end_before_start"))
        .when(end - start > timedelta(days=MAX_EVENT_DAYS)).then(pl.lit("too_long_event"))
    )


def _group_designation(ev_sf: pl.DataFrame, bound_sf: pl.DataFrame, users: pl.DataFrame) -> pl.DataFrame:
    """C15 for Salesforce group events, keyed (organizer_email, key): the designated organizer and whether a
    copy was already delivered (some event of the group is paired). Only groups with a child event matter."""
    children = ev_sf.filter(pl.col("is_child") & pl.col("key").is_not_null()).select(
        pl.col("organizer_email").str.to_lowercase().alias("org"), "key"
    ).unique()
    if children.is_empty():
        return pl.DataFrame(schema={"org": pl.String, "key": pl.String, "designated": pl.String, "delivered": pl.Boolean})
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


# --------------------------------------------------------------------------------------------- reconcile


def reconcile(
    events: pl.DataFrame,
    pairs: pl.DataFrame,
    users: pl.DataFrame,
    directory: pl.DataFrame,
    *,
    today: date,
    settings: Settings = Settings(),
) -> ReconcileResult:
    """Plan one run for every user in ``users`` (see the module docstring and DESIGN.md)."""
    u = prepare_users(users, today)
    synced = u.select("user_key")
    directory = inv.prepare_directory(conform(directory, {"record_id": pl.String, "record_type": pl.String, "email": pl.String, "owner_id": pl.String}))

    ev_all = normalise(events)
    # the window columns are joined on a narrow frame and stacked back: joining the wide frame would
    # copy every invitee list
    win = ev_all.select("user_key", "side", "mailbox", "start", "end").join(
        u.select("user_key", pl.col("mailbox").alias("_u_mailbox"), "win_start", "win_end"),
        on="user_key", how="left", validate="m:1", maintain_order="left",
    ).select(
        ((pl.col("start") < pl.col("win_end")) & (pl.col("end") > pl.col("win_start"))).alias("in_window"),
        # R15/C17: an email event from another mailbox than the user's current one is never touched.
        (
            pl.col("win_start").is_not_null()
            & ((pl.col("side") == SF) | pl.col("mailbox").is_null() | pl.col("_u_mailbox").is_null() | (pl.col("mailbox") == pl.col("_u_mailbox")))
        ).alias("_synced"),
    )
    result_events = ev_all.hstack([win["in_window"]])
    ev = result_events if win["_synced"].all() else result_events.filter(win["_synced"])
    ev_sf = ev.filter(pl.col("side") == SF)
    ev_em = ev.filter(pl.col("side") == EM)

    # ---- stored pairs -------------------------------------------------------------------------------
    p = conform(pairs, PAIR_SCHEMA).join(
        u.select("user_key", pl.col("mailbox").alias("_u_mailbox"), "s2e", "e2s", "allow_mass_delete"),
        on="user_key",
        how="inner",
        validate="m:1",
    )
    switched = pl.col("mailbox").is_not_null() & pl.col("_u_mailbox").is_not_null() & (pl.col("mailbox") != pl.col("_u_mailbox"))
    moved = p.filter(switched)
    ap = p.filter(~switched)

    def narrow(frame: pl.DataFrame, pfx: str, id_col: str) -> pl.DataFrame:
        return frame.select(
            "user_key",
            pl.col("native_id").alias(id_col),
            pl.col("in_window").alias(pfx + "in"),
            pl.col("content_hash").alias(pfx + "now"),
            pl.col("last_modified").alias(pfx + "lm"),
            pl.col("is_private").alias(pfx + "priv"),
            pl.col("is_child").fill_null(False).alias(pfx + "child"),
            pl.col("version").alias(pfx + "version"),
        )

    # 1:1 must hold: a native id belongs to at most one pair, and a side lists an event once. A violation
    # is corrupt state or a connector bug, and the run stops rather than guess.
    st = ap.join(narrow(ev_sf, "sf_", "sf_id"), on=["user_key", "sf_id"], how="left", validate="1:1").join(
        narrow(ev_em, "em_", "email_id"), on=["user_key", "email_id"], how="left", validate="1:1"
    )
    sf_here, em_here = pl.col("sf_in").is_not_null(), pl.col("em_in").is_not_null()
    sf_changed = sf_here & pl.col("sf_now").ne_missing(pl.col("sf_hash"))
    em_changed = em_here & pl.col("em_now").ne_missing(pl.col("email_hash"))
    surv = pl.when(sf_here).then(_side(SF)).otherwise(_side(EM))
    surv_in = pl.when(sf_here).then(pl.col("sf_in")).otherwise(pl.col("em_in"))
    surv_changed = pl.when(sf_here).then(sf_changed).otherwise(em_changed)
    surv_deletable = pl.when(sf_here).then(pl.col("e2s") & ~pl.col("sf_child")).otherwise(pl.col("s2e"))
    st = st.with_columns(
        sf_changed.alias("sf_changed"),
        em_changed.alias("em_changed"),
        surv.alias("survivor"),
        pl.when(~sf_here & ~em_here).then(pl.lit("gone"))
        .when(sf_here & em_here)
        .then(
            pl.when(~(pl.col("sf_in") | pl.col("em_in"))).then(pl.lit("keep"))  # C2
            .when(sf_changed | em_changed).then(pl.lit("sync"))
            .otherwise(pl.lit("keep"))
        )
        .when(~surv_in).then(pl.lit("keep"))  # R6: outside the window nothing is deleted
        .when(pl.col("linked").fill_null(False)).then(pl.lit("unlink"))  # C15
        .when(surv_changed).then(pl.lit("release_changed"))  # C8: the change wins
        .when(surv_deletable).then(pl.lit("delete"))
        .otherwise(pl.lit("release_direction"))  # C8: one-way source stays authoritative
        .alias("action"),
    )

    released = pl.col("action").is_in(["release_changed", "release_direction"])
    bound = st.filter(~released)
    bound_sf = bound.filter(pl.col("sf_in").is_not_null()).select("user_key", pl.col("sf_id").alias("native_id"))
    bound_em = bound.filter(pl.col("em_in").is_not_null()).select("user_key", pl.col("email_id").alias("native_id"))

    # unpair deltas: mailbox switch, both sides gone, released survivors, linked pairs that lost a side
    unpairs = pl.concat(
        [
            moved.select("user_key", "pair_id", _side(EM).alias("target_side"), pl.col("email_id").alias("target_id"),
                         pl.col("sf_id").alias("source_id"), pl.lit("mailbox_changed").alias("reason"), "mailbox"),
            st.filter(pl.col("action") != "keep").filter(pl.col("action").is_in(["gone", "unlink", "release_changed", "release_direction"])).select(
                "user_key",
                "pair_id",
                pl.when(pl.col("action") == "gone").then(_side(SF)).otherwise(_other(pl.col("survivor"))).alias("target_side"),
                pl.when(pl.col("action") == "gone").then(pl.col("sf_id"))
                .when(pl.col("survivor") == SF).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("target_id"),
                pl.when(pl.col("action") == "gone").then(pl.col("email_id"))
                .when(pl.col("survivor") == SF).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("source_id"),
                pl.when(pl.col("action") == "gone").then(pl.lit("deleted_on_both_sides"))
                .when(pl.col("action") == "unlink").then(pl.lit("linked_side_deleted"))
                .when(pl.col("action") == "release_changed").then(pl.lit("survivor_changed"))
                .when(pl.col("survivor") == SF).then(pl.when(pl.col("sf_child")).then(pl.lit("child_event")).otherwise(pl.lit("direction")))
                .otherwise(pl.lit("direction"))
                .alias("reason"),
                pl.col("_u_mailbox").alias("mailbox"),
            ),
        ]
    ).with_columns(pl.lit("unpair").alias("op"))

    deletes = st.filter(pl.col("action") == "delete").select(
        "user_key",
        "pair_id",
        pl.lit("delete").alias("op"),
        pl.col("survivor").alias("target_side"),
        pl.when(pl.col("survivor") == SF).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("target_id"),
        pl.when(pl.col("survivor") == SF).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("source_id"),
        pl.when(pl.col("survivor") == SF).then(pl.col("sf_version")).otherwise(pl.col("em_version")).alias("target_version"),
        pl.when(pl.col("survivor") == SF).then(pl.lit("deleted_on_email")).otherwise(pl.lit("deleted_on_salesforce")).alias("reason"),
        pl.col("_u_mailbox").alias("mailbox"),
        "private_origin",
    )

    # ---- pool: unpaired in-window events --------------------------------------------------------------
    pool = pl.concat(
        [
            ev_sf.filter(pl.col("in_window")).join(bound_sf, on=["user_key", "native_id"], how="anti"),
            ev_em.filter(pl.col("in_window")).join(bound_em, on=["user_key", "native_id"], how="anti"),
        ]
    )
    pool = pool.with_columns(
        (pl.len().over("user_key", "side", "key") >= 2).and_(pl.col("key").is_not_null()).alias("dup"),
    ).with_columns(pl.col("dup").any().over("user_key", "key").and_(pl.col("key").is_not_null()).alias("blocked"))
    pool = _filter_flags(pool, u, directory).join(
        u.select("user_key", "filter_mode", "s2e", "e2s", pl.col("mailbox").alias("_u_mailbox")), on="user_key", how="left", validate="m:1"
    ).with_columns(
        # a snapshot keeps no subject for private events but keeps their key: the key says whether there was one
        _validity(pl.col("start"), pl.col("end"), pl.col("key").is_null()).alias("invalid"),
        pl.when(pl.col("side") == SF).then(pl.col("s2e")).otherwise(pl.col("e2s")).alias("source_ok"),
        pl.col("is_child").fill_null(False),
    )
    ok = pool.filter(~pl.col("blocked") & pl.col("invalid").is_null())
    sf_cols = [c for c in _EVENT_COLS if c not in ("side", "user_key")] + ["passes"]
    key_pairs = (
        ok.filter(pl.col("side") == SF).select([pl.col(c).alias("sf_" + c) for c in sf_cols] + [pl.col("user_key")])
        .join(
            ok.filter(pl.col("side") == EM).select([pl.col(c).alias("em_" + c) for c in sf_cols] + [pl.col("user_key")]),
            left_on=["user_key", "sf_key"],
            right_on=["user_key", "em_key"],
            how="inner",
            validate="1:1",  # holds: blocked keys are gone; null keys never match
        )
        .join(u.select("user_key", "filter_mode", "s2e", "e2s", pl.col("mailbox").alias("_u_mailbox")), on="user_key", validate="m:1")
        .filter(
            # C15: a child links to the delivered copy whatever the filter; C5: otherwise a pass on either side
            pl.col("sf_is_child").fill_null(False)
            | ((pl.col("filter_mode") != "updates_only") & (pl.col("sf_passes") | pl.col("em_passes")))
        )
        .rename({"sf_native_id": "sf_id", "em_native_id": "email_id"})
        .with_columns(pl.col("sf_key").alias("em_key"))  # equal by the join; polars keeps one key column
    )
    paired_sf = key_pairs.select("user_key", pl.col("sf_id").alias("native_id"))
    paired_em = key_pairs.select("user_key", pl.col("email_id").alias("native_id"))

    groups = _group_designation(ev_sf, bound_sf, u)
    rest = pool.join(pl.concat([paired_sf.with_columns(_side(SF).alias("side")), paired_em.with_columns(_side(EM).alias("side"))]),
                     on=["user_key", "side", "native_id"], how="anti")
    rest = rest.with_columns(pl.col("organizer_email").str.to_lowercase().alias("org")).join(
        groups, on=["org", "key"], how="left", validate="m:1"
    ).with_columns(
        # C15: only the designated organizer's sync creates the meeting, once; others wait to link.
        (
            pl.col("delivered").fill_null(False)
            | (pl.col("is_child") & pl.col("designated").ne_missing(pl.col("user_key")))
        ).alias("group_wait")
    )
    creatable = ~pl.col("blocked") & pl.col("source_ok") & (pl.col("filter_mode") != "updates_only") & pl.col("passes")
    candidates = rest.filter(creatable & ~pl.col("group_wait"))
    sf_blocked = (pl.col("side") == EM) & pl.lit(settings.sf_create_blocked is not None)
    creates_src = candidates.filter(pl.col("invalid").is_null() & ~sf_blocked)

    notes: list[pl.DataFrame] = [
        _notes(pool.filter(pl.col("dup")), "duplicate", "duplicate_key",
               pl.format("{} unpaired events of this user on {} share this key; left alone on both sides this run (C4)",
                         pl.len().over("user_key", "side", "key"), pl.col("side"))),
        _notes(pool.filter(pl.col("blocked") & ~pl.col("dup")), "skipped", "duplicate_key",
               "the other side holds duplicates of this key; neither paired nor copied this run (C4)"),
        _notes(candidates.filter(pl.col("invalid").is_not_null()), "skipped", pl.col("invalid"),
               pl.format("not copied: {} (C19); retried on later runs", pl.col("invalid"))),
        _notes(rest.filter(~pl.col("blocked") & pl.col("source_ok") & ~((pl.col("filter_mode") != "updates_only") & pl.col("passes"))),
               "skipped", "filter", pl.format("filter mode {} does not create this event (R5)", pl.col("filter_mode"))),
        _notes(rest.filter(creatable & pl.col("group_wait")), "skipped", "child_event",
               "group event: the designated organizer's sync writes the meeting; this copy links to it (C15)"),
        _notes(candidates.filter(pl.col("invalid").is_null() & sf_blocked), "skipped", "required_field",
               f"Salesforce requires custom field {settings.sf_create_blocked} on Event; email -> Salesforce creation is off (C18)"),
    ]
    if settings.sf_create_blocked is not None:
        notes.append(
            u.select("user_key", pl.lit("notice").alias("kind"), pl.lit(None, dtype=Side).alias("side"), pl.lit(None, dtype=pl.String).alias("native_id"),
                     pl.lit("required_field").alias("reason"),
                     pl.lit(f"Event.{settings.sf_create_blocked} is required in Salesforce: email -> Salesforce creation is skipped; "
                            "updates, deletions and Salesforce -> email go on (C18)").alias("detail")).head(1)
            .with_columns(pl.lit(None, dtype=pl.String).alias("user_key"))
        )

    # ---- settle pairs that changed, and new key pairs (R7, C6, C7, C10) ---------------------------------
    def full(frame: pl.DataFrame, pfx: str, id_col: str) -> pl.DataFrame:
        return frame.select(pl.col("user_key"), *[pl.col(c).alias(pfx + c) for c in _EVENT_COLS if c not in ("side", "user_key")]).rename(
            {pfx + "native_id": id_col}
        )

    sync_old = (
        st.filter(pl.col("action") == "sync")
        .select("pair_id", "user_key", "sf_id", "email_id", "sf_hash", "email_hash", "private_origin",
                pl.col("linked").fill_null(False), "sf_changed", "em_changed", "s2e", "e2s", "_u_mailbox")
        .join(full(ev_sf, "sf_", "sf_id"), on=["user_key", "sf_id"], how="inner", validate="1:1")
        .join(full(ev_em, "em_", "email_id"), on=["user_key", "email_id"], how="inner", validate="1:1")
        .with_columns(pl.lit(False).alias("is_new"))
    )
    kp = key_pairs.with_columns(
        pl.lit(True).alias("is_new"),
        pl.col("sf_is_child").fill_null(False).alias("linked"),
        pl.lit(True).alias("sf_changed"),
        pl.lit(True).alias("em_changed"),
        pl.lit(None, dtype=Side).alias("private_origin"),
        pl.lit(None, dtype=pl.String).alias("sf_hash"),
        pl.lit(None, dtype=pl.String).alias("email_hash"),
    )
    kp = kp.with_columns(_sha1_column(kp, ["user_key", "sf_id", "email_id"], "pair").alias("pair_id"))
    sy = pl.concat([sync_old, kp.select(sync_old.columns)], how="vertical_relaxed")

    newer = pl.when(pl.col("em_last_modified").fill_null(pl.datetime(1970, 1, 1, time_zone="UTC")) > pl.col("sf_last_modified").fill_null(pl.datetime(1970, 1, 1, time_zone="UTC"))).then(_side(EM)).otherwise(_side(SF))
    one_way_source = pl.when(pl.col("s2e") & ~pl.col("e2s")).then(_side(SF)).when(pl.col("e2s") & ~pl.col("s2e")).then(_side(EM))
    src_changed = pl.when(one_way_source == SF).then(pl.col("sf_changed")).otherwise(pl.col("em_changed"))
    sy = sy.with_columns(
        pl.when(pl.col("linked")).then(pl.lit(None, dtype=Side))  # C15: linked copies are kept by the organizer's pair
        .when(one_way_source.is_not_null()).then(pl.when(src_changed).then(one_way_source))  # C6
        .when(pl.col("sf_changed") & pl.col("em_changed")).then(newer)
        .when(pl.col("sf_changed")).then(_side(SF))
        .otherwise(_side(EM))
        .alias("W"),
        (pl.col("sf_changed") & pl.col("em_changed") & ~pl.col("is_new")).alias("both_changed"),
        pl.when(one_way_source.is_not_null()).then(pl.lit("source of the one-way direction"))
        .when(pl.col("em_last_modified") > pl.col("sf_last_modified")).then(pl.lit("newer last_modified"))
        .when(pl.col("em_last_modified") == pl.col("sf_last_modified")).then(pl.lit("same last_modified: Salesforce wins ties"))
        .otherwise(pl.lit("newer last_modified"))
        .alias("win_why"),
    )
    origin_old = pl.col("private_origin")
    origin_priv = pl.when(origin_old == SF).then(pl.col("sf_is_private")).otherwise(pl.col("em_is_private"))
    sy = sy.with_columns(
        pl.when(origin_old.is_not_null()).then(pl.when(origin_priv.fill_null(False)).then(origin_old))  # C10
        .when(pl.col("sf_is_private") & ~pl.col("em_is_private")).then(_side(SF))
        .when(pl.col("em_is_private") & ~pl.col("sf_is_private")).then(_side(EM))
        .cast(Side)
        .alias("origin_new")
    )

    work_parts = []
    for x, y in ((SF, EM), (EM, SF)):
        t, o = PFX[x], PFX[y]
        mode = (
            pl.when(pl.col("origin_new").is_not_null()).then(pl.when(pl.col("origin_new") == x).then(pl.lit("own")).otherwise(pl.lit("private")))
            .when(origin_old.is_not_null()).then(pl.when(origin_old == x).then(pl.lit("own")).otherwise(pl.lit("cross")))
            .when(pl.col("sf_is_private") & pl.col("em_is_private")).then(pl.lit("own"))  # C10: both private keep their own
            .when(pl.col("W") == x).then(pl.lit("own"))
            .otherwise(pl.lit("cross"))
        )
        times = {c: pl.when(pl.col("W") == SF).then(pl.col("sf_" + c)).otherwise(pl.col("em_" + c)).alias(c) for c in ("start", "end", "is_all_day")}
        writable = (pl.col("e2s") & ~pl.col("sf_is_child").fill_null(False)) if x == SF else pl.col("s2e")
        work_parts.append(
            sy.filter(pl.col("W").is_not_null()).select(
                "pair_id", "user_key", "is_new", "linked", "both_changed", "W", "win_why",
                pl.lit("update").alias("kind"),
                _side(x).alias("target_side"),
                pl.col("sf_id" if x == SF else "email_id").alias("target_id"),
                pl.col(t + "version").alias("target_version"),
                pl.col(t + "subject").alias("t_subject"),
                pl.col(t + "description").alias("t_description"),
                pl.col(t + "is_private").alias("t_is_private"),
                pl.col(t + "invitees").alias("t_invitees"),
                pl.col(t + "content_hash").alias("t_hash"),
                pl.col("sf_id" if y == SF else "email_id").alias("source_id"),
                pl.col(o + "content_hash").alias("source_hash"),
                times["start"], times["end"], times["is_all_day"],
                mode.alias("body_mode"),
                pl.col(o + "subject").alias("b_subject"),
                pl.col(o + "description").alias("b_description"),
                pl.col(o + "is_private").alias("b_is_private"),
                pl.col(o + "invitees").alias("b_invitees"),
                pl.col(o + "organizer_email").alias("b_organizer"),
                writable.alias("writable"),
                pl.when(pl.lit(x == SF) & pl.col("sf_is_child").fill_null(False)).then(pl.lit("child_event")).otherwise(pl.lit("direction")).alias("block_reason"),
                pl.col("origin_new").alias("private_origin"),
                pl.col("_u_mailbox").alias("mailbox"),
            )
        )
    create_work = creates_src.select(
        pl.lit(None, dtype=pl.String).alias("pair_id"),
        "user_key",
        pl.lit(True).alias("is_new"),
        pl.lit(False).alias("linked"),
        pl.lit(False).alias("both_changed"),
        pl.col("side").alias("W"),
        pl.lit(None, dtype=pl.String).alias("win_why"),
        pl.lit("create").alias("kind"),
        _other(pl.col("side")).alias("target_side"),
        pl.lit(None, dtype=pl.String).alias("target_id"),
        pl.lit(None, dtype=pl.String).alias("target_version"),
        pl.lit(None, dtype=pl.String).alias("t_subject"),
        pl.lit(None, dtype=pl.String).alias("t_description"),
        pl.lit(None, dtype=pl.Boolean).alias("t_is_private"),
        pl.lit(None, dtype=pl.List(INVITEE)).alias("t_invitees"),
        pl.lit(None, dtype=pl.String).alias("t_hash"),
        pl.col("native_id").alias("source_id"),
        pl.col("content_hash").alias("source_hash"),
        "start", "end", "is_all_day",
        pl.when(pl.col("is_private")).then(pl.lit("private")).otherwise(pl.lit("cross")).alias("body_mode"),
        pl.col("subject").alias("b_subject"),
        pl.col("description").alias("b_description"),
        pl.col("is_private").alias("b_is_private"),
        pl.col("invitees").alias("b_invitees"),
        pl.col("organizer_email").alias("b_organizer"),
        pl.lit(True).alias("writable"),
        pl.lit(None, dtype=pl.String).alias("block_reason"),
        pl.when(pl.col("is_private")).then(pl.col("side")).cast(Side).alias("private_origin"),
        pl.col("_u_mailbox").alias("mailbox"),
    )
    create_work = create_work.with_columns(_sha1_column(create_work, ["user_key", "W", "source_id"], "pair").alias("pair_id"))
    work = pl.concat([*work_parts, create_work], how="vertical_relaxed").with_row_index("wid")
    work = _shape(work, u, directory, synced, settings)

    # C7: write only what changes the target as it will read back; creates always write.
    needs = work.filter((pl.col("kind") == "create") | pl.col("target_hash").ne_missing(pl.col("t_hash")))
    blocked_w = needs.filter(~pl.col("writable"))
    invalid_w = needs.filter(pl.col("writable") & pl.col("invalid").is_not_null())
    writes = needs.filter(pl.col("writable") & pl.col("invalid").is_null())

    notes += [
        _notes(blocked_w, "skipped", pl.col("block_reason"),
               pl.format("change on {} not copied to {} ({})", pl.col("W"), pl.col("target_side"), pl.col("block_reason")),
               side="W", native_id="source_id"),
        _notes(invalid_w.filter(pl.col("kind") != "create"), "skipped", pl.col("invalid"),
               pl.format("not copied: {} (C19); retried on later runs", pl.col("invalid")), side=_other(pl.col("target_side")), native_id="source_id"),
        _notes(writes.filter(pl.col("subject_cut")), "truncated", "subject_truncated",
               f"subject cut to {SUBJECT_MAX} characters for Salesforce (C19)", side=_other(pl.col("target_side")), native_id="source_id"),
        _notes(writes.filter(pl.col("description_cut")), "truncated", "description_truncated",
               f"description cut to {DESCRIPTION_MAX} characters for Salesforce (C19)", side=_other(pl.col("target_side")), native_id="source_id"),
    ]
    conflicts = needs.filter(pl.col("both_changed")).select("pair_id").unique()
    conflict_rows = sy.join(conflicts, on="pair_id", how="semi")
    notes.append(
        _notes(
            conflict_rows.with_columns(pl.when(pl.col("W") == SF).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("native_id")),
            "conflict", pl.format("{}_wins", pl.col("W")),
            pl.format("both sides changed; {} wins ({}) (R7/C6)", pl.col("W"), pl.col("win_why")), side="W",
        )
    )
    # C6: a change on the side that may not be copied is recorded
    dir_skip = sy.filter(pl.col("W").is_null() & ~pl.col("linked"))
    notes.append(
        _notes(
            dir_skip.with_columns(
                pl.when(pl.col("s2e")).then(_side(EM)).otherwise(_side(SF)).alias("side"),
                pl.when(pl.col("s2e")).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("native_id"),
            ),
            "skipped", "direction", "change on the side this user's direction does not copy; kept, not undone (C6)",
        )
    )

    # ---- deltas ----------------------------------------------------------------------------------------
    pair_deltas = sy.filter(pl.col("is_new")).select(
        "user_key", "pair_id",
        pl.lit("pair").alias("op"),
        pl.when(pl.col("W") == SF).then(_side(EM)).otherwise(_side(SF)).alias("target_side"),
        pl.when(pl.col("W") == SF).then(pl.col("email_id")).otherwise(pl.col("sf_id")).alias("target_id"),
        pl.when(pl.col("W") == SF).then(pl.col("sf_id")).otherwise(pl.col("email_id")).alias("source_id"),
        pl.when(pl.col("W") == SF).then(pl.col("em_version")).otherwise(pl.col("sf_version")).alias("target_version"),
        pl.when(pl.col("linked")).then(pl.lit("linked_group_copy")).otherwise(pl.lit("same_key")).alias("reason"),
        pl.when(pl.col("W") == SF).then(pl.col("sf_content_hash")).otherwise(pl.col("em_content_hash")).alias("source_hash"),
        pl.when(pl.col("W") == SF).then(pl.col("em_content_hash")).otherwise(pl.col("sf_content_hash")).alias("target_hash"),
        pl.col("origin_new").alias("private_origin"),
        "linked",
        pl.col("_u_mailbox").alias("mailbox"),
    )
    write_deltas = writes.select(
        "user_key", "pair_id",
        pl.col("kind").alias("op"),
        "target_side", "target_id", "source_id", "target_version",
        pl.when(pl.col("kind") == "create").then(pl.lit("new_event"))
        .when(pl.col("is_new")).then(pl.lit("settle_new_pair"))
        .when(pl.col("both_changed")).then(pl.lit("conflict"))
        .otherwise(pl.format("changed_on_{}", pl.col("W")))
        .alias("reason"),
        "mailbox",
        pl.when(pl.col("target_side") == SF).then(pl.col("sf_user_id")).otherwise(pl.col("mailbox")).alias("owner_id"),
        "subject", "start", "end", "is_all_day", "description", "is_private", "invitees", "who_ids",
        "source_hash", "target_hash", "private_origin",
        pl.lit(False).alias("linked"),
    )
    deltas = pl.concat(
        [conform(d, DELTA_SCHEMA) for d in (unpairs, deletes, pair_deltas, write_deltas)], how="vertical"
    )

    # ---- C9 mass-deletion guard -----------------------------------------------------------------------
    n_pairs = ap.group_by("user_key").agg(pl.len().alias("N"))
    n_del = deltas.filter(pl.col("op") == "delete").group_by("user_key").agg(pl.len().alias("D"))
    refused = (
        n_del.join(n_pairs, on="user_key", how="left", validate="1:1")
        .join(u.select("user_key", "allow_mass_delete"), on="user_key", validate="1:1")
        .filter(
            (pl.col("N") >= settings.mass_delete_min)
            & (pl.col("D") > settings.mass_delete_share * pl.col("N"))
            & ~pl.col("allow_mass_delete")
        )
    )
    deltas = deltas.join(refused, on="user_key", how="anti")

    # ---- pair refresh: pairs that changed but have no delta and no retriable skip ---------------------
    touched = pl.concat([deltas.select("pair_id"), invalid_w.select("pair_id")]).unique()
    pair_refresh = (
        sy.filter(~pl.col("is_new"))
        .join(touched, on="pair_id", how="anti")
        .join(refused, on="user_key", how="anti")
        .select("pair_id", pl.col("sf_content_hash").alias("sf_hash"), pl.col("em_content_hash").alias("email_hash"),
                pl.col("origin_new").alias("private_origin"))
    )
    pair_refresh = conform(pair_refresh, PAIR_REFRESH_SCHEMA).sort("pair_id")

    deltas = deltas.with_columns(
        _sha1_column(deltas, ["user_key", "op", "target_side", "pair_id", "source_id", "target_id"], "delta").alias("delta_id")
    ).sort(["user_key", "op", "delta_id"])

    note_frame = pl.concat([conform(n, NOTE_SCHEMA) for n in notes], how="vertical")
    note_frame = note_frame.join(refused, on="user_key", how="anti")
    refused_notes = refused.select(
        "user_key",
        pl.lit("refused").alias("kind"),
        pl.lit(None, dtype=Side).alias("side"),
        pl.lit(None, dtype=pl.String).alias("native_id"),
        pl.lit("mass_deletion").alias("reason"),
        pl.format(
            "MassDeletionRefused: {} of {} paired events would be deleted for {}; set allow_mass_delete for this user "
            "(or --allow-deletes) to proceed",
            pl.col("D"), pl.col("N"), pl.col("user_key"),
        ).alias("detail"),
    )
    note_frame = pl.concat([note_frame, conform(refused_notes, NOTE_SCHEMA)]).sort(
        ["user_key", "kind", "side", "native_id", "reason"], nulls_last=True
    )
    return ReconcileResult(
        deltas=conform(deltas, DELTA_SCHEMA), notes=note_frame, events=result_events, pair_refresh=pair_refresh
    )


def _shape(work: pl.DataFrame, u: pl.DataFrame, directory: pl.DataFrame, synced: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The payload each work row writes (R9/C10, C19, R10-R12) and its projected hash (C7)."""
    work = work.join(u.select("user_key", "sf_user_id"), on="user_key", how="left", validate="m:1").with_columns(
        (pl.col("kind") == "create").alias("is_create")
    )
    cross = pl.col("body_mode") == "cross"
    to_sf = work.filter(cross & (pl.col("target_side") == SF))
    to_em = work.filter(cross & (pl.col("target_side") == EM))
    parts = []
    if not to_sf.is_empty():
        parts.append(inv.email_to_salesforce(to_sf, directory, shared_activities=settings.shared_activities))
    if not to_em.is_empty():
        parts.append(inv.salesforce_to_email(to_em, directory, synced))
    schema = {"wid": pl.UInt32, "invitees": pl.List(INVITEE), "invitees_rb": pl.List(INVITEE), "who_ids": pl.List(pl.String)}
    shaped_inv = pl.concat([conform(pt, schema) for pt in parts]) if parts else empty(schema)
    work = work.join(shaped_inv, on="wid", how="left", validate="1:1")

    mode = pl.col("body_mode")
    to_sf_ = pl.col("target_side") == SF

    def limited(b: str, t: str, limit: int) -> pl.Expr:
        # C19: cut towards Salesforce; copying the cut text back to email keeps email's full text.
        return (
            pl.when(to_sf_).then(pl.col(b).str.slice(0, limit))
            .when(pl.col(t).is_not_null() & (pl.col(t).str.len_chars() > limit) & (pl.col(t).str.slice(0, limit) == pl.col(b))).then(pl.col(t))
            .otherwise(pl.col(b))
        )

    work = work.with_columns(
        pl.when(mode == "private").then(pl.lit(PRIVATE_SUBJECT)).when(mode == "own").then(pl.col("t_subject"))
        .otherwise(limited("b_subject", "t_subject", SUBJECT_MAX)).alias("subject"),
        pl.when(mode == "private").then(pl.lit("")).when(mode == "own").then(pl.col("t_description"))
        .otherwise(limited("b_description", "t_description", DESCRIPTION_MAX)).alias("description"),
        pl.when(mode == "private").then(True).when(mode == "own").then(pl.col("t_is_private"))
        .otherwise(pl.col("b_is_private")).alias("is_private"),
        pl.when(mode == "private").then(_EMPTY_INV).when(mode == "own").then(pl.col("t_invitees"))
        .otherwise(pl.col("invitees").fill_null(_EMPTY_INV)).alias("invitees"),
        pl.when(mode == "private").then(_EMPTY_INV).when(mode == "own").then(pl.col("t_invitees"))
        .otherwise(pl.col("invitees_rb").fill_null(_EMPTY_INV)).alias("invitees_rb"),
        pl.when(mode == "private").then(pl.when(to_sf_ & pl.col("is_create")).then(pl.lit([], dtype=pl.List(pl.String))))
        .when(mode == "own").then(pl.lit(None, dtype=pl.List(pl.String)))
        .otherwise(pl.col("who_ids")).alias("who_ids"),
        (cross & to_sf_ & (pl.col("b_subject").str.len_chars() > SUBJECT_MAX)).fill_null(False).alias("subject_cut"),
        (cross & to_sf_ & (pl.col("b_description").str.len_chars() > DESCRIPTION_MAX)).fill_null(False).alias("description_cut"),
    )
    subject_missing = clean_subject(pl.col("subject")).fill_null("").str.len_bytes() == 0
    return work.with_columns(
        content_hash_expr(
            pl.col("subject"), pl.col("start"), pl.col("end"), pl.col("description"), pl.col("is_all_day"),
            pl.col("is_private"), pl.col("invitees_rb"),
        ).alias("target_hash"),
        _validity(pl.col("start"), pl.col("end"), subject_missing).alias("invalid"),
    )


# --------------------------------------------------------------------------------------------- apply


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
        r = conform(refresh, PAIR_REFRESH_SCHEMA)
        pairs = pairs.join(r, on="pair_id", how="left", suffix="_r", validate="1:1").with_columns(
            pl.when(pl.col("sf_hash_r").is_not_null() | pl.col("email_hash_r").is_not_null())
            .then(pl.struct(pl.col("sf_hash_r").alias("a"), pl.col("email_hash_r").alias("b"), pl.col("private_origin_r").alias("c"), pl.lit(run_id).alias("d")))
            .alias("_r")
        ).with_columns(
            pl.when(pl.col("_r").is_not_null()).then(pl.col("_r").struct.field("a")).otherwise(pl.col("sf_hash")).alias("sf_hash"),
            pl.when(pl.col("_r").is_not_null()).then(pl.col("_r").struct.field("b")).otherwise(pl.col("email_hash")).alias("email_hash"),
            pl.when(pl.col("_r").is_not_null()).then(pl.col("_r").struct.field("c")).otherwise(pl.col("private_origin")).alias("private_origin"),
            pl.when(pl.col("_r").is_not_null()).then(pl.lit(run_id)).otherwise(pl.col("last_run")).alias("last_run"),
        ).select(list(PAIR_SCHEMA))

    removed = ok.filter(pl.col("op").is_in(["delete", "unpair"])).select("pair_id")
    tgt_is_sf = pl.col("target_side") == SF
    target_new_id = pl.coalesce(pl.col("new_id"), pl.col("target_id"))
    new_pairs = ok.filter(pl.col("op").is_in(["create", "pair"])).select(
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
    state = pl.concat([pairs.join(removed, on="pair_id", how="anti"), conform(new_pairs, PAIR_SCHEMA)])

    upd = d.filter(pl.col("op") == "update")
    if not upd.is_empty():
        # per (pair, side): applied target -> target_hash; not-applied target -> keep; untargeted side of a
        # pair with an applied update -> that update's source_hash.
        tgt = upd.select("pair_id", pl.col("target_side").alias("side"), "applied", pl.col("target_hash").alias("h"),
                         pl.lit(2).alias("prio"), "private_origin")
        src = upd.filter(pl.col("applied")).select("pair_id", _other(pl.col("target_side")).alias("side"), "applied",
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
        state = state.join(wide, on="pair_id", how="left", validate="1:1").with_columns(
            pl.when(pl.col("_has_sf").fill_null(False)).then(pl.col("_sf")).otherwise(pl.col("sf_hash")).alias("sf_hash"),
            pl.when(pl.col("_has_em").fill_null(False)).then(pl.col("_em")).otherwise(pl.col("email_hash")).alias("email_hash"),
            pl.when(pl.col("_has_sf").fill_null(False) | pl.col("_has_em").fill_null(False)).then(pl.col("_po")).otherwise(pl.col("private_origin")).alias("private_origin"),
            pl.when(pl.col("_has_sf").fill_null(False) | pl.col("_has_em").fill_null(False)).then(pl.lit(run_id)).otherwise(pl.col("last_run")).alias("last_run"),
        ).select(list(PAIR_SCHEMA))
        # a new pair whose settling update did not apply: forget its winner's hash so the update is replanned
        unsettled = (
            d.filter((pl.col("op") == "update") & ~pl.col("applied"))
            .join(ok.filter(pl.col("op") == "pair").select("pair_id", pl.col("target_side").alias("_pt")), on="pair_id", how="inner")
            .select("pair_id", _other(pl.col("_pt")).alias("_winner"))
            .unique(subset=["pair_id"], keep="first", maintain_order=True)
        )
        if not unsettled.is_empty():
            state = state.join(unsettled, on="pair_id", how="left", validate="1:1").with_columns(
                pl.when(pl.col("_winner") == SF).then(None).otherwise(pl.col("sf_hash")).alias("sf_hash"),
                pl.when(pl.col("_winner") == EM).then(None).otherwise(pl.col("email_hash")).alias("email_hash"),
            ).select(list(PAIR_SCHEMA))
    return conform(state, PAIR_SCHEMA).sort("pair_id")
