"""The events notifications consumes: every event of the matrix that concerns a person."""

from __future__ import annotations

from google.protobuf.message import Message

from services.notifications import handlers
from services.notifications.messages import MESSAGES
from services.platform.events.subscriptions import UnboundHandler

HANDLERS: dict[type[Message], UnboundHandler] = {event: handlers.on_event for event in MESSAGES}
