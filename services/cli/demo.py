"""`a4co demo`: customers sign up and place a stream of realistic orders; then how they ended."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.loyalty.v1 import loyalty_service_pb2 as loyalty_pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as loyalty_grpc
from a4co.orders.v1 import orders_service_pb2 as orders_pb
from a4co.orders.v1 import orders_service_pb2_grpc as orders_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import address_pb2, lat_lng_pb2
from services.cli.connection import client_tls, running_deployment
from services.platform.grpc import tls
from services.platform.resilience import Backoff

console = Console()
TOWNS = [
    ("Jaén", 37.7796, -3.7849),
    ("Úbeda", 38.0133, -3.3706),
    ("Baeza", 37.9938, -3.4700),
    ("Linares", 38.0953, -3.6360),
]
CARDS = ["4242424242424242"] * 9 + ["4000000000000002"]  # one customer in ten has a card that is declined
SETTLED = {orders_pb.ORDER_STATUS_CONFIRMED, orders_pb.ORDER_STATUS_CANCELLED}
# Answers that say "not now" (orders restarting, its database down): the order is placed, or asked
# for, again.
ASK_AGAIN = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
POLL_ROUNDS, POLL_INTERVAL_S = 600, 0.2
# An order answered "not now" is placed again with its request id, which makes it one order
# however often it is asked: at most this many times in all, the pauses growing.
PLACE_ATTEMPTS = 8
PLACING_AGAIN = Backoff(first_s=0.2, cap_s=2.0)
# What a loyalty point pays (CreateOrderRequest.redeem_points): each customer's first order spends
# the points their balance shows, as far as its products allow.
POINT_VALUE_CENTS = 5
# A new customer's welcome points are credited shortly after they sign up (loyalty follows
# UserRegistered): a balance with no entry yet is asked for again, for this long at most.
WELCOME_WAIT_S, WELCOME_POLL_S = 10.0, 0.1
Meta = tuple[tuple[str, str], ...]


async def place(
    stub: orders_grpc.OrdersServiceAsyncStub, request: orders_pb.CreateOrderRequest, meta: Meta
) -> tuple[orders_pb.Order | None, str, int]:
    """CreateOrder, asked again with the same request id while the answer is "not now" (up to
    PLACE_ATTEMPTS in all): the order placed, or the code it was refused with, and how many times
    it was asked again."""
    attempt = 1
    while True:
        try:
            return (await stub.CreateOrder(request, metadata=meta, timeout=10)).order, "", attempt - 1
        except grpc.aio.AioRpcError as error:
            if error.code() not in ASK_AGAIN or attempt == PLACE_ATTEMPTS:
                return None, error.code().name, attempt - 1
        await asyncio.sleep(PLACING_AGAIN.delay(attempt))  # a client's pause before asking again
        attempt += 1


async def sign_up(
    identity: identity_grpc.IdentityServiceAsyncStub,
    payments: payments_grpc.PaymentsServiceAsyncStub,
    i: int,
    rng: random.Random,
) -> tuple[Meta, str]:
    email, password = f"cliente-{uuid.uuid4().hex[:8]}@demo.a4co.es", "demo-password-2026"
    signed_up = await identity.Register(
        identity_pb.RegisterRequest(
            email=email, password=password, display_name=f"Cliente {i}", role=identity_pb.ROLE_CUSTOMER
        )
    )
    meta: Meta = (("authorization", f"Bearer {signed_up.tokens.access_token}"),)
    card = await payments.ValidatePaymentMethod(
        payments_pb.ValidatePaymentMethodRequest(
            card=payments_pb.Card(number=rng.choice(CARDS), exp_month=12, exp_year=2031, cvc="123")
        ),
        metadata=meta,
    )
    return meta, card.payment_method_id


async def points_to_spend(
    loyalty: loyalty_grpc.LoyaltyServiceAsyncStub, meta: Meta, subtotal_cents: int
) -> int:
    """As a client does before paying with points: the balance (GetBalance), as far as the
    products allow. A balance with no entry yet is asked for again until the welcome is
    credited, for WELCOME_WAIT_S at most; then the order spends none."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WELCOME_WAIT_S
    while True:
        balance = await loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=meta, timeout=10)
        if balance.entry_count > 0 or loop.time() >= deadline:
            return max(0, min(balance.points, subtotal_cents // POINT_VALUE_CENTS))
        await asyncio.sleep(WELCOME_POLL_S)  # polling the balance, bounded by the deadline


async def run(
    customers: int, orders: int, concurrency: int, seed: int
) -> tuple[Counter[str], Counter[str], int]:
    """How the orders ended, how many of each paid in part with points, and how many times
    CreateOrder was asked again."""
    services = {n: s["grpc"] for n, s in running_deployment().get("services", {}).items()}
    if not services:
        raise typer.BadParameter("nothing runs here: start the marketplace with `make run`")
    rng = random.Random(seed)  # noqa: S311 - demo traffic
    caller = client_tls()
    channels = {
        n: tls.channel(services[n], caller) for n in ("identity", "payments", "catalog", "orders", "loyalty")
    }
    identity = identity_grpc.IdentityServiceStub(channels["identity"])
    payments = payments_grpc.PaymentsServiceStub(channels["payments"])
    catalog = catalog_grpc.CatalogServiceStub(channels["catalog"])
    stub = orders_grpc.OrdersServiceStub(channels["orders"])
    loyalty = loyalty_grpc.LoyaltyServiceStub(channels["loyalty"])
    outcomes: Counter[str] = Counter()
    with_points: Counter[str] = Counter()
    asked_again = 0
    try:
        people = [await sign_up(identity, payments, i, rng) for i in range(customers)]
        town, lat, lng = rng.choice(TOWNS)
        found = await catalog.SearchProducts(
            catalog_pb.SearchProductsRequest(
                in_stock_only=True,
                near=lat_lng_pb2.LatLng(latitude=lat, longitude=lng),
                radius_km=40,
                page_size=100,
            )
        )
        products = [(r.product.product_id, r.product.price.amount_cents) for r in found.results]
        if not products:
            raise typer.BadParameter("no product in stock near the customers")
        placed: list[tuple[str, Meta]] = []
        spent: set[int] = set()  # the customers whose first order is placed
        limit = asyncio.Semaphore(concurrency)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("placing orders", total=orders)

            async def one() -> None:
                nonlocal asked_again
                customer = rng.randrange(len(people))
                meta, method = people[customer]
                (product_id, price_cents), quantity = rng.choice(products), rng.randint(1, 2)
                first = customer not in spent
                spent.add(customer)
                request = orders_pb.CreateOrderRequest(
                    request_id=str(uuid.uuid4()),
                    lines=[orders_pb.OrderLineRequest(product_id=product_id, quantity=quantity)],
                    payment_method_id=method,
                    delivery_address=address_pb2.Address(
                        street="Calle Mayor 1", locality=town, province="Jaén"
                    ),
                    delivery_location=lat_lng_pb2.LatLng(latitude=lat, longitude=lng),
                )
                async with limit:
                    if first:
                        request.redeem_points = await points_to_spend(loyalty, meta, price_cents * quantity)
                    order, refused, again = await place(stub, request, meta)
                asked_again += again
                if order is not None:
                    placed.append((order.order_id, meta))
                else:
                    outcomes[f"refused: {refused}"] += 1
                progress.advance(task)

            await asyncio.gather(*(one() for _ in range(orders)))
            task = progress.add_task("waiting for the saga", total=len(placed))
            await settled(stub, placed, outcomes, with_points, lambda: progress.advance(task))
    finally:
        for channel in channels.values():
            await channel.close()
    return outcomes, with_points, asked_again


async def settled(
    stub: orders_grpc.OrdersServiceAsyncStub,
    placed: list[tuple[str, Meta]],
    outcomes: Counter[str],
    with_points: Counter[str],
    advance: Callable[[], None],
    rounds: int = POLL_ROUNDS,
) -> None:
    """Ask for each placed order until it is confirmed or cancelled, `rounds` times at most, and
    count how each ended (or that it is still waiting), and how many of those paid in part with
    points. An order whose answer is "not now" is asked for again in the next round."""
    pending = list(placed)
    for _ in range(rounds):
        still = []
        for order_id, meta in pending:
            try:
                got = await stub.GetOrder(orders_pb.GetOrderRequest(order_id=order_id), metadata=meta)
            except grpc.aio.AioRpcError as error:
                if error.code() not in ASK_AGAIN:
                    raise
                still.append((order_id, meta))
                continue
            if got.order.status in SETTLED:
                label = orders_pb.OrderStatus.Name(got.order.status).removeprefix("ORDER_STATUS_")
                outcome = f"{label} {got.order.cancel_reason}".strip()
                outcomes[outcome] += 1
                with_points[outcome] += got.order.points_redeemed > 0
                advance()
            else:
                still.append((order_id, meta))
        pending = still
        if not pending:
            break
        await asyncio.sleep(POLL_INTERVAL_S)  # polling the orders' status, bounded by the rounds
    outcomes["still waiting"] += len(pending)


def demo(
    customers: Annotated[int, typer.Option(help="customers who sign up", min=1)] = 5,
    orders: Annotated[int, typer.Option(help="orders they place", min=1)] = 50,
    concurrency: Annotated[int, typer.Option(help="orders in flight at once", min=1)] = 8,
    seed: Annotated[int, typer.Option(help="random seed")] = 2026,
) -> None:
    """Sign customers up, place a stream of orders, and show how they ended."""
    try:
        outcomes, with_points, again = asyncio.run(run(customers, orders, concurrency, seed))
    except grpc.aio.AioRpcError as error:  # signing up or searching: said in one line
        details = escape(error.details() or "")  # a server's words: no markup
        if error.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details:
            # gRPC's words for no server there: the addresses are of a `make run` since stopped
            console.print(f"[red]cannot reach the marketplace ({details}): start it with `make run`[/red]")
            raise typer.Exit(2) from None
        console.print(f"[red]the marketplace answered {error.code().name}: {details}[/red]")
        raise typer.Exit(1) from None
    table = Table("outcome", "orders", "paid in part with points")
    for outcome, n in outcomes.most_common():
        if n:
            table.add_row(outcome, str(n), str(with_points[outcome]))
    console.print(table)
    if again:
        console.print(f"orders placed again with their request id: {again} times")
