"""Benchmark the Exchange sandbox through exchangelib.

Prints (and returns from main()) the time for:
- a calendar view over 2,000 items followed by GetItem of all of them (exchangelib: FindItem with
  CalendarView, then GetItem in batches of 100), and
- a 200-item bulk create (one CreateItem request).

The exchangelib figure is dominated by the client: exchangelib 5.6 feeds the response to its parser through
requests' iter_content() with the default chunk size of one byte, so its cost grows with the body size
(about 5 KB per fully fetched calendar item, a third of it the two TimeZoneDefinitions Exchange returns).
The raw-HTTP figure is the same FindItem + GetItem traffic without exchangelib.

Run: .venv/bin/python benchmarks/sandbox_exchange.py
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchangelib import BASIC, IMPERSONATION, Account, Configuration, Credentials, EWSDateTime, EWSTimeZone, Version
from exchangelib.items import CalendarItem
from exchangelib.protocol import FailFast, close_connections
from exchangelib.version import EXCHANGE_2016

from sandbox.clock import Clock
from sandbox.exchange import ExchangeSandbox
from sandbox.faults import Faults

UTC = timezone.utc
MAILBOX = "bench@example.com"


def _raw_view_and_get(ex, folder_id: str, ids: list[str]) -> tuple[float, int]:
    import requests

    session = requests.Session()
    session.trust_env = False
    head = ('<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
            'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Header>'
            '<t:RequestServerVersion Version="Exchange2016"/><t:ExchangeImpersonation><t:ConnectingSID>'
            f'<t:PrimarySmtpAddress>{MAILBOX}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>'
            '</s:Header><s:Body>')
    tail = "</s:Body></s:Envelope>"
    total = 0
    t0 = time.perf_counter()
    r = session.post(ex.url, auth=ex.service_account, data=(
        head + '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>'
        '<m:CalendarView StartDate="2026-11-30T00:00:00Z" EndDate="2027-03-01T00:00:00Z"/>'
        f'<m:ParentFolderIds><t:FolderId Id="{folder_id}"/></m:ParentFolderIds></m:FindItem>' + tail).encode())
    total += len(r.content)
    for k in range(0, len(ids), 100):
        refs = "".join(f'<t:ItemId Id="{i}"/>' for i in ids[k:k + 100])
        r = session.post(ex.url, auth=ex.service_account, data=(
            head + '<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape>'
            f'<m:ItemIds>{refs}</m:ItemIds></m:GetItem>' + tail).encode())
        r.raise_for_status()
        total += len(r.content)
    return time.perf_counter() - t0, total


def main() -> dict:
    clock = Clock()
    with ExchangeSandbox(clock, Faults()) as ex:
        ex.org.add_mailbox(MAILBOX, time_zone="Europe/Berlin")
        ex.org.add_mailbox("colleague@example.com")
        base = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
        t0 = time.perf_counter()
        for n in range(2000):
            start = base + timedelta(minutes=30 * (n % 20), days=n // 20 % 60)
            ex.org.add_item(
                MAILBOX, f"Event {n}", start, start + timedelta(minutes=30), body=f"Body of event {n}",
                required_attendees=["colleague@example.com", f"customer{n % 50}@client.org"],
                is_all_day=False,
            )
        seed_s = time.perf_counter() - t0
        config = Configuration(service_endpoint=ex.url, credentials=Credentials(*ex.service_account), auth_type=BASIC,
                               version=Version(build=EXCHANGE_2016), retry_policy=FailFast())
        account = Account(MAILBOX, config=config, autodiscover=False, access_type=IMPERSONATION,
                          default_timezone=EWSTimeZone("UTC"))
        calendar = account.calendar  # GetFolder (root + calendar), not timed
        tz = EWSTimeZone("UTC")
        calls0 = ex.org.calls()
        t0 = time.perf_counter()
        items = list(calendar.view(EWSDateTime(2026, 11, 30, tzinfo=tz), EWSDateTime(2027, 3, 1, tzinfo=tz)))
        view_s = time.perf_counter() - t0
        view_calls = ex.org.calls() - calls0
        assert len(items) == 2000 and all(i.required_attendees for i in items)

        # The same view with calsync's connector patch (connectors/exchange_fastparse.py: replies read in
        # 64 KiB chunks instead of byte by byte), against the unpatched figure above in the same process.
        from connectors import exchange_fastparse

        exchange_fastparse.install()
        t0 = time.perf_counter()
        again = list(calendar.view(EWSDateTime(2026, 11, 30, tzinfo=tz), EWSDateTime(2027, 3, 1, tzinfo=tz)))
        chunked_s = time.perf_counter() - t0
        assert len(again) == 2000

        # The same exchange over raw HTTP (FindItem + 20 GetItem of 100, all properties): what the server costs,
        # without exchangelib's client-side parsing (which reads the body byte by byte, see module doc).
        raw_s, raw_bytes = _raw_view_and_get(ex, calendar.id, [i.id for i in items])

        new = [
            CalendarItem(account=account, folder=calendar, subject=f"Bulk {n}", body="b",
                         start=EWSDateTime(2027, 2, 1, 8, tzinfo=tz) + timedelta(hours=n),
                         end=EWSDateTime(2027, 2, 1, 9, tzinfo=tz) + timedelta(hours=n))
            for n in range(200)
        ]
        calls0 = ex.org.calls()
        t0 = time.perf_counter()
        created = account.bulk_create(folder=calendar, items=new, send_meeting_invitations="SendToNone")
        create_s = time.perf_counter() - t0
        create_calls = ex.org.calls() - calls0
        assert len(created) == 200 and all(getattr(c, "id", None) for c in created)
        close_connections()
    figures = {
        "seed_2000_items_s": round(seed_s, 3),
        "calendar_view_and_get_item_2000_s": round(view_s, 3),
        "calendar_view_and_get_item_calls": view_calls,
        "calendar_view_and_get_item_2000_chunked_s": round(chunked_s, 3),
        "chunked_vs_unpatched_ratio": round(chunked_s / view_s, 2),
        "raw_http_view_and_get_item_2000_s": round(raw_s, 3),
        "raw_http_response_mb": round(raw_bytes / 1e6, 2),
        "bulk_create_200_s": round(create_s, 3),
        "bulk_create_200_calls": create_calls,
    }
    for k, v in figures.items():
        print(f"{k:40s} {v}")
    return figures


if __name__ == "__main__":
    main()
