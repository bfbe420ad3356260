"""Event platform benchmark: consume rate and commit -> handler latency, beside raw nats-py.

Every figure is printed beside a baseline measured in the same run on the same servers, stream
and payload, as a ratio, because a 2-core machine is too noisy for absolute targets. Each is
measured in rounds that alternate with its baseline's (`alternated`), so that the machine speeding
up or slowing down during the run favours neither; a rate is the rounds' messages over their time.

1. consume rate: our QueueConsumer with a no-op handler (inbox dedupe and ack included) against a
   raw nats-py pull loop that fetches and acks the same messages;
2. latency at a steady offered rate: commit to the outbox -> handler entry, against raw nats-py
   `publish` -> pull-loop receipt.

Run: `python -m bench.events_bench [--quick]`; results go to bench/results/<timestamp>/.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import nats
import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from a4co.orders.events.v1 import order_events_pb2
from a4co.type.v1 import money_pb2
from bench.harness import run_benchmark
from services.platform.db import create_pool
from services.platform.events.codec import EventCodec
from services.platform.events.consumer import DeliveryPolicy, HandlerContext, QueueConsumer
from services.platform.events.outbox import OutboxRelay, OutboxWriter
from services.platform.events.registry import EventRegistry, load_registry
from services.platform.events.streams import ensure_streams
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls
from services.platform.settings import StreamSettings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each measurement does."""

    consume_messages: int  # in each round of a rate
    latency_rates: tuple[int, ...]
    latency_seconds: float  # at each rate, over all its rounds
    rounds: int


FULL = Sizes(consume_messages=20_000, latency_rates=(1000, 2000), latency_seconds=10.0, rounds=3)
QUICK = Sizes(consume_messages=3_000, latency_rates=(1000,), latency_seconds=3.0, rounds=2)
SMOKE = Sizes(consume_messages=200, latency_rates=(200,), latency_seconds=0.5, rounds=2)


def steps(sizes: Sizes) -> int:
    """How many steps `measure` reports: each round of the three consume rates, the two publish
    rates and, at each offered rate, the two latencies."""
    return sizes.rounds * (3 + 2 + 2 * len(sizes.latency_rates))


def alternated(rounds: int, names: Sequence[str]) -> list[tuple[int, str]]:
    """(round, name) in the order to measure them: each round measures every name, in the order
    given, then reversed in the next round, and so on, so that no name is always measured first or
    last while the machine's speed drifts."""
    order = []
    for r in range(rounds):
        order += [(r, name) for name in (names if r % 2 == 0 else list(reversed(names)))]
    return order


def ratios(ours: Sequence[float], baselines: Sequence[float]) -> list[float]:
    """ours / baseline, round by round."""
    return [o / b for o, b in zip(ours, baselines, strict=True)]


def by_round(round_ratios: Sequence[float]) -> str:
    """A table cell of the ratios of the rounds ("-" for none)."""
    return " / ".join(f"{r:.2f}" for r in round_ratios) or "-"


def combined_rate(rates: Sequence[float]) -> float:
    """The rate of rounds that each handled the same number of messages: all of them over the
    rounds' summed time (not the mean of the rates, which a fast round would lift)."""
    return len(rates) / sum(1 / r for r in rates)


def sample_event(i: int) -> order_events_pb2.OrderCreated:
    """A realistic OrderCreated payload."""
    return order_events_pb2.OrderCreated(
        order_id=f"o-{i}",
        customer_id="c-1",
        artisan_id="a-1",
        total=money_pb2.Money(currency_code="EUR", amount_cents=2450),
        payment_method_id="pm-1",
    )


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class Setup:
    """One isolated deployment on the servers."""

    urls: ServerUrls
    registry: EventRegistry
    topology: Topology
    nc: NatsClient
    js: JetStreamContext

    @classmethod
    async def create(cls, urls: ServerUrls, registry: EventRegistry) -> Setup:
        """A fresh prefix with its streams."""
        topology = Topology("b" + uuid.uuid4().hex[:10])
        nc = await nats.connect(urls.nats_url)
        js = nc.jetstream()
        await ensure_streams(js, registry, topology, StreamSettings())
        return cls(urls, registry, topology, nc, js)

    async def close(self) -> None:
        """Drop the deployment's streams and disconnect."""
        for stream in self.registry.streams:
            with contextlib.suppress(nats.errors.Error):
                await self.js.delete_stream(self.topology.stream(stream.name))
        await self.nc.close()


async def fill(setup: Setup, count: int) -> str:
    """Publish `count` encoded events straight to the stream; returns their subject."""
    codec = EventCodec(setup.registry, "bench", setup.topology)
    subject = ""
    futures = []
    for i in range(count):
        out = codec.encode(sample_event(i), aggregate_id=f"o-{i}")
        subject = out.subject
        futures.append(await setup.js.publish_async(out.subject, out.body, headers=out.headers))
    await asyncio.gather(*futures)
    return subject


async def raw_consume_rate(setup: Setup, count: int) -> float:
    """Messages per second through a bare nats-py pull loop that fetches and acks."""
    subject = await fill(setup, count)
    stream = setup.topology.stream("ORDERS")
    await setup.js.add_consumer(
        stream,
        ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT, filter_subject=subject),
    )
    sub = await setup.js.pull_subscribe_bind("raw", stream=stream)
    seen = 0
    started = time.perf_counter()
    while seen < count:
        for msg in await sub.fetch(256, timeout=5):
            await msg.ack()
            seen += 1
    return count / (time.perf_counter() - started)


async def platform_consume_rate(setup: Setup, count: int) -> float:
    """Messages per second through QueueConsumer with a no-op handler."""
    await fill(setup, count)
    pool = await create_pool(setup.urls.database_url, setup.topology.schema("bench"), max_size=4)
    done = asyncio.Event()
    handled = 0

    async def noop(event: Message, ctx: HandlerContext) -> None:
        nonlocal handled
        handled += 1
        if handled >= count:
            done.set()

    consumer = QueueConsumer(
        service="bench",
        stream="ORDERS",
        handlers={order_events_pb2.OrderCreated: noop},
        js=setup.js,
        pool=pool,
        codec=EventCodec(setup.registry, "bench", setup.topology),
        topology=setup.topology,
        policy=DeliveryPolicy(batch_size=256),
    )
    started = time.perf_counter()
    await consumer.start()
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await pool.close()
    return count / elapsed


async def faststream_consume_rate(setup: Setup, count: int) -> float:
    """Messages per second through a FastStream pull subscriber with a no-op handler."""
    from faststream.nats import JStream, NatsBroker, PullSub

    subject = await fill(setup, count)
    broker = NatsBroker(setup.urls.nats_url, logger=None)
    done = asyncio.Event()
    seen = 0

    @broker.subscriber(
        subject,
        stream=JStream(setup.topology.stream("ORDERS"), declare=False),
        durable="faststream",
        pull_sub=PullSub(batch_size=256, timeout=1.0),
    )
    async def noop(body: bytes) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    started = time.perf_counter()
    await broker.start()
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    await broker.stop()
    return count / elapsed


async def raw_publish_rate(setup: Setup, count: int) -> float:
    """Messages per second through bare nats-py `publish_async`, acknowledgements awaited."""
    codec = EventCodec(setup.registry, "bench", setup.topology)
    encoded = [codec.encode(sample_event(i), aggregate_id=f"o-{i}") for i in range(count)]
    started = time.perf_counter()
    futures = [await setup.js.publish_async(e.subject, e.body, headers=e.headers) for e in encoded]
    await asyncio.gather(*futures)
    return count / (time.perf_counter() - started)


async def relay_publish_rate(setup: Setup, count: int) -> float:
    """Events per second from committed outbox rows to JetStream acknowledgements, by the relay."""
    schema = setup.topology.schema("relay")
    pool = await create_pool(setup.urls.database_url, schema, max_size=4)
    writer = OutboxWriter(EventCodec(setup.registry, "relay", setup.topology), schema)
    async with pool.acquire() as conn:
        for start in range(0, count, 500):
            async with conn.transaction():
                for i in range(start, min(count, start + 500)):
                    await writer.add(conn, sample_event(i), aggregate_id=f"o-{i}")
    relay = OutboxRelay(
        dsn=setup.urls.database_url, schema=schema, service="relay", js=setup.js, poll_interval_s=0.2
    )
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    while relay.stats.published < count:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)  # sampling the relay's progress
    elapsed = time.perf_counter() - started
    await relay.stop()
    await task
    await pool.close()
    return count / elapsed


async def paced(rate: int, seconds: float, step: Callable[[int], Awaitable[None]]) -> int:
    """Call `step(i)` at a steady `rate` per second for `seconds`; returns how many were sent."""
    total = int(rate * seconds)
    started = time.perf_counter()
    for i in range(total):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the offered load, not waiting for a condition
        await step(i)
    return total


async def raw_latency(setup: Setup, rate: int, seconds: float) -> list[float]:
    """Milliseconds from nats-py `publish` (acknowledged) to receipt by a pull loop."""
    subject = setup.topology.subject("a4co.orders.order.created")
    stream = setup.topology.stream("ORDERS")
    await setup.js.add_consumer(stream, ConsumerConfig(durable_name="rawlat", filter_subject=subject))
    sub = await setup.js.pull_subscribe_bind("rawlat", stream=stream)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    payload = sample_event(0).SerializeToString()

    async def receive(total: int) -> None:
        while len(latencies) < total:
            try:
                msgs = await sub.fetch(64, timeout=1)
            except nats.errors.TimeoutError:
                continue
            now = time.perf_counter()
            for msg in msgs:
                latencies.append((now - sent[(msg.headers or {})["Nats-Msg-Id"]]) * 1000)
                await msg.ack()

    async def publish(i: int) -> None:
        msg_id = f"m{i}"
        sent[msg_id] = time.perf_counter()
        await setup.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})

    total = int(rate * seconds)
    receiver = asyncio.create_task(receive(total))
    await paced(rate, seconds, publish)
    await asyncio.wait_for(receiver, 120)
    return latencies


async def platform_latency(setup: Setup, rate: int, seconds: float) -> list[float]:
    """Milliseconds from the outbox transaction's commit to the handler's first line."""
    schema = setup.topology.schema("orders")
    pool = await create_pool(setup.urls.database_url, schema, max_size=8)
    consumer_pool = await create_pool(setup.urls.database_url, setup.topology.schema("bench"), max_size=4)
    codec = EventCodec(setup.registry, "orders", setup.topology)
    writer = OutboxWriter(codec, schema)
    committed: dict[str, float] = {}
    latencies: list[float] = []
    total = int(rate * seconds)
    done = asyncio.Event()

    async def handler(event: Message, ctx: HandlerContext) -> None:
        latencies.append((time.perf_counter() - committed[ctx.event.event_id]) * 1000)
        if len(latencies) >= total:
            done.set()

    consumer = QueueConsumer(
        service="bench",
        stream="ORDERS",
        handlers={order_events_pb2.OrderCreated: handler},
        js=setup.js,
        pool=consumer_pool,
        codec=EventCodec(setup.registry, "bench", setup.topology),
        topology=setup.topology,
        policy=DeliveryPolicy(batch_size=64, fetch_timeout_s=0.5),
    )
    relay = OutboxRelay(
        dsn=setup.urls.database_url,
        schema=schema,
        service="orders",
        js=setup.js,
        poll_interval_s=0.5,
    )
    await consumer.start()
    relay_task = asyncio.create_task(relay.run())

    async def commit(i: int) -> None:
        async with pool.acquire() as conn:
            async with conn.transaction():
                out = await writer.add(conn, sample_event(i), aggregate_id=f"o-{i}")
            committed[out.event_id] = time.perf_counter()

    await paced(rate, seconds, commit)
    await asyncio.wait_for(done.wait(), 300)
    await relay.stop()
    await relay_task
    await consumer.stop()
    await pool.close()
    await consumer_pool.close()
    return latencies


@dataclass
class Figure:
    """One measured figure beside its baseline."""

    name: str
    ours: float
    baseline: float
    unit: str
    baseline_name: str
    # A rate's figure in each round (empty for latencies, whose rounds are pooled).
    ours_rounds: list[float] = field(default_factory=list)
    baseline_rounds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """ours / baseline."""
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def round_ratios(self) -> list[float]:
        """ours / baseline in each round."""
        return ratios(self.ours_rounds, self.baseline_rounds)


async def measure(urls: ServerUrls, sizes: Sizes, progress: Callable[[str], None] = print) -> list[Figure]:
    """Run every measurement, each in its own isolated deployment."""
    registry = load_registry()
    figures: list[Figure] = []

    async def fresh(run: Callable[[Setup], Awaitable[T]]) -> T:
        setup = await Setup.create(urls, registry)
        try:
            return await run(setup)
        finally:
            await setup.close()

    count, rounds = sizes.consume_messages, sizes.rounds

    async def in_rounds(what: str, runs: Mapping[str, Callable[[Setup], Awaitable[T]]]) -> dict[str, list[T]]:
        """What each run measured in every round, the runs alternated (`alternated`)."""
        found: dict[str, list[T]] = {name: [] for name in runs}
        for r, name in alternated(rounds, list(runs)):
            progress(f"{what}: {name} (round {r + 1} of {rounds})")
            found[name].append(await fresh(runs[name]))
        return found

    def rate_figure(name: str, ours: list[float], base: list[float], baseline_name: str) -> Figure:
        return Figure(name, combined_rate(ours), combined_rate(base), "msg/s", baseline_name, ours, base)

    consumed = await in_rounds(
        "consume rate",
        {
            "raw nats-py pull loop": functools.partial(raw_consume_rate, count=count),
            "QueueConsumer, no-op handler": functools.partial(platform_consume_rate, count=count),
            "FastStream subscriber, no-op handler": functools.partial(faststream_consume_rate, count=count),
        },
    )
    ours = consumed["QueueConsumer, no-op handler"]
    raw, fast = consumed["raw nats-py pull loop"], consumed["FastStream subscriber, no-op handler"]
    figures.append(rate_figure("consume rate, no-op handler", ours, raw, "raw nats-py pull loop"))
    figures.append(rate_figure("consume rate vs FastStream", ours, fast, "FastStream pull subscriber"))
    published = await in_rounds(
        "publish rate",
        {
            "raw nats-py publish_async": functools.partial(raw_publish_rate, count=count),
            "outbox relay": functools.partial(relay_publish_rate, count=count),
        },
    )
    figures.append(
        rate_figure(
            "relay publish rate",
            published["outbox relay"],
            published["raw nats-py publish_async"],
            "raw nats-py publish_async",
        )
    )
    seconds = sizes.latency_seconds / rounds  # each round gets its share of a rate's time
    for rate in sizes.latency_rates:
        runs = {
            "raw publish -> receive": functools.partial(raw_latency, rate=rate, seconds=seconds),
            "commit -> handler": functools.partial(platform_latency, rate=rate, seconds=seconds),
        }
        measured = await in_rounds(f"latency at {rate}/s", runs)
        # The rounds' latencies pooled.
        lat, base = (
            [ms for one in measured[name] for ms in one]
            for name in ("commit -> handler", "raw publish -> receive")
        )
        for p in (50, 99):
            figures.append(
                Figure(
                    f"latency p{p} at {rate}/s",
                    percentile(lat, p),
                    percentile(base, p),
                    "ms",
                    "raw publish -> receive",
                )
            )
        figures.append(
            Figure(f"latency max at {rate}/s", max(lat), max(base), "ms", "raw publish -> receive")
        )
        figures.append(
            Figure(
                f"latency mean at {rate}/s",
                statistics.fmean(lat),
                statistics.fmean(base),
                "ms",
                "raw",
            )
        )
    return figures


def report(figures: list[Figure]) -> str:
    """A Markdown table of the figures."""
    lines = [
        "| figure | a4co | baseline | ratio | ratio by round | baseline is |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        ours, base = f"{f.ours:,.1f} {f.unit}", f"{f.baseline:,.1f} {f.unit}"
        lines.append(
            f"| {f.name} | {ours} | {base} | {f.ratio:.2f} | {by_round(f.round_ratios)} | {f.baseline_name} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Start servers (or use A4CO_*_URL), measure, print and save the results."""
    run_benchmark(
        __doc__ or "",
        "events",
        (FULL, QUICK),
        measure,
        steps,
        report,
        lambda figures: [asdict(f) | {"ratio": f.ratio} for f in figures],
    )


if __name__ == "__main__":
    main()
