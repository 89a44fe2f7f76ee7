"""The reconciler: a pure planner from both sides' events and the stored pairs to a frame of deltas.

``reconcile`` is a pipeline of stages (``transforms/stages/``, one module each), columnar over all users at
once; each stage's docstring names the rules it applies, as docs/rules.md defines them (R1-R18, C1-C24).
To see what happens to, say, a deleted event, open ``transforms/stages/deletions.py``.

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

from dataclasses import dataclass
from datetime import date

import polars as pl

from transforms.outcomes import apply_outcomes
from transforms.schema import DELTA_SCHEMA, conform
from transforms.stages.changes import detect_changes
from transforms.stages.common import EM, SF
from transforms.stages.creations import create_work, plan_creations
from transforms.stages.deletions import refused_users, settle_deletions
from transforms.stages.finish import finish
from transforms.stages.frames import Run
from transforms.stages.groups import wait_for_groups
from transforms.stages.ids import check_unique_ids
from transforms.stages.lookup import look_up_pairs
from transforms.stages.pool import build_pool, pair_by_key
from transforms.stages.prepare import prepare_run, prepare_users
from transforms.stages.settle import settle_changes, update_work
from transforms.stages.shape import shape_payloads
from transforms.stages.writes import decide_writes, pair_deltas, write_deltas

__all__ = ["EM", "SF", "ReconcileResult", "Settings", "apply_outcomes", "prepare_users", "reconcile"]


@dataclass(frozen=True)
class Settings:
    """Run settings: the C9 guard's share and minimum, the org's Shared Activities (R12/C14), and
    ``sf_create_blocked``: the required custom field on Event that blocks email -> Salesforce creation (C18), or
    None."""

    mass_delete_share: float = 0.5
    mass_delete_min: int = 4
    shared_activities: bool = True
    sf_create_blocked: str | None = None


@dataclass(frozen=True)
class ReconcileResult:
    """What a run plans.

    deltas        DELTA_SCHEMA, sorted; ids (delta_id, and pair_id of new pairs) are deterministic 128-bit
                  digests as 32 hex digits (``transforms.stages.ids``), checked unique within the run.
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


def reconcile(
    events: pl.DataFrame,
    pairs: pl.DataFrame,
    users: pl.DataFrame,
    directory: pl.DataFrame,
    *,
    today: date,
    settings: Settings = Settings(),
) -> ReconcileResult:
    """Plan one run for every user in ``users``: the stages below, in order (the rules each applies: its module).

    Raises ValueError naming the id when a user, an event id (per user and side) or a stored pair's side
    id is not unique: that is corrupt state or a connector bug, and the run stops rather than guess.
    """
    run = prepare_run(events, users, directory, today, settings)          # C1, R6/C2, R15/C17
    stored = detect_changes(run, look_up_pairs(run, pairs))                # R3, C17; R7, R13/C11
    settled = settle_deletions(run, stored)                                # R6, R8/C8, C15, C17
    refused = refused_users(run, stored, settled.deltas)                   # C9
    pool = build_pool(run, stored, settled)                                # R3, R4/C4, R5/C5, C15
    key_pairs = pair_by_key(run, pool)                                     # R3, C5, C15
    rest = wait_for_groups(run, stored, settled, pool, key_pairs)          # R13/C15
    creations = plan_creations(run, rest)                                  # R5, R14/C16, C18, C19
    sy = settle_changes(run, settled, key_pairs)                           # R7, C6, C7, C10
    shaped = shape_payloads(_work(run, sy, create_work(run, creations)), run, pool.rows)  # R9-R12, C10-C14, C19
    writes = decide_writes(shaped, sy)                                     # C7, C6, C19
    deltas = pl.concat([settled.deltas, conform(pair_deltas(sy), DELTA_SCHEMA), conform(write_deltas(writes.writes), DELTA_SCHEMA)])
    deltas, notes, refresh = finish(run, deltas, refused, sy, writes, [*pool.notes, *creations.notes, *writes.notes])
    return ReconcileResult(deltas=deltas, notes=notes, events=run.events.hstack([run.narrow["in_window"]]),
                           pair_refresh=refresh)


def _work(run: Run, sy: pl.DataFrame, creates: pl.DataFrame) -> pl.DataFrame:
    """The write rows to shape: updates of settled pairs, then creations. New pair ids are unique among
    themselves; a clash with a stored pair id (a 128-bit collision) is refused by the store's primary key."""
    check_unique_ids(pl.concat([sy.filter(pl.col("is_new"))["pair_id"], creates["pair_id"]]), "new pairs")
    return pl.concat([*update_work(sy), creates], how="vertical_relaxed").with_row_index("wid")
