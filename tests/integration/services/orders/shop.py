"""A whole shop in the test process: artisans, inventory, payments, catalog, geo, loyalty and
orders."""

from __future__ import annotations

import contextlib
import importlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from a4co.artisans.v1 import artisans_service_pb2 as artisans_pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as artisans_grpc
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from a4co.orders.v1 import orders_service_pb2 as orders_pb
from a4co.orders.v1 import orders_service_pb2_grpc as orders_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import address_pb2, lat_lng_pb2, money_pb2, return_exception_pb2
from services.artisans.__main__ import build as build_artisans
from services.orders.__main__ import build as build_orders
from services.platform.auth import Role
from services.platform.local_servers import ServerUrls
from tests.integration.services.conftest import BUILDS
from tests.integration.services.harness import (
    Keys,
    RunningService,
    running_service,
    running_services,
    settings_for,
    token,
)
from tests.support.waiting import eventually

UBEDA = lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706)
BAEZA = lat_lng_pb2.LatLng(latitude=37.9938, longitude=-3.4700)
APPROVED, DECLINED = "4242424242424242", "4000000000000002"


SUBSCRIBERS = ("identity", "notifications", "analytics", "cms")


@contextlib.asynccontextmanager
async def shop(
    urls: ServerUrls, prefix: str, keys: Keys, *, subscribers: bool = False
) -> AsyncIterator[dict[str, RunningService]]:
    """Every service the saga needs (loyalty takes the points an order spends), orders last with
    its peers' addresses; with `subscribers`, identity and the services that only listen
    (notifications, analytics, cms) too."""
    builds: dict[str, Any] = {
        "artisans": build_artisans,
        **{k: BUILDS[k] for k in ("inventory", "payments", "catalog", "geo")},
        "loyalty": _build_of("loyalty"),
    }
    if subscribers:
        builds.update({name: _build_of(name) for name in SUBSCRIBERS})
    async with contextlib.AsyncExitStack() as stack:
        running = await stack.enter_async_context(running_services(builds, urls, prefix, keys))
        peers = {k: running[k].address for k in ("catalog", "inventory", "payments", "geo")}
        settings = settings_for("orders", urls, prefix, keys, peers=peers)
        running["orders"] = await stack.enter_async_context(
            running_service("orders", build_orders, Path("services/orders/schema.sql"), settings)
        )
        yield running


def _build_of(name: str) -> Any:
    return importlib.import_module(f"services.{name}.__main__").build


@dataclass
class Actors:
    """An artisan with a product on sale, and a customer with a card."""

    svc: dict[str, RunningService]
    keys: Keys
    artisan_id: str = "artisan-tito"

    def artisan(self) -> tuple[tuple[str, str], ...]:
        return token(self.keys, self.artisan_id, Role.ARTISAN)

    def customer(self, user_id: str = "customer-ana") -> tuple[tuple[str, str], ...]:
        return token(self.keys, user_id, Role.CUSTOMER)

    @property
    def orders(self) -> orders_grpc.OrdersServiceAsyncStub:
        return orders_grpc.OrdersServiceStub(self.svc["orders"].channel)

    @property
    def inventory(self) -> inventory_grpc.InventoryServiceAsyncStub:
        return inventory_grpc.InventoryServiceStub(self.svc["inventory"].channel)

    @property
    def payments(self) -> payments_grpc.PaymentsServiceAsyncStub:
        return payments_grpc.PaymentsServiceStub(self.svc["payments"].channel)

    async def open_workshop(self) -> None:
        stub = artisans_grpc.ArtisansServiceStub(self.svc["artisans"].channel)
        await stub.OnboardArtisan(
            artisans_pb.OnboardArtisanRequest(
                request_id=str(uuid.uuid4()),
                display_name="Alfarería Tito",
                craft="ceramica",
                locality="Úbeda",
                location=UBEDA,
            ),
            metadata=self.artisan(),
        )

    async def product(
        self,
        stock: int,
        price_cents: int = 2200,
        return_exception: return_exception_pb2.ReturnException.ValueType = (
            return_exception_pb2.RETURN_EXCEPTION_UNSPECIFIED
        ),
    ) -> str:
        stub = artisans_grpc.ArtisansServiceStub(self.svc["artisans"].channel)
        published = await stub.PublishProduct(
            artisans_pb.PublishProductRequest(
                request_id=str(uuid.uuid4()),
                name="Plato de cerámica verde",
                category="ceramica",
                price=money_pb2.Money(currency_code="EUR", amount_cents=price_cents),
                initial_stock=stock,
                return_exception=return_exception,
            ),
            metadata=self.artisan(),
        )
        product_id = published.product.product_id

        async def orderable() -> bool:
            try:
                await self.inventory.GetStock(inventory_pb.GetStockRequest(product_id=product_id))
            except grpc.aio.AioRpcError:
                return False
            return await self._on_map_and_in_catalogue(product_id)

        await eventually(orderable, timeout=20, what="the product in inventory, catalogue and map")
        return product_id

    async def _on_map_and_in_catalogue(self, product_id: str) -> bool:
        from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
        from a4co.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc

        try:
            await catalog_grpc.CatalogServiceStub(self.svc["catalog"].channel).GetProduct(
                catalog_pb.GetProductRequest(product_id=product_id)
            )
        except grpc.aio.AioRpcError:
            return False
        count = await self.svc["geo"].infra.pool.fetchval("SELECT count(*) FROM workshops")
        return bool(count)

    async def card(self, number: str = APPROVED, customer: str = "customer-ana") -> str:
        answer = await self.payments.ValidatePaymentMethod(
            payments_pb.ValidatePaymentMethodRequest(
                card=payments_pb.Card(number=number, exp_month=12, exp_year=2031, cvc="123")
            ),
            metadata=self.customer(customer),
        )
        assert answer.valid
        return answer.payment_method_id

    async def place(
        self,
        product_id: str,
        quantity: int,
        method: str,
        customer: str = "customer-ana",
        request_id: str = "",
        redeem_points: int = 0,
    ) -> orders_pb.Order:
        line = orders_pb.OrderLineRequest(product_id=product_id, quantity=quantity)
        return await self.place_lines([line], method, customer, request_id, redeem_points)

    async def place_lines(
        self,
        lines: list[orders_pb.OrderLineRequest],
        method: str,
        customer: str = "customer-ana",
        request_id: str = "",
        redeem_points: int = 0,
    ) -> orders_pb.Order:
        response = await self.orders.CreateOrder(
            orders_pb.CreateOrderRequest(
                request_id=request_id or str(uuid.uuid4()),
                lines=lines,
                payment_method_id=method,
                delivery_address=address_pb2.Address(
                    street="Calle Real 1", locality="Baeza", country_code="ES"
                ),
                delivery_location=BAEZA,
                redeem_points=redeem_points,
            ),
            metadata=self.customer(customer),
        )
        return response.order

    async def status_of(self, order_id: str, customer: str = "customer-ana") -> orders_pb.Order:
        response = await self.orders.GetOrder(
            orders_pb.GetOrderRequest(order_id=order_id), metadata=self.customer(customer)
        )
        return response.order

    async def settles(
        self,
        order_id: str,
        status: orders_pb.OrderStatus.ValueType,
        customer: str = "customer-ana",
        timeout: float = 20,
    ) -> orders_pb.Order:
        async def reached() -> bool:
            return (await self.status_of(order_id, customer)).status == status

        await eventually(
            reached, timeout=timeout, what=f"order {order_id} in {orders_pb.OrderStatus.Name(status)}"
        )
        return await self.status_of(order_id, customer)

    async def deliver(self, order_id: str) -> orders_pb.Order:
        """The artisan ships a confirmed order, then records its delivery."""
        await self.orders.MarkOrderShipped(
            orders_pb.MarkOrderShippedRequest(order_id=order_id), metadata=self.artisan()
        )
        response = await self.orders.MarkOrderDelivered(
            orders_pb.MarkOrderDeliveredRequest(order_id=order_id), metadata=self.artisan()
        )
        return response.order
