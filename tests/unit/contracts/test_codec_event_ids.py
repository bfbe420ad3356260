"""An envelope's event id must be a UUID: the inbox records it as one, and a consumer writes it
into its first statement."""

from __future__ import annotations

import uuid

import pytest

from a4co.events.v1 import envelope_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.codec import EventCodec, EventDecodeError
from services.platform.events.registry import load_registry
from services.platform.events.topology import Topology

CODEC = EventCodec(load_registry(), "orders", Topology("t1"))


def with_id(event_id: str) -> bytes:
    out = CODEC.encode(order_events_pb2.OrderCreated(order_id="o-1"), aggregate_id="o-1")
    envelope = envelope_pb2.EventEnvelope.FromString(out.body)
    envelope.event_id = event_id
    return envelope.SerializeToString()


@pytest.mark.parametrize("event_id", [str(uuid.uuid4()), str(uuid.uuid4()).upper()])
def test_a_uuid_in_either_case_is_read(event_id: str) -> None:
    assert CODEC.decode(with_id(event_id)).event_id == event_id


@pytest.mark.parametrize(
    "event_id",
    [
        "o-1",
        "'; DROP TABLE inbox; --",
        "{" + str(uuid.uuid4()) + "}",
        "urn:uuid:" + str(uuid.uuid4()),
        uuid.uuid4().hex,
        str(uuid.uuid4()) + "\n",
        "g" + str(uuid.uuid4())[1:],
    ],
)
def test_any_other_id_is_refused_as_undecodable(event_id: str) -> None:
    with pytest.raises(EventDecodeError, match="is not a UUID"):
        CODEC.decode(with_id(event_id))
