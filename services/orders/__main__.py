"""orders' composition root."""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from pathlib import Path

from services.orders import handlers, subscriptions
from services.orders.adapters.peers import Peers
from services.orders.adapters.postgres import Orders, OrdersUnitOfWork, Products
from services.orders.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts

# The products a new order's lines are read from kept in memory (a few hundred bytes each): the
# products ordered often cost no statement (decision 19).
PRODUCTS_REMEMBERED = 4096
# How long after its delivery an order's customer may ask to return it: the 14 days of the EU's
# right of withdrawal for distance sales (decision 52).
RETURN_WINDOW_S = 14 * 24 * 3600


async def build(infra: Infrastructure) -> ServiceParts:
    """orders' parts, wired: peers from A4CO_PEER_*, their deadline from A4CO_PEER_TIMEOUT_S, saga
    timeouts from A4CO_SAGA_*_TIMEOUT_S, the return window from A4CO_RETURN_WINDOW_S."""
    settings = infra.settings
    peers = Peers(
        catalog=settings.peer("catalog"),
        inventory=settings.peer("inventory"),
        payments=settings.peer("payments"),
        geo=settings.peer("geo"),
        timeout_s=float(os.environ.get("A4CO_PEER_TIMEOUT_S", "2")),
        certificates=infra.certificates,
    )
    deps = handlers.Deps(
        uow=functools.partial(OrdersUnitOfWork, infra.pool, infra.outbox),
        orders=Orders(infra.pool),
        outbox=infra.outbox,
        products=Products(infra.pool, remember=PRODUCTS_REMEMBERED),
        peers=peers,
        payment_timeout_s=float(os.environ.get("A4CO_SAGA_PAYMENT_TIMEOUT_S", "30")),
        reservation_timeout_s=float(os.environ.get("A4CO_SAGA_RESERVATION_TIMEOUT_S", "30")),
        return_window=timedelta(seconds=float(os.environ.get("A4CO_RETURN_WINDOW_S", str(RETURN_WINDOW_S)))),
        events_flowing=lambda: infra.nc.is_connected and infra.jetstream_answers,
    )
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
        background=[
            functools.partial(handlers.watch_timeouts, deps),
            functools.partial(handlers.export_in_flight, deps),
        ],
    )


if __name__ == "__main__":
    service_main("orders", build, Path(__file__).with_name("schema.sql"))
