"""The events inventory consumes, and the handler of each."""

from __future__ import annotations

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.inventory import handlers, saga
from services.platform.events.subscriptions import Only, Table

HANDLERS: Table = {
    artisan_events_pb2.ProductPublished: handlers.on_product_published,
    order_events_pb2.OrderStatusChanged: Only(
        saga.on_order_status_changed, saga.holds_stock, "paid, cancelled or returned"
    ),
    order_events_pb2.OrderDelivered: saga.on_order_delivered,
}
