"""`a4co trace` against real streams, run as an operator runs it."""

from __future__ import annotations

from dataclasses import replace

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate

from a4co.orders.events.v1 import order_events_pb2
from a4co.payments.events.v1 import payment_events_pb2
from services.cli import trace
from services.platform.events.codec import EventCodec
from services.platform.events.consumer import HandlerContext
from services.platform.events.dlq import DeadLetterQueue
from services.platform.local_servers import ServerUrls
from services.platform.resilience import Backoff
from tests.integration.events.rig import FAST, Rig, consumers_on, order_created, orders_created
from tests.support.cli import run_a4co_on as a4co
from tests.support.waiting import eventually


async def test_an_order_s_events_are_drawn_as_a_tree(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    await orders_created(rig, "o-1", "o-2")
    code, out = await a4co(urls, prefix, "trace", "o-2")
    assert code == 0, out
    assert out.startswith("order o-2\n"), out
    assert "OrderCreated from orders" in out
    assert out.count("OrderCreated") == 1, "o-1's event is not o-2's"


async def test_the_trace_a_flow_belongs_to_is_named_for_jaeger(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """o-1 was created by a call that came with a client's W3C trace context: its flow names that
    trace, which Jaeger finds it by; o-2's flow is not in it."""
    traced = propagate.extract({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    token = otel_context.attach(traced)
    try:
        await rig.commit(order_created("o-1"), "o-1")
    finally:
        otel_context.detach(token)
    await orders_created(rig, "o-2", committed=1)
    code, out = await a4co(urls, prefix, "trace", "o-1")
    assert code == 0, out
    assert ", trace 4bf92f3577b34da6a3ce929d0e0e4736)" in out.splitlines()[1], out
    code, out = await a4co(urls, prefix, "trace", "o-2")
    assert code == 0, out
    assert "4bf92f3577b34da6a3ce929d0e0e4736" not in out, out


async def test_a_consumer_that_gave_up_on_an_event_is_shown_under_it(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """payments gives up on o-2's OrderCreated: its dead letter is drawn under the event, saying
    who, why and how to see it; o-1's, which payments handled, has none."""

    async def handler(event: Message, ctx: HandlerContext) -> None:
        if ctx.event.envelope.aggregate_id == "o-2":
            raise ValueError("no tariff for [jaén]")

    quick = replace(FAST, backoff=Backoff(first_s=0.05, cap_s=0.1))
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: handler}, policy=quick)
    await orders_created(rig, "o-1", "o-2")
    await eventually(lambda: consumer.stats.dead_lettered == 1, what="o-2's event dead-lettered")
    [letter] = await DeadLetterQueue(rig.js, rig.topology).browse()

    code, out = await a4co(urls, prefix, "trace", "o-2")
    assert code == 0, out
    lines = out.splitlines()
    created = next(i for i, line in enumerate(lines) if "OrderCreated from orders" in line)
    said = lines[created + 1]
    assert "dead-lettered by payments after 3 deliveries (HANDLER_FAILED): ValueError: no tariff" in said
    assert f"(a4co dlq show {letter.seq})" in out, out
    assert "no tariff for [jaén]" in out, out  # as it is, not taken for markup
    code, out = await a4co(urls, prefix, "trace", "o-1")
    assert code == 0, out
    assert "dead-lettered" not in out, out


async def test_an_order_no_event_mentions_is_said(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    await orders_created(rig, "o-1")
    code, out = await a4co(urls, prefix, "trace", "o-9")
    assert (code, out.strip()) == (1, "no event mentions order o-9")


async def test_a_deployment_without_its_streams_is_said(urls: ServerUrls, prefix: str) -> None:
    code, out = await a4co(urls, prefix, "trace", "o-1")
    assert code == 2, out
    assert f"has no stream {prefix}_" in out, out
    assert "Traceback" not in out


async def _published(rig: Rig, *events: tuple[object, str]) -> list[int]:
    """Each (event, aggregate id) encoded and published straight to its stream: their sequences."""
    sequences = []
    for event, aggregate_id in events:
        out = rig.codec.encode(event, aggregate_id=aggregate_id)  # type: ignore[arg-type]
        sequences.append((await rig.js.publish(out.subject, out.body, headers=out.headers)).seq)
    return sequences


async def test_every_batch_of_every_stream_is_read_and_nothing_is_left_behind(rig: Rig) -> None:
    """Read a few messages at a time: the order's events found past the first batch, in its own
    stream and in another whose payload names it, past a message deleted in between; the others'
    left out; and no consumer left on any stream."""
    await rig.ensure_streams()
    paid = payment_events_pb2.PaymentProcessed(payment_id="p-1", order_id="o-2")
    sequences = await _published(
        rig,
        *[(order_created(f"o-{n}"), f"o-{n}") for n in (1, 3, 4, 5, 6)],
        (order_created("o-2"), "o-2"),
        (payment_events_pb2.PaymentProcessed(payment_id="p-0", order_id="o-1"), "p-0"),
        (paid, "p-1"),
    )
    await rig.js.delete_msg(rig.topology.stream("ORDERS"), sequences[2])
    codec = EventCodec(rig.registry, "cli", rig.topology)
    events = await trace.events_of(rig.js, codec, "o-2", batch=2)
    assert [(e.definition.name, e.envelope.aggregate_id) for e in events] == [
        ("OrderCreated", "o-2"),
        ("PaymentProcessed", "p-1"),
    ]
    assert await consumers_on(rig.js, *(rig.topology.stream(s.name) for s in rig.registry.streams)) == []
