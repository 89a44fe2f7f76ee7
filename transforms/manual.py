"""Manual sync of one event (R18, C21): a pure planner, like ``transforms.reconcile`` but for one event.

``push_one`` plans what pushing one event by hand writes: it pairs the event with a unique unpaired
counterpart of the same key on the other side (the pushed side wins), or creates the counterpart. It ignores
the user's filter mode, direction and window, but obeys C15 (group events), C18 (required custom field) and
C19 (Salesforce limits). An event that is already paired is left alone, with a note.

It does not re-implement the rules: it hands the reconciler a one-event world -- the pushed event, the
unpaired counterparts with its key, and the user's settings overridden to "all events, one way from the
pushed side" with a window around the event -- so the deltas are shaped exactly as a sync shapes them
(payload, private copy, invitees and Who, projected target hash, deterministic pair and delta ids). Only
the C15 designation, which needs the whole group, is judged here before that.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from transforms.normalise import normalise
from transforms.reconcile import EM, SF, ReconcileResult, Settings, prepare_users, reconcile
from transforms.schema import (
    DELTA_SCHEMA,
    EVENT_SCHEMA,
    NOTE_SCHEMA,
    PAIR_REFRESH_SCHEMA,
    PAIR_SCHEMA,
    USER_SCHEMA,
    Side,
    conform,
    empty,
)
from transforms.stages.groups import group_designation

ONE_WAY = {SF: "salesforce_to_email", EM: "email_to_salesforce"}
REASON_PREFIX = "manual:"


def _note(user_key: str | None, kind: str, reason: str, detail: str, side: str | None = None,
          native_id: str | None = None) -> pl.DataFrame:
    return pl.DataFrame([{"user_key": user_key, "kind": kind, "side": side, "native_id": native_id,
                          "reason": reason, "detail": detail}], schema=NOTE_SCHEMA)


def _result(notes: list[pl.DataFrame], events: pl.DataFrame, deltas: pl.DataFrame | None = None) -> ReconcileResult:
    note_frame = pl.concat([conform(n, NOTE_SCHEMA) for n in notes]) if notes else empty(NOTE_SCHEMA)
    return ReconcileResult(
        deltas=conform(deltas, DELTA_SCHEMA) if deltas is not None else empty(DELTA_SCHEMA),
        notes=note_frame,
        events=events,
        pair_refresh=empty(PAIR_REFRESH_SCHEMA),
    )


def push_one(
    side: str,
    native_id: str,
    events: pl.DataFrame,
    pairs: pl.DataFrame,
    users: pl.DataFrame,
    directory: pl.DataFrame,
    today: date,
    settings: Settings = Settings(),
) -> ReconcileResult:
    """Plan the manual sync of the event ``native_id`` on ``side`` (R18/C21).

    ``events``: EVENT_SCHEMA rows holding the pushed event, the events of its user on the other side that
    may be its counterpart (any others are ignored), and, for a Salesforce group event, the group's other
    events (parent and children of other synced users) so that C15 can be judged. ``pairs``: every stored
    pair. ``users``: every synced user (USER_SCHEMA); the pushed event's user must be one. ``today`` is
    used only for the notes' sake: the window is ignored.
    """
    if side not in (SF, EM):
        raise ValueError(f"side must be {SF!r} or {EM!r}, got {side!r}")
    other = EM if side == SF else SF
    ev = normalise(conform(events, EVENT_SCHEMA)) if events.height else normalise(conform(empty(EVENT_SCHEMA), EVENT_SCHEMA))
    pushed = ev.filter((pl.col("side") == side) & (pl.col("native_id") == native_id))
    if pushed.is_empty():
        return _result([_note(None, "skipped", "not_found",
                              f"no {side} event {native_id} of a synced user was found (deleted, or owned by someone "
                              "calsync does not sync); nothing pushed (R18)", side, native_id)], ev)
    row = pushed.row(0, named=True)
    user_key = row["user_key"]
    users = conform(users, USER_SCHEMA)
    me = users.filter(pl.col("user_key") == user_key)
    if me.is_empty():
        return _result([_note(user_key, "skipped", "not_synced",
                              f"{user_key} is not a synced user of this config; nothing pushed (R18)", side, native_id)], ev)
    mailbox = me["mailbox"][0]

    # C17: only pairs with the user's current mailbox count.
    mine = conform(pairs, PAIR_SCHEMA).filter(
        (pl.col("user_key") == user_key) & (pl.col("mailbox").is_null() | (pl.col("mailbox") == mailbox))
    )
    id_col = "sf_id" if side == SF else "email_id"
    if native_id in mine[id_col].to_list():
        return _result([_note(user_key, "skipped", "already_paired",
                              "this event is already paired: the sync keeps it up to date; nothing pushed (C21)",
                              side, native_id)], ev)
    other_col = "email_id" if side == SF else "sf_id"
    taken = set(mine[other_col].drop_nulls().to_list())
    candidates = ev.filter(
        (pl.col("user_key") == user_key)
        & (pl.col("side") == other)
        & ~pl.col("native_id").is_in(list(taken))
        # An event without a key (no subject) has no counterpart by key.
        & (pl.col("key") == pl.lit(row["key"], dtype=pl.UInt64)).fill_null(False)
        & ((pl.col("side") == SF) | pl.col("mailbox").is_null() | (pl.col("mailbox") == mailbox))
    )

    link_only = _link_only(side, row, ev, pairs, users, today)
    res = _one_event_world(side, row, pushed, candidates, users, directory, today, settings)
    deltas = res.deltas
    notes = [res.notes]
    if link_only is not None:
        creates = deltas.filter((pl.col("op") == "create") & (pl.col("source_id") == native_id))
        if creates.height:
            deltas = deltas.join(creates.select("delta_id"), on="delta_id", how="anti")
            notes.append(_note(user_key, "skipped", "child_event", link_only + "; no copy is there yet", side, native_id))
    deltas = deltas.with_columns((pl.lit(REASON_PREFIX) + pl.col("reason")).alias("reason"))
    if deltas.is_empty() and not any(n.height for n in notes):
        notes.append(_note(user_key, "skipped", "nothing_to_do", "nothing to write for this event (C21)", side, native_id))
    out_notes = pl.concat([conform(n, NOTE_SCHEMA) for n in notes]).with_columns(pl.col("side").cast(Side))
    return ReconcileResult(deltas=conform(deltas, DELTA_SCHEMA), notes=out_notes, events=res.events,
                           pair_refresh=empty(PAIR_REFRESH_SCHEMA))


def _link_only(side: str, row: dict, ev: pl.DataFrame, pairs: pl.DataFrame, users: pl.DataFrame, today: date) -> str | None:
    """C15: a Salesforce group event's email meeting is written by its designated organizer only; anyone else
    can only link to the copy delivered to them. The reason the pushed event only links, or None."""
    if side != SF or row["key"] is None:
        return None
    bound = conform(pairs, PAIR_SCHEMA).filter(pl.col("sf_id").is_not_null()).select(
        "user_key", pl.col("sf_id").alias("native_id"))
    groups = group_designation(ev.filter(pl.col("side") == SF), bound, prepare_users(users, today))
    mine_g = groups.filter((pl.col("org") == (row["organizer_email"] or "").lower()) & (pl.col("key") == row["key"]))
    if not mine_g.height:
        return None
    designated, delivered = mine_g["designated"][0], bool(mine_g["delivered"][0])
    if delivered or (designated is not None and designated != row["user_key"]):
        return (f"group event: the meeting is written by {designated or 'its organizer'}'s sync and delivered to "
                f"{row['user_key']}'s mailbox; this event links to that copy and is not created again (C15)")
    if row["is_child"] and designated is None:
        return "group event: a child event is never written and no synced organizer can write it (C15)"
    return None


def _one_event_world(side: str, row: dict, pushed: pl.DataFrame, candidates: pl.DataFrame, users: pl.DataFrame,
                     directory: pl.DataFrame, today: date, settings: Settings) -> ReconcileResult:
    """R18/C21: reconcile the pushed event and its candidates alone, its user set to "all events", one way from
    the pushed side, the window around the event."""
    user_key = row["user_key"]
    me = pl.col("user_key") == user_key
    overridden = users.with_columns(
        pl.when(me).then(pl.lit(ONE_WAY[side])).otherwise(pl.col("direction")).alias("direction"),
        pl.when(me).then(pl.lit("all")).otherwise(pl.col("filter_mode")).alias("filter_mode"),
        pl.when(me).then(pl.lit(None, dtype=pl.Date)).otherwise(pl.col("start_date")).alias("start_date"),
        pl.when(me).then(pl.lit(False)).otherwise(pl.col("allow_mass_delete")).alias("allow_mass_delete"),
    )
    world = pl.concat([pushed, candidates]).select(list(EVENT_SCHEMA))
    around = row["start"].date() if row["start"] is not None else today
    return reconcile(world, empty(PAIR_SCHEMA), overridden, directory, today=around, settings=settings)
