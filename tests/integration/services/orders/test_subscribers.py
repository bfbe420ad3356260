"""Every subscriber of the event matrix, seen through its own RPC after a whole order's life."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from a4co.analytics.v1 import analytics_service_pb2 as analytics_pb
from a4co.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from a4co.cms.v1 import cms_service_pb2 as cms_pb
from a4co.cms.v1 import cms_service_pb2_grpc as cms_grpc
from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.loyalty.v1 import loyalty_service_pb2 as loyalty_pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as loyalty_grpc
from a4co.notifications.v1 import notifications_service_pb2 as notifications_pb
from a4co.notifications.v1 import notifications_service_pb2_grpc as notifications_grpc
from a4co.orders.v1 import orders_service_pb2 as pb
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import Keys
from tests.integration.services.orders.shop import Actors, shop
from tests.support.rpc import failure
from tests.support.waiting import eventually


@pytest_asyncio.fixture
async def everyone(
    urls: ServerUrls, prefix: str, keys: Keys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Actors]:
    monkeypatch.setenv("A4CO_NOTIFICATIONS_DIR", str(tmp_path / "mail"))
    async with shop(urls, prefix, keys, subscribers=True) as svc:
        identity = identity_grpc.IdentityServiceStub(svc["identity"].channel)
        artisan = await identity.Register(
            identity_pb.RegisterRequest(
                email="tito@ubeda.es",
                password="barro-verde-2026",
                display_name="Tito",
                role=identity_pb.ROLE_ARTISAN,
            )
        )
        customer = await identity.Register(
            identity_pb.RegisterRequest(
                email="ana@jaen.es",
                password="aceite-2026-jaen",
                display_name="Ana",
                role=identity_pb.ROLE_CUSTOMER,
                phone_number="612345678",
            )
        )  # fmt: skip
        people = Actors(svc, keys, artisan_id=artisan.user.user_id)
        people.customer_id = customer.user.user_id  # type: ignore[attr-defined]
        await people.open_workshop()
        yield people


def stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def sales_report(
    everyone: Actors, start: Timestamp, end: Timestamp
) -> analytics_pb.GetSalesReportResponse:
    analytics = analytics_grpc.AnalyticsServiceStub(everyone.svc["analytics"].channel)
    return await analytics.GetSalesReport(
        analytics_pb.GetSalesReportRequest(start_time=start, end_time=end), metadata=everyone.artisan()
    )


async def test_a_delivered_order_is_seen_by_every_subscriber(everyone: Actors, tmp_path: Path) -> None:
    customer: str = everyone.customer_id  # type: ignore[attr-defined]
    svc = everyone.svc
    pushed: list[dict[str, str]] = []
    channel = f"{svc['notifications'].infra.settings.prefix}:a4co:notifications:{customer}"
    pubsub = svc["notifications"].infra.redis.pubsub()
    await pubsub.subscribe(channel)

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                pushed.append(json.loads(message["data"]))

    listener = asyncio.create_task(listen())
    start = stamp(datetime.now(UTC) - timedelta(hours=1))

    product = await everyone.product(stock=5, price_cents=2500)
    card = await everyone.card(customer=customer)
    placed = await everyone.place(product, 2, card, customer=customer)
    await everyone.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED, customer=customer)
    await everyone.orders.MarkOrderShipped(
        pb.MarkOrderShippedRequest(order_id=placed.order_id), metadata=everyone.artisan()
    )
    await everyone.orders.MarkOrderDelivered(
        pb.MarkOrderDeliveredRequest(order_id=placed.order_id), metadata=everyone.artisan()
    )
    me = everyone.customer(customer)

    notifications = notifications_grpc.NotificationsServiceStub(svc["notifications"].channel)

    async def told() -> bool:
        listed = await notifications.ListNotifications(
            notifications_pb.ListNotificationsRequest(page_size=50), metadata=me
        )
        titles = {n.title for n in listed.notifications}
        return {"¡Bienvenido a a4co!", "Pago recibido", "Pedido confirmado", "Pedido entregado"} <= titles

    await eventually(told, timeout=20, what="the customer's notifications")
    await eventually(lambda: any(p["title"] == "Pedido entregado" for p in pushed), what="pushed on Redis")
    mail = (tmp_path / "mail" / "outbox.jsonl").read_text(encoding="utf-8")
    assert "ana@jaen.es" in mail, "delivered through the file transport to the user's address"

    loyalty = loyalty_grpc.LoyaltyServiceStub(svc["loyalty"].channel)
    total_euros = placed.total.amount_cents // 100

    async def points() -> bool:
        balance = await loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=me)
        return balance.points == 50 + total_euros

    await eventually(points, what="welcome bonus and purchase points")

    analytics = analytics_grpc.AnalyticsServiceStub(svc["analytics"].channel)
    end = stamp(datetime.now(UTC) + timedelta(hours=1))

    async def counted() -> bool:
        report = await sales_report(everyone, start, end)
        counts = (report.orders_placed, report.orders_delivered, report.units_sold)
        return counts == (1, 1, 2) and report.gross_revenue.amount_cents == 5000

    await eventually(counted, what="the sale counted")
    # From the epoch itself (a set Timestamp of zeros), and times protobuf cannot convert.
    since_1970 = await analytics.GetSalesReport(
        analytics_pb.GetSalesReportRequest(start_time=Timestamp(), end_time=end), metadata=everyone.artisan()
    )
    assert since_1970.orders_placed == 1
    out_of_range = await failure(
        analytics.GetSalesReport(
            analytics_pb.GetSalesReportRequest(
                start_time=Timestamp(seconds=2**62), end_time=Timestamp(seconds=1, nanos=-1)
            ),
            metadata=everyone.artisan(),
        )
    )
    assert out_of_range.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(out_of_range)[1]} == {"start_time", "end_time"}

    catalog = catalog_grpc.CatalogServiceStub(svc["catalog"].channel)

    async def available() -> bool:
        p = (await catalog.GetProduct(catalog_pb.GetProductRequest(product_id=product))).product
        return p.available_quantity == 3

    await eventually(available, what="search shows the new availability")

    cms = cms_grpc.CmsServiceStub(svc["cms"].channel)
    profile = (await cms.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id=customer))).profile
    assert (profile.display_name, profile.kind) == ("Ana", cms_pb.PROFILE_KIND_CUSTOMER)
    workshop = (
        await cms.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id=everyone.artisan_id))
    ).profile
    assert (workshop.kind, workshop.craft, workshop.locality) == (
        cms_pb.PROFILE_KIND_ARTISAN,
        "ceramica",
        "Úbeda",
    )
    columns = {r["column_name"] for r in await svc["cms"].infra.pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
    )}  # fmt: skip
    assert not columns & {"email", "phone_number", "phone", "address"}, "cms never stores private fields"
    listener.cancel()
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_refund_revokes_the_points(everyone: Actors) -> None:
    customer: str = everyone.customer_id  # type: ignore[attr-defined]
    product = await everyone.product(stock=5)
    placed = await everyone.place(product, 1, await everyone.card(customer=customer), customer=customer)
    await everyone.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED, customer=customer)
    await everyone.orders.CancelOrder(
        pb.CancelOrderRequest(order_id=placed.order_id), metadata=everyone.customer(customer)
    )
    loyalty = loyalty_grpc.LoyaltyServiceStub(everyone.svc["loyalty"].channel)

    async def revoked() -> bool:
        b = await loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=everyone.customer(customer))
        return b.points == 50 and b.entry_count == 3

    await eventually(revoked, timeout=20, what="purchase points revoked after the refund")


async def test_a_returned_order_is_refunded_and_every_subscriber_follows(everyone: Actors) -> None:
    customer: str = everyone.customer_id  # type: ignore[attr-defined]
    svc, me = everyone.svc, everyone.customer(customer)
    start = stamp(datetime.now(UTC) - timedelta(hours=1))
    product = await everyone.product(stock=5, price_cents=2500)
    placed = await everyone.place(product, 2, await everyone.card(customer=customer), customer=customer)
    await everyone.settles(placed.order_id, pb.ORDER_STATUS_CONFIRMED, customer=customer)
    await everyone.deliver(placed.order_id)
    asked = await everyone.orders.RequestReturn(
        pb.RequestReturnRequest(order_id=placed.order_id, reason="se rompió en el envío"), metadata=me
    )
    assert asked.order.status == pb.ORDER_STATUS_RETURN_REQUESTED
    back = await everyone.orders.MarkOrderReturned(
        pb.MarkOrderReturnedRequest(order_id=placed.order_id), metadata=everyone.artisan()
    )
    assert back.order.status == pb.ORDER_STATUS_RETURNED

    loyalty = loyalty_grpc.LoyaltyServiceStub(svc["loyalty"].channel)

    async def revoked() -> bool:
        balance = await loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=me)
        return balance.points == 50 and balance.entry_count == 3

    await eventually(revoked, timeout=20, what="the purchase's points revoked by the return's refund")

    notifications = notifications_grpc.NotificationsServiceStub(svc["notifications"].channel)

    async def bodies(metadata: tuple[tuple[str, str], ...]) -> dict[str, str]:
        listed = await notifications.ListNotifications(
            notifications_pb.ListNotificationsRequest(page_size=50), metadata=metadata
        )
        return {n.title: n.body for n in listed.notifications}

    async def told() -> bool:
        mine, seller = await bodies(me), await bodies(everyone.artisan())
        return {"Devolución recibida", "Reembolso emitido"} <= set(mine) and "Devolución solicitada" in seller

    await eventually(told, timeout=20, what="both told of the return")
    assert "«se rompió en el envío»" in (await bodies(everyone.artisan()))["Devolución solicitada"]
    assert "Te devolvemos lo que pagaste" in (await bodies(me))["Devolución recibida"]

    analytics = analytics_grpc.AnalyticsServiceStub(svc["analytics"].channel)
    end = stamp(datetime.now(UTC) + timedelta(hours=1))

    async def counted() -> bool:
        report = await sales_report(everyone, start, end)
        counts = (report.orders_delivered, report.orders_returned, report.orders_cancelled)
        return counts == (1, 1, 0) and report.refunded.amount_cents == placed.total.amount_cents

    await eventually(counted, what="the return and its refund counted")
    series = await analytics.GetSalesSeries(
        analytics_pb.GetSalesSeriesRequest(
            start_time=start, end_time=end, interval=analytics_pb.INTERVAL_DAY
        ),
        metadata=everyone.artisan(),
    )
    assert sum(b.orders_returned for b in series.buckets) == 1
    assert sum(b.refunded.amount_cents for b in series.buckets) == placed.total.amount_cents

    catalog = catalog_grpc.CatalogServiceStub(svc["catalog"].channel)

    async def available() -> bool:
        p = (await catalog.GetProduct(catalog_pb.GetProductRequest(product_id=product))).product
        return p.available_quantity == 5

    await eventually(available, what="the returned units on sale again")
