"""The events analytics consumes."""

from __future__ import annotations

from a4co.orders.events.v1 import order_events_pb2
from services.analytics import handlers
from services.platform.events.subscriptions import Only, Table

HANDLERS: Table = {
    order_events_pb2.OrderCreated: handlers.on_order_created,
    order_events_pb2.OrderStatusChanged: Only(
        handlers.on_order_status_changed, handlers.undone, "cancelled or returned"
    ),
    order_events_pb2.OrderDelivered: handlers.on_order_delivered,
}
