"""The order saga across real services: the happy path, refusals and compensations, and the
invariants after each."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import grpc
import pytest
from google.protobuf.message import Message
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from a4co.artisans.v1 import artisans_service_pb2 as artisans_pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as artisans_grpc
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.orders.events.v1 import order_events_pb2
from a4co.orders.v1 import orders_service_pb2 as pb
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.type.v1 import money_pb2, return_exception_pb2
from services.cli.check import violations
from services.orders.__main__ import RETURN_WINDOW_S
from services.orders.adapters.postgres import IN_FLIGHT_SQL, RETURNS_WAITING_SQL, Orders
from services.orders.domain import Status
from services.orders.handlers import set_in_flight
from services.platform.auth import Role
from services.platform.events.topology import Topology
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from services.platform.paging import NOT_OURS, OTHER_FILTERS
from tests.integration.services.harness import Keys, stream_events, token
from tests.integration.services.orders.shop import DECLINED, Actors, shop
from tests.integration.services.test_grpcurl import call
from tests.support.rpc import failure
from tests.support.waiting import eventually

RETURN_WINDOW = timedelta(seconds=RETURN_WINDOW_S)


async def quiet_and_sound(actors: Actors, urls: ServerUrls, prefix: str) -> None:
    async def sound() -> bool:
        return await violations(urls.database_url, Topology(prefix)) == []

    try:
        await eventually(sound, timeout=20, what="the invariants")
    except AssertionError:
        raise AssertionError(await violations(urls.database_url, Topology(prefix))) from None


async def stock(actors: Actors, product_id: str) -> inventory_pb.StockLevel:
    return (await actors.inventory.GetStock(inventory_pb.GetStockRequest(product_id=product_id))).stock


async def test_happy_path_to_delivered(actors: Actors, urls: ServerUrls, prefix: str) -> None:
    product = await actors.product(stock=5)
    card = await actors.card()
    placed = await actors.place(product, 2, card)
    assert placed.status == pb.ORDER_STATUS_PENDING
    assert placed.total.amount_cents == 2 * 2200 + placed.delivery_fee.amount_cents
    assert placed.delivery_fee.amount_cents == 250, "Úbeda to Baeza is a local delivery"

    confirmed = await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    level = await stock(actors, product)
    assert (level.on_hand, level.reserved, level.available) == (5, 2, 3)
    payment = await actors.payments.GetPayment(
        payments_pb.GetPaymentRequest(order_id=placed.order_id), metadata=actors.customer()
    )
    assert payment.payment.amount.amount_cents == confirmed.total.amount_cents

    await actors.orders.MarkOrderShipped(
        pb.MarkOrderShippedRequest(order_id=placed.order_id), metadata=actors.artisan()
    )
    delivered = await actors.orders.MarkOrderDelivered(
        pb.MarkOrderDeliveredRequest(order_id=placed.order_id), metadata=actors.artisan()
    )
    assert delivered.order.status == pb.ORDER_STATUS_DELIVERED

    async def committed() -> bool:
        level = await stock(actors, product)
        return (level.on_hand, level.reserved) == (3, 0)

    await eventually(committed, what="stock committed on delivery")
    await quiet_and_sound(actors, urls, prefix)


async def test_orders_are_listed_in_pages_that_follow_on_whatever_is_placed_meanwhile(actors: Actors) -> None:
    """Each page starts after the last order of the one before (decision 41): an order placed
    between two pages goes to the top of the list, not into the next page."""
    product = await actors.product(stock=10)
    card = await actors.card()
    placed = [(await actors.place(product, 1, card)).order_id for _ in range(3)]

    async def page(token: str = "", status: int = 0) -> pb.ListOrdersResponse:
        request = pb.ListOrdersRequest(page_size=2, page_token=token, status=status)  # type: ignore[arg-type]
        return await actors.orders.ListOrders(request, metadata=actors.customer())

    first = await page()
    assert [o.order_id for o in first.orders] == placed[:0:-1]
    newest = (await actors.place(product, 1, card)).order_id  # before the second page is asked for
    second = await page(first.next_page_token)
    assert ([o.order_id for o in second.orders], second.next_page_token) == ([placed[0]], "")
    assert [o.order_id for o in (await page()).orders] == [newest, placed[2]]
    # The artisan sees the same four as sales; a token is for the status it was given with.
    sales = await actors.orders.ListOrders(pb.ListOrdersRequest(), metadata=actors.artisan())
    assert [o.order_id for o in sales.orders] == [newest, *placed[::-1]]
    for order_id in (newest, *placed):
        await actors.settles(order_id, pb.ORDER_STATUS_CONFIRMED)
    confirmed = await page(status=pb.ORDER_STATUS_CONFIRMED)
    assert [o.order_id for o in confirmed.orders] == [newest, placed[2]]
    rest = await page(confirmed.next_page_token, status=pb.ORDER_STATUS_CONFIRMED)
    assert [o.order_id for o in rest.orders] == placed[1::-1]
    mixed = await failure(page(first.next_page_token, status=pb.ORDER_STATUS_CONFIRMED))
    assert mixed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(mixed)[1] == [("page_token", OTHER_FILTERS)]
    # A token this API did not make is named beside the request's other faults.
    both = await failure(
        actors.orders.ListOrders(
            pb.ListOrdersRequest(page_size=500, page_token="not a token"), metadata=actors.customer()
        )
    )
    assert both.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(both)[1] == [("page_size", "must be between 0 and 100"), ("page_token", NOT_OURS)]
    # An admin may name whose orders to list; anyone else may name only themselves.
    admin = token(actors.keys, "admin-1", Role.ADMIN)
    for named in (
        pb.ListOrdersRequest(customer_id="customer-ana"),
        pb.ListOrdersRequest(artisan_id=actors.artisan_id),
    ):
        listed = await actors.orders.ListOrders(named, metadata=admin)
        assert [o.order_id for o in listed.orders] == [newest, *placed[::-1]]
    mine = pb.ListOrdersRequest(customer_id="customer-ana")
    assert len((await actors.orders.ListOrders(mine, metadata=actors.customer())).orders) == 4
    # Naming no one, an admin lists every order, in pages, a status filtering them.
    luis = (
        await actors.place(product, 1, await actors.card(customer="customer-luis"), "customer-luis")
    ).order_id

    async def everyone(token: str = "", status: int = 0) -> pb.ListOrdersResponse:
        request = pb.ListOrdersRequest(page_size=3, page_token=token, status=status)  # type: ignore[arg-type]
        return await actors.orders.ListOrders(request, metadata=admin)

    top = await everyone()
    assert [o.order_id for o in top.orders] == [luis, newest, placed[2]]
    bottom = await everyone(top.next_page_token)
    assert ([o.order_id for o in bottom.orders], bottom.next_page_token) == (placed[1::-1], "")
    await actors.settles(luis, pb.ORDER_STATUS_CONFIRMED, "customer-luis")
    await actors.orders.CancelOrder(pb.CancelOrderRequest(order_id=newest, reason="Repetido"), metadata=admin)
    cancelled = await everyone(status=pb.ORDER_STATUS_CANCELLED)
    assert ([o.order_id for o in cancelled.orders], cancelled.next_page_token) == ([newest], "")
    mixed = await failure(everyone(top.next_page_token, status=pb.ORDER_STATUS_CANCELLED))
    assert details_of(mixed)[1] == [("page_token", OTHER_FILTERS)]
    refusals = [
        (
            pb.ListOrdersRequest(customer_id="customer-ana"),
            actors.customer("customer-luis"),
            "PERMISSION_DENIED",
        ),
        (pb.ListOrdersRequest(artisan_id=actors.artisan_id), actors.customer(), "PERMISSION_DENIED"),
        (pb.ListOrdersRequest(customer_id="customer-ana"), actors.artisan(), "PERMISSION_DENIED"),
        (pb.ListOrdersRequest(customer_id="c", artisan_id="a"), admin, "INVALID_ARGUMENT"),
    ]
    for request, who, code in refusals:
        refused = await failure(actors.orders.ListOrders(request, metadata=who))
        assert refused.code().name == code, (request, refused.details())


async def confirmed_under(actors: Actors, request: str) -> tuple[str, str, pb.Order]:
    """A product, ana's card, and her order of one unit placed under `request`, once confirmed."""
    product = await actors.product(stock=5)
    card = await actors.card()
    placed = await actors.place(product, 1, card, request_id=request)
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    return product, card, placed


async def test_a_retried_create_returns_the_same_order(actors: Actors) -> None:
    request = "9f5b1e8a-58c4-4c4e-9df4-1a2b3c4d5e6f"
    product, card, first = await confirmed_under(actors, request)
    again = await actors.place(product, 1, card, request_id=request)
    assert (again.order_id, again.status) == (first.order_id, pb.ORDER_STATUS_CONFIRMED)
    # A request id is the customer's own: another customer's same id is another order.
    other_card = await actors.card(customer="customer-luis")
    other = await actors.place(product, 1, other_card, customer="customer-luis", request_id=request)
    assert other.order_id != first.order_id
    count = await actors.svc["orders"].infra.pool.fetchval("SELECT count(*) FROM orders")
    assert count == 2


async def test_a_retry_gets_its_order_when_the_checks_now_refuse(actors: Actors) -> None:
    """The order took the last unit: a new order is refused, the retry still gets its order."""
    request = "5d2c8f1a-3b7e-4a9c-8e6f-0a1b2c3d4e5f"
    product = await actors.product(stock=1)
    card = await actors.card()
    placed = await actors.place(product, 1, card, request_id=request)
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    sold_out = await failure(actors.place(product, 1, card))
    info, _ = details_of(sold_out)
    assert (sold_out.code(), info and info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK")
    again = await actors.place(product, 1, card, request_id=request)
    assert (again.order_id, again.status) == (placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    assert await actors.svc["orders"].infra.pool.fetchval("SELECT count(*) FROM orders") == 1


async def test_a_retry_finds_an_order_stored_under_an_older_id(actors: Actors) -> None:
    """Orders stored before ids were derived from requests (decision 20) are found by request."""
    request = "0c7d2b4e-6a1f-4f3e-8b5d-9e2a1c3f4b6d"
    product, card, placed = await confirmed_under(actors, request)
    pool = actors.svc["orders"].infra.pool
    older = await pool.fetchval(
        "UPDATE orders SET order_id = gen_random_uuid() WHERE order_id = $1 RETURNING order_id::text",
        placed.order_id,
    )
    again = await actors.place(product, 1, card, request_id=request)
    assert (again.order_id, again.status) == (older, pb.ORDER_STATUS_CONFIRMED)
    assert await pool.fetchval("SELECT count(*) FROM orders") == 1


async def test_a_declined_payment_cancels_and_reserves_nothing(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product = await actors.product(stock=5)
    card = await actors.card(DECLINED)
    placed = await actors.place(product, 2, card)
    cancelled = await actors.settles(placed.order_id, pb.ORDER_STATUS_CANCELLED)
    assert cancelled.cancel_reason == "CARD_DECLINED"
    assert (await stock(actors, product)).reserved == 0
    await quiet_and_sound(actors, urls, prefix)


async def test_stock_gone_between_check_and_reservation_cancels_and_refunds(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product = await actors.product(stock=3)
    card = await actors.card()
    # Both pass CheckStock (nothing is reserved yet); only one can be reserved.
    first = await actors.place(product, 2, card)
    second = await actors.place(product, 2, card)
    outcomes = {}
    for order in (first, second):

        async def settled(order_id: str = order.order_id) -> bool:
            status = (await actors.status_of(order_id)).status
            outcomes[order_id] = status
            return status in (pb.ORDER_STATUS_CONFIRMED, pb.ORDER_STATUS_CANCELLED)

        await eventually(settled, timeout=20, what="the order settled")
    assert sorted(outcomes.values()) == [pb.ORDER_STATUS_CONFIRMED, pb.ORDER_STATUS_CANCELLED]
    loser = next(o for o, s in outcomes.items() if s == pb.ORDER_STATUS_CANCELLED)
    assert (await actors.status_of(loser)).cancel_reason == "OUT_OF_STOCK"

    async def refunded() -> bool:
        payment = await actors.payments.GetPayment(
            payments_pb.GetPaymentRequest(order_id=loser), metadata=actors.customer()
        )
        return payment.payment.status == payments_pb.PAYMENT_STATUS_REFUNDED

    await eventually(refunded, what="the refund of the cancelled order")
    await quiet_and_sound(actors, urls, prefix)


def status_changes() -> dict[str, float]:
    """`a4co_order_status_changes_total` by status, in this process."""
    sample = REGISTRY.get_sample_value
    return {s.value: sample("a4co_order_status_changes_total", {"status": s.value}) or 0.0 for s in Status}


def cancellations(reason: str) -> float:
    """`a4co_orders_cancelled_total` for one reason, in this process."""
    return REGISTRY.get_sample_value("a4co_orders_cancelled_total", {"reason": reason}) or 0.0


async def test_the_metrics_count_committed_status_changes_and_the_sagas_in_flight(actors: Actors) -> None:
    before, by_customer = status_changes(), cancellations("CUSTOMER_CANCELLED")
    product = await actors.product(stock=5)
    placed = await actors.place(product, 1, await actors.card())
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    cancel = pb.CancelOrderRequest(order_id=placed.order_id)
    await actors.orders.CancelOrder(cancel, metadata=actors.customer())
    await actors.orders.CancelOrder(cancel, metadata=actors.customer())  # changes nothing
    # Each status the order entered, once: by CreateOrder, the saga's consumer and the API.
    entered = {"PENDING": 1, "PAID": 1, "CONFIRMED": 1, "CANCELLED": 1}
    expected = {status: n + entered.get(status, 0) for status, n in before.items()}
    await eventually(lambda: status_changes() == expected, what="every committed change counted")
    assert cancellations("CUSTOMER_CANCELLED") == by_customer + 1
    # The gauge counts only the sagas in flight, through the `orders_waiting` partial index. The
    # refund is awaited first: recording it saves the order, which would undo the status forced here.
    pool = actors.svc["orders"].infra.pool

    async def refunded() -> bool:
        return bool(await pool.fetchval("SELECT refunded FROM orders WHERE order_id = $1", placed.order_id))

    await eventually(refunded, what="the cancelled order refunded")
    await pool.execute("UPDATE orders SET status = 'PAID' WHERE order_id = $1", placed.order_id)
    await set_in_flight(Orders(pool))
    in_flight = {
        s: REGISTRY.get_sample_value("a4co_orders_in_flight", {"status": s}) for s in ("PENDING", "PAID")
    }
    assert in_flight == {"PENDING": 0.0, "PAID": 1.0}
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {IN_FLIGHT_SQL}"))
    assert "orders_waiting" in plan


async def test_the_customer_cancels_a_confirmed_order(actors: Actors, urls: ServerUrls, prefix: str) -> None:
    product = await actors.product(stock=4)
    placed = await actors.place(product, 3, await actors.card())
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    other = await failure(
        actors.orders.CancelOrder(
            pb.CancelOrderRequest(order_id=placed.order_id), metadata=actors.customer("someone")
        )
    )
    assert other.code() == grpc.StatusCode.NOT_FOUND
    cancelled = await actors.orders.CancelOrder(
        pb.CancelOrderRequest(order_id=placed.order_id, reason="ya no lo necesito"),
        metadata=actors.customer(),
    )
    assert cancelled.order.status == pb.ORDER_STATUS_CANCELLED
    kept = (cancelled.order.cancel_reason, cancelled.order.cancel_note)
    assert kept == ("CUSTOMER_CANCELLED", "ya no lo necesito")
    assert ((o := await actors.status_of(placed.order_id)).cancel_reason, o.cancel_note) == kept

    async def released() -> bool:
        return (await stock(actors, placed.lines[0].product_id)).reserved == 0

    await eventually(released, what="the reservation released")
    await quiet_and_sound(actors, urls, prefix)
    told = [
        (e.payload.reason, e.payload.cancel_note, e.payload.refund_required)  # type: ignore[attr-defined]
        for e in await stream_events(actors.svc["orders"], "ORDERS")
        if e.definition.name == "OrderStatusChanged"
        and e.payload.status == order_events_pb2.ORDER_STATUS_CANCELLED  # type: ignore[attr-defined]
    ]
    assert told == [("CUSTOMER_CANCELLED", "ya no lo necesito", True)]
    shipped = await failure(
        actors.orders.MarkOrderShipped(
            pb.MarkOrderShippedRequest(order_id=placed.order_id), metadata=actors.artisan()
        )
    )
    assert shipped.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_an_admin_cancels_a_customers_order_and_says_why(actors: Actors) -> None:
    placed = await actors.place(await actors.product(stock=2), 1, await actors.card())
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    admin = token(actors.keys, "admin-1", Role.ADMIN)
    cancelled = await actors.orders.CancelOrder(
        pb.CancelOrderRequest(order_id=placed.order_id, reason="dirección de entrega fuera de zona"),
        metadata=admin,
    )
    assert (cancelled.order.cancel_reason, cancelled.order.cancel_note) == (
        "ADMIN_CANCELLED",
        "dirección de entrega fuera de zona",
    )
    again = await actors.orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id), metadata=admin)
    assert (again.order.cancel_reason, again.order.cancel_note) == (
        "ADMIN_CANCELLED",
        "dirección de entrega fuera de zona",
    ), "a second cancellation changes nothing"


async def test_a_step_that_never_answers_is_timed_out_and_compensated(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product = await actors.product(stock=4)
    card = await actors.card()
    payments_consumers = actors.svc["payments"].runner.consumers
    for consumer in payments_consumers:
        await consumer.stop()  # payments hears nothing: the payment step never answers
    timed_out = cancellations("PAYMENT_TIMEOUT")
    placed = await actors.place(product, 1, card)
    cancelled = await actors.settles(placed.order_id, pb.ORDER_STATUS_CANCELLED, timeout=20)
    assert cancelled.cancel_reason == "PAYMENT_TIMEOUT"
    assert cancellations("PAYMENT_TIMEOUT") == timed_out + 1, "counted for the alert SagaStepsTimingOut"

    # Payments comes back and charges the late order: the saga refunds it.
    for consumer in payments_consumers:
        consumer._stopping.clear()
        await consumer.start()

    async def refunded() -> bool:
        try:
            payment = await actors.payments.GetPayment(
                payments_pb.GetPaymentRequest(order_id=placed.order_id), metadata=actors.customer()
            )
        except grpc.aio.AioRpcError:
            return False
        return payment.payment.status == payments_pb.PAYMENT_STATUS_REFUNDED

    await eventually(refunded, timeout=20, what="the late charge refunded")
    assert (await actors.status_of(placed.order_id)).status == pb.ORDER_STATUS_CANCELLED
    await quiet_and_sound(actors, urls, prefix)


async def test_a_deleted_payment_method_takes_no_new_order(actors: Actors) -> None:
    product = await actors.product(stock=3)
    card = await actors.card()
    await actors.payments.DeletePaymentMethod(
        payments_pb.DeletePaymentMethodRequest(payment_method_id=card), metadata=actors.customer()
    )
    refused = await failure(actors.place(product, 1, card))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(refused)[0].reason == "UNKNOWN_PAYMENT_METHOD"  # type: ignore[union-attr]


async def test_create_order_checks_synchronously(actors: Actors) -> None:
    product = await actors.product(stock=1)
    card = await actors.card()
    too_many = await failure(actors.place(product, 2, card))
    assert too_many.code() == grpc.StatusCode.FAILED_PRECONDITION
    someone_elses = await failure(actors.place(product, 1, card, customer="customer-luis"))
    assert someone_elses.code() == grpc.StatusCode.PERMISSION_DENIED
    unknown = await failure(actors.place("no-such-product", 1, card))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    # The checks run at once; when several fail, stock is answered first, then the payment method.
    both = await failure(actors.place(product, 2, card, customer="customer-luis"))
    info, _ = details_of(both)
    assert (both.code(), info and info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK")
    assert await actors.svc["orders"].infra.pool.fetchval("SELECT count(*) FROM orders") == 0


def product_answers_from_catalog() -> float:
    labels = {"service": "catalog", "method": "GetProduct", "code": "OK"}
    return REGISTRY.get_sample_value("a4co_grpc_server_handled_total", labels) or 0.0


async def orders_knows(actors: Actors, product_id: str) -> int:
    """The price in orders' copy of the product, once ProductPublished has reached it."""
    pool = actors.svc["orders"].infra.pool

    async def learnt() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM products WHERE product_id = $1", product_id))

    await eventually(learnt, what="orders learns the product from ProductPublished")
    price = await pool.fetchval("SELECT price_cents FROM products WHERE product_id = $1", product_id)
    return int(price)


async def test_orders_prices_an_order_from_its_copy_of_the_product(actors: Actors) -> None:
    product = await actors.product(stock=5, price_cents=3100)
    assert await orders_knows(actors, product) == 3100
    card = await actors.card()
    asked = product_answers_from_catalog()
    placed = await actors.place(product, 2, card)
    assert placed.total.amount_cents == 2 * 3100 + placed.delivery_fee.amount_cents
    assert [(x.product_name, x.unit_price.amount_cents) for x in placed.lines] == [
        ("Plato de cerámica verde", 3100)
    ]
    assert product_answers_from_catalog() == asked, "catalog was not asked for the product"


async def test_a_product_orders_has_not_learnt_yet_is_asked_of_catalog_and_kept(actors: Actors) -> None:
    perishable = return_exception_pb2.RETURN_EXCEPTION_PERISHABLE
    product = await actors.product(stock=5, price_cents=1800, return_exception=perishable)
    await orders_knows(actors, product)
    pool = actors.svc["orders"].infra.pool
    await pool.execute("DELETE FROM products WHERE product_id = $1", product)  # its event is late
    card = await actors.card()
    asked = product_answers_from_catalog()
    placed = await actors.place(product, 1, card)
    assert placed.total.amount_cents == 1800 + placed.delivery_fee.amount_cents
    assert [line.return_exception for line in placed.lines] == [perishable], "as catalog shows it"
    assert product_answers_from_catalog() == asked + 1
    assert await orders_knows(actors, product) == 1800, "catalog's answer is kept"
    await actors.place(product, 1, card)
    assert product_answers_from_catalog() == asked + 1, "and used for the next order"


def orders_pb_line(product_id: str, expected_cents: int) -> pb.OrderLineRequest:
    return pb.OrderLineRequest(
        product_id=product_id, quantity=1, expected_unit_price=money_pb2.Money(amount_cents=expected_cents)
    )


async def test_a_new_price_applies_to_new_orders_and_a_withdrawn_product_is_refused(actors: Actors) -> None:
    product = await actors.product(stock=9, price_cents=3100)
    assert await orders_knows(actors, product) == 3100
    card = await actors.card()
    before = await actors.place(product, 1, card)
    artisans = artisans_grpc.ArtisansServiceStub(actors.svc["artisans"].channel)
    change = artisans_pb.UpdateProductRequest(
        product_id=product, product=artisans_pb.PublishedProduct(price=money_pb2.Money(amount_cents=2500))
    )
    change.update_mask.paths.append("price")
    await artisans.UpdateProduct(change, metadata=actors.artisan())
    pool = actors.svc["orders"].infra.pool

    async def repriced() -> bool:
        return bool(
            await pool.fetchval("SELECT price_cents FROM products WHERE product_id = $1", product) == 2500
        )

    await eventually(repriced, what="orders learns the new price from ProductUpdated")
    after = await actors.place(product, 1, card)
    assert [x.unit_price.amount_cents for x in after.lines] == [2500]
    # A client that says which price its customer saw is refused at any other.
    seen = orders_pb_line(product, 3100)
    refused = await failure(actors.place_lines([seen], card))
    info, _ = details_of(refused)
    assert (refused.code(), info and info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PRICE_CHANGED")
    assert info is not None
    assert dict(info.metadata) == {"product_id": product, "unit_price_cents": "2500"}
    agreed = await actors.place_lines([orders_pb_line(product, 2500)], card)
    assert [x.unit_price.amount_cents for x in agreed.lines] == [2500]
    kept = await actors.status_of(before.order_id)
    assert [x.unit_price.amount_cents for x in kept.lines] == [3100], "an order placed before keeps its price"

    await artisans.WithdrawProduct(
        artisans_pb.WithdrawProductRequest(product_id=product), metadata=actors.artisan()
    )

    async def withdrawn() -> bool:
        return bool(await pool.fetchval("SELECT withdrawn FROM products WHERE product_id = $1", product))

    await eventually(withdrawn, what="orders learns the withdrawal from ProductWithdrawn")
    refused = await failure(actors.place(product, 1, card))
    info, _ = details_of(refused)
    assert (refused.code(), info and info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PRODUCT_WITHDRAWN",
    )
    # Without orders' copy (its events late), catalog's answer refuses it too.
    await pool.execute("DELETE FROM products WHERE product_id = $1", product)
    refused = await failure(actors.place(product, 1, card))
    info, _ = details_of(refused)
    assert (refused.code(), info and info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PRODUCT_WITHDRAWN",
    )
    assert await pool.fetchval("SELECT count(*) FROM orders") == 3


async def test_many_concurrent_orders_never_oversell(actors: Actors, urls: ServerUrls, prefix: str) -> None:
    product = await actors.product(stock=5)
    cards = {f"customer-{i}": await actors.card(customer=f"customer-{i}") for i in range(200)}

    async def attempt(customer: str) -> str | grpc.StatusCode:
        try:
            return (await actors.place(product, 1, cards[customer], customer=customer)).order_id
        except grpc.aio.AioRpcError as error:
            return error.code()

    outcomes = await asyncio.gather(*(attempt(c) for c in cards))
    refused = [o for o in outcomes if isinstance(o, grpc.StatusCode)]
    assert set(refused) <= {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE}, refused
    placed = [o for o in outcomes if isinstance(o, str)]
    assert len(placed) > 5
    pool = actors.svc["orders"].infra.pool

    async def all_settled() -> bool:
        waiting = await pool.fetchval("SELECT count(*) FROM orders WHERE status IN ('PENDING', 'PAID')")
        return bool(waiting == 0)

    await eventually(all_settled, timeout=60, what="every order settled")
    confirmed = await pool.fetchval("SELECT count(*) FROM orders WHERE status = 'CONFIRMED'")
    assert confirmed == 5, "exactly the stock is sold"
    level = await stock(actors, product)
    assert (level.on_hand, level.reserved, level.available) == (5, 5, 0)
    await quiet_and_sound(actors, urls, prefix)


async def test_every_saga_event_delivered_again_and_out_of_order_changes_nothing(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product = await actors.product(stock=5)
    ok = await actors.place(product, 2, await actors.card())
    declined = await actors.place(product, 1, await actors.card(DECLINED))
    await actors.settles(ok.order_id, pb.ORDER_STATUS_CONFIRMED)
    await actors.settles(declined.order_id, pb.ORDER_STATUS_CANCELLED)
    await quiet_and_sound(actors, urls, prefix)
    before = await snapshot(actors)

    # Every event of the flows, once more, newest first, each under a new message id so that
    # JetStream keeps it: only the consumers' inboxes stand between them and a second effect.
    infra = actors.svc["orders"].infra
    republished = 0
    for stream in ("ORDERS", "PAYMENTS", "INVENTORY"):
        name = infra.topology.stream(stream)
        last = (await infra.js.stream_info(name)).state.last_seq
        messages = [await infra.js.get_msg(name, seq=s) for s in range(1, last + 1)]
        for message in reversed(messages):
            headers = dict(message.headers or {})
            headers["Nats-Msg-Id"] = f"again-{headers.get('Nats-Msg-Id')}"
            await infra.js.publish(message.subject or "", message.data or b"", headers=headers)
            republished += 1
    assert republished >= 8

    async def all_seen() -> bool:
        consumers = [c for s in actors.svc.values() for c in s.runner.consumers]
        return sum(c.stats.duplicates for c in consumers) >= republished - sum(
            c.stats.skipped for c in consumers
        )

    await eventually(all_seen, timeout=30, what="the duplicates consumed")
    await quiet_and_sound(actors, urls, prefix)
    assert await snapshot(actors) == before


async def snapshot(actors: Actors) -> dict[str, object]:
    orders = actors.svc["orders"].infra.pool
    payments = actors.svc["payments"].infra.pool
    inventory = actors.svc["inventory"].infra.pool
    return {
        "orders": sorted(
            tuple(r) for r in await orders.fetch("SELECT order_id::text, status, refunded FROM orders")
        ),
        "payments": sorted(
            tuple(r) for r in await payments.fetch("SELECT order_id, status, refunded_cents FROM payments")
        ),
        "stock": sorted(
            tuple(r) for r in await inventory.fetch("SELECT product_id, on_hand, reserved FROM stock")
        ),
        "holds": sorted(
            tuple(r) for r in await inventory.fetch("SELECT order_id, product_id, status FROM reservations")
        ),
    }


async def relayed(actors: Actors, service: str) -> None:
    """Wait until a service's relay has published every event of its outbox."""

    async def empty() -> bool:
        return bool(await actors.svc[service].infra.pool.fetchval("SELECT count(*) FROM outbox") == 0)

    await eventually(empty, what=f"{service}'s outbox relayed")


def lines_of(placed: pb.Order) -> list[order_events_pb2.OrderLine]:
    return [order_events_pb2.OrderLine(product_id=x.product_id, quantity=x.quantity) for x in placed.lines]


async def publish_as_orders(actors: Actors, event: Message, placed: pb.Order) -> None:
    """Publish an event of the placed order, as orders would."""
    orders = actors.svc["orders"].infra
    out = orders.codec.encode(event, aggregate_id=placed.order_id)
    await orders.js.publish(out.subject, out.body, headers=out.headers)


def status_changed(
    placed: pb.Order,
    previous: order_events_pb2.OrderStatus.ValueType,
    status: order_events_pb2.OrderStatus.ValueType,
    reason: str,
    *,
    refund: bool = False,
) -> order_events_pb2.OrderStatusChanged:
    """The placed order's OrderStatusChanged, as orders would announce it."""
    return order_events_pb2.OrderStatusChanged(
        order_id=placed.order_id,
        customer_id=placed.customer_id,
        artisan_id=placed.artisan_id,
        previous_status=previous,
        status=status,
        reason=reason,
        lines=lines_of(placed),
        total=placed.total,
        refund_required=refund,
    )


async def announce_cancelled(actors: Actors, placed: pb.Order, *, refund: bool) -> None:
    """Publish, as orders would, that the placed order was cancelled."""
    paid, cancelled = order_events_pb2.ORDER_STATUS_PAID, order_events_pb2.ORDER_STATUS_CANCELLED
    await publish_as_orders(
        actors, status_changed(placed, paid, cancelled, "CUSTOMER_CANCELLED", refund=refund), placed
    )


async def test_a_charge_and_a_refund_in_one_batch_take_effect_in_their_order(actors: Actors) -> None:
    """payments writes a batch's charges together: a refund later in the same batch still comes
    after its order's charge (the events need not come from orders for this)."""
    product = await actors.product(stock=5)
    card = await actors.card()
    charging = actors.svc["payments"].consumer("ORDERS")
    await charging.stop()
    placed = await actors.place(product, 1, card)
    await relayed(actors, "orders")  # OrderCreated waits in the stream, ahead of the cancellation
    await announce_cancelled(actors, placed, refund=True)
    await charging.start()  # both in its first batch
    payments = actors.svc["payments"].infra.pool

    async def refunded() -> bool:
        row = await payments.fetchrow(
            "SELECT status, refunded_cents FROM payments WHERE order_id = $1", placed.order_id
        )
        return row is not None and tuple(row) == ("refunded", placed.total.amount_cents)

    await eventually(refunded, what="charged, then refunded")


async def test_a_reservation_and_a_release_in_one_batch_take_effect_in_their_order(actors: Actors) -> None:
    """inventory decides a batch's reservations together: a release later in the same batch still
    comes after its order's reservation, and nothing stays held."""
    product = await actors.product(stock=5)
    card = await actors.card()
    holding = actors.svc["inventory"].consumer("ORDERS")
    await holding.stop()
    placed = await actors.place(product, 2, card)
    await actors.settles(placed.order_id, pb.ORDER_STATUS_PAID)  # its PAID waits for inventory
    # PAID is committed before orders' relay publishes it: the cancellation must follow it in the
    # stream, as it would from orders.
    await relayed(actors, "orders")
    await announce_cancelled(actors, placed, refund=False)
    await holding.start()  # both in its first batch
    inventory = actors.svc["inventory"]

    async def released() -> bool:
        rows = await inventory.infra.pool.fetch(
            "SELECT status FROM reservations WHERE order_id = $1", placed.order_id
        )
        return [r["status"] for r in rows] == ["released"]

    await eventually(released, what="reserved, then released")
    assert (await stock(actors, product)).reserved == 0


async def test_one_trace_covers_create_order_and_everything_it_caused(
    actors: Actors, spans: InMemorySpanExporter
) -> None:
    product = await actors.product(stock=5)
    card = await actors.card()
    spans.clear()
    placed = await actors.place(product, 1, card)
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)

    finished = spans.get_finished_spans()
    create = [s for s in finished if s.name.endswith("/CreateOrder") and s.kind == SpanKind.SERVER]
    assert len(create) == 1, [s.name for s in finished]
    trace_id = create[0].context.trace_id

    consumed = [s for s in finished if s.kind == SpanKind.CONSUMER]
    names = {s.name for s in consumed if s.context.trace_id == trace_id}
    unprefixed = {n.split("a4co.", 1)[-1] for n in names}
    assert {
        "orders.order.created process",  # payments charges; analytics, notifications listen
        "payments.payment.processed process",  # orders learns it was paid
        "orders.order.status_changed process",  # inventory reserves
        "inventory.stock.reserved process",  # orders confirms
    } <= unprefixed, sorted(unprefixed)
    # The synchronous checks of CreateOrder are in the same trace too.
    clients = {s.name for s in finished if s.kind == SpanKind.CLIENT and s.context.trace_id == trace_id}
    assert {
        "/a4co.inventory.v1.InventoryService/CheckStock",
        "/a4co.geo.v1.GeoService/QuoteDelivery",
    } <= clients


async def test_a_delivered_order_is_returned_refunded_and_its_units_back_in_stock(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product = await actors.product(stock=5)
    placed = await actors.place(product, 2, await actors.card())
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    delivered = await actors.deliver(placed.order_id)
    assert (
        delivered.delivery_time.ToDatetime() + RETURN_WINDOW == delivered.return_window_end_time.ToDatetime()
    )
    assert not delivered.HasField("return_request_time")

    # The README's command, as a client in another language would send it.
    address, service = actors.svc["orders"].address, "a4co.orders.v1.OrdersService"
    bearer = dict(actors.customer())["authorization"].removeprefix("Bearer ")
    answer = await call(
        address,
        f"{service}/RequestReturn",
        {"order_id": placed.order_id, "reason": "no es el tamaño que pedí"},
        bearer,
    )
    assert answer["order"]["status"] == "ORDER_STATUS_RETURN_REQUESTED"  # type: ignore[index]
    asked = await actors.status_of(placed.order_id)
    assert (asked.status, asked.return_note) == (pb.ORDER_STATUS_RETURN_REQUESTED, "no es el tamaño que pedí")
    assert asked.HasField("return_request_time")
    assert not asked.HasField("return_time")
    again = await actors.orders.RequestReturn(
        pb.RequestReturnRequest(order_id=placed.order_id, reason="otra cosa"), metadata=actors.customer()
    )
    assert again.order == asked, "asking again changes nothing"
    cancel = await failure(
        actors.orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id), metadata=actors.customer())
    )
    assert cancel.code() == grpc.StatusCode.FAILED_PRECONDITION
    await quiet_and_sound(actors, urls, prefix)  # charged, not refunded yet: still a sale
    assert (await stock(actors, product)).on_hand == 3
    # The operators' gauges count the return waiting for its goods, and an admin lists it, through
    # its partial index.
    pool = actors.svc["orders"].infra.pool
    await set_in_flight(Orders(pool))
    assert REGISTRY.get_sample_value("a4co_orders_returns_waiting") == 1
    assert 0 <= (REGISTRY.get_sample_value("a4co_orders_oldest_return_waiting_seconds") or -1) < 60
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        counted = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {RETURNS_WAITING_SQL}"))
        listed = "\n".join(  # an admin's ListOrders of them, as Orders.page asks
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT * FROM orders WHERE true AND status = $1"
                " ORDER BY created_at DESC, order_id DESC LIMIT $2",
                "RETURN_REQUESTED",
                21,
            )
        )
    assert "orders_returns_pages" in counted
    assert "orders_returns_pages" in listed

    artisan = dict(actors.artisan())["authorization"].removeprefix("Bearer ")
    await call(address, f"{service}/MarkOrderReturned", {"order_id": placed.order_id}, artisan)
    returned = await actors.status_of(placed.order_id)
    assert returned.status == pb.ORDER_STATUS_RETURNED
    assert returned.HasField("return_time")

    async def back_in_stock() -> bool:
        level = await stock(actors, product)
        return (level.on_hand, level.reserved, level.available) == (5, 0, 5)

    await eventually(back_in_stock, what="the returned units on hand again")

    async def refunded() -> bool:
        got = await actors.payments.GetPayment(
            payments_pb.GetPaymentRequest(order_id=placed.order_id), metadata=actors.customer()
        )
        return got.payment.status == payments_pb.PAYMENT_STATUS_REFUNDED

    await eventually(refunded, what="the return refunded")
    await quiet_and_sound(actors, urls, prefix)
    await set_in_flight(Orders(pool))
    assert REGISTRY.get_sample_value("a4co_orders_returns_waiting") == 0
    assert REGISTRY.get_sample_value("a4co_orders_oldest_return_waiting_seconds") == 0
    changes = [
        (e.payload.status, e.payload.reason, e.payload.return_note, e.payload.refund_required)  # type: ignore[attr-defined]
        for e in await stream_events(actors.svc["orders"], "ORDERS")
        if e.definition.name == "OrderStatusChanged"
        and e.payload.status  # type: ignore[attr-defined]
        in (order_events_pb2.ORDER_STATUS_RETURN_REQUESTED, order_events_pb2.ORDER_STATUS_RETURNED)
    ]
    assert changes == [
        (order_events_pb2.ORDER_STATUS_RETURN_REQUESTED, "", "no es el tamaño que pedí", False),
        (order_events_pb2.ORDER_STATUS_RETURNED, "RETURNED", "no es el tamaño que pedí", True),
    ]
    released = [
        (e.payload.reason, [(x.product_id, x.quantity) for x in e.payload.lines])  # type: ignore[attr-defined]
        for e in await stream_events(actors.svc["inventory"], "INVENTORY")
        if e.definition.name == "StockReleased"
    ]
    assert released == [("RETURNED", [(product, 2)])]
    twice = await actors.orders.MarkOrderReturned(
        pb.MarkOrderReturnedRequest(order_id=placed.order_id), metadata=actors.artisan()
    )
    assert twice.order == (await actors.status_of(placed.order_id))


async def test_who_may_return_an_order_and_when(actors: Actors) -> None:
    placed = await actors.place(await actors.product(stock=5), 1, await actors.card())
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)

    async def refused(call: object) -> tuple[grpc.StatusCode, str]:
        error = await failure(call)
        info, _ = details_of(error)
        return error.code(), info.reason if info else ""

    ask = pb.RequestReturnRequest(order_id=placed.order_id)
    mark = pb.MarkOrderReturnedRequest(order_id=placed.order_id)
    conflict = (grpc.StatusCode.FAILED_PRECONDITION, "ORDER_STATE_CONFLICT")
    assert await refused(actors.orders.RequestReturn(ask, metadata=actors.customer())) == conflict, (
        "not delivered"
    )
    await actors.deliver(placed.order_id)
    assert await refused(actors.orders.MarkOrderReturned(mark, metadata=actors.artisan())) == conflict, (
        "not asked"
    )
    not_found = (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    assert await refused(actors.orders.RequestReturn(ask, metadata=actors.customer("someone"))) == not_found
    assert (await refused(actors.orders.RequestReturn(ask, metadata=actors.artisan())))[0] == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    long = await failure(
        actors.orders.RequestReturn(
            pb.RequestReturnRequest(order_id=placed.order_id, reason="x" * 201), metadata=actors.customer()
        )
    )
    assert long.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details_of(long)[1]] == ["reason"]

    admin = token(actors.keys, "admin-1", Role.ADMIN)
    asked = await actors.orders.RequestReturn(ask, metadata=admin)
    assert asked.order.status == pb.ORDER_STATUS_RETURN_REQUESTED
    other_artisan = token(actors.keys, "artisan-other", Role.ARTISAN)
    assert await refused(actors.orders.MarkOrderReturned(mark, metadata=other_artisan)) == not_found
    customer_marks = await refused(actors.orders.MarkOrderReturned(mark, metadata=actors.customer()))
    assert customer_marks[0] == grpc.StatusCode.PERMISSION_DENIED
    returned = await actors.orders.MarkOrderReturned(mark, metadata=admin)
    assert returned.order.status == pb.ORDER_STATUS_RETURNED


async def test_a_return_asked_for_after_its_window_is_refused(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("A4CO_RETURN_WINDOW_S", "0")  # every delivered order's window has ended
    async with shop(urls, prefix, keys) as svc:
        people = Actors(svc, keys)
        await people.open_workshop()
        placed = await people.place(await people.product(stock=2), 1, await people.card())
        await people.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
        delivered = await people.deliver(placed.order_id)
        assert delivered.return_window_end_time == delivered.delivery_time
        error = await failure(
            people.orders.RequestReturn(
                pb.RequestReturnRequest(order_id=placed.order_id), metadata=people.customer()
            )
        )
        info, _ = details_of(error)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info is not None
        assert info.reason == "RETURN_WINDOW_CLOSED"
        assert (
            info.metadata["return_window_end_time"]
            == delivered.delivery_time.ToDatetime(tzinfo=UTC).isoformat()
        )
        assert (await people.status_of(placed.order_id)).status == pb.ORDER_STATUS_DELIVERED


async def test_a_return_applied_before_its_delivery_leaves_the_stock_right(actors: Actors) -> None:
    """A redelivered batch can bring inventory an order's RETURNED before its OrderDelivered: the
    units still held are released, and the delivery's commit then finds nothing to take."""
    product = await actors.product(stock=4)
    placed = await actors.place(product, 3, await actors.card())
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    consumer = actors.svc["inventory"].consumer("ORDERS")
    handled = consumer.stats.handled
    asked, returned = order_events_pb2.ORDER_STATUS_RETURN_REQUESTED, order_events_pb2.ORDER_STATUS_RETURNED
    await publish_as_orders(actors, status_changed(placed, asked, returned, "RETURNED"), placed)
    delivered = order_events_pb2.OrderDelivered(
        order_id=placed.order_id,
        customer_id=placed.customer_id,
        artisan_id=placed.artisan_id,
        lines=lines_of(placed),
    )
    await publish_as_orders(actors, delivered, placed)

    async def settled() -> bool:
        level = await stock(actors, product)
        holds = await actors.svc["inventory"].infra.pool.fetch(
            "SELECT status FROM reservations WHERE order_id = $1", placed.order_id
        )
        return (level.on_hand, level.reserved) == (4, 0) and [r["status"] for r in holds] == ["returned"]

    await eventually(settled, what="the units released as returned, and the late delivery ignored")
    await eventually(lambda: consumer.stats.handled >= handled + 2, what="both events handled")
    assert (await stock(actors, product)).on_hand == 4


async def test_a_return_taken_back_leaves_the_order_delivered_until_asked_again(actors: Actors) -> None:
    placed = await actors.place(await actors.product(stock=5), 1, await actors.card())
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    await actors.deliver(placed.order_id)
    ask = pb.RequestReturnRequest(order_id=placed.order_id, reason="me equivoqué")
    take_back = pb.CancelReturnRequest(order_id=placed.order_id)
    await actors.orders.RequestReturn(ask, metadata=actors.customer())
    assert (
        await failure(actors.orders.CancelReturn(take_back, metadata=actors.customer("someone")))
    ).code() == (grpc.StatusCode.NOT_FOUND)
    assert (await failure(actors.orders.CancelReturn(take_back, metadata=actors.artisan()))).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    back = (await actors.orders.CancelReturn(take_back, metadata=actors.customer())).order
    assert (back.status, back.return_note, back.HasField("return_request_time")) == (
        pb.ORDER_STATUS_DELIVERED,
        "",
        False,
    )
    again = await actors.orders.CancelReturn(take_back, metadata=actors.customer())
    assert again.order == back, "taking it back twice changes nothing"
    mark = pb.MarkOrderReturnedRequest(order_id=placed.order_id)
    assert (await failure(actors.orders.MarkOrderReturned(mark, metadata=actors.artisan()))).code() == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    changes = [
        (e.payload.previous_status, e.payload.status)  # type: ignore[attr-defined]
        for e in await stream_events(actors.svc["orders"], "ORDERS")
        if e.definition.name == "OrderStatusChanged"
    ][-2:]
    assert changes == [
        (order_events_pb2.ORDER_STATUS_DELIVERED, order_events_pb2.ORDER_STATUS_RETURN_REQUESTED),
        (order_events_pb2.ORDER_STATUS_RETURN_REQUESTED, order_events_pb2.ORDER_STATUS_DELIVERED),
    ]
    events = await stream_events(actors.svc["orders"], "ORDERS")
    deliveries = [e for e in events if e.definition.name == "OrderDelivered"]
    assert len(deliveries) == 1, "delivered once: a return taken back is no second delivery"
    # Asked again, and received: then it can no longer be taken back.
    await actors.orders.RequestReturn(ask, metadata=actors.customer())
    await actors.orders.MarkOrderReturned(mark, metadata=actors.artisan())
    late = await failure(actors.orders.CancelReturn(take_back, metadata=actors.customer()))
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await actors.status_of(placed.order_id)).status == pb.ORDER_STATUS_RETURNED


async def test_an_order_with_a_perishable_product_may_not_be_returned(actors: Actors) -> None:
    perishable = return_exception_pb2.RETURN_EXCEPTION_PERISHABLE
    cheese = await actors.product(stock=5, return_exception=perishable)
    placed = await actors.place(cheese, 1, await actors.card())
    assert [line.return_exception for line in placed.lines] == [perishable]
    await actors.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED)
    await actors.deliver(placed.order_id)
    ask = pb.RequestReturnRequest(order_id=placed.order_id)
    refused = await failure(actors.orders.RequestReturn(ask, metadata=actors.customer()))
    info, _ = details_of(refused)
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info is not None
    assert (info.reason, dict(info.metadata)) == (
        "NOT_RETURNABLE",
        {"order_id": placed.order_id, "product_id": cheese, "return_exception": "PERISHABLE"},
    )

    # The artisan says it keeps after all: the orders placed from then on may be returned, the one
    # placed before keeps what it was sold as.
    artisans = artisans_grpc.ArtisansServiceStub(actors.svc["artisans"].channel)
    change = artisans_pb.UpdateProductRequest(product_id=cheese, product=artisans_pb.PublishedProduct())
    change.update_mask.paths.append("return_exception")
    await artisans.UpdateProduct(change, metadata=actors.artisan())
    pool = actors.svc["orders"].infra.pool

    async def learnt() -> bool:
        kept = await pool.fetchval("SELECT return_exception FROM products WHERE product_id = $1", cheese)
        return bool(kept == "")

    await eventually(learnt, what="orders learns the product may be returned")
    later = await actors.place(cheese, 1, await actors.card())
    assert [line.return_exception for line in later.lines] == [
        return_exception_pb2.RETURN_EXCEPTION_UNSPECIFIED
    ]
    await actors.settles(later.order_id, pb.ORDER_STATUS_CONFIRMED)
    await actors.deliver(later.order_id)
    asked = await actors.orders.RequestReturn(
        pb.RequestReturnRequest(order_id=later.order_id), metadata=actors.customer()
    )
    assert asked.order.status == pb.ORDER_STATUS_RETURN_REQUESTED
    still = await failure(actors.orders.RequestReturn(ask, metadata=actors.customer()))
    assert details_of(still)[0].reason == "NOT_RETURNABLE"  # type: ignore[union-attr]
