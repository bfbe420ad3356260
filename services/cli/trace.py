"""`a4co trace ORDER_ID`: every event of one order, as the tree of what caused what, with the
dead letters of those a consumer gave up on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

import typer
from nats.js import JetStreamContext
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from a4co.orders.events.v1 import order_events_pb2
from services.cli.connection import NatsUrl, Prefix, Target, jetstream
from services.platform.events.codec import EventCodec, EventDecodeError, IncomingEvent, UnknownEventError
from services.platform.events.dlq import DeadLetter, DeadLetterQueue
from services.platform.events.registry import load_registry
from services.platform.events.streams import READ_BATCH, read_stream
from services.platform.events.topology import DLQ_STREAM, Topology

console = Console()


async def events_of(
    js: JetStreamContext, codec: EventCodec, order_id: str, *, batch: int = READ_BATCH
) -> list[IncomingEvent]:
    """Every stored event about the order (its id as the aggregate, or in the payload)."""
    found = []
    wanted = order_id.encode()
    for stream in codec.registry.streams:
        if stream.name == DLQ_STREAM:  # its letters are drawn under their events, by `tree`
            continue
        async for msg in read_stream(js, codec.topology, stream.name, batch=batch):
            # The id is in the body's bytes wherever it is in the event (protobuf keeps a string's
            # UTF-8 as it is, and an Any its message's bytes): the others need not be decoded.
            if wanted not in msg.data:
                continue
            try:
                event = codec.decode(msg.data)
            except (EventDecodeError, UnknownEventError):
                continue
            if event.envelope.aggregate_id == order_id or getattr(event.payload, "order_id", "") == order_id:
                found.append(event)
    return sorted(found, key=lambda e: e.envelope.occurred_at.ToNanoseconds())


async def dead_letters_of(
    js: JetStreamContext, topology: Topology, events: list[IncomingEvent]
) -> list[DeadLetter]:
    """The dead letters of those events: a consumer that gave up on one of them (its `ce-id`)."""
    ids = {event.event_id for event in events}
    return [letter async for letter in DeadLetterQueue(js, topology).letters() if letter.event_id in ids]


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C `traceparent` ("00-<trace id>-<span id>-<flags>"); "" for none."""
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return ""


def tree(order_id: str, events: list[IncomingEvent], dead: Sequence[DeadLetter] = ()) -> Tree:
    """The causation tree: each event under the event (or the call) that caused it, and under it
    each consumer that gave up on it (its dead letter)."""
    root = Tree(f"order {escape(order_id)}")
    letters: dict[str, list[DeadLetter]] = {}
    for letter in dead:
        letters.setdefault(letter.event_id, []).append(letter)
    nodes: dict[str, Tree] = {}
    flows: dict[str, Tree] = {}
    for event in events:
        meta = event.envelope.metadata
        parent = nodes.get(meta.causation_id)
        if parent is None:  # caused by a call (or by the saga's timeout sweep), not by an event
            cause = meta.causation_id or meta.correlation_id
            if cause not in flows:
                label = cause.split("/", 1)[0] if "/" in cause else "timeout sweep"
                seen_as = f"correlation {meta.correlation_id[:8]}"
                if trace_id := trace_id_of(meta.trace.traceparent):
                    seen_as += f", trace {trace_id}"  # what Jaeger finds it by
                flows[cause] = root.add(f"[bold]{label}[/bold] ({seen_as})")
            parent = flows[cause]
        detail = ""
        status = getattr(event.payload, "status", None)
        if event.definition.name == "OrderStatusChanged" and status is not None:
            detail = f" → {order_events_pb2.OrderStatus.Name(status)}"
            if reason := getattr(event.payload, "reason", ""):
                detail += f" ({reason})"
        when = event.envelope.occurred_at.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
        node = nodes[event.event_id] = parent.add(
            f"{when} [cyan]{event.definition.name}[/cyan]{detail} from {event.envelope.source}"
        )
        for letter in letters.get(event.event_id, []):
            node.add(
                f"[red]dead-lettered[/red] by {escape(letter.consumer or 'a consumer')} after"
                f" {letter.deliveries} deliveries ({escape(letter.reason)}): {escape(letter.error_within(120))}"
                f" (a4co dlq show {letter.seq})"
            )
    return root


def trace(
    order_id: Annotated[str, typer.Argument(help="the order")],
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Every event of one order and the call or event that caused it, as a tree."""
    target = Target.resolve(nats_url, prefix)

    async def main() -> tuple[list[IncomingEvent], list[DeadLetter]]:
        async with jetstream(target) as js:
            events = await events_of(js, EventCodec(load_registry(), "cli", target.topology), order_id)
            return events, await dead_letters_of(js, target.topology, events) if events else []

    events, dead = asyncio.run(main())
    if not events:
        console.print(f"no event mentions order {escape(order_id)}")
        raise typer.Exit(1)
    console.print(tree(order_id, events, dead))
