"""Conversions between datetimes and protobuf Timestamps, always in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(moment: datetime | None) -> Timestamp:
    """A Timestamp of `moment` (unset when None; a naive datetime is taken as local time).

    Integer arithmetic on the timedelta since the epoch (`set_timestamp`): what
    `Timestamp.FromDatetime` computes, at a quarter of its cost.
    """
    stamp = Timestamp()
    if moment is not None:
        set_timestamp(stamp, moment)
    return stamp


def optional_timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp of `moment`, or None to leave a message's field absent (a moment that has not
    come, such as a withdrawal: `HasField` then says so)."""
    return to_timestamp(moment) if moment is not None else None


def set_timestamp(target: Timestamp, moment: datetime) -> None:
    """Write `moment` into a message's Timestamp field in place, with no message built and copied
    (every product of a search page has one)."""
    since = (moment if moment.tzinfo else moment.astimezone(UTC)) - EPOCH
    target.seconds = since.days * 86_400 + since.seconds
    target.nanos = since.microseconds * 1_000


def from_timestamp(stamp: Timestamp) -> datetime | None:
    """The UTC datetime of a Timestamp, or None when it is unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)
