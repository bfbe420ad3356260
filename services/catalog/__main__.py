"""catalog's composition root."""

from __future__ import annotations

from pathlib import Path

from services.catalog import handlers, subscriptions
from services.catalog.adapters.follower import IndexFollower
from services.catalog.adapters.index import ProductIndex
from services.catalog.adapters.postgres import Search
from services.catalog.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(
    infra: Infrastructure, index: ProductIndex | None = None, *, follow: bool = True
) -> ServiceParts:
    """catalog's parts, wired: `index` is the search index to keep (a new one by default); with
    `follow=False` nothing fills it and every search runs in SQL."""
    if index is None:
        index = ProductIndex()
    deps = handlers.Deps(search=Search(infra.pool, index))
    follower = IndexFollower(
        infra.settings.database_url, infra.topology.schema(infra.settings.service), index
    )
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
        background=[follower.follow] if follow else [],
    )


if __name__ == "__main__":
    service_main("catalog", build, Path(__file__).with_name("schema.sql"))
