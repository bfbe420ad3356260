"""Queue consumers: one effect per event, retries with backoff, dead letters, shared work."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import nats
import pytest
from asyncpg.connection import LoggedQuery
from google.protobuf.message import Message
from nats.aio.msg import Msg

from a4co.events.v1 import envelope_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.platform.db import Connection
from services.platform.events.codec import message_size
from services.platform.events.consumer import HandlerContext, QueueConsumer, Selective
from services.platform.events.dlq import DeadLetterFilter, DeadLetterQueue
from services.platform.events.pull import PullError
from services.platform.local_servers import ServerUrls
from tests.integration.events.rig import FAST, Rig, order_created, record_effect, running
from tests.support.waiting import eventually


async def effect_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM effects"))


async def test_the_same_event_delivered_twice_takes_effect_once(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    out = rig.codec.encode(order_created("o-dup"), aggregate_id="o-dup")
    # Two copies with different message ids, so JetStream keeps both: the inbox must catch it.
    await rig.js.publish(out.subject, out.body, headers=dict(out.headers, **{"Nats-Msg-Id": "a"}))
    await rig.js.publish(out.subject, out.body, headers=dict(out.headers, **{"Nats-Msg-Id": "b"}))

    await eventually(lambda: consumer.stats.handled + consumer.stats.duplicates == 2)
    assert (consumer.stats.handled, consumer.stats.duplicates) == (1, 1)
    assert await effect_count(consumer.pool) == 1


class CrashBeforeAck(QueueConsumer):
    """A consumer whose process dies after committing the handler, before acknowledging."""

    crashed = False

    async def _settle(self, msg: Msg, result: str, event_type: str) -> None:
        self.crashed = True
        raise RuntimeError("killed before ack")


async def test_redelivery_after_a_crash_before_ack_takes_effect_once(rig: Rig) -> None:
    crashing = await rig.consumer_of(
        CrashBeforeAck, "payments", {order_events_pb2.OrderCreated: record_effect()}
    )
    pool = crashing.pool
    out = rig.codec.encode(order_created("o-c"), aggregate_id="o-c")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: crashing.crashed, what="the consumer crashed")
    await crashing.stop()
    assert await effect_count(pool) == 1, "the handler's transaction committed"

    # A new replica of the same service gets the unacknowledged message after ack_wait.
    survivor = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    await eventually(lambda: survivor.stats.duplicates == 1, what="redelivered and deduplicated")
    assert survivor.stats.handled == 0
    assert await effect_count(pool) == 1


@pytest.mark.parametrize("watched", [False, True])
async def test_a_consumer_that_dies_says_why_once(
    rig: Rig, caplog: pytest.LogCaptureFixture, watched: bool
) -> None:
    """A consumer whose task ends with an error logs it with its traceback, unless another
    watches the task (the service's runner, which stops the service saying why): said once."""
    crashing = await rig.consumer_of(
        CrashBeforeAck, "payments", {order_events_pb2.OrderCreated: record_effect()}
    )
    ended: list[asyncio.Task[None]] = []
    if watched:
        crashing.add_done_callback(ended.append)
    out = rig.codec.encode(order_created("o-w"), aggregate_id="o-w")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: not crashing.running, what="the consumer died")
    await crashing.stop()

    said = [
        r
        for r in caplog.records
        if r.name == "services.platform.events.consumer" and r.levelno >= logging.ERROR
    ]
    if watched:
        assert said == []
        [task] = ended
        assert str(task.exception()) == "killed before ack"
    else:
        [error] = said
        assert error.getMessage() == f"consumer {crashing.durable} stopped by an error"
        assert error.exc_info is not None
        assert str(error.exc_info[1]) == "killed before ack"


async def test_a_replay_of_an_undecodable_letter_is_skipped_by_the_other_consumers(rig: Rig) -> None:
    """A body no consumer can decode is dead-lettered by each; replaying payments' letter reaches
    payments alone: the other consumer skips it without decoding, rather than dead-lettering it a
    second time."""
    payments = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    loyalty = await rig.consumer("loyalty", {order_events_pb2.OrderCreated: record_effect()})
    await rig.js.publish(rig.topology.subject("a4co.orders.order.created"), b"\x00not an event")
    dlq = DeadLetterQueue(rig.js, rig.topology)
    await eventually(lambda: payments.stats.dead_lettered == loyalty.stats.dead_lettered == 1)

    report = await dlq.replay(DeadLetterFilter(consumer="payments"), rate_per_s=0)
    assert len(report.replayed) == 1, report
    await eventually(lambda: payments.stats.dead_lettered == 2 and loyalty.stats.skipped == 1)
    assert loyalty.stats.dead_lettered == 1
    letters = await dlq.browse()
    assert sorted((x.consumer, x.reason) for x in letters) == [
        ("loyalty", "UNDECODABLE"),
        ("payments", "UNDECODABLE"),
    ]


async def test_a_failing_handler_goes_to_the_dlq_after_three_deliveries_then_replays(
    rig: Rig,
) -> None:
    attempts: list[tuple[int, float]] = []
    fixed = False

    async def flaky(event: Message, ctx: HandlerContext) -> None:
        attempts.append((ctx.delivery, time.monotonic()))
        if not fixed:
            raise ValueError(f"no tariff for order {ctx.event.envelope.aggregate_id}")
        await ctx.conn.execute("INSERT INTO effects (event_id) VALUES ($1)", ctx.event.event_id)

    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: flaky})
    out = await rig.commit(order_created("o-fail"), "o-fail")
    dlq = DeadLetterQueue(rig.js, rig.topology)
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.dead_lettered == 1, what="dead-lettered")

    assert [d for d, _ in attempts] == [1, 2, 3], "exactly three deliveries"
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert gaps[0] >= FAST.backoff.floor(1)
    assert gaps[1] >= FAST.backoff.floor(2), "the backoff grows between deliveries"

    letters = await dlq.browse()
    assert len(letters) == 1
    letter = letters[0]
    assert letter.event_id == out.event_id
    assert letter.consumer == "payments"
    assert letter.reason == "HANDLER_FAILED"
    assert letter.deliveries == 3
    assert "ValueError: no tariff for order o-fail" in letter.error
    assert letter.headers["ce-type"] == "a4co.orders.OrderCreated", "original headers are kept"
    assert letter.original_subject == rig.topology.subject("a4co.orders.order.created")

    fixed = True
    report = await dlq.replay(DeadLetterFilter(consumer="payments"))
    assert report.replayed == [letter.seq]
    await eventually(lambda: consumer.stats.handled == 1, what="replayed event handled")
    assert await effect_count(consumer.pool) == 1
    assert await dlq.depth() == 0


async def test_an_undecodable_message_is_dead_lettered_at_once_and_work_goes_on(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    subject = rig.topology.subject("a4co.orders.order.created")
    await rig.js.publish(subject, b"\xff\x00not protobuf", headers={"ce-type": "a4co.orders.OrderCreated"})
    await rig.commit(order_created("o-ok"), "o-ok")
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.handled == 1, what="the next event handled")
    assert consumer.stats.dead_lettered == 1
    letters = await DeadLetterQueue(rig.js, rig.topology).browse()
    assert [(x.reason, x.deliveries, x.consumer) for x in letters] == [("UNDECODABLE", 1, "payments")]
    assert letters[0].body == b"\xff\x00not protobuf"


async def test_a_message_too_large_to_dead_letter_whole_is_dead_lettered_without_its_body(rig: Rig) -> None:
    """Something else published a message near the server's limit: with the dead letter's headers it
    would be over it, and the server would refuse it and close the connection. The dead letter
    keeps the headers and says where the body is; a replay reads the original again."""
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    subject = rig.topology.subject("a4co.orders.order.created")
    body = b"\xff" * (rig.nc.max_payload - 300)
    await rig.js.publish(subject, body, headers={"ce-type": "a4co.orders.OrderCreated"})
    await rig.commit(order_created("o-after"), "o-after")
    reconnects = rig.nc.stats["reconnects"]
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.handled == 1, what="the next event handled")
    assert consumer.stats.dead_lettered == 1
    assert rig.nc.stats["reconnects"] == reconnects  # the server never closed the connection
    dlq = DeadLetterQueue(rig.js, rig.topology)
    [letter] = await dlq.browse()
    assert (letter.reason, letter.body, letter.body_omitted) == ("UNDECODABLE", b"", len(body))
    assert letter.summary()["body_omitted"] == len(body)
    # A replay publishes the original (read from its stream) again, and it is dead-lettered again.
    report = await dlq.replay(DeadLetterFilter(seqs=frozenset({letter.seq})))
    assert (report.replayed, report.failed) == ([letter.seq], {})
    await eventually(lambda: consumer.stats.dead_lettered == 2, what="the replayed message dead-lettered")
    [again] = await dlq.browse()
    assert again.body_omitted == len(body)
    assert again.original_seq != letter.original_seq
    # Once the original is gone from its stream, there is nothing to replay: said, and kept.
    await rig.js.delete_msg(again.original_stream, again.original_seq)
    report = await dlq.replay(DeadLetterFilter(seqs=frozenset({again.seq})))
    assert report.replayed == []
    assert "no longer" in report.failed[again.seq]
    assert [x.seq for x in await dlq.browse()] == [again.seq]


async def test_message_size_is_what_the_server_counts_against_its_limit(rig: Rig, urls: ServerUrls) -> None:
    subject = rig.topology.subject("a4co.orders.order.created")
    headers = {"ce-type": "a4co.orders.OrderCreated", "a4co-dlq-reason": "UNDECODABLE ñ"}
    room = rig.nc.max_payload - message_size(b"", headers)
    await rig.js.publish(subject, b"x" * room, headers=headers)  # exactly the limit: stored
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    other = await nats.connect(urls.nats_url, allow_reconnect=False, closed_cb=on_closed)
    try:
        await other.publish(subject, b"x" * (room + 1), headers=headers)  # one byte over: the
        await asyncio.wait_for(closed.wait(), 10)  # server refuses it and closes the connection
        assert str(other.last_error) == "nats: maximum payload violation"
    finally:
        await other.close()


async def test_a_consumer_deleted_on_the_server_is_declared_again_and_work_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator's `nats consumer rm`, or a stream restored from a backup without its consumers:
    the service declares its durable consumer again instead of failing its pulls for ever."""
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    stream = rig.topology.stream("ORDERS")
    async with running(rig.relay()):
        await rig.commit(order_created("o-before"), "o-before")
        await eventually(lambda: consumer.stats.handled == 1, what="the first event handled")
        await rig.js.delete_consumer(stream, consumer.durable)
        await rig.commit(order_created("o-after"), "o-after")
        await eventually(lambda: consumer.stats.handled == 2, timeout=20, what="the next event handled")
    info = await rig.js.consumer_info(stream, consumer.durable)
    assert info.config.filter_subjects == consumer.config().filter_subjects
    assert consumer.stats.duplicates == 1  # the new consumer delivered the first event again
    said = [r.getMessage() for r in caplog.records if "durable consumer" in r.getMessage()]
    assert said == [f"{consumer.durable}: the durable consumer was gone; declared again"]


class UnansweredOnce(QueueConsumer):
    """A consumer whose first pull nobody answers (503), as while a cluster elects its leader."""

    unanswered = False

    async def _fetch(self) -> list[Msg]:
        if not self.unanswered:
            self.unanswered = True
            raise PullError("pull request on $JS.API.CONSUMER.MSG.NEXT ended: 503 No Responders", "503")
        return await super()._fetch()


async def test_a_consumer_nobody_answered_for_is_not_said_gone_when_it_is_there(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Declared again, it is found as it was (its creation time unchanged): said at INFO, not as a
    consumer made anew, and its events flow."""
    caplog.set_level(logging.INFO, logger="services.platform.events.consumer")
    consumer = await rig.consumer_of(
        UnansweredOnce, "payments", {order_events_pb2.OrderCreated: record_effect()}
    )
    async with running(rig.relay()):
        await rig.commit(order_created("o-there"), "o-there")
        await eventually(lambda: consumer.stats.handled == 1, timeout=20, what="the event handled")
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "durable consumer" in r.getMessage()]
    assert said == [
        (
            "INFO",
            f"{consumer.durable}: the durable consumer is there: pull request on"
            " $JS.API.CONSUMER.MSG.NEXT ended: 503 No Responders",
        )
    ]


async def test_a_stream_deleted_on_the_server_is_declared_again_by_the_relay_and_the_consumer(
    rig: Rig,
) -> None:
    """A stream deleted, or lost with the server's state: the relay's publishes find no stream, and
    the consumer's pulls no consumer. Both declare what is gone again, and the events flow."""
    consumer = await rig.consumer(
        "payments", {order_events_pb2.OrderCreated: record_effect()}, streams=rig.ensure_streams
    )
    stream = rig.topology.stream("ORDERS")
    async with running(rig.relay(streams=rig.ensure_streams)) as relay:
        await rig.commit(order_created("o-before"), "o-before")
        await eventually(lambda: consumer.stats.handled == 1, what="the first event handled")
        await rig.js.delete_stream(stream)
        await rig.commit(order_created("o-after"), "o-after")
        await eventually(lambda: consumer.stats.handled == 2, timeout=20, what="the next event handled")
    assert relay.stats.failures >= 1  # it found no stream, then declared it
    info = await rig.js.stream_info(stream)
    assert info.state.messages == 1  # the new stream holds what came after


async def test_two_replicas_share_the_work_and_never_both_handle_an_event(rig: Rig) -> None:
    policy = replace(FAST, batch_size=5)
    first = await rig.consumer(
        "payments", {order_events_pb2.OrderCreated: record_effect("r1")}, policy=policy
    )
    second = await rig.consumer(
        "payments", {order_events_pb2.OrderCreated: record_effect("r2")}, policy=policy
    )
    assert first.durable == second.durable
    for i in range(200):
        out = rig.codec.encode(order_created(f"o-{i}"), aggregate_id=f"o-{i}")
        await rig.js.publish(out.subject, out.body, headers=out.headers)

    await eventually(lambda: first.stats.handled + second.stats.handled == 200, what="200 handled")
    rows = await first.pool.fetch("SELECT event_id, replica FROM effects")
    by_event: dict[str, set[str]] = {}
    for row in rows:
        by_event.setdefault(str(row["event_id"]), set()).add(row["replica"])
    assert len(by_event) == 200
    assert all(len(replicas) == 1 for replicas in by_event.values())
    assert first.stats.handled > 0
    assert second.stats.handled > 0


async def test_metrics_count_outcomes_and_dead_letters(rig: Rig) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    kind = "a4co.orders.OrderCreated"
    before_dlq = value("a4co_dlq_messages_total", service="metrics", event_type=kind, reason="HANDLER_FAILED")
    before_ok = value("a4co_events_consumed_total", service="metrics", event_type=kind, result="handled")
    fetched_before = value("a4co_consumer_batch_messages_sum", service="metrics", stream="ORDERS")

    async def picky(event: Message, ctx: HandlerContext) -> None:
        if ctx.event.envelope.aggregate_id == "bad":
            raise RuntimeError("refused")

    consumer = await rig.consumer("metrics", {order_events_pb2.OrderCreated: picky})
    for order_id in ("good", "bad"):
        out = rig.codec.encode(order_created(order_id), aggregate_id=order_id)
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: consumer.stats.dead_lettered == 1 and consumer.stats.handled == 1)

    assert (
        value("a4co_dlq_messages_total", service="metrics", event_type=kind, reason="HANDLER_FAILED")
        == before_dlq + 1
    )
    assert (
        value("a4co_events_consumed_total", service="metrics", event_type=kind, result="handled")
        == before_ok + 1
    )
    assert value("a4co_event_redeliveries_total", service="metrics", event_type=kind) >= 2
    assert value("a4co_event_handler_duration_seconds_count", service="metrics", event_type=kind) >= 4
    # Every delivery was in some batch: "good" once, "bad" three times before its dead letter.
    assert value("a4co_consumer_batch_messages_sum", service="metrics", stream="ORDERS") == fetched_before + 4


async def test_old_inbox_entries_are_pruned(rig: Rig) -> None:
    from services.platform.events.tables import prune_inbox

    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    out = rig.codec.encode(order_created("o-p"), aggregate_id="o-p")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: consumer.stats.handled == 1)
    async with consumer.pool.acquire() as conn:
        assert await prune_inbox(conn, older_than_s=3600) == 0
        await conn.execute("UPDATE inbox SET handled_at = handled_at - interval '2 hours'")
        assert await prune_inbox(conn, older_than_s=3600) == 1


async def test_stop_drains_the_message_in_hand(rig: Rig) -> None:
    import asyncio

    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(event: Message, ctx: HandlerContext) -> None:
        entered.set()
        await release.wait()
        await ctx.conn.execute("INSERT INTO effects (event_id) VALUES ($1)", ctx.event.event_id)

    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: slow})
    out = rig.codec.encode(order_created("o-drain"), aggregate_id="o-drain")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await asyncio.wait_for(entered.wait(), 10)

    stopping = asyncio.create_task(consumer.stop())
    release.set()
    await asyncio.wait_for(stopping, 10)

    assert consumer.stats.handled == 1
    assert not consumer.running
    # The ack left before stop() returned; the server records it a moment later.
    await rig.nc.flush()

    async def acknowledged() -> bool:
        info = await rig.js.consumer_info(rig.topology.stream("ORDERS"), consumer.durable)
        return bool(info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0)

    await eventually(acknowledged, timeout=5, what="the message acknowledged, not redelivered")


async def test_the_pruning_job_forgets_old_inbox_entries(rig: Rig) -> None:
    import asyncio
    import uuid as uuid_module

    from services.platform.events.tables import keep_inbox_pruned

    pool = await rig.consumer_pool("payments")
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, event_type, handled_at) VALUES"
        " ('c', $1, 't', now() - interval '2 hours'), ('c', $2, 't', now())",
        uuid_module.uuid4(),
        uuid_module.uuid4(),
    )
    job = asyncio.create_task(keep_inbox_pruned(pool, older_than_s=3600, interval_s=0.1))
    try:

        async def pruned() -> bool:
            return int(await pool.fetchval("SELECT count(*) FROM inbox")) == 1

        await eventually(pruned, what="the old entry pruned, the recent one kept")
    finally:
        job.cancel()


async def test_events_a_selective_handler_does_not_want_are_acknowledged_without_a_transaction(
    rig: Rig,
) -> None:
    def large(event: Message) -> bool:
        assert isinstance(event, order_events_pb2.OrderCreated)
        return event.total.amount_cents >= 1000

    consumer = await rig.consumer(
        "payments", {order_events_pb2.OrderCreated: Selective(record_effect(), large)}
    )
    for order_id, cents in (("o-small", 500), ("o-large", 5000), ("o-tiny", 1)):
        await rig.commit(order_created(order_id, cents), order_id)
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.handled + consumer.stats.skipped == 3)

    assert (consumer.stats.handled, consumer.stats.skipped) == (1, 2)
    assert [r["aggregate"] for r in await consumer.pool.fetch("SELECT aggregate FROM effects")] == ["o-large"]
    # Nothing was recorded for the others: no inbox row, and nothing left to redeliver.
    assert await consumer.pool.fetchval("SELECT count(*) FROM inbox") == 1
    info = await rig.js.consumer_info(rig.topology.stream("ORDERS"), consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


class LagNeverAnswered(QueueConsumer):
    """A consumer whose lag look-up hangs, as a JetStream API request answered late would."""

    looked = False

    async def _observe_lag(self) -> None:
        self.looked = True
        await asyncio.Event().wait()


async def test_a_lag_lookup_that_hangs_holds_up_no_message(rig: Rig) -> None:
    consumer = await rig.consumer_of(
        LagNeverAnswered, "payments", {order_events_pb2.OrderCreated: record_effect()}
    )
    await eventually(lambda: consumer.looked, what="the lag looked up")
    out = rig.codec.encode(order_created("o-lag"), aggregate_id="o-lag")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: consumer.stats.handled == 1, what="handled while the lag look-up hangs")
    assert await effect_count(consumer.pool) == 1


async def test_the_lag_is_exported(rig: Rig) -> None:
    from prometheus_client import REGISTRY

    consumer = await rig.consumer("lagging", {order_events_pb2.OrderCreated: record_effect()}, start=False)
    for order_id in ("l-1", "l-2", "l-3"):
        out = rig.codec.encode(order_created(order_id), aggregate_id=order_id)
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await consumer.start()
    await eventually(lambda: consumer.stats.handled == 3, what="handled")

    def lag() -> float | None:
        return REGISTRY.get_sample_value(
            "a4co_consumer_pending_messages", {"service": "lagging", "stream": "ORDERS"}
        )

    await eventually(lambda: lag() is not None, what="the lag exported")  # looked up at start


async def test_follow_ups_of_a_batch_keep_their_order_and_a_failed_batch_leaves_none(rig: Rig) -> None:
    from a4co.payments.events.v1 import payment_events_pb2
    from services.platform.events.codec import EventCodec
    from services.platform.events.outbox import OutboxWriter

    writer = OutboxWriter(EventCodec(rig.registry, "payments", rig.topology), rig.topology.schema("payments"))
    failed: list[str] = []

    async def charge(event: order_events_pb2.OrderCreated, ctx: HandlerContext) -> None:
        processed = payment_events_pb2.PaymentProcessed(order_id=event.order_id)
        await ctx.publish(processed, aggregate_id=event.order_id)
        # o-3 fails once: the batch is rolled back, then its events are handled one by one.
        if event.order_id == "o-3" and not failed:
            failed.append(event.order_id)
            raise RuntimeError("provider hiccup")

    handlers = {order_events_pb2.OrderCreated: charge}
    consumer = await rig.consumer("payments", handlers, outbox=writer, start=False)  # type: ignore[arg-type]
    for i in range(1, 6):
        out = rig.codec.encode(order_created(f"o-{i}"), aggregate_id=f"o-{i}")
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await consumer.start()
    await eventually(lambda: consumer.stats.handled == 5, what="five orders charged")

    rows = await consumer.pool.fetch("SELECT aggregate_id FROM outbox ORDER BY id")
    assert failed == ["o-3"]
    assert [r["aggregate_id"] for r in rows] == [f"o-{i}" for i in range(1, 6)]


async def test_a_follow_up_too_large_to_publish_is_never_written_and_its_cause_is_dead_lettered(
    rig: Rig,
) -> None:
    from a4co.payments.events.v1 import payment_events_pb2
    from services.platform.events.codec import MAX_EVENT_BYTES, EventCodec
    from services.platform.events.outbox import OutboxWriter

    writer = OutboxWriter(EventCodec(rig.registry, "payments", rig.topology), rig.topology.schema("payments"))

    async def charge(event: order_events_pb2.OrderCreated, ctx: HandlerContext) -> None:
        # o-2's follow-up carries a reason over the limit of what NATS would take.
        reason = "x" * (MAX_EVENT_BYTES if event.order_id == "o-2" else 10)
        await ctx.publish(
            payment_events_pb2.PaymentFailed(order_id=event.order_id, reason=reason),
            aggregate_id=event.order_id,
        )

    consumer = await rig.consumer(
        "payments",
        {order_events_pb2.OrderCreated: charge},  # type: ignore[dict-item]
        outbox=writer,
        start=False,
    )
    for i in range(1, 4):
        out = rig.codec.encode(order_created(f"o-{i}"), aggregate_id=f"o-{i}")
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await consumer.start()
    await eventually(
        lambda: consumer.stats.handled == 2 and consumer.stats.dead_lettered == 1,
        what="two orders handled and one dead-lettered",
    )
    rows = await consumer.pool.fetch("SELECT aggregate_id, length(body) AS size FROM outbox ORDER BY id")
    assert [r["aggregate_id"] for r in rows] == ["o-1", "o-3"], "the others' events are kept, in order"
    assert max(r["size"] for r in rows) < 1000
    (letter,) = await DeadLetterQueue(rig.js, rig.topology).browse()
    assert letter.reason == "HANDLER_FAILED"
    assert "EventTooLargeError: a4co.payments.PaymentFailed of payment o-2 is" in letter.error
    assert f"over the limit of {MAX_EVENT_BYTES:,}" in letter.error


async def test_what_handlers_stage_is_written_once_per_transaction_before_it_commits(rig: Rig) -> None:
    written: list[list[str]] = []
    seen_after_commit: list[int] = []
    failed: list[str] = []

    async def write_effects(conn: Connection, items: list[Any]) -> Callable[[], Awaitable[None]] | None:
        written.append(list(items))
        await conn.execute("INSERT INTO effects (event_id) SELECT unnest($1::uuid[])", items)

        async def committed() -> None:  # the rows are visible outside the transaction by now
            seen_after_commit.append(await effect_count(consumer.pool))

        return committed

    async def stage(event: order_events_pb2.OrderCreated, ctx: HandlerContext) -> None:
        ctx.stage(write_effects, ctx.event.event_id)
        # o-5 fails once: its batch is rolled back and nothing staged in it is written.
        if event.order_id == "o-5" and not failed:
            failed.append(event.order_id)
            raise RuntimeError("provider hiccup")

    handlers = {order_events_pb2.OrderCreated: stage}
    consumer = await rig.consumer("payments", handlers, start=False)  # type: ignore[arg-type]
    ids = []
    for i in range(1, 4):
        out = rig.codec.encode(order_created(f"o-{i}"), aggregate_id=f"o-{i}")
        ids.append(out.event_id)
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await consumer.start()
    await eventually(lambda: consumer.stats.handled == 3, what="the first three handled")
    assert written == [ids], "one write for the batch, its items in the order staged"
    assert seen_after_commit == [3]

    for i in (4, 5):
        out = rig.codec.encode(order_created(f"o-{i}"), aggregate_id=f"o-{i}")
        ids.append(out.event_id)
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: consumer.stats.handled == 5, what="the last two handled")
    assert failed == ["o-5"]
    # A failed batch writes nothing; its events are then handled (and written) one at a time.
    assert written[1:] == [[ids[3]], [ids[4]]]
    assert await effect_count(consumer.pool) == 5


async def test_a_writer_may_add_after_commit_work_through_its_items_context(rig: Rig) -> None:
    ran: list[str] = []

    async def write(conn: Connection, items: list[Any]) -> None:
        for ctx in items:

            async def note(event_id: str = ctx.event.event_id) -> None:
                ran.append(event_id)

            ctx.after_commit(note)

    async def stage(event: order_events_pb2.OrderCreated, ctx: HandlerContext) -> None:
        ctx.stage(write, ctx)

    handlers = {order_events_pb2.OrderCreated: stage}
    consumer = await rig.consumer("payments", handlers)  # type: ignore[arg-type]
    out = rig.codec.encode(order_created("o-after"), aggregate_id="o-after")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await eventually(lambda: consumer.stats.handled == 1, what="handled")
    await eventually(lambda: ran == [out.event_id], what="the writer's after-commit work run")


async def statements_of(consumer: QueueConsumer) -> list[str]:
    """The statements the consumer's connection sends from now on, each by its first words (asyncpg's
    own look-ups of types left out)."""
    sent: list[str] = []

    def note(query: LoggedQuery) -> None:
        words = query.query.split(" (")[0]
        if words.split()[0] in ("BEGIN", "BEGIN;", "INSERT", "COMMIT", "ROLLBACK"):
            sent.append(words + (" …; COMMIT" if query.query.endswith("; COMMIT") else ""))

    async with consumer.pool.acquire() as conn:  # the pool's one connection, which the consumer reuses
        conn.add_query_logger(note)
    return sent


async def statements_of_one_batch(rig: Rig, consumer: QueueConsumer, count: int) -> list[str]:
    """What a consumer not started yet sends to handle `count` OrderCreated, published before it
    starts so that they make one batch (o-0 … o-<count - 1>)."""
    sent = await statements_of(consumer)
    for i in range(count):
        out = rig.codec.encode(order_created(f"o-{i}"), aggregate_id=f"o-{i}")
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await consumer.start()
    await eventually(lambda: consumer.stats.handled == count, what="the batch handled")
    return sent


async def test_a_batch_opens_its_transaction_and_records_its_inbox_rows_in_one_round_trip(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()}, start=False)
    sent = await statements_of_one_batch(rig, consumer, 3)

    assert sent == [
        "BEGIN; INSERT INTO inbox",
        *["INSERT INTO effects"] * 3,
        "COMMIT",
    ]
    assert await effect_count(consumer.pool) == 3
    assert int(await consumer.pool.fetchval("SELECT count(*) FROM inbox")) == 3


async def test_a_batchs_follow_ups_go_with_its_commit(rig: Rig) -> None:
    from a4co.payments.events.v1 import payment_events_pb2
    from services.platform.events.codec import EventCodec
    from services.platform.events.outbox import OutboxWriter

    writer = OutboxWriter(EventCodec(rig.registry, "payments", rig.topology), rig.topology.schema("payments"))

    async def charge(event: order_events_pb2.OrderCreated, ctx: HandlerContext) -> None:
        await ctx.conn.execute("INSERT INTO effects (event_id) VALUES ($1)", ctx.event.event_id)
        await ctx.publish(
            payment_events_pb2.PaymentProcessed(order_id=event.order_id), aggregate_id=event.order_id
        )

    handlers = {order_events_pb2.OrderCreated: charge}
    consumer = await rig.consumer("payments", handlers, outbox=writer, start=False)  # type: ignore[arg-type]
    sent = await statements_of_one_batch(rig, consumer, 2)

    assert sent == [
        "BEGIN; INSERT INTO inbox",
        "INSERT INTO effects",
        "INSERT INTO effects",
        "INSERT INTO outbox …; COMMIT",
    ]
    rows = await consumer.pool.fetch("SELECT aggregate_id FROM outbox ORDER BY id")
    assert [r["aggregate_id"] for r in rows] == ["o-0", "o-1"]


async def test_a_redelivered_event_in_a_batch_is_found_and_only_the_new_ones_run(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()}, start=False)
    sent = await statements_of(consumer)
    first = rig.codec.encode(order_created("o-seen"), aggregate_id="o-seen")
    await consumer.pool.execute(
        "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)",
        consumer.durable, first.event_id, first.event_type,
    )  # fmt: skip
    later = rig.codec.encode(order_created("o-new"), aggregate_id="o-new")
    for out in (first, later):
        await rig.js.publish(out.subject, out.body, headers=out.headers)
    await consumer.start()
    await eventually(lambda: consumer.stats.handled + consumer.stats.duplicates == 2, what="both settled")

    assert (consumer.stats.handled, consumer.stats.duplicates) == (1, 1)
    rows = await consumer.pool.fetch("SELECT event_id::text FROM effects")
    assert [r["event_id"] for r in rows] == [later.event_id]
    # The insert found a row there already: rolled back, then the new ids asked for by name.
    assert sent == [
        "INSERT INTO inbox",  # the test's own row, on the same connection
        "BEGIN; INSERT INTO inbox",
        "ROLLBACK",
        "BEGIN",
        "INSERT INTO inbox",
        "INSERT INTO effects",
        "COMMIT",
    ]


async def test_an_event_whose_id_is_not_a_uuid_is_dead_lettered_at_once(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()})
    out = rig.codec.encode(order_created("o-bad-id"), aggregate_id="o-bad-id")
    envelope = envelope_pb2.EventEnvelope.FromString(out.body)
    envelope.event_id = "o-bad-id'); DROP TABLE inbox; --"
    await rig.js.publish(out.subject, envelope.SerializeToString(), headers=out.headers)
    await rig.commit(order_created("o-ok"), "o-ok")
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.handled == 1, what="the next event handled")
    letters = await DeadLetterQueue(rig.js, rig.topology).browse()
    assert [(x.reason, x.deliveries) for x in letters] == [("UNDECODABLE", 1)]
    assert "is not a UUID" in letters[0].error
    assert await effect_count(consumer.pool) == 1


async def test_a_batch_whose_opening_statement_fails_is_rolled_back_and_tried_again(rig: Rig) -> None:
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: record_effect()}, start=False)
    await consumer.pool.execute("ALTER TABLE inbox RENAME TO inbox_away")  # BEGIN; INSERT INTO inbox fails
    out = rig.codec.encode(order_created("o-0"), aggregate_id="o-0")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    await consumer.start()
    await eventually(lambda: consumer.stats.retried >= 1, what="the failed delivery retried")
    await consumer.pool.execute("ALTER TABLE inbox_away RENAME TO inbox")
    await eventually(lambda: consumer.stats.handled == 1, what="handled on a later delivery")
    assert await effect_count(consumer.pool) == 1


async def test_a_batch_handled_past_ack_wait_is_not_delivered_to_another_replica(rig: Rig) -> None:
    """A handler that waits (for a lock, say) longer than ack_wait: its batch is reported in
    progress, so the other replica never gets the event, and it takes effect once, on its first
    delivery."""
    release = asyncio.Event()
    ran: list[tuple[str, int]] = []

    def waiting(replica: str) -> Callable[[Message, HandlerContext], Awaitable[None]]:
        async def handler(event: Message, ctx: HandlerContext) -> None:
            ran.append((replica, ctx.delivery))
            await release.wait()
            await record_effect(replica)(event, ctx)

        return handler

    first = await rig.consumer("payments", {order_events_pb2.OrderCreated: waiting("r1")})
    second = await rig.consumer("payments", {order_events_pb2.OrderCreated: waiting("r2")})
    out = rig.codec.encode(order_created("o-slow"), aggregate_id="o-slow")
    await rig.js.publish(out.subject, out.body, headers=out.headers)
    # With FAST's ack_wait of 2 s, reported every 0.5 s from 0.5-1 s on: five reports keep it
    # past ack_wait.
    await eventually(
        lambda: first.stats.long_batches + second.stats.long_batches >= 5,
        timeout=30,
        what="the slow batch reported in progress past ack_wait",
    )
    release.set()
    await eventually(lambda: first.stats.handled + second.stats.handled == 1, what="handled")
    assert len(ran) == 1, f"delivered to one replica only: {ran}"
    assert ran[0][1] == 1
    assert first.stats.duplicates + second.stats.duplicates == 0
