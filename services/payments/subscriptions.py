"""The events payments consumes: orders to charge, cancellations to refund, and the accounts
closed, whose saved methods it deletes."""

from __future__ import annotations

from a4co.identity.events.v1 import identity_events_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.payments import saga
from services.platform.events.subscriptions import Only, Table

HANDLERS: Table = {
    order_events_pb2.OrderCreated: saga.on_order_created,
    order_events_pb2.OrderStatusChanged: Only(
        saga.on_order_status_changed, saga.refund_due, "cancelled or returned with a refund due"
    ),
    identity_events_pb2.UserDeleted: saga.on_user_deleted,
}
