"""Stage 1, ``prepare_run``: the users with their windows (C1) and directions, the normalised events, which of
them are in the window (R6, C2) and which belong to a synced user's current mailbox (R15, C17)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import polars as pl

from transforms import invitees as inv
from transforms.normalise import normalise
from transforms.schema import USER_SCHEMA, UTC_US, conform
from transforms.stages.common import SF
from transforms.stages.frames import Run
from transforms.stages.positions import gather, position, raise_duplicates
from transforms.window import window_bounds

if TYPE_CHECKING:
    from transforms.reconcile import Settings

# the columns the planner decides on; the wide ones (subject, description, invitees) stay in Run.events
NARROW = ["side", "user_key", "native_id", "version", "start", "end", "is_all_day", "is_private", "organizer_email",
          "last_modified", "is_child", "mailbox", "key", "content_hash"]
_DIRECTORY = {"record_id": pl.String, "record_type": pl.String, "email": pl.String, "owner_id": pl.String}


def prepare_users(users: pl.DataFrame, today: date) -> pl.DataFrame:
    """USER_SCHEMA + per-user window (C1: the later of today - 1 month and start_date) and direction flags (R2)."""
    start, end = window_bounds(today)
    start_date = pl.col("start_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return conform(users, USER_SCHEMA).with_columns(
        pl.max_horizontal(pl.lit(start, dtype=UTC_US), start_date).alias("win_start"),
        pl.lit(end, dtype=UTC_US).alias("win_end"),
        pl.col("direction").is_in(["both", "salesforce_to_email"]).alias("s2e"),
        pl.col("direction").is_in(["both", "email_to_salesforce"]).alias("e2s"),
        pl.col("allow_mass_delete").fill_null(False),
    )


def prepare_run(events: pl.DataFrame, users: pl.DataFrame, directory: pl.DataFrame, today: date,
                settings: Settings) -> Run:
    """C1, R6/C2, R15/C17: users (each needs a unique user_key), events normalised and scoped to the window and
    to their user's current mailbox."""
    u = prepare_users(users, today)
    if u["user_key"].null_count():
        raise ValueError("users: a user without a user_key (email address); every synced user needs one")
    if u["user_key"].n_unique() != u.height:
        raise_duplicates(u, ["user_key"], "users")
    u = u.with_row_index("uid")
    ev = normalise(events)
    # per-user attributes by the user's position (uid): a lookup, not a join that copies every event
    uid = ev.select(position(pl.col("user_key"), u["user_key"]).alias("uid")).to_series()
    scope = _scope(ev, u, uid)
    synced_event = scope["_synced"]
    return Run(
        users=u, synced=u.select("user_key"), directory=inv.prepare_directory(conform(directory, _DIRECTORY)),
        settings=settings, events=ev, narrow=ev.select(NARROW).hstack([scope["in_window"], uid]),
        synced_event=synced_event, all_synced=bool(synced_event.all()),
    )


def _scope(ev: pl.DataFrame, u: pl.DataFrame, uid: pl.Series) -> pl.DataFrame:
    """Per event: ``in_window`` (R6/C2: overlaps its user's window; null for events of no synced user) and
    ``_synced`` (R15/C17: of a synced user and, on email, from that user's current mailbox)."""
    # With the users' mailboxes distinct (the rule), "the event's mailbox is its user's" is "the mailbox's owner
    # position is the event's user position": no gather of 2 million mailbox strings
    with_mb = u.filter(pl.col("mailbox").is_not_null())
    if with_mb["mailbox"].n_unique() == with_mb.height:
        mb_uid = with_mb["uid"].gather(ev.select(position(pl.col("mailbox"), with_mb["mailbox"])).to_series())
        own_mailbox = pl.col("_mb_uid") == pl.col("_uid")
    else:
        mb_uid = u["mailbox"].gather(uid)
        own_mailbox = pl.col("mailbox") == pl.col("_mb_uid")
    if u.select(pl.col("win_start").n_unique() == 1).item():  # one window for all: no per-event gather of bounds
        lo, hi = u["win_start"][0], u["win_end"][0]
        window = pl.when(pl.col("_uid").is_not_null()).then((pl.col("start") < hi) & (pl.col("end") > lo))
        bounds = []
    else:
        window = (pl.col("start") < pl.col("win_end")) & (pl.col("end") > pl.col("win_start"))
        bounds = gather(u, uid, {"win_start": "win_start", "win_end": "win_end"})
    no_mb = u["mailbox"].is_null()
    return ev.select("side", "mailbox", "start", "end").hstack([
        *bounds, (no_mb.gather(uid) if no_mb.any() else pl.repeat(False, uid.len(), eager=True)).alias("_no_mb"),
        mb_uid.alias("_mb_uid"), uid.alias("_uid"),
    ]).select(
        window.alias("in_window"),
        (
            pl.col("_uid").is_not_null()
            & ((pl.col("side") == SF) | pl.col("mailbox").is_null() | pl.col("_no_mb") | own_mailbox.fill_null(False))
        ).alias("_synced"),
    )
