"""loyalty's composition root."""

from __future__ import annotations

from pathlib import Path

from services.loyalty import handlers, subscriptions
from services.loyalty.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """loyalty's parts, wired."""
    deps = handlers.Deps(pool=infra.pool)
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
    )


if __name__ == "__main__":
    service_main("loyalty", build, Path(__file__).with_name("schema.sql"))
