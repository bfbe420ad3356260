"""An artisan who closes their account (decision 55): their orders not shipped yet are cancelled,
refunded and released; those shipped go on; a customer's closed account changes no order."""

from __future__ import annotations

from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.orders.v1 import orders_service_pb2 as pb
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import publish_event
from tests.integration.services.orders.shop import Actors
from tests.integration.services.orders.test_saga import quiet_and_sound, stock
from tests.support.waiting import eventually


async def test_an_artisan_who_leaves_has_the_orders_not_shipped_cancelled_and_refunded(
    actors: Actors, urls: ServerUrls, prefix: str
) -> None:
    product = await actors.product(stock=5)
    card = await actors.card()
    waiting = await actors.place(product, 2, card)
    await actors.settles(waiting.order_id, pb.ORDER_STATUS_CONFIRMED)
    shipped = await actors.place(product, 1, card)
    await actors.settles(shipped.order_id, pb.ORDER_STATUS_CONFIRMED)
    await actors.orders.MarkOrderShipped(
        pb.MarkOrderShippedRequest(order_id=shipped.order_id), metadata=actors.artisan()
    )
    assert (await stock(actors, product)).reserved == 3

    # A customer's account closed changes no order: orders does not even open a transaction.
    consumer = actors.svc["orders"].consumer("IDENTITY")
    ana = identity.UserDeleted(user_id="customer-ana", role=identity.USER_ROLE_CUSTOMER)
    await publish_event(actors.svc["orders"], ana, "customer-ana")
    await eventually(lambda: consumer.stats.skipped == 1, what="the customer's closing skipped")

    left = identity.UserDeleted(user_id=actors.artisan_id, role=identity.USER_ROLE_ARTISAN)
    await publish_event(actors.svc["orders"], left, actors.artisan_id)
    cancelled = await actors.settles(waiting.order_id, pb.ORDER_STATUS_CANCELLED)
    assert cancelled.cancel_reason == "ARTISAN_LEFT"
    assert (await actors.status_of(shipped.order_id)).status == pb.ORDER_STATUS_SHIPPED

    async def refunded_and_released() -> bool:
        payment = await actors.payments.GetPayment(
            payments_pb.GetPaymentRequest(order_id=waiting.order_id), metadata=actors.customer()
        )
        level = await stock(actors, product)
        return payment.payment.status == payments_pb.PAYMENT_STATUS_REFUNDED and level.reserved == 1

    await eventually(refunded_and_released, what="the refund and the release")
    assert consumer.stats.handled == 1
    await quiet_and_sound(actors, urls, prefix)
