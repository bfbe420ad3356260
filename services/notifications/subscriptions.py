"""The events notifications consumes: every event of the matrix that concerns a person, and the
accounts closed, whose messages it forgets."""

from __future__ import annotations

from a4co.identity.events.v1 import identity_events_pb2
from a4co.orders.events.v1 import order_events_pb2
from services.notifications import handlers
from services.notifications.messages import MESSAGES, status_notified
from services.platform.events.subscriptions import Only, Table

HANDLERS: Table = {
    **{event: handlers.on_event for event in MESSAGES},
    identity_events_pb2.UserDeleted: handlers.on_user_deleted,
    # A status change that makes no message is acknowledged without a transaction.
    order_events_pb2.OrderStatusChanged: Only(
        handlers.on_event, status_notified, "confirmed, shipped, cancelled, returned or a return taken back"
    ),
}
