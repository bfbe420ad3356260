"""The events identity consumes."""

from __future__ import annotations

from google.protobuf.message import Message

from a4co.artisans.events.v1 import artisan_events_pb2
from services.identity import handlers
from services.platform.events.subscriptions import UnboundHandler

HANDLERS: dict[type[Message], UnboundHandler] = {
    artisan_events_pb2.ArtisanOffboarded: handlers.on_artisan_offboarded,
}
