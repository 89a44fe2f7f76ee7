"""Microsoft Graph connector (Exchange Online / Microsoft 365): mailbox calendars in, deltas out.

The ``graph`` mailbox connector (``connectors.mailbox.MailboxConnector``). One app registration in the
tenant reaches every synced mailbox with the application permission ``Calendars.ReadWrite``; the tenant
admin scopes which mailboxes it may open (RBAC for Applications, or an application access policy).

Why plain HTTP: ``msgraph-sdk`` is about 400 MB installed and async-only; calsync needs five endpoints,
so ``requests`` plus ``msal`` (the maintained Microsoft library, for tokens) does it with nothing hidden.

Glossary
--------
calendarView   ``GET /users/{id}/calendarView``: single events, occurrences and exceptions overlapping a
               range (https://learn.microsoft.com/en-us/graph/api/user-list-calendarview).
changeKey      the event's change token; it is the ``version`` of an email event. ``@odata.etag`` is
               ``W/"<changeKey>"`` and goes in ``If-Match`` so a write over a newer version answers 412.
$batch         JSON batching: up to 20 requests in one call, each answered with its own status
               (https://learn.microsoft.com/en-us/graph/json-batching). Graph runs at most 4 of a batch's
               Outlook requests at once, which keeps within the 4-concurrent-requests-per-mailbox limit as long
               as one request at a time is in flight per mailbox, which the connector holds to
               (https://learn.microsoft.com/en-us/graph/throttling-limits).
externals      C24: Graph mails every attendee of a meeting it creates, updates or cancels; there is no
               send-to-none. So a Salesforce event's external invitees (not mailboxes of the tenant) become
               attendees only when the user's config says ``send_external_invites``; otherwise they are kept in
               a calsync extended property on the event (``EXTERNALS_PROPERTY``), read back as invitees so they
               count as present, and nobody is mailed.

Reading (``read``, ``confirm``)
    ``Prefer: outlook.timezone="UTC"`` and ``outlook.body-content-type="text"``; paged by
    ``@odata.nextLink`` (``odata.maxpagesize``); no ``$select``, as it drops ``lastModifiedDateTime``. Timed events are UTC instants; all-day events come back as
    midnight of their dates whatever the requested zone (Graph keeps them "floating"), which the canonical
    frame takes as midnight UTC of those dates, end exclusive. ``meeting_uid`` is the series ``uid`` (for a
    single event equal to ``iCalUId``) plus ``/<original start>`` for an occurrence, the same string the
    EWS connector builds, so a meeting delivered to an EWS and a Graph mailbox links alike.

Writing (``apply``)
    One outcome per delta, in order. Updates and deletes first read the items (one $batch of GETs per 20),
    then write only the synced fields that differ, with ``If-Match``; a change made in Outlook since extract
    fails the delta ``changed_since_extract`` (the next run re-plans it). An update whose target already
    holds the planned content is applied without a write (nothing is mailed), so a replay after a lost reply
    does not fail or mail twice. Creates carry ``transactionId`` = the delta id, so a retried or replayed
    POST never makes a second event. Deletes of an item already gone count as applied.

Throttling and failures
    429 / 503 / 504 (also inside a $batch) are retried after ``Retry-After`` seconds, the waits of one
    request bounded by ``max_wait_s`` in total; past that, or on a dropped connection, the connector stops
    calling Graph and the deltas not yet written come back failed with ``retriable=True`` (a replay writes
    them). A 401 after one fresh token, or a token refused by Microsoft Entra ID, raises ``FatalError``
    (with the outcomes so far on ``.outcomes``). A mailbox outside the app's scope is a ``FatalError`` for
    that mailbox alone on reads, and a failed outcome on writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import requests

from connectors.errors import FatalError, RetriableError, connection_problem
from connectors.mailbox import (
    ItemProblem,
    Ledger,
    MailboxRead,
    delta_emails,
    matches_key,
    overlaps,
    plain_text,
    rows_to_frame,
)

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
BATCH_MAX = 20  # requests per $batch (json-batching)
PAGE_SIZE = 250  # Prefer: odata.maxpagesize for calendarView
ID_PAGE_SIZE = 1000  # ... when it lists ids and change keys only (an incremental read)
# C24: the Salesforce invitees calsync did not make attendees (a JSON list of addresses). A named string
# property in calsync's own property set (https://learn.microsoft.com/en-us/graph/api/resources/extended-properties-overview).
EXTERNALS_PROPERTY = "String {6f1b6a7e-2c4d-4b8a-9d3e-0a5c7e9f1b24} Name calsyncExternalInvitees"
# No $select on reads: "The createdDateTime and lastModifiedDateTime properties of event do not support
# $select" (https://learn.microsoft.com/en-us/graph/api/user-list-calendarview), and the sync needs
# lastModifiedDateTime (R7, C6: the later edit wins a conflict). Bodies come as text (Prefer), so the full
# event costs little more than the fields the sync reads.
EXPAND = f"singleValueExtendedProperties($filter=id eq '{EXTERNALS_PROPERTY}')"
PREFER_READ = 'outlook.timezone="UTC", outlook.body-content-type="text"'
RESPONSES = {"accepted": "accepted", "declined": "declined", "tentativelyAccepted": "tentative"}
PRIVATE_SENSITIVITIES = {"private", "confidential"}
RETRY_STATUSES = {429, 503, 504}


# --------------------------------------------------------------------------- pure shaping


def graph_instant(value: Mapping[str, Any] | None, field_name: str) -> dt.datetime:
    """A Graph ``dateTimeTimeZone`` as an aware UTC datetime (``Prefer: outlook.timezone="UTC"`` asks for UTC;
    another IANA or Windows zone name is honoured too)."""
    if not value or not value.get("dateTime"):
        raise ItemProblem(f"no_{field_name}: the event has no {field_name}")
    text = value["dateTime"]
    if "." in text:  # 7 fractional digits: more than fromisoformat takes
        head, frac = text.split(".", 1)
        text = f"{head}.{frac.rstrip('Z')[:6]}"
    naive = dt.datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=None)
    zone = value.get("timeZone") or "UTC"
    return naive.replace(tzinfo=_zone(zone)).astimezone(UTC)


def _zone(name: str) -> dt.tzinfo:
    if name in ("UTC", "Etc/UTC", "tzone://Microsoft/Utc"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    from exchangelib.winzone import MS_TIMEZONE_TO_IANA_MAP  # Windows zone names, rarely needed

    iana = MS_TIMEZONE_TO_IANA_MAP.get(name)
    if iana is None:
        raise ItemProblem(f"unknown_time_zone: Graph named the time zone {name!r}, which calsync cannot map")
    return ZoneInfo(iana)


def _day(value: Mapping[str, Any] | None, field_name: str) -> dt.date:
    if not value or not value.get("dateTime"):
        raise ItemProblem(f"no_{field_name}: the event has no {field_name}")
    return dt.date.fromisoformat(value["dateTime"][:10])


def _address(recipient: Mapping[str, Any] | None) -> str | None:
    address = ((recipient or {}).get("emailAddress") or {}).get("address")
    return address.strip().lower() if address else None


def externals_of(event: Mapping[str, Any]) -> list[str]:
    """The external invitees calsync recorded on the event (C24), lower-case."""
    for prop in event.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == EXTERNALS_PROPERTY.lower():
            try:
                values = json.loads(prop.get("value") or "[]")
            except ValueError:
                return []
            return [str(v).strip().lower() for v in values if isinstance(v, str) and v.strip()]
    return []


def invitees_of(event: Mapping[str, Any], organizer: str | None) -> list[dict]:
    """Attendees other than the organizer (first occurrence of an address wins), then the recorded externals
    that are not attendees (no response: nobody asked them)."""
    out: list[dict] = []
    seen: set[str] = set()
    for att in event.get("attendees") or []:
        email = _address(att)
        if email is not None and (email == organizer or email in seen):
            continue
        if email is not None:
            seen.add(email)
        response = RESPONSES.get(((att.get("status") or {}).get("response")) or "", "none")
        out.append({"email": email, "response": response, "record_id": None, "record_type": "none"})
    for email in externals_of(event):
        if email not in seen and email != organizer:
            seen.add(email)
            out.append({"email": email, "response": "none", "record_id": None, "record_type": "none"})
    return out


def meeting_uid_of(event: Mapping[str, Any]) -> str | None:
    """``uid`` (or ``iCalUId``) of a single event; ``uid/<original start, UTC>`` for an occurrence or exception,
    so occurrences stay distinct and match what the EWS connector builds for the same meeting."""
    uid = event.get("uid") or event.get("iCalUId")
    if not uid:
        return None
    if event.get("type") in ("occurrence", "exception"):
        original = event.get("originalStart")
        if not event.get("uid") or not original:
            return event.get("iCalUId")  # per occurrence already
        when = dt.datetime.fromisoformat(original.replace("Z", "+00:00")).astimezone(UTC)
        return f"{uid}/{when.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return uid


def event_to_row(event: Mapping[str, Any], *, user_key: str, mailbox: str) -> dict:
    """One Graph event (JSON) -> one ``EVENT_SCHEMA`` row (a dict). Raises ``ItemProblem``."""
    if not event.get("id"):
        raise ItemProblem("no_id: the event has no id")
    if event.get("isAllDay"):
        # All-day events are midnight to midnight of their dates, whatever zone was asked for.
        first, after = _day(event.get("start"), "start"), _day(event.get("end"), "end")
        start = dt.datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = dt.datetime(after.year, after.month, after.day, tzinfo=UTC)
    else:
        start, end = graph_instant(event.get("start"), "start"), graph_instant(event.get("end"), "end")
    organizer = _address(event.get("organizer"))
    modified = event.get("lastModifiedDateTime")
    body = event.get("body") or {}
    return {
        "side": "email",
        "user_key": user_key.lower(),
        "native_id": event["id"],
        "version": event.get("changeKey"),
        "subject": event.get("subject") or "",
        "start": start,
        "end": end,
        "is_all_day": bool(event.get("isAllDay")),
        "description": plain_text(body.get("content") if body.get("contentType", "text") == "text"
                                  else _html_text(body.get("content"))),
        "is_private": (event.get("sensitivity") or "normal").lower() in PRIVATE_SENSITIVITIES,
        "organizer_email": organizer,
        "last_modified": dt.datetime.fromisoformat(modified.replace("Z", "+00:00")).astimezone(UTC) if modified else None,
        "invitees": invitees_of(event, organizer),
        "is_child": False,
        "meeting_uid": meeting_uid_of(event),
        "mailbox": mailbox.lower(),
    }


def _html_text(html: str | None) -> str:
    """A plain-text view of an HTML body, for a server that ignored the text preference."""
    import html as html_lib
    import re

    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", html or "")
    return html_lib.unescape(re.sub(r"<[^>]+>", "", text))


def graph_start_end(start: dt.datetime, end: dt.datetime, is_all_day: bool, zone: str) -> tuple[dict, dict]:
    """Canonical start/end -> Graph ``dateTimeTimeZone`` values in the mailbox's zone. All-day: midnight of the
    dates (end exclusive), as Graph requires; timed: the wall-clock time in that zone (so the meeting carries it)."""
    if is_all_day:
        first, after = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        if after <= first:
            raise ValueError("end_before_start: an all-day event must end at least a day after it starts")
        return ({"dateTime": f"{first.isoformat()}T00:00:00", "timeZone": zone},
                {"dateTime": f"{after.isoformat()}T00:00:00", "timeZone": zone})
    if end < start:
        raise ValueError("end_before_start: the event ends before it starts")
    tz = _zone(zone)
    fmt = "%Y-%m-%dT%H:%M:%S"
    return ({"dateTime": start.astimezone(tz).strftime(fmt), "timeZone": zone},
            {"dateTime": end.astimezone(tz).strftime(fmt), "timeZone": zone})


def content_of(delta: Mapping[str, Any], zone: str) -> dict[str, Any]:
    """The synced content fields of a delta as Graph event properties."""
    start, end = graph_start_end(delta["start"], delta["end"], bool(delta["is_all_day"]), zone)
    return {
        "subject": delta.get("subject") or "",
        "start": start,
        "end": end,
        "isAllDay": bool(delta["is_all_day"]),
        "body": {"contentType": "text", "content": delta.get("description") or ""},
        "sensitivity": "private" if delta.get("is_private") else "normal",
    }


def changed_fields(row: Mapping[str, Any], delta: Mapping[str, Any]) -> list[str]:
    """Graph property names whose synced value on the item (``row``) differs from the delta's."""
    changed = []
    if row["subject"] != (delta.get("subject") or ""):
        changed.append("subject")
    if (row["is_all_day"] != bool(delta["is_all_day"]) or row["start"] != delta["start"].astimezone(UTC)
            or row["end"] != delta["end"].astimezone(UTC)):
        changed += ["start", "end", "isAllDay"]  # they travel together: the flag decides how times are read
    if row["description"] != plain_text(delta.get("description")):
        changed.append("body")
    if row["is_private"] != bool(delta.get("is_private")):
        changed.append("sensitivity")
    return changed


def split_invitees(emails: Sequence[str], internal: set[str], send_external: bool,
                   attendees_now: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """C24: (attendees, recorded externals). Mailboxes of the tenant are attendees (their calendars need the
    meeting); externals are attendees only with ``send_external`` or when a person already made them one."""
    keep = set(attendees_now)
    attendees = [e for e in emails if send_external or e in internal or e in keep]
    return attendees, [e for e in emails if e not in attendees]


def attendee_json(emails: Sequence[str], current: Sequence[Mapping[str, Any]] = ()) -> list[dict]:
    """Graph attendees for ``emails``; an attendee already on the item keeps its type (required/optional)."""
    types = {_address(a): a.get("type") or "required" for a in current}
    return [{"emailAddress": {"address": e}, "type": types.get(e, "required")} for e in emails]


def externals_json(emails: Sequence[str]) -> list[dict]:
    return [{"id": EXTERNALS_PROPERTY, "value": json.dumps(sorted(emails))}]


def error_of(response: Mapping[str, Any] | requests.Response) -> tuple[int, str, str]:
    """(status, code, message) of a Graph response or $batch sub-response."""
    if isinstance(response, requests.Response):
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
    else:
        status, body = int(response.get("status", 0)), response.get("body")
    err = (body or {}).get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return status, str(err.get("code") or f"HTTP{status}"), str(err.get("message") or "").strip()
    return status, f"HTTP{status}", ""


def _error_text(status: int, code: str, message: str) -> str:
    return f"{code}: {message} (HTTP {status})" if message else f"{code} (HTTP {status})"


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    for k, v in (headers or {}).items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except (TypeError, ValueError):
                return None
    return None


def _iso(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user_path(mailbox: str) -> str:
    return f"/users/{quote(mailbox, safe='@')}"


def _event_path(mailbox: str, item_id: str) -> str:
    return f"{_user_path(mailbox)}/events/{quote(item_id, safe='=-_')}"


# --------------------------------------------------------------------------- HTTP


class _StopCalling(Exception):
    """Graph stays unavailable (throttled past max_wait_s, 5xx, a dropped connection): stop writing."""


@dataclass
class _Sub:
    """One request of a $batch, with what it belongs to."""

    method: str
    url: str
    mailbox: str
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    tag: Any = None


class GraphHttp:
    """Token, session and retry policy for one app registration; counts the Graph requests it sends.

    ``max_wait_s`` bounds the ``Retry-After`` waits of one request (or one $batch with its retries) in total.
    """

    def __init__(self, app: Callable[[], Any], session: requests.Session, graph_url: str, *, tenant_id: str,
                 client_id: str, max_wait_s: float = 60, scope: str = GRAPH_SCOPE,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._make_app = app
        self._app: Any = None
        self.session = session
        self.base = graph_url.rstrip("/")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.max_wait_s = max_wait_s
        self.scope = scope
        self.sleep = sleep
        self._calls = 0
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Lock] = {}
        session.hooks["response"].append(self._count)

    # -- counting, slots ------------------------------------------------------------------------

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.request is not None and str(response.request.url).startswith(self.base):
            with self._lock:
                self._calls += 1

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    @contextlib.contextmanager
    def _in_flight(self, mailboxes: Iterable[str]) -> Iterator[None]:
        """Hold ``mailboxes`` for one request. Graph runs up to 4 requests of a $batch at once, so one request
        (a GET or a $batch) in flight per mailbox keeps within its 4 concurrent requests per mailbox, whatever
        threads the caller runs; locks are taken in one order, so two batches never wait on each other."""
        with self._lock:
            locks = [self._slots.setdefault(m, threading.Lock()) for m in sorted({m.lower() for m in mailboxes})]
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield

    # -- tokens -----------------------------------------------------------------------------------

    def token(self) -> str:
        """A bearer token for Graph: msal serves it from its cache and renews it before it expires."""
        try:
            if self._app is None:
                self._app = self._make_app()
            result = self._app.acquire_token_for_client(scopes=[self.scope])
        except ValueError as exc:  # msal could not read the authority's metadata: no such tenant, or not an authority
            said = (str(exc).strip().splitlines() or [""])[0][:200]
            raise FatalError(
                f"Microsoft Entra ID has no usable authority for tenant {self.tenant_id} ({said}): check [graph]"
                " tenant_id and authority_host"
            ) from None
        except requests.RequestException as exc:
            problem = connection_problem(exc, f"Microsoft Entra ID (tenant {self.tenant_id})", None,
                                         "[graph] authority_host")
            raise problem or RetriableError(
                f"cannot reach Microsoft Entra ID for tenant {self.tenant_id} ({type(exc).__name__}): check the"
                " network and [graph] authority_host, then retry"
            ) from None
        if "access_token" not in result:
            error = result.get("error") or "unknown_error"
            detail = str(result.get("error_description") or "").splitlines()[0:1]
            raise FatalError(
                f"Microsoft Entra ID refused app {self.client_id} in tenant {self.tenant_id} ({error}: "
                f"{detail[0] if detail else 'no detail'}): check [graph] tenant_id, client_id and the certificate"
                " or client secret registered for the app"
            )
        return result["access_token"]

    def _drop_token(self) -> None:
        try:
            self._app.remove_tokens_for_client()
        except Exception:  # an empty cache is fine
            pass

    # -- requests ---------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, mailboxes: Iterable[str], **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in (1, 2):
            headers["Authorization"] = f"Bearer {self.token()}"
            try:
                with self._in_flight(mailboxes):
                    response = self.session.request(method, url, headers=headers, timeout=(10, 120), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # refused, unreachable, dropped or a certificate that fails verification: told apart, URL named
                problem = connection_problem(exc, "Microsoft Graph", self.base, "[graph] graph_url")
                if isinstance(problem, FatalError):
                    raise problem from None
                raise _StopCalling(str(problem) if problem else
                                   f"the connection to {self.base} failed ({type(exc).__name__})") from None
            if response.status_code == 401 and attempt == 1:
                self._drop_token()  # revoked or expired early: one fresh token, then it is the app's problem
                continue
            return response
        status, code, message = error_of(response)
        raise FatalError(
            f"Microsoft Graph rejected app {self.client_id}'s token ({_error_text(status, code, message)}): check"
            " that the tenant admin granted the application permission Calendars.ReadWrite"
        )

    def get(self, path_or_url: str, *, mailbox: str, params: dict | None = None,
            headers: dict | None = None) -> requests.Response:
        """A GET with retries on 429/503/504 (``Retry-After``, bounded); raises ``_StopCalling`` past them."""
        url = path_or_url if path_or_url.startswith("https://") else self.base + path_or_url
        waited, attempt = 0.0, 0
        while True:
            response = self._send("GET", url, mailboxes=[mailbox], params=params, headers=headers)
            if response.status_code not in RETRY_STATUSES:
                return response
            attempt += 1
            wait = _retry_after(response.headers) or min(2.0 * attempt, 30.0)  # no Retry-After: back off
            if waited + wait > self.max_wait_s:
                status, code, message = error_of(response)
                raise _StopCalling(f"Microsoft Graph is throttling or unavailable ({_error_text(status, code, message)})")
            self.sleep(wait)
            waited += wait

    def batch(self, subs: Sequence[_Sub]) -> list[dict]:
        """Send ``subs`` (at most 20) as one $batch; sub-requests answered 429/503/504 are sent again after
        ``Retry-After`` (bounded). Returns one response dict ({status, headers, body}) per sub, in order."""
        assert len(subs) <= BATCH_MAX, "a $batch holds at most 20 requests"
        results: dict[int, dict] = {}
        pending = list(range(len(subs)))
        waited = 0.0
        while pending:
            body = {"requests": [
                {"id": str(i), "method": subs[i].method, "url": subs[i].url,
                 **({"body": subs[i].body} if subs[i].body is not None else {}),
                 "headers": {**({"Content-Type": "application/json"} if subs[i].body is not None else {}),
                             **subs[i].headers}}
                for i in pending
            ]}
            response = self._send("POST", self.base + "/$batch", mailboxes=[subs[i].mailbox for i in pending], json=body)
            if response.status_code in RETRY_STATUSES:
                answers = [{"id": str(i), "status": response.status_code, "headers": dict(response.headers),
                            "body": _json(response)} for i in pending]
            elif response.status_code != 200:
                status, code, message = error_of(response)
                raise _StopCalling(f"Microsoft Graph refused a $batch ({_error_text(status, code, message)})")
            else:
                answers = response.json().get("responses") or []
            retry, wait = [], 0.0
            for answer in answers:
                i = int(answer.get("id", -1))
                if i not in pending:
                    continue
                if int(answer.get("status", 0)) in RETRY_STATUSES:
                    retry.append(i)
                    wait = max(wait, _retry_after(answer.get("headers")) or 1.0)
                else:
                    results[i] = answer
            missing = [i for i in pending if i not in results and i not in retry]
            for i in missing:  # a batch that left a request unanswered: treat it as not done
                results[i] = {"id": str(i), "status": 503, "body": {"error": {"code": "NoResponse",
                              "message": "the $batch reply did not answer this request"}}}
            if not retry:
                break
            if waited + wait > self.max_wait_s:
                for i in retry:
                    results[i] = next(a for a in answers if int(a.get("id", -1)) == i)
                break
            self.sleep(wait)
            waited += wait
            pending = retry
        return [results[i] for i in range(len(subs))]


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _batches(items: Sequence[Any], size: int = BATCH_MAX) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- connector


def _certificate_credential(pem: str) -> dict:
    """msal's certificate credential from one PEM holding the private key and the certificate: msal computes
    the SHA-256 thumbprint (``x5t#S256``) from the certificate."""
    import re

    key = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", pem, re.S)
    cert = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    if key is None or cert is None:
        raise FatalError("the [graph] certificate must hold a PEM private key and the PEM certificate")
    return {"private_key": key.group(0), "public_certificate": cert.group(0)}


class GraphConnector:
    """Reads Exchange Online calendars through Microsoft Graph into ``EVENT_SCHEMA`` frames and writes
    ``DELTA_SCHEMA`` rows back (see the module docstring).

    ``time_zones`` maps a mailbox to its IANA zone (default ``default_time_zone``): the zone events written
    there carry, and the dates of all-day events. ``internal_domains``: the tenant's email domains; an
    address there is a mailbox of the tenant (C24).
    """

    kind = "graph"

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        *,
        certificate_pem: str | None = None,
        client_secret: str | None = None,
        authority_host: str = "https://login.microsoftonline.com",
        graph_url: str = "https://graph.microsoft.com/v1.0",
        ca_file: str | None = None,
        time_zones: Mapping[str, str] | None = None,
        default_time_zone: str = "UTC",
        internal_domains: Iterable[str] = (),
        max_wait_s: float = 60,
        page_size: int = PAGE_SIZE,
        batch_size: int = BATCH_MAX,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import msal  # only where Graph mailboxes are configured

        if (certificate_pem is None) == (client_secret is None):
            raise FatalError("the Graph connector needs a certificate or a client secret (exactly one)")
        credential: Any = _certificate_credential(certificate_pem) if certificate_pem else client_secret
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.time_zones = {k.lower(): v for k, v in (time_zones or {}).items()}
        self.default_time_zone = default_time_zone
        self.internal_domains = {d.lower().lstrip("@") for d in internal_domains}
        self.page_size = page_size
        self.batch_size = max(1, min(batch_size, BATCH_MAX))
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE must not override the CA we were told to trust
        self.session.verify = ca_file or True
        authority = f"{authority_host.rstrip('/')}/{tenant_id}"

        def app() -> Any:  # msal reads the authority's metadata when it is made: not before the first token
            return msal.ConfidentialClientApplication(
                client_id, client_credential=credential, authority=authority, http_client=self.session,
                instance_discovery=False, token_cache=msal.TokenCache(),
            )

        self.http = GraphHttp(app, self.session, graph_url, tenant_id=tenant_id, client_id=client_id,
                              max_wait_s=max_wait_s, sleep=sleep)
        self.last_problems: list[tuple[str, str | None, str]] = []

    # ---------------------------------------------------------------- contract basics

    @property
    def service_url(self) -> str:
        """The Graph API root (the contract's optional ``service_url``)."""
        return self.http.base

    @property
    def api_calls(self) -> int:
        """Graph requests sent so far that got a response (a $batch counts once; token requests not)."""
        return self.http.calls

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "GraphConnector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _zone_of(self, mailbox: str) -> str:
        return self.time_zones.get(mailbox.lower(), self.default_time_zone)

    def _mailbox_error(self, response: requests.Response, mailbox: str) -> None:
        """Raise ``FatalError`` for a whole-mailbox refusal (scope, no such mailbox); return otherwise."""
        status, code, message = error_of(response)
        if status == 403:
            raise FatalError(
                f"app {self.client_id} may not open mailbox {mailbox} ({_error_text(status, code, message)}): the"
                " tenant admin scopes the app's mailbox access (RBAC for Applications or an application access"
                " policy); add this mailbox to the app's scope"
            )
        if status == 404 or code in ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "ResourceNotFound"):
            raise FatalError(
                f"no Exchange Online mailbox {mailbox} for app {self.client_id} ({_error_text(status, code, message)}):"
                " check the address, or set mailbox_kind = \"ews\" if the mailbox is on premises"
            )

    # ---------------------------------------------------------------- reading

    def _shape(self, event: Mapping[str, Any], user_key: str, mailbox: str, problems: list) -> dict | None:
        try:
            return event_to_row(event, user_key=user_key, mailbox=mailbox)
        except (ItemProblem, ValueError, TypeError, KeyError) as exc:
            problems.append((user_key, event.get("id"), str(exc)))
            log.warning("skipped event %s of %s: %s", event.get("id"), user_key, str(exc).split(":")[0])
            return None

    def _view(self, user_key: str, mailbox: str, start: dt.datetime, end: dt.datetime,
              problems: list) -> list[dict]:
        params: dict | None = {"startDateTime": _iso(start), "endDateTime": _iso(end), "$expand": EXPAND}
        url = f"{_user_path(mailbox)}/calendarView"
        headers = {"Prefer": f"{PREFER_READ}, odata.maxpagesize={self.page_size}"}
        rows: list[dict] = []
        while url:
            response = self.http.get(url, mailbox=mailbox, params=params, headers=headers)
            if response.status_code != 200:
                self._mailbox_error(response, mailbox)
                status, code, message = error_of(response)
                raise FatalError(f"Microsoft Graph could not list the calendar of {mailbox} "
                                 f"({_error_text(status, code, message)})")
            page = response.json()
            for event in page.get("value") or []:
                if event.get("type") == "seriesMaster":
                    continue  # the view lists occurrences; a master is not an event of the calendar (C23)
                row = self._shape(event, user_key, mailbox, problems)
                if row is not None:
                    rows.append(row)
            url, params = page.get("@odata.nextLink"), None
        return rows

    def _guarded(self, mailbox: str, work: Callable[[list], list[dict]]) -> MailboxRead:
        problems: list[tuple[str, str | None, str]] = []
        try:
            rows = work(problems)
        except _StopCalling as exc:
            raise RetriableError(f"Microsoft Graph is unavailable for mailbox {mailbox}: {exc}; retry") from None
        self.last_problems = problems
        return MailboxRead(rows_to_frame(rows), problems)

    def read(self, user_key: str, mailbox: str, window_start: dt.datetime, window_end: dt.datetime,
             known: Mapping[str, str] | None = None) -> MailboxRead:
        """The calendar view over the window (C1 overlap on the canonical values; a day of slack each side,
        as all-day events are judged on their dates). With ``known`` (id -> changeKey): the view lists ids and
        change keys only, and the new and changed events are fetched by id ($batch of GETs) — or the whole
        view is read after all when that takes fewer calls."""
        unchanged: list[str] = []
        start, end = window_start - dt.timedelta(days=1), window_end + dt.timedelta(days=1)

        def work(problems: list) -> list[dict]:
            rows = None
            if known:
                versions = self._versions(mailbox, start, end)
                todo = [i for i, ck in versions.items() if not (ck and known.get(i) == ck)]
                if -(-len(todo) // self.batch_size) <= -(-len(versions) // self.page_size):
                    unchanged.extend(i for i in versions if i not in set(todo))
                    rows = self._by_id(user_key, mailbox, todo, problems)  # gone since the listing: skipped
            if rows is None:
                rows = self._view(user_key, mailbox, start, end, problems)
            return [r for r in rows if overlaps(r, window_start, window_end)]

        got = self._guarded(mailbox, work)
        got.unchanged = unchanged
        return got

    def _versions(self, mailbox: str, start: dt.datetime, end: dt.datetime) -> dict[str, str | None]:
        """id -> changeKey of every event of the calendar view (``$select`` of just those: 1000 a page)."""
        params: dict | None = {"startDateTime": _iso(start), "endDateTime": _iso(end), "$select": "id,changeKey"}
        url = f"{_user_path(mailbox)}/calendarView"
        headers = {"Prefer": f"{PREFER_READ}, odata.maxpagesize={ID_PAGE_SIZE}"}
        out: dict[str, str | None] = {}
        while url:
            response = self.http.get(url, mailbox=mailbox, params=params, headers=headers)
            if response.status_code != 200:
                self._mailbox_error(response, mailbox)
                raise FatalError(f"Microsoft Graph could not list the calendar of {mailbox} "
                                 f"({_error_text(*error_of(response))})")
            page = response.json()
            out.update((e["id"], e.get("changeKey")) for e in page.get("value") or [] if e.get("id"))
            url, params = page.get("@odata.nextLink"), None
        return out

    def _by_id(self, user_key: str, mailbox: str, ids: Sequence[str], problems: list) -> list[dict]:
        """The events among ``ids`` (GETs by id, 20 per $batch); one answered 404 is gone and left out."""
        rows = []
        for item_id, answer in zip(ids, self._get_items(mailbox, ids)):
            status = int(answer.get("status", 0))
            if status == 200:
                row = self._shape(answer.get("body") or {}, user_key, mailbox, problems)
                if row is not None:
                    rows.append(row)
            elif status == 404:
                continue  # gone (deleted, or moved out of the calendar)
            elif status == 403:
                raise FatalError(f"app {self.client_id} may not open mailbox {mailbox} "
                                 f"({_error_text(*error_of(answer))}); add this mailbox to the app's scope")
            else:
                problems.append((user_key, item_id, f"unconfirmed: {_error_text(*error_of(answer))}"))
        return rows

    def confirm(self, user_key: str, mailbox: str, item_ids: Sequence[str]) -> MailboxRead:
        """The items among ``item_ids`` still in the calendar (GETs by id, 20 per $batch); 404 = gone."""
        ids = list(dict.fromkeys(item_ids))
        return self._guarded(mailbox, lambda problems: self._by_id(user_key, mailbox, ids, problems)) \
            if ids else MailboxRead()

    def _get_items(self, mailbox: str, ids: Sequence[str]) -> list[dict]:
        query = f"?$expand={EXPAND}"
        answers: list[dict] = []
        for chunk in _batches(list(ids), self.batch_size):
            answers += self.http.batch([_Sub("GET", _event_path(mailbox, i) + query, mailbox,
                                             headers={"Prefer": PREFER_READ}) for i in chunk])
        return answers

    def find_by_key(self, mailbox: str, subject: str, start: dt.datetime, end: dt.datetime,
                    is_all_day: bool) -> list[str]:
        """Ids of the mailbox's events with this key (C3): replay finds creates whose reply was lost."""
        got = self._guarded(mailbox, lambda problems: self._view(
            mailbox, mailbox, start - dt.timedelta(days=1), end + dt.timedelta(days=1), problems))
        return [r["native_id"] for r in got.events.to_dicts() if matches_key(r, subject, start, end, is_all_day)]

    # ---------------------------------------------------------------- writing

    def _internal(self, invitees: Iterable[Mapping[str, Any]] | None, internal: set[str]) -> set[str]:
        """Addresses that are mailboxes of the tenant: ``internal``, synced Users, the tenant's domains."""
        out = set(internal)
        for inv in invitees or []:
            email = (inv.get("email") or "").strip().lower()
            if email and (inv.get("record_type") == "user" or email.rsplit("@", 1)[-1] in self.internal_domains):
                out.add(email)
        return out

    def apply(self, deltas: pl.DataFrame, *, internal: Iterable[str] = (), send_external: Iterable[str] = (),
              directory_emails: Iterable[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> pl.DataFrame:
        """Write email deltas; exactly one ``OUTCOME_SCHEMA`` row per delta, in the order given."""
        internal_set = {e.lower() for e in internal}
        opted_in = {m.lower() for m in send_external}
        directory = None if directory_emails is None else {e.lower() for e in directory_emails}
        ledger = Ledger(deltas)
        todo: dict[str, list[dict]] = {"delete": [], "update": [], "create": []}
        for delta in ledger.writes():
            if delta["op"] in todo:
                todo[delta["op"]].append(delta)
            else:
                ledger.record(delta, "failed", f"unknown_op: {delta['op']}")

        def tick() -> None:
            if progress:
                progress(ledger.done, ledger.total)

        tick()
        writes = _Writes(self, internal_set, opted_in, directory, ledger.record, tick)
        try:
            current = writes.read_targets(todo["delete"] + todo["update"])
            writes.delete(todo["delete"], current)
            writes.update(todo["update"], current)
            writes.create(todo["create"])
        except _StopCalling as exc:
            ledger.fail_rest(f"retriable: {exc}; retry or replay", retriable=True)
        except FatalError as fatal:
            ledger.fail_rest(f"fatal: {fatal}")
            fatal.outcomes = ledger.frame()  # type: ignore[attr-defined]
            raise
        tick()
        return ledger.frame()


@dataclass
class _Writes:
    """The write phases of one ``apply``: read the targets, delete, update, create, each in $batches of up to 20
    requests (mixing mailboxes; Graph itself runs at most 4 at once)."""

    conn: GraphConnector
    internal: set[str]
    opted_in: set[str]
    directory: set[str] | None
    record: Callable[..., None]
    tick: Callable[[], None]

    def _run(self, subs: list[_Sub], done: Callable[[_Sub, dict], None]) -> None:
        for chunk in _batches(subs, self.conn.batch_size):
            for sub, answer in zip(chunk, self.conn.http.batch(chunk)):
                done(sub, answer)
            self.tick()

    def _failed(self, delta: dict, answer: dict) -> None:
        status, code, message = error_of(answer)
        if status == 412:
            self.record(delta, "failed", f"changed_since_extract: {_error_text(status, code, message)}; the next"
                                         " run re-plans it")
        elif status == 403:
            self.record(delta, "failed", f"mailbox_access: {_error_text(status, code, message)}")
        else:
            self.record(delta, "failed", _error_text(status, code, message), retriable=status in RETRY_STATUSES
                        or status >= 500)

    def read_targets(self, deltas: list[dict]) -> dict[str, dict]:
        """The items updates and deletes target, as the server has them now: delta id -> sub-response."""
        out: dict[str, dict] = {}
        query = f"?$expand={EXPAND}"
        subs = []
        for d in deltas:
            if not d.get("target_id"):
                self.record(d, "failed", "no_target: the delta names no target item")
                continue
            subs.append(_Sub("GET", _event_path(d["mailbox"], d["target_id"]) + query, d["mailbox"],
                             headers={"Prefer": PREFER_READ}, tag=d))
        self._run(subs, lambda sub, answer: out.__setitem__(sub.tag["delta_id"], answer))
        return out

    def delete(self, deltas: list[dict], current: dict[str, dict]) -> None:
        subs = []
        for d in deltas:
            answer = current.get(d["delta_id"])
            if answer is None:
                continue  # recorded by read_targets
            status = int(answer.get("status", 0))
            if status == 404:
                self.record(d, "applied", "already_gone: ErrorItemNotFound")
                continue
            if status != 200:
                self._failed(d, answer)
                continue
            item = answer.get("body") or {}
            planned = d.get("target_version")
            if planned and item.get("changeKey") and planned != item["changeKey"]:
                self.record(d, "failed", "changed_since_extract: the item changed after it was read; the next run"
                                         " re-plans it")
                continue
            # Deleting an organizer's meeting cancels it for every attendee: Graph mails them (C24).
            subs.append(_Sub("DELETE", _event_path(d["mailbox"], d["target_id"]), d["mailbox"],
                             headers={"If-Match": f'W/"{item.get("changeKey")}"'} if item.get("changeKey") else {},
                             tag=d))

        def done(sub: _Sub, answer: dict) -> None:
            status = int(answer.get("status", 0))
            if status in (200, 202, 204):
                self.record(sub.tag, "applied")
            elif status == 404:
                self.record(sub.tag, "applied", "already_gone: ErrorItemNotFound")
            else:
                self._failed(sub.tag, answer)

        self._run(subs, done)

    def update(self, deltas: list[dict], current: dict[str, dict]) -> None:
        subs = []
        for d in deltas:
            answer = current.get(d["delta_id"])
            if answer is None:
                continue
            if int(answer.get("status", 0)) != 200:
                self._failed(d, answer)
                continue
            item = answer.get("body") or {}
            mailbox = d["mailbox"].lower()
            try:
                patch = self._patch(d, item, mailbox)
            except (ItemProblem, ValueError, TypeError) as exc:
                self.record(d, "failed", f"bad_payload: {exc}")  # never sent
                continue
            if not patch:
                # Nothing to write (C7): the item already holds the planned content, whatever its change key.
                self.record(d, "applied", new_version=item.get("changeKey"))
                continue
            planned = d.get("target_version") or item.get("changeKey")
            subs.append(_Sub("PATCH", _event_path(mailbox, d["target_id"]), mailbox, body=patch,
                             headers={"If-Match": f'W/"{planned}"'} if planned else {}, tag=d))

        def done(sub: _Sub, answer: dict) -> None:
            if int(answer.get("status", 0)) in (200, 204):
                body = answer.get("body") or {}
                self.record(sub.tag, "applied", new_id=body.get("id") or sub.tag["target_id"],
                            new_version=body.get("changeKey"))
            else:
                self._failed(sub.tag, answer)

        self._run(subs, done)

    def _patch(self, delta: dict, item: dict, mailbox: str) -> dict[str, Any]:
        """The properties of ``item`` to write for ``delta``: only what differs (every PATCH of a meeting is
        mailed to its attendees)."""
        row = event_to_row(item, user_key=mailbox, mailbox=mailbox)
        content = content_of(delta, self.conn._zone_of(mailbox))
        patch = {k: content[k] for k in changed_fields(row, delta)}
        organizer = row["organizer_email"]
        if organizer not in (None, mailbox) or delta.get("invitees") is None:
            return patch  # an attendee's copy: its attendees are the organizer's to send
        attendees_now = [a for a in (_address(x) for x in item.get("attendees") or []) if a and a != organizer]
        wanted = delta_emails(delta["invitees"], mailbox)
        if self.directory is not None:  # C11: keep attendees Salesforce cannot represent
            wanted += [e for e in attendees_now if e not in self.directory and e not in wanted]
        attendees, externals = split_invitees(wanted, self.conn._internal(delta["invitees"], self.internal),
                                              mailbox in self.opted_in, attendees_now)
        if set(attendees) != set(attendees_now):
            patch["attendees"] = attendee_json(attendees, item.get("attendees") or [])
        if sorted(externals) != sorted(externals_of(item)):
            patch["singleValueExtendedProperties"] = externals_json(externals)
        return patch

    def create(self, deltas: list[dict]) -> None:
        subs = []
        for d in deltas:
            mailbox = d["mailbox"].lower()
            try:
                body = content_of(d, self.conn._zone_of(mailbox))
            except (ItemProblem, ValueError, TypeError) as exc:
                self.record(d, "failed", f"bad_payload: {exc}")  # never sent: it would be refused anyway
                continue
            emails = delta_emails(d.get("invitees"), mailbox)
            attendees, externals = split_invitees(emails, self.conn._internal(d.get("invitees"), self.internal),
                                                  mailbox in self.opted_in)
            body["attendees"] = attendee_json(attendees)
            if externals:
                body["singleValueExtendedProperties"] = externals_json(externals)
            # A retried or replayed POST with the same transactionId makes no second event (C24).
            body["transactionId"] = d["delta_id"]
            subs.append(_Sub("POST", f"{_user_path(mailbox)}/events", mailbox, body=body, tag=d))

        def done(sub: _Sub, answer: dict) -> None:
            status = int(answer.get("status", 0))
            body = answer.get("body") or {}
            if status in (200, 201) and body.get("id"):
                self.record(sub.tag, "applied", new_id=body["id"], new_version=body.get("changeKey"))
            else:
                self._failed(sub.tag, answer)

        self._run(subs, done)
