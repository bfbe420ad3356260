"""artisans' composition root."""

from __future__ import annotations

import functools
from pathlib import Path

from services.artisans import handlers
from services.artisans.adapters.postgres import ArtisansUnitOfWork
from services.artisans.grpc_api import POLICIES, registration
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """artisans' parts, wired."""
    deps = handlers.Deps(uow=functools.partial(ArtisansUnitOfWork, infra.pool, infra.outbox), pool=infra.pool)
    return ServiceParts(registrations=[registration(deps)], policies=POLICIES)


if __name__ == "__main__":
    service_main("artisans", build, Path(__file__).with_name("schema.sql"))
