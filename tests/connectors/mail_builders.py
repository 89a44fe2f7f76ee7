"""Frames the mailbox-connector tests hand to ``apply`` and read back (shared by every mailbox kind's tests)."""

from __future__ import annotations

import polars as pl

from transforms.schema import DELTA_SCHEMA, conform

ANN = "ann@example.com"


def email_deltas(*rows: dict, mailbox: str = ANN) -> pl.DataFrame:
    """``DELTA_SCHEMA`` rows targeting ``mailbox``; each row gives at least delta_id and op."""
    base = {"user_key": mailbox, "target_side": "email", "mailbox": mailbox, "is_all_day": False,
            "is_private": False, "description": "", "invitees": []}
    return conform(pl.DataFrame([{**base, **r} for r in rows], schema_overrides=DELTA_SCHEMA, strict=False),
                   DELTA_SCHEMA)


def inv(email: str, record_type: str = "contact") -> dict:
    """An invitee of a delta: a Contact by default, ``user`` for a synced User."""
    return {"email": email, "response": "none", "record_id": None, "record_type": record_type}


def by_subject(frame: pl.DataFrame) -> dict[str, dict]:
    return {r["subject"]: r for r in frame.to_dicts()}
