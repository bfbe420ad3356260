"""The events loyalty consumes."""

from __future__ import annotations

from a4co.identity.events.v1 import identity_events_pb2
from a4co.orders.events.v1 import order_events_pb2
from a4co.payments.events.v1 import payment_events_pb2
from services.loyalty import handlers
from services.platform.events.subscriptions import Only, Table

HANDLERS: Table = {
    identity_events_pb2.UserRegistered: handlers.on_user_registered,
    payment_events_pb2.PaymentProcessed: handlers.on_payment_processed,
    payment_events_pb2.RefundIssued: handlers.on_refund_issued,
    order_events_pb2.OrderCreated: Only(handlers.on_order_created, handlers.spends_points, "spending points"),
    order_events_pb2.OrderStatusChanged: Only(
        handlers.on_order_status_changed, handlers.gives_points_back, "cancelled or returned, spending points"
    ),
}
