"""The bulk EWS operations of the connector, built and parsed with lxml, sent through exchangelib (issue 12).

Why: exchangelib turns every item of a reply into a full Python object model (CalendarItem, Attendee, Mailbox, ...
fields cleaned one by one), which cost about 95% of a sync's client time; the raw HTTP exchange is a twentieth of
it. So for the calendar view (FindItem), GetItem, CreateItem, UpdateItem and DeleteItem this module writes the SOAP
payload itself and reads the reply's elements straight into plain values (``RawItem``), while everything around the
payload stays exchangelib's (``_Raw`` is an exchangelib service):

- the envelope (``EWSService.wrap``): RequestServerVersion, the ExchangeImpersonation header, TimeZoneContext;
- the HTTP exchange: the Protocol's session pool (``get_session`` / ``release_session``: concurrent callers wait for
  a session, never open their own), NTLM/Basic/OAuth, ``post_ratelimited`` and the configured retry policy;
- throttling: ErrorServerBusy with BackOffMilliseconds is waited out and retried by ``EWSService._get_elements``,
  as for every exchangelib call; connection errors, 401 and SOAP faults raise exchangelib's exceptions;
- reading the reply: ``EWSService._get_soap_parts`` (so ``connectors.exchange_fastparse`` applies) and the same
  per-message error classes (``ews.ErrorItemNotFound``, ...), handed back in place of the item they concern.

Payloads are what exchangelib itself sends for the same calls (element order, defaults such as
``LegacyFreeBusyStatus``, ``0``/``1`` booleans, ``safe_xml_value`` for text), so the server sees no difference;
``tests/connectors/test_ews_soap.py`` compares both, and parses recorded replies both ways.

The calendar is addressed as the distinguished folder ``calendar`` with the mailbox's address, so no GetFolder is
needed to read or write it.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from exchangelib import errors as ews
from exchangelib.ewsdatetime import EWSTimeZone, UnknownTimeZone
from exchangelib.services.common import EWSAccountService
from exchangelib.util import MNS, TNS, safe_xml_value
from lxml import etree

M, T = f"{{{MNS}}}", f"{{{TNS}}}"
_T = len(T)
UTC = dt.timezone.utc

# What a read asks GetItem for: exactly the properties the canonical row is made of (see ``connectors.exchange``),
# in exchangelib's order (sorted by URI), so the request is the one exchangelib sent for the same fields.
ITEM_URIS = (
    "calendar:CalendarItemType", "calendar:End", "calendar:EndTimeZone", "calendar:IsAllDayEvent",
    "calendar:OptionalAttendees", "calendar:Organizer", "calendar:OriginalStart", "calendar:RecurrenceId",
    "calendar:RequiredAttendees", "calendar:Start", "calendar:StartTimeZone", "calendar:UID", "item:Body",
    "item:LastModifiedTime", "item:ParentFolderId", "item:Sensitivity", "item:Subject", "item:TextBody",
)
# What a write reads first (the item's content and attendees, to plan invitations and write only what differs).
CURRENT_URIS = (
    "calendar:End", "calendar:EndTimeZone", "calendar:IsAllDayEvent", "calendar:OptionalAttendees",
    "calendar:Organizer", "calendar:RequiredAttendees", "calendar:Start", "calendar:StartTimeZone", "item:Body",
    "item:Sensitivity", "item:Subject", "item:TextBody",
)
# The view: ids and change keys (in ItemId), the start (to page on) and the folder (the calendar's id, for confirm).
VIEW_URIS = ("calendar:Start", "item:ParentFolderId")

# exchangelib hands these back to the caller instead of raising (see ``_Raw._get_element_container``).
_NEGOTIATION_ERRORS = (
    ews.ErrorInvalidServerVersion,
    ews.ErrorIncorrectSchemaVersion,
    ews.ErrorInvalidRequest,
    ews.ErrorInvalidSchemaVersionForMailboxVersion,
)


# --------------------------------------------------------------------------- sending


class _Raw(EWSAccountService):
    """An exchangelib account service whose payload is given and whose reply elements come back as lxml elements
    (or, per response message, the exchangelib exception of its error: one bad item never hides the others)."""

    returns_elements = True

    def _elems_to_objs(self, elems):
        return elems

    def _get_element_container(self, message, name=None):
        try:
            return super()._get_element_container(message=message, name=name)
        except _NEGOTIATION_ERRORS:
            raise
        except ews.ResponseMessageError as exc:
            return exc

    def send(self, payload: Any) -> list:
        """POST ``payload`` (wrapped by exchangelib, retried on throttling); the reply's elements in order."""
        return list(self._get_elements(payload=payload))


class _FindItem(_Raw):
    SERVICE_NAME = "FindItem"
    element_container_name = f"{M}RootFolder"

    @classmethod
    def _get_elements_in_container(cls, container):
        return [container]  # the RootFolder itself: its paging attributes are needed


class _GetItem(_Raw):
    SERVICE_NAME = "GetItem"
    element_container_name = f"{M}Items"


class _GetFolder(_Raw):
    SERVICE_NAME = "GetFolder"
    element_container_name = f"{M}Folders"


class _CreateItem(_Raw):
    SERVICE_NAME = "CreateItem"
    element_container_name = f"{M}Items"


class _UpdateItem(_Raw):
    SERVICE_NAME = "UpdateItem"
    element_container_name = f"{M}Items"


class _DeleteItem(_Raw):
    SERVICE_NAME = "DeleteItem"
    returns_elements = False


def send(service: type[_Raw], account: Any, payload: Any) -> list:
    """One EWS request for ``account`` (an exchangelib Account: its protocol, identity and time zone)."""
    return service(account=account).send(payload)


# --------------------------------------------------------------------------- building payloads


def _sub(parent: Any, tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> Any:
    elem = etree.SubElement(parent, tag, attrs) if attrs else etree.SubElement(parent, tag)
    if text is not None:
        elem.text = text
    return elem


def _shape(parent: Any, uris: Sequence[str]) -> None:
    shape = _sub(parent, f"{M}ItemShape")
    _sub(shape, f"{T}BaseShape", text="IdOnly")
    props = _sub(shape, f"{T}AdditionalProperties")
    for uri in uris:
        _sub(props, f"{T}FieldURI", {"FieldURI": uri})


def calendar_folder(parent: Any, tag: str, mailbox: str) -> None:
    """``<tag><t:DistinguishedFolderId Id="calendar"><t:Mailbox>...`` -- the calendar without a folder lookup."""
    holder = _sub(parent, tag)
    folder = _sub(holder, f"{T}DistinguishedFolderId", {"Id": "calendar"})
    box = _sub(folder, f"{T}Mailbox")
    _sub(box, f"{T}EmailAddress", text=mailbox)
    _sub(box, f"{T}RoutingType", text="SMTP")
    _sub(box, f"{T}MailboxType", text="Mailbox")


def utc_text(value: dt.datetime) -> str:
    """An aware datetime as EWS text in UTC, as exchangelib's ``EWSDateTime.ewsformat`` writes it for UTC
    (formatted here: glibc's strftime reads the machine's zone file on every call)."""
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


def find_item_payload(mailbox: str, start: dt.datetime, end: dt.datetime, max_entries: int) -> Any:
    """FindItem with a CalendarView over [start, end) of the mailbox's calendar: ids, change keys, starts."""
    payload = etree.Element(f"{M}FindItem", {"Traversal": "Shallow"})
    _shape(payload, VIEW_URIS)
    _sub(payload, f"{M}CalendarView", {"StartDate": utc_text(start), "EndDate": utc_text(end),
                                        "MaxEntriesReturned": str(max_entries)})
    calendar_folder(payload, f"{M}ParentFolderIds", mailbox)
    return payload


def get_item_payload(ids: Iterable[tuple[str, str | None]], uris: Sequence[str] = ITEM_URIS) -> Any:
    payload = etree.Element(f"{M}GetItem")
    _shape(payload, uris)
    holder = _sub(payload, f"{M}ItemIds")
    for item_id, changekey in ids:
        _sub(holder, f"{T}ItemId", {"Id": item_id, "ChangeKey": changekey} if changekey else {"Id": item_id})
    return payload


def get_calendar_folder_payload(mailbox: str) -> Any:
    payload = etree.Element(f"{M}GetFolder")
    shape = _sub(payload, f"{M}FolderShape")
    _sub(shape, f"{T}BaseShape", text="IdOnly")
    holder = _sub(payload, f"{M}FolderIds")
    folder = _sub(holder, f"{T}DistinguishedFolderId", {"Id": "calendar"})
    box = _sub(folder, f"{T}Mailbox")
    _sub(box, f"{T}EmailAddress", text=mailbox)
    _sub(box, f"{T}RoutingType", text="SMTP")
    _sub(box, f"{T}MailboxType", text="Mailbox")
    return payload


@dataclass(frozen=True)
class Who:
    """An attendee as written: the mailbox's parts exchangelib would serialise, and the response it carries."""

    email: str
    name: str | None = None
    routing_type: str | None = "SMTP"
    mailbox_type: str | None = "Mailbox"
    response: str | None = "Unknown"
    last_response_time: str | None = None


def _attendees(parent: Any, tag: str, people: Sequence[Who]) -> None:
    holder = _sub(parent, f"{T}{tag}")
    for who in people:
        att = _sub(holder, f"{T}Attendee")
        box = _sub(att, f"{T}Mailbox")
        if who.name:
            _sub(box, f"{T}Name", text=safe_xml_value(who.name))
        _sub(box, f"{T}EmailAddress", text=safe_xml_value(who.email))
        if who.routing_type:
            _sub(box, f"{T}RoutingType", text=who.routing_type)
        if who.mailbox_type:
            _sub(box, f"{T}MailboxType", text=who.mailbox_type)
        if who.response:
            _sub(att, f"{T}ResponseType", text=who.response)
        if who.last_response_time:
            _sub(att, f"{T}LastResponseTime", text=who.last_response_time)


@dataclass
class Content:
    """The synced content of a calendar item as EWS text: start/end already in the mailbox's zone
    (all-day: local midnights, exclusive end), ``tz_id`` the zone's Windows id."""

    subject: str
    sensitivity: str
    body: str
    start: str
    end: str
    is_all_day: bool
    tz_id: str


# Content fields and their FieldURIs, in the order exchangelib's CalendarItem lists them (updates go in that order).
_FIELD_ORDER = ("subject", "sensitivity", "body", "start", "end", "is_all_day", "required", "optional",
                "start_tz", "end_tz")
_URIS = {"subject": "item:Subject", "sensitivity": "item:Sensitivity", "body": "item:Body",
         "start": "calendar:Start", "end": "calendar:End", "is_all_day": "calendar:IsAllDayEvent",
         "required": "calendar:RequiredAttendees", "optional": "calendar:OptionalAttendees",
         "start_tz": "calendar:StartTimeZone", "end_tz": "calendar:EndTimeZone"}


def _bool(value: bool) -> str:
    return "1" if value else "0"


def _field(parent: Any, name: str, content: Content | None, people: Sequence[Who] = ()) -> None:
    """The value element of field ``name`` (as exchangelib's field ``to_xml`` writes it)."""
    if name == "subject":
        _sub(parent, f"{T}Subject", text=safe_xml_value(content.subject))
    elif name == "sensitivity":
        _sub(parent, f"{T}Sensitivity", text=content.sensitivity)
    elif name == "body":
        _sub(parent, f"{T}Body", {"BodyType": "Text"}, text=safe_xml_value(content.body))
    elif name == "start":
        _sub(parent, f"{T}Start", text=content.start)
    elif name == "end":
        _sub(parent, f"{T}End", text=content.end)
    elif name == "is_all_day":
        _sub(parent, f"{T}IsAllDayEvent", text=_bool(content.is_all_day))
    elif name in ("required", "optional"):
        _attendees(parent, "RequiredAttendees" if name == "required" else "OptionalAttendees", people)
    elif name in ("start_tz", "end_tz"):
        _sub(parent, f"{T}StartTimeZone" if name == "start_tz" else f"{T}EndTimeZone", {"Id": content.tz_id})
    else:
        raise ValueError(f"unknown field {name!r}")


@dataclass
class NewItem:
    """A calendar item to create: its content and attendees."""

    content: Content
    required: Sequence[Who] = ()
    optional: Sequence[Who] = ()


def create_item_payload(mailbox: str, items: Sequence[NewItem], send_invitations: str) -> Any:
    """CreateItem of calendar items into the mailbox's calendar, as exchangelib writes a new CalendarItem (with its
    defaults: Importance Normal, no reminder, LegacyFreeBusyStatus Busy)."""
    payload = etree.Element(f"{M}CreateItem", {"MessageDisposition": "SaveOnly",
                                                "SendMeetingInvitations": send_invitations})
    calendar_folder(payload, f"{M}SavedItemFolderId", mailbox)
    holder = _sub(payload, f"{M}Items")
    for new in items:
        c = new.content
        item = _sub(holder, f"{T}CalendarItem")
        _field(item, "subject", c)
        _field(item, "sensitivity", c)
        _field(item, "body", c)
        _sub(item, f"{T}Importance", text="Normal")
        _sub(item, f"{T}ReminderIsSet", text="0")
        _sub(item, f"{T}ReminderMinutesBeforeStart", text="0")
        _field(item, "start", c)
        _field(item, "end", c)
        _field(item, "is_all_day", c)
        _sub(item, f"{T}LegacyFreeBusyStatus", text="Busy")
        if new.required:
            _field(item, "required", c, new.required)
        if new.optional:
            _field(item, "optional", c, new.optional)
        _field(item, "start_tz", c)
        _field(item, "end_tz", c)
    return payload


@dataclass
class Change:
    """An UpdateItem change: the item (id + change key), the content fields to set and, when ``attendees`` is not
    None, both attendee lists (an empty list deletes the property, as exchangelib does for None)."""

    item_id: str
    changekey: str | None
    content: Content | None
    fields: Sequence[str]
    required: Sequence[Who] | None = None
    optional: Sequence[Who] | None = None


def update_item_payload(changes: Sequence[Change], send: str) -> Any:
    """UpdateItem with NeverOverwrite (a ChangeKey that moved fails the item, ErrorIrresolvableConflict), SaveOnly,
    the given SendMeetingInvitationsOrCancellations; fields in exchangelib's order, the start/end time zones set
    along with start or end."""
    payload = etree.Element(f"{M}UpdateItem", {
        "ConflictResolution": "NeverOverwrite", "MessageDisposition": "SaveOnly",
        "SendMeetingInvitationsOrCancellations": send, "SuppressReadReceipts": "true"})
    holder = _sub(payload, f"{M}ItemChanges")
    for change in changes:
        names = set(change.fields)
        if change.required is not None:
            names |= {"required", "optional"}
        if names & {"start"}:
            names.add("start_tz")
        if names & {"end"}:
            names.add("end_tz")
        elem = _sub(holder, f"{T}ItemChange")
        _sub(elem, f"{T}ItemId", {"Id": change.item_id, "ChangeKey": change.changekey} if change.changekey
             else {"Id": change.item_id})
        updates = _sub(elem, f"{T}Updates")
        for name in _FIELD_ORDER:
            if name not in names:
                continue
            people = (change.required if name == "required" else change.optional) if name in ("required", "optional") else ()
            if name in ("required", "optional") and not people:
                delete = _sub(updates, f"{T}DeleteItemField")
                _sub(delete, f"{T}FieldURI", {"FieldURI": _URIS[name]})
                continue
            setter = _sub(updates, f"{T}SetItemField")
            _sub(setter, f"{T}FieldURI", {"FieldURI": _URIS[name]})
            _field(_sub(setter, f"{T}CalendarItem"), name, change.content, people or ())
    return payload


def delete_item_payload(ids: Iterable[tuple[str, str | None]], send_cancellations: str) -> Any:
    """DeleteItem to Deleted Items (recoverable), cancellations as given, as exchangelib writes it."""
    payload = etree.Element(f"{M}DeleteItem", {
        "DeleteType": "MoveToDeletedItems", "SendMeetingCancellations": send_cancellations,
        "AffectedTaskOccurrences": "AllOccurrences", "SuppressReadReceipts": "true"})
    holder = _sub(payload, f"{M}ItemIds")
    for item_id, changekey in ids:
        _sub(holder, f"{T}ItemId", {"Id": item_id, "ChangeKey": changekey} if changekey else {"Id": item_id})
    return payload


# --------------------------------------------------------------------------- parsing replies


def parse_datetime(text: str | None) -> dt.datetime | None:
    """xs:dateTime with Z or an offset -> an aware datetime in UTC; anything else (naive, junk) -> None, as
    exchangelib's ``EWSDateTime.from_string`` leaves such a field empty."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


@dataclass(slots=True)
class Person:
    """A mailbox of a reply (organizer or attendee)."""

    email: str | None
    name: str | None = None
    routing_type: str | None = None
    mailbox_type: str | None = None
    response: str | None = None
    last_response_time: str | None = None

    def who(self) -> Who:
        """As written back (exchangelib's defaults for the parts the reply left out)."""
        answered = parse_datetime(self.last_response_time)  # exchangelib re-writes the instant, or drops junk
        return Who(self.email or "", self.name, self.routing_type or "SMTP", self.mailbox_type or "Mailbox",
                   self.response or "Unknown", utc_text(answered) if answered is not None else None)


@dataclass(slots=True)
class RawItem:
    """The properties of one CalendarItem of a reply, as plain values (None where absent or empty)."""

    id: str | None = None
    changekey: str | None = None
    parent_folder_id: str | None = None
    subject: str | None = None
    sensitivity: str | None = None
    body: str | None = None
    body_type: str | None = None
    text_body: str | None = None
    last_modified: dt.datetime | None = None
    uid: str | None = None
    recurrence_id: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    original_start: dt.datetime | None = None
    is_all_day: bool = False
    type: str | None = None
    organizer: Person | None = None
    required: list[Person] = field(default_factory=list)
    optional: list[Person] = field(default_factory=list)
    start_tz: str | None = None  # the Windows time zone id
    end_tz: str | None = None
    is_calendar_item: bool = True


def _mailbox(elem: Any) -> Person:
    person = Person(None)
    for child in elem:
        name = child.tag[_T:]
        text = child.text or None
        if name == "EmailAddress":
            person.email = text
        elif name == "Name":
            person.name = text
        elif name == "RoutingType":
            person.routing_type = text
        elif name == "MailboxType":
            person.mailbox_type = text
    return person


def _people(elem: Any) -> list[Person]:
    out = []
    for att in elem:
        if att.tag != f"{T}Attendee":
            continue
        person = Person(None)
        for child in att:
            name = child.tag[_T:]
            if name == "Mailbox":
                box = _mailbox(child)
                person.email, person.name, person.routing_type, person.mailbox_type = (
                    box.email, box.name, box.routing_type, box.mailbox_type)
            elif name == "ResponseType":
                person.response = child.text or None
            elif name == "LastResponseTime":
                person.last_response_time = child.text or None
        out.append(person)
    return out


_BOOLEANS = {"true": True, "on": True, "false": False, "off": False}


def parse_item(elem: Any) -> RawItem:
    """One item element of a GetItem/FindItem reply -> ``RawItem`` (one pass over its children)."""
    item = RawItem(is_calendar_item=elem.tag == f"{T}CalendarItem")
    for child in elem:
        name = child.tag[_T:] if isinstance(child.tag, str) else ""
        if name == "ItemId":
            item.id, item.changekey = child.get("Id"), child.get("ChangeKey")
        elif name == "ParentFolderId":
            item.parent_folder_id = child.get("Id")
        elif name == "Subject":
            item.subject = child.text or None
        elif name == "Sensitivity":
            item.sensitivity = child.text or None
        elif name == "Body":
            item.body = child.text or None
            item.body_type = child.get("BodyType")
        elif name == "TextBody":
            item.text_body = child.text or None
        elif name == "LastModifiedTime":
            item.last_modified = parse_datetime(child.text)
        elif name == "UID":
            item.uid = child.text or None
        elif name == "RecurrenceId":
            item.recurrence_id = parse_datetime(child.text)
        elif name == "Start":
            item.start = parse_datetime(child.text)
        elif name == "End":
            item.end = parse_datetime(child.text)
        elif name == "OriginalStart":
            item.original_start = parse_datetime(child.text)
        elif name == "IsAllDayEvent":
            item.is_all_day = bool(_BOOLEANS.get((child.text or "").lower()))
        elif name == "CalendarItemType":
            item.type = child.text or None
        elif name == "Organizer":
            box = next((c for c in child if c.tag == f"{T}Mailbox"), None)
            item.organizer = _mailbox(box) if box is not None else None
        elif name == "RequiredAttendees":
            item.required = _people(child)
        elif name == "OptionalAttendees":
            item.optional = _people(child)
        elif name == "StartTimeZone":
            item.start_tz = child.get("Id") or child.get("Name")
        elif name == "EndTimeZone":
            item.end_tz = child.get("Id") or child.get("Name")
    return item


_ZONES: dict[str, EWSTimeZone | None] = {}


def time_zone(ms_id: str | None) -> EWSTimeZone | None:
    """The zone of a Windows time zone id, by exchangelib's own map (None, with a warning, when it has none)."""
    if ms_id is None:
        return None
    try:
        return _ZONES[ms_id]
    except KeyError:
        pass
    try:
        zone: EWSTimeZone | None = EWSTimeZone.from_ms_id(ms_id)
    except UnknownTimeZone:
        zone = None
    _ZONES[ms_id] = zone  # a benign race: two threads store the same value
    if zone is None:
        warnings.warn(f"Exchange named the time zone {ms_id!r}, which has no IANA equivalent in exchangelib's map",
                      stacklevel=2)
    return zone


@dataclass
class ViewPage:
    """One CalendarView page: (id, change key, start) per item, whether the view's last item is in it, and the
    calendar folder's id (the ParentFolderId of its items)."""

    items: list[tuple[str, str | None, dt.datetime | None]]
    includes_last: bool | None
    calendar_id: str | None


def parse_view(root_folder: Any) -> ViewPage:
    """A FindItem RootFolder element -> ``ViewPage``."""
    last = root_folder.get("IncludesLastItemInRange")
    items: list[tuple[str, str | None, dt.datetime | None]] = []
    calendar_id = None
    holder = next((c for c in root_folder if c.tag == f"{T}Items"), None)
    for elem in (holder if holder is not None else ()):
        item_id = changekey = start = None
        for child in elem:
            tag = child.tag
            if tag == f"{T}ItemId":
                item_id, changekey = child.get("Id"), child.get("ChangeKey")
            elif tag == f"{T}Start":
                start = parse_datetime(child.text)
            elif tag == f"{T}ParentFolderId" and calendar_id is None:
                calendar_id = child.get("Id")
        if item_id:
            items.append((item_id, changekey, start))
    return ViewPage(items, None if last is None else last.lower() == "true", calendar_id)
