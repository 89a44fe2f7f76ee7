"""The sync window (R6, C1, C2 in docs/rules.md)."""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta, timezone


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole calendar months, clamped to the target month's last day (31 Mar - 1 = 28/29 Feb)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def window_bounds(today: date, start_date: date | None = None) -> tuple[datetime, datetime]:
    """C1: [00:00 UTC of max(today - 1 month, start_date), 00:00 UTC of the day after today + 2 months)."""
    first = add_months(today, -1)
    if start_date is not None and start_date > first:
        first = start_date
    return _midnight(first), _midnight(add_months(today, 2) + timedelta(days=1))
