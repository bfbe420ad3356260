"""The order saga under a stepped offered load, every service as its own process.

For each step, orders are offered at a steady rate; the time from sending CreateOrder to the
OrderStatusChanged(CONFIRMED) event on the bus is measured, and so is the sustained rate of
confirmed orders. After each step, the saga's events are read back from their streams: the time
JetStream stored each one splits every order's latency into its stages (the synchronous
CreateOrder, then each service's step), without adding work to the step itself. The memory (RSS)
of every service is read at the end of the heaviest step, and `make run`'s time to ready is
measured separately (first start with the demo, then a restart).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from a4co.artisans.v1 import artisans_service_pb2 as artisans_pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as artisans_grpc
from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.inventory.events.v1 import inventory_events_pb2
from a4co.orders.events.v1 import order_events_pb2
from a4co.orders.v1 import orders_service_pb2 as orders_pb
from a4co.orders.v1 import orders_service_pb2_grpc as orders_grpc
from a4co.payments.events.v1 import payment_events_pb2
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import address_pb2, lat_lng_pb2, money_pb2
from bench.events_bench import paced, percentile
from bench.harness import cpu_and_waits, main_threads, rss_mb, server_pids, sign_up
from services.launcher.supervisor import Supervisor
from services.platform.auth import generate_keypair
from services.platform.events.codec import EventCodec
from services.platform.events.registry import load_registry
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls

Meta = tuple[tuple[str, str], ...]

# What an order passes through, in order: each event as JetStream stored it, then the load
# generator's receipt of OrderStatusChanged(CONFIRMED).
MILESTONES = ("OrderCreated", "PaymentProcessed", "PAID", "StockReserved", "CONFIRMED")
SAGA_STREAMS = ("ORDERS", "PAYMENTS", "INVENTORY")
# Each stage ends at a milestone and starts at the one before (the first at CreateOrder's sending);
# "CreateOrder answered" runs beside the first: the order is stored before its answer goes back.
STAGES = (
    ("CreateOrder answered", "sent", "answered"),
    ("OrderCreated stored", "sent", "OrderCreated"),
    ("payments: PaymentProcessed", "OrderCreated", "PaymentProcessed"),
    ("orders: PAID", "PaymentProcessed", "PAID"),
    ("inventory: StockReserved", "PAID", "StockReserved"),
    ("orders: CONFIRMED", "StockReserved", "CONFIRMED"),
    ("CONFIRMED received", "CONFIRMED", "received"),
)
STAGE_NAMES = tuple(name for name, _, _ in STAGES)


@dataclass
class Stage:
    """One stage of the saga at one step: milliseconds from the milestone before to its own."""

    name: str
    p50_ms: float
    p99_ms: float


# The synchronous calls of every order: CreateOrder (timed by the load generator) and its three
# checks (timed by orders, each attempt), beside each call's handler time in its own service.
CALLS = (
    ("CreateOrder", "orders", ""),
    ("CheckStock", "inventory", "inventory"),
    ("GetPaymentMethod", "payments", "payments"),
    ("QuoteDelivery", "geo", "geo"),
)  # (method, the service that handles it, the peer name orders calls it by; "" for the load generator)
CLIENT_HISTOGRAM = "a4co_grpc_client_handling_seconds"
SERVER_HISTOGRAM = "a4co_grpc_server_handling_seconds"

Buckets = list[tuple[float, float]]  # (upper bound in seconds, cumulative count), ascending


@dataclass
class CallTiming:
    """One synchronous call at one step, in milliseconds: as its caller saw it and as its handler
    took it; `calls` is how many the handler's histogram counted during the step."""

    method: str
    calls: int
    caller_p50_ms: float | None
    caller_p99_ms: float | None
    handler_p50_ms: float | None
    handler_p99_ms: float | None


@functools.lru_cache(maxsize=16)
def _bucket_samples(page: str) -> tuple[tuple[str, dict[str, str], float], ...]:
    """Every `_bucket` sample of a /metrics page as (metric, labels, value), parsed once per page
    however many series are read from it."""
    return tuple(
        (family.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == f"{family.name}_bucket"
    )


def histogram_buckets(page: str, metric: str, labels: dict[str, str]) -> Buckets:
    """The cumulative buckets of one series of a histogram on a /metrics page (empty if absent)."""
    found = [
        (float(found_labels["le"]), value)
        for name, found_labels, value in _bucket_samples(page)
        if name == metric and all(found_labels.get(k) == v for k, v in labels.items())
    ]
    return sorted(found)


def bucket_quantile(q: float, before: Buckets, after: Buckets) -> tuple[float | None, int]:
    """The `q` quantile in milliseconds of what a histogram observed between two readings, as
    Prometheus's `histogram_quantile` interpolates it within a bucket (the highest finite bound
    when it falls in the last), and how many observations there were; None when none."""
    earlier = dict(before)
    deltas = [(le, count - earlier.get(le, 0.0)) for le, count in after]
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None, 0
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in deltas:
        if count >= rank:
            if math.isinf(le):
                return lower * 1000, int(total)
            return (lower + (le - lower) * (rank - below) / max(count - below, 1e-12)) * 1000, int(total)
        lower, below = le, count
    return lower * 1000, int(total)


async def metrics_pages(ports: dict[str, int]) -> dict[str, str]:
    """The /metrics page of each named service."""

    def read(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    pages = await asyncio.gather(*(asyncio.to_thread(read, port) for port in ports.values()))
    return dict(zip(ports, pages, strict=True))


def call_timings(before: dict[str, str], after: dict[str, str], created_ms: list[float]) -> list[CallTiming]:
    """Every synchronous call of the saga between two readings of the services' metrics;
    CreateOrder's caller figures are the load generator's own (`created_ms`), exact."""
    timings = []
    for method, service, peer in CALLS:
        handler = {"service": service, "method": method}
        h_before = histogram_buckets(before[service], SERVER_HISTOGRAM, handler)
        h_after = histogram_buckets(after[service], SERVER_HISTOGRAM, handler)
        h50, calls = bucket_quantile(0.5, h_before, h_after)
        h99, _ = bucket_quantile(0.99, h_before, h_after)
        if peer:
            caller = {"peer": peer, "method": method}
            c_before = histogram_buckets(before["orders"], CLIENT_HISTOGRAM, caller)
            c_after = histogram_buckets(after["orders"], CLIENT_HISTOGRAM, caller)
            c50, c99 = (bucket_quantile(q, c_before, c_after)[0] for q in (0.5, 0.99))
        else:
            c50, c99 = percentile(created_ms, 50), percentile(created_ms, 99)
        timings.append(CallTiming(method, calls, c50, c99, h50, h99))
    return timings


@dataclass
class Step:
    """One offered rate and what the saga made of it."""

    offered_per_s: int
    sent: int
    confirmed: int
    sustained_per_s: float
    p50_ms: float
    p99_ms: float
    # CPU used by each process during the step, per confirmed order; "load generator" is this one.
    cpu_ms_per_order: dict[str, float] = field(default_factory=dict)
    # Where the orders' time went (orders whose every milestone was found), and how many orders.
    stages: list[Stage] = field(default_factory=list)
    staged_orders: int = 0
    # The synchronous calls, as their callers saw them and as their handlers took them.
    calls: list[CallTiming] = field(default_factory=list)
    # Time each process's threads spent runnable, waiting for a core, per confirmed order, over
    # the same window as the CPU (`window_s`); empty where the kernel keeps no such statistics.
    waited_ms_per_order: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0
    # Each service's event loop (its main thread) over the same window: the share of the time it
    # ran, and the share it waited for a core. Their sum near 1 is a loop with no time to spare.
    loop_shares: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def cpu_ms_total(self) -> float:
        """Every process's CPU per confirmed order."""
        return sum(self.cpu_ms_per_order.values())

    @property
    def threads_waiting(self) -> float | None:
        """How many threads were, on average over the step, runnable and waiting for a core."""
        if not self.waited_ms_per_order or not self.window_s:
            return None
        return sum(self.waited_ms_per_order.values()) * self.confirmed / 1000 / self.window_s


@dataclass
class SagaResult:
    """The steps, the services' memory and the launcher's start-up times."""

    steps: list[Step]
    rss_mb: dict[str, float]


async def _account(
    identity: identity_grpc.IdentityServiceAsyncStub, role: identity_pb.Role.ValueType
) -> Meta:
    return (("authorization", f"Bearer {await sign_up(identity, role)}"),)


async def prepare(endpoints: dict[str, str]) -> tuple[list[str], Meta, str]:
    """A workshop with plenty of stock of a few products, and a customer with a card."""
    channels = {n: grpc.aio.insecure_channel(a) for n, a in endpoints.items()}
    identity = identity_grpc.IdentityServiceStub(channels["identity"])
    artisans = artisans_grpc.ArtisansServiceStub(channels["artisans"])
    artisan = await _account(identity, identity_pb.ROLE_ARTISAN)
    await artisans.OnboardArtisan(
        artisans_pb.OnboardArtisanRequest(
            request_id=str(uuid.uuid4()), display_name="Bench", craft="aceite", locality="Úbeda",
            location=lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706),
        ),
        metadata=artisan,
    )  # fmt: skip
    products = []
    for i in range(8):
        published = await artisans.PublishProduct(
            artisans_pb.PublishProductRequest(
                request_id=str(uuid.uuid4()), name=f"Aceite de banco {i}", category="aceite",
                price=money_pb2.Money(currency_code="EUR", amount_cents=1000), initial_stock=1_000_000,
            ),
            metadata=artisan,
        )  # fmt: skip
        products.append(published.product.product_id)
    customer = await _account(identity, identity_pb.ROLE_CUSTOMER)
    card = await payments_grpc.PaymentsServiceStub(channels["payments"]).ValidatePaymentMethod(
        payments_pb.ValidatePaymentMethodRequest(
            card=payments_pb.Card(number="4242424242424242", exp_month=12, exp_year=2031, cvc="123")
        ),
        metadata=customer,
    )
    for channel in channels.values():
        await channel.close()
    return products, customer, card.payment_method_id


def steps(rates: tuple[int, ...]) -> int:
    """How many steps `measure` reports: one per offered rate."""
    return len(rates)


async def measure(
    urls: ServerUrls, rates: tuple[int, ...], seconds: float, progress: Callable[[str], None] = print
) -> SagaResult:
    """Start the services, then offer each rate in turn."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        private, public = generate_keypair()
        (work / "jwt.key").write_text(private)
        (work / "jwt.pub").write_text(public)
        prefix = "s" + uuid.uuid4().hex[:10]
        env = dict(
            os.environ, **urls.as_env(), A4CO_PREFIX=prefix,
            A4CO_JWT_PRIVATE_KEY_FILE=str(work / "jwt.key"), A4CO_JWT_PUBLIC_KEY_FILE=str(work / "jwt.pub"),
            A4CO_NOTIFICATIONS_DIR=str(work / "mail"), A4CO_PEER_TIMEOUT_S="5",
        )  # fmt: skip
        supervisor = Supervisor(work / "run", env)
        started = await supervisor.start()
        endpoints = {n: e.grpc for n, e in started.items()}
        metrics_ports = {service: started[service].metrics_port for _, service, _ in CALLS}
        try:
            products, customer, method = await prepare(endpoints)
            steps, rss = await _steps(
                urls, prefix, endpoints, metrics_ports, products, customer, method, rates, seconds,
                supervisor, progress,
            )  # fmt: skip
        finally:
            await supervisor.stop()
    return SagaResult(steps, rss)


async def _steps(
    urls: ServerUrls,
    prefix: str,
    endpoints: dict[str, str],
    metrics_ports: dict[str, int],
    products: list[str],
    customer: Meta,
    method: str,
    rates: tuple[int, ...],
    seconds: float,
    supervisor: Supervisor,
    progress: Callable[[str], None],
) -> tuple[list[Step], dict[str, float]]:
    topology = Topology(prefix)
    codec = EventCodec(load_registry(), "bench", topology)
    sent_at: dict[str, float] = {}
    answered_at: dict[str, float] = {}
    confirmed_at: dict[str, float] = {}
    nc = await nats.connect(urls.nats_url)
    js = nc.jetstream()

    async def on_status(msg: Msg) -> None:
        event = codec.decode(msg.data)
        payload = event.payload
        if (
            isinstance(payload, order_events_pb2.OrderStatusChanged)
            and payload.status == order_events_pb2.ORDER_STATUS_CONFIRMED
        ):
            confirmed_at.setdefault(payload.order_id, time.perf_counter())

    await nc.subscribe(topology.subject("a4co.orders.order.status_changed"), cb=on_status)
    channel = grpc.aio.insecure_channel(endpoints["orders"])
    orders = orders_grpc.OrdersServiceStub(channel)
    steps, rss = [], {}
    in_flight: set[asyncio.Task[None]] = set()
    # The Python processes (their event loops are watched), then the servers too (their CPU).
    services = {n: pid for n in endpoints if (pid := supervisor.pid(n))} | {"load generator": os.getpid()}
    processes = services | server_pids(urls)

    async def place(i: int) -> None:
        started = time.perf_counter()
        try:
            placed = await orders.CreateOrder(
                orders_pb.CreateOrderRequest(
                    request_id=str(uuid.uuid4()),
                    lines=[orders_pb.OrderLineRequest(product_id=products[i % len(products)], quantity=1)],
                    payment_method_id=method,
                    delivery_address=address_pb2.Address(street="Calle Real 1", locality="Baeza"),
                    delivery_location=lat_lng_pb2.LatLng(latitude=37.9938, longitude=-3.47),
                ),
                metadata=customer, timeout=10,
            )  # fmt: skip
        except grpc.aio.AioRpcError:
            return
        sent_at[placed.order.order_id] = started
        answered_at[placed.order.order_id] = time.perf_counter()

    for rate in rates:
        progress(f"saga at {rate} orders/s")
        sent_at.clear()
        answered_at.clear()
        confirmed_at.clear()
        since = await _last_sequences(js, topology)

        async def offer(i: int) -> None:
            task = asyncio.create_task(place(i))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        pages_before = await metrics_pages(metrics_ports)
        start = time.perf_counter()
        cpu_before, waits_before = cpu_and_waits(processes)
        loops_before = main_threads(services)
        await paced(rate, seconds, offer)
        await asyncio.gather(*in_flight)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and not set(sent_at) <= set(confirmed_at):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # a bounded wait for the last confirmations
        cpu_after, waits_after = cpu_and_waits(processes)
        loops_after = main_threads(services)
        window_s = time.perf_counter() - start
        loops = {
            n: ((ran - loops_before[n][0]) / window_s, max(waited - loops_before[n][1], 0.0) / window_s)
            for n, (ran, waited) in loops_after.items()
            if n in loops_before
        }
        pages_after = await metrics_pages(metrics_ports)
        rss = {n: rss_mb(pid) for n in endpoints if (pid := supervisor.pid(n))}
        latencies = [(confirmed_at[o] - t) * 1000 for o, t in sent_at.items() if o in confirmed_at]
        ms_per_order = 1000 / max(len(latencies), 1)  # seconds in all -> ms per confirmed order
        per_order = {n: (cpu_after[n] - cpu_before[n]) * ms_per_order for n in processes}
        waited = (  # a thread that ended takes its waits with it: never below 0
            {n: max(waits_after[n] - waits_before[n], 0.0) * ms_per_order for n in processes}
            if waits_before is not None and waits_after is not None
            else {}
        )
        elapsed = max(confirmed_at.values(), default=start) - start
        # After the step's figures: reading the streams back is not part of the step's work.
        to_unix = wall_clock_offset()  # the load generator's clock onto JetStream's
        timelines = await stored_milestones(js, codec, topology, since)
        for order_id, sent in sent_at.items():
            mine = {"sent": sent, "answered": answered_at[order_id]}
            if order_id in confirmed_at:
                mine["received"] = confirmed_at[order_id]
            timelines.setdefault(order_id, {}).update({k: v + to_unix for k, v in mine.items()})
        stages, staged = stage_latencies(timelines)
        created_ms = [(answered_at[o] - t) * 1000 for o, t in sent_at.items()]
        calls = call_timings(pages_before, pages_after, created_ms)
        steps.append(
            Step(rate, len(sent_at), len(latencies), len(latencies) / elapsed if elapsed else 0.0,
                 percentile(latencies, 50), percentile(latencies, 99), per_order, stages, staged, calls,
                 waited, window_s, loops)
        )  # fmt: skip
    await channel.close()
    await nc.close()
    return steps, rss


def wall_clock_offset(
    monotonic: Callable[[], float] = time.perf_counter,
    wall: Callable[[], float] = time.time,
    samples: int = 9,
) -> float:
    """What to add to a `monotonic` reading to get the `wall` clock (JetStream's timestamps).

    Each sample reads the wall clock between two monotonic readings and keeps the tightest: a
    thread switch between the two readings of a single sample (the progress bar's refresh, say)
    would shift every stage that crosses the two clocks by its length.
    """
    best_gap, offset = float("inf"), 0.0
    for _ in range(samples):
        before = monotonic()
        now = wall()
        after = monotonic()
        if after - before < best_gap:
            best_gap, offset = after - before, now - (before + after) / 2
    return offset


def milestone(payload: Message) -> tuple[str, str] | None:
    """The saga milestone an event marks and its order, if it marks one."""
    if isinstance(payload, order_events_pb2.OrderStatusChanged):
        names = {
            order_events_pb2.ORDER_STATUS_PAID: "PAID",
            order_events_pb2.ORDER_STATUS_CONFIRMED: "CONFIRMED",
        }
        name = names.get(payload.status)
        return (name, payload.order_id) if name else None
    if isinstance(
        payload,
        order_events_pb2.OrderCreated
        | payment_events_pb2.PaymentProcessed
        | inventory_events_pb2.StockReserved,
    ):
        return type(payload).__name__, payload.order_id
    return None


def stage_latencies(timelines: dict[str, dict[str, float]]) -> tuple[list[Stage], int]:
    """p50 and p99 of every stage, in milliseconds, over the orders whose timeline (seconds on
    one clock: "sent", "answered", each milestone, "received") is complete; and their number."""
    wanted = {"sent", "answered", "received", *MILESTONES}
    complete = [t for t in timelines.values() if wanted <= t.keys()]
    if not complete:
        return [], 0
    # JetStream stamps a message when its stream stores it, and NATS may already have handed it to
    # core subscribers such as the load generator: CONFIRMED was published no later than received.
    complete = [t | {"CONFIRMED": min(t["CONFIRMED"], t["received"])} for t in complete]
    stages = []
    for name, start, end in STAGES:
        took = [(t[end] - t[start]) * 1000 for t in complete]
        stages.append(Stage(name, percentile(took, 50), percentile(took, 99)))
    return stages, len(complete)


async def stored_milestones(
    js: JetStreamContext, codec: EventCodec, topology: Topology, since: dict[str, int]
) -> dict[str, dict[str, float]]:
    """Order id → milestone → when JetStream stored it (Unix seconds), for the saga's events
    stored after sequence `since[stream]` of each stream."""
    found: dict[str, dict[str, float]] = {}
    for name in SAGA_STREAMS:
        stream = topology.stream(name)
        last = (await js.stream_info(stream)).state.last_seq
        if last <= since[name]:
            continue
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=since[name] + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
        )
        info = await js.add_consumer(stream, config)
        sub = await js.pull_subscribe_bind(info.name, stream=stream)
        try:
            seq = since[name]
            while seq < last:
                for msg in await sub.fetch(1000, timeout=10):
                    seq = msg.metadata.sequence.stream
                    marked = milestone(codec.decode(msg.data).payload)
                    if marked is not None and msg.metadata.timestamp is not None:
                        step, order_id = marked
                        found.setdefault(order_id, {}).setdefault(step, msg.metadata.timestamp.timestamp())
        finally:
            await sub.unsubscribe()
            await js.delete_consumer(stream, info.name)
    return found


async def _last_sequences(js: JetStreamContext, topology: Topology) -> dict[str, int]:
    return {name: (await js.stream_info(topology.stream(name))).state.last_seq for name in SAGA_STREAMS}


async def run_time_to_ready() -> tuple[float, float]:
    """Seconds from starting the launcher to `a4co ready`: first run (with the demo), then a restart."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("A4CO_")} | {
            "A4CO_DATA_DIR": tmp,
            "NO_COLOR": "1",
        }
        times = []
        for _ in range(2):
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.launcher",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert proc.stdout is not None
            async for raw in proc.stdout:
                if raw.decode().strip() == "a4co ready":
                    break
            times.append(time.perf_counter() - started)
            proc.send_signal(signal.SIGTERM)
            await proc.communicate()
        return times[0], times[1]
