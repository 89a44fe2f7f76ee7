"""The dates of a Salesforce recurring event series, as the Event object reference describes the two kinds.

Salesforce Classic recurring events (``IsRecurrence``): the series master row carries the pattern in
``RecurrenceType`` (RecursDaily, RecursEveryWeekday, RecursWeekly, RecursMonthly, RecursMonthlyNth, RecursYearly,
RecursYearlyNth), ``RecurrenceInterval``, ``RecurrenceDayOfWeekMask`` (Sunday 1, Monday 2, Tuesday 4, Wednesday 8,
Thursday 16, Friday 32, Saturday 64), ``RecurrenceDayOfMonth``, ``RecurrenceInstance`` (First .. Fourth, Last),
``RecurrenceMonthOfYear``, from ``RecurrenceStartDateTime`` to ``RecurrenceEndDateOnly``
(https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_event.htm).
A series may hold at most 100 occurrences daily, 53 weekly, 59 monthly and 9 yearly (Salesforce knowledge article
000212481, "Recurring Events in Salesforce have occurrence limits depending on the event frequency").

Lightning Experience event series (``IsRecurrence2``): the pattern is ``Recurrence2PatternText``, an RRULE (a
subset of RFC 5545; e.g. "RRULE:FREQ=WEEKLY;BYDAY=MO;WKST=SU;INTERVAL=1;COUNT=13" in the Change Data Capture guide,
https://developer.salesforce.com/docs/atlas.en-us.change_data_capture.meta/change_data_capture/cdc_standard_objects_task_event_recurring.htm).
The sandbox reads FREQ (DAILY, WEEKLY, MONTHLY, YEARLY), INTERVAL, BYDAY (weekly: day codes; monthly/yearly: one
day with an ordinal, e.g. 2TU or -1FR), BYMONTHDAY, BYMONTH, COUNT, UNTIL and WKST, and holds a series to the same
occurrence limits.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Iterator

CLASSIC_TYPES = ("RecursDaily", "RecursEveryWeekday", "RecursWeekly", "RecursMonthly", "RecursMonthlyNth", "RecursYearly",
                 "RecursYearlyNth")
INSTANCES = ("First", "Second", "Third", "Fourth", "Last")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
          "December")
# Python weekday() (Monday 0) -> RecurrenceDayOfWeekMask bit
_MASK_BIT = {0: 2, 1: 4, 2: 8, 3: 16, 4: 32, 5: 64, 6: 1}
_RRULE_DAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
LIMITS = {"daily": 100, "weekly": 53, "monthly": 59, "yearly": 9}
_CLASSIC_FREQ = {"RecursDaily": "daily", "RecursEveryWeekday": "daily", "RecursWeekly": "weekly", "RecursMonthly": "monthly",
                 "RecursMonthlyNth": "monthly", "RecursYearly": "yearly", "RecursYearlyNth": "yearly"}


class PatternError(ValueError):
    """A recurrence pattern the org refuses; ``str()`` is the message, ``fields`` the fields at fault."""

    def __init__(self, message: str, fields: tuple[str, ...]) -> None:
        super().__init__(message)
        self.fields = fields


@dataclass(frozen=True)
class Pattern:
    freq: str  # daily, weekly, monthly, yearly
    interval: int = 1
    weekdays: frozenset[int] = frozenset()  # Python weekdays (Monday 0)
    nth: int | None = None  # 1..4, -1 for last (with exactly one weekday)
    day_of_month: int | None = None
    month: int | None = None
    count: int | None = None
    until: date | None = None
    week_start: int = 6  # Sunday


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> date | None:
    days = [d for d in range(1, calendar.monthrange(year, month)[1] + 1) if date(year, month, d).weekday() == weekday]
    if nth == -1:
        return date(year, month, days[-1])
    return date(year, month, days[nth - 1]) if nth <= len(days) else None


def _candidates(p: Pattern, first: date) -> Iterator[date]:
    """Every date the pattern names from ``first`` on, in order (without the range's end)."""
    if p.freq == "daily":
        d = first
        while True:
            if not p.weekdays or d.weekday() in p.weekdays:
                yield d
            d += timedelta(days=1 if p.weekdays else p.interval)
    elif p.freq == "weekly":
        wanted = p.weekdays or frozenset({first.weekday()})
        week = first - timedelta(days=(first.weekday() - p.week_start) % 7)
        while True:
            for k in range(7):
                d = week + timedelta(days=k)
                if d >= first and d.weekday() in wanted:
                    yield d
            week += timedelta(weeks=p.interval)
    else:
        year, month = first.year, first.month
        step = p.interval if p.freq == "monthly" else 12 * p.interval
        if p.freq == "yearly" and p.month:
            month = p.month
        while True:
            if p.nth is not None:
                d = _nth_weekday(year, month, next(iter(p.weekdays)), p.nth)
            else:
                dom = p.day_of_month or first.day
                d = date(year, month, dom) if dom <= calendar.monthrange(year, month)[1] else None
            if d is not None and d >= first:
                yield d
            month += step
            year, month = year + (month - 1) // 12, (month - 1) % 12 + 1


def dates(p: Pattern, first: date, *, what: str, fields: tuple[str, ...]) -> list[date]:
    """The occurrence dates of ``p`` from ``first``; raises PatternError past the org's limit or without an end."""
    if p.count is None and p.until is None:
        raise PatternError(f"{what}: a series needs an end (an end date or a number of occurrences)", fields)
    limit = LIMITS[p.freq]
    out: list[date] = []
    for d in _candidates(p, first):
        if (p.until is not None and d > p.until) or (p.count is not None and len(out) >= p.count):
            break
        out.append(d)
        if len(out) > limit:
            raise PatternError(f"{what}: a {p.freq} series can have at most {limit} occurrences", fields)
    if not out:
        raise PatternError(f"{what}: the pattern has no occurrence in its range", fields)
    return out


def classic_pattern(rec: dict) -> Pattern:
    """The Pattern of a Classic series master's Recurrence* fields."""
    kind = rec.get("RecurrenceType")
    if kind not in CLASSIC_TYPES:
        raise PatternError(f"Recurrence Type: bad value for restricted picklist field: {kind}", ("RecurrenceType",))
    mask = rec.get("RecurrenceDayOfWeekMask") or 0
    weekdays = frozenset(wd for wd, bit in _MASK_BIT.items() if mask & bit)
    if kind == "RecursEveryWeekday":
        weekdays = frozenset(range(5))
    nth = None
    if kind in ("RecursMonthlyNth", "RecursYearlyNth"):
        if rec.get("RecurrenceInstance") not in INSTANCES or len(weekdays) != 1:
            raise PatternError("RecurrenceInstance and one day in RecurrenceDayOfWeekMask are required for "
                               f"{kind}", ("RecurrenceInstance", "RecurrenceDayOfWeekMask"))
        nth = -1 if rec["RecurrenceInstance"] == "Last" else INSTANCES.index(rec["RecurrenceInstance"]) + 1
    if kind == "RecursWeekly" and not weekdays:
        raise PatternError("RecurrenceDayOfWeekMask is required for RecursWeekly", ("RecurrenceDayOfWeekMask",))
    month = rec.get("RecurrenceMonthOfYear")
    return Pattern(
        freq=_CLASSIC_FREQ[kind], interval=int(rec.get("RecurrenceInterval") or 1),
        weekdays=weekdays, nth=nth, day_of_month=rec.get("RecurrenceDayOfMonth"),
        month=MONTHS.index(month) + 1 if month in MONTHS else None, until=rec.get("RecurrenceEndDateOnly"),
    )


def parse_rrule(text: str) -> Pattern:
    """The Pattern of a ``Recurrence2PatternText`` value."""
    body = text.strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    parts: dict[str, str] = {}
    for item in filter(None, body.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise PatternError(f"Recurrence2PatternText: invalid RRULE part {item!r}", ("Recurrence2PatternText",))
        parts[key.strip().upper()] = value.strip().upper()
    bad = ("Recurrence2PatternText",)
    freq = {"DAILY": "daily", "WEEKLY": "weekly", "MONTHLY": "monthly", "YEARLY": "yearly"}.get(parts.get("FREQ", ""))
    if freq is None:
        raise PatternError(f"Recurrence2PatternText: unsupported FREQ {parts.get('FREQ')!r}", bad)
    weekdays: set[int] = set()
    nth = None
    for code in filter(None, parts.get("BYDAY", "").split(",")):
        day, ordinal = code[-2:], code[:-2]
        if day not in _RRULE_DAYS:
            raise PatternError(f"Recurrence2PatternText: invalid BYDAY {code!r}", bad)
        weekdays.add(_RRULE_DAYS[day])
        if ordinal:
            nth = int(ordinal)
    try:
        until = None
        if "UNTIL" in parts:
            until = datetime.strptime(parts["UNTIL"][:8], "%Y%m%d").date()
        return Pattern(
            freq=freq, interval=int(parts.get("INTERVAL", "1")), weekdays=frozenset(weekdays), nth=nth,
            day_of_month=int(parts["BYMONTHDAY"]) if "BYMONTHDAY" in parts else None,
            month=int(parts["BYMONTH"]) if "BYMONTH" in parts else None,
            count=int(parts["COUNT"]) if "COUNT" in parts else None, until=until,
            week_start=_RRULE_DAYS.get(parts.get("WKST", "SU"), 6),
        )
    except ValueError:
        raise PatternError(f"Recurrence2PatternText: invalid RRULE {text!r}", bad) from None
