"""inventory's gRPC servicer and request rules."""

from __future__ import annotations

from typing import Any

import grpc

from a4co.inventory.v1 import inventory_service_pb2 as pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from services.inventory import handlers
from services.inventory.domain import StockLevel
from services.platform.auth import Role, current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.timestamps import to_timestamp
from services.platform.validation import Violations

SERVICE = pb.DESCRIPTOR.services_by_name["InventoryService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]
MAX_LINES = 100


def check_stock_request(request: pb.CheckStockRequest) -> None:
    """1 to 100 lines, each a product once with a positive quantity."""
    v = Violations()
    v.check(1 <= len(request.lines) <= MAX_LINES, "lines", f"must hold 1 to {MAX_LINES} lines")
    seen: set[str] = set()
    for i, line in enumerate(request.lines):
        v.key(line.product_id, f"lines[{i}].product_id")
        v.check(line.quantity >= 1, f"lines[{i}].quantity", "must be at least 1")
        v.check(line.product_id not in seen, f"lines[{i}].product_id", "appears twice")
        seen.add(line.product_id)
    v.raise_if_any()


def check_get_stock(request: pb.GetStockRequest) -> None:
    """The product is required."""
    v = Violations()
    v.key(request.product_id, "product_id")
    v.raise_if_any()


def check_adjust(request: pb.AdjustStockRequest) -> None:
    """A UUID request id, a product, a non-zero delta, a short reason, a sane threshold."""
    v = Violations()
    v.uuid(request.request_id, "request_id")
    v.key(request.product_id, "product_id")
    v.check(request.delta != 0, "delta", "must not be 0")
    v.check(abs(request.delta) <= 1_000_000, "delta", "must be within ±1,000,000")
    v.length(request.reason, "reason", 0, 200)
    if request.HasField("low_stock_threshold"):
        v.between(request.low_stock_threshold, "low_stock_threshold", 0, 1_000_000)
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/CheckStock": MethodPolicy(public=True, validator=check_stock_request),
    f"/{SERVICE}/GetStock": MethodPolicy(public=True, validator=check_get_stock),
    f"/{SERVICE}/AdjustStock": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_adjust),
}


def level_to_pb(level: StockLevel) -> pb.StockLevel:
    """A stock level as a message."""
    return pb.StockLevel(
        product_id=level.product_id,
        artisan_id=level.artisan_id,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
        low_stock_threshold=level.low_stock_threshold,
        update_time=to_timestamp(level.updated_at),
    )


class InventoryServicer(pb_grpc.InventoryServiceServicer):
    """The InventoryService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    async def CheckStock(self, request: pb.CheckStockRequest, context: Context) -> pb.CheckStockResponse:
        """Availability per line, from the cache."""
        answers = await handlers.check_stock(self.deps, [(x.product_id, x.quantity) for x in request.lines])
        response = pb.CheckStockResponse(all_available=all(a.ok for a in answers))
        for a in answers:  # written into the response's own list, not built apart and copied in
            response.lines.add(
                product_id=a.product_id, requested=a.requested, available=a.available, ok=a.ok, known=a.known
            )
        return response

    async def GetStock(self, request: pb.GetStockRequest, context: Context) -> pb.GetStockResponse:
        """One product's stock."""
        return pb.GetStockResponse(stock=level_to_pb(await handlers.get_stock(self.deps, request.product_id)))

    async def AdjustStock(self, request: pb.AdjustStockRequest, context: Context) -> pb.AdjustStockResponse:
        """An artisan's change of stock on hand."""
        level = await handlers.adjust_stock(
            self.deps,
            current_principal(),
            request.request_id,
            request.product_id,
            request.delta,
            request.reason,
            request.low_stock_threshold if request.HasField("low_stock_threshold") else None,
        )
        return pb.AdjustStockResponse(stock=level_to_pb(level))


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves inventory."""
    servicer = InventoryServicer(deps)
    return Registration(
        SERVICE, lambda server: pb_grpc.add_InventoryServiceServicer_to_server(servicer, server)
    )
