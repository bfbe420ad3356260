"""Queue consumers: every replica of a service shares one durable pull consumer per stream.

This is the strategy's `subscribeQueue(subject, queue, handler)`. Each message is decoded,
upcast when stored under an older version, and dispatched by event type from a handler table. The
handler runs in a database transaction that first records the event id in the inbox, so its effect
happens once however often the event is delivered; the message is acknowledged after the commit.
A failing handler is retried with exponential backoff and jitter; after the last allowed delivery,
or at once when the message cannot be decoded, it goes to the dead-letter stream with its original
headers, the error, the consumer's name and the delivery count.

A handler that fails because the database does not answer (it is down, restarting, refusing
connections) is not the event's fault, and is not counted against it: the consumer keeps the
event and the rest of its batch, tells JetStream it is still working on them so that nothing is
redelivered meanwhile, and checks the database with backoff until it answers; then it handles the
event again, on the same delivery (docs/decisions/0032). So too while the database answers but
refuses to write (its disk full, a read-only server after a failover): the consumer keeps the
event and tries it again with backoff until its write is taken (docs/decisions/0035).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from services.platform.db import Connection, literal
from services.platform.events import metrics
from services.platform.events.codec import (
    EventCodec,
    EventDecodeError,
    IncomingEvent,
    OutgoingEvent,
    UnknownEventError,
    message_size,
)
from services.platform.events.outbox import OutboxWriter
from services.platform.events.pull import Puller, PullError
from services.platform.events.registry import EventDef
from services.platform.events.streams import until_answered
from services.platform.events.topology import Topology
from services.platform.events.upcasting import NoUpcastPathError, Upcasters
from services.platform.flow import flow_scope
from services.platform.labels import Children
from services.platform.outages import DATABASE_CONFLICTS, DATABASE_REFUSALS, DEPENDENCY_OUTAGES
from services.platform.resilience import Backoff, cancel_and_wait, wait_set
from services.platform.telemetry import tracing_enabled

log = logging.getLogger(__name__)
tracer = trace.get_tracer("a4co.events")

H_REPLAY_FOR = "a4co-replay-for"
# Where a JetStream acknowledgement subject gives a message's delivery count (NATS ADR-15):
# $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>, or with
# <domain>.<account hash> after ACK (and possibly more tokens at the end), where nats-py's
# `Msg.Ack` names the positions; the form without them has each of its tokens two places earlier.
_ACK_PREFIX = [Msg.Ack.Prefix0, Msg.Ack.Prefix1]
_DOMAIN_TOKENS = Msg.Ack.Stream - Msg.Ack.Domain
_ACK_TOKENS_WITH_DOMAIN = Msg.Ack.Timestamp + 2  # through <time>.<pending>
_ACK_TOKENS = _ACK_TOKENS_WITH_DOMAIN - _DOMAIN_TOKENS
_DELIVERED = Msg.Ack.NumDelivered - _DOMAIN_TOKENS
LAG_INTERVAL_S = 5.0
H_DLQ_REASON, H_DLQ_ERROR, H_DLQ_CONSUMER = "a4co-dlq-reason", "a4co-dlq-error", "a4co-dlq-consumer"
H_DLQ_DELIVERIES, H_DLQ_TIME = "a4co-dlq-deliveries", "a4co-dlq-time"
H_DLQ_STREAM, H_DLQ_SEQ, H_DLQ_SUBJECT = (
    "a4co-dlq-stream",
    "a4co-dlq-stream-seq",
    "a4co-dlq-subject",
)
H_DLQ_EVENT_TYPE = "a4co-dlq-event-type"
# Set when the original's body is not kept (its size in bytes): the original is then read again
# from its stream (`a4co-dlq-stream`, `a4co-dlq-stream-seq`) by a replay.
H_DLQ_OMITTED = "a4co-dlq-body-omitted"

REASON_HANDLER_FAILED = "HANDLER_FAILED"
REASON_UNDECODABLE = "UNDECODABLE"
REASON_UNKNOWN_EVENT = "UNKNOWN_EVENT"


# Writes what the handlers of one transaction staged for it (`HandlerContext.stage`), all at once
# just before the transaction commits; returns what to run once it has committed, if anything.
BatchWriter = Callable[[Connection, list[Any]], Awaitable[Callable[[], Awaitable[None]] | None]]


@dataclass(slots=True)
class HandlerContext:
    """What a handler gets beside the event: its transaction and a way to publish follow-ups.

    The consumer opens and commits the transaction with statements of its own (decision 25), so
    asyncpg's `conn.transaction()` refuses to nest in it; a handler that needs a savepoint sends
    `SAVEPOINT` and `ROLLBACK TO SAVEPOINT` itself.
    """

    conn: Connection
    event: IncomingEvent
    delivery: int
    outbox: OutboxWriter | None
    # Follow-ups of the whole transaction, which its runner inserts together before it commits.
    staged: list[OutgoingEvent]
    committed: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # What the transaction's handlers staged, by writer, in the order staged.
    batches: dict[BatchWriter, list[Any]] = field(default_factory=dict)
    # The trace context the handler ran in: a follow-up published later, by a staged writer,
    # still carries the trace of the event that caused it.
    trace_context: otel_context.Context | None = None

    def stage(self, writer: BatchWriter, item: Any) -> None:
        """Leave `item` to `writer`, which writes the items of every handler of this transaction
        together just before it commits: one statement for a batch of events instead of one per
        event. `writer` must be the same object for every item (a module-level function, say).
        It may return one after-commit callback for the whole batch, and an item that carries its
        HandlerContext may add that event's own (`after_commit`). Nothing staged is written if the
        transaction rolls back."""
        self.batches.setdefault(writer, []).append(item)

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` once the handler's transaction has committed (never if it rolls back),
        for effects outside the database such as refreshing a cache."""
        self.committed.append(callback)

    @property
    def retry_count(self) -> int:
        """How often this event was tried before: redeliveries plus operator replays."""
        return self.delivery - 1 + self.event.envelope.metadata.retry_count

    async def publish(self, event: Message, *, aggregate_id: str) -> OutgoingEvent:
        """Add a follow-up event to the outbox, in this handler's transaction and flow.

        The row is written with the other follow-ups of the transaction just before it commits
        (one statement for a batch instead of one round trip per event; docs/performance-history.md).
        """
        if self.outbox is None:
            raise RuntimeError("this consumer was built without an outbox")
        token = otel_context.attach(self.trace_context) if self.trace_context is not None else None
        try:
            out = self.outbox.encode(event, aggregate_id=aggregate_id, flow=self.event.flow)
        finally:
            if token is not None:
                otel_context.detach(token)
        self.staged.append(out)
        return out


Handler = Callable[[Message, HandlerContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Selective:
    """A handler for the events of its type that `accepts` keeps.

    The others are acknowledged at once and counted as skipped, without a transaction or an inbox
    row: handling them would change nothing, so there is nothing to record or to deduplicate.
    """

    handle: Handler
    accepts: Callable[[Message], bool]


def _every(_: Message) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class _Work:
    """A message ready for its handler."""

    msg: Msg
    incoming: IncomingEvent
    payload: Message
    handler: Handler
    delivery: int

    @property
    def event_type(self) -> str:
        return self.incoming.definition.event_type


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How often and how patiently a consumer retries: the strategy's 3 deliveries, 1 s to 30 s."""

    max_deliveries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    ack_wait_s: float = 10.0
    batch_size: int = 64
    fetch_timeout_s: float = 1.0


@dataclass(slots=True)
class ConsumerStats:
    """Counts by outcome, for tests and the status command."""

    handled: int = 0
    duplicates: int = 0
    skipped: int = 0
    retried: int = 0
    dead_lettered: int = 0
    database_waits: int = 0  # outages and refusals to write of the database waited out, events kept
    kept_alive: int = 0  # times the kept events were reported in progress to JetStream
    long_batches: int = 0  # times a batch handled for a quarter of ack_wait was reported in progress
    conflicts: int = 0  # transactions rolled back for a conflict and tried again at once


def deliveries(msg: Msg) -> int:
    """How many times JetStream has delivered `msg`, read from its acknowledgement subject.

    nats-py's `msg.metadata` builds two frozen dataclasses and a datetime for this one number: a
    tenth of a consumer's time with a no-op handler (docs/performance-history.md). Anything but a
    JetStream subject goes to it, and fails there as before.
    """
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == _ACK_PREFIX:
        if len(tokens) == _ACK_TOKENS:
            return int(tokens[_DELIVERED])
        if len(tokens) >= _ACK_TOKENS_WITH_DOMAIN:
            return int(tokens[Msg.Ack.NumDelivered])
    return msg.metadata.num_delivered


# A transaction PostgreSQL rolled back for a conflict with a concurrent one (class 40: a deadlock,
# a serialization failure) changed nothing: tried again at once, on the same delivery, this many
# times, each after a pause of up to CONFLICT_PAUSE_S times its number that the replicas in
# conflict do not share; then the failure counts.
CONFLICT_RETRIES = 3
CONFLICT_PAUSE_S = 0.05


@dataclass(slots=True)
class _Retries:
    """What one event's handling met on its delivery, waited out or tried again."""

    refusals: int = 0  # the database's refusals to write, while they last
    refused_since: float = 0.0  # time.monotonic() at the first
    conflicts: int = 0


class _StoppedWaitingError(Exception):
    """The consumer was stopped while it waited for its database."""


async def _report_in_progress(messages: list[Msg]) -> None:
    for msg in messages:
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()


class QueueConsumer:
    """One service's durable, shared pull consumer on one stream."""

    def __init__(
        self,
        *,
        service: str,
        stream: str,
        handlers: Mapping[type[Message], Handler | Selective],
        js: JetStreamContext,
        pool: asyncpg.Pool,
        codec: EventCodec,
        topology: Topology,
        outbox: OutboxWriter | None = None,
        upcasters: Upcasters | None = None,
        policy: DeliveryPolicy | None = None,
        streams: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """`streams` declares the streams again (`ensure_streams`) when the consumer's is gone."""
        self.service, self.stream = service, stream
        self._streams = streams
        self.js, self.pool, self.codec, self.topology = js, pool, codec, topology
        self.outbox = outbox
        self.upcasters = upcasters or Upcasters()
        self.policy = policy or DeliveryPolicy()
        self.stats = ConsumerStats()
        self.durable = topology.durable(service, stream)
        self._batch_sizes = metrics.CONSUMER_BATCH.labels(service, stream)
        self._held = metrics.EVENTS_HELD.labels(service, stream)
        self._conflicts = metrics.CONFLICTS.labels(service, stream)
        self._handlers: dict[str, tuple[EventDef, Selective]] = {}
        for message_class, handler in handlers.items():
            definition = codec.registry.of(message_class)
            if definition.stream != stream:
                raise ValueError(f"{definition.event_type} travels in {definition.stream}, not {stream}")
            if not isinstance(handler, Selective):
                handler = Selective(handler, _every)
            self._handlers[definition.event_type] = (definition, handler)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watched = False  # whether another says why the task failed (add_done_callback)
        self._created: datetime | None = None  # when the durable consumer was made, as declared
        self._lag_task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._batch: list[Msg] = []  # the batch being handled, empty between batches
        self._batch_started = 0.0
        # Label children are looked up once per event type, not once per message.
        self._handler_duration = Children(metrics.HANDLER_DURATION, service)  # by event type
        self._consumed = Children(metrics.EVENTS_CONSUMED, service)  # by event type and result
        # Without a tracer provider the spans would be no-ops: skip building them at all.
        self._tracing = tracing_enabled()
        self._puller: Puller | None = None
        self._durable_literal = literal(self.durable)
        self._type_literals: dict[str, str] = {}  # by event type

    def config(self) -> ConsumerConfig:
        """The durable consumer's configuration: the handled events' subjects, explicit acks."""
        subjects = sorted(
            {
                self.topology.event_subject(e)
                for event_type in self._handlers
                for e in (
                    self.codec.registry.get(event_type, v) for v in self.codec.registry.versions(event_type)
                )
            }
        )
        return ConsumerConfig(
            durable_name=self.durable,
            description=f"{self.service} consumes {', '.join(sorted(self._handlers))}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.policy.ack_wait_s,
            max_deliver=-1,  # the consumer dead-letters itself, so nothing is dropped silently
            filter_subjects=subjects,
            max_ack_pending=10_000,
        )

    async def start(self) -> None:
        """Create or bind the durable consumer and start handling messages (again, after a stop)."""
        self._stopping.clear()
        stream = self.topology.stream(self.stream)
        self._created = (await self._declare()).created
        # The JetStream context's own connection: nats-py has no public accessor for it.
        self._puller = Puller(self.js._nc, stream, self.durable)
        await self._puller.start()
        self._task = asyncio.create_task(self._run(), name=f"consumer {self.durable}")
        self._watched = False
        self._task.add_done_callback(self._on_exit)
        self._lag_task = asyncio.create_task(self._watch_lag(), name=f"lag of {self.durable}")
        self._keeper = asyncio.create_task(self._keep_long_batches(), name=f"keeper of {self.durable}")

    @property
    def running(self) -> bool:
        """Whether the consumer is fetching and handling messages."""
        return self._task is not None and not self._task.done()

    def add_done_callback(self, callback: Callable[[asyncio.Task[None]], None]) -> None:
        """Call `callback` with the task that fetches and handles messages once it ends; the
        callback then says why it failed, and the consumer does not say it too."""
        assert self._task is not None, "started"
        self._watched = True
        self._task.add_done_callback(callback)

    def _on_exit(self, task: asyncio.Task[None]) -> None:
        if not self._watched and not task.cancelled() and task.exception() is not None:
            log.error("consumer %s stopped by an error", self.durable, exc_info=task.exception())

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop fetching, finish the messages in hand, then unsubscribe (graceful drain)."""
        self._stopping.set()
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        if self._task is not None:
            # The drain gets `timeout`; past it the loop is cancelled, and its clean-up (a
            # transaction rolling back) is awaited before unsubscribing. A task that already died
            # has been logged by _on_exit; stopping it is not an error.
            await asyncio.wait({self._task}, timeout=timeout)
            self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        if self._keeper is not None:  # kept until the drain's batches are handled
            await cancel_and_wait(self._keeper, timeout)
        if self._puller is not None:
            with contextlib.suppress(Exception):
                await self._puller.stop()

    async def _fetch(self) -> list[Msg]:
        """The next batch; empty when no message came within the fetch window."""
        assert self._puller is not None
        return await self._puller.fetch(self.policy.batch_size, timeout=self.policy.fetch_timeout_s)

    async def _declare(self) -> ConsumerInfo:
        """Create the durable consumer, or bind to it as it is (the same configuration); asked
        again while JetStream answers "not now" (a cluster electing its leaders, decision 64)."""
        stream, config = self.topology.stream(self.stream), self.config()
        return await until_answered(f"consumer {self.durable}", lambda: self.js.add_consumer(stream, config))

    async def _declare_again(self, failure: PullError) -> None:
        """Declare the consumer again, and first its stream when that is gone too; said as a
        consumer made anew only when it was (its creation time changed): a 503 while a cluster
        elects the consumer's leader finds it there."""
        try:
            info = await self._declare()
        except nats.js.errors.NotFoundError:
            if self._streams is None:
                raise
            await self._streams()
            info = await self._declare()
        if info.created != self._created:
            self._created = info.created
            log.warning("%s: the durable consumer was gone; declared again", self.durable)
        else:
            log.info("%s: the durable consumer is there: %s", self.durable, failure)

    async def _run(self) -> None:
        assert self._puller is not None
        failures = 0
        # The puller keeps a credit of messages on their way (pull.py): what arrives while a batch
        # is handled waits in its buffer and makes the next batch, which is taken at once. Only an
        # empty buffer is waited on, and a stop drops that wait. Batches are handled one after the
        # other, in order.
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                try:
                    if self._puller.pending:
                        messages = await self._fetch()
                    else:
                        fetching = asyncio.ensure_future(self._fetch())
                        either: set[asyncio.Future[Any]] = {fetching, stopping}
                        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                        if not fetching.done():  # stopping: a fetch still waiting is dropped
                            fetching.cancel()
                            break
                        messages = fetching.result()
                except (nats.errors.Error, OSError) as exc:
                    failures += 1
                    delay = self.policy.backoff.delay(failures)
                    log.warning("%s: fetch failed (%r); retrying in %.1f s", self.durable, exc, delay)
                    await wait_set(self._stopping, delay)
                    if isinstance(exc, PullError) and exc.consumer_gone:
                        # Deleted on the server (an operator's `nats consumer rm`, a stream restored
                        # without its consumers, a server that lost its state): declared again.
                        with contextlib.suppress(nats.errors.Error, OSError):
                            await self._declare_again(exc)
                    continue
                failures = 0
                if messages:
                    await self.process_batch(messages)
        finally:
            stopping.cancel()
        # Graceful drain: what already arrived is handled; anything later is redelivered.
        while messages := self._puller.take(self.policy.batch_size):
            await self.process_batch(messages)

    async def _keep_long_batches(self) -> None:
        """Every quarter of ack_wait, report in progress the unsettled messages of a batch handled
        for that long already, and those waiting in the buffer behind it, so that JetStream
        delivers none of them to another replica meanwhile, nor counts a delivery against them.
        The first report comes within half of ack_wait of the batch's start."""
        quarter = self.policy.ack_wait_s / 4
        while True:
            await asyncio.sleep(quarter)  # the watch's period
            batch = self._batch
            if not batch or time.monotonic() - self._batch_started < quarter:
                continue
            unsettled = [m for m in batch if not m.is_acked]
            if unsettled:
                self.stats.long_batches += 1
                await _report_in_progress(self._and_buffered(unsettled))

    async def _watch_lag(self) -> None:
        """Export the lag every LAG_INTERVAL_S beside the fetch loop, which never waits for it (a
        JetStream API request answered late, up to its 5 s timeout, used to hold the messages)."""
        while not self._stopping.is_set():
            await self._observe_lag()
            await wait_set(self._stopping, LAG_INTERVAL_S)

    async def _observe_lag(self) -> None:
        """Export the consumer's lag; a failed look is skipped, the next one will tell."""
        try:
            info = await self.js.consumer_info(self.topology.stream(self.stream), self.durable)
        except (nats.errors.Error, TimeoutError, OSError):
            return
        metrics.CONSUMER_PENDING.labels(self.service, self.stream).set(info.num_pending or 0)
        metrics.CONSUMER_UNACKED.labels(self.service, self.stream).set(info.num_ack_pending or 0)

    async def process_batch(self, messages: list[Msg]) -> None:
        """Handle fetched messages; the handlers of a batch share one transaction.

        When any handler of the batch fails, the transaction is rolled back and the messages are
        handled again one transaction each, so that only the failing one is retried. A batch
        handled for long (a handler waiting for a lock, say) has its messages reported in progress
        (`_keep_long_batches`).
        """
        self._batch, self._batch_started = messages, time.monotonic()
        try:
            await self._process(messages)
        finally:
            self._batch = []

    async def _process(self, messages: list[Msg]) -> None:
        self._batch_sizes.observe(len(messages))
        work = [item for msg in messages if (item := await self._prepare(msg)) is not None]
        if len(work) > 1:
            try:
                outcomes = await self._run_in_transaction(work)
            except Exception:  # some handler failed: isolate it below
                log.debug("%s: batch of %d failed; handling one by one", self.durable, len(work))
            else:
                for item, first in zip(work, outcomes, strict=True):
                    await self._settle(item.msg, "handled" if first else "duplicate", item.event_type)
                return
        for i in range(len(work)):
            if not await self._handle_alone(work, i):
                return  # stopped while waiting for the database: the rest left to redelivery

    async def _handle_alone(self, work: list[_Work], i: int) -> bool:
        """Handle `work[i]` in a transaction of its own, and settle it: retried or dead-lettered by
        `_failed` when it fails; kept, with the rest of `work`, and handled again on the same
        delivery after an outage of the database (`_waited_for_database`) or while the database
        refuses to write (`_wait_while_refused`). False when the consumer was stopped during such
        a wait: `work[i:]` are left unsettled, redelivered after ack_wait."""
        item = work[i]
        retries = _Retries()
        try:
            while True:
                try:
                    (first,) = await self._run_in_transaction([item])
                except Exception as exc:
                    try:
                        if await self._waited_out([w.msg for w in work[i:]], exc, retries):
                            continue  # the same delivery, again
                    except _StoppedWaitingError:
                        return False
                    await self._failed(item.msg, exc, item.delivery, item.event_type)
                    return True
                if retries.refusals:
                    log.warning(
                        "%s: the database takes writes again after %.1f s",
                        self.durable,
                        time.monotonic() - retries.refused_since,
                    )
                await self._settle(item.msg, "handled" if first else "duplicate", item.event_type)
                return True
        finally:
            if retries.refusals:
                self._held.set(0)

    async def _waited_out(self, held: list[Msg], exc: Exception, retries: _Retries) -> bool:
        """Whether the handler's `exc` was not the event's (an outage or a refusal to write of the
        database, a conflict with a concurrent transaction) and has been waited out, `held` kept
        meanwhile: the event is to be handled again."""
        if isinstance(exc, DATABASE_CONFLICTS) and retries.conflicts < CONFLICT_RETRIES:
            retries.conflicts += 1
            self.stats.conflicts += 1
            self._conflicts.inc()
            log.info(
                "%s: rolled back for a conflict (%s: %s); trying again", self.durable, type(exc).__name__, exc
            )
            pause = random.uniform(0, CONFLICT_PAUSE_S * retries.conflicts)  # noqa: S311 (jitter)
            if await wait_set(self._stopping, pause):
                raise _StoppedWaitingError
            return True
        if isinstance(exc, DATABASE_REFUSALS):
            await self._wait_while_refused(held, exc, retries)
            return True
        return isinstance(exc, DEPENDENCY_OUTAGES) and await self._waited_for_database(held, exc)

    def _and_buffered(self, messages: list[Msg]) -> list[Msg]:
        """`messages` and those waiting in the puller's buffer behind them."""
        return [*messages, *(self._puller.buffered if self._puller else ())]

    async def _keep(self, held: list[Msg], attempt: int) -> None:
        """Report `held` and the messages buffered behind them in progress, then wait the
        attempt's backoff, a quarter of ack_wait at most, so that the next report comes before
        JetStream would deliver them again. Raises _StoppedWaitingError when stopped first."""
        kept = self._and_buffered(held)
        self._held.set(len(kept))
        await _report_in_progress(kept)
        self.stats.kept_alive += 1
        pause = min(self.policy.backoff.delay(attempt), self.policy.ack_wait_s / 4)
        if await wait_set(self._stopping, pause):
            raise _StoppedWaitingError

    async def _database_answers(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await self.pool.fetchval("SELECT 1") == 1)
        except Exception:  # any failure to answer is the answer
            return False

    async def _waited_for_database(self, held: list[Msg], exc: Exception) -> bool:
        """After a handler failed with `exc`, an outage: when the database does not answer, keep
        `held` and the messages that arrived meanwhile until it does, and return True (handle them
        again). False when it answers at once: the failure is the handler's, and counts.
        Raises _StoppedWaitingError when the consumer is stopped first."""
        quarter = self.policy.ack_wait_s / 4
        if self._stopping.is_set():
            raise _StoppedWaitingError
        if await self._database_answers(quarter):
            return False
        started = time.monotonic()
        self.stats.database_waits += 1
        log.warning(
            "%s: the database does not answer (%s: %s); %d events kept until it does",
            self.durable,
            type(exc).__name__,
            exc,
            len(held),
        )
        attempt = 0
        try:
            while True:
                attempt += 1
                await self._keep(held, attempt)
                if await self._database_answers(quarter):
                    break
        finally:
            self._held.set(0)
        log.warning("%s: the database answers again after %.1f s", self.durable, time.monotonic() - started)
        return True

    async def _wait_while_refused(self, held: list[Msg], exc: Exception, retries: _Retries) -> None:
        """After a handler's write was refused (`DATABASE_REFUSALS`: the disk full, a read-only
        server), keep `held` and the messages that arrived meanwhile for one step of backoff,
        before the event is tried again: the database answers `SELECT 1` meanwhile, so trying the
        event is the only test of its writes. Raises _StoppedWaitingError when stopped first."""
        if self._stopping.is_set():
            raise _StoppedWaitingError
        if not retries.refusals:
            retries.refused_since = time.monotonic()
            self.stats.database_waits += 1
            log.warning(
                "%s: the database refuses to write (%s: %s); %d events kept until it takes them",
                self.durable,
                type(exc).__name__,
                exc,
                len(held),
            )
        retries.refusals += 1
        await self._keep(held, retries.refusals)

    async def _prepare(self, msg: Msg) -> _Work | None:
        """Decode, route and upcast a message; settle it at once when it cannot be handled."""
        delivery = deliveries(msg)
        headers = msg.headers or {}
        replay_for = headers.get(H_REPLAY_FOR)
        if replay_for and replay_for != self.service:
            # Another consumer's replay: not this one's to decode, nor to dead-letter again when
            # its body cannot be (a replay of an UNDECODABLE letter).
            claimed = headers.get("ce-type", "")
            known = bool(self.codec.registry.versions(claimed))
            await self._settle(msg, "skipped", claimed if known else "unknown")
            return None
        try:
            incoming = self.codec.decode(msg.data)
        except EventDecodeError as exc:
            await self._dead_letter(msg, REASON_UNDECODABLE, str(exc), "unknown")
            return None
        except UnknownEventError as exc:
            await self._dead_letter(msg, REASON_UNKNOWN_EVENT, str(exc), headers.get("ce-type"))
            return None
        event_type = incoming.definition.event_type
        if delivery > 1:
            metrics.REDELIVERIES.labels(self.service, event_type).inc()
        entry = self._handlers.get(event_type)
        if entry is None:
            await self._settle(msg, "skipped", event_type)
            return None
        wanted, handler = entry
        try:
            payload = self.upcasters.upcast(incoming.payload, incoming.definition, wanted)
        except NoUpcastPathError as exc:
            await self._dead_letter(msg, REASON_UNKNOWN_EVENT, str(exc), event_type)
            return None
        if not handler.accepts(payload):
            await self._settle(msg, "skipped", event_type)
            return None
        if delivery > self.policy.max_deliveries:
            # Earlier deliveries ended without an outcome (the process died mid-handler).
            error = f"no outcome after {delivery - 1} deliveries; the consumer may have crashed"
            await self._dead_letter(msg, REASON_HANDLER_FAILED, error, event_type)
            return None
        return _Work(msg, incoming, payload, handler.handle, delivery)

    async def _run_in_transaction(self, work: list[_Work]) -> list[bool]:
        """Record the events in the inbox and run the handlers of the new ones, in one transaction.

        Returns, for each item, whether it was new (False: a duplicate, nothing was run).
        """
        # Each handler's after-commit list, kept as is: a writer may still add to it through its
        # items' HandlerContext before the commit.
        committed: list[list[Callable[[], Awaitable[None]]]] = []
        written: list[Callable[[], Awaitable[None]]] = []
        staged: list[OutgoingEvent] = []
        batches: dict[BatchWriter, list[Any]] = {}
        async with self.pool.acquire() as conn:
            try:
                outcomes = await self._begin(conn, work)
                for item, first in zip(work, outcomes, strict=True):
                    if first:
                        committed.append(await self._call(conn, item, staged, batches))
                for writer, items in batches.items():  # each writer once, in the order first staged to
                    done = await writer(conn, items)
                    if done is not None:
                        written.append(done)
                if staged:  # every follow-up of the transaction with its commit, in the order published
                    assert self.outbox is not None  # publish() refuses without one
                    await self.outbox.insert_and_commit(conn, staged, wake_after_commit=True)
                else:
                    await conn.execute("COMMIT")
            except BaseException:
                # Whatever failed, from the BEGIN on. The pool rolls back what is still open when the
                # connection returns to it, and closes a connection it cannot reset; the first error
                # is the one that counts.
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
                raise
        if staged and self.outbox is not None:
            self.outbox.committed(staged)
        for callback in [*(c for callbacks in committed for c in callbacks), *written]:
            try:
                await callback()
            except Exception:  # the transaction stands; a failed side effect is logged, not retried
                log.exception("%s: after-commit callback failed", self.durable)
        return outcomes

    async def _begin(self, conn: Connection, work: list[_Work]) -> list[bool]:
        """Open the transaction and record the batch's events in the inbox; returns, for each item,
        whether it was recorded now (False: handled before, or a copy earlier in the batch).

        BEGIN and the insert go together, one round trip instead of two: a query without parameters
        may hold several statements, and its status tells how many rows the insert added. The
        values are written as SQL literals: the event ids as they came (the codec refuses an
        envelope whose id is not a UUID, so they hold no quote), the rest through `literal`. When
        some of the events were there already, which happens only on a redelivery, the transaction
        is rolled back and opened again with an insert that returns the new ids. On an error the
        caller rolls back.
        """
        types = self._type_literals
        values = ", ".join(
            f"({self._durable_literal}, '{item.incoming.event_id}', "
            f"{types.get(item.event_type) or types.setdefault(item.event_type, literal(item.event_type))})"
            for item in work
        )
        status = await conn.execute(
            f"BEGIN; INSERT INTO inbox (consumer, event_id, event_type) VALUES {values} "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )
        if status == f"INSERT 0 {len(work)}":
            return [True] * len(work)
        await conn.execute("ROLLBACK")
        await conn.execute("BEGIN")
        inserted = await conn.fetch(
            "INSERT INTO inbox (consumer, event_id, event_type) "
            "SELECT $1, e.id, e.type FROM unnest($2::uuid[], $3::text[]) AS e(id, type) "
            "ON CONFLICT DO NOTHING RETURNING event_id::text",
            self.durable,
            [item.incoming.event_id for item in work],
            [item.event_type for item in work],
        )
        recorded = {row["event_id"] for row in inserted}  # canonical: lower case, with hyphens
        firsts = []
        for event_id in (str(uuid.UUID(item.incoming.event_id)) for item in work):
            firsts.append(event_id in recorded)
            recorded.discard(event_id)  # a copy later in the batch is a duplicate
        return firsts

    async def _call(
        self,
        conn: Connection,
        item: _Work,
        staged: list[OutgoingEvent],
        batches: dict[BatchWriter, list[Any]],
    ) -> list[Callable[[], Awaitable[None]]]:
        """Run one handler in its own span and flow, timing it; returns its after-commit callbacks.
        The follow-ups it publishes are added to `staged`, what it stages for writers to `batches`."""
        started = time.perf_counter()
        ctx = HandlerContext(conn, item.incoming, item.delivery, self.outbox, staged, batches=batches)
        with self._span(item) as span, flow_scope(item.incoming.flow):
            ctx.trace_context = otel_context.get_current()
            try:
                await item.handler(item.payload, ctx)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                raise
            finally:
                self._handler_duration(item.event_type).observe(time.perf_counter() - started)
        return ctx.committed

    def _span(self, item: _Work) -> AbstractContextManager[trace.Span]:
        """The CONSUMER span of a handler, child of the producer's; a no-op span without tracing."""
        if not self._tracing:
            return contextlib.nullcontext(trace.INVALID_SPAN)
        return tracer.start_as_current_span(
            f"{self.topology.unprefixed(item.msg.subject)} process",
            context=propagate.extract(item.msg.headers or {}),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": item.msg.subject,
                "messaging.consumer.group.name": self.durable,
                "messaging.message.id": item.incoming.event_id,
                "messaging.message.delivery_count": item.delivery,
            },
        )

    async def _failed(self, msg: Msg, exc: Exception, delivery: int, event_type: str) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if delivery >= self.policy.max_deliveries:
            await self._dead_letter(msg, REASON_HANDLER_FAILED, error, event_type)
            return
        delay = self.policy.backoff.delay(delivery)
        log.warning(
            "%s: %s failed on delivery %d (%s); retry in %.2f s",
            self.durable,
            event_type,
            delivery,
            error,
            delay,
        )
        self.stats.retried += 1
        metrics.EVENTS_CONSUMED.labels(self.service, event_type, "retried").inc()
        await msg.nak(delay=delay)

    async def _settle(self, msg: Msg, result: str, event_type: str) -> None:
        await msg.ack()
        if result == "handled":
            self.stats.handled += 1
        elif result == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.skipped += 1
        self._consumed(event_type, result).inc()

    async def _dead_letter(self, msg: Msg, reason: str, error: str, event_type: str | None) -> None:
        meta = msg.metadata
        headers = dict(msg.headers or {})
        headers.pop(H_REPLAY_FOR, None)
        headers.update(
            {
                H_DLQ_REASON: reason,
                H_DLQ_ERROR: error[:2000],
                H_DLQ_CONSUMER: self.service,
                H_DLQ_DELIVERIES: str(meta.num_delivered),
                H_DLQ_STREAM: meta.stream,
                H_DLQ_SEQ: str(meta.sequence.stream),
                H_DLQ_SUBJECT: msg.subject,
                H_DLQ_EVENT_TYPE: event_type or "unknown",
                H_DLQ_TIME: datetime.now(UTC).isoformat(timespec="milliseconds"),
                "Nats-Msg-Id": f"dlq:{self.durable}:{meta.sequence.stream}:{meta.num_delivered}",
            }
        )
        body = msg.data
        limit = self.js._nc.max_payload
        if message_size(body, headers) > limit:
            # Published near the server's limit by something else: with these headers it would be
            # over it, and the server would close the connection. The dead letter keeps the headers
            # (only its own, if the original's alone are too many) and says where the body is.
            headers[H_DLQ_OMITTED] = str(len(body))
            body = b""
            if message_size(body, headers) > limit:
                headers = {
                    k: v for k, v in headers.items() if k.startswith("a4co-dlq-") or k == "Nats-Msg-Id"
                }
        try:
            await self.js.publish(
                self.topology.dead_letter_subject(self.service, msg.subject), body, headers=headers
            )
        except Exception as exc:  # keep the message; try again after a pause
            log.error("%s: cannot dead-letter (%s); will retry", self.durable, exc)
            await msg.nak(delay=self.policy.backoff.delay(meta.num_delivered))
            return
        await msg.term()
        log.error("%s: dead-lettered %s (%s): %s", self.durable, event_type, reason, error)
        self.stats.dead_lettered += 1
        metrics.EVENTS_CONSUMED.labels(self.service, event_type or "unknown", "dead_lettered").inc()
        metrics.DLQ_MESSAGES.labels(self.service, event_type or "unknown", reason).inc()
