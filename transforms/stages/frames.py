"""The frames the planner's stages hand each other, one small dataclass per hand-off (in pipeline order).

Columns are named as in the stages: ``rid`` an event's row position in ``Run.narrow`` (and ``Run.events``),
``uid`` a user's in ``Run.users``; ``sf_``/``em_`` prefix a side's columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from transforms.reconcile import Settings
    from transforms.stages.positions import Rows


@dataclass(frozen=True)
class Run:
    """What every stage reads and none changes (``prepare_run``, C1, R6/C2, R15/C17).

    users         USER_SCHEMA + uid, win_start, win_end, s2e, e2s (the direction allows salesforce -> email,
                  email -> salesforce)
    synced        user_key of every synced user
    directory     the Contacts and Leads (``transforms.invitees.prepare_directory``)
    events        the normalised events, every column (EVENT_SCHEMA + key, content_hash)
    narrow        the same rows, narrow columns only (ids, digests, flags, times) + in_window + uid
    synced_event  per event: it belongs to a synced user (an email event: to the user's current mailbox)
    """

    users: pl.DataFrame
    synced: pl.DataFrame
    directory: pl.DataFrame
    settings: Settings
    events: pl.DataFrame
    narrow: pl.DataFrame
    synced_event: pl.Series
    all_synced: bool


@dataclass(frozen=True)
class StoredPairs:
    """The stored pairs as found this run (``look_up_pairs``, R3, C17; ``detect_changes``, R7).

    active  pairs of synced users on their current mailbox + the user's settings (_u_mailbox, s2e, e2s,
            sf_user_id), each side's rid (null: gone), sf_in / em_in (in the window; null: gone), sf_child;
            after ``detect_changes`` also sf_changed, em_changed, regroup
    moved   pairs whose mailbox is no longer the user's (C17: unpaired)
    """

    active: pl.DataFrame
    moved: pl.DataFrame


@dataclass(frozen=True)
class Settled:
    """What the stored pairs do this run (``settle_deletions``, R6, R8, C8, C15).

    acting    the pairs that do something (``action``: sync, delete, gone, unlink, release_changed,
              release_direction), with sf_version / em_version
    released  pair_id, sf_rid, em_rid of released pairs: their survivor is unpaired again
    bound     per event (rid): still bound to a pair after this stage
    deltas    the unpair and delete deltas
    """

    acting: pl.DataFrame
    released: pl.DataFrame
    bound: pl.Series
    deltas: pl.DataFrame


@dataclass(frozen=True)
class Pool:
    """Unpaired in-window events of synced users (``build_pool``, R3, R4, C4, C5, C15).

    events  one row per pool event: narrow columns + rid, dup, blocked, passes, invalid, source_ok and the user's
            filter_mode, s2e, e2s, _u_mailbox
    links   (sf_rid, em_rid): Salesforce child events linked to their delivered copy by meeting uid (C15)
    rows    the wide columns of every event the run may still read (pool, and both sides of pairs to sync)
    notes   duplicates and blocked keys (C4)
    """

    events: pl.DataFrame
    links: pl.DataFrame
    rows: Rows
    notes: list[pl.DataFrame]


@dataclass(frozen=True)
class Creations:
    """Pool events to copy to the other side (``plan_creations``, R5, R14, C15, C16, C18, C19), and the notes
    about those that are not."""

    sources: pl.DataFrame
    notes: list[pl.DataFrame]


@dataclass(frozen=True)
class Writes:
    """The planned writes that change their target (``decide_writes``, C7), and what is not written.

    writes   update and create rows with their payload and projected target hash
    invalid  writable rows that fail C19 (retried later: their pairs are not refreshed)
    notes    blocked by direction or child event, C19 skips, cuts and alterations, conflicts (R7/C6), one-way
             changes not copied (C6)
    """

    writes: pl.DataFrame
    invalid: pl.DataFrame
    notes: list[pl.DataFrame]
