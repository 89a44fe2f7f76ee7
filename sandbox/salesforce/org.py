"""The in-memory Salesforce org: records, the rules Salesforce enforces on them, sessions and API counting.

Everything is guarded by one re-entrant lock. Records are plain dicts keyed by API field name holding
Python values (aware UTC datetimes, dates, bools, ints, strings; EventWhoIds a list); private
bookkeeping keys start with ``_``. Deletes are soft (``IsDeleted``), as in the recycle bin, so that
``queryAll`` sees them.

Rules and where they come from (error codes/messages marked "sandbox wording" could not be found
verbatim in the documentation and are our best reconstruction):

- Subject and Location at most 255 characters, Description at most 32,000 (Event object reference,
  https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_event.htm).
  Error ``STRING_TOO_LONG`` "<Label>: data value too large: <value> (max length=<n>)".
- DurationInMinutes / EndDateTime: "If IsAllDayEvent is false, a value must be supplied for either
  DurationInMinutes or EndDateTime. Supplying values in both fields is allowed if the values add up to
  the same amount of time." and for all-day events "If both fields are null, the duration defaults to
  one day." (Event.EndDateTime, same page). ActivityDate "and StartDateTime must match, or one of them
  must be null" (Event.ActivityDate); ActivityDateTime likewise equals StartDateTime.
- Multiday events may last at most 14 days. Out-of-range durations are ``FIELD_INTEGRITY_EXCEPTION``
  "Duration must be between 0 and <max> minutes" on DurationInMinutes -- the real wording when multiday
  events are off is "Duration must be between 0 and 1440 minutes: Duration"
  (https://support.rivasync.com/hc/en-us/articles/24498086130836); we use 20160 (14 days) as the max.
  An end before the start is a negative duration and fails the same way.
- All-day events: StartDateTime is midnight GMT of ActivityDate, DurationInMinutes a multiple of 1440.
  Believed (known Salesforce behaviour, not stated in the docs we could reach): EndDateTime of an all-day event is
  00:00Z of its LAST day (inclusive), so a one-day all-day event has EndDateTime == StartDateTime and
  DurationInMinutes 1440, a two-day one ends at 00:00Z of day two with 2880.
- Group events: inviting a User creates a child Event (IsChild true, owned by the invitee); "An
  EventRelation object can't be related to a child event" (Event reference, note); deleting an event
  deletes its relations (EventRelation reference, "If you delete an event, then relations between the
  event and any specified contacts, leads, and other records are also deleted",
  https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_eventattendee.htm).
  Child events can only have their reminder fields updated (known Salesforce behaviour) -- error code sandbox wording.
- Shared Activities on: "An event can be related to up to 50 contacts or one lead" (EventRelation
  reference); EventWhoRelation is the read-only IsParent=true/IsWhat=false view (EventWhoRelation
  reference). Off: one WhoId, and EventWhoIds/IsParent/IsWhat/EventWhoRelation do not exist.
- Restricted picklists: ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`` "<Label>: bad value for restricted
  picklist field: <value>"; unknown fields ``INVALID_FIELD`` "No such column '<f>' on sobject of type <T>";
  read-only fields ``INVALID_FIELD_FOR_INSERT_UPDATE`` "Unable to create/update fields: <f>. Please check the
  security settings of this field and verify that it is read/write for your profile or permission set.";
  missing required fields ``REQUIRED_FIELD_MISSING`` "Required fields are missing: [<f>]".
"""

from __future__ import annotations

import contextlib
import copy
import re
import secrets
import threading
from collections import deque
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Iterator
from zoneinfo import ZoneInfo

from . import ids, recurrence, schema, soql
from .schema import Child, SObject

MAX_EVENT_MINUTES = 14 * 24 * 60  # multiday events: 14 days
MAX_WHO_CONTACTS = 50
DAY = timedelta(days=1)
ROLLING_DAY = timedelta(hours=24)

EVENT_MIRRORED = (
    "Subject", "StartDateTime", "EndDateTime", "ActivityDateTime", "ActivityDate", "EndDate",
    "DurationInMinutes", "IsAllDayEvent", "Description", "Location", "IsPrivate", "WhoId", "WhatId",
)
CHILD_UPDATABLE = {"IsReminderSet", "ReminderDateTime"}
# a Classic series' pattern, on its master only
_PATTERN_FIELDS = {"RecurrenceStartDateTime", "RecurrenceEndDateOnly", "RecurrenceType", "RecurrenceInterval",
                   "RecurrenceDayOfWeekMask", "RecurrenceDayOfMonth", "RecurrenceInstance", "RecurrenceMonthOfYear",
                   "RecurrenceTimeZoneSidKey"}


class SfError(Exception):
    """A Salesforce error reply: ``[{"message", "errorCode", "fields"}]`` with an HTTP status."""

    def __init__(self, code: str, message: str, fields: Iterable[str] = (), status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = list(fields)
        self.status = status

    def rest(self) -> dict:
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def collection(self) -> dict:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def not_found() -> SfError:
    return SfError("NOT_FOUND", "The requested resource does not exist", status=404)


_DT_IN = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(value: str) -> datetime | None:
    m = _DT_IN.match(value.strip())
    if not m:
        return None
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    try:
        tzinfo = timezone.utc
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            digits = tz[1:].replace(":", "")
            tzinfo = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        micro = int((frac or "0").ljust(6, "0")[:6])
        return datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss or 0), micro, tzinfo).astimezone(timezone.utc)
    except ValueError:
        return None


def _ms(dt: datetime) -> datetime:
    """Salesforce keeps milliseconds."""
    return dt.astimezone(timezone.utc).replace(microsecond=(dt.microsecond // 1000) * 1000)


def midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=timezone.utc)


class Org(soql.Host):
    def __init__(
        self,
        clock: Any,
        *,
        shared_activities: bool = True,
        required_custom_field: str | None = None,
        daily_api_limit: int = 100_000,
        session_id: str | None = None,
    ) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self._ids = ids.IdFactory()
        self.org_id = self._ids.new("00D")
        self._initial = (shared_activities, required_custom_field, daily_api_limit)
        self.session_id = session_id or f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
        self.jwt_apps: dict[str, tuple[bytes, str]] = {}
        self.cc_apps: dict[str, tuple[str, str]] = {}
        self.reset()

    # ------------------------------------------------------------------------------------ settings
    def reset(self) -> None:
        """Empty org: no data, no API calls counted, switches back to their constructor values.

        The default session id and the configured connected apps (JWT, client credentials) survive.
        """
        with self.lock:
            sa, custom, limit = self._initial
            self.shared_activities = sa
            self.required_custom_field = self._custom_name(custom)
            self.daily_api_limit = limit
            self._objects: dict[str, SObject] | None = None
            self.tables: dict[str, dict[str, dict]] = {t: {} for t in ("Event", "EventRelation", "Contact", "Lead", "User")}
            self._rels_by_event: dict[str, list[str]] = {}
            self._children: dict[str, list[str]] = {}
            self._journal: list[tuple[str, str, dict | None]] | None = None
            self._calls: deque[datetime] = deque()
            self.locators: dict[str, dict] = {}
            self.api_user_id = self.add_user("integration@calsync.sandbox", name="Integration User")
            self.sessions: dict[str, str] = {self.session_id: self.api_user_id}

    @staticmethod
    def _custom_name(name: str | None) -> str | None:
        if not name:
            return None
        return name if name.endswith("__c") else f"{name}__c"

    @property
    def objects(self) -> dict[str, SObject]:  # type: ignore[override]
        with self.lock:
            if self._objects is None:
                self._objects = schema.build(self.shared_activities, self.required_custom_field)
            return self._objects

    def set_shared_activities(self, on: bool) -> None:
        with self.lock:
            self.shared_activities = bool(on)
            self._objects = None
            for ev in self.tables["Event"].values():
                self._refresh_whos(ev["Id"], touch=False)

    def set_required_custom_field(self, name: str | None) -> None:
        with self.lock:
            self.required_custom_field = self._custom_name(name)
            self._objects = None

    def set_daily_limit(self, n: int) -> None:
        with self.lock:
            self.daily_api_limit = int(n)

    def settings(self) -> dict:
        with self.lock:
            return {
                "shared_activities": self.shared_activities,
                "required_custom_field": self.required_custom_field,
                "daily_api_limit": self.daily_api_limit,
            }

    # ------------------------------------------------------------------------------------ sessions & limits
    def new_session(self, user_id: str) -> str:
        with self.lock:
            token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
            self.sessions[token] = user_id
            return token

    def session_user(self, token: str | None) -> str | None:
        with self.lock:
            return self.sessions.get(token or "")

    def expire_session(self, token: str) -> None:
        """Make ``token`` invalid (the next call with it gets 401 INVALID_SESSION_ID)."""
        with self.lock:
            self.sessions.pop(token, None)

    def _prune_calls(self, now: datetime) -> None:
        cutoff = now - ROLLING_DAY
        while self._calls and self._calls[0] <= cutoff:
            self._calls.popleft()

    def try_count_call(self) -> tuple[bool, int]:
        """Count one API call if the rolling-day allocation allows it; returns (allowed, used)."""
        with self.lock:
            now = self.clock.now()
            self._prune_calls(now)
            if len(self._calls) >= self.daily_api_limit:
                return False, len(self._calls)
            self._calls.append(now)
            return True, len(self._calls)

    def api_calls(self) -> int:
        with self.lock:
            self._prune_calls(self.clock.now())
            return len(self._calls)

    def limit_header(self) -> str:
        return f"api-usage={self.api_calls()}/{self.daily_api_limit}"

    def configure_jwt(self, consumer_key: str, certificate_pem: bytes, username: str) -> None:
        with self.lock:
            self.jwt_apps[consumer_key] = (certificate_pem, username)

    def configure_client_credentials(self, consumer_key: str, consumer_secret: str, run_as_username: str) -> None:
        with self.lock:
            self.cc_apps[consumer_key] = (consumer_secret, run_as_username)

    def user_by_username(self, username: str) -> dict | None:
        with self.lock:
            for u in self.tables["User"].values():
                if (u.get("Username") or "").lower() == username.lower() and u.get("IsActive"):
                    return u
            return None

    # ------------------------------------------------------------------------------------ storage
    def _now(self) -> datetime:
        return _ms(self.clock.now())

    def _put(self, typ: str, rec: dict) -> None:
        table = self.tables[typ]
        if self._journal is not None:
            old = table.get(rec["Id"])
            self._journal.append((typ, rec["Id"], copy.copy(old) if old is not None else None))
        table[rec["Id"]] = rec

    def _index(self, typ: str, rec: dict) -> None:
        if typ == "EventRelation":
            lst = self._rels_by_event.setdefault(rec["EventId"], [])
            if rec["Id"] not in lst:
                lst.append(rec["Id"])
        elif typ == "Event" and rec.get("_parent"):
            lst = self._children.setdefault(rec["_parent"], [])
            if rec["Id"] not in lst:
                lst.append(rec["Id"])

    def _rebuild_indexes(self) -> None:
        self._rels_by_event = {}
        self._children = {}
        for rec in self.tables["EventRelation"].values():
            self._index("EventRelation", rec)
        for rec in self.tables["Event"].values():
            self._index("Event", rec)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[list]:
        """Collect changes; call ``rollback(journal)`` to undo them (allOrNone)."""
        with self.lock:
            outer = self._journal
            self._journal = []
            try:
                yield self._journal
            finally:
                journal = self._journal
                self._journal = outer
                if outer is not None:
                    outer.extend(journal)

    def rollback(self, journal: list) -> None:
        with self.lock:
            for typ, rid, old in reversed(journal):
                if old is None:
                    self.tables[typ].pop(rid, None)
                else:
                    self.tables[typ][rid] = old
            journal.clear()
            self._rebuild_indexes()

    def _new_record(self, typ: str, user_id: str | None, when: datetime | None = None) -> dict:
        now = _ms(when) if when else self._now()
        rid = self._ids.new(schema.PREFIX[typ])
        rec: dict[str, Any] = {"Id": rid}
        for f in (self.objects[typ].fields.values() if typ in self.objects else ()):
            # a checkbox is never null in Salesforce: false until set
            rec.setdefault(f.name, False if f.type == "boolean" and not f.nillable else None)
        rec.update({"CreatedDate": now, "LastModifiedDate": now, "SystemModstamp": now,
                    "CreatedById": user_id, "LastModifiedById": user_id})
        if typ != "User":
            rec["IsDeleted"] = False
        return rec

    def _touch(self, rec: dict, user_id: str | None) -> None:
        now = self._now()
        rec["LastModifiedDate"] = now
        rec["SystemModstamp"] = now
        rec["LastModifiedById"] = user_id

    # ------------------------------------------------------------------------------------ Host (SOQL)
    def type_of(self, record_id: str | None) -> str | None:
        if not record_id:
            return None
        return schema.TYPE_BY_PREFIX.get(record_id[:3])

    def lookup(self, record_id: str | None) -> tuple[str, dict] | None:
        typ = self.type_of(record_id)
        if typ is None:
            return None
        rec = self.tables[typ].get(record_id)  # type: ignore[arg-type]
        if rec is None or rec.get("IsDeleted"):
            return None
        return typ, rec

    def _visible_relation(self, rel: dict) -> bool:
        # without Shared Activities EventRelations only represent invitees
        return self.shared_activities or bool(rel.get("IsInvitee"))

    def _who_row(self, rel: dict) -> dict:
        return {
            "Id": rel["Id"], "EventId": rel["EventId"], "RelationId": rel["RelationId"],
            "Type": self.type_of(rel["RelationId"]), "IsDeleted": rel["IsDeleted"],
            "CreatedDate": rel["CreatedDate"], "CreatedById": rel["CreatedById"],
            "LastModifiedDate": rel["LastModifiedDate"], "LastModifiedById": rel["LastModifiedById"],
            "SystemModstamp": rel["SystemModstamp"],
        }

    def rows(self, obj: str, include_deleted: bool) -> Iterable[dict]:
        if obj == "EventWhoRelation":
            return [self._who_row(r) for r in self.tables["EventRelation"].values()
                    if r.get("IsParent") and (include_deleted or not r["IsDeleted"])]
        recs = self.tables[obj].values()
        out = [r for r in recs if include_deleted or not r.get("IsDeleted")]
        if obj == "EventRelation":
            out = [r for r in out if self._visible_relation(r)]
        return out

    def child_rows(self, child: Child, parent_id: str, include_deleted: bool) -> list[dict]:
        rels = [self.tables["EventRelation"][i] for i in self._rels_by_event.get(parent_id, ())]
        rels = [r for r in rels if include_deleted or not r["IsDeleted"]]
        if child.sobject == "EventWhoRelation":
            return [self._who_row(r) for r in rels if r.get("IsParent")]
        return [r for r in rels if self._visible_relation(r)]

    def query(self, text: str, version: str, include_deleted: bool) -> tuple[int, list[dict]]:
        with self.lock:
            try:
                return soql.execute(text, self, version, include_deleted)
            except soql.SoqlError as exc:
                raise SfError(exc.code, exc.message) from None

    # ------------------------------------------------------------------------------------ input parsing
    def _parse_body(self, typ: str, body: dict, op: str) -> dict[str, Any]:
        obj = self.objects[typ]
        out: dict[str, Any] = {}
        readonly: list[str] = []
        for key, raw in body.items():
            if key == "attributes":
                continue
            f = obj.field(key)
            if f is None:
                raise SfError("INVALID_FIELD", f"No such column '{key}' on sobject of type {typ}", [key])
            if (op == "create" and not f.createable) or (op == "update" and not f.updateable):
                readonly.append(f.name)
                continue
            out[f.name] = self._convert(f, raw)
        if readonly:
            raise SfError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(readonly)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                readonly,
            )
        return out

    def _convert(self, f: schema.Field, raw: Any) -> Any:
        label = f.label or f.name

        def bad(kind: str) -> SfError:
            return SfError("JSON_PARSER_ERROR",
                           f"Cannot deserialize instance of {kind} from VALUE_STRING value {raw} or request may be "
                           "missing a required field at [line:1, column:1]", [f.name])

        if raw is None:
            if f.type == "boolean":
                return False
            if f.type == "junctionidlist":
                return []
            return None
        t = f.type
        if t == "datetime":
            if not isinstance(raw, str) or (v := parse_datetime(raw)) is None:
                raise bad("datetime")
            return _ms(v)
        if t == "date":
            if isinstance(raw, str):
                try:
                    return date.fromisoformat(raw[:10])
                except ValueError:
                    pass
            raise bad("date")
        if t == "boolean":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            raise bad("boolean")
        if t == "int":
            if isinstance(raw, bool):
                raise bad("int")
            if isinstance(raw, int):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
                return int(raw)
            raise bad("int")
        if t in ("reference", "id"):
            full = ids.to18(raw)
            if full is None:
                raise SfError("MALFORMED_ID", f"{label}: id value of incorrect type: {raw}", [f.name])
            return full
        if t == "junctionidlist":
            if not isinstance(raw, list):
                raise bad("array")
            out = []
            for item in raw:
                full = ids.to18(item)
                if full is None:
                    raise SfError("MALFORMED_ID", f"{label}: id value of incorrect type: {item}", [f.name])
                out.append(full)
            return out
        if isinstance(raw, (dict, list)):
            raise bad("string")
        value = raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
        if f.type == "picklist" and f.restricted and value not in f.picklist:
            raise SfError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                          f"{label}: bad value for restricted picklist field: {value}", [f.name])
        if f.length and len(value) > f.length:
            raise SfError("STRING_TOO_LONG", f"{label}: data value too large: {value} (max length={f.length})",
                          [f.name])
        return value

    # ------------------------------------------------------------------------------------ generic API ops
    def create(self, typ: str, body: dict, user_id: str) -> str:
        with self.lock:
            obj = self._writable(typ, "create")
            if any(k.lower() == "id" for k in body):
                raise SfError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            values = self._parse_body(obj.name, body, "create")
            if obj.name == "Event":
                return self._create_event(values, user_id)
            if obj.name == "EventRelation":
                return self._create_relation(values, user_id)
            return self._create_person(obj.name, values, user_id)

    def update(self, typ: str, record_id: str, body: dict, user_id: str) -> None:
        with self.lock:
            obj = self._writable(typ, "update")
            rec = self._existing(obj.name, record_id)
            values = self._parse_body(obj.name, body, "update")
            if obj.name == "Event":
                self._update_event(rec, values, user_id)
            elif obj.name == "EventRelation":
                self._update_relation(rec, values, user_id)
            else:
                new = dict(rec)
                new.update(values)
                self._check_person(obj.name, new)
                if obj.name in ("Contact", "Lead"):
                    new["Name"] = " ".join(x for x in (new.get("FirstName"), new.get("LastName")) if x)
                self._touch(new, user_id)
                self._put(obj.name, new)

    def delete(self, typ: str, record_id: str, user_id: str) -> None:
        with self.lock:
            obj = self._writable(typ, "delete")
            rec = self._existing(obj.name, record_id)
            if obj.name == "Event":
                if rec.get("IsChild"):
                    # sandbox wording; invitees are removed by deleting their EventRelation
                    raise SfError("DELETE_FAILED",
                                  "You can't delete a child event. Delete the invitee's EventRelation or the "
                                  "parent event instead.")
                self._delete_event(rec, user_id)
            elif obj.name == "EventRelation":
                self._delete_relation(rec, user_id)
            else:
                new = dict(rec, IsDeleted=True)
                self._touch(new, user_id)
                self._put(obj.name, new)

    def get(self, typ: str, record_id: str, version: str, fields: list[str] | None = None) -> dict:
        with self.lock:
            obj = self._object(typ)
            full = ids.to18(record_id)
            if full is None:
                raise SfError("NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}",
                              status=404)
            if obj.name == "EventWhoRelation":
                rel = self.tables["EventRelation"].get(full)
                rec = self._who_row(rel) if rel and rel.get("IsParent") else None
            else:
                rec = self.tables[obj.name].get(full)
            if rec is None or rec.get("IsDeleted") or (obj.name == "EventRelation" and not self._visible_relation(rec)):
                raise not_found()
            names = list(obj.fields)
            if fields:
                names = []
                for name in fields:
                    f = obj.field(name)
                    if f is None:
                        raise SfError("INVALID_FIELD", soql._NO_COLUMN.format(f=name, e=obj.name))
                    names.append(f.name)
            out: dict[str, Any] = {"attributes": {"type": obj.name,
                                                  "url": f"/services/data/v{version}/sobjects/{obj.name}/{full}"}}
            for name in names:
                out[name] = soql.wire(rec.get(name))
            return out

    def _object(self, typ: str) -> SObject:
        for name, obj in self.objects.items():
            if name.lower() == typ.lower():
                return obj
        raise not_found()

    def _writable(self, typ: str, op: str) -> SObject:
        obj = self._object(typ)
        allowed = {"create": obj.createable, "update": obj.updateable, "delete": obj.deletable}[op]
        if not allowed:
            verb = {"create": "insert", "update": "update", "delete": "delete"}[op]
            raise SfError("INVALID_TYPE_FOR_OPERATION", f"entity type {obj.name} does not support {verb}")
        return obj

    def _existing(self, typ: str, record_id: str) -> dict:
        full = ids.to18(record_id)
        if full is None or self.type_of(full) != typ:
            raise SfError("NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}",
                          status=404)
        rec = self.tables[typ].get(full)
        if rec is None or (typ == "EventRelation" and not self._visible_relation(rec)):
            raise not_found()
        if rec.get("IsDeleted"):
            raise SfError("ENTITY_IS_DELETED", "entity is deleted", status=404)
        return rec

    # ------------------------------------------------------------------------------------ Contact / Lead
    def _check_person(self, typ: str, rec: dict) -> None:
        missing = [f for f in (("LastName", "Company") if typ == "Lead" else ("LastName",)) if not rec.get(f)]
        if missing:
            raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        owner = rec.get("OwnerId")
        if owner is not None and self.lookup(owner) is None or (owner and self.type_of(owner) != "User"):
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["OwnerId"])

    def _create_person(self, typ: str, values: dict, user_id: str) -> str:
        rec = self._new_record(typ, user_id)
        rec["OwnerId"] = user_id
        rec.update(values)
        if typ == "Lead":
            rec.setdefault("IsConverted", False)
            rec["IsConverted"] = bool(rec["IsConverted"])
        self._check_person(typ, rec)
        rec["Name"] = " ".join(x for x in (rec.get("FirstName"), rec.get("LastName")) if x)
        self._put(typ, rec)
        return rec["Id"]

    # ------------------------------------------------------------------------------------ Event rules
    def _timing(self, values: dict, old: dict | None) -> dict:
        """Work out StartDateTime, EndDateTime, DurationInMinutes, ActivityDate(Time), EndDate."""
        def was(name: str) -> Any:
            return old.get(name) if old else None

        allday = values["IsAllDayEvent"] if "IsAllDayEvent" in values else bool(was("IsAllDayEvent"))
        start = values.get("StartDateTime")
        adt = values.get("ActivityDateTime")
        if start is not None and adt is not None and start != adt:
            raise SfError("FIELD_INTEGRITY_EXCEPTION",
                          "The value for ActivityDateTime and StartDateTime must match, or one of them must be null",
                          ["ActivityDateTime", "StartDateTime"])
        start = start or adt
        has_end = "EndDateTime" in values and values["EndDateTime"] is not None
        has_dur = "DurationInMinutes" in values and values["DurationInMinutes"] is not None
        end = values.get("EndDateTime")
        dur = values.get("DurationInMinutes")

        if allday:
            day = values.get("ActivityDate")
            if start is not None and day is not None and start.date() != day:
                raise SfError("FIELD_INTEGRITY_EXCEPTION",
                              "The value for ActivityDate and StartDateTime must match, or one of them must be null",
                              ["ActivityDate", "StartDateTime"])
            if day is None:
                day = start.date() if start is not None else was("ActivityDate")
            if day is None:
                raise SfError("REQUIRED_FIELD_MISSING", "Required fields are missing: [ActivityDate]", ["ActivityDate"])
            if has_dur and dur % 1440 != 0:
                raise SfError("FIELD_INTEGRITY_EXCEPTION",
                              "The duration of an all-day event must be a multiple of 1440 minutes",
                              ["DurationInMinutes"])
            if has_end:
                days = (end.date() - day).days + 1  # inclusive end: the last day at 00:00Z
                if has_dur and dur != days * 1440:
                    raise SfError("FIELD_INTEGRITY_EXCEPTION",
                                  "DurationInMinutes and EndDateTime must add up to the same amount of time",
                                  ["DurationInMinutes", "EndDateTime"])
                minutes = days * 1440
            elif has_dur:
                minutes = dur
            elif old is not None and was("IsAllDayEvent"):
                minutes = was("DurationInMinutes") or 1440
            elif old is not None and was("DurationInMinutes"):
                minutes = max(1440, -(-was("DurationInMinutes") // 1440) * 1440)
            else:
                minutes = 1440  # "If both fields are null, the duration defaults to one day."
            self._check_minutes(minutes if minutes > 0 else -1)
            start = midnight(day)
            end = start + timedelta(minutes=minutes) - DAY
            return {"IsAllDayEvent": True, "StartDateTime": start, "ActivityDateTime": start,
                    "ActivityDate": day, "EndDateTime": end, "EndDate": end.date(),
                    "DurationInMinutes": minutes}

        if start is None:
            start = was("StartDateTime")
            if start is None:
                raise SfError("REQUIRED_FIELD_MISSING", "Required fields are missing: [StartDateTime]",
                              ["StartDateTime"])
        if has_end and has_dur:
            if int((end - start).total_seconds() // 60) != dur:
                raise SfError("FIELD_INTEGRITY_EXCEPTION",
                              "DurationInMinutes and EndDateTime must add up to the same amount of time",
                              ["DurationInMinutes", "EndDateTime"])
            minutes = dur
        elif has_end:
            minutes = int((end - start).total_seconds() // 60)
        elif has_dur:
            minutes = dur
        elif old is not None and was("DurationInMinutes") is not None:
            minutes = was("DurationInMinutes")
            if was("IsAllDayEvent"):
                minutes = (was("DurationInMinutes") or 1440)
        else:
            raise SfError("REQUIRED_FIELD_MISSING", "Required fields are missing: [DurationInMinutes]",
                          ["DurationInMinutes"])
        self._check_minutes(minutes)
        end = start + timedelta(minutes=minutes)
        return {"IsAllDayEvent": False, "StartDateTime": start, "ActivityDateTime": start,
                "ActivityDate": start.date(), "EndDateTime": end, "EndDate": end.date(),
                "DurationInMinutes": minutes}

    @staticmethod
    def _check_minutes(minutes: int) -> None:
        if minutes < 0 or minutes > MAX_EVENT_MINUTES:
            raise SfError("FIELD_INTEGRITY_EXCEPTION",
                          f"Duration must be between 0 and {MAX_EVENT_MINUTES} minutes: Duration",
                          ["DurationInMinutes"])

    def _check_owner(self, owner_id: str) -> None:
        found = self.lookup(owner_id)
        if found is None or found[0] != "User" or not found[1].get("IsActive"):
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["OwnerId"])

    def _check_who_id(self, who: str, field: str = "WhoId") -> str:
        typ = self.type_of(who)
        if typ not in ("Contact", "Lead"):
            raise SfError("FIELD_INTEGRITY_EXCEPTION", f"Name ID: id value of incorrect type: {who}", [field])
        if self.lookup(who) is None:
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [field])
        return typ  # type: ignore[return-value]

    def _check_who_set(self, who_ids: list[str]) -> None:
        types = [self._check_who_id(w, "EventWhoIds") for w in who_ids]
        leads = types.count("Lead")
        contacts = types.count("Contact")
        if (leads and contacts) or leads > 1 or contacts > MAX_WHO_CONTACTS:
            raise SfError("FIELD_INTEGRITY_EXCEPTION",
                          "An event can be related to up to 50 contacts or one lead", ["EventWhoIds"])

    def _check_custom(self, rec: dict) -> None:
        name = self.required_custom_field
        if name and rec.get(name) in (None, ""):
            raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name])

    def _create_event(self, values: dict, user_id: str, *, when: datetime | None = None) -> str:
        if values.get("IsRecurrence"):
            return self._create_classic_series(values, user_id, when)
        if values.get("IsRecurrence2"):
            return self._create_event_series(values, user_id, when)
        if _PATTERN_FIELDS & {k for k, v in values.items() if v is not None}:
            raise SfError("FIELD_INTEGRITY_EXCEPTION", "Recurrence fields need IsRecurrence set to true (sandbox wording)",
                          sorted(_PATTERN_FIELDS & values.keys()))
        return self._create_single(values, user_id, when)

    def _create_single(self, values: dict, user_id: str, when: datetime | None = None) -> str:
        rec = self._new_record("Event", user_id, when)
        rec.update({"IsAllDayEvent": False, "IsPrivate": False, "IsChild": False, "IsGroupEvent": False,
                    "GroupEventType": None, "ShowAs": "Busy", "IsReminderSet": False, "OwnerId": user_id,
                    "WhoId": None, "WhatId": None, "IsRecurrence": False, "IsRecurrence2": False,
                    "IsRecurrence2Exception": False, "IsRecurrence2Exclusion": False})
        who_ids = values.pop("EventWhoIds", None)
        rec.update({k: v for k, v in values.items() if v is not None or k not in ("IsPrivate", "IsReminderSet")})
        rec.update(self._timing(values, None))
        self._check_owner(rec["OwnerId"])
        self._check_custom(rec)
        if rec.get("WhatId") is not None:
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["WhatId"])
        whos: list[str] = []
        if self.shared_activities:
            whos = list(dict.fromkeys(who_ids or []))
            if rec["WhoId"] and rec["WhoId"] not in whos:
                whos.insert(0, rec["WhoId"])
            self._check_who_set(whos)
            rec["WhoId"] = rec["WhoId"] or (whos[0] if whos else None)
            rec["EventWhoIds"] = whos
        elif rec["WhoId"]:
            self._check_who_id(rec["WhoId"])
        self._put("Event", rec)
        for who in whos:
            self._add_relation(rec, who, user_id, is_invitee=False, is_parent=True, status="New", when=when)
        return rec["Id"]

    # ---- recurring events: Classic series (IsRecurrence) and Lightning Experience event series (IsRecurrence2)
    def _series_timing(self, values: dict) -> tuple[datetime, int, bool]:
        """(first start, minutes, all-day) of a series being created."""
        allday = bool(values.get("IsAllDayEvent"))
        probe = {k: values[k] for k in ("StartDateTime", "EndDateTime", "DurationInMinutes", "ActivityDate",
                                        "ActivityDateTime", "IsAllDayEvent") if k in values}
        if values.get("RecurrenceStartDateTime") is not None and not allday:
            probe["StartDateTime"] = values["RecurrenceStartDateTime"]
            probe.pop("ActivityDateTime", None)
        timing = self._timing(probe, None)
        return timing["StartDateTime"], timing["DurationInMinutes"], allday

    def _occurrence_values(self, values: dict, day: date, wall: time, zone: ZoneInfo, minutes: int, allday: bool) -> dict:
        """An occurrence's fields: the series' own fields (no pattern), timed on ``day``."""
        occ = {k: v for k, v in values.items() if k in EVENT_MIRRORED or k in ("OwnerId", "ShowAs", "EventWhoIds")}
        for k in ("StartDateTime", "EndDateTime", "ActivityDateTime", "ActivityDate", "EndDate"):
            occ.pop(k, None)
        occ["IsAllDayEvent"] = allday
        occ["DurationInMinutes"] = minutes
        if allday:
            occ["ActivityDate"] = day
        else:
            occ["StartDateTime"] = _ms(datetime.combine(day, wall, tzinfo=zone).astimezone(timezone.utc))
        return occ

    def _pattern_dates(self, pattern: recurrence.Pattern, first: date, what: str, fields: tuple[str, ...]) -> list[date]:
        try:
            return recurrence.dates(pattern, first, what=what, fields=fields)
        except recurrence.PatternError as exc:
            raise SfError("FIELD_INTEGRITY_EXCEPTION", str(exc), exc.fields) from None

    def _create_classic_series(self, values: dict, user_id: str, when: datetime | None) -> str:
        """The series master (IsRecurrence, the pattern, the first occurrence's time) and a row per occurrence
        (RecurrenceActivityId = the master), as Salesforce Classic keeps a recurring event."""
        values = dict(values)
        for name in ("RecurrenceEndDateOnly", "RecurrenceType"):
            if values.get(name) is None:
                raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name])
        start, minutes, allday = self._series_timing(values)
        zone = ZoneInfo(values.get("RecurrenceTimeZoneSidKey") or "UTC")
        values["RecurrenceStartDateTime"] = None if allday else start
        if not allday:
            values["StartDateTime"] = start
            values.pop("ActivityDateTime", None)
        try:
            pattern = recurrence.classic_pattern(values)
        except recurrence.PatternError as exc:
            raise SfError("FIELD_INTEGRITY_EXCEPTION", str(exc), exc.fields) from None
        local = start.astimezone(zone)
        days = self._pattern_dates(pattern, start.date() if allday else local.date(), "Recurrence",
                                   ("RecurrenceType", "RecurrenceEndDateOnly"))
        master_id = self._create_single(dict(values, IsRecurrence=False), user_id, when)
        master = self.tables["Event"][master_id]
        master.update({k: values.get(k) for k in _PATTERN_FIELDS}, IsRecurrence=True)
        self._add_occurrences(master, values, days, local.time().replace(tzinfo=None), zone, minutes, allday, user_id, when)
        return master_id

    def _add_occurrences(self, master: dict, values: dict, days: list[date], wall: time, zone: ZoneInfo, minutes: int,
                         allday: bool, user_id: str, when: datetime | None) -> None:
        for n, day in enumerate(days):
            occ_id = self._create_single(self._occurrence_values(values, day, wall, zone, minutes, allday), user_id, when)
            self.tables["Event"][occ_id].update(RecurrenceActivityId=master["Id"], _occurrence=n)

    def _create_event_series(self, values: dict, user_id: str, when: datetime | None) -> str:
        """A Lightning Experience event series: the record of the pattern (GroupEventType 3) and one event per
        occurrence, each with IsRecurrence2 and the pattern. Returns the first occurrence's id (the id that names the
        whole series, e.g. to delete it: "specify the event ID of the first occurrence in the series",
        https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_event_series_delete.htm)."""
        text = values.get("Recurrence2PatternText")
        if not text:
            raise SfError("REQUIRED_FIELD_MISSING", "Required fields are missing: [Recurrence2PatternText]",
                          ["Recurrence2PatternText"])
        try:
            pattern = recurrence.parse_rrule(text)
        except recurrence.PatternError as exc:
            raise SfError("FIELD_INTEGRITY_EXCEPTION", str(exc), exc.fields) from None
        start, minutes, allday = self._series_timing(values)
        zone_name = values.get("Recurrence2PatternTimeZone") or "UTC"
        zone = ZoneInfo(zone_name)
        local = start.astimezone(zone)
        days = self._pattern_dates(pattern, start.date() if allday else local.date(), "Recurrence2PatternText",
                                   ("Recurrence2PatternText",))
        series = {"IsRecurrence2": True, "Recurrence2PatternText": text, "Recurrence2PatternStartDate": start,
                  "Recurrence2PatternTimeZone": zone_name, "Recurrence2PatternVersion": "1"}
        plain = {k: v for k, v in values.items() if k not in series}
        pattern_id = self._create_single(plain, user_id, when)
        self.tables["Event"][pattern_id].update(series, GroupEventType="3", _series=pattern_id)
        first = None
        for n, day in enumerate(days):
            occ_id = self._create_single(self._occurrence_values(plain, day, local.time().replace(tzinfo=None), zone,
                                                                 minutes, allday), user_id, when)
            self.tables["Event"][occ_id].update(series, GroupEventType="0", _series=pattern_id, _occurrence=n)
            first = first or occ_id
        return first  # type: ignore[return-value]

    def _series_rows(self, key: str, value: str) -> list[dict]:
        rows = [r for r in self.tables["Event"].values() if r.get(key) == value and not r["IsDeleted"]]
        return sorted(rows, key=lambda r: r.get("_occurrence", -1))

    def _update_series_master(self, master: dict, values: dict, user_id: str) -> None:
        """After a change to a Classic series master (``master`` as it is now): a new pattern or new times
        re-create the occurrences (Salesforce deletes and re-creates a series on such "critical" changes, Change
        Data Capture guide, "Updating Recurring Calendar Events"); any other field is copied to every occurrence."""
        critical = (_PATTERN_FIELDS | {"StartDateTime", "EndDateTime", "DurationInMinutes", "ActivityDate",
                                       "ActivityDateTime", "IsAllDayEvent"}) & values.keys()
        occurrences = self._series_rows("RecurrenceActivityId", master["Id"])
        if not critical:
            for occ in occurrences:
                new = dict(occ, **{k: v for k, v in values.items() if k in EVENT_MIRRORED or k == "ShowAs"})
                self._touch(new, user_id)
                self._put("Event", new)
            return
        for occ in occurrences:
            self._delete_event(occ, user_id)
        allday = bool(master["IsAllDayEvent"])
        start, minutes = master["StartDateTime"], master["DurationInMinutes"]
        master["RecurrenceStartDateTime"] = None if allday else start
        zone = ZoneInfo(master.get("RecurrenceTimeZoneSidKey") or "UTC")
        try:
            pattern = recurrence.classic_pattern(master)
        except recurrence.PatternError as exc:
            raise SfError("FIELD_INTEGRITY_EXCEPTION", str(exc), exc.fields) from None
        local = start.astimezone(zone)
        days = self._pattern_dates(pattern, start.date() if allday else local.date(), "Recurrence",
                                   ("RecurrenceType", "RecurrenceEndDateOnly"))
        self._add_occurrences(master, master, days, local.time().replace(tzinfo=None), zone, minutes, allday, user_id, None)

    def delete_from_this_event_onwards(self, record_id: str, user_id: str) -> None:
        """DELETE .../sobjects/Event/{id}/fromThisEventOnwards: this event of a Lightning event series and every later
        one; from the first occurrence, the whole series
        (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_event_series_delete.htm:
        "IsRecurrence2 must be true and IsRecurrence2Exclusion must be false")."""
        with self.lock:
            rec = self._existing("Event", record_id)
            if not rec.get("IsRecurrence2") or rec.get("IsRecurrence2Exclusion") or rec.get("GroupEventType") == "3":
                raise SfError("FIELD_INTEGRITY_EXCEPTION", "This event isn't part of an event series you can delete "
                              "from (sandbox wording)", ["IsRecurrence2"])
            rows = [r for r in self._series_rows("_series", rec["_series"]) if r.get("GroupEventType") != "3"]
            later = [r for r in rows if r.get("_occurrence", 0) >= rec.get("_occurrence", 0)]
            for r in later:
                self._delete_event(r, user_id)
            if len(later) == len(rows):
                self._delete_event(self.tables["Event"][rec["_series"]], user_id)

    def _update_event(self, rec: dict, values: dict, user_id: str) -> None:
        if rec.get("IsRecurrence"):
            if values.get("RecurrenceStartDateTime") is not None and not rec.get("IsAllDayEvent"):
                values = dict(values, StartDateTime=values["RecurrenceStartDateTime"])
            self._update_plain(rec, values, user_id)
            self._update_series_master(self.tables["Event"][rec["Id"]], values, user_id)
            return
        if _PATTERN_FIELDS & values.keys():
            raise SfError("FIELD_INTEGRITY_EXCEPTION", "Recurrence fields can only be set on the series master (sandbox "
                          "wording)", sorted(_PATTERN_FIELDS & values.keys()))
        self._update_plain(rec, values, user_id)
        if rec.get("IsRecurrence2") and rec.get("GroupEventType") != "3" and values:
            # one event of a series changed on its own: an exception to the pattern
            self.tables["Event"][rec["Id"]]["IsRecurrence2Exception"] = True

    def _update_plain(self, rec: dict, values: dict, user_id: str) -> None:
        if rec.get("IsChild"):
            locked = [k for k in values if k not in CHILD_UPDATABLE]
            if locked:
                # sandbox wording; known behaviour: "On a child event only reminder fields can be updated"
                raise SfError("FIELD_INTEGRITY_EXCEPTION",
                              "You can't update a child event: only the reminder fields (IsReminderSet, "
                              "ReminderDateTime) can be changed on an invitee's copy.", locked)
        new = dict(rec)
        who_ids = values.pop("EventWhoIds", None)
        new.update(values)
        timing_keys = {"StartDateTime", "EndDateTime", "DurationInMinutes", "ActivityDate", "ActivityDateTime",
                       "IsAllDayEvent"}
        if timing_keys & values.keys():
            new.update(self._timing(values, rec))
        self._check_owner(new["OwnerId"])
        self._check_custom(new)
        if "WhatId" in values and values["WhatId"] is not None:
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["WhatId"])
        desired: list[str] | None = None
        if self.shared_activities:
            current = list(rec.get("EventWhoIds") or [])
            if who_ids is not None:
                desired = list(dict.fromkeys(who_ids))
                if "WhoId" in values and values["WhoId"] and values["WhoId"] not in desired:
                    desired.insert(0, values["WhoId"])
            elif "WhoId" in values:
                desired = [w for w in current if w != rec.get("WhoId")]
                if values["WhoId"]:
                    desired.insert(0, values["WhoId"])
            if desired is not None:
                self._check_who_set(desired)
                if "WhoId" not in values or not values["WhoId"]:
                    new["WhoId"] = rec.get("WhoId") if rec.get("WhoId") in desired else (desired[0] if desired else None)
        elif "WhoId" in values and values["WhoId"]:
            self._check_who_id(values["WhoId"])
        self._touch(new, user_id)
        self._put("Event", new)
        if desired is not None:
            self._set_parent_relations(new, desired, user_id)
        self._mirror_children(new, user_id)

    def _mirror_children(self, parent: dict, user_id: str) -> None:
        for cid in self._children.get(parent["Id"], ()):
            child = self.tables["Event"][cid]
            if child.get("IsDeleted"):
                continue
            new = dict(child)
            for k in EVENT_MIRRORED:
                new[k] = parent.get(k)
            self._touch(new, user_id)
            self._put("Event", new)

    def _delete_event(self, rec: dict, user_id: str) -> None:
        if rec.get("IsRecurrence"):  # a Classic series master takes its occurrences with it
            for occ in self._series_rows("RecurrenceActivityId", rec["Id"]):
                self._delete_event(occ, user_id)
        new = dict(rec, IsDeleted=True)
        self._touch(new, user_id)
        self._put("Event", new)
        for rid in self._rels_by_event.get(rec["Id"], ()):
            rel = self.tables["EventRelation"][rid]
            if not rel["IsDeleted"]:
                r2 = dict(rel, IsDeleted=True)
                self._touch(r2, user_id)
                self._put("EventRelation", r2)
        for cid in self._children.get(rec["Id"], ()):
            child = self.tables["Event"][cid]
            if not child["IsDeleted"]:
                c2 = dict(child, IsDeleted=True)
                self._touch(c2, user_id)
                self._put("Event", c2)

    # ------------------------------------------------------------------------------------ EventRelation rules
    def _live_relations(self, event_id: str) -> list[dict]:
        rels = (self.tables["EventRelation"][i] for i in self._rels_by_event.get(event_id, ()))
        return [r for r in rels if not r["IsDeleted"]]

    def _create_relation(self, values: dict, user_id: str) -> str:
        for req in ("EventId", "RelationId"):
            if not values.get(req):
                raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{req}]", [req])
        found = self.lookup(values["EventId"])
        if found is None or found[0] != "Event":
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["EventId"])
        event = found[1]
        if event.get("IsChild"):
            # "An EventRelation object can't be related to a child event" (Event object reference)
            raise SfError("FIELD_INTEGRITY_EXCEPTION",
                          "An EventRelation can't be related to a child event", ["EventId"])
        is_parent = bool(values.get("IsParent")) if self.shared_activities else False
        is_invitee = values["IsInvitee"] if "IsInvitee" in values else not is_parent
        if values.get("IsWhat"):
            raise SfError("FIELD_INTEGRITY_EXCEPTION", "IsWhat relations need a WhatId record", ["IsWhat"])
        if not is_invitee and not is_parent:
            raise SfError("FIELD_INTEGRITY_EXCEPTION",
                          "An EventRelation must be an invitee (IsInvitee) or a related contact or lead (IsParent)",
                          ["IsInvitee"])
        status = values.get("Status") or "New"
        return self._add_relation(event, values["RelationId"], user_id, is_invitee=bool(is_invitee),
                                  is_parent=is_parent, status=status, response=values.get("Response"),
                                  responded=values.get("RespondedDate"))

    def _add_relation(self, event: dict, relation_id: str, user_id: str, *, is_invitee: bool, is_parent: bool,
                      status: str, response: str | None = None, responded: datetime | None = None,
                      when: datetime | None = None) -> str:
        typ = self.type_of(relation_id)
        if typ not in ("Contact", "Lead", "User"):
            raise SfError("FIELD_INTEGRITY_EXCEPTION", f"Relation ID: id value of incorrect type: {relation_id}",
                          ["RelationId"])
        if self.lookup(relation_id) is None:
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["RelationId"])
        if is_parent and typ == "User":
            raise SfError("FIELD_INTEGRITY_EXCEPTION", f"Name ID: id value of incorrect type: {relation_id}",
                          ["RelationId"])
        live = self._live_relations(event["Id"])
        for r in live:
            if r["RelationId"] == relation_id:
                if is_parent and not r.get("IsParent") and not is_invitee:
                    # an invitee also becoming a Who: one relation carries both flags
                    self._set_parent_relations(event, list(event.get("EventWhoIds") or []) + [relation_id], user_id)
                    return r["Id"]
                raise SfError("DUPLICATE_VALUE",
                              f"duplicate value found: RelationId duplicates value on record with id: {r['Id']}",
                              ["RelationId"])
        if is_parent:
            whos = [r["RelationId"] for r in live if r.get("IsParent")] + [relation_id]
            self._check_who_set(whos)
        rec = self._new_record("EventRelation", user_id, when)
        rec.update({"EventId": event["Id"], "RelationId": relation_id, "IsInvitee": is_invitee,
                    "Status": status, "Response": response,
                    "RespondedDate": responded or (rec["CreatedDate"] if status != "New" else None)})
        if self.shared_activities or is_parent:
            rec["IsParent"] = is_parent
            rec["IsWhat"] = False
        self._put("EventRelation", rec)
        self._index("EventRelation", rec)
        if is_invitee:
            self._mark_group(event["Id"], user_id)
            if typ == "User":
                self._make_child(event, relation_id, user_id, when)
        if is_parent:
            self._refresh_whos(event["Id"])
        return rec["Id"]

    def _mark_group(self, event_id: str, user_id: str) -> None:
        ev = self.tables["Event"][event_id]
        grouped = any(r["IsInvitee"] for r in self._live_relations(event_id))
        if bool(ev["IsGroupEvent"]) != grouped:
            new = dict(ev, IsGroupEvent=grouped, GroupEventType="1" if grouped else None)
            self._put("Event", new)

    def _make_child(self, parent: dict, owner_id: str, user_id: str, when: datetime | None) -> None:
        child = self._new_record("Event", user_id, when)
        for k, v in parent.items():
            if k in EVENT_MIRRORED or k == "ShowAs":
                child[k] = v
        child.update({"OwnerId": owner_id, "IsChild": True, "IsGroupEvent": True, "GroupEventType": "1",
                      "IsReminderSet": False, "_parent": parent["Id"]})
        if self.required_custom_field:
            child[self.required_custom_field] = parent.get(self.required_custom_field)
        if self.shared_activities:
            child["EventWhoIds"] = list(parent.get("EventWhoIds") or [])
        self._put("Event", child)
        self._index("Event", child)

    def _refresh_whos(self, event_id: str, touch: bool = False) -> None:
        ev = self.tables["Event"].get(event_id)
        if ev is None or ev.get("IsChild"):
            return
        whos = [r["RelationId"] for r in self._live_relations(event_id) if r.get("IsParent")]
        if not self.shared_activities:
            return
        who = ev.get("WhoId") if ev.get("WhoId") in whos else (whos[0] if whos else None)
        if ev.get("EventWhoIds") != whos or ev.get("WhoId") != who:
            new = dict(ev, EventWhoIds=whos, WhoId=who)
            self._put("Event", new)
            for cid in self._children.get(event_id, ()):
                c = self.tables["Event"][cid]
                self._put("Event", dict(c, EventWhoIds=list(whos), WhoId=who))

    def _set_parent_relations(self, event: dict, desired: list[str], user_id: str) -> None:
        desired = list(dict.fromkeys(desired))
        live = {r["RelationId"]: r for r in self._live_relations(event["Id"])}
        for rid, rel in live.items():
            if rel.get("IsParent") and rid not in desired:
                if rel["IsInvitee"]:
                    new = dict(rel, IsParent=False)
                    self._touch(new, user_id)
                    self._put("EventRelation", new)
                else:
                    new = dict(rel, IsDeleted=True)
                    self._touch(new, user_id)
                    self._put("EventRelation", new)
        for who in desired:
            rel = live.get(who)
            if rel is None:
                r = self._new_record("EventRelation", user_id)
                r.update({"EventId": event["Id"], "RelationId": who, "IsInvitee": False, "IsParent": True,
                          "IsWhat": False, "Status": "New", "Response": None, "RespondedDate": None})
                self._put("EventRelation", r)
                self._index("EventRelation", r)
            elif not rel.get("IsParent"):
                new = dict(rel, IsParent=True)
                self._touch(new, user_id)
                self._put("EventRelation", new)
        self._refresh_whos(event["Id"])

    def _update_relation(self, rel: dict, values: dict, user_id: str) -> None:
        new = dict(rel)
        new.update(values)
        if not self.shared_activities:
            new["IsInvitee"] = True if "IsInvitee" not in values else values["IsInvitee"]
        if not new.get("IsInvitee") and not new.get("IsParent"):
            raise SfError("FIELD_INTEGRITY_EXCEPTION",
                          "An EventRelation must be an invitee (IsInvitee) or a related contact or lead (IsParent)",
                          ["IsInvitee"])
        if "Status" in values:
            if not values["Status"]:
                raise SfError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                              "Status: bad value for restricted picklist field: null", ["Status"])
            if values["Status"] != rel["Status"] and "RespondedDate" not in values:
                new["RespondedDate"] = self._now() if values["Status"] != "New" else None
        if new.get("IsParent") and not rel.get("IsParent"):
            if self.type_of(rel["RelationId"]) == "User":
                raise SfError("FIELD_INTEGRITY_EXCEPTION",
                              f"Name ID: id value of incorrect type: {rel['RelationId']}", ["IsParent"])
            event = self.tables["Event"][rel["EventId"]]
            self._check_who_set(list(event.get("EventWhoIds") or []) + [rel["RelationId"]])
        self._touch(new, user_id)
        self._put("EventRelation", new)
        event = self.tables["Event"][rel["EventId"]]
        if bool(new.get("IsInvitee")) != bool(rel.get("IsInvitee")) and self.type_of(rel["RelationId"]) == "User":
            if new["IsInvitee"]:
                self._make_child(event, rel["RelationId"], user_id, None)
            else:
                self._drop_child(event["Id"], rel["RelationId"], user_id)
        self._mark_group(event["Id"], user_id)
        if bool(new.get("IsParent")) != bool(rel.get("IsParent")):
            self._refresh_whos(event["Id"])

    def _drop_child(self, event_id: str, owner_id: str, user_id: str) -> None:
        for cid in self._children.get(event_id, ()):
            c = self.tables["Event"][cid]
            if c["OwnerId"] == owner_id and not c["IsDeleted"]:
                c2 = dict(c, IsDeleted=True)
                self._touch(c2, user_id)
                self._put("Event", c2)

    def _delete_relation(self, rel: dict, user_id: str) -> None:
        new = dict(rel, IsDeleted=True)
        self._touch(new, user_id)
        self._put("EventRelation", new)
        if rel["IsInvitee"] and self.type_of(rel["RelationId"]) == "User":
            self._drop_child(rel["EventId"], rel["RelationId"], user_id)
        self._mark_group(rel["EventId"], user_id)
        if rel.get("IsParent"):
            self._refresh_whos(rel["EventId"])

    # ------------------------------------------------------------------------------------ seeding (in-process)
    def add_user(self, email: str, name: str | None = None, user_id: str | None = None) -> str:
        with self.lock:
            name = name or email.split("@")[0].replace(".", " ").title()
            first, _, last = name.rpartition(" ")
            rec = self._new_record("User", None)
            if user_id:
                full = ids.to18(user_id)
                if full is None or not full.startswith("005"):
                    raise ValueError(f"not a User id: {user_id!r}")
                rec["Id"] = full
            rec.update({"Email": email, "Username": email, "Name": name, "FirstName": first or None,
                        "LastName": last, "Alias": (last or name)[:8].lower(), "IsActive": True})
            rec["CreatedById"] = rec["LastModifiedById"] = rec["Id"]
            self.tables["User"][rec["Id"]] = rec
            return rec["Id"]

    def _seed_owner(self, owner_id: str | None) -> str:
        return ids.to18(owner_id) if owner_id else self.api_user_id  # type: ignore[return-value]

    def add_contact(self, email: str, last_name: str, first_name: str | None = None, owner_id: str | None = None) -> str:
        with self.lock:
            body = {"Email": email, "LastName": last_name, "FirstName": first_name,
                    "OwnerId": self._seed_owner(owner_id)}
            return self._seed(lambda: self.create("Contact", body, self.api_user_id))

    def add_lead(self, email: str, last_name: str, company: str = "Acme", owner_id: str | None = None) -> str:
        with self.lock:
            body = {"Email": email, "LastName": last_name, "Company": company, "OwnerId": self._seed_owner(owner_id)}
            return self._seed(lambda: self.create("Lead", body, self.api_user_id))

    @staticmethod
    def _seed(fn: Any) -> Any:
        try:
            return fn()
        except SfError as exc:
            raise ValueError(f"{exc.code}: {exc.message}") from None

    def add_event(
        self,
        owner_id: str,
        subject: str,
        start: datetime,
        end: datetime,
        *,
        is_all_day: bool = False,
        description: str | None = None,
        is_private: bool = False,
        invitee_ids: Iterable[str] = (),
        who_id: str | None = None,
        who_ids: Iterable[str] = (),
        last_modified: datetime | None = None,
        **extra: Any,
    ) -> str:
        """Seed an event as its owner would create it; invitees get EventRelations (and Users child events).

        For all-day events ``start``/``end`` are read as Salesforce stores them: ``start``'s date is the
        ActivityDate and ``end`` is 00:00Z of the LAST day (inclusive) -- ``end == start`` is a one-day
        event, not an exclusive end as in the canonical frame.
        """
        with self.lock:
            owner = ids.to18(owner_id)
            if owner is None:
                raise ValueError(f"not an id: {owner_id!r}")
            values: dict[str, Any] = {"OwnerId": owner, "Subject": subject, "IsAllDayEvent": is_all_day,
                                      "Description": description, "IsPrivate": is_private}
            start = _ms(start if start.tzinfo else start.replace(tzinfo=timezone.utc))
            end = _ms(end if end.tzinfo else end.replace(tzinfo=timezone.utc))
            if is_all_day:
                values["ActivityDate"] = start.date()
                values["EndDateTime"] = end
            else:
                values["StartDateTime"] = start
                values["EndDateTime"] = end
            whos = [ids.to18(w) for w in who_ids]
            if who_id:
                values["WhoId"] = ids.to18(who_id)
            if whos:
                if self.shared_activities:
                    values["EventWhoIds"] = whos
                elif len(whos) == 1 and not who_id:
                    values["WhoId"] = whos[0]
                else:
                    raise ValueError("without Shared Activities an event has a single WhoId")
            for k, v in extra.items():
                f = self.objects["Event"].field(k)
                if f is None:
                    raise ValueError(f"unknown Event field {k!r}")
                values[f.name] = v
            when = _ms(last_modified) if last_modified else None

            def run() -> str:
                if self.required_custom_field and self.required_custom_field not in values:
                    values[self.required_custom_field] = "seed"
                eid = self._create_event(values, owner, when=when)
                for inv in invitee_ids:
                    full = ids.to18(inv)
                    if full is None:
                        raise SfError("MALFORMED_ID", f"Relation ID: id value of incorrect type: {inv}")
                    existing = [r for r in self._live_relations(eid) if r["RelationId"] == full]
                    if existing:
                        new = dict(existing[0], IsInvitee=True)
                        self._put("EventRelation", new)
                        self._mark_group(eid, owner)
                        continue
                    self._add_relation(self.tables["Event"][eid], full, owner, is_invitee=True,
                                       is_parent=False, status="New", when=when)
                return eid

            return self._seed(run)

    def set_relation_status(self, event_id: str, relation_id: str, status: str) -> None:
        """Set an invitee's response (``relation_id``: the EventRelation id or the invitee's record id)."""
        with self.lock:
            eid, rid = ids.to18(event_id), ids.to18(relation_id)
            rel = self.tables["EventRelation"].get(rid or "")
            if rel is None:
                for r in self._live_relations(eid or ""):
                    if r["RelationId"] == rid:
                        rel = r
                        break
            if rel is None or rel["EventId"] != eid:
                raise ValueError(f"no relation {relation_id} on event {event_id}")
            self._seed(lambda: self._update_relation(rel, {"Status": status}, self.api_user_id))

    # ------------------------------------------------------------------------------------ inspection
    def _public(self, typ: str, rec: dict) -> dict:
        names = self.objects[typ].fields if typ in self.objects else rec
        return {k: rec.get(k) for k in names}

    def events(self, include_deleted: bool = False) -> list[dict]:
        with self.lock:
            return [self._public("Event", r) for r in self.tables["Event"].values()
                    if include_deleted or not r["IsDeleted"]]

    def relations(self, event_id: str, include_deleted: bool = False) -> list[dict]:
        with self.lock:
            full = ids.to18(event_id) or ""
            rels = [self.tables["EventRelation"][i] for i in self._rels_by_event.get(full, ())]
            return [self._public("EventRelation", r) for r in rels
                    if (include_deleted or not r["IsDeleted"]) and self._visible_relation(r)]

    def record(self, record_id: str) -> dict | None:
        with self.lock:
            full = ids.to18(record_id)
            typ = self.type_of(full)
            if typ is None:
                return None
            rec = self.tables[typ].get(full)  # type: ignore[arg-type]
            return self._public(typ, rec) if rec else None

    def dump(self) -> dict:
        with self.lock:
            return {
                "org_id": self.org_id,
                "settings": self.settings(),
                "api_calls": self.api_calls(),
                "api_user_id": self.api_user_id,
                "objects": {
                    typ: [{k: soql.wire(v) for k, v in self._public(typ, r).items()} for r in table.values()]
                    for typ, table in self.tables.items()
                },
            }
