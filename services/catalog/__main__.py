"""catalog's composition root."""

from __future__ import annotations

from pathlib import Path

from services.catalog import handlers, subscriptions
from services.catalog.adapters.postgres import Search
from services.catalog.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """catalog's parts, wired."""
    deps = handlers.Deps(search=Search(infra.pool))
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
    )


if __name__ == "__main__":
    service_main("catalog", build, Path(__file__).with_name("schema.sql"))
