"""The events catalog consumes, and the handler of each."""

from __future__ import annotations

from google.protobuf.message import Message

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.inventory.events.v1 import inventory_events_pb2
from services.catalog import handlers
from services.platform.events.subscriptions import UnboundHandler

HANDLERS: dict[type[Message], UnboundHandler] = {
    artisan_events_pb2.ProductPublished: handlers.on_product,
    artisan_events_pb2.ProductUpdated: handlers.on_product,
    artisan_events_pb2.ProductWithdrawn: handlers.on_product,
    artisan_events_pb2.ArtisanOnboarded: handlers.on_artisan,
    artisan_events_pb2.ArtisanUpdated: handlers.on_artisan,
    inventory_events_pb2.StockAdjusted: handlers.on_stock_adjusted,
    inventory_events_pb2.StockReserved: handlers.on_stock_moved,
    inventory_events_pb2.StockReleased: handlers.on_stock_moved,
    inventory_events_pb2.LowStockWarning: handlers.on_low_stock,
}
