"""The events payments consumes: orders to charge, and cancellations to refund."""

from __future__ import annotations

from google.protobuf.message import Message

from a4co.orders.events.v1 import order_events_pb2
from services.payments import saga
from services.platform.events.subscriptions import UnboundHandler

HANDLERS: dict[type[Message], UnboundHandler] = {
    order_events_pb2.OrderCreated: saga.on_order_created,
    order_events_pb2.OrderStatusChanged: saga.on_order_status_changed,
}
