"""Stage 3, ``detect_changes``: which side of each stored pair changed since the last sync (R7: its content
hash differs from the stored one; timestamps alone never count), and the one change no hash shows (R13/C11)."""

from __future__ import annotations

import dataclasses

import polars as pl

from transforms.stages.frames import Run, StoredPairs
from transforms.stages.groups import missing_synced_attendees


def detect_changes(run: Run, stored: StoredPairs) -> StoredPairs:
    """R7: ``sf_changed`` / ``em_changed`` per active pair (a side present whose hash differs from the stored
    one). R13/C11 ``regroup``: a synced invited User missing from the organizer's email copy (they started
    syncing after it was written) counts as a Salesforce change, so the copy is re-projected with them."""
    st = stored.active
    st = st.hstack([missing_synced_attendees(st, run.narrow, run.events, run.synced)])
    sf_here, em_here = pl.col("sf_in").is_not_null(), pl.col("em_in").is_not_null()
    em_changed = em_here & pl.col("em_now").ne_missing(pl.col("email_hash"))
    sf_hash_changed = pl.col("sf_now").ne_missing(pl.col("sf_hash"))
    # regroup is the only trigger: a pair that changed anyway is re-projected anyway
    st = st.with_columns((pl.col("regroup") & sf_here & ~sf_hash_changed & ~em_changed).alias("regroup"))
    st = st.with_columns(
        (sf_here & (sf_hash_changed | pl.col("regroup"))).alias("sf_changed"), em_changed.alias("em_changed"),
    ).drop("sf_now", "em_now")
    return dataclasses.replace(stored, active=st)
