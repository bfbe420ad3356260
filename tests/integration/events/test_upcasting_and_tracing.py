"""A v1 -> v2 change end to end through an upcaster, and one trace from publisher to consumer."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf.message import Message
from grpc_tools import protoc
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.codec import EventCodec
from services.platform.events.consumer import HandlerContext
from services.platform.events.dlq import DeadLetterQueue
from services.platform.events.registry import EventRegistry, event_of_class, stream_of_file
from services.platform.events.streams import ensure_streams
from services.platform.events.topology import Topology
from services.platform.events.upcasting import Upcasters
from services.platform.local_servers import ServerUrls
from services.platform.settings import StreamSettings
from tests.integration.events.rig import Rig, make_rig, order_created, record_effect, running
from tests.support.waiting import eventually
from tools.protoset import protoc_include

ROOT = Path(__file__).resolve().parents[3]
TEST_PROTOS = Path(__file__).parent / "protos"


@pytest.fixture(scope="module")
def parcels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, ModuleType]]:
    """Compile the test-only ParcelShipped v1 and v2 and import them."""
    out = tmp_path_factory.mktemp("parcels_gen")
    files = [str(p.relative_to(TEST_PROTOS)) for p in sorted(TEST_PROTOS.rglob("*.proto"))]
    args = [
        "protoc",
        f"-I{TEST_PROTOS}",
        f"-I{ROOT / 'proto'}",
        f"-I{protoc_include()}",
        f"--python_out={out}",
    ]
    assert protoc.main([*args, *files]) == 0
    sys.path.insert(0, str(out))
    try:
        v1 = importlib.import_module("a4cotest.parcels.events.v1.parcel_events_pb2")
        v2 = importlib.import_module("a4cotest.parcels.events.v2.parcel_events_pb2")
        yield v1, v2
    finally:
        sys.path.remove(str(out))


def registry_with(base: EventRegistry, *modules: ModuleType) -> EventRegistry:
    events = [e for e in base.events]
    streams = {s.name: s for s in base.streams}
    for module in modules:
        stream = stream_of_file(module.DESCRIPTOR)
        assert stream is not None
        streams[stream.name] = stream
        events += [
            e
            for name in module.DESCRIPTOR.message_types_by_name
            if (e := event_of_class(getattr(module, name)))
        ]
    return EventRegistry(events, streams.values())


def grams_to_kilograms(v2: Any) -> Callable[[Message], Message]:
    def upcast(old: Any) -> Message:
        shipped: Message = v2.ParcelShipped(
            parcel_id=old.parcel_id, weight_kg=old.weight_grams / 1000, carrier="unknown"
        )
        return shipped

    return upcast


async def test_a_v2_consumer_receives_stored_v1_events_through_the_upcaster(
    parcels: tuple[ModuleType, ModuleType],
    urls: ServerUrls,
    nc: NATS,
    registry: EventRegistry,
    topology: Topology,
) -> None:
    v1, v2 = parcels
    full = registry_with(registry, v1, v2)
    rig = await make_rig(urls.database_url, nc, full, topology)
    try:
        await ensure_streams(rig.js, full, topology, StreamSettings())
        # The producer still at v1 stored an event; then it moved to v2 and stored another.
        await rig.commit(v1.ParcelShipped(parcel_id="p-1", weight_grams=2500), "p-1")
        await rig.commit(v2.ParcelShipped(parcel_id="p-2", weight_kg=0.75, carrier="Correos"), "p-2")

        received: list[Message] = []

        async def on_shipped(event: Message, ctx: HandlerContext) -> None:
            received.append(event)

        upcasters = Upcasters()
        upcasters.register("a4co.parcels.ParcelShipped", 1, grams_to_kilograms(v2))
        consumer = await rig.consumer(
            "geo", {v2.ParcelShipped: on_shipped}, stream="PARCELS", upcasters=upcasters
        )
        # A consumer that knows no upcaster cannot take v1: it dead-letters it, losing nothing.
        strict = await rig.consumer("cms", {v2.ParcelShipped: on_shipped}, stream="PARCELS")
        async with running(rig.relay()):
            await eventually(lambda: consumer.stats.handled == 2, what="both versions handled")
            await eventually(lambda: strict.stats.dead_lettered == 1)
    finally:
        await rig.close()

    assert all(type(e) is v2.ParcelShipped for e in received[:2])
    by_id = {e.parcel_id: e for e in received[:2]}  # type: ignore[attr-defined]
    assert by_id["p-1"].weight_kg == pytest.approx(2.5)  # type: ignore[attr-defined]
    assert by_id["p-1"].carrier == "unknown"  # type: ignore[attr-defined]
    assert by_id["p-2"].carrier == "Correos"  # type: ignore[attr-defined]
    letters = await DeadLetterQueue(nc.jetstream(), topology).browse()
    assert [(x.consumer, x.reason) for x in letters] == [("cms", "UNKNOWN_EVENT")]
    assert "no upcaster" in letters[0].error


async def test_the_publisher_span_is_the_parent_of_the_consumer_span(
    rig: Rig, spans: InMemorySpanExporter
) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    out = await rig.commit(order_created("o-trace"), "o-trace")
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.handled == 1)

    finished = spans.get_finished_spans()
    of_event = [s for s in finished if (s.attributes or {}).get("messaging.message.id") == out.event_id]
    producer = [s for s in of_event if s.kind == SpanKind.PRODUCER]
    consumed = [s for s in of_event if s.kind == SpanKind.CONSUMER]
    assert len(producer) == 1
    assert len(consumed) == 1
    assert consumed[0].parent is not None
    assert consumed[0].parent.span_id == producer[0].context.span_id
    assert consumed[0].context.trace_id == producer[0].context.trace_id
    assert out.headers["traceparent"].split("-")[2] == format(producer[0].context.span_id, "016x")


async def test_the_flow_carries_correlation_and_causation(rig: Rig) -> None:
    from a4co.payments.events.v1 import payment_events_pb2

    writer_codec = EventCodec(rig.registry, "payments", rig.topology)
    from services.platform.events.outbox import OutboxWriter

    async def charge(event: Message, ctx: HandlerContext) -> None:
        await ctx.publish(payment_events_pb2.PaymentProcessed(order_id="o-flow"), aggregate_id="pay-1")

    writer = OutboxWriter(writer_codec, rig.topology.schema("payments"))
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: charge}, outbox=writer)
    cause = await rig.commit(order_created("o-flow"), "o-flow")
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.handled == 1)
    row = await consumer.pool.fetchrow("SELECT body FROM outbox")
    assert row is not None
    follow_up = writer_codec.decode(row["body"])
    original = rig.codec.decode(cause.body)
    assert follow_up.envelope.metadata.causation_id == cause.event_id
    assert follow_up.envelope.metadata.correlation_id == original.envelope.metadata.correlation_id
