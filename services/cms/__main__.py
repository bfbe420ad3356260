"""cms' composition root."""

from __future__ import annotations

from pathlib import Path

from services.cms import handlers, subscriptions
from services.cms.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """cms' parts, wired."""
    deps = handlers.Deps(pool=infra.pool)
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
    )


if __name__ == "__main__":
    service_main("cms", build, Path(__file__).with_name("schema.sql"))
