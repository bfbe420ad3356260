"""The transactional outbox: committed events are published once, rolled-back ones never."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
import nats.errors
import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.api import PubAck

from a4co.orders.events.v1 import order_events_pb2
from services.platform.db import Connection
from services.platform.events.consumer import QueueConsumer
from services.platform.events.outbox import OutboxRelay, OutboxWriter, notify_channel
from services.platform.local_servers import LocalServers
from services.platform.resilience import Backoff
from tests.integration.events.rig import Rig, order_created, record_effect, refusing_as_disk_full, running
from tests.support.servers import stoppable, stopped
from tests.support.waiting import eventually


async def effects(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT event_id, aggregate, delivery FROM effects ORDER BY id"))


async def test_a_committed_event_is_published_and_consumed_once(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    out = await rig.commit(order_created("o-1"), "o-1")

    async with running(rig.relay()) as relay:
        await eventually(lambda: consumer.stats.handled == 1, what="event handled")
        await eventually(lambda: relay.stats.published == 1)
    rows = await effects(consumer.pool)
    assert [(str(r["event_id"]), r["aggregate"]) for r in rows] == [(out.event_id, "o-1")]
    assert await rig.outbox_rows() == 0, "published rows are pruned"


async def test_an_event_of_a_rolled_back_transaction_is_never_published(rig: Rig) -> None:
    async def add_then_fail() -> None:
        async with rig.pool.acquire() as conn, conn.transaction():
            await rig.writer.add(conn, order_created("o-x"), aggregate_id="o-x")
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError, match="rollback"):
        await add_then_fail()
    assert await rig.outbox_rows() == 0


async def test_adding_outside_a_transaction_is_refused(rig: Rig) -> None:
    async with rig.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside"):
            await rig.writer.add(conn, order_created("o-y"), aggregate_id="o-y")


async def test_events_inserted_with_the_commit_are_stored_as_encoded_in_order_and_relayed(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    # An aggregate id and a header value that a literal must escape, and a body with every byte.
    events = [rig.writer.encode(order_created(f"o-{i}"), aggregate_id="it's o-1") for i in range(3)]
    events[1].headers["a4co-note"] = "quote ' and backslash \\ and ñ"
    events[2] = dataclasses.replace(events[2], body=bytes(range(256)) + events[2].body)
    async with rig.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await rig.writer.insert_and_commit(conn, events)
        assert not conn.is_in_transaction(), "committed"
    rows = await rig.pool.fetch(
        "SELECT event_id::text, aggregate_id, subject, headers::text, body FROM outbox ORDER BY id"
    )
    assert [
        (r["event_id"], r["aggregate_id"], r["subject"], json.loads(r["headers"]), r["body"]) for r in rows
    ] == [(e.event_id, e.aggregate_id, e.subject, e.headers, e.body) for e in events]
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.handled == 2, what="the two decodable events handled")
    handled = [str(r["event_id"]) for r in await effects(consumer.pool)]
    assert handled == [events[0].event_id, events[1].event_id]


async def test_a_failed_insert_with_the_commit_commits_nothing(rig: Rig) -> None:
    await rig.pool.execute("CREATE TABLE things (thing_id text PRIMARY KEY)")
    event = rig.writer.encode(order_created("o-1"), aggregate_id="o-1")
    async with rig.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO things VALUES ('t-1')")
        with pytest.raises(asyncpg.UniqueViolationError):  # the same event twice
            await rig.writer.insert_and_commit(conn, [event, event])
        assert conn.is_in_transaction(), "the COMMIT was skipped; the caller rolls back"
        await tx.rollback()
    assert await rig.pool.fetchval("SELECT count(*) FROM things") == 0
    assert await rig.outbox_rows() == 0


async def test_inserting_with_the_commit_outside_a_transaction_is_refused(rig: Rig) -> None:
    event = rig.writer.encode(order_created("o-1"), aggregate_id="o-1")
    async with rig.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside"):
            await rig.writer.insert_and_commit(conn, [event])


async def test_relay_wakes_on_notify_and_keeps_commit_order_per_aggregate(rig: Rig) -> None:
    seen: list[str] = []

    async def handler(event: order_events_pb2.OrderStatusChanged, ctx: object) -> None:
        seen.append(event.order_id + ":" + str(event.status))

    consumer = await rig.consumer("analytics", {order_events_pb2.OrderStatusChanged: handler})  # type: ignore[dict-item]

    def changed(status: int) -> order_events_pb2.OrderStatusChanged:
        return order_events_pb2.OrderStatusChanged(
            order_id="o-7", status=order_events_pb2.OrderStatus.ValueType(status)
        )

    async with running(rig.relay(poll_interval_s=30)) as relay:
        # Once the first transition is through, the relay listens and waits for its 30 s poll: the
        # next five can only reach it by NOTIFY. (Committed at once, all six could be in the
        # batch it reads on starting, before it listens, and no notification would be needed.)
        await rig.commit(changed(1), "o-7")
        await eventually(lambda: consumer.stats.handled == 1, what="the first transition handled")
        for status in range(2, 7):
            await rig.commit(changed(status), "o-7")
        await eventually(lambda: consumer.stats.handled == 6, what="six transitions handled")
        assert relay.stats.wakeups >= 1, "LISTEN/NOTIFY woke the relay before its 30 s poll"
    assert seen == [f"o-7:{s}" for s in range(1, 7)]


async def test_a_single_statement_change_carries_its_events_and_wakes_the_relay(rig: Rig) -> None:
    await rig.pool.execute("CREATE TABLE things (thing_id text PRIMARY KEY, n int NOT NULL)")
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    insert = "INSERT INTO things VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING thing_id, n"

    async with running(rig.relay(poll_interval_s=30)) as relay:
        # As above: the relay is listening, and only NOTIFY can reach it before its 30 s poll.
        await rig.commit(order_created("o-0"), "o-0")
        await eventually(lambda: consumer.stats.handled == 1, what="the first event handled")
        events = [rig.writer.encode(order_created(f"o-{i}"), aggregate_id="o-1") for i in (1, 2)]
        rows = await rig.writer.change_with(rig.pool, insert, ("t-1", 7), events)
        assert [(r["thing_id"], r["n"]) for r in rows] == [("t-1", 7)]
        await eventually(lambda: consumer.stats.handled == 3, what="both events handled")
        assert relay.stats.wakeups >= 1, "the statement's NOTIFY woke the relay"
    handled = [(str(r["event_id"]), r["aggregate"]) for r in await effects(consumer.pool)][1:]
    assert handled == [(e.event_id, "o-1") for e in events], "in the order given"


async def test_a_single_statement_change_that_changes_nothing_adds_no_event(rig: Rig) -> None:
    await rig.pool.execute("CREATE TABLE things (thing_id text PRIMARY KEY, n int NOT NULL CHECK (n > 0))")
    insert = "INSERT INTO things VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING thing_id"
    first = rig.writer.encode(order_created("o-1"), aggregate_id="o-1")
    assert len(await rig.writer.change_with(rig.pool, insert, ("t-1", 1), [first])) == 1
    again = rig.writer.encode(order_created("o-1"), aggregate_id="o-1")
    assert await rig.writer.change_with(rig.pool, insert, ("t-1", 2), [again]) == []
    refused = rig.writer.encode(order_created("o-2"), aggregate_id="o-2")
    with pytest.raises(asyncpg.CheckViolationError):
        await rig.writer.change_with(rig.pool, insert, ("t-2", 0), [refused])
    ids = await rig.pool.fetch("SELECT event_id FROM outbox")
    assert [str(r["event_id"]) for r in ids] == [first.event_id]
    assert await rig.pool.fetchval("SELECT count(*) FROM things") == 1


@pytest_asyncio.fixture
async def heard(rig: Rig) -> AsyncIterator[list[str]]:
    """What a connection that LISTENs on the rig's relay channel hears."""
    found: list[str] = []
    conn = await asyncpg.connect(rig.dsn)
    await conn.add_listener(notify_channel(rig.schema), lambda *args: found.append(str(args[2])))
    yield found
    await conn.close()


@pytest_asyncio.fixture
async def created(rig: Rig) -> QueueConsumer:
    """A `things` table to change, and a consumer of the OrderCreated those changes announce."""
    await rig.pool.execute("CREATE TABLE things (thing_id text PRIMARY KEY)")
    return await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})


async def add_thing(rig: Rig, thing_id: str, order_id: str) -> None:
    """A single-statement change that announces an OrderCreated."""
    event = rig.writer.encode(order_created(order_id), aggregate_id=order_id)
    await rig.writer.change_with(rig.pool, "INSERT INTO things VALUES ($1) RETURNING *", (thing_id,), [event])


async def test_a_relay_that_leads_in_the_writing_process_is_woken_without_notify(
    rig: Rig, created: QueueConsumer, heard: list[str]
) -> None:
    async with running(rig.relay(poll_interval_s=30)) as relay:
        rig.writer.relay_here(relay)
        await eventually(lambda: relay.stats.leader, what="the relay leads")
        # Only the in-process wake-up can bring these out before the relay's 30 s poll.
        await add_thing(rig, "t", "o-1")
        await eventually(lambda: created.stats.handled == 1, what="the single statement's event")
        async with rig.pool.acquire() as conn:
            async with conn.transaction():
                second = rig.writer.encode(order_created("o-2"), aggregate_id="o-2")
                await rig.writer.insert(conn, [second], wake_after_commit=True)
            rig.writer.committed()
        await eventually(lambda: created.stats.handled == 2, what="the transaction's event")
        # Without `wake_after_commit` the writer cannot count on a wake-up: it notifies.
        await rig.commit(order_created("o-3"), "o-3")
        await eventually(lambda: created.stats.handled == 3, what="the notified event")
        assert len(heard) == 1, "only the event added without a promised wake-up was notified"


def _through(consumer: QueueConsumer, relay: OutboxRelay, events: int) -> bool:
    """Whether `events` events went all the way: handled by the consumer, and counted by the relay.
    A consumer may handle an event before its relay has heard JetStream's acknowledgement and
    deleted the row, which is when the relay counts it: a test reads the relay's figures after both."""
    return consumer.stats.handled == events and relay.stats.published == events


async def test_a_writer_whose_relay_does_not_lead_notifies_the_leader(
    rig: Rig, created: QueueConsumer, heard: list[str]
) -> None:
    async with running(rig.relay(poll_interval_s=30)) as leader:
        await eventually(lambda: leader.stats.leader, what="the other replica's relay leads")
        async with running(rig.relay(poll_interval_s=30)) as follower:
            rig.writer.relay_here(follower)
            await add_thing(rig, "t", "o-1")
            await eventually(lambda: _through(created, leader, 1), what="published by the leader")
            assert (leader.stats.published, follower.stats.published, len(heard)) == (1, 0, 1)
            assert follower.stats.wakeups == 0, "a relay waiting for the lead is not woken"


class CrashAfterPublish(OutboxRelay):
    """A relay that dies after JetStream acknowledged a batch, before deleting the rows."""

    async def _prune(self, conn: Connection, key: str, keys: list[object]) -> None:
        raise asyncio.CancelledError("relay killed before deleting the published rows")


async def test_relay_killed_between_commit_and_publish_loses_nothing(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    # Committed while no relay runs: the event waits in the outbox.
    out = await rig.commit(order_created("o-2"), "o-2")
    assert await rig.outbox_rows() == 1

    # A relay publishes it, then dies before deleting the row.
    crashing = CrashAfterPublish(dsn=rig.dsn, schema=rig.schema, service="orders", js=rig.js)
    task = asyncio.create_task(crashing.run())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert await rig.outbox_rows() == 1, "the row survived the crash"

    # The restarted relay publishes it again; JetStream drops the duplicate by Nats-Msg-Id and
    # the consumer's inbox would catch it otherwise: one effect.
    async with running(rig.relay()):
        await eventually(_outbox_empty(rig), what="outbox drained")
        await eventually(lambda: consumer.stats.handled == 1)
    stream = await rig.js.stream_info(rig.topology.stream("ORDERS"))
    assert stream.state.messages == 1
    rows = await effects(consumer.pool)
    assert [str(r["event_id"]) for r in rows] == [out.event_id]


def _outbox_empty(rig: Rig) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await rig.outbox_rows() == 0

    return check


class ConfusedOnce(OutboxRelay):
    """A relay whose first read meets a connection the server ended mid-statement, used before
    asyncpg saw its socket close: asyncpg raises InternalClientError, not a connection error
    (asyncpg issue 1069; seen on `make run` with PostgreSQL killed under load)."""

    confused = False

    async def relay_batch(self, conn: Connection) -> int:
        if not self.confused:
            self.confused = True
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )
        return await super().relay_batch(conn)


async def test_a_relay_whose_connection_is_confused_connects_again_and_goes_on(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    await rig.commit(order_created("o-1"), "o-1")
    relay = ConfusedOnce(
        dsn=rig.dsn, schema=rig.schema, service="orders", js=rig.js, backoff=Backoff(first_s=0.05, cap_s=0.1)
    )
    async with running(relay):
        await eventually(lambda: consumer.stats.handled == 1, what="the event handled")
        assert relay.stats.failures == 1
        assert relay.stats.last_error.startswith("PostgreSQL failed (InternalClientError: cannot switch")
        await rig.commit(order_created("o-2"), "o-2")
        await eventually(lambda: consumer.stats.handled == 2, what="an event committed afterwards handled")
    assert await rig.outbox_rows() == 0


async def test_a_relay_whose_session_the_server_ends_connects_again_and_goes_on(
    rig: Rig, admin_db: asyncpg.Connection
) -> None:
    """The relay's session ended by the server (`pg_terminate_backend`, as a crash of the server
    or a restart ends every session): it connects again and publishes what was committed since."""
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    async with running(rig.relay()) as relay:
        await rig.commit(order_created("o-1"), "o-1")
        await eventually(lambda: consumer.stats.handled == 1, what="the first event handled")
        assert await admin_db.fetchval("SELECT pg_terminate_backend($1)", relay.backend_pid)
        await rig.commit(order_created("o-2"), "o-2")
        await eventually(lambda: consumer.stats.handled == 2, what="the second event handled")
        assert relay.stats.failures == 1, relay.stats.last_error
        assert relay.stats.last_error.startswith("PostgreSQL failed"), relay.stats.last_error
    assert await rig.outbox_rows() == 0


async def test_two_relays_one_leader_everything_published_once(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    ids = [f"o-{i}" for i in range(50)]
    async with running(rig.relay()) as first, running(rig.relay()) as second:
        for order_id in ids:
            await rig.commit(order_created(order_id), order_id)
        await eventually(lambda: consumer.stats.handled == 50, what="50 events handled")
        assert [first.stats.leader, second.stats.leader].count(True) == 1
    rows = await effects(consumer.pool)
    assert sorted(r["aggregate"] for r in rows) == sorted(ids)


async def test_nats_outage_mid_flow_loses_nothing(rig: Rig, local_servers: LocalServers) -> None:
    nats = stoppable(local_servers, "nats")
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    before = [f"before-{i}" for i in range(20)]
    during = [f"during-{i}" for i in range(20)]
    async with running(rig.relay(ack_timeout_s=1.0)) as relay:
        for order_id in before:
            await rig.commit(order_created(order_id), order_id)
        await eventually(lambda: consumer.stats.handled == 20, what="events before the outage")

        with stopped(nats):
            for order_id in during:
                await rig.commit(order_created(order_id), order_id)
            await eventually(lambda: relay.stats.failures > 0, what="relay noticed the outage")
            assert await rig.outbox_rows() == 20, "nothing is deleted while NATS is down"

        await eventually(lambda: consumer.stats.handled == 40, timeout=30, what="events after the outage")
    rows = await effects(consumer.pool)
    assert sorted(r["aggregate"] for r in rows) == sorted(before + during)
    assert len({r["event_id"] for r in rows}) == 40


async def test_outbox_metrics_follow_the_backlog(rig: Rig) -> None:
    from prometheus_client import REGISTRY

    for i in range(3):
        await rig.commit(order_created(f"m-{i}"), f"m-{i}")
    async with running(rig.relay()):
        await eventually(_outbox_empty(rig))
        await eventually(lambda: REGISTRY.get_sample_value("a4co_outbox_pending", {"service": "orders"}) == 0)
    published = REGISTRY.get_sample_value(
        "a4co_events_published_total",
        {"service": "orders", "event_type": "a4co.orders.OrderCreated"},
    )
    assert published is not None
    assert published >= 3


async def test_the_backlog_is_counted_at_most_once_a_second_while_full_batches_drain(rig: Rig) -> None:
    from prometheus_client import REGISTRY

    def pending() -> float | None:
        return REGISTRY.get_sample_value("a4co_outbox_pending", {"service": "orders"})

    for i in range(5):
        await rig.commit(order_created(f"b-{i}"), f"b-{i}")
    relay = rig.relay(batch_size=2, backlog_interval_s=3600.0)
    async with rig.pool.acquire() as conn:
        assert await relay.relay_batch(conn) == 2  # a full batch: the table is counted
        assert pending() == 5
        assert await relay.relay_batch(conn) == 2  # full again, counted within the hour: kept
        assert pending() == 5
        assert await relay.relay_batch(conn) == 1  # the batch is the whole backlog
        assert pending() == 1
        assert await relay.relay_batch(conn) == 0
        assert pending() == 0


async def _leading_here(rig: Rig, relay: OutboxRelay) -> None:
    """`relay` runs in the rig's writing process, leads and has read the (empty) table."""
    rig.writer.relay_here(relay)
    await eventually(lambda: relay.stats.leader, what="the relay leads")
    await rig.writer.change_with(rig.pool, "SELECT 1 AS one WHERE false", (), [])  # nothing to hand over
    await eventually(lambda: relay.caught_up, what="the first read, of an empty table")


async def test_events_handed_over_in_process_are_published_without_being_read_back(
    rig: Rig, created: QueueConsumer, heard: list[str]
) -> None:
    left = await rig.commit(order_created("o-0"), "o-0")  # before the relay: only in the table
    async with running(rig.relay(poll_interval_s=30)) as relay:
        await _leading_here(rig, relay)
        await add_thing(rig, "t-1", "o-1")  # one statement
        async with rig.pool.acquire() as conn:  # a transaction, as a unit of work makes one
            async with conn.transaction():
                second = rig.writer.encode(order_created("o-2"), aggregate_id="o-2")
                third = rig.writer.encode(order_created("o-3"), aggregate_id="o-3")
                await rig.writer.insert(conn, [second, third], wake_after_commit=True)
            rig.writer.committed([second, third])
        await eventually(lambda: _through(created, relay, 4), what="every event handled")
        assert relay.stats.handed == 3, "the three handed over were not read back"
        assert await rig.outbox_rows() == 0, "their rows are deleted once acknowledged"
    handled = [r["aggregate"] for r in await effects(created.pool)]
    assert handled == ["o-0", "o-1", "o-2", "o-3"], "the row left before first, then in commit order"
    assert str((await effects(created.pool))[0]["event_id"]) == left.event_id
    assert len(heard) == 1, "only the event committed before the relay led was notified"


class FailingJetStream:
    """The rig's JetStream context, whose next `publish_async` fails when armed."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js, self.armed = js, False

    async def publish_async(self, *args: Any, **kwargs: Any) -> asyncio.Future[PubAck]:
        if self.armed:
            self.armed = False
            raise nats.errors.ConnectionClosedError
        return await self.js.publish_async(*args, **kwargs)


async def test_a_hand_over_that_fails_to_publish_is_read_back_from_the_table_in_order(
    rig: Rig, created: QueueConsumer
) -> None:
    js = FailingJetStream(rig.js)
    relay = rig.relay(poll_interval_s=30, js=cast(JetStreamContext, js))
    async with running(relay):
        await _leading_here(rig, relay)
        js.armed = True
        await add_thing(rig, "t-1", "o-1")
        await eventually(lambda: relay.stats.failures == 1, what="the failed publish")
        await add_thing(rig, "t-2", "o-2")
        await eventually(lambda: _through(created, relay, 2), what="both events handled")
        assert relay.stats.handed == 0, "both were read back from the table"
        # A wake-up left from t-2 may make the relay read the table once more, empty: t-3 is
        # handed over once that read is done (committed during it, the read would take it).
        await eventually(lambda: relay.caught_up, what="the table read empty")
        await add_thing(rig, "t-3", "o-3")
        await eventually(lambda: _through(created, relay, 3), what="the next event handled")
        assert relay.stats.handed == 1, "once the table was read empty, events are handed over again"
    assert [r["aggregate"] for r in await effects(created.pool)] == ["o-1", "o-2", "o-3"]
    assert await rig.outbox_rows() == 0


async def test_while_another_process_writes_the_table_the_relay_reads_it(
    rig: Rig, created: QueueConsumer, heard: list[str]
) -> None:
    other = OutboxWriter(rig.codec, rig.schema)  # another replica, whose relay does not lead
    async with running(rig.relay(poll_interval_s=30)) as relay:
        await _leading_here(rig, relay)
        async with rig.pool.acquire() as conn, conn.transaction():
            await other.add(conn, order_created("o-1"), aggregate_id="o-1")
        await eventually(lambda: created.stats.handled == 1, what="the other replica's event")
        # Its events could come between this process's: the table's order is the order.
        await add_thing(rig, "t-2", "o-2")
        await eventually(lambda: _through(created, relay, 2), what="this process's event")
        assert relay.stats.handed == 0
    assert [r["aggregate"] for r in await effects(created.pool)] == ["o-1", "o-2"]
    assert len(heard) == 1


async def test_events_handed_over_while_the_table_is_read_are_published_once(rig: Rig) -> None:
    relay = rig.relay()
    before = await rig.commit(order_created("o-1"), "o-1")  # in the table, and in the read
    after = rig.writer.encode(order_created("o-2"), aggregate_id="o-2")  # committed after it

    class HandsOverWhileReading:
        """A connection whose read happens while both transactions hand their events over."""

        def __init__(self, conn: Connection) -> None:
            self.conn = conn

        async def fetch(self, *args: Any) -> list[asyncpg.Record]:
            rows = await self.conn.fetch(*args)
            async with self.conn.transaction():
                await rig.writer.insert(self.conn, [after], wake_after_commit=True)
            relay.hand_off([before])
            relay.hand_off([after])
            return rows

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

    async with rig.pool.acquire() as conn:
        assert await relay.relay_batch(cast(Connection, HandsOverWhileReading(conn))) == 1
        assert await relay.relay_batch(conn) == 1, "the later event, handed over"
        assert await relay.relay_batch(conn) == 0, "the table is read again: empty"
    assert (relay.stats.published, relay.stats.handed) == (2, 1), "each published once"
    stream = await rig.js.stream_info(rig.topology.stream("ORDERS"))
    assert stream.state.messages == 2


async def test_more_than_a_batch_handed_over_is_read_from_the_table_instead(rig: Rig) -> None:
    relay = rig.relay(batch_size=2)
    async with rig.pool.acquire() as conn:
        assert await relay.relay_batch(conn) == 0  # the table read empty: hand-overs are taken
        events = [await rig.commit(order_created(f"o-{i}"), f"o-{i}") for i in range(3)]
        relay.hand_off(events[:2])
        relay.hand_off(events[2:])  # a third: more than a batch waits in memory
        assert await relay.relay_batch(conn) == 2, "the table's first batch"
        assert await relay.relay_batch(conn) == 1
        assert await relay.relay_batch(conn) == 0
    assert (relay.stats.published, relay.stats.handed) == (3, 0)
    assert await rig.outbox_rows() == 0


async def test_a_relay_whose_deletes_are_refused_backs_off_further_and_publishes_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL refusing to write (a full disk) fails each batch's delete however often the relay
    connects again: its pauses grow with its backoff instead of starting over at each connection,
    and once the delete is taken the event has been handled once."""
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    refuse, allow = refusing_as_disk_full("outbox", "DELETE")
    await rig.pool.execute(refuse)
    await rig.commit(order_created("o-refused"), "o-refused")
    caplog.set_level(logging.WARNING, logger="services.platform.events.outbox")
    async with running(rig.relay()) as relay:
        await eventually(lambda: relay.stats.failures >= 3, timeout=30, what="three refused deletes")
        await rig.pool.execute(allow)
        await eventually(lambda: relay.stats.published == 1, timeout=30, what="the event published")
    pauses = [float(m) for m in re.findall(r"No space left on device.*retrying in ([\d.]+) s", caplog.text)]
    assert len(pauses) >= 3
    # Each step of backoff at least 1.6 times the one before (doubled, at most a fifth off for
    # jitter): increasing even as logged, to a tenth of a second.
    assert pauses[0] < pauses[1] < pauses[2], pauses
    assert await rig.outbox_rows() == 0
    await eventually(lambda: consumer.stats.handled == 1, what="the event handled")
    assert [r["aggregate"] for r in await effects(consumer.pool)] == ["o-refused"]
