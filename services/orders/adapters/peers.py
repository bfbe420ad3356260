"""The synchronous checks CreateOrder makes, through breaker-guarded clients: stock, payment method
and delivery quote; and catalog, asked only for a product orders has not learnt from its event."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from a4co.geo.v1 import geo_service_pb2 as geo_pb
from a4co.geo.v1 import geo_service_pb2_grpc as geo_grpc
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import lat_lng_pb2
from services.orders.domain import ProductInfo, ProductWithdrawnError
from services.platform import return_exceptions
from services.platform.errors import (
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from services.platform.grpc.client import PeerClient
from services.platform.grpc.status import details_of
from services.platform.grpc.tls import Certificates


@dataclass(frozen=True, slots=True)
class DeliveryQuote:
    """The delivery fee to the customer's point."""

    deliverable: bool
    fee_cents: int
    reason: str


def _peer_failed(peer: str, error: grpc.aio.AioRpcError) -> UnavailableError:
    return UnavailableError(
        "PEER_UNAVAILABLE", f"{peer} did not answer: {error.code().name}", metadata={"peer": peer}
    )


class Peers:
    """catalog, inventory, payments and geo, as orders calls them."""

    def __init__(
        self,
        catalog: str,
        inventory: str,
        payments: str,
        geo: str,
        timeout_s: float = 1.0,
        certificates: Certificates | None = None,
    ) -> None:
        # Over TLS when the process has a CA, on channels that follow its TLS files (decision 59).
        certificates = certificates or Certificates()
        self.catalog = PeerClient.to("catalog", catalog, certificates, timeout_s=timeout_s)
        self.inventory = PeerClient.to("inventory", inventory, certificates, timeout_s=timeout_s)
        self.payments = PeerClient.to("payments", payments, certificates, timeout_s=timeout_s)
        self.geo = PeerClient.to("geo", geo, certificates, timeout_s=timeout_s)

    async def product(self, product_id: str) -> ProductInfo:
        """A product's seller and price; NotFoundError when the catalogue has no such product."""
        try:
            response = await self.catalog.call(
                self.catalog.stub(catalog_grpc.CatalogServiceStub).GetProduct,
                catalog_pb.GetProductRequest(product_id=product_id),
                idempotent=True,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                info = details_of(error)[0]
                if info is not None and info.reason == "PRODUCT_WITHDRAWN":
                    raise ProductWithdrawnError(product_id) from None
                raise NotFoundError("PRODUCT_NOT_FOUND", f"no product {product_id}") from None
            raise _peer_failed("catalog", error) from None
        p = response.product
        return ProductInfo(
            p.product_id,
            p.artisan_id,
            p.name,
            p.price.amount_cents,
            p.price.currency_code or "EUR",
            return_exception=return_exceptions.name_of(p.return_exception),
        )

    async def ensure_stock(self, lines: list[tuple[str, int]]) -> None:
        """FailedPreconditionError (OUT_OF_STOCK) unless every line is available now."""
        request = inventory_pb.CheckStockRequest(
            lines=[inventory_pb.StockRequestLine(product_id=p, quantity=q) for p, q in lines]
        )
        try:
            response = await self.inventory.call(
                self.inventory.stub(inventory_grpc.InventoryServiceStub).CheckStock, request, idempotent=True
            )
        except grpc.aio.AioRpcError as error:
            raise _peer_failed("inventory", error) from None
        short = [x for x in response.lines if not x.ok]
        if short:
            raise FailedPreconditionError(
                "OUT_OF_STOCK",
                "not enough stock: " + ", ".join(f"{x.product_id} ({x.available} left)" for x in short),
                metadata={x.product_id: str(x.available) for x in short},
            )

    async def ensure_payment_method(self, payment_method_id: str) -> None:
        """The method exists and belongs to the caller (the caller's token is passed on)."""
        try:
            await self.payments.call(
                self.payments.stub(payments_grpc.PaymentsServiceStub).GetPaymentMethod,
                payments_pb.GetPaymentMethodRequest(payment_method_id=payment_method_id),
                idempotent=True,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise FailedPreconditionError("UNKNOWN_PAYMENT_METHOD", "no such payment method") from None
            if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDeniedError(
                    "NOT_YOUR_PAYMENT_METHOD", "the payment method is someone else's"
                ) from None
            raise _peer_failed("payments", error) from None

    async def quote(self, artisan_id: str, latitude: float, longitude: float) -> DeliveryQuote:
        """The delivery fee from the artisan's workshop to the customer's point."""
        request = geo_pb.QuoteDeliveryRequest(
            artisan_id=artisan_id, destination=lat_lng_pb2.LatLng(latitude=latitude, longitude=longitude)
        )
        try:
            response = await self.geo.call(
                self.geo.stub(geo_grpc.GeoServiceStub).QuoteDelivery, request, idempotent=True
            )
        except grpc.aio.AioRpcError as error:
            raise _peer_failed("geo", error) from None
        return DeliveryQuote(response.deliverable, response.fee.amount_cents, response.reason)

    async def close(self) -> None:
        """Close every channel."""
        for client in (self.catalog, self.inventory, self.payments, self.geo):
            await client.close()
