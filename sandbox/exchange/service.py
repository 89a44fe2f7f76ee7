"""EWS operations: parse the SOAP request, act on the Org, answer in Exchange's response shapes.

Operations: GetFolder, FindItem (CalendarView / IndexedPageItemView, simple Restrictions),
GetItem (TextBody included), CreateItem, UpdateItem, DeleteItem (DeleteType honoured). Reference pages
are cited where a rule is copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Callable
from xml.sax.saxutils import escape

from . import soap
from . import tz as tzmod
from .store import (
    SENSITIVITIES,
    WEEKDAYS,
    Attendee,
    EwsError,
    Item,
    Occurrence,
    Org,
    Recurrence,
    SoapFault,
    fmt_dt,
    stored_body,
)

UTC = timezone.utc
M = "{%s}" % soap.M_NS
T = "{%s}" % soap.T_NS
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


@dataclass
class Context:
    org: Org
    principal: str  # the authenticated account (lower-case)
    acting: str | None  # the mailbox the request acts as (impersonated, or the principal's own)
    tz_context: str | None  # Windows id from the TimeZoneContext header
    impersonating: bool


# ====================================================================== helpers
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(elem, name: str):
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


def _children(elem, name: str) -> list:
    return [c for c in elem if _local(c.tag) == name]


def _bool(text: str | None) -> bool:
    return (text or "").strip().lower() in ("true", "1")


# Characters XML 1.0 cannot carry. EWS does not drop them from a reply: it writes them as numeric character
# references, which strict XML readers then refuse -- replies quoted in
# https://github.com/OfficeDev/ews-java-api/issues/233 ("<t:Subject>...CASEBR&#x1A;S CAIXA...</t:Subject>") and
# https://github.com/OfficeDev/ews-java-api/issues/156 (NUL "represented as the character reference &#x0;").
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(value) -> str:
    text = escape(str(value))
    if _NOT_XML.search(text) is None:
        return text
    return _NOT_XML.sub(lambda m: f"&#x{ord(m.group()):X};", text)


def parse_datetime(text: str, ctx: Context, tz_hint: str | None = None) -> datetime:
    """xs:dateTime: with Z or offset as given; without, in the TimeZoneContext (else UTC), as EWS does."""
    text = (text or "").strip()
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EwsError("ErrorInvalidValueForProperty", f"Invalid xs:dateTime value {text!r}.")
    if value.tzinfo is None:
        value = value.replace(tzinfo=tzmod.tzinfo_for(tz_hint or ctx.tz_context or "UTC"))
    return value.astimezone(UTC)


def _duration(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    days, rem = divmod(secs, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    out = "P" + (f"{days}D" if days else "")
    t = (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s}S" if s else "")
    if t:
        out += "T" + t
    return out if out != "P" else "PT0S"


def _mailbox_xml(email: str, name: str, mailbox_type: str) -> str:
    return (
        f"<t:Mailbox><t:Name>{_x(name or email)}</t:Name><t:EmailAddress>{_x(email)}</t:EmailAddress>"
        f"<t:RoutingType>SMTP</t:RoutingType><t:MailboxType>{mailbox_type}</t:MailboxType></t:Mailbox>"
    )


def _attendees_xml(attendees: list[Attendee]) -> str:
    out = []
    for a in attendees:
        lrt = f"<t:LastResponseTime>{fmt_dt(a.last_response_time)}</t:LastResponseTime>" if a.last_response_time else ""
        out.append(
            f"<t:Attendee>{_mailbox_xml(a.email, a.name, a.mailbox_type)}"
            f"<t:ResponseType>{a.response}</t:ResponseType>{lrt}</t:Attendee>"
        )
    return "".join(out)


def _date_with_offset(d: date, ms_tz: str) -> str:
    zone = tzmod.tzinfo_for(ms_tz)
    off = datetime(d.year, d.month, d.day, tzinfo=zone).utcoffset() or timedelta(0)
    if not off:
        return f"{d.isoformat()}Z"
    sign = "-" if off < timedelta(0) else "+"
    mins = abs(int(off.total_seconds())) // 60
    return f"{d.isoformat()}{sign}{mins // 60:02d}:{mins % 60:02d}"


def _recurrence_xml(org: Org, item: Item) -> str:
    rec = item.recurrence
    assert rec is not None
    interval = f"<t:Interval>{rec.interval}</t:Interval>"
    first_local = item.start.astimezone(tzmod.tzinfo_for(item.start_tz)).date()
    if rec.pattern == "daily":
        pat = f"<t:DailyRecurrence>{interval}</t:DailyRecurrence>"
    elif rec.pattern == "weekly":
        days = " ".join(rec.weekdays or (WEEKDAYS[(first_local.weekday() + 1) % 7],))
        pat = (f"<t:WeeklyRecurrence>{interval}<t:DaysOfWeek>{days}</t:DaysOfWeek>"
               f"<t:FirstDayOfWeek>{rec.first_day_of_week}</t:FirstDayOfWeek></t:WeeklyRecurrence>")
    elif rec.pattern == "absolute_monthly":
        pat = (f"<t:AbsoluteMonthlyRecurrence>{interval}<t:DayOfMonth>{rec.day_of_month or first_local.day}"
               f"</t:DayOfMonth></t:AbsoluteMonthlyRecurrence>")
    else:
        pat = (f"<t:AbsoluteYearlyRecurrence><t:DayOfMonth>{rec.day_of_month or first_local.day}</t:DayOfMonth>"
               f"<t:Month>{MONTHS[(rec.month or first_local.month) - 1]}</t:Month></t:AbsoluteYearlyRecurrence>")
    start = f"<t:StartDate>{_date_with_offset(first_local, item.start_tz)}</t:StartDate>"
    if rec.occurrences is not None:
        rng = f"<t:NumberedRecurrence>{start}<t:NumberOfOccurrences>{rec.occurrences}</t:NumberOfOccurrences></t:NumberedRecurrence>"
    elif rec.end_date is not None:
        rng = f"<t:EndDateRecurrence>{start}<t:EndDate>{_date_with_offset(rec.end_date, item.start_tz)}</t:EndDate></t:EndDateRecurrence>"
    else:
        rng = f"<t:NoEndRecurrence>{start}</t:NoEndRecurrence>"
    return f"<t:Recurrence>{pat}{rng}</t:Recurrence>"


def _occ_info(tag: str, occ: Occurrence) -> str:
    return (f"<t:{tag}><t:ItemId Id={soap.attr(occ.id)} ChangeKey={soap.attr(occ.master.changekey)}/>"
            f"<t:Start>{fmt_dt(occ.start)}</t:Start><t:End>{fmt_dt(occ.end)}</t:End>"
            f"<t:OriginalStart>{fmt_dt(occ.original_start)}</t:OriginalStart></t:{tag}>")


# ====================================================================== TextBody
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
               "pre", "hr", "dt", "dd", "section", "article", "header", "footer"}
_HIDDEN_TAGS = {"head", "style", "script", "title"}


class _TextExtractor(HTMLParser):
    """HTML to plain text the way Exchange's TextBody reads: markup and hidden parts dropped, entities
    decoded, block elements and <br> as line breaks, runs of blanks collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.hidden = 0

    def _break(self) -> None:
        if self.lines[-1].strip():
            self.lines.append("")

    def handle_starttag(self, tag, attrs) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "br":
            self.lines.append("")
        elif tag in _BLOCK_TAGS:
            self._break()
        elif tag in ("td", "th") and self.lines[-1].strip():
            self.lines[-1] += "\t"

    def handle_endtag(self, tag) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK_TAGS and tag != "br":
            self._break()

    def handle_data(self, data) -> None:
        if not self.hidden:
            self.lines[-1] += data


def text_body(body: str | None, body_type: str) -> str:
    """The item's body as plain text: a Text body as stored, an HTML body converted."""
    if not body:
        return ""
    if body_type != "HTML":
        return body
    parser = _TextExtractor()
    parser.feed(body)
    parser.close()
    lines = [" ".join(line.replace("\xa0", " ").split()) for line in parser.lines]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


# ====================================================================== item rendering
# (element name, FieldURI, renderer) in CalendarItemType schema order (ItemType fields, then calendar ones):
# https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/calendaritem
Renderer = Callable[[Org, "Item | Occurrence"], "str | None"]


def _kind(item) -> str:
    if isinstance(item, Occurrence):
        return "Exception" if item.is_exception else "Occurrence"
    return "RecurringMaster" if item.recurrence is not None else "Single"


def _appointment_state(item) -> int:
    if not item.is_meeting:
        return 0
    return 1 if item.is_organizer_copy else 3


FIELDS: list[tuple[str, str, Renderer]] = [
    ("ParentFolderId", "item:ParentFolderId",
     lambda o, i: f'<t:ParentFolderId Id={soap.attr(o.mailboxes[i.mailbox].folder_id_of(i.folder))} ChangeKey="AgAAAA=="/>'),
    ("ItemClass", "item:ItemClass", lambda o, i: "<t:ItemClass>IPM.Appointment</t:ItemClass>"),
    ("Subject", "item:Subject", lambda o, i: f"<t:Subject>{_x(i.subject)}</t:Subject>"),
    ("Sensitivity", "item:Sensitivity", lambda o, i: f"<t:Sensitivity>{i.sensitivity}</t:Sensitivity>"),
    ("Body", "item:Body",
     lambda o, i: f'<t:Body BodyType="{i.body_type}" IsTruncated="false">{_x(i.body)}</t:Body>' if i.body
     else f'<t:Body BodyType="{i.body_type}" IsTruncated="false"/>'),
    ("DateTimeReceived", "item:DateTimeReceived", lambda o, i: f"<t:DateTimeReceived>{fmt_dt(i.created)}</t:DateTimeReceived>"),
    ("Size", "item:Size", lambda o, i: f"<t:Size>{1024 + len(i.body or '') + len(i.subject)}</t:Size>"),
    ("Categories", "item:Categories",
     lambda o, i: ("<t:Categories>" + "".join(f"<t:String>{_x(c)}</t:String>" for c in i.categories) + "</t:Categories>")
     if i.categories else None),
    ("Importance", "item:Importance", lambda o, i: f"<t:Importance>{i.importance}</t:Importance>"),
    ("IsSubmitted", "item:IsSubmitted", lambda o, i: "<t:IsSubmitted>false</t:IsSubmitted>"),
    ("IsDraft", "item:IsDraft", lambda o, i: "<t:IsDraft>false</t:IsDraft>"),
    ("IsFromMe", "item:IsFromMe", lambda o, i: "<t:IsFromMe>false</t:IsFromMe>"),
    ("IsResend", "item:IsResend", lambda o, i: "<t:IsResend>false</t:IsResend>"),
    ("IsUnmodified", "item:IsUnmodified", lambda o, i: "<t:IsUnmodified>false</t:IsUnmodified>"),
    ("DateTimeSent", "item:DateTimeSent", lambda o, i: f"<t:DateTimeSent>{fmt_dt(i.created)}</t:DateTimeSent>"),
    ("DateTimeCreated", "item:DateTimeCreated", lambda o, i: f"<t:DateTimeCreated>{fmt_dt(i.created)}</t:DateTimeCreated>"),
    ("ReminderDueBy", "item:ReminderDueBy", lambda o, i: f"<t:ReminderDueBy>{fmt_dt(i.start)}</t:ReminderDueBy>"),
    ("ReminderIsSet", "item:ReminderIsSet", lambda o, i: f"<t:ReminderIsSet>{str(i.reminder_is_set).lower()}</t:ReminderIsSet>"),
    ("ReminderMinutesBeforeStart", "item:ReminderMinutesBeforeStart",
     lambda o, i: f"<t:ReminderMinutesBeforeStart>{i.reminder_minutes}</t:ReminderMinutesBeforeStart>"),
    ("DisplayCc", "item:DisplayCc",
     lambda o, i: f"<t:DisplayCc>{_x('; '.join(a.name for a in i.optional))}</t:DisplayCc>"),
    ("DisplayTo", "item:DisplayTo",
     lambda o, i: f"<t:DisplayTo>{_x('; '.join(a.name for a in i.required))}</t:DisplayTo>"),
    ("HasAttachments", "item:HasAttachments", lambda o, i: "<t:HasAttachments>false</t:HasAttachments>"),
    ("Culture", "item:Culture", lambda o, i: "<t:Culture>en-US</t:Culture>"),
    ("LastModifiedName", "item:LastModifiedName",
     lambda o, i: f"<t:LastModifiedName>{_x(o.mailboxes[i.mailbox].name)}</t:LastModifiedName>"),
    ("LastModifiedTime", "item:LastModifiedTime",
     lambda o, i: f"<t:LastModifiedTime>{fmt_dt(i.last_modified)}</t:LastModifiedTime>"),
    ("IsAssociated", "item:IsAssociated", lambda o, i: "<t:IsAssociated>false</t:IsAssociated>"),
    # Exchange 2013+: the body as plain text whatever its stored type (HTML converted), on request only.
    # https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/textbody
    ("TextBody", "item:TextBody",
     lambda o, i: f'<t:TextBody BodyType="Text" IsTruncated="false">{_x(text_body(i.body, i.body_type))}</t:TextBody>'
     if i.body else '<t:TextBody BodyType="Text" IsTruncated="false"/>'),
    ("UID", "calendar:UID", lambda o, i: f"<t:UID>{_x(i.uid)}</t:UID>"),
    ("RecurrenceId", "calendar:RecurrenceId",
     lambda o, i: f"<t:RecurrenceId>{fmt_dt(i.original_start)}</t:RecurrenceId>" if isinstance(i, Occurrence) else None),
    ("DateTimeStamp", "calendar:DateTimeStamp", lambda o, i: f"<t:DateTimeStamp>{fmt_dt(i.last_modified)}</t:DateTimeStamp>"),
    ("Start", "calendar:Start", lambda o, i: f"<t:Start>{fmt_dt(i.start)}</t:Start>"),
    ("End", "calendar:End", lambda o, i: f"<t:End>{fmt_dt(i.end)}</t:End>"),
    ("OriginalStart", "calendar:OriginalStart",
     lambda o, i: f"<t:OriginalStart>{fmt_dt(i.original_start)}</t:OriginalStart>" if isinstance(i, Occurrence) else None),
    ("IsAllDayEvent", "calendar:IsAllDayEvent", lambda o, i: f"<t:IsAllDayEvent>{str(i.is_all_day).lower()}</t:IsAllDayEvent>"),
    ("LegacyFreeBusyStatus", "calendar:LegacyFreeBusyStatus",
     lambda o, i: f"<t:LegacyFreeBusyStatus>{i.legacy_free_busy}</t:LegacyFreeBusyStatus>"),
    ("Location", "calendar:Location", lambda o, i: f"<t:Location>{_x(i.location)}</t:Location>" if i.location else None),
    ("IsMeeting", "calendar:IsMeeting", lambda o, i: f"<t:IsMeeting>{str(i.is_meeting).lower()}</t:IsMeeting>"),
    ("IsCancelled", "calendar:IsCancelled", lambda o, i: "<t:IsCancelled>false</t:IsCancelled>"),
    ("IsRecurring", "calendar:IsRecurring",
     lambda o, i: f"<t:IsRecurring>{str(isinstance(i, Occurrence)).lower()}</t:IsRecurring>"),
    ("MeetingRequestWasSent", "calendar:MeetingRequestWasSent",
     lambda o, i: f"<t:MeetingRequestWasSent>{str(i.meeting_request_was_sent).lower()}</t:MeetingRequestWasSent>"),
    ("IsResponseRequested", "calendar:IsResponseRequested",
     lambda o, i: f"<t:IsResponseRequested>{str(i.is_response_requested).lower()}</t:IsResponseRequested>"),
    ("CalendarItemType", "calendar:CalendarItemType", lambda o, i: f"<t:CalendarItemType>{_kind(i)}</t:CalendarItemType>"),
    ("MyResponseType", "calendar:MyResponseType", lambda o, i: f"<t:MyResponseType>{i.my_response}</t:MyResponseType>"),
    ("Organizer", "calendar:Organizer",
     lambda o, i: f"<t:Organizer>{_mailbox_xml(i.organizer_email, i.organizer_name, 'Mailbox' if i.organizer_email in o.mailboxes else 'OneOff')}</t:Organizer>"
     if i.organizer_email else None),
    ("RequiredAttendees", "calendar:RequiredAttendees",
     lambda o, i: f"<t:RequiredAttendees>{_attendees_xml(i.required)}</t:RequiredAttendees>" if i.required else None),
    ("OptionalAttendees", "calendar:OptionalAttendees",
     lambda o, i: f"<t:OptionalAttendees>{_attendees_xml(i.optional)}</t:OptionalAttendees>" if i.optional else None),
    ("ConflictingMeetingCount", "calendar:ConflictingMeetingCount",
     lambda o, i: "<t:ConflictingMeetingCount>0</t:ConflictingMeetingCount>"),
    ("AdjacentMeetingCount", "calendar:AdjacentMeetingCount", lambda o, i: "<t:AdjacentMeetingCount>0</t:AdjacentMeetingCount>"),
    ("Duration", "calendar:Duration", lambda o, i: f"<t:Duration>{_duration(i.end - i.start)}</t:Duration>"),
    ("AppointmentSequenceNumber", "calendar:AppointmentSequenceNumber",
     lambda o, i: f"<t:AppointmentSequenceNumber>{i.sequence}</t:AppointmentSequenceNumber>"),
    ("AppointmentState", "calendar:AppointmentState",
     lambda o, i: f"<t:AppointmentState>{_appointment_state(i)}</t:AppointmentState>"),
    ("Recurrence", "calendar:Recurrence",
     lambda o, i: _recurrence_xml(o, i) if not isinstance(i, Occurrence) and i.recurrence is not None else None),
    ("FirstOccurrence", "calendar:FirstOccurrence", lambda o, i: _first_last(o, i, "FirstOccurrence")),
    ("LastOccurrence", "calendar:LastOccurrence", lambda o, i: _first_last(o, i, "LastOccurrence")),
    ("ModifiedOccurrences", "calendar:ModifiedOccurrences", lambda o, i: _modified(o, i)),
    ("DeletedOccurrences", "calendar:DeletedOccurrences",
     lambda o, i: ("<t:DeletedOccurrences>" + "".join(
         f"<t:DeletedOccurrence><t:Start>{fmt_dt(d)}</t:Start></t:DeletedOccurrence>" for d in sorted(i.deleted_occurrences))
         + "</t:DeletedOccurrences>") if not isinstance(i, Occurrence) and i.recurrence and i.deleted_occurrences else None),
    ("StartTimeZone", "calendar:StartTimeZone", lambda o, i: tzmod.definition_xml("StartTimeZone", i.start_tz)),
    ("EndTimeZone", "calendar:EndTimeZone", lambda o, i: tzmod.definition_xml("EndTimeZone", i.end_tz)),
    ("ConferenceType", "calendar:ConferenceType", lambda o, i: "<t:ConferenceType>0</t:ConferenceType>"),
    ("AllowNewTimeProposal", "calendar:AllowNewTimeProposal",
     lambda o, i: f"<t:AllowNewTimeProposal>{str(i.allow_new_time_proposal).lower()}</t:AllowNewTimeProposal>"),
    ("IsOnlineMeeting", "calendar:IsOnlineMeeting", lambda o, i: "<t:IsOnlineMeeting>false</t:IsOnlineMeeting>"),
]
URI_TO_NAME = {uri: name for name, uri, _ in FIELDS}
# Default shape for calendar items (ItemShape BaseShape="Default").
DEFAULT_FIELDS = {"Subject", "HasAttachments", "IsAssociated", "Start", "End", "LegacyFreeBusyStatus", "Location",
                  "CalendarItemType", "Organizer"}
# AllProperties leaves out the computed bodies (TextBody, like UniqueBody and NormalizedBody): they come
# only when asked for in AdditionalProperties.
ALL_FIELDS = {name for name, _, _ in FIELDS} - {"TextBody"}
# FindItem cannot return these (body, attendee lists, recurrence blobs):
# https://learn.microsoft.com/en-us/exchange/client-developer/exchange-web-services/how-to-get-appointments-and-meetings-by-using-ews-in-exchange
NOT_IN_FINDITEM = {"item:Body", "item:TextBody", "item:MimeContent", "item:UniqueBody", "calendar:RequiredAttendees",
                   "calendar:OptionalAttendees", "calendar:Resources", "calendar:ModifiedOccurrences",
                   "calendar:DeletedOccurrences", "calendar:Recurrence", "calendar:FirstOccurrence",
                   "calendar:LastOccurrence", "item:Attachments", "calendar:ConflictingMeetings",
                   "calendar:AdjacentMeetings"}


def _first_last(org: Org, item, tag: str) -> str | None:
    if isinstance(item, Occurrence) or item.recurrence is None:
        return None
    far = item.start + timedelta(days=366 * 30)
    if tag == "FirstOccurrence":
        occ = next(org.expand(item, until=far), None)
        return _occ_info(tag, occ) if occ else None
    if item.recurrence.occurrences is None and item.recurrence.end_date is None:
        return None
    last = None
    for last in org.expand(item, until=far):  # noqa: B007 - run to the end: the last occurrence is the one wanted
        pass
    return _occ_info(tag, last) if last else None


def _modified(org: Org, item) -> str | None:
    if isinstance(item, Occurrence) or not item.modified_occurrences:
        return None
    occs = [o for o in org.expand(item, until=max(item.modified_occurrences) + timedelta(seconds=1))
            if o.is_exception]
    return "<t:ModifiedOccurrences>" + "".join(_occ_info("Occurrence", o) for o in occs) + "</t:ModifiedOccurrences>"


def render_item(org: Org, item, fields: set[str]) -> str:
    parts = [f"<t:CalendarItem><t:ItemId Id={soap.attr(item.id)} ChangeKey={soap.attr(item.changekey)}/>"]
    for name, _uri, fn in FIELDS:
        if name in fields:
            out = fn(org, item)
            if out:
                parts.append(out)
    parts.append("</t:CalendarItem>")
    return "".join(parts)


def parse_shape(shape_elem, operation: str) -> set[str]:
    if shape_elem is None:
        raise EwsError("ErrorSchemaValidation", "The request failed schema validation: ItemShape is missing.")
    base = (_child(shape_elem, "BaseShape").text or "").strip() if _child(shape_elem, "BaseShape") is not None else "IdOnly"
    if base == "IdOnly":
        fields: set[str] = set()
    elif base == "Default":
        fields = set(DEFAULT_FIELDS)
    elif base == "AllProperties":
        fields = set(ALL_FIELDS)
        if operation == "FindItem":
            fields -= {URI_TO_NAME.get(u) for u in NOT_IN_FINDITEM}
    else:
        raise EwsError("ErrorSchemaValidation", f"Invalid BaseShape {base!r}.")
    extra = _child(shape_elem, "AdditionalProperties")
    if extra is not None:
        for p in extra:
            if _local(p.tag) != "FieldURI":
                continue  # ExtendedFieldURI / IndexedFieldURI: nothing stored, nothing returned
            uri = p.get("FieldURI")
            if operation == "FindItem" and uri in NOT_IN_FINDITEM:
                raise EwsError("ErrorInvalidPropertyRequest", "Property is not valid for this operation.",
                               f'<t:FieldURI FieldURI={soap.attr(uri)}/>')
            name = URI_TO_NAME.get(uri)
            if name:
                fields.add(name)
    return fields


# ====================================================================== access checks
def _resolve_mailbox(ctx: Context, email: str | None) -> str:
    """The mailbox a folder reference names, checked against who is asking."""
    org = ctx.org
    target = (email or ctx.acting or "").strip().lower()
    if not target or not org.hosts(target, "ews"):  # a Graph-kind (Exchange Online) mailbox is not hosted here
        raise EwsError("ErrorNonExistentMailbox", soap.text_for("ErrorNonExistentMailbox"),
                       f"<t:Value Name=\"SmtpAddress\">{_x(target)}</t:Value>")
    if target != ctx.acting:
        raise EwsError("ErrorAccessDenied", soap.text_for("ErrorAccessDenied"))
    return target


def _folder_ref(ctx: Context, elem) -> tuple[str, str]:
    """(mailbox, folder kind) for a DistinguishedFolderId or FolderId element."""
    name = _local(elem.tag)
    if name == "DistinguishedFolderId":
        mbx_elem = _child(elem, "Mailbox")
        email = None
        if mbx_elem is not None and _child(mbx_elem, "EmailAddress") is not None:
            email = _child(mbx_elem, "EmailAddress").text
        mailbox = _resolve_mailbox(ctx, email)
        return mailbox, elem.get("Id", "")
    if name == "FolderId":
        decoded = ctx.org.decode_folder_id(elem.get("Id", ""))
        if decoded is None:
            raise EwsError("ErrorInvalidIdMalformed", soap.text_for("ErrorInvalidIdMalformed"))
        mailbox, kind = decoded
        if mailbox not in ctx.org.mailboxes:
            raise EwsError("ErrorFolderNotFound", soap.text_for("ErrorFolderNotFound"))
        _resolve_mailbox(ctx, mailbox)
        return mailbox, kind
    raise EwsError("ErrorInvalidOperation", f"Unsupported folder id element {name}.")


def _lookup(ctx: Context, id_elem):
    """The item/occurrence an ItemId / OccurrenceItemId / RecurringMasterItemId names."""
    org = ctx.org
    name = _local(id_elem.tag)
    if name == "ItemId":
        item_id = id_elem.get("Id", "")
    elif name == "OccurrenceItemId":
        item_id = id_elem.get("RecurringMasterId", "")
    elif name == "RecurringMasterItemId":
        item_id = id_elem.get("OccurrenceId", "")
    else:
        raise EwsError("ErrorInvalidOperation", f"Unsupported item id element {name}.")
    decoded = org.decode_item_id(item_id)
    if decoded is None:
        raise EwsError("ErrorInvalidIdMalformed", soap.text_for("ErrorInvalidIdMalformed"))
    _kind_, mailbox, _ = decoded
    if not org.hosts(mailbox, "ews"):
        raise EwsError("ErrorItemNotFound", soap.text_for("ErrorItemNotFound"))
    if mailbox != ctx.acting:
        raise EwsError("ErrorAccessDenied", soap.text_for("ErrorAccessDenied"))
    found = org.find_item(item_id)
    if found is None:
        raise EwsError("ErrorItemNotFound", soap.text_for("ErrorItemNotFound"))
    if name == "OccurrenceItemId":
        if isinstance(found, Occurrence) or found.recurrence is None:
            raise EwsError("ErrorItemNotFound", soap.text_for("ErrorItemNotFound"))
        index = int(id_elem.get("InstanceIndex", "0"))
        for occ in org.expand(found, until=datetime.max.replace(tzinfo=UTC) - timedelta(days=2)):
            if occ.index == index:
                return occ
            if occ.index > index:
                break
        raise EwsError("ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange",
                       "Occurrence index is out of recurrence range.")
    if name == "RecurringMasterItemId":
        if isinstance(found, Occurrence):
            return found.master
        if found.recurrence is None:
            raise EwsError("ErrorItemNotFound", soap.text_for("ErrorItemNotFound"))
    return found


# ====================================================================== GetFolder
# Distinguished folders served. Items live in the calendar, in Deleted Items (MoveToDeletedItems) and in
# Recoverable Items\Deletions (SoftDelete); the roots are empty.
# https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/distinguishedfolderid
FOLDER_KINDS = {"calendar", "deleteditems", "recoverableitemsdeletions", "recoverableitemsroot", "root", "msgfolderroot"}
_FOLDER_NAMES = {"calendar": "Calendar", "deleteditems": "Deleted Items", "recoverableitemsdeletions": "Deletions",
                 "recoverableitemsroot": "Recoverable Items", "root": "", "msgfolderroot": "Top of Information Store"}
_FOLDER_PARENTS = {"calendar": "msgfolderroot", "deleteditems": "msgfolderroot", "msgfolderroot": "root",
                   "recoverableitemsroot": "root", "recoverableitemsdeletions": "recoverableitemsroot", "root": None}
_CHILD_FOLDERS = {"root": 2, "msgfolderroot": 2, "recoverableitemsroot": 1}
_FOLDER_CLASSES = {"calendar": "IPF.Appointment", "deleteditems": "IPF.Note"}


def get_folder(ctx: Context, req) -> list[str]:
    shape = _child(req, "FolderShape")
    base = "IdOnly"
    extra: set[str] = set()
    if shape is not None:
        b = _child(shape, "BaseShape")
        base = (b.text or "IdOnly").strip() if b is not None else "IdOnly"
        props = _child(shape, "AdditionalProperties")
        if props is not None:
            extra = {p.get("FieldURI") for p in props if _local(p.tag) == "FieldURI"}
    want_all = base in ("Default", "AllProperties")
    out = []
    ids = _child(req, "FolderIds")
    for ref in (ids if ids is not None else []):
        try:
            mailbox, kind = _folder_ref(ctx, ref)
            if kind not in FOLDER_KINDS:
                raise EwsError("ErrorFolderNotFound", soap.text_for("ErrorFolderNotFound"))
            out.append(soap.success("GetFolder", f"<m:Folders>{_folder_xml(ctx.org, mailbox, kind, want_all, extra)}</m:Folders>"))
        except EwsError as e:
            out.append(soap.error("GetFolder", e.code, e.text, e.message_xml))
    return out


def _folder_xml(org: Org, mailbox: str, kind: str, want_all: bool, extra: set[str]) -> str:
    mbx = org.mailboxes[mailbox]
    fid = mbx.folder_id_of(kind)
    parent = mbx.folder_id_of(_FOLDER_PARENTS[kind]) if _FOLDER_PARENTS[kind] else None
    tag = "CalendarFolder" if kind == "calendar" else "Folder"
    name = _FOLDER_NAMES[kind]
    parts = [f'<t:{tag}><t:FolderId Id={soap.attr(fid)} ChangeKey="AgAAABYAAAA="/>']

    def want(uri: str) -> bool:
        return want_all or uri in extra

    if parent and want("folder:ParentFolderId"):
        parts.append(f'<t:ParentFolderId Id={soap.attr(parent)} ChangeKey="AQAAAA=="/>')
    if kind in _FOLDER_CLASSES and want("folder:FolderClass"):
        parts.append(f"<t:FolderClass>{_FOLDER_CLASSES[kind]}</t:FolderClass>")
    if want("folder:DisplayName"):
        parts.append(f"<t:DisplayName>{name}</t:DisplayName>")
    if want("folder:TotalCount"):
        parts.append(f"<t:TotalCount>{len(mbx.folder_items(kind))}</t:TotalCount>")
    if want("folder:ChildFolderCount"):
        parts.append(f"<t:ChildFolderCount>{_CHILD_FOLDERS.get(kind, 0)}</t:ChildFolderCount>")
    if kind != "calendar" and want("folder:UnreadCount"):
        parts.append("<t:UnreadCount>0</t:UnreadCount>")
    parts.append(f"</t:{tag}>")
    return "".join(parts)


# ====================================================================== FindItem
def find_item(ctx: Context, req) -> list[str]:
    org = ctx.org
    try:
        fields = parse_shape(_child(req, "ItemShape"), "FindItem")
    except EwsError as e:
        return [soap.error("FindItem", e.code, e.text, e.message_xml)]
    view = _child(req, "CalendarView")
    paged = _child(req, "IndexedPageItemView")
    restriction = _child(req, "Restriction")
    if _child(req, "FractionalPageItemView") is not None or _child(req, "SeekToConditionPageItemView") is not None:
        return [soap.error("FindItem", "ErrorInvalidOperation", "Only CalendarView and IndexedPageItemView are supported.")]
    if view is not None and (restriction is not None or _child(req, "SortOrder") is not None):
        # https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/calendarview
        return [soap.error("FindItem", "ErrorInvalidRestriction",
                           "Restrictions and sort order may not be specified for a CalendarView.")]
    parents = _child(req, "ParentFolderIds")
    out = []
    for ref in (parents if parents is not None else []):
        try:
            mailbox, kind = _folder_ref(ctx, ref)
            if kind not in FOLDER_KINDS:
                raise EwsError("ErrorFolderNotFound", soap.text_for("ErrorFolderNotFound"))
            if view is not None and kind != "calendar":
                raise EwsError("ErrorCalendarFolderIsInvalidForCalendarView",
                               "The specified folder for CalendarView is not a calendar folder.")
            if view is not None:
                start = parse_datetime(view.get("StartDate", ""), ctx)
                end = parse_datetime(view.get("EndDate", ""), ctx)
                if end < start:
                    raise EwsError("ErrorCalendarEndDateIsEarlierThanStartDate",
                                   soap.text_for("ErrorCalendarEndDateIsEarlierThanStartDate"))
                # Exchange refuses views longer than two years.
                if end - start > timedelta(days=2 * 365 + 1):
                    raise EwsError("ErrorCalendarViewRangeTooBig",
                                   "The specified view range exceeds the maximum range of two years.")
                found = org.calendar_view(mailbox, start, end)
                total = len(found)
                limit = view.get("MaxEntriesReturned")
                if limit is not None and total > int(limit):
                    page, last = found[: int(limit)], False
                else:
                    page, last = found, True
                attrs = f'TotalItemsInView="{total}" IncludesLastItemInRange="{str(last).lower()}"'
            else:
                items = list(org.mailboxes[mailbox].folder_items(kind).values())
                if restriction is not None:
                    pred = compile_restriction(ctx, restriction[0] if len(restriction) else None)
                    items = [i for i in items if pred(i)]
                items = _sort(items, _child(req, "SortOrder"))
                total = len(items)
                offset, limit = 0, None
                if paged is not None:
                    offset = int(paged.get("Offset", "0"))
                    if paged.get("BasePoint", "Beginning") == "End":
                        offset = max(total - offset - int(paged.get("MaxEntriesReturned", total)), 0)
                    if paged.get("MaxEntriesReturned") is not None:
                        limit = int(paged.get("MaxEntriesReturned"))
                page = items[offset: offset + limit if limit is not None else None]
                nxt = offset + len(page)
                last = nxt >= total
                attrs = (f'IndexedPagingOffset="{nxt}" TotalItemsInView="{total}" '
                         f'IncludesLastItemInRange="{str(last).lower()}"')
            body = "".join(render_item(org, i, fields) for i in page)
            out.append(soap.success("FindItem", f"<m:RootFolder {attrs}><t:Items>{body}</t:Items></m:RootFolder>"))
        except EwsError as e:
            out.append(soap.error("FindItem", e.code, e.text, e.message_xml))
    return out


def _sort_value(item: Item, uri: str):
    return {
        "calendar:Start": item.start,
        "calendar:End": item.end,
        "item:Subject": item.subject.lower(),
        "item:LastModifiedTime": item.last_modified,
        "item:DateTimeCreated": item.created,
    }.get(uri)


_SORTABLE = ("calendar:Start", "calendar:End", "item:Subject", "item:LastModifiedTime", "item:DateTimeCreated")


def _sort(items: list[Item], sort_elem) -> list[Item]:
    items = sorted(items, key=lambda i: (i.start, i.id))
    if sort_elem is None:
        return items
    for order in reversed(list(sort_elem)):
        fu = _child(order, "FieldURI")
        uri = fu.get("FieldURI") if fu is not None else None
        if uri not in _SORTABLE:
            raise EwsError("ErrorUnsupportedPathForSortGroup", "The property can not be used for sorting.")
        items.sort(key=lambda i: _sort_value(i, uri), reverse=order.get("Order") == "Descending")
    return items


# Restrictions: the comparison and boolean operators, over the fields calsync can filter on.
def _field_value(ctx: Context, item: Item, uri: str):
    values = {
        "item:Subject": lambda: item.subject,
        "calendar:Start": lambda: item.start,
        "calendar:End": lambda: item.end,
        "calendar:UID": lambda: item.uid,
        "item:LastModifiedTime": lambda: item.last_modified,
        "item:DateTimeCreated": lambda: item.created,
        "calendar:IsAllDayEvent": lambda: item.is_all_day,
        "item:Sensitivity": lambda: item.sensitivity,
        "calendar:IsMeeting": lambda: item.is_meeting,
        "calendar:Location": lambda: item.location,
        "item:ItemClass": lambda: "IPM.Appointment",
        "calendar:CalendarItemType": lambda: _kind(item),
    }
    fn = values.get(uri)
    if fn is None:
        raise EwsError("ErrorUnsupportedPathForQuery", "The property can not be used with this type of restriction.",
                       f'<t:FieldURI FieldURI={soap.attr(uri)}/>')
    return fn()


def _coerce(ctx: Context, sample, text: str):
    if isinstance(sample, bool):
        return _bool(text)
    if isinstance(sample, datetime):
        return parse_datetime(text, ctx)
    return text


def compile_restriction(ctx: Context, node) -> Callable[[Item], bool]:
    if node is None:
        return lambda i: True
    op = _local(node.tag)
    if op in ("And", "Or"):
        parts = [compile_restriction(ctx, c) for c in node]
        return (lambda i: all(p(i) for p in parts)) if op == "And" else (lambda i: any(p(i) for p in parts))
    if op == "Not":
        inner = compile_restriction(ctx, node[0])
        return lambda i: not inner(i)
    fu = _child(node, "FieldURI")
    if fu is None:
        raise EwsError("ErrorUnsupportedPathForQuery", "Only FieldURI paths are supported in restrictions.")
    uri = fu.get("FieldURI")
    if op == "Exists":
        return lambda i: _field_value(ctx, i, uri) is not None
    const_elem = _child(node, "FieldURIOrConstant")
    const = _child(const_elem, "Constant").get("Value") if op != "Contains" else _child(node, "Constant").get("Value")
    cmp = {
        "IsEqualTo": lambda a, b: a == b,
        "IsNotEqualTo": lambda a, b: a != b,
        "IsGreaterThan": lambda a, b: a is not None and a > b,
        "IsGreaterThanOrEqualTo": lambda a, b: a is not None and a >= b,
        "IsLessThan": lambda a, b: a is not None and a < b,
        "IsLessThanOrEqualTo": lambda a, b: a is not None and a <= b,
    }
    if op == "Contains":
        ignore_case = "IgnoreCase" in (node.get("ContainmentComparison") or "")
        mode = node.get("ContainmentMode", "Substring")

        def contains(i: Item) -> bool:
            v = _field_value(ctx, i, uri) or ""
            a, b = (v.lower(), const.lower()) if ignore_case else (v, const)
            return {"FullString": a == b, "Prefixed": a.startswith(b)}.get(mode, b in a)

        return contains
    if op not in cmp:
        raise EwsError("ErrorInvalidRestriction", f"Unsupported restriction {op}.")
    fn = cmp[op]

    def compare(i: Item) -> bool:
        v = _field_value(ctx, i, uri)
        return fn(v, _coerce(ctx, v, const))

    return compare


# ====================================================================== GetItem
def get_item(ctx: Context, req) -> list[str]:
    try:
        fields = parse_shape(_child(req, "ItemShape"), "GetItem")
    except EwsError as e:
        return [soap.error("GetItem", e.code, e.text, e.message_xml)]
    out = []
    ids = _child(req, "ItemIds")
    for ref in (ids if ids is not None else []):
        try:
            item = _lookup(ctx, ref)
            out.append(soap.success("GetItem", f"<m:Items>{render_item(ctx.org, item, fields)}</m:Items>"))
        except EwsError as e:
            out.append(soap.error("GetItem", e.code, e.text, e.message_xml, "<m:Items/>"))
    return out


# ====================================================================== writing: field parsing
def _parse_attendees(org: Org, elem) -> list[Attendee]:
    out = []
    seen = set()
    for att in _children(elem, "Attendee"):
        mbx = _child(att, "Mailbox")
        if mbx is None:
            continue
        email_el = _child(mbx, "EmailAddress")
        email = (email_el.text or "").strip().lower() if email_el is not None else ""
        if not email or email in seen:
            continue
        seen.add(email)
        name_el = _child(mbx, "Name")
        # ResponseType sent by the client is ignored: the server owns it.
        out.append(org.make_attendee(email, (name_el.text or "") if name_el is not None else ""))
    return out


def _parse_recurrence(elem, ctx: Context) -> Recurrence:
    pattern = elem[0] if len(elem) else None
    rng = elem[1] if len(elem) > 1 else None
    if pattern is None or rng is None:
        raise EwsError("ErrorInvalidRecurrence", "Recurrence needs a pattern and a range.")
    kind = _local(pattern.tag)
    spec: dict = {}
    interval = _child(pattern, "Interval")
    spec["interval"] = int(interval.text) if interval is not None else 1
    if kind == "DailyRecurrence":
        spec["pattern"] = "daily"
    elif kind == "WeeklyRecurrence":
        spec["pattern"] = "weekly"
        spec["weekdays"] = (_child(pattern, "DaysOfWeek").text or "").split()
        fdow = _child(pattern, "FirstDayOfWeek")
        if fdow is not None:
            spec["first_day_of_week"] = fdow.text
    elif kind == "AbsoluteMonthlyRecurrence":
        spec["pattern"] = "absolute_monthly"
        spec["day_of_month"] = int(_child(pattern, "DayOfMonth").text)
    elif kind == "AbsoluteYearlyRecurrence":
        spec["pattern"] = "absolute_yearly"
        spec["day_of_month"] = int(_child(pattern, "DayOfMonth").text)
        spec["month"] = MONTHS.index(_child(pattern, "Month").text) + 1
    else:
        raise EwsError("ErrorInvalidRecurrence", f"Recurrence pattern {kind} is not supported by this sandbox.")
    rkind = _local(rng.tag)
    if rkind == "NumberedRecurrence":
        spec["occurrences"] = int(_child(rng, "NumberOfOccurrences").text)
    elif rkind == "EndDateRecurrence":
        spec["end_date"] = (_child(rng, "EndDate").text or "")[:10]
    elif rkind != "NoEndRecurrence":
        raise EwsError("ErrorInvalidRecurrence", f"Recurrence range {rkind} is not supported.")
    try:
        return Recurrence.from_dict(spec)
    except (ValueError, TypeError) as e:
        raise EwsError("ErrorInvalidRecurrence", str(e))


def parse_item_fields(ctx: Context, elem) -> dict:
    """The writable CalendarItem properties present in ``elem`` as {name: value} (raw datetimes kept as text
    until the time zones are known)."""
    out: dict = {}
    for c in elem:
        name = _local(c.tag)
        text = c.text or ""
        if name == "Subject":
            out["subject"] = text
        elif name == "Body":
            out["body_type"] = c.get("BodyType", "Text")
            out["body"] = stored_body(text, out["body_type"])
        elif name == "Sensitivity":
            if text not in SENSITIVITIES:
                raise EwsError("ErrorInvalidValueForProperty", f"Invalid Sensitivity {text!r}.")
            out["sensitivity"] = text
        elif name == "Importance":
            out["importance"] = text
        elif name == "Categories":
            out["categories"] = [s.text or "" for s in c]
        elif name == "ReminderIsSet":
            out["reminder_is_set"] = _bool(text)
        elif name == "ReminderMinutesBeforeStart":
            out["reminder_minutes"] = int(text)
        elif name in ("Start", "End"):
            out[f"_{name.lower()}_text"] = text
        elif name == "IsAllDayEvent":
            out["is_all_day"] = _bool(text)
        elif name == "LegacyFreeBusyStatus":
            out["legacy_free_busy"] = text
        elif name == "Location":
            out["location"] = text
        elif name == "IsResponseRequested":
            out["is_response_requested"] = _bool(text)
        elif name == "AllowNewTimeProposal":
            out["allow_new_time_proposal"] = _bool(text)
        elif name == "RequiredAttendees":
            out["required"] = _parse_attendees(ctx.org, c)
        elif name == "OptionalAttendees":
            out["optional"] = _parse_attendees(ctx.org, c)
        elif name == "Recurrence":
            out["recurrence"] = _parse_recurrence(c, ctx)
        elif name in ("StartTimeZone", "EndTimeZone", "MeetingTimeZone"):
            tz_id = c.get("Id") or c.get("TimeZoneName")
            if tz_id and not tzmod.is_known(tz_id):
                raise EwsError("ErrorTimeZone", f"The time zone {tz_id!r} is not known to this server.")
            if name == "MeetingTimeZone":
                out.setdefault("start_tz", tz_id)
                out.setdefault("end_tz", tz_id)
            else:
                out["start_tz" if name == "StartTimeZone" else "end_tz"] = tz_id
        elif name == "UID":
            out["uid"] = text
        elif name in ("ItemClass",):
            if text and not text.startswith("IPM.Appointment"):
                raise EwsError("ErrorObjectTypeChanged", "Item class may not be changed.")
        elif name in ("Resources", "ConferenceType", "Culture", "ExtendedProperty", "MeetingWorkspaceUrl",
                      "NetShowUrl", "ReminderDueBy", "When", "ReminderNextTime"):
            continue  # accepted, not kept
        else:
            raise EwsError("ErrorInvalidPropertySet", f"The property {name} cannot be set.",
                           f'<t:FieldURI FieldURI="{_x(name)}"/>')
    return out


def _apply_times(ctx: Context, fields: dict, current: dict) -> None:
    """Resolve Start/End texts once the time zones are known, and snap all-day items to local midnights."""
    start_tz = fields.get("start_tz") or current.get("start_tz") or ctx.tz_context or "UTC"
    end_tz = fields.get("end_tz") or current.get("end_tz") or start_tz
    if "_start_text" in fields:
        current["start"] = parse_datetime(fields.pop("_start_text"), ctx, start_tz)
    if "_end_text" in fields:
        current["end"] = parse_datetime(fields.pop("_end_text"), ctx, end_tz)
    current["start_tz"], current["end_tz"] = start_tz, end_tz
    for k, v in fields.items():
        current[k] = v
    if current.get("start") is None or current.get("end") is None:
        raise EwsError("ErrorCalendarInvalidAttributeValue", "A calendar item needs both Start and End.")
    if current["end"] < current["start"]:
        raise EwsError("ErrorCalendarEndDateIsEarlierThanStartDate",
                       soap.text_for("ErrorCalendarEndDateIsEarlierThanStartDate"))
    if current.get("is_all_day"):
        current["start"], current["end"] = ctx.org.snap_all_day(current["start"], current["end"], start_tz, end_tz)


SEND_INVITATIONS = ("SendToNone", "SendOnlyToAll", "SendToAllAndSaveCopy")
SEND_UPDATES = ("SendToNone", "SendOnlyToAll", "SendOnlyToChanged", "SendToAllAndSaveCopy", "SendToChangedAndSaveCopy")
CONFLICT_MODES = ("NeverOverwrite", "AutoResolve", "AlwaysOverwrite")


# ====================================================================== CreateItem
def create_item(ctx: Context, req) -> list[str]:
    org = ctx.org
    mode = req.get("SendMeetingInvitations")
    items_elem = _child(req, "Items")
    children = list(items_elem) if items_elem is not None else []
    if mode is None and any(_local(c.tag) == "CalendarItem" for c in children):
        # "This attribute is required for calendar items."
        # https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/createitem
        return [soap.error("CreateItem", "ErrorSendMeetingInvitationsRequired",
                           "SendMeetingInvitations attribute is required for calendar items.") for _ in children]
    if mode is not None and mode not in SEND_INVITATIONS:
        raise SoapFault("ErrorSchemaValidation", f"Invalid SendMeetingInvitations value {mode!r}.")
    target = None
    saved = _child(req, "SavedItemFolderId")
    out = []
    for elem in children:
        try:
            if target is None:
                if saved is not None and len(saved):
                    mailbox, kind = _folder_ref(ctx, saved[0])
                    if kind != "calendar":
                        raise EwsError("ErrorInvalidOperation", "Calendar items can only be saved in a calendar folder.")
                else:
                    mailbox = _resolve_mailbox(ctx, None)
                target = mailbox
            if _local(elem.tag) != "CalendarItem":
                raise EwsError("ErrorInvalidItemForOperation",
                               f"{_local(elem.tag)} is not supported by this sandbox (calendar items only).")
            fields = parse_item_fields(ctx, elem)
            current: dict = {"is_all_day": False}
            _apply_times(ctx, fields, current)
            item = _new_item(ctx, target, current)
            org.mailboxes[target].items[item.id] = item
            if item.attendees and mode in ("SendOnlyToAll", "SendToAllAndSaveCopy"):
                item.meeting_request_was_sent = True
                org.deliver(item, [a.email for a in item.attendees], "request")
            out.append(soap.success(
                "CreateItem",
                f"<m:Items><t:CalendarItem><t:ItemId Id={soap.attr(item.id)} ChangeKey={soap.attr(item.changekey)}/>"
                f"</t:CalendarItem></m:Items>"))
        except EwsError as e:
            out.append(soap.error("CreateItem", e.code, e.text, e.message_xml, "<m:Items/>"))
    return out


def _new_item(ctx: Context, mailbox: str, f: dict) -> Item:
    org = ctx.org
    now = org.clock.now()
    mbx = org.mailboxes[mailbox]
    required, optional = f.get("required", []), f.get("optional", [])
    item = Item(
        id=org.new_item_id(mailbox),
        mailbox=mailbox,
        uid=f.get("uid") or org.new_uid(),
        subject=f.get("subject", ""),
        start=f["start"],
        end=f["end"],
        start_tz=f["start_tz"],
        end_tz=f["end_tz"],
        is_all_day=bool(f.get("is_all_day")),
        created=now,
        last_modified=now,
        changekey=org.new_changekey(),
        organizer_email=mailbox,
        organizer_name=mbx.name,
        my_response="Organizer",
        is_meeting=bool(required or optional),
        required=required,
        optional=optional,
    )
    for name in ("body", "body_type", "sensitivity", "importance", "categories", "reminder_is_set",
                 "reminder_minutes", "legacy_free_busy", "location", "is_response_requested",
                 "allow_new_time_proposal", "recurrence"):
        if name in f:
            setattr(item, name, f[name])
    return item


# ====================================================================== UpdateItem
_FIELD_NAMES = {
    "item:Subject": "subject", "item:Body": "body", "item:Sensitivity": "sensitivity", "item:Importance": "importance",
    "item:Categories": "categories", "item:ReminderIsSet": "reminder_is_set",
    "item:ReminderMinutesBeforeStart": "reminder_minutes", "calendar:Start": "start", "calendar:End": "end",
    "calendar:IsAllDayEvent": "is_all_day", "calendar:LegacyFreeBusyStatus": "legacy_free_busy",
    "calendar:Location": "location", "calendar:IsResponseRequested": "is_response_requested",
    "calendar:RequiredAttendees": "required", "calendar:OptionalAttendees": "optional",
    "calendar:Recurrence": "recurrence", "calendar:StartTimeZone": "start_tz", "calendar:EndTimeZone": "end_tz",
    "calendar:AllowNewTimeProposal": "allow_new_time_proposal", "calendar:UID": "uid",
}
_DELETE_DEFAULTS = {"body": None, "location": None, "categories": [], "required": [], "optional": [],
                    "recurrence": None, "reminder_is_set": False}
_SNAPSHOT = ("subject", "body", "body_type", "sensitivity", "importance", "categories", "reminder_is_set",
             "reminder_minutes", "start", "end", "start_tz", "end_tz", "is_all_day", "legacy_free_busy",
             "location", "is_response_requested", "allow_new_time_proposal", "required", "optional",
             "recurrence", "uid")
_OCCURRENCE_FIELDS = ("subject", "body", "body_type", "sensitivity", "location", "start", "end", "legacy_free_busy",
                      "start_tz", "end_tz", "is_all_day", "importance", "categories", "reminder_is_set",
                      "reminder_minutes", "is_response_requested", "allow_new_time_proposal", "required", "optional")
_READ_ONLY_URIS = {"calendar:Organizer", "calendar:MyResponseType", "calendar:IsMeeting", "calendar:CalendarItemType",
                   "item:LastModifiedTime", "item:DateTimeCreated", "calendar:RecurrenceId", "calendar:IsRecurring"}


def update_item(ctx: Context, req) -> list[str]:
    conflict = req.get("ConflictResolution", "AutoResolve")
    if conflict not in CONFLICT_MODES:
        raise SoapFault("ErrorSchemaValidation", f"Invalid ConflictResolution value {conflict!r}.")
    mode = req.get("SendMeetingInvitationsOrCancellations")
    if mode is not None and mode not in SEND_UPDATES:
        raise SoapFault("ErrorSchemaValidation", f"Invalid SendMeetingInvitationsOrCancellations value {mode!r}.")
    changes = _child(req, "ItemChanges")
    out = []
    for change in (changes if changes is not None else []):
        try:
            if mode is None:
                # "This attribute is required for calendar items and calendar item occurrences."
                # https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/updateitem
                raise EwsError("ErrorSendMeetingInvitationsRequired",
                               "SendMeetingInvitationsOrCancellations attribute is required for calendar items.")
            id_elem = next((c for c in change if _local(c.tag) in ("ItemId", "OccurrenceItemId", "RecurringMasterItemId")), None)
            if id_elem is None:
                raise EwsError("ErrorInvalidIdEmpty", "ItemId is missing.")
            target = _lookup(ctx, id_elem)
            sent_key = id_elem.get("ChangeKey")
            current_key = target.master.changekey if isinstance(target, Occurrence) else target.changekey
            # A stale ChangeKey only fails under NeverOverwrite; AutoResolve / AlwaysOverwrite let the write win.
            # https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/updateitem
            if sent_key and sent_key != current_key and conflict == "NeverOverwrite":
                raise EwsError("ErrorIrresolvableConflict", soap.text_for("ErrorIrresolvableConflict"))
            updates = _child(change, "Updates")
            fields: dict = {}
            deleted: set[str] = set()
            for upd in (updates if updates is not None else []):
                kind = _local(upd.tag)
                path = upd[0] if len(upd) else None
                if path is None or _local(path.tag) != "FieldURI":
                    if path is not None and _local(path.tag) == "ExtendedFieldURI":
                        continue  # extended properties are not stored
                    raise EwsError("ErrorInvalidPropertyRequest", "Only FieldURI updates are supported.")
                uri = path.get("FieldURI")
                if uri in _READ_ONLY_URIS:
                    raise EwsError("ErrorInvalidPropertySet", f"The property {uri} is read-only.",
                                   f'<t:FieldURI FieldURI={soap.attr(uri)}/>')
                name = _FIELD_NAMES.get(uri)
                if kind == "SetItemField":
                    value_elem = upd[1] if len(upd) > 1 else None
                    if value_elem is None or _local(value_elem.tag) != "CalendarItem":
                        raise EwsError("ErrorInvalidPropertySet", "SetItemField needs a CalendarItem value.")
                    fields.update(parse_item_fields(ctx, value_elem))
                elif kind == "DeleteItemField":
                    if name is None:
                        continue
                    if name not in _DELETE_DEFAULTS:
                        raise EwsError("ErrorInvalidPropertyDelete", f"The property {uri} can not be deleted.",
                                       f'<t:FieldURI FieldURI={soap.attr(uri)}/>')
                    deleted.add(name)
                else:
                    raise EwsError("ErrorInvalidPropertyAppend", f"{kind} is not supported for calendar items.")
            if isinstance(target, Occurrence):
                if "recurrence" in fields or "recurrence" in deleted:
                    raise EwsError("ErrorInvalidOperation",
                                   "The recurrence of an occurrence cannot be changed.")
                _update_occurrence(ctx, target, fields, deleted, mode)
                new_id, new_key = target.id, target.master.changekey
            else:
                _update_single(ctx, target, fields, deleted, mode)
                new_id, new_key = target.id, target.changekey
            out.append(soap.success(
                "UpdateItem",
                f"<m:Items><t:CalendarItem><t:ItemId Id={soap.attr(new_id)} ChangeKey={soap.attr(new_key)}/>"
                f"</t:CalendarItem></m:Items><m:ConflictResults><t:Count>0</t:Count></m:ConflictResults>"))
        except EwsError as e:
            out.append(soap.error("UpdateItem", e.code, e.text, e.message_xml, "<m:Items/>"))
    return out


def _update_single(ctx: Context, item: Item, fields: dict, deleted: set[str], mode: str) -> None:
    org = ctx.org
    current = {k: getattr(item, k) for k in _SNAPSHOT}
    before_attendees = [a.email for a in item.attendees]
    for name in deleted:
        current[name] = _DELETE_DEFAULTS[name]
    if "is_all_day" in fields and not fields["is_all_day"] and current["is_all_day"]:
        current["is_all_day"] = False
    _apply_times(ctx, fields, current)
    # Attendees keep their tracked responses when they stay on the meeting.
    for key in ("required", "optional"):
        if key in fields:
            old = {a.email: a for a in item.attendees}
            current[key] = [old.get(a.email, a) for a in current[key]]
    time_changed = current["start"] != item.start or current["end"] != item.end
    for k in _SNAPSHOT:
        setattr(item, k, current[k])
    item.is_meeting = bool(item.attendees) or not item.is_organizer_copy
    if time_changed and item.is_meeting:
        item.sequence += 1
    org.touch(item)
    if item.is_organizer_copy and item.is_meeting:
        _send_updates(org, item, before_attendees, mode)


def _send_updates(org: Org, item: Item, before: list[str], mode: str) -> None:
    """Meeting updates per SendMeetingInvitationsOrCancellations (MS-OXWSMTGS 2.2.5.3):
    https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxwsmtgs/89b9cac4-f7a8-45b2-99a7-886334cdb419
    ToAll: the update goes to every attendee; ToChanged: only to attendees added and/or removed by the update.
    Removed attendees get a cancellation."""
    if mode == "SendToNone":
        return
    after = [a.email for a in item.attendees]
    added = [e for e in after if e not in before]
    removed = [e for e in before if e not in after]
    org.deliver(item, added, "request")
    if mode in ("SendOnlyToAll", "SendToAllAndSaveCopy"):
        org.deliver(item, [e for e in after if e not in added], "update")
    org.deliver(item, removed, "cancellation")
    item.meeting_request_was_sent = item.meeting_request_was_sent or bool(after)


def _update_occurrence(ctx: Context, occ: Occurrence, fields: dict, deleted: set[str], mode: str) -> None:
    org = ctx.org
    master = occ.master
    current = {k: getattr(occ, k) for k in _OCCURRENCE_FIELDS}
    current["start"], current["end"] = occ.start, occ.end
    for name in deleted:
        current[name] = _DELETE_DEFAULTS.get(name)
    _apply_times(ctx, fields, current)
    overrides = master.modified_occurrences.setdefault(occ.original_start, {})
    for k in _OCCURRENCE_FIELDS:
        if current.get(k) != getattr(master, k, None) or k in ("start", "end"):
            overrides[k] = current[k]
    org.touch(master)
    if master.is_organizer_copy and master.is_meeting and mode != "SendToNone":
        recipients = [a.email for a in master.attendees]
        if mode in ("SendOnlyToAll", "SendToAllAndSaveCopy"):
            org.deliver(master, recipients, "update")


# ====================================================================== DeleteItem
# HardDelete: gone for good; SoftDelete: into the dumpster (no longer reachable by EWS item calls);
# MoveToDeletedItems: into the Deleted Items folder, out of the calendar (see store.Org.delete_item).
# https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/deleteitem-operation
# https://learn.microsoft.com/en-us/previous-versions/office/developer/exchange-server-2010/bb402085(v=exchg.140)
DELETE_TYPES = ("HardDelete", "SoftDelete", "MoveToDeletedItems")


def delete_item(ctx: Context, req) -> list[str]:
    org = ctx.org
    delete_type = req.get("DeleteType")
    if delete_type not in DELETE_TYPES:
        raise SoapFault("ErrorSchemaValidation", "The DeleteType attribute is required (HardDelete, SoftDelete, MoveToDeletedItems).")
    mode = req.get("SendMeetingCancellations")
    if mode is not None and mode not in SEND_INVITATIONS:
        raise SoapFault("ErrorSchemaValidation", f"Invalid SendMeetingCancellations value {mode!r}.")
    ids = _child(req, "ItemIds")
    out = []
    for ref in (ids if ids is not None else []):
        try:
            target = _lookup(ctx, ref)
            if mode is None:
                # https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/deleteitem
                raise EwsError("ErrorSendMeetingCancellationsRequired",
                               "SendMeetingCancellations attribute is required for calendar items.")
            sending = mode in ("SendOnlyToAll", "SendToAllAndSaveCopy")
            if isinstance(target, Occurrence):
                master = target.master
                master.deleted_occurrences.add(target.original_start)
                master.modified_occurrences.pop(target.original_start, None)
                org.touch(master)
                if sending and master.is_organizer_copy and master.is_meeting:
                    for a in master.attendees:
                        org.record_invitation(master, a.email, "cancellation")
                        copy_mbx = org.mailboxes.get(a.email)
                        for c in (copy_mbx.items.values() if copy_mbx else []):
                            if c.uid == master.uid and not c.is_organizer_copy:
                                c.deleted_occurrences.add(target.original_start)
                                org.touch(c)
            else:
                org.delete_item(target, delete_type)
                if sending and target.is_organizer_copy and target.is_meeting:
                    org.deliver(target, [a.email for a in target.attendees], "cancellation")
            out.append(soap.success("DeleteItem"))
        except EwsError as e:
            out.append(soap.error("DeleteItem", e.code, e.text, e.message_xml))
    return out


OPERATIONS: dict[str, Callable[[Context, object], list[str]]] = {
    "GetFolder": get_folder,
    "FindItem": find_item,
    "GetItem": get_item,
    "CreateItem": create_item,
    "UpdateItem": update_item,
    "DeleteItem": delete_item,
}
