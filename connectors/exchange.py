"""Exchange Web Services connector (exchangelib): mailbox calendars in, deltas out.

One service account with the ApplicationImpersonation role reaches every synced mailbox
(on-premises Exchange; Basic or NTLM, OAuth where configured). Version and auth type are pinned so
exchangelib never probes the server.

Glossary
--------
calendar view   EWS FindItem with a CalendarView: single items and *occurrences* of recurring series
                that overlap a range (an item ending exactly at the start is not returned).
ChangeKey       the item's change token; it is the ``version`` of an email event.
internal        an attendee with a mailbox in the same Exchange organisation: a meeting sent to them
                lands on their calendar. Everyone else is external (Contacts, Leads, customers).

Requests: the calendar view, GetItem and the bulk writes are built and parsed with lxml (``connectors.ews_soap``,
no exchangelib item objects) and sent through exchangelib's own services, so sessions, auth, retries and throttling
stay exchangelib's; the calendar is addressed as the distinguished folder ``calendar`` with the mailbox, so a sync
sends no GetFolder (``confirm`` asks for the calendar's id once per mailbox only when no view of that mailbox has
named it). ``connectors.ews_reference`` keeps the old object-model read as the reference the tests hold this to.

Reading (``read``, ``confirm``)
    One row of ``EVENT_SCHEMA`` per item overlapping the window (C1, checked again on the canonical
    values); ``confirm`` fetches paired items by id wherever they are in time. All-day items become
    midnight UTC of their dates in the item's own start time zone (for items the mailbox made, the
    mailbox's zone) with an exclusive end. An item that cannot be shaped is left out and reported in the
    read's ``problems`` (``(user_key, item_id, reason)``): such ids are *not* deletions and the caller
    must not treat them as gone.

Writing (``apply``)
    One ``OUTCOME_SCHEMA`` row per delta, always, in the order given. Per mailbox: deletes, updates,
    creates, each in batches of ``batch_size`` (one EWS request per batch and send mode).

    - Invitations (C20): EWS sends to all attendees or to none, so mixed meetings take a sequence
      (``plan_create``, ``plan_update``, ``plan_delete_send``): internal attendees (invitees with
      record_type ``user``, addresses in ``internal``, attendees the server resolved to a mailbox) get
      the meeting, updates and cancellations; external ones are written silently (SendToNone) unless
      the mailbox is in ``send_external``.
    - Updates read the item first (attendees, to plan invitations), then write only the synced fields
      that differ with ``ConflictResolution=NeverOverwrite`` and the planned ChangeKey, so an item
      edited since extract fails with ``changed_since_extract: ErrorIrresolvableConflict: ...`` (the
      next run re-plans it). Existing attendees keep their Attendee entries (responses); optional ones
      stay optional. Every per-item error stays on its own delta (see ``ews_soap._Raw``).
    - Deletes move the item to Deleted Items (recoverable); an item already gone counts as applied.
      DeleteItem has no conflict check, so a ChangeKey that moved since extract fails the delete
      (``changed_since_extract``) before it is sent.
    - Throttling: exchangelib's retry policy waits BackOffMilliseconds and retries, with the waits of
      one request bounded by ``max_wait_s`` in total (``BoundedRetry``). Past that (or on a dropped
      connection / 5xx) the connector stops calling Exchange: the deltas not yet written come back
      failed with ``retriable=True`` (nothing is lost; a replay writes them, using ``find_by_key`` for
      creates whose reply was lost).
    - HTTP 401 raises ``FatalError`` naming the service account; writes made before it are on the
      error's ``outcomes`` frame so they can still be recorded.

Counting (``api_calls``)
    Every connector has its own exchangelib ``Protocol`` (session pool) and counts the EWS SOAP
    requests it sends: see ``CallCounter`` and ``_CountingProtocol``.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import polars as pl
import requests
from exchangelib import (
    DELEGATE,
    IMPERSONATION,
    Account,
    Configuration,
    Credentials,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    Version,
)
from exchangelib import errors as ews
from exchangelib.items import (
    SEND_TO_ALL_AND_SAVE_COPY,
    SEND_TO_CHANGED_AND_SAVE_COPY,
    SEND_TO_NONE,
)
from exchangelib.properties import Attendee, HTMLBody, Mailbox
from exchangelib.protocol import CachingProtocol, FaultTolerance, Protocol
from exchangelib.transport import BASIC, NTLM, OAUTH2
from exchangelib.version import EXCHANGE_2016

from connectors import ews_soap, exchange_fastparse
from connectors.errors import FatalError, RetriableError, connection_problem
from connectors.mailbox import (  # noqa: F401 - shaping shared by every mailbox kind, re-exported
    ItemProblem,
    Ledger,
    MailboxRead,
    Problem,
    delta_emails,
    matches_key,
    normalise_subject,
    overlaps,
    rows_to_frame,
)

exchange_fastparse.install()

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM, "oauth2": OAUTH2}
ACCESS_TYPES = {"impersonation": IMPERSONATION, "delegate": DELEGATE}

# What extract asks for. FindItem cannot return body or attendees, so exchangelib follows up with
# GetItem in chunks; the time zone fields are needed because exchangelib turns all-day start/end into
# dates in them (without them it would silently use this machine's zone).
ITEM_FIELDS = (
    "subject",
    "start",
    "end",
    "is_all_day",
    "body",
    "text_body",
    "sensitivity",
    "organizer",
    "required_attendees",
    "optional_attendees",
    "last_modified_time",
    "uid",
    "type",
    "original_start",
    "recurrence_id",
    "parent_folder_id",
    "_start_timezone",
    "_end_timezone",
)
PAGE_SIZE = 500  # CalendarView MaxEntriesReturned; the view is paged by moving its start
BATCH_SIZE = 100  # items per CreateItem/UpdateItem/DeleteItem/GetItem request

RESPONSES = {"Accept": "accepted", "Decline": "declined", "Tentative": "tentative"}
PRIVATE_SENSITIVITIES = {"Private", "Confidential"}
# Per-item response codes that say "try again later", not "this item is wrong".
RETRIABLE_CODES = {
    "ErrorServerBusy",
    "ErrorTimeoutExpired",
    "ErrorInternalServerTransientError",
    "ErrorMailboxStoreUnavailable",
    "ErrorConnectionFailedTransientError",
    "ErrorMailboxMoveInProgress",
}
# Whole-request errors about the service account's right to reach a mailbox.
MAILBOX_ACCESS_CODES = {
    "ErrorImpersonateUserDenied",
    "ErrorImpersonationDenied",
    "ErrorImpersonationFailed",
    "ErrorNonExistentMailbox",
    "ErrorAccessDenied",
}


# --------------------------------------------------------------------------- pure shaping


def _aware_utc(value: dt.datetime) -> dt.datetime:
    """A plain ``datetime`` in UTC from an aware (EWS)datetime."""
    if value.tzinfo is None:
        raise ItemProblem("naive_datetime: a start or end without a time zone")
    plain = dt.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond,
        tzinfo=value.tzinfo,
    )
    return plain.astimezone(UTC)


def _midnight_utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def _as_date(value: Any, tz: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.astimezone(tz).date() if tz is not None else value.date()
    return dt.date(value.year, value.month, value.day)


def response_of(response_type: str | None) -> str:
    """EWS ResponseType -> the canonical response (accepted/declined/tentative/none)."""
    return RESPONSES.get(response_type or "", "none")


def _email(mailbox: Any) -> str | None:
    address = getattr(mailbox, "email_address", None)
    return address.strip().lower() if address else None


def attendee_email(attendee: Any) -> str | None:
    return _email(getattr(attendee, "mailbox", None))


def invitees_of(item: Any, organizer: str | None) -> list[dict]:
    """Required + optional attendees other than the organizer (first occurrence of an address wins)."""
    out: list[dict] = []
    seen: set[str] = set()
    for att in list(item.required_attendees or []) + list(item.optional_attendees or []):
        email = attendee_email(att)
        if email is not None and (email == organizer or email in seen):
            continue
        if email is not None:
            seen.add(email)
        out.append(
            {"email": email, "response": response_of(att.response_type), "record_id": None, "record_type": "none"}
        )
    return out


def text_of(item: Any) -> str:
    """The item's body as plain text, with line ends normalised and trailing whitespace dropped
    (Exchange appends a line break to bodies it stores; it must not count as an edit)."""
    text = getattr(item, "text_body", None)
    if text is None:
        body = item.body
        if body is None:
            text = ""
        elif isinstance(body, HTMLBody):
            text = re.sub(r"<[^>]+>", "", re.sub(r"(?i)<br\s*/?>|</p>", "\n", str(body)))
        else:
            text = str(body)
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def meeting_uid_of(item: Any) -> str | None:
    """The UID; an occurrence of a series gets ``uid/original-start`` so occurrences stay distinct."""
    uid = item.uid
    if not uid:
        return None
    if item.type in ("Occurrence", "Exception"):
        original = item.original_start or item.recurrence_id or item.start
        if isinstance(original, dt.datetime):
            return f"{uid}/{_aware_utc(original).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        if original is not None:
            return f"{uid}/{_as_date(original, None).isoformat()}"
    return uid


def item_to_row(item: Any, *, user_key: str, mailbox: str) -> dict:
    """One exchangelib ``CalendarItem`` -> one ``EVENT_SCHEMA`` row (a dict). Raises ``ItemProblem``."""
    if item.start is None:
        raise ItemProblem("no_start: the item has no start")
    if item.end is None:
        raise ItemProblem("no_end: the item has no end")
    if item.is_all_day:
        start_tz, end_tz = item._start_timezone, item._end_timezone or item._start_timezone
        if start_tz is None:
            raise ItemProblem("unknown_time_zone: an all-day item whose time zone Exchange names but we cannot map")
        # exchangelib hands all-day items back as dates in their zone with an INCLUSIVE end date
        # (it subtracts a day from EWS's exclusive end); the canonical frame wants the exclusive end.
        first = _as_date(item.start, start_tz)
        last = _as_date(item.end, end_tz)
        start, end = _midnight_utc(first), _midnight_utc(last + dt.timedelta(days=1))
    else:
        start, end = _aware_utc(item.start), _aware_utc(item.end)
    organizer = _email(item.organizer)
    return {
        "side": "email",
        "user_key": user_key.lower(),
        "native_id": item.id,
        "version": item.changekey,
        "subject": exchange_fastparse.restore_text(item.subject) or "",
        "start": start,
        "end": end,
        "is_all_day": bool(item.is_all_day),
        "description": exchange_fastparse.restore_text(text_of(item)),
        "is_private": item.sensitivity in PRIVATE_SENSITIVITIES,
        "organizer_email": organizer,
        "last_modified": _aware_utc(item.last_modified_time) if item.last_modified_time else None,
        "invitees": invitees_of(item, organizer),
        "is_child": False,
        "meeting_uid": meeting_uid_of(item),
        "mailbox": mailbox.lower(),
    }


# --------------------------------------------------------------------------- shaping the lxml path's items
# ``connectors.ews_soap`` reads a reply's items into ``RawItem`` (plain values, no exchangelib objects). These give
# the row ``item_to_row`` gives for exchangelib's object of the same item (tests/connectors/test_ews_soap.py checks
# it on recorded replies), with one difference: an all-day item whose EndTimeZone is missing or unknown takes its
# end date in its start zone (exchangelib used this machine's zone).


def _address(text: str | None) -> str | None:
    return text.strip().lower() if text else None


def raw_invitees(item: ews_soap.RawItem, organizer: str | None) -> list[dict]:
    """``invitees_of`` for a ``RawItem``."""
    out: list[dict] = []
    seen: set[str] = set()
    for person in item.required + item.optional:
        email = _address(person.email)
        if email is not None and (email == organizer or email in seen):
            continue
        if email is not None:
            seen.add(email)
        out.append({"email": email, "response": response_of(person.response), "record_id": None, "record_type": "none"})
    return out


def raw_text(item: ews_soap.RawItem) -> str:
    """``text_of`` for a ``RawItem``: TextBody when the reply has it, else the body (HTML stripped)."""
    text = item.text_body
    if text is None:
        if item.body is None:
            text = ""
        elif item.body_type == "HTML":
            text = re.sub(r"<[^>]+>", "", re.sub(r"(?i)<br\s*/?>|</p>", "\n", item.body))
        else:
            text = item.body
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def raw_to_row(item: ews_soap.RawItem, *, user_key: str, mailbox: str) -> dict:
    """One ``RawItem`` -> one ``EVENT_SCHEMA`` row (a dict), as ``item_to_row``. Raises ``ItemProblem``."""
    if item.start is None:
        raise ItemProblem("no_start: the item has no start")
    if item.end is None:
        raise ItemProblem("no_end: the item has no end")
    first: dt.date | None = None
    if item.is_all_day:
        start_zone = ews_soap.time_zone(item.start_tz)
        if start_zone is None:
            raise ItemProblem("unknown_time_zone: an all-day item whose time zone Exchange names but we cannot map")
        end_zone = (ews_soap.time_zone(item.end_tz) if item.end_tz != item.start_tz else start_zone) or start_zone
        # EWS's all-day end is the exclusive local midnight; the dates are those of the item's own zones.
        first = item.start.astimezone(start_zone).date()
        after = (item.end - dt.timedelta(days=1)).astimezone(end_zone).date() + dt.timedelta(days=1)
        start, end = _midnight_utc(first), _midnight_utc(after)
    else:
        start, end = item.start, item.end
    organizer = _address(item.organizer.email) if item.organizer is not None else None
    uid = item.uid
    if uid and item.type in ("Occurrence", "Exception"):
        original = item.original_start or item.recurrence_id
        if original is not None:
            uid = f"{uid}/{ews_soap.utc_text(original)}"
        elif first is not None:
            uid = f"{uid}/{first.isoformat()}"
        else:
            uid = f"{uid}/{ews_soap.utc_text(item.start)}"
    return {
        "side": "email",
        "user_key": user_key.lower(),
        "native_id": item.id,
        "version": item.changekey,
        "subject": exchange_fastparse.restore_text(item.subject) or "",
        "start": start,
        "end": end,
        "is_all_day": item.is_all_day,
        "description": exchange_fastparse.restore_text(raw_text(item)),
        "is_private": item.sensitivity in PRIVATE_SENSITIVITIES,
        "organizer_email": organizer,
        "last_modified": item.last_modified,
        "invitees": raw_invitees(item, organizer),
        "is_child": False,
        "meeting_uid": uid or None,
        "mailbox": mailbox.lower(),
    }


def ews_start_end(
    start: dt.datetime, end: dt.datetime, is_all_day: bool, tz: EWSTimeZone
) -> tuple[Any, Any]:
    """Canonical start/end -> what exchangelib writes. All-day: dates, and the END IS INCLUSIVE because
    exchangelib adds a day when it turns the end date into the midnight EWS wants. Timed: instants in
    the mailbox's zone (so the meeting carries the mailbox's time zone)."""
    if is_all_day:
        first = start.astimezone(UTC).date()
        last = end.astimezone(UTC).date() - dt.timedelta(days=1)
        if last < first:
            raise ValueError("end_before_start: an all-day event must end at least a day after it starts")
        return EWSDate.from_date(first), EWSDate.from_date(last)
    if end < start:
        raise ValueError("end_before_start: the event ends before it starts")
    return (
        EWSDateTime.from_datetime(start.astimezone(UTC)).astimezone(tz),
        EWSDateTime.from_datetime(end.astimezone(UTC)).astimezone(tz),
    )


def _attendee(email: str, existing: Mapping[str, Any]) -> Any:
    # Reuse the item's own Attendee (response kept); the server owns ResponseType anyway.
    return existing.get(email) or Attendee(mailbox=Mailbox(email_address=email), response_type="Unknown")


def attendee_lists(
    emails: Sequence[str], existing_required: Sequence[Any] = (), existing_optional: Sequence[Any] = ()
) -> tuple[list[Any], list[Any]]:
    """(required, optional) Attendee lists for ``emails``: existing optional attendees stay optional,
    existing attendees keep their objects (and so their responses), new ones are required."""
    req = {attendee_email(a): a for a in existing_required if attendee_email(a)}
    opt = {attendee_email(a): a for a in existing_optional if attendee_email(a)}
    required = [_attendee(e, req) for e in emails if e not in opt]
    optional = [opt[e] for e in emails if e in opt]
    return required, optional


def internal_emails(
    invitees: Iterable[Mapping[str, Any]] | None, internal: Iterable[str], item: Any = None
) -> set[str]:
    """Attendees with a mailbox in the organisation: synced Users (record_type user), addresses listed in
    ``internal``, and attendees the server itself resolved to a mailbox (MailboxType "Mailbox") on ``item``."""
    out = {e.lower() for e in internal}
    for inv in invitees or []:
        if inv.get("record_type") == "user" and inv.get("email"):
            out.add(inv["email"].strip().lower())
    if isinstance(item, ews_soap.RawItem):
        for person in item.required + item.optional:
            if person.mailbox_type == "Mailbox" and person.email and person.email.strip():
                out.add(person.email.strip().lower())
    elif item is not None:
        for att in list(item.required_attendees or []) + list(item.optional_attendees or []):
            if getattr(att.mailbox, "mailbox_type", None) == "Mailbox" and attendee_email(att):
                out.add(attendee_email(att))
    return out


@dataclass(frozen=True)
class Step:
    """One write of a planned sequence. ``attendees`` None = leave the attendee lists alone."""

    attendees: tuple[str, ...] | None
    content: bool  # write the synced content fields in this step
    send: str  # SendMeetingInvitations(OrCancellations)


def plan_create(emails: Sequence[str], internal: set[str], send_external: bool) -> list[Step]:
    """C20 on create. EWS sends to all attendees or to none, so when internal and external attendees
    are mixed (and externals may not be mailed): create with the internal ones only and send, then add
    the externals silently."""
    ints = tuple(e for e in emails if e in internal)
    exts = tuple(e for e in emails if e not in internal)
    if not emails:
        return [Step((), True, SEND_TO_NONE)]
    if send_external:
        return [Step(tuple(emails), True, SEND_TO_ALL_AND_SAVE_COPY)]
    if not ints:
        return [Step(tuple(emails), True, SEND_TO_NONE)]
    if not exts:
        return [Step(tuple(emails), True, SEND_TO_ALL_AND_SAVE_COPY)]
    return [Step(ints, True, SEND_TO_ALL_AND_SAVE_COPY), Step(tuple(emails), False, SEND_TO_NONE)]


def plan_update(
    current: Sequence[str],
    new: Sequence[str] | None,
    internal: set[str],
    send_external: bool,
    content_changed: bool,
) -> list[Step]:
    """C20 on update. Internal attendees must get the change (their calendar copies follow); external
    ones get nothing unless the user opted in. With both present: drop the externals silently, send the
    change to the internal ones, put the externals back silently."""
    target = list(current) if new is None else list(new)
    changed = new is not None and set(new) != set(current)
    attendees = tuple(target) if changed else None
    if send_external:
        if content_changed and target:
            return [Step(attendees, True, SEND_TO_ALL_AND_SAVE_COPY)]
        if changed:
            return [Step(attendees, True, SEND_TO_CHANGED_AND_SAVE_COPY)]
        return [Step(attendees, True, SEND_TO_NONE)]
    cur_int = [e for e in current if e in internal]
    cur_ext = [e for e in current if e not in internal]
    new_int = [e for e in target if e in internal]
    new_ext = [e for e in target if e not in internal]
    internal_changed = set(cur_int) != set(new_int)
    if not ((content_changed and new_int) or internal_changed):
        return [Step(attendees, True, SEND_TO_NONE)]
    steps: list[Step] = []
    if cur_ext:
        steps.append(Step(tuple(cur_int), False, SEND_TO_NONE))
    mode = SEND_TO_ALL_AND_SAVE_COPY if content_changed else SEND_TO_CHANGED_AND_SAVE_COPY
    steps.append(Step(tuple(new_int), True, mode))
    if new_ext:
        steps.append(Step(tuple(target), False, SEND_TO_NONE))
    return steps


def plan_delete_send(current: Sequence[str], internal: set[str], send_external: bool, is_organizer: bool) -> tuple[bool, str]:
    """(drop externals first?, SendMeetingCancellations) for deleting a meeting. Internal attendees get
    the cancellation so the meeting leaves their calendars; externals only when the user opted in."""
    if not is_organizer or not current:
        return False, SEND_TO_NONE
    ints = [e for e in current if e in internal]
    exts = [e for e in current if e not in internal]
    if send_external:
        return False, SEND_TO_ALL_AND_SAVE_COPY
    if not ints:
        return False, SEND_TO_NONE
    return bool(exts), SEND_TO_ALL_AND_SAVE_COPY


def error_text(exc: BaseException) -> str:
    """``ErrorCode: message`` for an exchangelib error (never carries credentials)."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def is_retriable(exc: BaseException) -> bool:
    if type(exc).__name__ in RETRIABLE_CODES:
        return True
    if isinstance(exc, (ews.RateLimitError, ews.ErrorServerBusy, ews.ErrorTimeoutExpired)):
        return True
    if isinstance(exc, (ews.ResponseMessageError, ews.UnauthorizedError, ews.CASError)):
        return False
    if isinstance(exc, ews.TransportError) and not isinstance(exc, (ews.SOAPError, ews.MalformedResponseError)):
        return True
    import requests  # only to classify connection errors

    return isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError))


# --------------------------------------------------------------------------- logs: no secret, no private detail

# At DEBUG, exchangelib logs every request and reply: its headers (the Authorization header carries the Basic
# credentials or the NTLM response) and its XML (subjects, bodies and attendees of every item). This filter,
# on the loggers that do so, redacts those headers always, and in the XML the subject ("Private"), body,
# location and attendees of every item not marked Normal or Personal in the same element -- as the snapshots
# keep private events (R9). An update's SetItemField carries no sensitivity, so it is redacted too.
_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "www-authenticate"}
_HEADER_TEXT = re.compile(
    r"""(?i)(['"]?(?:proxy-authorization|authorization|set-cookie|cookie|www-authenticate)['"]?\s*:\s*)"""
    r"""(?:'[^']*'|"[^"]*"|[^,}\r\n]*)""")
_ITEM_TAGS = {"CalendarItem", "MeetingRequest", "MeetingResponse", "MeetingCancellation", "Message", "Item"}
_SHOWN_SENSITIVITIES = {"Normal", "Personal"}
_TEXT_TAGS = {"Subject": "Private", "Body": "", "TextBody": "", "UniqueBody": "", "Location": "", "Preview": "",
              "DisplayTo": "", "DisplayCc": ""}
_ATTENDEE_TAGS = {"RequiredAttendees", "OptionalAttendees", "Resources"}
_TAG_TEXT = re.compile(
    r"(<(?:[\w.-]+:)?(Subject|Body|TextBody|UniqueBody|Location|Preview|DisplayTo|DisplayCc|RequiredAttendees|"
    r"OptionalAttendees|Resources)\b[^>]*>)(.*?)(</(?:[\w.-]+:)?\2>|$)", re.S)


def _local_name(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def redact_xml(data: Any) -> str:
    """EWS XML with the details of every item not marked Normal/Personal redacted (see above). XML that does
    not parse (a cut-off reply) has those elements redacted in every item."""
    from lxml import etree  # exchangelib's own parser

    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
    try:
        root = etree.fromstring(text.encode("utf-8"), etree.XMLParser(resolve_entities=False, no_network=True))
    except Exception:  # junk or cut off: redact by pattern, everything
        return _TAG_TEXT.sub(lambda m: m.group(1) + "[redacted]" + m.group(4), text)
    for item in root.iter():
        if _local_name(item.tag) not in _ITEM_TAGS:
            continue
        sensitivity = next((c.text for c in item if _local_name(c.tag) == "Sensitivity"), None)
        if sensitivity in _SHOWN_SENSITIVITIES:
            continue
        for child in item.iter():
            name = _local_name(child.tag)
            if name in _TEXT_TAGS:
                child.text = _TEXT_TAGS[name] or None
            elif name in _ATTENDEE_TAGS:
                for attendee in list(child):
                    child.remove(attendee)
                child.text = "[redacted]"
    return etree.tostring(root, encoding="unicode")


def redact_text(text: str) -> str:
    """A formatted log line: secret headers and the details of items in any XML in it redacted."""
    return _TAG_TEXT.sub(lambda m: m.group(1) + "[redacted]" + m.group(4),
                         _HEADER_TEXT.sub(lambda m: m.group(1) + "'[redacted]'", text))


def _redact_headers(headers: Any) -> Any:
    try:
        return {k: ("[redacted]" if str(k).lower() in _SECRET_HEADERS else v) for k, v in dict(headers).items()}
    except Exception:
        return redact_text(str(headers))


class RedactingFilter(logging.Filter):
    """Redacts exchangelib's request/reply dumps (see above); a record it cannot check is replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.args, Mapping):
                args = dict(record.args)
                for key in ("xml_request", "xml_response"):
                    if args.get(key) not in (None, "[STREAMING]"):
                        args[key] = redact_xml(args[key])
                for key in ("request_headers", "response_headers"):
                    if args.get(key) is not None:
                        args[key] = _redact_headers(args[key])
                record.args = args
                record.msg = redact_text(str(record.msg))
            else:
                record.msg, record.args = redact_text(record.getMessage()), None
        except Exception:  # never let an unchecked dump through
            record.msg, record.args = "[an exchangelib log record was dropped: it could not be redacted]", None
        return True


_REDACTING = RedactingFilter()
for _name in ("exchangelib.util", "exchangelib.util.xml", "exchangelib.transport", "exchangelib.protocol"):
    if not any(isinstance(f, RedactingFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_REDACTING)


# --------------------------------------------------------------------------- retry policy


class BoundedRetry(FaultTolerance):
    """exchangelib's fault tolerance (honours BackOffMilliseconds), with two changes:

    - HTTP 401 is a login failure, never "throttling" (plain FaultTolerance retries it for max_wait);
    - the waits for one request add up to at most ``max_wait`` seconds (plain FaultTolerance only
      bounds each single wait, so a server that keeps asking for short back-offs is retried forever).

    The policy is shared by every thread using the connector: a back-off the server asks for holds for all
    of them (exchangelib's ``back_off_until``, which is what throttling means), while each thread's request
    keeps its own tally of waits (a thread-local), so requests of other mailboxes never use up its patience.
    """

    def __init__(self, max_wait: float = 60) -> None:
        super().__init__(max_wait=max_wait)
        self._tally = threading.local()

    def __getstate__(self):  # exchangelib pickles nothing here, but FaultTolerance supports it: so do we
        state = super().__getstate__()
        state.pop("_tally", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._tally = threading.local()

    @property
    def _waited(self) -> float:
        return getattr(self._tally, "waited", 0.0)

    @_waited.setter
    def _waited(self, value: float) -> None:
        self._tally.waited = value

    def raise_response_errors(self, response):  # exchangelib's signature
        if response.status_code == 401:
            raise ews.UnauthorizedError(f"HTTP 401 from {response.url}")
        if response.status_code == 200:
            self._waited = 0.0
        return super().raise_response_errors(response)

    def back_off(self, seconds):
        seconds = self.DEFAULT_BACKOFF if seconds is None else seconds
        if self._waited + seconds > self.max_wait:
            self._waited = 0.0
            raise ews.RateLimitError("Exchange asked to back off longer than max_wait_s allows", wait=seconds)
        self._waited += seconds
        super().back_off(seconds)


# --------------------------------------------------------------------------- request counting


class CallCounter:
    """A requests response hook counting the EWS SOAP requests one connector sends.

    What counts: every HTTP POST to the EWS endpoint that got an HTTP response, whatever its status, so
    a request exchangelib retries after a throttling reply counts once per attempt. What does not: the
    extra legs of an NTLM handshake (requests_ntlm re-sends on the connection from inside its own hook,
    so the session hook sees only the final response of the POST), OAuth token requests (another URL),
    and a request whose connection dropped before any response came back. Thread-safe: exchangelib
    pools sessions and may send from several threads.
    """

    def __init__(self, endpoint: str) -> None:
        try:
            self.url = requests.Request("POST", endpoint).prepare().url  # as requests normalises it
        except requests.RequestException:
            self.url = endpoint  # not a URL: no request will reach it anyway (exchangelib reports that)
        self._lock = threading.Lock()
        self._count = 0
        self._last = threading.local()

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = response.request
        if request is not None and request.method == "POST" and request.url == self.url:
            with self._lock:
                self._count += 1
            # What the last reply on this thread was, for an error about a reply that is not EWS XML.
            self._last.reply = (response.status_code, response.headers.get("Content-Type"),
                                response.headers.get("Content-Length"))

    def last_reply(self) -> tuple[int, str | None, str | None] | None:
        """(HTTP status, Content-Type, Content-Length) of this thread's last EWS reply, if any."""
        return getattr(self._last, "reply", None)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


class _CountingProtocol(Protocol):
    """exchangelib's Protocol whose sessions (new, renewed or retired-and-replaced alike; all go through
    ``create_session``) carry the connector's ``CallCounter`` as a response hook."""

    def __init__(self, *args: Any, counter: CallCounter, **kwargs: Any) -> None:
        self.counter = counter
        super().__init__(*args, **kwargs)

    def decrease_poolsize(self):  # exchangelib's signature
        """One session fewer after ErrorServerBusy, as exchangelib does -- without its deadlock: exchangelib takes the
        session with ``get_session()`` while holding the pool lock, and when no session is idle and the pool is
        below its maximum, ``get_session`` grows the pool under that same lock (threads reading mailboxes at once
        under throttling hung there for good). Here only an idle session is retired; when every session is in use
        nothing is retired (the server's back-off still holds every thread, see ``BoundedRetry``)."""
        if self._session_pool_size <= 1:
            raise ews.SessionPoolMinSizeReached("Session pool size cannot be decreased further")
        with self._session_pool_lock:
            if self._session_pool_size <= 1:
                return
            try:
                session = self._session_pool.get(block=False)
            except queue.Empty:
                return
            self.close_session(session)
            self._session_pool_size -= 1

    def create_session(self):  # exchangelib's signature
        session = super().create_session()
        session.hooks["response"].append(self.counter)
        session.hooks["response"].append(exchange_fastparse.mark_own)  # control characters kept, see there
        return session


# exchangelib caches one Protocol (and so one session pool) per endpoint + credentials, and Account
# always asks that cache. A connector's counter must see its own requests only, so a Configuration that
# carries a counter (``_calsync_calls``) gets a cache key of its own; every other key is unchanged.
_OWNER = "_calsync_calls"


def _install_owned_protocols() -> None:
    """Make ``Protocol._cache_key`` tell connectors apart (idempotent)."""
    original = CachingProtocol.__dict__["_cache_key"].__func__
    if getattr(original, "_calsync_owned", False):
        return

    def _cache_key(config):
        key = original(config)
        owner = getattr(config, _OWNER, None)
        return key if owner is None else (*key, owner)

    _cache_key._calsync_owned = True  # type: ignore[attr-defined]
    CachingProtocol._cache_key = staticmethod(_cache_key)


_install_owned_protocols()


def _drop_protocol(config: Configuration) -> None:
    """Close and forget the cached Protocol of ``config`` (if any)."""
    try:
        protocol, _ = Protocol._protocol_cache.pop(Protocol._cache_key(config))
    except KeyError:
        return
    if not isinstance(protocol, Exception):
        protocol.close()


# --------------------------------------------------------------------------- connector


@dataclass
class _Pending:
    """A delta on its way through a write sequence (``existing_*``: the item's attendees as read, ``ews_soap.Person``)."""

    delta: dict
    steps: list[Step] = field(default_factory=list)
    item_id: str | None = None
    changekey: str | None = None
    existing_required: list = field(default_factory=list)
    existing_optional: list = field(default_factory=list)
    done: bool = False


def who_lists(emails: Sequence[str], existing_required: Sequence[ews_soap.Person] = (),
              existing_optional: Sequence[ews_soap.Person] = ()) -> tuple[list[ews_soap.Who], list[ews_soap.Who]]:
    """``attendee_lists`` for the lxml path: existing optional attendees stay optional, existing attendees are
    written back as the item has them (name, mailbox type, response), new ones are required."""
    req = {_address(p.email): p for p in existing_required if _address(p.email)}
    opt = {_address(p.email): p for p in existing_optional if _address(p.email)}
    required = [req[e].who() if e in req else ews_soap.Who(e) for e in emails if e not in opt]
    optional = [opt[e].who() for e in emails if e in opt]
    return required, optional


def _results(elements: list, expected: int) -> list:
    """(id, change key) per item element of a write's reply, or the item's exception; one per item sent."""
    if len(elements) != expected:
        raise ews.MalformedResponseError(f"Exchange answered {len(elements)} messages for {expected} items")
    out: list = []
    for elem in elements:
        if isinstance(elem, Exception) or elem is True:
            out.append(elem)
        else:
            item = ews_soap.parse_item(elem)
            out.append((item.id, item.changekey))
    return out


class ExchangeConnector:
    """The ``ews`` mailbox connector (``connectors.mailbox.MailboxConnector``): reads mailbox calendars into
    ``EVENT_SCHEMA`` frames and writes ``DELTA_SCHEMA`` rows back.

    ``time_zones`` maps a mailbox to its IANA time zone (default ``default_time_zone``); it decides the
    dates of all-day events written there and the zone new meetings carry.

    Threads: ``read``, ``confirm``, ``find_by_key`` and ``apply`` may run at once from several threads, each on
    its own mailboxes. A call keeps its state (problems, pending writes, the mailbox's ``Account``) to itself;
    what the connector shares is exchangelib's Protocol -- its session pool of ``max_connections`` sessions
    (exchangelib's default, 1, when None): a thread waits for a free session rather than opening one more --,
    the request counter and the calendar folder ids it has seen (both behind locks). ``extract`` is the
    single-threaded convenience that leaves its problems in ``last_problems``.
    """

    kind = "ews"

    def __init__(
        self,
        endpoint: str,
        username: str,
        password: str,
        *,
        auth_type: str = "basic",
        access_type: str = "impersonation",
        max_wait_s: float = 60,
        time_zones: Mapping[str, str] | None = None,
        default_time_zone: str = "UTC",
        batch_size: int = BATCH_SIZE,
        page_size: int = PAGE_SIZE,
        credentials: Any = None,
        max_connections: int | None = None,
    ) -> None:
        if auth_type not in AUTH_TYPES:
            raise FatalError(f"exchange auth_type {auth_type!r} is not one of {', '.join(AUTH_TYPES)}")
        if access_type not in ACCESS_TYPES:
            raise FatalError(f"exchange access_type {access_type!r} is not one of {', '.join(ACCESS_TYPES)}")
        self.endpoint = endpoint
        self.username = username
        self.max_wait_s = max_wait_s
        self.time_zones = {k.lower(): v for k, v in (time_zones or {}).items()}
        self.default_time_zone = default_time_zone
        self.batch_size = batch_size
        self.page_size = page_size
        self._access_type = ACCESS_TYPES[access_type]
        self._config = Configuration(
            service_endpoint=endpoint,
            credentials=credentials or Credentials(username=username, password=password),
            auth_type=AUTH_TYPES[auth_type],
            version=Version(build=EXCHANGE_2016),
            retry_policy=BoundedRetry(max_wait=max_wait_s),
            max_connections=max_connections,
        )
        self._calls = CallCounter(endpoint)
        setattr(self._config, _OWNER, self._calls)  # this connector's own Protocol (see _cache_key)
        # An unclosed connector still releases its Protocol and sessions when it is collected.
        weakref.finalize(self, _drop_protocol, self._config)
        self._lock = threading.Lock()
        self._calendar_ids: dict[str, str] = {}  # mailbox -> its calendar folder's id (stable), under _lock
        self.last_problems: list[tuple[str, str | None, str]] = []  # extract() only

    # ---------------------------------------------------------------- connection

    def _tz(self, mailbox: str) -> EWSTimeZone:
        return EWSTimeZone(self.time_zones.get(mailbox.lower(), self.default_time_zone))

    def account(self, mailbox: str) -> Account:
        """An exchangelib Account for ``mailbox`` (a new one per call: it is cheap, holds the mailbox's identity
        and zone, and no two calls share one; R15). Every Account of this connector uses its counting Protocol."""
        # Put this connector's counting Protocol in exchangelib's cache (a no-op when it is there
        # already) so that the Account below picks it up.
        _CountingProtocol(config=self._config, counter=self._calls)
        return Account(
            primary_smtp_address=mailbox,
            config=self._config,
            autodiscover=False,
            access_type=self._access_type,
            default_timezone=self._tz(mailbox),
        )

    def close(self) -> None:
        """Close this connector's HTTP sessions and forget exchangelib's cached protocol for them."""
        with self._lock:
            self._calendar_ids.clear()
        _drop_protocol(self._config)

    @property
    def service_url(self) -> str:
        """The EWS endpoint (the contract's optional ``service_url``)."""
        return self.endpoint

    @property
    def api_calls(self) -> int:
        """EWS SOAP requests this connector has sent so far (see ``CallCounter``); close() keeps it."""
        return self._calls.count

    def __enter__(self) -> "ExchangeConnector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _not_ews(self, exc: BaseException) -> str | None:
        """For a reply exchangelib could not read as EWS (an HTML page, cut-off XML, a 500 with no body: what
        a proxy, a sign-in page or a sick server answers), what came back; else None."""
        if not isinstance(exc, (ews.MalformedResponseError, ews.SOAPError)) and type(exc).__name__ not in (
                "XMLSyntaxError", "ParseError"):
            return None
        reply = self._calls.last_reply()
        if reply is None:
            return f"Exchange at {self.endpoint} answered with something that is not an EWS reply ({type(exc).__name__})"
        status, ctype, length = reply
        body = "no body" if length == "0" else (f"{length} bytes" if length else "a body")
        return (f"Exchange at {self.endpoint} answered HTTP {status} with {ctype or 'no content type'} ({body}),"
                f" not an EWS reply ({type(exc).__name__})")

    _JUNK_HINT = ("if it goes on, check that [exchange] endpoint is the EWS URL and that no proxy or sign-in page"
                  " answers in its place")

    def _connection_problem(self, exc: BaseException) -> FatalError | RetriableError | None:
        return connection_problem(exc, "Exchange", self.endpoint, "[exchange] endpoint")

    def _raise_fatal_or_retriable(self, exc: BaseException, mailbox: str) -> None:
        """Turn a whole-request failure into calsync's errors (never echoing the password)."""
        if (problem := self._connection_problem(exc)) is not None:
            problem.args = (f"{problem.args[0]} (reading mailbox {mailbox})",)
            raise problem from exc
        if (junk := self._not_ews(exc)) is not None:
            raise RetriableError(f"{junk} while reading mailbox {mailbox}: retry; {self._JUNK_HINT}") from exc
        if isinstance(exc, ews.UnauthorizedError):
            raise FatalError(
                f"Exchange at {self.endpoint} rejected the service account {self.username!r} (HTTP 401): "
                "check its credentials and its ApplicationImpersonation rights"
            ) from None
        code = type(exc).__name__
        if code in MAILBOX_ACCESS_CODES:
            raise FatalError(
                f"the service account {self.username!r} cannot open mailbox {mailbox} ({code}): check that the "
                "mailbox exists and that the account holds the ApplicationImpersonation role for it"
            ) from None
        if is_retriable(exc):
            raise RetriableError(f"Exchange at {self.endpoint} is unavailable for {mailbox}: {error_text(exc)}") from exc

    # ---------------------------------------------------------------- extract

    def read(self, user_key: str, mailbox: str, window_start: dt.datetime, window_end: dt.datetime,
             known: Mapping[str, str] | None = None) -> MailboxRead:
        """The mailbox's calendar view over the window (C1 overlap, checked on the canonical values).
        Items that cannot be read are left out and listed in ``problems``. With ``known`` (id -> ChangeKey),
        GetItem fetches only the items the view shows at another ChangeKey (incremental read)."""
        problems: list[Problem] = []
        unchanged: list[str] = []

        def rows() -> list[dict]:
            account = self.account(mailbox)
            # A day of slack either side: all-day items are judged on their dates (C1), not on the instants
            # the view compares, and the overlap is checked again on the canonical values.
            ids = self._view_ids(account, mailbox, window_start - dt.timedelta(days=1),
                                 window_end + dt.timedelta(days=1), problems, user_key)
            if known:
                unchanged.extend(i for i, ck in ids.items() if ck and known.get(i) == ck)
                ids = {i: ck for i, ck in ids.items() if not (ck and known.get(i) == ck)}
            found = self._rows(account, list(ids.items()), user_key, mailbox, problems)
            return [r for r in found if overlaps(r, window_start, window_end)]

        got = self._guarded(mailbox, rows, problems)
        got.unchanged = unchanged
        return got

    def confirm(self, user_key: str, mailbox: str, item_ids: Sequence[str]) -> MailboxRead:
        """The items among ``item_ids`` still in the mailbox's calendar, wherever they are in time. Not found,
        or moved out of the calendar (Deleted Items), is gone: no row."""
        ids = list(dict.fromkeys(item_ids))
        problems: list[Problem] = []
        return self._guarded(
            mailbox, lambda: self._confirm(self.account(mailbox), user_key, mailbox, ids, problems) if ids else [],
            problems)

    def _guarded(self, mailbox: str, rows: Callable[[], list[dict]], problems: list[Problem]) -> MailboxRead:
        """Run a read, turning a whole-request failure into calsync's errors; ``problems`` come back with the rows."""
        try:
            found = rows()
        except (FatalError, RetriableError):
            raise
        except Exception as exc:  # classified below
            self._raise_fatal_or_retriable(exc, mailbox)
            raise
        return MailboxRead(rows_to_frame(found), list(problems))

    def extract(
        self,
        mailboxes: Mapping[str, str],
        window_start: dt.datetime,
        window_end: dt.datetime,
        confirm_ids: Mapping[str, list[str]] | None = None,
    ) -> pl.DataFrame:
        """``read`` of every mailbox plus ``confirm`` of the ``confirm_ids`` the view did not return, as one
        frame (``mailboxes``: user_key -> address; ``confirm_ids``: user_key -> item ids). The problems of
        all of them are in ``self.last_problems`` (a convenience for one thread; ``read`` returns its own)."""
        frames: list[pl.DataFrame] = []
        problems: list[Problem] = []
        for user_key, mailbox in mailboxes.items():
            got = self.read(user_key, mailbox, window_start, window_end)
            seen = set(got.events["native_id"].to_list())
            more = self.confirm(user_key, mailbox, [i for i in (confirm_ids or {}).get(user_key, []) if i not in seen])
            frames += [got.events, more.events]
            problems += got.problems + more.problems
        self.last_problems = problems
        return pl.concat(frames) if frames else rows_to_frame([])

    def _view_ids(self, account: Account, mailbox: str, start: dt.datetime, end: dt.datetime,
                  problems: list[Problem], who: str = "") -> dict[str, str]:
        """Item id -> ChangeKey of everything the calendar view returns, page by page (FindItem, IdOnly + start).

        CalendarView has no offset: while a page says the view goes on (IncludesLastItemInRange false), ask again
        from the latest start seen.
        """
        ids: dict[str, str] = {}
        cursor = start.astimezone(UTC)
        while True:
            [reply] = ews_soap.send(ews_soap._FindItem, account,
                                    ews_soap.find_item_payload(mailbox, cursor, end, self.page_size))
            if isinstance(reply, Exception):
                raise reply  # a whole-view error (no such mailbox, access refused, ...): classified by the caller
            page = ews_soap.parse_view(reply)
            if page.calendar_id is not None:
                self._remember_calendar(mailbox, page.calendar_id)
            new = 0
            for item_id, changekey, _start in page.items:
                if item_id not in ids:
                    ids[item_id] = changekey
                    new += 1
            if page.includes_last or (page.includes_last is None and len(page.items) < self.page_size):
                return ids
            starts = [s for _, _, s in page.items if s is not None]
            latest = max(starts) if starts else None
            if latest is None or latest <= cursor or new == 0:
                # More items than a page share one instant: nothing more can be reached this way.
                problems.append((who or mailbox, None, f"view_truncated: more than {self.page_size} items at {cursor}"))
                return ids
            cursor = latest

    def _get(self, account: Account, ids: list[tuple[str, str | None]],
             uris: Sequence[str] = ews_soap.ITEM_URIS) -> list:
        """GetItem in batches: a ``RawItem`` or the item's exception per id, in order."""
        out: list = []
        for i in range(0, len(ids), self.batch_size):
            chunk = ids[i: i + self.batch_size]
            replies = ews_soap.send(ews_soap._GetItem, account, ews_soap.get_item_payload(chunk, uris))
            if len(replies) != len(chunk):
                raise ews.MalformedResponseError(f"Exchange answered {len(replies)} items for {len(chunk)} ids")
            out.extend(r if isinstance(r, Exception) else ews_soap.parse_item(r) for r in replies)
        return out

    def _rows(self, account: Account, ids: list[tuple[str, str | None]], user_key: str, mailbox: str,
              problems: list[Problem]) -> list[dict]:
        rows = (self._shape(item, user_key, mailbox, problems) for item in self._get(account, ids)) if ids else ()
        return [r for r in rows if r is not None]

    def _shape(self, item: Any, user_key: str, mailbox: str, problems: list[Problem]) -> dict | None:
        if isinstance(item, Exception):
            problems.append((user_key, None, f"unreadable: {error_text(item)}"))
            log.warning("skipped an unreadable item of %s: %s", user_key, error_text(item))
            return None
        if not item.is_calendar_item:
            return None
        try:
            return raw_to_row(item, user_key=user_key, mailbox=mailbox)
        except (ItemProblem, ValueError, TypeError, AttributeError) as exc:
            problems.append((user_key, item.id, str(exc)))
            log.warning("skipped item %s of %s: %s", item.id, user_key, exc)
            return None

    def _remember_calendar(self, mailbox: str, folder_id: str | None) -> None:
        if folder_id is None:
            return
        key = mailbox.lower()
        with self._lock:
            self._calendar_ids.setdefault(key, folder_id)

    def _calendar_id(self, account: Account, mailbox: str) -> str | None:
        """The mailbox's calendar folder id: as the view's items named it (no request), else one GetFolder."""
        key = mailbox.lower()
        with self._lock:
            known = self._calendar_ids.get(key)
        if known is not None:
            return known
        [reply] = ews_soap.send(ews_soap._GetFolder, account, ews_soap.get_calendar_folder_payload(mailbox))
        if isinstance(reply, Exception):
            raise reply
        folder = next((c for c in reply if c.tag == f"{ews_soap.T}FolderId"), None)
        folder_id = folder.get("Id") if folder is not None else None
        self._remember_calendar(mailbox, folder_id)
        return folder_id

    def _confirm(self, account: Account, user_key: str, mailbox: str, item_ids: list[str],
                 problems: list[Problem]) -> list[dict]:
        """Fetch paired items by id. Not found, or moved out of the calendar (Deleted Items), is gone."""
        rows: list[dict] = []
        results = self._get(account, [(i, None) for i in item_ids])
        calendar_id = None
        for item_id, item in zip(item_ids, results):
            if isinstance(item, ews.ErrorItemNotFound):
                continue
            if isinstance(item, Exception):
                problems.append((user_key, item_id, f"unconfirmed: {error_text(item)}"))
                continue
            if item.parent_folder_id is not None:
                calendar_id = calendar_id or self._calendar_id(account, mailbox)
                if calendar_id is not None and item.parent_folder_id != calendar_id:
                    continue  # soft-deleted: sitting in Deleted Items
            row = self._shape(item, user_key, mailbox, problems)
            if row is not None:
                rows.append(row)
        return rows

    # ---------------------------------------------------------------- find_by_key

    def find_by_key(
        self, mailbox: str, subject: str, start: dt.datetime, end: dt.datetime, is_all_day: bool
    ) -> list[str]:
        """Ids of items in ``mailbox`` with this key (C3): replay uses it so that a create which reached
        the server but was never recorded is not made twice."""
        try:
            account = self.account(mailbox)
            problems: list[Problem] = []
            ids = self._view_ids(account, mailbox, start - dt.timedelta(days=1), end + dt.timedelta(days=1), problems)
            rows = self._rows(account, list(ids.items()), mailbox, mailbox, problems)
            return [r["native_id"] for r in rows if matches_key(r, subject, start, end, is_all_day)]
        except (FatalError, RetriableError):
            raise
        except Exception as exc:
            self._raise_fatal_or_retriable(exc, mailbox)
            raise

    # ---------------------------------------------------------------- apply

    def apply(
        self,
        deltas: pl.DataFrame,
        internal: Iterable[str] = frozenset(),
        progress: Callable[[int, int], None] | None = None,
        *,
        send_external: Iterable[str] = frozenset(),
        directory_emails: Iterable[str] | None = None,
    ) -> pl.DataFrame:
        """Write ``deltas`` (``target_side == "email"``) and return exactly one outcome row per delta.

        ``internal``: addresses with a mailbox in this organisation (besides invitees of record_type
        user) — they receive the meeting (C20). ``send_external``: mailboxes whose user opted in to
        invitations for external attendees. ``directory_emails``: addresses Salesforce can represent;
        when given, attendees on an updated item outside it are kept (C11), otherwise the delta's
        invitees are the complete attendee list.
        """
        internal_set = {e.lower() for e in internal}
        opted_in = {m.lower() for m in send_external}
        directory = None if directory_emails is None else {e.lower() for e in directory_emails}
        ledger = Ledger(deltas)
        record, outcomes, total = ledger.record, ledger.outcomes, ledger.total
        stop: str | None = None  # set once Exchange stays unavailable: the rest fails retriable
        groups: dict[str, list[dict]] = {}
        for delta in ledger.writes():
            groups.setdefault(delta["mailbox"].lower(), []).append(delta)
        if progress and outcomes:
            progress(len(outcomes), total)

        for mailbox, group in groups.items():
            send_ext = mailbox in opted_in
            for op in ("delete", "update", "create"):
                todo = [d for d in group if d["op"] == op]
                for i in range(0, len(todo), self.batch_size):
                    batch = todo[i : i + self.batch_size]
                    if stop is None:
                        try:
                            account = self.account(mailbox)
                            writer = {"create": self._create, "update": self._update, "delete": self._delete}[op]
                            writer(account, mailbox, batch, internal_set, send_ext, directory, record)
                        except ews.UnauthorizedError as exc:
                            try:
                                self._raise_fatal_or_retriable(exc, mailbox)
                            except FatalError as fatal:
                                # Writes made before the failure must still be recorded: the frame
                                # rides on the error, the deltas not written are failed in it.
                                ledger.fail_rest(f"fatal: {fatal}")
                                fatal.outcomes = ledger.frame()  # type: ignore[attr-defined]
                                raise
                        except Exception as exc:  # whole-request failure, classified
                            problem = self._connection_problem(exc)
                            junk = self._not_ews(exc)
                            if isinstance(problem, FatalError):  # a certificate: nothing more can be written
                                ledger.fail_rest(f"fatal: {problem}")
                                problem.outcomes = ledger.frame()  # type: ignore[attr-defined]
                                raise problem from None
                            if problem is not None or junk is not None:
                                # The write may have reached Exchange: a replay looks before it creates.
                                stop = f"{problem or junk} while writing to {mailbox}; retry or replay the run"
                            elif type(exc).__name__ in MAILBOX_ACCESS_CODES:
                                ledger.fail_rest(f"mailbox_access: {error_text(exc)}", among=batch)
                            elif is_retriable(exc):
                                stop = (f"Exchange at {self.endpoint} is unavailable ({error_text(exc)}) while writing"
                                        f" to {mailbox}; retry or replay the run")
                            else:
                                ledger.fail_rest(error_text(exc), among=batch)
                    if stop is not None:
                        ledger.fail_rest(f"retriable: {stop}", retriable=True, among=batch)
                    if progress:
                        progress(len(outcomes), total)

        return ledger.frame()

    # ---------------------------------------------------------------- writers

    def _content(self, mailbox: str, delta: dict) -> ews_soap.Content:
        """The delta's synced content as EWS writes it in the mailbox's zone (raises ValueError on a bad payload)."""
        tz = self._tz(mailbox)
        is_all_day = bool(delta["is_all_day"])
        start, end = ews_start_end(delta["start"], delta["end"], is_all_day, tz)
        if is_all_day:  # local midnights, the end exclusive again (what exchangelib's date_to_datetime writes)
            start = EWSDateTime.combine(start, dt.time(0, 0)).replace(tzinfo=tz)
            end = EWSDateTime.combine(end, dt.time(0, 0)).replace(tzinfo=tz) + dt.timedelta(days=1)
        return ews_soap.Content(
            subject=delta.get("subject") or "",
            sensitivity="Private" if delta.get("is_private") else "Normal",
            body=delta.get("description") or "",
            start=start.ewsformat(),
            end=end.ewsformat(),
            is_all_day=is_all_day,
            tz_id=tz.ms_id,
        )

    def _send_writes(self, account: Account, service: type, payload_of: Callable[[list], Any], entries: list) -> list:
        """A bulk write in batches of ``batch_size``; one result per entry ((id, change key), True or an exception)."""
        out: list = []
        for i in range(0, len(entries), self.batch_size):
            chunk = entries[i: i + self.batch_size]
            out.extend(_results(ews_soap.send(service, account, payload_of(chunk)), len(chunk)))
        return out

    def _run_updates(self, account: Account, pending: list[_Pending], step_index: int,
                     contents: dict[str, tuple[ews_soap.Content, list[str]]],
                     on_error: Callable[[_Pending, BaseException], None]) -> None:
        """Run step ``step_index`` of every pending delta that has one, one UpdateItem per send mode."""
        by_mode: dict[str, list[tuple[_Pending, ews_soap.Change]]] = {}
        for p in pending:
            if p.done or step_index >= len(p.steps):
                continue
            step = p.steps[step_index]
            content, names = contents.get(p.delta["delta_id"], (None, [])) if step.content else (None, [])
            required = optional = None
            if step.attendees is not None:
                required, optional = who_lists(step.attendees, p.existing_required, p.existing_optional)
            if not names and required is None:
                continue
            change = ews_soap.Change(p.item_id, p.changekey, content, names, required, optional)
            by_mode.setdefault(step.send, []).append((p, change))
        for mode, entries in by_mode.items():
            results = self._send_writes(account, ews_soap._UpdateItem,
                                        lambda chunk, mode=mode: ews_soap.update_item_payload([c for _, c in chunk], mode),
                                        entries)
            for (p, _), result in zip(entries, results):
                if isinstance(result, Exception):
                    on_error(p, result)
                else:
                    p.item_id, p.changekey = result

    def _create(self, account, mailbox, batch, internal, send_ext, directory, record) -> None:
        pending: list[_Pending] = []
        contents: dict[str, tuple[ews_soap.Content, list[str]]] = {}
        by_mode: dict[str, list[tuple[_Pending, ews_soap.NewItem]]] = {}
        for delta in batch:
            try:
                content = self._content(mailbox, delta)
            except (ValueError, TypeError) as exc:
                record(delta, "failed", f"bad_payload: {exc}")  # never sent: it would fail the whole request
                continue
            emails = delta_emails(delta.get("invitees"), mailbox)
            p = _Pending(delta, plan_create(emails, internal_emails(delta.get("invitees"), internal), send_ext))
            contents[delta["delta_id"]] = (content, [])  # later steps only add attendees
            required, optional = who_lists(p.steps[0].attendees or ())
            by_mode.setdefault(p.steps[0].send, []).append((p, ews_soap.NewItem(content, required, optional)))
            pending.append(p)
        for mode, entries in by_mode.items():
            results = self._send_writes(
                account, ews_soap._CreateItem,
                lambda chunk, mode=mode: ews_soap.create_item_payload(mailbox, [n for _, n in chunk], mode), entries)
            for (p, _), result in zip(entries, results):
                if isinstance(result, Exception):
                    p.done = True
                    record(p.delta, "failed", error_text(result), retriable=is_retriable(result), new_id=None)
                else:
                    p.item_id, p.changekey = result
        created = [p for p in pending if not p.done]

        def partial(p: _Pending, exc: BaseException) -> None:
            # The meeting exists (and reached the internal attendees): record it as applied so it is
            # paired, never created twice; the next run sees the missing attendees and updates them.
            p.done = True
            record(p.delta, "applied", f"partial: external attendees not added: {error_text(exc)}",
                   new_id=p.item_id, new_version=p.changekey)

        try:
            self._run_updates(account, created, 1, contents, partial)
        except Exception as exc:
            for p in created:
                if not p.done:
                    partial(p, exc)
            raise
        for p in created:
            if not p.done:
                p.done = True
                record(p.delta, "applied", new_id=p.item_id, new_version=p.changekey)

    def _current(self, account: Account, batch: list[dict]) -> dict[str, Any]:
        """The items the batch targets, as the server has them now (id -> ``RawItem`` or exception)."""
        ids = [(d["target_id"], None) for d in batch if d.get("target_id")]
        if not ids:
            return {}
        results = self._get(account, ids, ews_soap.CURRENT_URIS)
        return {item_id: item for (item_id, _), item in zip(ids, results)}

    def _conflict(self, delta: dict, item: Any) -> str | None:
        planned = delta.get("target_version")
        if planned and item.changekey and planned != item.changekey:
            return "changed_since_extract: the item changed after it was read; the next run re-plans it"
        return None

    @staticmethod
    def _attendee_emails(item: ews_soap.RawItem, organizer: str | None) -> list[str]:
        emails = (_address(p.email) for p in item.required + item.optional)
        return list(dict.fromkeys(e for e in emails if e and e != organizer))

    def _update(self, account, mailbox, batch, internal, send_ext, directory, record) -> None:
        current = self._current(account, batch)
        pending: list[_Pending] = []
        contents: dict[str, tuple[ews_soap.Content, list[str]]] = {}
        for delta in batch:
            item = current.get(delta.get("target_id") or "")
            if item is None:
                record(delta, "failed", "no_target: the delta names no target item")
                continue
            if isinstance(item, Exception):
                record(delta, "failed", error_text(item), retriable=is_retriable(item))
                continue
            try:
                content = self._content(mailbox, delta)
            except (ValueError, TypeError) as exc:
                record(delta, "failed", f"bad_payload: {exc}")  # never sent: it would fail the whole request
                continue
            organizer = _address(item.organizer.email) if item.organizer is not None else None
            cur_emails = self._attendee_emails(item, organizer)
            changed_content = self._changed_content(item, delta, mailbox)
            if organizer not in (None, mailbox):
                # An attendee's copy of someone else's meeting: its attendees are the organizer's to send.
                new_emails = None
            elif delta.get("invitees") is None:
                new_emails = None
            else:
                new_emails = delta_emails(delta["invitees"], mailbox)
                if directory is not None:  # C11: keep attendees Salesforce cannot represent
                    new_emails += [e for e in cur_emails if e not in directory and e not in new_emails]
            ints = internal_emails(delta.get("invitees"), internal, item)
            if organizer not in (None, mailbox):
                steps = [Step(None, True, SEND_TO_NONE)]
            else:
                steps = plan_update(cur_emails, new_emails, ints, send_ext, bool(changed_content))
            # Write only the synced fields that differ (keeps Exchange's own bookkeeping quiet).
            contents[delta["delta_id"]] = (content, changed_content)
            p = _Pending(delta, steps, item_id=delta["target_id"], changekey=delta.get("target_version") or item.changekey,
                         existing_required=list(item.required), existing_optional=list(item.optional))
            if not changed_content and all(s.attendees is None for s in steps):
                # Nothing to write (C7) -- unless the item moved on since extract, which the write's
                # NeverOverwrite would otherwise have caught.
                if (reason := self._conflict(delta, item)) is not None:
                    record(delta, "failed", reason)
                else:
                    record(delta, "applied", new_version=item.changekey)
                continue
            pending.append(p)

        def failed(p: _Pending, exc: BaseException) -> None:
            p.done = True
            if isinstance(exc, ews.ErrorIrresolvableConflict):
                record(p.delta, "failed", f"changed_since_extract: {error_text(exc)}")
            else:
                record(p.delta, "failed", error_text(exc), retriable=is_retriable(exc))

        # A whole-request failure part-way leaves the unfinished deltas without an outcome: apply()
        # records them failed (retriable when Exchange was busy) and the next run re-plans them.
        for step_index in range(max((len(p.steps) for p in pending), default=0)):
            self._run_updates(account, pending, step_index, contents, failed)
        for p in pending:
            if not p.done:
                p.done = True
                record(p.delta, "applied", new_id=p.item_id, new_version=p.changekey)

    def _changed_content(self, item: ews_soap.RawItem, delta: dict, mailbox: str) -> list[str]:
        """Names of the synced content fields whose value differs from the item's (``ews_soap.Content`` names)."""
        all_fields = ["subject", "sensitivity", "body", "start", "end", "is_all_day"]
        try:
            row = raw_to_row(item, user_key=mailbox, mailbox=mailbox)
        except ItemProblem:
            return all_fields
        changed = []
        if row["subject"] != (delta.get("subject") or ""):
            changed.append("subject")
        if row["is_all_day"] != bool(delta["is_all_day"]):
            changed.append("is_all_day")
        if row["start"] != delta["start"].astimezone(UTC):
            changed.append("start")
        if row["end"] != delta["end"].astimezone(UTC):
            changed.append("end")
        if row["description"] != (delta.get("description") or "").replace("\r\n", "\n").rstrip():
            changed.append("body")
        if row["is_private"] != bool(delta.get("is_private")):
            changed.append("sensitivity")
        if {"start", "end", "is_all_day"} & set(changed):
            # The three travel together: an all-day item's dates are written from the flag.
            changed = [c for c in changed if c not in ("start", "end", "is_all_day")] + ["start", "end", "is_all_day"]
        return changed

    def _delete(self, account, mailbox, batch, internal, send_ext, directory, record) -> None:
        current = self._current(account, batch)
        by_mode: dict[str, list[_Pending]] = {}
        strip: list[_Pending] = []
        for delta in batch:
            item = current.get(delta.get("target_id") or "")
            if item is None:
                record(delta, "failed", "no_target: the delta names no target item")
                continue
            if isinstance(item, ews.ErrorItemNotFound):
                record(delta, "applied", "already_gone: ErrorItemNotFound")
                continue
            if isinstance(item, Exception):
                record(delta, "failed", error_text(item), retriable=is_retriable(item))
                continue
            if (reason := self._conflict(delta, item)) is not None:
                record(delta, "failed", reason)
                continue
            organizer = _address(item.organizer.email) if item.organizer is not None else None
            cur = [e for e in (_address(p.email) for p in item.required + item.optional) if e and e != organizer]
            ints = internal_emails(delta.get("invitees"), internal, item)
            drop_ext, mode = plan_delete_send(cur, ints, send_ext, organizer in (None, mailbox))
            p = _Pending(delta, item_id=delta["target_id"], changekey=item.changekey,
                         existing_required=list(item.required), existing_optional=list(item.optional))
            if drop_ext:
                p.steps = [Step(tuple(e for e in cur if e in ints), False, SEND_TO_NONE)]
                strip.append(p)
            by_mode.setdefault(mode, []).append(p)

        def failed(p: _Pending, exc: BaseException) -> None:
            p.done = True
            if isinstance(exc, ews.ErrorItemNotFound):
                record(p.delta, "applied", "already_gone: ErrorItemNotFound")
            elif isinstance(exc, ews.ErrorIrresolvableConflict):
                record(p.delta, "failed", f"changed_since_extract: {error_text(exc)}")
            else:
                record(p.delta, "failed", error_text(exc), retriable=is_retriable(exc))

        # External attendees are taken off silently first, so the cancellation reaches only the
        # internal ones (whose calendars hold a copy).
        self._run_updates(account, strip, 0, {}, failed)
        for mode, entries in by_mode.items():
            entries = [p for p in entries if not p.done]
            if not entries:
                continue
            results = self._send_writes(
                account, ews_soap._DeleteItem,
                lambda chunk, mode=mode: ews_soap.delete_item_payload([(p.item_id, p.changekey) for p in chunk], mode),
                entries)
            for p, result in zip(entries, results):
                if isinstance(result, Exception):
                    failed(p, result)
                else:
                    p.done = True
                    record(p.delta, "applied", new_id=p.item_id)
