"""The events orders consumes: the answers of the saga's steps, the products put on sale, and the
artisans who close their accounts."""

from __future__ import annotations

from a4co.artisans.events.v1 import artisan_events_pb2
from a4co.identity.events.v1 import identity_events_pb2
from a4co.inventory.events.v1 import inventory_events_pb2
from a4co.loyalty.events.v1 import loyalty_events_pb2
from a4co.payments.events.v1 import payment_events_pb2
from services.orders import handlers
from services.platform.events.subscriptions import Only, Table

HANDLERS: Table = {
    payment_events_pb2.PaymentProcessed: handlers.on_payment_processed,
    payment_events_pb2.PaymentFailed: handlers.on_payment_failed,
    payment_events_pb2.RefundIssued: handlers.on_refund_issued,
    inventory_events_pb2.StockReserved: handlers.on_stock_reserved,
    inventory_events_pb2.StockReservationFailed: handlers.on_stock_reservation_failed,
    loyalty_events_pb2.PointsRedeemed: handlers.on_points_redeemed,
    loyalty_events_pb2.PointsRedemptionFailed: handlers.on_points_redemption_failed,
    artisan_events_pb2.ProductPublished: handlers.on_product,
    artisan_events_pb2.ProductUpdated: handlers.on_product,
    artisan_events_pb2.ProductWithdrawn: handlers.on_product,
    identity_events_pb2.UserDeleted: Only(handlers.on_artisan_left, handlers.an_artisan, "an artisan's"),
}
