"""The read path through exchangelib's object model -- what ``connectors.exchange`` did before ``ews_soap`` --
kept as the reference that the lxml path is held to (issue 12).

Not used by a sync. ``tests/connectors/test_ews_soap.py`` reads the same sandbox mailboxes and parses the same
recorded replies both ways and compares the rows; ``benchmarks/ews_client.py`` measures both in one process.
This path builds an exchangelib ``CalendarItem`` per item of the view and of GetItem, asks GetFolder for the
calendar (2 requests per Account), and shapes rows with ``connectors.exchange.item_to_row``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from exchangelib import Account, CalendarItem, EWSDateTime
from exchangelib import errors as ews
from exchangelib.items import ID_ONLY
from exchangelib.services import GetItem

from connectors.exchange import ITEM_FIELDS, UTC, ExchangeConnector, _aware_utc, error_text, item_to_row
from connectors.mailbox import ItemProblem, MailboxRead, Problem, overlaps, rows_to_frame

# exchangelib returns only a short list of per-item errors (ErrorItemNotFound, ...) as exception instances and
# RAISES any other one, which ends the whole bulk call; this GetItem hands every per-item error back in place.
_NEGOTIATION_ERRORS = (
    ews.ErrorInvalidServerVersion,
    ews.ErrorIncorrectSchemaVersion,
    ews.ErrorInvalidRequest,
    ews.ErrorInvalidSchemaVersionForMailboxVersion,
)


class PerItemGetItem(GetItem):
    def _get_element_container(self, message, name=None):
        try:
            return super()._get_element_container(message=message, name=name)
        except _NEGOTIATION_ERRORS:
            raise
        except ews.ResponseMessageError as exc:
            return exc


def get_items(account: Account, ids: list[tuple[str, str | None]], fields: Sequence[str], chunk_size: int) -> list:
    """GetItem for ``ids`` with ``fields`` as exchangelib objects (or per-item exceptions), in order."""
    if not ids:
        return []
    folder = account.calendar
    additional = {f for f in folder.normalize_fields(fields=list(fields)) if not f.field.is_attribute}
    return list(account._consume_item_service(service_cls=PerItemGetItem, items=ids, chunk_size=chunk_size,
                                              kwargs={"additional_fields": additional, "shape": ID_ONLY}))


def view_ids(account: Account, start: dt.datetime, end: dt.datetime, page_size: int,
             problems: list[Problem], who: str) -> dict[str, str]:
    """Item id -> ChangeKey of the calendar view through exchangelib's QuerySet (a CalendarItem per item)."""
    ids: dict[str, str] = {}
    cursor = EWSDateTime.from_datetime(start.astimezone(UTC))
    end_ews = EWSDateTime.from_datetime(end.astimezone(UTC))
    while True:
        qs = account.calendar.view(start=cursor, end=end_ews, max_items=page_size).only("start")
        qs.max_items = page_size
        page = [i for i in qs if not isinstance(i, Exception)]
        new = 0
        for item in page:
            if item.id not in ids:
                ids[item.id] = item.changekey
                new += 1
        if len(page) < page_size:
            return ids
        starts = [i.start for i in page if isinstance(i.start, dt.datetime)]
        latest = max(starts) if starts else None
        if latest is None or latest <= cursor or new == 0:
            problems.append((who, None, f"view_truncated: more than {page_size} items at {cursor}"))
            return ids
        cursor = EWSDateTime.from_datetime(_aware_utc(latest))


def shape(item: Any, user_key: str, mailbox: str, problems: list[Problem]) -> dict | None:
    """``item_to_row`` with the connector's problem reporting."""
    if isinstance(item, Exception):
        problems.append((user_key, None, f"unreadable: {error_text(item)}"))
        return None
    if not isinstance(item, CalendarItem):
        return None
    try:
        return item_to_row(item, user_key=user_key, mailbox=mailbox)
    except (ItemProblem, ValueError, TypeError, AttributeError) as exc:
        problems.append((user_key, item.id, str(exc)))
        return None


def read(conn: ExchangeConnector, user_key: str, mailbox: str, window_start: dt.datetime, window_end: dt.datetime,
         known: dict[str, str] | None = None) -> MailboxRead:
    """``ExchangeConnector.read`` as it was, through exchangelib's objects (same contract, same rows)."""
    problems: list[Problem] = []
    account = conn.account(mailbox)
    ids = view_ids(account, window_start - dt.timedelta(days=1), window_end + dt.timedelta(days=1), conn.page_size,
                   problems, user_key)
    unchanged = [i for i, ck in ids.items() if known and ck and known.get(i) == ck]
    todo = [(i, ck) for i, ck in ids.items() if i not in set(unchanged)]
    rows = (shape(item, user_key, mailbox, problems) for item in get_items(account, todo, ITEM_FIELDS, conn.batch_size))
    found = [r for r in rows if r is not None and overlaps(r, window_start, window_end)]
    return MailboxRead(rows_to_frame(found), problems, unchanged)


def parse_get_item(account: Account, reply: bytes) -> list:
    """A recorded GetItem reply parsed by exchangelib: CalendarItem objects (or per-item exceptions), in order."""
    return list(PerItemGetItem(account=account).parse(reply))
