"""orders' gRPC servicer and request rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import grpc

from a4co.orders.v1 import orders_service_pb2 as pb
from a4co.orders.v1 import orders_service_pb2_grpc as pb_grpc
from a4co.type.v1 import lat_lng_pb2, money_pb2
from services.orders import handlers
from services.orders.domain import Order, Status
from services.platform import return_exceptions
from services.platform.addresses import address_from_dict, address_to_dict, check_address
from services.platform.auth import Role, current_principal
from services.platform.grpc.interceptor import MethodPolicy
from services.platform.grpc.server import Registration
from services.platform.paging import Page, check_page
from services.platform.timestamps import optional_timestamp, to_timestamp
from services.platform.validation import MAX_KEY, Violations

SERVICE = pb.DESCRIPTOR.services_by_name["OrdersService"].full_name
MAX_TRACKING_CODE = 100  # characters
Context = grpc.aio.ServicerContext[Any, Any]
STATUS_TO_PB = {
    Status.PENDING: pb.ORDER_STATUS_PENDING,
    Status.PAID: pb.ORDER_STATUS_PAID,
    Status.CONFIRMED: pb.ORDER_STATUS_CONFIRMED,
    Status.SHIPPED: pb.ORDER_STATUS_SHIPPED,
    Status.DELIVERED: pb.ORDER_STATUS_DELIVERED,
    Status.CANCELLED: pb.ORDER_STATUS_CANCELLED,
    Status.RETURN_REQUESTED: pb.ORDER_STATUS_RETURN_REQUESTED,
    Status.RETURNED: pb.ORDER_STATUS_RETURNED,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}


def check_create(request: pb.CreateOrderRequest) -> None:
    """A UUID request id, 1 to 50 distinct lines of 1 to 1000 units, a method, an address and point;
    no negative points (whether the points pay more than the products is known once they are
    read)."""
    v = Violations()
    v.uuid(request.request_id, "request_id")
    v.check(1 <= len(request.lines) <= 50, "lines", "must hold 1 to 50 lines")
    seen: set[str] = set()
    for i, line in enumerate(request.lines):
        v.key(line.product_id, f"lines[{i}].product_id")
        v.between(line.quantity, f"lines[{i}].quantity", 1, 1000)
        v.check(line.product_id not in seen, f"lines[{i}].product_id", "appears twice")
        if line.HasField("expected_unit_price"):
            price = line.expected_unit_price
            v.check(
                price.currency_code in ("", "EUR"),
                f"lines[{i}].expected_unit_price.currency_code",
                "must be EUR",
            )
            v.check(
                price.amount_cents > 0, f"lines[{i}].expected_unit_price.amount_cents", "must be more than 0"
            )
        seen.add(line.product_id)
    v.key(request.payment_method_id, "payment_method_id")
    check_address(v, request.delivery_address, "delivery_address", required=("street", "locality"))
    if v.check(request.HasField("delivery_location"), "delivery_location", "is required"):
        v.between(request.delivery_location.latitude, "delivery_location.latitude", -90, 90)
        v.between(request.delivery_location.longitude, "delivery_location.longitude", -180, 180)
    v.check(request.redeem_points >= 0, "redeem_points", "must not be negative")
    v.raise_if_any()


def check_list_orders(request: pb.ListOrdersRequest) -> None:
    """A page, and at most one of the customer and the artisan (whose are checked by role)."""
    v = Violations()
    check_page(v, request)
    v.at_most(request.customer_id, "customer_id", MAX_KEY)
    v.at_most(request.artisan_id, "artisan_id", MAX_KEY)
    v.check(
        not (request.customer_id and request.artisan_id),
        "artisan_id",
        "name the customer or the artisan, not both",
    )
    v.raise_if_any()


def check_order_id(request: Any) -> None:
    """The order is required."""
    v = Violations()
    v.key(request.order_id, "order_id")
    v.raise_if_any()


def check_ship(request: pb.MarkOrderShippedRequest) -> None:
    """The order, and a carrier's tracking code if there is one."""
    v = Violations()
    v.key(request.order_id, "order_id")
    v.at_most(request.tracking_code, "tracking_code", MAX_TRACKING_CODE)
    v.raise_if_any()


def check_cancel(request: pb.CancelOrderRequest | pb.RequestReturnRequest) -> None:
    """The order, and a short reason."""
    v = Violations()
    v.key(request.order_id, "order_id")
    v.length(request.reason, "reason", 0, 200)
    v.raise_if_any()


POLICIES = {
    f"/{SERVICE}/CreateOrder": MethodPolicy(roles=frozenset({Role.CUSTOMER}), validator=check_create),
    f"/{SERVICE}/GetOrder": MethodPolicy(validator=check_order_id),
    f"/{SERVICE}/ListOrders": MethodPolicy(validator=check_list_orders),
    f"/{SERVICE}/CancelOrder": MethodPolicy(validator=check_cancel),
    f"/{SERVICE}/MarkOrderShipped": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_ship),
    f"/{SERVICE}/MarkOrderDelivered": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_order_id),
    f"/{SERVICE}/RequestReturn": MethodPolicy(roles=frozenset({Role.CUSTOMER}), validator=check_cancel),
    f"/{SERVICE}/CancelReturn": MethodPolicy(roles=frozenset({Role.CUSTOMER}), validator=check_order_id),
    f"/{SERVICE}/MarkOrderReturned": MethodPolicy(roles=frozenset({Role.ARTISAN}), validator=check_order_id),
}


def order_to_pb(o: Order, return_window: timedelta) -> pb.Order:
    """An order as a message; its return window ends `return_window` after its delivery."""

    def money(cents: int) -> money_pb2.Money:
        return money_pb2.Money(currency_code=o.currency_code, amount_cents=cents)

    return pb.Order(
        order_id=o.order_id,
        customer_id=o.customer_id,
        artisan_id=o.artisan_id,
        lines=[
            pb.OrderLine(
                product_id=x.product_id,
                product_name=x.product_name,
                quantity=x.quantity,
                unit_price=money(x.unit_price_cents),
                line_total=money(x.total_cents),
                return_exception=return_exceptions.value_of(x.return_exception),
            )
            for x in o.lines
        ],
        subtotal=money(o.subtotal_cents),
        delivery_fee=money(o.delivery_fee_cents),
        total=money(o.total_cents),
        status=STATUS_TO_PB[o.status],
        cancel_reason=o.reason if o.status is Status.CANCELLED else "",
        cancel_note=o.cancel_note if o.status is Status.CANCELLED else "",
        delivery_address=address_from_dict(o.delivery_address),
        delivery_location=lat_lng_pb2.LatLng(latitude=o.delivery_lat, longitude=o.delivery_lng),
        payment_method_id=o.payment_method_id,
        create_time=to_timestamp(o.created_at),
        update_time=to_timestamp(o.updated_at),
        delivery_time=optional_timestamp(o.delivery_time),
        return_window_end_time=optional_timestamp(o.return_window_end(return_window)),
        return_request_time=optional_timestamp(o.return_requested_at),
        return_note=o.return_note,
        return_time=optional_timestamp(o.returned_at),
        points_redeemed=o.points_redeemed,
        discount=money(o.discount_cents),
    )


def _position(o: Order) -> tuple[datetime, str]:
    """Where a listed order stands in ListOrders' order (a stored order has its time)."""
    assert o.created_at is not None
    return o.created_at, o.order_id


class OrdersServicer(pb_grpc.OrdersServiceServicer):
    """The OrdersService RPCs."""

    def __init__(self, deps: handlers.Deps) -> None:
        self.deps = deps

    def _pb(self, order: Order) -> pb.Order:
        return order_to_pb(order, self.deps.return_window)

    async def CreateOrder(self, request: pb.CreateOrderRequest, context: Context) -> pb.CreateOrderResponse:
        """Take an order."""
        address = address_to_dict(request.delivery_address)
        command = handlers.NewOrder(
            request_id=request.request_id,
            lines=[(x.product_id, x.quantity) for x in request.lines],
            expected_prices={
                x.product_id: x.expected_unit_price.amount_cents
                for x in request.lines
                if x.HasField("expected_unit_price")
            },
            payment_method_id=request.payment_method_id,
            delivery_address=address,
            latitude=request.delivery_location.latitude,
            longitude=request.delivery_location.longitude,
            redeem_points=request.redeem_points,
        )
        order = await handlers.create_order(self.deps, current_principal(), command)
        return pb.CreateOrderResponse(order=self._pb(order))

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        """One order."""
        return pb.GetOrderResponse(
            order=self._pb(await handlers.get_order(self.deps, current_principal(), request.order_id))
        )

    async def ListOrders(self, request: pb.ListOrdersRequest, context: Context) -> pb.ListOrdersResponse:
        """The caller's orders, newest first."""
        page = Page.of(request, ("orders", request.status, request.customer_id, request.artisan_id))
        status = STATUS_FROM_PB.get(request.status)
        column, owner = handlers.whose_orders(current_principal(), request.customer_id, request.artisan_id)
        orders, token = page.split(
            await handlers.list_orders(self.deps, column, owner, status, page), _position
        )
        return pb.ListOrdersResponse(orders=[self._pb(o) for o in orders], next_page_token=token)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.CancelOrderResponse:
        """Cancel before shipping."""
        order = await handlers.cancel_order(self.deps, current_principal(), request.order_id, request.reason)
        return pb.CancelOrderResponse(order=self._pb(order))

    async def MarkOrderShipped(
        self, request: pb.MarkOrderShippedRequest, context: Context
    ) -> pb.MarkOrderShippedResponse:
        """The artisan shipped it."""
        order = await handlers.mark_shipped(self.deps, current_principal(), request.order_id)
        return pb.MarkOrderShippedResponse(order=self._pb(order))

    async def MarkOrderDelivered(
        self, request: pb.MarkOrderDeliveredRequest, context: Context
    ) -> pb.MarkOrderDeliveredResponse:
        """The customer received it."""
        order = await handlers.mark_delivered(self.deps, current_principal(), request.order_id)
        return pb.MarkOrderDeliveredResponse(order=self._pb(order))

    async def RequestReturn(
        self, request: pb.RequestReturnRequest, context: Context
    ) -> pb.RequestReturnResponse:
        """The customer asks to return it."""
        order = await handlers.request_return(
            self.deps, current_principal(), request.order_id, request.reason
        )
        return pb.RequestReturnResponse(order=self._pb(order))

    async def CancelReturn(
        self, request: pb.CancelReturnRequest, context: Context
    ) -> pb.CancelReturnResponse:
        """The customer takes the return back."""
        order = await handlers.cancel_return(self.deps, current_principal(), request.order_id)
        return pb.CancelReturnResponse(order=self._pb(order))

    async def MarkOrderReturned(
        self, request: pb.MarkOrderReturnedRequest, context: Context
    ) -> pb.MarkOrderReturnedResponse:
        """Its goods came back."""
        order = await handlers.mark_returned(self.deps, current_principal(), request.order_id)
        return pb.MarkOrderReturnedResponse(order=self._pb(order))


def registration(deps: handlers.Deps) -> Registration:
    """How the runtime serves orders."""
    servicer = OrdersServicer(deps)
    return Registration(SERVICE, lambda server: pb_grpc.add_OrdersServiceServicer_to_server(servicer, server))
