"""A handler whose transaction PostgreSQL rolls back for a deadlock is tried again at once, on the
same delivery: a conflict with a concurrent transaction is not the event's fault."""

from __future__ import annotations

import asyncpg
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.consumer import CONFLICT_RETRIES, HandlerContext
from tests.integration.events.rig import Rig, order_created
from tests.support.waiting import eventually


def conflicts_counted() -> float:
    """`a4co_consumer_conflicts_total` of the tests' payments consumers of ORDERS."""
    labels = {"service": "payments", "stream": "ORDERS"}
    return REGISTRY.get_sample_value("a4co_consumer_conflicts_total", labels) or 0.0


async def handler_waiting_for_row_two(pool: asyncpg.Pool) -> bool:
    count = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query = 'UPDATE counters SET n = n + 1 WHERE id = 2'"
    )
    return bool(count)


async def test_a_handler_chosen_as_a_deadlocks_victim_is_tried_again_on_the_same_delivery(rig: Rig) -> None:
    """The handler locks row 1 then row 2; another transaction holds row 2 and then asks for row 1.
    PostgreSQL detects the deadlock in the backend that has waited longest, the handler's, and
    rolls its transaction back; the handler's second try, at once, takes effect on delivery 1."""
    deliveries: list[int] = []

    async def locks_one_then_two(event: Message, ctx: HandlerContext) -> None:
        deliveries.append(ctx.delivery)
        await ctx.conn.execute("UPDATE counters SET n = n + 1 WHERE id = 1")
        await ctx.conn.execute("UPDATE counters SET n = n + 1 WHERE id = 2")

    consumer = await rig.consumer(
        "payments", {order_events_pb2.OrderCreated: locks_one_then_two}, start=False
    )
    await consumer.pool.execute(
        "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);"
        " INSERT INTO counters VALUES (1, 0), (2, 0)"
    )
    await consumer.start()
    counted_before = conflicts_counted()
    other = await asyncpg.connect(rig.dsn, server_settings={"application_name": "the other transaction"})
    try:
        schema = rig.topology.schema("payments")
        async with other.transaction():
            await other.execute(f'UPDATE "{schema}".counters SET n = n + 10 WHERE id = 2')
            out = rig.codec.encode(order_created("o-deadlock"), aggregate_id="o-deadlock")
            await rig.js.publish(out.subject, out.body, headers=out.headers)
            await eventually(lambda: deliveries == [1], what="the handler holding row 1")
            await eventually(
                lambda: handler_waiting_for_row_two(rig.pool), what="the handler waiting for row 2"
            )
            await other.execute(f'UPDATE "{schema}".counters SET n = n + 10 WHERE id = 1')
    finally:
        await other.close()
    await eventually(lambda: consumer.stats.handled == 1, timeout=30, what="handled")

    assert deliveries == [1, 1], "tried again on the same delivery"
    assert (consumer.stats.conflicts, consumer.stats.retried, consumer.stats.dead_lettered) == (1, 0, 0)
    assert conflicts_counted() == counted_before + 1
    rows = await consumer.pool.fetch("SELECT id, n FROM counters ORDER BY id")
    assert [(r["id"], r["n"]) for r in rows] == [(1, 11), (2, 11)], "both transactions took effect once"


async def test_conflicts_past_the_retries_count_as_a_failure(rig: Rig) -> None:
    """A handler that conflicts every time is tried CONFLICT_RETRIES more times at once, then its
    failure counts: retried after backoff, then dead-lettered."""
    tries: list[int] = []

    async def always_conflicts(event: Message, ctx: HandlerContext) -> None:
        tries.append(ctx.delivery)
        await ctx.conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'could not serialize access due to concurrent update'"
            " USING ERRCODE = 'serialization_failure'; END $$"
        )

    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: always_conflicts})
    out = rig.codec.encode(order_created("o-conflicts"), aggregate_id="o-conflicts")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: consumer.stats.dead_lettered == 1, timeout=30, what="dead-lettered")
    per_delivery = CONFLICT_RETRIES + 1
    assert tries == [1] * per_delivery + [2] * per_delivery + [3] * per_delivery
    assert consumer.stats.retried == 2
