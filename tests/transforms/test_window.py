from datetime import date, datetime, timezone

from tests.transforms.builders import TODAY, events, run, sf, user, users, utc
from transforms.window import window_bounds


def test_c1_window_bounds_clamp_month_ends_and_start_date():
    assert window_bounds(date(2025, 3, 31)) == (
        datetime(2025, 2, 28, tzinfo=timezone.utc),
        datetime(2025, 6, 1, tzinfo=timezone.utc),  # 31 May + 1 day
    )
    assert window_bounds(date(2024, 3, 31))[0] == datetime(2024, 2, 29, tzinfo=timezone.utc)
    assert window_bounds(date(2025, 3, 31), date(2025, 3, 10))[0] == datetime(2025, 3, 10, tzinfo=timezone.utc)
    assert window_bounds(date(2025, 3, 31), date(2024, 1, 1))[0] == datetime(2025, 2, 28, tzinfo=timezone.utc)


def test_r6_only_events_overlapping_the_window_are_created():
    # window for 15 Jun 2025: [15 May 00:00, 16 Aug 00:00)
    evs = events(
        sf("in", "a", start=utc(2025, 6, 20, 9)),
        sf("crosses_start", "b", start=utc(2025, 5, 14, 23), hours=2),
        sf("before", "c", start=utc(2025, 5, 14, 22), hours=2),  # ends exactly at the window start
        sf("at_end", "d", start=utc(2025, 8, 16, 0)),
        sf("allday_last", "e", start=utc(2025, 8, 15), hours=24, is_all_day=True),
    )
    created = {r["source_id"] for r in run(evs).deltas.iter_rows(named=True)}
    assert created == {"in", "crosses_start", "allday_last"}


def test_r6_user_start_date_moves_the_window_start():
    evs = events(sf("old", "a", start=utc(2025, 6, 1, 9)), sf("new", "b", start=utc(2025, 6, 12, 9)))
    res = run(evs, usrs=users(user(start_date=date(2025, 6, 10))))
    assert res.deltas["source_id"].to_list() == ["new"]
    assert TODAY == date(2025, 6, 15)
