"""`a4co trace ORDER_ID`: every event of one order, as the tree of what caused what."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import nats.errors
import typer
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from rich.console import Console
from rich.tree import Tree

from a4co.orders.events.v1 import order_events_pb2
from services.cli.connection import NatsUrl, Prefix, Target, jetstream
from services.platform.events.codec import EventCodec, EventDecodeError, IncomingEvent, UnknownEventError
from services.platform.events.registry import StreamDef, load_registry
from services.platform.events.streams import StreamMissingError
from services.platform.events.topology import Topology

console = Console()


# Messages asked for at a time, and how long a request waits for some when the consumer counted more
# (they may have left the stream since: max age, or a purge).
BATCH = 1000
FETCH_TIMEOUT_S = 5.0
READ_IDLE_S = 30.0


async def events_of(
    js: JetStreamContext, codec: EventCodec, order_id: str, *, batch: int = BATCH
) -> list[IncomingEvent]:
    """Every stored event about the order (its id as the aggregate, or in the payload)."""
    found = []
    wanted = order_id.encode()
    for stream in codec.registry.streams:
        if stream.name == "DLQ":
            continue
        async for body in _bodies(js, codec.topology, stream, batch):
            # The id is in the body's bytes wherever it is in the event (protobuf keeps a string's
            # UTF-8 as it is, and an Any its message's bytes): the others need not be decoded.
            if wanted not in body:
                continue
            try:
                event = codec.decode(body)
            except (EventDecodeError, UnknownEventError):
                continue
            if event.envelope.aggregate_id == order_id or getattr(event.payload, "order_id", "") == order_id:
                found.append(event)
    return sorted(found, key=lambda e: e.envelope.occurred_at.ToNanoseconds())


async def _bodies(
    js: JetStreamContext, topology: Topology, stream: StreamDef, batch: int
) -> AsyncIterator[bytes]:
    """Each message's body in the stream, oldest first, through an ephemeral pull consumer that
    acknowledges nothing: a fetch brings up to `batch` messages in one request, where reading them
    one by one (`get_msg`) cost a request each, and most of the command's time parsing their headers."""
    name, consumer, subjects = (
        topology.stream(stream.name),
        f"cli_trace_{uuid.uuid4().hex}",
        topology.stream_subjects(stream),
    )
    config = ConsumerConfig(
        name=consumer,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        filter_subjects=subjects,
        mem_storage=True,
        inactive_threshold=READ_IDLE_S,  # the server removes it should the command die reading
    )
    try:
        pending = (await js.add_consumer(name, config)).num_pending
    except NotFoundError:
        raise StreamMissingError(stream.name) from None
    sub = await js.pull_subscribe_bind(consumer, stream=name)
    try:
        while pending:
            try:
                messages = await sub.fetch(batch, timeout=FETCH_TIMEOUT_S)
            except TimeoutError:
                return  # those it counted have left the stream since
            for msg in messages:
                yield msg.data
            pending = messages[-1].metadata.num_pending
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(nats.errors.Error):  # else gone once inactive: no need to say
            await js.delete_consumer(name, consumer)


def tree(order_id: str, events: list[IncomingEvent]) -> Tree:
    """The causation tree: each event under the event (or the call) that caused it."""
    root = Tree(f"order {order_id}")
    nodes: dict[str, Tree] = {}
    flows: dict[str, Tree] = {}
    for event in events:
        meta = event.envelope.metadata
        parent = nodes.get(meta.causation_id)
        if parent is None:  # caused by a call (or by the saga's timeout sweep), not by an event
            cause = meta.causation_id or meta.correlation_id
            if cause not in flows:
                label = cause.split("/", 1)[0] if "/" in cause else "timeout sweep"
                flows[cause] = root.add(f"[bold]{label}[/bold] (correlation {meta.correlation_id[:8]})")
            parent = flows[cause]
        detail = ""
        status = getattr(event.payload, "status", None)
        if event.definition.name == "OrderStatusChanged" and status is not None:
            detail = f" → {order_events_pb2.OrderStatus.Name(status)}"
            if reason := getattr(event.payload, "reason", ""):
                detail += f" ({reason})"
        when = event.envelope.occurred_at.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
        nodes[event.event_id] = parent.add(
            f"{when} [cyan]{event.definition.name}[/cyan]{detail} from {event.envelope.source}"
        )
    return root


def trace(
    order_id: Annotated[str, typer.Argument(help="the order")],
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Every event of one order and the call or event that caused it, as a tree."""
    target = Target.resolve(nats_url, prefix)

    async def main() -> list[IncomingEvent]:
        async with jetstream(target) as js:
            return await events_of(js, EventCodec(load_registry(), "cli", target.topology), order_id)

    events = asyncio.run(main())
    if not events:
        console.print(f"no event mentions order {order_id}")
        raise typer.Exit(1)
    console.print(tree(order_id, events))
