"""Graph v1.0 calendar operations on the shared Exchange store: one request in, (status, headers, body) out.

Used for top-level requests and for every sub-request of a JSON $batch alike. Reference pages next to each rule:
- calendarView: https://learn.microsoft.com/en-us/graph/api/user-list-calendarview?view=graph-rest-1.0
- get/create/update/delete event: https://learn.microsoft.com/en-us/graph/api/event-get?view=graph-rest-1.0,
  https://learn.microsoft.com/en-us/graph/api/user-post-events?view=graph-rest-1.0,
  https://learn.microsoft.com/en-us/graph/api/event-update?view=graph-rest-1.0,
  https://learn.microsoft.com/en-us/graph/api/event-delete?view=graph-rest-1.0
- error body {"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}:
  https://learn.microsoft.com/en-us/graph/errors
- paging (@odata.nextLink, Prefer: odata.maxpagesize): https://learn.microsoft.com/en-us/graph/paging
- Prefer: outlook.timezone / outlook.body-content-type and Preference-Applied: the calendarView page above.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote, urlencode

from ..exchange.store import Item, Occurrence, Org, to_utc
from . import events as ev
from .events import GraphError

UTC = timezone.utc
DEFAULT_PAGE = 10  # believed: Outlook resources page by 10 when the client does not say
MAX_PAGE = 1000  # believed: the largest page Outlook serves ($top / odata.maxpagesize)
JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


@dataclass
class Request:
    method: str
    path: str  # below /v1.0, e.g. /users/ann@example.com/calendarView
    query: dict[str, str]  # keys as sent
    headers: dict[str, str]  # lower-case names
    body: Any = None  # parsed JSON (or None)
    prefer: list[str] = field(default_factory=list)  # every Prefer value, split


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    operation: str = "(unknown)"
    mailbox: str | None = None


def error_body(code: str, message: str, request_id: str, client_request_id: str | None, now: datetime) -> dict:
    # https://learn.microsoft.com/en-us/graph/errors ("Error resource type")
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": now.strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
                                     "client-request-id": client_request_id or request_id}}}


# ====================================================================== Prefer
_PREFER_ITEM = re.compile(r'\s*([A-Za-z0-9_.\-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,;]*))?\s*(?:,|$)')


def split_prefer(values: list[str]) -> dict[str, str]:
    """Preferences from one or more Prefer headers, each possibly a comma-separated list (RFC 7240)."""
    out: dict[str, str] = {}
    for value in values:
        for m in _PREFER_ITEM.finditer(value or ""):
            if not m.group(1):
                continue
            raw = (m.group(2) or "").strip()
            if raw.startswith('"') and raw.endswith('"'):
                raw = raw[1:-1]
            out.setdefault(m.group(1).lower(), raw)
    return out


class Service:
    """The operations. ``app`` is the GraphSandbox (org, identity, urls)."""

    def __init__(self, app) -> None:
        self.app = app

    @property
    def org(self) -> Org:
        return self.app.org

    # ------------------------------------------------------------------ routing
    def route(self, req: Request) -> tuple[str, str | None, str | None]:
        """(operation, user reference, event id) for a path below /v1.0, or GraphError."""
        segs = [unquote(s) for s in req.path.strip("/").split("/") if s != ""]
        low = [s.lower() for s in segs]
        if len(segs) >= 2 and low[0] == "users":
            user, rest = segs[1], low[2:]
            raw_rest = segs[2:]
            if rest and rest[0] == "calendar":
                rest, raw_rest = rest[1:], raw_rest[1:]
                if not rest:
                    raise GraphError(400, "BadRequest", "The calendar resource itself is not modelled by this "
                                                        "sandbox; use calendar/calendarView or calendar/events.")
            if not rest:
                if req.method == "GET":
                    return "getUser", user, None
            elif rest == ["calendarview"] and req.method == "GET":
                return "calendarView", user, None
            elif rest == ["events"]:
                if req.method == "POST":
                    return "createEvent", user, None
                if req.method == "GET":
                    return "listEvents", user, None
            elif len(rest) == 2 and rest[0] == "events":
                op = {"GET": "getEvent", "PATCH": "updateEvent", "DELETE": "deleteEvent"}.get(req.method)
                if op:
                    return op, user, raw_rest[1]
            else:
                raise GraphError(400, "BadRequest", f"Resource not found for the segment '{raw_rest[-1]}'.")
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
        if segs and low[0] == "me":
            # App-only tokens have no signed-in user (believed wording).
            raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        raise GraphError(400, "BadRequest",
                         f"Resource not found for the segment '{segs[0] if segs else ''}'.")  # believed wording

    def resolve_user(self, ref: str, operation: str) -> str:
        """The mailbox a /users/{id | userPrincipalName} segment names, with the directory and mailbox checks."""
        org = self.org
        email = self.app.user_email(ref)
        if email is None:
            # https://learn.microsoft.com/en-us/graph/api/user-get?view=graph-rest-1.0 (believed wording)
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{ref}' is invalid.")
        if operation == "getUser":
            return email
        scope = self.app.mailbox_scope
        if scope is not None and email not in scope:
            # RBAC for Applications / application access policy refusal, as the service words it
            # (https://learn.microsoft.com/en-us/graph/auth-limit-mailbox-access;
            # text as seen in https://github.com/microsoftgraph/microsoft-graph-docs/pull/21382).
            raise GraphError(403, "ErrorAccessDenied",
                             "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
                             "AccessPolicy settings.")
        if not org.hosts(email, "graph"):
            # An on-premises (EWS-kind) mailbox of a hybrid organisation
            # (https://github.com/microsoft/MicrosoftCloud/issues/41; https://learn.microsoft.com/en-us/graph/hybrid-rest-support)
            raise GraphError(404, "MailboxNotEnabledForRESTAPI",
                             "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
        return email

    # ------------------------------------------------------------------ views
    def view(self, req: Request, applied: list[str]) -> ev.View:
        prefs = split_prefer(req.prefer)
        zone, label = ev.UTC, "UTC"
        if "outlook.timezone" in prefs:
            wanted = prefs["outlook.timezone"]
            found = ev.zone_for(wanted)
            if found is not None:  # an unknown zone falls back to UTC without Preference-Applied (believed)
                zone, label = found, wanted
                applied.append(f'outlook.timezone="{wanted}"')
        body_type = "html"
        if "outlook.body-content-type" in prefs:
            wanted = prefs["outlook.body-content-type"].lower()
            if wanted in ("text", "html"):
                body_type = wanted
                applied.append(f'outlook.body-content-type="{wanted}"')
        select = ev.parse_select(self._q(req, "$select"))
        expand = ev.parse_expand(self._q(req, "$expand"))
        return ev.View(zone, label, body_type, select, expand)

    @staticmethod
    def _q(req: Request, name: str) -> str | None:
        for k, v in req.query.items():
            if k.lower() == name.lower():
                return v
        return None

    def _json(self, status: int, body: Any, applied: list[str], op: str, mailbox: str | None,
              extra: dict | None = None) -> Response:
        headers = {"Content-Type": JSON_TYPE, "OData-Version": "4.0"}
        if applied:
            headers["Preference-Applied"] = ", ".join(applied)
        headers.update(extra or {})
        return Response(status, body, headers, op, mailbox)

    def context(self, mailbox: str, tail: str) -> str:
        return f"{self.app.graph_url}/$metadata#users('{quote(mailbox)}')/{tail}"

    # ------------------------------------------------------------------ lookup
    def find(self, mailbox: str, graph_id: str) -> Item | Occurrence:
        sid = ev.store_id(graph_id)
        decoded = self.org.decode_item_id(sid)
        if decoded is None:
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        found = self.org.find_item(sid)
        if found is None or (found.master.mailbox if isinstance(found, Occurrence) else found.mailbox) != mailbox:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return found

    # ------------------------------------------------------------------ operations
    def execute(self, req: Request, op: str, user_ref: str, event_id: str | None) -> Response:
        mailbox = self.resolve_user(user_ref, op)
        applied: list[str] = []
        with self.org.lock:
            if op == "getUser":
                return self._json(200, self.app.user_json(mailbox), applied, op, None)
            if op in ("calendarView", "listEvents"):
                return self._list(req, op, mailbox, applied)
            if op == "getEvent":
                view = self.view(req, applied)
                found = self.find(mailbox, event_id or "")
                body = {"@odata.context": self.context(mailbox, "events/$entity"), **ev.render(self.org, found, view)}
                return self._json(200, body, applied, op, mailbox)
            if op == "createEvent":
                return self._create(req, mailbox, applied)
            if op == "updateEvent":
                return self._update(req, mailbox, event_id or "", applied)
            if op == "deleteEvent":
                self._delete(req, mailbox, event_id or "")
                return Response(204, None, {}, op, mailbox)
        raise GraphError(400, "BadRequest", f"Unsupported operation {op}.")

    def _page_size(self, req: Request, token: dict | None, applied: list[str]) -> int:
        top = self._q(req, "$top")
        size = None
        if top is not None:
            try:
                size = int(top)
            except ValueError:
                raise GraphError(400, "BadRequest", f"Invalid $top value '{top}'.")  # believed
            if size < 0:
                raise GraphError(400, "BadRequest", f"Invalid $top value '{top}'.")
        prefs = split_prefer(req.prefer)
        if "odata.maxpagesize" in prefs:
            try:
                wanted = max(1, min(MAX_PAGE, int(prefs["odata.maxpagesize"])))
            except ValueError:
                wanted = None
            if wanted is not None and (size is None or wanted < size):
                size = wanted
                applied.append(f"odata.maxpagesize={wanted}")
        if size is None and token is not None:
            size = token.get("n")
        return max(0, min(MAX_PAGE, size if size is not None else DEFAULT_PAGE))

    def _list(self, req: Request, op: str, mailbox: str, applied: list[str]) -> Response:
        view = self.view(req, applied)
        if self._q(req, "$filter") is not None or self._q(req, "$search") is not None:
            raise GraphError(400, "BadRequest", "$filter and $search are not modelled by this sandbox.")
        order = self._q(req, "$orderby")
        if order is not None and order.replace(" ", "").lower() not in ("start/datetime", "start/datetimeasc"):
            raise GraphError(400, "BadRequest", "Only $orderby=start/dateTime is modelled by this sandbox.")
        if op == "calendarView":
            start_text, end_text = self._q(req, "startDateTime"), self._q(req, "endDateTime")
            if not start_text or not end_text:
                # https://github.com/microsoftgraph/microsoft-graph-docs/issues/57 (the service's answer)
                raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window specified by "
                                                               "the query string parameters StartDateTime and "
                                                               "EndDateTime.")
            start, end = self._window_bound(start_text, "StartDateTime"), self._window_bound(end_text, "EndDateTime")
            # "interpreted using the timezone offset specified in the value ... If no timezone offset is included in
            # the value, it is interpreted as UTC" (calendarView page); overlap rule as EWS CalendarView.
            items = self.org.calendar_view(mailbox, start, end) if end > start else []
        else:
            items = sorted(self.org.mailbox(mailbox).items.values(), key=lambda i: (i.start, i.id))
        token = None
        skiptoken = self._q(req, "$skiptoken")
        if skiptoken:
            try:
                token = json.loads(base64.urlsafe_b64decode(skiptoken + "=" * (-len(skiptoken) % 4)))
                offset = int(token["o"])
            except Exception:
                raise GraphError(400, "BadRequest", "The $skiptoken is not valid.")  # sandbox wording
        else:
            skip = self._q(req, "$skip")
            offset = int(skip) if skip and skip.isdigit() else 0
        size = self._page_size(req, token, applied)
        page = items[offset: offset + size]
        tail = "calendarView" if op == "calendarView" else "events"
        if view.select:
            tail += "(" + ",".join(view.select) + ")"
        body: dict[str, Any] = {"@odata.context": self.context(mailbox, tail),
                                "value": [ev.render(self.org, i, view) for i in page]}
        if offset + size < len(items) and size > 0:
            nxt = base64.urlsafe_b64encode(json.dumps({"o": offset + size, "n": size}).encode()).decode().rstrip("=")
            query = [(k, v) for k, v in req.query.items() if k.lower() not in ("$skiptoken", "$skip")]
            query.append(("$skiptoken", nxt))
            # Sandbox choice: an opaque $skiptoken (carries offset and page size). Clients follow nextLink verbatim.
            body["@odata.nextLink"] = f"{self.app.graph_url}{req.path}?{urlencode(query, safe='$/:,()')}"
        return self._json(200, body, applied, op, mailbox)

    @staticmethod
    def _window_bound(text: str, name: str) -> datetime:
        try:
            value = datetime.fromisoformat(re.sub(r"(\.\d{1,6})\d*", r"\1", text.strip()).replace("Z", "+00:00"))
        except ValueError:
            # Believed wording (https://github.com/microsoftgraph/msgraph-sdk-javascript/issues/529).
            raise GraphError(400, "ErrorInvalidParameter", f"The value of parameter '{name}' is invalid.")
        return to_utc(value)

    # ------------------------------------------------------------------ create
    def _create(self, req: Request, mailbox: str, applied: list[str]) -> Response:
        org = self.org
        view = self.view(req, applied)
        fields, touched = ev.parse_body(org, req.body)
        mbx = org.mailbox(mailbox)
        tid = fields.get("transaction_id")
        if tid:
            same = [i for i in mbx.items.values() if i.transaction_id == tid]
            if same:
                prior = same[0]
                if prior.subject == fields.get("subject", "") and prior.start == fields["start"] \
                        and prior.end == fields["end"]:
                    # A retried POST: the event is not created twice; the service answers with the event the first
                    # POST made (believed: 201 and the same event; the event resource's transactionId text:
                    # "for the server to avoid redundant POST operations in case of client retries").
                    body = {"@odata.context": self.context(mailbox, "events/$entity"), **ev.render(org, prior, view)}
                    return self._json(201, body, applied, "createEvent", mailbox)
                # https://github.com/alcionai/corso/issues/2490 (the service's answer to a reused id)
                raise GraphError(400, "ErrorDuplicateTransactionId",
                                 "Your request can't be completed. The TransactionId specified in the request has "
                                 "already been used to create a different event.")
        now = org.clock.now()
        required, optional = fields.pop("required", []), fields.pop("optional", [])
        item = Item(
            id=org.new_item_id(mailbox), mailbox=mailbox, uid=org.new_uid(), subject=fields.pop("subject", ""),
            start=fields.pop("start"), end=fields.pop("end"), start_tz=fields.pop("start_tz"),
            end_tz=fields.pop("end_tz"), is_all_day=bool(fields.pop("is_all_day", False)), created=now,
            last_modified=now, changekey=org.new_changekey(), organizer_email=mailbox, organizer_name=mbx.name,
            my_response="Organizer", is_meeting=bool(required or optional), required=required, optional=optional,
        )
        if "body_type" not in fields:
            item.body_type = "HTML"
        for name, value in fields.items():
            setattr(item, name, value)
        mbx.items[item.id] = item
        if item.attendees:
            # Graph mails every attendee of a meeting it creates; there is no send-to-none
            # ("When an event is sent, the server sends invitations to all the attendees", the create page).
            item.meeting_request_was_sent = True
            org.deliver(item, [a.email for a in item.attendees], "request", via="graph")
        body = {"@odata.context": self.context(mailbox, "events/$entity"), **ev.render(org, item, view)}
        return self._json(201, body, applied, "createEvent", mailbox)

    # ------------------------------------------------------------------ update
    def _check_etag(self, req: Request, target) -> None:
        sent = req.headers.get("if-match")
        if not sent or sent.strip() == "*":
            return
        current = (target.master if isinstance(target, Occurrence) else target).changekey
        values = [v.strip() for v in sent.split(",")]
        norm = {v[2:] if v.startswith("W/") else v for v in values}
        norm = {v.strip('"') for v in norm}
        if current not in norm:
            # https://github.com/microsoftgraph/msgraph-sdk-dotnet/issues/1201 (412 and this code/message)
            raise GraphError(412, "ErrorIrresolvableConflict",
                             "The send or update operation could not be performed because the change key passed in "
                             "the request does not match the current change key for the item.")

    def _update(self, req: Request, mailbox: str, event_id: str, applied: list[str]) -> Response:
        org = self.org
        view = self.view(req, applied)
        target = self.find(mailbox, event_id)
        self._check_etag(req, target)
        if not isinstance(req.body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        if isinstance(target, Occurrence):
            self._update_occurrence(target, req.body)
        else:
            self._update_item(target, req.body)
        fresh = org.find_item(target.id) or target
        body = {"@odata.context": self.context(mailbox, "events/$entity"), **ev.render(org, fresh, view)}
        return self._json(200, body, applied, "updateEvent", mailbox)

    def _current(self, item) -> dict:
        return {"start": item.start, "end": item.end, "start_tz": item.start_tz, "end_tz": item.end_tz,
                "is_all_day": item.is_all_day}

    def _update_item(self, item: Item, payload: dict) -> None:
        org = self.org
        if "transactionId" in payload and payload["transactionId"] != item.transaction_id:
            # "After you set transactionId when creating an event, you cannot change transactionId in a subsequent
            # update" (event resource). Sandbox wording.
            raise GraphError(400, "ErrorInvalidRequest", "The transactionId of an event cannot be changed.")
        fields, touched = ev.parse_body(org, payload, self._current(item))
        fields.pop("transaction_id", None)
        before = [a.email for a in item.attendees]
        time_changed = ("start" in fields and fields["start"] != item.start) or \
                       ("end" in fields and fields["end"] != item.end)
        for key in ("required", "optional"):
            if key in fields:  # attendees who stay keep their tracked responses
                old = {a.email: a for a in item.attendees}
                fields[key] = [old.get(a.email, a) for a in fields[key]]
        if "extended_properties" in fields:  # PATCH merges extended properties by id (believed)
            merged = dict(item.extended_properties)
            for k, v in fields.pop("extended_properties").items():
                for existing in [e for e in merged if e.lower() == k.lower()]:
                    del merged[existing]
                merged[k] = v
            item.extended_properties = merged
        if "recurrence" in fields and fields["recurrence"] is None:
            item.deleted_occurrences.clear()
            item.modified_occurrences.clear()
        for name, value in fields.items():
            setattr(item, name, value)
        item.is_meeting = bool(item.attendees) or not item.is_organizer_copy
        if time_changed and item.is_meeting:
            item.sequence += 1
        org.touch(item)
        if item.is_organizer_copy and (before or item.attendees) and not touched <= ev.PERSONAL:
            # Graph has no send-to-none. "An event update that includes only the attendees property in the request
            # body sends a meeting update to only the attendees that have changed" (added ones get the request,
            # removed ones a cancellation); any other update of the organizer's meeting goes to every attendee
            # (believed: the page says nothing narrower), and a series master with separately updated instances
            # sends "one for the master series and one per instance that has been updated".
            # https://learn.microsoft.com/en-us/graph/api/event-update?view=graph-rest-1.0
            after = [a.email for a in item.attendees]
            added = [e for e in after if e not in before]
            org.deliver(item, added, "request", via="graph")
            if touched != {"attendees"}:
                stayed = [e for e in after if e not in added]
                org.deliver(item, stayed, "update", via="graph")
                if item.recurrence is not None:
                    for _ in item.modified_occurrences:
                        for email in stayed:
                            org.record_invitation(item, email, "update", via="graph")
            org.deliver(item, [e for e in before if e not in after], "cancellation", via="graph")
            item.meeting_request_was_sent = item.meeting_request_was_sent or bool(after)

    _OCC_FIELDS = ("subject", "body", "body_type", "sensitivity", "location", "start", "end", "legacy_free_busy",
                   "start_tz", "end_tz", "is_all_day", "importance", "categories", "reminder_is_set",
                   "reminder_minutes", "is_response_requested", "allow_new_time_proposal", "required", "optional")

    def _update_occurrence(self, occ: Occurrence, payload: dict) -> None:
        org = self.org
        master = occ.master
        if "recurrence" in payload:
            raise GraphError(400, "ErrorInvalidRequest",  # sandbox wording
                             "The recurrence of an occurrence cannot be changed; update the series master.")
        fields, touched = ev.parse_body(org, payload, self._current(occ))
        fields.pop("transaction_id", None)
        fields.pop("extended_properties", None)  # kept on the series (sandbox simplification)
        if "start" in fields:
            self._check_crossing(occ, fields["start"], fields.get("end", occ.end))
        overrides = master.modified_occurrences.setdefault(occ.original_start, {})
        for k in self._OCC_FIELDS:
            if k in fields and (fields[k] != getattr(master, k, None) or k in ("start", "end")):
                overrides[k] = fields[k]
        overrides.setdefault("start", occ.start)
        overrides.setdefault("end", occ.end)
        org.touch(master)
        if master.is_organizer_copy and master.attendees and not touched <= ev.PERSONAL:
            org.deliver(master, [a.email for a in master.attendees], "update", via="graph")

    def _check_crossing(self, occ: Occurrence, start: datetime, end: datetime) -> None:
        """"an occurrence cannot be moved to or before the day of the previous occurrence, and cannot be moved to
        or after the day of the following occurrence" (event-update page, ErrorOccurrenceCrossingBoundary)."""
        from ..exchange import tz as tzmod

        master = occ.master
        zone = tzmod.tzinfo_for(master.start_tz)
        originals = [o.original_start for o in self.org.expand(
            master, until=occ.original_start + (occ.original_start - master.start) + timedelta(days=400),
            include_deleted=True)]
        i = originals.index(occ.original_start) if occ.original_start in originals else -1
        day_start, day_end = start.astimezone(zone).date(), end.astimezone(zone).date()
        prev_day = originals[i - 1].astimezone(zone).date() if i > 0 else None
        next_day = originals[i + 1].astimezone(zone).date() if 0 <= i < len(originals) - 1 else None
        if (prev_day is not None and day_start <= prev_day) or (next_day is not None and day_end >= next_day):
            raise GraphError(400, "ErrorOccurrenceCrossingBoundary",
                             "Modified occurrence is crossing or overlapping adjacent occurrence.")

    # ------------------------------------------------------------------ delete
    def _delete(self, req: Request, mailbox: str, event_id: str) -> None:
        org = self.org
        target = self.find(mailbox, event_id)
        self._check_etag(req, target)
        if isinstance(target, Occurrence):
            master = target.master
            master.deleted_occurrences.add(target.original_start)
            master.modified_occurrences.pop(target.original_start, None)
            org.touch(master)
            if master.is_organizer_copy and master.attendees:
                for a in master.attendees:
                    org.record_invitation(master, a.email, "cancellation", via="graph")
                    copy_mbx = org.mailboxes.get(a.email)
                    for c in (copy_mbx.items.values() if copy_mbx else []):
                        if c.uid == master.uid and not c.is_organizer_copy:
                            c.deleted_occurrences.add(target.original_start)
                            org.touch(c)
            return
        # DELETE moves the event to Deleted Items (it gets a new id there unless ids are immutable); an organizer's
        # meeting sends cancellations ("If the event is a meeting, deleting the event on the organizer's calendar
        # sends a cancellation message to the meeting attendees", the delete page).
        org.delete_item(target, "MoveToDeletedItems")
        if target.is_organizer_copy and target.attendees:
            org.deliver(target, [a.email for a in target.attendees], "cancellation", via="graph")

