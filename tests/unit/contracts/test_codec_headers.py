"""The NATS headers of an encoded event follow the CloudEvents NATS binding."""

from __future__ import annotations

from datetime import UTC, datetime

from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.codec import EventCodec
from services.platform.events.registry import load_registry
from services.platform.events.topology import Topology
from services.platform.flow import Flow


def test_headers_carry_the_cloudevents_attributes_and_the_dedup_id() -> None:
    codec = EventCodec(load_registry(), "orders", Topology("t1"))
    out = codec.encode(
        order_events_pb2.OrderCreated(order_id="o-1"),
        aggregate_id="o-1",
        flow=Flow("corr-1", "cause-1", "user-1"),
        occurred_at=datetime(2026, 11, 28, 9, 30, tzinfo=UTC),
    )
    h = out.headers
    assert h["ce-specversion"] == "1.0"
    assert h["ce-id"] == h["Nats-Msg-Id"] == out.event_id
    assert h["ce-type"] == "a4co.orders.OrderCreated"
    assert h["ce-source"] == "/a4co/orders"
    assert h["ce-time"] == "2026-11-28T09:30:00.000000Z"
    assert h["ce-subject"] == "o-1"
    assert h["ce-dataschema"] == "a4co.orders.events.v1.OrderCreated;v1"
    assert h["content-type"] == "application/protobuf"
    assert out.subject == "t1.a4co.orders.order.created"

    decoded = codec.decode(out.body)
    meta = decoded.envelope.metadata
    assert (meta.correlation_id, meta.causation_id, meta.user_id) == ("corr-1", "cause-1", "user-1")
    assert decoded.flow == Flow("corr-1", out.event_id, "user-1"), "handling it continues the flow"


def test_an_event_declared_expires_says_in_a_header_how_long_its_stream_keeps_it() -> None:
    import pytest

    from a4co.identity.events.v1 import identity_events_pb2

    codec = EventCodec(load_registry(), "identity", Topology("t1"))
    reset = identity_events_pb2.PasswordResetRequested(user_id="u-1", code="7KQ2M9XH4P")
    assert codec.encode(reset, aggregate_id="u-1", ttl_s=1800).headers["Nats-TTL"] == "1800s"
    assert codec.encode(reset, aggregate_id="u-1", ttl_s=0.2).headers["Nats-TTL"] == "1s", "JetStream's least"
    assert codec.encode(reset, aggregate_id="u-1", ttl_s=2.5).headers["Nats-TTL"] == "3s"
    with pytest.raises(ValueError, match="needs ttl_s"):
        codec.encode(reset, aggregate_id="u-1")
    with pytest.raises(ValueError, match="takes no ttl_s"):
        codec.encode(order_events_pb2.OrderCreated(order_id="o-1"), aggregate_id="o-1", ttl_s=60)
    assert (
        "Nats-TTL"
        not in codec.encode(order_events_pb2.OrderCreated(order_id="o-1"), aggregate_id="o-1").headers
    )
