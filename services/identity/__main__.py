"""identity's composition root: the only place that reads settings and builds its parts."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from services.identity import handlers, subscriptions
from services.identity.adapters.hashing import HASHING_WAIT_S, Argon2Hasher
from services.identity.adapters.postgres import PostgresSessions, unit_of_work_factory
from services.identity.domain import LOGIN_ATTEMPTS, LOGIN_WINDOW_S, RESET_CODE_TTL_S
from services.identity.grpc_api import POLICIES, registration
from services.platform.auth import TokenIssuer
from services.platform.events.subscriptions import bind
from services.platform.main import service_main
from services.platform.runtime import Infrastructure, ServiceParts


async def build(infra: Infrastructure) -> ServiceParts:
    """identity's parts, wired."""
    settings = infra.settings
    # While Redis fails, identity's verifiers (its calls' and ValidateToken's, which the other
    # services ask then) read its own sessions (decision 34).
    sessions = PostgresSessions(infra.pool)
    infra.revocation_fallback = lambda principal: sessions.ended(principal.session_id)
    deps = handlers.Deps(
        uow=functools.partial(unit_of_work_factory, infra.pool, infra.outbox),
        hasher=Argon2Hasher(wait_s=float(os.environ.get("A4CO_HASHING_WAIT_S", str(HASHING_WAIT_S)))),
        issuer=TokenIssuer(settings.private_key()),
        verifier=infra.verifier(settings.public_key()),
        revocations=infra.revocations,
        login_attempts=int(os.environ.get("A4CO_LOGIN_ATTEMPTS", str(LOGIN_ATTEMPTS))),
        login_window_s=float(os.environ.get("A4CO_LOGIN_WINDOW_S", str(LOGIN_WINDOW_S))),
        reset_code_ttl_s=float(os.environ.get("A4CO_RESET_CODE_TTL_S", str(RESET_CODE_TTL_S))),
    )
    admin_email, admin_password = os.environ.get("A4CO_ADMIN_EMAIL"), os.environ.get("A4CO_ADMIN_PASSWORD")
    if admin_email and admin_password:
        await handlers.ensure_admin(deps, admin_email, admin_password)
    return ServiceParts(
        registrations=[registration(deps)],
        policies=POLICIES,
        subscriptions=bind(subscriptions.HANDLERS, infra.registry, deps),
        background=[
            functools.partial(handlers.forget_ended_windows, deps),
            functools.partial(
                handlers.keep_revocations_recorded,
                deps,
                float(os.environ.get("A4CO_REVOCATIONS_CHECK_S", str(handlers.REVOCATIONS_CHECK_S))),
            ),
        ],
    )


if __name__ == "__main__":
    service_main("identity", build, Path(__file__).with_name("schema.sql"))
