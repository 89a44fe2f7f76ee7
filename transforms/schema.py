"""The canonical frames calsync passes between its stages, defined once.

Glossary
--------
side        ``salesforce`` or ``email``.
user_key    a synced user's email address, lower-case. One Salesforce User and one mailbox each.
native_id   the id of an event on its own side (Salesforce Event Id, or the EWS item id).
version     the side's change token (SystemModstamp, ChangeKey). Never part of the content hash.
pair        an event on each side of one user known to be the same meeting (R3).
delta       one write (or pair-state change) the reconciler plans; the loader turns it into API calls
            and records an outcome for it.

Connectors return frames of ``EVENT_SCHEMA``; the reconciler takes them with ``PAIR_SCHEMA``,
``DIRECTORY_SCHEMA`` and ``USER_SCHEMA`` and returns ``DELTA_SCHEMA`` and ``NOTE_SCHEMA`` frames.
"""

from __future__ import annotations

import polars as pl

SIDES = ["salesforce", "email"]
Side = pl.Enum(SIDES)
UTC_US = pl.Datetime("us", "UTC")

# record_type of an invitee: a Salesforce Contact or Lead, a synced (or other) Salesforce User,
# or "none" when the address matches no Salesforce record.
RECORD_TYPES = ["contact", "lead", "user", "none"]
# response of an invitee, in the email vocabulary (C13 maps it to Salesforce's New/Accepted/Declined).
RESPONSES = ["none", "accepted", "declined", "tentative"]

INVITEE = pl.Struct(
    {
        "email": pl.String,  # lower-case; null when the source has no address (C19: ignored)
        "response": pl.String,  # one of RESPONSES
        "record_id": pl.String,  # Salesforce Contact/Lead/User id, null on the email side until matched
        "record_type": pl.String,  # one of RECORD_TYPES
    }
)

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "side": Side,
    "user_key": pl.String,
    "native_id": pl.String,
    "version": pl.String,
    "subject": pl.String,
    "start": UTC_US,
    "end": UTC_US,
    "is_all_day": pl.Boolean,
    "description": pl.String,
    "is_private": pl.Boolean,
    "organizer_email": pl.String,
    "last_modified": UTC_US,
    "invitees": pl.List(INVITEE),
    "is_child": pl.Boolean,
    "meeting_uid": pl.String,
    "mailbox": pl.String,
}

# A pair as the store keeps it between runs (the DuckDB table pairs, connectors/store.py).
PAIR_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.String,
    "user_key": pl.String,
    "mailbox": pl.String,
    "sf_id": pl.String,
    "email_id": pl.String,
    "sf_hash": pl.UInt64,  # content hash of the Salesforce side at the last sync
    "email_hash": pl.UInt64,  # content hash of the email side at the last sync
    "private_origin": Side,  # C10: which side a private event came from; null when not private
    "linked": pl.Boolean,  # C15: a Salesforce child event linked to a delivered meeting copy
    "created_run": pl.String,
    "last_run": pl.String,
}

# Salesforce Contacts, Leads and Users that email addresses can be matched against (R11, R12).
DIRECTORY_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "record_type": pl.String,  # contact, lead, user
    "email": pl.String,  # lower-case
    "owner_id": pl.String,  # the record's owner (a User id); null for users
}

# One row per synced user: the validated config plus what extract learned about them.
USER_SCHEMA: dict[str, pl.DataType] = {
    "user_key": pl.String,
    "direction": pl.String,  # both, salesforce_to_email, email_to_salesforce
    "filter_mode": pl.String,  # updates_only, all, with_invitee, with_contact_or_lead (R5 a-d)
    "start_date": pl.Date,
    "mailbox": pl.String,
    "sf_user_id": pl.String,
    "send_external_invites": pl.Boolean,
    "allow_mass_delete": pl.Boolean,
}

OPS = ["create", "update", "delete", "pair", "unpair"]

# One row per planned change. Payload columns (subject .. who_ids) are what a create/update writes on
# the target side, already shaped by the rules (R9 private copy, C19 limits, R10/R11 invitees, C14 Who).
DELTA_SCHEMA: dict[str, pl.DataType] = {
    "delta_id": pl.String,  # deterministic: the same inputs give the same ids (replay relies on it)
    "user_key": pl.String,
    "op": pl.Enum(OPS),
    "target_side": Side,
    "reason": pl.String,
    "pair_id": pl.String,  # existing pair, or the id the new pair will get
    "source_id": pl.String,  # native id of the event copied from (create/update/pair)
    "target_id": pl.String,  # native id written to (update/delete/pair); null for create
    "target_version": pl.String,  # the target's change token when planned (optimistic concurrency)
    "mailbox": pl.String,  # for email targets: the mailbox written to
    "owner_id": pl.String,  # for Salesforce targets: the owning User id
    "subject": pl.String,
    "start": UTC_US,
    "end": UTC_US,
    "is_all_day": pl.Boolean,
    "description": pl.String,
    "is_private": pl.Boolean,
    "invitees": pl.List(INVITEE),
    "who_ids": pl.List(pl.String),  # Salesforce Who records (C14)
    "source_hash": pl.UInt64,  # content hash of the source side now
    "target_hash": pl.UInt64,  # content hash the target side will have after the write
    "private_origin": Side,
}

NOTE_KINDS = ["duplicate", "conflict", "skipped", "refused", "notice", "truncated", "altered"]

# Things the run did not write but must report: duplicates, conflicts, skips, refused users.
NOTE_SCHEMA: dict[str, pl.DataType] = {
    "user_key": pl.String,
    "kind": pl.String,  # one of NOTE_KINDS
    "side": Side,
    "native_id": pl.String,
    "reason": pl.String,  # a reason code, e.g. duplicate_key, too_long, direction, mass_deletion
    "detail": pl.String,  # a sentence for people
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame of ``schema``."""
    return pl.DataFrame(schema=schema)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast ``df`` to exactly ``schema`` (missing columns become null)."""
    cols = []
    for name, dtype in schema.items():
        if name in df.columns:
            cols.append(pl.col(name).cast(dtype))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(cols)


OUTCOME_STATUSES = ["applied", "failed", "skipped"]

# What the loader reports for every delta it was given (one row each, always).
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "delta_id": pl.String,
    "status": pl.String,  # applied, failed, skipped
    "error": pl.String,  # reason code + message for failed/skipped; never a secret
    "retriable": pl.Boolean,  # failed because of throttling/5xx/timeout: a replay may succeed
    "new_id": pl.String,  # native id created (create), else the target id
    "new_version": pl.String,  # the target's change token after the write, when known
}

# Columns transforms.normalise adds to an EVENT_SCHEMA frame. Both are 64-bit digests (transforms.digest,
# stable for the pinned polars version), so a snapshot can keep them for private events whose subject it
# does not keep (R9).
DERIVED_SCHEMA: dict[str, pl.DataType] = {
    "key": pl.UInt64,  # C3: normalised subject, all-day flag, start, end
    "content_hash": pl.UInt64,  # synced fields only (R1), never version/last_modified
}

# --- added by transforms (reconcile) -----------------------------------------------------------------

# DELTA_SCHEMA["linked"]: a pair delta linking a Salesforce child event to a delivered meeting copy (C15).
DELTA_SCHEMA["linked"] = pl.Boolean

# Stored hashes of pairs whose content changed without anything to write (C6 direction skips, C7
# projections that already agree, child events): the store writes these onto ``pairs`` with the outcomes
# (``transforms.reconcile.apply_outcomes(..., refresh=...)``). Never overlaps the pairs of any delta.
PAIR_REFRESH_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.String,
    "sf_hash": pl.UInt64,
    "email_hash": pl.UInt64,
    "private_origin": Side,
}

# C13: invitee responses in frames use RESPONSES; Salesforce EventRelation.Status knows only these three.
RESPONSE_TO_SALESFORCE = {"accepted": "Accepted", "declined": "Declined", "tentative": "New", "none": "New"}
SALESFORCE_TO_RESPONSE = {"Accepted": "accepted", "Declined": "declined", "New": "none"}

# C19 limits and the R9/C10 private copy.
SUBJECT_MAX = 255
DESCRIPTION_MAX = 32_000
MAX_EVENT_DAYS = 14
WHO_CONTACTS_MAX = 50
PRIVATE_SUBJECT = "Private"
