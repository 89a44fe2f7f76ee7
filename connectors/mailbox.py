"""The mailbox side's contract, which every mailbox connector implements, and the router that sends
each synced user's mailbox to the connector of its kind.

Glossary
--------
mailbox kind  how a mailbox is reached: ``ews`` (Exchange Server on premises, EWS through exchangelib,
              ``connectors.exchange``) or ``graph`` (Exchange Online / Microsoft 365, Microsoft Graph,
              ``connectors.graph``). Each user has one; one run syncs users of both (a hybrid org).
view          the items of one mailbox's calendar overlapping a window (C1), recurring series as their
              occurrences (C23), as rows of ``EVENT_SCHEMA``.
confirm       looking items up by id when the view did not return them: a row back means the item is
              still in the calendar (it left the window), no row means it is gone (a confirmed
              deletion, R8).
incremental   a read given the versions (change keys) of the items whose rows the caller holds: only new and
              changed items are fetched; the others come back as ids in ``unchanged``. The version moves on
              every change of an item, so an unchanged version means unchanged content.
problem       an item that could not be read or shaped: ``(user_key, item id or None, "reason: detail")``.
              Its id is neither present nor gone this run, so the caller must not treat it as deleted.
internal      an address with a mailbox in the same organisation (tenant): a meeting sent to it lands on
              its calendar (C20, C24). Everyone else is external.

Errors: ``read``/``confirm``/``find_by_key`` raise ``FatalError`` when the mailbox cannot be opened (no
such mailbox, access refused, credentials rejected) and ``RetriableError`` when the service is
unavailable or throttles past its patience; ``apply`` never raises for a single delta (its outcome
says), only for a whole-service failure (``FatalError`` with the outcomes so far on ``.outcomes``).
Messages name the mailbox and what to do, and never carry a secret. The router (``Mailboxes``) holds every
kind to this: a connection failure is told apart (refused, unreachable, a certificate that fails
verification: ``connectors.errors.connection_problem``) and named with its URL, and anything else escaping
a connector becomes a ``RetriableError`` naming the mailbox (its traceback stays on ``__cause__`` for the log).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import polars as pl

from connectors.errors import CalsyncError, FatalError, RetriableError, connection_problem
from transforms.schema import EVENT_SCHEMA, OUTCOME_SCHEMA, conform, empty

MAILBOX_KINDS = ("ews", "graph")
SERVICES = {"ews": "Exchange", "graph": "Microsoft Graph"}

Problem = tuple[str, "str | None", str]


# --------------------------------------------------------------------------- shaping every kind shares


class ItemProblem(ValueError):
    """An item that cannot become a canonical row; ``str()`` is the reason code and detail."""


def rows_to_frame(rows: list[dict]) -> pl.DataFrame:
    if not rows:
        return conform(pl.DataFrame(schema=EVENT_SCHEMA), EVENT_SCHEMA)
    return conform(pl.DataFrame(rows, schema=EVENT_SCHEMA), EVENT_SCHEMA)


def overlaps(row: dict, window_start: dt.datetime, window_end: dt.datetime) -> bool:
    """C1 on canonical values: start < window end and end > window start."""
    return row["start"] < window_end and row["end"] > window_start


def normalise_subject(subject: str | None) -> str:
    """C3: surrounding whitespace stripped, inner runs collapsed, case kept."""
    return re.sub(r"\s+", " ", (subject or "").strip())


def plain_text(text: str | None) -> str:
    """A body as the sync compares it: line ends normalised, trailing whitespace dropped (Exchange
    appends a line break to bodies it stores; it must not count as an edit)."""
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").rstrip()


def delta_emails(invitees: Iterable[Mapping[str, Any]] | None, exclude: str) -> list[str]:
    """Invitee emails of a delta, lower-case, de-duplicated, without the organizer/mailbox itself."""
    out: list[str] = []
    for inv in invitees or []:
        email = (inv.get("email") or "").strip().lower()
        if email and email != exclude and email not in out:
            out.append(email)
    return out


def matches_key(row: dict, subject: str, start: dt.datetime, end: dt.datetime, is_all_day: bool) -> bool:
    """Whether a canonical row has this key (C3)."""
    return (row["is_all_day"] == bool(is_all_day) and row["start"] == start.astimezone(dt.timezone.utc)
            and row["end"] == end.astimezone(dt.timezone.utc)
            and normalise_subject(row["subject"]) == normalise_subject(subject))


class Ledger:
    """The outcomes of one ``apply``: exactly one ``OUTCOME_SCHEMA`` row per delta, in the order given."""

    def __init__(self, deltas: pl.DataFrame) -> None:
        self.records = deltas.to_dicts()
        self.outcomes: dict[str, dict] = {}

    def record(self, delta: dict, status: str, error: str | None = None, *, retriable: bool = False,
               new_id: str | None = None, new_version: str | None = None) -> None:
        self.outcomes[delta["delta_id"]] = {
            "delta_id": delta["delta_id"], "status": status, "error": error, "retriable": retriable,
            "new_id": new_id if new_id is not None else delta.get("target_id"), "new_version": new_version,
        }

    def writes(self) -> list[dict]:
        """Record the deltas that need no mailbox call (another side's, pair bookkeeping, no mailbox named);
        return the others, in order."""
        out = []
        for delta in self.records:
            if delta.get("target_side") != "email":
                self.record(delta, "skipped", "wrong_side: not an email delta")
            elif delta["op"] in ("pair", "unpair"):
                self.record(delta, "applied")
            elif not delta.get("mailbox"):
                self.record(delta, "failed", "no_mailbox: the delta names no mailbox")
            else:
                out.append(delta)
        return out

    def fail_rest(self, error: str, *, retriable: bool = False, among: Iterable[dict] | None = None) -> None:
        """Fail every delta (of ``among``, default all) that has no outcome yet."""
        for delta in self.records if among is None else among:
            if delta["delta_id"] not in self.outcomes:
                self.record(delta, "failed", error, retriable=retriable)

    @property
    def done(self) -> int:
        return len(self.outcomes)

    @property
    def total(self) -> int:
        return len(self.records)

    def frame(self) -> pl.DataFrame:
        rows = [self.outcomes[d["delta_id"]] for d in self.records]
        if not rows:
            return empty(OUTCOME_SCHEMA)
        return conform(pl.DataFrame(rows, schema=OUTCOME_SCHEMA), OUTCOME_SCHEMA)


# --------------------------------------------------------------------------- the contract


@dataclass
class MailboxRead:
    """What a read or a confirm returns: canonical rows of the items fetched, the items that could not be read,
    and (an incremental read) the ids of items the view showed at the version the caller already knows, which
    were not fetched: the caller has their rows."""

    events: pl.DataFrame = field(default_factory=lambda: empty(EVENT_SCHEMA))
    problems: list[Problem] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@runtime_checkable
class MailboxConnector(Protocol):
    """One mailbox service (an EWS endpoint, a Graph tenant) reached with one set of credentials."""

    kind: str
    # Optional: ``service_url``, where the connector sends its requests (named in connection errors).

    def read(self, user_key: str, mailbox: str, window_start: dt.datetime, window_end: dt.datetime,
             known: Mapping[str, str] | None = None) -> MailboxRead:
        """The mailbox's calendar view over the window (C1 overlap on the canonical values). With ``known``
        (item id -> version, the items whose rows the caller holds), an item the view shows at that version is
        not fetched but listed in ``unchanged``; every other item is fetched (incremental read)."""

    def confirm(self, user_key: str, mailbox: str, item_ids: Sequence[str]) -> MailboxRead:
        """The items among ``item_ids`` still in the mailbox's calendar (absent = gone)."""

    def find_by_key(self, mailbox: str, subject: str, start: dt.datetime, end: dt.datetime,
                    is_all_day: bool) -> list[str]:
        """Ids of the mailbox's items with this key (C3): replay finds creates whose reply was lost."""

    def apply(self, deltas: pl.DataFrame, *, internal: Iterable[str] = (), send_external: Iterable[str] = (),
              directory_emails: Iterable[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> pl.DataFrame:
        """Write email deltas; exactly one ``OUTCOME_SCHEMA`` row per delta, in the order given.

        ``internal``: addresses with a mailbox in the organisation besides invitees of record_type user
        (they receive the meeting); ``send_external``: mailboxes whose user opted in to invitations for
        external attendees; ``directory_emails``: addresses Salesforce can represent (attendees outside
        it are kept on updates, C11), None = the delta's invitees are the whole list."""

    @property
    def api_calls(self) -> int:
        """Requests this connector has sent to its service so far."""

    def close(self) -> None:
        """Release connections; the connector may not be used afterwards."""


def _failed(deltas: pl.DataFrame, reason: str) -> pl.DataFrame:
    return conform(
        deltas.select("delta_id", "target_id").with_columns(
            pl.lit("failed").alias("status"), pl.lit(reason).alias("error"), pl.col("target_id").alias("new_id"),
        ),
        OUTCOME_SCHEMA,
    )


class Mailboxes:
    """Every configured mailbox connector, and which one serves each mailbox (by address).

    Implements the contract itself, so flows never ask which kind a mailbox is: reads go to the
    mailbox's connector, and ``apply`` splits the deltas by the kind of their mailbox.
    """

    def __init__(self, connectors: Mapping[str, MailboxConnector], kinds: Mapping[str, str]) -> None:
        unknown = {k for k in kinds.values() if k not in connectors}
        if unknown:
            raise FatalError(f"no mailbox connector configured for kind {', '.join(sorted(unknown))}")
        self.connectors = dict(connectors)
        self.kinds = {m.lower(): k for m, k in kinds.items()}

    def connector(self, mailbox: str) -> MailboxConnector:
        kind = self.kinds.get((mailbox or "").lower())
        if kind is None:
            raise FatalError(f"mailbox {mailbox} is not a configured user's mailbox; add it to [[users]]")
        return self.connectors[kind]

    def kind_of(self, mailbox: str) -> str | None:
        return self.kinds.get((mailbox or "").lower())

    def _guarded(self, mailbox: str, what: str, call: Callable[[MailboxConnector], Any]) -> Any:
        """``call(connector)``, holding the connector to the contract's errors (see the module docstring)."""
        connector = self.connector(mailbox)
        kind = getattr(connector, "kind", self.kind_of(mailbox))
        try:
            return call(connector)
        except Exception as exc:
            if getattr(exc, "kind", None) is not None:  # already told apart by the connector
                raise
            problem = connection_problem(exc, SERVICES.get(kind, kind), getattr(connector, "service_url", None),
                                         f"the [{'exchange' if kind == 'ews' else kind}] section's URL")
            if problem is not None:
                problem.args = (f"{problem.args[0]} ({what} mailbox {mailbox})",)
                raise problem from exc
            if isinstance(exc, CalsyncError):
                raise
            said = (str(exc).strip().splitlines() or [""])[0][:200]
            raise RetriableError(
                f"the {SERVICES.get(kind, kind)} connector failed {what} mailbox {mailbox} ({type(exc).__name__}:"
                f" {said}): retry; if it goes on, the log file has the traceback") from exc

    def read(self, user_key: str, mailbox: str, window_start: dt.datetime, window_end: dt.datetime,
             known: Mapping[str, str] | None = None) -> MailboxRead:
        return self._guarded(mailbox, "reading",
                             lambda c: c.read(user_key, mailbox, window_start, window_end, known=known))

    def confirm(self, user_key: str, mailbox: str, item_ids: Sequence[str]) -> MailboxRead:
        if not item_ids:
            return MailboxRead()
        return self._guarded(mailbox, "reading", lambda c: c.confirm(user_key, mailbox, item_ids))

    def find_by_key(self, mailbox: str, subject: str, start: dt.datetime, end: dt.datetime,
                    is_all_day: bool) -> list[str]:
        return self._guarded(mailbox, "searching",
                             lambda c: c.find_by_key(mailbox, subject, start, end, is_all_day))

    def apply(self, deltas: pl.DataFrame, *, internal: Iterable[str] = (), send_external: Iterable[str] = (),
              directory_emails: Iterable[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> pl.DataFrame:
        """Each kind's deltas to its connector; outcomes back in the order of ``deltas``. A fatal error of
        one service does not stop the other's writes: it is raised at the end, carrying every outcome."""
        if deltas.height == 0:
            return empty(OUTCOME_SCHEMA)
        internal, send_external = list(internal), list(send_external)
        kind = pl.col("mailbox").str.to_lowercase().replace_strict(self.kinds, default=None, return_dtype=pl.String)
        tagged = deltas.with_columns(kind.alias("_kind"))
        parts: list[pl.DataFrame] = []
        done, total = 0, deltas.height
        fatal: FatalError | None = None
        unrouted = tagged.filter(pl.col("_kind").is_null())
        if unrouted.height:
            parts.append(_failed(unrouted, "no_mailbox_kind: the delta's mailbox is not a configured user's"
                                           " mailbox (was it removed from [[users]]?)"))
            done += unrouted.height
        for name, connector in self.connectors.items():
            mine = tagged.filter(pl.col("_kind") == name).drop("_kind")
            if not mine.height:
                continue
            offset = done
            cb = (lambda n, _t, offset=offset: progress(offset + n, total)) if progress else None
            try:
                parts.append(connector.apply(mine, internal=internal, send_external=send_external,
                                             directory_emails=directory_emails, progress=cb))
            except FatalError as exc:
                partial = getattr(exc, "outcomes", None)
                parts.append(partial if partial is not None else _failed(mine, f"fatal: {exc}"))
                fatal = fatal or exc
            done += mine.height
        outcomes = pl.concat([conform(p, OUTCOME_SCHEMA) for p in parts])
        order = deltas.select("delta_id").with_row_index("_order")
        outcomes = order.join(outcomes, on="delta_id", how="left").sort("_order").drop("_order")
        if fatal is not None:
            fatal.outcomes = outcomes  # type: ignore[attr-defined]
            raise fatal
        return outcomes

    def api_calls_by_kind(self) -> dict[str, int]:
        return {kind: c.api_calls for kind, c in self.connectors.items()}

    @property
    def api_calls(self) -> int:
        return sum(self.api_calls_by_kind().values())

    def close(self) -> None:
        for c in self.connectors.values():
            c.close()
