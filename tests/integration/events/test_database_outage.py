"""A consumer whose database does not answer keeps its events until it does (decision 32)."""

from __future__ import annotations

import asyncpg
from google.protobuf.message import Message

from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.consumer import HandlerContext, QueueConsumer
from services.platform.local_servers import LocalServers
from tests.integration.events.rig import FAST, Rig, order_created, record_effect
from tests.support.servers import stoppable, stopped
from tests.support.waiting import eventually

# With FAST's ack_wait of 2 s, a kept event is reported in progress every 0.5 s at most: eight
# reports keep it past two ack_waits, and past the 0.2 + 0.4 s its three deliveries would have
# taken without the wait.
REPORTS_PAST_ACK_WAIT = 8


async def effects(pool: asyncpg.Pool) -> list[tuple[str, int]]:
    return [(r["replica"], r["delivery"]) for r in await pool.fetch("SELECT replica, delivery FROM effects")]


async def test_an_event_waits_for_the_database_and_is_handled_on_its_first_delivery(
    rig: Rig, local_servers: LocalServers
) -> None:
    """PostgreSQL down for longer than three deliveries' backoff and than ack_wait: nothing is
    retried, dead-lettered, nor delivered to the other replica meanwhile; once PostgreSQL is back,
    the event takes effect once, on its first delivery."""
    postgres = stoppable(local_servers, "postgres")
    replicas = [
        await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect(name)})
        for name in ("r1", "r2")
    ]
    out = rig.codec.encode(order_created("o-outage"), aggregate_id="o-outage")
    with stopped(postgres):
        await rig.js.publish(out.subject, out.body, headers=out.headers)
        await eventually(
            lambda: sum(c.stats.kept_alive for c in replicas) >= REPORTS_PAST_ACK_WAIT,
            timeout=30,
            what="the event kept in progress past ack_wait",
        )
    await eventually(lambda: sum(c.stats.handled for c in replicas) == 1, timeout=30, what="handled")

    assert [c.stats.database_waits for c in replicas] in ([1, 0], [0, 1]), "one replica had it"
    for c in replicas:
        assert (c.stats.retried, c.stats.dead_lettered, c.stats.duplicates) == (0, 0, 0)
    (holder,) = [c for c in replicas if c.stats.database_waits]
    assert await effects(holder.pool) == [(("r1", "r2")[replicas.index(holder)], 1)]


async def test_a_consumer_stopped_while_it_waits_leaves_its_events_to_the_others(
    rig: Rig, local_servers: LocalServers
) -> None:
    """Stopped during the outage, the consumer leaves the event unsettled, neither retried nor
    dead-lettered; once PostgreSQL is back, another replica gets it after ack_wait and handles it."""
    postgres = stoppable(local_servers, "postgres")
    waiting = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect("r1")})
    out = rig.codec.encode(order_created("o-stop"), aggregate_id="o-stop")
    with stopped(postgres):
        await rig.js.publish(out.subject, out.body, headers=out.headers)
        await eventually(lambda: waiting.stats.database_waits == 1, timeout=30, what="waiting")
        await waiting.stop()
    assert (waiting.stats.handled, waiting.stats.retried, waiting.stats.dead_lettered) == (0, 0, 0)

    survivor = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect("r2")})
    await eventually(lambda: survivor.stats.handled == 1, timeout=30, what="handled by the other replica")
    assert await effects(survivor.pool) == [("r2", 2)], "its second delivery"


async def test_an_outage_error_while_the_database_answers_is_the_handlers_failure(rig: Rig) -> None:
    """A handler raising a connection error of its own (another server it calls, say) while the
    database answers is retried and dead-lettered as any failure: the database decides."""
    deliveries: list[int] = []

    async def calls_a_server_that_is_down(event: Message, ctx: HandlerContext) -> None:
        deliveries.append(ctx.delivery)
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    consumer: QueueConsumer = await rig.consumer(
        "payments", {order_events_pb2.OrderCreated: calls_a_server_that_is_down}
    )
    out = rig.codec.encode(order_created("o-refused"), aggregate_id="o-refused")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: consumer.stats.dead_lettered == 1, timeout=30, what="dead-lettered")
    assert deliveries == list(range(1, FAST.max_deliveries + 1))
    assert (consumer.stats.retried, consumer.stats.database_waits) == (2, 0)
