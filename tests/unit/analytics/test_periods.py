"""A period divided into the days, weeks and months of a time zone: local midnights, whatever the
clocks do, and the first and last buckets cut to the period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.analytics.periods import MAX_BUCKETS, Interval, TooManyBucketsError, bounds, time_zone

MADRID = ZoneInfo("Europe/Madrid")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MADRID)


def lengths(lows: list[datetime], end: datetime) -> list[timedelta]:
    """Each bucket's length in elapsed time (the bounds are in UTC)."""
    assert all(low.tzinfo is UTC for low in lows)
    return [high - low for low, high in zip(lows, [*lows[1:], end.astimezone(UTC)], strict=True)]


def test_days_start_at_local_midnight_and_one_lasts_23_hours_when_the_clocks_go_forward() -> None:
    start, end = local(2026, 3, 28), local(2026, 3, 31)
    lows = bounds(start.astimezone(UTC), end.astimezone(UTC), Interval.DAY, MADRID)
    assert lows == [local(2026, 3, 28), local(2026, 3, 29), local(2026, 3, 30)]
    assert lengths(lows, end) == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]
    autumn = bounds(local(2026, 10, 25), local(2026, 10, 26), Interval.DAY, MADRID)
    assert lengths(autumn, local(2026, 10, 26)) == [timedelta(hours=25)]


def test_the_first_and_last_buckets_are_cut_to_the_period() -> None:
    start, end = local(2026, 1, 5, 18), local(2026, 1, 7, 9, 30)
    assert bounds(start, end, Interval.DAY, MADRID) == [start, local(2026, 1, 6), local(2026, 1, 7)]
    # A period inside one day is one bucket; a day's UTC midnight is not a boundary in Madrid.
    assert bounds(local(2026, 1, 5, 0, 30), local(2026, 1, 5, 23), Interval.DAY, MADRID) == [
        local(2026, 1, 5, 0, 30)
    ]


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    sunday = local(2026, 11, 29)
    weeks = bounds(sunday, local(2026, 12, 15), Interval.WEEK, MADRID)
    assert weeks == [sunday, local(2026, 11, 30), local(2026, 12, 7), local(2026, 12, 14)]
    assert all(w.astimezone(MADRID).weekday() == 0 for w in weeks[1:])
    months = bounds(local(2025, 11, 15), local(2027, 1, 1), Interval.MONTH, MADRID)
    assert months[:3] == [local(2025, 11, 15), local(2025, 12, 1), local(2026, 1, 1)]
    assert (len(months), months[-1]) == (14, local(2026, 12, 1))


def test_the_time_zone_decides_the_day_a_late_evening_falls_in() -> None:
    evening = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)  # 00:30 on the 6th in Madrid
    period = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 8, tzinfo=UTC))
    in_madrid = bounds(*period, Interval.DAY, MADRID)
    in_utc = bounds(*period, Interval.DAY, UTC)
    # Madrid: the 5th from 01:00 (the period's start), then the 6th from 23:00 UTC on the 5th.
    assert sum(low <= evening for low in in_madrid) == 2
    assert sum(low <= evening for low in in_utc) == 1  # UTC: still the 5th


def test_a_period_of_more_buckets_than_the_limit_is_refused() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert len(bounds(start, start + timedelta(days=MAX_BUCKETS), Interval.DAY, UTC)) == MAX_BUCKETS
    with pytest.raises(TooManyBucketsError, match="more than 400 days"):
        bounds(start, start + timedelta(days=MAX_BUCKETS + 1), Interval.DAY, UTC)


@pytest.mark.parametrize("name", ["Europe/Madrid", "Atlantic/Canary", "UTC", ""])
def test_iana_names_are_time_zones(name: str) -> None:
    assert time_zone(name) is not None


@pytest.mark.parametrize("name", ["Europe/Jaen", "../../etc/passwd", "Europe//Madrid", "+01:00", "x" * 65])
def test_anything_else_is_not(name: str) -> None:
    assert time_zone(name) is None
