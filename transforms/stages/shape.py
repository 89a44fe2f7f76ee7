"""Stage 9, ``shape_payloads``: what each write row writes, as the target will hold it: the private busy copy
(R9/C10), invitees and Who (R10-R12, C11-C14, in ``transforms.invitees``), texts cut or altered to the target's
limits (C19, ``transforms.text``), and the projected content hash that C7 compares with the target's."""

from __future__ import annotations

import polars as pl

from transforms import invitees as inv
from transforms.normalise import clean_subject_series, content_hash_expr
from transforms.schema import DESCRIPTION_MAX, INVITEE, PRIVATE_SUBJECT, SUBJECT_MAX, conform
from transforms.stages.common import EM, EMPTY_INVITEES, SF, validity
from transforms.stages.frames import Run
from transforms.stages.positions import Rows
from transforms.text import target_text

_NO_TEXT_NOTES = [pl.lit(False).alias(c) for c in ("subject_cut", "description_cut", "subject_altered", "description_altered")]
_T_WIDE, _B_WIDE = ["subject", "description", "invitees"], ["subject", "description", "invitees", "organizer_email"]
_SHAPED = {"invitees": pl.List(INVITEE), "invitees_rb": pl.List(INVITEE), "who_ids": pl.List(pl.String)}


def shape_payloads(work: pl.DataFrame, run: Run, rows: Rows) -> pl.DataFrame:
    """R9/C10, R10-R12/C11-C14, C19, C7: each work row's payload (subject, description, is_private, invitees,
    who_ids), its C19 notes (subject_cut, ...), ``invalid`` (C19) and ``target_hash``, the content hash of the
    target as it will read back. ``work`` holds each row's event positions t_rid (the target) and b_rid (the
    body's source) and ``body_mode`` (own, private, cross: ``update_work``). Rows come back grouped by body mode."""
    work = work.join(run.users.select("user_key", "sf_user_id"), on="user_key", how="left", validate="m:1",
                     maintain_order="left") if "sf_user_id" not in work.columns else work
    work = work.with_columns((pl.col("kind") == "create").alias("is_create"))
    mode = pl.col("body_mode")
    own, private = work.filter(mode == "own"), work.filter(mode == "private")
    cross = work.filter(~mode.is_in(["own", "private"]).fill_null(True))
    t_own, t_cross, b_cross = rows.take(_B_WIDE, own["t_rid"], cross["t_rid"], cross["b_rid"])
    own = own.hstack(t_own.select(pl.col(c).alias("t_" + c) for c in _T_WIDE))
    cross = cross.hstack([
        *t_cross.select(pl.col(c).alias("t_" + c) for c in _T_WIDE),
        *b_cross.select(pl.col(c).alias("b_" + c) for c in _T_WIDE), b_cross["organizer_email"].alias("b_organizer"),
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
            EMPTY_INVITEES.alias("invitees"), EMPTY_INVITEES.alias("invitees_rb"),
            pl.when((pl.col("target_side") == SF) & pl.col("is_create")).then(pl.lit([], dtype=pl.List(pl.String))).alias("who_ids"),
            *_NO_TEXT_NOTES,
        ),
        *_cross_bodies(cross, run),
    ]
    drop = ["t_subject", "t_description", "t_invitees", "b_subject", "b_description", "b_invitees", "b_organizer"]
    work = pl.concat([pt.drop(drop, strict=False) for pt in parts], how="diagonal_relaxed")
    work = work.with_columns(clean_subject_series(work["subject"]).alias("_clean"))  # once, for both uses
    subject_missing = pl.col("_clean").fill_null("").str.len_bytes() == 0
    return work.with_columns(
        content_hash_expr(
            pl.col("_clean"), pl.col("start"), pl.col("end"), pl.col("description"), pl.col("is_all_day"),
            pl.col("is_private"), pl.col("invitees_rb"), cleaned=True,
        ).alias("target_hash"),
        validity(pl.col("start"), pl.col("end"), subject_missing).alias("invalid"),
    ).drop("invitees_rb", "_clean")


def _cross_bodies(cross: pl.DataFrame, run: Run) -> list[pl.DataFrame]:
    """R10-R12/C11-C14, C19: the winner's body for the other side, one frame per target side: its invitees and
    Who mapped through the directory, its texts in the form the target stores them (R7: a round trip is no edit)."""
    fns = {SF: lambda w: inv.email_to_salesforce(w, run.directory, shared_activities=run.settings.shared_activities),
           EM: lambda w: inv.salesforce_to_email(w, run.directory, run.synced)}
    by_side = {SF: cross.filter(pl.col("target_side") == SF), EM: cross.filter(pl.col("target_side") != SF)}
    by_side = {side: rows for side, rows in by_side.items() if not rows.is_empty()}
    shaped_by_side = {side: fns[side](rows) for side, rows in by_side.items()}
    parts = []
    for side, rows in by_side.items():
        rows = rows.hstack(conform(shaped_by_side[side], _SHAPED))  # one row per input row, in order
        subject, subject_cut, subject_altered = target_text(
            pl.col("b_subject"), pl.col("t_subject"), limit=SUBJECT_MAX, to_salesforce=side == SF, description=False)
        description, description_cut, description_altered = target_text(
            pl.col("b_description"), pl.col("t_description"), limit=DESCRIPTION_MAX, to_salesforce=side == SF,
            description=True)
        parts.append(rows.with_columns(
            subject.alias("subject"),
            description.alias("description"),
            pl.col("b_is_private").alias("is_private"),
            pl.col("invitees").fill_null(EMPTY_INVITEES),
            pl.col("invitees_rb").fill_null(EMPTY_INVITEES),
            subject_cut.alias("subject_cut"),
            description_cut.alias("description_cut"),
            subject_altered.alias("subject_altered"),
            description_altered.alias("description_altered"),
        ))
    return parts
