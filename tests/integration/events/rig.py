"""A producer and consumers wired on real servers under one test's prefix."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from a4co.orders.events.v1 import order_events_pb2
from a4co.type.v1 import money_pb2
from services.platform.db import create_pool
from services.platform.events.codec import EventCodec, OutgoingEvent
from services.platform.events.consumer import (
    DeliveryPolicy,
    Handler,
    HandlerContext,
    QueueConsumer,
    Selective,
)
from services.platform.events.outbox import OutboxRelay, OutboxWriter
from services.platform.events.registry import EventRegistry
from services.platform.events.streams import ensure_streams
from services.platform.events.topology import Topology
from services.platform.events.upcasting import Upcasters
from services.platform.resilience import Backoff
from services.platform.settings import StreamSettings
from tests.support.waiting import eventually

C = TypeVar("C", bound=QueueConsumer)
FAST = DeliveryPolicy(backoff=Backoff(first_s=0.2, cap_s=1.0), ack_wait_s=2.0, fetch_timeout_s=0.2)


def order_created(order_id: str, cents: int = 1250) -> order_events_pb2.OrderCreated:
    return order_events_pb2.OrderCreated(
        order_id=order_id,
        customer_id="cust-1",
        artisan_id="art-1",
        total=money_pb2.Money(currency_code="EUR", amount_cents=cents),
    )


@dataclass
class Rig:
    """The producing service `orders` and any consumers a test adds."""

    dsn: str
    nc: NATS
    js: JetStreamContext
    registry: EventRegistry
    topology: Topology
    pool: asyncpg.Pool
    codec: EventCodec
    writer: OutboxWriter
    _closers: list[object] = field(default_factory=list)
    _pools: list[asyncpg.Pool] = field(default_factory=list)

    @property
    def schema(self) -> str:
        return self.topology.schema("orders")

    async def commit(self, event: Message, aggregate_id: str) -> OutgoingEvent:
        """Commit `event` to the outbox in a transaction, as a state change would."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await self.writer.add(conn, event, aggregate_id=aggregate_id)

    async def ensure_streams(self) -> None:
        """Declare the streams, as a service does at start."""
        await ensure_streams(self.js, self.registry, self.topology, SETTINGS)

    async def outbox_rows(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM outbox"))

    def relay(self, **kwargs: object) -> OutboxRelay:
        options: dict[str, object] = {
            "js": self.js,
            "poll_interval_s": 0.2,
            "backoff": Backoff(first_s=0.1, cap_s=0.5),
        }
        options.update(kwargs)
        return OutboxRelay(
            dsn=self.dsn,
            schema=self.schema,
            service="orders",
            **options,  # type: ignore[arg-type]
        )

    async def consumer_pool(self, service: str) -> asyncpg.Pool:
        pool = await create_pool(self.dsn, self.topology.schema(service))
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS effects "
            "(id serial PRIMARY KEY, event_id uuid, aggregate text, replica text, delivery int)"
        )
        self._pools.append(pool)
        return pool

    async def consumer(
        self, service: str, handlers: Mapping[type[Message], Handler | Selective], **options: Any
    ) -> QueueConsumer:
        """A started QueueConsumer; `options` as `consumer_of` takes them."""
        return await self.consumer_of(QueueConsumer, service, handlers, **options)

    async def consumer_of(
        self,
        kind: type[C],
        service: str,
        handlers: Mapping[type[Message], Handler | Selective],
        *,
        stream: str = "ORDERS",
        policy: DeliveryPolicy = FAST,
        upcasters: Upcasters | None = None,
        codec: EventCodec | None = None,
        outbox: OutboxWriter | None = None,
        start: bool = True,
        streams: Callable[[], Awaitable[object]] | None = None,
    ) -> C:
        """A consumer of class `kind` (a QueueConsumer that misbehaves on purpose, say); with
        `outbox`, its handlers may publish follow-ups."""
        pool = await self.consumer_pool(service)
        consumer = kind(
            service=service,
            stream=stream,
            handlers=handlers,
            js=self.js,
            pool=pool,
            codec=codec or EventCodec(self.registry, service, self.topology),
            topology=self.topology,
            policy=policy,
            upcasters=upcasters,
            outbox=outbox,
            streams=streams,
        )
        if start:
            await consumer.start()
        self._closers.append(consumer)
        return consumer

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer.stop()  # type: ignore[attr-defined]
        for pool in self._pools:
            await pool.close()
        await self.pool.close()


def record_effect(replica: str = "r1") -> Handler:
    """A handler that inserts one row per handled event in the consumer's `effects` table."""

    async def handler(event: Message, ctx: HandlerContext) -> None:
        await ctx.conn.execute(
            "INSERT INTO effects (event_id, aggregate, replica, delivery) VALUES ($1, $2, $3, $4)",
            ctx.event.event_id,
            ctx.event.envelope.aggregate_id,
            replica,
            ctx.delivery,
        )

    return handler


def refusing_as_disk_full(table: str, operation: str) -> tuple[str, str]:
    """SQL that makes every `operation` (INSERT, DELETE…) on `table` fail as PostgreSQL fails on a
    full disk (SQLSTATE 53100) while everything else works, and SQL that undoes it."""
    refuse = (
        "CREATE FUNCTION refuse_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'could not extend file \"base/16384/16400\": No space left on device'"
        " USING ERRCODE = 'disk_full'; END $$;"
        f" CREATE TRIGGER refuse_disk_full BEFORE {operation} ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION refuse_disk_full()"
    )
    return refuse, f"DROP TRIGGER refuse_disk_full ON {table}; DROP FUNCTION refuse_disk_full()"


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 10)


async def consumers_on(js: JetStreamContext, *streams: str) -> list[str]:
    """The names of the consumers on those streams (names on the server)."""
    return [c.name or "" for stream in streams for c in await js.consumers_info(stream)]


async def orders_created(rig: Rig, *order_ids: str, committed: int = 0) -> None:
    """OrderCreated for each order, committed and relayed to the prefix's ORDERS stream, with the
    `committed` events the test put in the outbox itself."""
    for order_id in order_ids:
        await rig.commit(order_created(order_id), order_id)
    stream = rig.topology.stream("ORDERS")

    async def held() -> bool:
        return (await rig.js.stream_info(stream)).state.messages == committed + len(order_ids)

    async with running(rig.relay()):
        await eventually(held, what="the events in ORDERS")


SETTINGS = StreamSettings(duplicate_window_s=120)


async def make_rig(dsn: str, nc: NATS, registry: EventRegistry, topology: Topology) -> Rig:
    js = nc.jetstream()
    await ensure_streams(js, registry, topology, SETTINGS)
    pool = await create_pool(dsn, topology.schema("orders"))
    codec = EventCodec(registry, "orders", topology)
    return Rig(dsn, nc, js, registry, topology, pool, codec, OutboxWriter(codec, topology.schema("orders")))
