"""Salesforce connector: Events (with their EventRelations) as canonical frames, deltas as API calls.

Reads go through one paged SOQL query for every synced user at once; writes through sObject
Collections (``composite/sobjects``, 200 records a call, ``allOrNone`` false), all through
simple-salesforce. Record shaping lives in ``connectors.salesforce_records`` (pure, unit-tested).

Errors, by what happens next (connectors/errors.py):

- a per-record error (``STRING_TOO_LONG``, ``FIELD_INTEGRITY_EXCEPTION``, ...) fails that delta with
  ``CODE: message``; the other deltas go on;
- throttling, 5xx, timeouts, dropped connections: reads raise ``RetriableError``; ``apply`` stops, keeps
  the outcomes of what it did and marks every delta not done ``failed`` with ``retriable`` true, then
  *returns* (a replay finishes them; re-running the same ``apply`` would redo the writes already made);
- the daily API allocation used up raises ``ApiLimitExceeded``, a rejected session ``FatalError``.
  Raised from ``apply``, the exception carries ``outcomes`` (one row per delta, the rest failed retriable).

EventRelations are written after every Event batch of an ``apply``, packed across batches into full
collections (per kind ``ceil(records / 200)`` calls). An event written whose EventRelations could not all
be written is still ``applied`` (it exists, and the pair must be recorded); ``error`` then says
``relations: CODE: message`` (or ``relations: not written (...)`` when the run stopped first) and the next
run sees the gap.

Messages never carry the session id or any secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError, SalesforceMalformedRequest
from simple_salesforce.format import format_soql

from connectors.errors import ApiLimitExceeded, CalsyncError, FatalError, RetriableError, connection_problem
from connectors.salesforce_records import (
    OrgInfo,
    by_id_soql,
    chunks,
    collection_records,
    error_codes,
    error_text,
    event_bounds,
    event_fields,
    event_row,
    invitee_from_relation,
    is_record_id,
    org_info_from_describe,
    overlaps,
    packed,
    plan_relations,
    relations_soql,
    window_soql,
)
from transforms.schema import DIRECTORY_SCHEMA, EVENT_SCHEMA, OUTCOME_SCHEMA, conform, empty

__all__ = ["OrgInfo", "SalesforceConnector", "classify_error"]

BATCH = 200  # sObject Collections maximum per call
DAY = timedelta(days=1)
USERS_SOQL = "SELECT Id, Email FROM User WHERE IsActive = true AND Email IN {emails}"
ORGANIZERS_SOQL = (
    "SELECT EventId, RelationId, Event.OwnerId, Event.Owner.Email, Event.Subject, Event.StartDateTime,"
    " Event.EndDateTime, Event.IsAllDayEvent, Event.ActivityDate, Event.DurationInMinutes"
    " FROM EventRelation WHERE IsInvitee = true AND RelationId IN {owners}"
    " AND Event.IsChild = false AND Event.StartDateTime < {hi} AND Event.EndDateTime > {lo}"
)
# A delete of a record already deleted (recycle bin) or no longer there (purged) counts as applied.
GONE = {"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"}

Progress = Callable[[int, int], None]


class _Stop(Exception):
    """Internal: a call-level failure that ends ``apply`` (wraps the calsync error)."""

    def __init__(self, error: CalsyncError) -> None:
        super().__init__(str(error))
        self.error = error


class SalesforceConnector:
    """Reads and writes one Salesforce org's calendar for the synced users."""

    def __init__(self, sf: Salesforce, timeout: float = 60.0, batch_size: int = BATCH) -> None:
        if not 1 <= batch_size <= BATCH:
            raise ValueError(f"batch_size must be 1..{BATCH}, got {batch_size}")
        self._sf = sf
        self._timeout = timeout
        self.batch_size = batch_size
        self._org: OrgInfo | None = None
        # the emails the last user_ids asked about and the active Users it found: directory reuses them
        self._users_read: tuple[set[str], list[dict[str, Any]]] = (set(), [])

    # --- connecting ----------------------------------------------------------------------------

    @classmethod
    def from_session(
        cls,
        instance_url: str,
        session_id: str,
        session: requests.Session | None = None,
        version: str = "59.0",
        timeout: float = 60.0,
    ) -> "SalesforceConnector":
        """Use an existing session (access token); how tests and the demo reach the sandbox."""
        sf = Salesforce(instance_url=instance_url, session_id=session_id, session=session, version=version)
        return cls(sf, timeout=timeout)

    @classmethod
    def from_jwt(
        cls,
        username: str,
        consumer_key: str,
        private_key: str,
        domain: str,
        session: requests.Session | None = None,
        version: str = "59.0",
        timeout: float = 60.0,
    ) -> "SalesforceConnector":
        """OAuth 2.0 JWT bearer flow (production): ``private_key`` is the PEM text of the app's key."""
        return cls._login(
            f"JWT bearer login for {username} at {domain}",
            dict(username=username, consumer_key=consumer_key, privatekey=private_key, domain=domain),
            session,
            version,
            timeout,
        )

    @classmethod
    def from_client_credentials(
        cls,
        consumer_key: str,
        consumer_secret: str,
        domain: str,
        session: requests.Session | None = None,
        version: str = "59.0",
        timeout: float = 60.0,
    ) -> "SalesforceConnector":
        """OAuth 2.0 client credentials flow (production); ``domain`` is ``<mydomain>.my``."""
        return cls._login(
            f"client credentials login at {domain}",
            dict(consumer_key=consumer_key, consumer_secret=consumer_secret, domain=domain),
            session,
            version,
            timeout,
        )

    @classmethod
    def _login(
        cls, what: str, kwargs: dict[str, str], session: requests.Session | None, version: str, timeout: float
    ) -> "SalesforceConnector":
        try:
            sf = Salesforce(session=session, version=version, **kwargs)
        except SalesforceAuthenticationFailed as exc:
            raise FatalError(
                f"Salesforce {what} failed ({exc.code}: {exc.auth_message}); check the connected app, "
                "its certificate or secret, and that the user is pre-authorized"
            ) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            problem = connection_problem(exc, f"the Salesforce token endpoint ({what})", None, "[salesforce] domain")
            if problem is not None:
                raise problem from None
            raise RetriableError(f"Salesforce {what}: could not reach the token endpoint ({type(exc).__name__})") from None
        return cls(sf, timeout=timeout)

    # --- reading -------------------------------------------------------------------------------

    def org_info(self) -> OrgInfo:
        """Shared Activities and required custom Event fields, from ``describe`` (R16, C18)."""
        event = self._call("describe Event", self._sf.restful, "sobjects/Event/describe")
        relation = self._call("describe EventRelation", self._sf.restful, "sobjects/EventRelation/describe")
        self._org = org_info_from_describe(event or {}, relation)
        return self._org

    def _org_info(self) -> OrgInfo:
        return self._org if self._org is not None else self.org_info()

    def user_ids(self, emails: Sequence[str]) -> dict[str, str]:
        """Lower-case email -> Id of the active User with that email (the lowest Id when several)."""
        found: dict[str, str] = {}
        wanted = sorted({e.strip().lower() for e in emails if e})
        records = []
        for part in packed(wanted, lambda p: format_soql(USERS_SOQL, emails=p)):
            records += self._query(format_soql(USERS_SOQL, emails=part), "read Users")
        for rec in sorted(records, key=lambda r: r["Id"]):
            if rec.get("Email"):
                found.setdefault(rec["Email"].lower(), rec["Id"])
        self._users_read = (set(wanted), [r for r in records if r.get("Email")])
        return found

    def extract(
        self,
        users: Mapping[str, str],
        window_start: datetime,
        window_end: datetime,
        confirm_ids: Iterable[str] = (),
    ) -> pl.DataFrame:
        """Events of the synced users overlapping the window, plus ``confirm_ids`` wherever they are.

        ``users``: user_key -> User Id. A confirm id that is deleted (or no longer owned by a synced
        user, or malformed) is left out of the frame: that is how a deletion is confirmed by id (R8).
        """
        org = self._org_info()
        owner_key = {uid: key.lower() for key, uid in users.items()}
        rows = _RowChunks()
        for part in packed(sorted(owner_key), lambda p: window_soql(p, window_start, window_end, org)):
            for rec in self._query(window_soql(part, window_start, window_end, org), "read Events"):
                row = event_row(rec, owner_key.get(rec.get("OwnerId")))
                if overlaps(row["start"], row["end"], window_start, window_end):
                    rows.add(row)
        # A malformed id cannot name a record (and would fail the whole query): it is gone.
        missing = sorted({i for i in confirm_ids if is_record_id(i)} - rows.ids)
        for part in packed(missing, lambda p: by_id_soql(p, org)):
            for rec in self._query(by_id_soql(part, org), "confirm Events by id", include_deleted=True):
                if rec.get("IsDeleted") or rec.get("OwnerId") not in owner_key or rec["Id"] in rows.ids:
                    continue
                rows.add(event_row(rec, owner_key[rec["OwnerId"]]))
        self._group_organizers(rows.children, rows.parents, owner_key, org)
        return rows.frame().sort("user_key", "start", "native_id")

    def _group_organizers(self, children: list[dict[str, Any]], known: Mapping[tuple, dict[str, Any]],
                          owner_key: Mapping[str, str], org: OrgInfo) -> None:
        """C15/R13: a child event's organizer is its parent's owner, not the child's owner (the invitee), and its
        invitees are the parent's (Salesforce lists relations on the parent only; the reconciler needs them to
        address the meeting to every synced invitee when a child owner organizes it, and never writes a child).

        No EventRelation points at a child, so the parent is found from the invitee side: the parent
        event that invites the child's owner (IsInvitee) with the same subject and times. A child whose
        parent cannot be found keeps its owner as organizer and no invitees. Most parents are owned by a synced
        user and already read (``known``: (invited User id, subject, (start, end)) -> the parent's row, see
        ``_RowChunks``): those match without a query. Queries (the parents, then their relations) are made only
        for children whose parent is not among them (its owner is not synced).
        """
        uid_of = {key: uid for uid, key in owner_key.items()}
        unmatched = []
        for c in children:
            found = known.get((uid_of.get(c["user_key"]), c["subject"], (c["start"], c["end"])))
            if found:
                c["organizer_email"] = found["user_key"]
                c["invitees"] = [dict(i) for i in found["invitees"]]
            else:
                unmatched.append(c)
        children = unmatched
        if not children:
            return
        owners = sorted({uid_of[c["user_key"]] for c in children if c["user_key"] in uid_of})
        lo = min(c["start"] for c in children) - DAY
        hi = max(c["end"] for c in children) + DAY
        parents: dict[tuple, tuple[str, str]] = {}
        for part in packed(owners, lambda p: format_soql(ORGANIZERS_SOQL, owners=p, hi=hi, lo=lo)):
            soql = format_soql(ORGANIZERS_SOQL, owners=part, hi=hi, lo=lo)
            for rel in self._query(soql, "read group event organizers"):
                ev = rel.get("Event") or {}
                email = ((ev.get("Owner") or {}).get("Email") or "").strip().lower()
                if not email:
                    continue
                key = (rel.get("RelationId"), ev.get("Subject"), event_bounds(ev))
                parents.setdefault(key, (email, rel["EventId"]))
        # R13/C15: the parent's invitees, for its children (no EventRelation points at a child)
        matched = {c["native_id"]: parents.get((uid_of.get(c["user_key"]), c["subject"], (c["start"], c["end"]))) for c in children}
        parent_ids = sorted({m[1] for m in matched.values() if m})
        relations: dict[str, list[dict[str, Any]]] = {}
        for part in packed(parent_ids, lambda p: relations_soql(p, org)):
            for rel in self._query(relations_soql(part, org), "read group event invitees"):
                relations.setdefault(rel["EventId"], []).append(rel)
        invitees = {pid: sorted((i for i in map(invitee_from_relation, rels) if i is not None),
                                key=lambda i: (i["email"] or "", i["record_id"] or ""))
                    for pid, rels in relations.items()}
        for c in children:
            found = matched[c["native_id"]]
            if found:
                c["organizer_email"] = found[0]
                c["invitees"] = [dict(i) for i in invitees.get(found[1], [])]

    def directory(self, emails: Sequence[str]) -> pl.DataFrame:
        """Contacts, Leads (not converted) and active Users whose email is in ``emails`` (case-insensitive).

        The Users of emails the last ``user_ids`` of this connection already asked about (the synced users, a
        few minutes earlier in the same run) are taken from that answer rather than asked for again.
        """
        wanted = sorted({e.strip().lower() for e in emails if e})
        asked, users = self._users_read
        keep = set(wanted)
        records: dict[str, list[dict[str, Any]]] = {"user": [r for r in users if r["Email"].strip().lower() in keep]}
        queries = (
            ("contact", "SELECT Id, Email, OwnerId FROM Contact WHERE Email IN {emails}", wanted),
            ("lead", "SELECT Id, Email, OwnerId FROM Lead WHERE Email IN {emails} AND IsConverted = false", wanted),
            ("user", "SELECT Id, Email FROM User WHERE Email IN {emails} AND IsActive = true",
             [e for e in wanted if e not in asked]),
        )
        for record_type, template, values in queries:
            for part in packed(values, lambda p, t=template: format_soql(t, emails=p)):
                records.setdefault(record_type, []).extend(
                    self._query(format_soql(template, emails=part), f"read {record_type}s"))
        rows = [
            {
                "record_id": rec["Id"],
                "record_type": record_type,
                "email": rec["Email"].strip().lower(),
                "owner_id": rec.get("OwnerId") if record_type != "user" else None,
            }
            for record_type, recs in records.items()
            for rec in recs
            if rec.get("Email")
        ]
        if not rows:
            return empty(DIRECTORY_SCHEMA)
        return conform(pl.DataFrame(rows, schema=DIRECTORY_SCHEMA), DIRECTORY_SCHEMA).sort("email", "record_type", "record_id")

    def find_by_key(
        self, owner_id: str, subject: str, start: datetime, end: datetime, is_all_day: bool
    ) -> list[str]:
        """Ids of the owner's events with exactly this subject and times (a create replayed must not repeat)."""
        start, end = _utc(start), _utc(end)
        if is_all_day:
            soql = format_soql(
                "SELECT Id, Subject, StartDateTime, EndDateTime, IsAllDayEvent, ActivityDate, DurationInMinutes"
                " FROM Event WHERE OwnerId = {owner} AND Subject = {subject} AND IsAllDayEvent = true"
                " AND ActivityDate = {day}",
                owner=owner_id,
                subject=subject,
                day=start.astimezone(timezone.utc).date(),
            )
        else:
            soql = format_soql(
                "SELECT Id, Subject, StartDateTime, EndDateTime, IsAllDayEvent, ActivityDate, DurationInMinutes"
                " FROM Event WHERE OwnerId = {owner} AND Subject = {subject} AND IsAllDayEvent = false"
                " AND StartDateTime = {start}",
                owner=owner_id,
                subject=subject,
                start=start,
            )
        found = []
        for rec in self._query(soql, "look up an event by key"):
            # SOQL compares strings case-insensitively; the key is case-sensitive (C3).
            if rec.get("Subject") == subject and event_bounds(rec) == (start, end):
                found.append(rec["Id"])
        return sorted(found)

    def api_usage(self) -> tuple[int, int] | None:
        """(used, allowed) daily API calls from the last ``Sforce-Limit-Info`` header, if any was seen."""
        usage = self._sf.api_usage.get("api-usage")
        return (usage.used, usage.total) if usage else None

    # --- writing -------------------------------------------------------------------------------

    def apply(self, deltas: pl.DataFrame, org: OrgInfo, progress: Progress | None = None) -> pl.DataFrame:
        """Write ``deltas`` (target_side salesforce) and return exactly one OUTCOME_SCHEMA row per delta.

        Order: pair/unpair (no call), deletes, updates, creates; ``progress(done, total)`` after each
        batch. See the module docstring for what a failing call does.
        """
        rows = list(deltas.iter_rows(named=True))
        total = len(rows)
        outcomes: dict[str, dict[str, Any]] = {}

        def record(delta_id: str, status: str, error: str | None = None, **extra: Any) -> None:
            outcomes[delta_id] = {"delta_id": delta_id, "status": status, "error": error, "retriable": False, **extra}

        def tick() -> None:
            if progress is not None:
                progress(len(outcomes), total)

        by_op: dict[str, list[dict[str, Any]]] = {"delete": [], "update": [], "create": []}
        for row in rows:
            op = row["op"]
            if row.get("target_side") != "salesforce":
                record(row["delta_id"], "skipped", f"wrong_side: delta targets {row.get('target_side')}, not salesforce")
            elif op in ("pair", "unpair"):
                record(row["delta_id"], "applied", new_id=row.get("target_id"))
            elif op in ("update", "delete") and not is_record_id(row.get("target_id")):
                record(row["delta_id"], "failed", f"MALFORMED_ID: no Salesforce Event id to {op} ({row.get('target_id')!r})")
            elif op == "create" and not org.can_create_events:
                record(
                    row["delta_id"],
                    "skipped",
                    "required_custom_field: the Event object requires "
                    + ", ".join(org.required_fields)
                    + "; calsync cannot fill it, so events cannot be created in Salesforce (R16)",
                )
            else:
                by_op[op].append(row)
        if outcomes:
            tick()

        # Relation writes wait until every Event batch is written, so that they fill whole collections
        # across batches (per kind: ceil(records / 200) calls, not one partial call per Event batch).
        pending: list[tuple[dict[str, Any], str, bool]] = []
        events_done = False
        try:
            for batch in chunks(by_op["delete"], self.batch_size):
                self._delete_batch(batch, record)
                tick()
            for batch in chunks(by_op["update"], self.batch_size):
                pending += self._update_batch(batch, org, record)
                tick()
            for batch in chunks(by_op["create"], self.batch_size):
                pending += self._create_batch(batch, org, record)
                tick()
            events_done = True
            self._write_relations(pending, org, record)
        except (_Stop, CalsyncError) as exc:
            error = exc.error if isinstance(exc, _Stop) else exc
            if not events_done:
                _relations_not_written(pending, org, error, record)
            for row in rows:
                if row["delta_id"] not in outcomes:
                    record(row["delta_id"], "failed", f"not_written: {error}", retriable=True)
            tick()
            frame = _outcome_frame(rows, outcomes)
            if isinstance(error, RetriableError):
                return frame
            error.outcomes = frame  # type: ignore[attr-defined]
            raise error from None
        return _outcome_frame(rows, outcomes)

    def _delete_batch(self, batch: list[dict[str, Any]], record: Callable[..., None]) -> None:
        results = self._collection("DELETE", "delete Events", ids=[d["target_id"] for d in batch], batch=batch, record=record)
        if results is None:
            return
        for delta, res in zip(batch, results):
            if res.get("success") or error_codes(res.get("errors")) & GONE:
                record(delta["delta_id"], "applied", new_id=delta["target_id"])
            else:
                record(delta["delta_id"], "failed", error_text(res.get("errors")), new_id=delta["target_id"])

    def _update_batch(
        self, batch: list[dict[str, Any]], org: OrgInfo, record: Callable[..., None]
    ) -> list[tuple[dict[str, Any], str, bool]]:
        """One Event update call; returns the updated events whose relations may need writing (see ``_write_relations``)."""
        batch, recs = _shape(batch, org, "update", record)
        if not batch:
            return []
        recs = [{"Id": d["target_id"], **r} for d, r in zip(batch, recs)]
        results = self._collection("PATCH", "update Events", records=collection_records("Event", recs), batch=batch, record=record)
        if results is None:
            return []
        pending = []
        for delta, res in zip(batch, results):
            if res.get("success"):
                record(delta["delta_id"], "applied", new_id=delta["target_id"])
                if delta.get("invitees") is not None or delta.get("who_ids") is not None:
                    pending.append((delta, delta["target_id"], True))
            else:
                record(delta["delta_id"], "failed", error_text(res.get("errors")), new_id=delta["target_id"])
        return pending

    def _create_batch(
        self, batch: list[dict[str, Any]], org: OrgInfo, record: Callable[..., None]
    ) -> list[tuple[dict[str, Any], str, bool]]:
        """One Event create call; returns the created events with their new ids, for ``_write_relations``."""
        batch, recs = _shape(batch, org, "create", record)
        if not batch:
            return []
        results = self._collection(
            "POST", "create Events", records=collection_records("Event", recs), batch=batch, record=record, creating=True
        )
        if results is None:
            return []
        pending = []
        for delta, res in zip(batch, results):
            if res.get("success"):
                record(delta["delta_id"], "applied", new_id=res["id"])
                pending.append((delta, res["id"], False))
            else:
                record(delta["delta_id"], "failed", error_text(res.get("errors")))
        return pending

    def _write_relations(
        self, written: list[tuple[dict[str, Any], str, bool]], org: OrgInfo, record: Callable[..., None]
    ) -> None:
        """EventRelations of every event this ``apply`` wrote, packed across its Event batches; then each delta's note.

        ``written``: (delta, event id, whether the event existed before, so its relations are read first).
        The relations of all updated events are read at once, then per kind (delete, update, create) the
        writes go in full collections whatever event they belong to: ``ceil(records / batch_size)`` calls.
        Each record stays tied to its delta: the event itself is written, so the delta is ``applied`` even
        when one of its relation writes fails; the failure is kept in ``error`` (``relations: CODE: message``)
        and the next run sees the difference. A call that stops the run marks the deltas whose relation
        writes were not all made (``relations: not all written (...)``) before the stop goes up.
        """
        existing: dict[str, list[dict[str, Any]]] = {}
        notes: dict[str, list[str]] = {}
        left: dict[str, int] = {}  # delta id -> relation writes not yet answered
        writes: dict[str, list[tuple[str, Any]]] = {"DELETE": [], "PATCH": [], "POST": []}
        try:
            wanted = [eid for _d, eid, read in written if read]
            for part in packed(wanted, lambda p: relations_soql(p, org)):
                for rel in self._query(relations_soql(part, org), "read EventRelations"):
                    existing.setdefault(rel["EventId"], []).append(rel)
            for delta, event_id, _read in written:
                plan = plan_relations(event_id, delta.get("invitees"), delta.get("who_ids"), existing.get(event_id, []), org)
                did = delta["delta_id"]
                writes["DELETE"] += [(did, i) for i in plan.delete]
                writes["PATCH"] += [(did, r) for r in plan.update]
                writes["POST"] += [(did, r) for r in plan.create]
                left[did] = len(plan.delete) + len(plan.update) + len(plan.create)
            for method, what in (("DELETE", "delete EventRelations"), ("PATCH", "update EventRelations"),
                                 ("POST", "create EventRelations")):
                for part in chunks(writes[method], self.batch_size):
                    self._relation_call(method, what, part, notes, left)
        except (_Stop, CalsyncError) as exc:
            error = exc.error if isinstance(exc, _Stop) else exc
            for delta, event_id, _read in written:
                did = delta["delta_id"]
                if left.get(did, 1):  # not planned yet (the read failed), or writes still to make
                    notes.setdefault(did, []).append(f"not all written ({error}); the next run sees the difference")
                if did in notes:
                    record(did, "applied", "relations: " + "; ".join(notes[did]), new_id=event_id)
            raise
        for delta, event_id, _read in written:
            if delta["delta_id"] in notes:
                record(delta["delta_id"], "applied", "relations: " + "; ".join(notes[delta["delta_id"]]), new_id=event_id)

    def _relation_call(
        self, method: str, what: str, part: list[tuple[str, Any]], notes: dict[str, list[str]], left: dict[str, int]
    ) -> None:
        """One EventRelation collection; each record's failure noted on its own delta (a refused call: on each of its deltas)."""
        try:
            if method == "DELETE":
                results = self._raw_collection("DELETE", what, ids=[i for _, i in part])
            else:
                results = self._raw_collection(method, what, records=collection_records("EventRelation", [r for _, r in part]))
        except SalesforceMalformedRequest as exc:
            results = [{"success": False, "errors": None, "_call": _describe_error(exc)}] * len(part)
        for (delta_id, _), res in zip(part, results):
            left[delta_id] -= 1
            if res.get("success") or (method == "DELETE" and error_codes(res.get("errors")) & GONE):
                continue
            note = res.get("_call") or error_text(res.get("errors"))
            if note not in notes.setdefault(delta_id, []):
                notes[delta_id].append(note)

    def _collection(
        self,
        method: str,
        what: str,
        *,
        batch: list[dict[str, Any]],
        record: Callable[..., None],
        ids: list[str] | None = None,
        records: list[dict[str, Any]] | None = None,
        creating: bool = False,
    ) -> list[dict[str, Any]] | None:
        """One collections call for a batch of deltas; a malformed request fails the batch (None returned)."""
        try:
            return self._raw_collection(method, what, ids=ids, records=records)
        except SalesforceMalformedRequest as exc:
            for delta in batch:
                record(delta["delta_id"], "failed", _describe_error(exc), new_id=delta.get("target_id"))
            return None
        except _Stop as stop:
            if isinstance(stop.error, RetriableError):
                hint = " (the write may have reached Salesforce; a replay checks find_by_key first)" if creating else ""
                for delta in batch:
                    record(delta["delta_id"], "failed", f"write_failed: {stop.error}{hint}", retriable=True,
                           new_id=delta.get("target_id"))
            raise

    def _raw_collection(
        self, method: str, what: str, *, ids: list[str] | None = None, records: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        try:
            if method == "DELETE":
                result = self._sf.restful(
                    "composite/sobjects",
                    params={"ids": ",".join(ids or []), "allOrNone": "false"},
                    method="DELETE",
                    timeout=self._timeout,
                )
            else:
                result = self._sf.restful(
                    "composite/sobjects",
                    method=method,
                    json={"allOrNone": False, "records": records or []},
                    timeout=self._timeout,
                )
        except SalesforceMalformedRequest:
            raise
        except (SalesforceError, requests.RequestException) as exc:
            raise _Stop(self._translate(exc, what)) from None
        expected = len(ids) if method == "DELETE" else len(records or [])
        result = list(result or [])
        if len(result) != expected:
            raise _Stop(RetriableError(f"Salesforce answered {len(result)} results for {expected} records ({what})"))
        return result

    # --- plumbing ------------------------------------------------------------------------------

    def _query(self, soql: str, what: str, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """All records of a SOQL query (following ``nextRecordsUrl``, child subqueries too)."""
        try:
            for rec in self._sf.query_all_iter(soql, include_deleted=include_deleted, timeout=self._timeout):
                sub = rec.get("EventRelations")
                while sub and not sub.get("done", True) and sub.get("nextRecordsUrl"):
                    more = self._sf.query_more(sub["nextRecordsUrl"], identifier_is_url=True, timeout=self._timeout)
                    sub = {**more, "records": sub["records"] + more.get("records", [])}
                    rec["EventRelations"] = sub
                yield rec
        except (SalesforceError, requests.RequestException) as exc:
            raise self._translate(exc, what) from None

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, timeout=self._timeout, **kwargs)
        except (SalesforceError, requests.RequestException) as exc:
            raise self._translate(exc, what) from None

    def _translate(self, exc: Exception, what: str) -> CalsyncError:
        return classify_error(exc, what, self._timeout, self.api_usage())


def classify_error(exc: Exception, what: str, timeout: float, usage: tuple[int, int] | None,
                   setting: str = "[salesforce] instance_url (or domain)") -> CalsyncError:
    """The calsync error for a failed call, grouped by what happens next; never with a secret in it.

    ``REQUEST_LIMIT_EXCEEDED`` covers two limits in Salesforce: the daily allocation ("TotalRequests
    Limit exceeded.") is ``ApiLimitExceeded``; the concurrent-request limits ("ConcurrentPerOrgLongTxn
    Limit exceeded.") pass, so they are retriable.
    """
    # A failed read leaves nothing to replay (the run writes nothing before it has read): retry it. A failed
    # write leaves the rest of the run's deltas for a replay.
    then = "retry or replay the run" if what.split()[0] in ("create", "update", "delete") else "retry the run"
    if isinstance(exc, requests.ConnectTimeout) or (
            isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.Timeout)):
        problem = connection_problem(exc, "Salesforce", None, setting)
        if problem is not None:
            problem.args = (f"{problem.args[0]} (trying to {what}); {then}"
                            if isinstance(problem, RetriableError) else f"{problem.args[0]} (trying to {what})",)
            return problem
        return RetriableError(f"the connection to Salesforce dropped ({what}); {then}")
    if isinstance(exc, requests.Timeout):
        return RetriableError(f"Salesforce did not answer in {timeout:g} s ({what}); {then}")
    if isinstance(exc, requests.RequestException):
        return RetriableError(f"the request to Salesforce failed ({what}: {type(exc).__name__}); {then}")
    assert isinstance(exc, SalesforceError)
    status = exc.status
    code, message = _first_error(exc.content)
    if status == 401:
        return FatalError(
            f"Salesforce rejected the session ({code or 'HTTP 401'}) while trying to {what}: "
            "re-authenticate (a fresh session, or check the connected app) and replay the run"
        )
    if code == "REQUEST_LIMIT_EXCEEDED":
        if "TotalRequests" in message or (usage is not None and usage[0] >= usage[1]):
            seen = f" (last seen {usage[0]}/{usage[1]} calls)" if usage else ""
            return ApiLimitExceeded(
                f"Salesforce's daily API request limit is used up{seen} while trying to {what}: "
                "the run stopped cleanly; replay it once calls are available again (a rolling 24 hours) "
                "or ask for a higher allocation"
            )
        return RetriableError(f"Salesforce is throttling requests ({code}: {message}) while trying to {what}")
    if status == 429 or status >= 500:
        detail = f"{code}: {message}" if code else f"HTTP {status}"
        return RetriableError(f"Salesforce is unavailable ({detail}) while trying to {what}; {then}")
    if status == 403:
        return FatalError(
            f"Salesforce refused to {what} ({code or 'HTTP 403'}: {message}); check the integration user's permissions"
        )
    return FatalError(f"Salesforce could not {what}: HTTP {status} {code or ''}: {message}".rstrip(": "))


class _RowChunks:
    """Event rows as they are read, kept as polars frames of ``CHUNK`` rows (not a dict per record for the whole
    org: at 5,000 users that is a million dicts, gigabytes). Kept as dicts until the end: the child events
    (``_group_organizers`` fills in their organizer and invitees), and, in ``parents``, each event that invites a
    User, under (User id, subject, (start, end)), the key a child of that User finds its parent by."""

    CHUNK = 20_000

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.children: list[dict[str, Any]] = []
        self.parents: dict[tuple, dict[str, Any]] = {}
        self._rows: list[dict[str, Any]] = []
        self._frames: list[pl.DataFrame] = []

    def add(self, row: dict[str, Any]) -> None:
        if row["native_id"] in self.ids:  # a record a query returned twice: the first is kept
            return
        self.ids.add(row["native_id"])
        if row["is_child"]:
            self.children.append(row)
            return
        for inv in row["invitees"]:
            if inv.get("record_type") == "user" and inv.get("record_id"):
                key = (inv["record_id"], row["subject"], (row["start"], row["end"]))
                self.parents.setdefault(key, {"user_key": row["user_key"], "invitees": row["invitees"]})
        self._rows.append(row)
        if len(self._rows) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._frames.append(conform(pl.DataFrame(self._rows, schema=EVENT_SCHEMA, strict=False), EVENT_SCHEMA))
            self._rows = []

    def frame(self) -> pl.DataFrame:
        self._rows.extend(self.children)
        self.children = []
        self._flush()
        return pl.concat(self._frames) if self._frames else empty(EVENT_SCHEMA)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _shape(
    batch: list[dict[str, Any]], org: OrgInfo, op: str, record: Callable[..., None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Event fields for each delta; a delta that cannot be shaped (no start or end) fails on its own."""
    kept, recs = [], []
    for delta in batch:
        if delta.get("start") is None or delta.get("end") is None:
            record(delta["delta_id"], "failed", "invalid_delta: a Salesforce event needs a start and an end",
                   new_id=delta.get("target_id"))
            continue
        kept.append(delta)
        recs.append(event_fields(delta, org, op))
    return kept, recs


def _relations_not_written(
    pending: list[tuple[dict[str, Any], str, bool]], org: OrgInfo, error: CalsyncError, record: Callable[..., None]
) -> None:
    """The run stopped before the relation writes: each event written whose relations had (or may have had) to
    change stays ``applied``, with a note saying its relations were not written."""
    for delta, event_id, read in pending:
        if read or plan_relations(event_id, delta.get("invitees"), delta.get("who_ids"), [], org):
            record(delta["delta_id"], "applied",
                   f"relations: not written ({error}); the next run sees the difference", new_id=event_id)


def _first_error(content: Any) -> tuple[str, str]:
    """(errorCode, message) of a REST error body (a list of errors, a dict, or text)."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        return str(first.get("errorCode") or first.get("statusCode") or ""), str(first.get("message") or "")
    if isinstance(content, Mapping):
        return str(content.get("errorCode") or content.get("error") or ""), str(
            content.get("message") or content.get("error_description") or ""
        )
    text = content.decode(errors="replace") if isinstance(content, bytes) else str(content or "")
    return "", text.strip()[:200]


def _describe_error(exc: SalesforceError) -> str:
    code, message = _first_error(exc.content)
    return f"{code or 'MALFORMED_REQUEST'}: {message}"


def _outcome_frame(rows: list[dict[str, Any]], outcomes: dict[str, dict[str, Any]]) -> pl.DataFrame:
    ordered = [{name: outcomes[row["delta_id"]].get(name) for name in OUTCOME_SCHEMA} for row in rows]
    if not ordered:
        return empty(OUTCOME_SCHEMA)
    return pl.DataFrame(ordered, schema=OUTCOME_SCHEMA)
