"""Recurring events through simple-salesforce: Classic series (IsRecurrence) and Lightning event series (IsRecurrence2)."""

from __future__ import annotations

from datetime import datetime

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from .conftest_salesforce import T0, UTC, iso, people, sb, sf, sf_server  # noqa: F401


def _rows(sf, where: str) -> list[dict]:
    fields = ("Id, Subject, StartDateTime, DurationInMinutes, IsRecurrence, RecurrenceActivityId, RecurrenceType, "
              "IsRecurrence2, IsRecurrence2Exception, GroupEventType, Recurrence2PatternText")
    return sf.query_all(f"SELECT {fields} FROM Event WHERE {where} ORDER BY StartDateTime, GroupEventType")["records"]


def _weekly(owner: str, **extra) -> dict:
    # T0 is a Tuesday: Tuesdays (4) and Thursdays (16) until 10 December
    return {"Subject": "1:1", "OwnerId": owner, "StartDateTime": iso(T0), "DurationInMinutes": 30, "IsRecurrence": True,
            "RecurrenceType": "RecursWeekly", "RecurrenceDayOfWeekMask": 4 | 16, "RecurrenceEndDateOnly": "2026-12-10",
            "RecurrenceTimeZoneSidKey": "Europe/Berlin", **extra}


def test_classic_series_is_a_master_and_a_row_per_occurrence(sf, people):
    master = sf.Event.create(_weekly(people.ann))["id"]
    rows = _rows(sf, f"Id = '{master}' OR RecurrenceActivityId = '{master}'")
    head = next(r for r in rows if r["Id"] == master)
    assert head["IsRecurrence"] is True and head["RecurrenceType"] == "RecursWeekly" and head["RecurrenceActivityId"] is None
    occurrences = [r for r in rows if r["Id"] != master]
    assert [r["StartDateTime"][:10] for r in occurrences] == ["2026-11-24", "2026-11-26", "2026-12-01", "2026-12-03",
                                                               "2026-12-08", "2026-12-10"]
    assert all(r["IsRecurrence"] is False and r["RecurrenceActivityId"] == master and r["RecurrenceType"] is None
               and r["DurationInMinutes"] == 30 for r in occurrences)
    # "IsRecurrence = false" reads every occurrence and never the master
    assert {r["Id"] for r in _rows(sf, "IsRecurrence = false")} == {r["Id"] for r in occurrences}
    describe = {f["name"]: f for f in sf.Event.describe()["fields"]}
    assert describe["IsRecurrence"]["createable"] and not describe["IsRecurrence"]["updateable"]
    assert describe["RecurrenceActivityId"]["referenceTo"] == ["Event"] and not describe["RecurrenceActivityId"]["createable"]


def test_classic_series_keep_their_wall_time_in_the_series_time_zone(sf, people):
    # 08:00 in Berlin: 07:00Z in winter, 06:00Z after the switch to summer time on 29 March 2026
    master = sf.Event.create(_weekly(people.ann, StartDateTime=iso(datetime(2026, 3, 24, 7, tzinfo=UTC)),
                                     RecurrenceDayOfWeekMask=4, RecurrenceEndDateOnly="2026-04-01"))["id"]
    assert [r["StartDateTime"][11:16] for r in _rows(sf, f"RecurrenceActivityId = '{master}'")] == ["07:00", "06:00"]


def test_classic_occurrences_change_alone_and_the_master_changes_all(sf, people):
    master = sf.Event.create(_weekly(people.ann))["id"]
    occ = [r["Id"] for r in _rows(sf, f"RecurrenceActivityId = '{master}'")]
    sf.Event.update(occ[1], {"Subject": "1:1 (moved)", "StartDateTime": iso(datetime(2026, 11, 27, 9, tzinfo=UTC)),
                             "DurationInMinutes": 30})
    sf.Event.delete(occ[2])
    rows = {r["Id"]: r for r in _rows(sf, f"RecurrenceActivityId = '{master}'")}
    assert len(rows) == 5 and rows[occ[1]]["Subject"] == "1:1 (moved)" and occ[2] not in rows
    with pytest.raises(SalesforceMalformedRequest):
        sf.Event.update(occ[0], {"RecurrenceType": "RecursDaily"})  # the pattern lives on the master only
    sf.Event.update(master, {"Description": "agenda"})
    assert {sf.Event.get(i)["Description"] for i in rows} == {"agenda"}
    # a new pattern re-creates the occurrences
    sf.Event.update(master, {"RecurrenceEndDateOnly": "2026-11-30"})
    assert [r["StartDateTime"][:10] for r in _rows(sf, f"RecurrenceActivityId = '{master}'")] == ["2026-11-24", "2026-11-26"]
    sf.Event.delete(master)
    assert _rows(sf, f"Id = '{master}' OR RecurrenceActivityId = '{master}'") == []


def test_classic_series_limits(sf, people):
    # weekly series hold at most 53 occurrences (knowledge article 000212481)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Event.create(_weekly(people.ann, RecurrenceDayOfWeekMask=4, RecurrenceEndDateOnly="2028-01-01"))
    assert exc.value.content[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Event.create(_weekly(people.ann, RecurrenceEndDateOnly=None))
    assert exc.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_lightning_series_pattern_record_and_events(sf, people):
    res = sf.Event.create({"Subject": "Standup", "OwnerId": people.ann, "StartDateTime": iso(T0), "DurationInMinutes": 15,
                           "IsRecurrence2": True, "Recurrence2PatternText": "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;INTERVAL=1;COUNT=4",
                           "Recurrence2PatternTimeZone": "Europe/Berlin"})
    rows = _rows(sf, "IsRecurrence2 = true")
    pattern = [r for r in rows if r["GroupEventType"] == "3"]
    events = [r for r in rows if r["GroupEventType"] != "3"]
    assert len(pattern) == 1 and pattern[0]["IsRecurrence"] is False  # not a Classic master: IsRecurrence is false
    assert [r["StartDateTime"][:10] for r in events] == ["2026-11-24", "2026-11-26", "2026-12-01", "2026-12-03"]
    assert res["id"] == events[0]["Id"]  # the first occurrence names the series
    assert {r["Recurrence2PatternText"] for r in rows} == {"RRULE:FREQ=WEEKLY;BYDAY=TU,TH;INTERVAL=1;COUNT=4"}
    sf.Event.update(events[1]["Id"], {"Subject": "Standup (demo day)"})
    assert [r["IsRecurrence2Exception"] for r in _rows(sf, "IsRecurrence2 = true AND GroupEventType != '3'")] == [
        False, True, False, False]
    # a plain delete removes one event; fromThisEventOnwards the rest; from the first, the whole series
    sf.Event.delete(events[3]["Id"])
    sf.restful(f"sobjects/Event/{events[2]['Id']}/fromThisEventOnwards", method="DELETE")
    assert [r["Id"] for r in _rows(sf, "IsRecurrence2 = true AND GroupEventType != '3'")] == [events[0]["Id"], events[1]["Id"]]
    sf.restful(f"sobjects/Event/{events[0]['Id']}/fromThisEventOnwards", method="DELETE")
    assert _rows(sf, "IsRecurrence2 = true") == []


def test_a_pattern_rrule_the_sandbox_cannot_read_is_refused(sf, people):
    for text in ("RRULE:FREQ=HOURLY;COUNT=3", "RRULE:FREQ=DAILY", "RRULE:FREQ=DAILY;COUNT=101"):
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.Event.create({"Subject": "x", "OwnerId": people.ann, "StartDateTime": iso(T0), "DurationInMinutes": 15,
                             "IsRecurrence2": True, "Recurrence2PatternText": text})
        assert exc.value.content[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION", text
