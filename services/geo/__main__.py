"""geo's composition root."""

from __future__ import annotations

import functools
from pathlib import Path

from services.geo import handlers, subscriptions
from services.geo.adapters.geo_index import GeoIndex
from services.geo.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """geo's parts, wired; the Redis index is rebuilt from PostgreSQL at start."""
    deps = handlers.Deps(pool=infra.pool, index=GeoIndex(infra.redis, infra.settings.prefix))
    await handlers.reindex(deps)
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
        background=[
            deps.index.locations.follow,
            functools.partial(deps.index.stale.follow, functools.partial(handlers.reindex_some, deps)),
        ],
    )


if __name__ == "__main__":
    service_main("geo", build, Path(__file__).with_name("schema.sql"))
