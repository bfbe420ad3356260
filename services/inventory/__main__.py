"""inventory's composition root."""

from __future__ import annotations

import functools
from pathlib import Path

from services.inventory import handlers, subscriptions
from services.inventory.adapters.cache import StockCache
from services.inventory.adapters.postgres import InventoryUnitOfWork
from services.inventory.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """inventory's parts, wired."""
    cache = StockCache(infra.redis, infra.settings.prefix)
    deps = handlers.Deps(uow=functools.partial(InventoryUnitOfWork, infra.pool, infra.outbox), cache=cache)
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
        background=[
            cache.memory.follow,
            functools.partial(cache.stale.follow, functools.partial(handlers.rewrite_stock, deps)),
        ],
    )


if __name__ == "__main__":
    service_main("inventory", build, Path(__file__).with_name("schema.sql"))
