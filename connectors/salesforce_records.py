"""Pure shaping between Salesforce records and calsync's canonical rows (no I/O).

Glossary
--------
record      a JSON object as the REST API returns it (``{"attributes": ..., "Id": ..., ...}``).
relation    an ``EventRelation`` record: a Contact, Lead, User or resource on an event. With Shared
            Activities on it is also the Who link (``IsParent``); invitees have ``IsInvitee``.
all-day     Salesforce keeps an all-day event as ``ActivityDate`` (midnight UTC, never shifted by time
            zone) plus ``DurationInMinutes`` = 1440 x days. Its ``EndDateTime`` is believed to be the
            *last* day at 00:00Z (inclusive), so calsync derives the exclusive end from the duration,
            which reads the same under either convention, and never sends ``EndDateTime`` for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote_plus

from simple_salesforce.format import format_soql

DAY = timedelta(days=1)
MINUTES_PER_DAY = 1440

# Salesforce EventRelation.Status (restricted picklist) <-> calsync response (C13).
STATUS_TO_RESPONSE = {"Accepted": "accepted", "Declined": "declined", "New": "none"}
RESPONSE_TO_STATUS = {"accepted": "Accepted", "declined": "Declined", "tentative": "New", "none": "New"}

RELATION_TYPES = {"Contact": "contact", "Lead": "lead", "User": "user"}

EVENT_FIELDS = (
    "Id",
    "OwnerId",
    "Subject",
    "StartDateTime",
    "EndDateTime",
    "IsAllDayEvent",
    "ActivityDate",
    "DurationInMinutes",
    "Description",
    "IsPrivate",
    "IsChild",
    "LastModifiedDate",
    "SystemModstamp",
)
# EventRelation fields that exist in every org; the flags below only in some (read from describe).
RELATION_BASE_FIELDS = ("Id", "EventId", "RelationId", "Relation.Type", "Relation.Email", "Status", "RespondedDate")
RELATION_FLAGS = ("IsInvitee", "IsParent")


@dataclass(frozen=True)
class OrgInfo:
    """What ``describe`` says about the org that changes how calsync reads and writes events.

    ``shared_activities``: Event has ``EventWhoIds`` (Shared Activities on: up to 50 Contacts or one
    Lead per event, Who links are ``EventRelation`` rows with ``IsParent``).
    ``required_fields``: custom Event fields a create must fill (createable, not nillable, not
    defaulted on create) — calsync cannot fill them, so email -> Salesforce creation is impossible (R16).
    ``relation_flags``: which of ``IsInvitee``/``IsParent`` the org's EventRelation has.
    ``recurrence_masters``: Event has ``IsRecurrence`` (Classic recurring series): the series master
    row is then left out of reads, each occurrence being its own event (C23).
    ``event_series``: Event has ``IsRecurrence2`` (Lightning Experience event series): the record that
    holds a series' pattern (``GroupEventType`` 3, not ``IsRecurrence``) is left out likewise; the events of
    the series are read as events.
    """

    shared_activities: bool
    required_fields: tuple[str, ...] = ()
    relation_flags: tuple[str, ...] = field(default=("IsInvitee",))
    recurrence_masters: bool = False
    event_series: bool = False

    @property
    def can_create_events(self) -> bool:
        return not self.required_fields


def org_info_from_describe(event_describe: Mapping[str, Any], relation_describe: Mapping[str, Any] | None) -> OrgInfo:
    """Read ``OrgInfo`` from the ``sobjects/Event/describe`` and ``sobjects/EventRelation/describe`` bodies."""
    fields = event_describe.get("fields", [])
    names = {f["name"] for f in fields}
    required = tuple(
        sorted(
            f["name"]
            for f in fields
            if f.get("custom")
            and f.get("createable")
            and not f.get("nillable", True)
            and not f.get("defaultedOnCreate", False)
        )
    )
    rel_names = {f["name"] for f in (relation_describe or {}).get("fields", [])}
    flags = tuple(flag for flag in RELATION_FLAGS if flag in rel_names)
    return OrgInfo(
        shared_activities="EventWhoIds" in names,
        required_fields=required,
        relation_flags=flags,
        recurrence_masters="IsRecurrence" in names,
        event_series="IsRecurrence2" in names,
    )


# --- dates -------------------------------------------------------------------------------------


def parse_datetime(value: str | None) -> datetime | None:
    """A Salesforce dateTime (``2024-01-10T09:00:00.000+0000``) as an aware UTC datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value).astimezone(timezone.utc)


def parse_date(value: str | None) -> date | None:
    return date.fromisoformat(value[:10]) if value else None


def format_datetime(value: datetime) -> str:
    """An aware (or naive-UTC) datetime in the form Salesforce accepts, to the second, in UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def event_bounds(record: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """(start, end) of an Event record; all-day events as midnight UTC of their dates, end exclusive."""
    if not record.get("IsAllDayEvent"):
        return parse_datetime(record.get("StartDateTime")), parse_datetime(record.get("EndDateTime"))
    first = parse_date(record.get("ActivityDate")) or _date_of(record.get("StartDateTime"))
    if first is None:
        return None, None
    minutes = record.get("DurationInMinutes")
    if minutes:
        days = max(1, math.ceil(minutes / MINUTES_PER_DAY))
    else:
        # No duration: fall back to EndDateTime, the last day (inclusive).
        last = _date_of(record.get("EndDateTime")) or first
        days = max(1, (last - first).days + 1)
    return midnight(first), midnight(first) + days * DAY


def _date_of(value: str | None) -> date | None:
    dt = parse_datetime(value)
    return dt.date() if dt else None


def timing_fields(start: datetime, end: datetime, is_all_day: bool) -> dict[str, Any]:
    """The Event fields that place an event in time (timed: Start/EndDateTime; all-day: see module doc)."""
    if is_all_day:
        first = start.date()
        days = max(1, (end.date() - first).days)
        return {
            "IsAllDayEvent": True,
            "ActivityDate": first.isoformat(),
            "DurationInMinutes": days * MINUTES_PER_DAY,
        }
    return {
        "IsAllDayEvent": False,
        "StartDateTime": format_datetime(start),
        "EndDateTime": format_datetime(end),
    }


# --- reading -----------------------------------------------------------------------------------


def relation_records(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The EventRelation child records embedded in an Event record (empty when there are none)."""
    block = record.get("EventRelations")
    if not block:
        return []
    return list(block.get("records", []))


def invitee_from_relation(relation: Mapping[str, Any]) -> dict[str, Any] | None:
    """A canonical invitee from an EventRelation, or None when it is not an invitee or not a person.

    Resources (rooms, public calendars) are left out: they are not people and email has no match.
    A relation without ``IsInvitee`` (orgs whose EventRelation has no such field) is an invitee.
    """
    if relation.get("IsInvitee") is False:
        return None
    target = relation.get("Relation") or {}
    record_type = RELATION_TYPES.get(target.get("Type") or "")
    if record_type is None:
        return None
    email = target.get("Email")
    return {
        "email": email.strip().lower() if email else None,
        "response": STATUS_TO_RESPONSE.get(relation.get("Status") or "New", "none"),
        "record_id": relation.get("RelationId"),
        "record_type": record_type,
    }


def event_row(record: Mapping[str, Any], user_key: str | None) -> dict[str, Any]:
    """One EVENT_SCHEMA row from an Event record with its EventRelations subquery.

    The organizer is the owner (``user_key``); a missing description reads as "" as on the email side.
    """
    start, end = event_bounds(record)
    invitees = [i for i in (invitee_from_relation(r) for r in relation_records(record)) if i is not None]
    invitees.sort(key=lambda i: (i["email"] or "", i["record_id"] or ""))
    modstamp = parse_datetime(record.get("SystemModstamp"))
    return {
        "side": "salesforce",
        "user_key": user_key,
        "native_id": record["Id"],
        "version": modstamp.isoformat() if modstamp else None,
        "subject": record.get("Subject"),
        "start": start,
        "end": end,
        "is_all_day": bool(record.get("IsAllDayEvent")),
        "description": record.get("Description") or "",
        "is_private": bool(record.get("IsPrivate")),
        "organizer_email": user_key,
        "last_modified": parse_datetime(record.get("LastModifiedDate")) or modstamp,
        "invitees": invitees,
        "is_child": bool(record.get("IsChild")),
        "meeting_uid": None,
        "mailbox": None,
    }


def overlaps(start: datetime | None, end: datetime | None, window_start: datetime, window_end: datetime) -> bool:
    """C1: in the window when start < window end and end > window start."""
    return start is not None and end is not None and start < window_end and end > window_start


# --- SOQL --------------------------------------------------------------------------------------


def relation_subquery(org: OrgInfo) -> str:
    fields = ", ".join(f for f in RELATION_BASE_FIELDS if f not in ("Id", "EventId"))
    flags = "".join(f", {flag}" for flag in org.relation_flags)
    return f"(SELECT {fields}{flags} FROM EventRelations)"


def window_soql(owner_ids: Sequence[str], window_start: datetime, window_end: datetime, org: OrgInfo) -> str:
    """Events of ``owner_ids`` overlapping the window, with their relations.

    An all-day event's EndDateTime is its last day at 00:00Z, so it overlaps while EndDateTime is
    later than one day before the window start; the caller trims the superset exactly.
    """
    return format_soql(
        "SELECT {fields:literal}, {sub:literal} FROM Event"
        " WHERE OwnerId IN {owners} AND StartDateTime < {end}"
        " AND (EndDateTime > {start} OR (IsAllDayEvent = true AND EndDateTime > {day_before}))"
        "{masters:literal}",
        # C23: series masters are never events; SOQL's != keeps the rows where GroupEventType is null
        masters=(" AND IsRecurrence = false" if org.recurrence_masters else "")
        + (" AND GroupEventType != '3'" if org.event_series else ""),
        fields=", ".join(EVENT_FIELDS),
        sub=relation_subquery(org),
        owners=list(owner_ids),
        end=window_end,
        start=window_start,
        day_before=window_start - DAY,
    )


def by_id_soql(ids: Sequence[str], org: OrgInfo) -> str:
    """Events by Id, IsDeleted included (sent to queryAll so deleted rows come back marked)."""
    return format_soql(
        "SELECT {fields:literal}, IsDeleted, {sub:literal} FROM Event WHERE Id IN {ids}",
        fields=", ".join(EVENT_FIELDS),
        sub=relation_subquery(org),
        ids=list(ids),
    )


def relations_soql(event_ids: Sequence[str], org: OrgInfo) -> str:
    fields = ", ".join(RELATION_BASE_FIELDS) + "".join(f", {flag}" for flag in org.relation_flags)
    return format_soql(
        "SELECT {fields:literal} FROM EventRelation WHERE EventId IN {ids}", fields=fields, ids=list(event_ids)
    )


_ID_CHARS = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def is_record_id(value: object) -> bool:
    """True for a well-formed 15- or 18-character record id (the 18-character checksum checked).

    Salesforce rejects a whole query whose ``Id IN (...)`` holds a malformed id, and no record can have one.
    """
    if not isinstance(value, str) or len(value) not in (15, 18) or not set(value) <= _ID_CHARS:
        return False
    if len(value) == 15:
        return True
    suffix = ""
    for i in range(0, 15, 5):
        bits = sum(1 << j for j, ch in enumerate(value[i : i + 5]) if "A" <= ch <= "Z")
        suffix += _ID_SUFFIX[bits]
    return value[15:].upper() == suffix


def chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


# Salesforce takes at most 16,384 bytes of URI and headers together in one REST request (414 URI Too Long,
# 431 Request Header Fields Too Large beyond; https://help.salesforce.com/s/articleView?id=000386264). A
# query's ``q`` stays within this budget, leaving over 2 KB for the path, the session token and the other headers.
QUERY_BUDGET = 14_000


def packed(values: Sequence[str], soql_of: Callable[[list[str]], str], budget: int = QUERY_BUDGET) -> Iterator[list[str]]:
    """``values`` in consecutive lists, each as long as its query ``soql_of(list)`` fits ``budget`` bytes as sent.

    The size is the query's ``q`` as requests URL-encodes it (``quote_plus``). Encoding goes character by character,
    so a list's size is the empty list's query plus each quoted value plus the commas between: exact, without
    rendering every candidate. Fewer, fuller queries than a fixed count of values (ids: about 500, not 300).
    """
    base = len(quote_plus(soql_of([])))
    comma = len(quote_plus(","))
    part: list[str] = []
    size = base
    for value in values:
        cost = len(quote_plus(format_soql("{}", value)))
        if part and size + comma + cost > budget:
            yield part
            part, size = [], base
        size += cost + (comma if part else 0)
        part.append(value)
    if part:
        yield part


# --- writing -----------------------------------------------------------------------------------


def event_fields(delta: Mapping[str, Any], org: OrgInfo, op: str) -> dict[str, Any]:
    """The Event fields a create or update writes (R1 synced fields, privacy, Who with SA off).

    With Shared Activities on, the Who links are written as EventRelations (``IsParent``), so one
    record per person carries both the Who and the invitee flag; ``WhoId`` is then left to Salesforce.
    """
    fields: dict[str, Any] = {
        "Subject": delta.get("subject"),
        "Description": delta.get("description") or None,
        "IsPrivate": bool(delta.get("is_private")),
    }
    fields.update(timing_fields(delta["start"], delta["end"], bool(delta.get("is_all_day"))))
    if op == "create":
        fields["OwnerId"] = delta["owner_id"]
    who_ids = delta.get("who_ids")
    if not org.shared_activities and who_ids is not None:
        if len(who_ids):
            fields["WhoId"] = who_ids[0]
        elif op == "update":
            fields["WhoId"] = None
    return fields


def wanted_invitees(invitees: Iterable[Mapping[str, Any]] | None) -> dict[str, str | None]:
    """Contact/Lead invitees to relate: record id -> Salesforce Status (None: leave the status alone).

    Users are never related from email (C16); an invitee without a record id matched nothing.
    """
    wanted: dict[str, str | None] = {}
    for inv in invitees or ():
        if inv.get("record_type") in ("contact", "lead") and inv.get("record_id"):
            response = inv.get("response")
            wanted.setdefault(inv["record_id"], RESPONSE_TO_STATUS.get(response) if response else None)
    return wanted


@dataclass
class RelationPlan:
    """EventRelation writes for one event: records to create, patches (with Id), ids to delete."""

    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def _removable(relation: Mapping[str, Any]) -> bool:
    """C11: only Contacts and Leads with an email address are email's to remove; Users and the rest stay."""
    target = relation.get("Relation") or {}
    return target.get("Type") in ("Contact", "Lead") and bool(target.get("Email"))


def plan_relations(
    event_id: str,
    invitees: Iterable[Mapping[str, Any]] | None,
    who_ids: Sequence[str] | None,
    existing: Sequence[Mapping[str, Any]],
    org: OrgInfo,
) -> RelationPlan:
    """Bring an event's EventRelations in line with the delta's invitees (and Who, Shared Activities on).

    ``invitees`` None leaves the invitee relations alone; ``who_ids`` None leaves the Who alone.
    One record per related person: Who and invitee are flags on the same relation (SA on).
    """
    plan = RelationPlan()
    has_invitee_flag = "IsInvitee" in org.relation_flags
    has_parent_flag = org.shared_activities and "IsParent" in org.relation_flags
    manage_invitees = invitees is not None
    wanted = wanted_invitees(invitees) if manage_invitees else {}
    parents = set(who_ids or ()) if (has_parent_flag and who_ids is not None) else None
    seen: set[str] = set()

    for rel in existing:
        rid = rel.get("RelationId")
        seen.add(rid)
        is_inv = rel.get("IsInvitee", True) if has_invitee_flag else True
        is_par = bool(rel.get("IsParent")) if has_parent_flag else False
        new_inv, new_par = is_inv, is_par
        if manage_invitees and (rid in wanted or _removable(rel)):
            new_inv = rid in wanted
        if parents is not None and (rid in parents or _removable(rel)):
            new_par = rid in parents
        if not new_inv and not new_par:
            if is_inv or is_par:
                plan.delete.append(rel["Id"])
            continue
        patch: dict[str, Any] = {}
        if has_invitee_flag and new_inv != is_inv:
            patch["IsInvitee"] = new_inv
        if has_parent_flag and new_par != is_par:
            patch["IsParent"] = new_par
        status = wanted.get(rid) if new_inv else None
        if status and status != rel.get("Status"):
            patch["Status"] = status
        if patch:
            plan.update.append({"Id": rel["Id"], **patch})

    for rid, status in wanted.items():
        if rid in seen:
            continue
        rec: dict[str, Any] = {"EventId": event_id, "RelationId": rid, "Status": status or "New"}
        if has_invitee_flag:
            rec["IsInvitee"] = True
        if has_parent_flag:
            rec["IsParent"] = parents is not None and rid in parents
        plan.create.append(rec)
        seen.add(rid)
    for rid in sorted(parents or ()):
        if rid in seen:
            continue
        rec = {"EventId": event_id, "RelationId": rid, "IsParent": True}
        if has_invitee_flag:
            rec["IsInvitee"] = False
        plan.create.append(rec)
    return plan


def collection_records(sobject: str, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records for an sObject Collections body (each needs ``attributes.type``)."""
    return [{"attributes": {"type": sobject}, **rec} for rec in records]


def error_text(errors: Sequence[Mapping[str, Any]] | None) -> str:
    """``CODE: message`` for a per-record error list (collections use ``statusCode``, REST ``errorCode``)."""
    parts = []
    for err in errors or ():
        code = err.get("statusCode") or err.get("errorCode") or "UNKNOWN_ERROR"
        message = (err.get("message") or "").strip()
        fields = err.get("fields") or []
        where = f" ({', '.join(fields)})" if fields else ""
        parts.append(f"{code}: {message}{where}" if message else f"{code}{where}")
    return "; ".join(parts) or "UNKNOWN_ERROR: Salesforce reported a failure without details"


def error_codes(errors: Sequence[Mapping[str, Any]] | None) -> set[str]:
    return {err.get("statusCode") or err.get("errorCode") or "" for err in errors or ()}
