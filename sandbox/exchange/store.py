"""In-memory Exchange organisation: mailboxes, calendar items, meeting delivery, invitations.

Everything here is guarded by one re-entrant lock (``Org.lock``). The SOAP layer (``service.py``)
turns requests into calls on this module; tests seed and inspect it directly through ``ex.org``.

Rules copied from Exchange:
- Items are kept with start/end as UTC instants plus the Windows ids of their start/end time zones;
  all-day items run from local midnight to local midnight (end exclusive) in their time zone.
- A meeting sent with SendToAllAndSaveCopy / SendOnlyToAll is delivered onto the calendars of the
  attendees that are mailboxes in this organisation (same UID, IsMeeting, organizer set,
  MyResponseType NoResponseReceived); external attendees only get the (recorded) invitation.
  https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/createitem-operation-calendar-item
- Hybrid: each mailbox has a ``kind``, "ews" (on premises, served by the EWS sandbox) or "graph" (Exchange
  Online, served by the Graph sandbox). Both servers share this one Org: meetings are delivered across with
  the same UID, and there is one invitation log, one clock, one fault injector.
- The server owns attendees' ResponseType: Unknown in the organizer's copy until the attendee
  responds; what a client sends is ignored.
- ChangeKey changes on every write; LastModifiedTime is stamped from the shared clock.
- DeleteItem's DeleteType: HardDelete removes the item for good; SoftDelete moves it to the dumpster
  (Recoverable Items > Deletions); MoveToDeletedItems moves it to the Deleted Items folder. A moved item
  gets a new ItemId (item ids change when an item changes folder: "By default, this
  value changes when the item is moved from one container (such as a folder or calendar) to another",
  https://learn.microsoft.com/en-us/graph/outlook-immutable-id), so the old id is ErrorItemNotFound.
  ``Org.immutable_ids = True`` keeps ids across the move instead (what Exchange Online does for clients
  that ask for immutable ids); the item then answers GetItem by its old id with the Deleted Items
  ParentFolderId. Deleting from Deleted Items with MoveToDeletedItems soft-deletes; deleting from the
  dumpster removes for good.
  https://learn.microsoft.com/en-us/previous-versions/office/developer/exchange-server-2010/bb402085(v=exchg.140)
"""

from __future__ import annotations

import base64
import itertools
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Iterator

from . import tz as tzmod

UTC = timezone.utc

RESPONSE_TYPES = ("Unknown", "Organizer", "Tentative", "Accept", "Decline", "NoResponseReceived")
SENSITIVITIES = ("Normal", "Personal", "Private", "Confidential")
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_RESPONSE_ALIASES = {
    "accept": "Accept",
    "accepted": "Accept",
    "decline": "Decline",
    "declined": "Decline",
    "tentative": "Tentative",
    "tentativelyaccepted": "Tentative",
    "none": "NoResponseReceived",
    "noresponsereceived": "NoResponseReceived",
    "unknown": "Unknown",
    "organizer": "Organizer",
}
MAILBOX_KINDS = ("ews", "graph")
# Expansion guard for series without an end (Exchange caps CalendarView spans similarly).
MAX_OCCURRENCES = 5000


class EwsError(Exception):
    """An EWS ResponseCode for one response message (ResponseClass="Error")."""

    def __init__(self, code: str, text: str, message_xml: str | None = None) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.message_xml = message_xml


class SoapFault(Exception):
    """An error Exchange answers with a whole-request SOAP fault (HTTP 500)."""

    def __init__(self, code: str, text: str, message_xml: str | None = None) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.message_xml = message_xml


def stored_body(body: str | None, body_type: str = "Text") -> str | None:
    """A body as the store keeps it. Exchange converts bodies to and from its stored formats (plain text, HTML,
    RTF), which do not keep whitespace: "Message stores that support Rich Text Format (RTF) ignore any changes to
    white space in the message text" (PidTagBody,
    https://learn.microsoft.com/en-us/office/client-developer/outlook/mapi/pidtagbody-canonical-property). The
    sandbox drops a Text body's trailing whitespace (line breaks included); an HTML body is kept as sent (its
    TextBody is derived with whitespace collapsed, ``service.text_body``)."""
    if body is None or body_type == "HTML":
        return body
    return body.rstrip()


def to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def fmt_dt(value: datetime) -> str:
    """xs:dateTime in UTC, whole seconds, as Exchange writes it: 2026-11-30T23:00:00Z."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(token: str) -> str | None:
    try:
        return base64.b64decode(token.encode("ascii"), validate=True).decode("utf-8")
    except Exception:  # any malformed id is simply unknown
        return None


def normalise_response(value: str) -> str:
    if value in RESPONSE_TYPES:
        return value
    alias = _RESPONSE_ALIASES.get(str(value).replace("_", "").replace(" ", "").lower())
    if alias is None:
        raise ValueError(f"unknown response {value!r}; expected one of {', '.join(RESPONSE_TYPES)}")
    return alias


@dataclass
class Attendee:
    email: str
    name: str = ""
    response: str = "Unknown"
    last_response_time: datetime | None = None
    mailbox_type: str = "OneOff"  # Mailbox for addresses of this organisation

    def to_json(self) -> dict:
        return {
            "email": self.email,
            "name": self.name,
            "response": self.response,
            "last_response_time": self.last_response_time.isoformat() if self.last_response_time else None,
        }


@dataclass
class Recurrence:
    pattern: str  # daily | weekly | absolute_monthly | absolute_yearly
    interval: int = 1
    weekdays: tuple[str, ...] = ()
    day_of_month: int | None = None
    month: int | None = None
    occurrences: int | None = None
    end_date: date | None = None
    first_day_of_week: str = "Sunday"

    def to_json(self) -> dict:
        return {
            "pattern": self.pattern,
            "interval": self.interval,
            "weekdays": list(self.weekdays),
            "day_of_month": self.day_of_month,
            "month": self.month,
            "occurrences": self.occurrences,
            "end_date": self.end_date.isoformat() if self.end_date else None,
        }

    @classmethod
    def from_dict(cls, spec: dict) -> "Recurrence":
        pattern = str(spec.get("pattern", "")).lower()
        if pattern not in ("daily", "weekly", "absolute_monthly", "monthly", "absolute_yearly", "yearly"):
            raise ValueError(f"unsupported recurrence pattern {spec.get('pattern')!r}")
        pattern = {"monthly": "absolute_monthly", "yearly": "absolute_yearly"}.get(pattern, pattern)
        weekdays = tuple(spec.get("weekdays") or ())
        for day in weekdays:
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r}")
        interval = int(spec.get("interval", 1))
        if interval < 1:
            raise ValueError("recurrence interval must be at least 1")
        end_date = spec.get("end_date")
        if isinstance(end_date, str):
            end_date = date.fromisoformat(end_date)
        occurrences = spec.get("occurrences")
        return cls(
            pattern=pattern,
            interval=interval,
            weekdays=weekdays,
            day_of_month=spec.get("day_of_month"),
            month=spec.get("month"),
            occurrences=int(occurrences) if occurrences is not None else None,
            end_date=end_date,
            first_day_of_week=spec.get("first_day_of_week", "Sunday"),
        )


@dataclass
class Item:
    id: str
    mailbox: str
    uid: str
    subject: str
    start: datetime
    end: datetime
    start_tz: str
    end_tz: str
    is_all_day: bool
    created: datetime
    last_modified: datetime
    changekey: str
    body: str | None = None
    body_type: str = "Text"
    sensitivity: str = "Normal"
    location: str | None = None
    importance: str = "Normal"
    categories: list[str] = field(default_factory=list)
    legacy_free_busy: str = "Busy"
    reminder_is_set: bool = True
    reminder_minutes: int = 15
    required: list[Attendee] = field(default_factory=list)
    optional: list[Attendee] = field(default_factory=list)
    organizer_email: str = ""
    organizer_name: str = ""
    my_response: str = "Organizer"
    is_meeting: bool = False
    meeting_request_was_sent: bool = False
    is_response_requested: bool = True
    allow_new_time_proposal: bool = True
    sequence: int = 0
    recurrence: Recurrence | None = None
    deleted_occurrences: set[datetime] = field(default_factory=set)
    # original start (UTC) -> overrides (subject/body/start/end/location/sensitivity) and own changekey
    modified_occurrences: dict[datetime, dict] = field(default_factory=dict)
    folder: str = "calendar"  # distinguished name of the folder holding it: calendar | deleteditems
    # Graph only: singleValueExtendedProperties (id as the client wrote it -> value) and the create's transactionId.
    extended_properties: dict[str, str] = field(default_factory=dict)
    transaction_id: str | None = None

    @property
    def is_organizer_copy(self) -> bool:
        return self.organizer_email.lower() == self.mailbox.lower()

    @property
    def attendees(self) -> list[Attendee]:
        return self.required + self.optional


@dataclass
class Occurrence:
    """One expanded occurrence (or exception) of a recurring master, as CalendarView shows it."""

    master: Item
    original_start: datetime
    index: int

    @property
    def id(self) -> str:
        return occurrence_id(self.master, self.original_start)

    def _override(self, name: str, default: Any) -> Any:
        return self.master.modified_occurrences.get(self.original_start, {}).get(name, default)

    @property
    def is_exception(self) -> bool:
        return self.original_start in self.master.modified_occurrences

    @property
    def start(self) -> datetime:
        return self._override("start", self.original_start)

    @property
    def end(self) -> datetime:
        return self._override("end", self.original_start + (self.master.end - self.master.start))

    def __getattr__(self, name: str) -> Any:
        # Everything else comes from the master unless the exception overrides it.
        if name in ("master", "original_start", "index"):
            raise AttributeError(name)
        master = object.__getattribute__(self, "master")
        mods = master.modified_occurrences.get(object.__getattribute__(self, "original_start"), {})
        if name in mods:
            return mods[name]
        return getattr(master, name)


def occurrence_id(master: Item, original_start: datetime) -> str:
    key = _unb64(master.id) or ""
    return _b64(f"OCC|{key}|{fmt_dt(original_start)}")


@dataclass
class Mailbox:
    email: str
    time_zone: str  # IANA (or whatever was given)
    ms_tz: str
    name: str
    password: str | None
    # Which server hosts it: "ews" (on premises, the EWS sandbox) or "graph" (Exchange Online, the Graph sandbox).
    # In a hybrid organisation both share one directory and deliver meetings to each other (same UID).
    kind: str = "ews"
    items: dict[str, Item] = field(default_factory=dict)  # the calendar folder
    deleted_items: dict[str, Item] = field(default_factory=dict)  # the Deleted Items folder
    recoverable_items: dict[str, Item] = field(default_factory=dict)  # Recoverable Items > Deletions (the dumpster)

    @property
    def folder_id(self) -> str:
        return _b64(f"FLD|{self.email}|calendar")

    @property
    def deleted_items_id(self) -> str:
        return _b64(f"FLD|{self.email}|deleteditems")

    def folder_id_of(self, kind: str) -> str:
        return _b64(f"FLD|{self.email}|{kind}")

    def folder_items(self, kind: str) -> dict[str, Item]:
        """The items of a folder this sandbox keeps items in (calendar, deleteditems); other folders are empty."""
        return {"calendar": self.items, "deleteditems": self.deleted_items,
                "recoverableitemsdeletions": self.recoverable_items}.get(kind, {})

    @property
    def root_id(self) -> str:
        return _b64(f"FLD|{self.email}|root")

    @property
    def msgroot_id(self) -> str:
        return _b64(f"FLD|{self.email}|msgfolderroot")


class Org:
    """The Exchange organisation: mailboxes, credentials, impersonation rights, items, sent invitations."""

    def __init__(self, clock, *, domain: str, service_account: tuple[str, str]) -> None:
        self.clock = clock
        self.domain = domain.lower()
        self.service_account = service_account
        self.lock = threading.RLock()
        self._seq = itertools.count(1)
        # False: an item moved to Deleted Items gets a new id (Exchange's default). True: ids survive the move.
        self.immutable_ids = False
        self.reset()

    # ------------------------------------------------------------------ admin / seeding
    def reset(self) -> None:
        """Forget every mailbox, item, invitation and count; keep only the service account (with the role)."""
        with self.lock:
            self.mailboxes: dict[str, Mailbox] = {}
            self.passwords: dict[str, str] = {self.service_account[0].lower(): self.service_account[1]}
            self.impersonators: set[str] = {self.service_account[0].lower()}
            self._invitations: list[dict] = []
            self.logons: list[dict] = []  # every authentication attempt that reached a verdict
            self._calls = 0
            self.calls_by_operation: dict[str, int] = {}

    def add_mailbox(self, email: str, time_zone: str = "UTC", password: str | None = None, name: str | None = None,
                    kind: str = "ews") -> Mailbox:
        """A mailbox of the organisation. ``kind`` says where it is hosted: "ews" (on premises, served by the
        EWS sandbox) or "graph" (Exchange Online, served by the Graph sandbox); each server refuses the other's."""
        email_l = email.strip().lower()
        if "@" not in email_l:
            raise ValueError(f"not an email address: {email!r}")
        if kind not in MAILBOX_KINDS:
            raise ValueError(f"mailbox kind must be one of {', '.join(MAILBOX_KINDS)}, not {kind!r}")
        with self.lock:
            if email_l in self.mailboxes:
                raise ValueError(f"mailbox {email_l} already exists")
            mbx = Mailbox(
                email=email_l,
                time_zone=time_zone,
                ms_tz=tzmod.ms_id_for(time_zone),
                name=name or email_l.split("@", 1)[0].replace(".", " ").title(),
                password=password,
                kind=kind,
            )
            self.mailboxes[email_l] = mbx
            if password is not None:
                self.passwords[email_l] = password
            return mbx

    def grant_impersonation(self, username: str) -> None:
        with self.lock:
            self.impersonators.add(username.lower())

    def revoke_impersonation(self, username: str) -> None:
        with self.lock:
            self.impersonators.discard(username.lower())

    def hosts(self, email: str | None, kind: str) -> bool:
        """Whether ``email`` is a mailbox of this organisation hosted by the ``kind`` server ("ews" | "graph")."""
        mbx = self.mailboxes.get((email or "").strip().lower())
        return mbx is not None and mbx.kind == kind

    def mailbox(self, email: str) -> Mailbox:
        mbx = self.mailboxes.get(email.strip().lower())
        if mbx is None:
            raise KeyError(f"no mailbox {email!r}")
        return mbx

    def count_call(self, operation: str) -> None:
        with self.lock:
            self._calls += 1
            self.calls_by_operation[operation] = self.calls_by_operation.get(operation, 0) + 1

    def record_logon(self, scheme: str, account: str | None, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.logons.append({"scheme": scheme, "account": account, "ok": ok, "detail": detail,
                                "at": self.clock.now().isoformat()})

    def calls(self) -> int:
        with self.lock:
            return self._calls

    def invitations(self) -> list[dict]:
        with self.lock:
            return [dict(i) for i in self._invitations]

    # ------------------------------------------------------------------ ids
    def new_item_id(self, mailbox: str) -> str:
        return _b64(f"ITM|{mailbox}|{next(self._seq):08d}{secrets.token_hex(6)}")

    def new_changekey(self) -> str:
        return base64.b64encode(b"\x10\x00\x00\x00" + next(self._seq).to_bytes(4, "big") + secrets.token_bytes(6)).decode()

    @staticmethod
    def new_uid() -> str:
        # Exchange UIDs are hex-encoded Global Object Ids: this fixed prefix and a random tail.
        return ("040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28)).upper()

    def decode_item_id(self, item_id: str) -> tuple[str, str, str | None] | None:
        """(kind, mailbox, original start iso | None) for an item or occurrence id; None if malformed."""
        raw = _unb64(item_id)
        if raw is None:
            return None
        parts = raw.split("|")
        if parts[0] == "ITM" and len(parts) == 3:
            return "item", parts[1], None
        if parts[0] == "OCC" and len(parts) == 5 and parts[1] == "ITM":
            return "occurrence", parts[2], parts[4]
        return None

    def master_id_of_occurrence(self, item_id: str) -> str | None:
        raw = _unb64(item_id)
        if raw is None:
            return None
        parts = raw.split("|")
        if parts[0] != "OCC" or len(parts) != 5:
            return None
        return _b64("|".join(parts[1:4]))

    def decode_folder_id(self, folder_id: str) -> tuple[str, str] | None:
        raw = _unb64(folder_id)
        if raw is None:
            return None
        parts = raw.split("|")
        if parts[0] == "FLD" and len(parts) == 3:
            return parts[1], parts[2]
        return None

    # ------------------------------------------------------------------ time helpers
    def all_day_bounds(self, start_day: date, end_day: date, ms_tz: str) -> tuple[datetime, datetime]:
        zone = tzmod.tzinfo_for(ms_tz)
        s = datetime.combine(start_day, time(0), tzinfo=zone).astimezone(UTC)
        e = datetime.combine(end_day, time(0), tzinfo=zone).astimezone(UTC)
        return s, e

    def snap_all_day(self, start: datetime, end: datetime, start_tz: str, end_tz: str) -> tuple[datetime, datetime]:
        """All-day items run midnight to midnight in their zone: truncate start, round end up."""
        sz, ez = tzmod.tzinfo_for(start_tz), tzmod.tzinfo_for(end_tz)
        ls = start.astimezone(sz)
        le = end.astimezone(ez)
        sd = ls.date()
        ed = le.date() if le.time() == time(0) else le.date() + timedelta(days=1)
        if ed <= sd:
            ed = sd + timedelta(days=1)
        return (
            datetime.combine(sd, time(0), tzinfo=sz).astimezone(UTC),
            datetime.combine(ed, time(0), tzinfo=ez).astimezone(UTC),
        )

    # ------------------------------------------------------------------ seeding (sends nothing)
    def add_item(
        self,
        mailbox: str,
        subject: str,
        start: datetime | date,
        end: datetime | date,
        *,
        is_all_day: bool = False,
        body: str | None = None,
        sensitivity: str = "Normal",
        required_attendees: Iterable = (),
        optional_attendees: Iterable = (),
        organizer: str | None = None,
        last_modified: datetime | None = None,
        recurrence: dict | None = None,
        time_zone: str | None = None,
        location: str | None = None,
        uid: str | None = None,
        my_response: str | None = None,
    ) -> str:
        """Put an item straight into a mailbox's calendar. Sends nothing, delivers nothing.

        Timed items take aware datetimes (naive = UTC). All-day items take dates (or datetimes whose date is
        used) with an exclusive end date, as Exchange stores them, in the mailbox's time zone unless
        ``time_zone`` (IANA or Windows id; an unknown id is kept, to seed bad data) says otherwise.
        Attendees are emails, (email, response) tuples or dicts {email, name, response}.
        """
        with self.lock:
            mbx = self.mailbox(mailbox)
            ms_tz = tzmod.ms_id_for(time_zone) if time_zone else mbx.ms_tz
            if sensitivity not in SENSITIVITIES:
                raise ValueError(f"sensitivity must be one of {SENSITIVITIES}")
            if is_all_day:
                sd = start.date() if isinstance(start, datetime) else start
                ed = end.date() if isinstance(end, datetime) else end
                if ed <= sd:
                    raise ValueError("all-day end date is exclusive and must be after the start date")
                s_utc, e_utc = self.all_day_bounds(sd, ed, ms_tz)
            else:
                if not isinstance(start, datetime) or not isinstance(end, datetime):
                    raise ValueError("timed items need datetimes")
                s_utc, e_utc = to_utc(start), to_utc(end)
                if e_utc < s_utc:
                    raise ValueError("end before start")
            now = self.clock.now()
            org_email = (organizer or mbx.email).lower()
            required = [self._seed_attendee(a) for a in required_attendees]
            optional = [self._seed_attendee(a) for a in optional_attendees]
            is_organizer = org_email == mbx.email
            item = Item(
                id=self.new_item_id(mbx.email),
                mailbox=mbx.email,
                uid=uid or self.new_uid(),
                subject=subject,
                start=s_utc,
                end=e_utc,
                start_tz=ms_tz,
                end_tz=ms_tz,
                is_all_day=is_all_day,
                created=now,
                last_modified=to_utc(last_modified) if last_modified else now,
                changekey=self.new_changekey(),
                body=stored_body(body),
                sensitivity=sensitivity,
                location=location,
                required=required,
                optional=optional,
                organizer_email=org_email,
                organizer_name=self._display_name(org_email),
                my_response=my_response or ("Organizer" if is_organizer else "NoResponseReceived"),
                is_meeting=bool(required or optional) or not is_organizer,
                recurrence=Recurrence.from_dict(recurrence) if recurrence else None,
            )
            mbx.items[item.id] = item
            return item.id

    def _seed_attendee(self, spec: Any) -> Attendee:
        if isinstance(spec, str):
            email, name, response = spec, "", "Unknown"
        elif isinstance(spec, dict):
            email, name, response = spec["email"], spec.get("name", ""), spec.get("response", "Unknown")
        else:
            email, response = spec[0], spec[1]
            name = ""
        return self.make_attendee(email, name, normalise_response(response))

    def make_attendee(self, email: str, name: str = "", response: str = "Unknown") -> Attendee:
        email_l = email.strip().lower()
        internal = email_l in self.mailboxes
        return Attendee(
            email=email_l,
            name=name or self._display_name(email_l),
            response=response,
            mailbox_type="Mailbox" if internal else "OneOff",
        )

    def _display_name(self, email: str) -> str:
        mbx = self.mailboxes.get(email.lower())
        if mbx is not None:
            return mbx.name
        return email

    # ------------------------------------------------------------------ reading
    def find_item(self, item_id: str) -> Item | Occurrence | None:
        """The item or occurrence an id names, or None (deleted or unknown)."""
        decoded = self.decode_item_id(item_id)
        if decoded is None:
            return None
        kind, mailbox, original = decoded
        mbx = self.mailboxes.get(mailbox)
        if mbx is None:
            return None
        if kind == "item":
            return mbx.items.get(item_id) or mbx.deleted_items.get(item_id) or mbx.recoverable_items.get(item_id)
        master = mbx.items.get(self.master_id_of_occurrence(item_id) or "")
        if master is None or master.recurrence is None:
            return None
        try:
            original_dt = datetime.strptime(original, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except (TypeError, ValueError):
            return None
        for occ in self.expand(master, until=original_dt + timedelta(seconds=1), include_deleted=False):
            if occ.original_start == original_dt:
                return occ
        return None

    def expand(self, master: Item, until: datetime, include_deleted: bool = False) -> Iterator[Occurrence]:
        """Occurrences of a series whose original start is before ``until`` (UTC), in order."""
        rec = master.recurrence
        if rec is None:
            return
        zone = tzmod.tzinfo_for(master.start_tz)
        local_start = master.start.astimezone(zone)
        first_day = local_start.date()
        wall = local_start.time().replace(tzinfo=None)
        count = 0
        for day in _pattern_days(rec, first_day):
            if rec.end_date is not None and day > rec.end_date:
                return
            if rec.occurrences is not None and count >= rec.occurrences:
                return
            if count >= MAX_OCCURRENCES:
                return
            original = datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)
            if original >= until:
                return
            count += 1
            if original in master.deleted_occurrences and not include_deleted:
                continue
            yield Occurrence(master=master, original_start=original, index=count)

    def calendar_view(self, mailbox: str, start: datetime, end: datetime) -> list[Item | Occurrence]:
        """Single items and occurrences overlapping [start, end): an item ending exactly at ``start`` or
        starting exactly at ``end`` is not included (CalendarView rules:
        https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/calendarview)."""
        mbx = self.mailbox(mailbox)
        out: list[Item | Occurrence] = []
        for item in mbx.items.values():
            if item.recurrence is None:
                if _overlaps(item.start, item.end, start, end):
                    out.append(item)
                continue
            span = item.end - item.start
            # An exception may have moved an occurrence: look a little beyond the range for originals.
            for occ in self.expand(item, until=end + span + timedelta(days=32)):
                if _overlaps(occ.start, occ.end, start, end):
                    out.append(occ)
        out.sort(key=lambda i: (i.start, i.end, i.id))
        return out

    # ------------------------------------------------------------------ responses (as an attendee would)
    def set_response(self, mailbox: str, item_id_or_uid: str, attendee_email: str, response: str) -> None:
        """The attendee answers the meeting: the organizer's copy records it (ResponseType, LastResponseTime)
        and the attendee's delivered copy, if any, shows it as MyResponseType."""
        response = normalise_response(response)
        if response not in ("Accept", "Decline", "Tentative"):
            raise ValueError("response must be Accept, Decline or Tentative")
        with self.lock:
            mbx = self.mailbox(mailbox)
            item = mbx.items.get(item_id_or_uid)
            if item is None:
                matches = [i for i in mbx.items.values() if i.uid == item_id_or_uid]
                if not matches:
                    raise KeyError(f"no item {item_id_or_uid!r} in {mailbox}")
                item = matches[0]
            email_l = attendee_email.lower()
            found = [a for a in item.attendees if a.email == email_l]
            if not found:
                raise KeyError(f"{attendee_email} is not an attendee of {item.subject!r}")
            now = self.clock.now()
            for att in found:
                att.response = response
                att.last_response_time = now
            self.touch(item)
            attendee_mbx = self.mailboxes.get(email_l)
            if attendee_mbx is not None:
                for copy in attendee_mbx.items.values():
                    if copy.uid == item.uid:
                        copy.my_response = response
                        self.touch(copy)

    def delete_item(self, item: Item, delete_type: str) -> None:
        """Remove a (non-occurrence) item from its folder as DeleteItem's DeleteType says."""
        mbx = self.mailboxes[item.mailbox]
        mbx.folder_items(item.folder).pop(item.id, None)
        if delete_type == "HardDelete" or item.folder == "recoverableitemsdeletions":
            return
        target = "deleteditems" if delete_type == "MoveToDeletedItems" and item.folder != "deleteditems" \
            else "recoverableitemsdeletions"
        if not self.immutable_ids:
            item.id = self.new_item_id(mbx.email)
        item.folder = target
        self.touch(item)
        mbx.folder_items(target)[item.id] = item

    def edit_item(self, item_id: str, *, subject: str | None = None, body: str | None = None,
                  location: str | None = None) -> str:
        """The mailbox's owner edits an item in Outlook: the fields given change and its change key moves; nothing
        is sent, nothing delivered. Returns the new change key. (Occurrences are not edited this way.)"""
        with self.lock:
            item = self.find_item(item_id)
            if not isinstance(item, Item) or item.folder != "calendar":
                raise KeyError(f"no calendar item {item_id!r}")
            if subject is not None:
                item.subject = subject
            if body is not None:
                item.body = body
            if location is not None:
                item.location = location
            self.touch(item)
            return item.changekey

    def touch(self, item: Item) -> None:
        item.changekey = self.new_changekey()
        item.last_modified = self.clock.now()

    # ------------------------------------------------------------------ meeting delivery
    def record_invitation(self, item: Item, recipient: str, kind: str, via: str = "ews") -> None:
        """Log one meeting message; ``via`` is the protocol that sent it ("ews" or "graph")."""
        self._invitations.append(
            {
                "organizer": item.organizer_email,
                "recipient": recipient,
                "meeting_uid": item.uid,
                "subject": item.subject,
                "kind": kind,
                "start": fmt_dt(item.start),
                "end": fmt_dt(item.end),
                "sent_at": self.clock.now().isoformat(),
                "internal": recipient in self.mailboxes,
                "via": via,
            }
        )

    def deliver(self, item: Item, recipients: Iterable[str], kind: str, via: str = "ews") -> None:
        """Send the meeting (request/update/cancellation) to ``recipients``: record each invitation;
        internal recipients (mailboxes of either kind: a hybrid organisation delivers across) get their
        calendar copy created, updated or removed."""
        for email in recipients:
            email_l = email.lower()
            if email_l == item.mailbox:
                continue
            self.record_invitation(item, email_l, kind, via)
            mbx = self.mailboxes.get(email_l)
            if mbx is None:
                continue
            copies = [c for c in mbx.items.values() if c.uid == item.uid and not c.is_organizer_copy]
            if kind == "cancellation":
                for c in copies:
                    del mbx.items[c.id]
                continue
            if copies:
                for c in copies:
                    self._copy_meeting_fields(item, c)
                    self.touch(c)
            else:
                now = self.clock.now()
                c = Item(
                    id=self.new_item_id(mbx.email),
                    mailbox=mbx.email,
                    uid=item.uid,
                    subject=item.subject,
                    start=item.start,
                    end=item.end,
                    start_tz=item.start_tz,
                    end_tz=item.end_tz,
                    is_all_day=item.is_all_day,
                    created=now,
                    last_modified=now,
                    changekey=self.new_changekey(),
                    organizer_email=item.organizer_email,
                    organizer_name=item.organizer_name,
                    my_response="NoResponseReceived",
                    is_meeting=True,
                )
                self._copy_meeting_fields(item, c)
                mbx.items[c.id] = c

    def _copy_meeting_fields(self, src: Item, dst: Item) -> None:
        for name in ("subject", "body", "body_type", "sensitivity", "location", "start", "end", "start_tz",
                     "end_tz", "is_all_day", "legacy_free_busy", "is_response_requested", "sequence"):
            setattr(dst, name, getattr(src, name))
        # The attendee's copy lists the attendees, without the organizer's tracking information.
        dst.required = [Attendee(a.email, a.name, "Unknown", None, a.mailbox_type) for a in src.required]
        dst.optional = [Attendee(a.email, a.name, "Unknown", None, a.mailbox_type) for a in src.optional]
        dst.recurrence = src.recurrence
        dst.deleted_occurrences = set(src.deleted_occurrences)
        dst.modified_occurrences = {k: dict(v) for k, v in src.modified_occurrences.items()}

    # ------------------------------------------------------------------ inspection
    def items(self, mailbox: str, folder: str = "calendar") -> list[dict]:
        """A folder's items as JSON: ``calendar`` (default), ``deleteditems`` or ``recoverableitemsdeletions``."""
        with self.lock:
            mbx = self.mailbox(mailbox)
            source = mbx.folder_items(folder)
            return [item_to_json(i) for i in sorted(source.values(), key=lambda i: (i.start, i.id))]

    def dump(self) -> dict:
        with self.lock:
            return {
                "domain": self.domain,
                "service_account": self.service_account[0],
                "impersonators": sorted(self.impersonators),
                "calls": self._calls,
                "calls_by_operation": dict(self.calls_by_operation),
                "mailboxes": {
                    m.email: {
                        "kind": m.kind,
                        "time_zone": m.time_zone,
                        "windows_time_zone": m.ms_tz,
                        "has_password": m.password is not None,
                        "items": [item_to_json(i) for i in sorted(m.items.values(), key=lambda i: (i.start, i.id))],
                        "deleted_items": [item_to_json(i) for i in
                                          sorted(m.deleted_items.values(), key=lambda i: (i.start, i.id))],
                        "recoverable_items": [item_to_json(i) for i in
                                              sorted(m.recoverable_items.values(), key=lambda i: (i.start, i.id))],
                    }
                    for m in self.mailboxes.values()
                },
                "invitations": [dict(i) for i in self._invitations],
            }


def item_to_json(item: Item) -> dict:
    return {
        "id": item.id,
        "changekey": item.changekey,
        "mailbox": item.mailbox,
        "folder": item.folder,
        "uid": item.uid,
        "subject": item.subject,
        "start": fmt_dt(item.start),
        "end": fmt_dt(item.end),
        "start_time_zone": item.start_tz,
        "end_time_zone": item.end_tz,
        "is_all_day": item.is_all_day,
        "body": item.body,
        "sensitivity": item.sensitivity,
        "location": item.location,
        "organizer": item.organizer_email,
        "is_meeting": item.is_meeting,
        "my_response": item.my_response,
        "required_attendees": [a.to_json() for a in item.required],
        "optional_attendees": [a.to_json() for a in item.optional],
        "last_modified": fmt_dt(item.last_modified),
        "created": fmt_dt(item.created),
        "recurrence": item.recurrence.to_json() if item.recurrence else None,
        "deleted_occurrences": sorted(fmt_dt(d) for d in item.deleted_occurrences),
        "modified_occurrences": sorted(fmt_dt(d) for d in item.modified_occurrences),
        "extended_properties": dict(item.extended_properties),  # Graph singleValueExtendedProperties
    }


def _overlaps(s: datetime, e: datetime, view_start: datetime, view_end: datetime) -> bool:
    if s == e:  # a zero-length item shows when it lies inside the range
        return view_start <= s < view_end
    return s < view_end and e > view_start


def _pattern_days(rec: Recurrence, first_day: date) -> Iterator[date]:
    """Candidate dates of a pattern, from the series start on (the start itself only if it fits)."""
    if rec.pattern == "daily":
        d = first_day
        while True:
            yield d
            d += timedelta(days=rec.interval)
    elif rec.pattern == "weekly":
        wanted = {WEEKDAYS.index(w) for w in (rec.weekdays or (WEEKDAYS[(first_day.weekday() + 1) % 7],))}
        fdow = WEEKDAYS.index(rec.first_day_of_week)
        # start of the week containing first_day (python: Monday=0; EWS list: Sunday=0)
        dow = (first_day.weekday() + 1) % 7
        week_start = first_day - timedelta(days=(dow - fdow) % 7)
        while True:
            for k in range(7):
                d = week_start + timedelta(days=k)
                if d >= first_day and (d.weekday() + 1) % 7 in wanted:
                    yield d
            week_start += timedelta(weeks=rec.interval)
    elif rec.pattern == "absolute_monthly":
        dom = rec.day_of_month or first_day.day
        y, m = first_day.year, first_day.month
        while True:
            try:
                d = date(y, m, dom)
            except ValueError:
                d = None  # months without that day are skipped
            if d is not None and d >= first_day:
                yield d
            m += rec.interval
            y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
    elif rec.pattern == "absolute_yearly":
        dom = rec.day_of_month or first_day.day
        month = rec.month or first_day.month
        y = first_day.year
        while True:
            try:
                d = date(y, month, dom)
            except ValueError:
                d = None
            if d is not None and d >= first_day:
                yield d
            y += rec.interval
