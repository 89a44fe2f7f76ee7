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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Callable

import polars as pl

from transforms import invitees as inv
from transforms.digest import combine, hex128, id128, id_digests
from transforms.normalise import clean_subject_series, content_hash_expr, normalise
from transforms.schema import (
    DELTA_SCHEMA,
    DESCRIPTION_MAX,
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
)
from transforms.text import target_text
from transforms.window import window_bounds

SF, EM = "salesforce", "email"
PFX = {SF: "sf_", EM: "em_"}
_EMPTY_INV = pl.lit([], dtype=pl.List(INVITEE))


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

    deltas        DELTA_SCHEMA, sorted; ids (delta_id, and pair_id of new pairs) are deterministic 128-bit
                  digests as 32 hex digits (``_hash_id_column``), checked unique within the run.
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


_ID_SEEDS = (0x1DC0_FFEE_0001, 0x1DC0_FFEE_0101)


def _hash_id_column(df: pl.DataFrame, cols: list[str], prefix: str) -> pl.Series:
    """Deterministic 128-bit ids (32 hex digits) of ``prefix`` + ``cols`` per row: two independent seeded
    digests of the same fields (``transforms.digest.id128``). Stable across processes and machines for the
    pinned polars version (as the digests of normalise); vectorised, so free of the GIL (sha1 in Python cost
    ~0.2 s a large run). Replay compares ids recomputed by the same code version; a polars upgrade that
    changed the hash would change them, and the pinned ids in tests/transforms/test_reconcile.py would
    say so. Nulls and empty strings give different ids. Collisions are checked by the callers."""
    return id128(df, _id_fields(cols, prefix), _ID_SEEDS)


def _id_fields(cols: list[str], prefix: str) -> list[pl.Expr]:
    return [pl.lit(prefix), *[pl.col(c).cast(pl.String) for c in cols]]


def _check_unique_ids(ids: pl.Series, what: str) -> None:
    """Raise a clear error when generated ids repeat (a 128-bit collision, or rows that are not distinct)."""
    if ids.n_unique() != ids.len():
        dup = ids.filter(ids.is_duplicated()).head(1).item()
        raise ValueError(f"{what}: generated id {dup} is not unique; the rows it identifies repeat or the id hash collided")


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
        return pl.DataFrame(schema={"org": pl.String, "key": pl.UInt64, "designated": pl.String, "delivered": pl.Boolean})
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


_NO_LINKS = {"sf_rid": pl.UInt32, "em_rid": pl.UInt32}


def _links_by_meeting_uid(pool: pl.DataFrame, st: pl.DataFrame, nw: pl.DataFrame, meeting_uid: pl.Series) -> pl.DataFrame:
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
        *_gather(nw, bound["sf_rid"], {"organizer_email": "org", "key": "key"}),
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


def _missing_synced_attendees(st: pl.DataFrame, nw: pl.DataFrame, events: pl.DataFrame, synced: pl.DataFrame) -> pl.Series:
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
    sf_inv, em_inv = _take(events, ["invitees"], cand["sf_rid"], cand["em_rid"])
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


def _passes(pool: pl.DataFrame, rows: "_Rows", directory: pl.DataFrame) -> pl.Series:
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


# --------------------------------------------------------------------------------------------- reconcile


# rows of the events frame are addressed by position (``rid``): the planner works on a narrow frame of ids,
# digests, flags and times, and gathers the wide columns (subject, description, invitees) by position only
# for the few rows it writes (see _WIDE).
_NARROW = ["side", "user_key", "native_id", "version", "start", "end", "is_all_day", "is_private", "organizer_email",
           "last_modified", "is_child", "mailbox", "key", "content_hash"]
_ID_SEED, _ID_SEED2 = 0x1D5E_ED01, 0x1D5E_ED11


def _id_hash(uid: pl.Expr, native_id: pl.Expr, seed: int = _ID_SEED) -> pl.Expr:
    """A transient 64-bit digest of (user position ``uid``, native id): joins on it are much cheaper than on two
    strings. Never stored; a match is confirmed by a second digest (``_ID_SEED2``, see ``_lookup_rid``)."""
    return combine([uid, native_id], seed)


def _id_hashes(uid: str, native_id: str) -> list[pl.Expr]:
    """``h`` and ``h2``: the two digests ``_lookup_rid`` matches on."""
    return [_id_hash(pl.col(uid), pl.col(native_id)).alias("h"), _id_hash(pl.col(uid), pl.col(native_id), _ID_SEED2).alias("h2")]


def _raise_duplicates(df: pl.DataFrame, cols: list[str], what: str) -> None:
    """The exact (slow) check behind a failed cheap one: raise a ValueError naming a repeated id, if any."""
    dup = (
        df.select(cols).drop_nulls().group_by(cols).len()
        .filter(pl.col("len") > 1).sort(cols)
    )
    if dup.height:
        first = dup.row(0, named=True)
        more = f" ({dup.height - 1} more repeated)" if dup.height > 1 else ""
        ids = ", ".join(f"{c}={first[c]!r}" for c in cols)
        raise ValueError(f"{what}: {ids} appears {first['len']} times{more}; each must be unique")


def _lookup_rid(query: pl.DataFrame, table: pl.DataFrame, h2: pl.Series,
                exact: Callable[[], tuple[pl.DataFrame, pl.DataFrame]], what: tuple[str, str]) -> pl.Series:
    """``rid`` of each row of ``query`` (h, h2: a stored pair side) in ``table`` (rid, h: one side's events of synced
    users), aligned with ``query``; null when absent. ``h`` and ``h2`` are two independent digests of (user
    position, native id) (``_id_hash``; ``h2`` of every event, by rid): the join is on ``h``, and a match stands
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
        _raise_duplicates(t_ids, ["user_key", "native_id"], what[0])
        _raise_duplicates(q_ids, ["user_key", "native_id"], what[1])
        # a digest collision (never seen): join on the strings
        return q_ids.join(t_ids, on=["user_key", "native_id"], how="left", maintain_order="left")["rid"].alias("rid")
    return pl.repeat(None, query.height, dtype=pl.UInt32, eager=True).scatter(m["q"], m["rid"]).alias("rid")


def _position(expr: pl.Expr, values: pl.Series) -> pl.Expr:
    """The position (UInt32) of ``expr``'s value in ``values`` (distinct, non-null strings), or null: a cast to the
    Enum of ``values``, ~2x cheaper than ``replace_strict`` over two million strings."""
    return expr.cast(pl.Enum(values), strict=False).to_physical().cast(pl.UInt32)


def _gather(frame: pl.DataFrame, rid: pl.Series, cols: dict[str, str]) -> list[pl.Series]:
    """``frame``'s (narrow) columns at positions ``rid`` (null where rid is null), renamed {column: alias}.
    One select: the columns are gathered in parallel."""
    if len(cols) == 1:
        return [frame[c].gather(rid).alias(a) for c, a in cols.items()]
    return frame.select(pl.col(c).gather(rid).alias(a) for c, a in cols.items()).get_columns()


_WIDE = ["subject", "description", "invitees", "organizer_email"]


class _Rows:
    """The wide columns (``_WIDE``: long strings, lists of structs) of the events a run may read, copied once.

    Gathering those straight from a many-chunk frame costs ~2-4 us a row in polars, so the rows needed are
    filtered out in one ordered pass (the two halves side by side: a list column filters on one core) into a
    single-chunk copy, and ``take`` gathers from that copy by position.
    """

    def __init__(self, frame: pl.DataFrame, *rids: pl.Series) -> None:
        mask = pl.zeros(frame.height, pl.Boolean, eager=True).scatter(
            pl.concat([r.cast(pl.UInt32) for r in rids]).drop_nulls(), True)
        self._mask = mask
        self._pos_of = (mask.cum_sum() - 1).cast(pl.UInt32)  # a kept row's position in the copy
        wide = frame.select(_WIDE)
        half = (frame.height + 1) // 2
        if half < 100_000:
            self._sub = wide.filter(mask).rechunk()
        else:
            with ThreadPoolExecutor(max_workers=2) as ex:
                halves = list(ex.map(lambda i: wide.slice(i, half).filter(mask.slice(i, half)), (0, half)))
            self._sub = pl.concat(halves, rechunk=True)

    def take(self, cols: list[str], *rids: pl.Series) -> list[pl.DataFrame]:
        """``cols`` at the event positions of each of ``rids`` (null where the rid is null); every rid must be
        among those the copy was made for."""
        rid = pl.concat([r.cast(pl.UInt32) for r in rids])
        if not self._mask.gather(rid.drop_nulls()).all():
            raise AssertionError("_Rows.take: a row outside the copy was asked for")
        # one gather for all (the columns side by side), then a zero-copy slice per rid series
        got = self._sub.select(pl.col(c).gather(self._pos_of.gather(rid)) for c in cols)
        starts = [0]
        for r in rids:
            starts.append(starts[-1] + r.len())
        return [got.slice(a, b - a) for a, b in zip(starts, starts[1:])]


def _take(frame: pl.DataFrame, cols: list[str], *rids: pl.Series) -> list[pl.DataFrame]:
    """``frame[cols]`` at the positions of each of ``rids`` (null where the rid is null), for one use."""
    return _Rows(frame, *rids).take(cols, *rids)


def reconcile(
    events: pl.DataFrame,
    pairs: pl.DataFrame,
    users: pl.DataFrame,
    directory: pl.DataFrame,
    *,
    today: date,
    settings: Settings = Settings(),
) -> ReconcileResult:
    """Plan one run for every user in ``users`` (see the module docstring and DESIGN.md).

    Raises ValueError naming the id when a user, an event id (per user and side) or a stored pair's side
    id is not unique: that is corrupt state or a connector bug, and the run stops rather than guess.
    """
    u = prepare_users(users, today)
    if u["user_key"].null_count():
        raise ValueError("users: a user without a user_key (email address); every synced user needs one")
    if u["user_key"].n_unique() != u.height:
        _raise_duplicates(u, ["user_key"], "users")
    u = u.with_row_index("uid")
    synced = u.select("user_key")
    directory = inv.prepare_directory(conform(directory, {"record_id": pl.String, "record_type": pl.String, "email": pl.String, "owner_id": pl.String}))

    def prepare_pairs() -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
        """The stored pairs' side (needs no event): active and moved pairs (C17) and the hashed queries of both
        sides' ids. Runs in a thread while the events are normalised."""
        p = conform(pairs, PAIR_SCHEMA)
        p = p.hstack([p.select(_position(pl.col("user_key"), u["user_key"]).alias("uid")).to_series()])
        if p["uid"].null_count():
            p = p.filter(pl.col("uid").is_not_null())  # pairs of synced users only
        p = p.hstack(_gather(u, p["uid"], {"mailbox": "_u_mailbox", "s2e": "s2e", "e2s": "e2s",
                                           "allow_mass_delete": "allow_mass_delete", "sf_user_id": "sf_user_id"}))
        switched = pl.col("mailbox").is_not_null() & pl.col("_u_mailbox").is_not_null() & (pl.col("mailbox") != pl.col("_u_mailbox"))
        if p.select(switched.any()).item():
            moved, ap = p.filter(switched), p.filter(~switched)
        else:
            moved, ap = p.clear(), p
        queries = []
        for id_col in ("sf_id", "email_id"):  # (their uniqueness is checked by the lookups)
            side_pairs = ap.filter(pl.col(id_col).is_not_null()) if ap[id_col].null_count() else ap
            queries.append(side_pairs.select(*_id_hashes("uid", id_col)))
        return moved, ap, queries

    pairs_pool = ThreadPoolExecutor(max_workers=1)
    pairs_job = pairs_pool.submit(prepare_pairs)
    try:
        ev_all = normalise(events)
    except BaseException:
        pairs_pool.shutdown(cancel_futures=True)
        raise
    # per-user attributes by the user's position (uid): a lookup, not a join that copies every event
    uid = ev_all.select(_position(pl.col("user_key"), u["user_key"]).alias("uid")).to_series()
    # R15/C17: an email event from another mailbox than the user's current one is never touched. With the
    # users' mailboxes distinct (the rule), "the event's mailbox is its user's" is "the mailbox's owner position
    # is the event's user position": no gather of 2 million mailbox strings
    with_mb = u.filter(pl.col("mailbox").is_not_null())
    if with_mb["mailbox"].n_unique() == with_mb.height:
        mb_uid = with_mb["uid"].gather(ev_all.select(_position(pl.col("mailbox"), with_mb["mailbox"])).to_series())
        own_mailbox = pl.col("_mb_uid") == pl.col("_uid")
    else:
        mb_uid = u["mailbox"].gather(uid)
        own_mailbox = pl.col("mailbox") == pl.col("_mb_uid")
    one_window = u.select(pl.col("win_start").n_unique() == 1).item()
    if one_window:  # (no user's start_date is inside the window) no per-event gather of the bounds
        lo, hi = u["win_start"][0], u["win_end"][0]
        window = pl.when(pl.col("_uid").is_not_null()).then((pl.col("start") < hi) & (pl.col("end") > lo))
        bounds = []
    else:
        window = (pl.col("start") < pl.col("win_end")) & (pl.col("end") > pl.col("win_start"))
        bounds = _gather(u, uid, {"win_start": "win_start", "win_end": "win_end"})
    no_mb = u["mailbox"].is_null()
    win = ev_all.select("side", "mailbox", "start", "end").hstack([
        *bounds, (no_mb.gather(uid) if no_mb.any() else pl.repeat(False, uid.len(), eager=True)).alias("_no_mb"),
        mb_uid.alias("_mb_uid"), uid.alias("_uid"),
    ]).select(
        window.alias("in_window"),
        (
            pl.col("_uid").is_not_null()
            & ((pl.col("side") == SF) | pl.col("mailbox").is_null() | pl.col("_no_mb") | own_mailbox.fill_null(False))
        ).alias("_synced"),
    )
    del mb_uid
    # the narrow events, addressed by position (rid); the wide columns are fetched by _Rows when needed
    nw = ev_all.select(_NARROW).hstack([win["in_window"], uid])
    is_synced = win["_synced"]
    all_synced = bool(is_synced.all())
    # live memory is the peak: intermediates over all events or all pairs are dropped as soon as they are used
    in_window = win["in_window"]
    del win, uid

    def keep(name: str) -> pl.Expr:
        return (pl.col("side") == name) if all_synced else ((pl.col("side") == name) & is_synced)

    def side_table(name: str) -> pl.DataFrame:
        return nw.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("rid"), _id_hash(pl.col("uid"), pl.col("native_id")).alias("h"),
            keep(name).alias("_k"),
        ).filter("_k").drop("_k")

    def exact(name: str, id_col: str) -> Callable[[], tuple[pl.DataFrame, pl.DataFrame]]:
        """The rows of a side's lookup with their strings (for messages and the collision fallback)."""
        return lambda: (
            ap.filter(pl.col(id_col).is_not_null()).select("user_key", pl.col(id_col).alias("native_id")),
            nw.with_row_index("rid").filter(keep(name)).select("user_key", "native_id", "rid"),
        )

    with ThreadPoolExecutor(max_workers=2) as ex:  # independent, mostly single-threaded in polars
        ev_sf, ev_em = ex.map(side_table, (SF, EM))
    h2 = nw.select(_id_hash(pl.col("uid"), pl.col("native_id"), _ID_SEED2)).to_series()

    # A native id belongs to at most one pair, and a side lists an event once (checked by the lookups for the
    # events pairs refer to, and in the pool for the others). A violation is corrupt state or a connector bug,
    # and the run stops rather than guess.
    moved, ap, queries = pairs_job.result()
    ap_uid = ap["uid"]
    pairs_pool.shutdown()
    what = ((f"{SF} events", "stored pairs' sf_id"), (f"{EM} events", "stored pairs' email_id"))
    with ThreadPoolExecutor(max_workers=2) as ex:  # the two sides are independent (errors re-raise in order)
        found = list(ex.map(lambda q, t, x, w: _lookup_rid(q, t, h2, x, w), queries, (ev_sf, ev_em),
                            (exact(SF, "sf_id"), exact(EM, "email_id")), what))
    # aligned with the active pairs (a side without an id has no rid)
    rids = [f if q.height == ap.height else
            pl.repeat(None, ap.height, dtype=pl.UInt32, eager=True).scatter(ap[c].is_not_null().arg_true(), f)
            for f, q, c in zip(found, queries, ("sf_id", "email_id"))]
    result_events = ev_all.hstack([in_window])
    del in_window
    sf_rid, em_rid = rids[0].alias("sf_rid"), rids[1].alias("em_rid")
    del rids, ev_sf, ev_em, queries
    st = ap.hstack([
        sf_rid, em_rid,
        *_gather(nw, sf_rid, {"in_window": "sf_in", "content_hash": "sf_now", "is_child": "sf_child"}),
        *_gather(nw, em_rid, {"in_window": "em_in", "content_hash": "em_now"}),
    ]).with_columns(pl.col("sf_child").fill_null(False))
    st = st.hstack([_missing_synced_attendees(st, nw, ev_all, synced)])
    sf_here, em_here = pl.col("sf_in").is_not_null(), pl.col("em_in").is_not_null()
    # R13/C11: a synced invited User missing from the organizer's email copy (they started syncing after it
    # was written) counts as a Salesforce change, so the copy is re-projected with them as an attendee
    em_changed0 = em_here & pl.col("em_now").ne_missing(pl.col("email_hash"))
    sf_hash_changed = pl.col("sf_now").ne_missing(pl.col("sf_hash"))
    st = st.with_columns((pl.col("regroup") & sf_here & ~sf_hash_changed & ~em_changed0).alias("regroup"))  # the only trigger
    sf_changed = sf_here & (sf_hash_changed | pl.col("regroup"))
    em_changed = em_here & pl.col("em_now").ne_missing(pl.col("email_hash"))
    st = st.with_columns(sf_changed.alias("sf_changed"), em_changed.alias("em_changed")).drop("sf_now", "em_now")
    sf_changed, em_changed = pl.col("sf_changed"), pl.col("em_changed")
    # most pairs have both sides, unchanged or out of the window (C2): "keep", decided by one cheap test; the
    # full decision below runs on the others only
    quiet = sf_here & em_here & (~(pl.col("sf_in") | pl.col("em_in")) | ~(sf_changed | em_changed))
    surv = pl.when(sf_here).then(_side(SF)).otherwise(_side(EM))
    surv_in = pl.when(sf_here).then(pl.col("sf_in")).otherwise(pl.col("em_in"))
    surv_changed = pl.when(sf_here).then(sf_changed).otherwise(em_changed)
    surv_deletable = pl.when(sf_here).then(pl.col("e2s") & ~pl.col("sf_child")).otherwise(pl.col("s2e"))
    acting = st.filter(~quiet).with_columns(
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
    acting = acting.filter(pl.col("action") != "keep")  # everything below skips the unchanged pairs
    acting = acting.hstack([nw["version"].gather(acting["sf_rid"]).alias("sf_version"),
                            nw["version"].gather(acting["em_rid"]).alias("em_version")])

    released = pl.col("action").is_in(["release_changed", "release_direction"])
    released_pairs = acting.filter(released).select("pair_id", "sf_rid", "em_rid")
    # the events still bound to a pair: every stored pair's sides but those of released pairs (a rid belongs to
    # one pair at most)
    bound = (
        pl.zeros(nw.height, pl.Boolean, eager=True)
        .scatter(pl.concat([st["sf_rid"], st["em_rid"]]).drop_nulls(), True)
        .scatter(pl.concat([released_pairs["sf_rid"], released_pairs["em_rid"]]).drop_nulls(), False)
    )

    # unpair deltas: mailbox switch, both sides gone, released survivors, linked pairs that lost a side
    unpairs = pl.concat(
        [
            moved.select("user_key", "pair_id", _side(EM).alias("target_side"), pl.col("email_id").alias("target_id"),
                         pl.col("sf_id").alias("source_id"), pl.lit("mailbox_changed").alias("reason"), "mailbox"),
            acting.filter(pl.col("action").is_in(["gone", "unlink", "release_changed", "release_direction"])).select(
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

    deletes = acting.filter(pl.col("action") == "delete").select(
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
    in_pool = nw["in_window"].fill_null(False)
    if not all_synced:
        in_pool = in_pool & is_synced
    in_pool = in_pool & ~bound
    pool = nw.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("rid")).filter(in_pool)
    # a side lists an event once: the lookups checked the events pairs refer to, this the ones that may be written
    pool_ids = pool.select(combine([pl.col("uid"), pl.col("side"), pl.col("native_id")], _ID_SEED)).to_series()
    if pool_ids.n_unique() != pool_ids.len():
        for name in (SF, EM):
            _raise_duplicates(pool.filter(pl.col("side") == name), ["user_key", "native_id"], f"{name} events")
    del pool_ids
    # C15: children linked to their delivered copies by meeting uid, before any pairing by key (R3) or duplicate
    # key (R4): identity first, so a copy whose times or subject lag behind Salesforce still links
    uid_links = _links_by_meeting_uid(pool, st, nw, ev_all["meeting_uid"])
    if uid_links.height:
        pool = pool.filter(~pl.col("rid").is_in(pl.concat([uid_links["sf_rid"], uid_links["em_rid"]]).implode()))
    pool = pool.with_columns(
        (pl.len().over("uid", "side", "key") >= 2).and_(pl.col("key").is_not_null()).alias("dup"),
    ).with_columns(pl.col("dup").any().over("uid", "key").and_(pl.col("key").is_not_null()).alias("blocked"))
    pool = pool.hstack(_gather(u, pool["uid"], {"filter_mode": "filter_mode", "s2e": "s2e", "e2s": "e2s", "mailbox": "_u_mailbox"}))
    # the wide columns of every event this run may still read: the pool (filters, creates) and both sides of
    # the pairs to settle; one ordered pass over all events
    settle = acting.filter(pl.col("action") == "sync")
    rows = _Rows(ev_all, pool["rid"], settle["sf_rid"], settle["em_rid"])
    del settle
    pool = pool.hstack([_passes(pool, rows, directory)]).with_columns(
        # a snapshot keeps no subject for private events but keeps their key: the key says whether there was one
        _validity(pl.col("start"), pl.col("end"), pl.col("key").is_null()).alias("invalid"),
        pl.when(pl.col("side") == SF).then(pl.col("s2e")).otherwise(pl.col("e2s")).alias("source_ok"),
        pl.col("is_child").fill_null(False),
    )
    ok = pool.filter(~pl.col("blocked") & pl.col("invalid").is_null())
    # unique (user_key, key) per side: blocked keys are gone, null keys never match
    key_pairs = (
        ok.filter(pl.col("side") == SF).select(
            "user_key", "uid", "key", pl.col("rid").alias("sf_rid"), pl.col("native_id").alias("sf_id"),
            pl.col("passes").alias("sf_passes"), pl.col("is_child").alias("sf_is_child"),
        )
        .join(
            ok.filter(pl.col("side") == EM).select(
                "user_key", "key", pl.col("rid").alias("em_rid"), pl.col("native_id").alias("email_id"), pl.col("passes").alias("em_passes"),
            ),
            on=["user_key", "key"],
            how="inner",
            maintain_order="left",
        )
    )
    if uid_links.height:
        key_pairs = pl.concat([
            uid_links.select(
                *_gather(nw, uid_links["sf_rid"], {"user_key": "user_key", "uid": "uid", "key": "key"}),
                "sf_rid", nw["native_id"].gather(uid_links["sf_rid"]).alias("sf_id"), pl.lit(True).alias("sf_passes"),
                pl.lit(True).alias("sf_is_child"), "em_rid", nw["native_id"].gather(uid_links["em_rid"]).alias("email_id"),
                pl.lit(True).alias("em_passes"),
            ),
            key_pairs,
        ], how="vertical_relaxed")
    key_pairs = key_pairs.hstack(
        _gather(u, key_pairs["uid"], {"filter_mode": "filter_mode", "s2e": "s2e", "e2s": "e2s", "mailbox": "_u_mailbox", "sf_user_id": "sf_user_id"})
    ).filter(
        # C15: a child links to the delivered copy whatever the filter; C5: otherwise a pass on either side
        pl.col("sf_is_child").fill_null(False)
        | ((pl.col("filter_mode") != "updates_only") & (pl.col("sf_passes") | pl.col("em_passes")))
    )

    if nw.select(((pl.col("side") == SF) & pl.col("is_child").fill_null(False) & pl.col("key").is_not_null()).any()).item():
        bound_sf = st.filter(pl.col("sf_in").is_not_null()).join(released_pairs, on="pair_id", how="anti").select(
            "user_key", pl.col("sf_id").alias("native_id"))
        ev_sf_full = nw.filter((pl.col("side") == SF) & is_synced)
        groups = _group_designation(ev_sf_full, bound_sf, u)
        del bound_sf, ev_sf_full
    else:  # C15 concerns only groups with a child event
        groups = pl.DataFrame(schema={"org": pl.String, "key": pl.UInt64, "designated": pl.String, "delivered": pl.Boolean})
    del st, bound, released_pairs
    rest = pool.join(
        pl.concat([key_pairs.select(pl.col("sf_rid").alias("rid")), key_pairs.select(pl.col("em_rid").alias("rid"))]),
        on="rid", how="anti", maintain_order="left",
    ).with_columns(pl.col("organizer_email").str.to_lowercase().alias("org"))
    if groups.is_empty():
        rest = rest.with_columns(pl.lit(None, dtype=pl.String).alias("designated"), pl.lit(None, dtype=pl.Boolean).alias("delivered"))
    else:
        rest = rest.join(groups, on=["org", "key"], how="left", validate="m:1", maintain_order="left")
    rest = rest.with_columns(
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

    # R5: events a user's filter does not create are many and the same every run: one note per user
    filtered = rest.filter(~pl.col("blocked") & pl.col("source_ok") & ~((pl.col("filter_mode") != "updates_only") & pl.col("passes")))
    filter_notes = filtered.group_by("user_key").agg(
        pl.col("filter_mode").first(), pl.len().alias("n"),
        (pl.col("side") == SF).sum().alias("n_sf"), (pl.col("side") == EM).sum().alias("n_em"),
    ).select(
        "user_key",
        pl.lit("skipped").alias("kind"),
        pl.lit(None, dtype=Side).alias("side"),
        pl.lit(None, dtype=pl.String).alias("native_id"),
        pl.lit("filter").alias("reason"),
        pl.format("filter mode {} does not create {} unpaired events ({} on salesforce, {} on email) (R5)",
                  pl.col("filter_mode"), pl.col("n"), pl.col("n_sf"), pl.col("n_em")).alias("detail"),
    )
    notes: list[pl.DataFrame] = [
        _notes(pool.filter(pl.col("dup")), "duplicate", "duplicate_key",
               pl.format("{} unpaired events of this user on {} share this key; left alone on both sides this run (C4)",
                         pl.len().over("user_key", "side", "key"), pl.col("side"))),
        _notes(pool.filter(pl.col("blocked") & ~pl.col("dup")), "skipped", "duplicate_key",
               "the other side holds duplicates of this key; neither paired nor copied this run (C4)"),
        _notes(candidates.filter(pl.col("invalid").is_not_null()), "skipped", pl.col("invalid"),
               pl.format("not copied: {} (C19); retried on later runs", pl.col("invalid"))),
        filter_notes,
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

    del pool, rest, candidates, filtered, ok
    # ---- settle pairs that changed, and new key pairs (R7, C6, C7, C10) ---------------------------------
    sy_cols = ["pair_id", "user_key", "sf_id", "email_id", "sf_hash", "email_hash", "private_origin", "linked",
               "sf_changed", "em_changed", "s2e", "e2s", "_u_mailbox", "sf_user_id", "sf_rid", "em_rid", "is_new", "regroup"]
    sync_old = acting.filter(pl.col("action") == "sync").with_columns(
        pl.col("linked").fill_null(False), pl.lit(False).alias("is_new")
    ).select(sy_cols)
    del acting
    kp = key_pairs.with_columns(
        pl.lit(True).alias("is_new"),
        pl.lit(False).alias("regroup"),
        pl.col("sf_is_child").fill_null(False).alias("linked"),
        pl.lit(True).alias("sf_changed"),
        pl.lit(True).alias("em_changed"),
        pl.lit(None, dtype=Side).alias("private_origin"),
        pl.lit(None, dtype=pl.UInt64).alias("sf_hash"),
        pl.lit(None, dtype=pl.UInt64).alias("email_hash"),
    )
    kp = kp.with_columns(_hash_id_column(kp, ["user_key", "sf_id", "email_id"], "pair").alias("pair_id"))
    sy = pl.concat([sync_old, kp.select(sy_cols)], how="vertical_relaxed")
    side_cols = ["content_hash", "last_modified", "is_private", "is_child", "version", "start", "end", "is_all_day"]
    sy = sy.hstack([
        *_gather(nw, sy["sf_rid"], {c: "sf_" + c for c in side_cols}),
        *_gather(nw, sy["em_rid"], {c: "em_" + c for c in side_cols}),
    ])
    del key_pairs, kp, sync_old
    nw = None  # (captured by the closures above: rebound, not deleted)

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
            # a target that won and keeps its own body would be written what it already holds (its own
            # times and body: the projected hash is its hash): no row, no shaping (a third of the updates)
            sy.filter(pl.col("W").is_not_null() & ~((mode == "own") & (pl.col("W") == x))).select(
                "pair_id", "user_key", "is_new", "linked", "both_changed", "W", "win_why", "regroup",
                pl.lit("update").alias("kind"),
                _side(x).alias("target_side"),
                pl.col("sf_id" if x == SF else "email_id").alias("target_id"),
                pl.col(t + "version").alias("target_version"),
                pl.col(t + "is_private").alias("t_is_private"),
                pl.col(t + "content_hash").alias("t_hash"),
                pl.col("sf_id" if y == SF else "email_id").alias("source_id"),
                pl.col(o + "content_hash").alias("source_hash"),
                times["start"], times["end"], times["is_all_day"],
                mode.alias("body_mode"),
                pl.col(o + "is_private").alias("b_is_private"),
                writable.alias("writable"),
                pl.when(pl.lit(x == SF) & pl.col("sf_is_child").fill_null(False)).then(pl.lit("child_event")).otherwise(pl.lit("direction")).alias("block_reason"),
                pl.col("origin_new").alias("private_origin"),
                pl.col("_u_mailbox").alias("mailbox"),
                "sf_user_id",
                pl.col("sf_rid" if x == SF else "em_rid").alias("t_rid"),
                pl.col("sf_rid" if y == SF else "em_rid").alias("b_rid"),
            )
        )
    create_work = creates_src.hstack(_gather(u, creates_src["uid"], {"sf_user_id": "sf_user_id"})).select(
        pl.lit(None, dtype=pl.String).alias("pair_id"),
        "user_key",
        pl.lit(True).alias("is_new"),
        pl.lit(False).alias("linked"),
        pl.lit(False).alias("both_changed"),
        pl.col("side").alias("W"),
        pl.lit(None, dtype=pl.String).alias("win_why"),
        pl.lit(False).alias("regroup"),
        pl.lit("create").alias("kind"),
        _other(pl.col("side")).alias("target_side"),
        pl.lit(None, dtype=pl.String).alias("target_id"),
        pl.lit(None, dtype=pl.String).alias("target_version"),
        pl.lit(None, dtype=pl.Boolean).alias("t_is_private"),
        pl.lit(None, dtype=pl.UInt64).alias("t_hash"),
        pl.col("native_id").alias("source_id"),
        pl.col("content_hash").alias("source_hash"),
        "start", "end", "is_all_day",
        pl.when(pl.col("is_private")).then(pl.lit("private")).otherwise(pl.lit("cross")).alias("body_mode"),
        pl.col("is_private").alias("b_is_private"),
        pl.lit(True).alias("writable"),
        pl.lit(None, dtype=pl.String).alias("block_reason"),
        pl.when(pl.col("is_private")).then(pl.col("side")).cast(Side).alias("private_origin"),
        pl.col("_u_mailbox").alias("mailbox"),
        "sf_user_id",
        pl.lit(None, dtype=pl.UInt32).alias("t_rid"),
        pl.col("rid").alias("b_rid"),
    )
    create_work = create_work.with_columns(_hash_id_column(create_work, ["user_key", "W", "source_id"], "pair").alias("pair_id"))
    # unique among themselves; a clash with a stored pair id (a 128-bit collision) is refused by the store's
    # primary key on pairs.pair_id
    _check_unique_ids(pl.concat([sy.filter(pl.col("is_new"))["pair_id"], create_work["pair_id"]]), "new pairs")
    work = pl.concat([*work_parts, create_work], how="vertical_relaxed").with_row_index("wid")
    # the wide columns, by position, for the planned writes only
    work = _shape(work, u, directory, synced, settings, rows=rows)  # fetches the wide columns it needs
    del rows

    # C7: write only what changes the target as it will read back; creates always write.
    needs = work.filter((pl.col("kind") == "create") | pl.col("target_hash").ne_missing(pl.col("t_hash")))
    del work
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
        _notes(writes.filter(pl.col("subject_altered")), "altered", "subject_altered",
               "subject written to the mailbox with ? for control characters a mailbox cannot store (C19)",
               side=_other(pl.col("target_side")), native_id="source_id"),
        _notes(writes.filter(pl.col("description_altered")), "altered", "description_altered",
               "description written to the mailbox with ? for control characters a mailbox cannot store (C19)",
               side=_other(pl.col("target_side")), native_id="source_id"),
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
        .when(pl.col("regroup")).then(pl.lit("synced_invitee_added"))  # R13/C11
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
    n_del = deltas.filter(pl.col("op") == "delete").group_by("user_key").agg(pl.len().alias("D"))
    # C9's N: the active pairs of the users with deletions only (by position: cheaper than 850k strings)
    del_uid = n_del.select(_position(pl.col("user_key"), u["user_key"])).to_series()
    n_pairs = ap_uid.filter(ap_uid.is_in(del_uid.implode())).value_counts(name="N")
    n_pairs = n_pairs.select(u["user_key"].gather(n_pairs["uid"]).alias("user_key"), pl.col("N").cast(pl.UInt32))
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

    # sorted by (user, op, delta_id): the digests order as their hex does, and sort cheaper than 32-digit strings
    dig = id_digests(deltas, _id_fields(["user_key", "op", "target_side", "pair_id", "source_id", "target_id"], "delta"), _ID_SEEDS)
    # (a user's rank among the user_keys sorts as the user_key does, and cheaper)
    rank = (u["user_key"].rank("ordinal") - 1).cast(pl.UInt32)
    deltas = deltas.hstack(dig).with_columns(
        rank.gather(deltas.select(_position(pl.col("user_key"), u["user_key"])).to_series()).alias("_rank")
    ).sort(["_rank", "op", "h0", "h1"])
    deltas = deltas.with_columns(hex128(pl.col("h0"), pl.col("h1")).alias("delta_id")).drop("h0", "h1", "_rank")
    if dig["h0"].n_unique() != dig.height:  # (a repeat of half the digest only is no repeat: check the ids)
        _check_unique_ids(deltas["delta_id"], "deltas")

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


_NO_TEXT_NOTES = [pl.lit(False).alias(c) for c in ("subject_cut", "description_cut", "subject_altered", "description_altered")]


def _shape(work: pl.DataFrame, u: pl.DataFrame, directory: pl.DataFrame, synced: pl.DataFrame, settings: Settings,
           rows: "_Rows | None" = None) -> pl.DataFrame:
    """The payload each work row writes (R9/C10, C19, R10-R12) and its projected hash (C7).

    ``work`` holds the wide columns of the target (t_subject, t_description, t_invitees) and of the body
    source (b_subject, b_description, b_invitees, b_organizer), or, with ``rows``, their event positions t_rid
    and b_rid (then each body mode fetches only what it reads). Rows come back grouped by body mode,
    without the wide t_/b_ columns.
    """
    if "sf_user_id" not in work.columns:
        work = work.join(u.select("user_key", "sf_user_id"), on="user_key", how="left", validate="m:1", maintain_order="left")
    work = work.with_columns((pl.col("kind") == "create").alias("is_create"))
    t_wide, b_wide = ["subject", "description", "invitees"], ["subject", "description", "invitees", "organizer_email"]
    mode = pl.col("body_mode")
    own = work.filter(mode == "own")
    private = work.filter(mode == "private")
    cross = work.filter(~mode.is_in(["own", "private"]).fill_null(True))
    if rows is not None:
        t_own, t_cross, b_cross = rows.take(b_wide, own["t_rid"], cross["t_rid"], cross["b_rid"])
        own = own.hstack(t_own.select(pl.col(c).alias("t_" + c) for c in t_wide))
        cross = cross.hstack([
            *t_cross.select(pl.col(c).alias("t_" + c) for c in t_wide),
            *b_cross.select(pl.col(c).alias("b_" + c) for c in t_wide), b_cross["organizer_email"].alias("b_organizer"),
        ])
    no_who = pl.lit(None, dtype=pl.List(pl.String))
    parts = [
        # the target keeps its own body (C10: the private origin, or the side that won the body)
        own.with_columns(
            pl.col("t_subject").alias("subject"), pl.col("t_description").alias("description"),
            pl.col("t_is_private").alias("is_private"), pl.col("t_invitees").alias("invitees"),
            pl.col("t_invitees").alias("invitees_rb"), no_who.alias("who_ids"),
            *_NO_TEXT_NOTES,
        ),
        # R9/C10: the busy copy of a private event
        private.with_columns(
            pl.lit(PRIVATE_SUBJECT).alias("subject"), pl.lit("").alias("description"), pl.lit(True).alias("is_private"),
            _EMPTY_INV.alias("invitees"), _EMPTY_INV.alias("invitees_rb"),
            pl.when((pl.col("target_side") == SF) & pl.col("is_create")).then(pl.lit([], dtype=pl.List(pl.String))).alias("who_ids"),
            *_NO_TEXT_NOTES,
        ),
    ]
    schema = {"invitees": pl.List(INVITEE), "invitees_rb": pl.List(INVITEE), "who_ids": pl.List(pl.String)}
    fns = {SF: lambda w: inv.email_to_salesforce(w, directory, shared_activities=settings.shared_activities),
           EM: lambda w: inv.salesforce_to_email(w, directory, synced)}
    by_side = {SF: cross.filter(pl.col("target_side") == SF), EM: cross.filter(pl.col("target_side") != SF)}
    by_side = {side: rows for side, rows in by_side.items() if not rows.is_empty()}
    # the two directions are independent chains of many small polars steps (several single-threaded): run
    # them side by side (polars releases the GIL)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {side: pool.submit(fns[side], rows) for side, rows in by_side.items()}
        shaped_by_side = {side: f.result() for side, f in futures.items()}
    for side, rows in by_side.items():
        shaped = conform(shaped_by_side[side], schema)  # one row per input row, in order
        rows = rows.hstack(shaped)
        # C19 and the stored forms of text (transforms.text): what the target holds after the write, so the pair
        # remembers that and a round trip never counts as an edit (R7)
        subject, subject_cut, subject_altered = target_text(
            pl.col("b_subject"), pl.col("t_subject"), limit=SUBJECT_MAX, to_salesforce=side == SF, description=False)
        description, description_cut, description_altered = target_text(
            pl.col("b_description"), pl.col("t_description"), limit=DESCRIPTION_MAX, to_salesforce=side == SF,
            description=True)
        parts.append(rows.with_columns(
            subject.alias("subject"),
            description.alias("description"),
            pl.col("b_is_private").alias("is_private"),
            pl.col("invitees").fill_null(_EMPTY_INV),
            pl.col("invitees_rb").fill_null(_EMPTY_INV),
            subject_cut.alias("subject_cut"),
            description_cut.alias("description_cut"),
            subject_altered.alias("subject_altered"),
            description_altered.alias("description_altered"),
        ))
    drop = [c for c in ("t_subject", "t_description", "t_invitees", "b_subject", "b_description", "b_invitees", "b_organizer")]
    parts = [pt.drop(drop, strict=False) for pt in parts]
    work = pl.concat(parts, how="diagonal_relaxed")
    work = work.with_columns(clean_subject_series(work["subject"]).alias("_clean"))  # once, for both uses
    subject_missing = pl.col("_clean").fill_null("").str.len_bytes() == 0
    return work.with_columns(
        content_hash_expr(
            pl.col("_clean"), pl.col("start"), pl.col("end"), pl.col("description"), pl.col("is_all_day"),
            pl.col("is_private"), pl.col("invitees_rb"), cleaned=True,
        ).alias("target_hash"),
        _validity(pl.col("start"), pl.col("end"), subject_missing).alias("invalid"),
    ).drop("invitees_rb", "_clean")


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
