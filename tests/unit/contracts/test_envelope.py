"""Every event type survives the trip through the envelope's wire format unchanged."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import any_pb2

from a4co.events.v1 import envelope_pb2
from services.platform.events.registry import EventDef, load_registry
from tests.support.protos import populate

REGISTRY = load_registry()


@pytest.mark.parametrize("event", REGISTRY.events, ids=lambda e: f"{e.name}-v{e.version}")
def test_envelope_round_trips_every_event(event: EventDef) -> None:
    payload = populate(event.message_class())
    envelope = envelope_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        aggregate_id="agg-1",
        aggregate_type=event.aggregate_type,
        event_type=event.event_type,
        event_version=event.version,
        source=event.context,
        metadata=envelope_pb2.EventMetadata(
            correlation_id="corr",
            causation_id="cause",
            user_id="user",
            retry_count=2,
            trace=envelope_pb2.TraceContext(
                traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            ),
        ),
    )
    envelope.occurred_at.GetCurrentTime()
    envelope.payload.Pack(payload)

    decoded = envelope_pb2.EventEnvelope.FromString(envelope.SerializeToString())

    assert decoded == envelope
    found = REGISTRY.get(decoded.event_type, decoded.event_version)
    assert found is event
    assert decoded.payload.Is(found.descriptor)
    unpacked = found.message_class()
    assert decoded.payload.Unpack(unpacked)
    assert unpacked == payload
    assert unpacked.ByteSize() > 0


def test_a_payload_of_another_type_does_not_unpack() -> None:
    created, delivered = (
        REGISTRY.get(t, 1) for t in ("a4co.orders.OrderCreated", "a4co.orders.OrderDelivered")
    )
    packed = any_pb2.Any()
    packed.Pack(populate(created.message_class()))
    assert not packed.Unpack(delivered.message_class())
