"""An event NATS would refuse for its size is refused when it is encoded, and a service refuses a
NATS server whose messages cannot hold the largest event it may publish."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from a4co.identity.events.v1 import identity_events_pb2
from services.platform.events.codec import (
    FRAMING_BYTES,
    MAX_EVENT_BYTES,
    EventCodec,
    EventTooLargeError,
    OutgoingEvent,
    check_max_payload,
    encoded_size,
)
from services.platform.events.registry import load_registry
from services.platform.events.topology import Topology


def test_an_event_over_the_limit_is_refused_when_encoded_naming_its_type_and_size() -> None:
    codec = EventCodec(load_registry(), "identity", Topology("t1"))
    fits = codec.encode(
        identity_events_pb2.UserRegistered(user_id="u-1", locality="x" * 1000), aggregate_id="u-1"
    )
    assert 1000 < encoded_size(fits) < 2000, "body and headers, as NATS counts them"
    assert encoded_size(fits) == len(fits.body) + sum(len(k) + len(v) + 4 for k, v in fits.headers.items())

    with pytest.raises(EventTooLargeError) as refused:
        codec.encode(
            identity_events_pb2.UserRegistered(user_id="u-1", locality="x" * MAX_EVENT_BYTES),
            aggregate_id="u-1",
        )
    message = str(refused.value)
    assert "a4co.identity.UserRegistered" in message
    assert f"over the limit of {MAX_EVENT_BYTES:,}" in message


def test_an_event_just_under_the_limit_with_its_headers_is_encoded_and_one_byte_more_is_not() -> None:
    codec = EventCodec(load_registry(), "identity", Topology("t1"))
    # One moment for every encoding: the timestamp's nanoseconds are a varint of 1 to 5 bytes, so
    # the current time would make two encodings of the same event differ in size.
    moment = datetime(2026, 12, 1, 6, 0, 0, 123456, tzinfo=UTC)

    def encode(locality_size: int) -> OutgoingEvent:
        event = identity_events_pb2.UserRegistered(user_id="u-1", locality="x" * locality_size)
        return codec.encode(event, aggregate_id="u-1", occurred_at=moment)

    # The envelope's length prefix of the locality takes the same three bytes either side of it.
    room = MAX_EVENT_BYTES - encoded_size(encode(100_000))
    assert encoded_size(encode(100_000 + room)) == MAX_EVENT_BYTES
    with pytest.raises(EventTooLargeError):
        encode(100_001 + room)


def test_a_nats_server_with_too_small_a_max_payload_is_refused_at_start() -> None:
    check_max_payload(1024 * 1024)  # NATS's default
    check_max_payload(MAX_EVENT_BYTES + FRAMING_BYTES)
    with pytest.raises(RuntimeError, match="max_payload"):
        check_max_payload(MAX_EVENT_BYTES + FRAMING_BYTES - 1)
