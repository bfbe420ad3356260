"""The events loyalty consumes."""

from __future__ import annotations

from google.protobuf.message import Message

from a4co.identity.events.v1 import identity_events_pb2
from a4co.payments.events.v1 import payment_events_pb2
from services.loyalty import handlers
from services.platform.events.subscriptions import UnboundHandler

HANDLERS: dict[type[Message], UnboundHandler] = {
    identity_events_pb2.UserRegistered: handlers.on_user_registered,
    payment_events_pb2.PaymentProcessed: handlers.on_payment_processed,
    payment_events_pb2.RefundIssued: handlers.on_refund_issued,
}
