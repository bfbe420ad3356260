"""payments' composition root."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from services.payments import handlers, saga, subscriptions
from services.payments.adapters.postgres import Methods, PaymentsUnitOfWork
from services.payments.adapters.sandbox_provider import SandboxProvider
from services.payments.grpc_api import POLICIES, registration
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts

# The payment methods GetPaymentMethod reads kept in memory (a kept method never changes): a
# customer's orders check theirs without a statement, and their charges find them there too.
METHODS_REMEMBERED = 4096


async def build(infra: Infrastructure) -> ServiceParts:
    """payments' parts, wired; the sandbox provider until a real acquirer is configured."""
    provider = SandboxProvider(timeout_s=float(os.environ.get("A4CO_SANDBOX_TIMEOUT_S", "3")))
    deps = handlers.Deps(
        uow=functools.partial(PaymentsUnitOfWork, infra.pool, infra.outbox),
        methods=Methods(infra.pool, remember=METHODS_REMEMBERED),
        provider=provider,
    )
    saga_deps = saga.SagaDeps(
        provider,
        charge_timeout_s=float(os.environ.get("A4CO_CHARGE_TIMEOUT_S", "5")),
        methods=deps.methods,
    )
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, saga_deps),
    )


if __name__ == "__main__":
    service_main("payments", build, Path(__file__).with_name("schema.sql"))
