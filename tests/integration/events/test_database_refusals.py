"""A consumer whose database answers but refuses to write (its disk full, a read-only server) keeps
its events and tries them again until the write is taken (decision 35)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.consumer import QueueConsumer
from services.platform.local_servers import LocalServers
from tests.integration.events.rig import Rig, order_created, record_effect, refusing_as_disk_full
from tests.support.servers import stoppable
from tests.support.waiting import eventually

# With FAST's ack_wait of 2 s a kept event is reported in progress every 0.5 s at most: six
# reports keep it past ack_wait, and past the 0.2 + 0.4 s its three deliveries would have taken.
REPORTS_PAST_ACK_WAIT = 6


@contextlib.asynccontextmanager
async def disk_full(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Every insert into the consumer's `effects` refused as PostgreSQL refuses it on a full disk."""
    refuse, allow = refusing_as_disk_full("effects", "INSERT")
    await pool.execute(refuse)
    try:
        yield
    finally:
        await pool.execute(allow)


@contextlib.asynccontextmanager
async def read_only(dsn: str) -> AsyncIterator[None]:
    """The whole server read-only, as a standby is: new transactions, on the sessions already open
    too (the setting is reloaded), refuse to write with SQLSTATE 25006."""
    conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "off"})
    try:
        await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await conn.execute("SELECT pg_reload_conf()")
        yield
    finally:
        await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.close()


async def sessions_read_only(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SHOW default_transaction_read_only") == "on")


async def effects(pool: asyncpg.Pool) -> list[tuple[str, int]]:
    return [(r["replica"], r["delivery"]) for r in await pool.fetch("SELECT replica, delivery FROM effects")]


async def kept_past_ack_wait(rig: Rig, replicas: list[QueueConsumer], order_id: str) -> QueueConsumer:
    """Publish an OrderCreated; once it has been kept past ack_wait, return the replica keeping it."""
    out = rig.codec.encode(order_created(order_id), aggregate_id=order_id)
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(
        lambda: sum(c.stats.kept_alive for c in replicas) >= REPORTS_PAST_ACK_WAIT,
        timeout=30,
        what="the event kept in progress past ack_wait",
    )
    (holder,) = [c for c in replicas if c.stats.database_waits]
    return holder


def assert_nothing_retried(replicas: list[QueueConsumer]) -> None:
    for c in replicas:
        assert (c.stats.retried, c.stats.dead_lettered, c.stats.duplicates) == (0, 0, 0)


async def test_an_event_refused_for_a_full_disk_waits_and_is_handled_on_its_first_delivery(rig: Rig) -> None:
    """Longer than three deliveries' backoff and than ack_wait: nothing is retried, dead-lettered,
    nor delivered to the other replica; once the insert is taken, the event takes effect once, on
    its first delivery."""
    replicas = [
        await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect(name)})
        for name in ("r1", "r2")
    ]
    async with disk_full(replicas[0].pool):
        holder = await kept_past_ack_wait(rig, replicas, "o-disk-full")
        assert sum(c.stats.handled for c in replicas) == 0
    await eventually(lambda: sum(c.stats.handled for c in replicas) == 1, timeout=30, what="handled")

    assert_nothing_retried(replicas)
    assert [c.stats.database_waits for c in replicas] in ([1, 0], [0, 1]), "one replica had it, once"
    assert await effects(holder.pool) == [(("r1", "r2")[replicas.index(holder)], 1)]


async def test_an_event_refused_by_a_read_only_server_waits_for_it_to_take_writes(
    rig: Rig, local_servers: LocalServers
) -> None:
    """The server turned read-only under an open pool, as a primary demoted by a failover is:
    `SELECT 1` answers meanwhile, and the event is still kept, not retried, until it can write."""
    stoppable(local_servers, "postgres")  # a server this test may reconfigure
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect("r1")})
    async with read_only(rig.dsn):
        await eventually(lambda: sessions_read_only(consumer.pool), what="the pool's sessions read-only")
        assert await consumer.pool.fetchval("SELECT 1") == 1
        await kept_past_ack_wait(rig, [consumer], "o-read-only")
    await eventually(lambda: consumer.stats.handled == 1, timeout=30, what="handled")

    assert_nothing_retried([consumer])
    assert consumer.stats.database_waits == 1
    assert await effects(consumer.pool) == [("r1", 1)]


async def test_an_error_after_a_refusal_counts_as_the_handlers_failure(rig: Rig) -> None:
    """Once the database takes the write, a handler that fails for its own reason is retried and
    dead-lettered as usual: a refusal does not shelter it."""
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect("r1")})
    async with disk_full(consumer.pool):
        await kept_past_ack_wait(rig, [consumer], "o-then-broken")
        await consumer.pool.execute("ALTER TABLE effects RENAME COLUMN replica TO copy")
    await eventually(lambda: consumer.stats.dead_lettered == 1, timeout=30, what="dead-lettered")
    assert (consumer.stats.handled, consumer.stats.retried, consumer.stats.database_waits) == (0, 2, 1)


async def test_a_consumer_stopped_while_refused_leaves_its_events_unsettled(rig: Rig) -> None:
    """Stopped while its writes are refused, the consumer neither retries nor dead-letters: the
    event is redelivered to the next consumer once ack_wait has passed."""
    waiting = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect("r1")})
    async with disk_full(waiting.pool):
        await kept_past_ack_wait(rig, [waiting], "o-stopped")
        await waiting.stop()
    assert (waiting.stats.handled, waiting.stats.retried, waiting.stats.dead_lettered) == (0, 0, 0)

    survivor = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect("r2")})
    await eventually(lambda: survivor.stats.handled == 1, timeout=30, what="handled by the other replica")
    assert await effects(survivor.pool) == [("r2", 2)], "its second delivery"
