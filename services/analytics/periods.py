"""A period divided into the calendar days, weeks or months of a time zone (GetSalesSeries).

Pure functions: the buckets' bounds are computed here, and PostgreSQL only counts the sales in
each (`width_bucket` over the lower bounds). A day is the time zone's: in Europe/Madrid the day
the clocks go forward lasts 23 hours, and a bucket of it ends at the next local midnight.
"""

from __future__ import annotations

import enum
import zoneinfo
from datetime import UTC, datetime, time, timedelta, tzinfo

DEFAULT_TIME_ZONE = "Europe/Madrid"  # the artisans' own
MAX_TIME_ZONE = 64  # characters of an IANA name ("America/Argentina/ComodRivadavia" is 32)
MAX_BUCKETS = 400  # a year and a month of days


class Interval(enum.Enum):
    """How long a bucket is."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class TooManyBucketsError(ValueError):
    """A period longer than `MAX_BUCKETS` buckets."""


def time_zone(name: str) -> tzinfo | None:
    """The IANA time zone of that name (the default for ''), or None when there is none."""
    if len(name) > MAX_TIME_ZONE:
        return None
    try:
        return zoneinfo.ZoneInfo(name or DEFAULT_TIME_ZONE)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # ValueError: not a key ("../x", "a//b")
        return None


def _first(local: datetime, interval: Interval) -> datetime:
    """The start of the day, week or month `local` falls in, in its own time zone."""
    day = local.date()
    if interval is Interval.WEEK:
        day -= timedelta(days=day.weekday())
    elif interval is Interval.MONTH:
        day = day.replace(day=1)
    return datetime.combine(day, time(), local.tzinfo)


def _next(start: datetime, interval: Interval) -> datetime:
    """The start of the day, week or month after the one starting at `start` (local midnight)."""
    day = start.date()
    if interval is Interval.DAY:
        day += timedelta(days=1)
    elif interval is Interval.WEEK:
        day += timedelta(days=7)
    else:
        day = day.replace(year=day.year + day.month // 12, month=day.month % 12 + 1)
    return datetime.combine(day, time(), start.tzinfo)


def bounds(start: datetime, end: datetime, interval: Interval, zone: tzinfo) -> list[datetime]:
    """The lower bounds of the buckets of [start, end): `start`, then every start of a day, week
    or month of `zone` after it and before `end`, in UTC. The last bucket ends at `end`.
    TooManyBucketsError past `MAX_BUCKETS`."""
    found = [start.astimezone(UTC)]
    boundary = _first(start.astimezone(zone), interval)
    while True:
        boundary = _next(boundary, interval)
        if boundary >= end:
            return found
        if len(found) == MAX_BUCKETS:
            raise TooManyBucketsError(f"more than {MAX_BUCKETS} {interval.value}s")
        found.append(boundary.astimezone(UTC))
