"""The order saga under a stepped offered load, every service as its own process.

For each step, orders are offered at a steady rate; the time from sending CreateOrder to the
OrderStatusChanged(CONFIRMED) event on the bus is measured, and so is the sustained rate of
confirmed orders. The memory (RSS) of every service is read at the end of the heaviest step, and
`make run`'s time to ready is measured separately (first start with the demo, then a restart).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
from nats.aio.msg import Msg

from a4co.artisans.v1 import artisans_service_pb2 as artisans_pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as artisans_grpc
from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.orders.events.v1 import order_events_pb2
from a4co.orders.v1 import orders_service_pb2 as orders_pb
from a4co.orders.v1 import orders_service_pb2_grpc as orders_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import address_pb2, lat_lng_pb2, money_pb2
from bench.events_bench import paced, percentile
from bench.harness import cpu_seconds, rss_mb, server_pids
from services.launcher.supervisor import Supervisor
from services.platform.auth import generate_keypair
from services.platform.events.codec import EventCodec
from services.platform.events.registry import load_registry
from services.platform.events.topology import Topology
from services.platform.local_servers import ServerUrls

Meta = tuple[tuple[str, str], ...]


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

    @property
    def cpu_ms_total(self) -> float:
        """Every process's CPU per confirmed order."""
        return sum(self.cpu_ms_per_order.values())


@dataclass
class SagaResult:
    """The steps, the services' memory and the launcher's start-up times."""

    steps: list[Step]
    rss_mb: dict[str, float]


async def _account(
    identity: identity_grpc.IdentityServiceAsyncStub, role: identity_pb.Role.ValueType
) -> Meta:
    email = f"bench-{uuid.uuid4().hex[:8]}@a4co.es"
    await identity.Register(
        identity_pb.RegisterRequest(email=email, password="bench-password-1", display_name="Bench", role=role)
    )
    login = await identity.Login(identity_pb.LoginRequest(email=email, password="bench-password-1"))
    return (("authorization", f"Bearer {login.tokens.access_token}"),)


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
        endpoints = {n: e.grpc for n, e in (await supervisor.start()).items()}
        try:
            products, customer, method = await prepare(endpoints)
            steps, rss = await _steps(
                urls, prefix, endpoints, products, customer, method, rates, seconds, supervisor, progress
            )
        finally:
            await supervisor.stop()
    return SagaResult(steps, rss)


async def _steps(
    urls: ServerUrls,
    prefix: str,
    endpoints: dict[str, str],
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
    confirmed_at: dict[str, float] = {}
    nc = await nats.connect(urls.nats_url)

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
    processes = {n: pid for n in endpoints if (pid := supervisor.pid(n))}
    processes |= server_pids(urls) | {"load generator": os.getpid()}

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

    for rate in rates:
        progress(f"saga at {rate} orders/s")
        sent_at.clear()
        confirmed_at.clear()

        async def offer(i: int) -> None:
            task = asyncio.create_task(place(i))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        start = time.perf_counter()
        cpu_before = cpu_seconds(processes)
        await paced(rate, seconds, offer)
        await asyncio.gather(*in_flight)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and not set(sent_at) <= set(confirmed_at):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # a bounded wait for the last confirmations
        cpu_after = cpu_seconds(processes)
        rss = {n: rss_mb(pid) for n in endpoints if (pid := supervisor.pid(n))}
        latencies = [(confirmed_at[o] - t) * 1000 for o, t in sent_at.items() if o in confirmed_at]
        per_order = {n: (cpu_after[n] - cpu_before[n]) * 1000 / max(len(latencies), 1) for n in processes}
        elapsed = max(confirmed_at.values(), default=start) - start
        steps.append(
            Step(rate, len(sent_at), len(latencies), len(latencies) / elapsed if elapsed else 0.0,
                 percentile(latencies, 50), percentile(latencies, 99), per_order)
        )  # fmt: skip
    await channel.close()
    await nc.close()
    return steps, rss


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
