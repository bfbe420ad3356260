"""The events geo consumes, and the handler of each."""

from __future__ import annotations

from google.protobuf.message import Message

from a4co.artisans.events.v1 import artisan_events_pb2
from services.geo import handlers
from services.platform.events.subscriptions import UnboundHandler

HANDLERS: dict[type[Message], UnboundHandler] = {
    artisan_events_pb2.ArtisanOnboarded: handlers.on_artisan,
    artisan_events_pb2.ArtisanUpdated: handlers.on_artisan,
    artisan_events_pb2.ArtisanOffboarded: handlers.on_artisan_offboarded,
    artisan_events_pb2.ProductPublished: handlers.on_product_published,
    artisan_events_pb2.ProductWithdrawn: handlers.on_product_withdrawn,
}
