"""Conversions between datetimes and protobuf Timestamps, always in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(moment: datetime | None) -> Timestamp:
    """A Timestamp of `moment` (unset when None)."""
    stamp = Timestamp()
    if moment is not None:
        stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime | None:
    """The UTC datetime of a Timestamp, or None when it is unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)
