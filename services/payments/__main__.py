"""payments' composition root."""

from __future__ import annotations

import functools
from pathlib import Path

from services.payments import handlers
from services.payments.adapters.postgres import PaymentsUnitOfWork
from services.payments.adapters.sandbox_provider import SandboxProvider
from services.payments.grpc_api import POLICIES, registration
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """payments' parts, wired; the sandbox provider until a real acquirer is configured."""
    deps = handlers.Deps(
        uow=functools.partial(PaymentsUnitOfWork, infra.pool, infra.outbox),
        provider=SandboxProvider(),
    )
    return ServiceParts(registrations=[registration(deps)], policies=POLICIES)


if __name__ == "__main__":
    service_main("payments", build, Path(__file__).with_name("schema.sql"))
