"""Timestamps from datetimes: the same as protobuf's own conversion, before and after 1970."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.platform.timestamps import from_timestamp, to_timestamp


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 28, 13, 49, 1, 123456, tzinfo=UTC),
        datetime(1960, 5, 3, 1, 2, 3, 456789, tzinfo=timezone(timedelta(hours=2))),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 1, 12, 0),  # naive: local time
    ],
)
def test_as_protobuf_converts_it(moment: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(moment.astimezone(UTC))
    assert to_timestamp(moment) == expected
    assert from_timestamp(to_timestamp(moment)) == moment.astimezone(UTC)


def test_none_is_unset() -> None:
    assert to_timestamp(None) == Timestamp()
    assert from_timestamp(Timestamp()) is None
