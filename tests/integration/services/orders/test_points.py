"""Loyalty points spent on an order, across real services (decision 54): taken off what is
charged, taken from the balance by the saga, given back when the order is undone; too few points
cancel the order, and a redemption that does not answer times out."""

from __future__ import annotations

import uuid

import grpc
import pytest_asyncio

from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.loyalty.v1 import loyalty_service_pb2 as loyalty_pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as loyalty_grpc
from a4co.orders.v1 import orders_service_pb2 as pb
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import publish_event
from tests.integration.services.orders.shop import Actors
from tests.integration.services.orders.test_saga import quiet_and_sound, stock
from tests.integration.services.test_grpcurl import call
from tests.support.rpc import failure
from tests.support.waiting import eventually

ANA = "customer-ana"


@pytest_asyncio.fixture(autouse=True)
async def welcomed(actors: Actors) -> None:
    """ana signed up: 50 points."""
    welcome = identity.UserRegistered(user_id=ANA, role=identity.USER_ROLE_CUSTOMER)
    await publish_event(actors.svc["loyalty"], welcome, ANA)
    await eventually(lambda: has(actors, 50), what="ana's welcome bonus")


async def points(actors: Actors) -> int:
    stub = loyalty_grpc.LoyaltyServiceStub(actors.svc["loyalty"].channel)
    return (await stub.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=actors.customer())).points


async def has(actors: Actors, expected: int) -> bool:
    return await points(actors) == expected


async def payment(actors: Actors, order_id: str) -> payments_pb.Payment:
    got = await actors.payments.GetPayment(
        payments_pb.GetPaymentRequest(order_id=order_id), metadata=actors.customer()
    )
    return got.payment


async def test_points_pay_part_of_an_order_and_come_back_when_it_is_cancelled(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    # The README's commands, as a client in another language would send them.
    bearer = dict(actors.customer())["authorization"].removeprefix("Bearer ")
    loyalty = actors.svc["loyalty"].address
    balance = await call(loyalty, "a4co.loyalty.v1.LoyaltyService/GetBalance", {}, bearer)
    assert balance["points"] == "50"  # an int64, in JSON as a string
    product = await actors.product(stock=5)  # 22.00 € a unit
    request = {
        "request_id": str(uuid.uuid4()),
        "lines": [{"product_id": product, "quantity": 2}],
        "payment_method_id": await actors.card(),
        "redeem_points": 40,
        "delivery_address": {"street": "Calle Real 1", "locality": "Baeza", "country_code": "ES"},
        "delivery_location": {"latitude": 37.9938, "longitude": -3.47},
    }
    answer = await call(
        actors.svc["orders"].address, "a4co.orders.v1.OrdersService/CreateOrder", request, bearer
    )
    placed = await actors.status_of(str(answer["order"]["order_id"]))  # type: ignore[index]
    assert (placed.points_redeemed, placed.discount.amount_cents) == (40, 200)
    assert placed.total.amount_cents == 4400 + placed.delivery_fee.amount_cents - 200
    confirmed = await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    paid = await payment(actors, placed.order_id)
    assert paid.amount.amount_cents == confirmed.total.amount_cents == 4450
    # 40 spent; 44 earned by the 44.50 € paid.
    await eventually(lambda: has(actors, 54), what="the points spent and earned")

    await actors.orders.CancelOrder(
        pb.CancelOrderRequest(order_id=placed.order_id), metadata=actors.customer()
    )
    # The 40 given back; the 44 revoked with the refund.
    await eventually(lambda: has(actors, 50), what="the points given back")
    ledger = await call(loyalty, "a4co.loyalty.v1.LoyaltyService/ListLedgerEntries", {"page_size": 5}, bearer)
    assert sorted((e["kind"], int(e["points"])) for e in ledger["entries"]) == [  # type: ignore[attr-defined]
        ("ENTRY_KIND_PURCHASE", 44),
        ("ENTRY_KIND_REDEMPTION", -40),
        ("ENTRY_KIND_RESTORATION", 40),
        ("ENTRY_KIND_REVOCATION", -44),
        ("ENTRY_KIND_WELCOME", 50),
    ]
    await quiet_and_sound(actors, urls, prefix)


async def test_too_few_points_cancel_the_order_and_refund_it(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product = await actors.product(stock=5)
    placed = await actors.place(product, 2, await actors.card(), redeem_points=60)
    cancelled = await actors.settles(placed.order_id, pb.ORDER_STATUS_CANCELLED)
    assert cancelled.cancel_reason == "INSUFFICIENT_POINTS"

    async def refunded() -> bool:
        return (await payment(actors, placed.order_id)).status == payments_pb.PAYMENT_STATUS_REFUNDED

    await eventually(refunded, what="the refund")
    assert (await stock(actors, product)).reserved == 0
    await quiet_and_sound(actors, urls, prefix)
    assert await points(actors) == 50


async def test_points_worth_more_than_the_products_are_refused(actors: Actors) -> None:
    product = await actors.product(stock=5)  # 2 units: 44.00 €, 880 points
    card = await actors.card()
    for asked, field_message in (
        (881, ("redeem_points", "pays at most the products: 880 points for this order")),
        (-1, ("redeem_points", "must not be negative")),
    ):
        refused = await failure(actors.place(product, 2, card, redeem_points=asked))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(refused)[1] == [field_message]
    assert await actors.svc["orders"].infra.pool.fetchval("SELECT count(*) FROM orders") == 0


async def test_a_redemption_that_does_not_answer_times_out_and_its_points_come_back(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    listening = actors.svc["loyalty"].consumer("ORDERS")
    await listening.stop()
    product = await actors.product(stock=5)
    placed = await actors.place(product, 1, await actors.card(), redeem_points=20)
    cancelled = await actors.settles(placed.order_id, pb.ORDER_STATUS_CANCELLED)
    assert cancelled.cancel_reason == "REDEMPTION_TIMEOUT"
    await listening.start()  # loyalty takes the points, then gives them back
    await eventually(lambda: listening.stats.handled == 2, what="the order and its cancellation handled")
    await quiet_and_sound(actors, urls, prefix)
    assert await points(actors) == 50
