"""Graph's event resource over the shared Exchange store: ids, JSON rendering, request-body parsing.

Shapes are copied from the reference pages:
- event resource (properties, enums): https://learn.microsoft.com/en-us/graph/api/resources/event?view=graph-rest-1.0
- a full event as GET/POST return it: https://learn.microsoft.com/en-us/graph/api/event-get?view=graph-rest-1.0 and
  https://learn.microsoft.com/en-us/graph/api/user-post-events?view=graph-rest-1.0
- dateTimeTimeZone ("2017-04-15T11:00:00.0000000" + timeZone):
  https://learn.microsoft.com/en-us/graph/api/resources/datetimetimezone?view=graph-rest-1.0
- attendee / responseStatus (none, organizer, tentativelyAccepted, accepted, declined, notResponded; time
  "0001-01-01T00:00:00Z" when never answered): https://learn.microsoft.com/en-us/graph/api/resources/responsestatus?view=graph-rest-1.0
- patternedRecurrence: https://learn.microsoft.com/en-us/graph/api/resources/patternedrecurrence?view=graph-rest-1.0
- singleValueLegacyExtendedProperty ("String {guid} Name xyz"):
  https://learn.microsoft.com/en-us/graph/api/resources/singlevaluelegacyextendedproperty?view=graph-rest-1.0

Ids: Graph ids are the store's (EWS) item ids in REST form, '/' -> '-' and '+' -> '_'
(https://learn.microsoft.com/en-us/graph/api/user-translateexchangeids?view=graph-rest-1.0: the EWS format is
base64, the REST formats "URL-safe"); the same item has the same id on both protocols, translated.

iCalUId / uid: for a single event both are the store's UID (the hex Global Object Id), so a meeting delivered
to an EWS and a Graph mailbox shows one UID on both. An occurrence's iCalUId carries its instance date in bytes
16-19 of the Global Object Id (year high, year low, month, day) as Exchange writes it
(https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxocal/1d3aac05-a7b9-45cc-a213-47f0a0a2c5c1),
``uid`` stays the series' one (event resource page: "uid ... same for all occurrences of a series").
"""

from __future__ import annotations

import html
import re
from datetime import date, datetime, time, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..exchange import tz as tzmod
from ..exchange.service import text_body
from ..exchange.store import WEEKDAYS, Item, Occurrence, Org, Recurrence, to_utc

UTC = timezone.utc
NEVER = "0001-01-01T00:00:00Z"

# Every property of microsoft.graph.event a client may name in $select (the event resource page).
EVENT_PROPERTIES = (
    "allowNewTimeProposals", "attendees", "body", "bodyPreview", "categories", "changeKey", "createdDateTime",
    "end", "hasAttachments", "hideAttendees", "iCalUId", "id", "importance", "isAllDay", "isCancelled", "isDraft",
    "isOnlineMeeting", "isOrganizer", "isReminderOn", "lastModifiedDateTime", "location", "locations",
    "onlineMeeting", "onlineMeetingProvider", "onlineMeetingUrl", "organizer", "originalEndTimeZone",
    "originalStart", "originalStartTimeZone", "recurrence", "reminderMinutesBeforeStart", "responseRequested",
    "responseStatus", "sensitivity", "seriesMasterId", "showAs", "start", "subject", "transactionId", "type",
    "uid", "webLink",
)
_PROPERTY_BY_LOWER = {p.lower(): p for p in EVENT_PROPERTIES}
# Properties a client may write (POST/PATCH); others are read-only (ignored when sent, as the service does).
WRITABLE = {"subject", "body", "start", "end", "isAllDay", "sensitivity", "showAs", "location", "locations",
            "attendees", "recurrence", "categories", "importance", "isReminderOn", "reminderMinutesBeforeStart",
            "responseRequested", "allowNewTimeProposals", "transactionId", "hideAttendees", "isOnlineMeeting",
            "onlineMeetingProvider", "singleValueExtendedProperties", "originalStartTimeZone",
            "originalEndTimeZone", "isDraft"}
READ_ONLY = set(EVENT_PROPERTIES) - WRITABLE | {"@odata.etag", "@odata.type", "@odata.context"}
# Writes to these alone change only the owner's copy: no meeting message is sent (believed: Outlook does not
# send an update for personal properties).
PERSONAL = {"categories", "isReminderOn", "reminderMinutesBeforeStart", "singleValueExtendedProperties"}

_SENSITIVITY = {"Normal": "normal", "Personal": "personal", "Private": "private", "Confidential": "confidential"}
_SHOW_AS = {"Free": "free", "Tentative": "tentative", "Busy": "busy", "OOF": "oof",
            "WorkingElsewhere": "workingElsewhere", "NoData": "unknown"}
_IMPORTANCE = {"Low": "low", "Normal": "normal", "High": "high"}
_RESPONSE = {"Unknown": "none", "Organizer": "organizer", "Tentative": "tentativelyAccepted", "Accept": "accepted",
             "Decline": "declined", "NoResponseReceived": "notResponded"}
_EXT_ID = re.compile(r"^(String|Integer|Boolean|Double|Float|Long|Short|SystemTime|Binary|Currency|CLSID)\s+"
                     r"(\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}|"
                     r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\s+"
                     r"(Name\s+\S.*|Id\s+0x[0-9a-fA-F]+)$")


class GraphError(Exception):
    """An error Graph answers with {"error": {"code", "message", "innerError"}} and an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# ====================================================================== ids
def rest_id(store_id: str) -> str:
    return store_id.replace("/", "-").replace("+", "_")


def store_id(graph_id: str) -> str:
    return graph_id.replace("-", "/").replace("_", "+")


def occurrence_ical_uid(uid: str, day: date) -> str:
    """The Global Object Id of one instance: bytes 16-19 = year (2 bytes), month, day (MS-OXOCAL 2.2.1.27)."""
    if len(uid) >= 40 and re.fullmatch(r"[0-9A-Fa-f]+", uid):
        return uid[:32] + f"{day.year:04X}{day.month:02X}{day.day:02X}" + uid[40:]
    return uid  # not a Global Object Id (seeded by hand): nothing to stamp


# ====================================================================== time
def zone_for(name: str | None):
    """(tzinfo, label) for a Prefer: outlook.timezone / dateTimeTimeZone.timeZone value; None if unknown.
    Windows names and IANA names are both accepted (the datetimetimezone page lists both kinds)."""
    if not name:
        return None
    name = name.strip()
    if name.upper() == "UTC" or name in ("Etc/UTC", "GMT", "Coordinated Universal Time"):
        return UTC
    ms = tzmod.ms_id_for(name)
    if tzmod.is_known(ms):
        return tzmod.tzinfo_for(ms)
    try:
        return ZoneInfo(name)
    except Exception:  # unknown zone names are simply unknown
        return None


def fmt_local(value: datetime) -> str:
    """dateTimeTimeZone.dateTime: local wall time with seven fractional digits and no offset."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0"


def fmt_stamp(value: datetime) -> str:
    """createdDateTime / lastModifiedDateTime: UTC with seven fractional digits and Z (the create page's example)."""
    value = to_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0Z"


def fmt_offset(value: datetime) -> str:
    """Edm.DateTimeOffset as Graph writes originalStart: 2026-12-03T10:00:00Z."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dtz(value: Any, field: str) -> tuple[datetime, str, Any]:
    """A dateTimeTimeZone from a request body -> (aware local datetime, Windows/IANA zone id, tzinfo)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise GraphError(400, "ErrorInvalidRequest", f"The {field} property requires a dateTime value.")  # sandbox
    zone_name = value.get("timeZone") or "UTC"
    zone = zone_for(zone_name)
    if zone is None:
        # Believed wording of the service's refusal of an unknown zone.
        raise GraphError(400, "TimeZoneNotSupportedException",
                         f"A valid TimeZone value must be specified. The following TimeZone value is not supported: "
                         f"'{zone_name}'.")
    text = str(value["dateTime"]).strip()
    try:  # the service writes seven fractional digits; Python reads at most six
        parsed = datetime.fromisoformat(re.sub(r"(\.\d{1,6})\d*", r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(400, "ErrorInvalidRequest",  # believed wording
                         f"Cannot convert the literal '{text}' to the expected type 'Edm.DateTime'.")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed, tzmod.ms_id_for(zone_name) if zone is not UTC else "UTC", zone


# ====================================================================== bodies
def html_of(body: str | None, body_type: str) -> str:
    """The body as Exchange serves it in HTML: an HTML body as stored (wrapped if it is a fragment), a text body
    escaped, line breaks as <br>, wrapped in the document Exchange writes (create page, Response 2/3)."""
    if body and body_type == "HTML":
        if re.search(r"<html[\s>]", body, re.I):
            return body
        inner = body
    else:
        inner = "<br>\r\n".join(html.escape(line, quote=False) for line in (body or "").split("\n"))
    return ("<html>\r\n<head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n"
            f"</head>\r\n<body>\r\n{inner}\r\n</body>\r\n</html>\r\n")


def preview_of(body: str | None, body_type: str) -> str:
    """bodyPreview: the first 255 characters of the text form, whitespace runs collapsed."""
    return " ".join(text_body(body, body_type).split())[:255]


# ====================================================================== rendering
class View:
    """How the caller asked to see events: zone (Prefer: outlook.timezone), body type, $select, $expand."""

    def __init__(self, zone=UTC, zone_label: str = "UTC", body_type: str = "html",
                 select: list[str] | None = None, expand_ext: list[str] | None | bool = False) -> None:
        self.zone = zone
        self.zone_label = zone_label
        self.body_type = body_type
        self.select = select
        self.expand_ext = expand_ext  # False: not expanded; None: all; list: the ids named in $filter


def _dtz(item, value: datetime, which: str, view: View) -> dict:
    if item.is_all_day:
        # All-day events are "floating": midnight to midnight of their dates, labelled with the requested zone but
        # not converted to it. "This is by design. All day events always return midnight-to-midnight regardless of
        # time zone." (Microsoft, https://github.com/microsoftgraph/microsoft-graph-docs/issues/1802; also
        # https://github.com/microsoftgraph/microsoft-graph-docs/issues/6003,
        # https://github.com/microsoftgraph/msgraph-sdk-javascript/issues/1158). An all-day occurrence's
        # originalStart is still the UTC instant of its local midnight (docs issue 2804 shows one).
        zone_id = item.start_tz if which == "start" else item.end_tz
        local_day = value.astimezone(tzmod.tzinfo_for(zone_id)).date()
        return {"dateTime": fmt_local(datetime.combine(local_day, time(0))), "timeZone": view.zone_label}
    return {"dateTime": fmt_local(value.astimezone(view.zone).replace(tzinfo=None)), "timeZone": view.zone_label}


def _recurrence_json(item: Item) -> dict:
    rec = item.recurrence
    assert rec is not None
    first = item.start.astimezone(tzmod.tzinfo_for(item.start_tz)).date()
    pattern: dict[str, Any] = {"type": "daily", "interval": rec.interval, "month": 0, "dayOfMonth": 0,
                               "firstDayOfWeek": rec.first_day_of_week.lower(), "index": "first"}
    if rec.pattern == "weekly":
        pattern["type"] = "weekly"
        pattern["daysOfWeek"] = [d.lower() for d in (rec.weekdays or (WEEKDAYS[(first.weekday() + 1) % 7],))]
    elif rec.pattern == "absolute_monthly":
        pattern.update(type="absoluteMonthly", dayOfMonth=rec.day_of_month or first.day)
    elif rec.pattern == "absolute_yearly":
        pattern.update(type="absoluteYearly", dayOfMonth=rec.day_of_month or first.day, month=rec.month or first.month)
    rng = {"type": "noEnd", "startDate": first.isoformat(), "endDate": "0001-01-01",
           "recurrenceTimeZone": item.start_tz, "numberOfOccurrences": 0}
    if rec.occurrences is not None:
        rng.update(type="numbered", numberOfOccurrences=rec.occurrences)
    elif rec.end_date is not None:
        rng.update(type="endDate", endDate=rec.end_date.isoformat())
    return {"pattern": pattern, "range": rng}


def _email(address: str, name: str) -> dict:
    return {"emailAddress": {"name": name or address, "address": address}}


def render(org: Org, item: Item | Occurrence, view: View, graph_web: str = "https://outlook.office365.com") -> dict:
    """The event JSON for a single item, a series master or an occurrence/exception."""
    is_occ = isinstance(item, Occurrence)
    master = item.master if is_occ else item
    changekey = master.changekey
    gid = rest_id(item.id)
    if is_occ:
        kind = "exception" if item.is_exception else "occurrence"
    else:
        kind = "seriesMaster" if item.recurrence is not None else "singleInstance"
    is_organizer = master.is_organizer_copy
    if is_organizer:
        response = {"response": "organizer", "time": NEVER}
    else:
        response = {"response": _RESPONSE.get(master.my_response, "none"), "time": NEVER}
    attendees = []
    for kind_name, group in (("required", item.required), ("optional", item.optional)):
        for a in group:
            attendees.append({
                "type": kind_name,
                "status": {"response": _RESPONSE.get(a.response, "none"),
                           "time": fmt_offset(a.last_response_time) if a.last_response_time else NEVER},
                **_email(a.email, a.name),
            })
    ical = occurrence_ical_uid(master.uid, item.original_start.astimezone(tzmod.tzinfo_for(master.start_tz)).date()) \
        if is_occ else master.uid
    body_type = item.body_type or "Text"
    if view.body_type == "text":
        body = {"contentType": "text", "content": text_body(item.body, body_type)}
    else:
        body = {"contentType": "html", "content": html_of(item.body, body_type)}
    location_name = item.location or ""
    location = ({"displayName": location_name, "locationType": "default", "uniqueId": location_name,
                 "uniqueIdType": "private"} if location_name else
                {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {},
                 "coordinates": {}})
    out: dict[str, Any] = {
        "@odata.etag": f'W/"{changekey}"',
        "id": gid,
        "createdDateTime": fmt_stamp(master.created),
        "lastModifiedDateTime": fmt_stamp(master.last_modified),
        "changeKey": changekey,
        "categories": list(item.categories),
        "transactionId": master.transaction_id,
        "originalStartTimeZone": master.start_tz,
        "originalEndTimeZone": master.end_tz,
        "iCalUId": ical,
        "uid": master.uid,
        "reminderMinutesBeforeStart": item.reminder_minutes,
        "isReminderOn": bool(item.reminder_is_set),
        "hasAttachments": False,
        "subject": item.subject,
        "bodyPreview": preview_of(item.body, body_type),
        "importance": _IMPORTANCE.get(item.importance, "normal"),
        "sensitivity": _SENSITIVITY.get(item.sensitivity, "normal"),
        "isAllDay": bool(item.is_all_day),
        "isCancelled": False,
        "isOrganizer": is_organizer,
        "responseRequested": bool(item.is_response_requested),
        "seriesMasterId": rest_id(master.id) if is_occ else None,
        "showAs": _SHOW_AS.get(item.legacy_free_busy, "busy"),
        "type": kind,
        "webLink": f"{graph_web}/owa/?itemid={gid}&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": bool(item.allow_new_time_proposal),
        "isDraft": False,
        "hideAttendees": False,
        "responseStatus": response,
        "body": body,
        "start": _dtz(item, item.start, "start", view),
        "end": _dtz(item, item.end, "end", view),
        "location": location,
        "locations": [location] if location_name else [],
        "recurrence": _recurrence_json(master) if kind == "seriesMaster" else None,
        "attendees": attendees,
        "organizer": _email(master.organizer_email, master.organizer_name),
        "onlineMeeting": None,
    }
    if out["transactionId"] is None:
        del out["transactionId"]  # "only returned in a response payload if an app has set it" (event resource)
    if is_occ:
        out["originalStart"] = fmt_offset(item.original_start)
    if view.expand_ext is not False:
        props = [{"id": k, "value": v} for k, v in master.extended_properties.items()
                 if view.expand_ext is None or k.lower() in view.expand_ext]
        if props:  # the service omits the collection when nothing matches the $filter (believed)
            out["singleValueExtendedProperties"] = props
    if view.select is not None:
        keep = {"@odata.etag", "id", *view.select}
        if "singleValueExtendedProperties" in out:
            keep.add("singleValueExtendedProperties")
        # "The createdDateTime and lastModifiedDateTime properties of event do not support $select"
        # (https://learn.microsoft.com/en-us/graph/api/user-list-calendarview?view=graph-rest-1.0)
        keep -= {"createdDateTime", "lastModifiedDateTime"}
        out = {k: v for k, v in out.items() if k in keep}
    return out


def parse_select(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        canonical = _PROPERTY_BY_LOWER.get(name.lower())
        if canonical is None:
            # Believed wording (the OData URI parser's refusal).
            raise GraphError(400, "RequestBroker--ParseUri",
                             f"Could not find a property named '{name}' on type 'microsoft.graph.event'.")
        names.append(canonical)
    return names


_EXPAND = re.compile(r"^singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*(.*)\))?$", re.I | re.S)
_EXT_FILTER = re.compile(r"id\s+eq\s+'((?:[^']|'')*)'", re.I)


def parse_expand(text: str | None) -> list[str] | None | bool:
    """False when not expanded; None for all extended properties; a list of lower-case ids from $filter."""
    if not text:
        return False
    m = _EXPAND.match(text.strip())
    if m is None:
        raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: Could not find a property "
                                            f"named '{text.split('(')[0]}' on type 'microsoft.graph.event'.")  # believed
    if m.group(1) is None:
        return None
    ids = [x.replace("''", "'").strip().lower() for x in _EXT_FILTER.findall(m.group(1))]
    if not ids:
        raise GraphError(400, "BadRequest", "Only 'id eq' filters are supported on singleValueExtendedProperties "
                                            "by this sandbox.")  # sandbox wording
    return ids


# ====================================================================== request bodies
def _attendees(org: Org, value: Any) -> tuple[list, list]:
    if not isinstance(value, list):
        raise GraphError(400, "ErrorInvalidRequest", "attendees must be a collection.")  # sandbox wording
    required, optional = [], []
    for a in value:
        addr = ((a or {}).get("emailAddress") or {}).get("address")
        if not addr or "@" not in addr:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient isn't valid.")  # believed
        att = org.make_attendee(addr, ((a.get("emailAddress") or {}).get("name") or ""), "Unknown")
        (optional if str(a.get("type", "required")).lower() == "optional" else required).append(att)
    return required, optional


def _recurrence(value: Any) -> Recurrence | None:
    if value is None:
        return None
    try:
        pattern = value["pattern"]
        rng = value.get("range") or {}
        kind = str(pattern.get("type", "")).lower()
        mapping = {"daily": "daily", "weekly": "weekly", "absolutemonthly": "absolute_monthly",
                   "absoluteyearly": "absolute_yearly"}
        if kind not in mapping:
            raise GraphError(400, "ErrorInvalidRequest",
                             f"Recurrence pattern '{pattern.get('type')}' is not modelled by this sandbox.")
        spec = {"pattern": mapping[kind], "interval": int(pattern.get("interval") or 1),
                "weekdays": [d.capitalize() for d in pattern.get("daysOfWeek") or []],
                "day_of_month": pattern.get("dayOfMonth") or None, "month": pattern.get("month") or None,
                "first_day_of_week": str(pattern.get("firstDayOfWeek") or "sunday").capitalize()}
        rtype = str(rng.get("type", "noEnd")).lower()
        if rtype == "numbered":
            spec["occurrences"] = int(rng.get("numberOfOccurrences") or 0)
            if spec["occurrences"] < 1:
                raise GraphError(400, "ErrorInvalidRequest", "numberOfOccurrences must be at least 1.")
        elif rtype == "enddate":
            spec["end_date"] = date.fromisoformat(rng["endDate"])
        return Recurrence.from_dict(spec)
    except GraphError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GraphError(400, "ErrorInvalidRequest", f"The recurrence is not valid: {e}.")  # sandbox wording


def parse_body(org: Org, payload: Any, current: dict | None = None) -> tuple[dict, set[str]]:
    """Store fields from an event JSON body, and the Graph property names it touched.

    ``current`` (for PATCH) holds the item's start/end/zones/all-day so partial time changes resolve."""
    if not isinstance(payload, dict) or (current is None and not payload):
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    fields: dict[str, Any] = {}
    touched: set[str] = set()
    for key, value in payload.items():
        if key.startswith("@odata."):
            continue
        if key not in WRITABLE and key not in READ_ONLY:
            # Believed wording of the OData body reader's refusal.
            raise GraphError(400, "RequestBodyRead",
                             f"The property '{key}' does not exist on type 'microsoft.graph.event'. Make sure to only "
                             "use property names that are defined by the type or mark the type as open type.")
        if key in READ_ONLY:
            continue
        touched.add(key)
        if key == "subject":
            fields["subject"] = str(value or "")
        elif key == "body":
            ctype = str((value or {}).get("contentType") or "text").lower()
            if ctype not in ("text", "html"):
                raise GraphError(400, "ErrorInvalidRequest", f"Invalid body contentType '{ctype}'.")  # sandbox
            fields["body"] = (value or {}).get("content")
            fields["body_type"] = "HTML" if ctype == "html" else "Text"
        elif key == "sensitivity":
            inv = {v: k for k, v in _SENSITIVITY.items()}
            if str(value).lower() not in inv:
                raise GraphError(400, "ErrorInvalidRequest", f"Invalid sensitivity '{value}'.")  # sandbox
            fields["sensitivity"] = inv[str(value).lower()]
        elif key == "showAs":
            inv = {v.lower(): k for k, v in _SHOW_AS.items()}
            if str(value).lower() not in inv:
                raise GraphError(400, "ErrorInvalidRequest", f"Invalid showAs '{value}'.")  # sandbox
            fields["legacy_free_busy"] = inv[str(value).lower()]
        elif key == "importance":
            inv = {v: k for k, v in _IMPORTANCE.items()}
            fields["importance"] = inv.get(str(value).lower(), "Normal")
        elif key == "location":
            fields["location"] = (value or {}).get("displayName") or None
        elif key == "locations":
            if value and "location" not in payload:
                fields["location"] = "; ".join(v.get("displayName", "") for v in value) or None
        elif key == "attendees":
            fields["required"], fields["optional"] = _attendees(org, value)
        elif key == "recurrence":
            fields["recurrence"] = _recurrence(value)
        elif key == "categories":
            fields["categories"] = [str(c) for c in value or []]
        elif key == "isReminderOn":
            fields["reminder_is_set"] = bool(value)
        elif key == "reminderMinutesBeforeStart":
            fields["reminder_minutes"] = int(value)
        elif key == "responseRequested":
            fields["is_response_requested"] = bool(value)
        elif key == "allowNewTimeProposals":
            fields["allow_new_time_proposal"] = bool(value)
        elif key == "transactionId":
            fields["transaction_id"] = None if value is None else str(value)
        elif key == "isAllDay":
            fields["is_all_day"] = bool(value)
        elif key == "singleValueExtendedProperties":
            props = {}
            for p in value or []:
                pid = str((p or {}).get("id", "")).strip()
                if not _EXT_ID.match(pid):
                    raise GraphError(400, "ErrorInvalidProperty",  # sandbox wording
                                     f"The extended property id '{pid}' is not valid. Expected e.g. "
                                     "\"String {66f5a359-4659-4830-9070-00047ec6ac6e} Name Color\".")
                props[pid] = "" if p.get("value") is None else str(p.get("value"))
            fields["extended_properties"] = props
    _times(org, payload, fields, current)
    return fields, touched


def _times(org: Org, payload: dict, fields: dict, current: dict | None) -> None:
    has_start, has_end = "start" in payload, "end" in payload
    if current is None and (not has_start or not has_end):
        raise GraphError(400, "ErrorInvalidRequest", "An event needs both start and end.")  # sandbox wording
    cur = current or {}
    all_day = fields.get("is_all_day", cur.get("is_all_day", False))
    if not (has_start or has_end or "is_all_day" in fields):
        return
    if has_start:
        s_local, s_tz, _ = parse_dtz(payload["start"], "start")
    else:
        s_tz = cur["start_tz"]
        s_local = cur["start"].astimezone(tzmod.tzinfo_for(s_tz))
    if has_end:
        e_local, e_tz, _ = parse_dtz(payload["end"], "end")
    else:
        e_tz = cur["end_tz"]
        e_local = cur["end"].astimezone(tzmod.tzinfo_for(e_tz))
    if all_day:
        if (has_start and s_local.time() != time(0)) or (has_end and e_local.time() != time(0)):
            # Believed wording: all-day events must start and end at midnight.
            raise GraphError(400, "ErrorPropertyValidationFailure",
                             "The start and end of an all-day event must be at midnight.")
        s_utc, e_utc = org.all_day_bounds(s_local.date(), s_local.date(), s_tz)[0], \
            org.all_day_bounds(e_local.date(), e_local.date(), e_tz)[0]
    else:
        s_utc, e_utc = to_utc(s_local), to_utc(e_local)
    if e_utc < s_utc or (all_day and e_utc <= s_utc):
        # EWS's code, passed through by Graph (believed).
        raise GraphError(400, "ErrorCalendarEndDateIsEarlierThanStartDate", "The end date occurs before the start date.")
    fields.update(start=s_utc, end=e_utc, start_tz=s_tz, end_tz=e_tz, is_all_day=bool(all_day))

