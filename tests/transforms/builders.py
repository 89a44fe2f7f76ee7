"""Small hand-written frames for the transforms tests, and a fake two-sided world to run syncs in."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import polars as pl

from transforms.normalise import normalise
from transforms.reconcile import ReconcileResult, Settings, apply_outcomes, reconcile
from transforms.schema import (
    DIRECTORY_SCHEMA,
    EVENT_SCHEMA,
    OUTCOME_SCHEMA,
    PAIR_SCHEMA,
    USER_SCHEMA,
    conform,
)

TODAY = date(2025, 6, 15)
ANN = "ann@corp.example"
BOB = "bob@corp.example"
T0 = datetime(2025, 6, 20, 10, tzinfo=timezone.utc)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def inv(email: str | None, response: str = "none", record_id: str | None = None, record_type: str = "none") -> dict:
    return {"email": email, "response": response, "record_id": record_id, "record_type": record_type}


def ev(side: str, native_id: str, subject: str | None = "Meeting", *, start: datetime = T0, hours: float = 1,
       user: str = ANN, modified: datetime = utc(2025, 6, 1), **kw) -> dict:
    row = {
        "side": side, "user_key": user, "native_id": native_id, "version": "v1", "subject": subject,
        "start": start, "end": start + timedelta(hours=hours), "is_all_day": False, "description": "",
        "is_private": False, "organizer_email": user, "last_modified": modified, "invitees": [],
        "is_child": False, "meeting_uid": None, "mailbox": user if side == "email" else None,
    }
    row.update(kw)
    return row


def sf(native_id: str, subject: str | None = "Meeting", **kw) -> dict:
    return ev("salesforce", native_id, subject, **kw)


def em(native_id: str, subject: str | None = "Meeting", **kw) -> dict:
    return ev("email", native_id, subject, **kw)


def events(*rows: dict) -> pl.DataFrame:
    return conform(pl.DataFrame(list(rows), schema=EVENT_SCHEMA), EVENT_SCHEMA)


def user(user_key: str = ANN, **kw) -> dict:
    row = {"user_key": user_key, "direction": "both", "filter_mode": "all", "start_date": None, "mailbox": user_key,
           "sf_user_id": "005" + user_key[:3].upper(), "send_external_invites": False, "allow_mass_delete": False}
    row.update(kw)
    return row


def users(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows) or [user()], schema=USER_SCHEMA)


def directory(*rows: tuple) -> pl.DataFrame:
    """rows: (record_id, record_type, email, owner_id)."""
    return pl.DataFrame([dict(zip(DIRECTORY_SCHEMA, r)) for r in rows], schema=DIRECTORY_SCHEMA)


def pairs_for(evs: pl.DataFrame, links: list[tuple[str, str]], user_key: str = ANN, **kw) -> pl.DataFrame:
    """Pairs as a previous run left them: stored hashes equal the events' current hashes."""
    n = normalise(evs)
    h = dict(zip(n["native_id"].to_list(), n["content_hash"].to_list()))
    rows = [
        {"pair_id": f"p-{s}-{e}", "user_key": user_key, "mailbox": user_key, "sf_id": s, "email_id": e,
         "sf_hash": h.get(s), "email_hash": h.get(e), "private_origin": None, "linked": False,
         "created_run": "r0", "last_run": "r0"} | kw
        for s, e in links
    ]
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def no_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema=PAIR_SCHEMA)


def run(evs: pl.DataFrame, pairs: pl.DataFrame | None = None, usrs: pl.DataFrame | None = None,
        dirx: pl.DataFrame | None = None, settings: Settings = Settings(), today: date = TODAY) -> ReconcileResult:
    return reconcile(
        evs, no_pairs() if pairs is None else pairs, users() if usrs is None else usrs,
        directory() if dirx is None else dirx, today=today, settings=settings,
    )


def ops(result: ReconcileResult) -> list[tuple[str, str, str | None]]:
    """(op, target_side, target_id) of every delta, sorted."""
    return sorted((r["op"], r["target_side"], r["target_id"]) for r in result.deltas.iter_rows(named=True))


def notes(result: ReconcileResult, kind: str | None = None) -> list[tuple]:
    return sorted(
        (r["kind"], r["reason"], r["native_id"]) for r in result.notes.iter_rows(named=True) if kind in (None, r["kind"])
    )


_NOT_IN_A_MAILBOX = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufdd0-\ufddf\ufffe\uffff]")


def mailbox_stores(text: str | None, body: bool = False) -> str | None:
    """What an Exchange mailbox reads back of ``text`` written through EWS: exchangelib sends "?" for what XML
    cannot carry; a body comes back with ``\n`` line breaks and no trailing whitespace."""
    if text is None:
        return None
    text = _NOT_IN_A_MAILBOX.sub("?", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip() if body else text


class World:
    """Both calendars as event rows plus the pair state: runs syncs and applies their deltas like a loader
    that reads back what it wrote (Salesforce keeps only New/Accepted/Declined)."""

    def __init__(self, evs: pl.DataFrame, pairs: pl.DataFrame | None = None, usrs: pl.DataFrame | None = None,
                 dirx: pl.DataFrame | None = None, settings: Settings = Settings()):
        self.rows = {(r["side"], r["native_id"]): r for r in evs.iter_rows(named=True)}
        self.pairs = no_pairs() if pairs is None else pairs
        self.users = users() if usrs is None else usrs
        self.dir = directory() if dirx is None else dirx
        self.settings = settings
        self.n = 0

    def frame(self) -> pl.DataFrame:
        return events(*self.rows.values())

    def sync(self, fail: set[str] = frozenset()) -> ReconcileResult:
        """One run; deltas whose (op, target_side) is in ``fail`` fail."""
        res = run(self.frame(), self.pairs, self.users, self.dir, self.settings)
        outcomes = []
        for d in res.deltas.iter_rows(named=True):
            status, new_id = "applied", d["target_id"]
            if f"{d['op']}:{d['target_side']}" in fail:
                status = "failed"
            elif d["op"] == "create":
                self.n += 1
                new_id = f"new{self.n}"
                self.rows[(d["target_side"], new_id)] = self._written(d, new_id, None)
            elif d["op"] == "update":
                self.rows[(d["target_side"], d["target_id"])] = self._written(d, d["target_id"], self.rows[(d["target_side"], d["target_id"])])
            elif d["op"] == "delete":
                del self.rows[(d["target_side"], d["target_id"])]
            outcomes.append({"delta_id": d["delta_id"], "status": status, "error": None, "retriable": False,
                             "new_id": new_id, "new_version": None})
        out = pl.DataFrame(outcomes, schema=OUTCOME_SCHEMA)
        self.pairs = apply_outcomes(self.pairs, res.deltas, out, f"r{self.n}", refresh=res.pair_refresh)
        return res

    def _written(self, d: dict, native_id: str, old: dict | None) -> dict:
        invs = d["invitees"] or []
        if d["target_side"] == "salesforce":
            invs = [i | {"response": "none" if i["response"] == "tentative" else i["response"]} for i in invs]
        # a mailbox gives every item it stores a meeting uid (C15 links delivered copies by it)
        uid = {"meeting_uid": f"UID-{native_id}"} if d["target_side"] == "email" and old is None else {}
        base = (old or ev(d["target_side"], native_id, user=d["user_key"])) | uid
        subject, description = d["subject"], d["description"]
        if d["target_side"] == "email":  # what a mailbox keeps of the fields written (the loader writes changes only)
            if old is None or subject != old["subject"]:
                subject = mailbox_stores(subject)
            if old is None or description != old["description"]:
                description = mailbox_stores(description, body=True)
        return base | {
            "native_id": native_id, "subject": subject, "start": d["start"], "end": d["end"],
            "is_all_day": d["is_all_day"], "description": description, "is_private": d["is_private"],
            "invitees": invs, "version": "v2", "last_modified": utc(2025, 6, 15, 12),
        }

    def edit(self, side: str, native_id: str, **changes) -> None:
        self.rows[(side, native_id)] = self.rows[(side, native_id)] | changes

    def get(self, side: str, native_id: str) -> dict:
        return self.rows[(side, native_id)]

    def on(self, side: str) -> list[dict]:
        return [r for (s, _), r in self.rows.items() if s == side]
